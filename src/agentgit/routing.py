"""Routing: the route table, each route declared next to its handler with its surface and how its
caller is known, and the matcher that finds the one that serves a request."""

import collections
import re
import urllib.parse

from agentgit.errors import HTTPError


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
