"""Workflow artifacts: the files a run's jobs keep, put there by agentgit's stand-ins for
actions/upload-artifact and actions/download-artifact, read and deleted through GitHub's REST API.

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
stand-in downloads several, after the same check.
"""

import datetime
import hashlib
import io
import json
import os
import re
import zipfile

from agentgit.config import MAX_ASSET_BYTES, now
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


def job_of_run(req, run):
    """Is the caller a job of this run, with its job token? A refusal otherwise, audited."""
    grant = req.principal.grant
    if grant is None or grant["id"] != run["job_grant_id"] or run["status"] != "in_progress":
        reason = "only a job of run %d adds artifacts to it, with its job token, while it runs" % run["id"]
        req.refuse("upload_artifact", "run:%d" % run["id"], [reason])
        raise HTTPError(403, reason)


@route("POST", "/api/ext/v1/repos/{owner}/{repo}/actions/runs/{run_id:int}/artifacts")
def upload_artifact(req, owner, repo, run_id):
    """A zip of a job's files, from a job of the run with its job token (as the stand-in for
    actions/upload-artifact posts it): ?name= (GitHub's rules), ?retention_days= (1 to 90: 90 without),
    ?overwrite=true to replace an artifact of the same name in this attempt."""
    row, run = find_run(req, owner, repo, run_id, "upload_artifact")
    job_of_run(req, run)
    name, days = req.query.get("name", ""), req.query.get("retention_days") or str(RETENTION_DAYS)
    if not ARTIFACT_NAME_RE.fullmatch(name) or name.strip(". ") == "":
        raise invalid("Artifact", "name", message='name the artifact: ?name=, 1 to 255 characters, none of " : < > |'
                                                  ' * ? \\ / or a line break, and not only dots')
    if not days.isdigit() or not 1 <= int(days) <= RETENTION_DAYS:
        raise invalid("Artifact", "retention_days", message="retention_days is 1 to %d" % RETENTION_DAYS)
    data = req.body(MAX_ASSET_BYTES).read_all()
    check_archive(data)
    stamp = now()
    expires = (datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ") + datetime.timedelta(days=int(days)))\
        .strftime("%Y-%m-%dT%H:%M:%SZ")
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
        artifact_id = db.execute(
            "INSERT INTO artifacts (repo_id, run_id, run_attempt, name, size_in_bytes, digest, archive, created_at,"
            " expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", (row["id"], run["id"], run["run_attempt"], name, len(data),
                                                                 "sha256:" + hashlib.sha256(data).hexdigest(), data,
                                                                 stamp, expires)).lastrowid
        req.effect("uploaded artifact %s (%d bytes) to run %d" % (name, len(data), run["id"]))
    _, artifact = find_artifact(req, owner, repo, artifact_id)
    return 201, artifact_json(req.app, row, artifact)


# -- the stand-ins a job runs ------------------------------------------------------------------------

STANDIN_VERSIONS = ("v1", "v2", "v3", "v4", "v5", "v6")
STANDIN_ACTIONS = {      # each action's inputs (GitHub's, with their defaults) and outputs
    "upload-artifact": ({"name": "artifact", "path": None, "if-no-files-found": "warn", "retention-days": "0",
                         "compression-level": "6", "overwrite": "false", "include-hidden-files": "false"},
                        ("artifact-id", "artifact-url", "artifact-digest")),
    "download-artifact": ({"name": "", "path": "", "pattern": "", "merge-multiple": "false", "github-token": "",
                           "repository": "", "run-id": ""}, ("download-path",)),
}

STANDIN_PROGRAM = r'''"""agentgit's stand-in for actions/upload-artifact and actions/download-artifact, run in a job: its
inputs in INPUT_* (from the step's with:), the job's token in AGENTGIT_JOB_TOKEN. The standard library only."""
import fnmatch, glob, io, json, os, sys, urllib.error, urllib.parse, urllib.request, zipfile


def given(name, default=""):
    return os.environ.get("INPUT_" + name.upper().replace("-", "_"), "").strip() or default


def call(method, url, token, data=None, kind="application/json"):
    request = urllib.request.Request(url, data=data, method=method, headers={
        "Authorization": "token " + token, "Content-Type": kind, "Accept": "application/vnd.github+json"})
    try:
        with urllib.request.urlopen(request) as response:
            return response.read()
    except urllib.error.HTTPError as error:
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


def upload():
    files, searched = {}, []
    for line in given("path").splitlines():
        line = line.strip()
        if not line:
            continue
        exclude = line.startswith("!")
        pattern = os.path.abspath(os.path.expanduser(line[1:] if exclude else line))
        root = search_path(pattern)
        found = [f for match in glob.glob(pattern, recursive=True) for f in files_under(match)]
        if given("include-hidden-files") != "true":       # (a file named as itself is relative to itself ".")
            found = [f for f in found if not any(p.startswith(".") for p in os.path.relpath(f, root).split(os.sep)
                                                 if p != ".")]
        if exclude:
            for f in found:
                files.pop(f, None)
        else:
            searched.append(root)
            files.update((f, root) for f in found)
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
    level = int(given("compression-level", "6"))
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED if level else zipfile.ZIP_STORED,
                         compresslevel=level or None) as out:
        for path in sorted(files):
            out.write(path, os.path.relpath(path, root))
    name, days = given("name", "artifact"), given("retention-days", "0")
    query = urllib.parse.urlencode(dict(name=name, overwrite=given("overwrite", "false"),
                                        **({"retention_days": days} if days != "0" else {})))
    made = json.loads(call("POST", "%s/api/ext/v1/repos/%s/actions/runs/%s/artifacts?%s" % (
        os.environ["GITHUB_SERVER_URL"], os.environ["GITHUB_REPOSITORY"], os.environ["GITHUB_RUN_ID"], query),
        os.environ["AGENTGIT_JOB_TOKEN"], archive.getvalue(), "application/zip"))
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
    token = given("github-token") or os.environ["AGENTGIT_JOB_TOKEN"]
    api = "%s/repos/%s/actions/runs/%s/artifacts?per_page=100" % (
        os.environ["GITHUB_API_URL"], given("repository") or os.environ["GITHUB_REPOSITORY"],
        given("run-id") or os.environ["GITHUB_RUN_ID"])
    newest, page = {}, 1
    while True:
        listing = json.loads(call("GET", "%s&page=%d" % (api, page), token))["artifacts"]
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
        unpack(call("GET", artifact["archive_download_url"], token), folder if together else
               os.path.join(folder, artifact["name"]))
        print("Artifact %s was downloaded to %s" % (artifact["name"], folder))
    print("Total of %d artifact(s) downloaded" % len(chosen))
    output(download_path=folder)


if __name__ == "__main__":
    {"upload": upload, "download": download}[sys.argv[1]]()
'''


def standin_action(action):
    """The action.yml of a stand-in (JSON, which is YAML): a composite action of one step that runs
    STANDIN_PROGRAM with the step's inputs."""
    inputs, outputs = STANDIN_ACTIONS[action]
    env = {"INPUT_" + name.upper().replace("-", "_"): "${{ inputs.%s }}" % name for name in inputs}
    env.update(AGENTGIT_ACTION_PATH="${{ github.action_path }}", AGENTGIT_JOB_TOKEN="${{ github.token }}")
    return {
        "name": "%s (agentgit's stand-in)" % action,
        "description": "agentgit runs this for actions/%s: the run's artifacts are kept by agentgit" % action,
        "inputs": {name: {"description": name, "required": default is None, **(
            {"default": default} if default is not None else {})} for name, default in inputs.items()},
        "outputs": {name: {"description": name, "value": "${{ steps.standin.outputs.%s }}" % name} for name in outputs},
        "runs": {"using": "composite", "steps": [{
            "id": "standin", "shell": "bash", "env": env,
            # (the job's python3 from its PATH: the server's own may be one the job's user cannot run)
            "run": 'python3 "$AGENTGIT_ACTION_PATH/standin.py" %s' % action.partition("-")[0]}]}}


def write_standins(folder):
    """The stand-ins, each in a folder of its own under ``folder``: act's --local-repository arguments that
    map every version of actions/upload-artifact and download-artifact to them."""
    mapped = []
    for action in STANDIN_ACTIONS:
        home = "%s/%s" % (folder, action)
        os.makedirs(home)
        with open(home + "/action.yml", "w") as f:
            json.dump(standin_action(action), f, indent=1)
        with open(home + "/standin.py", "w") as f:
            f.write(STANDIN_PROGRAM)
        for version in STANDIN_VERSIONS:
            mapped += ["--local-repository", "actions/%s@%s=%s" % (action, version, home)]
    return mapped
