"""The web pages in a real browser: Debian's Chromium, headless, driven through chromedriver's WebDriver
protocol (plain HTTP, so the standard library is enough). A human signs in, invites an agent, approves
the merge it waits for and revokes a token, clicking what a person would click. Screenshots of each
step land in test-artifacts/screenshots/. `make test` installs Chromium with apt where it can."""
import base64
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request

import pytest

from conftest import ROOT, Memory, api, call, ext, grant_a_task, sweep
import agentgit  # noqa: E402

pytestmark = sweep
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
SCREENSHOTS = os.path.join(ROOT, "test-artifacts", "screenshots")
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"      # the W3C WebDriver element key


class Chromium:
    """One headless Chromium session behind chromedriver."""

    def __init__(self, tmp_path):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.driver = subprocess.Popen([CHROMEDRIVER, "--port=%d" % port], stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
        self.base = "http://127.0.0.1:%d" % port
        for _ in range(100):
            try:
                urllib.request.urlopen(self.base + "/status", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        # as root, without a sandbox; no background traffic (this machine has no internet)
        options = {"binary": CHROMIUM, "args": [
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--window-size=1200,900", "--user-data-dir=%s" % (tmp_path / "chromium")]}
        self.session = self.call("POST", "/session", {"capabilities": {"alwaysMatch": {
            "browserName": "chrome", "goog:chromeOptions": options}}})["sessionId"]

    def call(self, method, path, body=None):
        request = urllib.request.Request(self.base + path, method=method, data=json.dumps(body or {}).encode()
                                         if method == "POST" else None, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.load(response)["value"]

    def at(self, path, body=None, method="POST"):
        return self.call(method, "/session/%s%s" % (self.session, path), body)

    def open(self, url):
        self.at("/url", {"url": url})

    def find(self, css):
        return self.at("/element", {"using": "css selector", "value": css})[ELEMENT]

    def type(self, css, text):
        self.at("/element/%s/value" % self.find(css), {"text": text})

    def click(self, css):
        self.at("/element/%s/click" % self.find(css), {})

    def text(self):
        return self.at("/source", method="GET")

    def wait_for(self, fragment, seconds=10):
        """The page's source once it holds ``fragment`` (a click returns before its page has loaded)."""
        deadline = time.monotonic() + seconds
        while True:
            text = self.text()
            if fragment in text or time.monotonic() > deadline:
                assert fragment in text, text[:3000]
                return text
            time.sleep(0.1)

    def screenshot(self, name):
        os.makedirs(SCREENSHOTS, exist_ok=True)
        with open(os.path.join(SCREENSHOTS, name + ".png"), "wb") as f:
            f.write(base64.b64decode(self.at("/screenshot", method="GET")))

    def close(self):
        try:
            self.call("DELETE", "/session/" + self.session)
        finally:
            self.driver.terminate()
            self.driver.wait(10)


@pytest.fixture
def chromium(tmp_path):
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("Chromium and chromedriver are not installed (make test installs Debian's chromium and "
                    "chromium-driver with apt when it runs as root)")
    browser = Chromium(tmp_path)
    yield browser
    browser.close()


def test_a_human_signs_in_invites_approves_and_revokes_in_a_browser(server, chromium):
    task = grant_a_task(server, "task:fix-payment-bug", ["read_code", "create_branch", "push_branch", "open_pr"],
                        {"branch_prefix": "agent/task-123/", "requires_approval": ["merge_pr"]})
    url = server.url
    chromium.open(url + "/settings/agents")                  # signed out: the sign-in page, then back here
    chromium.type('input[name="login"]', "alice")
    chromium.type('input[name="password"]', "pw")
    chromium.screenshot("1-sign-in")
    chromium.click("form[action='/login'] button")
    assert task["login"] in chromium.wait_for("Signed in as alice")
    chromium.screenshot("2-agents")
    # invite a new agent with write on a repository, in the API's words or GitHub's
    chromium.type('textarea[name="repo_grants"]', "alice/payments:write")
    chromium.click("form:has(input[name='action'][value='invite']) button")
    invite = re.search(r"<code>(agi_[0-9a-f]+)</code>", chromium.wait_for("Invite token"))
    chromium.screenshot("3-invite")
    _, newcomer, _ = server.add_agent("helper")
    assert ext(server, "POST", "/agent-bindings/confirm", newcomer, {"invite_token": invite.group(1)}).status == 201
    # the agent's merge waits for alice: she approves it on the approvals page
    token = task["token"]
    main = api(server, "GET", "/repos/alice/payments/git/ref/heads/main", token).json["object"]["sha"]
    api(server, "POST", "/repos/alice/payments/git/refs", token, {"ref": "refs/heads/agent/task-123/fix", "sha": main})
    api(server, "PUT", "/repos/alice/payments/contents/fix.py", token, {"message": "fix", "content": "eAo=",
                                                                        "branch": "agent/task-123/fix"})
    api(server, "POST", "/repos/alice/payments/pulls", token, {"title": "Fix the bug", "head": "agent/task-123/fix",
                                                               "base": "main"})
    assert api(server, "PUT", "/repos/alice/payments/pulls/1/merge", token, {}).status == 403
    chromium.open(url + "/approvals")
    assert "merge_pr" in chromium.wait_for("Fix the bug")
    chromium.screenshot("4-approval-waits")
    chromium.click("form:has(input[name='decision'][value='approve']) button")
    chromium.wait_for("Approved merge_pr on repo:alice/payments")
    chromium.screenshot("5-approved")
    assert api(server, "PUT", "/repos/alice/payments/pulls/1/merge", token, {}).json["merged"] is True
    # a token, revoked: the page asks once more
    mine = ext(server, "POST", "/user/tokens", task["alice"], {"name": "laptop", "scopes": ["repo"]}).json["token"]
    chromium.open(url + "/settings/tokens")
    chromium.click("form:has(input[name='token_id'][value='%d']) button" % server.app.store.one(
        "SELECT id FROM tokens WHERE name = 'laptop'")["id"])
    chromium.wait_for("Revoke the token laptop")
    chromium.screenshot("6-confirm-revoke")
    chromium.click("form:has(input[name='confirmed']) button")
    chromium.wait_for("Revoked")
    assert api(server, "GET", "/user", mine).status == 401
    chromium.screenshot("7-revoked")


# -- OAuth sign-in as an MCP client does it: the system browser, a loopback redirect ------------------

class LoopbackCallback:
    """The redirect URI an MCP client (Claude Code, VS Code, Cursor) listens on while its user signs in:
    http://127.0.0.1:PORT/callback, which takes one redirect and says the window may close."""

    def __init__(self):
        outer = self
        self.query, self.arrived = None, threading.Event()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                if urllib.parse.urlsplit(self.path).path != "/callback":       # the browser's /favicon.ico
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                outer.query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
                body = b"<!doctype html><title>Signed in</title><p>You can close this window."
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                outer.arrived.set()

            def log_message(self, *args):
                pass
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.uri = "http://127.0.0.1:%d/callback" % self.httpd.server_address[1]

    def wait(self):
        assert self.arrived.wait(20), "the browser never came back to the client's redirect URI"
        self.arrived.clear()
        return self.query

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def loopback():
    callback = LoopbackCallback()
    yield callback
    callback.close()


def sign_in_if_asked(chromium, login="alice", password="pw"):
    """On the sign-in page (the browser was signed out), sign in; the page then goes back where it was."""
    if 'action="/login"' in chromium.text():
        chromium.type('input[name="login"]', login)
        chromium.type('input[name="password"]', password)
        chromium.click("form[action='/login'] button")


def person_at_consent(chromium, url, decision, shot):
    """What a person does when her MCP client opens ``url`` in her browser: sign in if asked, read
    the consent page, click ``decision``."""
    chromium.open(url)
    sign_in_if_asked(chromium)
    page = chromium.wait_for("Authorize application")
    chromium.screenshot(shot)
    chromium.click("form:has(input[name='decision'][value='%s']) button" % decision)
    return page


def mcp_client_signs_in(server, chromium, loopback, metadata_url=None):
    """The MCP SDK's OAuth client from the 401 of /mcp to a tool call; the person approves in Chromium.
    Returns (what the tools said, the consent page, the SDK's storage)."""
    import asyncio
    import httpx2
    from mcp import Client
    from mcp.client.auth import OAuthClientProvider
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared.auth import AuthorizationCodeResult, OAuthClientMetadata
    storage, seen = Memory(), {}

    async def open_in_browser(url):
        seen["authorize"] = url
        seen["page"] = person_at_consent(chromium, url, "approve", "mcp-consent")

    async def callback():
        back = await asyncio.to_thread(loopback.wait)
        seen["redirect"] = back
        return AuthorizationCodeResult(code=back["code"], state=back.get("state"), iss=back.get("iss"))
    auth = OAuthClientProvider(server.url + "/mcp", OAuthClientMetadata(
        redirect_uris=[loopback.uri], client_name="agent host", grant_types=["authorization_code", "refresh_token"],
        token_endpoint_auth_method="none"), storage, redirect_handler=open_in_browser, callback_handler=callback,
        client_metadata_url=metadata_url)

    async def session():
        async with Client(streamable_http_client(server.url + "/mcp", http_client=httpx2.AsyncClient(auth=auth))) as c:
            return json.loads((await c.call_tool("get_me", {})).content[0].text)["login"]
    return asyncio.run(session()), seen, storage


def check_redirects(server, seen):
    """PKCE and the resource were asked for; the redirect carried the state and named this issuer."""
    asked = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(seen["authorize"]).query))
    assert asked["code_challenge_method"] == "S256" and asked["resource"] == server.url + "/mcp"
    assert seen["redirect"]["state"] == asked["state"] and seen["redirect"]["iss"] == server.url


def deny_in_browser(server, chromium, loopback, client_id):
    """The person clicks Deny: the client hears access_denied, with its state, from this issuer."""
    query = urllib.parse.urlencode({"response_type": "code", "client_id": client_id, "redirect_uri": loopback.uri,
                                    "state": "st-123", "code_challenge": "x" * 43, "code_challenge_method": "S256",
                                    "resource": server.url + "/mcp"})
    person_at_consent(chromium, server.url + "/login/oauth/authorize?" + query, "deny", "mcp-deny")
    back = loopback.wait()
    assert (back["error"], back["state"], back["iss"]) == ("access_denied", "st-123", server.url)


def test_an_mcp_client_signs_in_through_chromium_by_dynamic_registration(server, chromium, loopback):
    server.add_user("alice", password="pw")
    me, seen, storage = mcp_client_signs_in(server, chromium, loopback)      # signed out at the start
    assert me == "alice" and storage.client_info.client_id.startswith("agc_")
    assert "registered by itself: nobody vouches for it" in seen["page"] and loopback.uri in seen["page"]
    check_redirects(server, seen)
    deny_in_browser(server, chromium, loopback, storage.client_info.client_id)


def test_an_mcp_client_signs_in_through_chromium_by_metadata_document(tmp_path, chromium, loopback, metadata_host):
    base, documents = metadata_host
    url = base + "/agent-host/client.json"
    documents["/agent-host/client.json"] = (200, json.dumps({
        "client_id": url, "client_name": "Agent Host", "redirect_uris": [loopback.uri], "response_types": ["code"],
        "grant_types": ["authorization_code", "refresh_token"], "token_endpoint_auth_method": "none"}).encode())
    srv = agentgit.make_server(tmp_path / "data", port=0, allow_loopback_client_documents=True).start()
    try:
        srv.add_user("alice", password="pw")
        me, seen, storage = mcp_client_signs_in(srv, chromium, loopback, metadata_url=url)
        assert me == "alice" and storage.client_info.client_id == url
        assert "described by its own document at localhost" in seen["page"]
        check_redirects(srv, seen)
        deny_in_browser(srv, chromium, loopback, url)
    finally:
        srv.stop()


def test_the_device_flow_keeps_its_code_across_sign_in(server, chromium):
    """gh's device flow: the person opens the verification URI with the code in it, signed out; after
    signing in the code is still there, and approving it signs the device in."""
    server.add_user("alice", password="pw")
    asked = call(server, "POST", "/login/device/code", raw_body=b"client_id=178c6fc778ccc68e1d6a&scope=repo",
                 headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}).json
    chromium.open(asked["verification_uri"] + "?user_code=" + asked["user_code"])
    sign_in_if_asked(chromium)
    chromium.wait_for('value="%s"' % asked["user_code"])
    chromium.click("form[action='/login/device'] button")
    chromium.wait_for("Authorize device")
    chromium.click("form:has(input[name='decision'][value='approve']) button")
    chromium.wait_for("Approved")
    polled = call(server, "POST", "/login/oauth/access_token", raw_body=urllib.parse.urlencode({
        "client_id": "178c6fc778ccc68e1d6a", "device_code": asked["device_code"],
        "grant_type": "urn:ietf:params:oauth:grant-type:device_code"}).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}).json
    assert api(server, "GET", "/user", polled["access_token"]).json["login"] == "alice"


def links_of(page):
    return sorted(set(re.findall(r'href="(/[^"#]*)"', page)))


def test_alice_follows_the_approval_url_signed_out_and_approves_on_its_page(server, chromium):
    """approval_url is a page: signed out, alice signs in and comes back to it, sees what the agent asks
    (the pull request at its head, its diff), and approves; the pull request's page says the merge waits
    before and who approved it after; the retried merge lands; every link on those pages opens."""
    from conftest import Browser
    task = grant_a_task(server, "task:fix-payment-bug", ["read_code", "create_branch", "push_branch", "open_pr",
                                                          "merge_pr"],
                        {"branch_prefix": "agent/task-123/", "requires_approval": ["merge_pr"]})
    token = task["token"]
    main = api(server, "GET", "/repos/alice/payments/git/ref/heads/main", token).json["object"]["sha"]
    api(server, "POST", "/repos/alice/payments/git/refs", token, {"ref": "refs/heads/agent/task-123/fix", "sha": main})
    api(server, "PUT", "/repos/alice/payments/contents/fix.py", token, {"message": "fix", "content": "eAo=",
                                                                        "branch": "agent/task-123/fix"})
    pull = api(server, "POST", "/repos/alice/payments/pulls", token, {
        "title": "Fix the bug", "head": "agent/task-123/fix", "base": "main"}).json
    waiting = api(server, "PUT", "/repos/alice/payments/pulls/%d/merge" % pull["number"], token, {})
    assert waiting.status == 403
    approval_url = waiting.json["approval_url"]
    assert approval_url.startswith(server.url + "/approvals/ap_")
    chromium.open(approval_url)                                       # signed out: sign in, then back here
    sign_in_if_asked(chromium)
    page = chromium.wait_for("Fix the bug")
    assert "merge_pr" in page and task["login"] in page and "task:fix-payment-bug" in page
    assert "Approvals (1 waiting)" in page and "Signed in as alice" in page       # every page's navigation says
    chromium.screenshot("8-approval-page")
    browser = Browser(server)
    browser.sign_in("alice", "pw")
    pull_path = "/alice/payments/pull/%d" % pull["number"]
    _, before = browser.request("GET", pull_path)
    assert "Merge approvals" in before and "waiting for user:alice" in before and "decide" in before
    assert "(for alice, under task:fix-payment-bug)" in before           # the agent's pull request, and for whom
    chromium.click("form:has(input[name='decision'][value='approve']) button")
    chromium.wait_for("Approved merge_pr on repo:alice/payments")
    merged = api(server, "PUT", "/repos/alice/payments/pulls/%d/merge" % pull["number"], token, {})
    assert merged.status == 200 and merged.json["merged"] is True
    _, after = browser.request("GET", pull_path)
    assert "approved by user:alice" in after and "and used at" in after
    merged_row = server.app.store.one("SELECT * FROM audit WHERE action = 'merge_pr' AND decision = 'allow'")
    explained = agentgit.explain(merged_row)                # agent → delegator → task → grant → approval → effect
    for link_of_the_chain in (task["login"], "acting for      alice", "task:fix-payment-bug", task["grant"]["id"],
                              "approved by alice (approval %s)" % approval_url.rsplit("/", 1)[1], "merged #"):
        assert link_of_the_chain in explained, (link_of_the_chain, explained)
    _, decided = browser.request("GET", urllib.parse.urlsplit(approval_url).path)
    assert "approved by user:alice" in decided
    for page in (before, after, decided):
        for link in links_of(page):
            resp, _ = browser.request("GET", link)
            assert resp.status == 200, link
    for url in (pull["diff_url"], pull["patch_url"]):
        resp, text = browser.request("GET", urllib.parse.urlsplit(url).path)
        assert resp.status == 200 and "fix.py" in text and resp.getheader("Content-Type").startswith("text/plain")


def test_alice_grants_follows_and_revokes_a_task_from_the_console(server, chromium, tmp_path):
    """The delegation console, clicked as a person clicks it: a task grant made on the page (agent,
    resource, actions, what needs approval, branch prefix) goes through the API's own checks; the agent
    works under it; its page shows what the agent did; revoked there (asked once more), its tokens stop."""
    from conftest import alice_and_her_agent, commit_file, git, remote
    alice, login, agent = alice_and_her_agent(server)
    chromium.open(server.url + "/settings/tasks")
    sign_in_if_asked(chromium)
    chromium.wait_for("Grant a task")
    chromium.type('input[name="task"]', "fix-payment-bug")           # after the field's "task:"
    chromium.type('textarea[name="resources"]', "repo:alice/payments")
    for action in ("read_code", "create_branch", "push_branch", "open_pr"):
        chromium.click("input[name='actions'][value='%s']" % action)
    chromium.click("input[name='requires_approval'][value='merge_pr']")
    chromium.type('input[name="branch_prefix"]', "agent/task-123/")
    chromium.screenshot("9-grant-a-task")
    chromium.click("form:has(input[name='action'][value='create']) button")
    page = chromium.wait_for("Granted tg_")
    grant = re.search(r"Granted (tg_[0-9a-f]+)", page).group(1)
    chromium.screenshot("10-granted")
    made = ext(server, "GET", "/task-grants/" + grant, alice).json
    assert made["task"] == "task:fix-payment-bug" and made["constraints"]["branch_prefix"] == "agent/task-123/"
    assert made["constraints"]["requires_approval"] == ["merge_pr"] and "merge_pr" not in made["actions"]
    token = ext(server, "POST", "/task-grants/%s/tokens" % grant, agent, {}).json["token"]
    work = str(tmp_path / "work")
    git(str(tmp_path), "clone", "-q", remote(server, "alice/payments", token), work)
    commit_file(work, "fix.txt", "fixed\n")
    git(work, "push", "-q", "origin", "HEAD:agent/task-123/fix")
    chromium.open(server.url + "/settings/tasks/" + grant)
    assert "create_branch" in chromium.wait_for("Activity") and login in chromium.text()
    chromium.screenshot("11-grant-activity")
    # who reaches alice/payments now: her, and her agent twice (by its invite, and by this task), drawn
    chromium.open(server.url + "/access-review?resource=repo:alice/payments")
    drawn = chromium.wait_for("Access review")
    chromium.find("svg rect")                                       # the graph is drawn, not scripted
    assert ">agent:%s</text>" % login in drawn and "task grant %s" % grant in drawn and "<script" not in drawn
    chromium.screenshot("11b-access-review")
    chromium.open(server.url + "/settings/tasks")
    chromium.click("form:has(input[name='grant'][value='%s']) button" % grant)
    chromium.wait_for("Revoke the task grant %s" % grant)
    chromium.click("form:has(input[name='confirmed']) button")
    chromium.wait_for("Revoked %s" % grant)
    chromium.screenshot("12-grant-revoked")
    assert api(server, "GET", "/user", token).status == 401
