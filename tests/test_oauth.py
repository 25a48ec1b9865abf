"""OAuth device flow (RFC 8628): the protocol over HTTP, and the real `gh auth login --web` approved
through the page by a signed-in human with a cookie jar while gh polls."""
import os
import re
import selectors
import subprocess
import time
import urllib.parse

from conftest import GH_HOST, Browser, api, call, ext, gh


def form_post(server, path, fields, accept_json=True):
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if accept_json:
        headers["Accept"] = "application/json"
    return call(server, "POST", path, raw_body=urllib.parse.urlencode(fields).encode(), headers=headers)


def test_device_flow_protocol(server):
    alice = server.add_user("alice")
    r = form_post(server, "/login/device/code", {"client_id": "cli", "scope": "repo read:org bogus"})
    code = r.json
    assert re.fullmatch(r"[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}", code["user_code"])
    assert (code["expires_in"], code["interval"]) == (900, 5) and len(code["device_code"]) == 40
    assert code["verification_uri"] == server.url + "/login/device"
    poll = {"client_id": "cli", "device_code": code["device_code"],
            "grant_type": "urn:ietf:params:oauth:grant-type:device_code"}
    assert form_post(server, "/login/oauth/access_token", poll).json["error"] == "authorization_pending"
    assert form_post(server, "/login/oauth/access_token", poll).json["error"] == "slow_down"     # too fast
    assert form_post(server, "/login/oauth/access_token", dict(poll, client_id="other")).json[
        "error"] == "incorrect_device_code"
    # form encoding unless JSON is asked for, as GitHub answers
    raw = form_post(server, "/login/oauth/access_token", poll, accept_json=False)
    assert raw.headers["content-type"] == "application/x-www-form-urlencoded" and b"error=" in raw.raw
    bob_denies = form_post(server, "/login/device/code", {"client_id": "cli"}).json
    assert ext(server, "POST", "/oauth/device/approve", alice, {"user_code": bob_denies["user_code"],
                                                                 "approve": False}).status == 200
    server.app.store.db.execute("UPDATE device_codes SET last_poll = NULL")
    assert form_post(server, "/login/oauth/access_token", dict(poll, device_code=bob_denies["device_code"])).json[
        "error"] == "access_denied"
    r = ext(server, "POST", "/oauth/device/approve", alice, {"user_code": code["user_code"].lower()})
    assert r.status == 200 and r.json["scopes"] == ["repo", "read:org"]
    server.app.store.db.execute("UPDATE device_codes SET last_poll = NULL")
    token = form_post(server, "/login/oauth/access_token", poll).json
    assert token["access_token"].startswith("ago_") and token["scope"] == "repo,read:org"
    me = api(server, "GET", "/user", token["access_token"])
    assert me.json["login"] == "alice" and me.headers["x-oauth-scopes"] == "read:org, repo"
    server.app.store.db.execute("UPDATE device_codes SET last_poll = NULL")
    assert form_post(server, "/login/oauth/access_token", poll).json["error"] == "expired_token"   # single use
    assert ext(server, "POST", "/oauth/device/approve", alice, {"user_code": code["user_code"]}).status == 404
    _, agent, _ = server.add_agent("bot")
    other = form_post(server, "/login/device/code", {"client_id": "cli"}).json
    assert ext(server, "POST", "/oauth/device/approve", agent, {"user_code": other["user_code"]}).status == 403
    assert form_post(server, "/login/device/code", {}).status == 400
    assert form_post(server, "/login/oauth/access_token", {"grant_type": "password"}).status == 400


def test_gh_auth_login_web_approved_on_the_page(gh_server, test_ca):
    srv, env = gh_server
    srv.add_user("alice", password="s3cret")
    proc = subprocess.Popen(["gh", "auth", "login", "--hostname", GH_HOST, "--web", "-p", "https"],
                            env=dict(env, BROWSER="true"), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        proc.stdin.write(b"\n")
        proc.stdin.flush()
        out, deadline = b"", time.time() + 30
        waiting = selectors.DefaultSelector()       # epoll: no limit on the descriptor's number, as select has
        waiting.register(proc.stdout, selectors.EVENT_READ)
        while not re.search(rb"[A-Z]{4}-[A-Z]{4}", out) and time.time() < deadline:
            if waiting.select(1):
                out += os.read(proc.stdout.fileno(), 4096)
        waiting.close()
        user_code = re.search(rb"([A-Z]{4}-[A-Z]{4})", out).group(1).decode()
        browser = Browser(srv, ca=test_ca["ca"])
        resp, _ = browser.sign_in("alice", "s3cret", next_path="/login/device?user_code=" + user_code)
        resp, page = browser.request("GET", resp.getheader("Location"))
        assert user_code in page
        resp, page = browser.request("POST", "/login/device", {"csrf": browser.csrf(page), "user_code": user_code})
        assert "asks to act as <strong>alice</strong>" in page and "repo" in page
        resp, page = browser.request("POST", "/login/device", {"csrf": browser.csrf(page), "user_code": user_code,
                                                               "decision": "approve"})
        assert "Approved" in page
        rest, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, (out + rest).decode()
    assert b"Logged in as alice" in out + rest
    status = gh(env, "auth", "status", "--hostname", GH_HOST)
    assert "account alice" in status.stdout + status.stderr
    row = srv.app.store.one("SELECT * FROM audit WHERE surface = 'oauth' AND action = 'issue_token'")
    assert row["actor"] == "alice" and "178c6fc778ccc68e1d6a" in row["side_effect"]


def test_wrong_user_codes_are_rate_limited(server):
    server.add_user("alice", password="pw")
    browser = Browser(server)
    browser.sign_in("alice", "pw")
    statuses = []
    for i in range(12):
        _, page = browser.request("GET", "/login/device")
        resp, _ = browser.request("POST", "/login/device", {"csrf": browser.csrf(page), "user_code": "BCDF-GHJK"})
        statuses.append(resp.status)
    assert statuses[0] == 404 and 429 in statuses
