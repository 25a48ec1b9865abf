"""The credential broker: alice keeps her Jira and GitHub credentials in agentgit; her agent, under the
seed's task grant, gets minutes-long tool tokens and calls both upstreams through the broker's proxy
without ever seeing a secret; everything outside the grant is refused, with its reason, and audited.

The upstreams are real HTTPS servers on 127.0.0.1 with certificates of the test CA for github.com,
jira.example.com and evil.example; the server is told (as curl's --connect-to) where those names are.
"""
import base64
import gzip
import http.client
import http.server
import json
import ssl
import threading
import urllib.parse

import pytest

import agentgit
from conftest import Browser, alice_and_her_agent, api, call, database_dump, ext, issue_cert, patch_everywhere
from test_oauth import form_post
from test_oauth_code import authorize, pkce

JIRA_KEY = "jira-key-5f0c8a1e9d7b4c2a"
GITHUB_TOKEN = "ghs_upstreamSecret0123456789abcdef"


class Upstream:
    """An HTTPS server that records every request and answers by path: /echo shows what it got (so a
    secret it received would travel back), /to-evil and /to-echo redirect, /big is large, /chunks
    streams."""

    def __init__(self, cert, name):
        self.requests, self.name = [], name
        upstream = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                upstream.requests.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                                          "body": body})
                path = urllib.parse.urlsplit(self.path).path
                if path.endswith("/to-evil"):
                    return self.reply(302, b"", {"Location": "https://evil.example/steal"})
                if path.endswith("/to-echo"):
                    return self.reply(302, b"", {"Location": "/echo?via=redirect"})
                if path.endswith("/leak-to-github"):        # a redirect that would carry the key elsewhere
                    return self.reply(302, b"", {"Location": "https://github.com/x?k=" + self.headers.get("X-Api-Key", "")})
                if path.endswith("/encodings"):             # the key echoed as an upstream might encode it
                    key = self.headers.get("X-Api-Key", "").encode()
                    forms = [base64.b64encode(key), base64.urlsafe_b64encode(b"k=" + key), key.hex().encode(),
                             key.hex().upper().encode(), json.dumps({"u": "https://x/" + key.decode() + "/y"}).replace(
                                 "/", "\\/").encode(), base64.b64encode(b"ab" + key + b"cd")]
                    self.send_response(200)
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    body = b"\n".join(forms)
                    for start in range(0, len(body), 7):      # split anywhere, across every form
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(body[start:start + 7]), body[start:start + 7]))
                    self.wfile.write(b"0\r\n\r\n")
                    return
                if path.endswith("/gzip"):                  # compressed although the broker asked for identity
                    echo = json.dumps({"headers": dict(self.headers)}).encode()
                    return self.reply(200, gzip.compress(echo), {"Content-Encoding": "gzip"})
                if path.endswith("/big"):
                    return self.reply(200, b"x" * 5000)
                if path.endswith("/chunks"):
                    self.send_response(200)
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for part in (b"first ", JIRA_KEY[:7].encode(), JIRA_KEY[7:].encode(), b" last"):
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                    self.wfile.write(b"0\r\n\r\n")
                    return
                echo = json.dumps({"method": self.command, "path": self.path, "headers": dict(self.headers),
                                   "body": body.decode()}).encode()
                self.reply(200, echo, {"Content-Type": "application/json", "Set-Cookie": "session=upstream-session",
                                       "X-Echo-Key": self.headers.get("X-Api-Key", "none")})

            def reply(self, status, body, headers=None):
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = answer

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*cert)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()


UPSTREAMS = ("github.com", "jira.example.com", "evil.example")


@pytest.fixture(scope="module")
def upstream_cert(test_ca, tmp_path_factory):
    """One certificate of the test CA for the three upstreams' names."""
    return issue_cert(test_ca, tmp_path_factory.mktemp("upstreams"), "upstreams", dns=UPSTREAMS)


@pytest.fixture
def broker(tmp_path, test_ca, upstream_cert, monkeypatch):
    """agentgit with github.com, jira.example.com and evil.example pointed at loopback upstreams."""
    monkeypatch.setenv("SSL_CERT_FILE", test_ca["ca"])
    upstreams = {name: Upstream(upstream_cert, name) for name in UPSTREAMS}
    connect_to = {"%s:443" % name: ("127.0.0.1", u.port) for name, u in upstreams.items()}
    connect_to["intranet.example:443"] = ("10.0.0.7", 443)
    srv = agentgit.make_server(tmp_path / "data", port=0, broker_allow_loopback=True, broker_connect_to=connect_to).start()
    yield srv, upstreams
    srv.stop()
    for upstream in upstreams.values():
        upstream.stop()


def store_credentials(srv, alice):
    jira = ext(srv, "POST", "/broker/credentials", alice, {"name": "jira", "kind": "api_key", "header": "X-Api-Key",
                                                          "value": JIRA_KEY, "base_url": "https://jira.example.com"})
    github = ext(srv, "POST", "/broker/credentials", alice, {
        "name": "github", "kind": "api_key", "header": "Authorization", "value": "Bearer " + GITHUB_TOKEN,
        "base_url": "https://github.com/api"})
    evil = ext(srv, "POST", "/broker/credentials", alice, {"name": "evil", "kind": "basic", "username": "alice",
                                                          "password": "evil-password-1", "base_url": "https://evil.example"})
    assert jira.status == github.status == evil.status == 201
    return jira.json, github.json, evil.json


def seed_task(srv, resources, constraints=None, actions=("read_code", "call_api")):
    """The seed's grant: alice's agent, on alice/payments and her credentials, with the seed's allowlist."""
    alice, login, agent = alice_and_her_agent(srv)
    credentials = store_credentials(srv, alice)
    grant = ext(srv, "POST", "/task-grants", alice, {
        "agent": "agent:" + login, "task": "task:fix-payment-bug", "actions": list(actions),
        "resources": ["repo:alice/payments"] + resources,
        "constraints": constraints or {"network_allowlist": ["github.com", "jira.example.com"]}})
    assert grant.status == 201, grant
    task_token = ext(srv, "POST", "/task-grants/%s/tokens" % grant.json["id"], agent, {}).json["token"]
    return {"alice": alice, "agent": agent, "login": login, "grant": grant.json, "task_token": task_token,
            "credentials": credentials}


def tool_token(srv, task_token, credential):
    r = ext(srv, "POST", "/broker/tokens", task_token, {"credential": credential})
    assert r.status == 201, r
    return r.json


def proxy(srv, token, credential_id, path, method="GET", body=None, headers=None):
    """A call through the proxy, as any HTTP client makes it: the tool token as the bearer."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.httpd.server_address[1], timeout=30)
    conn.request(method, "/api/ext/v1/broker/proxy/%s/%s" % (credential_id, path), body=body,
                 headers=dict({"Authorization": "Bearer " + token}, **(headers or {})))
    response = conn.getresponse()
    raw = response.read()
    conn.close()
    return response, raw


def test_the_seed_task_calls_jira_and_github_without_ever_holding_a_secret(broker):
    srv, upstreams = broker
    task = seed_task(srv, ["credential:alice/jira", "credential:alice/github"])
    jira_id, github_id = task["credentials"][0]["id"], task["credentials"][1]["id"]
    seen = []      # every answer the agent gets, to prove no secret is in any of them

    minted = tool_token(srv, task["task_token"], "credential:alice/jira")
    assert minted["token"].startswith("agb_") and minted["upstream"] == "https://jira.example.com"
    assert minted["credential"] == "credential:alice/jira" and minted["task"] == "task:fix-payment-bug"
    assert minted["proxy_url"] == srv.url + "/api/ext/v1/broker/proxy/" + jira_id
    seen.append(json.dumps(minted))
    response, raw = proxy(srv, minted["token"], jira_id, "rest/api/2/issue/PAY-1?fields=summary",
                          headers={"Cookie": "agent=cookie", "X-Trace": "t-1"})
    seen.append(raw.decode() + str(response.getheaders()))
    assert response.status == 200, raw
    got = upstreams["jira.example.com"].requests[-1]
    assert got["path"] == "/rest/api/2/issue/PAY-1?fields=summary" and got["headers"]["X-Api-Key"] == JIRA_KEY
    assert got["headers"]["Host"] == "jira.example.com" and got["headers"]["X-Trace"] == "t-1"
    assert "Cookie" not in got["headers"] and minted["token"] not in str(got)      # the agent's own stay home
    echo = json.loads(raw)
    assert echo["headers"]["X-Api-Key"] == "*" * len(JIRA_KEY)            # the upstream echoed it: masked
    assert response.getheader("Set-Cookie") is None and response.getheader("X-Echo-Key") is None

    # a POST with a body; a chunked answer with the key split across chunks; a same-origin redirect
    response, raw = proxy(srv, minted["token"], jira_id, "rest/api/2/issue", "POST", b'{"summary": "x"}',
                          {"Content-Type": "application/json"})
    assert response.status == 200 and json.loads(raw)["body"] == '{"summary": "x"}'
    seen.append(raw.decode())
    response, raw = proxy(srv, minted["token"], jira_id, "chunks")
    assert raw == b"first " + b"*" * len(JIRA_KEY) + b" last"
    response, raw = proxy(srv, minted["token"], jira_id, "to-echo")
    assert response.status == 200 and json.loads(raw)["path"] == "/echo?via=redirect"
    seen.append(raw.decode())

    # GitHub, with a bearer token in Authorization: its own tool token, and a path under its base URL
    minted_gh = tool_token(srv, task["task_token"], github_id)
    response, raw = proxy(srv, minted_gh["token"], github_id, "repos/acme/payments/issues")
    assert response.status == 200
    assert upstreams["github.com"].requests[-1]["headers"]["Authorization"] == "Bearer " + GITHUB_TOKEN
    assert upstreams["github.com"].requests[-1]["path"] == "/api/repos/acme/payments/issues"
    seen.append(raw.decode())

    # one audit row per call, saying what went where for whom, for the delegator to read by task
    rows = ext(srv, "GET", "/audit?task=task:fix-payment-bug&action=call_api", task["alice"]).json[::-1]
    assert len(rows) == 5 and all(r["decision"] == "allow" and r["task"] == "task:fix-payment-bug" for r in rows)
    effects = [r["side_effect"] for r in rows]
    assert "GET jira.example.com/rest/api/2/issue/PAY-1 -> 200" in effects[-1]
    assert "credential:alice/jira for task:fix-payment-bug" in effects[-1] and "bytes" in effects[-1]
    assert any(e.startswith("GET github.com/api/repos/acme/payments/issues -> 200") for e in effects)
    # and nothing of the secrets anywhere the agent or an auditor looks: answers, audit rows, the database
    dump = database_dump(srv.app.store)
    for secret in (JIRA_KEY, GITHUB_TOKEN, "evil-password-1"):
        assert not any(secret in text for text in seen) and secret not in dump


def test_what_the_grant_does_not_cover_is_refused_and_audited(broker):
    srv, upstreams = broker
    task = seed_task(srv, ["credential:alice/jira", "credential:alice/evil"])
    jira_id, github_id, evil_id = (c["id"] for c in task["credentials"])
    jira = tool_token(srv, task["task_token"], jira_id)
    # a credential the grant does not name; one it names whose upstream is outside the allowlist
    r = ext(srv, "POST", "/broker/tokens", task["task_token"], {"credential": github_id})
    assert r.status == 404                            # (the audit row says: does not cover credential:alice/github)
    r = ext(srv, "POST", "/broker/tokens", task["task_token"], {"credential": evil_id})
    assert r.status == 403 and "https://evil.example:443 is not in its network_allowlist" in r.json["message"]
    assert ext(srv, "POST", "/broker/tokens", task["task_token"], {"credential": "bc_0000"}).status == 404
    # the jira tool token at another credential's proxy, at the REST API; a task token at the proxy
    response, raw = proxy(srv, jira["token"], github_id, "x")
    assert response.status == 401 and b"this token is for" in raw
    assert api(srv, "GET", "/user", jira["token"]).status == 401
    response, raw = proxy(srv, task["task_token"], jira_id, "x")
    assert response.status == 403 and b"call_api needs the tool token itself" in raw
    # an allowlisted host redirecting to one that is not: refused before evil.example hears of it
    response, raw = proxy(srv, jira["token"], jira_id, "to-evil")
    assert response.status == 403 and b"evil.example:443 is not in its network_allowlist" in raw
    assert upstreams["evil.example"].requests == []
    # no climbing out of the base URL
    response, raw = proxy(srv, jira["token"], jira_id, "a/%2e%2e/b")
    assert response.status == 400
    # the agent cannot read, list, rotate or delete a credential with any token it holds, nor reach it over
    # GraphQL or MCP; each attempt is refused, and audited, and no answer carries the secret
    attempts = []
    for token in (task["agent"], task["task_token"], jira["token"]):
        attempts += [ext(srv, "GET", "/broker/credentials/" + jira_id, token), ext(srv, "GET", "/broker/credentials", token),
                     ext(srv, "PUT", "/broker/credentials/%s/secret" % jira_id, token, {"value": "x" * 8, "header": "X"}),
                     ext(srv, "DELETE", "/broker/credentials/" + jira_id, token),
                     call(srv, "POST", "/api/graphql", token, {"query": "{ viewer { login } }"})]
    assert all(a.status in (401, 403, 404) for a in attempts[:4]) and all(JIRA_KEY not in a.raw.decode()
                                                                          for a in attempts)
    assert ext(srv, "GET", "/broker/credentials/" + jira_id, task["alice"]).json["secret"] == "(sealed; never shown)"
    refused = [r for r in ext(srv, "GET", "/agents/%s/activity" % task["login"], task["alice"]).json
               if r["action"] in ("read_credentials", "manage_credentials")]
    assert len(refused) >= 6 and all(r["decision"] == "deny" for r in refused)
    decisions = [(r["action"], r["decision"]) for r in ext(srv, "GET", "/agents/%s/activity" % task["login"],
                                                            task["alice"]).json]
    assert decisions.count(("use_credential", "deny")) == 3 and ("call_api", "deny") in decisions   # bc_0000 too
    reasons = [r["reasons"] for r in ext(srv, "GET", "/agents/%s/activity" % task["login"], task["alice"]).json]
    assert any("does not cover credential:alice/github" in " ".join(r) for r in reasons)
    assert ("use_token", "deny") in decisions         # the token presented for another credential
    # revoking the task ends its tool tokens at once
    assert ext(srv, "DELETE", "/task-grants/" + task["grant"]["id"], task["alice"]).status == 204
    assert proxy(srv, jira["token"], jira_id, "echo")[0].status == 401


def test_expiry_approval_and_a_delegator_who_loses_the_credential(broker):
    srv, _ = broker
    task = seed_task(srv, ["credential:alice/jira"], {"network_allowlist": ["jira.example.com"],
                                                       "requires_approval": ["use_credential"]})
    jira_id = task["credentials"][0]["id"]
    r = ext(srv, "POST", "/broker/tokens", task["task_token"], {"credential": jira_id})
    assert r.status == 403 and "needs a human's approval" in r.json["message"]
    approval = ext(srv, "GET", "/approvals/" + r.json["approval_id"], task["alice"]).json
    assert approval["subject"] == "calls to https://jira.example.com" and approval["action"] == "use_credential"
    assert ext(srv, "POST", "/approvals/%s/approve" % approval["id"], task["alice"]).status == 200
    minted = tool_token(srv, task["task_token"], jira_id)
    assert 0 < (agentgit.parse_time(minted["expires_at"]) - agentgit.parse_time(agentgit.now())).total_seconds() <= 300
    assert proxy(srv, minted["token"], jira_id, "echo")[0].status == 200
    # the approval was spent: the next tool token needs another yes
    assert ext(srv, "POST", "/broker/tokens", task["task_token"], {"credential": jira_id}).status == 403
    # replayed past its expiry: 401
    with srv.app.store.transaction() as db:
        db.execute("UPDATE tokens SET expires_at = '2020-01-01T00:00:00Z' WHERE kind = 'tool'")
    assert proxy(srv, minted["token"], jira_id, "echo")[0].status == 401


def test_upstream_addresses_are_checked_on_every_call(broker, monkeypatch):
    srv, _ = broker
    alice, login, agent = alice_and_her_agent(srv)
    made = [ext(srv, "POST", "/broker/credentials", alice, {"name": name, "kind": "api_key", "header": "X-Key",
                                                           "value": "secret-value-1", "base_url": url}).json
            for name, url in (("intranet", "https://intranet.example"), ("local", "https://localhost:1"))]
    grant = ext(srv, "POST", "/task-grants", alice, {
        "agent": "agent:" + login, "task": "task:sync", "actions": ["call_api"],
        "resources": ["repo:alice/payments", "credential:alice/intranet", "credential:alice/local"],
        "constraints": {"network_allowlist": ["intranet.example", "localhost:1"]}}).json
    task_token = ext(srv, "POST", "/task-grants/%s/tokens" % grant["id"], agent, {}).json["token"]
    intranet = tool_token(srv, task_token, made[0]["id"])
    response, raw = proxy(srv, intranet["token"], made[0]["id"], "x")     # a name at a private address
    assert response.status == 502 and b"non-public address (10.0.0.7)" in raw and b"secret-value-1" not in raw
    local = tool_token(srv, task_token, made[1]["id"])
    monkeypatch.setattr(srv.app.config, "broker_allow_loopback", False)   # loopback without the operator's leave
    response, raw = proxy(srv, local["token"], made[1]["id"], "x")
    assert response.status == 502 and b"localhost is at a non-public address" in raw


def test_oversized_answers_are_cut_off(broker, monkeypatch):
    srv, _ = broker
    patch_everywhere(monkeypatch, "MAX_UPSTREAM_BYTES", 1000)
    task = seed_task(srv, ["credential:alice/jira"])
    jira_id = task["credentials"][0]["id"]
    minted = tool_token(srv, task["task_token"], jira_id)
    response, raw = proxy(srv, minted["token"], jira_id, "big")
    assert response.status == 502 and b"at most 1000" in raw
    # a streamed answer without a length is cut off where it passes the limit, and the client told so
    patch_everywhere(monkeypatch, "MAX_UPSTREAM_BYTES", 10)
    with pytest.raises(http.client.IncompleteRead):
        proxy(srv, minted["token"], jira_id, "chunks")
    rows = ext(srv, "GET", "/agents/%s/activity" % task["login"], task["alice"]).json
    assert "GET jira.example.com/chunks -> 200, 6 bytes (cut off)" in rows[0]["side_effect"]


def test_an_oauth_upstream_is_refreshed_with_its_stored_refresh_token(broker, tmp_path, new_database):
    """agentgit's own OAuth server is the upstream: alice authorizes a confidential app there; the
    broker keeps the refresh token, gets access tokens when the kept one expires or is refused, and
    stores each rotated refresh token (reusing an old one would revoke the whole family)."""
    srv, _ = broker
    upstream = agentgit.make_server(tmp_path / "upstream", port=0, database=new_database()).start()
    try:
        upstream.add_user("alice", password="pw")
        up_alice = upstream.add_user("upstream-admin")
        app = ext(upstream, "POST", "/oauth/apps", up_alice, {"name": "Broker", "redirect_uris": ["http://127.0.0.1/cb"],
                                                             "confidential": True}).json
        browser = Browser(upstream)
        browser.sign_in("alice", "pw")
        verifier, challenge = pkce()
        _, answer = authorize(browser, app["client_id"], "http://127.0.0.1/cb", challenge)
        tokens = form_post(upstream, "/login/oauth/access_token", {"grant_type": "authorization_code", "client_id": app["client_id"],
                                           "client_secret": app["client_secret"], "code": answer["code"],
                                           "redirect_uri": "http://127.0.0.1/cb", "code_verifier": verifier}).json
        task = seed_task(srv, [], {"network_allowlist": []})
        up = urllib.parse.urlsplit(upstream.url)
        made = ext(srv, "POST", "/broker/credentials", task["alice"], {
            "name": "upstream", "kind": "oauth_refresh", "base_url": upstream.url + "/api/v3",
            "client_id": app["client_id"], "client_secret": app["client_secret"],
            "refresh_token": tokens["refresh_token"], "token_endpoint": upstream.url + "/login/oauth/access_token"})
        assert made.status == 201, made
        grant = ext(srv, "POST", "/task-grants", task["alice"], {
            "agent": "agent:" + task["login"], "task": "task:mirror", "actions": ["call_api"],
            "resources": ["credential:alice/upstream"], "constraints": {"network_allowlist": ["http://" + up.netloc]}})
        assert grant.status == 201, grant
        task_token = ext(srv, "POST", "/task-grants/%s/tokens" % grant.json["id"], task["agent"], {}).json["token"]
        # RFC 8693: the task token, for the upstream's URL, is exchanged for the tool token
        exchanged = form_post(srv, "/login/oauth/access_token", {
            "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange", "subject_token": task_token,
            "resource": upstream.url + "/api/v3/user"}).json
        assert exchanged["access_token"].startswith("agb_") and exchanged["credential"] == "credential:alice/upstream"
        credential_id = made.json["id"]
        response, raw = proxy(srv, exchanged["access_token"], credential_id, "user")
        assert response.status == 200 and json.loads(raw)["login"] == "alice"
        # the kept access token expires: the next call refreshes (rotating the refresh token), and again
        for _ in range(2):
            with srv.app.store.transaction() as db:
                db.execute("UPDATE broker_credentials SET access_expires_at = '2020-01-01T00:00:00Z'")
            response, raw = proxy(srv, exchanged["access_token"], credential_id, "user")
            assert response.status == 200 and json.loads(raw)["login"] == "alice"
        # the upstream revokes the access token the broker holds: a 401 there refreshes once and retries
        for row in upstream.app.store.all("SELECT id FROM tokens WHERE kind = 'oauth'"):
            with upstream.app.store.transaction() as db:
                db.execute("UPDATE tokens SET revoked_at = '2020-01-01T00:00:00Z' WHERE id = ?", (row["id"],))
        response, raw = proxy(srv, exchanged["access_token"], credential_id, "user")
        assert response.status == 200 and json.loads(raw)["login"] == "alice"
        dump = database_dump(srv.app.store)
        assert tokens["refresh_token"] not in dump and app["client_secret"] not in dump
    finally:
        upstream.stop()


def test_a_dpop_bound_task_token_gets_a_dpop_bound_tool_token(broker):
    dpop = pytest.importorskip("requests_oauth2client")
    import requests
    srv, upstreams = broker
    task = seed_task(srv, ["credential:alice/jira"])
    jira_id = task["credentials"][0]["id"]
    key = dpop.DPoPKey.generate(alg="ES256")
    grant_mint = srv.url + "/api/ext/v1/task-grants/%s/tokens" % task["grant"]["id"]
    task_token = requests.post(grant_mint, json={}, headers={"Authorization": "Bearer " + task["agent"],
                                                             "DPoP": str(key.proof(htm="POST", htu=grant_mint))}).json()
    minted = requests.post(srv.url + "/api/ext/v1/broker/tokens", json={"credential": jira_id},
                           auth=dpop.DPoPToken(task_token["token"], _dpop_key=key))
    assert minted.status_code == 201 and minted.json()["cnf"] == {"jkt": key.dpop_jkt}
    tool = dpop.DPoPToken(minted.json()["token"], _dpop_key=key)
    answer = requests.get(minted.json()["proxy_url"] + "/echo", auth=tool)
    assert answer.status_code == 200 and answer.json()["headers"]["X-Api-Key"] == "*" * len(JIRA_KEY)
    assert "DPoP" not in upstreams["jira.example.com"].requests[-1]["headers"]       # the proof stays here
    stolen = requests.get(minted.json()["proxy_url"] + "/echo", headers={"Authorization": "Bearer " + tool.access_token})
    assert stolen.status_code == 401
    # RFC 8693 with the DPoP-bound task token as subject: the exchange's own proof, by the same key, shows it
    client = dpop.OAuth2Client(token_endpoint=srv.url + "/login/oauth/access_token", client_id="runtime", testing=True,
                               dpop_bound_access_tokens=True)
    exchanged = client.token_exchange(subject_token=dpop.BearerToken(task_token["token"]), dpop_key=key,
                                      resource="https://jira.example.com/rest/api/2")
    assert exchanged.token_type == "DPoP" and exchanged.access_token.startswith("agb_")
    with pytest.raises(dpop.InvalidGrant):          # by another key, the subject token is nobody's
        client.token_exchange(subject_token=dpop.BearerToken(task_token["token"]),
                              dpop_key=dpop.DPoPKey.generate(alg="ES256"), resource="https://jira.example.com/x")


def test_every_form_of_a_secret_stays_out_of_reach(broker):
    """The agent cannot set the credential's header itself, read the secret back compressed or as
    Basic's base64, or have a redirect carry it to another allowlisted host."""
    srv, upstreams = broker
    task = seed_task(srv, ["credential:alice/jira", "credential:alice/evil"],
                     {"network_allowlist": ["github.com", "jira.example.com", "evil.example"]})
    jira_id, _, evil_id = (c["id"] for c in task["credentials"])
    jira = tool_token(srv, task["task_token"], jira_id)
    response, raw = proxy(srv, jira["token"], jira_id, "echo", headers={"x-api-key": "the agent's own",
                                                                        "Accept-Encoding": "gzip"})
    got = upstreams["jira.example.com"].requests[-1]["headers"]
    assert [v for k, v in got.items() if k.lower() == "x-api-key"] == [JIRA_KEY]
    assert got["Accept-Encoding"] == "identity"
    response, raw = proxy(srv, jira["token"], jira_id, "gzip")
    assert response.status == 200 and response.getheader("Content-Encoding") is None
    assert json.loads(raw)["headers"]["X-Api-Key"] == "*" * len(JIRA_KEY)
    response, raw = proxy(srv, jira["token"], jira_id, "leak-to-github")
    assert response.status == 502 and b"credential in the URL" in raw
    assert not any(JIRA_KEY in r["path"] for r in upstreams["github.com"].requests)
    # Basic: the password is masked, and so is the header's base64 of it
    evil = tool_token(srv, task["task_token"], evil_id)
    response, raw = proxy(srv, evil["token"], evil_id, "echo")
    sent = upstreams["evil.example"].requests[-1]["headers"]["Authorization"]
    assert sent == "Basic " + base64.b64encode(b"alice:evil-password-1").decode()
    assert json.loads(raw)["headers"]["Authorization"] == "Basic " + "*" * (len(sent) - 6)
    assert b"evil-password-1" not in raw and sent[6:].encode() not in raw


def test_the_delegator_losing_an_organization_credential_stops_its_calls(broker):
    """An organization's credential is its admins' to grant; a delegator who is no longer one holds
    nothing to delegate, at the next call."""
    srv, _ = broker
    task = seed_task(srv, [])
    bob = srv.add_user("bob")
    assert ext(srv, "POST", "/user/orgs", task["alice"], {"login": "acme"}).status == 201
    assert api(srv, "PUT", "/orgs/acme/memberships/bob", task["alice"], {"role": "admin"}).status == 200
    made = ext(srv, "POST", "/broker/credentials", task["alice"], {
        "owner": "org:acme", "name": "jira", "kind": "api_key", "header": "X-Api-Key", "value": JIRA_KEY,
        "base_url": "https://jira.example.com"}).json
    grant = ext(srv, "POST", "/task-grants", task["alice"], {
        "agent": "agent:" + task["login"], "task": "task:triage", "actions": ["call_api"],
        "resources": ["credential:acme/jira"], "constraints": {"network_allowlist": ["jira.example.com"]}}).json
    task_token = ext(srv, "POST", "/task-grants/%s/tokens" % grant["id"], task["agent"], {}).json["token"]
    minted = tool_token(srv, task_token, made["id"])
    assert proxy(srv, minted["token"], made["id"], "echo")[0].status == 200
    assert api(srv, "PUT", "/orgs/acme/memberships/alice", bob, {"role": "member"}).status == 200
    response, raw = proxy(srv, minted["token"], made["id"], "echo")
    assert response.status == 403 and b"call_api needs admin on credential:acme/jira" in raw
    assert b"alice (delegator of task grant %s) has write" % grant["id"].encode() in raw
    row = ext(srv, "GET", "/agents/%s/activity" % task["login"], task["alice"]).json[0]
    assert (row["action"], row["decision"], row["rule"]) == ("call_api", "deny", "permission")


def test_a_database_edit_cannot_send_a_secret_elsewhere(broker, tmp_path):
    """Where and how a secret is sent (the upstream, the kind, the header an API key goes in, an OAuth
    credential's token endpoint) is sealed with it: a credential whose placement was edited in the
    database does not open (502), and nothing reaches any upstream. Secrets sealed before the binding
    covered the placement are sealed anew, once, as the first server of this version starts."""
    srv, upstreams = broker
    world = seed_task(srv, ["credential:alice/jira"])
    jira = world["credentials"][0]
    token = tool_token(srv, world["task_token"], "credential:alice/jira")["token"]
    assert proxy(srv, token, jira["id"], "echo")[0].status == 200
    with srv.app.store.transaction() as db:
        db.execute("UPDATE broker_credentials SET placement = ? WHERE public_id = ?",
                   (json.dumps({"query_parameter": "leak"}), jira["id"]))
    seen = len(upstreams["jira.example.com"].requests)
    response, raw = proxy(srv, token, jira["id"], "echo")
    assert response.status == 502 and b"record was changed" in raw and JIRA_KEY.encode() not in raw
    assert len(upstreams["jira.example.com"].requests) == seen
    # a secret sealed the old way (bound to the row's id, owner, name and upstream only) opens once more,
    # to be sealed to the whole record; after that, the old binding opens nothing
    with srv.app.store.transaction() as db:
        row = db.execute("SELECT * FROM broker_credentials WHERE public_id = ?", (jira["id"],)).fetchone()
        v1 = ("credential %s %d %s %s" % (row["public_id"], row["owner_id"], row["name"], row["base_url"])).encode()
        db.execute("UPDATE broker_credentials SET placement = ?, sealed = ? WHERE id = ?", (
            json.dumps({"header": "X-Api-Key"}), agentgit.seal(srv.app.key, b"broker credential",
                                                               json.dumps({"value": JIRA_KEY}).encode(), v1), row["id"]))
        db.execute("DELETE FROM settings WHERE name = 'credential_binding'")
    agentgit.reseal_v1_credentials(srv.app.store, srv.app.key)
    response, raw = proxy(srv, token, jira["id"], "echo")
    assert response.status == 200 and json.loads(raw)["headers"]["X-Api-Key"] != JIRA_KEY     # sent, and masked back
    assert upstreams["jira.example.com"].requests[-1]["headers"]["X-Api-Key"] == JIRA_KEY
    with srv.app.store.transaction() as db:
        db.execute("UPDATE broker_credentials SET sealed = ? WHERE id = ?", (agentgit.seal(
            srv.app.key, b"broker credential", json.dumps({"value": JIRA_KEY}).encode(), v1), row["id"]))
    agentgit.reseal_v1_credentials(srv.app.store, srv.app.key)                 # done once: not again
    assert proxy(srv, token, jira["id"], "echo")[0].status == 502


def test_masking_knows_the_encodings_an_upstream_echoes_and_the_base_path_is_a_boundary(broker):
    """An upstream that echoes the key as base64 (at any alignment inside a longer encoding), base64url,
    hex in either case or JSON with escaped slashes, split across reads anywhere, hands the agent
    asterisks. A path that climbs out of the base URL once decoded is refused, and a same-origin
    redirect out of the base URL is followed without the secret."""
    srv, upstreams = broker
    task = seed_task(srv, ["credential:alice/jira", "credential:alice/github"])
    jira_id, github_id, _ = (c["id"] for c in task["credentials"])
    jira = tool_token(srv, task["task_token"], jira_id)
    response, raw = proxy(srv, jira["token"], jira_id, "encodings")
    assert response.status == 200 and raw.count(b"\n") == 5
    key = JIRA_KEY.encode()
    for form in (key, base64.b64encode(key), key.hex().encode(), key.hex().upper().encode()):
        assert form not in raw
    for line in raw.split(b"\n"):
        assert b"****" in line, line
    github = tool_token(srv, task["task_token"], github_id)
    for climbing in ("..%2F..%2Fadmin", "%2e%2e/admin", "x/..%5C..%5Cadmin", "%2E/x"):
        response, raw = proxy(srv, github["token"], github_id, climbing)
        assert response.status == 400 and b". or .. segments" in raw, climbing
    seen = len(upstreams["github.com"].requests)
    response, raw = proxy(srv, github["token"], github_id, "to-echo")          # /api/to-echo -> /echo: outside /api
    assert response.status == 200
    hops = upstreams["github.com"].requests[seen:]
    assert [h["path"] for h in hops] == ["/api/to-echo", "/echo?via=redirect"]
    assert hops[0]["headers"]["Authorization"] == "Bearer " + GITHUB_TOKEN and "Authorization" not in hops[1]["headers"]
