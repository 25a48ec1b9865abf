"""MCP: agentgit as a Model Context Protocol server at /mcp, every tool a call through decide().

Streamable HTTP, one JSON-RPC request per POST and one JSON answer (no SSE stream, no sessions), in
both eras clients speak: the stateless revision 2026-07-28 (``server/discover``; each request carries
its protocol version and client capabilities in ``_meta`` and the ``MCP-Protocol-Version``,
``Mcp-Method`` and ``Mcp-Name`` headers; results say their ``resultType``), and the handshake era
(``initialize`` for 2025-06-18 and 2025-11-25; nothing is kept between requests, so no session id).

A tool is a REST call made for the caller: the same route handler runs, with the caller's principal,
on surface ``mcp``, so it is decided, refused and audited exactly as over REST. Tool names and
arguments are those of GitHub's own MCP server where the two overlap; agentgit's own tools are
additions. A refusal is a tool error that says why. A call that waits for a human's approval sends
the user to the approval page by the protocol's own out-of-band mechanism: URL-mode elicitation (an
``input_required`` result at 2026-07-28, error -32042 at 2025-11-25); once approved, the same call
succeeds. A missing scope is HTTP 403 ``insufficient_scope`` naming every scope needed (RFC 6750).
"""

import base64
import dataclasses
import json
import urllib.parse

from agentgit.config import __version__
from agentgit.errors import HTTPError
from agentgit.tokens import ALL_SCOPES
from agentgit.routing import find_route, route
from agentgit.request import Request, RequestHeaders
from agentgit.contents import looks_binary

HANDSHAKE_VERSIONS = ("2025-06-18", "2025-11-25")
MODERN_VERSIONS = ("2026-07-28",)
LEGACY_DEFAULT_VERSION = "2025-03-26"     # what a request without MCP-Protocol-Version is taken to speak
META_VERSION = "io.modelcontextprotocol/protocolVersion"
META_CAPABILITIES = "io.modelcontextprotocol/clientCapabilities"
# JSON-RPC errors (and MCP's), with the HTTP status a 2026-07-28 answer carries for each
PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS = -32700, -32600, -32601, -32602
HEADER_MISMATCH, UNSUPPORTED_VERSION, URL_ELICITATION_REQUIRED = -32020, -32022, -32042
MODERN_STATUS = {PARSE_ERROR: 400, INVALID_REQUEST: 400, INVALID_PARAMS: 400, HEADER_MISMATCH: 400,
                 UNSUPPORTED_VERSION: 400, METHOD_NOT_FOUND: 404}
MAX_MCP_BODY = 4 * 1024 * 1024
CACHEABLE = ("server/discover", "tools/list")       # results that say how long a client may cache them
SERVER_INFO = {"name": "agentgit", "version": __version__}
INSTRUCTIONS = ("agentgit is a GitHub-compatible Git service. Every tool is decided by the same policy as the "
                "REST API: a refusal says why, and a call that waits for a human's approval names the page "
                "where the human gives it; call get_permissions to see what this token may do on a repository.")


class RPCError(Exception):
    def __init__(self, code, message, data=None):
        super().__init__(message)
        self.code, self.message, self.data = code, message, data


# -- tools: REST calls made for the caller ------------------------------------------------------

class ToolRequest(Request):
    """A REST call a tool makes for its caller: the route's handler with the caller's principal, the
    tool's arguments as its JSON body and query, on surface mcp."""

    def __init__(self, outer, method, target, body, accept=None):
        headers = RequestHeaders([("Accept", accept or "application/vnd.github+json")])
        self.setup(outer.app, None, method, target, headers, outer.client)
        self.principal, self.surface, self.given = outer.principal, "mcp", body or {}

    def json(self, array_key=None):
        return dict(self.given)

    def body(self, limit):
        raise HTTPError(400, "this tool sends no raw body")


def rest(outer, method, path, body=None, query=None, accept=None):
    """What the route answers (its JSON, or text), raising its HTTPError as REST would; its allowed
    mutations that reached no transaction are settled and recorded as dispatch does."""
    query = {k: str(v) for k, v in (query or {}).items() if v is not None}
    req = ToolRequest(outer, method, path + ("?" + urllib.parse.urlencode(query) if query else ""), body, accept)
    found, params = find_route(method, req.raw_path)
    if found.surface != "rest":
        raise HTTPError(404, "a tool calls REST routes only, not %s %s" % (method, found.pattern))
    error = None
    try:
        result = found.handler(req, **params)
    except HTTPError as e:
        error = e
        raise
    finally:
        if req.pending or req.intents:
            req.settle("refused: HTTP %d %s" % (error.status, error.message) if error else "done",
                       failed=error is not None)
    data = result[1] if isinstance(result, tuple) else result
    headers = result[2] if isinstance(result, tuple) and len(result) > 2 else {}
    if isinstance(data, bytes):         # JSON some handlers encode once and keep, or text (a diff)
        kind = headers.get("Content-Type", "application/json")
        return json.loads(data) if kind.startswith("application/json") else data.decode("utf-8", "replace")
    return data


def repo_api(args, *rest_parts):
    return "/api/v3/repos/%s/%s%s" % (urllib.parse.quote(args["owner"], safe=""),
                                      urllib.parse.quote(args["repo"], safe=""), "".join(rest_parts))


def paging(args):
    return {"page": args.get("page"), "per_page": args.get("perPage")}


def file_contents_tool(req, args):
    """A file's text (and its sha), or a directory's listing."""
    ref = args.get("sha") or args.get("ref")
    found = rest(req, "GET", repo_api(args, "/contents/", urllib.parse.quote(args.get("path", "").strip("/"))),
                 query={"ref": ref})
    if isinstance(found, dict) and found.get("encoding") == "base64":
        data = base64.b64decode(found["content"])
        binary = looks_binary(data)
        return {"path": found["path"], "sha": found["sha"], "size": found["size"],
                "content": None if binary else data.decode("utf-8", "replace"),   # latin-1 text too, never a 500
                "content_base64": found["content"] if binary else None}
    return found


def create_branch_tool(req, args):
    source = args.get("from_branch") or rest(req, "GET", repo_api(args))["default_branch"]
    sha = rest(req, "GET", repo_api(args, "/git/ref/heads/", urllib.parse.quote(source)))["object"]["sha"]
    return rest(req, "POST", repo_api(args, "/git/refs"), {"ref": "refs/heads/" + args["branch"], "sha": sha})


def push_files_tool(req, args):
    """Several files in one commit on a branch, through the Git data API, as GitHub's server does."""
    if not args["files"] or not all(isinstance(f, dict) and isinstance(f.get("path"), str) and
                                    isinstance(f.get("content"), str) for f in args["files"]):
        raise RPCError(INVALID_PARAMS, "files must be a non-empty list of {path, content}")
    ref = repo_api(args, "/git/refs/heads/", urllib.parse.quote(args["branch"]))
    head = rest(req, "GET", repo_api(args, "/git/ref/heads/", urllib.parse.quote(args["branch"])))["object"]["sha"]
    base_tree = rest(req, "GET", repo_api(args, "/git/commits/", head))["tree"]["sha"]
    tree = rest(req, "POST", repo_api(args, "/git/trees"), {"base_tree": base_tree, "tree": [
        {"path": f["path"], "mode": "100644", "type": "blob", "content": f["content"]} for f in args["files"]]})
    commit = rest(req, "POST", repo_api(args, "/git/commits"), {"message": args["message"], "tree": tree["sha"],
                                                                 "parents": [head]})
    return rest(req, "PATCH", ref, {"sha": commit["sha"]})


def put_file_tool(req, args):
    body = {"message": args["message"], "branch": args["branch"], "sha": args.get("sha"),
            "content": base64.b64encode(args["content"].encode()).decode()}
    return rest(req, "PUT", repo_api(args, "/contents/", urllib.parse.quote(args["path"].strip("/"))),
                {k: v for k, v in body.items() if v is not None})


def delete_file_tool(req, args):
    path = repo_api(args, "/contents/", urllib.parse.quote(args["path"].strip("/")))
    sha = rest(req, "GET", path, query={"ref": args["branch"]})["sha"]
    return rest(req, "DELETE", path, {"message": args["message"], "branch": args["branch"], "sha": sha})


def merge_pull_tool(req, args):
    body = {"merge_method": args.get("merge_method"), "commit_title": args.get("commit_title"),
            "commit_message": args.get("commit_message")}
    return rest(req, "PUT", repo_api(args, "/pulls/%d/merge" % args["pullNumber"]),
                {k: v for k, v in body.items() if v is not None})


@dataclasses.dataclass(frozen=True)
class Tool:
    name: str
    description: str
    action: str                  # what decide() is asked; None: any principal may call it (who am I)
    properties: dict             # argument: (JSON type, description)
    required: tuple
    call: object                 # (request, arguments) -> what the tool answers
    read_only: bool = True
    destructive: bool = False

    def schema(self):
        return {"type": "object", "properties": {name: {"type": kind, "description": text}
                                                 for name, (kind, text) in self.properties.items()},
                "required": list(self.required)}

    def json(self, needs_approval=False):
        """The tool as tools/list shows it; ``needs_approval``: the caller's task grant allows it only once
        a human approves each call, which the description and _meta say."""
        said = " A human approves each call under this task: the call answers with where, then succeeds once " \
            "approved." if needs_approval else ""
        return {"name": self.name, "description": "%s (agentgit action: %s).%s" % (self.description, self.action or
                                                                                     "none", said),
                "inputSchema": self.schema(), "annotations": {
                    "title": self.name.replace("_", " ").capitalize(), "readOnlyHint": self.read_only,
                    "destructiveHint": self.destructive, "idempotentHint": self.read_only, "openWorldHint": False},
                "_meta": {"agentgit/action": self.action, "agentgit/needsApproval": needs_approval}}


REPO_ARGS = {"owner": ("string", "the repository's owner"), "repo": ("string", "the repository's name")}
PAGE_ARGS = {"page": ("number", "the page, from 1"), "perPage": ("number", "results a page, at most 100")}
PULL = dict(REPO_ARGS, pullNumber=("number", "the pull request's number"))
ISSUE = dict(REPO_ARGS, issue_number=("number", "the issue's number"))
OWNED = ("owner", "repo")
TOOLS = {tool.name: tool for tool in (
    Tool("get_me", "The account this token acts as", None, {}, (), lambda r, a: rest(r, "GET", "/api/v3/user")),
    Tool("search_repositories", "Search repositories you can see", "read_code",
         dict({"query": ("string", "GitHub's search syntax")}, **PAGE_ARGS), ("query",),
         lambda r, a: rest(r, "GET", "/api/v3/search/repositories", query=dict(paging(a), q=a["query"]))),
    Tool("get_file_contents", "A file's text, or a directory's listing, at a ref", "read_code",
         dict(REPO_ARGS, path=("string", "the path; / for the root"), ref=("string", "a branch, tag or commit"),
              sha=("string", "a commit sha, instead of ref")), OWNED, file_contents_tool),
    Tool("list_branches", "A repository's branches", "read_code", dict(REPO_ARGS, **PAGE_ARGS), OWNED,
         lambda r, a: rest(r, "GET", repo_api(a, "/branches"), query=paging(a))),
    Tool("list_commits", "Commits, newest first, from a branch or sha", "read_code",
         dict(REPO_ARGS, sha=("string", "a branch or commit sha"), author=("string", "an author's login"),
              **PAGE_ARGS), OWNED,
         lambda r, a: rest(r, "GET", repo_api(a, "/commits"), query=dict(paging(a), sha=a.get("sha"),
                                                                          author=a.get("author")))),
    Tool("get_commit", "One commit, with its files", "read_code", dict(REPO_ARGS, sha=("string", "a commit sha or ref")),
         OWNED + ("sha",), lambda r, a: rest(r, "GET", repo_api(a, "/commits/", urllib.parse.quote(a["sha"])))),
    Tool("create_branch", "A new branch from another (default: the default branch)", "create_branch",
         dict(REPO_ARGS, branch=("string", "the new branch"), from_branch=("string", "the branch it starts from")),
         OWNED + ("branch",), create_branch_tool, read_only=False),
    Tool("create_or_update_file", "Write one file on a branch, as a commit", "push_branch",
         dict(REPO_ARGS, path=("string", "the file's path"), content=("string", "its new text"),
              message=("string", "the commit message"), branch=("string", "the branch"),
              sha=("string", "the blob sha it replaces, when it exists")),
         OWNED + ("path", "content", "message", "branch"), put_file_tool, read_only=False),
    Tool("push_files", "Write several files on a branch, as one commit", "push_branch",
         dict(REPO_ARGS, branch=("string", "the branch"), message=("string", "the commit message"),
              files=("array", "the files: [{path, content}]")), OWNED + ("branch", "files", "message"), push_files_tool,
         read_only=False),
    Tool("delete_file", "Delete one file on a branch, as a commit", "push_branch",
         dict(REPO_ARGS, path=("string", "the file's path"), message=("string", "the commit message"),
              branch=("string", "the branch")), OWNED + ("path", "message", "branch"), delete_file_tool, read_only=False,
         destructive=True),
    Tool("list_pull_requests", "A repository's pull requests", "read_code",
         dict(REPO_ARGS, state=("string", "open, closed or all"), head=("string", "owner:branch"),
              base=("string", "the base branch"), **PAGE_ARGS), OWNED,
         lambda r, a: rest(r, "GET", repo_api(a, "/pulls"), query=dict(paging(a), state=a.get("state"),
                                                                        head=a.get("head"), base=a.get("base")))),
    Tool("get_pull_request", "One pull request", "read_code", PULL, OWNED + ("pullNumber",),
         lambda r, a: rest(r, "GET", repo_api(a, "/pulls/%d" % a["pullNumber"]))),
    Tool("get_pull_request_files", "The files a pull request changes", "read_code", PULL, OWNED + ("pullNumber",),
         lambda r, a: rest(r, "GET", repo_api(a, "/pulls/%d/files" % a["pullNumber"]))),
    Tool("get_pull_request_diff", "A pull request's unified diff", "read_code", PULL, OWNED + ("pullNumber",),
         lambda r, a: rest(r, "GET", repo_api(a, "/pulls/%d" % a["pullNumber"]), accept="application/vnd.github.diff")),
    Tool("create_pull_request", "Open a pull request", "open_pr",
         dict(REPO_ARGS, title=("string", "its title"), head=("string", "the branch with the changes"),
              base=("string", "the branch to merge into"), body=("string", "its description"),
              draft=("boolean", "open it as a draft")), OWNED + ("title", "head", "base"),
         lambda r, a: rest(r, "POST", repo_api(a, "/pulls"), {k: a.get(k) for k in ("title", "head", "base", "body",
                                                                                      "draft") if k in a}),
         read_only=False),
    Tool("create_and_submit_pull_request_review", "Review a pull request: APPROVE, REQUEST_CHANGES or COMMENT",
         "review_pr", dict(PULL, body=("string", "the review's text"), event=("string", "APPROVE, REQUEST_CHANGES or "
                                                                                      "COMMENT"),
                           commitID=("string", "the commit reviewed")), OWNED + ("pullNumber", "event"),
         lambda r, a: rest(r, "POST", repo_api(a, "/pulls/%d/reviews" % a["pullNumber"]), {
             "event": a["event"], "body": a.get("body", ""), **({"commit_id": a["commitID"]} if a.get("commitID") else {})}),
         read_only=False),
    Tool("merge_pull_request", "Merge a pull request (merge, squash or rebase)", "merge_pr",
         dict(PULL, merge_method=("string", "merge, squash or rebase"), commit_title=("string", "the commit's title"),
              commit_message=("string", "the commit's message")), OWNED + ("pullNumber",), merge_pull_tool, read_only=False),
    Tool("list_issues", "A repository's issues", "read_code",
         dict(REPO_ARGS, state=("string", "open, closed or all"), labels=("string", "comma-separated label names"),
              **PAGE_ARGS), OWNED,
         lambda r, a: rest(r, "GET", repo_api(a, "/issues"), query=dict(paging(a), state=a.get("state"),
                                                                         labels=a.get("labels")))),
    Tool("get_issue", "One issue", "read_code", ISSUE, OWNED + ("issue_number",),
         lambda r, a: rest(r, "GET", repo_api(a, "/issues/%d" % a["issue_number"]))),
    Tool("create_issue", "Open an issue", "open_issue",
         dict(REPO_ARGS, title=("string", "its title"), body=("string", "its text"),
              labels=("array", "label names"), assignees=("array", "logins")), OWNED + ("title",),
         lambda r, a: rest(r, "POST", repo_api(a, "/issues"), {k: a[k] for k in ("title", "body", "labels",
                                                                                  "assignees") if k in a}),
         read_only=False),
    Tool("add_issue_comment", "Comment on an issue or pull request", "comment",
         dict(ISSUE, body=("string", "the comment")), OWNED + ("issue_number", "body"),
         lambda r, a: rest(r, "POST", repo_api(a, "/issues/%d/comments" % a["issue_number"]), {"body": a["body"]}),
         read_only=False),
    Tool("update_issue", "Change an issue: close or reopen it (state), retitle, edit, relabel", "edit_issue",
         dict(ISSUE, title=("string", "a new title"), body=("string", "a new text"),
              state=("string", "open or closed"), labels=("array", "label names")), OWNED + ("issue_number",),
         lambda r, a: rest(r, "PATCH", repo_api(a, "/issues/%d" % a["issue_number"]), {
             k: a[k] for k in ("title", "body", "state", "labels") if k in a}), read_only=False),
    Tool("search_code", "Search the default branches' files you can see", "read_code",
         dict({"query": ("string", "words and qualifiers (repo:owner/name)")}, **PAGE_ARGS), ("query",),
         lambda r, a: rest(r, "GET", "/api/v3/search/code", query=dict(paging(a), q=a["query"]))),
    Tool("search_issues", "Search issues and pull requests you can see", "read_code",
         dict({"query": ("string", "words and qualifiers (repo:, is:open, author:@me)")}, **PAGE_ARGS), ("query",),
         lambda r, a: rest(r, "GET", "/api/v3/search/issues", query=dict(paging(a), q=a["query"]))),
    Tool("search_pull_requests", "Search pull requests you can see", "read_code",
         dict({"query": ("string", "words and qualifiers (repo:, is:open, author:@me)")}, **PAGE_ARGS), ("query",),
         lambda r, a: rest(r, "GET", "/api/v3/search/issues", query=dict(paging(a), q="is:pr " + a["query"]))),
    Tool("get_issue_comments", "An issue's or pull request's comments", "read_code",
         dict(ISSUE, **PAGE_ARGS), OWNED + ("issue_number",),
         lambda r, a: rest(r, "GET", repo_api(a, "/issues/%d/comments" % a["issue_number"]), query=paging(a))),
    Tool("update_pull_request", "Change a pull request: retitle, edit, close or reopen it, retarget its base",
         "edit_issue", dict(PULL, title=("string", "a new title"), body=("string", "a new text"),
                            state=("string", "open or closed"), base=("string", "a new base branch")),
         OWNED + ("pullNumber",), lambda r, a: rest(r, "PATCH", repo_api(a, "/pulls/%d" % a["pullNumber"]), {
             k: a[k] for k in ("title", "body", "state", "base") if k in a}), read_only=False),
    Tool("list_pull_request_reviews", "A pull request's reviews", "read_code", PULL, OWNED + ("pullNumber",),
         lambda r, a: rest(r, "GET", repo_api(a, "/pulls/%d/reviews" % a["pullNumber"]))),
    Tool("list_releases", "A repository's releases, newest first", "read_code", dict(REPO_ARGS, **PAGE_ARGS), OWNED,
         lambda r, a: rest(r, "GET", repo_api(a, "/releases"), query=paging(a))),
    Tool("get_latest_release", "A repository's latest release", "read_code", REPO_ARGS, OWNED,
         lambda r, a: rest(r, "GET", repo_api(a, "/releases/latest"))),
    Tool("get_release_by_tag", "A release, by its tag", "read_code", dict(REPO_ARGS, tag=("string", "the tag")),
         OWNED + ("tag",), lambda r, a: rest(r, "GET", repo_api(a, "/releases/tags/" + urllib.parse.quote(
             a["tag"], safe="")))),
    Tool("list_tags", "A repository's tags", "read_code", dict(REPO_ARGS, **PAGE_ARGS), OWNED,
         lambda r, a: rest(r, "GET", repo_api(a, "/tags"), query=paging(a))),
    Tool("get_tag", "A tag: its annotated tag object, or for a lightweight tag its ref", "read_code",
         dict(REPO_ARGS, tag=("string", "the tag's name")), OWNED + ("tag",), lambda r, a: tag_object(r, a)),
    Tool("create_repository", "A new repository of your own", "create_repo",
         {"name": ("string", "its name"), "description": ("string", "what it is"), "private": (
             "boolean", "private or not"), "autoInit": ("boolean", "start it with a README")}, ("name",),
         lambda r, a: rest(r, "POST", "/api/v3/user/repos", dict({k: a[k] for k in ("name", "description", "private")
                                                                  if k in a}, auto_init=a.get("autoInit", False))),
         read_only=False),
    Tool("fork_repository", "A fork of a repository, yours or an organization's", "create_repo",
         dict(REPO_ARGS, organization=("string", "the organization to fork into")), OWNED,
         lambda r, a: rest(r, "POST", repo_api(a, "/forks"), {"organization": a["organization"]}
                           if a.get("organization") else {}), read_only=False),
    Tool("get_permissions", "What this token may do on a repository, action by action, and why (agentgit)", None,
         REPO_ARGS, OWNED, lambda r, a: rest(r, "GET", "/api/ext/v1/policy", query={
             "resource": "repo:%s/%s" % (a["owner"], a["repo"])})),
    Tool("get_approval", "An approval this token asked for: pending, approved or denied (agentgit)", None,
         {"approval_id": ("string", "its id, ap_…")}, ("approval_id",),
         lambda r, a: rest(r, "GET", "/api/ext/v1/approvals/" + urllib.parse.quote(a["approval_id"], safe=""))),
)}
def tag_object(outer, args):
    """What github-mcp-server's get_tag answers: the tag's ref, then the annotated tag it points at."""
    ref = rest(outer, "GET", repo_api(args, "/git/ref/tags/" + urllib.parse.quote(args["tag"], safe="")))
    if ref["object"]["type"] != "tag":
        return ref
    return rest(outer, "GET", repo_api(args, "/git/tags/" + ref["object"]["sha"]))


JSON_TYPES = {"string": str, "number": (int, float), "boolean": bool, "array": list, "object": dict}


def checked_arguments(tool, args):
    """The arguments, each of its declared type (numbers whole where a number names a thing), or -32602."""
    if not isinstance(args, dict):
        raise RPCError(INVALID_PARAMS, "arguments must be an object")
    missing = [name for name in tool.required if name not in args]
    if missing:
        raise RPCError(INVALID_PARAMS, "%s: missing required argument(s): %s" % (tool.name, ", ".join(missing)))
    for name, value in args.items():
        if name not in tool.properties:
            raise RPCError(INVALID_PARAMS, "%s takes no argument %r" % (tool.name, name[:100]))
        kind = tool.properties[name][0]
        if not isinstance(value, JSON_TYPES[kind]) or (kind != "boolean" and isinstance(value, bool)) or \
                (kind == "number" and value != int(value)):
            raise RPCError(INVALID_PARAMS, "%s: %s must be a %s" % (tool.name, name, "whole number" if kind == "number"
                                                                    else kind))
    return {k: int(v) if tool.properties[k][0] == "number" else v for k, v in args.items()}


def visible_tools(req):
    """(tool, needs approval) for every tool; for a task token, those whose action its grant names or
    allows with a human's approval (and those anyone may call)."""
    grant = req.principal.grant
    if grant is None:
        return [(t, False) for t in TOOLS.values()]
    approved = set((grant.get("constraints") or {}).get("requires_approval") or ())
    return [(t, t.action in approved) for t in TOOLS.values()
            if t.action is None or t.action in grant["actions"] or t.action in approved]


def call_tool(req, era, params):
    tool = TOOLS.get(params.get("name")) if isinstance(params.get("name"), str) else None
    if tool is None:
        raise RPCError(INVALID_PARAMS, "Unknown tool: %s" % str(params.get("name"))[:100])
    args = checked_arguments(tool, params.get("arguments") or {})
    try:
        answer = tool.call(req, args)
    except HTTPError as error:
        return refusal(req, era, tool, error, params)
    text = answer if isinstance(answer, str) else json.dumps(answer, indent=1)
    result = {"content": [{"type": "text", "text": text}], "isError": False}
    if isinstance(answer, dict) or (isinstance(answer, list) and era in MODERN_VERSIONS):
        result["structuredContent"] = answer
    return result


def refusal(req, era, tool, error, params):
    """A refused call as the protocol says it: a tool error with agentgit's reason; a wait for approval
    as URL-mode elicitation where the client can follow one (at 2026-07-28 it says so in each request's
    capabilities; at 2025-11-25 it cannot say so here, there being no session), else a tool error whose
    text carries the approval page and how to wait; a missing scope as 403 insufficient_scope."""
    if error.headers.get("X-Accepted-OAuth-Scopes"):
        needed = sorted(set(req.principal.scopes_header.replace(" ", "").split(",")) - {""} |
                        set(error.headers["X-Accepted-OAuth-Scopes"].replace(" ", "").split(",")))
        raise HTTPError(403, error.message, headers={"WWW-Authenticate": req.bearer_challenge(
            "insufficient_scope", scope=" ".join(needed))})
    extra = error.extra or {}
    if extra.get("approval_url"):
        page = extra["approval_url"]
        declared = ((params.get("_meta") or {}).get(META_CAPABILITIES) or {}).get("elicitation")
        if era in MODERN_VERSIONS and isinstance(declared, dict) and "url" in declared:
            return {"resultType": "input_required", "requestState": extra["approval_id"], "inputRequests": {
                extra["approval_id"]: {"method": "elicitation/create", "params": {
                    "mode": "url", "message": error.message, "url": page}}}}
        if era == "2025-11-25":
            raise RPCError(URL_ELICITATION_REQUIRED, error.message, {"elicitations": [
                {"mode": "url", "elicitationId": extra["approval_id"], "url": page, "message": error.message}]})
    details = "; ".join(e.get("message") or "%s %s" % (e.get("field"), e.get("code")) for e in error.errors or [])
    text = "%s refused: HTTP %d: %s%s" % (tool.name, error.status, error.message, " (%s)" % details if details else "")
    if extra.get("approval_url"):
        text += (". A human approves it at %s; wait for it (get_approval with approval_id %s, or GET "
                 "%s/api/ext/v1/approvals/%s until its state is approved), then call %s again with the same "
                 "arguments" % (extra["approval_url"], extra["approval_id"], req.app.url, extra["approval_id"],
                                tool.name))
    return {"content": [{"type": "text", "text": text}], "isError": True,
            "structuredContent": {"status": error.status, "message": error.message, **extra}}


# -- the endpoint -------------------------------------------------------------------------------

def capabilities():
    return {"tools": {"listChanged": False}}


def answer(req, era, method, params):
    """The result of one request, or RPCError."""
    if method == "initialize":
        asked = params.get("protocolVersion")
        return {"protocolVersion": asked if asked in HANDSHAKE_VERSIONS else HANDSHAKE_VERSIONS[-1],
                "capabilities": capabilities(), "serverInfo": SERVER_INFO, "instructions": INSTRUCTIONS}
    if method == "server/discover":
        return {"supportedVersions": list(HANDSHAKE_VERSIONS + MODERN_VERSIONS), "capabilities": capabilities(),
                "instructions": INSTRUCTIONS, "_meta": {"io.modelcontextprotocol/serverInfo": SERVER_INFO}}
    if method == "ping" and era not in MODERN_VERSIONS:
        return {}
    if method == "tools/list":
        return {"tools": [tool.json(needs_approval) for tool, needs_approval in visible_tools(req)]}
    if method == "tools/call":
        return call_tool(req, era, params)
    raise RPCError(METHOD_NOT_FOUND, "Method not found: %s" % str(method)[:100])


def modern_era(req, message, params):
    """The version a 2026-07-28 request carries, once its envelope and headers agree (the ladder of the
    revision: envelope keys, then headers, then the version)."""
    meta = params.get("_meta")
    if not isinstance(meta, dict) or META_VERSION not in meta or META_CAPABILITIES not in meta:
        raise RPCError(INVALID_PARAMS, "params._meta must carry %s and %s" % (META_VERSION, META_CAPABILITIES))
    version = meta[META_VERSION]
    named = params.get("name") if message["method"] == "tools/call" else None
    if req.headers.get("MCP-Protocol-Version") != version or req.headers.get("Mcp-Method") != message["method"] or \
            (named is not None and req.headers.get("Mcp-Name") != named):
        raise RPCError(HEADER_MISMATCH, "the MCP-Protocol-Version, Mcp-Method and Mcp-Name headers must match the "
                                        "request's _meta, method and name")
    if version not in MODERN_VERSIONS:
        raise RPCError(UNSUPPORTED_VERSION, "Unsupported protocol version: %s" % str(version)[:40],
                       {"supported": list(MODERN_VERSIONS + HANDSHAKE_VERSIONS), "requested": str(version)[:40]})
    return version


def parse_message(req):
    raw = req.body(MAX_MCP_BODY).read_all()
    try:
        message = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise RPCError(PARSE_ERROR, "Parse error: the body is not JSON")
    if isinstance(message, list):
        raise RPCError(INVALID_REQUEST, "batches are not accepted: send one JSON-RPC message a request")
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0" or not isinstance(message.get("method"), str):
        raise RPCError(INVALID_REQUEST, "Invalid Request: a JSON-RPC 2.0 object with a method")
    if "id" in message and (isinstance(message["id"], bool) or not isinstance(message["id"], (str, int))):
        raise RPCError(INVALID_REQUEST, "Invalid Request: id must be a string or an integer")
    if not isinstance(message.get("params", {}), dict):
        raise RPCError(INVALID_PARAMS, "params must be an object")
    return message


def check_origin(req):
    """The transport's rule against DNS rebinding: a request a browser sent from another site's page
    (its Origin not this server's) is refused, whatever credentials it carries."""
    origin = req.headers.get("Origin")
    parts = urllib.parse.urlsplit(req.app.url)
    if origin is not None and origin.rstrip("/").lower() != "%s://%s" % (parts.scheme, parts.netloc.lower()):
        raise HTTPError(403, "Forbidden: MCP requests from the page of another origin (%s) are refused" % origin[:100])


@route("POST", "/mcp", "mcp")
def mcp_endpoint(req):
    check_origin(req)
    if req.principal.user is None:
        raise HTTPError(401, "Requires authentication", headers={"WWW-Authenticate": req.bearer_challenge()})
    message, modern = {}, False
    try:
        message = parse_message(req)
        params = message.get("params") or {}
        modern = "_meta" in params and isinstance(params["_meta"], dict) and META_VERSION in params["_meta"] or \
            message["method"] == "server/discover"
        if modern:
            era = modern_era(req, message, params)
        else:
            era = req.headers.get("MCP-Protocol-Version") or LEGACY_DEFAULT_VERSION
            if era not in HANDSHAKE_VERSIONS + (LEGACY_DEFAULT_VERSION,):
                raise RPCError(INVALID_REQUEST, "Unsupported MCP-Protocol-Version: %s" % era[:40])
        if "id" not in message:
            return 202, None            # a notification: nothing here acts on one
        result = answer(req, era, message["method"], params)
        if modern:
            result.setdefault("resultType", "complete")
            if message["method"] in CACHEABLE:       # what a token may see is its own: never shared, never kept
                result.update(ttlMs=0, cacheScope="private")
        return 200, {"jsonrpc": "2.0", "id": message["id"], "result": result}
    except RPCError as error:
        body = {"jsonrpc": "2.0", "id": message.get("id") if isinstance(message, dict) else None,
                "error": dict({"code": error.code, "message": error.message},
                              **({"data": error.data} if error.data is not None else {}))}
        return (MODERN_STATUS.get(error.code, 200) if modern or error.code in (PARSE_ERROR, INVALID_REQUEST)
                else 200), body



@route("GET", "/mcp", "mcp")
@route("DELETE", "/mcp", "mcp")
def mcp_no_stream(req):
    """No server-initiated stream and no sessions to end: POST is the whole transport here."""
    check_origin(req)
    raise HTTPError(405, "Method Not Allowed: POST one JSON-RPC request to /mcp", headers={"Allow": "POST"})



@route("GET", "/.well-known/oauth-protected-resource/mcp", "oauth", "none")
def mcp_resource_metadata(req):
    """RFC 9728 for the MCP endpoint: its resource identifier and the authorization server for it."""
    return {"resource": req.app.url + "/mcp", "authorization_servers": [req.app.url],
            "bearer_methods_supported": ["header"], "resource_name": "agentgit MCP server",
            "scopes_supported": [s for s in ALL_SCOPES if s != "site_admin"]}
