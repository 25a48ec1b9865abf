"""The request: an HTTP request's input (its framing, headers and body, read within limits) and the
Request that carries it through the pipeline, its enforcement and records as the Ledger it is."""

import json
import re
import urllib.parse
import zlib

from agentgit.config import MAX_JSON_BODY, MAX_TEXT, PER_PAGE_DEFAULT, PER_PAGE_MAX
from agentgit.errors import HTTPError, invalid
from agentgit.ledger import Ledger


CHUNK_SIZE_RE = re.compile(rb"[0-9A-Fa-f]{1,16}")
CONTENT_LENGTH_RE = re.compile(r"[0-9]{1,18}")


def body_length(headers):
    """The body's length, or None for a chunked one. Whatever a proxy in front could read otherwise is
    refused (RFC 9112 section 6): Content-Length with Transfer-Encoding, a coding other than chunked
    alone, a length that is not ASCII digits, two lengths that differ. Decided for every request, read
    or not, since the connection is kept alive after it."""
    codings, lengths = headers.get_all("Transfer-Encoding") or [], headers.get_all("Content-Length") or []
    if codings and lengths:
        raise HTTPError(400, "Content-Length and Transfer-Encoding together are refused")
    if codings:
        if [c.strip().lower() for c in ",".join(codings).split(",")] != ["chunked"]:
            raise HTTPError(501, "Only the chunked transfer coding is understood")
        return None
    if len({value.strip() for value in lengths}) > 1 or not CONTENT_LENGTH_RE.fullmatch((lengths or ["0"])[0].strip()):
        raise HTTPError(400, "Content-Length is not a number")
    return int((lengths or ["0"])[0])


MAX_HEADER_LINE, MAX_HEADERS = 65536, 100      # http.client's limits, which http.server applied before
FIELD_NAME_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")   # RFC 9110's token


class RequestHeaders:
    """A request's header fields by case-insensitive name: what the code reading them asks of
    http.client's HTTPMessage (get, get_all, items, in, [] and []=), without its cost (an email parser,
    and a scan of every field, lowercased, on each get)."""

    def __init__(self, fields=()):
        self.fields, self.by_name = list(fields), {}
        for name, value in self.fields:
            self.by_name.setdefault(name.lower(), []).append(value)

    def __setitem__(self, name, value):       # as HTTPMessage's: one more field of that name
        self.fields.append((name, value))
        self.by_name.setdefault(name.lower(), []).append(value)

    def get(self, name, default=None):
        values = self.by_name.get(name.lower())
        return values[0] if values else default

    __getitem__ = get

    def get_all(self, name, default=None):
        return list(self.by_name.get(name.lower(), ())) or default

    def __contains__(self, name):
        return name.lower() in self.by_name

    def items(self):
        return list(self.fields)


def read_request_headers(rfile):
    """The header fields after a request line, up to the empty line; ValueError (with the status to
    answer) for what RFC 9112 says to refuse: a line or a section too long, a line that is not
    name: value, whitespace before the colon, obsolete line folding (each one a way to read a request
    differently from a proxy in front)."""
    fields = []
    while True:
        line = rfile.readline(MAX_HEADER_LINE + 1)
        if len(line) > MAX_HEADER_LINE:
            raise ValueError(431, "Line too long")
        if line in (b"\r\n", b"\n", b""):
            return RequestHeaders(fields)
        if len(fields) == MAX_HEADERS:
            raise ValueError(431, "Too many headers")
        name, colon, value = line.decode("iso-8859-1").partition(":")
        if not colon or not FIELD_NAME_RE.fullmatch(name):
            raise ValueError(400, "Malformed header line")
        fields.append((name, value.strip(" \t\r\n")))


class BodyReader:
    """A request body as a stream: Content-Length or chunked transfer coding, at most ``limit`` bytes."""

    def __init__(self, rfile, headers, limit):
        self.rfile, self.limit, self.total = rfile, limit, 0
        length = body_length(headers)
        self.chunked = length is None
        self.chunk_left, self.done = 0, False
        if not self.chunked:
            self.remaining = length
            if self.remaining > limit:
                raise HTTPError(413, "Request body is larger than %d bytes" % limit)
            self.done = self.remaining == 0

    def read(self, size=65536):
        if self.done:
            return b""
        if not self.chunked:
            data = self.rfile.read(min(size, self.remaining))
            if not data:
                raise ConnectionError("client closed the connection mid-body")
            self.remaining -= len(data)
            self.done = self.remaining == 0
            return data
        if self.chunk_left == 0:
            size_field = self.rfile.readline(1024).split(b";")[0].strip()
            if not CHUNK_SIZE_RE.fullmatch(size_field):
                raise HTTPError(400, "Malformed chunked request body")
            self.chunk_left = int(size_field, 16)
            if self.total + self.chunk_left > self.limit:
                raise HTTPError(413, "Request body is larger than %d bytes" % self.limit)
            if self.chunk_left == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                self.done = True
                return b""
        data = self.rfile.read(min(size, self.chunk_left))
        if not data:
            raise ConnectionError("client closed the connection mid-chunk")
        self.chunk_left -= len(data)
        self.total += len(data)
        if self.total > self.limit:
            raise HTTPError(413, "Request body is larger than %d bytes" % self.limit)
        if self.chunk_left == 0:
            self.rfile.readline(16)
        return data

    def read_all(self):
        parts = []
        while True:
            data = self.read()
            if not data:
                return b"".join(parts)
            parts.append(data)


class GunzipReader:
    """Decodes a gzip Content-Encoding on the fly, refusing to inflate past ``limit`` bytes."""

    def __init__(self, raw, limit):
        self.raw, self.limit, self.total = raw, limit, 0
        self.inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)

    def read(self, size=65536):
        while True:
            if self.inflater.unconsumed_tail:
                data = self.inflater.decompress(self.inflater.unconsumed_tail, size)
            else:
                chunk = self.raw.read(size)
                if not chunk:
                    return self.inflater.flush()
                try:
                    data = self.inflater.decompress(chunk, size)
                except zlib.error:
                    raise HTTPError(400, "Request body is not valid gzip")
            self.total += len(data)
            if self.total > self.limit:
                raise HTTPError(413, "Decompressed request body is larger than %d bytes" % self.limit)
            if data:
                return data


class Request(Ledger):
    """One HTTP request on its way through authenticate → route → authorize → act → audit → respond:
    its HTTP input here, its enforcement and records as the Ledger it is."""

    def __init__(self, app, handler):
        # the peer's address; a Unix socket has none (gh's http_unix_socket setting connects that way)
        self.setup(app, handler, handler.command, handler.path, handler.headers,
                   handler.client_address[0] if isinstance(handler.client_address, tuple) else "unix-socket")

    def setup(self, app, handler, method, target, headers, client):
        self.handler = handler
        split = urllib.parse.urlsplit(target) if "?" in target or not target.startswith("/") else None
        self.raw_path = split.path if split else target
        if split and split.scheme and "Proxy-Authorization" in headers and "Authorization" not in headers:
            # A request in proxy form (RFC 9112 section 3.2.2) is sent to this server as the client's HTTP
            # proxy (`connect gh --mode localhost` names it so for github.localhost), and what the client
            # gives its proxy to authenticate with is meant for this server: git sends its token that way,
            # where gh would replace git's credential helper for the host itself.
            headers["Authorization"] = headers["Proxy-Authorization"]
        self.query = {k: v[-1] for k, v in urllib.parse.parse_qs(split.query, keep_blank_values=True).items()} \
            if split else {}
        self.headers = headers
        self.method = method
        self.client = client
        self.start_ledger(app, None, "rest")      # the principal once authenticated, the surface once routed
        self.response_headers = {}
        self.form = {}             # a web page's form fields, once read (the last value of each)
        self.form_values = {}      # ... and every value of each, for checkboxes
        self.body_reader = None
        self.level = "none"        # the caller's permission on the resource last found (find_repo)
        self.session = None        # web pages: the signed-in session row
        self.presented = None      # the client certificate and DPoP proof it came with (authentication.Presented)

    def bearer_challenge(self, error=None, description=None, scope=None):
        """RFC 6750's WWW-Authenticate for the API or the MCP endpoint (by the request's surface), naming
        RFC 9728's metadata for it; at /mcp also the scope its tools use (or ``scope``, what is needed)."""
        mcp = self.surface == "mcp"
        parts = ['error="%s"' % error] if error else []
        if description:
            parts.append('error_description="%s"' % description)
        parts.append('resource_metadata="%s/.well-known/oauth-protected-resource%s"' % (self.app.url, "/mcp" if mcp else ""))
        if scope or mcp:
            parts.append('scope="%s"' % (scope or "repo"))
        return "Bearer " + ", ".join(parts)

    # -- input ----------------------------------------------------------------------------------
    def body(self, limit):
        if self.body_reader is None:
            self.body_reader = BodyReader(self.handler.rfile, self.headers, limit)
        return self.body_reader

    def json(self, array_key=None):
        """The JSON object sent as the body ({} for none); 400 for anything that is not one. Where GitHub
        also takes a bare array (issue labels), ``array_key`` names the key it stands for."""
        raw = self.body(MAX_JSON_BODY).read_all()
        if not raw.strip():
            return {}
        try:
            value = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise HTTPError(400, "Problems parsing JSON")
        if isinstance(value, list) and array_key:
            return {array_key: value}
        if not isinstance(value, dict):
            raise HTTPError(400, "Problems parsing JSON: the body must be a JSON object")
        return value

    def field(self, body, name, kind, resource, required=False, default=None):
        """body[name] checked for type: 422 'missing_field' or 'invalid' naming the field."""
        if name not in body or body[name] is None:
            if required:
                raise invalid(resource, name, "missing_field")
            return default
        value = body[name]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise invalid(resource, name, message="%s must be %s" % (name, {str: "a string", bool: "a boolean",
                                                                              int: "an integer", list: "an array",
                                                                              dict: "an object"}[kind]))
        return value

    def text_field(self, body, name, resource, required=False, limit=MAX_TEXT):
        """body[name] as a string of at most ``limit`` characters; a required one not blank either."""
        value = self.field(body, name, str, resource, required=required)
        if value is not None and len(value) > limit:
            raise invalid(resource, name, "custom", "%s is longer than %d characters" % (name, limit))
        if required and value is not None and not value.strip():
            raise invalid(resource, name, "missing_field", "%s cannot be blank" % name)
        return value

    def text_media(self):
        """"diff" or "patch" when the Accept header asks for GitHub's diff or patch media (pull requests,
        commits, comparisons answer in them), else None."""
        accept = self.headers.get("Accept") or ""
        if "vnd.github.diff" in accept or "vnd.github.v3.diff" in accept:
            return "diff"
        if "vnd.github.patch" in accept or "vnd.github.v3.patch" in accept:
            return "patch"
        return None

    def page(self):
        """(per_page, page) from the query, within GitHub's bounds."""
        try:
            per_page = min(max(int(self.query.get("per_page", PER_PAGE_DEFAULT)), 1), PER_PAGE_MAX)
            page = max(int(self.query.get("page", 1)), 1)
        except ValueError:
            raise HTTPError(400, "per_page and page must be whole numbers")
        return per_page, page

    def paginate(self, items):
        """The requested page of ``items``, with a Link header like GitHub's."""
        per_page, page = self.page()
        last = max((len(items) + per_page - 1) // per_page, 1)
        self.link_header(page, per_page, page + 1 if page < last else None, last)
        return items[(page - 1) * per_page: page * per_page]

    def link_header(self, page, per_page, next_page, last=None):
        """GitHub's Link header for ``page``: prev and first past the first page, next (and last, where
        the list's length is known) before the last one. A page past the end points back at the last."""
        def url(n):
            query = dict(self.query, per_page=str(per_page), page=str(n))
            return "<%s%s?%s>" % (self.app.url, self.raw_path, urllib.parse.urlencode(query))
        links = []
        if page > 1:
            links.append('%s; rel="prev"' % url(min(page - 1, last or page - 1)))
        if next_page:
            links.append('%s; rel="next"' % url(next_page))
            if last:
                links.append('%s; rel="last"' % url(last))
        if page > 1:
            links.append('%s; rel="first"' % url(1))
        if links:
            self.response_headers["Link"] = ", ".join(links)
