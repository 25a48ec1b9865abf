"""The broker's vault: alice and acme keep external credentials here, sealed at rest; no endpoint, audit
row or database column shows a secret; agents cannot hold, list or change one; the sealing refuses
anything altered, moved or opened under another key."""
import json
import os

import pytest

from conftest import call, ext, grant_a_task

SECRETS = ("sk-live-0123456789", "hunter2-password", "rt-refresh-abcdef", "cs-client-secret")


def test_sealing_authenticates_and_binds():
    import agentgit
    key, other = os.urandom(32), os.urandom(32)
    sealed = agentgit.seal(key, b"broker credential", b"the secret", b"row 1")
    assert agentgit.unseal(key, b"broker credential", sealed, b"row 1") == b"the secret"
    assert b"the secret" not in sealed.encode() and sealed != agentgit.seal(key, b"broker credential", b"the secret",
                                                                             b"row 1")   # a fresh nonce each time
    raw = bytearray(agentgit.base64.urlsafe_b64decode(sealed[3:]))
    for altered in range(0, len(raw), 7):
        flipped = bytearray(raw)
        flipped[altered] ^= 1
        with pytest.raises(ValueError):
            agentgit.unseal(key, b"broker credential", "v1." + agentgit.base64.urlsafe_b64encode(bytes(flipped)).decode(),
                            b"row 1")
    for wrong in ((other, b"broker credential", sealed, b"row 1"), (key, b"totp", sealed, b"row 1"),
                  (key, b"broker credential", sealed, b"row 2"), (key, b"broker credential", sealed[:20], b"row 1"),
                  (key, b"broker credential", "v2." + sealed[3:], b"row 1")):
        with pytest.raises(ValueError):
            agentgit.unseal(*wrong)


def test_humans_keep_credentials_agents_never_see_them(server):
    w = grant_a_task(server, "task:call", ["read_code"], {"network_allowlist": ["api.example.com"]})
    alice, bob = w["alice"], server.add_user("bob")
    assert ext(server, "POST", "/user/orgs", alice, {"login": "acme"}).status == 201
    made = []
    for body in ({"name": "jira", "kind": "api_key", "base_url": "https://jira.example.com/rest", "value": SECRETS[0],
                  "header": "X-Api-Key"},
                 {"name": "ci", "kind": "basic", "base_url": "https://ci.example.com", "username": "alice",
                  "password": SECRETS[1]},
                 {"name": "github", "kind": "oauth_refresh", "owner": "org:acme", "base_url": "https://api.example.com",
                  "token_endpoint": "https://github.example.com/login/oauth/access_token", "client_id": "Iv1.x",
                  "client_secret": SECRETS[3], "refresh_token": SECRETS[2]}):
        r = ext(server, "POST", "/broker/credentials", alice, body)
        assert r.status == 201, r
        made.append(r.json)
    assert made[0]["placement"] == {"header": "X-Api-Key"} and made[2]["owner"] == "org:acme"
    # bad input, each a 422 naming the field; nothing half-stored
    for body, field in (({"name": "x", "kind": "ssh", "base_url": "https://a.example"}, "kind"),
                        ({"name": "x", "kind": "api_key", "base_url": "ftp://a.example", "value": "v", "header": "H"},
                         "base_url"),
                        ({"name": "x", "kind": "api_key", "base_url": "https://u:p@a.example", "value": "v",
                          "header": "H"}, "base_url"),
                        ({"name": "x", "kind": "api_key", "base_url": "https://a.example", "value": "v"}, "header"),
                        ({"name": "x y", "kind": "basic", "base_url": "https://a.example"}, "name"),
                        ({"name": "jira", "kind": "basic", "base_url": "https://a.example", "username": "u",
                          "password": "p"}, "name"),
                        ({"name": "x", "kind": "basic", "owner": "org:nope", "base_url": "https://a.example"}, "owner")):
        r = ext(server, "POST", "/broker/credentials", alice, body)
        assert r.status == 422 and r.json["errors"][0]["field"] == field, (body, r)
    assert server.app.store.one("SELECT COUNT(*) AS n FROM broker_credentials")["n"] == 3
    # the owner lists and rotates; the secret never comes back
    listed = ext(server, "GET", "/broker/credentials", alice)
    assert sorted(c["name"] for c in listed.json) == ["ci", "github", "jira"]
    rotated = ext(server, "PUT", "/broker/credentials/%s/secret" % made[0]["id"], alice, {
        "value": "sk-live-rotated-999", "header": "Authorization"})
    assert rotated.status == 200 and rotated.json["rotated_at"] and rotated.json["placement"] == {"header": "Authorization"}
    # bob sees nothing of alice's; the agent, with any token, may not touch the vault at all
    assert ext(server, "GET", "/broker/credentials", bob).json == []
    assert ext(server, "GET", "/broker/credentials/" + made[0]["id"], bob).status == 404
    assert ext(server, "DELETE", "/broker/credentials/" + made[0]["id"], bob).status == 404
    for token in (w["agent"], w["token"]):
        assert ext(server, "GET", "/broker/credentials", token).status == 403
        assert ext(server, "GET", "/broker/credentials/" + made[0]["id"], token).status == 404
        assert ext(server, "POST", "/broker/credentials", token, {"name": "mine", "kind": "basic",
                                                                  "base_url": "https://a.example",
                                                                  "username": "u", "password": "p"}).status == 403
    # no response, audit row or column holds a secret in the clear; the sealed ones open to the server key
    import agentgit
    answers = json.dumps([listed.json, rotated.json, made])
    audit = json.dumps([dict(r) for r in server.app.store.all("SELECT * FROM audit")])
    columns = json.dumps([dict(r) for r in server.app.store.all("SELECT * FROM broker_credentials")])
    for secret in SECRETS + ("sk-live-rotated-999",):
        assert secret not in answers and secret not in audit and secret not in columns
    row = server.app.store.one("SELECT * FROM broker_credentials WHERE public_id = ?", made[2]["id"])
    opened = json.loads(agentgit.unseal(server.app.key, b"broker credential", row["sealed"], agentgit.binding(row)))
    assert opened == {"client_secret": SECRETS[3], "refresh_token": SECRETS[2]}
    # moved to another row, a sealed secret does not open
    other = server.app.store.one("SELECT * FROM broker_credentials WHERE public_id = ?", made[1]["id"])
    with pytest.raises(ValueError):
        agentgit.unseal(server.app.key, b"broker credential", row["sealed"], agentgit.binding(other))
    assert ext(server, "DELETE", "/broker/credentials/" + made[1]["id"], alice).status == 204
    assert call(server, "GET", "/api/ext/v1/broker/credentials/" + made[1]["id"], alice).status == 404
