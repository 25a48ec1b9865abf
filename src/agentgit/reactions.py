"""REST: reactions (an account's emoji) on issues and pull requests, issue comments and review comments.

Reacting is decided as commenting on the conversation (so a locked issue takes reactions from those who may
still comment); a reaction is removed only by whoever made it. Each account has each emoji once per subject:
asking again answers the one it has (200, not 201), as GitHub does.
"""

from agentgit.config import now
from agentgit.storage import insert
from agentgit.errors import HTTPError, invalid
from agentgit.policy import Resource
from agentgit.routing import route
from agentgit.serializers import node_id, user_json_by_id
from agentgit.issues import REACTIONS, find_comment, find_issue
from agentgit.reviews import find_review_comment


def reaction_json(app, row):
    return {"id": row["id"], "node_id": node_id("Reaction", row["id"]), "user": user_json_by_id(app, row["user_id"]),
            "content": row["content"], "created_at": row["created_at"]}


def list_reactions(req, column, subject_id):
    content = req.query.get("content")
    if content is not None and content not in REACTIONS:
        raise invalid("Reaction", "content", message="content must be one of %s" % ", ".join(REACTIONS))
    rows = req.app.store.all("SELECT * FROM reactions WHERE %s = ?%s ORDER BY id" % (
        column, " AND content = ?" if content else ""), subject_id, *([content] if content else []))
    return req.paginate([reaction_json(req.app, r) for r in rows])


def add_reaction(req, column, subject_id, what):
    """After comment was allowed: the caller's reaction, made now (201) or already there (200)."""
    content = req.field(req.json(), "content", str, "Reaction", required=True)
    if content not in REACTIONS:
        raise invalid("Reaction", "content", message="content must be one of %s" % ", ".join(REACTIONS))
    viewer = req.principal.user["id"]
    with req.transaction() as db:
        found = db.execute("SELECT * FROM reactions WHERE %s = ? AND user_id = ? AND content = ?" % column,
                           (subject_id, viewer, content)).fetchone()
        if found is None:
            reaction_id = insert(db, "INSERT INTO reactions (%s, user_id, content, created_at) VALUES (?, ?, ?, ?)"
                                     % column, (subject_id, viewer, content, now()))
            req.effect("reacted %s to %s" % (content, what))
    if found is not None:
        return 200, reaction_json(req.app, found)
    return 201, reaction_json(req.app, req.app.store.one("SELECT * FROM reactions WHERE id = ?", reaction_id))


def delete_reaction(req, column, subject_id, reaction_id, what):
    """After comment was allowed: the caller's own reaction removed; another's is not found."""
    with req.transaction() as db:
        if not db.execute("DELETE FROM reactions WHERE id = ? AND %s = ? AND user_id = ?" % column,
                          (int(reaction_id), subject_id, req.principal.user["id"])).rowcount:
            raise HTTPError(404, "Not Found")
        req.effect("removed reaction %d from %s" % (int(reaction_id), what))
    return 204, None


def allow_reacting(req, repo_row, issue_id):
    """Reacting to a comment is decided as commenting on its issue or pull request (author and lock)."""
    issue = req.app.store.one("SELECT * FROM issues WHERE id = ?", issue_id)
    req.authorize("comment", Resource.repo(repo_row), author_id=issue["user_id"], locked=bool(issue["locked"]))


# -- issues and pull requests ---------------------------------------------------------------------------

@route("GET", "/api/v3/repos/{owner}/{repo}/issues/{number:int}/reactions")
def list_issue_reactions(req, owner, repo, number):
    _, issue = find_issue(req, owner, repo, number)
    return list_reactions(req, "issue_id", issue["id"])


@route("POST", "/api/v3/repos/{owner}/{repo}/issues/{number:int}/reactions")
def react_to_issue(req, owner, repo, number):
    _, issue = find_issue(req, owner, repo, number, "comment")
    return add_reaction(req, "issue_id", issue["id"], "#%d" % issue["number"])


@route("DELETE", "/api/v3/repos/{owner}/{repo}/issues/{number:int}/reactions/{reaction_id:int}")
def unreact_to_issue(req, owner, repo, number, reaction_id):
    _, issue = find_issue(req, owner, repo, number, "comment")
    return delete_reaction(req, "issue_id", issue["id"], reaction_id, "#%d" % issue["number"])


# -- issue comments and review comments ------------------------------------------------------------------

def reacted_comment(req, owner, repo, comment_id, review_comment_id, reacting):
    """(reactions' column, id, what it is) of an issue comment or, by its own id, a review comment; with
    ``reacting``, once reacting to it is allowed."""
    if review_comment_id is None:
        row, comment = find_comment(req, owner, repo, comment_id)
        column, issue_id, what = "comment_id", comment["issue_id"], "comment %d" % comment["id"]
    else:
        row, issue, comment = find_review_comment(req, owner, repo, review_comment_id)
        column, issue_id, what = "review_comment_id", issue["id"], "review comment %d" % comment["id"]
    if reacting:
        allow_reacting(req, row, issue_id)
    return column, comment["id"], what


@route("GET", "/api/v3/repos/{owner}/{repo}/issues/comments/{comment_id:int}/reactions")
@route("GET", "/api/v3/repos/{owner}/{repo}/pulls/comments/{review_comment_id:int}/reactions")
def list_comment_reactions(req, owner, repo, comment_id=None, review_comment_id=None):
    return list_reactions(req, *reacted_comment(req, owner, repo, comment_id, review_comment_id, False)[:2])


@route("POST", "/api/v3/repos/{owner}/{repo}/issues/comments/{comment_id:int}/reactions")
@route("POST", "/api/v3/repos/{owner}/{repo}/pulls/comments/{review_comment_id:int}/reactions")
def react_to_comment(req, owner, repo, comment_id=None, review_comment_id=None):
    return add_reaction(req, *reacted_comment(req, owner, repo, comment_id, review_comment_id, True))


@route("DELETE", "/api/v3/repos/{owner}/{repo}/issues/comments/{comment_id:int}/reactions/{reaction_id:int}")
@route("DELETE", "/api/v3/repos/{owner}/{repo}/pulls/comments/{review_comment_id:int}/reactions/{reaction_id:int}")
def unreact_to_comment(req, owner, repo, reaction_id, comment_id=None, review_comment_id=None):
    column, subject_id, what = reacted_comment(req, owner, repo, comment_id, review_comment_id, True)
    return delete_reaction(req, column, subject_id, reaction_id, what)
