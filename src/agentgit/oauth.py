"""OAuth: the device flow, authorization code with PKCE, token exchange and metadata."""

import base64
import datetime
import hashlib
import hmac
import html
import json
import re
import secrets
import time
import urllib.parse

from agentgit.config import from_now, now, parse_time, visible_ascii
from agentgit.errors import HTTPError, invalid
from agentgit.storage import insert_row
from agentgit.tokens import (AGENT_SCOPES, ALL_SCOPES, SESSION_TOKEN_SECONDS, expand_scopes, issue_token,
                             token_fingerprint, token_hash)
from agentgit.accounts import account_by_id, repo_by_full_name
from agentgit.policy import Decision, Resource, SITE, bound_human_id, decide
from agentgit.audit import audit_append
from agentgit.authentication import Principal, authenticate, name_delegator
from agentgit.plumbing import route
from agentgit.lookups import signed_in
from agentgit.issues import text_field
from agentgit.tasks import find_grant, issue_task_token, strip_kind
from agentgit.web import PAGE_HEADERS, hidden_input, html_page, web_route, signed_in_page


@web_route("GET", "/login/device")
def device_page(req):
    signed_in_page(req)
    code = html.escape(req.query.get("user_code", ""))
    body = ('<p>Enter the code your device shows.</p><form method="post" action="/login/device">%s'
            '<p><input name="user_code" value="%s" autocomplete="off"></p><p><button>Continue</button></p></form>') % (
        hidden_input("csrf", req.session["csrf"]), code)
    return html_page("Device activation", body)


@web_route("POST", "/login/device")
def device_page_submit(req):
    """First the code (shows what is asked), then approve or deny."""
    user, form = signed_in_page(req), req.form
    row = pending_device_code(req, form.get("user_code"))
    if form.get("decision") in ("approve", "deny"):
        decide_device_code(req, row, form["decision"] == "approve")
        return html_page("Device activation", "<p>%s. You can close this page.</p>" % (
            "Approved: the device is signed in as %s" % html.escape(user["login"]) if form["decision"] == "approve"
            else "Denied"))
    scopes = [s for s in row["scopes"].split(",") if s]
    buttons = "".join('<form method="post" action="/login/device">%s%s%s<button>%s</button></form>' % (
        hidden_input("csrf", req.session["csrf"]), hidden_input("user_code", row["user_code"]), hidden_input("decision", d), d.title())
        for d in ("approve", "deny"))
    app = req.app.store.one("SELECT name FROM oauth_apps WHERE client_id = ?", row["client_id"])
    client = ("the app <strong>%s</strong>" % html.escape(app["name"]) if app else
              "<strong>%s</strong>" % KNOWN_CLIENTS.get(row["client_id"], "a client this server does not know "
                                                        "(client id %s)" % html.escape(row["client_id"])))
    body = "<p>%s asks to act as <strong>%s</strong> with the scopes: %s.</p>%s" % (
        client, html.escape(user["login"]),
        html.escape(", ".join(scopes) or "none (public read-only)"), buttons)
    return html_page("Authorize device", body)

# -- OAuth device flow (RFC 8628) -----------------------------------------------------------------
# What `gh auth login` speaks: the client asks for a device code, shows the human a short user code,
# and polls while the human approves it on /login/device (or headlessly over the API). Errors while
# polling are answered with HTTP 200 and an "error" field, as GitHub does and gh expects.

# Device-flow clients that come with their own client id, named on the approval page
KNOWN_CLIENTS = {"178c6fc778ccc68e1d6a": "the GitHub CLI (gh)"}
USER_CODE_LETTERS = "BCDFGHJKLMNPQRSTVWXZ"        # no vowels: no words, no look-alike digits
DEVICE_CODE_SECONDS, DEVICE_POLL_INTERVAL = 900, 5


def oauth_params(req):
    """Form or JSON parameters of an OAuth endpoint, from its body."""
    if "application/json" in (req.headers.get("Content-Type") or ""):
        body = req.json()
        return {k: v for k, v in body.items() if isinstance(v, str)}
    # the body only (RFC 6749 section 3.2): parameters in the URL end up in logs, credentials with them
    raw = req.body(64 * 1024).read_all().decode("utf-8", "replace")
    return {k: v[-1] for k, v in urllib.parse.parse_qs(raw).items()}


def oauth_answer(req, body, status=200):
    """JSON when the client accepts it, else form encoding (GitHub's default)."""
    if "application/json" in (req.headers.get("Accept") or ""):
        return status, body
    return status, urllib.parse.urlencode(body).encode(), {"Content-Type": "application/x-www-form-urlencoded"}


def requested_scopes(text):
    return [s for s in re.split(r"[\s,]+", text or "") if s in ALL_SCOPES and s != "site_admin"]


@route("POST", "/login/device/code")
def device_code(req):
    req.surface = "oauth"
    params = oauth_params(req)
    client_id = params.get("client_id", "")
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,100}", client_id):
        return oauth_answer(req, {"error": "invalid_client", "error_description": "client_id is required"}, 400)
    code = secrets.token_hex(20)
    for _ in range(10):
        user_code = "".join(secrets.choice(USER_CODE_LETTERS) for _ in range(8))
        if not req.app.store.one("SELECT 1 FROM device_codes WHERE user_code = ?", user_code):
            break
    with req.app.store.transaction() as db:
        insert_row(db, "device_codes", {"hash": token_hash(code), "user_code": user_code, "client_id": client_id,
                                        "scopes": ",".join(requested_scopes(params.get("scope"))),
                                        "created_at": now(), "expires_at": from_now(DEVICE_CODE_SECONDS),
                                        "interval": DEVICE_POLL_INTERVAL})
    shown = "%s-%s" % (user_code[:4], user_code[4:])
    return oauth_answer(req, {"device_code": code, "user_code": shown, "verification_uri": req.app.url + "/login/device",
                              "verification_uri_complete": req.app.url + "/login/device?user_code=" + shown,
                              "expires_in": DEVICE_CODE_SECONDS, "interval": DEVICE_POLL_INTERVAL})


@route("POST", "/login/oauth/access_token")
def access_token(req):
    """The token endpoint, for the device flow, authorization codes with PKCE, and refresh tokens."""
    req.surface = "oauth"
    params = oauth_params(req)
    grant = {"urn:ietf:params:oauth:grant-type:device_code": device_grant, "authorization_code": code_grant,
             "refresh_token": refresh_grant, TOKEN_EXCHANGE: exchange_grant}.get(params.get("grant_type"))
    if grant is None:
        return oauth_answer(req, {"error": "unsupported_grant_type",
                                  "error_description": "grant_type must be device_code, authorization_code, "
                                                       "refresh_token or token-exchange"}, 400)
    return grant(req, params)


TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"


def exchange_grant(req, params):
    """RFC 8693: an agent trades its own long-lived token (subject_token) for a short-lived one for
    ``resource`` (a repository's URL or repo:owner/name; this server's URL for any repository): with
    ``task``, a task token under that task's grant for the repository; without, an agent session
    token for the agent's standing access there. ``scope`` narrows either, and the answer says so."""
    if params.get("subject_token_type", ACCESS_TOKEN_TYPE) != ACCESS_TOKEN_TYPE:
        return oauth_answer(req, {"error": "invalid_request", "error_description": "subject_token_type must be "
                                  + ACCESS_TOKEN_TYPE}, 400)
    try:
        req.principal = authenticate(req.app, {"Authorization": "token " + params.get("subject_token", "")},
                                     req.client)
    except HTTPError:
        req.principal = Principal(runtime=req.client)
    if req.principal.token_kind != "agent":
        return oauth_answer(req, {"error": "invalid_grant",
                                  "error_description": "subject_token must be a live agent's own token"}, 400)
    target = params.get("resource", "")
    if "://" in target and urllib.parse.urlsplit(target).netloc.lower() != urllib.parse.urlsplit(
            req.app.url).netloc.lower():     # RFC 8707: a resource on another server is not ours to grant
        return oauth_answer(req, {"error": "invalid_target", "error_description": "%s is not on %s" % (
            target, req.app.url)}, 400)
    path = urllib.parse.urlsplit(target).path if "://" in target else strip_kind(target, "repo")
    name = "repo:" + "/".join(path.strip("/").removesuffix(".git").split("/")[-2:]) if path.strip("/") else None
    asked = re.split(r"[\s,]+", params["scope"].strip()) if params.get("scope", "").strip() else None
    if params.get("task") is None:
        return session_exchange(req, name, asked)
    rows = [r for r in req.app.store.all("SELECT * FROM task_grants WHERE agent_id = ? AND revoked_at IS NULL AND"
                                         " expires_at > ? ORDER BY id", req.principal.user["id"], now())
            if name in json.loads(r["resources"]) and r["task"] == params["task"]]
    if not rows:
        return refuse_exchange(req, "mint_task_token", name, "no live task grant of yours for %s covers %s" % (
            params["task"], name))
    if len(rows) > 1:
        return oauth_answer(req, {"error": "invalid_request", "error_description": "several task grants for %s "
                                  "cover %s" % (params["task"], name)}, 400)
    find_grant(req, rows[0]["public_id"], "mint_task_token")
    return exchanged(req, issue_task_token(req, rows[0], asked))


def session_exchange(req, name, asked):
    """An agent session token: the agent's standing access (invites, teams, collaborators), for an
    hour, for the one repository named (or, for this server, any), from the agent's own token."""
    store, agent = req.app.store, req.principal.user
    standing = Principal(user=agent, token_id=0, token_kind="session", scopes=expand_scopes(AGENT_SCOPES))
    name_delegator(store, standing)
    repo = repo_by_full_name(store, strip_kind(name, "repo")) if name else None
    if name and (repo is None or not decide(store, standing, "read_code", Resource.repo(repo)).allowed):
        return refuse_exchange(req, "mint_session_token", name, "no standing access of %s covers %s" % (
            agent["login"], name))
    req.authorize("mint_session_token", Resource.account(agent))
    given = sorted(set(AGENT_SCOPES) & set(asked if asked is not None else AGENT_SCOPES))
    expires_at = from_now(SESSION_TOKEN_SECONDS)
    with req.transaction() as db:
        token, _ = issue_token(db, req.app.key, agent["id"], "session", name="agent session", scopes=given,
                               expires_at=expires_at, issued_by=bound_human_id(store, agent["id"]),
                               audience=[name] if name else None)
        req.effect("agent session token %s for %s until %s" % (token_fingerprint(token), name or "any repository",
                                                               expires_at))
    return exchanged(req, {"token": token, "expires_at": expires_at, "scope": " ".join(given),
                           "decision": "allow_narrowed" if asked is not None and set(asked) - set(given) else "allow",
                           "audience": [name] if name else None})


def refuse_exchange(req, action, resource, reason):
    """RFC 8707's invalid_target for a resource the agent holds nothing on, audited as the denial it is."""
    req.app.audit(req.principal, req.surface, Decision("deny", action, resource or "site", [reason]))
    return oauth_answer(req, {"error": "invalid_target", "error_description": reason}, 400)


def exchanged(req, minted):
    """The token endpoint's answer for an exchanged token (RFC 8693 section 2.2.1), with agentgit's decision."""
    expires_in = int((parse_time(minted["expires_at"]) - datetime.datetime.now(datetime.timezone.utc)).total_seconds())
    return oauth_answer(req, dict({k: v for k, v in minted.items() if k not in ("token", "expires_at")},
                                  access_token=minted["token"], issued_token_type=ACCESS_TOKEN_TYPE,
                                  token_type="bearer", expires_in=expires_in))


def device_grant(req, params):
    """Device codes are single use; polling faster than the interval is slow_down."""
    store = req.app.store
    row = store.one("SELECT * FROM device_codes WHERE hash = ?", token_hash(params.get("device_code", "")))
    if row is None or row["client_id"] != params.get("client_id"):
        return oauth_answer(req, {"error": "incorrect_device_code", "error_description": "unknown device code"})
    moment = time.time()
    with store.transaction() as db:
        fresh = db.execute("SELECT * FROM device_codes WHERE id = ?", (row["id"],)).fetchone()
        db.execute("UPDATE device_codes SET last_poll = ? WHERE id = ?", (moment, row["id"]))
        if fresh["consumed_at"] or fresh["expires_at"] <= now():
            return oauth_answer(req, {"error": "expired_token", "error_description": "the device code has expired"})
        if fresh["denied"]:
            return oauth_answer(req, {"error": "access_denied", "error_description": "the request was denied"})
        if fresh["last_poll"] and moment - fresh["last_poll"] < fresh["interval"]:
            db.execute("UPDATE device_codes SET interval = interval + 5 WHERE id = ?", (row["id"],))
            return oauth_answer(req, {"error": "slow_down", "interval": fresh["interval"] + 5,
                                      "error_description": "polling faster than the interval"})
        if not fresh["approved_by"]:
            return oauth_answer(req, {"error": "authorization_pending",
                                      "error_description": "the human has not approved the request yet"})
        scopes = [s for s in fresh["scopes"].split(",") if s]
        token, _ = issue_token(db, req.app.key, fresh["approved_by"], "oauth", name="device flow: " + fresh["client_id"],
                               scopes=scopes)
        db.execute("UPDATE device_codes SET consumed_at = ? WHERE id = ?", (now(), row["id"]))
        human = account_by_id(store, fresh["approved_by"])
        audit_append(db, req.app.key, Principal(user=human, runtime=req.client), "oauth",
                     Decision("allow", "issue_token", "user:" + human["login"], ["device code approved by %s" %
                                                                                  human["login"]]),
                     "oauth token %s for %s, scopes %s" % (token_fingerprint(token), fresh["client_id"],
                                                           ",".join(scopes) or "(none)"))
    return oauth_answer(req, {"access_token": token, "token_type": "bearer", "scope": ",".join(scopes)})


def pending_device_code(req, user_code):
    """The device request a human typed the code of; wrong codes count against the sign-in limiter."""
    code = re.sub(r"[^A-Z]", "", (user_code or "").upper())
    row = req.app.store.one("SELECT * FROM device_codes WHERE user_code = ?", code) if len(code) == 8 else None
    if row is None or row["expires_at"] <= now() or row["consumed_at"] or row["approved_by"] or row["denied"]:
        # counted per address and, on the page, per session too (a session may hop addresses)
        retry = req.app.sign_ins.hit("device:" + req.client)
        if req.session is not None:
            retry = req.app.sign_ins.hit("device-session:" + req.session["hash"]) or retry
        if retry:
            raise HTTPError(429, "Too many wrong codes; try again in %d seconds" % retry,
                            headers={"Retry-After": str(retry)})
        raise HTTPError(404, "That code is unknown, used or expired")
    return row


def decide_device_code(req, row, approve):
    req.authorize("approve_device", SITE, confers=tuple(s for s in row["scopes"].split(",") if s) if approve else ())
    with req.transaction() as db:
        if approve:
            db.execute("UPDATE device_codes SET approved_by = ? WHERE id = ? AND approved_by IS NULL AND denied = 0",
                       (req.principal.user["id"], row["id"]))
        else:
            db.execute("UPDATE device_codes SET denied = 1 WHERE id = ?", (row["id"],))
        req.effect("%s device request of %s for scopes %s" % ("approved" if approve else "denied", row["client_id"],
                                                               row["scopes"] or "(none)"))


@route("POST", "/api/ext/v1/oauth/device/approve")
def approve_device_api(req):
    """Approve a device-flow request by its user code, as the caller (the API twin of the device page)."""
    body = req.json()
    signed_in(req)
    row = pending_device_code(req, req.field(body, "user_code", str, "DeviceCode", required=True))
    decide_device_code(req, row, approve=body.get("approve", True) is not False)
    return 200, {"user_code": row["user_code"], "client_id": row["client_id"],
                 "scopes": [s for s in row["scopes"].split(",") if s], "approved": body.get("approve", True) is not False}

# -- authorization code with PKCE (RFC 6749, RFC 7636, RFC 9207) ------------------------------------

AUTH_CODE_SECONDS, OAUTH_ACCESS_HOURS = 60, 8


def redirect_matches(registered, given):
    """Exact match, except that a loopback redirect may use any port (RFC 8252 §7.3); never a URI with
    anything but visible ASCII in it."""
    if not visible_ascii(given):
        return False
    if registered == given:
        return True
    a, b = urllib.parse.urlsplit(registered), urllib.parse.urlsplit(given)
    return (a.scheme == b.scheme == "http" and a.hostname in ("127.0.0.1", "localhost", "::1") and
            a.hostname == b.hostname and a.path == b.path and a.query == b.query and not b.fragment)


def pkce_s256(verifier):
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


@route("POST", "/api/ext/v1/oauth/apps")
def register_oauth_app(req):
    """Register an OAuth app (client id, optional secret, redirect URIs) owned by the caller."""
    body = req.json()
    name = text_field(req, body, "name", "OAuthApp", required=True, limit=100)
    uris = req.field(body, "redirect_uris", list, "OAuthApp", required=True)
    for uri in uris:
        parts = urllib.parse.urlsplit(uri) if visible_ascii(uri) else None
        if parts is None or parts.fragment or parts.scheme not in ("https", "http") or not parts.netloc or (
                parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "localhost", "::1")):
            raise invalid("OAuthApp", "redirect_uris", message="redirect URIs are https, or http on loopback, "
                                                                "with no fragment")
    confidential = req.field(body, "confidential", bool, "OAuthApp", default=False)
    user = signed_in(req)
    req.authorize("register_app", Resource.account(user))
    client_id = "agc_" + secrets.token_hex(10)
    secret = "agcs_" + secrets.token_hex(24) if confidential else None
    with req.transaction() as db:
        insert_row(db, "oauth_apps", {"client_id": client_id, "secret_hash": token_hash(secret) if secret else None,
                                      "name": name, "redirect_uris": json.dumps(uris), "owner_id": user["id"],
                                      "created_at": now()})
        req.effect("registered OAuth app %s (%s)" % (client_id, name))
    out = {"client_id": client_id, "name": name, "redirect_uris": uris}
    if secret:
        out["client_secret"] = secret
    return 201, out


def authorize_request(req, params):
    """The app and the checked parameters of an authorization request. Until the client and its
    redirect URI are known good, errors are shown here and never redirected (RFC 6749 §4.1.2.1)."""
    app_row = req.app.store.one("SELECT * FROM oauth_apps WHERE client_id = ?", params.get("client_id", ""))
    if app_row is None:
        raise HTTPError(400, "Unknown client_id")
    redirect_uri = params.get("redirect_uri", "")
    if not any(redirect_matches(r, redirect_uri) for r in json.loads(app_row["redirect_uris"])):
        raise HTTPError(400, "redirect_uri does not match a URI registered for this app")
    problem = None
    if params.get("response_type") != "code":
        problem = ("unsupported_response_type", "response_type must be code")
    elif params.get("code_challenge_method") != "S256" or not re.fullmatch(r"[A-Za-z0-9_-]{43}",
                                                                             params.get("code_challenge", "")):
        problem = ("invalid_request", "PKCE with code_challenge_method S256 is required")
    return app_row, redirect_uri, problem


def redirect_back(req, redirect_uri, fields, state):
    """To the client, with ``state`` echoed and ``iss`` naming this server (RFC 9207)."""
    fields = dict(fields, iss=req.app.url)
    if state is not None:
        fields["state"] = state
    separator = "&" if urllib.parse.urlsplit(redirect_uri).query else "?"
    return 302, b"", dict(PAGE_HEADERS, Location=redirect_uri + separator + urllib.parse.urlencode(fields))


@web_route("GET", "/login/oauth/authorize")
def authorize_page(req):
    app_row, redirect_uri, problem = authorize_request(req, req.query)
    if problem:
        return redirect_back(req, redirect_uri, {"error": problem[0], "error_description": problem[1]},
                             req.query.get("state"))
    user = signed_in_page(req)
    scopes = requested_scopes(req.query.get("scope"))
    fields = "".join(hidden_input(k, req.query.get(k, "")) for k in ("client_id", "redirect_uri", "scope", "state",
                                                                  "code_challenge", "code_challenge_method",
                                                                  "response_type"))
    buttons = "".join('<form method="post" action="/login/oauth/authorize">%s%s%s<button>%s</button></form>' % (
        hidden_input("csrf", req.session["csrf"]), fields, hidden_input("decision", d), d.title()) for d in ("approve", "deny"))
    body = ("<p><strong>%s</strong> asks to act as <strong>%s</strong> with the scopes: %s.</p>"
            "<p>It will return to %s.</p>%s") % (html.escape(app_row["name"]), html.escape(user["login"]),
                                                 html.escape(", ".join(scopes) or "none (public read-only)"),
                                                 html.escape(redirect_uri), buttons)
    return html_page("Authorize application", body)


@web_route("POST", "/login/oauth/authorize")
def authorize_submit(req):
    user, form = signed_in_page(req), req.form
    state = form.get("state") or None
    app_row, redirect_uri, problem = authorize_request(req, form)
    if problem:
        return redirect_back(req, redirect_uri, {"error": problem[0], "error_description": problem[1]}, state)
    if form.get("decision") != "approve":
        return redirect_back(req, redirect_uri, {"error": "access_denied", "error_description": "the human said no"},
                             state)
    scopes = requested_scopes(form.get("scope"))
    req.authorize("approve_device", SITE, confers=scopes)
    code = secrets.token_urlsafe(32)
    with req.transaction() as db:
        insert_row(db, "oauth_codes", {"hash": token_hash(code), "app_id": app_row["id"], "user_id": user["id"],
                                       "redirect_uri": redirect_uri, "scopes": ",".join(scopes),
                                       "challenge": form["code_challenge"], "expires_at": from_now(AUTH_CODE_SECONDS)})
        req.effect("authorized %s for scopes %s" % (app_row["client_id"], ",".join(scopes) or "(none)"))
    return redirect_back(req, redirect_uri, {"code": code}, state)


def oauth_client(req, params):
    """The app a token request comes from; a confidential one must show its secret."""
    app_row = req.app.store.one("SELECT * FROM oauth_apps WHERE client_id = ?", params.get("client_id", ""))
    if app_row is None:
        return None
    if app_row["secret_hash"] and not hmac.compare_digest(app_row["secret_hash"],
                                                          token_hash(params.get("client_secret", ""))):
        return None
    return app_row


def issue_oauth_pair(db, req, app_row, user_id, scopes, family):
    """An access token (hours) and a refresh token in ``family``; returns the token response."""
    token, token_id = issue_token(db, req.app.key, user_id, "oauth", name="oauth app " + app_row["client_id"],
                                  scopes=scopes, expires_at=from_now(OAUTH_ACCESS_HOURS * 3600))
    refresh = "agr_" + secrets.token_hex(24)
    insert_row(db, "oauth_refresh_tokens", {"hash": token_hash(refresh), "family": family, "app_id": app_row["id"],
                                            "user_id": user_id, "scopes": ",".join(scopes), "access_id": token_id,
                                            "created_at": now()})
    user = account_by_id(req.app.store, user_id)
    audit_append(db, req.app.key, Principal(user=user, runtime=req.client), "oauth",
                 Decision("allow", "issue_token", "user:" + user["login"], ["authorized app %s" % app_row["client_id"]]),
                 "oauth token %s, refresh family %s" % (token_fingerprint(token), family[:12]))
    return {"access_token": token, "token_type": "bearer", "scope": ",".join(scopes),
            "expires_in": OAUTH_ACCESS_HOURS * 3600, "refresh_token": refresh}


def revoke_family(db, family):
    """Every access token a refresh family produced, and the family itself."""
    db.execute("UPDATE tokens SET revoked_at = ? WHERE revoked_at IS NULL AND id IN (SELECT access_id FROM"
               " oauth_refresh_tokens WHERE family = ?)", (now(), family))
    db.execute("UPDATE oauth_refresh_tokens SET used_at = COALESCE(used_at, ?) WHERE family = ?", (now(), family))


def code_grant(req, params):
    app_row = oauth_client(req, params)
    if app_row is None:
        return oauth_answer(req, {"error": "invalid_client", "error_description": "unknown client or wrong secret"}, 401)
    with req.app.store.transaction() as db:
        row = db.execute("SELECT * FROM oauth_codes WHERE hash = ? AND app_id = ?",
                         (token_hash(params.get("code", "")), app_row["id"])).fetchone()
        if row is None or row["expires_at"] <= now():
            return oauth_answer(req, {"error": "invalid_grant", "error_description": "unknown or expired code"}, 400)
        if row["consumed_at"]:
            # a replayed code: whatever it issued is revoked (RFC 6749 §4.1.2)
            if row["family"]:
                revoke_family(db, row["family"])
            return oauth_answer(req, {"error": "invalid_grant", "error_description": "the code was already used; "
                                                                                      "its tokens are revoked"}, 400)
        if row["redirect_uri"] != params.get("redirect_uri"):
            return oauth_answer(req, {"error": "invalid_grant", "error_description": "redirect_uri differs"}, 400)
        if not hmac.compare_digest(row["challenge"], pkce_s256(params.get("code_verifier", ""))):
            return oauth_answer(req, {"error": "invalid_grant", "error_description": "code_verifier is wrong"}, 400)
        family = secrets.token_hex(16)
        db.execute("UPDATE oauth_codes SET consumed_at = ?, family = ? WHERE id = ?", (now(), family, row["id"]))
        answer = issue_oauth_pair(db, req, app_row, row["user_id"], [s for s in row["scopes"].split(",") if s], family)
    return oauth_answer(req, answer)


def refresh_grant(req, params):
    """Rotation with reuse detection: each refresh token works once; presenting a used one again
    revokes its whole family, since one of the two presenters is not the client."""
    app_row = oauth_client(req, params)
    if app_row is None:
        return oauth_answer(req, {"error": "invalid_client", "error_description": "unknown client or wrong secret"}, 401)
    with req.app.store.transaction() as db:
        row = db.execute("SELECT * FROM oauth_refresh_tokens WHERE hash = ? AND app_id = ?",
                         (token_hash(params.get("refresh_token", "")), app_row["id"])).fetchone()
        if row is None:
            return oauth_answer(req, {"error": "invalid_grant", "error_description": "unknown refresh token"}, 400)
        if row["used_at"]:
            revoke_family(db, row["family"])
            return oauth_answer(req, {"error": "invalid_grant", "error_description": "the refresh token was already "
                                                                                      "used; its family is revoked"}, 400)
        db.execute("UPDATE oauth_refresh_tokens SET used_at = ? WHERE id = ?", (now(), row["id"]))
        db.execute("UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (now(), row["access_id"]))
        answer = issue_oauth_pair(db, req, app_row, row["user_id"], [s for s in row["scopes"].split(",") if s],
                                  row["family"])
    return oauth_answer(req, answer)


@route("GET", "/.well-known/oauth-authorization-server")
def authorization_server_metadata(req):
    """RFC 8414."""
    url = req.app.url
    return {"issuer": url, "authorization_endpoint": url + "/login/oauth/authorize",
            "token_endpoint": url + "/login/oauth/access_token",
            "device_authorization_endpoint": url + "/login/device/code",
            "response_types_supported": ["code"], "code_challenge_methods_supported": ["S256"],
            "grant_types_supported": ["authorization_code", "refresh_token",
                                      "urn:ietf:params:oauth:grant-type:device_code", TOKEN_EXCHANGE],
            "token_endpoint_auth_methods_supported": ["none", "client_secret_post"],
            "scopes_supported": [s for s in ALL_SCOPES if s != "site_admin"],
            "authorization_response_iss_parameter_supported": True}


@route("GET", "/.well-known/oauth-protected-resource")
def protected_resource_metadata(req):
    """RFC 9728: where a client finds the authorization server for this API."""
    return {"resource": req.app.url, "authorization_servers": [req.app.url], "bearer_methods_supported": ["header"],
            "scopes_supported": [s for s in ALL_SCOPES if s != "site_admin"]}
