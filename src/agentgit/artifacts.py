"""Workflow artifacts and caches: the files a run's jobs keep, put there by agentgit's stand-ins for
actions/upload-artifact, actions/download-artifact and actions/cache, read and deleted through GitHub's
REST API.

Nothing here reaches github.com, so a job's ``uses: actions/upload-artifact@v4`` (v1 to v6, and the same
for download-artifact) runs agentgit's stand-in: the runner writes it into the run's directory and act's
``--local-repository`` maps the action to it. The stand-in is a Python program of the standard library
only (a job may run as nobody, with the system's Python), STANDIN_PROGRAM below. Upload zips what the
step's ``path`` names as GitHub's action does (the least common ancestor of the search paths is the zip's
root; hidden files left out unless asked for) and posts the zip with the job's token to the run it belongs
to: only that run's job token adds to a run, while it runs (GitHub's runtime token, whatever the
workflow's ``permissions:`` say). Download lists the run's artifacts and fetches them through the REST API,
with the job's token or the one the step is given, and refuses a zip entry that would land outside its
folder. An artifact's name is never a path: it is a row's column here, and a folder name only where the
stand-in downloads several, after the same check. actions/cache's stand-in is a JavaScript action (its
saving is a post step, a JavaScript action's alone) whose node scripts start the same program: a cache
belongs to its run's ref (a pull request's to its merge ref, so a fork's run never writes where a branch's
runs read), and a run restores from its own ref's or the default branch's.
"""

import hashlib
import io
import json
import os
import re
import zipfile

from agentgit.config import MAX_ASSET_BYTES, from_now, now
from agentgit.storage import insert
from agentgit.errors import HTTPError, invalid
from agentgit.routing import route
from agentgit.serializers import node_id
from agentgit.lookups import find_repo
from agentgit.releases import attachment
from agentgit.actions import find_run

# GitHub's rule for an artifact's name: none of these characters; agentgit also bounds its length
ARTIFACT_NAME_RE = re.compile(r'[^"\:<>|*?\\/\r\n\x00]{1,255}')
RETENTION_DAYS = 90                     # GitHub's default and maximum
MAX_ARTIFACT_ENTRIES = 10000            # files in one artifact's zip
MAX_UNPACKED_BYTES = 4 * MAX_ASSET_BYTES      # what one artifact's files may unpack to, together
ARTIFACT_COLUMNS = ("a.id, a.repo_id, a.run_id, a.run_attempt, a.name, a.size_in_bytes, a.digest, a.created_at,"
                    " a.expires_at, a.archive IS NULL AS gone, r.head_branch, r.head_sha")


def artifact_json(app, repo_row, row):
    url = "%s/repos/%s/%s/actions/artifacts/%d" % (app.api, repo_row["owner_login"], repo_row["name"], row["id"])
    return {"id": row["id"], "node_id": node_id("Artifact", row["id"]), "name": row["name"],
            "size_in_bytes": row["size_in_bytes"], "url": url, "archive_download_url": url + "/zip",
            "expired": bool(row["gone"]) or row["expires_at"] <= now(), "digest": row["digest"],
            "created_at": row["created_at"], "updated_at": row["created_at"], "expires_at": row["expires_at"],
            "workflow_run": {"id": row["run_id"], "repository_id": repo_row["id"], "head_repository_id": repo_row["id"],
                             "head_branch": row["head_branch"], "head_sha": row["head_sha"]}}


def artifacts_json(req, repo_row, where, args):
    """GitHub's artifact list (?name= filters by name), newest first, a page of it."""
    if req.query.get("name"):
        where, args = where + " AND a.name = ?", args + [req.query["name"]]
    rows = req.app.store.all("SELECT %s FROM artifacts a JOIN workflow_runs r ON r.id = a.run_id WHERE %s ORDER BY"
                             " a.id DESC" % (ARTIFACT_COLUMNS, where), *args)
    return {"total_count": len(rows), "artifacts": [artifact_json(req.app, repo_row, a) for a in req.paginate(rows)]}


@route("GET", "/api/v3/repos/{owner}/{repo}/actions/artifacts")
def list_artifacts(req, owner, repo):
    row = find_repo(req, owner, repo)
    return artifacts_json(req, row, "a.repo_id = ?", [row["id"]])


@route("GET", "/api/v3/repos/{owner}/{repo}/actions/runs/{run_id:int}/artifacts")
def list_run_artifacts(req, owner, repo, run_id):
    row, run = find_run(req, owner, repo, run_id)
    return artifacts_json(req, row, "a.run_id = ?", [run["id"]])


def find_artifact(req, owner, repo, artifact_id, action="read_code"):
    row = find_repo(req, owner, repo, action)
    artifact = req.app.store.one("SELECT %s FROM artifacts a JOIN workflow_runs r ON r.id = a.run_id WHERE a.id = ?"
                                 " AND a.repo_id = ?" % ARTIFACT_COLUMNS, int(artifact_id), row["id"])
    if artifact is None:
        raise HTTPError(404, "Not Found")
    return row, artifact


@route("GET", "/api/v3/repos/{owner}/{repo}/actions/artifacts/{artifact_id:int}")
def get_artifact(req, owner, repo, artifact_id):
    row, artifact = find_artifact(req, owner, repo, artifact_id)
    return artifact_json(req.app, row, artifact)


@route("GET", "/api/v3/repos/{owner}/{repo}/actions/artifacts/{artifact_id:int}/{archive_format}")
def download_artifact(req, owner, repo, artifact_id, archive_format):
    """The artifact's zip (GitHub answers with a redirect to the same; zip is its only format)."""
    row, artifact = find_artifact(req, owner, repo, artifact_id)
    if archive_format != "zip":
        raise HTTPError(404, "Not Found")
    if artifact_json(req.app, row, artifact)["expired"]:
        raise HTTPError(410, "Artifact has expired")
    data = req.app.store.one("SELECT archive FROM artifacts WHERE id = ?", artifact["id"])["archive"]
    return attachment(bytes(data), "application/zip", artifact["name"] + ".zip")


@route("DELETE", "/api/v3/repos/{owner}/{repo}/actions/artifacts/{artifact_id:int}")
def delete_artifact(req, owner, repo, artifact_id):
    """Deleting an artifact takes what deleting its run takes (GitHub's actions: write)."""
    _, artifact = find_artifact(req, owner, repo, artifact_id, "run_workflow")
    with req.transaction() as db:
        db.execute("DELETE FROM artifacts WHERE id = ?", (artifact["id"],))
        req.effect("deleted artifact %s of run %d" % (artifact["name"], artifact["run_id"]))
    return 204, None


# -- a job's upload ----------------------------------------------------------------------------------

def check_archive(data):
    """Refuses a body that is not a zip whose entries stay inside the folder it is unpacked into, or that
    holds more files, or unpacks to more bytes, than an artifact may."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, NotImplementedError):
        raise invalid("Artifact", "archive", message="the body is the artifact's files as a zip")
    if len(entries) > MAX_ARTIFACT_ENTRIES or sum(e.file_size for e in entries) > MAX_UNPACKED_BYTES:
        raise invalid("Artifact", "archive", message="an artifact holds at most %d files, unpacking to at most %d "
                                                     "bytes" % (MAX_ARTIFACT_ENTRIES, MAX_UNPACKED_BYTES))
    for entry in entries:
        parts = entry.filename.split("/")
        if entry.filename.startswith("/") or "\\" in entry.filename or ".." in parts or ":" in parts[0] or \
                re.search(r"[\x00-\x1f]", entry.filename):
            raise invalid("Artifact", "archive", message="zip entry %r would unpack outside its folder" % entry.filename)


def job_of_run(req, owner, repo, run_id):
    """(repository, run) where the caller is a job of the run, with its job token, while it runs; a
    refusal otherwise, audited."""
    row, run = find_run(req, owner, repo, run_id, "keep_run_files")
    grant = req.principal.grant
    if grant is None or grant["id"] != run["job_grant_id"] or run["status"] != "in_progress":
        reason = "only a job of run %d keeps its files (artifacts, caches), with its job token, while it runs" % run["id"]
        req.refuse("keep_run_files", "run:%d" % run["id"], [reason])
        raise HTTPError(403, reason)
    return row, run


@route("POST", "/api/ext/v1/repos/{owner}/{repo}/actions/runs/{run_id:int}/artifacts")
def upload_artifact(req, owner, repo, run_id):
    """A zip of a job's files, from a job of the run with its job token (as the stand-in for
    actions/upload-artifact posts it): ?name= (GitHub's rules), ?retention_days= (1 to 90: 90 without),
    ?overwrite=true to replace an artifact of the same name in this attempt."""
    row, run = job_of_run(req, owner, repo, run_id)
    name, days = req.query.get("name", ""), req.query.get("retention_days") or str(RETENTION_DAYS)
    if not ARTIFACT_NAME_RE.fullmatch(name) or name.strip(". ") == "":
        raise invalid("Artifact", "name", message='name the artifact: ?name=, 1 to 255 characters, none of " : < > |'
                                                  ' * ? \\ / or a line break, and not only dots')
    if not days.isdigit() or not 1 <= int(days) <= RETENTION_DAYS:
        raise invalid("Artifact", "retention_days", message="retention_days is 1 to %d" % RETENTION_DAYS)
    data = req.body(MAX_ASSET_BYTES).read_all()
    check_archive(data)
    stamp, expires = now(), from_now(int(days) * 86400)
    with req.transaction() as db:
        same = db.execute("SELECT id FROM artifacts WHERE run_id = ? AND run_attempt = ? AND name = ?",
                          (run["id"], run["run_attempt"], name)).fetchone()
        if same is not None and req.query.get("overwrite") != "true":
            raise HTTPError(409, "an artifact named %s exists in this run attempt; upload with overwrite to replace it"
                            % name)
        if same is not None:
            db.execute("DELETE FROM artifacts WHERE id = ?", (same["id"],))
        # (the repository's expired archives go as a new one comes: their rows stay, listed expired)
        db.execute("UPDATE artifacts SET archive = NULL WHERE repo_id = ? AND expires_at <= ? AND archive IS NOT NULL",
                   (row["id"], stamp))
        artifact_id = insert(
            db, "INSERT INTO artifacts (repo_id, run_id, run_attempt, name, size_in_bytes, digest, archive, created_at,"
            " expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", (row["id"], run["id"], run["run_attempt"], name, len(data),
                                                                 "sha256:" + hashlib.sha256(data).hexdigest(), data,
                                                                 stamp, expires))
        req.effect("uploaded artifact %s (%d bytes) to run %d" % (name, len(data), run["id"]))
    _, artifact = find_artifact(req, owner, repo, artifact_id)
    return 201, artifact_json(req.app, row, artifact)


# -- caches: what a job saves for later runs of its branch (actions/cache) --------------------------

MAX_CACHE_KEYS = 10                      # a key and its restore keys, as actions/cache takes them
CACHE_KEY_MAX = 512                      # GitHub's
CACHE_COLUMNS = "id, repo_id, key, ref, size_in_bytes, created_at, last_accessed_at"


def cache_json(row):
    return {"id": row["id"], "ref": row["ref"], "key": row["key"], "version": hashlib.sha256(
        ("%s|%s" % (row["ref"], row["key"])).encode()).hexdigest(), "last_accessed_at": row["last_accessed_at"],
        "created_at": row["created_at"], "size_in_bytes": row["size_in_bytes"]}


def cache_ref(store, run):
    """The ref a run's caches belong to, GitHub's way: its branch (a pushed tag's ref), and a pull
    request's own merge ref, so a fork's run never writes where a branch's runs read."""
    fields = json.loads(run["event_fields"] or "{}")
    if run["event"] == "pull_request":
        issue = store.one("SELECT number FROM issues WHERE id = ?", fields.get("issue_id"))
        return "refs/pull/%d/merge" % (issue["number"] if issue else 0)
    return fields.get("ref") if run["event"] == "push" else "refs/heads/" + run["head_branch"]


@route("GET", "/api/ext/v1/repos/{owner}/{repo}/actions/runs/{run_id:int}/cache")
def restore_cache(req, owner, repo, run_id):
    """The cache a job of the run restores (the stand-in for actions/cache asks): ?keys= the key and then
    its restore keys, a line each; the first key that names a cache exactly, or else is the start of
    one's (the newest), of the run's ref and then of the default branch. Its zip, the key it had in
    X-Agentgit-Cache-Key; 404 where none matches."""
    row, run = job_of_run(req, owner, repo, run_id)
    keys = [k for k in req.query.get("keys", "").split("\n") if k][:MAX_CACHE_KEYS]
    refs = list(dict.fromkeys([cache_ref(req.app.store, run), "refs/heads/" + row["default_branch"]]))
    for ref in refs:
        for key in keys:
            found = req.app.store.one(
                "SELECT id, key FROM caches WHERE repo_id = ? AND ref = ? AND (key = ? OR substr(key, 1, ?) = ?) ORDER BY"
                " key = ? DESC, id DESC LIMIT 1", row["id"], ref, key, len(key), key, key)
            if found is not None:
                with req.app.store.transaction() as db:
                    db.execute("UPDATE caches SET last_accessed_at = ? WHERE id = ?", (now(), found["id"]))
                data = req.app.store.one("SELECT archive FROM caches WHERE id = ?", found["id"])["archive"]
                return 200, bytes(data), {"Content-Type": "application/zip", "X-Agentgit-Cache-Key": found["key"]}
    raise HTTPError(404, "Not Found")


@route("POST", "/api/ext/v1/repos/{owner}/{repo}/actions/runs/{run_id:int}/cache")
def save_cache(req, owner, repo, run_id):
    """A zip a job of the run saves as ?key= for its ref (the stand-in for actions/cache posts it at the
    job's end); a key the ref has is kept as it is (409), as GitHub's caches are."""
    row, run = job_of_run(req, owner, repo, run_id)
    key = req.query.get("key", "")
    if not 0 < len(key) <= CACHE_KEY_MAX or "," in key or "\n" in key:
        raise invalid("Cache", "key", message="a key is 1 to %d characters, without commas or line breaks" %
                      CACHE_KEY_MAX)
    data = req.body(MAX_ASSET_BYTES).read_all()
    check_archive(data)
    ref, stamp = cache_ref(req.app.store, run), now()
    with req.transaction() as db:
        if db.execute("SELECT 1 FROM caches WHERE repo_id = ? AND ref = ? AND key = ?", (row["id"], ref, key)).fetchone():
            raise HTTPError(409, "a cache with key %s exists for %s; caches are not replaced" % (key, ref))
        cache_id = insert(db, "INSERT INTO caches (repo_id, key, ref, size_in_bytes, archive, created_at,"
                              " last_accessed_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                              (row["id"], key, ref, len(data), data, stamp, stamp))
        req.effect("saved cache %s for %s (%d bytes) from run %d" % (key, ref, len(data), run["id"]))
    return 201, cache_json(req.app.store.one("SELECT %s FROM caches WHERE id = ?" % CACHE_COLUMNS, cache_id))


@route("GET", "/api/v3/repos/{owner}/{repo}/actions/caches")
def list_caches(req, owner, repo):
    """GitHub's cache list: ?key= (the start of a key), ?ref=, sorted by last_accessed_at (or created_at,
    size_in_bytes), newest first unless ?direction=asc."""
    row = find_repo(req, owner, repo)
    where, args = ["repo_id = ?"], [row["id"]]
    if req.query.get("key"):
        where.append("substr(key, 1, ?) = ?")
        args += [len(req.query["key"]), req.query["key"]]
    if req.query.get("ref"):
        where.append("ref = ?")
        args.append(req.query["ref"])
    column = {"created_at": "created_at", "size_in_bytes": "size_in_bytes"}.get(req.query.get("sort"),
                                                                                "last_accessed_at")
    rows = req.app.store.all("SELECT %s FROM caches WHERE %s ORDER BY %s %s, id" % (
        CACHE_COLUMNS, " AND ".join(where), column, "ASC" if req.query.get("direction") == "asc" else "DESC"), *args)
    return {"total_count": len(rows), "actions_caches": [cache_json(r) for r in req.paginate(rows)]}


@route("GET", "/api/v3/repos/{owner}/{repo}/actions/cache/usage")
def cache_usage(req, owner, repo):
    row = find_repo(req, owner, repo)
    usage = req.app.store.one("SELECT COUNT(*) AS n, COALESCE(SUM(size_in_bytes), 0) AS size FROM caches WHERE"
                              " repo_id = ?", row["id"])
    return {"full_name": "%s/%s" % (row["owner_login"], row["name"]), "active_caches_size_in_bytes": usage["size"],
            "active_caches_count": usage["n"]}


@route("DELETE", "/api/v3/repos/{owner}/{repo}/actions/caches")
def delete_caches_by_key(req, owner, repo):
    """The caches of ?key= (and of ?ref= where given) deleted; GitHub answers with them."""
    row = find_repo(req, owner, repo, "run_workflow")
    if not req.query.get("key"):
        raise invalid("Cache", "key", "missing_field")
    where, args = "repo_id = ? AND key = ?" + (" AND ref = ?" if req.query.get("ref") else ""), \
        [row["id"], req.query["key"]] + ([req.query["ref"]] if req.query.get("ref") else [])
    rows = req.app.store.all("SELECT %s FROM caches WHERE %s" % (CACHE_COLUMNS, where), *args)
    if not rows:
        raise HTTPError(404, "Not Found")
    with req.transaction() as db:
        db.execute("DELETE FROM caches WHERE " + where, args)
        req.effect("deleted %d cache(s) of key %s" % (len(rows), req.query["key"]))
    return {"total_count": len(rows), "actions_caches": [cache_json(r) for r in rows]}


@route("DELETE", "/api/v3/repos/{owner}/{repo}/actions/caches/{cache_id:int}")
def delete_cache(req, owner, repo, cache_id):
    row = find_repo(req, owner, repo, "run_workflow")
    with req.transaction() as db:
        if not db.execute("DELETE FROM caches WHERE id = ? AND repo_id = ?", (int(cache_id), row["id"])).rowcount:
            raise HTTPError(404, "Not Found")
        req.effect("deleted cache %d" % int(cache_id))
    return 204, None


# -- the stand-ins a job runs ------------------------------------------------------------------------

STANDIN_VERSIONS = ("v1", "v2", "v3", "v4", "v5", "v6")
STANDIN_ACTIONS = {      # each action's inputs (GitHub's, with their defaults) and outputs
    "upload-artifact": ({"name": "artifact", "path": None, "if-no-files-found": "warn", "retention-days": "0",
                         "compression-level": "6", "overwrite": "false", "include-hidden-files": "false"},
                        ("artifact-id", "artifact-url", "artifact-digest")),
    "download-artifact": ({"name": "", "path": "", "pattern": "", "merge-multiple": "false", "github-token": "",
                           "repository": "", "run-id": ""}, ("download-path",)),
    "cache": ({"path": None, "key": None, "restore-keys": "", "fail-on-cache-miss": "false", "lookup-only": "false",
               "token": "${{ github.token }}"}, ("cache-hit", "cache-primary-key", "cache-matched-key")),
}
NODE_STARTER = """const started = require("child_process").spawnSync("python3", [__dirname + "/standin.py", "%s"],
                                                           {stdio: "inherit"});
process.exit(started.status === null ? 1 : started.status);
"""

STANDIN_PROGRAM = r'''"""agentgit's stand-in for actions/upload-artifact, download-artifact and cache, run in a job: its
inputs in INPUT_* (from the step's with:), the job's token in AGENTGIT_JOB_TOKEN or INPUT_TOKEN. The
standard library only."""
import fnmatch, glob, io, json, os, sys, urllib.error, urllib.parse, urllib.request, zipfile


def given(name, default=""):
    """An input, as a composite step's env (INPUT_NAME_WITH_UNDERSCORES) or a JavaScript action's
    (INPUT_NAME-WITH-HYPHENS) names it."""
    value = os.environ.get("INPUT_" + name.upper().replace("-", "_")) or os.environ.get("INPUT_" + name.upper(), "")
    return value.strip() or default


def job_token():
    return os.environ.get("AGENTGIT_JOB_TOKEN") or given("token")


def run_url(what):
    return "%s/api/ext/v1/repos/%s/actions/runs/%s/%s" % (
        os.environ["GITHUB_SERVER_URL"], os.environ["GITHUB_REPOSITORY"], os.environ["GITHUB_RUN_ID"], what)


def call(method, url, token, data=None, kind="application/json", allowed=()):
    """The answer's body (and headers); for a status in ``allowed``, None; any other failure fails the step."""
    request = urllib.request.Request(url, data=data, method=method, headers={
        "Authorization": "token " + token, "Content-Type": kind, "Accept": "application/vnd.github+json"})
    try:
        with urllib.request.urlopen(request) as response:
            return response.read(), response.headers
    except urllib.error.HTTPError as error:
        if error.code in allowed:
            return None, error.headers
        fail("%s %s: %d %s" % (method, url.split("?")[0], error.code, error.read().decode("utf-8", "replace")[:500]))


def fail(message):
    print("::error::" + message.replace("\n", " "))
    sys.exit(1)


def output(**values):
    with open(os.environ["GITHUB_OUTPUT"], "a") as out:
        for name, value in values.items():
            out.write("%s=%s\n" % (name.replace("_", "-"), value))


def search_path(pattern):
    """The part of a pattern before its first segment with a wildcard (GitHub's search path)."""
    parts = pattern.split(os.sep)
    for i, part in enumerate(parts):
        if any(c in part for c in "*?["):
            return os.sep.join(parts[:i]) or os.sep
    return pattern.rstrip(os.sep) or os.sep


def files_under(path):
    if os.path.isdir(path):
        return [os.path.join(top, f) for top, _, names in os.walk(path) for f in names]
    return [path] if os.path.isfile(path) else []


def matching(patterns, hidden):
    """({file: its search path}, [search paths]) of the files a path input's lines name (! excludes)."""
    files, searched = {}, []
    for line in patterns.splitlines():
        line = line.strip()
        if not line:
            continue
        exclude = line.startswith("!")
        pattern = os.path.abspath(os.path.expanduser(line[1:] if exclude else line))
        root = search_path(pattern)
        found = [f for match in glob.glob(pattern, recursive=True) for f in files_under(match)]
        if not hidden:       # (a file named as itself is relative to itself ".")
            found = [f for f in found if not any(p.startswith(".") for p in os.path.relpath(f, root).split(os.sep)
                                                 if p != ".")]
        if exclude:
            for f in found:
                files.pop(f, None)
        else:
            searched.append(root)
            files.update((f, root) for f in found)
    return files, searched


def zipped(files, root, level=6):
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED if level else zipfile.ZIP_STORED,
                         compresslevel=level or None) as out:
        for path in sorted(files):
            out.write(path, os.path.relpath(path, root))
    return archive.getvalue()


def upload():
    files, searched = matching(given("path"), given("include-hidden-files") == "true")
    if not files:
        where = "No files were found with the provided path: %s. No artifacts will be uploaded." % given("path")
        if given("if-no-files-found", "warn") == "error":
            fail(where)
        print(("::warning::" if given("if-no-files-found", "warn") == "warn" else "") + where)
        return
    # the root: the search paths' least common ancestor; a single file named as itself keeps no folders
    root = os.path.commonpath(searched) if len(set(searched)) > 1 else searched[0]
    if len(files) == 1 and list(files) == [root]:
        root = os.path.dirname(root)
    name, days = given("name", "artifact"), given("retention-days", "0")
    query = urllib.parse.urlencode(dict(name=name, overwrite=given("overwrite", "false"),
                                        **({"retention_days": days} if days != "0" else {})))
    made = json.loads(call("POST", run_url("artifacts?" + query), job_token(), zipped(
        files, root, int(given("compression-level", "6"))), "application/zip")[0])
    url = "%s/%s/actions/runs/%s/artifacts/%d" % (os.environ["GITHUB_SERVER_URL"], os.environ["GITHUB_REPOSITORY"],
                                                  os.environ["GITHUB_RUN_ID"], made["id"])
    print("Artifact %s has been successfully uploaded! Final size is %d bytes. Artifact ID is %d" % (
        name, made["size_in_bytes"], made["id"]))
    output(artifact_id=made["id"], artifact_url=url, artifact_digest=made["digest"].partition(":")[2])


def unpack(data, folder):
    """Unpacks a zip into folder, refusing an entry that would land outside it."""
    os.makedirs(folder, exist_ok=True)
    top = os.path.realpath(folder)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for entry in archive.infolist():
            target = os.path.realpath(os.path.join(top, entry.filename))
            if os.path.commonpath([top, target]) != top:
                fail("artifact entry %r would land outside %s" % (entry.filename, folder))
            archive.extract(entry, top)


def download():
    token = given("github-token") or job_token()
    api = "%s/repos/%s/actions/runs/%s/artifacts?per_page=100" % (
        os.environ["GITHUB_API_URL"], given("repository") or os.environ["GITHUB_REPOSITORY"],
        given("run-id") or os.environ["GITHUB_RUN_ID"])
    newest, page = {}, 1
    while True:
        listing = json.loads(call("GET", "%s&page=%d" % (api, page), token)[0])["artifacts"]
        for artifact in listing:      # (newest first: an earlier attempt's of the same name is older)
            if not artifact["expired"]:
                newest.setdefault(artifact["name"], artifact)
        if len(listing) < 100:
            break
        page += 1
    name, pattern = given("name"), given("pattern")
    folder = os.path.abspath(os.path.expanduser(given("path") or os.environ["GITHUB_WORKSPACE"]))
    if name and name not in newest:
        fail("Unable to download artifact(s): Artifact not found for name: %s" % name)
    chosen = [newest[name]] if name else [a for n, a in sorted(newest.items()) if not pattern or
                                          fnmatch.fnmatchcase(n, pattern)]
    together = bool(name) or given("merge-multiple") == "true"
    for artifact in chosen:
        if not together and (os.sep in artifact["name"] or artifact["name"] in (".", "..")):
            fail("artifact name %r is not a folder name" % artifact["name"])
        unpack(call("GET", artifact["archive_download_url"], token)[0], folder if together else
               os.path.join(folder, artifact["name"]))
        print("Artifact %s was downloaded to %s" % (artifact["name"], folder))
    print("Total of %d artifact(s) downloaded" % len(chosen))
    output(download_path=folder)


def restore():
    """actions/cache's main step: the first of its key and restore keys that names a cache of this run's ref
    or the default branch's, unpacked into the workspace."""
    keys = [given("key")] + [k.strip() for k in given("restore-keys").splitlines() if k.strip()]
    data, headers = call("GET", run_url("cache?" + urllib.parse.urlencode({"keys": "\n".join(keys)})), job_token(),
                         allowed=(404,))
    matched = headers.get("X-Agentgit-Cache-Key") if data is not None else None
    output(cache_primary_key=keys[0], cache_matched_key=matched or "", cache_hit=str(matched == keys[0]).lower())
    with open(os.environ["GITHUB_STATE"], "a") as state:
        state.write("hit=%s\n" % str(matched == keys[0]).lower())
    if data is None:
        if given("fail-on-cache-miss") == "true":
            fail("Failed to restore cache entry. Exiting as fail-on-cache-miss is set. Input key: %s" % keys[0])
        return print("Cache not found for input keys: %s" % ", ".join(keys))
    if given("lookup-only") != "true":
        unpack(data, os.environ["GITHUB_WORKSPACE"])
    print("Cache restored from key: %s" % matched)


def save():
    """actions/cache's post step: the files its path names, inside the workspace, saved as its key where
    the main step found no cache of that very key."""
    if os.environ.get("STATE_hit") == "true":
        return print("Cache hit occurred on the primary key %s, not saving cache." % given("key"))
    workspace = os.path.realpath(os.environ["GITHUB_WORKSPACE"])
    files, _ = matching(given("path"), True)
    inside = [f for f in files if os.path.commonpath([workspace, os.path.realpath(f)]) == workspace]
    if len(inside) < len(files):
        print("::warning::agentgit's cache keeps files inside the workspace only: %d left out" % (len(files) - len(inside)))
    if not inside:
        return print("::warning::Path Validation Error: Path(s) specified in the action for caching do(es) not exist, "
                     "hence no cache is being saved.")
    made, _ = call("POST", run_url("cache?" + urllib.parse.urlencode({"key": given("key")})), job_token(),
                   zipped(inside, workspace), "application/zip", allowed=(409,))
    print("Cache saved with key: %s" % given("key") if made else "Cache with key %s exists: not saved" % given("key"))


if __name__ == "__main__":
    {"upload": upload, "download": download, "restore": restore, "save": save}[sys.argv[1]]()
'''


def standin_action(action):
    """The action.yml of a stand-in (JSON, which is YAML): a composite action of one step that runs
    STANDIN_PROGRAM with the step's inputs, or for actions/cache, whose saving is a post step (a
    JavaScript action's alone), node starting it at the job's start and at its end."""
    inputs, outputs = STANDIN_ACTIONS[action]
    described = {"name": "%s (agentgit's stand-in)" % action,
                 "description": "agentgit runs this for actions/%s: what it keeps, agentgit keeps" % action,
                 "inputs": {name: {"description": name, "required": default is None, **(
                     {"default": default} if default is not None else {})} for name, default in inputs.items()}}
    if action == "cache":
        return dict(described, outputs={name: {"description": name} for name in outputs}, runs={
            "using": "node20", "main": "main.js", "post": "post.js", "post-if": "success()"})
    env = {"INPUT_" + name.upper().replace("-", "_"): "${{ inputs.%s }}" % name for name in inputs}
    env.update(AGENTGIT_ACTION_PATH="${{ github.action_path }}", AGENTGIT_JOB_TOKEN="${{ github.token }}")
    return dict(described, **{
        "outputs": {name: {"description": name, "value": "${{ steps.standin.outputs.%s }}" % name} for name in outputs},
        "runs": {"using": "composite", "steps": [{
            "id": "standin", "shell": "bash", "env": env,
            # (the job's python3 from its PATH: the server's own may be one the job's user cannot run)
            "run": 'python3 "$AGENTGIT_ACTION_PATH/standin.py" %s' % action.partition("-")[0]}]}})


def write_standins(folder):
    """The stand-ins, each in a folder of its own under ``folder``: act's --local-repository arguments that
    map every version of actions/upload-artifact, download-artifact and cache to them."""
    mapped = []
    for action in STANDIN_ACTIONS:
        home = "%s/%s" % (folder, action)
        os.makedirs(home)
        with open(home + "/action.yml", "w") as f:
            json.dump(standin_action(action), f, indent=1)
        with open(home + "/standin.py", "w") as f:
            f.write(STANDIN_PROGRAM)
        for script, verb in (("main.js", "restore"), ("post.js", "save")) if action == "cache" else ():
            with open("%s/%s" % (home, script), "w") as f:
                f.write(NODE_STARTER % verb)
        for version in STANDIN_VERSIONS:
            mapped += ["--local-repository", "actions/%s@%s=%s" % (action, version, home)]
    return mapped
