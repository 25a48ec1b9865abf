"""The MCP SDK's own OAuth client completes against a fresh agentgit with no hand-holding: from the 401
of /mcp to RFC 9728 metadata, RFC 8414 metadata, registration (RFC 7591, or a client ID metadata
document served over HTTPS), the authorization code with PKCE and RFC 8707's resource (the consent
page answered by a browser stand-in signed in as alice), then tools. The token it gets is for /mcp
alone; introspection tells its holder what it is; revocation ends it."""
import asyncio
import base64
import json
import secrets
import time
import urllib.parse

import pytest

from conftest import Browser, Memory, api, call, ext

pytest.importorskip("mcp", reason="make test installs the mcp SDK")
import httpx2  # noqa: E402
from mcp import Client  # noqa: E402
from mcp.client.auth import OAuthClientProvider  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientMetadata  # noqa: E402

REDIRECT = "http://127.0.0.1:9/callback"      # never reached: the stand-in reads the redirect itself


class ConsentStandIn:
    """What a person does in her browser: signed in as alice, she opens the authorization URL the
    client sends her to and approves; the redirect's code and state go back to the client."""

    def __init__(self, server, login, password):
        self.browser, self.pages, self.redirect = Browser(server), [], None
        self.browser.sign_in(login, password)

    async def open(self, url):
        parts = urllib.parse.urlsplit(url)
        resp, page = self.browser.request("GET", parts.path + "?" + parts.query)
        assert resp.status == 200, page
        self.pages.append(page)
        form = dict(urllib.parse.parse_qsl(parts.query), csrf=self.browser.csrf(page), decision="approve")
        resp, _ = self.browser.request("POST", "/login/oauth/authorize", form)
        assert resp.status == 302
        self.redirect = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(resp.getheader("Location")).query))

    async def callback(self):
        return AuthorizationCodeResult(code=self.redirect["code"], state=self.redirect.get("state"),
                                       iss=self.redirect.get("iss"))


def provider(server, storage, stand_in, metadata_url=None):
    return OAuthClientProvider(server.url + "/mcp", OAuthClientMetadata(
        redirect_uris=[REDIRECT], client_name="test agent host", grant_types=["authorization_code", "refresh_token"],
        token_endpoint_auth_method="none"), storage, redirect_handler=stand_in.open, callback_handler=stand_in.callback,
        client_metadata_url=metadata_url)


async def tools_as(server, auth, mode="auto"):
    http = httpx2.AsyncClient(auth=auth)
    async with Client(streamable_http_client(server.url + "/mcp", http_client=http), mode=mode) as c:
        names = [t.name for t in (await c.list_tools()).tools]
        me = json.loads((await c.call_tool("get_me", {})).content[0].text)["login"]
        return names, me


@pytest.mark.parametrize("mode", ["auto", "legacy"])
def test_discovery_dynamic_registration_and_code_with_pkce(server, mode):
    alice = server.add_user("alice", password="pw")
    storage, stand_in = Memory(), ConsentStandIn(server, "alice", "pw")
    names, me = asyncio.run(tools_as(server, provider(server, storage, stand_in), mode))
    assert me == "alice" and "merge_pull_request" in names
    client_id = storage.client_info.client_id
    assert client_id.startswith("agc_")
    assert "registered by itself: nobody vouches for it" in stand_in.pages[0]
    assert "%s/mcp" % server.url in stand_in.pages[0]                      # the resource she consents to
    token = storage.tokens.access_token
    # RFC 8707: the token is for /mcp; REST and Git refuse it
    r = api(server, "GET", "/user", token)
    assert r.status == 401 and "is for %s/mcp" % server.url in r.json["message"]
    assert call(server, "GET", "/alice/nope.git/info/refs?service=git-upload-pack", token).status == 401
    # introspection: to its holder, what it is; to another account, nothing
    asked = call(server, "POST", "/login/oauth/introspect", token, raw_body=urllib.parse.urlencode(
        {"token": token}).encode(), headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert asked.status == 401        # a token for /mcp is no credential at the authorization server either
    alice_pat = server.add_user("alice2")
    other = call(server, "POST", "/login/oauth/introspect", alice_pat, raw_body=urllib.parse.urlencode(
        {"token": token}).encode(), headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert other.json == {"active": False}
    mine = call(server, "POST", "/login/oauth/introspect", alice, raw_body=urllib.parse.urlencode(
        {"token": token}).encode(), headers={"Content-Type": "application/x-www-form-urlencoded"}).json
    assert (mine["active"], mine["sub"], mine["aud"], mine["client_id"], mine["token_kind"]) == (
        True, "alice", server.url + "/mcp", client_id, "oauth")
    assert set(mine["scope"].split()) == {"repo"} and mine["exp"] > mine["iat"]
    facts = call(server, "POST", "/login/oauth/introspect", None, raw_body=urllib.parse.urlencode(
        {"token": token, "client_id": client_id}).encode(), headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert facts.status == 401        # a public client may revoke its tokens, not introspect them
    # revocation by the client that holds it (RFC 7009): then /mcp refuses it
    gone = call(server, "POST", "/login/oauth/revoke", None, raw_body=urllib.parse.urlencode(
        {"token": token, "client_id": client_id}).encode(), headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert gone.status == 200
    r = call(server, "POST", "/mcp", token, body={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert r.status == 401 and 'error="invalid_token"' in r.headers["www-authenticate"]


def test_a_client_id_metadata_document(tmp_path, metadata_host):
    import agentgit
    base, documents = metadata_host
    url = base + "/agent-host/client.json"
    documents["/agent-host/client.json"] = (200, json.dumps({
        "client_id": url, "client_name": "Agent Host", "redirect_uris": [REDIRECT], "grant_types": [
            "authorization_code", "refresh_token"], "response_types": ["code"],
        "token_endpoint_auth_method": "none"}).encode())
    server = agentgit.make_server(tmp_path / "data", port=0, allow_loopback_client_documents=True).start()
    try:
        server.add_user("alice", password="pw")
        storage, stand_in = Memory(), ConsentStandIn(server, "alice", "pw")
        names, me = asyncio.run(tools_as(server, provider(server, storage, stand_in, metadata_url=url)))
        assert me == "alice" and storage.client_info.client_id == url
        assert "described by its own document at localhost" in stand_in.pages[0] and "Agent Host" in stand_in.pages[0]
        # documents that cannot be used: each a clear 400 on the authorization page, nothing registered
        for path, (status, body), words in (
                ("/other.json", (200, json.dumps({"client_id": base + "/elsewhere.json", "redirect_uris": [REDIRECT]})),
                 "its own URL"),
                ("/moved.json", (302, base + "/agent-host/client.json"), "redirects are not followed"),
                ("/huge.json", (200, json.dumps({"client_id": base + "/huge.json", "redirect_uris": [REDIRECT],
                                                 "pad": "x" * 6000})), "over 5120 bytes"),
                ("/nouris.json", (200, json.dumps({"client_id": base + "/nouris.json"})), "redirect_uris")):
            documents[path] = (status, body.encode())
            query = urllib.parse.urlencode({"response_type": "code", "client_id": base + path, "redirect_uri": REDIRECT,
                                            "code_challenge": "x" * 43, "code_challenge_method": "S256"})
            resp, page = stand_in.browser.request("GET", "/login/oauth/authorize?" + query)
            assert resp.status == 400 and words in page, (path, page[:500])
        # a redirect URI the document does not list is shown here, never redirected to; a resource of
        # another server is invalid_target
        query = {"response_type": "code", "client_id": url, "redirect_uri": "https://evil.example/cb",
                 "code_challenge": "x" * 43, "code_challenge_method": "S256"}
        resp, page = stand_in.browser.request("GET", "/login/oauth/authorize?" + urllib.parse.urlencode(query))
        assert resp.status == 400 and "redirect_uri does not match" in page
        query.update(redirect_uri=REDIRECT, resource="https://other.example/mcp")
        resp, _ = stand_in.browser.request("GET", "/login/oauth/authorize?" + urllib.parse.urlencode(query))
        back = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(resp.getheader("Location")).query))
        assert resp.status == 302 and back["error"] == "invalid_target"
        known = {r["client_id"] for r in server.app.store.all("SELECT client_id FROM oauth_apps")}
        assert known == {url}
    finally:
        server.stop()


def test_metadata_documents_at_private_addresses_are_refused(server, metadata_host):
    """Without the operator's leave, a document on a loopback (or any private) address is not fetched."""
    base, documents = metadata_host
    url = base + "/client.json"
    documents["/client.json"] = (200, json.dumps({"client_id": url, "redirect_uris": [REDIRECT]}).encode())
    browser = Browser(server)
    server.add_user("alice", password="pw")
    browser.sign_in("alice", "pw")
    query = urllib.parse.urlencode({"response_type": "code", "client_id": url, "redirect_uri": REDIRECT,
                                    "code_challenge": "x" * 43, "code_challenge_method": "S256"})
    resp, page = browser.request("GET", "/login/oauth/authorize?" + query)
    assert resp.status == 400 and "non-public address" in page
    # and an address may make the server fetch documents only so often
    import agentgit
    server.app.registrations = agentgit.RateLimiter(server.app.store, "documents", 1, 600)   # counted afresh
    assert browser.request("GET", "/login/oauth/authorize?" + query)[0].status == 400
    resp, page = browser.request("GET", "/login/oauth/authorize?" + query)
    assert resp.status == 429 and "retry later" in page


def test_authorization_server_metadata_and_registration_errors(server):
    import agentgit
    meta = call(server, "GET", "/.well-known/oauth-authorization-server").json
    assert meta["issuer"] == server.url and meta["code_challenge_methods_supported"] == ["S256"]
    assert meta["client_id_metadata_document_supported"] is True
    assert meta["authorization_response_iss_parameter_supported"] is True
    assert {meta["registration_endpoint"], meta["introspection_endpoint"], meta["revocation_endpoint"]} == {
        server.url + "/register", server.url + "/login/oauth/introspect", server.url + "/login/oauth/revoke"}
    assert call(server, "GET", "/.well-known/openid-configuration").json == meta
    for body, error in (({}, "invalid_redirect_uri"), ({"redirect_uris": ["http://evil.example/cb"]}, "invalid_redirect_uri"),
                        ({"redirect_uris": ["https://ok.example/cb#frag"]}, "invalid_redirect_uri"),
                        ({"redirect_uris": ["https://ok.example/cb"], "grant_types": ["password"]}, "invalid_client_metadata"),
                        ({"redirect_uris": ["https://ok.example/cb"], "token_endpoint_auth_method": "private_key_jwt"},
                         "invalid_client_metadata")):
        r = call(server, "POST", "/register", body=body)
        assert (r.status, r.json["error"]) == (400, error), body
    r = call(server, "POST", "/register", raw_body=b"[1]", headers={"Content-Type": "application/json"})
    assert (r.status, r.json["error"]) == (400, "invalid_client_metadata")
    made = call(server, "POST", "/register", body={"redirect_uris": ["https://ok.example/cb"], "client_name": "Tool",
                                                   "token_endpoint_auth_method": "client_secret_basic"})
    assert made.status == 201 and made.json["client_secret"].startswith("agcs_")
    # registration is anonymous, so an address may register only so many clients in a while
    server.app.registrations = agentgit.RateLimiter(server.app.store, "clients", 2, 600)     # counted afresh
    answers = [call(server, "POST", "/register", body={"redirect_uris": ["https://ok.example/cb"]}) for _ in range(3)]
    assert [a.status for a in answers] == [201, 201, 429] and answers[2].headers["retry-after"]


def rsa_key():
    """A fresh RSA key: (its PEM, its public JWK)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    numbers = key.public_key().public_numbers()

    def b64(number):
        return base64.urlsafe_b64encode(number.to_bytes((number.bit_length() + 7) // 8, "big")).rstrip(b"=").decode()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    return pem, {"kty": "RSA", "n": b64(numbers.n), "e": b64(numbers.e), "kid": "runtime-1"}


def test_an_agent_signs_in_with_a_private_key_that_never_leaves_its_runtime(server):
    """The agent registers its public key with its own token, then the SDK's private_key_jwt client
    gets a token for /mcp by client_credentials: no bearer secret in the runtime at all."""
    import jwt
    from mcp.client.auth.extensions.client_credentials import PrivateKeyJWTOAuthProvider, SignedJWTParameters
    login, agent_token, _ = server.add_agent("runner")
    pem, jwk = rsa_key()
    assert ext(server, "POST", "/agent-keys", agent_token, {"jwk": jwk}).status == 201
    assert ext(server, "POST", "/agent-keys", agent_token, {"jwk": dict(jwk, n="AQAB")}).status == 422   # too small
    auth = PrivateKeyJWTOAuthProvider(server.url + "/mcp", Memory(), login, SignedJWTParameters(
        issuer=login, subject=login, signing_key=pem, signing_algorithm="RS256").create_assertion_provider(),
        issuer=server.url)
    names, me = asyncio.run(tools_as(server, auth))
    assert me == login and "get_me" in names
    # the assertion's rules, over the wire
    def token(claims, key=pem, **params):
        assertion = jwt.encode(dict({"iss": login, "sub": login, "aud": server.url, "jti": secrets.token_hex(8),
                                     "iat": int(time.time()), "exp": int(time.time()) + 120}, **claims), key,
                               algorithm="RS256", headers={"kid": "runtime-1"})
        return call(server, "POST", "/login/oauth/access_token", raw_body=urllib.parse.urlencode(dict({
            "grant_type": "client_credentials", "client_assertion": assertion, "resource": server.url + "/mcp",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}, **params)).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert token({}).status == 200
    fixed = {"jti": "the-same-jti-twice"}
    assert token(fixed).status == 200
    replayed = token(fixed)
    assert (replayed.status, replayed.json["error"]) == (401, "invalid_client") and "used already" in replayed.json[
        "error_description"]
    other_pem, _ = rsa_key()
    for claims, key, words in (({"aud": "https://elsewhere.example"}, pem, "aud"),
                               ({"exp": int(time.time()) - 300}, pem, "current"),
                               ({"exp": int(time.time()) + 3600}, pem, "at most 600"),
                               ({"sub": "someone-else"}, pem, "iss and sub"),
                               ({}, other_pem, "does not verify")):
        r = token(claims, key)
        assert r.status == 401 and words in r.json["error_description"], (claims, r)
    minted = token({}).json
    assert minted["access_token"].startswith("agr_") and api(server, "GET", "/user", minted["access_token"]).status == 401
    refused = server.app.store.all("SELECT * FROM audit WHERE action = 'mint_session_token' AND decision = 'deny'")
    assert len(refused) == 6 and all(r["actor"] is None for r in refused)


def test_rs256_verification_rejects_altered_signatures():
    import agentgit
    import jwt
    pem, jwk = rsa_key()
    assertion = jwt.encode({"x": 1}, pem, algorithm="RS256")
    header, claims, signature = assertion.split(".")
    n, e = agentgit.rsa_public_key(jwk)
    raw = agentgit.b64url_decode(signature)
    assert agentgit.rs256_valid(n, e, (header + "." + claims).encode(), raw)
    assert not agentgit.rs256_valid(n, e, (header + "." + claims + "x").encode(), raw)
    assert not agentgit.rs256_valid(n, e, (header + "." + claims).encode(), raw[:-1] + bytes([raw[-1] ^ 1]))
    assert not agentgit.rs256_valid(n, e, (header + "." + claims).encode(), raw[1:])
    assert not agentgit.rs256_valid(n, e, (header + "." + claims).encode(), (n + 1).to_bytes(len(raw), "big"))


def test_a_metadata_document_is_fetched_once_whoever_asks_at_once_and_within_its_deadline(
        tmp_path, metadata_host, test_ca, monkeypatch):
    """Anonymous callers that name one new document together wait for one fetch (three first fetches at
    once answered 500: each inserted the client); and a host that trickles its headers a byte at a time
    is cut off at the five-second deadline of the whole exchange, not held as long as it likes."""
    import socket
    import ssl
    import threading
    import agentgit
    from conftest import patch_everywhere
    base, documents = metadata_host
    url = base + "/together.json"
    documents["/together.json"] = (200, json.dumps({"client_id": url, "redirect_uris": [REDIRECT]}).encode())
    fetched, real = [], agentgit.fetch_client_document

    def slow_fetch(*args):
        fetched.append(1)
        time.sleep(0.3)
        return real(*args)
    patch_everywhere(monkeypatch, "fetch_client_document", slow_fetch)
    server = agentgit.make_server(tmp_path / "data", port=0, allow_loopback_client_documents=True).start()
    try:
        answers = []

        def token_request():
            answers.append(call(server, "POST", "/login/oauth/access_token", raw_body=urllib.parse.urlencode({
                "grant_type": "authorization_code", "client_id": url, "code": "nothing", "redirect_uri": REDIRECT,
                "code_verifier": "x" * 43}).encode(), headers={"Content-Type": "application/x-www-form-urlencoded",
                                                               "Accept": "application/json"}))
        threads = [threading.Thread(target=token_request) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert [a.status for a in answers] == [400] * 3 and all("error" in a.json for a in answers), answers
        assert len(fetched) == 1
        # a host that sends its status line a byte every half second
        listener = socket.create_server(("127.0.0.1", 0))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(test_ca["cert"], test_ca["key"])

        def trickle():
            conn, _ = listener.accept()
            with context.wrap_socket(conn, server_side=True) as tls:
                tls.recv(65536)
                for byte in b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n":
                    try:
                        tls.sendall(bytes([byte]))
                    except OSError:
                        return
                    time.sleep(0.5)
        threading.Thread(target=trickle, daemon=True).start()
        slow = "https://localhost:%d/slow.json" % listener.getsockname()[1]
        started = time.monotonic()
        answer = call(server, "POST", "/login/oauth/access_token", raw_body=urllib.parse.urlencode({
            "grant_type": "authorization_code", "client_id": slow, "code": "x"}).encode(), headers={
            "Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"})
        assert answer.status in (400, 401) and time.monotonic() - started < 8, (answer, time.monotonic() - started)
        listener.close()
    finally:
        server.stop()
