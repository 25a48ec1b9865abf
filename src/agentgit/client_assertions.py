"""Agents as confidential OAuth clients: public keys on an agent's account, and the signed JWTs
(RFC 7523 client assertions) that prove the agent holds the private half.

An agent registers an RSA public key (a JWK: kty RSA, n of 2048, 3072 or 4096 bits, e 65537) with its
own token. A key is a credential of the agent like its token: a bound agent's key signs nothing until
its human approves it (she sees, approves and deletes her agent's keys on its page and through the API),
and every revocation of the agent's credentials deletes its keys (delegation.revoke_agent_credentials).
From then on its runtime may hold that private key instead of a bearer secret: the client_credentials
grant with ``client_assertion_type`` jwt-bearer and a JWT it signed with RS256, whose iss and sub are
the agent's login (its client_id), whose aud is this server (its issuer or its token endpoint), which
expires within ASSERTION_MAX_SECONDS, whose jti is used once, and whose header names the key (``kid``)
when the agent has several. Every claim is checked, with its exact type, before the signature; failed
assertions are counted per address and per agent, and past the limit refused before any arithmetic.
"""

import json
import math
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
from agentgit.delegation import bound_agent

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_MAX_SECONDS = 600          # an assertion lives at most ten minutes
CLOCK_SKEW_SECONDS = 60
MAX_KEYS = 10
ASSERTION_MAX_BYTES = 16384           # an RS256 JWT of the largest key allowed, with room for its claims
def key_json(row):
    return {"kid": row["kid"], "jwk": json.loads(row["jwk"]), "created_at": row["created_at"],
            "state": "active" if row["approved_at"] else "pending"}


@route("POST", "/api/ext/v1/agent-keys")
def register_agent_key(req):
    """The agent, with its own token, registers an RSA public key (a JWK) for client assertions. A bound
    agent's key is pending until its human approves it: whoever held the agent's token for a minute
    could otherwise keep a way in that outlives every reset of it."""
    agent = signed_in(req)
    req.authorize("register_agent_key", Resource.account(agent))
    jwk = req.field(req.json(), "jwk", dict, "AgentKey", required=True)
    try:
        n, e = rsa_public_key(jwk)
    except ValueError as error:
        raise invalid("AgentKey", "jwk", message="the key must be %s" % error)
    if (n.bit_length(), e) not in ((2048, 65537), (3072, 65537), (4096, 65537)):
        raise invalid("AgentKey", "jwk", message="the key must be of 2048, 3072 or 4096 bits with e = 65537")
    public = {"kty": "RSA", "n": jwk["n"], "e": jwk["e"], "alg": "RS256", "use": "sig"}
    kid = jwk.get("kid") if isinstance(jwk.get("kid"), str) and re.fullmatch(r"[\w.-]{1,64}", jwk["kid"]) else \
        "k_" + secrets.token_hex(6)
    human = bound_human(req.app.store, agent["id"])
    with req.transaction() as db:
        if db.execute("SELECT COUNT(*) FROM agent_keys WHERE agent_id = ?", (agent["id"],)).fetchone()[0] >= MAX_KEYS:
            raise invalid("AgentKey", "jwk", "custom", "an agent has at most %d keys" % MAX_KEYS)
        if db.execute("SELECT 1 FROM agent_keys WHERE agent_id = ? AND kid = ?", (agent["id"], kid)).fetchone():
            raise invalid("AgentKey", "kid", "already_exists", "this agent has a key %s" % kid)
        insert_row(db, "agent_keys", {"agent_id": agent["id"], "kid": kid, "jwk": json.dumps(public),
                                      "created_at": now(), "approved_at": None if human else now()})
        req.effect("agent %s's credentials changed: RSA key %s (%d bits) registered for client assertions%s" % (
            agent["login"], kid, n.bit_length(), ", pending %s's approval" % human["login"] if human else ""))
    answer = key_json(req.app.store.one("SELECT * FROM agent_keys WHERE agent_id = ? AND kid = ?", agent["id"], kid))
    if human:
        answer["approve_at"] = "%s/settings/agents" % req.app.url
    return 201, answer


def bound_human(store, agent_id):
    return store.one("SELECT a.* FROM agent_bindings b JOIN accounts a ON a.id = b.human_id WHERE b.agent_id = ?",
                     agent_id)


@route("GET", "/api/ext/v1/agent-keys")
def list_agent_keys(req):
    """The agent's public keys, with its own token."""
    agent = signed_in(req)
    req.check("register_agent_key", Resource.account(agent))
    return [key_json(r) for r in keys_of(req.app.store, agent["id"])]


def keys_of(store, agent_id):
    return store.all("SELECT * FROM agent_keys WHERE agent_id = ? ORDER BY id", agent_id)


@route("DELETE", "/api/ext/v1/agent-keys/{kid}")
def delete_agent_key(req, kid):
    """The agent retires a key: assertions it signed are refused from then on."""
    agent = signed_in(req)
    req.authorize("register_agent_key", Resource.account(agent))
    with req.transaction() as db:
        delete_key(req, db, agent, kid)
    return 204, None


def delete_key(req, db, agent, kid):
    if not db.execute("DELETE FROM agent_keys WHERE agent_id = ? AND kid = ?", (agent["id"], kid)).rowcount:
        raise HTTPError(404, "Not Found")
    req.effect("agent %s's credentials changed: key %s deleted" % (agent["login"], kid))


# -- the bound human's view of her agent's keys ----------------------------------------------------

@route("GET", "/api/ext/v1/agent-bindings/{login}/keys")
def list_bound_agent_keys(req, login):
    """The keys of the caller's agent, active and pending."""
    agent, _ = bound_agent(req, login, "read_agent")
    return [key_json(r) for r in keys_of(req.app.store, agent["id"])]


@route("POST", "/api/ext/v1/agent-bindings/{login}/keys/{kid}/approve")
def approve_bound_agent_key(req, login, kid):
    """The human lets her agent's pending key sign client assertions."""
    agent, _ = bound_agent(req, login)
    with req.transaction() as db:
        approve_key(req, db, agent, kid)
    return key_json(req.app.store.one("SELECT * FROM agent_keys WHERE agent_id = ? AND kid = ?", agent["id"], kid))


def approve_key(req, db, agent, kid):
    if not db.execute("UPDATE agent_keys SET approved_at = ?, approved_by = ? WHERE agent_id = ? AND kid = ? AND"
                      " approved_at IS NULL", (now(), req.principal.user["id"], agent["id"], kid)).rowcount:
        raise HTTPError(404, "Not Found: %s has no pending key %s" % (agent["login"], kid))
    req.effect("agent %s's credentials changed: key %s approved" % (agent["login"], kid))


@route("DELETE", "/api/ext/v1/agent-bindings/{login}/keys/{kid}")
def delete_bound_agent_key(req, login, kid):
    """The human deletes a key of her agent, pending or active."""
    agent, _ = bound_agent(req, login)
    with req.transaction() as db:
        delete_key(req, db, agent, kid)
    return 204, None


# -- client assertions -----------------------------------------------------------------------------

def asserted_agent(req, params):
    """The agent whose client assertion this token request carries, once its signature, claims and
    single use are checked; (agent row, kid) or a ValueError that says what is wrong."""
    if params.get("client_assertion_type") != JWT_BEARER:
        raise ValueError("client_assertion_type must be %s" % JWT_BEARER)
    retry = req.app.failed_proofs.wait("address:" + req.client)
    if retry:
        raise ValueError("too many failed client assertions from this address; retry in %d s" % retry)
    try:
        header, claims, signing_input, signature = decode_jws(params.get("client_assertion"), ASSERTION_MAX_BYTES)
    except ValueError as error:
        raise ValueError("client_assertion is %s" % error)
    agent, key = asserted_key(req, params, header, claims)
    if not rs256_valid(*rsa_public_key(json.loads(key["jwk"])), signing_input, signature):
        for who in ("address:" + req.client, "agent:%d" % agent["id"]):
            req.app.failed_proofs.hit(who)
        raise ValueError("the signature does not verify with %s's key %s" % (agent["login"], key["kid"]))
    jti, exp = claims["jti"], claims["exp"]
    with req.app.store.transaction() as db:
        db.execute("DELETE FROM assertion_ids WHERE expires_at < ?", (int(time.time()) - CLOCK_SKEW_SECONDS,))
        if db.execute("INSERT INTO assertion_ids (agent_id, jti, expires_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                      (agent["id"], jti, int(exp))).rowcount == 0:
            raise ValueError("this assertion was used already (jti %s)" % jti[:40])
    return agent, key["kid"]


def finite_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def asserted_key(req, params, header, claims):
    """(agent, key) an assertion says it is signed by, once every claim is checked with its exact type,
    all before any arithmetic: ValueError saying what is wrong."""
    if header.get("alg") != "RS256" or not isinstance(header.get("kid", ""), str):
        raise ValueError("client_assertion must be signed with RS256 (its kid, if any, a string)")
    login = claims.get("iss")
    agent = account_by_login(req.app.store, login) if isinstance(login, str) and len(login) <= 100 else None
    if agent is None or agent["kind"] != "agent" or claims.get("sub") != login or \
            params.get("client_id", login) != login:
        raise ValueError("iss and sub must both be the agent's login, its client_id")
    audiences = claims.get("aud") if isinstance(claims.get("aud"), list) else [claims.get("aud")]
    if not all(isinstance(a, str) for a in audiences) or not set(audiences) & {
            req.app.url, req.app.url + "/", req.app.url + "/login/oauth/access_token"}:
        raise ValueError("aud must be this server's issuer, %s" % req.app.url)
    moment = time.time()
    exp, iat = claims.get("exp"), claims.get("iat", moment)
    if not finite_number(exp) or not finite_number(iat) or exp <= moment - CLOCK_SKEW_SECONDS or \
            exp - min(iat, moment) > ASSERTION_MAX_SECONDS or iat > moment + CLOCK_SKEW_SECONDS:
        raise ValueError("the assertion must be current and live at most %d seconds" % ASSERTION_MAX_SECONDS)
    jti = claims.get("jti")
    if not isinstance(jti, str) or not 8 <= len(jti) <= 200:
        raise ValueError("the assertion needs a jti")
    retry = req.app.failed_proofs.wait("agent:%d" % agent["id"])
    if retry:
        raise ValueError("too many failed client assertions for %s; retry in %d s" % (login, retry))
    keys = [k for k in keys_of(req.app.store, agent["id"]) if k["approved_at"]]
    if not keys:
        raise ValueError("%s has no key approved for client assertions" % login)
    if len(keys) > 1 and "kid" not in header:
        raise ValueError("%s has several keys: the assertion's header names the one that signed it (kid)" % login)
    key = next((k for k in keys if k["kid"] == header.get("kid", k["kid"])), None)
    if key is None:
        raise ValueError("%s has no approved key %s" % (login, header["kid"][:64]))
    return agent, key
