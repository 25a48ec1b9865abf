"""REST: agent registration, personal tokens and the audit log (agent-first extensions)."""

import datetime
import json

from agentgit.config import AGENT_PREFIX_RE, now, parse_time, valid_repo_name
from agentgit.errors import HTTPError, invalid
from agentgit.tokens import ALL_SCOPES, issue_token, token_fingerprint
from agentgit.accounts import register_agent
from agentgit.policy import Resource, SITE
from agentgit.audit import audit_json
from agentgit.routing import route
from agentgit.lookups import signed_in


# -- agent-first extensions: registration, personal tokens, audit -------------------------------

@route("POST", "/api/ext/v1/agents")
def register_agent_endpoint(req):
    """agent-git-service's registration contract: anonymous, rate-limited per client address (`serve
    --registration-limit N`, 0 for none); a site admin's token is never counted, and registers past
    `--registration closed` too."""
    body = req.json()
    prefix = req.field(body, "prefix_login", str, "Agent", required=True)
    if not AGENT_PREFIX_RE.match(prefix):
        raise invalid("Agent", "prefix_login", message="prefix_login must match ^[a-z0-9][a-z0-9-]{0,31}$")
    repo_name = req.field(body, "default_repo_name", str, "Agent", default="workspace")
    if not valid_repo_name(repo_name):
        raise invalid("Agent", "default_repo_name", message="not a valid repository name")
    # a site admin's token registers agents however registration is set for everyone else (a harness
    # that needs fifty agents runs as the admin); the rest is anonymous, so it is counted per address
    admin = req.principal.user is not None and bool(req.principal.user["site_admin"])
    if req.app.config.registration != "open" and not admin:
        req.refuse("register_agent", "site", ["registration is closed on this server"])
        raise HTTPError(403, "Agent registration is closed on this server")
    retry_after = 0 if admin else req.app.registrations.hit(req.client)
    if retry_after:
        raise HTTPError(429, "Too many agent registrations from this address; retry later, or register with a site "
                        "admin's token (serve --registration-limit sets the limit)", headers={"Retry-After": str(retry_after)})
    req.authorize("register_agent", SITE)
    login, token, full_name = register_agent(req.app, prefix, repo_name)
    req.effect("registered agent %s with repository %s, token %s" % (login, full_name, token_fingerprint(token)))
    return 201, {"login": login, "token": token, "repo_full_name": full_name, "user_kind": "agent",
                 "clone_url": "%s/%s.git" % (req.app.url, full_name)}


def token_json(row):
    return {"id": row["id"], "name": row["name"], "kind": row["kind"],
            "scopes": [s for s in row["scopes"].split(",") if s], "fingerprint": row["fingerprint"],
            "created_at": row["created_at"], "expires_at": row["expires_at"],
            "last_used_at": row["last_used_at"], "revoked_at": row["revoked_at"]}


@route("GET", "/api/ext/v1/user/tokens")
def list_tokens(req):
    """The caller's own tokens (never their values): kind, scopes, expiry, last use."""
    user = signed_in(req)
    req.check("read_tokens", Resource.account(user))
    rows = req.app.store.all("SELECT * FROM tokens WHERE user_id = ? ORDER BY id", user["id"])
    return req.paginate([token_json(r) for r in rows])


@route("POST", "/api/ext/v1/user/tokens")
def create_token(req):
    """A new personal token for the caller, with the scopes and expiry asked; shown once."""
    body = req.json()
    user = signed_in(req)
    name = req.field(body, "name", str, "Token", required=True)
    scopes = req.field(body, "scopes", list, "Token", default=[])
    unknown = [s for s in scopes if s not in ALL_SCOPES]
    if unknown or not all(isinstance(s, str) for s in scopes):
        raise invalid("Token", "scopes", message="unknown scopes: %s" % ", ".join(map(str, unknown)))
    expires_at = req.field(body, "expires_at", str, "Token")
    if expires_at is not None:
        try:
            expires = parse_time(expires_at)
        except ValueError:
            raise invalid("Token", "expires_at", message="expires_at must be an ISO 8601 time with a zone")
        if expires <= datetime.datetime.now(datetime.timezone.utc):
            raise invalid("Token", "expires_at", message="expires_at is in the past")
        expires_at = expires.strftime("%Y-%m-%dT%H:%M:%SZ")
    token, row = mint_personal_token(req, user, name, scopes, expires_at)
    return 201, dict(token_json(row), token=token)


def mint_personal_token(req, user, name, scopes, expires_at):
    """(token, row) for the caller's own new personal token. No escalation: a token can only mint
    tokens with scopes it holds itself."""
    req.authorize("issue_token", Resource.account(user))
    beyond = [s for s in scopes if s not in req.principal.scopes]
    if beyond:
        raise HTTPError(403, "This token cannot grant scopes it does not hold: %s" % ", ".join(beyond))
    with req.transaction() as db:
        token, token_id = issue_token(db, req.app.key, user["id"], "personal", name=name, scopes=scopes,
                                      expires_at=expires_at)
        req.effect("issued personal token #%d %s" % (token_id, token_fingerprint(token)))
    return token, req.app.store.one("SELECT * FROM tokens WHERE id = ?", token_id)


@route("DELETE", "/api/ext/v1/user/tokens/{token_id:int}")
def revoke_token(req, token_id):
    """Revoke one of the caller's own tokens (404 for anyone else's)."""
    user = signed_in(req)
    row = req.app.store.one("SELECT * FROM tokens WHERE id = ? AND user_id = ?", int(token_id), user["id"])
    if row is None:
        raise HTTPError(404, "Not Found")
    revoke_own_token(req, user, row)
    return 204, None


def revoke_own_token(req, user, row):
    req.authorize("revoke_token", Resource.account(user))
    with req.transaction() as db:
        db.execute("UPDATE tokens SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?", (now(), row["id"]))
        req.effect("revoked token #%d %s" % (row["id"], row["fingerprint"]))


AUDIT_EXPLAINED = (("agent or actor", "actor"), ("kind", "user_kind"), ("acting for", "delegator"), ("task", "task"),
                   ("grant", "grant_id"), ("runtime", "runtime"), ("surface", "surface"), ("resource", "resource"),
                   ("action", "action"), ("decision", "decision"), ("rule", "rule"), ("token", "token_fingerprint"),
                   ("token kind", "token_kind"), ("side effect", "side_effect"), ("at", "at"))


def explain(row):
    """The whole chain of one decision, a line each, with the rules that decided it."""
    lines = ["%-15s %s" % (label, row[key] if row[key] is not None else "-") for label, key in AUDIT_EXPLAINED]
    lines += ["%-15s %s" % ("because" if i == 0 else "", reason) for i, reason in enumerate(json.loads(row["reasons"]))]
    return "\n".join(lines)


@route("GET", "/api/ext/v1/audit/{audit_id:int}")
def read_audit_row(req, audit_id):
    """One row, explained: for site admins, the actor, and the human on whose behalf it acted."""
    user = signed_in(req)
    row = req.app.store.one("SELECT * FROM audit WHERE id = ?", int(audit_id))
    mine = row is not None and user["login"] in (row["actor"], row["delegator"])
    if row is None or not (mine or req.can("read_site_audit", SITE)):
        raise HTTPError(404, "Not Found")
    req.check("read_audit", Resource.account(user))
    return dict(audit_json(row), explanation=explain(row))


@route("GET", "/api/ext/v1/audit")
def read_audit(req):
    """Site admins read every row; anyone else their own and those of agents acting for them (as
    delegator). Filters: actor, delegator, task, grant, action, decision, resource, surface, since (ISO
    time), after (row id)."""
    user = signed_in(req)
    where, args = [], []
    if not req.can("read_site_audit", SITE):
        req.check("read_audit", Resource.account(user))
        where.append("(actor = ? OR delegator = ?)")
        args += [user["login"], user["login"]]
    for key, column in (("actor", "actor"), ("delegator", "delegator"), ("task", "task"), ("grant", "grant_id"),
                        ("action", "action"), ("decision", "decision"), ("resource", "resource"),
                        ("surface", "surface")):
        if req.query.get(key):
            where.append("%s = ?" % column)
            args.append(req.query[key])
    if req.query.get("since"):
        where.append("at >= ?")
        args.append(req.query["since"])
    if req.query.get("after", "").isdigit():
        where.append("id > ?")
        args.append(int(req.query["after"]))
    per_page, page = req.page()
    rows = req.app.store.all("SELECT * FROM audit%s ORDER BY id LIMIT ? OFFSET ?" % (
        " WHERE " + " AND ".join(where) if where else ""), *args, per_page + 1, (page - 1) * per_page)
    req.link_header(page, per_page, page + 1 if len(rows) > per_page else None)
    return [audit_json(r) for r in rows[:per_page]]
