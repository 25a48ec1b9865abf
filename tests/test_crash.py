"""Crashes: the server is killed (SIGKILL, kill -9) between a side effect and its audit row, or at a
random moment during pushes and token exchanges, then started again. Afterwards git fsck is clean,
no ref points at a missing object, the database passes its integrity check, the audit chain and its
checkpoint verify, and every ref move the log records is what the repository shows."""
import ast
import base64
import glob
import http.client
import os
import random
import re
import signal
import subprocess
import threading
import time

import pytest

import agentgit
from conftest import CLI, ROOT, api, exchange, git, git_env, postgresql, remote, sweep

pytestmark = sweep

MOVE_RE = re.compile(r"(refs/\S+) ([0-9a-f]{12})→([0-9a-f]{12})")


class ServeProcess:
    """``agentgit serve`` in its own process, which the test may kill -9."""

    def __init__(self, data_dir, engine="git", crash_at=None):
        env = dict(os.environ, AGENTGIT_CRASH_AT=crash_at or "")
        self.proc = subprocess.Popen([*CLI, "serve", "--port", "0", "--quiet", "--data", str(data_dir),
                                      "--git-engine", engine], env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert line.startswith("agentgit listening on "), line + self.proc.stderr.read()
        self.url = line.split()[-1]

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        return self.wait()

    def wait(self):
        self.proc.wait(timeout=60)
        self.proc.stdout.close()
        self.proc.stderr.close()
        return self.proc.returncode


@pytest.fixture
def site(tmp_path):
    """alice's repository app (main with a README, a branch feature one commit ahead, pull request #1
    from it) and her token; made by a server in this process, which is then stopped."""
    srv = agentgit.make_server(tmp_path / "data", port=0).start()
    token = srv.add_user("alice")
    assert api(srv, "POST", "/user/repos", token, {"name": "app", "auto_init": True}).status == 201
    body = {"message": "feature", "content": base64.b64encode(b"new\n").decode(), "branch": "feature"}
    main = api(srv, "GET", "/repos/alice/app/branches/main", token).json["commit"]["sha"]
    assert api(srv, "POST", "/repos/alice/app/git/refs", token, {"ref": "refs/heads/feature", "sha": main}).status == 201
    assert api(srv, "PUT", "/repos/alice/app/contents/feature.txt", token, body).status == 201
    assert api(srv, "POST", "/repos/alice/app/pulls", token, {"title": "Feature", "head": "feature",
                                                               "base": "main", "body": "Fixes #2"}).status == 201
    assert api(srv, "POST", "/repos/alice/app/issues", token, {"title": "bug"}).json["number"] == 2
    srv.stop()
    return tmp_path / "data", token


def restart(data_dir):
    """Start again (settling what the crash left), check that everything is consistent, return the server."""
    srv = agentgit.make_server(data_dir, port=0).start()
    assert_consistent(srv)
    return srv


def assert_consistent(srv):
    app = srv.app
    assert postgresql or app.store.one("PRAGMA integrity_check")[0] == "ok"
    verified = subprocess.run([*CLI, "audit", "verify", "--data", app.config.data_dir], capture_output=True,
                              text=True)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    recorded = {}       # (resource, ref) -> the sha the log last says it moved to
    for row in app.store.all("SELECT resource, side_effect FROM audit WHERE side_effect IS NOT NULL ORDER BY id"):
        for ref, _, new in MOVE_RE.findall(row["side_effect"]):
            recorded[row["resource"], ref] = new
    for repo in app.store.all("SELECT r.id, a.login || '/' || r.name AS name FROM repos r JOIN accounts a"
                              " ON a.id = r.owner_id"):
        path = os.path.join(app.repos_dir, "%d.git" % repo["id"])
        fsck = git(path, "fsck", "--full", "--no-dangling", check=False)
        assert fsck.returncode == 0 and "error" not in fsck.stderr, fsck.stderr
        refs = dict(line.split()[::-1] for line in git(path, "for-each-ref", "--format=%(objectname) %(refname)")
                    .stdout.splitlines())
        for ref, sha in refs.items():
            assert git(path, "cat-file", "-e", sha, check=False).returncode == 0, (ref, sha)
        for (resource, ref), new in recorded.items():
            if resource == "repo:" + repo["name"]:
                assert refs.get(ref, "0" * 40)[:12] == new, (resource, ref, new, refs.get(ref))
    assert app.store.one("SELECT COUNT(*) FROM intents")[0] == 0


def moves_of(srv, action):
    return [dict(r) for r in srv.app.store.all("SELECT * FROM audit WHERE action = ? AND side_effect IS NOT NULL"
                                               " ORDER BY id", action)]


@pytest.mark.parametrize("engine", ["git", "dulwich"])
def test_killed_after_a_push_moved_the_ref_and_before_its_row(site, engine, tmp_path):
    data, token = site
    proc = ServeProcess(data, engine, crash_at="push received")
    clone = str(tmp_path / "clone")
    git(str(tmp_path), "clone", "-q", remote(proc, "alice/app", token), clone)
    with open(os.path.join(clone, "more.txt"), "w") as f:
        f.write("more\n")
    git(clone, "add", "more.txt")
    git(clone, "commit", "-q", "-m", "more")
    new = git(clone, "rev-parse", "HEAD").stdout.strip()
    assert git(clone, "push", "origin", "main", check=False).returncode != 0      # the server died mid-answer
    assert proc.wait() == -signal.SIGKILL
    srv = restart(data)
    try:
        pushed = moves_of(srv, "push_branch")[-1]
        assert (pushed["actor"], pushed["decision"], pushed["surface"]) == ("alice", "allow", "git")
        assert re.fullmatch(r"refs/heads/main [0-9a-f]{12}→%s \(recorded at start-up: .*\)" % new[:12],
                            pushed["side_effect"]), pushed["side_effect"]
        assert api(srv, "GET", "/repos/alice/app/branches/main", token).json["commit"]["sha"] == new
    finally:
        srv.stop()


def test_killed_after_a_merge_moved_the_base_and_before_its_row(site):
    data, token = site
    proc = ServeProcess(data, crash_at="ref moved")
    with pytest.raises(ConnectionError):
        api(proc, "PUT", "/repos/alice/app/pulls/1/merge", token, {"merge_method": "merge"})
    assert proc.wait() == -signal.SIGKILL
    srv = restart(data)
    try:
        merged = moves_of(srv, "merge_pr")[-1]
        pull = api(srv, "GET", "/repos/alice/app/pulls/1", token).json
        assert (pull["merged"], pull["state"], pull["merged_by"]["login"]) == (True, "closed", "alice")
        assert merged["side_effect"].startswith("refs/heads/main ") and "recorded at start-up" in merged["side_effect"]
        assert pull["merge_commit_sha"][:12] in merged["side_effect"]
        main = api(srv, "GET", "/repos/alice/app/branches/main", token).json["commit"]["sha"]
        assert main == pull["merge_commit_sha"]
        # the rest of the merge's database part happened too: "Fixes #2" closed issue 2
        assert api(srv, "GET", "/repos/alice/app/issues/2", token).json["state"] == "closed"
    finally:
        srv.stop()


def test_killed_after_a_file_was_written_through_the_api(site):
    data, token = site
    proc = ServeProcess(data, crash_at="ref moved")
    body = {"message": "docs", "content": base64.b64encode(b"docs\n").decode()}
    with pytest.raises(ConnectionError):
        api(proc, "PUT", "/repos/alice/app/contents/docs.txt", token, body)
    proc.wait()
    srv = restart(data)
    try:
        wrote = [r for r in moves_of(srv, "push_branch") if "recorded at start-up" in r["side_effect"]]
        assert len(wrote) == 1 and wrote[0]["side_effect"].startswith("refs/heads/main ")
        assert api(srv, "GET", "/repos/alice/app/contents/docs.txt", token).status == 200
    finally:
        srv.stop()


def keep_doing(work, stop):
    """Call ``work`` until ``stop`` is set or the server is gone."""
    def loop():
        while not stop.is_set():
            try:
                work()
            except (OSError, AssertionError, http.client.HTTPException):    # killed mid-answer: gone
                return
    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("round_", range(3))
def test_killed_at_random_during_pushes_and_token_exchanges(site, tmp_path, round_):
    data, token = site
    srv = agentgit.make_server(data, port=0).start()
    _, agent_token, _ = srv.add_agent("bot")
    srv.stop()
    proc = ServeProcess(data)
    clone = str(tmp_path / "clone")
    git(str(tmp_path), "clone", "-q", remote(proc, "alice/app", token), clone)
    pushes = iter(range(10 ** 6))

    def push():
        n = next(pushes)
        with open(os.path.join(clone, "n.txt"), "w") as f:
            f.write("%d\n" % n)
        git(clone, "commit", "-qam", "n=%d" % n, env=git_env(clone))
        git(clone, "push", "-q", "origin", "HEAD:refs/heads/b%d" % (n % 3), "--force", env=git_env(clone))

    def trade():
        assert exchange(proc, subject_token=agent_token, resource=proc.url).status == 200

    with open(os.path.join(clone, "n.txt"), "w") as f:
        f.write("start\n")
    git(clone, "add", "n.txt")
    stop = threading.Event()
    workers = [keep_doing(push, stop), keep_doing(trade, stop), keep_doing(trade, stop)]
    time.sleep(random.uniform(0.3, 1.5))
    assert proc.kill() == -signal.SIGKILL
    stop.set()
    for worker in workers:
        worker.join(30)
    srv = restart(data)
    try:
        # every session token in the database has the audit row that issued it, and each row its token
        issued = {row["fingerprint"] for row in srv.app.store.all("SELECT fingerprint FROM tokens WHERE kind = 'session'")}
        logged = {m for row in moves_of(srv, "mint_session_token")
                  for m in re.findall(r"agent session token (\S+)", row["side_effect"])}
        assert issued == logged and issued
    finally:
        srv.stop()


# Where a ref may move other than through Request.move_ref, and why no intent is needed there.
REF_WRITERS_WITHOUT_INTENT = {
    "init_repository": "a new repository's first refs, made before its row exists",
    "copy_refs": "refs/pull/N/head and forks: copies of refs whose moves were recorded where they happened",
    "open_pull": "refs/pull/N/head of a pull request from a fork: a copy of the fork's branch",
    "update_repo": "HEAD names the default branch the repository's row holds",
    "check_out": "a run's throw-away clone, outside the data directory: none of the server's refs",
}
REF_WRITES = {"set_if_equals", "add_if_new", "remove_if_equals", "set_symbolic_ref", "remove_symbolic_ref"}


def test_every_ref_move_goes_through_move_ref():
    """A new way of moving a ref that skips its intent fails here."""
    found = {}
    for path in glob.glob(os.path.join(ROOT, "src", "agentgit", "*.py")):
        tree = ast.parse(open(path).read())
        for function in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)):
            for node in ast.walk(function):
                call_ = isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in REF_WRITES
                store = isinstance(node, ast.Assign) and any(
                    isinstance(t, ast.Subscript) and isinstance(t.value, ast.Attribute) and t.value.attr == "refs"
                    for t in node.targets)
                if call_ or store:
                    found.setdefault(function.name, os.path.basename(path))
    assert set(found) == {"move_ref"} | set(REF_WRITERS_WITHOUT_INTENT), found


def test_a_git_left_running_by_a_killed_server_moves_no_ref(tmp_path):
    """The update hook's first check: git's parent must still be the server that decided the push.
    Reparented (its server killed), git is refused before any ref moves, so nothing moves after the
    next start-up has recorded the push as not moved."""
    hook = tmp_path / "update"
    hook.write_text("#!/bin/sh\n" + agentgit.SERVER_ALIVE_CHECK + "echo allowed\n")
    hook.chmod(0o700)
    as_git = ["sh", "-c", "%s refs/heads/x; true" % hook]          # a shell standing in for git receive-pack
    ours = subprocess.run(as_git, env=dict(os.environ, AGENTGIT_SERVER_PID=str(os.getpid())), capture_output=True,
                          text=True)
    orphan = subprocess.run(as_git, env=dict(os.environ, AGENTGIT_SERVER_PID="1"), capture_output=True, text=True)
    assert ours.stdout == "allowed\n"
    assert orphan.stdout == "" and orphan.stderr == "agentgit: the server stopped\n"


def test_sigterm_finishes_the_request_at_work_and_exits_0(site):
    """What a service manager or CI does: SIGTERM while a request's body is still arriving and a kept-alive
    connection idles. The server stops accepting at once, closes the idle connection, answers the
    request at work when its body is in (Connection: close), writes the audit checkpoint, flushes the
    access log and exits 0; started again, everything is consistent and the repository is there."""
    import socket
    data, token = site
    proc = subprocess.Popen([*CLI, "serve", "--port", "0", "--data", str(data)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    url = proc.stdout.readline().split()[-1]
    port = int(url.rsplit(":", 1)[1])
    kept = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    kept.request("GET", "/api/v3/meta")
    assert kept.getresponse().read()
    body = b'{"name": "made-while-stopping", "auto_init": true}'
    working = socket.create_connection(("127.0.0.1", port), timeout=10)
    working.sendall(b"POST /api/v3/user/repos HTTP/1.1\r\nHost: x\r\nAuthorization: token %s\r\nContent-Type: "
                    b"application/json\r\nContent-Length: %d\r\n\r\n%s" % (token.encode(), len(body), body[:10]))
    time.sleep(0.5)                                  # its thread is reading the body
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2)
    assert kept.sock.recv(100) == b""               # the idle one is closed
    working.sendall(body[10:])
    answer = working.recv(65536).decode()
    assert answer.startswith("HTTP/1.1 201") and "Connection: close" in answer
    assert proc.wait(timeout=30) == 0
    log = proc.stderr.read()
    assert "stopping" in log and "POST /api/v3/user/repos" in log and "agentgit: stopped" in log
    proc.stdout.close()
    proc.stderr.close()
    srv = restart(data)
    try:
        assert api(srv, "GET", "/repos/alice/made-while-stopping", token).status == 200
        head = srv.app.anchor.read()
        assert head["row"] == srv.app.store.one("SELECT MAX(id) FROM audit")[0]     # the checkpoint was written
    finally:
        srv.stop()


def test_sigterm_during_pushes_lands_each_push_whole_or_not_at_all(site, tmp_path):
    """SIGTERM while git pushes keep coming: every push the client saw succeed is on record and in the
    repository, the one at work when the signal came lands whole or not at all, the server exits 0,
    and started again, everything is consistent (fsck, refs against the log, no intent left)."""
    data, token = site
    proc = subprocess.Popen([*CLI, "serve", "--port", "0", "--quiet", "--data", str(data)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    url = proc.stdout.readline().split()[-1]
    clone = str(tmp_path / "clone")
    git(str(tmp_path), "clone", "-q", "%s://x:%s@%s/alice/app.git" % (url.split("://")[0], token, url.split("://")[1]),
        clone)
    landed, stop = {}, threading.Event()

    def push_until_refused():
        for n in range(10 ** 6):
            with open(os.path.join(clone, "n.txt"), "w") as f:
                f.write("%d\n" % n + "x" * 200000 * (n % 2))         # every other push carries a bigger pack
            git(clone, "add", "n.txt", env=git_env(clone))
            git(clone, "commit", "-qm", "n=%d" % n, env=git_env(clone))
            sha = git(clone, "rev-parse", "HEAD", env=git_env(clone)).stdout.strip()
            if git(clone, "push", "-q", "origin", "HEAD:refs/heads/b%d" % (n % 3), "--force", env=git_env(clone),
                   check=False).returncode != 0 or stop.is_set():
                return
            landed["refs/heads/b%d" % (n % 3)] = sha
    pusher = threading.Thread(target=push_until_refused)
    pusher.start()
    time.sleep(random.uniform(0.5, 1.5))
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    stop.set()
    pusher.join(60)
    proc.stdout.close()
    proc.stderr.close()
    assert landed, "no push landed before the signal"
    srv = restart(data)                 # fsck, the database, the chain, refs against the log, no intents
    try:
        path = os.path.join(srv.app.repos_dir, "%d.git" % api(srv, "GET", "/repos/alice/app", token).json["id"])
        for ref, sha in landed.items():   # a push the client saw succeed: in the repository (or a later one)
            now_at = git(path, "rev-parse", ref).stdout.strip()
            assert git(path, "merge-base", "--is-ancestor", sha, now_at, check=False).returncode == 0, (ref, sha)
    finally:
        srv.stop()
