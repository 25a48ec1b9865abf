"""REST: pull request reviews (pending ones too), their comments, and requested reviewers.

A review starts pending when it is created without an event: its author adds comments to it, then
submits it (APPROVE, REQUEST_CHANGES or COMMENT) or deletes it. Until then it and its comments are
the author's alone: nobody else sees them, and nothing counts them (branch protection, reviewDecision).
Every step is decided as review_pr, so a grant that ends between the draft and the submission stops it.
"""

from agentgit.config import JOB_TASK_PREFIX, now
from agentgit.storage import insert
from agentgit.errors import HTTPError, invalid
from agentgit.accounts import full_name
from agentgit.routing import route
from agentgit.lookups import find_repo
from agentgit.notifications import notify
from agentgit.serializers import node_id, user_json, user_json_by_id
from agentgit.issues import author_association, insert_event, reaction_rollup, resolve_assignees
from agentgit.pulls import PullState, find_pull, pull_json, pull_rows

REVIEW_EVENTS = {"APPROVE": "APPROVED", "REQUEST_CHANGES": "CHANGES_REQUESTED", "COMMENT": "COMMENTED"}
SIDES = ("LEFT", "RIGHT")
# what a viewer may see of a pull request's reviews: every submitted one, and her own pending one
VISIBLE = "(state != 'PENDING' OR user_id = ?)"


def visible_reviews(store, issue_id, viewer_id, author_id=None):
    """The reviews of a pull request that ``viewer_id`` may see, oldest first (of ``author_id`` only)."""
    return store.all("SELECT * FROM reviews WHERE issue_id = ? AND %s%s ORDER BY id" % (
        VISIBLE, "" if author_id is None else " AND user_id = %d" % author_id), issue_id, viewer_id)


def visible_review_comments(store, issue_id, viewer_id):
    return store.all("SELECT * FROM review_comments WHERE issue_id = ? AND review_id IN (SELECT id FROM reviews"
                     " WHERE issue_id = ? AND %s) ORDER BY id" % VISIBLE, issue_id, issue_id, viewer_id)


def review_json(app, repo_row, issue, row):
    name = full_name(repo_row)
    html_url = "%s/%s/pull/%d#pullrequestreview-%d" % (app.url, name, issue["number"], row["id"])
    pull_url = "%s/repos/%s/pulls/%d" % (app.api, name, issue["number"])
    review = {"id": row["id"], "node_id": node_id("PullRequestReview", row["id"]),
              "user": user_json_by_id(app, row["user_id"]), "body": row["body"], "state": row["state"],
              "commit_id": row["commit_id"], "html_url": html_url, "pull_request_url": pull_url,
              "_links": {"html": {"href": html_url}, "pull_request": {"href": pull_url}},
              "author_association": author_association(app.store, repo_row, row["user_id"])}
    if row["submitted_at"]:         # GitHub leaves it out of a pending review
        review["submitted_at"] = row["submitted_at"]
    return review


def review_comment_json(app, repo_row, issue, c):
    name, api = full_name(repo_row), app.api
    url = "%s/repos/%s/pulls/comments/%d" % (api, name, c["id"])
    html_url = "%s/%s/pull/%d#discussion_r%d" % (app.url, name, issue["number"], c["id"])
    pull_url = "%s/repos/%s/pulls/%d" % (api, name, issue["number"])
    return {"url": url, "id": c["id"], "node_id": node_id("PullRequestReviewComment", c["id"]),
            "pull_request_review_id": c["review_id"], "diff_hunk": "", "path": c["path"],
            "position": c["line"], "original_position": c["line"], "line": c["line"], "original_line": c["line"],
            "side": c["side"], "start_line": c["start_line"], "original_start_line": c["start_line"],
            "start_side": c["start_side"] if c["start_line"] else None, "subject_type": c["subject_type"].lower(),
            "commit_id": c["commit_id"], "original_commit_id": c["commit_id"],
            "user": user_json_by_id(app, c["user_id"]), "body": c["body"], "created_at": c["created_at"],
            "updated_at": c["updated_at"], "html_url": html_url, "pull_request_url": pull_url,
            "author_association": author_association(app.store, repo_row, c["user_id"]),
            "reactions": reaction_rollup(app, url, "review_comment_id", c["id"]),
            "_links": {"self": {"href": url}, "html": {"href": html_url}, "pull_request": {"href": pull_url}}}


def checked_comment(comment, paths):
    """A review comment as given (REST's comments[] or GraphQL's thread), checked: (path, body, line,
    side, start line, start side, subject type). ``paths``: the files the pull request changes."""
    if not isinstance(comment, dict) or not isinstance(comment.get("path"), str) or \
            not isinstance(comment.get("body"), str) or not comment["body"].strip():
        raise invalid("PullRequestReview", "comments", message="each comment needs a path and a body")
    if comment["path"] not in paths:
        raise invalid("PullRequestReview", "comments", "custom", "%s is not changed by this pull request" %
                      comment["path"][:200])
    numbers = []
    for key in ("line", "start_line"):
        value = comment.get(key, comment.get("position")) if key == "line" else comment.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise invalid("PullRequestReview", "comments", message="%s must be a positive line number" % key)
        numbers.append(value)
    line, start_line = numbers
    if start_line is not None and (line is None or start_line > line):
        raise invalid("PullRequestReview", "comments", message="start_line must come before line")
    sides = [comment.get(key) or "RIGHT" for key in ("side", "start_side")]
    if any(side not in SIDES for side in sides):
        raise invalid("PullRequestReview", "comments", message="side must be LEFT or RIGHT")
    subject = (comment.get("subject_type") or ("line" if line else "file")).upper()
    if subject not in ("LINE", "FILE"):
        raise invalid("PullRequestReview", "comments", message="subject_type must be line or file")
    return comment["path"], comment["body"], line, sides[0], start_line, sides[1], subject


def insert_review_comments(db, review, comments, stamp):
    for path, body, line, side, start_line, start_side, subject in comments:
        db.execute("INSERT INTO review_comments (review_id, issue_id, user_id, path, line, side, start_line,"
                   " start_side, subject_type, body, commit_id, created_at, updated_at)"
                   " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (review["id"], review["issue_id"], review["user_id"], path, line, side, start_line, start_side,
                    subject, body, review["commit_id"], stamp, stamp))


def check_own_pull(req, issue, event):
    """Authors may comment on their own pull requests, not approve or reject them; a workflow's job token
    approves only where its repository allows it (GitHub's rule: else a workflow could approve its own
    changes past a required review)."""
    if event != "COMMENT" and issue["user_id"] == req.principal.user["id"]:
        raise invalid("PullRequestReview", "event", "custom", "Can not %s your own pull request" % (
            "approve" if event == "APPROVE" else "request changes on"))
    grant = req.principal.grant
    if event == "APPROVE" and grant is not None and grant["task"].startswith(JOB_TASK_PREFIX) and not req.app.store.one(
            "SELECT actions_can_approve FROM repos WHERE id = ?", issue["repo_id"])["actions_can_approve"]:
        raise invalid("PullRequestReview", "event", "custom", "GitHub Actions is not permitted to approve pull requests.")


@route("POST", "/api/v3/repos/{owner}/{repo}/pulls/{number:int}/reviews")
def create_review(req, owner, repo, number):
    body = req.json()
    event = req.field(body, "event", str, "PullRequestReview")
    if event not in REVIEW_EVENTS and event is not None:
        raise invalid("PullRequestReview", "event", message="event must be APPROVE, REQUEST_CHANGES or COMMENT, "
                                                            "or left out for a pending review")
    text = req.text_field(body, "body", "PullRequestReview") or ""
    comments = req.field(body, "comments", list, "PullRequestReview", default=[])
    row, issue, pull = find_pull(req, owner, repo, number, "review_pr")
    review_id = record_review(req, row, issue, pull, event, text, comments,
                              req.field(body, "commit_id", str, "PullRequestReview"))
    return 200, review_json(req.app, row, issue, req.app.store.one("SELECT * FROM reviews WHERE id = ?", review_id))


def record_review(req, row, issue, pull, event, text, comments, commit_id=None):
    """After review_pr was allowed: the new review's id, submitted with ``event`` or, with None, pending."""
    if event is not None:
        check_own_pull(req, issue, event)
        if event != "APPROVE" and not text.strip() and not comments:
            raise invalid("PullRequestReview", "body", "missing_field", "a %s review needs a body" % event.lower())
    state = PullState(req.app, row, issue, pull)
    checked = [checked_comment(c, {f[0] for f in state.files}) for c in comments]
    viewer = req.principal.user["id"]
    with req.transaction() as db:
        if event is None and db.execute("SELECT 1 FROM reviews WHERE issue_id = ? AND user_id = ? AND"
                                        " state = 'PENDING'", (issue["id"], viewer)).fetchone():
            raise invalid("PullRequestReview", "pull_request", "custom",
                          "User can only have one pending review per pull request")
        stamp = now()
        review_id = insert(db, "INSERT INTO reviews (issue_id, user_id, state, body, commit_id, submitted_at)"
                               " VALUES (?, ?, ?, ?, ?, ?)",
                               (issue["id"], viewer, REVIEW_EVENTS.get(event, "PENDING"), text,
                                commit_id or state.head_sha, stamp if event else None))
        insert_review_comments(db, db.execute("SELECT * FROM reviews WHERE id = ?", (review_id,)).fetchone(),
                               checked, stamp)
        if event is not None:
            insert_event(db, issue["id"], viewer, "reviewed", {"review_id": review_id}, stamp=stamp)
            req.announce(row["id"], "pull_request_review", "submitted", {"issue_id": issue["id"], "review_id": review_id})
            db.execute("DELETE FROM review_requests WHERE issue_id = ? AND user_id = ?", (issue["id"], viewer))
            notify(req, db, issue["id"], text + "".join(c[1] for c in checked))
        req.effect("review %d on #%d: %s%s" % (review_id, issue["number"], REVIEW_EVENTS.get(event, "PENDING"),
                                               ", %d comments" % len(checked) if checked else ""))
    return review_id


def own_pending_review(req, issue, review_id):
    """The caller's pending review ``review_id`` of this pull request: 404 when it is someone else's
    pending one (she may not know it exists), 422 when it is submitted."""
    review = req.app.store.one("SELECT * FROM reviews WHERE id = ? AND issue_id = ? AND " + VISIBLE, review_id,
                               issue["id"], req.principal.user["id"])
    if review is None:
        raise HTTPError(404, "Not Found")
    if review["state"] != "PENDING":
        raise invalid("PullRequestReview", "state", "custom", "Can not change a review that is submitted")
    return review


def submit_review(req, issue, review, event, text):
    """After review_pr was allowed: a pending review submitted with ``event``."""
    if event not in REVIEW_EVENTS:
        raise invalid("PullRequestReview", "event", message="event must be APPROVE, REQUEST_CHANGES or COMMENT")
    check_own_pull(req, issue, event)
    text = review["body"] if text is None else text
    with req.transaction() as db:
        has_comments = db.execute("SELECT 1 FROM review_comments WHERE review_id = ?", (review["id"],)).fetchone()
        if event != "APPROVE" and not text.strip() and not has_comments:
            raise invalid("PullRequestReview", "body", "missing_field", "a %s review needs a body" % event.lower())
        if not db.execute("UPDATE reviews SET state = ?, body = ?, submitted_at = ? WHERE id = ? AND state = 'PENDING'",
                          (REVIEW_EVENTS[event], text, now(), review["id"])).rowcount:
            raise invalid("PullRequestReview", "state", "custom", "Can not change a review that is submitted")
        db.execute("DELETE FROM review_requests WHERE issue_id = ? AND user_id = ?", (issue["id"], review["user_id"]))
        insert_event(db, issue["id"], review["user_id"], "reviewed", {"review_id": review["id"]})
        req.announce(issue["repo_id"], "pull_request_review", "submitted", {"issue_id": issue["id"],
                                                                            "review_id": review["id"]})
        notify(req, db, issue["id"], text + "".join(r[0] for r in db.execute(
            "SELECT body FROM review_comments WHERE review_id = ?", (review["id"],))))
        req.effect("review %d on #%d submitted: %s" % (review["id"], issue["number"], REVIEW_EVENTS[event]))


def delete_pending_review(req, issue, review):
    with req.transaction() as db:
        if not db.execute("DELETE FROM reviews WHERE id = ? AND state = 'PENDING'", (review["id"],)).rowcount:
            raise invalid("PullRequestReview", "state", "custom", "Can not delete a review that is submitted")
        req.effect("pending review %d on #%d deleted" % (review["id"], issue["number"]))


def add_review_comment(req, row, issue, pull, review, comment):
    """After review_pr was allowed: a comment added to the caller's pending review; its id."""
    checked = checked_comment(comment, {f[0] for f in PullState(req.app, row, issue, pull).files})
    with req.transaction() as db:
        insert_review_comments(db, review, [checked], now())
        comment_id = db.execute("SELECT max(id) FROM review_comments WHERE review_id = ?", (review["id"],)).fetchone()[0]
        req.effect("comment %d on %s added to pending review %d of #%d" % (comment_id, checked[0][:200], review["id"],
                                                                          issue["number"]))
    return comment_id


@route("POST", "/api/v3/repos/{owner}/{repo}/pulls/{number:int}/reviews/{review_id:int}/events")
def submit_review_route(req, owner, repo, number, review_id):
    row, issue, _ = find_pull(req, owner, repo, number, "review_pr")
    review = own_pending_review(req, issue, int(review_id))
    body = req.json()
    event = req.field(body, "event", str, "PullRequestReview", required=True)
    text = req.text_field(body, "body", "PullRequestReview")
    submit_review(req, issue, review, event, text)
    return review_json(req.app, row, issue, req.app.store.one("SELECT * FROM reviews WHERE id = ?", review["id"]))


@route("DELETE", "/api/v3/repos/{owner}/{repo}/pulls/{number:int}/reviews/{review_id:int}")
def delete_review_route(req, owner, repo, number, review_id):
    row, issue, _ = find_pull(req, owner, repo, number, "review_pr")
    review = own_pending_review(req, issue, int(review_id))
    delete_pending_review(req, issue, review)
    return review_json(req.app, row, issue, review)


@route("GET", "/api/v3/repos/{owner}/{repo}/pulls/{number:int}/reviews")
def list_reviews(req, owner, repo, number):
    row, issue, _ = find_pull(req, owner, repo, number)
    rows = visible_reviews(req.app.store, issue["id"], req.principal.user_id)
    return [review_json(req.app, row, issue, r) for r in req.paginate(rows)]


def visible_review(req, issue, review_id):
    review = req.app.store.one("SELECT * FROM reviews WHERE id = ? AND issue_id = ? AND " + VISIBLE, int(review_id),
                               issue["id"], req.principal.user_id)
    if review is None:
        raise HTTPError(404, "Not Found")
    return review


@route("GET", "/api/v3/repos/{owner}/{repo}/pulls/{number:int}/reviews/{review_id:int}")
def get_review(req, owner, repo, number, review_id):
    row, issue, _ = find_pull(req, owner, repo, number)
    return review_json(req.app, row, issue, visible_review(req, issue, review_id))


@route("GET", "/api/v3/repos/{owner}/{repo}/pulls/{number:int}/reviews/{review_id:int}/comments")
def list_comments_of_review(req, owner, repo, number, review_id):
    row, issue, _ = find_pull(req, owner, repo, number)
    review = visible_review(req, issue, review_id)
    rows = req.app.store.all("SELECT * FROM review_comments WHERE review_id = ? ORDER BY id", review["id"])
    return req.paginate([review_comment_json(req.app, row, issue, c) for c in rows])


@route("GET", "/api/v3/repos/{owner}/{repo}/pulls/{number:int}/comments")
def list_review_comments(req, owner, repo, number):
    row, issue, _ = find_pull(req, owner, repo, number)
    rows = visible_review_comments(req.app.store, issue["id"], req.principal.user_id)
    return req.paginate([review_comment_json(req.app, row, issue, c) for c in rows])


@route("POST", "/api/v3/repos/{owner}/{repo}/pulls/{number:int}/comments")
def create_review_comment(req, owner, repo, number):
    """One review comment on its own, as GitHub makes it: a submitted COMMENT review holding it. With
    in_reply_to, a reply in that comment's thread (its path and lines)."""
    body = req.json()
    row, issue, pull = find_pull(req, owner, repo, number, "review_pr")
    reply_to = req.field(body, "in_reply_to", int, "PullRequestReviewComment")
    comment = dict(body, body=req.text_field(body, "body", "PullRequestReviewComment", required=True))
    if reply_to is not None:
        comment.update(thread_of(req, issue, reply_to))
    return 201, review_comment_json(req.app, row, issue, single_comment(req, row, issue, pull, comment))


@route("POST", "/api/v3/repos/{owner}/{repo}/pulls/{number:int}/comments/{comment_id:int}/replies")
def reply_to_review_comment(req, owner, repo, number, comment_id):
    body = req.json()
    row, issue, pull = find_pull(req, owner, repo, number, "review_pr")
    comment = dict(thread_of(req, issue, comment_id),
                   body=req.text_field(body, "body", "PullRequestReviewComment", required=True))
    return 201, review_comment_json(req.app, row, issue, single_comment(req, row, issue, pull, comment))


def thread_of(req, issue, comment_id):
    """Where a reply goes: the path and lines of the visible review comment it answers."""
    found = [c for c in visible_review_comments(req.app.store, issue["id"], req.principal.user_id)
             if c["id"] == int(comment_id)]
    if not found:
        raise HTTPError(404, "Not Found")
    c = found[0]
    return {"path": c["path"], "line": c["line"], "side": c["side"], "start_line": c["start_line"],
            "start_side": c["start_side"], "subject_type": c["subject_type"].lower()}


def single_comment(req, row, issue, pull, comment):
    review_id = record_review(req, row, issue, pull, "COMMENT", "", [comment], comment.get("commit_id"))
    return req.app.store.one("SELECT * FROM review_comments WHERE review_id = ?", review_id)


def find_review_comment(req, owner, repo, comment_id):
    """(repository, pull request's issue row, review comment) of a review comment the caller may see."""
    row = find_repo(req, owner, repo)
    c = req.app.store.one("SELECT c.* FROM review_comments c JOIN issues i ON i.id = c.issue_id WHERE c.id = ? AND"
                          " i.repo_id = ?", int(comment_id), row["id"])
    issue = req.app.store.one("SELECT * FROM issues WHERE id = ?", c["issue_id"]) if c else None
    if issue is None or not any(v["id"] == c["id"] for v in visible_review_comments(
            req.app.store, issue["id"], req.principal.user_id)):
        raise HTTPError(404, "Not Found")
    return row, issue, c


@route("GET", "/api/v3/repos/{owner}/{repo}/pulls/comments/{comment_id:int}")
def get_review_comment(req, owner, repo, comment_id):
    return review_comment_json(req.app, *find_review_comment(req, owner, repo, comment_id))


def requested_reviewers_json(req, issue):
    rows = req.app.store.all("SELECT a.* FROM accounts a JOIN review_requests r ON r.user_id = a.id"
                             " WHERE r.issue_id = ? ORDER BY a.login", issue["id"])
    return {"users": [user_json(req.app, r) for r in rows], "teams": []}


@route("GET", "/api/v3/repos/{owner}/{repo}/pulls/{number:int}/requested_reviewers")
def list_requested_reviewers(req, owner, repo, number):
    _, issue, _ = find_pull(req, owner, repo, number)
    return requested_reviewers_json(req, issue)


def change_requested_reviewers(req, owner, repo, number, add):
    body = req.json()
    logins = req.field(body, "reviewers", list, "PullRequest", default=[])
    row, issue, pull = find_pull(req, owner, repo, number, "edit_issue")
    with req.transaction() as db:
        for user_id in resolve_assignees(req, row, logins):
            if add:
                if user_id == issue["user_id"]:
                    raise invalid("PullRequest", "reviewers", "custom",
                                  "Review cannot be requested from pull request author.")
                if db.execute("INSERT INTO review_requests (issue_id, user_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
                              (issue["id"], user_id)).rowcount:
                    notify(req, db, issue["id"], event_reasons={user_id: "review_requested"})
            else:
                db.execute("DELETE FROM review_requests WHERE issue_id = ? AND user_id = ?", (issue["id"], user_id))
        req.effect("%s review requests on #%d: %s" % ("added" if add else "removed", issue["number"],
                                                      ", ".join(map(str, logins))))
    return row, issue, pull


@route("POST", "/api/v3/repos/{owner}/{repo}/pulls/{number:int}/requested_reviewers")
def request_reviewers(req, owner, repo, number):
    row, issue, _ = change_requested_reviewers(req, owner, repo, number, add=True)
    return 201, pull_json(req.app, row, *pull_rows(req.app, issue["id"]))


@route("DELETE", "/api/v3/repos/{owner}/{repo}/pulls/{number:int}/requested_reviewers")
def remove_requested_reviewers(req, owner, repo, number):
    row, issue, _ = change_requested_reviewers(req, owner, repo, number, add=False)
    return pull_json(req.app, row, *pull_rows(req.app, issue["id"]))
