"""REST: git data (refs, blobs, trees, commits, tags) and compare, for agents that never run git."""

import base64
import re
import time
import urllib.parse

from dulwich.graph import can_fast_forward
from dulwich.objects import Blob, Tag, Tree

from agentgit.config import now, parse_time
from agentgit.errors import HTTPError, invalid
from agentgit.gitstore import (EMPTY_TREE, ZERO_SHA, changed_files, commit_patch, commits_between, merge_base, open_repo,
                               resolve_commit, tree_diff, valid_ref_name, write_commit)
from agentgit.accounts import full_name, signature
from agentgit.policy import Resource
from agentgit.routing import route
from agentgit.serializers import commit_json, git_person_json, node_id, ref_json
from agentgit.lookups import find_repo
from agentgit.repositories import refs_json
from agentgit.contents import content_path, git_commit_json, tree_with


# -- git data: refs, blobs, trees, commits, tags; compare ----------------------------------------
# For agents that never run git. Objects are written straight into the repository; only refs are
# decided like pushes (so branch protection applies to them exactly as to `git push`).

SHA_RE = re.compile(r"^[0-9a-f]{40}$")
TREE_MODES = {"100644": "blob", "100755": "blob", "040000": "tree", "160000": "commit", "120000": "blob"}


def git_object(git, sha, kind, resource):
    """The object ``sha`` of type ``kind`` (blob, tree, commit, tag) or 422 naming the field."""
    if not isinstance(sha, str) or not SHA_RE.match(sha) or sha.encode() not in git.object_store:
        raise invalid(resource, kind if kind != "blob" else "sha", "invalid", "%s is not a known %s" % (sha, kind))
    obj = git[sha.encode()]
    if obj.type_name.decode() != kind:
        raise invalid(resource, kind, "invalid", "%s is a %s, not a %s" % (sha, obj.type_name.decode(), kind))
    return obj


def find_object(req, owner, repo, sha, kind):
    row = find_repo(req, owner, repo)
    with open_repo(req.app, row["id"]) as git:
        if not SHA_RE.match(sha) or sha.encode() not in git.object_store or git[sha.encode()].type_name != kind.encode():
            raise HTTPError(404, "Not Found")
        return row, git[sha.encode()]


@route("GET", "/api/v3/repos/{owner}/{repo}/git/refs")
def list_refs_endpoint(req, owner, repo):
    row = find_repo(req, owner, repo)
    return req.paginate(refs_json(req, row, "refs/"))


def ref_name(ref):
    """'heads/x' or 'refs/heads/x' to 'refs/heads/x', refusing names git would refuse."""
    ref = ref if ref.startswith("refs/") else "refs/" + ref
    if not valid_ref_name(ref):
        raise invalid("Reference", "ref", "invalid", "%s is not a valid ref name" % ref[:200])
    return ref


def object_type(git, sha):
    return git[sha.encode()].type_name.decode()


@route("POST", "/api/v3/repos/{owner}/{repo}/git/refs")
def create_ref(req, owner, repo):
    body = req.json()
    ref = ref_name(req.field(body, "ref", str, "Reference", required=True))
    if not ref.startswith(("refs/heads/", "refs/tags/")) and ref.count("/") < 2:
        raise invalid("Reference", "ref", "invalid", "ref must start with refs/ and have two slashes")
    sha = req.field(body, "sha", str, "Reference", required=True)
    row = find_repo(req, owner, repo)
    req.authorize("create_branch", Resource.repo(row), ref=ref, sha=sha)     # may it, before what it asks is checked
    with open_repo(req.app, row["id"]) as git:
        if not SHA_RE.match(sha) or sha.encode() not in git.object_store:
            raise invalid("Reference", "sha", "invalid", "Object does not exist")
        if not req.move_ref(git, row["id"], ref, ZERO_SHA, sha):
            raise invalid("Reference", "ref", "already_exists", "Reference already exists")
        out = ref_json(req.app, full_name(row), ref, sha, object_type(git, sha))
    with req.transaction() as db:
        db.execute("UPDATE repos SET pushed_at = ? WHERE id = ?", (now(), row["id"]))
        req.effect("%s %s→%s" % (ref, ZERO_SHA[:12], sha[:12]))
    return 201, out


@route("PATCH", "/api/v3/repos/{owner}/{repo}/git/refs/{ref:path}")
def update_ref(req, owner, repo, ref):
    body = req.json()
    ref = ref_name(ref)
    sha = req.field(body, "sha", str, "Reference", required=True)
    force = req.field(body, "force", bool, "Reference", default=False)
    row = find_repo(req, owner, repo)
    decision = req.authorize("push_branch", Resource.repo(row), ref=ref, sha=sha)
    with open_repo(req.app, row["id"]) as git:
        if ref.encode() not in git.refs:
            raise HTTPError(422, "Reference does not exist")
        old = git.refs[ref.encode()].decode()
        if not SHA_RE.match(sha) or sha.encode() not in git.object_store:
            raise invalid("Reference", "sha", "invalid", "Object does not exist")
        fast_forward = can_fast_forward(git, old.encode(), sha.encode()) if object_type(git, sha) == "commit" else False
        if not fast_forward and (not force or decision.ff_only):
            raise HTTPError(422, "Update is not a fast forward" if not force else
                            "protected branch %s: force pushes are not allowed" % ref[len("refs/heads/"):])
        if not req.move_ref(git, row["id"], ref, old, sha):
            raise HTTPError(409, "Reference was updated meanwhile; fetch it and try again")
        out = ref_json(req.app, full_name(row), ref, sha, object_type(git, sha))
    with req.transaction() as db:
        db.execute("UPDATE repos SET pushed_at = ? WHERE id = ?", (now(), row["id"]))
        req.effect("%s %s→%s%s" % (ref, old[:12], sha[:12], " (forced)" if not fast_forward else ""))
    return out


@route("DELETE", "/api/v3/repos/{owner}/{repo}/git/refs/{ref:path}")
def delete_ref(req, owner, repo, ref):
    ref = ref_name(ref)
    row = find_repo(req, owner, repo)
    req.authorize("delete_branch", Resource.repo(row), ref=ref)
    with open_repo(req.app, row["id"]) as git:
        if ref.encode() not in git.refs:
            raise HTTPError(422, "Reference does not exist")
        old = git.refs[ref.encode()].decode()
        if not req.move_ref(git, row["id"], ref, old, ZERO_SHA):
            raise HTTPError(409, "Reference was updated meanwhile; fetch it and try again")
    with req.transaction():
        req.effect("%s %s→%s" % (ref, old[:12], ZERO_SHA[:12]))
    return 204, None


def blob_json(app, row, blob, with_content):
    sha = blob.id.decode()
    out = {"sha": sha, "url": "%s/repos/%s/git/blobs/%s" % (app.api, full_name(row), sha)}
    if with_content:
        out.update(node_id=node_id("Blob", sha), size=len(blob.data), encoding="base64",
                   content=base64.b64encode(blob.data).decode())
    return out


@route("POST", "/api/v3/repos/{owner}/{repo}/git/blobs")
def create_blob(req, owner, repo):
    body = req.json()
    content = req.field(body, "content", str, "Blob", required=True)
    encoding = req.field(body, "encoding", str, "Blob", default="utf-8")
    if encoding not in ("utf-8", "base64"):
        raise invalid("Blob", "encoding", message="encoding must be utf-8 or base64")
    try:
        data = base64.b64decode(content, validate=True) if encoding == "base64" else content.encode()
    except ValueError:
        raise invalid("Blob", "content", message="content is not valid base64")
    row = find_repo(req, owner, repo, "write_objects")
    blob = Blob.from_string(data)
    with open_repo(req.app, row["id"]) as git:
        git.object_store.add_object(blob)
    req.effect("blob %s" % blob.id.decode()[:12])
    return 201, blob_json(req.app, row, blob, with_content=False)


@route("GET", "/api/v3/repos/{owner}/{repo}/git/blobs/{sha}")
def get_blob(req, owner, repo, sha):
    row, blob = find_object(req, owner, repo, sha, "blob")
    return blob_json(req.app, row, blob, with_content=True)


def tree_json(app, row, git, tree, recursive):
    name, entries = full_name(row), []

    def walk(tree, prefix, depth):
        for item in tree.items():
            mode = "%06o" % item.mode
            kind = TREE_MODES.get(mode, "blob")
            path = prefix + item.path.decode("utf-8", "replace")
            entry = {"path": path, "mode": mode, "type": kind, "sha": item.sha.decode(),
                     "url": "%s/repos/%s/git/%ss/%s" % (app.api, name, kind, item.sha.decode())}
            if kind == "blob":
                entry["size"] = git[item.sha].raw_length()
            entries.append(entry)
            if recursive and kind == "tree" and len(entries) < 100000:
                walk(git[item.sha], path + "/", depth + 1)
    walk(tree, "", 0)
    sha = tree.id.decode()
    return {"sha": sha, "url": "%s/repos/%s/git/trees/%s" % (app.api, name, sha), "tree": entries[:100000],
            "truncated": len(entries) > 100000}


@route("POST", "/api/v3/repos/{owner}/{repo}/git/trees")
def create_tree(req, owner, repo):
    """A new tree from entries {path, mode, type, sha | content} over an optional base_tree; an entry
    with sha null removes that path. Paths may be nested (a/b/c.txt)."""
    body = req.json()
    entries = req.field(body, "tree", list, "Tree", required=True)
    base = req.field(body, "base_tree", str, "Tree")
    row = find_repo(req, owner, repo, "write_objects")
    with open_repo(req.app, row["id"]) as git:
        # git's empty tree is a base every git knows without storing it (release tools start from it)
        tree_id = git_object(git, base, "tree", "Tree").id.decode() if base and base != EMPTY_TREE else None
        for entry in entries:
            if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
                raise invalid("Tree", "tree", message="each entry needs a path")
            path = content_path(entry["path"])
            mode = entry.get("mode", "100644")
            if mode not in TREE_MODES or entry.get("type", TREE_MODES[mode]) != TREE_MODES[mode]:
                raise invalid("Tree", "tree", message="entry %s: mode %r and type %r do not go together" % (
                    path, mode, entry.get("type")))
            if "content" in entry:
                if not isinstance(entry["content"], str) or TREE_MODES[mode] != "blob":
                    raise invalid("Tree", "tree", message="entry %s: content must be a string for a blob" % path)
                blob = Blob.from_string(entry["content"].encode())
                git.object_store.add_object(blob)
                target = (int(mode, 8), blob.id.decode())
            elif entry.get("sha") is None:
                target = None
            else:
                if mode != "160000":     # a submodule's commit lives elsewhere
                    git_object(git, entry["sha"], TREE_MODES[mode], "Tree")
                target = (int(mode, 8), entry["sha"])
            if not path:
                raise invalid("Tree", "tree", message="an entry needs a non-empty path")
            tree_id = tree_with(git, tree_id, path.split("/"), target)
        if tree_id is None:
            empty = Tree()
            git.object_store.add_object(empty)
            tree_id = empty.id.decode()
        out = tree_json(req.app, row, git, git[tree_id.encode()], recursive=False)
    req.effect("tree %s" % tree_id[:12])
    return 201, out


@route("GET", "/api/v3/repos/{owner}/{repo}/git/trees/{sha}")
def get_tree(req, owner, repo, sha):
    row = find_repo(req, owner, repo)
    with open_repo(req.app, row["id"]) as git:
        commit = resolve_commit(git, sha)     # GitHub takes a branch or commit here too
        tree_sha = git[commit.encode()].tree.decode() if commit else sha
        if not SHA_RE.match(tree_sha) or tree_sha.encode() not in git.object_store or \
                git[tree_sha.encode()].type_name != b"tree":
            raise HTTPError(404, "Not Found")
        return tree_json(req.app, row, git, git[tree_sha.encode()], recursive=req.query.get("recursive") not in
                         (None, "", "0", "false"))


def person_signature(req, body, key, default):
    """'Name <email>' from {name, email[, date]} in a body, or the default."""
    person = body.get(key)
    if person is None:
        return default, None
    if not isinstance(person, dict) or not isinstance(person.get("name"), str) or not isinstance(
            person.get("email"), str) or re.search(r"[<>\n]", person["name"] + person["email"]):
        raise invalid("Commit", key, message="%s needs a name and an email" % key)
    when = None
    if isinstance(person.get("date"), str):
        try:
            when = int(parse_time(person["date"]).timestamp())
        except ValueError:
            raise invalid("Commit", key, message="%s.date must be an ISO 8601 time" % key)
    return "%s <%s>" % (person["name"], person["email"]), when


@route("POST", "/api/v3/repos/{owner}/{repo}/git/commits")
def create_commit(req, owner, repo):
    body = req.json()
    message = req.field(body, "message", str, "Commit", required=True)
    tree = req.field(body, "tree", str, "Commit", required=True)
    parents = req.field(body, "parents", list, "Commit", default=[])
    row = find_repo(req, owner, repo, "write_objects")
    me = signature(req.principal.user)
    author, author_time = person_signature(req, body, "author", me)
    committer, _ = person_signature(req, body, "committer", author if body.get("author") else me)
    with open_repo(req.app, row["id"]) as git:
        git_object(git, tree, "tree", "Commit")
        for parent in parents:
            git_object(git, parent, "commit", "Commit")
        sha = write_commit(git, tree, parents, author, committer, message, author_time)
        out = git_commit_json(req.app, full_name(row), git[sha.encode()])
    req.effect("commit %s" % sha[:12])
    return 201, out


@route("GET", "/api/v3/repos/{owner}/{repo}/git/commits/{sha}")
def get_git_commit(req, owner, repo, sha):
    row, commit = find_object(req, owner, repo, sha, "commit")
    return git_commit_json(req.app, full_name(row), commit)


def tag_json(app, row, tag):
    name, sha = full_name(row), tag.id.decode()
    kind, target = tag.object[0].type_name.decode(), tag.object[1].decode()
    return {"sha": sha, "node_id": node_id("Tag", sha), "url": "%s/repos/%s/git/tags/%s" % (app.api, name, sha),
            "tag": tag.name.decode("utf-8", "replace"), "message": tag.message.decode("utf-8", "replace"),
            "tagger": git_person_json(tag.tagger, tag.tag_time, tag.tag_timezone),
            "object": {"sha": target, "type": kind, "url": "%s/repos/%s/git/%ss/%s" % (app.api, name, kind, target)},
            "verification": {"verified": False, "reason": "unsigned", "signature": None, "payload": None,
                             "verified_at": None}}


@route("POST", "/api/v3/repos/{owner}/{repo}/git/tags")
def create_tag_object(req, owner, repo):
    body = req.json()
    name = req.field(body, "tag", str, "Tag", required=True)
    ref_name("refs/tags/" + name)
    message = req.field(body, "message", str, "Tag", required=True)
    target = req.field(body, "object", str, "Tag", required=True)
    kind = req.field(body, "type", str, "Tag", required=True)
    if kind not in ("commit", "tree", "blob"):
        raise invalid("Tag", "type", message="type must be commit, tree or blob")
    row = find_repo(req, owner, repo, "write_objects")
    tagger, when = person_signature(req, body, "tagger", signature(req.principal.user))
    with open_repo(req.app, row["id"]) as git:
        obj = git_object(git, target, kind, "Tag")
        tag = Tag()
        tag.name, tag.message = name.encode(), (message if message.endswith("\n") else message + "\n").encode()
        tag.object = (type(obj), obj.id)
        tag.tagger, tag.tag_time, tag.tag_timezone = tagger.encode(), when or int(time.time()), 0
        git.object_store.add_object(tag)
        out = tag_json(req.app, row, tag)
    req.effect("tag object %s %s" % (name, tag.id.decode()[:12]))
    return 201, out


@route("GET", "/api/v3/repos/{owner}/{repo}/git/tags/{sha}")
def get_tag_object(req, owner, repo, sha):
    row, tag = find_object(req, owner, repo, sha, "tag")
    return tag_json(req.app, row, tag)


@route("GET", "/api/v3/repos/{owner}/{repo}/compare/{basehead:path}")
def compare(req, owner, repo, basehead):
    """base...head (or base..head): the commits head has that base lacks, and the files they change."""
    base, sep, head = basehead.partition("...")
    if not sep:
        base, sep, head = basehead.partition("..")
    if not sep or not base or not head:
        raise HTTPError(404, "Not Found")
    row = find_repo(req, owner, repo)
    name, api = full_name(row), req.app.api
    with open_repo(req.app, row["id"]) as git:
        base_sha, head_sha = resolve_commit(git, base), resolve_commit(git, head)
        if base_sha is None or head_sha is None:
            raise HTTPError(404, "Not Found")
        mb = merge_base(git, base_sha, head_sha)
        ahead = commits_between(git, mb or "", head_sha)
        media = req.text_media()
        if media:           # GitHub's diff and patch media: the comparison as git prints it
            text = b"".join(commit_patch(git, c, i + 1, len(ahead)) for i, c in enumerate(ahead)) if media == \
                "patch" else tree_diff(git, git[mb.encode()].tree.decode() if mb else None,
                                       git[head_sha.encode()].tree.decode())
            return 200, text, {"Content-Type": "text/plain; charset=utf-8"}
        behind = commits_between(git, mb or "", base_sha)
        files = changed_files(git, git[mb.encode()].tree.decode() if mb else None, git[head_sha.encode()].tree.decode())
        status = "identical" if base_sha == head_sha else "ahead" if not behind else "behind" if not ahead else "diverged"
        html_url = "%s/%s/compare/%s" % (req.app.url, name, basehead)
        return {"url": "%s/repos/%s/compare/%s" % (api, name, basehead), "html_url": html_url,
                "permalink_url": "%s/%s/compare/%s...%s" % (req.app.url, name, base_sha, head_sha),
                "diff_url": html_url + ".diff", "patch_url": html_url + ".patch",
                "base_commit": commit_json(req.app, name, git[base_sha.encode()]),
                "merge_base_commit": commit_json(req.app, name, git[(mb or base_sha).encode()]),
                "status": status, "ahead_by": len(ahead), "behind_by": len(behind), "total_commits": len(ahead),
                "commits": [commit_json(req.app, name, c) for c in ahead[-250:]],
                "files": [{"sha": sha, "filename": path, "status": st, "additions": a, "deletions": d,
                           "changes": a + d, "patch": patch,
                           "blob_url": "%s/%s/blob/%s/%s" % (req.app.url, name, head_sha, urllib.parse.quote(path)),
                           "raw_url": "%s/%s/raw/%s/%s" % (req.app.url, name, head_sha, urllib.parse.quote(path)),
                           "contents_url": "%s/repos/%s/contents/%s?ref=%s" % (api, name, urllib.parse.quote(path),
                                                                               head_sha)}
                          for path, st, a, d, sha, patch in files]}
