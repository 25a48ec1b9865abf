"""Authorization code with PKCE: registered apps, exact redirects, consent, single-use codes,
refresh rotation with reuse detection, and the RFC metadata documents."""
import base64
import hashlib
import secrets
import urllib.parse

from conftest import Browser, api, call, ext
from test_oauth import form_post


def pkce():
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def authorize(browser, client_id, redirect_uri, challenge, decision="approve", state="xyz", scope="repo"):
    query = urllib.parse.urlencode({"response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri,
                                    "scope": scope, "state": state, "code_challenge": challenge,
                                    "code_challenge_method": "S256"})
    resp, page = browser.request("GET", "/login/oauth/authorize?" + query)
    assert resp.status == 200, page
    form = {k: v for k, v in urllib.parse.parse_qsl(query)}
    resp, _ = browser.request("POST", "/login/oauth/authorize", dict(form, csrf=browser.csrf(page), decision=decision))
    assert resp.status == 302
    target = urllib.parse.urlsplit(resp.getheader("Location"))
    return target, dict(urllib.parse.parse_qsl(target.query))


def test_code_flow_with_pkce_and_refresh_rotation(server):
    alice = server.add_user("alice", password="pw")
    app = ext(server, "POST", "/oauth/apps", alice, {"name": "Tool", "redirect_uris": ["http://127.0.0.1/cb"]}).json
    assert app["client_id"].startswith("agc_") and "client_secret" not in app
    browser = Browser(server)
    browser.sign_in("alice", "pw")
    verifier, challenge = pkce()
    target, answer = authorize(browser, app["client_id"], "http://127.0.0.1:53117/cb", challenge)   # any loopback port
    assert target.port == 53117 and answer["state"] == "xyz" and answer["iss"] == server.url
    token_request = {"grant_type": "authorization_code", "client_id": app["client_id"], "code": answer["code"],
                     "redirect_uri": "http://127.0.0.1:53117/cb", "code_verifier": "wrong" * 10}
    assert form_post(server, "/login/oauth/access_token", token_request).json["error"] == "invalid_grant"
    tokens = form_post(server, "/login/oauth/access_token", dict(token_request, code_verifier=verifier)).json
    assert tokens["access_token"].startswith("ago_") and tokens["scope"] == "repo" and tokens["expires_in"] == 28800
    assert api(server, "GET", "/user", tokens["access_token"]).json["login"] == "alice"
    # the code is single use, and replaying it revokes what it issued
    replay = form_post(server, "/login/oauth/access_token", dict(token_request, code_verifier=verifier)).json
    assert replay["error"] == "invalid_grant"
    assert api(server, "GET", "/user", tokens["access_token"]).status == 401
    # a fresh authorization; refresh rotates, and reusing an old refresh token revokes the family
    verifier, challenge = pkce()
    _, answer = authorize(browser, app["client_id"], "http://127.0.0.1/cb", challenge)
    first = form_post(server, "/login/oauth/access_token", {
        "grant_type": "authorization_code", "client_id": app["client_id"], "code": answer["code"],
        "redirect_uri": "http://127.0.0.1/cb", "code_verifier": verifier}).json
    second = form_post(server, "/login/oauth/access_token", {"grant_type": "refresh_token", "client_id": app["client_id"],
                                                             "refresh_token": first["refresh_token"]}).json
    assert second["refresh_token"] != first["refresh_token"]
    assert api(server, "GET", "/user", first["access_token"]).status == 401        # rotated out
    assert api(server, "GET", "/user", second["access_token"]).status == 200
    reuse = form_post(server, "/login/oauth/access_token", {"grant_type": "refresh_token", "client_id": app["client_id"],
                                                            "refresh_token": first["refresh_token"]}).json
    assert reuse["error"] == "invalid_grant"
    assert api(server, "GET", "/user", second["access_token"]).status == 401       # the whole family is gone


def test_refusals_never_redirect_to_strangers(server):
    alice = server.add_user("alice", password="pw")
    app = ext(server, "POST", "/oauth/apps", alice, {"name": "Tool", "redirect_uris": ["https://tool.example/cb"],
                                                      "confidential": True}).json
    assert app["client_secret"].startswith("agcs_")
    browser = Browser(server)
    browser.sign_in("alice", "pw")
    verifier, challenge = pkce()
    base = {"response_type": "code", "client_id": app["client_id"], "redirect_uri": "https://tool.example/cb",
            "code_challenge": challenge, "code_challenge_method": "S256", "state": "s"}
    for bad in ({"client_id": "unknown"}, {"redirect_uri": "https://evil.example/cb"},
                {"redirect_uri": "https://tool.example/cb/../x"}):
        resp, page = browser.request("GET", "/login/oauth/authorize?" + urllib.parse.urlencode(dict(base, **bad)))
        assert resp.status == 400 and resp.getheader("Location") is None, bad
    resp, _ = browser.request("GET", "/login/oauth/authorize?" + urllib.parse.urlencode(dict(
        base, code_challenge_method="plain")))
    location = urllib.parse.parse_qs(urllib.parse.urlsplit(resp.getheader("Location")).query)
    assert resp.status == 302 and location["error"] == ["invalid_request"] and location["state"] == ["s"]
    target, answer = authorize(browser, app["client_id"], "https://tool.example/cb", challenge, decision="deny")
    assert answer["error"] == "access_denied" and target.hostname == "tool.example"
    _, answer = authorize(browser, app["client_id"], "https://tool.example/cb", challenge)
    request = {"grant_type": "authorization_code", "client_id": app["client_id"], "code": answer["code"],
               "redirect_uri": "https://tool.example/cb", "code_verifier": verifier}
    assert form_post(server, "/login/oauth/access_token", request).status == 401          # no secret
    assert form_post(server, "/login/oauth/access_token", dict(request, redirect_uri="https://tool.example/other",
                                                               client_secret=app["client_secret"])).json[
        "error"] == "invalid_grant"
    # signed out: the authorize page sends the human to sign in first
    resp, _ = Browser(server).request("GET", "/login/oauth/authorize?" + urllib.parse.urlencode(base))
    assert resp.status == 303 and resp.getheader("Location").startswith("/login?next=")
    assert ext(server, "POST", "/oauth/apps", alice, {"name": "x", "redirect_uris": ["http://evil.example/cb"]}).status == 422


def test_metadata_documents(server):
    meta = call(server, "GET", "/.well-known/oauth-authorization-server").json
    assert meta["issuer"] == server.url and meta["code_challenge_methods_supported"] == ["S256"]
    assert meta["token_endpoint"] == server.url + "/login/oauth/access_token"
    resource = call(server, "GET", "/.well-known/oauth-protected-resource").json
    assert resource["authorization_servers"] == [server.url]


def test_a_client_cannot_dress_its_name_as_the_servers_words(server):
    """Consent phishing: a self-registered client named with a right-to-left override reversed the
    "nobody vouches for it" warning on the consent page. Such a name is refused at registration; one
    that got in anyway (a row from before, a metadata document) is shown as plain text, in quotes, as
    the client's own claim; and a self-registered client, which registers the code grant only, gets no
    device code to put before a person on the device page."""
    server.add_user("alice", password="pw")
    redirect = "http://127.0.0.1:9/cb"
    for name in ("Acme \u202eti rof sehcuov ydobon", "line\nbreak", "zero\u200bwidth", "bell\x07"):
        refused = call(server, "POST", "/register", body={"redirect_uris": [redirect], "client_name": name})
        assert refused.status == 400 and refused.json["error"] == "invalid_client_metadata", name
    registered = call(server, "POST", "/register", body={"redirect_uris": [redirect], "client_name": "Helper"}).json
    with server.app.store.transaction() as db:          # as a row from before the check would hold it
        db.execute("UPDATE oauth_apps SET name = ? WHERE client_id = ?", ("Helper\u202e\u2066 (trusted)",
                                                                          registered["client_id"]))
    browser = Browser(server)
    browser.sign_in("alice", "pw")
    query = urllib.parse.urlencode({"response_type": "code", "client_id": registered["client_id"],
                                    "redirect_uri": redirect, "scope": "repo", "code_challenge": pkce()[1],
                                    "code_challenge_method": "S256"})
    resp, page = browser.request("GET", "/login/oauth/authorize?" + query)
    assert resp.status == 200
    assert "&ldquo;Helper (trusted)&rdquo; (the name it gives itself)" in page
    assert "\u202e" not in page and "\u2066" not in page and "nobody vouches for it" in page
    device = form_post(server, "/login/device/code", {"client_id": registered["client_id"]})
    assert device.status == 400 and device.json["error"] == "unauthorized_client"
