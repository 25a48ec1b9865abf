"""Approvals: a human's yes to one action on one resource, asked for, spent once, given back."""

import dataclasses
import json
import secrets

from agentgit.config import from_now, now
from agentgit.storage import insert_row


APPROVAL_SECONDS = 3600


# what of a decision's context an approval keeps, so the human sees what is asked (the rest is rows)
APPROVAL_CONTEXT = ("pull_number", "head_sha", "ref", "sha", "workflow", "secret")


def ask_for_approval(app, principal, decision, context):
    """For a needs_approval decision: the pending approval for its grant, action and resource (one is
    made if none waits), and the decision with a reason that says where a human gives it, so that
    git and gh, which print only the message, show the way too. Returns (decision, id, url)."""
    grant = principal.grant
    kept = {k: context[k] for k in APPROVAL_CONTEXT if isinstance(context.get(k), (str, int))}
    with app.store.transaction() as db:
        row = db.execute("SELECT public_id FROM approvals WHERE grant_id = ? AND action = ? AND resource = ? AND"
                         " subject = ? AND approved_at IS NULL AND denied_at IS NULL AND expires_at > ?",
                         (grant["id"], decision.action, decision.resource, decision.subject, now())).fetchone()
        public_id = row["public_id"] if row is not None else "ap_" + secrets.token_hex(8)
        if row is None:
            insert_row(db, "approvals", {"public_id": public_id, "grant_id": grant["id"], "action": decision.action,
                                         "resource": decision.resource, "subject": decision.subject,
                                         "context": json.dumps(kept), "created_at": now(),
                                         "expires_at": from_now(APPROVAL_SECONDS)})
            if "pull_number" in kept:
                tell_delegator(db, grant["delegator_id"], decision.resource, kept["pull_number"])
    url = approval_page(app, public_id)
    reason = "%s: approval %s waits for %s at %s/approvals" % (decision.reasons[0], public_id,
                                                               grant["delegator_login"], app.url)
    return dataclasses.replace(decision, reasons=[reason]), public_id, url


def tell_delegator(db, human_id, resource, pull_number):
    """The delegator's thread on the pull request a merge waits on, unread, with GitHub's reason
    approval_requested: what she already reads tells her (gh api notifications, github-mcp-server's
    list_notifications), not only the approvals page."""
    owner, _, name = resource[len("repo:"):].partition("/")
    issue = db.execute("SELECT i.id FROM issues i JOIN repos r ON r.id = i.repo_id JOIN accounts a ON a.id = r.owner_id"
                       " WHERE a.login = ? AND r.name = ? AND i.number = ?", (owner, name, pull_number)).fetchone()
    if issue is not None:
        db.execute("INSERT INTO notification_threads (user_id, issue_id, reason, unread, updated_at) VALUES (?, ?,"
                   " 'approval_requested', 1, ?)"
                   " ON CONFLICT (user_id, issue_id) DO UPDATE SET reason = excluded.reason,"
                   " unread = 1, done = 0, updated_at = excluded.updated_at WHERE notification_threads.ignored = 0",
                   (human_id, issue["id"], now()))


def approval_page(app, public_id):
    """Where a person decides on an approval: a page (signed out, sign in and come back to it)."""
    return "%s/approvals/%s" % (app.url, public_id)


def spend_approval(store, approval_id):
    """Single use: of two requests allowed on the same approval, only one may spend it."""
    with store.transaction() as db:
        return db.execute("UPDATE approvals SET used_at = ? WHERE id = ? AND used_at IS NULL",
                          (now(), approval_id)).rowcount == 1


def give_back_approval(db, approval_id):
    """An action that was allowed on an approval but then did not happen leaves the approval unspent."""
    if db.execute("UPDATE approvals SET used_at = NULL WHERE id = ? AND used_at IS NOT NULL", (approval_id,)).rowcount:
        return "; approval %d given back" % approval_id
    return ""
