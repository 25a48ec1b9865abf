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

from agentgit.config import from_now, now, parse_time
from agentgit.errors import HTTPError
from agentgit.storage import insert_row
from agentgit.tokens import (AGENT_SCOPES, ALL_SCOPES, SESSION_TOKEN_SECONDS, expand_scopes, issue_token,
                             token_fingerprint, token_hash, verify_token)
from agentgit.accounts import account_by_id, repo_by_full_name
from agentgit.policy import Resource, SITE, bound_human_id, decide
from agentgit.authentication import (Presented, Principal, act_claim, authenticate, check_presented, load_grant,
                                     name_delegator, remember_runtime_certificate)
from agentgit.ledger import Ledger
from agentgit.routing import route
from agentgit.lookups import signed_in
from agentgit.tasks import (TASK_GRANT_MAX_SECONDS, bound_to, find_grant, insert_task_grant, issue_task_token,
                            strip_kind, task_token_in)
from agentgit.web import (PAGE_HEADERS, claimed_name, csp_allowing_form_redirect_to, hidden_input, html_page,
                          plain_text, signed_in_page, web_route)
from agentgit.oauth_clients import AUTH_METHODS, authenticated_client, find_client, redirect_matches
from agentgit.client_assertions import asserted_agent
from agentgit.broker import tool_token_for_upstream


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
    app = req.app.store.one("SELECT * FROM oauth_apps WHERE client_id = ?", row["client_id"])
    client = ("the app <strong>%s</strong> (%s)" % (claimed_name(app["name"]), html.escape(client_description(req, app)))
              if app else "<strong>%s</strong>" % KNOWN_CLIENTS.get(row["client_id"], "a client this server does "
                                                                    "not know (client id %s)" % html.escape(
                                                                        plain_text(row["client_id"]))))
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
    """JSON when the client accepts it or speaks OAuth 2.1 (see speaks_oauth21), else form encoding
    (GitHub's default)."""
    if "application/json" in (req.headers.get("Accept") or "") or getattr(req, "oauth21", False):
        return status, body
    return status, urllib.parse.urlencode(body).encode(), {"Content-Type": "application/x-www-form-urlencoded"}


DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


def requested_scopes(text):
    return [s for s in re.split(r"[\s,]+", text or "") if s in ALL_SCOPES and s != "site_admin"]


@route("POST", "/login/device/code", "oauth", "none")
def device_code(req):
    params = oauth_params(req)
    client_id = params.get("client_id", "")
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,100}", client_id):
        return oauth_answer(req, {"error": "invalid_client", "error_description": "client_id is required"}, 400)
    app = req.app.store.one("SELECT kind, metadata FROM oauth_apps WHERE client_id = ?", client_id)
    if app is not None and app["kind"] != "owned" and DEVICE_GRANT not in json.loads(app["metadata"] or "{}").get(
            "grant_types", []):
        return oauth_answer(req, {"error": "unauthorized_client", "error_description": "this client did not register "
                                  "the device grant (its grant_types)"}, 400)
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


@route("POST", "/login/oauth/access_token", "oauth", "client")
def access_token(req):
    """The token endpoint, for the device flow, authorization codes with PKCE, and refresh tokens."""
    params = oauth_params(req)
    req.oauth21 = speaks_oauth21(req, params)
    grant = {DEVICE_GRANT: device_grant, "authorization_code": code_grant,
             "refresh_token": refresh_grant, TOKEN_EXCHANGE: exchange_grant,
             "client_credentials": client_credentials_grant}.get(params.get("grant_type"))
    if grant is None:
        return oauth_answer(req, {"error": "unsupported_grant_type",
                                  "error_description": "grant_type must be device_code, authorization_code, "
                                                       "refresh_token, client_credentials or token-exchange"}, 400)
    try:
        return grant(req, params)
    except HTTPError as error:
        challenge = error.headers.get("WWW-Authenticate", "")
        if not challenge.startswith("DPoP "):
            raise
        # RFC 9449 §5: a proof the token endpoint refuses is a 400 in OAuth's shape (with the nonce to use)
        code = "use_dpop_nonce" if "use_dpop_nonce" in challenge else "invalid_dpop_proof"
        status, body, *headers = oauth_answer(req, {"error": code, "error_description": error.message}, 400)
        return status, body, dict(*headers, **{k: v for k, v in error.headers.items() if k == "DPoP-Nonce"})


def speaks_oauth21(req, params):
    """A client of RFC 6749's JSON answers rather than GitHub's form-encoded ones: one that names a
    resource (RFC 8707), registered itself or is described by a metadata document."""
    if params.get("resource") or params.get("client_id", "").startswith("https://"):
        return True
    row = req.app.store.one("SELECT kind FROM oauth_apps WHERE client_id = ?", params.get("client_id", ""))
    return row is not None and row["kind"] != "owned"


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
                                     req.client, presented=req.presented, subject=True)
    except HTTPError as error:
        challenge = error.headers.get("WWW-Authenticate", "")
        if challenge.startswith("DPoP ") and 'error="invalid_token"' not in challenge:
            raise       # the request's own proof refused: access_token() answers it in OAuth's shape
        req.principal = Principal(runtime=req.client)       # (a subject token bound to another key: nobody's)
    resource = params.get("resource", "")
    if req.principal.token_kind == "task" and params.get("actor_token"):
        return hand_down(req, params)
    if req.principal.token_kind == "task" and "://" in resource and urllib.parse.urlsplit(
            resource).netloc.lower() != urllib.parse.urlsplit(req.app.url).netloc.lower():
        # a task token for an upstream's URL: the broker's tool token for the grant's credential there
        minted = tool_token_for_upstream(req, resource)
        if minted is None:
            return refuse_exchange(req, "use_credential", None, "no credential of task grant %s is for %s" % (
                req.principal.grant["public_id"], resource[:200]))
        return exchanged(req, minted)
    if req.principal.token_kind != "agent":
        return oauth_answer(req, {"error": "invalid_grant",
                                  "error_description": "subject_token must be a live agent's own token (or a task "
                                                       "token, for an upstream's tool token)"}, 400)
    return mint_for_agent(req, params)


def named_repository(target):
    """repo:owner/name of an RFC 8707 resource naming one repository (its URL, .git or not, or
    repo:owner/name), or None (this server's URL: any)."""
    path = urllib.parse.urlsplit(target).path if "://" in target else strip_kind(target, "repo")
    return "repo:" + "/".join(path.strip("/").removesuffix(".git").split("/")[-2:]) if path.strip("/") else None


def hand_down(req, params):
    """RFC 8693 delegation: an orchestrator's task token (subject_token) hands a narrower part of its task
    to another agent (actor_token, that agent's own token): a grant made from the orchestrator's, for
    the sub-agent, on the resources (``resource``), actions (``scope``) and time (``expires_in``) asked
    within it, and a task token of it. Its authority is every link's at once, live: revoking any grant
    above it, or suspending an agent above it, cuts it."""
    if params.get("actor_token_type", ACCESS_TOKEN_TYPE) != ACCESS_TOKEN_TYPE:
        return oauth_answer(req, {"error": "invalid_request", "error_description": "actor_token_type must be "
                                  + ACCESS_TOKEN_TYPE}, 400)
    store, orchestrator = req.app.store, req.principal
    parent = orchestrator.grant
    try:
        actor = authenticate(req.app, {"Authorization": "token " + params["actor_token"]}, req.client, subject=True)
    except HTTPError:
        actor = Principal()
    if actor.user is None or actor.token_kind != "agent" or actor.user["id"] == orchestrator.user["id"]:
        return oauth_answer(req, {"error": "invalid_grant", "error_description": "actor_token must be another live "
                                  "agent's own token"}, 400)
    target = params.get("resource", "")
    name, names = named_repository(target), sorted(parent["resources"])
    if name is not None and target != req.app.url:
        if name not in parent["resources"]:
            return refuse_exchange(req, "delegate_task", name, "task grant %s does not cover %s" % (
                parent["public_id"], name))
        names = [name]
    asked = set(re.split(r"[\s,]+", params["scope"].strip())) if params.get("scope", "").strip() else parent["actions"]
    actions = sorted(asked & parent["actions"])
    try:
        seconds = min(int(params.get("expires_in") or TASK_GRANT_MAX_SECONDS), TASK_GRANT_MAX_SECONDS)
    except ValueError:
        return oauth_answer(req, {"error": "invalid_request", "error_description": "expires_in is seconds"}, 400)
    if not actions or seconds < 60:
        return oauth_answer(req, {"error": "invalid_scope", "error_description": "nothing of task grant %s is "
                                  "asked for (scope: some of %s; expires_in: 60 seconds at least)" % (
                                      parent["public_id"], " ".join(sorted(parent["actions"])))}, 400)
    sub = actor.user
    try:
        decision = req.authorize("delegate_task", SITE, agent=sub["login"], bound_to=bound_human_id(store, sub["id"]))
    except HTTPError as error:       # refused, or waiting for the human: in OAuth's shape, with the approval
        return oauth_answer(req, dict(error.extra, error="access_denied", error_description=error.message),
                            error.status)
    expires_at = min(from_now(seconds), parent["expires_at"])
    constraints = {k: v for k, v in parent["constraints"].items() if k != "expires_at"}
    with req.transaction() as db:        # the grant, its token and their audit row land together
        grant_id, public_id = insert_task_grant(db, sub["id"], parent["delegator_id"], parent["task"], names, actions,
                                                constraints, expires_at, parent["id"])
        req.effect("task grant %s for %s from %s: %s on %s until %s" % (
            public_id, sub["login"], parent["public_id"], ",".join(actions), ",".join(names), expires_at))
        minted = task_token_in(db, req, db.execute("SELECT * FROM task_grants WHERE id = ?", (grant_id,)).fetchone())
    return exchanged(req, dict(minted, decision="allow_narrowed" if asked - set(actions) else decision.effect))


def client_credentials_grant(req, params):
    """RFC 6749 §4.4 for an agent that proves itself with a JWT signed by a key on its account (RFC
    7523): it gets what a token exchange gives for its own token (a task token with ``task``, else
    an agent session token), and its runtime holds a private key instead of a bearer secret."""
    try:
        agent, kid = asserted_agent(req, params)
    except ValueError as error:
        Ledger(req.app, Principal(runtime=req.client), req.surface).refuse(
            "mint_session_token", "user:" + str(params.get("client_id", "?"))[:40], [str(error)])
        return oauth_answer(req, {"error": "invalid_client", "error_description": str(error)}, 401)
    # the agent as its own token would make it, the key standing in for the token
    req.principal = Principal(user=agent, token_id=0, token_kind="agent", fingerprint="key:" + kid,
                              scopes=expand_scopes(AGENT_SCOPES), scopes_header=", ".join(AGENT_SCOPES),
                              runtime=req.client, bootstrap=req.app.agent_credentials == "bootstrap")
    check_presented(req.app, req.principal, req.presented or Presented(), "", None, None)
    name_delegator(req.app.store, req.principal)
    return mint_for_agent(req, params)


def mint_for_agent(req, params):
    """For an agent that proved itself (its own token, or a signed assertion): a short-lived token for
    ``resource``, under ``task``'s grant when one is named."""
    target = params.get("resource", "")
    if "://" in target and urllib.parse.urlsplit(target).netloc.lower() != urllib.parse.urlsplit(
            req.app.url).netloc.lower():     # RFC 8707: a resource on another server is not ours to grant
        return oauth_answer(req, {"error": "invalid_target", "error_description": "%s is not on %s" % (
            target, req.app.url)}, 400)
    # the MCP endpoint: a token for /mcp alone, for the task's repositories (or, without one, any)
    mcp = req.app.url + "/mcp" if "://" in target and our_resource(req, target) == req.app.url + "/mcp" else None
    name = named_repository(target) if not mcp else None
    asked = re.split(r"[\s,]+", params["scope"].strip()) if params.get("scope", "").strip() else None
    if params.get("task") is None:
        return session_exchange(req, name, asked, mcp)
    rows = [r for r in req.app.store.all("SELECT * FROM task_grants WHERE agent_id = ? AND revoked_at IS NULL AND"
                                         " expires_at > ? ORDER BY id", req.principal.user["id"], now())
            if (mcp or name in json.loads(r["resources"])) and r["task"] == params["task"]]
    if not rows:
        return refuse_exchange(req, "mint_task_token", name, "no live task grant of yours for %s covers %s" % (
            params["task"], name or mcp))
    if len(rows) > 1:
        return oauth_answer(req, {"error": "invalid_request", "error_description": "several task grants for %s "
                                  "cover %s" % (params["task"], name or mcp)}, 400)
    find_grant(req, rows[0]["public_id"], "mint_task_token")
    return exchanged(req, issue_task_token(req, rows[0], asked, resource=mcp))


def session_exchange(req, name, asked, resource=None):
    """An agent session token: the agent's standing access (invites, teams, collaborators), for an
    hour, for the one repository named (or, for this server, any), from the agent's own token; for
    the MCP endpoint alone when ``resource`` is its URL."""
    store, agent = req.app.store, req.principal.user
    standing = Principal(user=agent, token_id=0, token_kind="session", scopes=expand_scopes(AGENT_SCOPES))
    name_delegator(store, standing)
    repo = repo_by_full_name(store, strip_kind(name, "repo")) if name else None
    if name and (repo is None or not decide(store, standing, "read_code", Resource.repo(repo)).allowed):
        return refuse_exchange(req, "mint_session_token", name, "no standing access of %s covers %s" % (
            agent["login"], name))
    req.authorize("mint_session_token", Resource.account(agent),
                  site_requires_certificates=req.app.config.require_runtime_certificates)
    given = sorted(set(AGENT_SCOPES) & set(asked if asked is not None else AGENT_SCOPES))
    expires_at, cnf = from_now(SESSION_TOKEN_SECONDS), req.principal.confirmation()
    with req.transaction() as db:
        token, _ = issue_token(db, req.app.key, agent["id"], "session", name="agent session", scopes=given,
                               expires_at=expires_at, issued_by=bound_human_id(store, agent["id"]),
                               audience=[name] if name else None, resource=resource, cnf=cnf,
                               runtime=req.principal.runtime_id)
        remember_runtime_certificate(db, req.principal)
        req.effect("agent session token %s for %s until %s%s" % (token_fingerprint(token), name or "any repository",
                                                                 expires_at, bound_to(cnf)))
    return exchanged(req, {"token": token, "expires_at": expires_at, "scope": " ".join(given),
                           "decision": "allow_narrowed" if asked is not None and set(asked) - set(given) else "allow",
                           "audience": [name] if name else None})


def refuse_exchange(req, action, resource, reason):
    """RFC 8707's invalid_target for a resource the agent holds nothing on, audited as the denial it is."""
    req.refuse(action, resource or "site", [reason])
    return oauth_answer(req, {"error": "invalid_target", "error_description": reason}, 400)


def exchanged(req, minted):
    """The token endpoint's answer for an exchanged token (RFC 8693 section 2.2.1), with agentgit's decision."""
    expires_in = int((parse_time(minted["expires_at"]) - datetime.datetime.now(datetime.timezone.utc)).total_seconds())
    shown = {k: v for k, v in minted.items() if k not in ("token", "expires_at", "token_type") and v is not None}
    return oauth_answer(req, dict(shown, access_token=minted["token"], issued_token_type=ACCESS_TOKEN_TYPE,
                                  token_type="DPoP" if minted.get("token_type") == "DPoP" else "bearer",
                                  expires_in=expires_in))


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
        Ledger(req.app, Principal(user=human, runtime=req.client), "oauth").record(
            "issue_token", "user:" + human["login"], ["device code approved by %s" % human["login"]],
            "oauth token %s for %s, scopes %s" % (token_fingerprint(token), fresh["client_id"],
                                                  ",".join(scopes) or "(none)"), db)
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


def pkce_s256(verifier):
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def authorize_request(req, params):
    """The app and the checked parameters of an authorization request. Until the client and its
    redirect URI are known good, errors are shown here and never redirected (RFC 6749 §4.1.2.1)."""
    app_row = find_client(req, params.get("client_id", ""))
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
    elif params.get("resource") and our_resource(req, params["resource"]) is None:
        problem = ("invalid_target", "resource must be %s or %s/mcp" % (req.app.url, req.app.url))
    return app_row, redirect_uri, problem


def our_resource(req, resource):
    """RFC 8707: the resource identifier as this server names it (its URL, or its /mcp endpoint's), or
    None for one that is not this server's."""
    wanted = resource.rstrip("/")
    return wanted if wanted in (req.app.url, req.app.url + "/mcp") else None


CLIENT_KINDS = {"owned": "registered by %s", "dynamic": "registered by itself: nobody vouches for it",
                "metadata_document": "described by its own document at %s"}


def client_description(req, app_row):
    """Who stands behind a client, for the consent page."""
    if app_row["kind"] == "owned":
        owner = account_by_id(req.app.store, app_row["owner_id"])
        return CLIENT_KINDS["owned"] % (owner["login"] if owner else "a deleted account")
    if app_row["kind"] == "metadata_document":
        return CLIENT_KINDS["metadata_document"] % urllib.parse.urlsplit(app_row["client_id"]).hostname
    return CLIENT_KINDS["dynamic"]


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
                                                                  "response_type", "resource"))
    buttons = "".join('<form method="post" action="/login/oauth/authorize">%s%s%s<button>%s</button></form>' % (
        hidden_input("csrf", req.session["csrf"]), fields, hidden_input("decision", d), d.title()) for d in ("approve", "deny"))
    resource = our_resource(req, req.query["resource"]) if req.query.get("resource") else req.app.url
    body = ("<p><strong>%s</strong> (%s) asks to act as <strong>%s</strong> on %s with the scopes: %s.</p>"
            "<p>It will return to %s.</p>%s") % (claimed_name(app_row["name"]), html.escape(client_description(
                req, app_row)), html.escape(user["login"]), html.escape(resource),
                html.escape(", ".join(scopes) or "none (public read-only)"), html.escape(redirect_uri), buttons)
    return html_page("Authorize application", body, headers={
        "Content-Security-Policy": csp_allowing_form_redirect_to(redirect_uri)})


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
                                       "challenge": form["code_challenge"], "expires_at": from_now(AUTH_CODE_SECONDS),
                                       "resource": our_resource(req, form["resource"]) if form.get("resource") else None})
        req.effect("authorized %s for scopes %s" % (app_row["client_id"], ",".join(scopes) or "(none)"))
    return redirect_back(req, redirect_uri, {"code": code}, state)


def issue_oauth_pair(db, req, app_row, user_id, scopes, family, resource):
    """An access token (hours) for ``resource`` (None: this server's API and its MCP endpoint alike)
    and a refresh token in ``family``; returns the token response."""
    token, token_id = issue_token(db, req.app.key, user_id, "oauth", name="oauth app " + app_row["client_id"],
                                  scopes=scopes, expires_at=from_now(OAUTH_ACCESS_HOURS * 3600), resource=resource)
    refresh = "agr_" + secrets.token_hex(24)
    insert_row(db, "oauth_refresh_tokens", {"hash": token_hash(refresh), "family": family, "app_id": app_row["id"],
                                            "user_id": user_id, "scopes": ",".join(scopes), "access_id": token_id,
                                            "created_at": now(), "resource": resource})
    user = account_by_id(req.app.store, user_id)
    Ledger(req.app, Principal(user=user, runtime=req.client), "oauth").record(
        "issue_token", "user:" + user["login"], ["authorized app %s" % app_row["client_id"]],
        "oauth token %s, refresh family %s" % (token_fingerprint(token), family[:12]), db)
    return {"access_token": token, "token_type": "bearer", "scope": " ".join(scopes),
            "expires_in": OAUTH_ACCESS_HOURS * 3600, "refresh_token": refresh}


def revoke_family(db, family):
    """Every access token a refresh family produced, and the family itself."""
    db.execute("UPDATE tokens SET revoked_at = ? WHERE revoked_at IS NULL AND id IN (SELECT access_id FROM"
               " oauth_refresh_tokens WHERE family = ?)", (now(), family))
    db.execute("UPDATE oauth_refresh_tokens SET used_at = COALESCE(used_at, ?) WHERE family = ?", (now(), family))


def code_grant(req, params):
    app_row = authenticated_client(req, params)
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
        if params.get("resource") and our_resource(req, params["resource"]) != row["resource"]:
            return oauth_answer(req, {"error": "invalid_target", "error_description": "resource differs from the one "
                                                                                      "authorized"}, 400)
        family = secrets.token_hex(16)
        db.execute("UPDATE oauth_codes SET consumed_at = ?, family = ? WHERE id = ?", (now(), family, row["id"]))
        answer = issue_oauth_pair(db, req, app_row, row["user_id"], [s for s in row["scopes"].split(",") if s], family,
                                  row["resource"])
    return oauth_answer(req, answer)


def refresh_grant(req, params):
    """Rotation with reuse detection: each refresh token works once; presenting a used one again
    revokes its whole family, since one of the two presenters is not the client."""
    app_row = authenticated_client(req, params)
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
        if params.get("resource") and our_resource(req, params["resource"]) != row["resource"]:
            return oauth_answer(req, {"error": "invalid_target", "error_description": "resource differs from the one "
                                                                                      "authorized"}, 400)
        answer = issue_oauth_pair(db, req, app_row, row["user_id"], [s for s in row["scopes"].split(",") if s],
                                  row["family"], row["resource"])
    return oauth_answer(req, answer)


@route("GET", "/.well-known/oauth-authorization-server", "oauth", "none")
@route("GET", "/.well-known/openid-configuration", "oauth", "none")
def authorization_server_metadata(req):
    """RFC 8414 (and the OpenID discovery path clients also try), its issuer exactly this server's URL."""
    url = req.app.url
    return {"issuer": url, "authorization_endpoint": url + "/login/oauth/authorize",
            "token_endpoint": url + "/login/oauth/access_token",
            "device_authorization_endpoint": url + "/login/device/code", "registration_endpoint": url + "/register",
            "introspection_endpoint": url + "/login/oauth/introspect", "revocation_endpoint": url + "/login/oauth/revoke",
            "response_types_supported": ["code"], "response_modes_supported": ["query"],
            "code_challenge_methods_supported": ["S256"],
            "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials",
                                      "urn:ietf:params:oauth:grant-type:device_code", TOKEN_EXCHANGE],
            "token_endpoint_auth_methods_supported": list(AUTH_METHODS) + ["private_key_jwt"],
            "token_endpoint_auth_signing_alg_values_supported": ["RS256"],
            "introspection_endpoint_auth_methods_supported": ["bearer"] + list(AUTH_METHODS[1:]),
            "revocation_endpoint_auth_methods_supported": list(AUTH_METHODS),
            "scopes_supported": [s for s in ALL_SCOPES if s != "site_admin"],
            "authorization_response_iss_parameter_supported": True, "client_id_metadata_document_supported": True}


# -- introspection and revocation ---------------------------------------------------------------

NOBODY_ASKS = (401, {"error": "invalid_client", "error_description": "authenticate: a bearer token or the client's"
                                                                   " credentials"}, {"WWW-Authenticate": "Bearer"})


def token_asker(req, params, public_clients):
    """Who asks about a token at introspection or revocation: an OAuth client by its credentials
    (a public one by its client_id alone where ``public_clients``: revocation), or an account by its
    bearer token. None: nobody."""
    header = req.headers.get("Authorization") or ""
    if header.lower().startswith(("bearer ", "token ")):
        try:
            principal = authenticate(req.app, req.headers, req.client)
        except HTTPError:
            return None
        if principal.resource not in (None, req.app.url):     # a token for the MCP endpoint is none here (RFC 8707)
            return None
        req.principal = principal
        req.check("read_account", Resource.account(principal.user))     # a suspended account asks nothing
        return {"principal": principal}
    client = authenticated_client(req, params)
    return {"client": client} if client is not None and (public_clients or client["secret_hash"]) else None


def token_facts(req, token):
    """What the server knows of a live token: its row, the OAuth client it was issued to (if one), its
    account and, for a task token, its grant. None for a forged, unknown, revoked or expired one."""
    row = verify_token(req.app.store, req.app.key, token) if isinstance(token, str) else None
    if row is None:
        return None
    client = req.app.store.one("SELECT a.* FROM oauth_refresh_tokens r JOIN oauth_apps a ON a.id = r.app_id"
                               " WHERE r.access_id = ?", row["id"])
    return {"row": row, "client": client, "user": account_by_id(req.app.store, row["user_id"]),
            "grant": load_grant(req.app.store, row["grant_id"]) if row["grant_id"] else None}


def may_ask(asker, facts):
    """The token's own account, its agent's human (the grant's delegator or its issuer), a site admin,
    or the client it was issued to, may ask about it; nobody else learns it exists."""
    if "client" in asker:
        return facts["client"] is not None and facts["client"]["id"] == asker["client"]["id"]
    user = asker["principal"].user
    grant = facts["grant"]
    return user is not None and (user["site_admin"] or user["id"] in (
        facts["row"]["user_id"], facts["row"]["issued_by"], grant and grant["delegator_id"]))


@route("POST", "/login/oauth/introspect", "oauth", "client")
def introspect(req):
    """RFC 7662, for every kind of token agentgit issues: active, scope, aud, exp, sub (the account;
    for a task token the agent), cnf (a bound token's certificate or key), and agentgit's chain:
    user_kind, delegator, task, grant, the runtime that minted it."""
    params = oauth_params(req)
    asker = token_asker(req, params, public_clients=False)
    if asker is None:
        return NOBODY_ASKS
    facts = token_facts(req, params.get("token"))
    if facts is None or not may_ask(asker, facts):
        return 200, {"active": False}
    row, user, grant = facts["row"], facts["user"], facts["grant"]
    cnf = json.loads(row["cnf"]) if row["cnf"] else None
    answer = {"active": True, "token_type": "DPoP" if cnf and "jkt" in cnf else "bearer", "token_kind": row["kind"],
              "iss": req.app.url,
              "sub": user["login"], "username": user["login"], "user_kind": user["kind"],
              "scope": " ".join(s for s in row["scopes"].split(",") if s),
              "aud": row["resource"] or [req.app.url, req.app.url + "/mcp"],
              "iat": int(parse_time(row["created_at"]).timestamp())}
    if row["expires_at"]:
        answer["exp"] = int(parse_time(row["expires_at"]).timestamp())
    if cnf:
        answer["cnf"] = cnf          # RFC 8705 §3.2, RFC 9449 §6.2: what the token is bound to
    if row["runtime"]:
        answer["runtime"] = row["runtime"]
    if facts["client"] is not None:
        answer["client_id"] = facts["client"]["client_id"]
    if grant is not None:
        answer.update(delegator=grant["delegator_login"], task=grant["task"], grant=grant["public_id"],
                      act=act_claim(grant))
    elif row["issued_by"]:
        issuer = account_by_id(req.app.store, row["issued_by"])
        answer["delegator"] = issuer["login"] if issuer else None
    return 200, answer


@route("POST", "/login/oauth/revoke", "oauth", "client")
def revoke_endpoint(req):
    """RFC 7009: an access token, or a refresh token with its whole family. The answer is 200 whether
    or not the token existed, so it tells nobody anything; only who may ask about a token revokes it."""
    params = oauth_params(req)
    asker = token_asker(req, params, public_clients=True)
    if asker is None:
        return NOBODY_ASKS
    token = params.get("token", "")
    with req.app.store.transaction() as db:
        refresh = db.execute("SELECT * FROM oauth_refresh_tokens WHERE hash = ?", (token_hash(token),)).fetchone()
        if refresh is not None and "client" in asker and asker["client"]["id"] == refresh["app_id"] or \
                refresh is not None and "principal" in asker and asker["principal"].user is not None and \
                asker["principal"].user["id"] == refresh["user_id"]:
            revoke_family(db, refresh["family"])
            Ledger(req.app, Principal(runtime=req.client), "oauth").record(
                "revoke_token", "user:%d" % refresh["user_id"], ["RFC 7009 revocation"],
                "refresh family %s revoked" % refresh["family"][:12], db)
    facts = token_facts(req, token)
    if facts is not None and may_ask(asker, facts):
        with req.app.store.transaction() as db:
            db.execute("UPDATE tokens SET revoked_at = ? WHERE id = ?", (now(), facts["row"]["id"]))
            Ledger(req.app, Principal(user=facts["user"], runtime=req.client), "oauth").record(
                "revoke_token", "user:" + facts["user"]["login"], ["RFC 7009 revocation"],
                "token %s revoked" % facts["row"]["fingerprint"], db)
    return 200, {}


@route("GET", "/.well-known/oauth-protected-resource", "oauth", "none")
def protected_resource_metadata(req):
    """RFC 9728: where a client finds the authorization server for this API."""
    return {"resource": req.app.url, "authorization_servers": [req.app.url], "bearer_methods_supported": ["header"],
            "scopes_supported": [s for s in ALL_SCOPES if s != "site_admin"]}
