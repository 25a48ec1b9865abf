"""Intents: a ref about to move, written down before it moves, so a crash between the move and its
audit row is settled truthfully from the ref itself.

A ref lives in the repository, its audit row in the database: no transaction spans both. So every
ref a request moves is first written to ``intents`` with the audit rows it is for; the transaction
that writes those rows deletes it. What a crash (kill -9, a power cut) leaves behind is settled when
the server next starts: each row is written saying what the ref shows happened, and an effect that
did happen gets the rest of its database part (a merged pull request is marked merged).
"""

import json
import os
import time

from agentgit.config import now
from agentgit.storage import insert_row
from agentgit.gitstore import ZERO_SHA, open_repo, repo_dir
from agentgit.audit import append_audit_row
from agentgit.approvals import give_back_approval
from agentgit.outbox import chain_of, queue_event, ref_events


# What finishes the database's part of an effect found to have happened, by follow-up kind:
# {kind: function(db, follow_up)}. pulls.py registers the merge's.
INTENT_FOLLOW_UPS = {}
RECONCILED = " (recorded at start-up: the server stopped before it wrote this row)"


def write_intent(db, repo_id, ref, old, new, rows, follow_up=None):
    """Before ``ref`` moves from ``old`` to ``new`` (40 zeros: created, deleted): the audit rows it is for,
    as [(audit_row() fields, approval id or None)]. Commit it before the move. Returns its id."""
    return insert_row(db, "intents", {"repo_id": repo_id, "ref": ref, "old": old, "new": new, "rows": json.dumps(rows),
                                      "created_at": now(), "follow_up": json.dumps(follow_up) if follow_up else None})


def forget_intents(db, intent_ids):
    """The intents whose rows this transaction writes."""
    db.executemany("DELETE FROM intents WHERE id = ?", [(i,) for i in intent_ids])


def ref_now(app, repo_id, ref):
    """The sha ``ref`` points at now (40 zeros when it does not exist, or its repository is gone); first,
    for up to two seconds, waiting out a lock on it (a git a killed server left behind, mid-update)."""
    lock = os.path.join(repo_dir(app, repo_id), ref + ".lock")
    deadline = time.monotonic() + 2
    while os.path.exists(lock) and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        with open_repo(app, repo_id) as git:
            return git.refs[ref.encode()].decode() if ref.encode() in git.refs else ZERO_SHA
    except OSError:
        return ZERO_SHA


def move_text(ref, old, new, current):
    """The side effect as an audit row says it: ``ref old→new``, or that it did not move."""
    if current == new:
        return "%s %s→%s" % (ref, old[:12], new[:12])
    return "%s not moved (now %s)" % (ref, current[:12])


def settle_intent(db, app, intent):
    """(what happened to the intent's ref, whether it moved as meant); runs the follow-up of an effect
    that happened and forgets the intent."""
    current = ref_now(app, intent["repo_id"], intent["ref"])
    moved = current == intent["new"]
    if moved and intent["follow_up"]:
        follow_up = json.loads(intent["follow_up"])
        INTENT_FOLLOW_UPS[follow_up["kind"]](db, follow_up)
    forget_intents(db, [intent["id"]])
    return move_text(intent["ref"], intent["old"], intent["new"], current), moved


def reconcile_intents(app):
    """At start-up, before serving: each intent a crash left becomes the audit rows it was for, saying
    what its ref shows; an approval spent on a move that never happened is given back. Returns how
    many were settled."""
    intents = app.store.all("SELECT * FROM intents ORDER BY id")
    for intent in intents:
        with app.store.transaction() as db:
            text, moved = settle_intent(db, app, intent)
            for fields, approval in json.loads(intent["rows"]):
                effect = text + ("" if moved or approval is None else give_back_approval(db, approval))
                audit_id = append_audit_row(db, app.key, fields, effect + RECONCILED)
                if moved:       # its webhooks, which the crash kept from being queued with the rows
                    for event, action, subject in ref_events(intent["ref"], intent["old"], intent["new"]):
                        queue_event(db, intent["repo_id"], event, action, subject, chain_of(fields, audit_id))
    return len(intents)

