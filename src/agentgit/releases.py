"""REST: releases, tags and release assets."""

import hashlib
import io
import re
import tarfile
import time
import urllib.parse
import zipfile

from dulwich.object_store import iter_tree_contents

from agentgit.config import MAX_ASSET_BYTES, now
from agentgit.errors import HTTPError, invalid
from agentgit.storage import insert_row, update_row
from agentgit.gitstore import ZERO_SHA, list_refs, open_repo, resolve_commit
from agentgit.accounts import full_name
from agentgit.policy import Resource
from agentgit.routing import route
from agentgit.serializers import node_id, user_json_by_id
from agentgit.lookups import find_repo
from agentgit.gitdata import ref_name


# -- releases and tags --------------------------------------------------------------------------

def release_json(app, repo_row, row):
    name, api = full_name(repo_row), app.api
    url = "%s/repos/%s/releases/%d" % (api, name, row["id"])
    return {"url": url, "html_url": "%s/%s/releases/tag/%s" % (app.url, name, urllib.parse.quote(row["tag_name"])),
            "assets_url": url + "/assets",
            "upload_url": "%s/api/uploads/repos/%s/releases/%d/assets{?name,label}" % (app.url, name, row["id"]),
            "tarball_url": "%s/repos/%s/tarball/%s" % (api, name, row["tag_name"]),
            "zipball_url": "%s/repos/%s/zipball/%s" % (api, name, row["tag_name"]), "id": row["id"],
            "node_id": node_id("Release", row["id"]), "tag_name": row["tag_name"],
            "target_commitish": row["target_commitish"], "name": row["name"], "body": row["body"],
            "draft": bool(row["draft"]), "prerelease": bool(row["prerelease"]), "created_at": row["created_at"],
            "published_at": row["published_at"], "author": user_json_by_id(app, row["author_id"]),
            "assets": [asset_json(app, repo_row, row, a) for a in app.store.all(
                "SELECT %s FROM release_assets WHERE release_id = ? ORDER BY id" % ASSET_COLUMNS, row["id"])]}


ASSET_COLUMNS = ("id, release_id, name, label, content_type, size, digest, download_count, uploader_id, created_at,"
                 " updated_at")     # all but the data, which only a download reads


def asset_json(app, repo_row, release, row):
    name = full_name(repo_row)
    return {"url": "%s/repos/%s/releases/assets/%d" % (app.api, name, row["id"]),
            "browser_download_url": "%s/%s/releases/download/%s/%s" % (
                app.url, name, urllib.parse.quote(release["tag_name"]), urllib.parse.quote(row["name"])),
            "id": row["id"], "node_id": node_id("ReleaseAsset", row["id"]), "name": row["name"],
            "label": row["label"] or "", "state": "uploaded", "content_type": row["content_type"],
            "size": row["size"], "digest": row["digest"], "download_count": row["download_count"],
            "created_at": row["created_at"], "updated_at": row["updated_at"],
            "uploader": user_json_by_id(app, row["uploader_id"])}


def visible_releases(req, row):
    """Drafts are shown only to those who may push, as on GitHub."""
    may_push = req.can("write_release", Resource.repo(row))
    return [r for r in req.app.store.all("SELECT * FROM releases WHERE repo_id = ? ORDER BY created_at DESC, id DESC",
                                         row["id"]) if may_push or not r["draft"]]


def release_fields(req, body, creating):
    fields = {}
    tag = req.field(body, "tag_name", str, "Release", required=creating)
    if tag is not None:
        ref_name("refs/tags/" + tag)
        fields["tag_name"] = tag
    for key, limit in (("name", 256), ("body", 125000), ("target_commitish", 256)):
        value = req.text_field(body, key, "Release", limit=limit)
        if value is not None:
            fields[key] = value
    for key in ("draft", "prerelease"):
        value = req.field(body, key, bool, "Release")
        if value is not None:
            fields[key] = int(value)
    return fields


def ensure_tag(req, row, tag, target):
    """The tag ref for a release, made at ``target`` (a branch or sha) when it does not exist yet."""
    ref = ("refs/tags/" + tag).encode()
    with open_repo(req.app, row["id"]) as git:
        if ref in git.refs:
            return
        sha = resolve_commit(git, target)
        if sha is None:
            raise invalid("Release", "target_commitish", "invalid", "%s is not a branch or commit" % target)
        req.authorize("create_branch", Resource.repo(row), ref=ref.decode())
        if not req.move_ref(git, row["id"], ref.decode(), ZERO_SHA, sha):
            raise HTTPError(409, "Tag %s was created meanwhile" % tag)
    req.effect("refs/tags/%s %s→%s" % (tag, ZERO_SHA[:12], sha[:12]))


@route("POST", "/api/v3/repos/{owner}/{repo}/releases")
def create_release(req, owner, repo):
    body = req.json()
    fields = release_fields(req, body, creating=True)
    row = find_repo(req, owner, repo, "write_release")
    fields.setdefault("target_commitish", row["default_branch"])
    if req.app.store.one("SELECT 1 FROM releases WHERE repo_id = ? AND tag_name = ?", row["id"], fields["tag_name"]):
        raise invalid("Release", "tag_name", "already_exists", "a release for %s exists" % fields["tag_name"])
    if not fields.get("draft"):
        ensure_tag(req, row, fields["tag_name"], fields["target_commitish"])
    with req.transaction() as db:
        stamp = now()
        release_id = insert_row(db, "releases", dict(fields, repo_id=row["id"], author_id=req.principal.user["id"],
                                                     created_at=stamp,
                                                     published_at=None if fields.get("draft") else stamp))
        req.effect("release %s" % fields["tag_name"])
        req.announce(row["id"], "release", "created" if fields.get("draft") else "published",
                     {"release_id": release_id})
    return 201, release_json(req.app, row, req.app.store.one("SELECT * FROM releases WHERE id = ?", release_id))


@route("GET", "/api/v3/repos/{owner}/{repo}/releases")
def list_releases(req, owner, repo):
    row = find_repo(req, owner, repo)
    return [release_json(req.app, row, r) for r in req.paginate(visible_releases(req, row))]


def find_release(req, row, match):
    for release in visible_releases(req, row):
        if match(release):
            return release
    raise HTTPError(404, "Not Found")


@route("GET", "/api/v3/repos/{owner}/{repo}/releases/latest")
def latest_release(req, owner, repo):
    row = find_repo(req, owner, repo)
    return release_json(req.app, row, find_release(req, row, lambda r: not r["draft"] and not r["prerelease"]))


@route("GET", "/api/v3/repos/{owner}/{repo}/releases/tags/{tag:path}")
def release_by_tag(req, owner, repo, tag):
    row = find_repo(req, owner, repo)
    return release_json(req.app, row, find_release(req, row, lambda r: r["tag_name"] == tag and not r["draft"]))


@route("GET", "/api/v3/repos/{owner}/{repo}/releases/{release_id:int}")
def get_release(req, owner, repo, release_id):
    row = find_repo(req, owner, repo)
    return release_json(req.app, row, find_release(req, row, lambda r: r["id"] == int(release_id)))


@route("PATCH", "/api/v3/repos/{owner}/{repo}/releases/{release_id:int}")
def update_release(req, owner, repo, release_id):
    body = req.json()
    fields = release_fields(req, body, creating=False)
    row = find_repo(req, owner, repo, "write_release")
    release = find_release(req, row, lambda r: r["id"] == int(release_id))
    merged = dict(release, **fields)
    if not merged["draft"]:
        ensure_tag(req, row, merged["tag_name"], merged["target_commitish"])
        if release["draft"]:
            fields["published_at"] = now()
    with req.transaction() as db:
        update_row(db, "releases", fields, "id", release["id"])
        req.effect("updated release %s" % merged["tag_name"])
    return release_json(req.app, row, req.app.store.one("SELECT * FROM releases WHERE id = ?", release["id"]))


@route("DELETE", "/api/v3/repos/{owner}/{repo}/releases/{release_id:int}")
def delete_release(req, owner, repo, release_id):
    row = find_repo(req, owner, repo, "write_release")
    release = find_release(req, row, lambda r: r["id"] == int(release_id))
    with req.transaction() as db:
        db.execute("DELETE FROM releases WHERE id = ?", (release["id"],))
        req.effect("deleted release %s (the tag stays)" % release["tag_name"])
    return 204, None


# -- release assets: GHES takes uploads at /api/uploads, the upload_url a release names -------------

ASSET_NAME_RE = re.compile(r"[^/\\\x00-\x1f\x7f]{1,255}")


@route("POST", "/api/uploads/repos/{owner}/{repo}/releases/{release_id:int}/assets")
@route("POST", "/api/v3/repos/{owner}/{repo}/releases/{release_id:int}/assets")
def upload_asset(req, owner, repo, release_id):
    row = find_repo(req, owner, repo, "write_release")
    release = find_release(req, row, lambda r: r["id"] == int(release_id))
    name, label = req.query.get("name", ""), req.query.get("label") or None
    if not ASSET_NAME_RE.fullmatch(name) or name in (".", ".."):
        raise invalid("ReleaseAsset", "name", message="name the file: ?name=, without slashes, up to 255 characters")
    data = req.body(MAX_ASSET_BYTES).read_all()
    stamp = now()
    with req.transaction() as db:
        if db.execute("SELECT 1 FROM release_assets WHERE release_id = ? AND name = ?", (release["id"], name)).fetchone():
            raise invalid("ReleaseAsset", "name", "already_exists", "an asset named %s exists" % name)
        asset_id = insert_row(db, "release_assets", {
            "release_id": release["id"], "name": name, "label": label, "size": len(data), "data": data,
            "content_type": req.headers.get("Content-Type") or "application/octet-stream",
            "digest": "sha256:" + hashlib.sha256(data).hexdigest(), "uploader_id": req.principal.user["id"],
            "created_at": stamp, "updated_at": stamp})
        req.effect("uploaded %s (%d bytes) to release %s" % (name, len(data), release["tag_name"]))
    return 201, asset_json(req.app, row, release, req.app.store.one(
        "SELECT %s FROM release_assets WHERE id = ?" % ASSET_COLUMNS, asset_id))


@route("GET", "/api/v3/repos/{owner}/{repo}/releases/{release_id:int}/assets")
def list_assets(req, owner, repo, release_id):
    row = find_repo(req, owner, repo)
    release = find_release(req, row, lambda r: r["id"] == int(release_id))
    return req.paginate(release_json(req.app, row, release)["assets"])


def find_asset(req, owner, repo, asset_id, action="read_code"):
    """(repository, release, asset row without its data) for an asset of a release the caller can see."""
    row = find_repo(req, owner, repo, action)
    asset = req.app.store.one("SELECT %s FROM release_assets WHERE id = ?" % ASSET_COLUMNS, int(asset_id))
    release = find_release(req, row, lambda r: asset is not None and r["id"] == asset["release_id"])
    return row, release, asset


@route("GET", "/api/v3/repos/{owner}/{repo}/releases/assets/{asset_id:int}")
def get_asset(req, owner, repo, asset_id):
    """The asset's description; with Accept: application/octet-stream, its bytes (as gh downloads)."""
    row, release, asset = find_asset(req, owner, repo, asset_id)
    if "application/octet-stream" in (req.headers.get("Accept") or ""):
        return asset_download(req, asset)
    return asset_json(req.app, row, release, asset)


@route("GET", "/{owner}/{repo}/releases/download/{tag}/{name}", "git")
def browser_download(req, owner, repo, tag, name):
    """A release's download link, served as Git serves a repository: an anonymous caller is asked for
    credentials (401 with Basic) rather than told a private repository is not there, so `curl -u` and
    git's credential helpers fetch it."""
    row = find_repo(req, owner, repo)
    release = find_release(req, row, lambda r: r["tag_name"] == tag and not r["draft"])
    asset = req.app.store.one("SELECT %s FROM release_assets WHERE release_id = ? AND name = ?" % ASSET_COLUMNS,
                              release["id"], name)
    if asset is None:
        raise HTTPError(404, "Not Found")
    return asset_download(req, asset)


def asset_download(req, asset):
    with req.app.store.transaction() as db:
        db.execute("UPDATE release_assets SET download_count = download_count + 1 WHERE id = ?", (asset["id"],))
    data = req.app.store.one("SELECT data FROM release_assets WHERE id = ?", asset["id"])["data"]
    return attachment(bytes(data), asset["content_type"], asset["name"])


def attachment(data, content_type, filename):
    """A download of bytes someone uploaded, served from the same origin as the signed-in pages: never
    rendered, never sniffed, never scripted."""
    return 200, data, {"Content-Type": content_type, "X-Content-Type-Options": "nosniff",
                       "Content-Security-Policy": "default-src 'none'; sandbox",
                       "Content-Disposition": 'attachment; filename="%s"' % filename.replace('"', "")}


@route("PATCH", "/api/v3/repos/{owner}/{repo}/releases/assets/{asset_id:int}")
def update_asset(req, owner, repo, asset_id):
    body = req.json()
    name = req.field(body, "name", str, "ReleaseAsset")
    label = req.field(body, "label", str, "ReleaseAsset")
    row, release, asset = find_asset(req, owner, repo, asset_id, "write_release")
    if name is not None and (not ASSET_NAME_RE.fullmatch(name) or name in (".", "..")):
        raise invalid("ReleaseAsset", "name")
    with req.transaction() as db:
        if name not in (None, asset["name"]) and db.execute(
                "SELECT 1 FROM release_assets WHERE release_id = ? AND name = ?", (release["id"], name)).fetchone():
            raise invalid("ReleaseAsset", "name", "already_exists", "an asset named %s exists" % name)
        db.execute("UPDATE release_assets SET name = ?, label = ?, updated_at = ? WHERE id = ?",
                   (name or asset["name"], asset["label"] if label is None else label, now(), asset["id"]))
        req.effect("updated asset %s of release %s" % (name or asset["name"], release["tag_name"]))
    return asset_json(req.app, row, release, req.app.store.one(
        "SELECT %s FROM release_assets WHERE id = ?" % ASSET_COLUMNS, asset["id"]))


@route("DELETE", "/api/v3/repos/{owner}/{repo}/releases/assets/{asset_id:int}")
def delete_asset(req, owner, repo, asset_id):
    _, release, asset = find_asset(req, owner, repo, asset_id, "write_release")
    with req.transaction() as db:
        db.execute("DELETE FROM release_assets WHERE id = ?", (asset["id"],))
        req.effect("deleted asset %s of release %s" % (asset["name"], release["tag_name"]))
    return 204, None


@route("GET", "/api/v3/repos/{owner}/{repo}/tags")
def list_tags(req, owner, repo):
    row = find_repo(req, owner, repo)
    name, api = full_name(row), req.app.api
    out = []
    with open_repo(req.app, row["id"]) as git:
        for ref in sorted(list_refs(git, "refs/tags/"), reverse=True):
            tag = ref[len("refs/tags/"):]
            sha = resolve_commit(git, ref)
            if sha:
                out.append({"name": tag, "commit": {"sha": sha, "url": "%s/repos/%s/commits/%s" % (api, name, sha)},
                            "zipball_url": "%s/repos/%s/zipball/%s" % (api, name, tag),
                            "tarball_url": "%s/repos/%s/tarball/%s" % (api, name, tag),
                            "node_id": node_id("Ref", "%s:%s" % (name, ref))})
    return req.paginate(out)


# -- source archives: what "Source code (zip)" and gh release download --archive fetch ------------

MAX_ARCHIVE_BYTES = 256 * 1024 * 1024      # the files of one archive, before compression


@route("GET", "/api/v3/repos/{owner}/{repo}/zipball")
@route("GET", "/api/v3/repos/{owner}/{repo}/zipball/{ref:path}")
def zipball(req, owner, repo, ref=None):
    return source_archive(req, owner, repo, ref, "zip")


@route("GET", "/api/v3/repos/{owner}/{repo}/tarball")
@route("GET", "/api/v3/repos/{owner}/{repo}/tarball/{ref:path}")
def tarball(req, owner, repo, ref=None):
    return source_archive(req, owner, repo, ref, "tar.gz")


def source_archive(req, owner, repo, ref, kind):
    """The tree at ``ref`` (the default branch when none is named) as GitHub shapes it: every path under
    one directory OWNER-REPO-SHORTSHA/, file modes and symlinks kept, submodules left out."""
    row = find_repo(req, owner, repo)
    with open_repo(req.app, row["id"]) as git:
        sha = resolve_commit(git, ref or row["default_branch"])
        if sha is None:
            raise HTTPError(404, "Not Found")
        commit = git[sha.encode()]
        prefix, files, size = "%s-%s-%s/" % (row["owner_login"], row["name"], sha[:7]), [], 0
        for entry in iter_tree_contents(git.object_store, commit.tree):
            if entry.mode == 0o160000:
                continue
            data = git[entry.sha].data
            size += len(data)
            if size > MAX_ARCHIVE_BYTES:
                raise HTTPError(413, "The tree at %s is larger than an archive may be (%d MB)" % (
                    ref or row["default_branch"], MAX_ARCHIVE_BYTES // 2 ** 20))
            files.append((prefix + entry.path.decode("utf-8", "replace"), entry.mode, data))
    out = io.BytesIO()
    if kind == "zip":
        stamp = time.gmtime(commit.commit_time)[:6]
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
            for path, mode, data in files:
                info = zipfile.ZipInfo(path, stamp)
                info.external_attr, info.compress_type = (mode & 0xFFFF) << 16, zipfile.ZIP_DEFLATED
                archive.writestr(info, data)
    else:
        with tarfile.open(fileobj=out, mode="w:gz") as archive:
            for path, mode, data in files:
                info = tarfile.TarInfo(path)
                info.mtime, info.mode = commit.commit_time, mode & 0o777
                if mode == 0o120000:
                    info.type, info.linkname = tarfile.SYMTYPE, data.decode("utf-8", "replace")
                    archive.addfile(info)
                else:
                    info.size = len(data)
                    archive.addfile(info, io.BytesIO(data))
    # GitHub's file name: the repository and the ref, a version tag without its leading v (repo-1.2.3)
    shown = ref[1:] if ref and re.match(r"v\d", ref) else ref or sha[:7]
    name = re.sub(r"[^A-Za-z0-9._-]", "-", "%s-%s" % (row["name"], shown))
    return 200, out.getvalue(), {"Content-Type": "application/zip" if kind == "zip" else "application/x-gzip",
                                 "Content-Disposition": "attachment; filename=%s.%s" % (name, kind)}

