"""REST: personal tokens, which a person (or an agent, for itself) creates, lists and revokes."""

import datetime

from agentgit.config import now, parse_time
from agentgit.errors import HTTPError, invalid
from agentgit.tokens import ALL_SCOPES, issue_token, token_fingerprint
from agentgit.policy import Resource
from agentgit.routing import route
from agentgit.lookups import signed_in


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
