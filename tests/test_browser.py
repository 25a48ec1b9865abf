"""The web pages in a real browser: Debian's Chromium, headless, driven through chromedriver's WebDriver
protocol (plain HTTP, so the standard library is enough). A human signs in, invites an agent, approves
the merge it waits for and revokes a token, clicking what a person would click. Screenshots of each
step land in test-artifacts/screenshots/. `make test` installs Chromium with apt where it can."""
import base64
import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.request

import pytest

from conftest import ROOT, api, ext, grant_a_task, sweep

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
