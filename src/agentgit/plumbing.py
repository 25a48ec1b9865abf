"""HTTP plumbing: request bodies, the route table, and the Request on its way through the pipeline."""

import collections
import json
import re
import urllib.parse
import zlib

from agentgit.config import MAX_JSON_BODY, PER_PAGE_DEFAULT, PER_PAGE_MAX
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


# One route: its pattern as declared, the segments it is matched by, its handler, its place in the order,
# and what it declares: its surface and how its caller is known
Route = collections.namedtuple("Route", "pattern segments handler order surface authentication")
# What a route serves. The surface says how a refusal looks (git's Basic challenge and text, a REST
# client's Bearer challenge and JSON, a browser's page), which audience a token must name, and what the
# audit log calls it.
SURFACES = ("rest", "graphql", "git", "mcp", "broker", "oauth", "web")
# How a route's caller is known, which the pipeline settles before the route runs
AUTHENTICATIONS = {
    "token": "a token in Authorization (token, Bearer, DPoP, HTTP Basic) or a client certificate; anonymous without",
    "session": "a signed-in person's session cookie (web pages); Authorization is not read",
    "client": "the route authenticates the OAuth client itself (its secret, assertion or certificate)",
    "none": "nobody: a public document, or a request that names its client; credentials are not read",
}
ROUTES = collections.defaultdict(list)   # method -> [Route], declared with @route next to each handler
# the same routes as find_route() tries them: those of fixed length by their number of segments (only
# those can match a path of that length), then the {name:path} ones
FIXED_ROUTES = collections.defaultdict(lambda: collections.defaultdict(list))    # method -> length -> [Route]
GREEDY_ROUTES = collections.defaultdict(list)                                   # method -> [Route]
SEGMENT_RE = re.compile(r"^\{(\w+)(?::(int|path))?\}$")


def route(method, pattern, surface="rest", authentication="token"):
    """Register a handler for a surface (SURFACES) and a way of knowing its caller (AUTHENTICATIONS).
    ``{name}`` matches one path segment, ``{name:int}`` a number, ``{name:path}`` one or more segments
    (``/branches/{branch:path}/protection`` takes ``a/b`` for the branch). Templates are matched segment
    by segment, not as regular expressions: nothing to compile at start."""
    if surface not in SURFACES or authentication not in AUTHENTICATIONS:
        raise ValueError("route %s %s: no surface %r or authentication %r" % (method, pattern, surface, authentication))
    segments = []
    for part in pattern.strip("/").split("/") if pattern != "/" else ():      # "/" has no segments
        m = SEGMENT_RE.match(part)
        segments.append((m.group(2) or "one", m.group(1)) if m else ("literal", part))

    def register(handler):
        # {name:path} routes are tried after all others, longest first, so /branches/{b}/protection is not
        # taken for a branch named "x/protection"; the others most specific first (a literal segment before
        # a number, a number before any segment, from the left), so where two overlap the one that names
        # more wins whichever module declared it first
        greedy = any(kind == "path" for kind, _ in segments)
        order = (greedy, -len(pattern)) if greedy else (greedy, specificity(segments))
        entry = Route(pattern, segments, handler, order, surface, authentication)
        # after every route of the same order: declaration order decides among equals
        insert_in_order(ROUTES[method], entry)
        insert_in_order(GREEDY_ROUTES[method] if greedy else FIXED_ROUTES[method][len(segments)], entry)
        return handler
    return register


SEGMENT_RANK = {"literal": 0, "int": 1, "one": 2}


def specificity(segments):
    """A route's rank among those of its length: lower is more specific (see route())."""
    return tuple(SEGMENT_RANK[kind] for kind, _ in segments)


def insert_in_order(routes, entry):
    """bisect.insort_right by Route.order (its key argument needs Python 3.10, and the client commands
    of the single file run on 3.9)."""
    low, high = 0, len(routes)
    while low < high:
        middle = (low + high) // 2
        if entry.order < routes[middle].order:
            high = middle
        else:
            low = middle + 1
    routes.insert(low, entry)


def not_found_message(method, path, parts):
    """A 404 that says what was probably meant: the methods the path does take, the REST API's root
    for a GitHub path without it, or that an extension endpoint does not exist."""
    def matched(method_routes, segments):
        return any(match_segments(r.segments, segments) is not None for r in method_routes)
    others = sorted(m for m, method_routes in ROUTES.items() if m != method and matched(method_routes, parts))
    if others:
        return "Not Found: %s takes %s, not %s" % (path, " and ".join(others), method)
    if path.startswith("/api/ext/"):
        return "Not Found: agentgit has no extension endpoint %s %s (`python agentgit.py routes` lists them)" % (
            method, path)
    if not path.startswith("/api/") and matched(ROUTES.get(method, ()), ["api", "v3"] + parts):
        return "Not Found: the REST API is under /api/v3 (%s /api/v3%s)" % (method, path)
    return "Not Found"


def match_segments(segments, parts):
    """{name: value} when the path's segments fit the template, else None."""
    greedy = next((i for i, (kind, _) in enumerate(segments) if kind == "path"), None)
    if greedy is None:
        if len(parts) != len(segments):
            return None
        pairs = list(zip(segments, parts))
    else:
        tail = len(segments) - greedy - 1
        if len(parts) < len(segments):
            return None
        middle = "/".join(parts[greedy:len(parts) - tail])
        pairs = list(zip(segments[:greedy], parts)) + [(segments[greedy], middle)] + list(
            zip(segments[greedy + 1:], parts[len(parts) - tail:]))
    params = {}
    for (kind, value), part in pairs:
        if kind == "literal":
            if part != value:
                return None
        elif not part or kind == "int" and not (part.isdigit() and len(part) <= 12):
            return None
        else:
            params[value] = urllib.parse.unquote(part)
    return params


def find_route(method, path):
    """(Route, path parameters) of the route that serves ``method`` on ``path``; 404 saying what was
    probably meant when none does. HEAD is served as GET."""
    method = "GET" if method == "HEAD" else method
    path = path[:-1] if path.endswith("/") else path
    parts = path.strip("/").split("/") if path.strip("/") else []
    for candidate in FIXED_ROUTES[method].get(len(parts), []) + GREEDY_ROUTES[method]:
        params = match_segments(candidate.segments, parts)
        if params is not None:
            return candidate, params
    raise HTTPError(404, not_found_message(method, path[:200], parts))


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
        self.form = {}             # a web page's form fields, once read
        self.body_reader = None
        self.level = "none"        # the caller's permission on the resource last found (find_repo)
        self.session = None        # web pages: the signed-in session row
        self.presented = None      # the client certificate and DPoP proof it came with (authentication.Presented)

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
