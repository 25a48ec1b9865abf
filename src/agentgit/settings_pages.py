"""Settings pages: where a signed-in person manages their agents (invite, reset, suspend, resume, unbind),
the task grants she gives them (the delegation console), her personal tokens, and the approvals agents
ask her for."""

import html
import json

from agentgit.config import from_now, now
from agentgit.errors import HTTPError
from agentgit.tokens import AGENT_SCOPES, ALL_SCOPES, SWITCH_SESSION_HOURS, issue_token, token_fingerprint
from agentgit.accounts import account_by_id, suspend_account
from agentgit.web import hidden_input, html_page, signed_in_page, web_route
from agentgit.personal_tokens import mint_personal_token, revoke_own_token
from agentgit.delegation import (INVITE_DEFAULT_SECONDS, REPO_GRANT_PERMISSIONS, authorize_invite, bound_agent,
                                 make_invite, reset_agent_credentials, token_status, unbind_agent)
from agentgit.tasks import (APPROVABLE_ACTIONS, APPROVAL_SELECT, GRANT_ACTIONS, answer_approval, approval_json,
                            approval_outcome, find_grant, grant_json, make_task_grant, revoke_grant)
from agentgit.client_assertions import approve_key, delete_key, keys_of


AGENT_FORM_ACTIONS = ("reset-token", "switch-session", "suspend", "resume", "unbind")
KEY_FORM_ACTIONS = ("approve-key", "delete-key")
# What a destructive button does, said on the page that asks to confirm it
CONFIRM = {"reset-token": "Revoke every token and key of %s and issue it a new token? Whatever runs with the old "
                          "token or signs with a key stops.",
           "unbind": "Unbind %s? Its switch sessions and the access your invites gave it end; the agent keeps its "
                     "own account and repositories.",
           "revoke": "Revoke the token %s? Whatever uses it stops at its next request."}
# The words for a repository grant: the API's, and GitHub's read and write for pull and push
GRANT_WORDS = {"read": "pull", "write": "push"}


def confirm_page(req, what, fields):
    """Asks once more before a destructive action: the same form again, with confirmed=yes."""
    repeated = "".join(hidden_input(k, v) for k, v in dict(fields, confirmed="yes").items())
    return html_page("Confirm", '<p>%s</p><form method="post" action="%s">%s%s<button>Yes, %s</button> '
                     '<a href="%s">Cancel</a></form>' % (html.escape(what), html.escape(req.raw_path), hidden_input(
                         "csrf", req.session["csrf"]), repeated, html.escape(fields["action"]), html.escape(req.raw_path)))


@web_route("GET", "/settings/agents")
def agents_page(req, shown=""):
    user = signed_in_page(req)
    csrf = hidden_input("csrf", req.session["csrf"])
    rows = []
    for binding in req.app.store.all("SELECT * FROM agent_bindings WHERE human_id = ? ORDER BY bound_at", user["id"]):
        agent = account_by_id(req.app.store, binding["agent_id"])
        buttons = "".join('<form method="post" action="/settings/agents">%s%s%s<button>%s</button></form>' % (
            csrf, hidden_input("agent", agent["login"]), hidden_input("action", action), action)
            for action in AGENT_FORM_ACTIONS if action != ("resume" if not agent["suspended_at"] else "suspend"))
        rows.append("<tr><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td></tr>" % (
            html.escape(agent["login"]), html.escape(binding["display_name"] or ""), html.escape(binding["bound_at"]),
            "retired" if agent["retired_at"] else "suspended" if agent["suspended_at"] else
            token_status(req.app.store, agent["id"]), buttons))
        rows += [key_row(agent, key, csrf) for key in keys_of(req.app.store, agent["id"])]
    standing = ("<p>Outside a task your agents change only what is their own: invites, teams and collaborator "
                "grants let them read the rest, and a change needs a task grant.</p>"
                if req.app.agent_standing_access == "read" else "")
    body = ('%s<h2>Your agents</h2>' + standing + '<table><tr><th>Agent</th><th>Name</th><th>Bound</th><th>Status</th>'
            '<th></th></tr>%s'
            '</table><h2>Invite an agent</h2><form method="post" action="/settings/agents">%s%s'
            '<p><label>Repository grants, one per line: <code>owner/name:permission</code>, the permission one of '
            'read (or pull), triage, write (or push, the default), maintain, admin<br><textarea name="repo_grants">'
            '</textarea></label></p><p><button>Create invite</button></p></form>') % (
        shown, "".join(rows) or '<tr><td colspan="5">none yet</td></tr>', csrf, hidden_input("action", "invite"))
    return html_page("Agents", body)


def key_row(agent, key, csrf):
    """A key the agent registered, under the agent's row: pending ones wait for this human's approval."""
    state = "active" if key["approved_at"] else "pending your approval"
    buttons = "".join('<form method="post" action="/settings/agents">%s%s%s%s<button>%s</button></form>' % (
        csrf, hidden_input("agent", agent["login"]), hidden_input("kid", key["kid"]), hidden_input("action", action),
        action) for action in KEY_FORM_ACTIONS if action != "approve-key" or not key["approved_at"])
    return '<tr><td></td><td colspan="2">key <code>%s</code>, registered %s</td><td>%s</td><td>%s</td></tr>' % (
        html.escape(key["kid"]), html.escape(key["created_at"]), state, buttons)


@web_route("POST", "/settings/agents")
def agents_action(req):
    """Each button goes through the same decide() and the same code as its endpoint; a token made
    here (invite, reset, switch session) is shown once on the page that answers."""
    user, form = signed_in_page(req), req.form
    action = form.get("action")
    if action == "invite":
        grants = {"repo_grants": [], "team_grants": []}
        for line in form.get("repo_grants", "").splitlines():
            if line.strip():
                name, _, permission = line.strip().partition(":")
                permission = permission.strip().lower() or "push"
                grants["repo_grants"].append({"repo_full_name": name.strip(),
                                              "permission": GRANT_WORDS.get(permission, permission)})
        if any(g["permission"] not in REPO_GRANT_PERMISSIONS for g in grants["repo_grants"]):
            raise HTTPError(422, "A permission is read (or pull), triage, write (or push), maintain or admin")
        authorize_invite(req, grants)
        with req.transaction() as db:
            token, expires_at, effect = make_invite(db, req.app.key, user, grants, INVITE_DEFAULT_SECONDS)
            req.effect(effect)
        shown = "<p>Invite token (shown once, valid until %s): <code>%s</code></p>" % (expires_at, token)
        return agents_page(req, shown)
    if action in KEY_FORM_ACTIONS:
        return key_action(req, action, form)
    if action not in AGENT_FORM_ACTIONS:
        raise HTTPError(422, "Unknown action")
    agent, _ = bound_agent(req, form.get("agent", ""))
    if action in CONFIRM and form.get("confirmed") != "yes":
        return confirm_page(req, CONFIRM[action] % agent["login"], {"agent": agent["login"], "action": action})
    shown = ""
    with req.transaction() as db:
        if action == "reset-token":
            token, _, effect = reset_agent_credentials(db, req.app.key, agent)
            shown = "<p>New token for %s (shown once): <code>%s</code></p>" % (html.escape(agent["login"]), token)
        elif action == "switch-session":
            expires_at = from_now(SWITCH_SESSION_HOURS * 3600)
            token, _ = issue_token(db, req.app.key, agent["id"], "switch-session", name="switch by " + user["login"],
                                   scopes=AGENT_SCOPES, expires_at=expires_at, issued_by=user["id"])
            effect = "switch session %s into %s until %s" % (token_fingerprint(token), agent["login"], expires_at)
            shown = "<p>Switch-session token for %s until %s (shown once): <code>%s</code></p>" % (
                html.escape(agent["login"]), expires_at, token)
        elif action in ("suspend", "resume"):
            effect = suspend_account(db, agent, action == "suspend")
        else:
            effect = unbind_agent(db, agent)
        req.effect(effect)
    return agents_page(req, shown or "<p>%s</p>" % html.escape(effect))


def key_action(req, action, form):
    agent, _ = bound_agent(req, form.get("agent", ""))
    kid = form.get("kid", "")
    if action == "delete-key" and form.get("confirmed") != "yes":
        return confirm_page(req, "Delete the key %s of %s? Assertions it signs are refused from then on." % (
            kid, agent["login"]), {"agent": agent["login"], "kid": kid, "action": action})
    with req.transaction() as db:
        (approve_key if action == "approve-key" else delete_key)(req, db, agent, kid)
    return agents_page(req, "<p>%s %s of %s.</p>" % ("Approved the key" if action == "approve-key" else
                                                     "Deleted the key", html.escape(kid), html.escape(agent["login"])))

# -- the delegation console: task grants ----------------------------------------------------------

def grant_row(grant, csrf):
    state = "revoked" if grant["revoked_at"] else "expired" if grant["expires_at"] <= now() else "live"
    revoke = '<form method="post" action="/settings/tasks">%s%s%s<button>revoke</button></form>' % (
        csrf, hidden_input("grant", grant["id"]), hidden_input("action", "revoke")) if state == "live" else ""
    cells = [html.escape(str(v)) for v in (grant["id"], grant["id"], grant["agent"], grant["task"], ", ".join(
        grant["resources"]), ", ".join(grant["actions"]), grant["expires_at"])]
    return ('<tr><td><a href="/settings/tasks/%s">%s</a></td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td>'
            '<td>%s</td><td>%s</td></tr>') % tuple(cells + [state, revoke])


def checkboxes(name, options, checked=()):
    return " ".join('<label><input type="checkbox" name="%s" value="%s"%s> %s</label>' % (
        name, html.escape(o), " checked" if o in checked else "", html.escape(o)) for o in options)


@web_route("GET", "/settings/tasks")
def tasks_page(req, shown=""):
    """The task grants the signed-in human gave, and a form for a new one: the same checks as the API's."""
    user = signed_in_page(req)
    csrf = hidden_input("csrf", req.session["csrf"])
    grants = [grant_json(req.app, r) for r in req.app.store.all(
        "SELECT * FROM task_grants WHERE delegator_id = ? ORDER BY id DESC", user["id"])]
    agents = [account_by_id(req.app.store, b["agent_id"])["login"] for b in req.app.store.all(
        "SELECT agent_id FROM agent_bindings WHERE human_id = ? ORDER BY bound_at", user["id"])]
    options = "".join('<option value="%s">%s</option>' % (html.escape(a), html.escape(a)) for a in agents)
    body = ('%s<h2>Your task grants</h2><table><tr><th>Grant</th><th>Agent</th><th>Task</th><th>Resources</th>'
            '<th>Actions</th><th>Expires</th><th>State</th><th></th></tr>%s</table><h2>Grant a task</h2>'
            '<form method="post" action="/settings/tasks">%s%s'
            '<p><label>Agent <select name="agent">%s</select></label></p>'
            '<p><label>Task <input name="task" value="task:" required></label></p>'
            '<p><label>Resources, one per line: <code>repo:owner/name</code> or <code>credential:owner/name</code><br>'
            '<textarea name="resources" required></textarea></label></p>'
            '<p>Actions: %s</p><p>Only with my approval: %s</p>'
            '<p><label>Branch prefix <input name="branch_prefix"></label></p>'
            '<p><label>Expires in hours <input name="hours" value="24"></label></p>'
            '<p><label>Network allowlist (hosts for the broker), one per line<br><textarea name="network_allowlist">'
            '</textarea></label></p>'
            '<p><label>Runtimes (SPIFFE IDs), one per line<br><textarea name="runtime"></textarea></label></p>'
            '<p><button>Grant</button></p></form>') % (
        shown, "".join(grant_row(g, csrf) for g in grants) or
        '<tr><td colspan="8">none yet</td></tr>', csrf, hidden_input("action", "create"), options,
        checkboxes("actions", GRANT_ACTIONS), checkboxes("requires_approval", APPROVABLE_ACTIONS))
    return html_page("Task grants", body)


@web_route("POST", "/settings/tasks")
def tasks_action(req):
    """Create a grant from the form (through the API's own make_task_grant), or revoke one (asked once more)."""
    signed_in_page(req)
    form = req.form
    if form.get("action") == "revoke":
        row = find_grant(req, form.get("grant", ""), "grant_task")
        if form.get("confirmed") != "yes":
            return confirm_page(req, "Revoke the task grant %s (%s)? Its tokens stop at once." % (
                row["public_id"], row["task"]), {"grant": row["public_id"], "action": "revoke"})
        revoke_grant(req, row)
        return tasks_page(req, "<p>Revoked %s.</p>" % html.escape(row["public_id"]))
    if form.get("action") != "create":
        raise HTTPError(422, "Unknown action")
    try:
        hours = float(form.get("hours") or 24)
    except ValueError:
        hours = 0
    if not 0 < hours <= 720:
        raise HTTPError(422, "A task grant lasts more than 0 and at most 720 hours (30 days)")
    lines = lambda name: [line.strip() for line in form.get(name, "").splitlines() if line.strip()]  # noqa: E731
    constraints = {"expires_at": from_now(int(hours * 3600)),
                   "requires_approval": form_list(req, "requires_approval")}
    for name in ("network_allowlist", "runtime"):
        if lines(name):
            constraints[name] = lines(name)
    if form.get("branch_prefix", "").strip():
        constraints["branch_prefix"] = form["branch_prefix"].strip()
    row = make_task_grant(req, {"agent": "agent:" + form.get("agent", ""), "task": form.get("task", ""),
                                "resources": lines("resources"), "actions": form_list(req, "actions"),
                                "constraints": constraints})
    return tasks_page(req, "<p>Granted %s to %s.</p>" % (html.escape(row["public_id"]), html.escape(form.get("agent"))))


def form_list(req, name):
    """Every value of a repeated form field (checkboxes)."""
    return list(req.form_values.get(name, []))


@web_route("GET", "/settings/tasks/{grant_id}")
def task_page(req, grant_id):
    """One grant: what it allows, and what its agent did under it (its audit rows), for its delegator."""
    user = signed_in_page(req)
    row = req.app.store.one("SELECT * FROM task_grants WHERE public_id = ? AND delegator_id = ?", grant_id, user["id"])
    if row is None:
        raise HTTPError(404, "Not Found")
    grant = grant_json(req.app, row)
    rows = req.app.store.all("SELECT * FROM audit WHERE grant_id = ? ORDER BY id DESC LIMIT 200", grant_id)
    activity = "".join("<tr><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td></tr>" % tuple(
        html.escape(str(r[k] or "")) for k in ("at", "actor", "action", "resource", "decision", "side_effect"))
        for r in rows) or '<tr><td colspan="6">nothing yet</td></tr>'
    reads = "".join("<tr><td>%s</td><td>%s</td><td>%s</td><td>%s</td></tr>" % tuple(
        html.escape(r[k]) for k in ("at", "kind", "what", "resource")) for r in grant["read"]) or \
        '<tr><td colspan="4">nothing private or untrusted yet</td></tr>'
    body = ('<p>%s for %s, by %s: %s on %s. Constraints: <code>%s</code>. Expires %s%s.</p>'
            '<h2>What the task has read</h2><p>Once it has read something private, what it writes where more '
            'people read waits for your approval.</p><table><tr><th>At</th><th>Kind</th><th>What</th>'
            '<th>Where</th></tr>%s</table>'
            '<h2>Activity</h2><table><tr><th>At</th><th>Actor</th><th>Action</th><th>Resource</th><th>Decision</th>'
            '<th>Side effect</th></tr>%s</table><p><a href="/settings/tasks">All task grants</a></p>') % (
        html.escape(grant["task"]), html.escape(grant["agent"]),
        html.escape(grant["delegator"]), html.escape(", ".join(grant["actions"])),
        html.escape(", ".join(grant["resources"])), html.escape(json.dumps(grant["constraints"])),
        html.escape(grant["expires_at"]), "; revoked %s" % html.escape(grant["revoked_at"]) if grant["revoked_at"]
        else "", reads, activity)
    return html_page("Task grant %s" % grant_id, body)


@web_route("GET", "/approvals")
def approvals_page(req, shown=""):
    """What the delegator's agents wait for: each pending approval names the agent, the task, the
    grant, the action and exactly what it is for, with the pull request or the commits to judge it
    by; one button approves exactly that, once, the other denies it with a reason the agent sees."""
    user = signed_in_page(req)
    csrf = hidden_input("csrf", req.session["csrf"])
    rows = req.app.store.all(APPROVAL_SELECT + " WHERE g.delegator_id = ? AND a.approved_at IS NULL AND a.denied_at IS"
                             " NULL AND a.expires_at > ? AND g.revoked_at IS NULL ORDER BY a.id", user["id"], now())
    pending = [a for a in (approval_json(req.app, row) for row in rows) if a["state"] == "pending"]
    items = "".join(approval_section(approval, csrf) for approval in pending)
    return html_page("Approvals", shown + (items or "<p>Nothing waits.</p>"))


def approval_section(approval, csrf):
    e = lambda value: html.escape(str(value))  # noqa: E731
    details = approval["context"]
    parts = ["<p>%s, for task %s under grant %s, asks to <strong>%s</strong> on %s: %s. Asked %s; expires %s.</p>" % (
        e(approval["agent"]), e(approval["task"]), e(approval["grant"]), e(approval["action"]), e(approval["resource"]),
        e(approval["subject"] or "as a whole"), e(approval["created_at"]), e(approval["expires_at"]))]
    if details.get("title") is not None:
        parts.append('<p>Pull request <a href="%s">%s</a> (<a href="%s">diff</a>)</p><pre>%s</pre>' % (
            e(details["html_url"]), e(details["title"]), e(details["diff_url"]), e(details.get("body") or "")))
        parts.append("<p>Changed files: %s</p>" % e(", ".join(details["changed_files"]) or "none"))
    if details.get("commits"):
        parts.append("<ul>%s</ul>" % "".join("<li><code>%s</code> %s (%s)</li>" % (
            e(c["sha"][:12]), e(c["message"]), e(c["author"])) for c in details["commits"]))
    answer = hidden_input("approval_id", approval["id"])
    parts.append('<form method="post" action="/approvals">%s%s%s<button>Approve</button></form>'
                 '<form method="post" action="/approvals">%s%s%s<label>Reason <input name="reason" maxlength="1000">'
                 '</label> <button>Deny</button></form>' % (csrf, answer, hidden_input("decision", "approve"),
                                                           csrf, answer, hidden_input("decision", "deny")))
    return "<section><h2>%s</h2>%s</section>" % (e(approval["id"]), "".join(parts))


@web_route("GET", "/approvals/{approval_id}")
def one_approval_page(req, approval_id):
    """One approval, where approval_url leads: what is asked, with Approve and Deny while it waits, and
    what became of it once answered. Its delegator's alone (anyone else: 404)."""
    user = signed_in_page(req)
    row = req.app.store.one(APPROVAL_SELECT + " WHERE a.public_id = ?", approval_id)
    if row is None or row["delegator_id"] != user["id"]:
        raise HTTPError(404, "Not Found")
    approval = approval_json(req.app, row)
    if approval["state"] == "pending":
        shown = approval_section(approval, hidden_input("csrf", req.session["csrf"]))
    else:
        shown = "<p>%s asked to <strong>%s</strong> on %s (%s): %s.</p>" % (
            html.escape(approval["agent"]), html.escape(approval["action"]), html.escape(approval["resource"]),
            html.escape(approval["subject"] or "as a whole"), html.escape(approval_outcome(approval)))
    return html_page("Approval %s" % approval_id, shown + '<p><a href="/approvals">All approvals</a></p>')


@web_route("POST", "/approvals")
def approvals_action(req):
    user, form = signed_in_page(req), req.form
    approve = form.get("decision", "approve") != "deny"
    row = answer_approval(req, user, form.get("approval_id", ""), approve, form.get("reason", ""))
    return approvals_page(req, "<p>%s %s on %s for %s.</p>" % (
        "Approved" if approve else "Denied", html.escape(row["action"]), html.escape(row["resource"]),
        html.escape(row["grant_public"])))


@web_route("GET", "/settings/tokens")
def tokens_page(req, shown=""):
    user = signed_in_page(req)
    csrf = hidden_input("csrf", req.session["csrf"])
    rows = []
    for t in req.app.store.all("SELECT * FROM tokens WHERE user_id = ? ORDER BY id", user["id"]):
        action = "" if t["revoked_at"] else '<form method="post" action="/settings/tokens">%s%s%s<button>revoke' \
            '</button></form>' % (csrf, hidden_input("action", "revoke"), hidden_input("token_id", str(t["id"])))
        rows.append("<tr>%s<td>%s</td></tr>" % ("".join("<td>%s</td>" % html.escape(str(t[k] or "")) for k in (
            "name", "kind", "scopes", "fingerprint", "created_at", "expires_at", "last_used_at", "revoked_at")), action))
    boxes = "".join('<label><input type="checkbox" name="scope_%s" value="1"> %s</label> ' % (s, s)
                    for s in ALL_SCOPES if s != "site_admin")
    body = ('%s<table><tr><th>Name</th><th>Kind</th><th>Scopes</th><th>Fingerprint</th><th>Created</th>'
            '<th>Expires</th><th>Last used</th><th>Revoked</th><th></th></tr>%s</table><h2>New token</h2>'
            '<form method="post" action="/settings/tokens">%s%s<p><label>Name <input name="name"></label></p><p>%s</p>'
            '<p><label>Expires in days (empty: never) <input name="days"></label></p><p><button>Create</button></p>'
            '</form>') % (shown, "".join(rows), csrf, hidden_input("action", "create"), boxes)
    return html_page("Personal tokens", body)


@web_route("POST", "/settings/tokens")
def tokens_action(req):
    user, form = signed_in_page(req), req.form
    if form.get("action") == "revoke":
        row = req.app.store.one("SELECT * FROM tokens WHERE id = ? AND user_id = ?",
                                int(form["token_id"]) if form.get("token_id", "").isdigit() else -1, user["id"])
        if row is None:
            raise HTTPError(404, "No such token")
        if form.get("confirmed") != "yes":
            return confirm_page(req, CONFIRM["revoke"] % "%s (%s)" % (row["name"], row["fingerprint"]),
                                {"action": "revoke", "token_id": str(row["id"])})
        revoke_own_token(req, user, row)
        return tokens_page(req, "<p>Revoked %s.</p>" % html.escape(row["fingerprint"]))
    name = form.get("name", "").strip()
    days = form.get("days", "").strip()
    if not name or len(name) > 100 or days and not (days.isdigit() and 1 <= int(days) <= 3650):
        raise HTTPError(422, "A token needs a name, and days from 1 to 3650 or nothing")
    scopes = [s for s in ALL_SCOPES if form.get("scope_" + s) and s != "site_admin"]
    token, _ = mint_personal_token(req, user, name, scopes, from_now(int(days) * 86400) if days else None)
    return tokens_page(req, "<p>Your new token (shown once): <code>%s</code></p>" % token)
