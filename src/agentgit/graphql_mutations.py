"""GraphQL mutations: each one decided as its REST twin is."""

import base64

from agentgit.config import MAX_TEXT, now, valid_repo_name
from agentgit.errors import HTTPError
from agentgit.storage import update_row
from agentgit.gitstore import branch_sha, open_repo
from agentgit.accounts import account_by_id, full_name, repo_by_id
from agentgit.policy import RANK, Resource, repo_permission
from agentgit.serializers import node_id
from agentgit.lookups import signed_in
from agentgit.notifications import notify
from agentgit.repositories import new_repository
from agentgit.issues import (add_comment, changing_issue, comment_json, open_issue, set_issue_relations, set_locked,
                             state_change)
from agentgit.pulls import merge_pull_request, open_pull, update_pull_branch
from agentgit.reviews import (REVIEW_EVENTS, add_review_comment, delete_pending_review, own_pending_review,
                              record_review, submit_review)
from agentgit.graphql_language import GraphQLError, unprocessable
from agentgit.graphql_resolvers import (gql_issue, gql_pull, gql_repository, gql_review, gql_user, node_row,
                                         visible_pull)


def mutate_lock(locking):
    """lockLockable / unlockLockable: what PUT and DELETE .../issues/N/lock do."""
    payload_key = "lockedRecord" if locking else "unlockedRecord"

    def mutate(ctx, parent, args):
        data = args["input"]
        repo_row, issue = mutation_issue(ctx, data["lockableId"], "triage_issue")
        reason = (data.get("lockReason") or "").lower().replace("_", " ").replace("off topic", "off-topic") or None
        set_locked(ctx.req, issue, locking, reason)
        row = ctx.app.store.one("SELECT * FROM issues WHERE id = ?", issue["id"])
        node = gql_pull(ctx, repo_row, row) if row["is_pull"] else gql_issue(ctx, repo_row, row)
        return {"clientMutationId": data.get("clientMutationId"), payload_key: node,
                "actor": gql_user(ctx.app, ctx.req.principal.user)}
    return mutate


def mutate_merge_pull(ctx, parent, args):
    data = args["input"]
    repo_row, issue, pull = visible_pull(ctx, data["pullRequestId"])
    merge_pull_request(ctx.req, repo_row, issue, pull, (data.get("mergeMethod") or "MERGE").lower(), data.get("expectedHeadOid"),
          data.get("commitHeadline"), data.get("commitBody"))
    row = ctx.app.store.one("SELECT * FROM issues WHERE id = ?", issue["id"])
    return {"clientMutationId": data.get("clientMutationId"), "pullRequest": gql_pull(ctx, repo_row, row),
            "actor": gql_user(ctx.app, ctx.req.principal.user)}


def mutate_update_branch(ctx, parent, args):
    data = args["input"]
    if (data.get("updateMethod") or "MERGE") != "MERGE":
        raise GraphQLError("only MERGE updates a pull request branch here", kind="UNPROCESSABLE")
    repo_row, issue, pull = visible_pull(ctx, data["pullRequestId"])
    update_pull_branch(ctx.req, repo_row, issue, pull, data.get("expectedHeadOid"))
    return {"clientMutationId": data.get("clientMutationId"), "pullRequest": gql_pull(ctx, repo_row, issue)}


def mutation_issue(ctx, ident, action, **context):
    """(repository, issue or pull request) behind a global id, once ``action`` is allowed on its repository."""
    issue = node_row(ctx, ident, "Issue", "PullRequest")
    repo_row = repo_by_id(ctx.app.store, issue["repo_id"])
    if not ctx.req.can("read_code", Resource.repo(repo_row)):
        raise GraphQLError("Could not resolve to a node with the global id of '%s'" % ident, kind="NOT_FOUND")
    ctx.req.authorize(action, Resource.repo(repo_row), author_id=issue["user_id"], locked=bool(issue["locked"]),
                      **context)
    return repo_row, issue


def repo_from_node(ctx, ident):
    """The repository a global id names, if the caller may read it; NOT_FOUND otherwise."""
    try:
        kind, _, number = base64.b64decode(ident).decode().partition(":")
        repo_row = repo_by_id(ctx.app.store, int(number)) if kind == "Repository" else None
    except (ValueError, UnicodeDecodeError):
        repo_row = None
    if repo_row is None or not ctx.req.can("read_code", Resource.repo(repo_row)):
        raise GraphQLError("Could not resolve to a node with the global id of '%s'" % ident, kind="NOT_FOUND")
    return repo_row


def mutate_create_pull(ctx, parent, args):
    data = args["input"]
    repo_row = repo_from_node(ctx, data["repositoryId"])
    ctx.req.authorize("open_pr", Resource.repo(repo_row))
    try:
        issue_id = open_pull(ctx.req, repo_row, data["headRefName"], data["baseRefName"], data["title"],
                             data.get("body"), bool(data.get("draft")))
    except HTTPError as error:
        raise unprocessable(error)
    row = ctx.app.store.one("SELECT * FROM issues WHERE id = ?", issue_id)
    return {"clientMutationId": data.get("clientMutationId"), "pullRequest": gql_pull(ctx, repo_row, row)}


def mutate_create_issue(ctx, parent, args):
    data = args["input"]
    repo_row = repo_from_node(ctx, data["repositoryId"])
    ctx.req.authorize("open_issue", Resource.repo(repo_row))
    relations = {}
    if data.get("labelIds"):
        relations["labels"] = [node_row(ctx, i, "Label")["name"] for i in data["labelIds"]]
    if data.get("assigneeIds"):
        relations["assignees"] = [node_row(ctx, i, "User")["login"] for i in data["assigneeIds"]]
    row = open_issue(ctx.req, repo_row, data["title"], data.get("body"), relations)
    return {"clientMutationId": data.get("clientMutationId"), "issue": gql_issue(ctx, repo_row, row)}


def mutate_issue_state(state, id_key="issueId", payload_key="issue"):
    """closeIssue and reopenIssue, and with PR keys closePullRequest and reopenPullRequest."""
    def mutate(ctx, parent, args):
        data = args["input"]
        repo_row, issue = mutation_issue(ctx, data[id_key], "edit_issue")
        if issue["is_pull"] and ctx.app.store.one("SELECT merged_at FROM pulls WHERE issue_id = ?",
                                                  issue["id"])["merged_at"]:
            raise GraphQLError("A merged pull request cannot be closed or reopened", kind="UNPROCESSABLE")
        if issue["state"] != state:
            with changing_issue(ctx.req, issue["id"]) as db:
                update_row(db, "issues", dict(state_change(ctx.req, state, (data.get("stateReason") or "").lower()
                                                            or None), updated_at=now()), "id", issue["id"])
                ctx.req.effect("%s #%d" % ("closed" if state == "closed" else "reopened", issue["number"]))
        row = ctx.app.store.one("SELECT * FROM issues WHERE id = ?", issue["id"])
        node = gql_pull(ctx, repo_row, row) if row["is_pull"] else gql_issue(ctx, repo_row, row)
        return {"clientMutationId": data.get("clientMutationId"), payload_key: node}
    return mutate


def mutate_draft(draft):
    """markPullRequestReadyForReview, and convertPullRequestToDraft its undoing."""
    def mutate(ctx, parent, args):
        data = args["input"]
        repo_row, issue = mutation_issue(ctx, data["pullRequestId"], "edit_issue")
        with ctx.req.transaction() as db:
            db.execute("UPDATE pulls SET draft = ? WHERE issue_id = ?", (int(draft), issue["id"]))
            ctx.req.effect("#%d is %s" % (issue["number"], "a draft" if draft else "ready for review"))
        return {"clientMutationId": data.get("clientMutationId"), "pullRequest": gql_pull(ctx, repo_row, issue)}
    return mutate


def mutate_request_reviews(ctx, parent, args):
    """requestReviews: the users asked to review (union: added to those asked before; else replacing them)."""
    data = args["input"]
    repo_row, issue = mutation_issue(ctx, data["pullRequestId"], "edit_issue")
    users = [node_row(ctx, i, "User") for i in data.get("userIds") or []]
    if any(user["id"] == issue["user_id"] for user in users):
        raise GraphQLError("Review cannot be requested from pull request author.", kind="UNPROCESSABLE")
    if any(not RANK[repo_permission(ctx.app.store, user, repo_row)[0]] >= RANK["read"] for user in users):
        raise GraphQLError("A reviewer cannot see %s" % full_name(repo_row), kind="UNPROCESSABLE")
    with ctx.req.transaction() as db:
        if not data.get("union"):
            db.execute("DELETE FROM review_requests WHERE issue_id = ?", (issue["id"],))
        for user in users:
            if db.execute("INSERT INTO review_requests (issue_id, user_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
                          (issue["id"], user["id"])).rowcount:
                notify(ctx.req, db, issue["id"], event_reasons={user["id"]: "review_requested"})
        ctx.req.effect("review requested on #%d from %s" % (issue["number"], ", ".join(u["login"] for u in users)
                                                            or "nobody"))
    return {"clientMutationId": data.get("clientMutationId"), "pullRequest": gql_pull(ctx, repo_row, issue),
            "actor": gql_user(ctx.app, ctx.req.principal.user)}


def mutate_archived(archived):
    """archiveRepository / unarchiveRepository: what PATCH /repos {"archived": …} does."""
    def resolve(ctx, parent, args):
        data = args["input"]
        row = node_row(ctx, data["repositoryId"], "Repository")
        if not ctx.req.can("read_code", Resource.repo(row)):
            raise GraphQLError("Could not resolve to a node with the global id of '%s'" % data["repositoryId"],
                               kind="NOT_FOUND")
        ctx.req.authorize("admin_repo", Resource.repo(row))
        with ctx.req.transaction() as db:
            db.execute("UPDATE repos SET archived = ?, updated_at = ? WHERE id = ?", (int(archived), now(), row["id"]))
            ctx.req.effect("%s %s" % ("archived" if archived else "unarchived", full_name(row)))
        return {"clientMutationId": data.get("clientMutationId"),
                "repository": gql_repository(ctx, repo_by_id(ctx.app.store, row["id"]))}
    return resolve


def draft_comment(draft):
    """A GraphQL draft thread or comment in the shape REST's review comments take."""
    if not isinstance(draft, dict):
        return draft
    return {"path": draft.get("path"), "body": draft.get("body"), "line": draft.get("line", draft.get("position")),
            "side": draft.get("side"), "start_line": draft.get("startLine"), "start_side": draft.get("startSide"),
            "subject_type": draft.get("subjectType")}


def mutate_add_review(ctx, parent, args):
    """addPullRequestReview: submitted with an event, else the viewer's pending review."""
    data = args["input"]
    event = data.get("event")
    if event is not None and event not in REVIEW_EVENTS:
        raise GraphQLError("event must be APPROVE, REQUEST_CHANGES or COMMENT, or left out for a pending review",
                           kind="UNPROCESSABLE")
    repo_row, issue = mutation_issue(ctx, data["pullRequestId"], "review_pr")
    pull = ctx.app.store.one("SELECT * FROM pulls WHERE issue_id = ?", issue["id"])
    drafts = [draft_comment(d) for d in (data.get("threads") or []) + (data.get("comments") or [])]
    try:
        review_id = record_review(ctx.req, repo_row, issue, pull, event, data.get("body") or "", drafts,
                                  data.get("commitOID"))
    except HTTPError as error:
        raise unprocessable(error)
    return {"clientMutationId": data.get("clientMutationId"), "pullRequestReview": gql_review(
        ctx, repo_row, issue, ctx.app.store.one("SELECT * FROM reviews WHERE id = ?", review_id))}


def mutation_pending_review(ctx, data):
    """(repository, pull request's issue, pull, the viewer's pending review) named by pullRequestReviewId,
    or by pullRequestId (her pending review of it), once review_pr is allowed; NOT_FOUND for a review
    she may not see."""
    if data.get("pullRequestReviewId"):
        review = node_row(ctx, data["pullRequestReviewId"], "PullRequestReview")
        issue_id = node_id("PullRequest", review["issue_id"])
    elif data.get("pullRequestId"):
        issue_id, review = data["pullRequestId"], None
    else:
        raise GraphQLError("pullRequestReviewId or pullRequestId is required", kind="UNPROCESSABLE")
    repo_row, issue = mutation_issue(ctx, issue_id, "review_pr")
    if review is None:
        review = ctx.app.store.one("SELECT * FROM reviews WHERE issue_id = ? AND user_id = ? AND state = 'PENDING'",
                                   issue["id"], ctx.req.principal.user_id)
        if review is None:
            raise GraphQLError("You have no pending review of this pull request", kind="UNPROCESSABLE")
    try:
        review = own_pending_review(ctx.req, issue, review["id"])
    except HTTPError as error:
        if error.status == 404:
            raise GraphQLError("Could not resolve to a node with the global id of '%s'" % data["pullRequestReviewId"],
                               kind="NOT_FOUND")
        raise unprocessable(error)
    return repo_row, issue, ctx.app.store.one("SELECT * FROM pulls WHERE issue_id = ?", issue["id"]), review


def mutate_add_review_thread(ctx, parent, args):
    """addPullRequestReviewThread: a comment thread on the viewer's pending review."""
    data = args["input"]
    repo_row, issue, pull, review = mutation_pending_review(ctx, data)
    try:
        comment_id = add_review_comment(ctx.req, repo_row, issue, pull, review, draft_comment(data))
    except HTTPError as error:
        raise unprocessable(error)
    comment = ctx.app.store.one("SELECT * FROM review_comments WHERE id = ?", comment_id)
    thread = {"__typename": "PullRequestReviewThread", "id": node_id("PullRequestReviewThread", comment_id),
              "path": comment["path"], "line": comment["line"], "startLine": comment["start_line"],
              "diffSide": comment["side"], "startDiffSide": comment["start_side"] if comment["start_line"] else None,
              "subjectType": comment["subject_type"], "isResolved": False, "isOutdated": False}
    return {"clientMutationId": data.get("clientMutationId"), "thread": thread}


def mutate_submit_review(ctx, parent, args):
    data = args["input"]
    repo_row, issue, _, review = mutation_pending_review(ctx, data)
    try:
        submit_review(ctx.req, issue, review, data["event"], data.get("body"))
    except HTTPError as error:
        raise unprocessable(error)
    return {"clientMutationId": data.get("clientMutationId"), "pullRequestReview": gql_review(
        ctx, repo_row, issue, ctx.app.store.one("SELECT * FROM reviews WHERE id = ?", review["id"]))}


def mutate_delete_review(ctx, parent, args):
    data = args["input"]
    repo_row, issue, _, review = mutation_pending_review(ctx, data)
    try:
        delete_pending_review(ctx.req, issue, review)
    except HTTPError as error:
        raise unprocessable(error)
    return {"clientMutationId": data.get("clientMutationId"), "pullRequestReview": gql_review(
        ctx, repo_row, issue, review)}


def mutate_update(kind):
    """updateIssue and updatePullRequest: title, body and state as their author or a triager may;
    labels and assignees need triage; a pull request's base moves to another existing branch."""
    id_key, payload_key = ("id", "issue") if kind == "Issue" else ("pullRequestId", "pullRequest")

    def mutate(ctx, parent, args):
        return update_issue_or_pull(ctx, args["input"], id_key, payload_key)
    return mutate


def update_issue_or_pull(ctx, data, id_key, payload_key):
    repo_row, issue = mutation_issue(ctx, data[id_key], "edit_issue")
    relations, pull_fields = {}, {}
    if data.get("labelIds") is not None:
        relations["labels"] = [node_row(ctx, i, "Label")["name"] for i in data["labelIds"]]
    if data.get("assigneeIds") is not None:
        relations["assignees"] = [node_row(ctx, i, "User")["login"] for i in data["assigneeIds"]]
    if relations:
        ctx.req.authorize("triage_issue", Resource.repo(repo_row))
    fields = {k: data[k] for k in ("title", "body") if data.get(k) is not None}
    if fields.get("title", "x").strip() == "" or len(fields.get("title", "")) > 256:
        raise GraphQLError("title must be 1 to 256 characters", kind="UNPROCESSABLE")
    if data.get("state") and data["state"].lower() != issue["state"]:
        fields.update(state_change(ctx.req, data["state"].lower()))
    if data.get("baseRefName") and issue["is_pull"]:
        with open_repo(ctx.app, repo_row["id"]) as git:
            base_sha = branch_sha(git, data["baseRefName"])
        if base_sha is None:
            raise GraphQLError("base branch %s does not exist" % data["baseRefName"], kind="UNPROCESSABLE")
        pull_fields.update(base_ref=data["baseRefName"], base_sha=base_sha)
    with changing_issue(ctx.req, issue["id"]) as db:
        update_row(db, "issues", dict(fields, updated_at=now()), "id", issue["id"])
        update_row(db, "pulls", pull_fields, "issue_id", issue["id"])
        set_issue_relations(ctx.req, db, repo_row, issue["id"], relations)
        ctx.req.effect("updated #%d: %s" % (issue["number"], ", ".join(sorted(set(fields) | set(relations) |
                                                                            set(pull_fields)))))
    row = ctx.app.store.one("SELECT * FROM issues WHERE id = ?", issue["id"])
    node = gql_pull(ctx, repo_row, row) if row["is_pull"] else gql_issue(ctx, repo_row, row)
    return {"clientMutationId": data.get("clientMutationId"), payload_key: node,
            "actor": gql_user(ctx.app, ctx.req.principal.user)}


def mutate_labels(adding):
    def mutate(ctx, parent, args):
        data = args["input"]
        repo_row, issue = mutation_issue(ctx, data["labelableId"], "triage_issue")
        labels = [node_row(ctx, i, "Label") for i in data["labelIds"]]
        if any(label["repo_id"] != repo_row["id"] for label in labels):
            raise GraphQLError("A label belongs to another repository", kind="UNPROCESSABLE")
        with changing_issue(ctx.req, issue["id"]) as db:
            for label in labels:
                db.execute("INSERT INTO issue_labels (issue_id, label_id) VALUES (?, ?)"
                           " ON CONFLICT DO NOTHING" if adding else
                           "DELETE FROM issue_labels WHERE issue_id = ? AND label_id = ?", (issue["id"], label["id"]))
            ctx.req.effect("%s labels of #%d: %s" % ("added" if adding else "removed", issue["number"],
                                                      ", ".join(l["name"] for l in labels)))
        row = ctx.app.store.one("SELECT * FROM issues WHERE id = ?", issue["id"])
        labelable = gql_pull(ctx, repo_row, row) if row["is_pull"] else gql_issue(ctx, repo_row, row)
        return {"clientMutationId": data.get("clientMutationId"), "labelable": labelable}
    return mutate


MAX_PINNED = 3        # GitHub's limit of pinned issues a repository


def mutation_issue_only(ctx, data, action, what):
    """mutation_issue for what an issue may be and a pull request may not (pinned, deleted)."""
    repo_row, issue = mutation_issue(ctx, data["issueId"], action)
    if issue["is_pull"]:
        raise GraphQLError("A pull request cannot be %s" % what, kind="UNPROCESSABLE")
    return repo_row, issue


def mutate_pin(pinning):
    """pinIssue and unpinIssue: at most three of a repository's issues are pinned."""
    def mutate(ctx, parent, args):
        data = args["input"]
        repo_row, issue = mutation_issue_only(ctx, data, "pin_issue", "pinned")
        with ctx.req.transaction() as db:
            if pinning and not issue["pinned_at"] and db.execute(
                    "SELECT COUNT(*) FROM issues WHERE repo_id = ? AND pinned_at IS NOT NULL",
                    (repo_row["id"],)).fetchone()[0] >= MAX_PINNED:
                raise GraphQLError("A repository pins at most %d issues" % MAX_PINNED, kind="UNPROCESSABLE")
            db.execute("UPDATE issues SET pinned_at = ? WHERE id = ?", (now() if pinning else None, issue["id"]))
            ctx.req.effect("%s #%d" % ("pinned" if pinning else "unpinned", issue["number"]))
        row = ctx.app.store.one("SELECT * FROM issues WHERE id = ?", issue["id"])
        return {"clientMutationId": data.get("clientMutationId"), "issue": gql_issue(ctx, repo_row, row)}
    return mutate


def mutate_delete_issue(ctx, parent, args):
    """deleteIssue: an issue and all it holds, by a repository admin; its number is never given again."""
    data = args["input"]
    repo_row, issue = mutation_issue_only(ctx, data, "delete_issue", "deleted")
    with ctx.req.transaction() as db:
        db.execute("UPDATE repos SET deleted_issue_number = ? WHERE id = ? AND deleted_issue_number < ?",
                   (issue["number"], repo_row["id"], issue["number"]))
        db.execute("DELETE FROM issues WHERE id = ?", (issue["id"],))
        ctx.req.effect("deleted issue #%d %r" % (issue["number"], issue["title"][:100]))
    return {"clientMutationId": data.get("clientMutationId"), "repository": gql_repository(ctx, repo_row)}


def mutate_add_comment(ctx, parent, args):
    data = args["input"]
    if not data["body"].strip() or len(data["body"]) > MAX_TEXT:
        raise GraphQLError("body must be 1 to %d characters" % MAX_TEXT, kind="INVALID_ARGUMENT")
    repo_row, issue = mutation_issue(ctx, data["subjectId"], "comment")
    comment = add_comment(ctx.req, issue, data["body"])
    c = comment_json(ctx.app, repo_row, issue["number"], comment)
    author = account_by_id(ctx.app.store, comment["user_id"])
    node = {"__typename": "IssueComment", "id": c["node_id"], "url": c["html_url"], "body": c["body"],
            "createdAt": c["created_at"], "author": gql_user(ctx.app, author),
            "authorAssociation": c["author_association"], "includesCreatedEdit": False, "isMinimized": False,
            "minimizedReason": None, "reactionGroups": [], "viewerDidAuthor": True}
    subject = gql_pull(ctx, repo_row, issue) if issue["is_pull"] else gql_issue(ctx, repo_row, issue)
    return {"clientMutationId": data.get("clientMutationId"), "subject": subject,
            "commentEdge": {"cursor": base64.b64encode(b"cursor:0").decode(), "node": node}}


def mutate_create_repository(ctx, parent, args):
    data = args["input"]
    owner = node_row(ctx, data["ownerId"], "User") if data.get("ownerId") else signed_in(ctx.req)
    if not valid_repo_name(data["name"]):
        raise GraphQLError("name may use letters, digits, '.', '-' and '_' (up to 100), and may not end in .git",
                           kind="UNPROCESSABLE")
    ctx.req.authorize("create_repo", Resource.account(owner))
    fields = {"name": data["name"], "private": int(data["visibility"] != "PUBLIC"),
              "description": data.get("description"), "homepage": data.get("homepageUrl")}
    try:
        row = new_repository(ctx.req, owner, fields, auto_init=False)
    except HTTPError as error:
        raise unprocessable(error)
    return {"clientMutationId": data.get("clientMutationId"), "repository": gql_repository(ctx, row)}
