"""REST: sub-issues, github.com's tree of issues.

A parent lists its sub-issues in the order its triagers give them. A sub-issue has one parent, in a
repository of the same owner; a pull request is never one; the tree has no cycles, at most
MAX_SUB_ISSUES children to a parent and MAX_DEPTH levels. Changing the tree is triage on the parent's
repository; the sub-issue must be one the caller can read.
"""

from agentgit.errors import HTTPError, invalid
from agentgit.accounts import repo_by_id
from agentgit.policy import Resource
from agentgit.routing import route
from agentgit.issues import find_issue, issue_json

MAX_SUB_ISSUES = 100
MAX_DEPTH = 8


def children(store, parent_id):
    return store.all("SELECT i.* FROM sub_issues s JOIN issues i ON i.id = s.child_id WHERE s.parent_id = ?"
                     " ORDER BY s.position, s.child_id", parent_id)


@route("GET", "/api/v3/repos/{owner}/{repo}/issues/{number:int}/sub_issues")
def list_sub_issues(req, owner, repo, number):
    _, issue = find_issue(req, owner, repo, number)
    out = []
    for child in children(req.app.store, issue["id"]):
        child_repo = repo_by_id(req.app.store, child["repo_id"])
        if req.can("read_code", Resource.repo(child_repo)):
            out.append(issue_json(req.app, child_repo, child))
    return req.paginate(out)


@route("GET", "/api/v3/repos/{owner}/{repo}/issues/{number:int}/parent")
def get_parent(req, owner, repo, number):
    _, issue = find_issue(req, owner, repo, number)
    parent = req.app.store.one("SELECT i.* FROM sub_issues s JOIN issues i ON i.id = s.parent_id"
                               " WHERE s.child_id = ?", issue["id"])
    parent_repo = parent and repo_by_id(req.app.store, parent["repo_id"])
    if parent is None or not req.can("read_code", Resource.repo(parent_repo)):
        raise HTTPError(404, "Not Found")
    return issue_json(req.app, parent_repo, parent)


def sub_issue_of_request(req, parent_repo, body):
    """The issue ``sub_issue_id`` names (its id, as GitHub takes it, not its number), if the caller may
    read it; 422 for one that cannot be a sub-issue of this repository's issues."""
    sub_id = req.field(body, "sub_issue_id", int, "SubIssue", required=True)
    child = req.app.store.one("SELECT * FROM issues WHERE id = ?", sub_id)
    child_repo = child and repo_by_id(req.app.store, child["repo_id"])
    if child is None or not req.can("read_code", Resource.repo(child_repo)):
        raise invalid("SubIssue", "sub_issue_id", "invalid", "There is no issue with id %d that you can see" % sub_id)
    if child["is_pull"]:
        raise invalid("SubIssue", "sub_issue_id", "custom", "A pull request cannot be a sub-issue")
    if child_repo["owner_id"] != parent_repo["owner_id"]:
        raise invalid("SubIssue", "sub_issue_id", "custom",
                      "The sub-issue must belong to the same repository owner as the parent issue")
    return child


@route("POST", "/api/v3/repos/{owner}/{repo}/issues/{number:int}/sub_issues")
def add_sub_issue(req, owner, repo, number):
    row, parent = find_issue(req, owner, repo, number, "triage_issue")
    body = req.json()
    child = sub_issue_of_request(req, row, body)
    replace = req.field(body, "replace_parent", bool, "SubIssue", default=False)
    with req.transaction() as db:
        ancestors, node = [], parent["id"]
        while node is not None:
            ancestors.append(node)
            up = db.execute("SELECT parent_id FROM sub_issues WHERE child_id = ?", (node,)).fetchone()
            node = up and up[0]
        if child["id"] in ancestors:
            raise invalid("SubIssue", "sub_issue_id", "custom", "An issue cannot be a sub-issue of itself or of its own"
                                                                " sub-issues")
        depth = 1 + deepest(db, child["id"])
        if len(ancestors) + depth > MAX_DEPTH:
            raise invalid("SubIssue", "sub_issue_id", "custom", "Sub-issues nest at most %d levels deep" % MAX_DEPTH)
        if db.execute("SELECT COUNT(*) FROM sub_issues WHERE parent_id = ?", (parent["id"],)).fetchone()[0] >= \
                MAX_SUB_ISSUES:
            raise invalid("SubIssue", "sub_issue_id", "custom", "An issue has at most %d sub-issues" % MAX_SUB_ISSUES)
        current = db.execute("SELECT parent_id FROM sub_issues WHERE child_id = ?", (child["id"],)).fetchone()
        if current is not None and not (replace or current[0] == parent["id"]):
            raise invalid("SubIssue", "sub_issue_id", "custom", "That issue already has a parent; replace_parent"
                                                                " moves it")
        last = db.execute("SELECT COALESCE(MAX(position), 0) FROM sub_issues WHERE parent_id = ?",
                          (parent["id"],)).fetchone()[0]
        db.execute("INSERT INTO sub_issues (parent_id, child_id, position) VALUES (?, ?, ?) ON CONFLICT (child_id)"
                   " DO UPDATE SET parent_id = excluded.parent_id, position = excluded.position",
                   (parent["id"], child["id"], last + 1))
        req.effect("issue %d is a sub-issue of #%d" % (child["id"], parent["number"]))
    return 201, issue_json(req.app, row, parent)


def deepest(db, issue_id):
    """How many levels of sub-issues hang below ``issue_id`` (0: none)."""
    below = [r[0] for r in db.execute("SELECT child_id FROM sub_issues WHERE parent_id = ?", (issue_id,))]
    return 1 + max(deepest(db, child) for child in below) if below else 0


@route("DELETE", "/api/v3/repos/{owner}/{repo}/issues/{number:int}/sub_issue")
def remove_sub_issue(req, owner, repo, number):
    row, parent = find_issue(req, owner, repo, number, "triage_issue")
    child = sub_issue_of_request(req, row, req.json())
    with req.transaction() as db:
        if not db.execute("DELETE FROM sub_issues WHERE parent_id = ? AND child_id = ?",
                          (parent["id"], child["id"])).rowcount:
            raise invalid("SubIssue", "sub_issue_id", "custom", "That issue is not a sub-issue of #%d" % parent["number"])
        req.effect("issue %d is no longer a sub-issue of #%d" % (child["id"], parent["number"]))
    return issue_json(req.app, row, parent)


@route("PATCH", "/api/v3/repos/{owner}/{repo}/issues/{number:int}/sub_issues/priority")
def reprioritize_sub_issue(req, owner, repo, number):
    """Moves a sub-issue to just after ``after_id`` or just before ``before_id`` (one of them)."""
    row, parent = find_issue(req, owner, repo, number, "triage_issue")
    body = req.json()
    child = sub_issue_of_request(req, row, body)
    after = req.field(body, "after_id", int, "SubIssue")
    before = req.field(body, "before_id", int, "SubIssue")
    if (after is None) == (before is None):
        raise invalid("SubIssue", "after_id", "custom", "Give after_id or before_id, one of them")
    with req.transaction() as db:
        order = [r[0] for r in db.execute("SELECT child_id FROM sub_issues WHERE parent_id = ? ORDER BY position,"
                                          " child_id", (parent["id"],))]
        anchor = after if after is not None else before
        if child["id"] not in order or anchor not in order or anchor == child["id"]:
            raise invalid("SubIssue", "sub_issue_id", "custom", "Both issues must be other sub-issues of #%d" %
                          parent["number"])
        order.remove(child["id"])
        order.insert(order.index(anchor) + (after is not None), child["id"])
        for position, child_id in enumerate(order, 1):
            db.execute("UPDATE sub_issues SET position = ? WHERE child_id = ?", (position, child_id))
        req.effect("sub-issues of #%d reordered: issue %d %s issue %d" % (
            parent["number"], child["id"], "after" if after is not None else "before", anchor))
    return issue_json(req.app, row, parent)
