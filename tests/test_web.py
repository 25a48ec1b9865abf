"""The human web pages: sign-in with CSRF, sessions that never authenticate the API, /settings/agents."""
import http.client
import re

from conftest import Browser, CLI, api, ext


def test_sign_in_and_manage_an_agent(server):
    server.add_user("alice", password="correct horse")
    login, agent, _ = server.add_agent("bot")
    b = Browser(server)
    resp, _ = b.request("GET", "/settings/agents")
    assert resp.status == 303 and resp.getheader("Location").startswith("/login?next=")
    resp, text = b.request("GET", "/login")
    assert resp.getheader("X-Frame-Options") == "DENY" and "<form" in text
    cookie = resp.getheader("Set-Cookie")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    resp, _ = b.sign_in("alice", "correct horse")
    assert resp.status == 303 and resp.getheader("Location") == "/settings/agents"
    assert "HttpOnly" in resp.getheader("Set-Cookie")
    # the session cookie is for pages only: the API does not take it
    conn = http.client.HTTPConnection(b.host, b.port)
    conn.request("GET", "/api/v3/user", headers={"Cookie": "agentgit_session=" + b.jar["agentgit_session"]})
    assert conn.getresponse().status == 401
    resp, text = b.request("GET", "/settings/agents")
    assert resp.status == 200 and "Signed in as alice" in text and "none yet" in text
    # create an invite on the page; the agent consents with its own token over the API
    resp, text = b.request("POST", "/settings/agents", {"csrf": b.csrf(text), "action": "invite", "repo_grants": ""})
    invite = re.search(r"<code>(agi_[0-9a-f]+)</code>", text).group(1)
    assert ext(server, "POST", "/agent-bindings/confirm", agent, {"invite_token": invite}).status == 201
    resp, text = b.request("GET", "/settings/agents")
    assert login in text and "active" in text
    # suspend from the page: the agent is refused, and the audit row came from the web surface
    resp, text = b.request("POST", "/settings/agents", {"csrf": b.csrf(text), "action": "suspend", "agent": login})
    assert resp.status == 200 and "suspended %s" % login in text
    assert api(server, "GET", "/user", agent).status == 403
    row = server.app.store.one("SELECT * FROM audit WHERE action = 'manage_agent' ORDER BY id DESC")
    assert (row["surface"], row["actor"], row["decision"]) == ("web", "alice", "allow")
    # a destructive button asks once more, and nothing happens until it is confirmed
    resp, text = b.request("POST", "/settings/agents", {"csrf": b.csrf(text), "action": "reset-token", "agent": login})
    assert "Revoke every token and key of %s" % login in text and 'name="confirmed" value="yes"' in text
    assert 'href="/settings/agents">Cancel</a>' in text and "aga_" not in text
    form = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', text))
    resp, text = b.request("POST", "/settings/agents", form)
    new = re.search(r"<code>(aga_[0-9a-f]+)</code>", text).group(1)
    b.request("POST", "/settings/agents", {"csrf": b.csrf(text), "action": "resume", "agent": login})
    assert api(server, "GET", "/user", new).json["login"] == login
    # sign out ends the session
    _, text = b.request("GET", "/settings/agents")
    resp, _ = b.request("POST", "/logout", {"csrf": b.csrf(text)})
    assert resp.status == 303 and b.request("GET", "/settings/agents")[0].status == 303


def test_csrf_wrong_password_rate_limit_and_redirects(server):
    server.add_user("alice", password="pw")
    server.add_user("mallory", password="pw2")
    login, agent, _ = server.add_agent("bot")
    b = Browser(server)
    resp, text = b.sign_in("alice", "wrong")
    assert resp.status == 401 and "Wrong login, password or code" in text
    assert server.app.store.one("SELECT decision FROM audit WHERE action = 'sign_in'")["decision"] == "deny"
    resp, _ = b.sign_in("nobody", "x")
    assert resp.status == 401
    # a forged form (no CSRF token) is refused, signed in or not
    resp, _ = b.request("POST", "/login", {"login": "alice", "password": "pw"})
    assert resp.status == 403
    resp, _ = b.sign_in("alice", "pw", next_path="//evil.example/")
    assert resp.getheader("Location") == "/settings/agents"           # no open redirect
    resp, _ = b.request("POST", "/settings/agents", {"action": "suspend", "agent": login})
    assert resp.status == 403 and api(server, "GET", "/user", agent).status == 200
    # another human cannot act on alice's agent, even with a valid form
    m = Browser(server)
    m.sign_in("mallory", "pw2")
    _, text = m.request("GET", "/settings/agents")
    resp, _ = m.request("POST", "/settings/agents", {"csrf": m.csrf(text), "action": "suspend", "agent": login})
    assert resp.status in (403, 404)
    # too many attempts from one address: 429
    c = Browser(server)
    statuses = [c.sign_in("alice", "guess%d" % i)[0].status for i in range(12)]
    assert 429 in statuses and statuses.index(429) <= 10


def test_settings_tokens_page(server):
    server.add_user("alice", password="pw")
    b = Browser(server)
    b.sign_in("alice", "pw")
    resp, page = b.request("GET", "/settings/tokens")
    assert resp.status == 200 and "initial" in page
    resp, page = b.request("POST", "/settings/tokens", {"csrf": b.csrf(page), "action": "create", "name": "laptop",
                                                        "scope_repo": "1", "days": "30"})
    token = re.search(r"<code>(agp_[0-9a-f]+)</code>", page).group(1)
    me = api(server, "GET", "/user", token)
    assert me.json["login"] == "alice" and me.headers["x-oauth-scopes"] == "repo"
    token_id = re.findall(r'name="token_id" value="(\d+)"', page)[-1]
    resp, page = b.request("POST", "/settings/tokens", {"csrf": b.csrf(page), "action": "revoke", "token_id": token_id})
    assert "Revoke the token" in page and api(server, "GET", "/user", token).status == 200     # not yet
    resp, page = b.request("POST", "/settings/tokens", dict(re.findall(
        r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page)))
    assert "Revoked" in page and api(server, "GET", "/user", token).status == 401
    resp, _ = b.request("POST", "/settings/tokens", {"csrf": b.csrf(page), "action": "create", "name": "", "days": "x"})
    assert resp.status == 422
    resp, _ = b.request("POST", "/settings/tokens", {"action": "create", "name": "no csrf"})
    assert resp.status == 403


def test_passwd_and_totp_from_the_cli(server):
    """The CLI sets a password and turns on TOTP; sign-in then needs the current code."""
    import base64
    import subprocess
    import time
    import urllib.parse
    import agentgit
    server.add_user("alice")
    data = server.app.config.data_dir

    def cli(*args, stdin=None):
        return subprocess.run([*CLI, "user", *args, "--data", data], input=stdin,
                              capture_output=True, text=True)
    assert "at least 8" in cli("passwd", "alice", "--password-stdin", stdin="short\n").stderr
    assert cli("passwd", "alice", "--password-stdin", stdin="long enough\n").returncode == 0
    assert Browser(server).sign_in("alice", "long enough")[0].status == 303
    uri = cli("totp", "alice").stdout.strip()
    assert uri.startswith("otpauth://totp/agentgit:alice?secret=")
    secret = urllib.parse.parse_qs(urllib.parse.urlsplit(uri).query)["secret"][0]
    key = base64.b32decode(secret + "=" * (-len(secret) % 8))
    row = server.app.store.one("SELECT totp_secret FROM accounts WHERE login = 'alice'")
    assert secret not in row["totp_secret"] and key.hex() != row["totp_secret"]          # encrypted at rest
    resp, text = Browser(server).sign_in("alice", "long enough")
    assert resp.status == 401                                                             # no code: refused
    b = Browser(server)
    _, page = b.request("GET", "/login")
    resp, _ = b.request("POST", "/login", {"csrf": b.csrf(page), "login": "alice", "password": "long enough",
                                           "totp": agentgit.totp_code(key, time.time()), "next": "/settings/agents"})
    assert resp.status == 303
    assert cli("totp", "alice", "--disable").stdout.strip() == "TOTP off"
    assert Browser(server).sign_in("alice", "long enough")[0].status == 303


def test_totp_matches_rfc_6238_vectors():
    import agentgit
    secret = b"12345678901234567890"
    assert [agentgit.totp_code(secret, t) for t in (59, 1111111109, 2000000000)] == ["287082", "081804", "279037"]


def test_every_post_page_checks_its_csrf_token_before_its_handler_runs(server):
    """The page decorator checks the form's CSRF token for every POST page, so none can forget it: a
    signed-in browser whose form lacks the token, or carries another session's, changes nothing."""
    import agentgit
    server.add_user("alice", password="pw")
    b = Browser(server)
    b.sign_in("alice", "pw")
    audit_rows = server.app.store.one("SELECT count(*) FROM audit")[0]
    posts = sorted(r.pattern for r in agentgit.ROUTES["POST"] if r.surface == "web")
    assert {"/login", "/logout", "/settings/agents", "/settings/tokens", "/approvals", "/login/device",
            "/login/oauth/authorize"} <= set(posts)
    # GitHub's manifest flow posts another site's form to these by design: they change nothing (the page
    # they show asks the person to confirm, with a CSRF token), as the audit's count below checks
    cross_site = {"/settings/apps/new", "/organizations/{org}/settings/apps/new"}
    assert cross_site <= set(posts)
    for path in sorted(set(posts) - cross_site):
        for form in ({"action": "invite", "login": "alice", "password": "pw"},
                     {"csrf": "not-this-session", "action": "invite", "login": "alice", "password": "pw"}):
            resp, text = b.request("POST", path, form)
            assert resp.status == 403 and "did not come from this site" in text, (path, resp.status)
    for path in cross_site:
        resp, _ = b.request("POST", path.replace("{org}", "acme"), {"manifest": '{"name": "x"}'})
        assert resp.status in (404, 422), (path, resp.status)
    assert server.app.store.one("SELECT count(*) FROM audit")[0] == audit_rows
    assert "agentgit_session" in b.jar       # not even signed out


def test_the_pages_speak_the_apis_words_name_the_app_and_lead_back(server):
    alice = server.add_user("alice", password="pw")
    api(server, "POST", "/user/repos", alice, {"name": "app"})
    b = Browser(server)
    b.sign_in("alice", "pw")
    _, text = b.request("GET", "/settings/agents")
    assert "read (or pull), triage, write (or push, the default), maintain, admin" in text
    resp, text = b.request("POST", "/settings/agents", {"csrf": b.csrf(text), "action": "invite",
                                                        "repo_grants": "alice/app:read\nalice/app:write"})
    assert resp.status == 200 and "Invite token" in text
    invite = server.app.store.one("SELECT grants FROM agent_invites ORDER BY id DESC")["grants"]
    assert '"pull"' in invite and '"push"' in invite
    # an error page says what went wrong and leads back to the form it came from
    resp, text = b.request("POST", "/settings/agents", {"csrf": b.csrf(text), "action": "invite",
                                                        "repo_grants": "alice/app:owner"})
    assert resp.status == 422 and "read (or pull), triage" in text and '<a href="/settings/agents">Back</a>' in text
    # the device page names the app that asks, not its client id
    client = ext(server, "POST", "/oauth/apps", alice, {"name": "Deploy bot", "redirect_uris": []}).json["client_id"]
    code = call_form(server, "/login/device/code", {"client_id": client})["user_code"]
    _, text = b.request("GET", "/login/device")
    _, text = b.request("POST", "/login/device", {"csrf": b.csrf(text), "user_code": code})
    assert "the app <strong>&ldquo;Deploy bot&rdquo; (the name it gives itself)</strong> (registered by alice) asks " \
           "to act as <strong>alice</strong>" in text and client not in text
    gh = call_form(server, "/login/device/code", {"client_id": "178c6fc778ccc68e1d6a"})["user_code"]
    _, text = b.request("POST", "/login/device", {"csrf": b.csrf(text), "user_code": gh})
    assert "<strong>the GitHub CLI (gh)</strong> asks to act as" in text


def call_form(server, path, form):
    import json
    import urllib.parse
    conn = http.client.HTTPConnection(*server.httpd.server_address[:2])
    conn.request("POST", path, urllib.parse.urlencode(form), {"Content-Type": "application/x-www-form-urlencoded",
                                                             "Accept": "application/json"})
    out = json.loads(conn.getresponse().read())
    conn.close()
    return out


def test_a_consent_page_lets_its_form_redirect_to_the_clients_origin_and_nowhere_else():
    """Browsers hold the redirect after a form to form-action; the consent page names the redirect
    URI's origin there, exactly, and a URI that could smuggle a directive in adds nothing."""
    import agentgit
    base = agentgit.PAGE_HEADERS["Content-Security-Policy"]
    for uri, source in (("http://127.0.0.1:33418/callback", "http://127.0.0.1:33418"),
                        ("https://app.example/cb?x=1", "https://app.example"), ("http://[::1]:8080/cb", "http://[::1]:8080"),
                        ("vscode://vscode.github-authentication/did-authenticate", "vscode:")):
        assert agentgit.csp_allowing_form_redirect_to(uri) == base.replace("form-action 'self'",
                                                                           "form-action 'self' " + source), uri
    for uri in ("http://a.example;script-src *:1/cb", "http://a b.example/cb", "java script:x", "http://h:99999/x",
                "https://x'unsafe-inline'/"):
        assert agentgit.csp_allowing_form_redirect_to(uri) == base, uri
