"""Server and embedding: the request pipeline (App), the listeners and their guards, make_server(), TLS, the Unix socket."""

import collections
import contextlib
import functools
import hashlib
import html
import http.server
import os
import re
import secrets
import socket
import socketserver
import ssl
import stat
import sys
import threading
import time
import traceback
import urllib.parse

from agentgit.config import (API_RATE_LIMIT, API_VERSION, DOCS_URL, GHES_VERSION, Config, REQUEST_IDLE_TIMEOUT,
                             __version__, now, rate_limit_reset)
from agentgit.errors import HTTPError
from agentgit.egress import tunnel
from agentgit.intents import reconcile_intents
from agentgit.proofs import certificate_thumbprint, runtime_identity
from agentgit.authentication import Presented, Principal, authenticate
from agentgit.installation import Installation, cli_add_agent, cli_add_user
from agentgit.routing import find_route
from agentgit.request import Request, body_length, read_request_headers
from agentgit.serializers import encode_json
from agentgit.web import html_page, session_principal, step_up_form
from agentgit.webhooks import DeliveryWorker
from agentgit.runner import WorkflowRunner
from agentgit.vault import reseal_v1_credentials


class App(Installation):
    """An installation serving HTTP: the request pipeline every listener hands its requests to."""

    # -- the request pipeline -------------------------------------------------------------------
    def dispatch(self, handler):
        """authenticate → route → (the endpoint authorizes and acts) → audit → respond. Audit rows are
        written before the answer leaves, so a client that reads the log next finds them."""
        req = Request(self, handler)
        req.principal = Principal(runtime=req.client)
        htu = self.url + req.raw_path       # before match() rewrites an api.<host> path
        result, error, outcome = None, None, "none"
        try:
            body_length(handler.headers)           # framing is refused before anything acts on the request
            found, params = self.match(req)
            req.surface = found.surface
            if found.authentication == "session":
                req.principal, req.session = session_principal(self, req)
            elif found.authentication != "none":
                req.presented = presented_by(handler, req.method, htu)
                if found.authentication == "token":
                    peer = handler.connection.getpeercert() if isinstance(handler.connection, ssl.SSLSocket) else None
                    req.principal = authenticate(self, handler.headers, req.client, peer, req.presented)
                    self.check_audience(req, params)
            if req.principal.user is not None:
                # the least any account may do (know who it is), asked before the route reads its input: a
                # suspended or retired account, or a task token whose delegator is suspended, is refused
                # on every route
                req.check_standing()
            result = found.handler(req, **params)    # git endpoints stream their own answer and return None
            if result is not None and not isinstance(result, tuple):
                result = (200, result)
            outcome = "HTTP %d" % result[0] if result else "streamed"
        except HTTPError as e:
            error, outcome = e, "refused: HTTP %d %s" % (e.status, e.message)
            if e.status == 401 and req.surface == "git":
                e.headers["WWW-Authenticate"] = 'Basic realm="agentgit"'
            elif e.status == 401 and req.surface in ("rest", "graphql", "mcp", "broker"):
                # RFC 9728 §5.1: where an OAuth client learns how to get a token for the API or /mcp
                e.headers.setdefault("WWW-Authenticate", req.bearer_challenge(
                    "invalid_token" if req.surface == "mcp" else None))
        except (ConnectionError, TimeoutError):
            handler.close_connection, outcome = True, "client went away"
        except Exception:
            traceback.print_exc(file=sys.stderr)
            error, outcome = HTTPError(500, "Server Error"), "server error"
        if req.pending or req.intents:
            req.settle(outcome, failed=error is not None)
        if result is not None or error is not None:
            self.finish_body(req)
        if error is not None:
            self.respond_error(req, error)
        elif result is not None:
            try:
                self.respond(req, *result)
            except HeaderInjection:
                traceback.print_exc(file=sys.stderr)
                self.respond_error(req, HTTPError(500, "Server Error"))
        if body_left(req):      # a streamed answer's body left unread would be taken for the next request
            handler.close_connection = True

    def finish_body(self, req):
        """An answer that did not read the whole body (a refusal before it) leaves the rest unread, which
        would be taken for the next request on the connection: a small one is read and dropped, so a
        client's keep-alive connection goes on; after a larger one the connection ends, and the answer
        says so (Connection: close), so no client sends its next request down a closing socket."""
        handler = req.handler
        if not body_left(req):
            return
        try:
            length = body_length(handler.headers)
            if length is not None and length <= DRAIN_LIMIT:
                reader = req.body(DRAIN_LIMIT)
                while reader.read():
                    pass
                return
        except (HTTPError, OSError, ValueError):
            pass
        handler.close_connection = True

    def check_audience(self, req, params):
        """RFC 8707: a token minted for one resource works there only. The MCP endpoint is one
        resource, each broker credential's proxy another (its tool tokens'), and the REST API, GraphQL
        and Git together are the last (this server's URL)."""
        wanted = {"mcp": self.url + "/mcp", "broker": "%s/api/ext/v1/broker/proxy/%s" % (
            self.url, params.get("credential_id"))}.get(req.surface, self.url)
        # /mcp takes only tokens issued for it. A human's token for the whole API (a personal token, an
        # OAuth token with no resource) stands for her and may stay, and a task token with none is for
        # its task's API and MCP alike; but an agent's bootstrap token is traded for one, and a session
        # token made for the API (or one repository) is not for /mcp
        unbound_agent_at_mcp = req.surface == "mcp" and req.principal.resource is None and (
            req.principal.token_kind == "session" or req.principal.token_kind == "agent" and req.principal.bootstrap)
        if unbound_agent_at_mcp or req.principal.resource is not None and req.principal.resource != wanted:
            audience = req.principal.resource or "the API, not /mcp (an agent trades its token for one for /mcp)"
            req.refuse("use_token", wanted, ["this %s token is for %s only" % (req.principal.token_kind, audience)])
            raise HTTPError(401, "Bad credentials: this token is for %s, not %s" % (audience, wanted),
                            headers={"WWW-Authenticate": req.bearer_challenge(
                                "invalid_token", "the token's audience is %s" % audience)})

    def match(self, req):
        host = (req.headers.get("Host") or "").split(":")[0].lower()
        if host.startswith("api.") and not req.raw_path.startswith("/api/"):
            # github.com's layout, which gh uses for hosts like github.localhost: the API at the root of
            # api.<host>, GraphQL at /graphql
            req.raw_path = "/api/graphql" if req.raw_path.rstrip("/") == "/graphql" else "/api/v3" + req.raw_path
        return find_route(req.method, req.raw_path)

    def respond(self, req, status, body, headers=None):
        handler, headers = req.handler, dict(headers or {})
        data = b"" if body is None else body if isinstance(body, bytes) else encode_json(body)
        data = self.as_named(req, data)
        if status == 200 and req.method in ("GET", "HEAD") and req.surface == "rest" and conditional(req, headers, data):
            status, data, body = 304, b"", None
        handler.send_response(status)
        fields = [("X-GitHub-Api-Version-Selected", API_VERSION), ("X-GitHub-Media-Type", "github.v3; format=json"),
                  ("X-GitHub-Enterprise-Version", GHES_VERSION)]
        if req.surface in ("rest", "graphql"):
            # GitHub's rate-limit headers, as /rate_limit reports them (octokit's throttling and gidgethub
            # pace themselves by these): the API is not limited, so the bucket is always full
            fields += [("X-RateLimit-Limit", API_RATE_LIMIT), ("X-RateLimit-Remaining", API_RATE_LIMIT),
                       ("X-RateLimit-Used", 0), ("X-RateLimit-Reset", rate_limit_reset()),
                       ("X-RateLimit-Resource", "graphql" if req.surface == "graphql" else "core")]
        if body is not None:
            fields.append(("Content-Type", headers.pop("Content-Type", "application/json; charset=utf-8")))
        if status != 304:
            fields.append(("Content-Length", len(data)))
        if req.principal.token_id is not None:
            fields.append(("X-OAuth-Scopes", req.principal.scopes_header))
        if req.audit_id is not None:
            fields.append(("X-Agentgit-Audit-Id", req.audit_id))
        if handler.close_connection:
            fields.append(("Connection", "close"))
        handler.send_headers(fields + list(dict(req.response_headers, **headers).items()))
        handler.end_headers(data if req.method != "HEAD" else b"")

    def as_named(self, req, data):
        """An API answer to a request that named this server by one of its ALIASES, the API's URLs in it (in
        the body and in the Link header) in that name: gh follows them (the next page, a run's jobs, an
        upload URL), and sends its token only to the host it called. A page's URL stays the one a browser
        opens."""
        host = (req.headers.get("Host") or "").lower()
        job_url = getattr(req.handler.server, "job_url", self.url)      # a run's gateway: its jobs' name for it
        if job_url != self.url:
            renames = ((self.url, job_url),)
        elif host in ALIASES and req.surface in ("rest", "graphql"):
            url, api = ALIASES[host]
            renames = ((self.api, api), (self.url + "/api/", url + "/api/"))
        else:
            return data
        if "Link" in req.response_headers:
            for old, new in renames:
                req.response_headers["Link"] = req.response_headers["Link"].replace(old, new)
        for old, new in renames:
            data = data.replace(old.encode(), new.encode())
        return data

    def respond_error(self, req, error):
        handler = req.handler
        if getattr(handler, "_headers_sent", False):
            handler.close_connection = True     # mid-stream: all we can do is end the connection
            return
        req.response_headers = {}
        try:
            if req.surface == "web" and wants_html(req):
                # where to go from here: the form's own page, or the landing page
                back = req.raw_path if req.method == "POST" and req.raw_path.startswith("/") else "/"
                page = (error.page or (step_up_form(req) if error.step_up else "<p>%s</p>" % html.escape(
                    error.message))) + '<p><a href="%s">Back</a></p>' % html.escape(back)
                status, data, headers = html_page("Error" if error.status != 303 else "Sign in", page,
                                                  error.status, error.headers)
                self.respond(req, status, data, headers)
            elif req.surface == "git":
                # git prints a text/plain error body to the user as "remote: ..."
                data = (error.message + "\n").encode()
                handler.send_response(error.status)
                handler.send_header("Content-Type", "text/plain; charset=utf-8")
                handler.send_header("Content-Length", str(len(data)))
                for name, value in error.headers.items():
                    handler.send_header(name, value)
                if handler.close_connection:
                    handler.send_header("Connection", "close")
                handler.end_headers(data)
            else:
                self.respond(req, error.status, error.body(), error.headers)
        except (OSError, HeaderInjection):
            handler.close_connection = True


def request_id():
    """An id in the shape of GitHub's X-GitHub-Request-Id (five hexadecimal groups)."""
    return ":".join("%0*X" % (width, secrets.randbits(width * 4)) for width in (4, 4, 7, 7, 8))


def body_etag(data):
    return 'W/"%s"' % hashlib.blake2b(data, digest_size=16).hexdigest()


# The names `connect gh` gives this server besides its URL, as a request's Host says them: (its URL, its
# API's) by that name, where gh reaches them. gh's local host github.localhost, with this server as gh's proxy (the API at the
# root of api.github.localhost), and localhost, over the Unix socket (--mode socket).
ALIASES = {"github.localhost": ("http://github.localhost", "http://api.github.localhost"),
           "api.github.localhost": ("http://github.localhost", "http://api.github.localhost"),
           "localhost": ("http://localhost", "http://localhost/api/v3")}

# The bodies read most are cached (Store.cached) and answered as the same bytes object each time, whose
# hash Python keeps: their ETag is then a dictionary look-up, not a digest. (At most 256 bodies of at most
# SMALL_BODY bytes are held for it: 4 MB.)
SMALL_BODY = 16384
small_body_etag = functools.lru_cache(maxsize=256)(body_etag)


def conditional(req, headers, data):
    """GitHub's conditional requests: an ETag in ``headers`` for every REST read (a hash of exactly what
    this caller is shown, so a match tells it nothing a 200 would not); True when If-None-Match names
    it (compared weakly, RFC 9110 section 13.1.2), so the answer is 304 with no body."""
    etag = headers["ETag"] = small_body_etag(data) if len(data) <= SMALL_BODY else body_etag(data)
    asked = req.headers.get("If-None-Match")
    return bool(asked) and (asked.strip() == "*" or etag[2:] in (
        tag.strip().removeprefix("W/") for tag in asked.split(",")))


def presented_by(handler, method, url):
    """What the request presents besides its token: the connection's verified client certificate (its
    thumbprint and URI SAN, read once per connection) and its DPoP header."""
    if not hasattr(handler, "client_certificate"):
        der = handler.connection.getpeercert(binary_form=True) if isinstance(handler.connection, ssl.SSLSocket) \
            else None
        uris = [v for k, v in (handler.connection.getpeercert() or {}).get("subjectAltName", ()) if k == "URI"] \
            if der else []
        try:
            identity, problem = runtime_identity(uris), None
        except ValueError as error:
            identity, problem = None, str(error)
        handler.client_certificate = (certificate_thumbprint(der) if der else None, identity, problem)
    thumbprint, identity, problem = handler.client_certificate
    return Presented(method, url, thumbprint, identity, dpop=handler.headers.get("DPoP"), identity_problem=problem,
                     address=handler.client_address[0] if isinstance(handler.client_address, tuple) else "unix-socket")


def body_left(req):
    """Did the request come with a body that was not read to its end?"""
    if req.body_reader is not None:
        return not req.body_reader.done
    headers = req.handler.headers
    return headers.get("Content-Length", "0") != "0" or bool(headers.get("Transfer-Encoding"))


DRAIN_LIMIT = 64 * 1024     # an unread body up to this size is read and dropped; a larger one ends the connection


HTTP_DATE = [0, ""]     # the Date header of the current second


# query parameters whose values are credentials: never written to the access log
SECRET_PARAMETER_RE = re.compile(r"(?i)\b((?:access_|refresh_|subject_|actor_)?token|code|code_verifier|device_code|"
                                 r"client_secret|password|secret)=[^&\s]*")


STATUS_PHRASES = {status.value: status.phrase for status in http.HTTPStatus}


class HeaderInjection(ValueError):
    """A response header that would carry CR or LF: refused by Handler.send_header."""


def wants_html(req):
    """A browser's request (a page's error is a page), not an API client's that reached a page's path
    (gh and curl's JSON asks get the REST shape)."""
    accept = req.headers.get("Accept") or ""
    return "text/html" in accept or "json" not in accept


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "agentgit/" + __version__
    sys_version = ""
    timeout = REQUEST_IDLE_TIMEOUT

    def setup(self):
        super().setup()
        self.requests_served = 0
        # Headers and body leave in separate writes; without NODELAY, Nagle's algorithm and the
        # client's delayed ACK hold every keep-alive response back ~40 ms.
        if self.connection.family in (socket.AF_INET, socket.AF_INET6):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.do_handshake()   # here, in the connection's thread, not in accept()

    def date_time_string(self, timestamp=None):
        if timestamp is not None:
            return super().date_time_string(timestamp)
        second = int(time.time())
        if HTTP_DATE[0] != second:
            HTTP_DATE[:] = [second, super().date_time_string(second)]
        return HTTP_DATE[1]

    def send_header(self, keyword, value):
        self.send_headers([(keyword, value)])

    def send_headers(self, fields):
        """The one header writer, for (name, value) pairs: a name or value with CR or LF in it would end
        the header early and let what follows be read as headers of its own (or a second response), so
        then none is written. One check and one buffer entry for a response's fields."""
        block = "\n".join("%s: %s" % field for field in fields)
        if "\r" in block or block.count("\n") != len(fields) - 1:
            self._headers_buffer = []          # nothing of this response has left yet
            raise HeaderInjection("a header of %s would carry a CR or LF" % ", ".join(str(f[0]) for f in fields))
        self._headers_buffer.append((block.replace("\n", "\r\n") + "\r\n").encode("latin-1", "strict"))
        if "\nconnection: close\n" in "\n%s\n" % block.lower():
            self.close_connection = True       # as http.server's send_header

    def parse_request(self):
        """The request line and headers, as http.server's own parse_request reads them, but with
        request.read_request_headers for the headers (a quarter of a small request's time went to
        http.client's email parser) and HTTP/1.0 and 1.1 only."""
        # every answer, refusals included, has a status line: HTTP/0.9's bare bodies are not spoken here
        self.command, self.close_connection, self.request_version = None, True, "HTTP/1.1"
        self.requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        words = self.requestline.split()
        if not words:
            return False
        if len(words) != 3 or words[2] not in ("HTTP/1.0", "HTTP/1.1"):
            self.send_error(400, "Bad request line (%r): HTTP/1.0 and HTTP/1.1 are spoken here" % self.requestline[:200])
            return False
        self.command, self.path, self.request_version = words
        self.path = "/" + self.path.lstrip("/") if self.path.startswith("//") else self.path   # as http.server does
        try:
            self.headers = read_request_headers(self.rfile)
        except ValueError as error:
            self.send_error(*error.args)
            return False
        connection = (self.headers.get("Connection") or "").lower()
        self.close_connection = connection == "close" or (self.request_version == "HTTP/1.0" and
                                                          connection != "keep-alive")
        if (self.headers.get("Expect") or "").lower() == "100-continue" and self.request_version == "HTTP/1.1":
            return self.handle_expect_100()
        return True

    def send_response(self, code, message=None):
        """The status line, Server and Date: http.server's, in one buffer entry (``message`` is never
        ours to write: the status's own phrase is)."""
        if self.server.draining.is_set():
            self.close_connection = True          # answered, then closed (and said so): the server is stopping
        self.log_request(code)
        # X-GitHub-Request-Id on every answer, as GitHub's: tools tell a GitHub by it, and a user can name
        # the request a failure came from
        self._headers_buffer = [("%s %d %s\r\nServer: %s\r\nDate: %s\r\nX-GitHub-Request-Id: %s\r\n" % (
            self.protocol_version, code, STATUS_PHRASES.get(code, ""), self.version_string(),
            self.date_time_string(), request_id())).encode("latin-1")]

    def end_headers(self, body=b""):
        """The headers, and the whole body when it is known (not streamed), in one write: one system
        call, and for a small answer one packet, instead of two."""
        self._headers_sent = True
        self._headers_buffer += [b"\r\n", body]
        self.flush_headers()

    def send_error(self, code, message=None, explain=None):
        """What http.server refuses before a request reaches dispatch (a malformed request line, an
        unknown method, too many headers) answered in the REST shape, as everything else is."""
        self.close_connection = True
        body = encode_json({"message": message or http.HTTPStatus(code).phrase, "documentation_url": DOCS_URL})
        self.send_response(code)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers(body if self.command != "HEAD" else b"")

    def handle_one_request(self):
        self._headers_sent = False
        self.server.watch_headers(self)        # until the headers are in: a trickling client is cut off
        try:
            super().handle_one_request()
        finally:
            if self in self.server.watched:    # no request came (do_GET ends the watch when one does)
                self.server.watch_headers(self, done=True)

    def do_GET(self):
        self.server.watch_headers(self, done=True)
        self.requests_served += 1
        try:
            self.server.app.dispatch(self)
        finally:
            self.server.app.store.release()

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def log_message(self, format, *args):
        if self.server.access_log is not None:
            client = self.client_address[0] if isinstance(self.client_address, tuple) else "unix-socket"
            line = SECRET_PARAMETER_RE.sub(r"\1=[redacted]", format % args)
            self.server.access_log.write("%s - [%s] %s\n" % (client, now(), line))


class JobGatewayHandler(Handler):
    """A run's jobs' one way out of their network namespace (runner.JobNetwork): this server, as any
    client reaches it, and through it as their HTTP proxy the hosts the run may reach, each try checked
    (its network_allowlist, a public address) and audited: CONNECT, and plain HTTP in proxy form."""

    def do_CONNECT(self):
        self.server.watch_headers(self, done=True)
        host, _, port = self.path.rpartition(":")
        self.go_out("https", host.strip("[]"), int(port) if port.isdigit() else 0, b"")

    def do_GET(self):
        target = urllib.parse.urlsplit(self.path)
        if target.scheme and target.netloc and target.netloc != urllib.parse.urlsplit(self.server.job_url).netloc:
            self.server.watch_headers(self, done=True)
            head = ["%s %s HTTP/1.1" % (self.command, urllib.parse.urlunsplit(("", "", target.path or "/",
                                                                               target.query, "")))]
            head += ["%s: %s" % (k, v) for k, v in self.headers.items() if not k.lower().startswith(("proxy-",
                                                                                                    "connection"))]
            return self.go_out("http", target.hostname or "", target.port or 80,
                               ("\r\n".join(head + ["Connection: close", "", ""])).encode("latin-1"))
        super().do_GET()

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_GET

    def go_out(self, scheme, host, port, request_head):
        """A tunnel to host:port where the run may reach it: the 200 of a CONNECT (or a plain request's
        head passed on), then bytes both ways until either side ends."""
        self.close_connection = True
        refusal = self.server.network.refusal(scheme, host, port)
        try:
            if refusal is not None:
                raise HTTPError(403, refusal)
            upstream = tunnel(host, port, self.server.app.config.egress_allow_loopback)
        except (HTTPError, OSError) as failure:
            status, message = (failure.status, failure.message) if isinstance(failure, HTTPError) else (502, str(failure))
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(message.encode()) + 1))
            self.send_header("Connection", "close")
            self.end_headers((message + "\n").encode())
            return
        with upstream:
            if request_head:
                upstream.sendall(request_head)
            else:
                self.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                self.wfile.flush()
            back = threading.Thread(target=pipe, args=(upstream.recv, self.connection, upstream), daemon=True)
            back.start()
            pipe(self.rfile.read1, upstream, self.connection)
            back.join(REQUEST_IDLE_TIMEOUT)


def pipe(read, sink, source):
    """Bytes from ``read`` to the socket ``sink`` until either side ends; then ``sink`` hears the end."""
    with contextlib.suppress(OSError, ValueError):
        for data in iter(lambda: read(65536), b""):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


class Guarded:
    """What both listeners share against hostile clients, spent on what is hostile (a connection that
    holds a thread without sending a request), never on requests at work, so a fleet of agents behind
    one address is served whole:

    - each request's line and headers have a deadline (``header_deadline``, also the longest a
      kept-alive connection may idle), kept by one watchdog thread, so a client trickling bytes holds a
      thread no longer;
    - one address may keep ``idle_per_client`` connections waiting for a request for more than a
      moment; the watchdog closes the rest, those waiting longest first (one that never sent a request
      is told 408 first, as RFC 9110 has it);
    - past ``max_connections`` at once the server stops accepting until one ends: new clients wait in
      the listen queue rather than being refused.

    Quiet about clients that drop."""
    daemon_threads = True
    request_queue_size = 1024
    idle_grace = 1.0          # seconds a connection may wait for its request before it counts as idle
    watch_period = 0.25

    def __init__(self, *args, config=None, **kwargs):
        config = config or Config(data_dir="")
        self.header_deadline = config.header_deadline
        self.idle_per_client = config.idle_connections_per_client
        self.max_connections = config.max_connections
        self.open_connections, self.slot_freed = 0, threading.Condition()
        self.watched, self.guard_lock = {}, threading.Lock()
        self.closing = threading.Event()      # before binding: a failed bind closes the server at once
        self.draining = threading.Event()     # stopping: requests at work finish, nothing new starts
        # other agentgit processes may listen on the same port (serve --workers, --reuse-port)
        self.allow_reuse_port = config.reuse_port and self.address_family != socket.AF_UNIX
        super().__init__(*args, **kwargs)
        threading.Thread(target=self.watchdog, daemon=True, name="agentgit-header-watchdog").start()

    def handle_error(self, request, client_address):
        # A client that drops the connection or fails the TLS handshake is not the server's error.
        if not isinstance(sys.exc_info()[1], (OSError, ssl.SSLError)):
            super().handle_error(request, client_address)

    def process_request(self, request, client_address):
        with self.slot_freed:         # at the cap: accept nothing more until a connection ends
            while self.open_connections >= self.max_connections and not (self.closing.is_set() or
                                                                          self.draining.is_set()):
                self.slot_freed.wait(0.5)
            self.open_connections += 1
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self.slot_freed:
                self.open_connections -= 1
                self.slot_freed.notify_all()

    def watch_headers(self, handler, done=False):
        """Start (or with ``done``, end) the wait for one request's line and headers on ``handler``."""
        with self.guard_lock:
            if done:
                self.watched.pop(handler, None)
            else:
                moment = time.monotonic()
                address = handler.client_address[0] if isinstance(handler.client_address, tuple) else None
                self.watched[handler] = (moment + self.header_deadline, moment, address)

    def watchdog(self):
        while not self.closing.wait(self.watch_period):
            for handler in self.to_cut(time.monotonic()):
                self.cut(handler)

    def to_cut(self, moment):
        """The connections past their header deadline, and each address's idle ones past its share;
        while draining, every connection waiting for a request."""
        with self.guard_lock:
            if self.draining.is_set():
                return list(self.watched)
            late = [h for h, (deadline, _, _) in self.watched.items() if deadline < moment]
            idle = collections.defaultdict(list)
            for handler, (_, since, address) in self.watched.items():
                if address is not None and since < moment - self.idle_grace:
                    idle[address].append((since, id(handler), handler))
        for waiting in idle.values():
            if len(waiting) > self.idle_per_client:
                late += [h for _, _, h in sorted(waiting)[:len(waiting) - self.idle_per_client]]
        return late

    def cut(self, handler):
        with self.guard_lock:
            if self.watched.pop(handler, None) is None:
                return                       # its request arrived meanwhile: it is at work now
        handler.close_connection = True
        with contextlib.suppress(OSError):
            if not handler.requests_served and not isinstance(handler.connection, ssl.SSLSocket):
                handler.connection.sendall(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\nContent-Length: 0\r\n"
                                           b"Connection: close\r\n\r\n" if self.draining.is_set() else
                                           b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n"
                                           b"Connection: close\r\n\r\n")
            handler.connection.shutdown(socket.SHUT_RDWR)

    def stop_accepting(self):
        """The start of a graceful stop: the accept loop ends, the listening socket closes, and from
        now on the watchdog closes every connection waiting for a request (each one as its request
        ends, too)."""
        self.draining.set()
        self.shutdown()
        self.socket.close()

    def wait_for_work(self, deadline):
        """Until every connection has ended (the idle ones are closed by the watchdog, the others after
        the request at work is answered), or ``deadline`` (monotonic) passes; True when none is left."""
        with self.slot_freed:
            while self.open_connections and time.monotonic() < deadline:
                self.slot_freed.wait(max(0.0, min(0.5, deadline - time.monotonic())))
            return self.open_connections == 0

    def server_close(self):
        self.closing.set()
        super().server_close()


class HTTPServer(Guarded, http.server.ThreadingHTTPServer):
    pass


class UnixHTTPServer(Guarded, socketserver.ThreadingUnixStreamServer):
    """The same app on a Unix socket, for gh's http_unix_socket setting (plain HTTP, no port), and for a
    run's jobs (open_job_gateway)."""


def open_job_gateway(app, path, network):
    """A run's gateway (JobGatewayHandler) on a Unix socket at ``path``, served until its shutdown();
    ``network`` (runner.JobNetwork) says what its jobs may reach and the name they call this server by."""
    gateway = UnixHTTPServer(path, JobGatewayHandler, config=app.config)
    gateway.app, gateway.access_log, gateway.network, gateway.job_url = app, None, network, network.job_url
    threading.Thread(target=gateway.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return gateway


class Server:
    """A running agentgit: ``url``, ``start()`` (background thread), ``serve_forever()``, ``stop()``.

    ``admin`` is ("admin", token) when this start created the data directory's first account.
    """

    def __init__(self, app, host, port, tls_cert=None, tls_key=None, access_log=None, unix_socket=None,
                 tls_client_ca=None):
        self.app = app
        self.deliveries = DeliveryWorker(app)      # the webhook outbox's sender, from start() to stop()
        self.runner = WorkflowRunner(app, open_job_gateway)      # the runs' executor, with serve --run-workflows
        self.unix = None
        if unix_socket:
            if os.path.exists(unix_socket) and stat.S_ISSOCK(os.stat(unix_socket).st_mode):
                os.unlink(unix_socket)          # a socket left by a server that died
            self.unix = UnixHTTPServer(unix_socket, Handler, config=app.config)
            self.unix.app, self.unix.access_log = app, access_log
            os.chmod(unix_socket, 0o600)
        HTTPServer.address_family = socket_family(host)
        self.httpd = HTTPServer((host, port), Handler, config=app.config)
        self.httpd.app, self.httpd.access_log = app, access_log
        scheme = "http"
        if tls_cert:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(tls_cert, tls_key)
            if tls_client_ca:
                # RFC 8705: a client may present a certificate of this CA; tokens it mints are bound to it
                context.load_verify_locations(tls_client_ca)
                context.verify_mode = ssl.CERT_OPTIONAL
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True,
                                                    do_handshake_on_connect=False)
            scheme = "https"
        bound_port = self.httpd.server_address[1]
        shown_host = "[%s]" % host if ":" in host else host
        self.url = app.url or "%s://%s:%d" % (scheme, shown_host, bound_port)
        app.set_url(self.url)
        reseal_v1_credentials(app.store, app.key)
        settled = reconcile_intents(app)
        if settled:
            print("agentgit: recorded %d ref update(s) a crash left without their audit rows" % settled,
                  file=sys.stderr)
        self.admin = app.first_start_admin()
        self.thread = None
        if app.anchor.broken:
            print("agentgit: the audit log is broken: %s (python agentgit.py audit verify)" % app.anchor.broken,
                  file=sys.stderr)
        app.anchor.follow(app.store)

    def start(self):
        self.deliveries.start()
        self.runner.start()
        # a short poll interval: stop() (shutdown) waits for the loop to notice, and fixtures stop often
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       name="agentgit", daemon=True)
        self.thread.start()
        if self.unix is not None:
            threading.Thread(target=self.unix.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def serve_forever(self):
        self.deliveries.start()
        self.runner.start()
        # the loop notices a stop within its poll interval: short, so SIGTERM closes the listener at once
        if self.unix is not None:
            threading.Thread(target=self.unix.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.httpd.serve_forever(poll_interval=0.05)

    def stop_gracefully(self, timeout=30):
        """What SIGTERM does: stop accepting, let the requests at work finish (a push lands whole) for up
        to ``timeout`` seconds while every idle connection is closed, then write the audit checkpoint
        and flush the access log. True when every request finished in time."""
        deadline = time.monotonic() + timeout
        listeners = [server for server in (self.httpd, self.unix) if server is not None]
        for server in listeners:
            server.stop_accepting()
        finished = all([server.wait_for_work(deadline) for server in listeners])
        for server in listeners:
            server.server_close()
        if self.unix is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.unix.server_address)
        self.app.anchor.stop_following(self.app.store)
        self.deliveries.stop()
        self.runner.stop()
        if self.httpd.access_log is not None:
            self.httpd.access_log.flush()
        return finished

    def stop(self):
        for server in (self.httpd, self.unix):
            if server is not None:
                server.shutdown()
                server.server_close()
        self.deliveries.stop()
        self.runner.stop()
        self.app.anchor.stop_following(self.app.store)
        self.app.store.close()
        if self.unix is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.unix.server_address)

    # Conveniences for fixtures: the same operations as the CLI.
    def add_user(self, login, admin=False, password=None):
        """A human with a personal token holding every scope; returns the token."""
        return cli_add_user(self.app, login, admin, password)

    def add_agent(self, prefix, repo_name="workspace"):
        """Registers an agent as POST /api/ext/v1/agents does; returns (login, token, repo full name)."""
        return cli_add_agent(self.app, prefix, repo_name)


def socket_family(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def make_server(data_dir, host="127.0.0.1", port=0, authenticator=None, url="", tls_cert=None, tls_key=None,
                registration="open", git_engine="auto", registration_limit=20, registration_window=600,
                access_log=None, unix_socket=None, agent_credentials=None, allow_loopback_client_documents=False,
                tls_client_ca=None, **options):
    """Build (not start) an agentgit server. ``authenticator(request) -> identity or None`` lets an
    embedding program vouch for humans: it is given {"headers", "client_address", "peer_cert"} and
    returns {"provider", "subject", "login", "name", "email"}. ``agent_credentials``: "bootstrap"
    (an agent's own token acts on its own account and repositories only, and is traded for short-lived
    tokens for the rest) or "direct" (it acts on all the agent may do); None keeps the installation's.
    ``allow_loopback_client_documents``: fetch OAuth client metadata documents from loopback addresses
    (for tests that serve them on 127.0.0.1; never on a server others reach). ``tls_client_ca``: with
    ``tls_cert``, accept client certificates of this CA (RFC 8705 bound tokens, runtime identities).
    ``options``: the rest of Config (agent_standing_access, broker_allow_loopback, broker_connect_to,
    dpop_nonce, require_sender_constrained, require_runtime_certificates)."""
    config = Config(data_dir=str(data_dir), url=url, registration=registration, git_engine=git_engine,
                    registration_limit=registration_limit, registration_window=registration_window,
                    agent_credentials=agent_credentials, allow_loopback_client_documents=allow_loopback_client_documents,
                    **options)
    return Server(App(config, authenticator), host, port, tls_cert, tls_key, access_log, unix_socket, tls_client_ca)
