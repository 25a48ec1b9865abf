"""Broker: tool tokens for one credential's upstream under one task, and the proxy that spends them.

An agent never holds an upstream secret. With its task token it asks ``POST /api/ext/v1/broker/tokens``
(or an RFC 8693 exchange whose resource is the upstream's URL) for a tool token. decide() weighs the
agent, its delegator (her hold on the credential, as it is now), the grant (it names the credential
and call_api; the upstream is in its network_allowlist; use_credential may wait for a human's yes),
the runtime and the binding; the tool token lives minutes, for that credential, that upstream and
that task, bound like the task token that asked for it, and dies with the task, the grant, the agent
or the delegator.

The agent (or a tool server for it) sends the upstream request to
``/api/ext/v1/broker/proxy/{credential}/{path}`` with the tool token. The broker decides call_api
again for every request and every redirect hop, attaches the secret (only on the credential's own
origin), forwards the request, refreshes an OAuth upstream's access token when it has expired (or the
upstream says it has), streams the answer back with upstream cookies dropped and every secret value
masked, and writes one audit row per call: method, host, path, status, bytes, credential, task.

Egress goes to the address a name resolves to, checked to be public (loopback too with
``serve --broker-allow-loopback``, for tests), and connects to that checked address, so the name
cannot be re-pointed in between. ``serve --broker-connect-to HOST:PORT:ADDRESS:PORT`` (curl's
--connect-to) sends a name elsewhere, as tests and split-horizon networks need.
"""

import base64
import collections
import html
import http.client
import json
import posixpath
import re
import threading
import time
import urllib.parse
import zlib

from agentgit.config import MAX_JSON_BODY, from_now
from agentgit.errors import HTTPError, invalid
from agentgit.crypto import seal
from agentgit.egress import outbound_connection, public_address
from agentgit.tokens import issue_token, token_fingerprint
from agentgit.accounts import account_by_id
from agentgit.guardrails import DEFAULT_PORTS
from agentgit.routing import route
from agentgit.lookups import signed_in
from agentgit.vault import binding, credential_by_name, held_credential, open_sealed
from agentgit.tasks import bound_to

TOOL_TOKEN_SECONDS = 300
UPSTREAM_TIMEOUT = 30                     # seconds an upstream may stay silent
UPSTREAM_DEADLINE = 300                   # seconds an answer may take in all
MAX_UPSTREAM_BYTES = 64 * 1024 * 1024     # an answer larger than this is cut off (and the call audited so)
MAX_REDIRECTS = 5
ACCESS_TOKEN_MARGIN = 30                  # seconds before its expiry an upstream access token is renewed
CHUNK = 64 * 1024
IDLE_PER_UPSTREAM = 8
IDEMPOTENT = ("GET", "HEAD", "PUT", "DELETE")
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"}
# never forwarded upstream: the agent's own credentials and proofs, and what the broker sets itself
REQUEST_HEADERS_DROPPED = HOP_BY_HOP | {"host", "authorization", "proxy-authorization", "cookie", "dpop",
                                        "content-length", "expect", "accept-encoding"}
# never passed back: the upstream's session credentials, and framing the broker sets itself
RESPONSE_HEADERS_DROPPED = HOP_BY_HOP | {"set-cookie", "set-cookie2", "authentication-info",
                                         "proxy-authenticate", "proxy-authentication-info", "content-length",
                                         "content-encoding"}


def proxy_url(app, row):
    return "%s/api/ext/v1/broker/proxy/%s" % (app.url, row["public_id"])


def usable_credential(req, name, action):
    """(row, Resource) of a credential the caller (for a task or tool token, its delegator) holds; for
    any other an audited 404: a credential's existence is its owner's to know."""
    user, store = signed_in(req), req.app.store
    grant = req.principal.grant
    holder = store.cached(("account", grant["delegator_id"]), lambda: account_by_id(store, grant["delegator_id"])) \
        if grant is not None else user
    # every proxied call asks: remembered until the next commit that changes anything (Store.cached)
    row, resource = store.cached(("held credential", holder["id"], str(name)),
                                 lambda: held_credential(store, holder, name))
    if row is None:
        label = str(name)[:100] if str(name).startswith("credential:") else "credential:" + str(name)[:100]
        req.refuse(action, label, ["%s holds no %s" % (holder["login"], label)], hidden=True)
        raise HTTPError(404, "Not Found")
    return row, resource


@route("POST", "/api/ext/v1/broker/tokens")
def mint_tool_token(req):
    """For an agent's task token: a tool token for one credential its grant names, for minutes,
    for calls to that credential's upstream through the proxy. Never the upstream secret."""
    body = req.json()
    name = req.field(body, "credential", str, "ToolToken", required=True)
    if req.field(body, "action", str, "ToolToken", default="call_api") != "call_api":
        raise invalid("ToolToken", "action", message="a tool token is for call_api")
    return 201, issue_tool_token(req, name)


def issue_tool_token(req, name):
    """The tool token for credential ``name`` (credential:owner/name or its bc_ id), decided by decide()."""
    row, resource = usable_credential(req, name, "use_credential")
    principal = req.principal
    req.authorize("use_credential", resource, upstream=row["base_url"],
                  site_requires_binding=req.app.config.require_sender_constrained)
    grant = principal.grant
    parent = req.app.store.one("SELECT expires_at FROM tokens WHERE id = ?", principal.token_id)
    expires_at = min(from_now(TOOL_TOKEN_SECONDS), grant["expires_at"], parent["expires_at"])
    cnf = principal.confirmation()
    with req.transaction() as db:
        token, _ = issue_token(db, req.app.key, principal.user["id"], "tool", name="tool " + resource.name,
                               scopes=["call_api"], expires_at=expires_at, grant_id=grant["id"],
                               resource=proxy_url(req.app, row), credential_id=row["id"], cnf=cnf,
                               runtime=principal.runtime_id)
        req.effect("tool token %s for %s (%s) under %s until %s%s" % (
            token_fingerprint(token), resource.name, row["base_url"], grant["public_id"], expires_at, bound_to(cnf)))
    return {"token": token, "token_type": "DPoP" if cnf and "jkt" in cnf else "Bearer", "expires_at": expires_at,
            "credential": resource.name, "upstream": row["base_url"], "proxy_url": proxy_url(req.app, row),
            "task": grant["task"], "grant": grant["public_id"], "cnf": cnf}


# -- the proxy -----------------------------------------------------------------------------------

def proxied(handler):
    """One route for every method the proxy forwards."""
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):       # (HEAD is served as GET)
        handler = route(method, "/api/ext/v1/broker/proxy/{credential_id}/{rest:path}", "broker")(handler)
    return handler


@proxied
def broker_proxy(req, credential_id, rest):
    """Forward the request to the credential's upstream with its secret attached; stream the answer."""
    row, resource = usable_credential(req, credential_id, "call_api")
    # the path as the client sent it, still percent-encoded, and never climbing out of the base URL as
    # the upstream will read it (decoded, a backslash taken for a slash, as some servers do)
    path = req.raw_path.split("/", 7)[7]
    if any(segment in (".", "..") for segment in re.split(r"[/\\]", urllib.parse.unquote(path))):
        raise HTTPError(400, "A proxied path has no . or .. segments, encoded or not")
    query = urllib.parse.urlsplit(req.handler.path).query
    url = row["base_url"] + "/" + path + ("?" + query if query else "")
    req.authorize("call_api", resource, upstream=url)
    body = req.body(MAX_JSON_BODY).read_all() if req.method not in ("GET", "HEAD") else None
    call = UpstreamCall(req, row, resource)
    response, final_url = call.follow(req.method, url, body)
    parts = urllib.parse.urlsplit(final_url)

    def finish(sent, cut):
        req.effect("%s %s%s -> %d, %d bytes%s, %s for %s" % (
            req.method, parts.netloc, parts.path, response.status, sent, " (cut off)" if cut else "", resource.name,
            req.principal.grant["task"]))
        with req.transaction(records_only=True):
            pass                # the call's audit row, with its side effect
    call.stream_back(response, finish)
    return None


class UpstreamCall:
    """One proxied call: the secret attached on the credential's origin, redirects re-decided, the
    answer streamed back with every secret value masked."""

    def __init__(self, req, row, resource):
        self.req, self.app, self.row, self.resource = req, req.app, row, resource
        self.secret = json.loads(open_sealed(self.app.key, b"broker credential", row, "sealed"))
        self.placement = json.loads(row["placement"])
        self.access_token = upstream_access_token(self.app, row, self.secret) if row["kind"] == "oauth_refresh" \
            else None

    def secrets(self):
        """Every form in which a secret could come back (encoded_forms), of each secret value and of the
        Basic header's credentials, longest first."""
        values = [v for v in self.secret.values() if v] + ([self.access_token] if self.access_token else [])
        if self.row["kind"] == "basic":
            values.append("%s:%s" % (self.placement["username"], self.secret["password"]))
        return sorted({form for v in values for form in encoded_forms(v)}, key=len, reverse=True)

    def follow(self, method, url, body):
        """The upstream's answer, following redirects (each hop decided again, as a call of its own
        would be), and renewing an OAuth upstream's access token once if it answers 401."""
        for hop in range(MAX_REDIRECTS + 1):
            response = self.send(method, url, body)
            if response.status == 401 and self.row["kind"] == "oauth_refresh" and within_base(url, self.row):
                release(response, False)
                self.access_token = upstream_access_token(self.app, self.row, self.secret, stale=self.access_token)
                response = self.send(method, url, body)
            location = response.getheader("Location")
            if response.status not in (301, 302, 303, 307, 308) or not location or hop == MAX_REDIRECTS:
                return response, url
            release(response, False)
            url = urllib.parse.urljoin(url, location)
            self.req.check("call_api", self.resource, upstream=url)       # an allowlisted host may redirect elsewhere
            if not within_base(url, self.row) and any(m in url.encode() for m in self.secrets()):
                raise HTTPError(502, "The upstream redirected outside the credential's base URL with the credential "
                                     "in the URL; not followed")
            if response.status == 303 or response.status in (301, 302) and method == "POST":
                method, body = "GET", None

    def send(self, method, url, body):
        parts = urllib.parse.urlsplit(url)
        own = {self.placement.get("header", "").lower()}       # the agent may not set the credential's header
        headers = {k: v for k, v in self.req.headers.items() if k.lower() not in REQUEST_HEADERS_DROPPED | own}
        headers["Host"] = parts.netloc
        headers["Accept-Encoding"] = "identity"      # an answer the broker can read, to mask (gzip is undone)
        target = parts.path or "/"
        query = parts.query
        if within_base(url, self.row):      # a redirect out of the base URL is followed without the secret
            query = self.attach(headers, query)
        if body is not None:
            headers["Content-Length"] = str(len(body))
        key, target = upstream_key(self.app, parts), target + ("?" + query if query else "")
        # a kept-alive connection when the call may be sent twice: the upstream may have closed it meanwhile
        pooled = IDLE.take(key) if method in IDEMPOTENT else None
        if pooled is not None:
            try:
                return exchange(pooled, key, method, target, body, headers)
            except (OSError, http.client.HTTPException):
                pooled.close()
        conn = connection_to(key)
        try:
            return exchange(conn, key, method, target, body, headers)
        except ValueError:
            conn.close()        # http.client refuses a header value it cannot send as one line
            raise HTTPError(400, "A header of this request cannot be forwarded as it is")
        except (OSError, http.client.HTTPException) as error:
            conn.close()
            raise HTTPError(502, "The upstream %s could not be reached: %s" % (parts.netloc, type(error).__name__))

    def attach(self, headers, query):
        """The credential's secret in its place: a header or query parameter, Basic, or a Bearer token."""
        kind = self.row["kind"]
        if kind == "api_key" and "header" in self.placement:
            headers[self.placement["header"]] = self.secret["value"]
        elif kind == "api_key":
            query = "&".join(p for p in (query, urllib.parse.urlencode({self.placement["query_parameter"]:
                                                                        self.secret["value"]})) if p)
        elif kind == "basic":
            headers["Authorization"] = "Basic " + base64.b64encode(("%s:%s" % (
                self.placement["username"], self.secret["password"])).encode()).decode()
        else:
            headers["Authorization"] = "Bearer " + self.access_token
        return query

    def stream_back(self, response, finish):
        """Status, headers (without the upstream's cookies or anything carrying a secret) and body,
        decompressed where the upstream compressed it anyway, masked, and streamed. ``finish(bytes,
        cut_off)`` records the call before the answer's last bytes leave, so a client holding the whole
        answer finds its audit row. An answer over MAX_UPSTREAM_BYTES or UPSTREAM_DEADLINE is cut off,
        and the connection closed so the client knows."""
        handler, masks = self.req.handler, self.secrets()
        length, decoder = response.getheader("Content-Length"), body_decoder(response)
        if length is not None and length.isdigit() and int(length) > MAX_UPSTREAM_BYTES:
            release(response, False)
            raise HTTPError(502, "The upstream's answer is %s bytes; the broker passes at most %d" % (
                length, MAX_UPSTREAM_BYTES))
        handler.send_response(response.status)
        for name, value in response.getheaders():
            if name.lower() not in RESPONSE_HEADERS_DROPPED and not any(m in value.encode() for m in masks) \
                    and not any(c in name + value for c in "\r\n"):
                handler.send_header(name, value)
        chunked = length is None or not length.isdigit() or decoder is not None
        handler.send_header("Transfer-Encoding" if chunked else "Content-Length", "chunked" if chunked else length)
        if self.req.method == "HEAD" or length == "0":
            finish(0, False)
            handler.end_headers()
            return release(response, True)
        handler.end_headers()
        sent, cut, masker, deadline = 0, False, Masker(masks), time.monotonic() + UPSTREAM_DEADLINE
        try:
            for data in decoded(response, decoder):
                if sent + len(data) > MAX_UPSTREAM_BYTES or time.monotonic() > deadline:
                    cut = True
                    break
                sent += len(data)
                write_body(handler, masker.feed(data), chunked)
            finish(sent, cut)
            write_body(handler, masker.rest(), chunked)
            if chunked and not cut:
                handler.wfile.write(b"0\r\n\r\n")
        finally:
            release(response, not cut)
        handler.close_connection = handler.close_connection or cut


def encoded_forms(value):
    """The forms in which an upstream could reasonably echo ``value``: as it is, URL-encoded (both ways),
    JSON-escaped (and with its slashes escaped, as some encoders write them), HTML-escaped, hex (either
    case), and base64 and base64url at each of the three alignments it can have inside a longer
    encoding (the characters that depend on the value's bytes alone). Not a promise: an upstream that
    transforms a secret otherwise (hashes, encrypts, splits it) hands back what no mask knows."""
    raw = value.encode()
    forms = {value, urllib.parse.quote(value, safe=""), urllib.parse.quote_plus(value), json.dumps(value)[1:-1],
             json.dumps(value)[1:-1].replace("/", "\\/"), html.escape(value), raw.hex(), raw.hex().upper()}
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        for offset in range(3):
            encoded = encode(b"\0" * offset + raw).decode().rstrip("=")
            forms.add(encoded[-(-8 * offset // 6):(8 * (offset + len(raw))) // 6])
    return {form.encode() for form in forms if len(form) >= 4}


def body_decoder(response):
    """A zlib decompressor for an answer compressed with gzip or deflate (though the broker asked for
    none: a compressed answer could not be masked), None for one that is not; 502 for other codings."""
    coding = (response.getheader("Content-Encoding") or "identity").strip().lower()
    if coding == "identity":
        return None
    if coding in ("gzip", "x-gzip", "deflate"):
        return zlib.decompressobj(47)        # (zlib or gzip framing, whichever it is)
    release(response, False)
    raise HTTPError(502, "The upstream answered in %s, which the broker cannot read to keep the credential out of "
                         "it" % coding[:40])


def decoded(response, decoder):
    """The answer's body, read a chunk at a time and decompressed a bounded piece at a time (so a small
    compressed body cannot become a huge one in memory)."""
    while True:
        data = response.read1(CHUNK)
        if decoder is None:
            if not data:
                return
            yield data
            continue
        pending = decoder.decompress(data, CHUNK) if data else decoder.flush()
        while pending:
            yield pending
            pending = decoder.decompress(decoder.unconsumed_tail, CHUNK) if decoder.unconsumed_tail else b""
        if not data:
            return


def write_body(handler, data, chunked):
    if data:
        handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)


class Masker:
    """Replaces each secret value in a stream with asterisks of the same length (so a Content-Length
    still holds), holding back the bytes a secret split between two reads could start in."""

    def __init__(self, secrets):
        self.secrets, self.held = secrets, b""
        self.keep = max((len(s) for s in secrets), default=1) - 1

    def feed(self, data):
        data = self.mask(self.held + data)
        cut = max(len(data) - self.keep, 0)
        self.held = data[cut:]
        return data[:cut]

    def rest(self):
        data, self.held = self.held, b""
        return data

    def mask(self, data):
        for secret in self.secrets:
            data = data.replace(secret, b"*" * len(secret))
        return data


def same_origin(url, row):
    a, b = urllib.parse.urlsplit(url), urllib.parse.urlsplit(row["base_url"])
    return (a.scheme, a.hostname, a.port) == (b.scheme, b.hostname, b.port)


def within_base(url, row):
    """Is ``url`` at the credential's base URL or below it, its path read as the upstream will read it
    (decoded, a backslash a slash, dot segments resolved)? Only there does the secret go."""
    if not same_origin(url, row):
        return False
    base = urllib.parse.urlsplit(row["base_url"]).path.rstrip("/")
    path = urllib.parse.unquote(urllib.parse.urlsplit(url).path).replace("\\", "/")
    path = posixpath.normpath("/" + path.lstrip("/"))         # (normpath keeps a leading "//" as it is)
    return path == (base or "/") or path.startswith(base + "/")


def upstream_key(app, parts):
    """(scheme, host, port, address) of the URL's upstream: the address its host resolves to now,
    checked (or where --broker-connect-to sends it)."""
    try:
        port = parts.port or DEFAULT_PORTS.get(parts.scheme, 80)
    except ValueError:
        raise HTTPError(502, "The upstream URL has no valid port")
    host, port = app.config.broker_connect_to.get("%s:%d" % (parts.hostname, port), (parts.hostname, port))
    address = public_address(host, port, app.config.broker_allow_loopback or app.config.egress_allow_loopback,
                             what="the upstream", status=502)
    return parts.scheme, parts.hostname, port, address


def connection_to(key):
    return outbound_connection(*key, UPSTREAM_TIMEOUT)


def exchange(conn, key, method, target, body, headers):
    conn.request(method, target, body=body, headers=headers)
    response = conn.getresponse()
    response.upstream = (key, conn)
    return response


def release(response, reusable):
    """The response's connection kept for the next call to its upstream when its answer was read to
    the end and it stays open; closed otherwise."""
    key, conn = response.upstream
    read_through = response.isclosed() or response.length == 0     # (read1 leaves a drained body open)
    response.close()
    if reusable and read_through and not response.will_close:
        IDLE.give(key, conn)
    else:
        conn.close()


class IdleConnections:
    """Kept-alive connections to upstreams, by (scheme, host, port, address): a proxied call reuses one
    rather than paying for a new TCP (and TLS) handshake. The address is in the key, so a name that
    now resolves elsewhere gets a new, checked connection."""

    def __init__(self):
        self.lock, self.idle = threading.Lock(), collections.defaultdict(list)

    def take(self, key):
        with self.lock:
            return self.idle[key].pop() if self.idle[key] else None

    def give(self, key, conn):
        with self.lock:
            if len(self.idle[key]) < IDLE_PER_UPSTREAM:
                self.idle[key].append(conn)
                return
        conn.close()


IDLE = IdleConnections()


# -- an OAuth upstream's access token ------------------------------------------------------------

REFRESH_LOCKS = collections.defaultdict(threading.Lock)    # one refresh at a time per credential


def upstream_access_token(app, row, secret, stale=None):
    """The current access token of an oauth_refresh credential: the one kept (sealed) while it
    lives and is not ``stale``, else a new one from the upstream's token endpoint with the stored
    refresh token (a rotated refresh token is sealed in its place)."""
    with REFRESH_LOCKS[row["id"]]:
        row = app.store.one("SELECT * FROM broker_credentials WHERE id = ?", row["id"])
        if row["access_sealed"] and row["access_expires_at"] > from_now(ACCESS_TOKEN_MARGIN):
            kept = open_sealed(app.key, b"broker access token", row, "access_sealed").decode()
            if kept != stale:
                return kept
        secret.update(json.loads(open_sealed(app.key, b"broker credential", row, "sealed")))
        answer = refresh_at_upstream(app, json.loads(row["placement"]), secret)
        if answer.get("refresh_token"):
            secret["refresh_token"] = answer["refresh_token"]
        expires_in = answer.get("expires_in") if isinstance(answer.get("expires_in"), int) else 3600
        with app.store.transaction() as db:
            db.execute("UPDATE broker_credentials SET sealed = ?, access_sealed = ?, access_expires_at = ? WHERE id = ?",
                       (seal(app.key, b"broker credential", json.dumps(secret).encode(), binding(row)),
                        seal(app.key, b"broker access token", answer["access_token"].encode(), binding(row)),
                        from_now(max(expires_in, 0)), row["id"]))
        return answer["access_token"]


def refresh_at_upstream(app, placement, secret):
    """RFC 6749 §6 at the credential's token endpoint: the JSON answer, or 502 saying what failed
    (the upstream's error code, never a secret)."""
    parts = urllib.parse.urlsplit(placement["token_endpoint"])
    form = {"grant_type": "refresh_token", "refresh_token": secret["refresh_token"],
            "client_id": placement["client_id"]}
    if secret.get("client_secret"):
        form["client_secret"] = secret["client_secret"]
    if placement.get("scope"):
        form["scope"] = placement["scope"]
    conn = connection_to(upstream_key(app, parts))
    try:
        conn.request("POST", (parts.path or "/") + ("?" + parts.query if parts.query else ""),
                     body=urllib.parse.urlencode(form), headers={
                         "Host": parts.netloc, "Accept": "application/json", "User-Agent": "agentgit-broker",
                         "Content-Type": "application/x-www-form-urlencoded"})
        response = conn.getresponse()
        data = response.read(64 * 1024)
        answer = json.loads(data)
    except (OSError, http.client.HTTPException, ValueError, UnicodeDecodeError) as error:
        raise HTTPError(502, "The upstream's token endpoint %s failed: %s" % (parts.netloc, type(error).__name__))
    finally:
        conn.close()
    if not isinstance(answer, dict) or not isinstance(answer.get("access_token"), str):
        code = answer.get("error") if isinstance(answer, dict) and isinstance(answer.get("error"), str) else "no token"
        raise HTTPError(502, "The upstream's token endpoint %s refused the refresh: %s" % (parts.netloc, code[:100]))
    return answer


def tool_token_for_upstream(req, resource_url):
    """RFC 8693 with a task token as subject and an upstream URL as resource: the tool token for the
    credential of the task's grant whose base_url holds that URL; None when none does."""
    grant = req.principal.grant
    for name in sorted(grant["resources"]):
        row, _ = credential_by_name(req.app.store, name) if name.startswith("credential:") else (None, None)
        if row is not None and (resource_url.rstrip("/") + "/").startswith(row["base_url"] + "/"):
            return issue_tool_token(req, name)
    return None

