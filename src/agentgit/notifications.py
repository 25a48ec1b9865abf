"""REST: notifications (GitHub's inbox of threads) and watching repositories.

A thread is one account's view of one issue or pull request. Something happening there (it is opened,
commented on, reviewed, someone is assigned or asked for a review) marks the thread unread for each
participant but the one who acted, with the reason GitHub gives: approval_requested (a merge an agent's
task waits on her approval for), review_requested, assign, mention, author, comment, manual (subscribed
to the thread) or subscribed (watching the repository; the owner of a personal repository watches it
until she says otherwise). An ignored thread or repository stays
quiet. Whoever can no longer read the repository is not told, and does not see its threads.
"""

import re

from agentgit.config import now, parse_time
from agentgit.errors import HTTPError, invalid
from agentgit.accounts import REPO_SELECT, full_name, repo_by_id
from agentgit.policy import RANK, Resource, repo_permission
from agentgit.routing import route
from agentgit.serializers import repo_json
from agentgit.lookups import find_repo, signed_in

MENTION_RE = re.compile(r"(?<![\w`])@([A-Za-z0-9](?:[A-Za-z0-9-]{0,38}))\b")
# the reason a thread gives when several hold, the most pressing first
REASONS = ("approval_requested", "review_requested", "assign", "mention", "author", "comment", "manual", "subscribed")


def mentioned_ids(db, text):
    ids = set()
    for login in set(MENTION_RE.findall(text or "")):
        row = db.execute("SELECT id, kind FROM accounts WHERE login = ?", (login,)).fetchone()
        if row is not None and row["kind"] != "org":
            ids.add(row["id"])
    return ids


PARTICIPANTS = (
    "SELECT user_id, reason FROM ("
    "SELECT user_id, 'subscribed' AS reason, 1 AS rank FROM repo_subscriptions WHERE repo_id = ? AND subscribed = 1"
    " UNION ALL SELECT user_id, 'manual', 2 FROM notification_threads WHERE issue_id = ? AND subscribed = 1"
    " UNION ALL SELECT DISTINCT user_id, 'comment', 3 FROM comments WHERE issue_id = ?"
    " UNION ALL SELECT DISTINCT user_id, 'comment', 3 FROM reviews WHERE issue_id = ? AND state != 'PENDING'"
    " UNION ALL SELECT user_id, 'author', 4 FROM issues WHERE id = ?"
    " UNION ALL SELECT user_id, 'assign', 5 FROM issue_assignees WHERE issue_id = ?"
    " UNION ALL SELECT user_id, 'review_requested', 6 FROM review_requests WHERE issue_id = ?) AS reasons ORDER BY rank")


def notify(req, db, issue_id, text="", event_reasons=None):
    """Inside the transaction of what the caller did on an issue or pull request: its participants'
    threads marked unread. ``text``: what was written (its @mentions are told); ``event_reasons``:
    {account id: reason} of those this event names (assigned, asked for a review)."""
    event_reasons = event_reasons or {}
    issue = db.execute("SELECT * FROM issues WHERE id = ?", (issue_id,)).fetchone()
    repo = db.execute(REPO_SELECT + " WHERE r.id = ?", (issue["repo_id"],)).fetchone()
    # {account id: reason}, in one query ordered from the least pressing reason to the most, so a later
    # row of the same account wins
    standing = dict(db.execute(PARTICIPANTS, (repo["id"],) + (issue_id,) * 6).fetchall())
    if repo["owner_kind"] != "org" and not db.execute(
            "SELECT 1 FROM repo_subscriptions WHERE user_id = ? AND repo_id = ?", (repo["owner_id"], repo["id"])).fetchone():
        standing.setdefault(repo["owner_id"], "subscribed")
    mentioned = mentioned_ids(db, text)
    stamp = now()
    for user_id in (set(standing) | mentioned | set(event_reasons)) - {None, req.principal.user_id}:
        user = db.execute("SELECT * FROM accounts WHERE id = ?", (user_id,)).fetchone()
        if user is None or user["kind"] == "org" or db.execute(
                "SELECT 1 FROM repo_subscriptions WHERE user_id = ? AND repo_id = ? AND ignored = 1",
                (user_id, repo["id"])).fetchone() or RANK[repo_permission(req.app.store, user, repo)[0]] < RANK["read"]:
            continue
        reason = event_reasons.get(user_id) or min(
            (r for r in (standing.get(user_id), "mention" if user_id in mentioned else None) if r), key=REASONS.index)
        db.execute("INSERT INTO notification_threads (user_id, issue_id, reason, unread, updated_at)"
                   " VALUES (?, ?, ?, 1, ?) ON CONFLICT (user_id, issue_id) DO UPDATE SET reason = excluded.reason,"
                   " unread = 1, done = 0, updated_at = excluded.updated_at"
                   " WHERE notification_threads.ignored = 0",
                   (user_id, issue_id, reason, stamp))


def thread_json(app, thread, issue, repo):
    api, name = app.api, full_name(repo)
    subject_url = "%s/repos/%s/%s/%d" % (api, name, "pulls" if issue["is_pull"] else "issues", issue["number"])
    latest = app.store.one("SELECT max(id) AS id FROM comments WHERE issue_id = ?", issue["id"])["id"]
    url = "%s/notifications/threads/%d" % (api, thread["id"])
    return {"id": str(thread["id"]), "repository": repo_json(app, repo), "subject": {
        "title": issue["title"], "url": subject_url, "type": "PullRequest" if issue["is_pull"] else "Issue",
        "latest_comment_url": "%s/repos/%s/issues/comments/%d" % (api, name, latest) if latest else subject_url},
        "reason": thread["reason"], "unread": bool(thread["unread"]), "updated_at": thread["updated_at"],
        "last_read_at": thread["last_read_at"], "url": url, "subscription_url": url + "/subscription"}


def timestamp(text, field):
    """An ISO 8601 time (any offset, any fraction) as the database writes times, to compare with them."""
    try:
        return parse_time(text).strftime("%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        raise invalid("Notification", field, message="%s must be an ISO 8601 time, as 2026-01-31T12:00:00Z" % field)


def inbox(req, repo=None):
    """The caller's threads (of ``repo``) that she may still read, newest first, as the query asks:
    all=true for read ones too, participating=true for those she takes part in, since/before."""
    user = signed_in(req)
    req.check("read_notifications", Resource.account(user))
    where, args = ["t.user_id = ?", "t.done = 0"], [user["id"]]
    if req.query.get("all") != "true":
        where.append("t.unread = 1")
    if req.query.get("participating") == "true":
        where.append("t.reason NOT IN ('subscribed', 'manual')")
    for key, op in (("since", ">="), ("before", "<")):
        if req.query.get(key):
            where.append("t.updated_at %s ?" % op)
            args.append(timestamp(req.query[key], key))
    if repo is not None:
        where.append("i.repo_id = ?")
        args.append(repo["id"])
    out = []
    for thread in req.app.store.all("SELECT t.* FROM notification_threads t JOIN issues i ON i.id = t.issue_id"
                                    " WHERE %s ORDER BY t.updated_at DESC, t.id DESC" % " AND ".join(where), *args):
        issue = req.app.store.one("SELECT * FROM issues WHERE id = ?", thread["issue_id"])
        row = repo or repo_by_id(req.app.store, issue["repo_id"])
        if req.can("read_code", Resource.repo(row)):
            out.append(thread_json(req.app, thread, issue, row))
    return req.paginate(out)


@route("GET", "/api/v3/notifications")
def list_notifications(req):
    return inbox(req)


@route("GET", "/api/v3/repos/{owner}/{repo}/notifications")
def list_repo_notifications(req, owner, repo):
    user = signed_in(req)
    req.check("read_notifications", Resource.account(user))    # the account's inbox: not a task token's
    return inbox(req, find_repo(req, owner, repo))


def mark_read(req, repo=None):
    """Every thread updated before last_read_at (default: now) read, as GitHub's 205 says."""
    user = signed_in(req)
    body = req.json()
    until = req.field(body, "last_read_at", str, "Notification")
    until = timestamp(until, "last_read_at") if until else now()
    req.authorize("manage_notifications", Resource.account(user))
    with req.transaction() as db:
        count = db.execute("UPDATE notification_threads SET unread = 0, last_read_at = ? WHERE user_id = ? AND"
                           " unread = 1 AND updated_at <= ?%s" % (" AND issue_id IN (SELECT id FROM issues WHERE"
                                                                  " repo_id = %d)" % repo["id"] if repo else ""),
                           (now(), user["id"], until)).rowcount
        req.effect("%d notifications marked read%s" % (count, " in " + full_name(repo) if repo else ""))
    return 205, None


@route("PUT", "/api/v3/notifications")
def mark_notifications_read(req):
    return mark_read(req)


@route("PUT", "/api/v3/repos/{owner}/{repo}/notifications")
def mark_repo_notifications_read(req, owner, repo):
    req.authorize("manage_notifications", Resource.account(signed_in(req)))
    return mark_read(req, find_repo(req, owner, repo))


def own_thread(req, thread_id, action):
    """The caller's thread ``thread_id`` once ``action`` is allowed on her account; 404 for anyone
    else's, or one of a repository she can no longer read."""
    user = signed_in(req)
    req.check(action, Resource.account(user)) if action.startswith("read") else req.authorize(
        action, Resource.account(user))
    thread = req.app.store.one("SELECT * FROM notification_threads WHERE id = ? AND user_id = ?", thread_id, user["id"])
    if thread is None:
        raise HTTPError(404, "Not Found")
    issue = req.app.store.one("SELECT * FROM issues WHERE id = ?", thread["issue_id"])
    repo = repo_by_id(req.app.store, issue["repo_id"])
    if not req.can("read_code", Resource.repo(repo)):
        raise HTTPError(404, "Not Found")
    return thread, issue, repo


@route("GET", "/api/v3/notifications/threads/{thread_id:int}")
def get_thread(req, thread_id):
    return thread_json(req.app, *own_thread(req, int(thread_id), "read_notifications"))


def set_thread(req, thread_id, columns, effect):
    thread, issue, repo = own_thread(req, int(thread_id), "manage_notifications")
    with req.transaction() as db:
        db.execute("UPDATE notification_threads SET %s WHERE id = ?" % ", ".join("%s = ?" % c for c in columns),
                   (*columns.values(), thread["id"]))
        req.effect("notification thread %d (#%d of %s): %s" % (thread["id"], issue["number"], full_name(repo), effect))
    return req.app.store.one("SELECT * FROM notification_threads WHERE id = ?", thread["id"]), issue, repo


@route("PATCH", "/api/v3/notifications/threads/{thread_id:int}")
def mark_thread_read(req, thread_id):
    set_thread(req, thread_id, {"unread": 0, "last_read_at": now()}, "read")
    return 205, None


@route("DELETE", "/api/v3/notifications/threads/{thread_id:int}")
def mark_thread_done(req, thread_id):
    set_thread(req, thread_id, {"unread": 0, "done": 1, "last_read_at": now()}, "done")
    return 204, None


def thread_subscription_json(app, thread):
    url = "%s/notifications/threads/%d" % (app.api, thread["id"])
    return {"subscribed": bool(thread["subscribed"]) or not thread["ignored"], "ignored": bool(thread["ignored"]),
            "reason": thread["reason"], "created_at": thread["updated_at"], "url": url + "/subscription",
            "thread_url": url}


@route("GET", "/api/v3/notifications/threads/{thread_id:int}/subscription")
def get_thread_subscription(req, thread_id):
    return thread_subscription_json(req.app, own_thread(req, int(thread_id), "read_notifications")[0])


@route("PUT", "/api/v3/notifications/threads/{thread_id:int}/subscription")
def set_thread_subscription(req, thread_id):
    ignored = req.field(req.json(), "ignored", bool, "ThreadSubscription", default=False)
    thread = set_thread(req, thread_id, {"ignored": int(ignored), "subscribed": int(not ignored)},
                        "ignored" if ignored else "subscribed")[0]
    return thread_subscription_json(req.app, thread)


@route("DELETE", "/api/v3/notifications/threads/{thread_id:int}/subscription")
def delete_thread_subscription(req, thread_id):
    set_thread(req, thread_id, {"ignored": 0, "subscribed": 0}, "subscription removed")
    return 204, None


# -- watching -----------------------------------------------------------------------------------

def repo_subscription(store, user, repo):
    """(subscribed, ignored, since) of the caller's watch of ``repo``; an owner watches her personal
    repositories until she says otherwise."""
    row = store.one("SELECT * FROM repo_subscriptions WHERE user_id = ? AND repo_id = ?", user["id"], repo["id"])
    if row is None:
        return (repo["owner_id"] == user["id"], False, repo["created_at"])
    return bool(row["subscribed"]), bool(row["ignored"]), row["created_at"]


def repo_subscription_json(app, repo, subscribed, ignored, since):
    url = "%s/repos/%s" % (app.api, full_name(repo))
    return {"subscribed": subscribed, "ignored": ignored, "reason": None, "created_at": since,
            "url": url + "/subscription", "repository_url": url}


@route("GET", "/api/v3/repos/{owner}/{repo}/subscription")
def get_repo_subscription(req, owner, repo):
    row = find_repo(req, owner, repo)
    user = signed_in(req)
    state = repo_subscription(req.app.store, user, row)
    if not state[0] and not state[1]:
        raise HTTPError(404, "Not Found")       # GitHub's answer when she does not watch it
    return repo_subscription_json(req.app, row, *state)


@route("PUT", "/api/v3/repos/{owner}/{repo}/subscription")
def set_repo_subscription(req, owner, repo):
    row = find_repo(req, owner, repo, "watch_repo")
    user = signed_in(req)
    body = req.json()
    ignored = req.field(body, "ignored", bool, "RepositorySubscription", default=False)
    subscribed = req.field(body, "subscribed", bool, "RepositorySubscription", default=not ignored)
    if subscribed and ignored:
        raise invalid("RepositorySubscription", "ignored", message="a watch is subscribed or ignored, not both")
    return repo_subscription_json(req.app, row, *watch(req, user, row, subscribed, ignored))


@route("DELETE", "/api/v3/repos/{owner}/{repo}/subscription")
def delete_repo_subscription(req, owner, repo):
    row = find_repo(req, owner, repo, "watch_repo")
    watch(req, signed_in(req), row, False, False)
    return 204, None


def watch(req, user, repo, subscribed, ignored):
    stamp = now()
    with req.transaction() as db:
        db.execute("INSERT INTO repo_subscriptions (user_id, repo_id, subscribed, ignored, created_at)"
                   " VALUES (?, ?, ?, ?, ?)"
                   " ON CONFLICT (user_id, repo_id) DO UPDATE SET subscribed = excluded.subscribed,"
                   " ignored = excluded.ignored", (user["id"], repo["id"], int(subscribed), int(ignored), stamp))
        req.effect("%s %s" % ("watching" if subscribed else "ignoring" if ignored else "not watching", full_name(repo)))
    return repo_subscription(req.app.store, user, repo)
