"""GitHub Apps, as agents: alice registers an App (its agent account is NAME[bot]), installs it on her
repositories, and the App, with a JWT signed by its private key, mints installation tokens that are task
tokens of the installation's grant: the App's permissions, narrowed as asked, on the installation's
repositories, never more than alice may do now. The App's webhook receives events naming the installation."""
import asyncio
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.parse

import jwt
import pytest

import agentgit
from conftest import Browser, api, ext, shape_checker, sweep
from test_browser import chromium, sign_in_if_asked  # noqa: F401 (a fixture)
from test_webhooks import hooked, signature_ok  # noqa: F401 (hooked: a server that delivers to a receiver)

SPEC = shape_checker()


def shape_problems(method, path, status, body):
    """Where the body differs from GitHub's REST description ([] where ../shared is absent)."""
    return SPEC.check(method, path, status, body) if SPEC is not None else []


def app_jwt(registered, **claims):
    """What every App library makes: RS256 over iat (a minute back, for clock drift), exp and iss."""
    moment = int(time.time())
    return jwt.encode(dict({"iat": moment - 60, "exp": moment + 540, "iss": str(registered["id"])}, **claims),
                      registered["pem"], algorithm="RS256")


def register(srv, token, name="triage-bot", hook_url=None, **fields):
    made = ext(srv, "POST", "/apps", token, dict({
        "name": name, "url": "https://example.com/triage", "default_permissions": {"issues": "write", "contents":
                                                                                   "read"},
        "default_events": ["issues"], **({"hook_attributes": {"url": hook_url}} if hook_url else {})}, **fields))
    assert made.status == 201, made
    return made.json


def alice_with_repos(srv, *names):
    alice = srv.add_user("alice", password="pw")
    for name in names:
        assert api(srv, "POST", "/user/repos", alice, {"name": name, "private": True, "auto_init": True}).status == 201
    return alice


def suspend(srv, login, at):
    with srv.app.store.transaction() as db:
        db.execute("UPDATE accounts SET suspended_at = ? WHERE login = ?", (at, login))


def test_an_installed_app_comments_as_itself_for_its_installer(hooked):
    srv, receiver = hooked
    alice = alice_with_repos(srv, "payments", "other")
    registered = register(srv, alice, hook_url=receiver.url)
    assert registered["pem"].startswith("-----BEGIN RSA PRIVATE KEY-----") and registered["webhook_secret"]
    assert registered["slug"] == "triage-bot" and registered["agentgit"]["agent"] == "triage-bot[bot]"
    assert shape_problems("POST", "/app-manifests/{code}/conversions", 201, registered) == []

    token = app_jwt(registered)
    me = api(srv, "GET", "/app", token)
    assert me.status == 200 and me.json["id"] == registered["id"] and me.json["installations_count"] == 0
    assert shape_problems("GET", "/app", 200, me.json) == []
    # a JWT reaches the App's own endpoints only
    assert api(srv, "GET", "/repos/alice/payments", token).status in (403, 404)

    installed = ext(srv, "POST", "/apps/triage-bot/installations", alice, {
        "repository_selection": "selected", "repositories": ["payments"]})
    assert installed.status == 201, installed
    installation = installed.json
    assert installation["agentgit"]["installer"] == "user:alice" and installation["target_type"] == "User"
    assert shape_problems("GET", "/app/installations/{installation_id}", 200, installation) == []
    headers, created = receiver.wait_for(1)[0]
    assert headers["x-github-event"] == "installation" and created["action"] == "created"
    assert headers["x-github-hook-installation-target-type"] == "integration"
    assert [r["full_name"] for r in created["repositories"]] == ["alice/payments"]

    assert api(srv, "GET", "/repos/alice/payments/installation", token).json["id"] == installation["id"]
    assert api(srv, "GET", "/repos/alice/other/installation", token).status == 404
    minted = api(srv, "POST", "/app/installations/%d/access_tokens" % installation["id"], token, {})
    assert minted.status == 201, minted
    assert minted.json["permissions"] == {"issues": "write", "contents": "read", "metadata": "read"}
    assert shape_problems("POST", "/app/installations/{installation_id}/access_tokens", 201, minted.json) == []
    itoken = minted.json["token"]

    listed = api(srv, "GET", "/installation/repositories", itoken)
    assert [r["full_name"] for r in listed.json["repositories"]] == ["alice/payments"]
    issue = api(srv, "POST", "/repos/alice/payments/issues", alice, {"title": "Refunds fail"}).json
    comment = api(srv, "POST", "/repos/alice/payments/issues/%d/comments" % issue["number"], itoken,
                  {"body": "Thanks! Triaged."})
    assert comment.status == 201 and comment.json["user"]["login"] == "triage-bot[bot]"
    assert comment.json["user"]["type"] == "Bot"
    # the installation covers payments only; contents read gives no push; the JWT is no token for the API
    assert api(srv, "POST", "/repos/alice/other/issues", itoken, {"title": "x"}).status == 404
    assert api(srv, "PUT", "/repos/alice/payments/contents/x.txt", itoken, {
        "message": "x", "content": "eA=="}).status == 403

    rows = [r for r in srv.app.store.all("SELECT * FROM audit WHERE actor = 'triage-bot[bot]' AND action = 'comment'")]
    assert rows and rows[-1]["delegator"] == "alice" and rows[-1]["task"] == "task:installation/%d" % installation["id"]

    # the App's webhook hears of the issue, naming the installation, signed with its secret
    deliveries = receiver.wait_for(2)
    headers, opened = deliveries[1]
    assert headers["x-github-event"] == "issues" and opened["installation"]["id"] == installation["id"]
    assert signature_ok(registered["webhook_secret"], headers, receiver.received[1][1])


def test_an_installation_token_is_never_wider_than_its_installer_now(hooked):
    srv, _ = hooked
    alice = alice_with_repos(srv, "payments", "other")
    registered = register(srv, alice, default_permissions={"issues": "write", "contents": "write"})
    installation = ext(srv, "POST", "/apps/triage-bot/installations", alice, {}).json
    token = app_jwt(registered)
    url = "/app/installations/%d/access_tokens" % installation["id"]
    # narrowing: to one repository and to read; asking for more than the installation holds is refused
    narrowed = api(srv, "POST", url, token, {"repositories": ["other"], "permissions": {"issues": "read"}})
    assert narrowed.status == 201 and [r["name"] for r in narrowed.json["repositories"]] == ["other"]
    assert api(srv, "POST", "/repos/alice/other/issues", narrowed.json["token"], {"title": "x"}).status == 403
    assert api(srv, "GET", "/repos/alice/payments", narrowed.json["token"]).status == 404
    assert api(srv, "GET", "/repos/alice/other", narrowed.json["token"]).status == 200
    assert api(srv, "POST", url, token, {"permissions": {"administration": "write"}}).status == 422
    assert api(srv, "POST", url, token, {"repositories": ["nope"]}).status == 422
    # all repositories: one made after installing is covered at the next mint
    assert api(srv, "POST", "/user/repos", alice, {"name": "later", "auto_init": True}).status == 201
    full = api(srv, "POST", url, token, {}).json["token"]
    assert api(srv, "POST", "/repos/alice/later/issues", full, {"title": "found"}).status == 201
    # alice suspended: her App's installation tokens do nothing
    suspend(srv, "alice", "2026-01-01T00:00:00Z")
    assert api(srv, "POST", "/repos/alice/later/issues", full, {"title": "again"}).status in (403, 404)
    suspend(srv, "alice", None)
    # uninstalled: its grant is revoked with every token, and the App can no longer mint
    assert ext(srv, "DELETE", "/installations/%d" % installation["id"], alice).status == 204
    assert api(srv, "POST", "/repos/alice/later/issues", full, {"title": "gone"}).status == 401
    assert api(srv, "POST", url, token, {}).status == 404


def test_a_jwt_is_checked_by_githubs_rules(hooked):
    srv, _ = hooked
    alice = alice_with_repos(srv)
    registered = register(srv, alice)
    moment = int(time.time())
    assert api(srv, "GET", "/app", app_jwt(registered)).status == 200
    assert api(srv, "GET", "/app", app_jwt(registered, iss=registered["client_id"])).status == 200
    too_long = app_jwt(registered, iat=moment - 30, exp=moment + 1200)
    assert "too far in the future" in api(srv, "GET", "/app", too_long).json["message"]
    expired = app_jwt(registered, iat=moment - 700, exp=moment - 100)
    assert api(srv, "GET", "/app", expired).status == 401
    future = app_jwt(registered, iat=moment + 300, exp=moment + 600)
    assert "Issued at" in api(srv, "GET", "/app", future).json["message"]
    other = register(srv, alice, name="other-bot")
    forged = jwt.encode({"iat": moment - 60, "exp": moment + 500, "iss": str(registered["id"])}, other["pem"],
                        algorithm="RS256")
    assert api(srv, "GET", "/app", forged).status == 401
    hs = jwt.encode({"iat": moment - 60, "exp": moment + 500, "iss": str(registered["id"])}, "k" * 32,
                    algorithm="HS256")
    assert api(srv, "GET", "/app", hs).status == 401
    assert api(srv, "GET", "/app", "a.b.c").status == 401
    # an installation token or a person is no App
    assert api(srv, "GET", "/app", alice).status == 401


HERE = os.path.dirname(os.path.abspath(__file__))
NODE_DIR = os.path.join(HERE, "..", ".venv", "node")


def node_package(name):
    """The folder make test installs the Node clients into, once ``name`` is there (else the test is skipped)."""
    if shutil.which("node") is None or not os.path.isdir(os.path.join(NODE_DIR, "node_modules", name)):
        pytest.skip("node or %s is not installed (make test installs it with npm)" % name)
    return NODE_DIR


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@sweep
def test_octokit_auth_app_works_unchanged(hooked, tmp_path):
    """@octokit/auth-app signs the JWT, finds the installation, trades the JWT for an installation token
    and caches it; @octokit/rest then opens an issue and comments as the App."""
    node_dir = node_package("@octokit/auth-app")
    srv, _ = hooked
    alice = alice_with_repos(srv, "payments")
    registered = register(srv, alice, name="nightly")
    assert ext(srv, "POST", "/apps/nightly/installations", alice, {}).status == 201
    key = tmp_path / "nightly.pem"
    key.write_text(registered["pem"])
    shutil.copy(os.path.join(HERE, "octokit_auth_app.mjs"), node_dir)
    proc = subprocess.run(["node", "octokit_auth_app.mjs", srv.url + "/api/v3", str(registered["id"]), str(key),
                           "alice", "payments"], cwd=node_dir, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["slug"] == "nightly" and out["repositories"] == ["alice/payments"]
    assert out["author"] == "nightly[bot]" and out["tokenType"] == "installation"
    assert out["permissions"] == {"issues": "write", "contents": "read", "metadata": "read"}
    row = srv.app.store.one("SELECT * FROM audit WHERE actor = 'nightly[bot]' AND action = 'comment'")
    assert row["delegator"] == "alice" and row["decision"] == "allow"


@sweep
def test_a_probot_app_thanks_whoever_opens_an_issue(hooked, tmp_path):
    """probot, unchanged, run with its own command line against agentgit as a GitHub Enterprise Server:
    it receives the App's webhook (verifying its signature), trades its JWT for an installation token
    and comments; the comment is the App's, and the audit says it acted for alice, who installed it."""
    node_dir = node_package("probot")
    srv, _ = hooked
    alice = alice_with_repos(srv, "payments")
    port = free_port()
    registered = register(srv, alice, name="welcome", hook_url="http://127.0.0.1:%d/api/github/webhooks" % port)
    key = tmp_path / "welcome.pem"
    key.write_text(registered["pem"])
    shutil.copy(os.path.join(HERE, "probot_app.mjs"), node_dir)
    env = dict(os.environ, APP_ID=str(registered["id"]), PRIVATE_KEY_PATH=str(key),
               WEBHOOK_SECRET=registered["webhook_secret"], GHE_HOST=srv.url.split("://")[1], GHE_PROTOCOL="http",
               PORT=str(port), HOST="127.0.0.1", LOG_LEVEL="warn")
    bot = start_listening(["node", "node_modules/probot/bin/probot.js", "run", "./probot_app.mjs"], node_dir, env, port)
    try:
        assert ext(srv, "POST", "/apps/welcome/installations", alice, {}).status == 201
        issue = api(srv, "POST", "/repos/alice/payments/issues", alice, {"title": "Refunds fail"}).json
        assert comments_once_there(srv, alice, issue) == [("welcome[bot]", "Thanks for opening this issue!")]
    finally:
        stop(bot)
    row = srv.app.store.one("SELECT * FROM audit WHERE actor = 'welcome[bot]' AND action = 'comment'")
    assert row["delegator"] == "alice" and row["grant_id"] and row["task"].startswith("task:installation/")
    delivered = srv.app.store.all("SELECT d.event, d.status_code FROM hook_deliveries d JOIN hooks h ON h.id ="
                                  " d.hook_id WHERE h.app_id = ? ORDER BY d.id", registered["id"])
    assert [(d["event"], d["status_code"]) for d in delivered] == [("installation", 200), ("issues", 200)]


def test_gidgethubs_apps_module_works_unchanged(hooked):
    """gidgethub.apps makes the JWT and trades it for an installation token, with which the bot comments."""
    apps = pytest.importorskip("gidgethub.apps")
    httpx = pytest.importorskip("httpx")
    from gidgethub.httpx import GitHubAPI
    srv, _ = hooked
    alice = alice_with_repos(srv, "payments")
    registered = register(srv, alice, name="gidget")
    installation = ext(srv, "POST", "/apps/gidget/installations", alice, {}).json
    issue = api(srv, "POST", "/repos/alice/payments/issues", alice, {"title": "Flaky"}).json

    async def bot():
        async with httpx.AsyncClient() as client:
            gh = GitHubAPI(client, "gidget", base_url=srv.url + "/api/v3")
            app_jwt_ = apps.get_jwt(app_id=str(registered["id"]), private_key=registered["pem"])
            installations = [i["id"] async for i in gh.getiter("/app/installations", jwt=app_jwt_)]
            access = await apps.get_installation_access_token(gh, installation_id=str(installation["id"]),
                                                              app_id=str(registered["id"]),
                                                              private_key=registered["pem"])
            comment = await gh.post("/repos/alice/payments/issues/%d/comments" % issue["number"],
                                    data={"body": "Looking into it."}, oauth_token=access["token"])
            return installations, comment["user"]["login"]

    installations, author = asyncio.run(bot())
    assert installations == [installation["id"]] and author == "gidget[bot]"


@sweep
def test_probot_registers_and_installs_its_app_through_a_browser(tmp_path, chromium):
    """probot's own first-run setup, with a person in Chromium: probot's page posts its manifest to
    agentgit, she signs in and confirms, probot trades the code for its App's id, key and secret (its .env),
    sends her to install the App, she installs it on her repositories; restarted with that .env, probot
    thanks whoever opens an issue."""
    node_dir = node_package("probot")
    srv = agentgit.make_server(tmp_path / "data", port=0, egress_allow_loopback=True).start()
    bot_dir, port = tmp_path / "welcome-bot", free_port()
    bot_dir.mkdir()
    (bot_dir / "package.json").write_text(json.dumps({"name": "welcome-bot", "version": "1.0.0", "type": "module",
                                                      "description": "Thanks whoever opens an issue",
                                                      "homepage": "https://example.com/welcome-bot"}))
    (bot_dir / "app.yml").write_text("default_events: [issues]\ndefault_permissions:\n  issues: write\n"
                                     "hook_attributes:\n  url: http://127.0.0.1:%d/api/github/webhooks\n" % port)
    shutil.copy(os.path.join(HERE, "probot_app.mjs"), bot_dir / "index.mjs")
    env = {k: v for k, v in os.environ.items() if k not in ("APP_ID", "PRIVATE_KEY", "WEBHOOK_SECRET")}
    env.update(GHE_HOST=srv.url.split("://")[1], GHE_PROTOCOL="http", PORT=str(port), HOST="127.0.0.1",
               NO_SMEE_SETUP="true", LOG_LEVEL="warn")
    command = ["node", os.path.join(node_dir, "node_modules", "probot", "bin", "probot.js"), "run", "./index.mjs"]
    bot = start_listening(command, bot_dir, env, port)
    try:
        alice = alice_with_repos(srv, "payments")
        chromium.open("http://127.0.0.1:%d/probot" % port)
        chromium.wait_for("Register GitHub App")
        chromium.click("button#manifest")               # its form opens agentgit in a new window
        chromium.at("/window", {"handle": chromium.at("/window/handles", method="GET")[-1]})
        sign_in_if_asked(chromium)
        chromium.wait_for("Create GitHub App for alice")
        chromium.screenshot("apps-1-manifest")
        chromium.click("form[action='/settings/apps/new/confirm'] button")
        chromium.wait_for("Install welcome-bot", seconds=20)     # probot converted the code and sent her here
        chromium.screenshot("apps-2-install")
        chromium.click("form[action='/apps/welcome-bot/installations/new'] button")
        page = chromium.wait_for("is installed on alice")
        assert "alice/payments" in page
        written = (bot_dir / ".env").read_text()
        assert "APP_ID=" in written and "BEGIN RSA PRIVATE KEY" in written and "WEBHOOK_SECRET=" in written
        stop(bot)
        bot = start_listening(command, bot_dir, env, port)       # as probot says: restart to load the .env
        issue = api(srv, "POST", "/repos/alice/payments/issues", alice, {"title": "Refunds fail"}).json
        assert comments_once_there(srv, alice, issue) == [("welcome-bot[bot]", "Thanks for opening this issue!")]
    finally:
        stop(bot)
        srv.stop()


def start_listening(command, cwd, env, port):
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 30
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return process
        assert process.poll() is None, process.stdout.read()
        time.sleep(0.1)
    raise AssertionError("%s did not listen on %d" % (command, port))


def comments_once_there(srv, token, issue, seconds=30):
    """(author, body) of an issue's comments, once there are any (a bot answers a webhook when it does)."""
    deadline, comments = time.time() + seconds, []
    while time.time() < deadline and not comments:
        comments = api(srv, "GET", "/repos/alice/payments/issues/%d/comments" % issue["number"], token).json
        time.sleep(0.1)
    return [(c["user"]["login"], c["body"]) for c in comments]


def stop(process):
    if process.poll() is None:
        process.terminate()
        process.wait(timeout=10)


def test_an_organizations_installation_ends_with_its_installers_membership(hooked):
    """An owner of acme installs an App on the organization; the installation carries her authority,
    live: removed from acme, her installation's tokens reach nothing there, and its webhook hears nothing."""
    srv, receiver = hooked
    olivia, mona = srv.add_user("olivia"), srv.add_user("mona")
    assert ext(srv, "POST", "/user/orgs", mona, {"login": "acme"}).status == 201
    assert api(srv, "PUT", "/orgs/acme/memberships/olivia", mona, {"role": "admin"}).status == 200
    assert api(srv, "POST", "/orgs/acme/repos", mona, {"name": "site", "private": True, "auto_init": True}).status == 201
    registered = register(srv, olivia, name="acme-helper", owner="acme", hook_url=receiver.url)
    assert registered["owner"]["login"] == "acme"
    installed = ext(srv, "POST", "/apps/acme-helper/installations", olivia, {"account": "acme"})
    assert installed.status == 201 and installed.json["target_type"] == "Organization"
    token = api(srv, "POST", "/app/installations/%d/access_tokens" % installed.json["id"], app_jwt(registered),
                {}).json["token"]
    assert api(srv, "POST", "/repos/acme/site/issues", token, {"title": "while olivia is an owner"}).status == 201
    assert api(srv, "DELETE", "/orgs/acme/members/olivia", mona).status == 204
    refused = api(srv, "POST", "/repos/acme/site/issues", token, {"title": "after"})
    assert refused.status in (403, 404), refused
    assert api(srv, "POST", "/repos/acme/site/issues", mona, {"title": "mona's"}).status == 201
    deadline, last = time.time() + 10, None
    while time.time() < deadline and (last is None or last["state"] not in ("delivered", "failed")):
        time.sleep(0.05)
        last = srv.app.store.one("SELECT state, status FROM hook_deliveries WHERE event = 'issues' ORDER BY id DESC"
                                 " LIMIT 1")
    assert last["state"] == "failed" and last["status"].startswith("withheld: installation"), dict(last)


def test_what_an_app_is_given_is_checked(hooked):
    """Bad registrations get GitHub's 422; a manifest code works once; an App's hook is changed by its JWT."""
    srv, receiver = hooked
    alice = alice_with_repos(srv)
    for bad in ({"name": ""}, {"name": "x", "default_permissions": {"contents": "admin"}},
                {"name": "x", "default_permissions": {"teleport": "read"}},
                {"name": "x", "default_events": ["issues"]},
                {"name": "x", "hook_attributes": {"url": "http://10.0.0.1/hook"}}, {"name": "GitHub Actions"}):
        answer = ext(srv, "POST", "/apps", alice, bad)
        assert answer.status == 422 and answer.json["message"], (bad, answer)
    register(srv, alice, name="same")
    assert ext(srv, "POST", "/apps", alice, {"name": "Same"}).status == 422
    assert api(srv, "POST", "/app-manifests/%s/conversions" % ("0" * 40)).status == 404
    registered = register(srv, alice, name="hooked", hook_url="http://127.0.0.1:9/old")
    changed = api(srv, "PATCH", "/app/hook/config", app_jwt(registered), {"url": receiver.url, "secret": "new"})
    assert changed.status == 200 and changed.json == {"content_type": "json", "insecure_ssl": "0", "url": receiver.url,
                                                      "secret": "********"}


def test_a_manifest_code_is_traded_once_and_a_forged_confirmation_is_refused(hooked):
    """The manifest flow's code gives the App's private key once; a confirmation without the page's CSRF
    token (another site's form) registers nothing."""
    srv, _ = hooked
    alice_with_repos(srv)
    browser = Browser(srv)
    browser.sign_in("alice", "pw")
    manifest = json.dumps({"name": "once-bot", "url": "https://example.com", "redirect_url": "http://127.0.0.1:9/cb",
                           "default_permissions": {"issues": "read"}})
    _, page = browser.request("POST", "/settings/apps/new?state=s1", {"manifest": manifest})
    assert "Create GitHub App for alice" in page
    forged, _ = browser.request("POST", "/settings/apps/new/confirm", {"manifest": manifest, "csrf": "guessed"})
    assert forged.status == 403 and api(srv, "GET", "/apps/once-bot").status == 404
    answer, _ = browser.request("POST", "/settings/apps/new/confirm", {"manifest": manifest, "state": "s1",
                                                                        "csrf": browser.csrf(page)})
    location = urllib.parse.urlsplit(answer.getheader("Location"))
    assert answer.status == 303 and location.path == "/cb"
    query = urllib.parse.parse_qs(location.query)
    assert query["state"] == ["s1"]
    converted = api(srv, "POST", "/app-manifests/%s/conversions" % query["code"][0])
    assert converted.status == 201 and converted.json["slug"] == "once-bot" and "PRIVATE KEY" in converted.json["pem"]
    assert api(srv, "POST", "/app-manifests/%s/conversions" % query["code"][0]).status == 404
