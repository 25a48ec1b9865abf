"""An agent's keys are credentials like its token. The story of a leak: someone holds alice's agent's token
for a minute and registers a key of their own. Bound to alice, the key signs nothing until she approves
it; she sees it (API and page) and deletes it; and had she approved it, every way of revoking the agent
(reset, revocation by agent, by delegator, by organization, unbind, retirement) takes its keys with its
tokens. Then the assertions themselves: keys bounded before any arithmetic, the key named when there are
several, every claim typed, and failed assertions counted until they are refused unverified."""
import re
import secrets
import time
import urllib.parse

import pytest

import agentgit
from conftest import Browser, alice_and_her_agent, api, call, ext, patch_everywhere

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def rsa_key(bits=2048, exponent=65537, kid="k1"):
    """A fresh RSA key: (its private key object, its public JWK)."""
    from cryptography.hazmat.primitives.asymmetric import rsa
    key = rsa.generate_private_key(public_exponent=exponent, key_size=bits)
    numbers = key.public_key().public_numbers()
    return key, {"kty": "RSA", "n": agentgit.b64url(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
                 "e": agentgit.b64url(numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")), "kid": kid}


def assertion(server, login, key, kid="k1", **claims):
    import jwt
    body = dict({"iss": login, "sub": login, "aud": server.url, "jti": secrets.token_hex(8),
                 "iat": int(time.time()), "exp": int(time.time()) + 120}, **claims)
    return jwt.encode(body, key, algorithm="RS256", headers={"kid": kid} if kid else None)


def token_by_key(server, signed):
    """client_credentials with an assertion: the token endpoint's answer."""
    return call(server, "POST", "/login/oauth/access_token", headers={
        "Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"},
        raw_body=urllib.parse.urlencode({"grant_type": "client_credentials", "client_assertion": signed,
                                         "client_assertion_type": JWT_BEARER}).encode())


def test_a_key_registered_with_a_leaked_token_waits_for_the_human_who_sees_and_deletes_it(server):
    alice, login, agent = alice_and_her_agent(server)
    key, jwk = rsa_key()
    registered = ext(server, "POST", "/agent-keys", agent, {"jwk": jwk})
    assert registered.status == 201 and registered.json["state"] == "pending"
    assert registered.json["approve_at"] == server.url + "/settings/agents"
    refused = token_by_key(server, assertion(server, login, key))
    assert refused.status == 401 and "no key approved" in refused.json["error_description"]
    row = server.app.store.one("SELECT * FROM audit WHERE action = 'register_agent_key' ORDER BY id DESC")
    assert "credentials changed" in row["side_effect"] and "pending alice's approval" in row["side_effect"]
    # alice sees it, over the API and on her agent's page, and deletes it there
    listed = ext(server, "GET", "/agent-bindings/%s/keys" % login, alice).json
    assert [(k["kid"], k["state"]) for k in listed] == [("k1", "pending")]
    assert ext(server, "GET", "/agent-bindings/%s/keys" % login, agent).status == 403      # not the agent's to see so
    browser = Browser(server)
    browser.sign_in("alice", "pw")
    _, page = browser.request("GET", "/settings/agents")
    assert "key <code>k1</code>" in page and "pending your approval" in page
    _, confirm = browser.request("POST", "/settings/agents", {"csrf": browser.csrf(page), "action": "delete-key",
                                                              "agent": login, "kid": "k1"})
    assert "Delete the key k1 of %s?" % login in confirm
    resp, page = browser.request("POST", "/settings/agents", {"csrf": browser.csrf(confirm), "action": "delete-key",
                                                              "agent": login, "kid": "k1", "confirmed": "yes"})
    assert resp.status == 200 and "Deleted the key k1" in page
    assert ext(server, "GET", "/agent-bindings/%s/keys" % login, alice).json == []
    # approved on the page, a key signs
    key, jwk = rsa_key(kid="k2")
    assert ext(server, "POST", "/agent-keys", agent, {"jwk": jwk}).status == 201
    _, page = browser.request("GET", "/settings/agents")
    resp, page = browser.request("POST", "/settings/agents", {"csrf": browser.csrf(page), "action": "approve-key",
                                                              "agent": login, "kid": "k2"})
    assert "Approved the key k2" in page and token_by_key(server, assertion(server, login, key, "k2")).status == 200


def bound_agent_with_an_approved_key(server, alice, login, agent, kid="k1"):
    key, jwk = rsa_key(kid=kid)
    assert ext(server, "POST", "/agent-keys", agent, {"jwk": jwk}).status == 201
    assert ext(server, "POST", "/agent-bindings/%s/keys/%s/approve" % (login, kid), alice).json["state"] == "active"
    assert token_by_key(server, assertion(server, login, key, kid)).status == 200
    return key


@pytest.mark.parametrize("revocation", ["reset", "agent", "delegator", "org", "unbind", "retire"])
def test_every_revocation_of_an_agent_takes_its_keys_with_its_tokens(server, revocation):
    alice = server.add_user("alice", password="pw")
    assert ext(server, "POST", "/user/orgs", alice, {"login": "acme"}).status == 201
    assert api(server, "POST", "/orgs/acme/repos", alice, {"name": "tools"}).status == 201
    login, agent, _ = server.add_agent("coder")
    invite = ext(server, "POST", "/agent-invites", alice, {"repo_grants": [
        {"repo_full_name": "acme/tools", "permission": "push"}]}).json["invite_token"]
    assert ext(server, "POST", "/agent-bindings/confirm", agent, {"invite_token": invite}).status == 201
    key = bound_agent_with_an_approved_key(server, alice, login, agent)
    answer = {"reset": lambda: ext(server, "POST", "/agent-bindings/%s/reset-token" % login, alice),
              "agent": lambda: ext(server, "POST", "/revocations", alice, {"agent": login}),
              "delegator": lambda: ext(server, "POST", "/revocations", alice, {"delegator": "alice"}),
              "org": lambda: ext(server, "POST", "/revocations", alice, {"org": "acme"}),
              "unbind": lambda: ext(server, "DELETE", "/agent-bindings/" + login, alice),
              "retire": lambda: ext(server, "DELETE", "/agents/" + login, alice)}[revocation]()
    assert answer.status in (200, 201, 204), answer
    if revocation in ("agent", "delegator", "org", "reset"):
        assert answer.json["keys_revoked"] == 1
    refused = token_by_key(server, assertion(server, login, key))
    assert refused.status == 401, (revocation, refused)
    assert server.app.store.one("SELECT COUNT(*) FROM agent_keys")[0] == 0


@pytest.mark.parametrize("bits, exponent, why", [(1024, 65537, "at least"), (2048, 3, "e = 65537"),
                                                 (2560, 65537, "2048, 3072 or 4096")])
def test_a_key_out_of_bounds_is_refused_when_registered(server, bits, exponent, why):
    login, agent, _ = server.add_agent("runner")
    _, jwk = rsa_key(bits, exponent)
    refused = ext(server, "POST", "/agent-keys", agent, {"jwk": jwk})
    assert refused.status == 422, refused
    assert re.search(why.replace("at least", "2048"), refused.json["errors"][0]["message"]), refused.json


def test_an_unbound_agent_s_key_is_active_at_once_and_several_keys_need_a_kid(server):
    login, agent, _ = server.add_agent("runner")
    first, jwk = rsa_key(kid="k1")
    assert ext(server, "POST", "/agent-keys", agent, {"jwk": jwk}).json["state"] == "active"
    assert token_by_key(server, assertion(server, login, first, kid=None)).status == 200      # one key: no kid needed
    _, jwk = rsa_key(kid="k2")
    assert ext(server, "POST", "/agent-keys", agent, {"jwk": jwk}).status == 201
    refused = token_by_key(server, assertion(server, login, first, kid=None))
    assert refused.status == 401 and "kid" in refused.json["error_description"]
    assert token_by_key(server, assertion(server, login, first, kid="k1")).status == 200


def test_claims_of_the_wrong_type_are_refused_not_a_server_error(server):
    """json.loads reads NaN; a NaN iat made every comparison false, so the lifetime cap did not hold."""
    login, agent, _ = server.add_agent("runner")
    key, jwk = rsa_key()
    assert ext(server, "POST", "/agent-keys", agent, {"jwk": jwk}).status == 201

    def signed_raw(header, claims_json):
        head = agentgit.b64url(header.encode())
        body = agentgit.b64url(claims_json.encode())
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding
        signature = key.sign(("%s.%s" % (head, body)).encode(), padding.PKCS1v15(), hashes.SHA256())
        return "%s.%s.%s" % (head, body, agentgit.b64url(signature))
    now = int(time.time())
    base = '"iss": "%s", "sub": "%s", "aud": "%s", "jti": "%s"' % (login, login, server.url, secrets.token_hex(8))
    for header, claims, why in (
            ('{"alg": "RS256", "kid": "k1"}', '{%s, "iat": NaN, "exp": %d}' % (base, now + 10 ** 6), "current"),
            ('{"alg": "RS256", "kid": "k1"}', '{%s, "exp": Infinity}' % base, "current"),
            ('{"alg": "RS256", "kid": 7}', '{%s, "exp": %d}' % (base, now + 60), "kid"),
            ('{"alg": "RS256", "kid": "k1"}', '{%s, "exp": %d}' % (base.replace('"aud": "%s"' % server.url, '"aud": [1]'),
                                                                   now + 60), "aud"),
            ('{"alg": "RS256", "kid": "k1"}', '{%s, "exp": true}' % base, "current")):
        refused = token_by_key(server, signed_raw(header, claims))
        assert refused.status == 401 and why in refused.json["error_description"], (claims, refused)


def test_failed_assertions_are_counted_and_then_refused_before_any_signature_is_checked(server, monkeypatch):
    login, agent, _ = server.add_agent("runner")
    key, jwk = rsa_key()
    assert ext(server, "POST", "/agent-keys", agent, {"jwk": jwk}).status == 201
    other, _ = rsa_key()
    verified = []
    real = agentgit.rs256_valid

    def counting(*args):
        verified.append(1)
        return real(*args)
    patch_everywhere(monkeypatch, "rs256_valid", counting)
    for _ in range(agentgit.FAILED_PROOFS_PER_MINUTE):
        assert token_by_key(server, assertion(server, login, other)).status == 401
    assert len(verified) == agentgit.FAILED_PROOFS_PER_MINUTE
    refused = token_by_key(server, assertion(server, login, key))           # even a good one, for now
    assert refused.status == 401 and "too many failed client assertions" in refused.json["error_description"]
    assert len(verified) == agentgit.FAILED_PROOFS_PER_MINUTE                 # refused unverified
