"""The webhook outbox: an event a hook subscribes to becomes one delivery row a hook, written in the same
transaction as the change that caused it, so a crash between the change and its delivery loses none.

What is written is what happened: the event and action, the ids and refs it is about (``subject``), and
the chain behind it (who acted, of which kind, for whom, under which task and grant, and the audit row).
The payload is rendered from it, in GitHub's shape, when the delivery worker (webhooks) first sends it,
and kept for redeliveries.
"""

import json
import uuid

from agentgit.config import JOB_TASK_PREFIX, now
from agentgit.storage import insert
from agentgit.gitstore import ZERO_SHA


def chain_of(fields, audit_id=None):
    """The chain a payload's ``agentgit`` object names, from audit_row() fields."""
    return {"actor": fields.get("actor"), "actor_kind": fields.get("user_kind"), "delegator": fields.get("delegator"),
            "task": fields.get("task"), "grant": fields.get("grant_id"), "audit_id": audit_id}


def subscribed(events, event):
    return event in events or "*" in events


PULL_REQUEST_HEADS = ("SELECT p.issue_id, i.repo_id FROM pulls p JOIN issues i ON i.id = p.issue_id WHERE"
                      " i.state = 'open' AND p.head_repo_id = ? AND p.head_ref = ?")


RUN_EVENTS = ("push", "pull_request", "repository_dispatch")      # the events that may start workflows here


def queue_run_trigger(db, repo_id, event, action, subject, chain):
    """An event for the runner to start workflows from (runner.start_triggered_runs): the ref their
    branch filters match (a push's ref, a pull request's base, a dispatch's default branch) and the commit
    whose workflows run. Never one a job token caused, but a dispatch: GitHub's rule, so that a workflow
    cannot start itself again and again."""
    if event != "repository_dispatch" and (chain.get("task") or "").startswith(JOB_TASK_PREFIX):
        return
    if event == "push":
        ref, before, after = subject["ref"], subject["before"], subject["after"]
    elif event == "pull_request":
        pull = db.execute("SELECT base_ref, head_sha FROM pulls WHERE issue_id = ?", (subject["issue_id"],)).fetchone()
        ref, before, after = "refs/heads/" + pull["base_ref"], "", pull["head_sha"]
    else:
        ref, before, after = "refs/heads/" + subject["branch"], "", subject["sha"]
    db.execute("INSERT INTO run_triggers (repo_id, event, ref, before, after, fields, actor, grant_id, created_at)"
               " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", (repo_id, event, ref, before, after, json.dumps(dict(
                   subject, **({"action": action} if action else {}))), chain.get("actor"), chain.get("grant"), now()))


def queue_push_events(db, repo_id, subject, chain):
    """What a pushed ref starts besides its hooks: its runs, and a synchronize of each open pull request
    whose head it is (a fork's, in the repository it asks to merge into)."""
    if subject["after"] == ZERO_SHA:
        return
    queue_run_trigger(db, repo_id, "push", None, subject, chain)
    if subject["ref"].startswith("refs/heads/"):
        for pull in db.execute(PULL_REQUEST_HEADS, (repo_id, subject["ref"][len("refs/heads/"):])).fetchall():
            queue_event(db, pull["repo_id"], "pull_request", "synchronize", {"issue_id": pull["issue_id"]}, chain)


def queue_event(db, repo_id, event, action, subject, chain):
    """One delivery for each active hook of the repository (and of the organization that owns it, and of
    each App installed on it) that subscribes to ``event``; call inside the change's transaction. An event
    of RUN_EVENTS may start runs too. Returns how many deliveries were queued."""
    hooks = db.execute("SELECT id, events FROM hooks WHERE active = 1 AND (repo_id = ? OR org_id = (SELECT owner_id"
                       " FROM repos WHERE id = ?))", (repo_id, repo_id)).fetchall()
    if event == "push":
        queue_push_events(db, repo_id, subject, chain)
    elif event in RUN_EVENTS:
        queue_run_trigger(db, repo_id, event, action, subject, chain)
    queued = 0
    for hook in hooks:
        if subscribed(json.loads(hook["events"]), event):
            queue_delivery(db, hook["id"], event, action, repo_id, subject, chain)
            queued += 1
    # an App's hook, where one of its installations covers the repository (the payload names the installation)
    for hook in db.execute(APP_HOOKS_COVERING, (repo_id, repo_id)).fetchall():
        if subscribed(json.loads(hook["events"]), event):
            queue_delivery(db, hook["id"], event, action, repo_id, dict(subject, installation=hook["installation_id"]),
                           chain)
            queued += 1
    return queued


APP_HOOKS_COVERING = (
    "SELECT h.id, h.events, i.id AS installation_id FROM hooks h JOIN app_installations i ON i.app_id = h.app_id"
    " JOIN task_grants g ON g.id = i.grant_id WHERE h.active = 1 AND i.suspended_at IS NULL AND g.revoked_at IS NULL"
    " AND i.account_id = (SELECT owner_id FROM repos WHERE id = ?) AND (i.repository_selection = 'all' OR EXISTS"
    " (SELECT 1 FROM app_installation_repos r WHERE r.installation_id = i.id AND r.repo_id = ?))")


def ref_events(ref, old, new):
    """[(event, action, subject)] of a ref that moved: a push always, and a create or delete for a branch
    or tag that came or went (as GitHub sends them)."""
    subject = {"ref": ref, "before": old, "after": new}
    events = [("push", None, subject)]
    kind = "branch" if ref.startswith("refs/heads/") else "tag" if ref.startswith("refs/tags/") else None
    if kind and ZERO_SHA in (old, new):
        events.append(("create" if old == ZERO_SHA else "delete", None, dict(subject, ref_type=kind)))
    return events


def queue_delivery(db, hook_id, event, action, repo_id, subject, chain, payload=None, redelivery=False, attempt=1,
                   not_before=None):
    """A delivery waiting for the worker; ``payload`` already rendered (a ping, a redelivery) or None; a
    retry (``attempt`` past 1) waits until ``not_before``."""
    return insert(db, "INSERT INTO hook_deliveries (hook_id, guid, event, action, repo_id, subject, chain, payload,"
                      " redelivery, attempt, not_before, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                      (hook_id, str(uuid.uuid4()), event, action, repo_id, json.dumps(subject), json.dumps(chain),
                       payload, int(redelivery), attempt, not_before, now()))
