"""Agents as confidential OAuth clients: public keys on an agent's account, and the signed JWTs
(RFC 7523 client assertions) that prove the agent holds the private half.

An agent registers an RSA public key (a JWK: kty RSA, n, e; 2048 bits at least) with its own token.
From then on its runtime may hold that private key instead of a bearer secret: the client_credentials
grant with ``client_assertion_type`` jwt-bearer and a JWT it signed with RS256, whose iss and sub are
the agent's login (its client_id), whose aud is this server (its issuer or its token endpoint), which
expires within ASSERTION_MAX_SECONDS, and whose jti is used once. The keys are bounded and the
signatures verified by the crypto module.
"""

import json
import re
import secrets
import time

from agentgit.config import now
from agentgit.errors import HTTPError, invalid
from agentgit.crypto import decode_jws, rs256_valid, rsa_public_key
from agentgit.storage import insert_row
from agentgit.accounts import account_by_login
from agentgit.policy import Resource
from agentgit.routing import route
from agentgit.lookups import signed_in

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_MAX_SECONDS = 600          # an assertion lives at most ten minutes
CLOCK_SKEW_SECONDS = 60
MAX_KEYS = 10
ASSERTION_MAX_BYTES = 16384           # an RS256 JWT of the largest key allowed, with room for its claims
def key_json(row):
    return {"kid": row["kid"], "jwk": json.loads(row["jwk"]), "created_at": row["created_at"]}


@route("POST", "/api/ext/v1/agent-keys")
def register_agent_key(req):
    """The agent, with its own token, registers an RSA public key (a JWK) for client assertions."""
    agent = signed_in(req)
    req.authorize("register_agent_key", Resource.account(agent))
    jwk = req.field(req.json(), "jwk", dict, "AgentKey", required=True)
    try:
        n, e = rsa_public_key(jwk)
    except ValueError as error:
        raise invalid("AgentKey", "jwk", message="the key must be %s" % error)
    public = {"kty": "RSA", "n": jwk["n"], "e": jwk["e"], "alg": "RS256", "use": "sig"}
    kid = jwk.get("kid") if isinstance(jwk.get("kid"), str) and re.fullmatch(r"[\w.-]{1,64}", jwk["kid"]) else \
        "k_" + secrets.token_hex(6)
    with req.transaction() as db:
        if db.execute("SELECT COUNT(*) FROM agent_keys WHERE agent_id = ?", (agent["id"],)).fetchone()[0] >= MAX_KEYS:
            raise invalid("AgentKey", "jwk", "custom", "an agent has at most %d keys" % MAX_KEYS)
        if db.execute("SELECT 1 FROM agent_keys WHERE agent_id = ? AND kid = ?", (agent["id"], kid)).fetchone():
            raise invalid("AgentKey", "kid", "already_exists", "this agent has a key %s" % kid)
        insert_row(db, "agent_keys", {"agent_id": agent["id"], "kid": kid, "jwk": json.dumps(public),
                                      "created_at": now()})
        req.effect("registered RSA key %s (%d bits) for client assertions" % (kid, n.bit_length()))
    return 201, key_json(req.app.store.one("SELECT * FROM agent_keys WHERE agent_id = ? AND kid = ?", agent["id"], kid))


@route("GET", "/api/ext/v1/agent-keys")
def list_agent_keys(req):
    """The agent's public keys, with its own token."""
    agent = signed_in(req)
    req.check("register_agent_key", Resource.account(agent))
    return [key_json(r) for r in req.app.store.all("SELECT * FROM agent_keys WHERE agent_id = ? ORDER BY id",
                                                   agent["id"])]


@route("DELETE", "/api/ext/v1/agent-keys/{kid}")
def delete_agent_key(req, kid):
    """The agent retires a key: assertions it signed are refused from then on."""
    agent = signed_in(req)
    req.authorize("register_agent_key", Resource.account(agent))
    with req.transaction() as db:
        if not db.execute("DELETE FROM agent_keys WHERE agent_id = ? AND kid = ?", (agent["id"], kid)).rowcount:
            raise HTTPError(404, "Not Found")
        req.effect("deleted key %s" % kid)
    return 204, None


def asserted_agent(req, params):
    """The agent whose client assertion this token request carries, once its signature, claims and
    single use are checked; (agent row, kid) or a ValueError that says what is wrong."""
    if params.get("client_assertion_type") != JWT_BEARER:
        raise ValueError("client_assertion_type must be %s" % JWT_BEARER)
    try:
        header, claims, signing_input, signature = decode_jws(params.get("client_assertion"), ASSERTION_MAX_BYTES)
    except ValueError as error:
        raise ValueError("client_assertion is %s" % error)
    if header.get("alg") != "RS256":
        raise ValueError("client_assertion must be signed with RS256")
    login = claims.get("iss")
    agent = account_by_login(req.app.store, login) if isinstance(login, str) else None
    if agent is None or agent["kind"] != "agent" or claims.get("sub") != login or \
            params.get("client_id", login) != login:
        raise ValueError("iss and sub must both be the agent's login, its client_id")
    audiences = claims.get("aud") if isinstance(claims.get("aud"), list) else [claims.get("aud")]
    if not set(audiences) & {req.app.url, req.app.url + "/", req.app.url + "/login/oauth/access_token"}:
        raise ValueError("aud must be this server's issuer, %s" % req.app.url)
    moment = time.time()
    exp, iat = claims.get("exp"), claims.get("iat", moment)
    if not isinstance(exp, (int, float)) or isinstance(exp, bool) or not isinstance(iat, (int, float)) or \
            exp <= moment - CLOCK_SKEW_SECONDS or exp - min(iat, moment) > ASSERTION_MAX_SECONDS or \
            iat > moment + CLOCK_SKEW_SECONDS:
        raise ValueError("the assertion must be current and live at most %d seconds" % ASSERTION_MAX_SECONDS)
    jti = claims.get("jti")
    if not isinstance(jti, str) or not 8 <= len(jti) <= 200:
        raise ValueError("the assertion needs a jti")
    keys = req.app.store.all("SELECT * FROM agent_keys WHERE agent_id = ?" + (" AND kid = ?" if header.get("kid") else ""),
                             agent["id"], *([header["kid"]] if header.get("kid") else []))
    key = next((k for k in keys if rs256_valid(*rsa_public_key(json.loads(k["jwk"])), signing_input, signature)), None)
    if key is None:
        raise ValueError("the signature matches no key of %s" % login)
    with req.app.store.transaction() as db:
        db.execute("DELETE FROM assertion_ids WHERE expires_at < ?", (int(moment) - CLOCK_SKEW_SECONDS,))
        if db.execute("INSERT OR IGNORE INTO assertion_ids (agent_id, jti, expires_at) VALUES (?, ?, ?)",
                      (agent["id"], jti, int(exp))).rowcount == 0:
            raise ValueError("this assertion was used already (jti %s)" % jti[:40])
    return agent, key["kid"]
