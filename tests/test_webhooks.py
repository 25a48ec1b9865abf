"""Webhooks: a repository's hooks receive GitHub's deliveries (headers, signatures, payloads with the chain
of who acted for whom) from an outbox written with each change; deliveries are recorded and redelivered;
a crash between a change and its delivery loses none; nothing leaves for a non-public address."""
import hashlib
import hmac
import http.server
import json
import threading
import time
import urllib.parse

import pytest

import agentgit
from conftest import alice_and_her_agent, api, commit_file, ext, git, remote, shape_checker

SPEC = shape_checker()
# a worker thread that dies (the sender, the executor) fails the test that killed it
pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")


class Receiver(http.server.ThreadingHTTPServer):
    """A bot's endpoint on loopback: keeps every delivery (headers and body) and answers 200, or ``status``."""

    status = 200

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            self.server.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(self.server.status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    def __init__(self):
        super().__init__(("127.0.0.1", 0), self.Handler)
        self.received = []
        threading.Thread(target=self.serve_forever, daemon=True).start()
        self.url = "http://127.0.0.1:%d/hook" % self.server_address[1]

    def wait_for(self, count, timeout=10):
        deadline = time.time() + timeout
        while len(self.received) < count and time.time() < deadline:
            time.sleep(0.05)
        assert len(self.received) >= count, [h["x-github-event"] for h, _ in self.received]
        return [(headers, json.loads(urllib.parse.parse_qs(body.decode())["payload"][0] if headers[
            "content-type"] == "application/x-www-form-urlencoded" else body)) for headers, body in self.received]

    def close(self):
        self.shutdown()
        self.server_close()


@pytest.fixture
def hooked(tmp_path):
    srv = agentgit.make_server(tmp_path / "data", port=0, egress_allow_loopback=True).start()
    receiver = Receiver()
    yield srv, receiver
    receiver.close()
    srv.stop()


def signature_ok(secret, headers, body):
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(headers["x-hub-signature-256"], expected)


def test_a_hook_receives_githubs_deliveries_with_the_chain(hooked, tmp_path):
    srv, receiver = hooked
    alice, login, agent = alice_and_her_agent(srv, ("app",))
    made = api(srv, "POST", "/repos/alice/app/hooks", alice, {"name": "web", "events": ["*"], "config": {
        "url": receiver.url, "content_type": "json", "secret": "s3cret"}})
    assert made.status == 201 and made.json["config"]["secret"] == "********" and made.json["events"] == ["*"]
    hook = made.json["id"]
    headers, ping = receiver.wait_for(1)[0]
    assert headers["x-github-event"] == "ping" and headers["x-github-hook-id"] == str(hook)
    assert headers["user-agent"].startswith("GitHub-Hookshot/") and headers["x-github-delivery"]
    assert headers["x-github-hook-installation-target-type"] == "repository"
    assert signature_ok("s3cret", headers, receiver.received[0][1]) and ping["hook_id"] == hook
    # an agent's task opens an issue and comments: each delivery names who acted for whom
    grant = ext(srv, "POST", "/task-grants", alice, {
        "agent": "agent:" + login, "delegator": "user:alice", "task": "task:triage", "resources": ["repo:alice/app"],
        "actions": ["read_code", "open_issue", "comment"], "constraints": {}}).json
    token = ext(srv, "POST", "/task-grants/%s/tokens" % grant["id"], agent, {}).json["token"]
    api(srv, "POST", "/repos/alice/app/issues", token, {"title": "Flaky test"})
    api(srv, "POST", "/repos/alice/app/issues/1/comments", token, {"body": "looking"})
    api(srv, "PATCH", "/repos/alice/app/issues/1", alice, {"state": "closed"})
    got = receiver.wait_for(4)
    (h1, opened), (h2, commented), (h3, closed) = got[1:4]
    assert (h1["x-github-event"], opened["action"], opened["issue"]["title"]) == ("issues", "opened", "Flaky test")
    assert opened["sender"]["login"] == login and opened["repository"]["full_name"] == "alice/app"
    chain = opened["agentgit"]
    assert (chain["actor"], chain["actor_kind"], chain["delegator"], chain["task"], chain["grant"]) == (
        login, "agent", "alice", "task:triage", grant["id"])
    assert chain["audit_id"] in [row["id"] for row in ext(srv, "GET", "/audit?actor=%s" % login, alice).json]
    assert (h2["x-github-event"], commented["action"], commented["comment"]["body"]) == ("issue_comment", "created",
                                                                                          "looking")
    assert (closed["action"], closed["sender"]["login"], closed["agentgit"]["task"]) == ("closed", "alice", None)
    # a push: push and create events, with the commits
    work = str(tmp_path / "w")
    git(str(tmp_path), "clone", "-q", remote(srv, "alice/app", alice), work)
    git(work, "checkout", "-q", "-b", "feature")
    sha = commit_file(work, "a.txt", "a\n", "add a")
    git(work, "push", "-q", "origin", "feature")
    got = receiver.wait_for(6)
    events = {h["x-github-event"]: p for h, p in got[4:6]}
    assert events["push"]["ref"] == "refs/heads/feature" and events["push"]["after"] == sha
    assert [c["message"] for c in events["push"]["commits"]] == ["add a"] and events["push"]["created"] is True
    assert (events["create"]["ref"], events["create"]["ref_type"]) == ("feature", "branch")
    # recorded, newest first, with what was sent and answered; the secret is never shown
    deliveries = api(srv, "GET", "/repos/alice/app/hooks/%d/deliveries" % hook, alice).json
    assert len(deliveries) == 6 and all(d["status_code"] == 200 and d["status"] == "OK" for d in deliveries)
    one = api(srv, "GET", "/repos/alice/app/hooks/%d/deliveries/%d" % (hook, deliveries[-1]["id"]), alice).json
    assert one["event"] == "ping" and one["request"]["headers"]["X-GitHub-Event"] == "ping"
    assert "s3cret" not in json.dumps(api(srv, "GET", "/repos/alice/app/hooks/%d" % hook, alice).json)
    if SPEC is not None:        # GitHub's shapes for hooks and deliveries
        for path, body in (("/repos/alice/app/hooks/%d" % hook, api(srv, "GET", "/repos/alice/app/hooks/%d" % hook,
                                                                     alice).json),
                           ("/repos/alice/app/hooks/%d/deliveries" % hook, deliveries),
                           ("/repos/alice/app/hooks/%d/deliveries/%d" % (hook, deliveries[-1]["id"]), one)):
            assert SPEC.check("GET", path, 200, body) == [], path
    # redelivery: the same payload, marked
    again = api(srv, "POST", "/repos/alice/app/hooks/%d/deliveries/%d/attempts" % (hook, deliveries[0]["id"]), alice)
    assert again.status == 202
    got = receiver.wait_for(7)
    first = next(payload for headers, payload in got[:6] if headers["x-github-delivery"] == deliveries[0]["guid"])
    assert got[6][1] == first and got[6][0]["x-github-delivery"] != deliveries[0]["guid"]


def test_managing_hooks_is_an_admins_and_a_failed_delivery_is_recorded(hooked):
    srv, receiver = hooked
    alice, walt = srv.add_user("alice"), srv.add_user("walt")
    api(srv, "POST", "/user/repos", alice, {"name": "app", "auto_init": True})
    api(srv, "PUT", "/repos/alice/app/collaborators/walt", alice, {"permission": "push"})
    body = {"config": {"url": receiver.url}, "events": ["issues"]}
    assert api(srv, "POST", "/repos/alice/app/hooks", walt, body).status == 403
    for bad in ({"config": {"url": "ftp://x"}}, {"config": {"url": receiver.url}, "events": ["nope"]},
                {"config": {"url": "http://10.0.0.1/x"}}, {"config": {"url": receiver.url, "content_type": "xml"}}):
        assert api(srv, "POST", "/repos/alice/app/hooks", alice, bad).status == 422, bad
    receiver.status = 500
    hook = api(srv, "POST", "/repos/alice/app/hooks", alice, body).json
    receiver.wait_for(1)
    deadline = time.time() + 5
    while time.time() < deadline:
        deliveries = api(srv, "GET", "/repos/alice/app/hooks/%d/deliveries" % hook["id"], alice).json
        if deliveries and deliveries[0]["status_code"]:
            break
        time.sleep(0.05)
    assert (deliveries[0]["status_code"], deliveries[0]["status"]) == (500, "HTTP 500")
    form = api(srv, "PATCH", "/repos/alice/app/hooks/%d/config" % hook["id"], alice, {"content_type": "form"})
    assert form.json["content_type"] == "form"
    updated = api(srv, "PATCH", "/repos/alice/app/hooks/%d" % hook["id"], alice, {"add_events": ["push"],
                                                                                "active": False})
    assert updated.json["events"] == ["issues", "push"] and updated.json["active"] is False
    api(srv, "POST", "/repos/alice/app/issues", alice, {"title": "not sent: the hook is inactive"})
    time.sleep(0.6)
    assert len(receiver.received) == 1
    assert api(srv, "DELETE", "/repos/alice/app/hooks/%d" % hook["id"], alice).status == 204
    assert api(srv, "GET", "/repos/alice/app/hooks/%d" % hook["id"], alice).status == 404


def test_a_delivery_waiting_at_a_crash_is_sent_after_the_restart(tmp_path):
    """The outbox is the database: a delivery queued with its change and not yet sent (the server stopped
    before its worker ran) is sent by the next server on the same data."""
    receiver = Receiver()
    data = tmp_path / "data"
    srv = agentgit.make_server(data, port=0, egress_allow_loopback=True)        # never started: no worker
    alice = srv.add_user("alice")
    srv.start()
    srv.deliveries.stop()            # the worker gone, as after a kill: what is queued stays queued
    api(srv, "POST", "/user/repos", alice, {"name": "app", "auto_init": True})
    api(srv, "POST", "/repos/alice/app/hooks", alice, {"config": {"url": receiver.url}, "events": ["issues"]})
    api(srv, "POST", "/repos/alice/app/issues", alice, {"title": "while nobody sends"})
    srv.stop()
    assert receiver.received == []
    again = agentgit.make_server(data, port=0, egress_allow_loopback=True).start()
    try:
        events = [h["x-github-event"] for h, _ in receiver.wait_for(2)]
        assert events == ["ping", "issues"]
    finally:
        again.stop()
        receiver.close()


def test_nothing_is_delivered_to_loopback_unless_the_operator_allows_it(server):
    alice = server.add_user("alice")
    api(server, "POST", "/user/repos", alice, {"name": "app", "auto_init": True})
    refused = api(server, "POST", "/repos/alice/app/hooks", alice, {"config": {"url": "http://127.0.0.1:9/x"}})
    assert refused.status == 422 and "non-public address" in refused.json["message"]


def test_octokit_webhooks_verifies_and_dispatches_the_deliveries(hooked, tmp_path):
    """@octokit/webhooks (what probot and most Node bots receive with) verifies every delivery with the
    hook's secret and dispatches it by event and action; one altered by a byte is refused."""
    import os
    import shutil
    import subprocess
    here = os.path.dirname(os.path.abspath(__file__))
    node_dir = os.path.join(here, "..", ".venv", "node")
    if shutil.which("node") is None or not os.path.isdir(os.path.join(node_dir, "node_modules", "@octokit",
                                                                       "webhooks")):
        pytest.skip("node or @octokit/webhooks is not installed (make test installs it with npm)")
    srv, receiver = hooked
    alice = srv.add_user("alice")
    api(srv, "POST", "/user/repos", alice, {"name": "app", "auto_init": True})
    api(srv, "POST", "/repos/alice/app/hooks", alice, {"events": ["issues", "issue_comment", "push"], "config": {
        "url": receiver.url, "content_type": "json", "secret": "octo"}})
    api(srv, "POST", "/repos/alice/app/issues", alice, {"title": "Bug"})
    api(srv, "POST", "/repos/alice/app/issues/1/comments", alice, {"body": "seen"})
    api(srv, "PUT", "/repos/alice/app/contents/b.txt", alice, {"message": "b", "content": "Ygo="})
    receiver.wait_for(4)
    deliveries = [{"id": h["x-github-delivery"], "name": h["x-github-event"], "signature": h["x-hub-signature-256"],
                   "body": body.decode()} for h, body in receiver.received]
    deliveries.append(dict(deliveries[1], id="altered", body=deliveries[1]["body"].replace("Bug", "Bog")))
    shutil.copy(os.path.join(here, "octokit_webhooks.mjs"), node_dir)
    proc = subprocess.run(["node", "octokit_webhooks.mjs", "octo"], cwd=node_dir, input=json.dumps(deliveries),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["seen"] == ["ping: 1", "opened: Bug by alice", "comment: seen", "push: refs/heads/main 1"]
    assert out["refused"] == ["altered"]


def test_an_organizations_hook_hears_every_repository_of_it(hooked):
    """An organization's owner adds a hook (type Organization) that receives the events of each of its
    repositories; a member who is not an owner may not manage it."""
    srv, receiver = hooked
    olivia, mona = srv.add_user("olivia"), srv.add_user("mona")
    ext(srv, "POST", "/user/orgs", olivia, {"login": "acme"})
    api(srv, "PUT", "/orgs/acme/memberships/mona", olivia, {"role": "member"})
    api(srv, "POST", "/orgs/acme/repos", olivia, {"name": "one", "auto_init": True})
    body = {"events": ["issues"], "config": {"url": receiver.url, "content_type": "json"}}
    assert api(srv, "POST", "/orgs/acme/hooks", mona, body).status == 403
    hook = api(srv, "POST", "/orgs/acme/hooks", olivia, body)
    assert hook.status == 201 and hook.json["type"] == "Organization" and "test_url" not in hook.json
    api(srv, "POST", "/orgs/acme/repos", olivia, {"name": "two"})
    api(srv, "POST", "/repos/acme/two/issues", olivia, {"title": "in two"})
    (h0, ping), (h1, opened) = receiver.wait_for(2)
    assert h0["x-github-hook-installation-target-type"] == "organization" and ping["organization"]["login"] == "acme"
    assert (h1["x-github-event"], opened["repository"]["full_name"], opened["organization"]["login"]) == (
        "issues", "acme/two", "acme")
    assert [h["id"] for h in api(srv, "GET", "/orgs/acme/hooks", olivia).json] == [hook.json["id"]]
    assert len(api(srv, "GET", "/orgs/acme/hooks/%d/deliveries" % hook.json["id"], olivia).json) == 2
    assert api(srv, "GET", "/repos/acme/two/hooks/%d" % hook.json["id"], olivia).status == 404


def test_reviews_releases_and_check_runs_are_delivered(hooked, tmp_path):
    srv, receiver = hooked
    alice, walt = srv.add_user("alice"), srv.add_user("walt")
    api(srv, "POST", "/user/repos", alice, {"name": "app", "auto_init": True})
    api(srv, "PUT", "/repos/alice/app/collaborators/walt", alice, {"permission": "push"})
    api(srv, "POST", "/repos/alice/app/hooks", alice, {"events": ["pull_request_review", "release", "check_run"],
                                                       "config": {"url": receiver.url, "content_type": "json"}})
    work = str(tmp_path / "w")
    git(str(tmp_path), "clone", "-q", remote(srv, "alice/app", walt), work)
    git(work, "checkout", "-q", "-b", "f")
    head = commit_file(work, "f.txt", "f\n")
    git(work, "push", "-q", "origin", "f")
    api(srv, "POST", "/repos/alice/app/pulls", walt, {"title": "F", "head": "f", "base": "main"})
    api(srv, "POST", "/repos/alice/app/pulls/1/reviews", alice, {"event": "APPROVE"})
    run = api(srv, "POST", "/repos/alice/app/check-runs", walt, {"name": "ci", "head_sha": head}).json
    api(srv, "PATCH", "/repos/alice/app/check-runs/%d" % run["id"], walt, {"status": "completed",
                                                                           "conclusion": "success"})
    api(srv, "POST", "/repos/alice/app/releases", alice, {"tag_name": "v1"})
    got = [(h["x-github-event"], p.get("action")) for h, p in receiver.wait_for(5)]
    assert got == [("ping", None), ("pull_request_review", "submitted"), ("check_run", "created"),
                   ("check_run", "completed"), ("release", "published")]
    payloads = {h["x-github-event"] + ":" + str(p.get("action")): p for h, p in receiver.wait_for(5)}
    assert payloads["pull_request_review:submitted"]["review"]["state"] == "APPROVED"
    assert payloads["pull_request_review:submitted"]["pull_request"]["number"] == 1
    assert payloads["check_run:completed"]["check_run"]["conclusion"] == "success"
    assert payloads["release:published"]["release"]["tag_name"] == "v1"


def test_an_agent_adds_a_hook_only_to_a_host_its_grant_may_reach(hooked):
    """manage_hooks in the task grant, and the hook's host in its network_allowlist: each refusal is
    decide()'s, audited, and names what to change."""
    srv, receiver = hooked
    alice, login, agent = alice_and_her_agent(srv, ("app",))
    port = receiver.server_address[1]

    def task_token(allowlist):
        grant = ext(srv, "POST", "/task-grants", alice, {
            "agent": "agent:" + login, "delegator": "user:alice", "task": "task:hooks%d" % len(allowlist),
            "resources": ["repo:alice/app"], "actions": ["read_code", "manage_hooks"],
            "constraints": {"network_allowlist": allowlist}}).json
        return ext(srv, "POST", "/task-grants/%s/tokens" % grant["id"], agent, {}).json["token"]
    body = {"events": ["issues"], "config": {"url": receiver.url}}
    outside = api(srv, "POST", "/repos/alice/app/hooks", task_token([]), body)
    assert outside.status == 403 and "network_allowlist" in outside.json["message"]
    inside = api(srv, "POST", "/repos/alice/app/hooks", task_token(["http://127.0.0.1:%d" % port]), body)
    assert inside.status == 201
    standing = api(srv, "POST", "/repos/alice/app/hooks", agent, body)
    assert standing.status in (403, 404)                 # outside a task: nothing of alice's to manage
    denied = [r for r in ext(srv, "GET", "/audit?actor=%s" % login, alice).json
              if r["action"] == "manage_hooks" and r["decision"] == "deny"]
    assert any("network_allowlist" in json.dumps(r["reasons"]) for r in denied)


def test_the_operator_may_have_failed_deliveries_retried(tmp_path, monkeypatch):
    """serve --webhook-retries N: a failed delivery is tried again (a redelivery, later each time) until it
    is answered 2xx or N retries are spent; without it, a failed one waits to be redelivered by asking."""
    from conftest import patch_everywhere
    patch_everywhere(monkeypatch, "RETRY_AFTER", 0.1)
    srv = agentgit.make_server(tmp_path / "data", port=0, egress_allow_loopback=True, webhook_retries=2).start()
    receiver = Receiver()
    receiver.status = 503
    try:
        alice = srv.add_user("alice")
        api(srv, "POST", "/user/repos", alice, {"name": "app", "auto_init": True})
        hook = api(srv, "POST", "/repos/alice/app/hooks", alice, {"config": {"url": receiver.url}}).json["id"]
        pings = receiver.wait_for(3)                     # the ping, and two retries of it
        assert len({json.dumps(p, sort_keys=True) for _, p in pings}) == 1
        time.sleep(0.5)
        assert len(receiver.received) == 3              # no third retry
        deliveries = api(srv, "GET", "/repos/alice/app/hooks/%d/deliveries" % hook, alice).json
        assert [(d["redelivery"], d["status_code"]) for d in deliveries] == [(True, 503), (True, 503), (False, 503)]
    finally:
        srv.stop()
        receiver.close()


def test_a_hooks_certificate_is_checked_unless_its_owner_turns_that_off(hooked, test_ca):
    """Over HTTPS a delivery checks the receiver's certificate (one of a CA the system does not trust is
    refused and recorded); insecure_ssl "1", GitHub's switch, turns the check off for that hook."""
    import ssl
    srv, receiver = hooked
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(test_ca["cert"], test_ca["key"])
    receiver.socket = context.wrap_socket(receiver.socket, server_side=True)
    url = receiver.url.replace("http://", "https://")
    alice = srv.add_user("alice")
    api(srv, "POST", "/user/repos", alice, {"name": "app", "auto_init": True})
    hook = api(srv, "POST", "/repos/alice/app/hooks", alice, {"config": {"url": url}}).json["id"]
    deadline = time.time() + 5
    while time.time() < deadline and not api(srv, "GET", "/repos/alice/app/hooks/%d/deliveries" % hook,
                                             alice).json[0]["status"].startswith("could not"):
        time.sleep(0.05)
    refused = api(srv, "GET", "/repos/alice/app/hooks/%d/deliveries" % hook, alice).json[0]
    assert refused["status_code"] == 0 and "SSL" in refused["status"] and receiver.received == []
    api(srv, "PATCH", "/repos/alice/app/hooks/%d/config" % hook, alice, {"insecure_ssl": "1"})
    api(srv, "POST", "/repos/alice/app/hooks/%d/pings" % hook, alice)
    assert receiver.wait_for(1)[0][0]["x-github-event"] == "ping"


def test_a_delivery_that_cannot_be_rendered_fails_and_the_worker_goes_on(hooked):
    """What an event was about can go before its first attempt (a commit pruned, an issue deleted): that
    delivery fails, saying so, and the next ones are delivered."""
    srv, receiver = hooked
    alice = srv.add_user("alice")
    api(srv, "POST", "/user/repos", alice, {"name": "app", "auto_init": True})
    hook = api(srv, "POST", "/repos/alice/app/hooks", alice, {"events": ["push", "issues"], "config": {
        "url": receiver.url, "content_type": "json"}}).json["id"]
    receiver.wait_for(1)                                            # its ping
    with srv.app.store.transaction() as db:
        agentgit.queue_delivery(db, hook, "push", None, srv.app.store.one("SELECT id FROM repos")["id"], {
            "ref": "refs/heads/main", "before": "0" * 40, "after": "f" * 40}, {})
    api(srv, "POST", "/repos/alice/app/issues", alice, {"title": "after the broken one"})
    events = [h["x-github-event"] for h, _ in receiver.wait_for(2)]
    assert events == ["ping", "issues"]
    broken = srv.app.store.one("SELECT state, status FROM hook_deliveries WHERE event = 'push'")
    assert broken["state"] == "failed" and broken["status"].startswith("could not render the payload")
