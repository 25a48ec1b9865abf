"""GraphQL resolvers: the fields of each type, type by type (Query, User, Repository, Ref, Issue, Release, PullRequest)."""

import base64
import dataclasses
import datetime
import json

from agentgit.config import API_RATE_LIMIT, rate_limit_reset
from agentgit.errors import HTTPError
from agentgit.gitstore import branch_sha, commits_between, merge_base, open_repo
from agentgit.accounts import REPO_SELECT, account_by_id, account_by_login, full_name, repo_by_id
from agentgit.policy import Resource, branch_protection, latest_reviews, repo_permission
from agentgit.serializers import node_id, repo_json, user_json
from agentgit.lookups import find_repo, signed_in
from agentgit.repositories import people_with_access, repos_reachable_by
from agentgit.issues import REACTIONS, author_association, comment_json, issue_json, note_untrusted
from agentgit.sub_issues import children
from agentgit.pulls import PullState, head_repository, mergeability
from agentgit.reviews import review_json, visible_reviews
from agentgit.releases import release_json, visible_releases
from agentgit.search import matching_issues
from agentgit.graphql_language import GraphQLError, unprocessable


# -- the schema's building blocks: fields, connections, payloads; resolvers take (ctx, parent, args) ----

@dataclasses.dataclass
class GField:
    type: str
    resolve: object = None            # None: parent[name]
    args: dict = dataclasses.field(default_factory=dict)


CONNECTION_ARGS = {"first": "Int", "after": "String", "last": "Int", "before": "String"}
MAX_PAGE = 100


def checked_page_size(args):
    """(first, last) of a connection's arguments, each refused past GitHub's 100 before anything is fetched."""
    first, last = args.get("first"), args.get("last")
    for name, value in (("first", first), ("last", last)):
        if value is not None and not 0 <= value <= MAX_PAGE:
            raise GraphQLError("`%s` on a connection must be between 0 and %d" % (name, MAX_PAGE),
                               kind="INVALID_ARGUMENT")
    return first, last


def cursor_position(cursor):
    """The position an opaque cursor (base64 of "cursor:N") names."""
    try:
        kind, _, index = base64.b64decode(cursor).decode().partition(":")
        if kind != "cursor":
            raise ValueError("not a cursor")
        return int(index)
    except (ValueError, UnicodeDecodeError):
        raise GraphQLError("%r is not a valid cursor" % cursor, kind="INVALID_CURSOR_ARGUMENTS")


def paginate_connection(items, args, to_node):
    """A GitHub connection (totalCount, nodes, edges with cursors, pageInfo) over ``items`` with
    first/after/last/before. Cursors are opaque: base64 of the item's position."""
    first, last = checked_page_size(args)
    start, end = 0, len(items)
    if args.get("after"):
        start = max(start, cursor_position(args["after"]) + 1)
    if args.get("before"):
        end = min(end, cursor_position(args["before"]))
    if first is None and last is None:
        first = MAX_PAGE
    window = list(range(start, max(start, end)))
    if first is not None:
        window = window[:first]
    if last is not None:
        window = window[-last:] if last else []
    cursor = lambda i: base64.b64encode(("cursor:%d" % i).encode()).decode()  # noqa: E731
    nodes = [to_node(items[i]) for i in window]
    return {"totalCount": len(items), "nodes": nodes,
            "edges": [{"cursor": cursor(i), "node": n} for i, n in zip(window, nodes)],
            "pageInfo": {"hasNextPage": bool(window) and window[-1] < end - 1,
                         "hasPreviousPage": bool(window) and window[0] > start,
                         "startCursor": cursor(window[0]) if window else None,
                         "endCursor": cursor(window[-1]) if window else None}}


def payload_type(**fields):
    """A mutation's payload type: clientMutationId and the named fields, each of the given type."""
    return {"kind": "OBJECT", "fields": dict({"clientMutationId": GField("String")},
                                             **{name: GField(kind) for name, kind in fields.items()})}


def connection_type(node_type):
    return {"kind": "OBJECT", "fields": {
        "totalCount": GField("Int!"), "nodes": GField("[%s]" % node_type), "edges": GField("[%sEdge]" % node_type),
        "pageInfo": GField("PageInfo!")}}


def edge_type(node_type):
    return {"kind": "OBJECT", "fields": {"cursor": GField("String!"), "node": GField(node_type)}}


def node_row(ctx, ident, *kinds):
    """The issues/labels/accounts/repos row a global id of one of ``kinds`` names, or a NOT_FOUND error."""
    try:
        found_kind, _, number = base64.b64decode(ident).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        found_kind, number = "", ""
    table = {"Issue": "issues", "PullRequest": "issues", "Label": "labels", "User": "accounts",
             "Repository": "repos", "PullRequestReview": "reviews"}.get(found_kind)
    row = None
    if found_kind in kinds and number.isdigit() and table:
        row = repo_by_id(ctx.app.store, int(number)) if table == "repos" else ctx.app.store.one(
            "SELECT * FROM %s WHERE id = ?" % table, int(number))
    if row is None:
        raise GraphQLError("Could not resolve to a node with the global id of '%s'" % ident, kind="NOT_FOUND")
    return row


def visible_pull(ctx, ident):
    """(repository, issue, pull) behind a pull request's global id, when the viewer can see it."""
    issue = node_row(ctx, ident, "PullRequest")
    repo_row = repo_by_id(ctx.app.store, issue["repo_id"])
    if not ctx.req.can("read_code", Resource.repo(repo_row)):
        raise GraphQLError("Could not resolve to a node with the global id of '%s'" % ident, kind="NOT_FOUND")
    return repo_row, issue, ctx.app.store.one("SELECT * FROM pulls WHERE issue_id = ?", issue["id"])


# -- Query ----------------------------------------------------------------------------------------------

def resolve_viewer(ctx, parent, args):
    return gql_user(ctx.app, signed_in(ctx.req))


def resolve_user(ctx, parent, args):
    row = account_by_login(ctx.app.store, args["login"])
    if row is None or row["kind"] == "org":
        raise GraphQLError("Could not resolve to a User with the login of '%s'." % args["login"], kind="NOT_FOUND")
    ctx.req.check("read_account", Resource.account(row))
    return gql_user(ctx.app, row)


def resolve_rate_limit(ctx, parent, args):
    """Query.rateLimit: the figures the X-RateLimit headers carry (the API itself is not rate-limited)."""
    reset = datetime.datetime.fromtimestamp(rate_limit_reset(), datetime.timezone.utc)
    return {"__typename": "RateLimit", "cost": 1, "limit": API_RATE_LIMIT, "remaining": API_RATE_LIMIT, "used": 0,
            "nodeCount": ctx.nodes, "resetAt": reset.strftime("%Y-%m-%dT%H:%M:%SZ")}


def resolve_search(ctx, parent, args):
    """Query.search for issues and pull requests (type ISSUE), over the same matching as REST search."""
    if args["type"] != "ISSUE":
        raise GraphQLError("Only ISSUE searches are served", kind="UNPROCESSABLE")
    try:
        found = matching_issues(ctx.req, args["query"])
    except HTTPError as error:
        raise unprocessable(error)
    out = paginate_connection(found, args, lambda f: gql_pull(ctx, f[0], f[1]) if f[1]["is_pull"] else gql_issue(ctx, f[0], f[1]))
    out.update(issueCount=len(found), repositoryCount=0, userCount=0, codeCount=0, discussionCount=0, wikiCount=0)
    return out


def resolve_owner(kinds):
    """Query.repositoryOwner and Query.organization: an account by login."""
    def resolve(ctx, parent, args):
        row = account_by_login(ctx.app.store, args["login"])
        if row is None or row["kind"] not in kinds:
            raise GraphQLError("Could not resolve to a %s with the login of '%s'." % (
                "RepositoryOwner" if len(kinds) > 1 else "Organization", args["login"]), kind="NOT_FOUND")
        ctx.req.check("read_account", Resource.account(row))
        return gql_user(ctx.app, row)
    return resolve


def resolve_repository(ctx, parent, args):
    owner = args["owner"] if "owner" in args else parent["login"]
    try:
        row = find_repo(ctx.req, owner, args["name"])
    except HTTPError as error:
        if error.status != 404:
            raise
        raise GraphQLError("Could not resolve to a Repository with the name '%s/%s'." % (owner, args["name"]),
                           kind="NOT_FOUND")
    return gql_repository(ctx, row)


def resolve_node(ctx, parent, args):
    try:
        kind, _, ident = base64.b64decode(args["id"]).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        kind, ident = "", ""
    if kind == "User" and ident.isdigit():
        row = account_by_id(ctx.app.store, int(ident))
        if row is not None:
            ctx.req.check("read_account", Resource.account(row))
            return gql_user(ctx.app, row)
    if kind == "Repository" and ident.isdigit():
        row = repo_by_id(ctx.app.store, int(ident))
        if row is not None and ctx.req.can("read_code", Resource.repo(row)):
            return gql_repository(ctx, row)
    if kind in ("Issue", "PullRequest") and ident.isdigit():
        issue = ctx.app.store.one("SELECT * FROM issues WHERE id = ? AND is_pull = ?", int(ident), int(kind != "Issue"))
        row = repo_by_id(ctx.app.store, issue["repo_id"]) if issue else None
        if row is not None and ctx.req.can("read_code", Resource.repo(row)):
            return gql_pull(ctx, row, issue) if issue["is_pull"] else gql_issue(ctx, row, issue)
    raise GraphQLError("Could not resolve to a node with the global id of '%s'" % args["id"], kind="NOT_FOUND")


# -- User, Organization and RepositoryOwner -------------------------------------------------------------

def gql_user(app, row):
    u = user_json(app, row, detail=True)
    return {"__typename": "Organization" if row["kind"] == "org" else "User", "id": u["node_id"],
            "databaseId": u["id"], "login": u["login"], "name": u["name"], "email": u["email"] or "",
            "url": u["html_url"], "avatarUrl": u["avatar_url"], "isSiteAdmin": u["site_admin"],
            "createdAt": u["created_at"], "company": u["company"], "resourcePath": "/" + u["login"]}


def resolve_user_organizations(ctx, parent, args):
    """The organizations a user belongs to: all of them for the user, the shared ones for anyone else."""
    store, viewer = ctx.app.store, ctx.req.principal.user
    user = account_by_login(store, parent["login"])
    rows = store.all("SELECT a.* FROM accounts a JOIN org_members m ON m.org_id = a.id WHERE m.user_id = ?"
                     " ORDER BY a.login", user["id"])
    if viewer is None or viewer["id"] != user["id"]:
        mine = {r["org_id"] for r in store.all("SELECT org_id FROM org_members WHERE user_id = ?",
                                               viewer["id"] if viewer else -1)}
        rows = [r for r in rows if r["id"] in mine]
    return paginate_connection(rows, args, lambda r: gql_user(ctx.app, r))


def visible_teams(ctx, org_login, rows):
    return [t for t in rows if ctx.req.can("read_team", Resource.team(t, org_login))]


def gql_team(ctx, org_login, row):
    return {"__typename": "Team", "id": node_id("Team", row["id"]), "databaseId": row["id"], "name": row["name"],
            "slug": row["slug"], "description": row["description"] or "", "privacy": row["privacy"].upper(),
            "_org": org_login}


def resolve_org_teams(ctx, parent, args):
    """Organization.teams: those the viewer may see, of the members ``userLogins`` names when it does."""
    org = account_by_login(ctx.app.store, parent["login"])
    rows = ctx.app.store.all("SELECT * FROM teams WHERE org_id = ? ORDER BY slug", org["id"])
    if args.get("userLogins"):
        logins = [login.lower() for login in args["userLogins"]]
        rows = [t for t in rows if ctx.app.store.one(
            "SELECT 1 FROM team_members m JOIN accounts a ON a.id = m.user_id WHERE m.team_id = ? AND"
            " lower(a.login) IN (%s)" % ",".join("?" * len(logins)), t["id"], *logins)]
    return paginate_connection(visible_teams(ctx, org["login"], rows), args,
                               lambda t: gql_team(ctx, org["login"], t))


def resolve_org_team(ctx, parent, args):
    org = account_by_login(ctx.app.store, parent["login"])
    rows = visible_teams(ctx, org["login"], ctx.app.store.all("SELECT * FROM teams WHERE org_id = ? AND slug = ?",
                                                              org["id"], args["slug"]))
    return gql_team(ctx, org["login"], rows[0]) if rows else None


def resolve_team_members(ctx, parent, args):
    rows = ctx.app.store.all("SELECT a.* FROM accounts a JOIN team_members m ON m.user_id = a.id WHERE m.team_id = ?"
                             " ORDER BY a.login", parent["databaseId"])
    return paginate_connection(rows, args, lambda r: gql_user(ctx.app, r))


def resolve_owner_repositories(ctx, parent, args):
    """RepositoryOwner.repositories: what the viewer may see among the owner's repositories (and, for
    the viewer's own list, those reached as collaborator or org member when asked for)."""
    store, viewer = ctx.app.store, ctx.req.principal.user
    owner = account_by_login(store, parent["login"])
    affiliations = set(args.get("ownerAffiliations") or args.get("affiliations") or ["OWNER"])
    if viewer is not None and owner["id"] == viewer["id"] and affiliations - {"OWNER"}:
        rows = [r for r in repos_reachable_by(store, viewer) if r["owner_id"] == owner["id"] and "OWNER" in affiliations
                or r["owner_id"] != owner["id"] and (r["owner_kind"] == "org") == ("ORGANIZATION_MEMBER" in affiliations)
                or r["owner_id"] != owner["id"] and r["owner_kind"] != "org" and "COLLABORATOR" in affiliations]
    else:
        rows = store.all(REPO_SELECT + " WHERE r.owner_id = ?", owner["id"])
    rows = [r for r in rows if ctx.req.can("read_code", Resource.repo(r))]
    if args.get("privacy") or args.get("visibility"):
        wanted = (args.get("privacy") or args.get("visibility")) == "PRIVATE"
        rows = [r for r in rows if bool(r["private"]) == wanted]
    if args.get("isArchived") is not None:
        rows = [r for r in rows if bool(r["archived"]) == args["isArchived"]]
    if args.get("isFork"):
        rows = []                                          # there are no forks here
    order = args.get("orderBy") or {"field": "NAME", "direction": "ASC"}
    key = {"CREATED_AT": "created_at", "UPDATED_AT": "updated_at", "PUSHED_AT": "pushed_at"}.get(order["field"])
    rows.sort(key=lambda r: (r[key] or "") if key else r["name"].lower(), reverse=order["direction"] == "DESC")
    out = paginate_connection(rows, args, lambda r: gql_repository(ctx, r))
    out["totalDiskUsage"] = 0
    return out


# -- Repository -----------------------------------------------------------------------------------------

def gql_repository(ctx, row):
    r = repo_json(ctx.app, row)
    level = repo_permission(ctx.app.store, ctx.req.principal.user, row)[0]
    owner = account_by_id(ctx.app.store, row["owner_id"])
    return {"__typename": "Repository", "id": r["node_id"], "databaseId": r["id"], "name": r["name"],
            "nameWithOwner": r["full_name"], "owner": gql_user(ctx.app, owner), "description": r["description"],
            "url": r["html_url"], "isPrivate": r["private"], "visibility": r["visibility"].upper(),
            "isArchived": r["archived"], "sshUrl": r["ssh_url"], "homepageUrl": r["homepage"],
            "createdAt": r["created_at"], "pushedAt": r["pushed_at"],
            "defaultBranchRef": gql_ref(ctx, row, r["default_branch"]),
            "viewerPermission": level.upper() if level != "none" else None, "hasIssuesEnabled": r["has_issues"],
            "isFork": row["parent_id"] is not None, "hasWikiEnabled": False, "hasProjectsEnabled": False,
            "hasDiscussionsEnabled": False, "isTemplate": False, "isMirror": False, "isEmpty": r["pushed_at"] is None,
            "isInOrganization": owner["kind"] == "org", "stargazerCount": 0, "forkCount": 0,
            "mergeCommitAllowed": True, "squashMergeAllowed": True, "rebaseMergeAllowed": True,
            "autoMergeAllowed": False, "deleteBranchOnMerge": False,
            "hasVulnerabilityAlertsEnabled": False,
            "_row": row}


def resolve_repo_parent(ctx, parent, args):
    """A fork's parent, when the viewer can see it."""
    row = repo_by_id(ctx.app.store, parent["_row"]["parent_id"]) if parent["_row"]["parent_id"] else None
    return gql_repository(ctx, row) if row is not None and ctx.req.can("read_code", Resource.repo(row)) else None


def resolve_assignable_users(ctx, parent, args):
    """People granted access to the repository (those REST lets be assigned)."""
    repo_row = parent["_row"]
    rows = [u for u in people_with_access(ctx.app.store, repo_row)
            if repo_permission(ctx.app.store, u, repo_row)[1] not in ("public repository",)]
    if args.get("query"):
        rows = [u for u in rows if args["query"].lower() in (u["login"] + " " + (u["name"] or "")).lower()]
    return paginate_connection(rows, args, lambda u: gql_user(ctx.app, u))


def resolve_repo_labels(ctx, parent, args):
    rows = ctx.app.store.all("SELECT * FROM labels WHERE repo_id = ?", parent["_row"]["id"])
    if args.get("query"):
        rows = [r for r in rows if args["query"].lower() in r["name"].lower()]
    order = args.get("orderBy") or {"field": "NAME", "direction": "ASC"}
    rows.sort(key=lambda r: r["name"].lower() if order["field"] == "NAME" else r["id"],
              reverse=order["direction"] == "DESC")
    return paginate_connection(rows, args, lambda r: gql_label(ctx.app, r))


def resolve_issues(ctx, parent, args):
    """Repository.issues, with GitHub's filters (states, labels, filterBy, orderBy)."""
    repo_row = parent["_row"]
    filters = args.get("filterBy") or {}
    states = args.get("states") or filters.get("states") or ["OPEN", "CLOSED"]
    rows = [r for r in ctx.app.store.all("SELECT * FROM issues WHERE repo_id = ? AND is_pull = 0", repo_row["id"])
            if r["state"].upper() in states]
    wanted_labels = set(args.get("labels") or filters.get("labels") or [])
    by_login = lambda login: (account_by_login(ctx.app.store, login) or {"id": -1})["id"]  # noqa: E731
    if filters.get("createdBy"):
        rows = [r for r in rows if r["user_id"] == by_login(filters["createdBy"])]
    if filters.get("assignee"):
        assignee = by_login(filters["assignee"])
        rows = [r for r in rows if ctx.app.store.one("SELECT 1 FROM issue_assignees WHERE issue_id = ? AND user_id = ?",
                                                      r["id"], assignee)]
    if filters.get("mentioned"):
        rows = [r for r in rows if "@" + filters["mentioned"] in (r["body"] or "")]
    nodes = [gql_issue(ctx, repo_row, r) for r in rows]
    if wanted_labels:
        nodes = [n for n in nodes if wanted_labels <= {l["name"] for l in n["_labels"]}]
    order = args.get("orderBy") or {"field": "CREATED_AT", "direction": "DESC"}
    key = {"CREATED_AT": "createdAt", "UPDATED_AT": "updatedAt"}.get(order["field"], "createdAt")
    nodes.sort(key=lambda n: (n[key], n["number"]), reverse=order["direction"] == "DESC")
    return paginate_connection(nodes, args, lambda n: n)


def resolve_issue(ctx, parent, args):
    row = ctx.app.store.one("SELECT * FROM issues WHERE repo_id = ? AND number = ?", parent["_row"]["id"],
                            args["number"])
    if row is None or row["is_pull"]:
        raise GraphQLError("Could not resolve to an Issue with the number of %d." % args["number"], kind="NOT_FOUND")
    return gql_issue(ctx, parent["_row"], row)


def resolve_pull_requests(ctx, parent, args):
    """Repository.pullRequests, filtered by states, base and head branch, and labels."""
    repo_row = parent["_row"]
    states = set(args.get("states") or ["OPEN", "CLOSED", "MERGED"])
    nodes = [gql_pull(ctx, repo_row, r) for r in ctx.app.store.all(
        "SELECT * FROM issues WHERE repo_id = ? AND is_pull = 1", repo_row["id"])]
    nodes = [n for n in nodes if n["state"] in states and (not args.get("baseRefName") or n["baseRefName"] ==
                                                             args["baseRefName"]) and (
        not args.get("headRefName") or n["headRefName"] == args["headRefName"])]
    order = args.get("orderBy") or {"field": "CREATED_AT", "direction": "DESC"}
    key = "updatedAt" if order["field"] == "UPDATED_AT" else "createdAt"
    nodes.sort(key=lambda n: (n[key], n["number"]), reverse=order["direction"] == "DESC")
    return paginate_connection(nodes, args, lambda n: n)


def resolve_pull(ctx, parent, args):
    row = ctx.app.store.one("SELECT * FROM issues WHERE repo_id = ? AND number = ? AND is_pull = 1",
                            parent["_row"]["id"], args["number"])
    if row is None:
        raise GraphQLError("Could not resolve to a PullRequest with the number of %d." % args["number"],
                           kind="NOT_FOUND")
    return gql_pull(ctx, parent["_row"], row)


def resolve_issue_or_pull(ctx, parent, args):
    row = ctx.app.store.one("SELECT * FROM issues WHERE repo_id = ? AND number = ?", parent["_row"]["id"],
                            args["number"])
    if row is None:
        raise GraphQLError("Could not resolve to an issue or pull request with the number of %d." % args["number"],
                           kind="NOT_FOUND")
    return gql_pull(ctx, parent["_row"], row) if row["is_pull"] else gql_issue(ctx, parent["_row"], row)


def resolve_releases(ctx, parent, args):
    """Repository.releases: what visible_releases shows REST callers (drafts only to those who may push)."""
    rows = visible_releases(ctx.req, parent["_row"])
    latest = next((r["id"] for r in rows if not r["draft"] and not r["prerelease"]), None)
    order = args.get("orderBy") or {"field": "CREATED_AT", "direction": "DESC"}
    rows.sort(key=lambda r: (r["created_at"], r["id"]) if order["field"] == "CREATED_AT" else r["tag_name"],
              reverse=order["direction"] == "DESC")

    return paginate_connection(rows, args, lambda r: gql_release(ctx, parent["_row"], r, r["id"] == latest))


def resolve_latest_release(ctx, parent, args):
    """What GET /releases/latest answers: the newest release that is neither a draft nor a prerelease."""
    rows = [r for r in visible_releases(ctx.req, parent["_row"]) if not r["draft"] and not r["prerelease"]]
    return gql_release(ctx, parent["_row"], rows[0], True) if rows else None


# -- Ref ------------------------------------------------------------------------------------------------

def gql_ref(ctx, repo_row, branch, prefix="refs/heads/"):
    """A ref as a Ref: a branch (with its protection rule when it has one), or a tag with its prefix."""
    rule = branch_protection(ctx.app.store, repo_row["id"], branch) if prefix == "refs/heads/" else None
    protection = None
    if rule is not None:
        checks = json.loads(rule["required_checks"]) if rule["required_checks"] else []
        protection = {"__typename": "BranchProtectionRule", "id": node_id("BranchProtectionRule", "%d:%s" % (
            repo_row["id"], branch)), "pattern": branch, "allowsDeletions": bool(rule["allow_deletions"]),
            "allowsForcePushes": bool(rule["allow_force_pushes"]), "dismissesStaleReviews": bool(rule["dismiss_stale"]),
            "isAdminEnforced": bool(rule["enforce_admins"]), "requiredApprovingReviewCount": rule["required_approvals"],
            "requiresApprovingReviews": rule["required_approvals"] is not None, "requiresStatusChecks": bool(checks),
            "requiresStrictStatusChecks": False, "requiredStatusCheckContexts": checks}
    return {"__typename": "Ref", "id": node_id("Ref", "%d:%s%s" % (repo_row["id"], prefix, branch)), "name": branch,
            "prefix": prefix, "branchProtectionRule": protection, "_repo": repo_row}


def resolve_compare(ctx, parent, args):
    """Ref.compare(headRef:): how far a branch of the same repository is ahead of and behind this one."""
    with open_repo(ctx.app, parent["_repo"]["id"]) as git:
        base_sha, head_sha = branch_sha(git, parent["name"]), branch_sha(git, args["headRef"].rpartition(":")[2])
        if base_sha is None or head_sha is None:
            return None
        common = merge_base(git, base_sha, head_sha) or ""
        ahead, behind = len(commits_between(git, common, head_sha)), len(commits_between(git, common, base_sha))
    status = "IDENTICAL" if not ahead and not behind else "AHEAD" if not behind else "BEHIND" if not ahead else \
        "DIVERGED"
    return {"__typename": "Comparison", "id": node_id("Comparison", "%s...%s" % (base_sha, head_sha)),
            "aheadBy": ahead, "behindBy": behind, "status": status}


# -- Issue and Label ------------------------------------------------------------------------------------

def gql_issue(ctx, repo_row, row):
    note_untrusted(ctx.req, repo_row, [("issue #%d" % row["number"], row["user_id"])])
    i = issue_json(ctx.app, repo_row, row)
    author = account_by_id(ctx.app.store, row["user_id"]) if row["user_id"] else None
    m = i["milestone"]
    return {"__typename": "Issue", "id": i["node_id"], "databaseId": i["id"], "number": i["number"], "title": i["title"],
            "url": i["html_url"], "state": i["state"].upper(), "closed": i["state"] == "closed",
            "stateReason": i["state_reason"].upper() if i["state_reason"] else None, "body": i["body"] or "",
            "createdAt": i["created_at"], "updatedAt": i["updated_at"], "closedAt": i["closed_at"],
            "author": gql_user(ctx.app, author) if author else None, "_labels": i["labels"], "_row": row,
            "_repo": repo_row, "reactionGroups": gql_reaction_groups(ctx.app, "issue_id", row["id"]), "issueType": None,
            **gql_lock(row),
            "authorAssociation": i["author_association"],
            "milestone": {"__typename": "Milestone", "id": m["node_id"], "number": m["number"], "title": m["title"],
                          "description": m["description"], "dueOn": m["due_on"], "state": m["state"].upper(),
                          "url": m["html_url"]} if m else None}


GRAPHQL_REACTIONS = {"+1": "THUMBS_UP", "-1": "THUMBS_DOWN", "laugh": "LAUGH", "hooray": "HOORAY",
                     "confused": "CONFUSED", "heart": "HEART", "rocket": "ROCKET", "eyes": "EYES"}


def gql_reaction_groups(app, column, subject_id):
    """reactionGroups: how many of each emoji (every kind, as GitHub lists them, counted or not)."""
    counts = dict(app.store.all("SELECT content, COUNT(*) FROM reactions WHERE %s = ? GROUP BY content" % column,
                                subject_id))
    return [{"__typename": "ReactionGroup", "content": GRAPHQL_REACTIONS[name],
             "users": {"__typename": "ReactingUserConnection", "totalCount": counts.get(name, 0)}} for name in REACTIONS]


def gql_lock(row):
    """Lockable's fields: REST's lock_reason ("too heated") as GraphQL's LockReason (TOO_HEATED)."""
    reason = row["lock_reason"]
    return {"locked": bool(row["locked"]),
            "activeLockReason": reason.upper().replace(" ", "_").replace("-", "_") if row["locked"] and reason else None}


def resolve_issue_assignees(ctx, parent, args):
    rows = ctx.app.store.all("SELECT a.* FROM accounts a JOIN issue_assignees ia ON ia.user_id = a.id"
                             " WHERE ia.issue_id = ? ORDER BY a.login", parent["_row"]["id"])
    return paginate_connection(rows, args, lambda r: gql_user(ctx.app, r))


def resolve_comments(ctx, parent, args):
    repo_row, issue = parent["_repo"], parent["_row"]
    rows = ctx.app.store.all("SELECT * FROM comments WHERE issue_id = ? ORDER BY id", issue["id"])
    note_untrusted(ctx.req, repo_row, [("a comment on #%d" % issue["number"], row["user_id"]) for row in rows])

    def node(row):
        c = comment_json(ctx.app, repo_row, issue["number"], row)
        author = account_by_id(ctx.app.store, row["user_id"]) if row["user_id"] else None
        return {"__typename": "IssueComment", "id": c["node_id"], "url": c["html_url"], "body": c["body"],
                "createdAt": c["created_at"], "author": gql_user(ctx.app, author) if author else None,
                "authorAssociation": c["author_association"], "includesCreatedEdit": False, "isMinimized": False,
                "minimizedReason": None, "reactionGroups": gql_reaction_groups(ctx.app, "comment_id", row["id"]),
                "viewerDidAuthor": ctx.req.principal.user is not None and row["user_id"] == ctx.req.principal.user["id"]}
    return paginate_connection(rows, args, node)


def visible_sub_issues(ctx, issue):
    """(repository, issue) of each sub-issue the viewer may read, in their order."""
    out = []
    for child in children(ctx.app.store, issue["id"]):
        child_repo = repo_by_id(ctx.app.store, child["repo_id"])
        if ctx.req.can("read_code", Resource.repo(child_repo)):
            out.append((child_repo, child))
    return out


def resolve_sub_issues(ctx, parent, args):
    return paginate_connection(visible_sub_issues(ctx, parent["_row"]), args, lambda pair: gql_issue(ctx, *pair))


def resolve_sub_issues_summary(ctx, parent, args):
    found = visible_sub_issues(ctx, parent["_row"])
    done = sum(1 for _, child in found if child["state"] == "closed")
    return {"total": len(found), "completed": done, "percentCompleted": done * 100 // len(found) if found else 0}


def resolve_issue_parent(ctx, parent, args):
    row = ctx.app.store.one("SELECT i.* FROM sub_issues s JOIN issues i ON i.id = s.parent_id WHERE s.child_id = ?",
                            parent["_row"]["id"])
    repo_row = row and repo_by_id(ctx.app.store, row["repo_id"])
    return gql_issue(ctx, repo_row, row) if row and ctx.req.can("read_code", Resource.repo(repo_row)) else None


def resolve_issue_labels(ctx, parent, args):
    return paginate_connection(parent["_labels"], args, lambda l: {"__typename": "Label", "id": l["node_id"], "name": l["name"],
                                                          "description": l["description"], "color": l["color"]})


def gql_label(app, row):
    return {"__typename": "Label", "id": node_id("Label", row["id"]), "name": row["name"],
            "description": row["description"], "color": row["color"]}


# -- Release --------------------------------------------------------------------------------------------

def gql_release(ctx, repo_row, row, is_latest):
    rel = release_json(ctx.app, repo_row, row)
    return {"__typename": "Release", "id": rel["node_id"], "name": rel["name"], "tagName": rel["tag_name"],
            "isDraft": rel["draft"], "isPrerelease": rel["prerelease"], "isLatest": is_latest,
            "createdAt": rel["created_at"], "publishedAt": rel["published_at"], "url": rel["html_url"],
            "description": rel["body"], "_repo": repo_row}


# -- PullRequest ----------------------------------------------------------------------------------------

def gql_pull(ctx, repo_row, row):
    note_untrusted(ctx.req, repo_row, [("pull request #%d" % row["number"], row["user_id"])])
    pull = ctx.app.store.one("SELECT * FROM pulls WHERE issue_id = ?", row["id"])
    state = "MERGED" if pull["merged_at"] else row["state"].upper()
    head_repo = head_repository(ctx.app.store, repo_row, pull)
    owner = account_by_id(ctx.app.store, head_repo["owner_id"]) if head_repo else None
    author = account_by_id(ctx.app.store, row["user_id"]) if row["user_id"] else None
    return {"__typename": "PullRequest", "id": node_id("PullRequest", row["id"]), "databaseId": row["id"],
            "number": row["number"],
            "title": row["title"], "state": state, "closed": row["state"] == "closed",
            "url": "%s/%s/pull/%d" % (ctx.app.url, full_name(repo_row), row["number"]), "body": row["body"] or "",
            "createdAt": row["created_at"], "updatedAt": row["updated_at"], "headRefName": pull["head_ref"],
            "baseRefName": pull["base_ref"], "isDraft": bool(pull["draft"]),
            "isCrossRepository": pull["head_repo_id"] != repo_row["id"],
            "merged": pull["merged_at"] is not None, "mergedAt": pull["merged_at"],
            "headRepositoryOwner": gql_user(ctx.app, owner) if owner else None,
            "author": gql_user(ctx.app, author) if author else None,
            "_row": row, "_repo": repo_row, "autoMergeRequest": None, "maintainerCanModify": False,
            "reactionGroups": gql_reaction_groups(ctx.app, "issue_id", row["id"]),
            "headRepository": gql_repository(ctx, head_repo) if head_repo else None,
            "milestone": gql_issue(ctx, repo_row, row)["milestone"], **gql_lock(row),
            "closedAt": row["closed_at"], "authorAssociation": author_association(ctx.app.store, repo_row, row["user_id"]),
            "mergedBy": gql_user(ctx.app, account_by_id(ctx.app.store, pull["merged_by"])) if pull["merged_by"] else None,
            "_labels": issue_json(ctx.app, repo_row, row)["labels"]}


def pull_state(ctx, parent):
    """The live PullState behind a PullRequest object, computed once per object."""
    if "_state" not in parent:
        row = parent["_row"]
        parent["_state"] = PullState(ctx.app, parent["_repo"], row, ctx.app.store.one(
            "SELECT * FROM pulls WHERE issue_id = ?", row["id"]))
    return parent["_state"]


def resolve_pull_mergeable(ctx, parent, args):
    mergeable, state = mergeability(ctx.app, pull_state(ctx, parent))
    return {True: "MERGEABLE", False: "CONFLICTING"}.get(mergeable, "UNKNOWN")


def resolve_merge_state(ctx, parent, args):
    return mergeability(ctx.app, pull_state(ctx, parent))[1].upper()


def resolve_review_requests(ctx, parent, args):
    rows = ctx.app.store.all("SELECT a.* FROM accounts a JOIN review_requests r ON r.user_id = a.id"
                             " WHERE r.issue_id = ? ORDER BY a.login", parent["_row"]["id"])
    return paginate_connection(rows, args, lambda u: {"__typename": "ReviewRequest", "requestedReviewer": gql_user(ctx.app, u)})


def resolve_reviews(ctx, parent, args, latest_only=False):
    """PullRequest.reviews (of an ``author``, in ``states``), or latestReviews: each author's latest
    review. A pending review only its author sees."""
    repo_row, issue = parent["_repo"], parent["_row"]
    author = account_by_login(ctx.app.store, args["author"]) if args.get("author") else None
    if args.get("author") and author is None:
        return paginate_connection([], args, None)
    rows = visible_reviews(ctx.app.store, issue["id"], ctx.req.principal.user_id, author and author["id"])
    if args.get("states"):
        rows = [row for row in rows if row["state"] in args["states"]]
    if latest_only:
        rows = list({row["user_id"]: row for row in rows}.values())
    return paginate_connection(rows, args, lambda row: gql_review(ctx, repo_row, issue, row))


def gql_review(ctx, repo_row, issue, row):
    r = review_json(ctx.app, repo_row, issue, row)
    author = account_by_id(ctx.app.store, row["user_id"]) if row["user_id"] else None
    return {"__typename": "PullRequestReview", "id": r["node_id"], "state": r["state"], "body": r["body"],
            "url": r["html_url"], "submittedAt": r.get("submitted_at"), "authorAssociation": r["author_association"],
            "author": gql_user(ctx.app, author) if author else None, "reactionGroups": [],
            "commit": {"__typename": "Commit", "id": node_id("Commit", row["commit_id"]), "oid": row["commit_id"],
                       "_repo": repo_row} if row["commit_id"] else None}


def resolve_review_decision(ctx, parent, args):
    """GitHub's reviewDecision: null unless the base branch asks for approving reviews; then whether the
    latest review of each reviewer who could push adds up to what it asks."""
    repo_row = parent["_repo"]
    rule = branch_protection(ctx.app.store, repo_row["id"], parent["baseRefName"])
    if rule is None or rule["required_approvals"] is None:
        return None
    head_sha = pull_state(ctx, parent).head_sha
    states = [review["state"] for review in latest_reviews(ctx.app.store, parent["_row"]["id"], repo_row).values()
              if review["state"] != "APPROVED" or not rule["dismiss_stale"] or review["commit_id"] == head_sha]
    if "CHANGES_REQUESTED" in states:
        return "CHANGES_REQUESTED"
    return "APPROVED" if states.count("APPROVED") >= max(rule["required_approvals"], 1) else "REVIEW_REQUIRED"


REQUIRED_CHECK_ARGS = {"pullRequestId": "ID", "pullRequestNumber": "Int"}


def resolve_check_required(ctx, parent, args):
    """Whether the pull request's base branch requires this check or status to pass before a merge."""
    repo_row = parent["_repo"]
    if args.get("pullRequestId"):
        issue = node_row(ctx, args["pullRequestId"], "PullRequest")
    else:
        issue = ctx.app.store.one("SELECT * FROM issues WHERE repo_id = ? AND number = ? AND is_pull = 1",
                                  repo_row["id"], args.get("pullRequestNumber") or 0)
    pull = ctx.app.store.one("SELECT * FROM pulls WHERE issue_id = ?", issue["id"]) if issue else None
    rule = branch_protection(ctx.app.store, repo_row["id"], pull["base_ref"]) if pull else None
    required = json.loads(rule["required_checks"]) if rule is not None and rule["required_checks"] else []
    return (parent.get("context") or parent.get("name")) in required


def resolve_status_rollup(ctx, parent, args):
    """A commit's statuses (the latest per context) and check runs, as one rollup."""
    repo_row, sha = parent.get("_repo"), parent["oid"]
    if repo_row is None:
        return None
    latest = {}
    for row in ctx.app.store.all("SELECT * FROM statuses WHERE repo_id = ? AND sha = ? ORDER BY id", repo_row["id"], sha):
        latest[row["context"]] = row
    nodes = [{"__typename": "StatusContext", "context": s["context"], "state": s["state"].upper(),
              "targetUrl": s["target_url"], "createdAt": s["created_at"], "description": s["description"],
              "_repo": repo_row} for s in latest.values()]
    for run in ctx.app.store.all("SELECT * FROM check_runs WHERE repo_id = ? AND head_sha = ? ORDER BY id",
                                 repo_row["id"], sha):
        nodes.append({"__typename": "CheckRun", "name": run["name"], "status": run["status"].upper(),
                      "conclusion": run["conclusion"].upper() if run["conclusion"] else None,
                      "startedAt": run["started_at"], "completedAt": run["completed_at"],
                      "detailsUrl": run["details_url"], "checkSuite": {"__typename": "CheckSuite", "workflowRun": None},
                      "_repo": repo_row})
    return {"__typename": "StatusCheckRollup", "_nodes": nodes}


PATCH_STATUSES = {"added": "ADDED", "removed": "DELETED", "modified": "MODIFIED", "renamed": "RENAMED"}


def resolve_pull_files(ctx, parent, args):
    return paginate_connection(pull_state(ctx, parent).files, args, lambda f: {
        "__typename": "PullRequestChangedFile", "path": f[0], "changeType": PATCH_STATUSES.get(f[1], "CHANGED"),
        "additions": f[2], "deletions": f[3]})
