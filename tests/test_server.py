"""Starting, embedding and administering the server: CLI, schema file, TLS, the authenticator hook."""
import collections
import json
import os
import re
import shutil
import stat
import ssl
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import pytest

import agentgit
from conftest import CLI, ROOT, SINGLE_FILE, api, call, git, postgresql, remote, sqlite_upgrade


def test_schema_file_matches_the_module():
    with open(os.path.join(ROOT, "schema.sql")) as f:
        assert f.read() == agentgit.SCHEMA


def test_serve_help_documents_the_options():
    out = subprocess.run([*CLI, "serve", "--help"], capture_output=True, text=True,
                         check=True).stdout
    for option in ("--host", "--port", "--data", "--url", "--tls-cert", "--tls-key", "--registration",
                   "--git-engine", "AGENTGIT_DATA"):
        assert option in out


def start_cli_server(cwd, *args, python_options=()):
    """`python agentgit.py serve` in ``cwd``, and its banner's lines. A server that exits before its
    banner ends fails the test with its error output (its output ends, so readline gives ""), and one
    silent for a minute is ended, so this never waits forever."""
    proc = subprocess.Popen([sys.executable, *python_options, "agentgit.py", "serve", "--port", "0", "--quiet", *args],
                            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(60, proc.kill)
    watchdog.start()
    lines = []
    try:
        while not lines or not lines[-1].startswith("agent credentials"):
            line = proc.stdout.readline()
            if not line:
                proc.wait()
                pytest.fail("the server exited (%s) before its banner ended: %s" % (proc.returncode,
                                                                                   proc.stderr.read()[-2000:]))
            lines.append(line.strip())
    finally:
        watchdog.cancel()
    return proc, lines


def test_copied_alone_first_start_gives_the_admin_token_once(tmp_path):
    """Standard output here is a pipe, as under a service manager or CI, where it is a log: the token
    goes to a file only its owner can read, and the line names the file."""
    shutil.copy(SINGLE_FILE, tmp_path / "agentgit.py")
    proc, lines = start_cli_server(str(tmp_path))
    try:
        assert lines[0].startswith("agentgit listening on http://127.0.0.1:")
        assert lines[-1].startswith("agent credentials: bootstrap (an agent's aga_ token acts on its own account")
        url = lines[0].split()[-1]
        admin_line = proc.stdout.readline().strip()
        assert "created site admin 'admin'; its token is in " in admin_line and "agp_" not in admin_line
        token_file = tmp_path / "agentgit-data" / "first-admin-token"
        assert str(token_file) in admin_line and stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
        token = token_file.read_text().strip()
        assert token.startswith("agp_")
        for name in ("agentgit-data", "agentgit-data/server.key") + (() if postgresql else ("agentgit-data/agentgit.db",)):
            assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) & 0o077 == 0, name
        req = urllib.request.Request(url + "/api/v3/user", headers={"Authorization": "token " + token})
        assert json.loads(urllib.request.urlopen(req).read())["site_admin"] is True
        # the CLI works beside the running server
        out = subprocess.run([sys.executable, "agentgit.py", "user", "add", "carol"], cwd=str(tmp_path),
                             capture_output=True, text=True, check=True).stdout.strip().split("\n")
        req = urllib.request.Request(url + "/api/v3/user", headers={"Authorization": "token " + out[-1]})
        assert json.loads(urllib.request.urlopen(req).read())["login"] == "carol"
    finally:
        proc.terminate()
        proc.wait()
    assert os.path.isdir(tmp_path / "agentgit-data" / "repos")
    proc, lines = start_cli_server(str(tmp_path))
    try:
        proc.terminate()
        rest = proc.communicate()[0]
        assert "created site admin" not in rest
    finally:
        proc.wait()


def test_a_server_that_exits_before_its_banner_fails_its_test_at_once(tmp_path):
    shutil.copy(SINGLE_FILE, tmp_path / "agentgit.py")
    with pytest.raises(pytest.fail.Exception, match="exited .* before its banner ended:.*--tls-cert"):
        start_cli_server(str(tmp_path), "--tls-cert", "/nonexistent.pem")


def test_under_python_o_a_malformed_dpop_proof_is_refused_not_a_server_error(tmp_path):
    """python -O drops assert statements: no validation may rest on one. A DPoP proof whose header is a
    JSON array, not an object, is refused as the RFC says (401, invalid_dpop_proof), not answered 500."""
    shutil.copy(SINGLE_FILE, tmp_path / "agentgit.py")
    proc, lines = start_cli_server(str(tmp_path), python_options=("-OO",))
    try:
        url = lines[0].split()[-1]
        proc.stdout.readline()                  # where the first admin token was written
        token = (tmp_path / "agentgit-data" / "first-admin-token").read_text().strip()

        def part(value):
            return agentgit.b64url(json.dumps(value).encode())
        for proof in ("%s.%s.c2ln" % (part(["dpop+jwt"]), part({})), "%s.%s.c2ln" % (part({}), part("claims")),
                      "not a jwt", "%s.%s.%s" % (part({"typ": "dpop+jwt", "alg": "ES256", "jwk": []}), part({}), "c2ln")):
            request = urllib.request.Request(url + "/api/v3/user", headers={"Authorization": "token " + token,
                                                                            "DPoP": proof})
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request)
            assert refused.value.code == 401, (proof, refused.value.code)
            assert 'DPoP error="invalid_dpop_proof"' in refused.value.headers["WWW-Authenticate"], proof
    finally:
        proc.terminate()
        proc.wait()


def test_cli_user_add_with_password_and_suspend(tmp_path):
    data = str(tmp_path / "d")
    run = lambda *a, **kw: subprocess.run([*CLI, *a, "--data", data],  # noqa: E731
                                          capture_output=True, text=True, **kw)
    assert "no agentgit data in %s" % data in run("user", "add", "dave").stderr and not os.path.exists(data)
    agentgit.Installation(agentgit.Config(data_dir=data))                        # the data a server made
    out = run("user", "add", "dave", "--admin", "--password-stdin", input="s3cret\n")
    assert out.returncode == 0 and out.stdout.strip().split("\n")[-1].startswith("agp_")
    assert run("user", "add", "dave").returncode != 0
    assert "not a valid login" in run("user", "add", "../x").stderr
    app = agentgit.Installation(agentgit.Config(data_dir=data))
    row = agentgit.account_by_login(app.store, "dave")
    assert agentgit.check_password(row["password_hash"], "s3cret") and "s3cret" not in row["password_hash"]
    assert not agentgit.check_password(row["password_hash"], "wrong")
    assert run("user", "suspend", "dave").returncode == 0
    assert agentgit.account_by_login(app.store, "dave")["suspended_at"]
    assert run("audit", "verify").returncode == 0


def make_cert(tmp_path):
    key, cert = str(tmp_path / "key.pem"), str(tmp_path / "cert.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


def test_https_rest_and_git(tmp_path):
    cert, key = make_cert(tmp_path)
    srv = agentgit.make_server(tmp_path / "d", port=0, tls_cert=cert, tls_key=key).start()
    try:
        assert srv.url.startswith("https://127.0.0.1:")
        _, token, full_name = srv.add_agent("tls")
        ctx = ssl.create_default_context(cafile=cert)
        req = urllib.request.Request(srv.url + "/api/v3/user", headers={"Authorization": "token " + token})
        assert json.loads(urllib.request.urlopen(req, context=ctx).read())["user_kind"] == "agent"
        env = dict(os.environ, HOME=str(tmp_path), GIT_SSL_CAINFO=cert, GIT_TERMINAL_PROMPT="0")
        git(str(tmp_path), "clone", "-q", remote(srv, full_name, token), str(tmp_path / "w"), env=env)
        assert os.path.exists(tmp_path / "w" / "README.md")
        # a client that never finishes the handshake does not stall the others
        import socket
        host, port = srv.httpd.server_address[:2]
        stalled = socket.create_connection((host, port))
        assert b"tls" in urllib.request.urlopen(req, context=ctx).read()
        stalled.close()
    finally:
        srv.stop()


def test_authenticator_vouches_for_humans_only(tmp_path):
    def authenticator(request):
        if request["headers"].get("X-Forwarded-User") == "erin":
            return {"provider": "corp-sso", "subject": "u-42", "login": "erin", "name": "Erin", "email": "e@corp"}
        return None
    srv = agentgit.make_server(tmp_path / "d", port=0, authenticator=authenticator).start()
    try:
        r = call(srv, "GET", "/api/v3/user", headers={"X-Forwarded-User": "erin"})
        assert r.status == 200 and (r.json["login"], r.json["user_kind"], r.json["name"]) == ("erin", "human", "Erin")
        first_id = r.json["id"]
        # the identity wins over any Authorization header, and maps to the same account every time
        _, agent, _ = srv.add_agent("bot")
        r = call(srv, "GET", "/api/v3/user", headers={"X-Forwarded-User": "erin", "Authorization": "token " + agent})
        assert r.json["id"] == first_id
        assert api(srv, "GET", "/user", agent).json["user_kind"] == "agent"    # agents use their own token
        api(srv, "POST", "/user/repos", None, {"name": "sso"}, headers={"X-Forwarded-User": "erin"})
        row = srv.app.store.one("SELECT * FROM audit WHERE action = 'create_repo'")
        assert row["actor"] == "erin" and row["runtime"] == "127.0.0.1 corp-sso:u-42"
    finally:
        srv.stop()


def test_head_and_unknown_routes(server):
    r = call(server, "HEAD", "/api/v3/users/admin")
    assert r.status == 200 and r.raw == b"" and int(r.headers["content-length"]) > 0
    for method, path, message in (("GET", "/api/v3/nothing", "Not Found"), ("GET", "/x/y/z/w/v", "Not Found"),
                                  ("DELETE", "/api/v3/user", "Not Found: /api/v3/user takes GET, not DELETE")):
        r = call(server, method, path)
        assert r.status == 404 and r.json["message"] == message
    r = call(server, "GET", "/admin/x.git/info/refs")           # dumb HTTP is not served
    assert r.status == 403 and b"smart HTTP" in r.raw


@sqlite_upgrade
def test_a_version_4_database_is_migrated_without_loss(tmp_path):
    """Data made by an older agentgit survives the upgrade: its tokens still work, new columns exist."""
    import sqlite3
    data = tmp_path / "d"
    data.mkdir()
    key = agentgit.load_server_key(str(data / "server.key"))
    db = sqlite3.connect(str(data / "agentgit.db"))
    db.executescript(open(os.path.join(ROOT, "tests", "schema_v4.sql")).read())
    db.execute("PRAGMA user_version = 4")
    user_id = agentgit.insert_account(db, "alice", "human")
    token = agentgit.mint_token(key, "agp")                     # a row as version 4 wrote it
    db.execute("INSERT INTO tokens (user_id, kind, name, scopes, hash, fingerprint, created_at)"
               " VALUES (?, 'personal', 'old', 'repo', ?, ?, '2026-01-01T00:00:00Z')",
               (user_id, agentgit.token_hash(token), agentgit.token_fingerprint(token)))
    db.commit()
    db.close()
    srv = agentgit.make_server(data, port=0).start()
    try:
        assert api(srv, "GET", "/user", token).json["login"] == "alice"
        assert "issued_by" in {r[1] for r in srv.app.store.all("PRAGMA table_info(tokens)")}
        assert "retired_at" in {r[1] for r in srv.app.store.all("PRAGMA table_info(accounts)")}
        assert srv.app.store.one("PRAGMA user_version")[0] == agentgit.SCHEMA_VERSION
        assert srv.app.store.one("SELECT name FROM sqlite_master WHERE name = 'tokens_by_user'") is not None
    finally:
        srv.stop()


@sqlite_upgrade
@pytest.mark.parametrize("hooks", ["with hooks", "before hooks"])
def test_a_version_10_database_gets_apps_and_keeps_its_hooks(tmp_path, hooks):
    """Version 10 was released twice, before webhooks and with them: either database becomes version 11
    with the hooks table GitHub Apps need (app_id), keeping the hooks it had."""
    import sqlite3
    data = tmp_path / "d"
    data.mkdir()
    db = sqlite3.connect(str(data / "agentgit.db"))
    db.executescript(open(os.path.join(ROOT, "tests", "schema_v10.sql")).read())
    db.execute("PRAGMA user_version = 10")
    alice = agentgit.insert_account(db, "alice", "human")
    db.execute("INSERT INTO repos (owner_id, name, private, default_branch, created_at, updated_at)"
               " VALUES (?, 'app', 0, 'main', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z')", (alice,))
    if hooks == "with hooks":
        db.execute("INSERT INTO hooks (id, repo_id, url, events, created_at, updated_at) VALUES (3, 1, 'https://x.example/h',"
                   " '[\"push\"]', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z')")
        db.execute("INSERT INTO hook_deliveries (hook_id, guid, event, created_at) VALUES (3, 'g', 'ping',"
                   " '2026-01-01T00:00:00Z')")
    else:
        db.executescript("DROP TABLE hook_deliveries; DROP TABLE hooks;")
    db.commit()
    db.close()
    srv = agentgit.make_server(data, port=0).start()
    try:
        store = srv.app.store
        assert store.one("PRAGMA user_version")[0] == agentgit.SCHEMA_VERSION
        assert "app_id" in {r[1] for r in store.all("PRAGMA table_info(hooks)")}
        assert [tuple(r) for r in store.all("SELECT id, url FROM hooks")] == (
            [(3, "https://x.example/h")] if hooks == "with hooks" else [])
        assert store.one("SELECT COUNT(*) FROM hook_deliveries")[0] == (1 if hooks == "with hooks" else 0)
        assert store.all("PRAGMA foreign_key_check") == []
        assert store.one("SELECT name FROM sqlite_master WHERE name = 'apps'") is not None
    finally:
        srv.stop()


def test_api_host_layout(server):
    """On api.<host> the API sits at the root and GraphQL at /graphql, as on api.github.com (gh's
    github.localhost mode uses it)."""
    token = server.add_user("alice")
    r = call(server, "GET", "/user", token, headers={"Host": "api.github.localhost"})
    assert r.status == 200 and r.json["login"] == "alice"
    r = call(server, "POST", "/graphql", token, {"query": "{ viewer { login } }"}, headers={"Host": "api.github.localhost"})
    assert r.json == {"data": {"viewer": {"login": "alice"}}}
    assert call(server, "GET", "/user", token).status == 404          # not on the plain host


@sqlite_upgrade
def test_a_version_5_database_records_the_grantor_of_existing_invite_grants(tmp_path):
    """An agent's access from an invite made before version 6 becomes derived from its inviter, the
    human it is bound to, and is capped by what that human holds from then on."""
    import sqlite3
    data = tmp_path / "d"
    data.mkdir()
    db = sqlite3.connect(str(data / "agentgit.db"))
    db.executescript(open(os.path.join(ROOT, "tests", "schema_v5.sql")).read())
    db.execute("PRAGMA user_version = 5")
    ids = {login: agentgit.insert_account(db, login, kind) for login, kind in
           (("alice", "human"), ("bob", "human"), ("coder", "agent"))}
    db.execute("INSERT INTO repos (owner_id, name, private, default_branch, created_at, updated_at)"
               " VALUES (?, 'payments', 1, 'main', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z')", (ids["alice"],))
    for login, permission in (("bob", "admin"), ("coder", "admin")):
        db.execute("INSERT INTO collaborators (repo_id, user_id, permission) VALUES (1, ?, ?)", (ids[login], permission))
    db.execute("INSERT INTO agent_bindings (agent_id, human_id, bound_at) VALUES (?, ?, '2026-01-01T00:00:00Z')",
               (ids["coder"], ids["bob"]))
    db.execute("INSERT INTO agent_grants (agent_id, repo_id, permission, created_at) VALUES (?, 1, 'admin',"
               " '2026-01-01T00:00:00Z')", (ids["coder"],))
    db.execute("INSERT INTO tokens (id, user_id, kind, name, scopes, hash, fingerprint, created_at, issued_by)"
               " VALUES (7, ?, 'switch-session', 'switch', 'repo', 'h', 'f', '2026-01-01T00:00:00Z', ?)",
               (ids["coder"], ids["bob"]))
    db.execute("INSERT INTO step_ups (token_id, at) VALUES (7, '2026-01-01T00:00:00Z')")
    # an audit row hashed as version 5 did, over its fields then
    import hashlib
    import hmac
    import json
    old = {"at": "2026-01-01T00:00:00Z", "actor": "alice", "user_kind": "human", "delegator": None, "task": None,
           "grant_id": None, "runtime": "cli", "token_fingerprint": None, "surface": "cli", "action": "create_user",
           "resource": "user:alice", "decision": "allow", "reasons": "[]", "side_effect": "created alice"}
    key = agentgit.load_server_key(str(data / "server.key"))
    payload = agentgit.GENESIS_HASH + json.dumps(list(old.values()), separators=(",", ":"))
    db.execute("INSERT INTO audit (%s, prev_hash, hash) VALUES (%s)" % (", ".join(old), ", ".join("?" * (len(old) + 2))),
               list(old.values()) + [agentgit.GENESIS_HASH, hmac.new(key, payload.encode(), hashlib.sha256).hexdigest()])
    db.commit()
    db.close()
    app = agentgit.Installation(agentgit.Config(data_dir=str(data)))
    store = app.store
    assert agentgit.audit_verify(store, app.key)[:2] == (True, 1)          # rows from before still verify
    # the tokens table is rebuilt (a new kind): its rows, and the rows that refer to them, are all kept
    assert tuple(store.one("SELECT kind, issued_by FROM tokens WHERE id = 7")) == ("switch-session", ids["bob"])
    assert store.one("SELECT token_id FROM step_ups")[0] == 7 and store.all("PRAGMA foreign_key_check") == []
    assert "tokens_before_v6" not in store.one("SELECT sql FROM sqlite_master WHERE name = 'step_ups'")[0]
    # an existing installation keeps its agents' tokens working directly until the operator switches
    assert store.one("SELECT value FROM settings WHERE name = 'agent_credentials'")[0] == "direct"
    assert store.one("SELECT granted_by FROM collaborators WHERE user_id = ?", ids["coder"])[0] == ids["bob"]
    assert store.one("SELECT granted_by FROM collaborators WHERE user_id = ?", ids["bob"])[0] is None
    repo, coder = agentgit.repo_by_id(store, 1), agentgit.account_by_id(store, ids["coder"])
    assert agentgit.repo_permission(store, coder, repo) == ("admin", "collaborator via bob, who holds admin")
    with store.transaction() as db:
        db.execute("UPDATE collaborators SET permission = 'read' WHERE user_id = ?", (ids["bob"],))
    assert agentgit.repo_permission(store, coder, repo) == ("read", "collaborator via bob, who holds read")


def routes_overlap(a, b):
    """Does some path match both segment lists (of one length)?"""
    for (kind_a, a_value), (kind_b, b_value) in zip(a, b):
        if kind_a == kind_b == "literal" and a_value != b_value:
            return False
        if {kind_a, kind_b} == {"int", "literal"} and not (a_value if kind_a == "literal" else b_value).isdigit():
            return False
    return True


def test_where_two_routes_overlap_the_one_that_names_more_wins():
    """Two routes of one method that a path could match both: one names a literal (or a number) at every
    segment where the other does, and more somewhere, and that one is tried first whichever module
    declared it first. A route added that overlaps another without being strictly more specific fails."""
    rank = agentgit.SEGMENT_RANK
    pairs = 0
    for method, by_length in list(agentgit.FIXED_ROUTES.items()):
        for routes in by_length.values():
            for i, first in enumerate(routes):
                for later in routes[i + 1:]:
                    if routes_overlap(first.segments, later.segments):
                        pairs += 1
                        ranks = [(rank[a], rank[b]) for (a, _), (b, _) in zip(first.segments, later.segments)]
                        assert all(a <= b for a, b in ranks) and any(a < b for a, b in ranks), (
                            method, first.pattern, later.pattern)
    assert pairs >= 15
    # declared the other way round, the literal route still wins
    try:
        agentgit.route("RANKTEST", "/rank/{name}")(lambda req, name: "any segment")
        agentgit.route("RANKTEST", "/rank/exact")(lambda req: "the literal")
        found, params = agentgit.find_route("RANKTEST", "/rank/exact")
        assert (found.handler(None), agentgit.find_route("RANKTEST", "/rank/other")[1]) == ("the literal", {"name": "other"})
    finally:
        for table in (agentgit.ROUTES, agentgit.FIXED_ROUTES):
            table.pop("RANKTEST", None)


def a_path_of(pattern):
    """A path the route's template matches: each parameter filled with a value of its kind."""
    return re.sub(r"\{\w+(:(int|path))?\}", lambda m: {":int": "1", ":path": "a/b"}.get(m.group(1), "x"), pattern)


def test_each_route_knows_its_caller_the_way_it_declares(server):
    """Every route declares its surface and how its caller is known, and the pipeline does just that. A
    stale token is refused where the route reads tokens, with its surface's challenge: git's Basic (which
    makes git ask for credentials), RFC 6750's Bearer naming RFC 9728's metadata everywhere else (the
    MCP endpoint's own). Where the route reads no Authorization (the OAuth metadata a client fetches to
    learn how to get a token, the device-code request, a web page) the stale token is not read at all,
    and the OAuth endpoints that authenticate their client answer in RFC 6749's error shape."""
    stale = {"Authorization": "token ghp_" + "0" * 36, "Accept": "application/json"}
    seen = collections.Counter()
    for method, routes in sorted(agentgit.ROUTES.items()):
        for r in routes:
            path = a_path_of(r.pattern)
            resp = call(server, method, path, headers=stale, raw_body=b"")
            seen[r.authentication] += 1
            where = (method, r.pattern, r.surface, r.authentication, resp)
            if r.authentication == "token":
                challenge = resp.headers.get("www-authenticate", "")
                assert resp.status == 401, where
                if r.surface == "git":
                    assert challenge == 'Basic realm="agentgit"', where
                else:
                    metadata = "/.well-known/oauth-protected-resource" + ("/mcp" if r.surface == "mcp" else "")
                    assert challenge.startswith("Bearer ") and 'resource_metadata="%s%s"' % (
                        server.url, metadata) in challenge, where
            elif r.authentication == "client":
                assert resp.status in (400, 401) and "error" in resp.json, where
            else:
                assert resp.status != 401 and "www-authenticate" not in resp.headers, where
    assert seen["token"] > 250 and seen["none"] >= 6 and seen["session"] >= 18 and seen["client"] == 3
    metadata = call(server, "GET", "/.well-known/oauth-protected-resource", headers=stale)
    assert metadata.status == 200 and metadata.json["resource"] == server.url


def test_answers_carry_githubs_identifying_headers(server, tmp_path):
    """Tools tell a GitHub by X-GitHub-Request-Id (on every answer, git's too), read the GHES version, and
    pace themselves by the rate-limit headers (octokit's throttling, gidgethub), which say what
    /rate_limit says."""
    token = server.add_user("alice")
    answer = api(server, "GET", "/user", token)
    ids = {answer.headers["x-github-request-id"]}
    assert re.fullmatch(r"[0-9A-F]{4}:[0-9A-F]{4}:[0-9A-F]{7}:[0-9A-F]{7}:[0-9A-F]{8}", next(iter(ids)))
    assert answer.headers["x-github-enterprise-version"] == api(server, "GET", "/meta", token).json["installed_version"]
    limits = api(server, "GET", "/rate_limit", token).json["rate"]
    assert (int(answer.headers["x-ratelimit-limit"]), int(answer.headers["x-ratelimit-remaining"]),
            int(answer.headers["x-ratelimit-reset"]), answer.headers["x-ratelimit-resource"]) == (
        limits["limit"], limits["remaining"], limits["reset"], "core")
    for other in (api(server, "GET", "/nothing-here", token), call(server, "GET", "/alice/none.git/info/refs"),
                  call(server, "GET", "/login")):
        ids.add(other.headers["x-github-request-id"])
    assert len(ids) == 4                                            # one each, every kind of answer
