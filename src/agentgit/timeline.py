"""REST: what happened to an issue or pull request: its events (closed, labeled, renamed, merged, ...), the
repository's, and its timeline (those events with its comments and submitted reviews, in order).

Events are written where the change is made (issues.changing_issue, pulls.record_merge, a comment, a review's
submission), in its transaction; here they are only read, in the order they were written.
"""

import json

from agentgit.errors import HTTPError
from agentgit.routing import route
from agentgit.lookups import find_repo
from agentgit.issues import TIMELINE_ONLY, comment_json, event_json, find_issue
from agentgit.reviews import review_json


EVENTS_ONLY = "event NOT IN (%s)" % ", ".join("'%s'" % e for e in TIMELINE_ONLY)


@route("GET", "/api/v3/repos/{owner}/{repo}/issues/{number:int}/events")
def list_issue_events(req, owner, repo, number):
    row, issue = find_issue(req, owner, repo, number)
    rows = req.app.store.all("SELECT * FROM issue_events WHERE issue_id = ? AND %s ORDER BY id" % EVENTS_ONLY,
                             issue["id"])
    return [event_json(req.app, row, r) for r in req.paginate(rows)]


@route("GET", "/api/v3/repos/{owner}/{repo}/issues/events")
def list_repo_issue_events(req, owner, repo):
    """The repository's events, newest first, each with its issue."""
    row = find_repo(req, owner, repo)
    rows = req.paginate(req.app.store.all("SELECT e.* FROM issue_events e JOIN issues i ON i.id = e.issue_id"
                                          " WHERE i.repo_id = ? AND e.%s ORDER BY e.id DESC" % EVENTS_ONLY, row["id"]))
    return [event_json(req.app, row, r, req.app.store.one("SELECT * FROM issues WHERE id = ?", r["issue_id"]))
            for r in rows]


@route("GET", "/api/v3/repos/{owner}/{repo}/issues/events/{event_id:int}")
def get_issue_event(req, owner, repo, event_id):
    row = find_repo(req, owner, repo)
    event = req.app.store.one("SELECT e.* FROM issue_events e JOIN issues i ON i.id = e.issue_id WHERE e.id = ? AND"
                              " i.repo_id = ? AND e.%s" % EVENTS_ONLY, int(event_id), row["id"])
    if event is None:
        raise HTTPError(404, "Not Found")
    return event_json(req.app, row, event, req.app.store.one("SELECT * FROM issues WHERE id = ?", event["issue_id"]))


@route("GET", "/api/v3/repos/{owner}/{repo}/issues/{number:int}/timeline")
def list_timeline(req, owner, repo, number):
    """Events, comments ("commented") and submitted reviews ("reviewed"), in the order they happened."""
    row, issue = find_issue(req, owner, repo, number)
    rows = req.paginate(req.app.store.all("SELECT * FROM issue_events WHERE issue_id = ? ORDER BY id", issue["id"]))
    return [item for item in (timeline_item(req.app, row, issue, r) for r in rows) if item is not None]


def timeline_item(app, repo_row, issue, event):
    """An event as the timeline shows it; a comment or review since deleted is None."""
    if event["event"] not in TIMELINE_ONLY:
        return event_json(app, repo_row, event)
    detail = json.loads(event["detail"])
    if event["event"] == "commented":
        found = app.store.one("SELECT * FROM comments WHERE id = ?", detail["comment_id"])
        comment = comment_json(app, repo_row, issue["number"], found) if found else None
        return dict(comment, event="commented", actor=comment["user"]) if comment else None
    found = app.store.one("SELECT * FROM reviews WHERE id = ?", detail["review_id"])
    return dict(review_json(app, repo_row, issue, found), event="reviewed") if found else None
