"""Git Smart HTTP with the real git binary, against both engines (git binary and dulwich)."""
import os
import subprocess
import threading

from conftest import api, commit_file, ext, git, git_env, remote


def clone(srv, full_name, token, dest, *extra, check=True):
    return git(os.path.dirname(dest), "clone", "-q", *extra, remote(srv, full_name, token), dest, check=check)


def test_agent_clones_pushes_branches_tags_and_deletes(engine_server, tmp_path):
    srv = engine_server
    login, token, full_name = srv.add_agent("coder")
    work = str(tmp_path / "work")
    clone(srv, full_name, token, work)
    assert open(os.path.join(work, "README.md")).read() == "# workspace\n"
    sha = commit_file(work, "src/app.py", "print('hi')\n")
    git(work, "push", "-q", "origin", "HEAD:main")
    git(work, "push", "-q", "origin", "HEAD:refs/heads/feature/x")
    git(work, "tag", "-a", "v1", "-m", "release 1")
    git(work, "push", "-q", "origin", "v1")
    refs = git(work, "ls-remote", "origin").stdout
    assert "%s\trefs/heads/main" % sha in refs
    assert "%s\trefs/heads/feature/x" % sha in refs
    assert "refs/tags/v1^{}" in refs
    # a fresh clone sees exactly what was pushed
    other = str(tmp_path / "other")
    clone(srv, full_name, token, other)
    assert git(other, "log", "--format=%s").stdout.split("\n")[:2] == ["change src/app.py", "Initial commit"]
    assert git(other, "fsck", "--strict").returncode == 0
    # delete a branch, force-push a rewrite
    git(work, "push", "-q", "origin", ":feature/x")
    git(work, "reset", "-q", "--hard", "HEAD~1")
    rewritten = commit_file(work, "other.txt", "x\n")
    git(work, "push", "-q", "--force", "origin", "HEAD:main")
    refs = git(work, "ls-remote", "origin").stdout
    assert "feature/x" not in refs and "%s\trefs/heads/main" % rewritten in refs
    # REST sees the same branches
    names = [b["name"] for b in api(srv, "GET", "/repos/%s/branches" % full_name, token).json]
    assert names == ["main"]


def test_shallow_and_protocol_v2(server, tmp_path):
    login, token, full_name = server.add_agent("shallow")
    work = str(tmp_path / "work")
    clone(server, full_name, token, work)
    for i in range(5):
        commit_file(work, "f%d.txt" % i, "%d\n" % i)
    git(work, "push", "-q", "origin", "HEAD:main")
    shallow = str(tmp_path / "shallow")
    git(str(tmp_path), "-c", "protocol.version=2", "clone", "-q", "--depth", "1", remote(server, full_name, token),
        shallow)
    assert git(shallow, "rev-list", "--count", "HEAD").stdout.strip() == "1"
    assert git(shallow, "rev-parse", "--is-shallow-repository").stdout.strip() == "true"
    git(shallow, "-c", "protocol.version=2", "fetch", "-q", "--deepen", "2")
    assert git(shallow, "rev-list", "--count", "HEAD").stdout.strip() == "3"
    partial = str(tmp_path / "partial")
    git(str(tmp_path), "-c", "protocol.version=2", "clone", "-q", "--filter=blob:none",
        remote(server, full_name, token), partial)
    assert open(os.path.join(partial, "f4.txt")).read() == "4\n"
    # protocol v2 really was spoken: the advertisement starts with "version 2"
    trace = git(str(tmp_path), "-c", "protocol.version=2", "ls-remote", remote(server, full_name, token),
                env=dict(git_env(tmp_path), GIT_TRACE_PACKET="1"))
    assert "git< version 2" in trace.stderr


def test_private_repo_401_then_404_for_outsider(engine_server, tmp_path):
    srv = engine_server
    _, token, full_name = srv.add_agent("private")
    outsider = srv.add_user("outsider")
    # no credentials: 401 with a Basic challenge, so git asks for credentials
    proc = clone(srv, full_name, None, str(tmp_path / "anon"), check=False)
    assert proc.returncode != 0 and "terminal prompts disabled" in proc.stderr
    import http.client
    import urllib.parse
    u = urllib.parse.urlsplit(srv.url)
    conn = http.client.HTTPConnection(u.hostname, u.port)
    conn.request("GET", "/%s.git/info/refs?service=git-upload-pack" % full_name)
    resp = conn.getresponse()
    assert resp.status == 401 and resp.getheader("WWW-Authenticate") == 'Basic realm="agentgit"'
    # a signed-in outsider: 404, never a hint that it exists
    proc = clone(srv, full_name, outsider, str(tmp_path / "outsider"), check=False)
    assert proc.returncode != 0 and "not found" in proc.stderr.lower()


def test_public_repo_anonymous_clone_but_no_push(server, tmp_path):
    owner = server.add_user("owner")
    assert api(server, "POST", "/user/repos", owner, {"name": "pub", "auto_init": True}).status == 201
    work = str(tmp_path / "anon")
    clone(server, "owner/pub", None, work)
    commit_file(work, "x.txt", "x")
    proc = git(work, "push", "origin", "HEAD:main", check=False)
    assert proc.returncode != 0
    reader = server.add_user("reader")
    proc = git(work, "push", remote(server, "owner/pub", reader), "HEAD:main", check=False)
    assert proc.returncode != 0
    assert "remote: push_branch needs write on repo:owner/pub; reader has read" in proc.stderr


def test_refused_ref_does_not_block_the_others(engine_server, tmp_path):
    srv = engine_server
    _, token, full_name = srv.add_agent("refs")
    work = str(tmp_path / "work")
    clone(srv, full_name, token, work)
    sha = commit_file(work, "a.txt", "a\n")
    proc = git(work, "push", "origin", "HEAD:refs/heads/ok", "HEAD:refs/pull/7/head", check=False)
    assert proc.returncode != 0
    assert "refs/pull/ is reserved" in proc.stderr
    refs = git(work, "ls-remote", "origin").stdout
    assert "%s\trefs/heads/ok" % sha in refs and "refs/pull" not in refs


def remote_main_of(srv, work):
    listed = git(work, "ls-remote", "origin", "refs/heads/main", check=False)
    # a 403 here, seen a few times under load, had no decision behind it (see connect_proxy in conftest)
    assert listed.returncode == 0, (listed.stderr, [dict(r) for r in srv.app.store.all(
        "SELECT actor, action, decision, reasons, side_effect FROM audit ORDER BY id DESC LIMIT 5")])
    return listed.stdout.split()[0]


def test_racing_pushes_one_wins_nothing_lost(engine_server, tmp_path):
    srv = engine_server
    _, token, full_name = srv.add_agent("race")
    clones = []
    for i in range(2):
        d = str(tmp_path / ("c%d" % i))
        clone(srv, full_name, token, d)
        commit_file(d, "f%d.txt" % i, "%d\n" % i)
        clones.append(d)
    results = [None, None]

    def push(i):
        results[i] = git(clones[i], "push", "origin", "HEAD:main", check=False)

    threads = [threading.Thread(target=push, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(r.returncode for r in results)
    assert codes[0] == 0
    heads = [git(c, "rev-parse", "HEAD").stdout.strip() for c in clones]
    remote_main = remote_main_of(srv, clones[0])
    assert remote_main in heads
    if codes[1] != 0:        # the loser is told to fetch first; after rebasing it lands too
        loser = clones[[r.returncode for r in results].index(codes[1])]
        git(loser, "pull", "-q", "--rebase", "origin", "main")
        git(loser, "push", "-q", "origin", "HEAD:main")
        log = git(loser, "log", "--format=%s", "origin/main").stdout
        assert "change f0.txt" in log and "change f1.txt" in log


def post_receive_pack(srv, full_name, token, body, hang_up=False):
    """A raw receive-pack POST; with ``hang_up`` the client promises more than it sends and disconnects."""
    import base64
    import socket
    import urllib.parse
    u = urllib.parse.urlsplit(srv.url)
    head = ("POST /%s.git/git-receive-pack HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-git-receive-pack-request"
            "\r\nAuthorization: Basic %s\r\nContent-Length: %d\r\n\r\n" % (
                full_name, base64.b64encode(("x:" + token).encode()).decode(), len(body) * (2 if hang_up else 1)))
    with socket.create_connection((u.hostname, u.port), timeout=30) as s:
        s.sendall(head.encode() + body)
        if hang_up:
            return b""
        reply = b""
        while b"0000" not in reply[-8:]:
            chunk = s.recv(65536)
            if not chunk:
                break
            reply += chunk
        return reply


def test_push_that_dies_midway_moves_nothing(engine_server, tmp_path):
    import time
    srv = engine_server
    _, token, full_name = srv.add_agent("dies")
    work = str(tmp_path / "w")
    clone(srv, full_name, token, work)
    old = git(work, "rev-parse", "HEAD").stdout.strip()
    for i in range(20):
        commit_file(work, "f%d.bin" % i, os.urandom(20000).hex())
    new = git(work, "rev-parse", "HEAD").stdout.strip()
    pack = subprocess.run(["git", "pack-objects", "--stdout", "--revs"], cwd=work, capture_output=True, check=True,
                          input=("%s\n^%s\n" % (new, old)).encode(), env=git_env(tmp_path)).stdout
    line = "%s %s refs/heads/main\0report-status\n" % (old, new)
    body = b"%04x%s0000" % (len(line) + 4, line.encode()) + pack[:len(pack) // 2]
    post_receive_pack(srv, full_name, token, body, hang_up=True)
    time.sleep(1)
    assert remote_main_of(srv, work) == old
    bare = os.path.join(str(srv.app.repos_dir), [d for d in os.listdir(srv.app.repos_dir) if d.endswith(".git")][0])
    assert git(bare, "fsck", "--strict").returncode == 0
    # the whole push still works afterwards
    git(work, "push", "-q", "origin", "HEAD:main")
    assert git(work, "ls-remote", "origin", "refs/heads/main").stdout.split()[0] == new


def test_corrupt_push_moves_nothing(engine_server, tmp_path):
    srv = engine_server
    _, token, full_name = srv.add_agent("corrupt")
    work = str(tmp_path / "w")
    clone(srv, full_name, token, work)
    before = git(work, "ls-remote", "origin", "refs/heads/main").stdout
    line = "%s %s refs/heads/main\0report-status\n" % (before.split()[0], "1" * 40)
    reply = post_receive_pack(srv, full_name, token, b"%04x%s0000PACK garbage that is not a pack" % (
        len(line) + 4, line.encode()))
    assert reply.startswith(b"HTTP/1.1 200") and b"unpack" in reply    # git reports the failure in-protocol
    assert b"unpack ok" not in reply
    assert git(work, "ls-remote", "origin", "refs/heads/main").stdout == before
    bare = os.path.join(str(srv.app.repos_dir), [d for d in os.listdir(srv.app.repos_dir) if d.endswith(".git")][0])
    assert git(bare, "fsck", "--strict").returncode == 0


def test_forty_agents_behind_one_address_clone_and_push_at_once(server, tmp_path):
    """An agent framework's harness: more agents than one address may keep idle connections, all on
    127.0.0.1, each cloning its own repository and pushing, at the same moment. Every one is served
    (a load figure for 200 agents is `make bench`'s, not a test's)."""
    admin = server.admin[1]
    agents = [ext_post_agent(server, admin) for _ in range(40)]
    errors = []

    def work(i, login, token):
        here = str(tmp_path / ("a%d" % i))
        try:
            git(str(tmp_path), "clone", "-q", remote(server, login + "/workspace", token), here)
            commit_file(here, "work.txt", "agent %d\n" % i)
            git(here, "push", "-q", "origin", "HEAD:main")
        except AssertionError as error:
            errors.append(str(error).splitlines()[-1])
    threads = [threading.Thread(target=work, args=(i, *agent)) for i, agent in enumerate(agents)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def ext_post_agent(server, admin):
    """An agent registered by the site admin (past the per-address limit); (login, token)."""
    made = ext(server, "POST", "/agents", admin, {"prefix_login": "fleet"}).json
    return made["login"], made["token"]
