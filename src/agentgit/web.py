"""Web pages: sign-in, sessions with CSRF tokens, the /settings pages."""

import functools
import hmac
import html
import re
import secrets
import ssl
import urllib.parse

from agentgit.config import from_now, now, visible_ascii
from agentgit.errors import HTTPError
from agentgit.storage import insert_row
from agentgit.tokens import (AGENT_SCOPES, ALL_SCOPES, SWITCH_SESSION_HOURS, expand_scopes, issue_token,
                             token_fingerprint, token_hash)
from agentgit.accounts import (DUMMY_PASSWORD_HASH, account_by_id, account_by_login, check_password, check_totp,
                               suspend_account)
from agentgit.policy import Resource, STEP_UP_SECONDS
from agentgit.authentication import Principal
from agentgit.ledger import Ledger
from agentgit.routing import route
from agentgit.agents import mint_personal_token, revoke_own_token
from agentgit.delegation import (INVITE_DEFAULT_SECONDS, REPO_GRANT_PERMISSIONS, authorize_invite, bound_agent,
                                 make_invite, reset_agent_credentials, token_status, unbind_agent)
from agentgit.tasks import APPROVAL_SELECT, answer_approval, approval_json, confirm_totp


# Server-rendered HTML for humans, no JavaScript. A session cookie (HttpOnly, SameSite=Lax, Secure
# under TLS) authenticates these pages only, never the API, so a cookie can never carry a cross-site
# API call. Every form carries a CSRF token; sign-in attempts are rate-limited per address and login.

SESSION_COOKIE, LOGIN_CSRF_COOKIE = "agentgit_session", "agentgit_login_csrf"
SESSION_HOURS = 12
PAGE_CSP = "default-src 'none'; style-src 'self'; form-action %s; frame-ancestors 'none'"
PAGE_HEADERS = {"Content-Type": "text/html; charset=utf-8", "X-Frame-Options": "DENY", "Cache-Control": "no-store",
                "Content-Security-Policy": PAGE_CSP % "'self'", "Referrer-Policy": "no-referrer"}
CSP_SCHEME_RE = re.compile(r"[a-z][a-z0-9+.-]{0,30}")
CSP_HOST_RE = re.compile(r"[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\]")


def csp_allowing_form_redirect_to(uri):
    """The pages' CSP with ``uri``'s origin added to form-action. Browsers apply form-action to the
    redirect that answers a form too (CSP 3), so a consent page whose answer sends the browser back to
    a client's redirect URI must name that URI's origin, or its buttons do nothing. A URI whose parts
    do not fit a CSP source expression exactly adds nothing (no way to smuggle a directive in)."""
    split = urllib.parse.urlsplit(uri)
    scheme = split.scheme.lower()
    if not CSP_SCHEME_RE.fullmatch(scheme):
        return PAGE_HEADERS["Content-Security-Policy"]
    if scheme not in ("http", "https"):
        source = scheme + ":"                   # an app's own scheme (vscode:, cursor:): the scheme is its origin
    else:
        try:
            host, port = split.netloc.rpartition("@")[2], split.port
        except ValueError:
            return PAGE_HEADERS["Content-Security-Policy"]
        host = host[:host.rindex(":")] if port is not None else host
        if not CSP_HOST_RE.fullmatch(host):
            return PAGE_HEADERS["Content-Security-Policy"]
        source = "%s://%s%s" % (scheme, host, ":%d" % port if port is not None else "")
    return PAGE_CSP % ("'self' " + source)


def web_route(method, pattern, csrf="session"):
    """A web page route: authenticated by session cookie, not by Authorization headers. A POST page's
    form is read, and its CSRF token checked, here before the handler runs (which finds it in
    ``req.form``), so no page can forget it. ``csrf`` says what the token is checked against: the
    signed-in session ("session": the page needs one), the sign-in form's cookie ("sign-in"), or the
    session when there is one ("session-if-any": signing out)."""
    def register(handler):
        def checked(req, **params):
            read_checked_form(req, csrf)
            return handler(req, **params)
        endpoint = functools.wraps(handler)(checked) if method == "POST" else handler
        return route(method, pattern, "web", "session")(endpoint)
    return register


def read_checked_form(req, csrf):
    if csrf == "sign-in":
        req.form = form_fields(req)
        check_csrf(cookies(req).get(LOGIN_CSRF_COOKIE), req.form)
    elif csrf == "session-if-any" and req.session is None:
        req.form = form_fields(req)
    else:
        signed_in_page(req)
        session_form(req)


def cookies(req):
    jar = {}
    for part in (req.headers.get("Cookie") or "").split(";"):
        name, _, value = part.strip().partition("=")
        if name:
            jar[name] = value
    return jar


def session_principal(app, req):
    """The signed-in human behind the session cookie (or anonymous), and the session row."""
    raw = cookies(req).get(SESSION_COOKIE, "")
    row = app.store.one("SELECT * FROM web_sessions WHERE hash = ?", token_hash(raw)) if raw else None
    if row is None or row["expires_at"] <= now():
        return Principal(runtime=req.client), None
    user = account_by_id(app.store, row["user_id"])
    # signing in asked for the TOTP code when the account has one
    return Principal(user=user, scopes=expand_scopes(ALL_SCOPES), stepped_up_at=row["totp_at"],
                     runtime="%s web session" % req.client), row


def cookie_header(req, name, value, max_age):
    secure = "; Secure" if isinstance(req.handler.connection, ssl.SSLSocket) else ""
    return "%s=%s; Path=/; HttpOnly; SameSite=Lax; Max-Age=%d%s" % (name, value, max_age, secure)


# One small stylesheet for every page, served from this origin (the pages' CSP allows no other).
STYLESHEET = b"""body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:0 auto;padding:0 1rem 3rem;color:#1f2328}
nav{display:flex;gap:1rem;padding:.6rem 0;border-bottom:1px solid #d0d7de;margin-bottom:1rem}
nav a{color:#0969da;text-decoration:none}nav .home{font-weight:600;margin-right:auto}
pre{background:#f6f8fa;padding:.6rem;overflow:auto;border-radius:6px}code{background:#f6f8fa;padding:0 .2rem}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:1.5rem}h3{font-size:1rem}
button{padding:.3rem .8rem}input,select{padding:.2rem}
"""
NAVIGATION = ('<nav><a class="home" href="/">agentgit</a><a href="/settings/agents">Agents</a>'
              '<a href="/settings/tokens">Tokens</a><a href="/approvals">Approvals</a><a href="/login/device">Device'
              ' sign-in</a><a href="/login">Sign in</a></nav>')


@web_route("GET", "/agentgit.css")
def stylesheet(req):
    return 200, STYLESHEET, {"Content-Type": "text/css; charset=utf-8", "Cache-Control": "max-age=3600"}


def html_page(title, body, status=200, headers=None):
    doc = ("<!doctype html><html><head><meta charset=\"utf-8\"><title>%s · agentgit</title>"
           "<link rel=\"stylesheet\" href=\"/agentgit.css\"></head><body>%s<h1>%s</h1>%s</body></html>" % (
               html.escape(title), NAVIGATION, html.escape(title), body))
    return status, doc.encode(), dict(PAGE_HEADERS, **(headers or {}))


def redirect(location, headers=None):
    return 303, b"", dict(PAGE_HEADERS, Location=location, **(headers or {}))


def form_fields(req):
    if "application/x-www-form-urlencoded" not in (req.headers.get("Content-Type") or ""):
        raise HTTPError(415, "Forms must be application/x-www-form-urlencoded")
    raw = req.body(64 * 1024).read_all().decode("utf-8", "replace")
    return {k: v[-1] for k, v in urllib.parse.parse_qs(raw, keep_blank_values=True).items()}


def check_csrf(expected, form):
    if not expected or not hmac.compare_digest(expected, form.get("csrf", "")):
        raise HTTPError(403, "The form has expired or did not come from this site; reload the page and try again")


def session_form(req):
    """A signed-in page's form, its CSRF token checked. A TOTP code sent with it (by the step-up form
    below, which repeats the form) is confirmed first, so the action is decided with a fresh factor."""
    req.form = form = form_fields(req)
    check_csrf(req.session["csrf"], form)
    if form.get("totp"):
        user = req.principal.user
        req.authorize("issue_token", Resource.account(user))
        try:
            confirm_totp(req, user, form["totp"])
        except HTTPError as error:
            error.page = "<p>%s.</p>%s" % (html.escape(error.message), step_up_form(req))
            raise
        with req.transaction() as db:
            db.execute("UPDATE web_sessions SET totp_at = ? WHERE hash = ?", (now(), req.session["hash"]))
            req.effect("stepped up the web session")
        req.principal.stepped_up_at = now()
    return form


def step_up_form(req):
    """Asks for a TOTP code, then sends the refused form again with it."""
    repeated = "".join(hidden_input(k, v) for k, v in req.form.items() if k not in ("csrf", "totp"))
    return ('<p>This needs your authentication code: for what destroys or changes who may act, agentgit asks '
            'for a code confirmed in the last %d minutes.</p><form method="post" action="%s">%s%s<p><label>'
            'Authentication code <input name="totp" inputmode="numeric" autocomplete="one-time-code" required>'
            '</label></p><p><button>Confirm</button></p></form>') % (
        STEP_UP_SECONDS // 60, html.escape(req.raw_path), hidden_input("csrf", req.session["csrf"]), repeated)


def safe_next(target):
    """Only local paths of visible ASCII, so the sign-in form can be turned neither into an open redirect
    (browsers read /\t/evil.example as //evil.example) nor into a header."""
    return target if visible_ascii(target) and target.startswith("/") and not target.startswith("//") and \
        "\\" not in target else "/settings/agents"


def hidden_input(name, value):
    return '<input type="hidden" name="%s" value="%s">' % (html.escape(name), html.escape(value))


@web_route("GET", "/login")
def login_page(req, message=""):
    csrf = secrets.token_urlsafe(24)
    body = ('%s<form method="post" action="/login">%s%s<p><label>Login <input name="login" autocomplete="username">'
            '</label></p><p><label>Password <input type="password" name="password" autocomplete="current-password">'
            '</label></p><p><label>Code from your authenticator (if you set one up) <input name="totp" '
            'autocomplete="one-time-code"></label></p><p><button>Sign in</button></p></form>') % (
        "<p><strong>%s</strong></p>" % html.escape(message) if message else "", hidden_input("csrf", csrf),
        hidden_input("next", safe_next(req.query.get("next", "/settings/agents"))))
    return html_page("Sign in", body, 401 if message else 200,
                     {"Set-Cookie": cookie_header(req, LOGIN_CSRF_COOKIE, csrf, 600)})


@web_route("POST", "/login", csrf="sign-in")
def login_submit(req):
    form = req.form
    login = form.get("login", "")[:64]
    address = req.client
    retry = req.app.sign_ins.hit("addr:" + address) or req.app.sign_ins.hit("login:" + login.lower())
    if retry:
        raise HTTPError(429, "Too many sign-in attempts; try again in %d seconds" % retry,
                        headers={"Retry-After": str(retry)})
    user = account_by_login(req.app.store, login)
    # Check a password even for unknown logins, so timing does not tell which logins exist.
    ok = check_password(user["password_hash"] if user is not None and user["password_hash"] else DUMMY_PASSWORD_HASH,
                        form.get("password", ""))
    second = user is not None and user["totp_secret"]
    if second and ok:
        ok = check_totp(req.app.key, user, form.get("totp"))
    if not ok or user is None or user["kind"] != "human" or user["suspended_at"]:
        Ledger(req.app, Principal(runtime=address), "web").refuse("sign_in", "user:" + login,
                                                                  ["wrong login, password or code"])
        return login_page(req, "Wrong login, password or code.")
    token = secrets.token_urlsafe(32)
    with req.app.store.transaction() as db:
        insert_row(db, "web_sessions", {"hash": token_hash(token), "user_id": user["id"],
                                        "csrf": secrets.token_urlsafe(24), "created_at": now(),
                                        "totp_at": now() if second else None,
                                        "expires_at": from_now(SESSION_HOURS * 3600)})
        Ledger(req.app, Principal(user=user, runtime=address), "web").record(
            "sign_in", "user:" + user["login"], ["password and TOTP" if second else "password"], "signed in", db)
    return redirect(safe_next(form.get("next", "/settings/agents")),
                    {"Set-Cookie": cookie_header(req, SESSION_COOKIE, token, SESSION_HOURS * 3600)})


@web_route("POST", "/logout", csrf="session-if-any")
def logout(req):
    if req.session is not None:
        with req.app.store.transaction() as db:
            db.execute("DELETE FROM web_sessions WHERE hash = ?", (req.session["hash"],))
    return redirect("/login", {"Set-Cookie": cookie_header(req, SESSION_COOKIE, "", 0)})


def signed_in_page(req):
    if req.principal.user is None:
        # back to this very page after signing in, its query included (an authorization request, a user code)
        here = req.raw_path + ("?" + urllib.parse.urlencode(req.query) if req.query else "")
        raise HTTPError(303, "Sign in first", headers=dict(PAGE_HEADERS, Location="/login?next=" +
                                                           urllib.parse.quote(here)))
    return req.principal.user


AGENT_FORM_ACTIONS = ("reset-token", "switch-session", "suspend", "resume", "unbind")
# What a destructive button does, said on the page that asks to confirm it
CONFIRM = {"reset-token": "Revoke every token of %s and issue it a new one? Whatever runs with the old token stops.",
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
    body = ('%s<p>Signed in as %s.</p><form method="post" action="/logout">%s<button>Sign out</button></form>'
            '<h2>Your agents</h2><table><tr><th>Agent</th><th>Name</th><th>Bound</th><th>Status</th><th></th></tr>%s'
            '</table><h2>Invite an agent</h2><form method="post" action="/settings/agents">%s%s'
            '<p><label>Repository grants, one per line: <code>owner/name:permission</code>, the permission one of '
            'read (or pull), triage, write (or push, the default), maintain, admin<br><textarea name="repo_grants">'
            '</textarea></label></p><p><button>Create invite</button></p></form>') % (
        shown, html.escape(user["login"]), csrf, "".join(rows) or '<tr><td colspan="5">none yet</td></tr>', csrf,
        hidden_input("action", "invite"))
    return html_page("Agents", body)


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

@web_route("GET", "/approvals")
def approvals_page(req, shown=""):
    """What the delegator's agents wait for: each pending approval names the agent, the task, the
    grant, the action and exactly what it is for, with the pull request or the commits to judge it
    by; one button approves exactly that, once, the other denies it with a reason the agent sees."""
    user = signed_in_page(req)
    csrf = hidden_input("csrf", req.session["csrf"])
    rows = req.app.store.all(APPROVAL_SELECT + " WHERE g.delegator_id = ? AND a.approved_at IS NULL AND a.denied_at IS"
                             " NULL AND a.expires_at > ? AND g.revoked_at IS NULL ORDER BY a.id", user["id"], now())
    items = "".join(approval_section(approval_json(req.app, row), csrf) for row in rows)
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
