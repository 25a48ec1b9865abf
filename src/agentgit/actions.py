"""REST: workflow records, their runs, and the jobs, steps and logs of the runs the executor ran (runner)."""

import io
import json
import re
import zipfile

from agentgit.config import now
from agentgit.errors import HTTPError, invalid
from agentgit.storage import insert_row
from agentgit.gitstore import branch_sha, open_repo, resolve_commit
from agentgit.accounts import full_name
from agentgit.policy import Resource
from agentgit.routing import route
from agentgit.serializers import node_id, repo_json, user_json_by_id
from agentgit.lookups import find_repo
from agentgit.contents import lookup_path


# -- workflow records ---------------------------------------------------------------------------

WORKFLOW_NAME_RE = re.compile(rb"^name:\s*['\"]?(.+?)['\"]?\s*$", re.MULTILINE)
ON_LINE_RE = re.compile(r"""^(?:on|"on"|'on'|true):(.*)$""", re.MULTILINE)
REF_FILTERS = ("branches", "branches-ignore", "tags", "tags-ignore")
EVENT_FILTERS = REF_FILTERS + ("types",)


def yaml_words(value):
    """The items of a one-line YAML scalar or flow list, unquoted: 'push' or [push, "pull_request"]."""
    value = value.partition(" #")[0].strip()
    items = value[1:-1].split(",") if value.startswith("[") and value.endswith("]") else [value]
    return [item.strip().strip("'\"") for item in items if item.strip()]


def block_lines(text, end):
    """(indent, stripped line) of each line of the YAML block under the top-level key whose line ends at
    ``end``: to the next line that is not indented, blank lines and comments left out."""
    for line in text[end:].splitlines()[1:]:
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        indent = len(line) - len(line.lstrip())
        if indent == 0:
            return
        yield indent, stripped


def workflow_events(text):
    """{event: {filter: [patterns]}} of the workflow's ``on:``, in GitHub's three spellings (an event, a list
    of events, a mapping of events to their filters); the ref filters and types are read, other settings are
    not."""
    found = ON_LINE_RE.search(text)
    if found is None:
        return {}
    if found.group(1).partition(" #")[0].strip():
        return {event: {} for event in yaml_words(found.group(1))}
    events, event, listing, base = {}, None, None, None
    for indent, stripped in block_lines(text, found.end()):
        base = indent if base is None else base
        if indent == base:
            name = stripped[2:] if stripped.startswith("- ") else stripped.partition(":")[0]
            event, listing = yaml_words(name)[0] if yaml_words(name) else None, None
            if event:
                events[event] = {}
        elif event and stripped.startswith("- ") and listing:
            events[event][listing] += yaml_words(stripped[2:])
        elif event:
            key, _, value = stripped.partition(":")
            listing = key.strip() if key.strip() in EVENT_FILTERS else None
            if listing:
                events[event][listing] = yaml_words(value) if value.strip() else []
    return events


def workflow_files(git, row):
    """{path: display name} of .github/workflows/*.yml|yaml on the default branch."""
    out = {}
    for path, text in workflow_blobs(git, branch_sha(git, row["default_branch"])).items():
        m = WORKFLOW_NAME_RE.search(text)
        out[path] = m.group(1).decode("utf-8", "replace") if m else path
    return out


def workflow_blobs(git, sha):
    """{path: contents} of .github/workflows/*.yml|yaml at the commit ``sha`` (None: none)."""
    found = lookup_path(git, git[sha.encode()].tree.decode(), ".github/workflows") if sha else None
    if not found or found[0] != 0o040000:
        return {}
    return {".github/workflows/" + item.path.decode("utf-8", "replace"): git[item.sha].data
            for item in git[found[1].encode()].items()
            if item.path.endswith((b".yml", b".yaml")) and item.mode != 0o040000}


def sync_workflows(req, row):
    """The workflows table follows the files, so a workflow keeps its id across calls."""
    with open_repo(req.app, row["id"]) as git:
        files = workflow_files(git, row)
    known = {w["path"] for w in req.app.store.all("SELECT path FROM workflows WHERE repo_id = ?", row["id"])}
    if set(files) - known:
        with req.app.store.transaction() as db:
            for path in set(files) - known:
                db.execute("INSERT INTO workflows (repo_id, path, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                           (row["id"], path, now()))
    rows = req.app.store.all("SELECT * FROM workflows WHERE repo_id = ? ORDER BY id", row["id"])
    return [(w, files.get(w["path"])) for w in rows]


def workflow_json(app, repo_row, wf, display):
    name = full_name(repo_row)
    return {"id": wf["id"], "node_id": node_id("Workflow", wf["id"]), "name": display or wf["path"],
            "path": wf["path"], "state": ("disabled_manually" if wf["disabled_at"] else "active") if display else
            "deleted", "created_at": wf["created_at"], "updated_at": wf["disabled_at"] or wf["created_at"], "url": "%s/repos/%s/actions/workflows/%d" % (app.api, name, wf["id"]),
            "html_url": "%s/%s/blob/%s/%s" % (app.url, name, repo_row["default_branch"], wf["path"]),
            "badge_url": "%s/%s/workflows/%s/badge.svg" % (app.url, name, wf["path"].rsplit("/", 1)[-1])}


def find_workflow(req, row, workflow_id):
    """By id or by file name, as GitHub takes either."""
    for wf, display in sync_workflows(req, row):
        if (str(wf["id"]) == workflow_id or wf["path"].rsplit("/", 1)[-1] == workflow_id) and display:
            return wf, display
    raise HTTPError(404, "Not Found")


@route("GET", "/api/v3/repos/{owner}/{repo}/actions/workflows")
def list_workflows(req, owner, repo):
    row = find_repo(req, owner, repo)
    workflows = [(w, d) for w, d in sync_workflows(req, row) if d]
    return {"total_count": len(workflows),
            "workflows": [workflow_json(req.app, row, w, d) for w, d in req.paginate(workflows)]}


@route("GET", "/api/v3/repos/{owner}/{repo}/actions/workflows/{workflow_id}")
def get_workflow(req, owner, repo, workflow_id):
    row = find_repo(req, owner, repo)
    return workflow_json(req.app, row, *find_workflow(req, row, workflow_id))


@route("POST", "/api/v3/repos/{owner}/{repo}/actions/workflows/{workflow_id}/dispatches")
def dispatch_workflow(req, owner, repo, workflow_id):
    body = req.json()
    ref = req.field(body, "ref", str, "Workflow", required=True)
    inputs = req.field(body, "inputs", dict, "Workflow", default={})
    details = req.field(body, "return_run_details", bool, "Workflow", default=False)
    if len(inputs) > 25 or not all(isinstance(v, (str, int, float, bool)) for v in inputs.values()):
        raise invalid("Workflow", "inputs", message="inputs must be at most 25 string, number or boolean values")
    row = find_repo(req, owner, repo)
    wf, _ = find_workflow(req, row, workflow_id)
    if wf["disabled_at"]:
        raise invalid("Workflow", "workflow_id", "custom", "Cannot trigger a 'workflow_dispatch' on a disabled workflow")
    branch = ref[len("refs/heads/"):] if ref.startswith("refs/heads/") else ref
    with open_repo(req.app, row["id"]) as git:
        sha = resolve_commit(git, ref)
        text = workflow_blobs(git, sha).get(wf["path"], b"") if sha else b""
    if sha is None:
        raise invalid("Workflow", "ref", "invalid", "No ref found for: %s" % ref)
    if "workflow_dispatch" not in workflow_events(text.decode("utf-8", "replace")):
        raise HTTPError(422, "Workflow does not have 'workflow_dispatch' trigger")       # (GitHub's words)
    req.authorize("run_workflow", Resource.repo(row), ref="refs/heads/" + branch, workflow=wf["path"])
    with req.transaction() as db:
        number = db.execute("SELECT COALESCE(MAX(run_number), 0) + 1 AS n FROM workflow_runs WHERE workflow_id = ?",
                            (wf["id"],)).fetchone()["n"]
        stamp = now()
        run_id = insert_row(db, "workflow_runs", {
            "repo_id": row["id"], "workflow_id": wf["id"], "run_number": number, "event": "workflow_dispatch",
            "head_branch": branch, "head_sha": sha, "inputs": json.dumps(inputs), "status": "queued",
            "actor_id": req.principal.user["id"], "grant_id": dispatching_grant(req), "created_at": stamp,
            "updated_at": stamp})
        req.effect("queued run %d of %s on %s%s" % (run_id, wf["path"], branch, "" if req.app.config.workflow_runner
                                                     else " (a record: this server executes no runs)"))
        req.announce(row["id"], "workflow_run", "requested", run_event(run_id, "queued"))
    req.app.runs_waiting.set()
    if details:         # (GitHub's since 2026, which gh 2.87 and later asks for: the run it started)
        return 200, {"workflow_run_id": run_id, "run_url": "%s/repos/%s/actions/runs/%d" % (
            req.app.api, full_name(row), run_id), "html_url": "%s/%s/actions/runs/%d" % (req.app.url, full_name(row),
                                                                                          run_id)}
    return 204, None


@route("POST", "/api/v3/repos/{owner}/{repo}/dispatches")
def repository_dispatch(req, owner, repo):
    """GitHub's repository_dispatch, which bots and release tools send: checked, decided as starting a
    workflow is, and recorded; it starts the default branch's workflows whose `on: repository_dispatch`
    names its type (or no types)."""
    body = req.json()
    event = req.field(body, "event_type", str, "Dispatch", required=True)
    payload = req.field(body, "client_payload", dict, "Dispatch", default={})
    if not 0 < len(event) <= 100:
        raise invalid("Dispatch", "event_type", message="event_type is 1 to 100 characters")
    if len(payload) > 10:
        raise invalid("Dispatch", "client_payload", message="client_payload has at most 10 top-level properties")
    row = find_repo(req, owner, repo)
    req.authorize("run_workflow", Resource.repo(row), ref="refs/heads/" + row["default_branch"], workflow=event)
    with open_repo(req.app, row["id"]) as git:
        sha = branch_sha(git, row["default_branch"])
    if sha is None:
        raise invalid("Dispatch", "event_type", message="the repository has no default branch to run workflows on")
    with req.transaction():
        req.effect("repository_dispatch %s on %s (%d payload properties)" % (event, full_name(row), len(payload)))
        req.announce(row["id"], "repository_dispatch", event, {"branch": row["default_branch"], "sha": sha,
                                                               "client_payload": payload})
    req.app.runs_waiting.set()
    return 204, None


@route("PUT", "/api/v3/repos/{owner}/{repo}/actions/workflows/{workflow_id}/enable")
@route("PUT", "/api/v3/repos/{owner}/{repo}/actions/workflows/{workflow_id}/disable")
def enable_or_disable_workflow(req, owner, repo, workflow_id):
    """gh workflow enable|disable: a disabled workflow is not dispatched, and says so in its state."""
    row = find_repo(req, owner, repo, "manage_workflows")
    wf, _ = find_workflow(req, row, workflow_id)
    disable = req.raw_path.rstrip("/").endswith("/disable")
    with req.transaction() as db:
        db.execute("UPDATE workflows SET disabled_at = ? WHERE id = ?", (now() if disable else None, wf["id"]))
        req.effect("%s workflow %s" % ("disabled" if disable else "enabled", wf["path"]))
    return 204, None


def dispatching_grant(req):
    """The task grant a run is started under (its job token is made from it), or None: the actor's own authority."""
    return req.principal.grant["id"] if req.principal.grant is not None else None


def run_event(run_id, status, conclusion=None):
    """A workflow_run event's subject: the run, and its status and conclusion when it happened."""
    return {"run_id": run_id, "then": {"status": status, "conclusion": conclusion}}


def job_event(job_id, status, conclusion=None):
    """A workflow_job event's subject: the job, and its status and conclusion when it happened."""
    return {"job_id": job_id, "then": {"status": status, "conclusion": conclusion}}


def run_json(app, repo_row, run):
    name, api = full_name(repo_row), app.api
    wf = app.store.one("SELECT * FROM workflows WHERE id = ?", run["workflow_id"])
    url = "%s/repos/%s/actions/runs/%d" % (api, name, run["id"])
    return {"id": run["id"], "node_id": node_id("WorkflowRun", run["id"]), "name": wf["path"], "path": wf["path"],
            "display_title": wf["path"], "head_branch": run["head_branch"], "head_sha": run["head_sha"],
            "run_number": run["run_number"], "run_attempt": run["run_attempt"], "event": run["event"],
            "status": run["status"], "conclusion": run["conclusion"], "workflow_id": run["workflow_id"], "url": url,
            "html_url": "%s/%s/actions/runs/%d" % (app.url, name, run["id"]), "created_at": run["created_at"],
            "updated_at": run["updated_at"], "run_started_at": run["run_started_at"] or run["created_at"],
            "actor": user_json_by_id(app, run["actor_id"]), "triggering_actor": user_json_by_id(app, run["actor_id"]),
            "inputs": json.loads(run["inputs"]), "head_commit": None, "pull_requests": [],
            "repository": repo_json(app, repo_row), "head_repository": repo_json(app, repo_row),
            "jobs_url": url + "/jobs", "logs_url": url + "/logs", "check_suite_url": url + "/check-suite",
            "cancel_url": url + "/cancel", "rerun_url": url + "/rerun", "artifacts_url": url + "/artifacts",
            "workflow_url": "%s/repos/%s/actions/workflows/%d" % (api, name, run["workflow_id"])}


RUN_STATUSES = ("queued", "in_progress", "completed", "requested", "waiting", "pending")


def runs_json(req, row, where, args):
    """GitHub's run list: ?branch=, ?event=, ?head_sha=, and ?status= a status or a conclusion."""
    status = "status" if req.query.get("status") in RUN_STATUSES else "conclusion"
    for key, column in (("branch", "head_branch"), ("event", "event"), ("status", status), ("head_sha", "head_sha")):
        if req.query.get(key):
            where.append("%s = ?" % column)
            args.append(req.query[key])
    runs = req.app.store.all("SELECT * FROM workflow_runs WHERE %s ORDER BY id DESC" % " AND ".join(where), *args)
    return {"total_count": len(runs), "workflow_runs": [run_json(req.app, row, r) for r in req.paginate(runs)]}


@route("GET", "/api/v3/repos/{owner}/{repo}/actions/runs")
def list_runs(req, owner, repo):
    row = find_repo(req, owner, repo)
    return runs_json(req, row, ["repo_id = ?"], [row["id"]])


@route("GET", "/api/v3/repos/{owner}/{repo}/actions/workflows/{workflow_id}/runs")
def list_workflow_runs(req, owner, repo, workflow_id):
    row = find_repo(req, owner, repo)
    wf, _ = find_workflow(req, row, workflow_id)
    return runs_json(req, row, ["workflow_id = ?"], [wf["id"]])


def find_run(req, owner, repo, run_id, action="read_code"):
    row = find_repo(req, owner, repo)
    run = req.app.store.one("SELECT * FROM workflow_runs WHERE id = ? AND repo_id = ?", int(run_id), row["id"])
    if run is None:
        raise HTTPError(404, "Not Found")
    if action != "read_code":
        req.authorize(action, Resource.repo(row), ref="refs/heads/" + run["head_branch"])
    return row, run


@route("GET", "/api/v3/repos/{owner}/{repo}/actions/runs/{run_id:int}")
def get_run(req, owner, repo, run_id):
    row, run = find_run(req, owner, repo, run_id)
    return run_json(req.app, row, run)


def job_json(app, repo_row, run, job):
    """GitHub's job of a run attempt, with its steps."""
    name, api = full_name(repo_row), app.api
    wf = app.store.one("SELECT path FROM workflows WHERE id = ?", run["workflow_id"])
    url = "%s/repos/%s/actions/jobs/%d" % (api, name, job["id"])
    return {"id": job["id"], "run_id": run["id"], "run_url": "%s/repos/%s/actions/runs/%d" % (api, name, run["id"]),
            "run_attempt": job["run_attempt"], "node_id": node_id("Job", job["id"]), "head_sha": run["head_sha"],
            "head_branch": run["head_branch"], "url": url, "html_url": "%s/%s/actions/runs/%d/job/%d" % (
                app.url, name, run["id"], job["id"]), "status": job["status"], "conclusion": job["conclusion"],
            "created_at": job["created_at"], "started_at": job["started_at"], "completed_at": job["completed_at"],
            "name": job["name"], "steps": json.loads(job["steps"]), "check_run_url": "%s/repos/%s/check-runs/%s" % (
                api, name, job["check_run_id"]) if job["check_run_id"] else url, "labels": ["ubuntu-latest"],
            "runner_id": 1, "runner_name": "agentgit", "runner_group_id": 1, "runner_group_name": "agentgit",
            "workflow_name": wf["path"]}


def find_attempt(req, owner, repo, run_id, attempt_number):
    """(repository, run, the attempt asked for: the latest where none is named); 404 for one it never had."""
    row, run = find_run(req, owner, repo, run_id)
    attempt = int(attempt_number) if attempt_number is not None else run["run_attempt"]
    if not 1 <= attempt <= run["run_attempt"]:
        raise HTTPError(404, "Not Found")
    return row, run, attempt


def attempt_jobs(store, run, attempt):
    return store.all("SELECT * FROM workflow_jobs WHERE run_id = ? AND run_attempt = ? ORDER BY id", run["id"], attempt)


@route("GET", "/api/v3/repos/{owner}/{repo}/actions/runs/{run_id:int}/attempts/{attempt_number:int}")
def get_run_attempt(req, owner, repo, run_id, attempt_number):
    """An attempt of a run: the latest as the run stands, an earlier one as its jobs ended."""
    row, run, attempt = find_attempt(req, owner, repo, run_id, attempt_number)
    out = run_json(req.app, row, run)
    if attempt < run["run_attempt"]:
        ended = [j["conclusion"] for j in attempt_jobs(req.app.store, run, attempt)]
        out.update(run_attempt=attempt, status="completed", conclusion="failure" if "failure" in ended else
                   "cancelled" if "cancelled" in ended else "success" if ended else None)
    return out


@route("GET", "/api/v3/repos/{owner}/{repo}/actions/runs/{run_id:int}/jobs")
@route("GET", "/api/v3/repos/{owner}/{repo}/actions/runs/{run_id:int}/attempts/{attempt_number:int}/jobs")
def list_run_jobs(req, owner, repo, run_id, attempt_number=None):
    """The jobs of an attempt (the latest: GitHub's filter=latest), or of every attempt (filter=all)."""
    row, run, attempt = find_attempt(req, owner, repo, run_id, attempt_number)
    if req.query.get("filter") == "all" and attempt_number is None:
        jobs = req.app.store.all("SELECT * FROM workflow_jobs WHERE run_id = ? ORDER BY id", run["id"])
    else:
        jobs = attempt_jobs(req.app.store, run, attempt)
    return {"total_count": len(jobs), "jobs": [job_json(req.app, row, run, j) for j in req.paginate(jobs)]}


def find_job(req, owner, repo, job_id, action="read_code"):
    row = find_repo(req, owner, repo, action)
    job = req.app.store.one("SELECT j.* FROM workflow_jobs j JOIN workflow_runs r ON r.id = j.run_id WHERE j.id = ?"
                            " AND r.repo_id = ?", int(job_id), row["id"])
    if job is None:
        raise HTTPError(404, "Not Found")
    return row, req.app.store.one("SELECT * FROM workflow_runs WHERE id = ?", job["run_id"]), job


@route("GET", "/api/v3/repos/{owner}/{repo}/actions/jobs/{job_id:int}")
def get_job(req, owner, repo, job_id):
    row, run, job = find_job(req, owner, repo, job_id)
    return job_json(req.app, row, run, job)


@route("GET", "/api/v3/repos/{owner}/{repo}/actions/jobs/{job_id:int}/logs")
def get_job_logs(req, owner, repo, job_id):
    """The job's log as plain text, each line after its time (GitHub answers with a redirect to the same)."""
    _, _, job = find_job(req, owner, repo, job_id)
    return 200, (job["log"] + "\n").encode(), {"Content-Type": "text/plain; charset=utf-8"}


@route("GET", "/api/v3/repos/{owner}/{repo}/actions/runs/{run_id:int}/logs")
@route("GET", "/api/v3/repos/{owner}/{repo}/actions/runs/{run_id:int}/attempts/{attempt_number:int}/logs")
def get_run_logs(req, owner, repo, run_id, attempt_number=None):
    """A run attempt's logs (the latest where none is named) as the zip gh reads: each job's whole log as
    N_job.txt, and each step's lines as job/N_step.txt."""
    _, run, attempt = find_attempt(req, owner, repo, run_id, attempt_number)
    jobs = attempt_jobs(req.app.store, run, attempt)
    if not jobs:
        raise HTTPError(404, "Not Found")
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as out:
        for number, job in enumerate(jobs):
            name = zip_name(job["name"])
            out.writestr("%d_%s.txt" % (number, name), job["log"])
            for step, lines in step_logs(job):
                out.writestr("%s/%d_%s.txt" % (name, step["number"], zip_name(step["name"])), "\n".join(lines))
    return 200, archive.getvalue(), {"Content-Type": "application/zip"}


def zip_name(text):
    """A job's or step's name as the zip's entries spell it: no slashes or colons, at most 90 characters."""
    return re.sub(r'[/\\:<>|*?"]', "", text)[:90] or "job"


def step_logs(job):
    """[(step, its lines)]: each step's lines run from where it began in the job's log to where the next did."""
    steps, starts, lines = json.loads(job["steps"]), json.loads(job["step_lines"]), job["log"].split("\n")
    ends = starts[1:] + [len(lines)]
    return [(step, lines[start:end]) for step, start, end in zip(steps, starts, ends)]


@route("POST", "/api/v3/repos/{owner}/{repo}/actions/runs/{run_id:int}/cancel")
def cancel_run(req, owner, repo, run_id):
    _, run = find_run(req, owner, repo, run_id, "run_workflow")
    if run["status"] == "completed":
        raise HTTPError(409, "Cannot cancel a workflow run that is completed.")
    with req.transaction() as db:
        db.execute("UPDATE workflow_runs SET status = 'completed', conclusion = 'cancelled', updated_at = ? WHERE id = ?",
                   (now(), run["id"]))
        req.effect("cancelled run %d" % run["id"])
        req.announce(run["repo_id"], "workflow_run", "completed", run_event(run["id"], "completed", "cancelled"))
    return 202, {}


@route("POST", "/api/v3/repos/{owner}/{repo}/actions/runs/{run_id:int}/rerun")
def rerun_run(req, owner, repo, run_id):
    _, run = find_run(req, owner, repo, run_id, "run_workflow")
    return start_attempt(req, run)


@route("POST", "/api/v3/repos/{owner}/{repo}/actions/runs/{run_id:int}/rerun-failed-jobs")
def rerun_failed_jobs(req, owner, repo, run_id):
    """A new attempt of the latest one's failed and cancelled jobs (with what they need, which act runs
    again); the rest carried over as they ended."""
    _, run = find_run(req, owner, repo, run_id, "run_workflow")
    failed = [j["job_key"] for j in attempt_jobs(req.app.store, run, run["run_attempt"])
              if j["conclusion"] in ("failure", "cancelled", "timed_out")]
    if not failed and run["status"] == "completed":
        raise HTTPError(409, "This workflow run has no failed jobs to re-run.")
    return start_attempt(req, run, failed)


@route("POST", "/api/v3/repos/{owner}/{repo}/actions/jobs/{job_id:int}/rerun")
def rerun_job(req, owner, repo, job_id):
    """A new attempt of one job of the run's latest attempt (with what it needs); the rest carried over."""
    _, run, job = find_job(req, owner, repo, job_id, "run_workflow")
    if job["run_attempt"] != run["run_attempt"]:
        raise HTTPError(409, "Only a job of the latest attempt of a workflow run can be re-run.")
    return start_attempt(req, run, [job["job_key"]])


def start_attempt(req, run, jobs=None):
    """The run's next attempt, queued: all its jobs, or those of ``jobs`` (keys) with the latest attempt's
    others carried over as they ended. It is its rerunner's: her authority (or her task's) bounds its job
    token. A run still queued or running is not rerun."""
    if run["status"] != "completed":
        raise HTTPError(409, "Cannot re-run a workflow run that is not completed.")
    with req.transaction() as db:
        db.execute("UPDATE workflow_runs SET status = 'queued', conclusion = NULL, run_attempt = run_attempt + 1,"
                   " actor_id = ?, grant_id = ?, rerun_jobs = ?, updated_at = ? WHERE id = ?",
                   (req.principal.user["id"], dispatching_grant(req), json.dumps(jobs) if jobs else None, now(),
                    run["id"]))
        if jobs:
            db.execute("INSERT INTO workflow_jobs (run_id, run_attempt, job_key, name, status, conclusion, steps, log,"
                       " step_lines, check_run_id, started_at, completed_at, created_at) SELECT run_id, run_attempt + 1,"
                       " job_key, name, status, conclusion, steps, log, step_lines, check_run_id, started_at,"
                       " completed_at, created_at FROM workflow_jobs WHERE run_id = ? AND run_attempt = ? AND job_key"
                       " NOT IN (%s)" % ", ".join("?" * len(jobs)), (run["id"], run["run_attempt"], *jobs))
        req.effect("re-queued run %d (attempt %d%s)" % (run["id"], run["run_attempt"] + 1, ": jobs %s" % ", ".join(
            jobs) if jobs else ""))
        req.announce(run["repo_id"], "workflow_run", "requested", run_event(run["id"], "queued"))
    req.app.runs_waiting.set()
    return 201, {}


@route("POST", "/api/v3/repos/{owner}/{repo}/actions/runs/{run_id:int}/approve")
def approve_run(req, owner, repo, run_id):
    """A maintainer's yes to a run that a pull request from a fork started for someone who may not write
    to the repository (it waits, concluded action_required): queued now, it still runs as whoever opened
    the pull request, reading only and without secrets."""
    _, run = find_run(req, owner, repo, run_id, "run_workflow")
    with req.transaction() as db:
        if not db.execute("UPDATE workflow_runs SET status = 'queued', conclusion = NULL, updated_at = ? WHERE id = ? AND"
                          " conclusion = 'action_required'", (now(), run["id"])).rowcount:
            raise HTTPError(409, "This workflow run is not waiting for approval.")
        req.effect("approved run %d of a pull request from a fork" % run["id"])
        req.announce(run["repo_id"], "workflow_run", "requested", run_event(run["id"], "queued"))
    req.app.runs_waiting.set()
    return 201, {}


@route("DELETE", "/api/v3/repos/{owner}/{repo}/actions/runs/{run_id:int}")
def delete_run(req, owner, repo, run_id):
    _, run = find_run(req, owner, repo, run_id, "run_workflow")
    with req.transaction() as db:
        db.execute("DELETE FROM workflow_runs WHERE id = ?", (run["id"],))
        req.effect("deleted run %d" % run["id"])
    return 204, None
