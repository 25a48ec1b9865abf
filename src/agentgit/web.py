"""Web pages' frame: sessions with CSRF tokens, signing in and out, the page shell and its headers; each
page is declared with web_route, which checks a POST form's CSRF token before its handler runs."""

import contextvars
import functools
import hmac
import html
import re
import secrets
import ssl
import unicodedata
import urllib.parse

from agentgit.config import from_now, now, visible_ascii
from agentgit.errors import HTTPError
from agentgit.storage import insert_row
from agentgit.tokens import ALL_SCOPES, expand_scopes, token_hash
from agentgit.accounts import DUMMY_PASSWORD_HASH, account_by_id, account_by_login, check_password, check_totp
from agentgit.policy import Resource, STEP_UP_SECONDS
from agentgit.authentication import Principal, confirm_totp
from agentgit.ledger import Ledger
from agentgit.routing import route


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


# Who the page being made is for: set as a web request's session is read, so every page's navigation says
# who is signed in (with a sign-out) and how many approvals wait for her. A request's thread makes its page.
SIGNED_IN = contextvars.ContextVar("signed_in", default=None)


def session_principal(app, req):
    """The signed-in human behind the session cookie (or anonymous), and the session row."""
    raw = cookies(req).get(SESSION_COOKIE, "")
    row = app.store.one("SELECT * FROM web_sessions WHERE hash = ?", token_hash(raw)) if raw else None
    SIGNED_IN.set(None)
    if row is None or row["expires_at"] <= now():
        return Principal(runtime=req.client), None
    user = account_by_id(app.store, row["user_id"])
    SIGNED_IN.set({"login": user["login"], "csrf": row["csrf"], "waiting": app.store.one(
        "SELECT COUNT(*) AS n FROM approvals a JOIN task_grants g ON g.id = a.grant_id WHERE g.delegator_id = ? AND"
        " a.approved_at IS NULL AND a.denied_at IS NULL AND a.expires_at > ? AND g.revoked_at IS NULL",
        user["id"], now())["n"]})
    # signing in asked for the TOTP code when the account has one
    return Principal(user=user, scopes=expand_scopes(ALL_SCOPES), stepped_up_at=row["totp_at"],
                     runtime="%s web session" % req.client), row


def cookie_header(req, name, value, max_age):
    secure = "; Secure" if isinstance(req.handler.connection, ssl.SSLSocket) else ""
    return "%s=%s; Path=/; HttpOnly; SameSite=Lax; Max-Age=%d%s" % (name, value, max_age, secure)


# One small stylesheet for every page, served from this origin (the pages' CSP allows no other).
STYLESHEET = b"""body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:0 auto;padding:0 1rem 3rem;color:#1f2328}
nav{display:flex;gap:1rem;padding:.6rem 0;border-bottom:1px solid #d0d7de;margin-bottom:1rem}
nav a{color:#0969da;text-decoration:none}nav .home{font-weight:600;margin-right:auto}form.inline{display:inline;margin:0}
pre{background:#f6f8fa;padding:.6rem;overflow:auto;border-radius:6px}code{background:#f6f8fa;padding:0 .2rem}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:1.5rem}h3{font-size:1rem}
button{padding:.3rem .8rem}input,select{padding:.2rem}
"""
NAVIGATION = ('<nav><a class="home" href="/">agentgit</a><a href="/settings/agents">Agents</a>'
              '<a href="/settings/tasks">Tasks</a><a href="/settings/tokens">Tokens</a><a href="/approvals">Approvals'
              '%s</a><a href="/login/device">Device sign-in</a>%s</nav>')


def navigation():
    """The navigation, for whoever the page is for: who is signed in, a sign-out, the approvals waiting."""
    signed_in = SIGNED_IN.get()
    if signed_in is None:
        return NAVIGATION % ("", '<a href="/login">Sign in</a>')
    return NAVIGATION % (" (%d waiting)" % signed_in["waiting"] if signed_in["waiting"] else "",
                         '<span>Signed in as %s</span><form class="inline" method="post" action="/logout">%s<button>Sign out</button>'
                         '</form>' % (html.escape(signed_in["login"]), hidden_input("csrf", signed_in["csrf"])))


@web_route("GET", "/agentgit.css")
def stylesheet(req):
    return 200, STYLESHEET, {"Content-Type": "text/css; charset=utf-8", "Cache-Control": "max-age=3600"}


def html_page(title, body, status=200, headers=None):
    doc = ("<!doctype html><html><head><meta charset=\"utf-8\"><title>%s · agentgit</title>"
           "<link rel=\"stylesheet\" href=\"/agentgit.css\"></head><body>%s<h1>%s</h1>%s</body></html>" % (
               html.escape(title), navigation(), html.escape(title), body))
    return status, doc.encode(), dict(PAGE_HEADERS, **(headers or {}))


def redirect(location, headers=None):
    return 303, b"", dict(PAGE_HEADERS, Location=location, **(headers or {}))


def form_fields(req):
    if "application/x-www-form-urlencoded" not in (req.headers.get("Content-Type") or ""):
        raise HTTPError(415, "Forms must be application/x-www-form-urlencoded")
    raw = req.body(64 * 1024).read_all().decode("utf-8", "replace")
    req.form_values = urllib.parse.parse_qs(raw, keep_blank_values=True)     # every value of a repeated field
    return {k: v[-1] for k, v in req.form_values.items()}


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


# Characters that change how the text around them reads without being seen: controls, format characters
# (the bidirectional overrides and isolates among them), separators of lines and paragraphs, and code
# points with no character
INVISIBLE_CATEGORIES = ("Cc", "Cf", "Co", "Cs", "Cn", "Zl", "Zp")


def plain_text(text, limit=100):
    """``text`` as a person may be shown it when someone else chose it (a client's name): the
    characters that could reorder or hide what is around it removed, white space made one space."""
    kept = "".join(c for c in str(text) if unicodedata.category(c) not in INVISIBLE_CATEGORIES)
    return " ".join(kept.split())[:limit]


def claimed_name(name):
    """A name a client gives itself, shown as its claim, not as a fact: in quotes, as escaped plain text."""
    return "&ldquo;%s&rdquo; (the name it gives itself)" % html.escape(plain_text(name) or "unnamed")


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
