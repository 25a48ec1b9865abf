"""Fuzzing (hypothesis): hostile input at every parser a client reaches, over a real socket where the
parser sits behind one. The properties, for every input: no 5xx, an answer (or a closed connection)
within a second, no response header carrying a CR or LF, the limits enforced, and a redirect that
never leaves the server.

FUZZ_EXAMPLES sets the inputs per target: a few hundred in `make test`, 1,000,000 in `make fuzz`.
"""
import base64
import html
import json
import os
import re
import socket
import time
import urllib.parse

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import agentgit
from conftest import api, ext, sweep

pytestmark = sweep

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "100"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=EXAMPLES < 10000,
                suppress_health_check=list(HealthCheck))
SECOND = 1.0


@pytest.fixture(scope="module")
def site(tmp_path_factory, new_database):
    """alice's private repository alice/secret with an issue, her token, and an OAuth app."""
    srv = agentgit.make_server(tmp_path_factory.mktemp("fuzz") / "data", port=0, database=new_database()).start()
    srv.app.sign_ins.limit = 10 ** 9     # the fuzzers sign in far more than people do
    alice = srv.add_user("alice", password="pw")
    assert api(srv, "POST", "/user/repos", alice, {"name": "secret", "private": True, "auto_init": True}).status == 201
    assert api(srv, "POST", "/repos/alice/secret/issues", alice, {"title": "bug"}).status == 201
    client = ext(srv, "POST", "/oauth/apps", alice, {"name": "app", "redirect_uris": ["http://127.0.0.1:9/cb"]})
    srv.app.failed_proofs.limit = 10 ** 9     # nor would people fail proofs this often
    agent, agent_token, _ = srv.add_agent("runner")
    from cryptography.hazmat.primitives.asymmetric import rsa
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    numbers = key.public_key().public_numbers()
    jwk = {"kty": "RSA", "kid": "k1", "n": agentgit.b64url(numbers.n.to_bytes(256, "big")), "e": "AQAB"}
    assert ext(srv, "POST", "/agent-keys", agent_token, {"jwk": jwk}).status == 201
    yield {"srv": srv, "alice": alice, "client_id": client.json["client_id"], "agent": agent, "agent_key": key}
    srv.stop()


class Answer:
    def __init__(self, status, headers, body, seconds):
        self.status, self.headers, self.body, self.seconds = status, headers, body, seconds


def exchange_bytes(srv, request):
    """``request`` answered, as ``one_exchange``; an answer slower than a second is asked for once more,
    so that only an input slow twice in a row (a hang) fails the timing, not a busy machine."""
    answer = one_exchange(srv, request)
    return answer if answer.seconds < SECOND else one_exchange(srv, request)


def one_exchange(srv, request):
    """Send ``request`` on a new connection, close our side, read until the server closes: the status
    (None when it closed without one), the header lines as bytes, the body, the seconds it took."""
    url = urllib.parse.urlsplit(srv.url)
    started = time.monotonic()
    with socket.create_connection((url.hostname, url.port), timeout=5) as sock:
        try:
            sock.sendall(request)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass                    # the server may refuse and close before it has read everything
        chunks = []
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                chunks.append(data)
        except ConnectionResetError:
            pass
    seconds = time.monotonic() - started
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    m = re.match(rb"HTTP/1\.[01] (\d{3}) ", lines[0] + b" ")
    return Answer(int(m.group(1)) if m else None, lines[1:] if m else [], body, seconds)


def request_bytes(method, target, headers=(), body=b""):
    head = b"%s %s HTTP/1.1\r\n" % (method, target)
    head += b"".join(b"%s: %s\r\n" % (k, v) for k, v in headers)
    return head + b"\r\n" + body


def assert_well_behaved(answer):
    """No server error (501 is what RFC 9110 has a server answer to a method or transfer coding it does
    not implement), an answer within the second, every header line whole, errors in the REST shape."""
    assert answer.seconds < SECOND, "took %.2f s" % answer.seconds
    assert answer.status is None or answer.status < 500 or answer.status == 501, (answer.status, answer.body[:300])
    for line in answer.headers:
        assert b"\r" not in line and b"\n" not in line and b":" in line, line


def call_json(site, method, path, body, token=None):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = [(b"Host", b"127.0.0.1"), (b"Content-Type", b"application/json"),
               (b"Content-Length", b"%d" % len(raw)), (b"Connection", b"close")]
    if token:
        headers.append((b"Authorization", b"token " + token.encode()))
    return exchange_bytes(site["srv"], request_bytes(method.encode(), path.encode(), headers, raw))


# -- GraphQL ------------------------------------------------------------------------------------

GRAPHQL_WORDS = ["{", "}", "(", ")", "[", "]", ":", "$", "@", "!", "=", "...", "|", "&", "query", "mutation",
                 "subscription", "fragment", "on", "viewer", "login", "repository", "owner", "name", "issues",
                 "first", "nodes", "edges", "node", "id", "__typename", "__schema", "__type", "types", "fields",
                 "ofType", "kind", "F", "G", "include", "skip", "if", "true", "false", "null", '"secret"', '"""x"""',
                 "1", "-1", "1e999", "0x1", "$v", "Int", "String!", "createIssue", "input", "title", "repositoryId",
                 "#", "\n", ",", "\u00e9", "\\u0000", '"\\u12"', "'"]
graphql_documents = st.one_of(
    st.lists(st.sampled_from(GRAPHQL_WORDS) | st.text(max_size=4), max_size=60).map(" ".join),
    st.text(max_size=200),
    # nesting, which the parser's depth limit must stop
    st.integers(1, 3000).map(lambda n: "{" * n + "viewer" + "}" * n),
    st.integers(1, 3000).map(lambda n: "query($v: " + "[" * n + "Int" + "]" * n + ") { viewer { login } }"),
)


@FUZZ
@given(document=graphql_documents)
def test_graphql_parser(document):
    started = time.monotonic()
    try:
        agentgit.GraphQLParser(document).document()
    except agentgit.GraphQLError:
        pass
    assert time.monotonic() - started < SECOND


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner,
                                                                                         max_size=5), max_leaves=20)


@FUZZ
@given(document=graphql_documents, variables=json_values, operation=st.none() | st.text(max_size=10))
def test_graphql_over_http(site, document, variables, operation):
    answer = call_json(site, "POST", "/api/graphql", {"query": document, "variables": variables,
                                                      "operationName": operation}, site["alice"])
    assert_well_behaved(answer)
    assert answer.status in (200, 400), answer.body[:300]
    if answer.status == 200:
        out = json.loads(answer.body)
        assert "data" in out or out.get("errors"), out


# -- MCP: JSON-RPC messages in either era --------------------------------------------------------

MCP_METHODS = ["initialize", "ping", "server/discover", "tools/list", "tools/call", "notifications/initialized",
               "resources/list", "prompts/get", "", "x" * 300]
TOOL_NAMES = sorted(agentgit.TOOLS) + ["", "nope", "../etc"]
ARGUMENT_NAMES = sorted({name for tool in agentgit.TOOLS.values() for name in tool.properties}) + ["x"]
mcp_messages = st.one_of(
    st.fixed_dictionaries({"jsonrpc": st.sampled_from(["2.0", "1.0", 2]), "method": st.sampled_from(MCP_METHODS)},
                          optional={"id": st.none() | st.integers() | st.text(max_size=8) | st.booleans(),
                                    "params": st.fixed_dictionaries({}, optional={
                                        "name": st.sampled_from(TOOL_NAMES) | json_values,
                                        "arguments": st.dictionaries(st.sampled_from(ARGUMENT_NAMES), json_values,
                                                                     max_size=6) | json_values,
                                        "_meta": st.fixed_dictionaries({}, optional={
                                            "io.modelcontextprotocol/protocolVersion": st.sampled_from(
                                                ["2026-07-28", "2025-11-25", ""]) | json_values,
                                            "io.modelcontextprotocol/clientCapabilities": json_values}),
                                        "protocolVersion": st.sampled_from(["2025-06-18", "2025-11-25"]) | json_values})
                                    | json_values}),
    json_values, st.binary(max_size=64))


@FUZZ
@given(message=mcp_messages, version=st.sampled_from([None, "2025-06-18", "2025-11-25", "2026-07-28", "x"]),
       method_header=st.none() | st.sampled_from(MCP_METHODS), name_header=st.none() | st.sampled_from(TOOL_NAMES))
def test_mcp_messages(site, message, version, method_header, name_header):
    """Whatever arrives at /mcp gets a JSON-RPC answer (or 202 for a notification), never a 500 or a
    half-done call; the tools run as alice, on her repository, with what the fuzzer gives them."""
    raw = message if isinstance(message, bytes) else json.dumps(message).encode()
    headers = [(b"Host", b"127.0.0.1"), (b"Content-Type", b"application/json"), (b"Content-Length", b"%d" % len(raw)),
               (b"Connection", b"close"), (b"Authorization", b"Bearer " + site["alice"].encode()),
               (b"Accept", b"application/json, text/event-stream")]
    for name, value in ((b"MCP-Protocol-Version", version), (b"Mcp-Method", method_header), (b"Mcp-Name", name_header)):
        if value is not None:
            headers.append((name, value.encode("utf-8", "replace")[:200]))
    answer = exchange_bytes(site["srv"], request_bytes(b"POST", b"/mcp", headers, raw))
    assert_well_behaved(answer)
    assert answer.status in (200, 202, 400, 403, 404), (answer.status, answer.body[:300])
    if answer.status != 202 and answer.body:
        out = json.loads(answer.body)
        assert out.get("jsonrpc") == "2.0" or "message" in out, out


# -- JSON bodies of every route -----------------------------------------------------------------

FIELDS = ["title", "body", "name", "state", "labels", "assignees", "assignee", "milestone", "head", "base", "sha",
          "ref", "message", "content", "branch", "permission", "private", "visibility", "description", "event",
          "reviewers", "tag_name", "target_commitish", "draft", "merge_method", "commit_title", "force", "tree",
          "parents", "path", "mode", "type", "encoding", "color", "login", "role", "privacy", "key_id",
          "encrypted_value", "value", "inputs", "status", "conclusion", "head_sha", "default_branch",
          "repo_grants", "team_grants", "agent", "delegator", "task", "resources", "actions", "constraints",
          "invite_token", "display_name", "resource", "reason", "otp", "user_code", "scopes", "expires_at",
          "redirect_uris", "query", "variables", "lock_reason", "state_reason", "due_on", "prefix_login"]
json_bodies = st.one_of(
    st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), json_values, max_size=8),
    json_values,
    st.binary(max_size=64),
    st.integers(1, 5000).map(lambda n: b"[" * n + b"]" * n),
)
# Routes a fuzzer must not call with alice's token: they would end the world the others need.
SPARED = {("DELETE", "/api/v3/repos/{owner}/{repo}"), ("DELETE", "/api/ext/v1/user/tokens/{token_id:int}"),
          ("PUT", "/api/v3/users/{login}/suspended"), ("POST", "/api/ext/v1/freezes"),
          ("POST", "/api/ext/v1/revocations")}
API_ROUTES = sorted((method, r.pattern) for method, routes in agentgit.ROUTES.items() for r in routes
                    if r.pattern.startswith("/api/") and method != "GET" and (method, r.pattern) not in SPARED)
FILL = {"owner": "alice", "repo": "secret", "number": "1", "login": "alice", "org": "acme", "slug": "team",
        "branch": "main", "path": "README.md", "ref": "heads/main", "name": "bug", "sha": "0" * 40}


def filled(pattern):
    return "/".join(FILL.get(part[1:-1].split(":")[0], "1") if part.startswith("{") else part
                    for part in pattern.split("/"))


@FUZZ
@given(route=st.sampled_from(API_ROUTES), body=json_bodies)
def test_json_bodies_of_every_route(site, route, body):
    method, pattern = route
    answer = call_json(site, method, filled(pattern), body, site["alice"])
    assert_well_behaved(answer)
    assert answer.status is not None


# -- the HTTP request line, headers and chunked bodies -------------------------------------------

methods = st.sampled_from([b"GET", b"POST", b"PUT", b"PATCH", b"DELETE", b"HEAD", b"OPTIONS", b"TRACE",
                           b"CONNECT", b"get", b"G ET", b""]) | st.binary(max_size=8)
targets = st.sampled_from([b"/", b"/api/v3/user", b"/api/v3/repos/alice/secret", b"/alice/secret.git/info/refs",
                           b"/api/graphql", b"/login", b"/login/oauth/access_token", b"*", b"http://x/",
                           b"/%00", b"/%ff%fe", b"/..%2f..%2fetc/passwd", b"/api/v3/repos/a/b/contents/%2e%2e",
                           b"/" + b"a" * 70000]) | st.binary(max_size=40).map(lambda b: b"/" + b)
header_names = st.sampled_from([b"Host", b"Content-Length", b"Transfer-Encoding", b"Authorization", b"Cookie",
                                b"Content-Type", b"Expect", b"Connection", b"Accept-Encoding", b"Git-Protocol",
                                b"Content-Encoding", b"X-Forwarded-For", b"Origin"]) | st.binary(max_size=12)
header_values = st.sampled_from([b"0", b"-1", b"1e3", b"chunked", b"gzip, chunked", b"chunked, chunked",
                                 b"100-continue", b"keep-alive", b"application/json", b"token agp_x",
                                 b"Basic !!!", b"\xff\xfe", b"2147483648", b"99999999999999999999"]) | st.binary(
    max_size=40)
chunk_sizes = st.sampled_from([b"0", b"1", b"-1", b"ff", b"FFFFFFFFFFFFFFFF", b"0x10", b"1;ext=1", b" 1", b"1 ",
                               b"", b"\xb2"]) | st.binary(max_size=6)


@FUZZ
@given(method=methods, target=targets, version=st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/0.9", b"HTTP/2",
                                                                 b"", b"HTTP/1.1 x"]) | st.binary(max_size=8),
       headers=st.lists(st.tuples(header_names, header_values), max_size=8),
       chunks=st.none() | st.lists(st.tuples(chunk_sizes, st.binary(max_size=20)), max_size=5))
def test_request_line_headers_and_chunks(site, method, target, version, headers, chunks):
    body = b""
    if chunks is not None:
        headers = headers + [(b"Transfer-Encoding", b"chunked")]
        body = b"".join(size + b"\r\n" + data + b"\r\n" for size, data in chunks) + b"0\r\n\r\n"
    request = method + b" " + target + b" " + version + b"\r\n"
    request += b"".join(k + b": " + v + b"\r\n" for k, v in headers) + b"\r\n" + body
    assert_well_behaved(exchange_bytes(site["srv"], request))


# -- pkt-lines of upload-pack and receive-pack ---------------------------------------------------

def pkt(payload):
    return b"%04x" % (len(payload) + 4) + payload


pkt_payloads = st.sampled_from([b"want " + b"0" * 40 + b"\n", b"have " + b"1" * 40 + b"\n", b"done\n",
                                b"command=ls-refs\n", b"command=fetch\n", b"deepen 2147483647\n", b"filter blob:none\n",
                                b"0" * 40 + b" " + b"1" * 40 + b" refs/heads/x\x00report-status side-band-64k",
                                b"shallow " + b"2" * 40 + b"\n", b"PACK\x00\x00\x00\x02\x00\x00\x00\x01"]) | st.binary(
    max_size=60)
pkt_streams = st.lists(st.one_of(pkt_payloads.map(pkt), st.sampled_from([b"0000", b"0001", b"0002", b"0003", b"fff",
                                                                         b"zzzz", b"ffff"])), max_size=10).map(b"".join)


@FUZZ
@given(service=st.sampled_from(["git-upload-pack", "git-receive-pack"]), body=pkt_streams,
       protocol=st.sampled_from([b"", b"version=2", b"version=1", b"version=99"]))
def test_pkt_lines(site, service, body, protocol):
    auth = base64.b64encode(b"x:" + site["alice"].encode())
    headers = [(b"Host", b"127.0.0.1"), (b"Authorization", b"Basic " + auth),
               (b"Content-Type", b"application/x-%s-request" % service.encode()),
               (b"Content-Length", b"%d" % len(body)), (b"Git-Protocol", protocol), (b"Connection", b"close")]
    answer = exchange_bytes(site["srv"], request_bytes(b"POST", b"/alice/secret.git/" + service.encode(), headers, body))
    assert_well_behaved(answer)
    assert answer.status is not None


# -- credentials in headers ---------------------------------------------------------------------

schemes = st.sampled_from([b"token", b"Bearer", b"Basic", b"bearer", b"TOKEN", b"Digest", b""]) | st.binary(max_size=6)
credentials = st.one_of(
    st.sampled_from(["agp_", "aga_", "agr_", "agt_", "ags_", "gho_", "ghp_"]).flatmap(
        lambda p: st.text("0123456789abcdef", min_size=0, max_size=60).map(lambda t: (p + t).encode())),
    st.binary(max_size=80).map(base64.b64encode),
    st.tuples(st.text(max_size=10), st.text(max_size=60)).map(lambda up: base64.b64encode(
        ("%s:%s" % up).encode("utf-8", "surrogatepass"))),
    st.binary(max_size=80))


@FUZZ
@given(scheme=schemes, credential=credentials, path=st.sampled_from([b"/api/v3/user", b"/api/v3/repos/alice/secret",
                                                                      b"/alice/secret.git/info/refs?service=git-upload-pack",
                                                                      b"/api/ext/v1/policy?resource=repo:alice/secret"]))
def test_credentials(site, scheme, credential, path):
    answer = exchange_bytes(site["srv"], request_bytes(b"GET", path, [
        (b"Host", b"127.0.0.1"), (b"Authorization", scheme + b" " + credential), (b"Connection", b"close")]))
    assert_well_behaved(answer)
    # nothing made up is anyone: a 401, a 400 for a header that is not one, or (a header that names no
    # credential at all, such as an empty one, is no one) the 404 of a private repository
    assert answer.status in (400, 401, 404), (answer.status, answer.body[:200])


def b64url_json(value):
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


# DPoP proofs: compact JWTs of JSON that looks like a proof (or not), signed with nothing or noise
proof_headers = st.fixed_dictionaries({}, optional={
    "typ": st.sampled_from(["dpop+jwt", "JWT"]) | st.text(max_size=8), "alg": st.sampled_from(["ES256", "none"]),
    "jwk": st.fixed_dictionaries({}, optional={"kty": st.sampled_from(["EC", "RSA"]), "crv": st.just("P-256"),
                                               "x": st.text(max_size=50), "y": st.text(max_size=50),
                                               "d": st.text(max_size=5)}) | json_values})
proof_claims = st.dictionaries(st.sampled_from(["htm", "htu", "iat", "jti", "ath", "nonce"]) | st.text(max_size=5),
                               json_values | st.integers(), max_size=7)
dpop_proofs = st.one_of(
    st.tuples(proof_headers | json_values, proof_claims | json_values, st.binary(max_size=80)).map(
        lambda t: "%s.%s.%s" % (b64url_json(t[0]), b64url_json(t[1]),
                                base64.urlsafe_b64encode(t[2]).rstrip(b"=").decode())),
    st.text(max_size=300))


@FUZZ
@given(proof=dpop_proofs)
def test_dpop_proofs(proof):
    """Whatever a client sends as a proof, the checker answers DPoPError (a 401 or 400 in the RFC's
    shape) or a thumbprint, quickly, and nothing else."""
    started = time.monotonic()
    try:
        agentgit.check_dpop_proof(proof, "GET", "http://127.0.0.1/api/v3/user", b"k" * 32, agentgit.ReplayCache(),
                                  "agt_x")
    except agentgit.DPoPError:
        pass
    assert time.monotonic() - started < SECOND


@FUZZ
@given(proof=dpop_proofs, scheme=st.sampled_from([b"DPoP", b"Bearer", b"token"]),
       path=st.sampled_from([b"/api/v3/user", b"/login/oauth/access_token", b"/api/ext/v1/broker/tokens"]))
def test_dpop_headers(site, proof, scheme, path):
    body = b"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token=" + \
        site["alice"].encode() if path.startswith(b"/login") else b"{}"
    answer = exchange_bytes(site["srv"], request_bytes(b"POST" if path != b"/api/v3/user" else b"GET", path, [
        (b"Host", b"127.0.0.1"), (b"Authorization", scheme + b" " + site["alice"].encode()),
        (b"DPoP", proof.encode("utf-8", "surrogatepass")), (b"Content-Type", b"application/x-www-form-urlencoded"),
        (b"Content-Length", str(len(body)).encode()), (b"Connection", b"close")], body))
    assert_well_behaved(answer)
    assert answer.status in (400, 401), (answer.status, answer.body[:200])


# -- OAuth, device flow, redirects --------------------------------------------------------------

OAUTH_KEYS = ["grant_type", "client_id", "client_secret", "code", "redirect_uri", "code_verifier", "refresh_token",
              "subject_token", "subject_token_type", "actor_token", "resource", "audience", "scope", "device_code",
              "requested_token_type", "task", "state", "code_challenge", "code_challenge_method", "response_type"]
OAUTH_VALUES = ["authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:device_code",
                "urn:ietf:params:oauth:grant-type:token-exchange", "urn:ietf:params:oauth:token-type:access_token",
                "S256", "plain", "code", "repo", "http://127.0.0.1:9/cb", "http://127.0.0.1:9/cb\r\nSet-Cookie: x=1",
                "http://127.0.0.1:9/cb/../x", "//evil.example", "agp_x", ""]
oauth_forms = st.dictionaries(st.sampled_from(OAUTH_KEYS) | st.text(max_size=6),
                              st.sampled_from(OAUTH_VALUES) | st.text(max_size=30), max_size=8)


# Client assertions (RFC 7523): JWTs whose claims are near an agent's (its login, this server, now) or
# anything JSON holds, NaN and the infinities included; signed by the agent's key, or not at all
assertion_headers = st.fixed_dictionaries({}, optional={"alg": st.sampled_from(["RS256", "none"]) | json_values,
                                                        "kid": st.sampled_from(["k1", "k2"]) | json_values})
assertion_claims = st.dictionaries(
    st.sampled_from(["iss", "sub", "aud", "exp", "iat", "jti"]),
    st.sampled_from(["AGENT", "SERVER", "a-jti-long-enough"]) | json_values | st.integers() |
    st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(["NOW"]), max_size=6)


def near(value, site):
    """The placeholders of a fuzzed claim made real: the agent's login, this server, the time now."""
    return {"AGENT": site["agent"], "SERVER": site["srv"].url, "NOW": int(time.time()) + 60}.get(value, value) if \
        isinstance(value, str) else value


@FUZZ
@given(header=assertion_headers | json_values, claims=assertion_claims, signed=st.booleans())
def test_client_assertions(site, header, claims, signed):
    """Whatever an assertion says, with whatever types, the token endpoint answers RFC 6749's error (or a
    token), quickly, never a 5xx."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding
    head = b64url_json(header)
    body = b64url_json({name: near(value, site) for name, value in claims.items()})
    signature = site["agent_key"].sign(("%s.%s" % (head, body)).encode(), padding.PKCS1v15(), hashes.SHA256()) \
        if signed else b"unsigned"
    form = urllib.parse.urlencode({"grant_type": "client_credentials", "client_assertion_type":
                                   "urn:ietf:params:oauth:client-assertion-type:jwt-bearer", "client_assertion":
                                   "%s.%s.%s" % (head, body, agentgit.b64url(signature))}).encode()
    answer = exchange_bytes(site["srv"], request_bytes(b"POST", b"/login/oauth/access_token", [
        (b"Host", b"127.0.0.1"), (b"Content-Type", b"application/x-www-form-urlencoded"), (b"Accept", b"application/json"),
        (b"Content-Length", b"%d" % len(form)), (b"Connection", b"close")], form))
    assert_well_behaved(answer)
    assert answer.status == 200 or "error" in json.loads(answer.body), answer.body[:200]


@FUZZ
@given(path=st.sampled_from(["/login/oauth/access_token", "/login/device/code"]), form=oauth_forms,
       with_client=st.booleans())
def test_oauth_endpoints(site, path, form, with_client):
    if with_client:
        form = dict(form, client_id=site["client_id"])
    body = urllib.parse.urlencode(form).encode()
    answer = exchange_bytes(site["srv"], request_bytes(b"POST", path.encode(), [
        (b"Host", b"127.0.0.1"), (b"Content-Type", b"application/x-www-form-urlencoded"), (b"Accept", b"application/json"),
        (b"Content-Length", b"%d" % len(body)), (b"Connection", b"close")], body))
    assert_well_behaved(answer)
    if answer.status >= 400:
        assert "error" in json.loads(answer.body), answer.body[:200]      # RFC 6749's error shape


def redirect_target(answer):
    for line in answer.headers:
        name, _, value = line.partition(b":")
        if name.lower() == b"location":
            return value.strip().decode("latin-1")
    return None


urls = st.one_of(st.sampled_from(["/", "//evil.example", "/\t/evil.example", "/\\evil.example", "\\\\evil.example",
                                  "http://evil.example", "https:evil.example", "/settings/tokens", "/%0d%0aX: y",
                                  "/x\r\nSet-Cookie: a=b", "java\tscript:alert(1)", "http://127.0.0.1:9/cb",
                                  "http://127.0.0.1:9/cb?x=1", "http://127.0.0.1:99/cb", "http://127.0.0.1:9/cb#f",
                                  "http://127.0.0.1:9/cb/../../x", "http://127.0.0.1:9@evil.example/cb"]),
                 st.text(max_size=40))


spiffe_ids = st.one_of(
    st.builds(lambda scheme, domain, segments, slash: "%s://%s%s%s" % (scheme, domain, "".join("/" + s for s in segments),
                                                                     slash),
              st.sampled_from(["spiffe", "SPIFFE", "Spiffe", "http"]),
              st.text("abcXYZ09.-_*:@ %", max_size=12), st.lists(st.text("aZ09.-_*/%\\ ", max_size=6), max_size=4),
              st.sampled_from(["", "/", "?q", "#f"])),
    st.text(max_size=60))


@FUZZ
@given(text=spiffe_ids, pattern=st.booleans())
def test_spiffe_ids(text, pattern):
    """A runtime identity (or a revocation's pattern) is read into its one normal form, which reads the
    same again, or refused with ValueError: nothing else, whatever a certificate or a human writes."""
    try:
        normal = agentgit.spiffe_id(text, pattern=pattern)
    except ValueError:
        return
    assert agentgit.spiffe_id(normal, pattern=pattern) == normal and normal == normal.strip()
    assert normal.startswith("spiffe://") and not normal.endswith("/") and "//" not in normal[9:]


client_documents = st.one_of(
    st.fixed_dictionaries({}, optional={
        "client_id": st.sampled_from(["URL", "https://other.example/c.json"]) | json_values,
        "redirect_uris": st.lists(st.sampled_from(["http://127.0.0.1:9/cb", "https://app.example/cb", "javascript:x",
                                                   "app.native:/cb"]) | json_values, max_size=3) | json_values,
        "client_name": json_values, "token_endpoint_auth_method": st.sampled_from(["none", "client_secret_basic"]),
        "grant_types": json_values}).map(lambda d: json.dumps(d).encode()),
    st.binary(max_size=200))


@FUZZ
@given(data=client_documents)
def test_client_metadata_documents(data):
    """Whatever a client's document holds, it is taken as a document this server can use, or refused
    with a 400 that says why: never another exception (a list as client_name reached the database)."""
    url = "https://client.example/c.json"
    try:
        document = agentgit.checked_client_document(url, data.replace(b'"URL"', json.dumps(url).encode()))
    except agentgit.HTTPError as error:
        assert error.status == 400
        return
    assert document["client_id"] == url and isinstance(document.get("client_name", ""), str)


@FUZZ
@given(target=urls)
def test_safe_next(target):
    kept = agentgit.safe_next(target)
    assert kept.startswith("/") and not kept.startswith(("//", "/\\")) and agentgit.visible_ascii(kept)


# each input here signs in, and a password hash is slow by design: a fifth as many, at most 20,000
@settings(FUZZ, max_examples=max(10, min(EXAMPLES // 5, 20000)))
@given(target=urls)
def test_sign_in_next(site, target):
    """The next page after signing in is always this server's own, through the form and the redirect."""
    query = urllib.parse.urlencode({"next": target}).encode()
    page = exchange_bytes(site["srv"], request_bytes(b"GET", b"/login?" + query, [(b"Host", b"127.0.0.1"),
                                                                                 (b"Connection", b"close")]))
    assert_well_behaved(page)
    shown = html.unescape(re.search(rb'name="next" value="([^"]*)"', page.body).group(1).decode())
    csrf = re.search(rb'name="csrf" value="([^"]*)"', page.body).group(1)
    cookie = [line.split(b":", 1)[1].split(b";")[0].strip() for line in page.headers
              if line.lower().startswith(b"set-cookie:")][0]
    form = urllib.parse.urlencode({"login": "alice", "password": "pw", "csrf": csrf, "next": target}).encode()
    answer = exchange_bytes(site["srv"], request_bytes(b"POST", b"/login", [
        (b"Host", b"127.0.0.1"), (b"Cookie", cookie), (b"Content-Type", b"application/x-www-form-urlencoded"),
        (b"Content-Length", b"%d" % len(form)), (b"Connection", b"close")], form))
    assert_well_behaved(answer)
    assert answer.status == 303, answer.body[:200]
    location = redirect_target(answer)
    assert location == shown == agentgit.safe_next(target)
    assert location.startswith("/") and not location.startswith(("//", "/\\")) and agentgit.visible_ascii(location)


@FUZZ
@given(redirect_uri=urls, state=st.text(max_size=20), scope=st.text(max_size=20))
def test_authorize_redirects(site, redirect_uri, state, scope):
    """The authorization endpoint sends a browser only to a URI the app registered, and never writes
    an unchecked one into a header."""
    query = urllib.parse.urlencode({"client_id": site["client_id"], "redirect_uri": redirect_uri, "state": state,
                                    "scope": scope, "response_type": "code", "code_challenge": "x" * 43,
                                    "code_challenge_method": "S256"}).encode()
    answer = exchange_bytes(site["srv"], request_bytes(b"GET", b"/login/oauth/authorize?" + query, [
        (b"Host", b"127.0.0.1"), (b"Connection", b"close")]))
    assert_well_behaved(answer)
    location = redirect_target(answer)
    if location is not None and not location.startswith("/login"):
        assert location.startswith("http://127.0.0.1:9/cb"), location
