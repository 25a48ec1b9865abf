"""REST: issues, comments, labels and milestones."""

import contextlib
import json
import re
import urllib.parse

from agentgit.config import now, parse_time
from agentgit.errors import HTTPError, invalid
from agentgit.storage import insert, insert_row, update_row
from agentgit.accounts import DEFAULT_LABELS, account_by_id, account_by_login, full_name, permission_of_org_member
from agentgit.policy import RANK, Resource, repo_permission
from agentgit.routing import route
from agentgit.serializers import node_id, user_json, user_json_by_id
from agentgit.lookups import find_repo, signed_in, visible_repos
from agentgit.notifications import notify
from agentgit.repositories import repos_reachable_by


# -- issues, comments, labels, milestones -------------------------------------------------------

HEX_COLOR_RE = re.compile(r"^[0-9a-fA-F]{6}$")
def author_association(store, repo, user_id):
    if user_id is None:
        return "NONE"
    if user_id == repo["owner_id"]:
        return "OWNER"
    if repo["owner_kind"] == "org" and permission_of_org_member(store, repo["owner_id"], user_id):
        return "MEMBER"
    if store.one("SELECT 1 FROM collaborators WHERE repo_id = ? AND user_id = ?", repo["id"], user_id):
        return "COLLABORATOR"
    return "NONE"


def label_json(app, repo, row):
    return {"id": row["id"], "node_id": node_id("Label", row["id"]),
            "url": "%s/repos/%s/labels/%s" % (app.api, full_name(repo), urllib.parse.quote(row["name"])),
            "name": row["name"], "color": row["color"], "description": row["description"],
            "default": any(row["name"] == name and row["color"] == color for name, color, _ in DEFAULT_LABELS),
            "archived_at": None, "archived_by": None}     # github.com's newer fields: labels are never archived here


def milestone_json(app, repo, row):
    counts = app.store.one("SELECT COUNT(*) FILTER (WHERE state = 'open') AS open, COUNT(*) FILTER (WHERE state = 'closed')"
                           " AS closed FROM issues"
                           " WHERE milestone_id = ?", row["id"])
    base = "%s/repos/%s/milestones/%d" % (app.api, full_name(repo), row["number"])
    return {"url": base, "html_url": "%s/%s/milestone/%d" % (app.url, full_name(repo), row["number"]),
            "labels_url": base + "/labels", "id": row["id"], "node_id": node_id("Milestone", row["id"]),
            "number": row["number"], "state": row["state"], "title": row["title"], "description": row["description"],
            "creator": user_json_by_id(app, row["creator_id"]), "open_issues": counts["open"] or 0,
            "closed_issues": counts["closed"] or 0, "created_at": row["created_at"], "updated_at": row["updated_at"],
            "closed_at": row["closed_at"], "due_on": row["due_on"]}


REACTIONS = ("+1", "-1", "laugh", "hooray", "confused", "heart", "rocket", "eyes")


def reaction_rollup(app, url, column, subject_id):
    """GitHub's "reactions" of an issue or comment: how many of each emoji, and where to list them.
    ``column``: reactions' column that names the subject (issue_id, comment_id, review_comment_id)."""
    counts = dict(app.store.all("SELECT content, COUNT(*) FROM reactions WHERE %s = ? GROUP BY content" % column,
                                subject_id))
    return dict({"url": url + "/reactions", "total_count": sum(counts.values())},
                **{name: counts.get(name, 0) for name in REACTIONS})


def issue_json(app, repo, row):
    """GitHub's issue; pull requests appear too, with a pull_request key, as on GitHub."""
    store, name = app.store, full_name(repo)
    base = "%s/repos/%s/issues/%d" % (app.api, name, row["number"])
    labels = store.all("SELECT l.* FROM labels l JOIN issue_labels il ON il.label_id = l.id WHERE il.issue_id = ?"
                       " ORDER BY l.name", row["id"])
    assignees = store.all("SELECT a.* FROM accounts a JOIN issue_assignees ia ON ia.user_id = a.id"
                          " WHERE ia.issue_id = ? ORDER BY a.login", row["id"])
    milestone = store.one("SELECT * FROM milestones WHERE id = ?", row["milestone_id"]) if row["milestone_id"] else None
    comments = store.one("SELECT COUNT(*) AS n FROM comments WHERE issue_id = ?", row["id"])["n"]
    out = {
        "id": row["id"], "node_id": node_id("Issue", row["id"]), "url": base, "repository_url": "%s/repos/%s" % (
            app.api, name), "labels_url": base + "/labels{/name}", "comments_url": base + "/comments",
        "events_url": base + "/events", "html_url": "%s/%s/%s/%d" % (app.url, name, "pull" if row["is_pull"] else
                                                                     "issues", row["number"]),
        "number": row["number"], "state": row["state"], "state_reason": row["state_reason"], "title": row["title"],
        "body": row["body"], "user": user_json_by_id(app, row["user_id"]),
        "labels": [label_json(app, repo, label) for label in labels],
        "assignee": user_json(app, assignees[0]) if assignees else None,
        "assignees": [user_json(app, a) for a in assignees],
        "milestone": milestone_json(app, repo, milestone) if milestone else None,
        "locked": bool(row["locked"]), "active_lock_reason": row["lock_reason"], "comments": comments,
        "closed_at": row["closed_at"], "created_at": row["created_at"], "updated_at": row["updated_at"],
        "closed_by": user_json_by_id(app, row["closed_by"]),
        "author_association": author_association(store, repo, row["user_id"]),
        "reactions": reaction_rollup(app, base, "issue_id", row["id"]),
    }
    if row["is_pull"]:
        pull = store.one("SELECT merged_at FROM pulls WHERE issue_id = ?", row["id"])
        html_url = "%s/%s/pull/%d" % (app.url, name, row["number"])
        out["pull_request"] = {"url": "%s/repos/%s/pulls/%d" % (app.api, name, row["number"]), "html_url": html_url,
                               "diff_url": html_url + ".diff", "patch_url": html_url + ".patch",
                               "merged_at": pull["merged_at"] if pull else None}
    return out


def comment_json(app, repo, issue_number, row):
    name = full_name(repo)
    return {"id": row["id"], "node_id": node_id("IssueComment", row["id"]),
            "url": "%s/repos/%s/issues/comments/%d" % (app.api, name, row["id"]),
            "html_url": "%s/%s/issues/%d#issuecomment-%d" % (app.url, name, issue_number, row["id"]),
            "issue_url": "%s/repos/%s/issues/%d" % (app.api, name, issue_number), "body": row["body"],
            "user": user_json_by_id(app, row["user_id"]), "created_at": row["created_at"],
            "updated_at": row["updated_at"], "author_association": author_association(app.store, repo, row["user_id"]),
            "reactions": reaction_rollup(app, "%s/repos/%s/issues/comments/%d" % (app.api, name, row["id"]), "comment_id",
                                         row["id"])}


# -- issue events: what changed an issue, by whom, written in the same transaction as the change ---------
# (a comment or a submitted review is one too, kept for the timeline's order; the events list leaves them out)
TIMELINE_ONLY = ("commented", "reviewed")
# an event's webhook action where the names differ (a rename is an edit to a webhook)
WEBHOOK_ACTIONS = {"renamed": "edited"}

def issue_facts(db, issue_id):
    """What events are told from: state, title, lock, milestone, labels (name: color), assignee ids."""
    facts = dict(db.execute("SELECT repo_id, is_pull, state, title, locked, lock_reason, milestone_id FROM issues"
                            " WHERE id = ?", (issue_id,)).fetchone())
    facts["labels"] = dict(db.execute("SELECT l.name, l.color FROM labels l JOIN issue_labels il ON il.label_id = l.id"
                                      " WHERE il.issue_id = ?", (issue_id,)).fetchall())
    facts["assignees"] = {r[0] for r in db.execute("SELECT user_id FROM issue_assignees WHERE issue_id = ?",
                                                   (issue_id,))}
    return facts


def told_changes(db, before, after):
    """[(event, detail)] from two issue_facts, named as GitHub names them."""
    events = []
    if before["state"] != after["state"]:
        events.append(("closed" if after["state"] == "closed" else "reopened", {}))
    if before["title"] != after["title"]:
        events.append(("renamed", {"rename": {"from": before["title"], "to": after["title"]}}))
    if before["locked"] != after["locked"]:
        events.append(("locked", {"lock_reason": after["lock_reason"]}) if after["locked"] else ("unlocked", {}))
    if before["milestone_id"] != after["milestone_id"]:
        for event, milestone_id in (("demilestoned", before["milestone_id"]), ("milestoned", after["milestone_id"])):
            if milestone_id is not None:
                title = db.execute("SELECT title FROM milestones WHERE id = ?", (milestone_id,)).fetchone()
                events.append((event, {"milestone": {"title": title[0] if title else ""}}))
    for event, ours, theirs in (("unlabeled", before, after), ("labeled", after, before)):
        events += [(event, {"label": {"name": name, "color": ours["labels"][name]}})
                   for name in sorted(set(ours["labels"]) - set(theirs["labels"]))]
    for event, ours, theirs in (("unassigned", before, after), ("assigned", after, before)):
        events += [(event, {"assignee": user_id}) for user_id in sorted(ours["assignees"] - theirs["assignees"])]
    return events


def insert_event(db, issue_id, actor_id, event, detail=None, commit_id=None, stamp=None):
    db.execute("INSERT INTO issue_events (issue_id, actor_id, event, detail, commit_id, created_at)"
               " VALUES (?, ?, ?, ?, ?, ?)", (issue_id, actor_id, event, json.dumps(detail or {}), commit_id,
                                              stamp or now()))


@contextlib.contextmanager
def changing_issue(req, issue_id):
    """The transaction of a change to an issue or pull request: what it changed is written as its events."""
    with req.transaction() as db:
        before = issue_facts(db, issue_id)
        yield db
        after = issue_facts(db, issue_id)
        for event, detail in told_changes(db, before, after):
            insert_event(db, issue_id, req.principal.user["id"], event, detail)
            req.announce(after["repo_id"], "pull_request" if after["is_pull"] else "issues",
                         WEBHOOK_ACTIONS.get(event, event), dict(detail, issue_id=issue_id))


def event_json(app, repo, row, issue=None):
    """GitHub's issue event; with ``issue`` (the repository's list), the issue it happened to."""
    detail, name = json.loads(row["detail"]), full_name(repo)
    out = {"id": row["id"], "node_id": node_id("IssueEvent", row["id"]),
           "url": "%s/repos/%s/issues/events/%d" % (app.api, name, row["id"]), "actor": user_json_by_id(
               app, row["actor_id"]), "event": row["event"], "commit_id": row["commit_id"],
           "commit_url": "%s/repos/%s/commits/%s" % (app.api, name, row["commit_id"]) if row["commit_id"] else None,
           "created_at": row["created_at"], "performed_via_github_app": None}
    if "assignee" in detail:
        out.update(assignee=user_json_by_id(app, detail["assignee"]), assigner=out["actor"])
    out.update({key: detail[key] for key in ("label", "rename", "milestone", "lock_reason") if key in detail})
    if issue is not None:
        out["issue"] = issue_json(app, repo, issue)
    return out


def find_issue(req, owner, repo, number, action="read_code", **context):
    """(repository, issue row) once ``action`` is allowed; the issue's author and lock go to decide()."""
    repo_row = find_repo(req, owner, repo)
    issue = req.app.store.one("SELECT * FROM issues WHERE repo_id = ? AND number = ?", repo_row["id"], int(number))
    if issue is None:
        raise HTTPError(404, "Not Found")
    if action != "read_code":
        req.authorize(action, Resource.repo(repo_row), author_id=issue["user_id"], locked=bool(issue["locked"]),
                      **context)
    return repo_row, issue


def resolve_labels(db, repo_id, names, resource="Issue"):
    """Label ids for names, creating unknown labels with a grey colour as GitHub does."""
    ids = []
    for name in names:
        if not isinstance(name, str) or not name.strip() or len(name) > 50:
            raise invalid(resource, "labels", message="labels must be names of at most 50 characters")
        row = db.execute("SELECT id FROM labels WHERE repo_id = ? AND name = ?", (repo_id, name)).fetchone()
        ids.append(row["id"] if row else insert(db, "INSERT INTO labels (repo_id, name, color) VALUES (?, ?, 'ededed')",
                                                    (repo_id, name)))
    return ids


def resolve_assignees(req, repo, logins):
    """Account ids for logins that may be assigned: people granted access, not everyone who can read
    a public repository."""
    ids = []
    for login in logins:
        user = account_by_login(req.app.store, login) if isinstance(login, str) else None
        level, how = repo_permission(req.app.store, user, repo) if user is not None else ("none", "")
        if user is None or user["kind"] == "org" or RANK[level] < RANK["read"] or how == "public repository":
            raise invalid("Issue", "assignees", "invalid", "%s cannot be assigned to this repository" % login)
        ids.append(user["id"])
    return ids


def resolve_milestone(db, repo_id, number):
    if number is None:
        return None
    if isinstance(number, bool) or not isinstance(number, int):
        raise invalid("Issue", "milestone", message="milestone must be a milestone number or null")
    row = db.execute("SELECT id FROM milestones WHERE repo_id = ? AND number = ?", (repo_id, number)).fetchone()
    if row is None:
        raise invalid("Issue", "milestone", "invalid", "milestone %d does not exist" % number)
    return row["id"]


def set_issue_relations(req, db, repo, issue_id, body):
    """labels, assignees (or assignee) and milestone from a body, for callers allowed to triage."""
    if "labels" in body:
        labels = [l["name"] if isinstance(l, dict) else l for l in req.field(body, "labels", list, "Issue")]
        db.execute("DELETE FROM issue_labels WHERE issue_id = ?", (issue_id,))
        for label_id in resolve_labels(db, repo["id"], labels):
            db.execute("INSERT INTO issue_labels (issue_id, label_id) VALUES (?, ?)"
                       " ON CONFLICT DO NOTHING", (issue_id, label_id))
    logins = None
    if "assignees" in body:
        logins = req.field(body, "assignees", list, "Issue") or []
    elif "assignee" in body:
        logins = [body["assignee"]] if body["assignee"] else []
    if logins is not None:
        before = {r[0] for r in db.execute("SELECT user_id FROM issue_assignees WHERE issue_id = ?", (issue_id,))}
        db.execute("DELETE FROM issue_assignees WHERE issue_id = ?", (issue_id,))
        for user_id in resolve_assignees(req, repo, logins[:10]):
            db.execute("INSERT INTO issue_assignees (issue_id, user_id) VALUES (?, ?)"
                       " ON CONFLICT DO NOTHING", (issue_id, user_id))
            if user_id not in before:
                notify(req, db, issue_id, event_reasons={user_id: "assign"})
    if "milestone" in body:
        db.execute("UPDATE issues SET milestone_id = ? WHERE id = ?",
                   (resolve_milestone(db, repo["id"], body["milestone"]), issue_id))


def state_change(req, state, reason=None):
    """The columns that closing or reopening an issue sets."""
    closing = state == "closed"
    return {"state": state, "closed_at": now() if closing else None,
            "closed_by": req.principal.user["id"] if closing else None,
            "state_reason": (reason or "completed") if closing else "reopened"}


def next_issue_number(db, repo_id):
    """One past the highest number the repository has given, its deleted issues' included."""
    row = db.execute("SELECT (SELECT MAX(number) FROM issues WHERE repo_id = ?) AS given, deleted_issue_number"
                     " FROM repos WHERE id = ?", (repo_id, repo_id)).fetchone()
    return max(row["given"] or 0, row["deleted_issue_number"]) + 1


def insert_issue(db, repo_id, principal, title, body, is_pull=False):
    stamp = now()
    number = next_issue_number(db, repo_id)
    issue_id = insert(db, "INSERT INTO issues (repo_id, number, user_id, title, body, is_pull, created_at, updated_at,"
                          " acting_for, task) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                          (repo_id, number, principal.user["id"], title, body, int(is_pull), stamp, stamp,
                           *acting_for(principal)))
    return issue_id, number


def acting_for(principal):
    """(the human an agent acts for, the task it acts under), or (None, None): kept with what it opens and
    writes, so every page that names it as the actor says for whom and why."""
    if principal.user is None or principal.user["kind"] != "agent":
        return None, None
    return principal.delegator, principal.grant["task"] if principal.grant else None


@route("POST", "/api/v3/repos/{owner}/{repo}/issues")
def create_issue(req, owner, repo):
    body = req.json()
    title = req.text_field(body, "title", "Issue", required=True, limit=256)
    text = req.text_field(body, "body", "Issue")
    row = find_repo(req, owner, repo, "open_issue")
    return 201, issue_json(req.app, row, open_issue(req, row, title, text, body))


def open_issue(req, row, title, text, relations):
    """After open_issue was allowed: the issue row. As on GitHub, labels, assignees and milestone
    from someone who may not triage are dropped."""
    may_triage = req.can("triage_issue", Resource.repo(row))
    with req.transaction() as db:
        issue_id, number = insert_issue(db, row["id"], req.principal, title, text)
        if may_triage:
            set_issue_relations(req, db, row, issue_id, relations)
        notify(req, db, issue_id, text)
        req.effect("opened issue #%d" % number)
        req.announce(row["id"], "issues", "opened", {"issue_id": issue_id})
    return req.app.store.one("SELECT * FROM issues WHERE id = ?", issue_id)


ISSUE_SORTS = {"created": "created_at", "updated": "updated_at",
               "comments": "(SELECT COUNT(*) FROM comments c WHERE c.issue_id = i.id)"}


def issue_filters(req, where, args):
    """The list filters GitHub takes: state, labels, assignee, creator, mentioned, milestone, since."""
    state = req.query.get("state", "open")
    if state in ("open", "closed"):
        where.append("i.state = ?")
        args.append(state)
    elif state != "all":
        raise invalid("Issue", "state", message="state must be open, closed or all")
    for label in [l for l in req.query.get("labels", "").split(",") if l.strip()]:
        where.append("i.id IN (SELECT il.issue_id FROM issue_labels il JOIN labels l ON l.id = il.label_id"
                     " WHERE l.name = ?)")
        args.append(label.strip())
    assignee = req.query.get("assignee")
    if assignee == "none":
        where.append("NOT EXISTS (SELECT 1 FROM issue_assignees ia WHERE ia.issue_id = i.id)")
    elif assignee == "*":
        where.append("EXISTS (SELECT 1 FROM issue_assignees ia WHERE ia.issue_id = i.id)")
    elif assignee:
        where.append("i.id IN (SELECT ia.issue_id FROM issue_assignees ia JOIN accounts a ON a.id = ia.user_id"
                     " WHERE a.login = ?)")
        args.append(assignee)
    if req.query.get("creator"):
        where.append("i.user_id = (SELECT id FROM accounts WHERE login = ?)")
        args.append(req.query["creator"])
    if req.query.get("mentioned"):
        mention = "%@" + req.query["mentioned"] + "%"
        where.append("(LOWER(i.body) LIKE LOWER(?) OR i.id IN (SELECT issue_id FROM comments WHERE LOWER(body) LIKE LOWER(?)))")
        args += [mention, mention]
    milestone = req.query.get("milestone")
    if milestone == "none":
        where.append("i.milestone_id IS NULL")
    elif milestone == "*":
        where.append("i.milestone_id IS NOT NULL")
    elif milestone:
        where.append("i.milestone_id = (SELECT id FROM milestones m WHERE m.repo_id = i.repo_id AND m.number = ?)")
        args.append(int(milestone) if milestone.isdigit() else -1)
    if req.query.get("since"):
        where.append("i.updated_at >= ?")
        args.append(req.query["since"])
    sort = ISSUE_SORTS.get(req.query.get("sort", "created"))
    if sort is None:
        raise invalid("Issue", "sort", message="sort must be created, updated or comments")
    direction = "ASC" if req.query.get("direction") == "asc" else "DESC"
    return " ORDER BY %s %s, i.number %s" % (sort, direction, direction)


def note_untrusted(req, repo, items):
    """For a task whose grant waits for a human after untrusted input (requires_approval_after_untrusted):
    each of ``items``, (what, author id), that an account without write access on ``repo`` wrote, noted
    as the task's read (rule_information_flow)."""
    grant = req.principal.grant
    if grant is None or not grant["constraints"].get("requires_approval_after_untrusted"):
        return
    authors = {author_id: account_by_id(req.app.store, author_id) for author_id in {i for _, i in items}}
    for what, author_id in items:
        author = authors[author_id]
        if author is None or RANK[repo_permission(req.app.store, author, repo)[0]] < RANK["write"]:
            req.note_read("untrusted", "repo:" + full_name(repo), "%s by %s" % (
                what, author["login"] if author else "a deleted account"))


@route("GET", "/api/v3/repos/{owner}/{repo}/issues")
def list_issues(req, owner, repo):
    row = find_repo(req, owner, repo)
    where, args = ["i.repo_id = ?"], [row["id"]]
    order = issue_filters(req, where, args)
    issues = req.paginate(req.app.store.all("SELECT i.* FROM issues i WHERE %s%s" % (" AND ".join(where), order),
                                            *args))
    note_untrusted(req, row, [("issue #%d" % i["number"], i["user_id"]) for i in issues])
    return [issue_json(req.app, row, i) for i in issues]


@route("GET", "/api/v3/issues")
@route("GET", "/api/v3/user/issues")
def list_my_issues(req):
    """Issues across the repositories the caller can read: filter=assigned (default), created,
    mentioned, subscribed (as assigned or created here) or all."""
    user = signed_in(req)
    req.check("read_account", Resource.account(user))
    where, args = [], []
    kind = req.query.get("filter", "assigned")
    if kind == "assigned":
        where.append("i.id IN (SELECT issue_id FROM issue_assignees WHERE user_id = ?)")
        args.append(user["id"])
    elif kind == "created":
        where.append("i.user_id = ?")
        args.append(user["id"])
    elif kind in ("mentioned", "subscribed"):
        where.append("(i.user_id = ? OR i.id IN (SELECT issue_id FROM issue_assignees WHERE user_id = ?)"
                     " OR LOWER(i.body) LIKE LOWER(?))")
        args += [user["id"], user["id"], "%@" + user["login"] + "%"]
    elif kind != "all":
        raise invalid("Issue", "filter", message="filter must be assigned, created, mentioned, subscribed or all")
    order = issue_filters(req, where, args)
    repos = {r["id"]: r for r, _ in visible_repos(req, repos_reachable_by(req.app.store, user))}
    if not repos:
        return []
    where.append("i.repo_id IN (%s)" % ",".join("?" * len(repos)))
    args += list(repos)
    issues = req.app.store.all("SELECT i.* FROM issues i WHERE %s%s" % (" AND ".join(where), order), *args)
    return [issue_json(req.app, repos[i["repo_id"]], i) for i in req.paginate(issues)]


@route("GET", "/api/v3/repos/{owner}/{repo}/issues/{number:int}")
def get_issue(req, owner, repo, number):
    row, issue = find_issue(req, owner, repo, number)
    note_untrusted(req, row, [("issue #%d" % issue["number"], issue["user_id"])])
    return issue_json(req.app, row, issue)


@route("PATCH", "/api/v3/repos/{owner}/{repo}/issues/{number:int}")
def update_issue(req, owner, repo, number):
    body = req.json()
    row, issue = find_issue(req, owner, repo, number, "edit_issue")
    fields = {}
    title = req.text_field(body, "title", "Issue", limit=256)
    if title is not None:
        if not title.strip():
            raise invalid("Issue", "title", "missing_field", "title cannot be blank")
        fields["title"] = title
    if "body" in body:
        fields["body"] = req.text_field(body, "body", "Issue")
    state = req.field(body, "state", str, "Issue")
    if state is not None:
        if state not in ("open", "closed"):
            raise invalid("Issue", "state", message="state must be open or closed")
        if issue["is_pull"] and state == "open" and req.app.store.one(
                "SELECT merged_at FROM pulls WHERE issue_id = ?", issue["id"])["merged_at"]:
            raise invalid("PullRequest", "state", "custom", "a merged pull request cannot be reopened")
        reason = req.field(body, "state_reason", str, "Issue")
        if reason not in (None, "completed", "not_planned", "reopened"):
            raise invalid("Issue", "state_reason", message="state_reason must be completed, not_planned or reopened")
        if state != issue["state"]:
            fields.update(state_change(req, state, reason))
    relations = {k: body[k] for k in ("labels", "assignees", "assignee", "milestone") if k in body}
    if relations:
        req.authorize("triage_issue", Resource.repo(row))
    with changing_issue(req, issue["id"]) as db:
        fields["updated_at"] = now()
        update_row(db, "issues", fields, "id", issue["id"])
        set_issue_relations(req, db, row, issue["id"], relations)
        req.effect("updated #%d: %s" % (issue["number"], ", ".join(sorted(set(fields) - {"updated_at"}
                                                                            | set(relations))) or "nothing"))
    return issue_json(req.app, row, req.app.store.one("SELECT * FROM issues WHERE id = ?", issue["id"]))


@route("PUT", "/api/v3/repos/{owner}/{repo}/issues/{number:int}/lock")
def lock_issue(req, owner, repo, number):
    body = req.json()
    row, issue = find_issue(req, owner, repo, number)
    req.authorize("triage_issue", Resource.repo(row))
    reason = req.field(body, "lock_reason", str, "Issue")
    if reason not in (None, "off-topic", "too heated", "resolved", "spam"):
        raise invalid("Issue", "lock_reason", message="lock_reason must be off-topic, too heated, resolved or spam")
    set_locked(req, issue, True, reason)
    return 204, None


@route("DELETE", "/api/v3/repos/{owner}/{repo}/issues/{number:int}/lock")
def unlock_issue(req, owner, repo, number):
    row, issue = find_issue(req, owner, repo, number)
    req.authorize("triage_issue", Resource.repo(row))
    set_locked(req, issue, False)
    return 204, None


def set_locked(req, issue, locked, reason=None):
    """Lock a conversation (comments then need triage) or unlock it; REST and GraphQL alike."""
    with changing_issue(req, issue["id"]) as db:
        db.execute("UPDATE issues SET locked = ?, lock_reason = ?, updated_at = ? WHERE id = ?",
                   (int(locked), reason if locked else None, now(), issue["id"]))
        req.effect("%s #%d" % ("locked" if locked else "unlocked", issue["number"]))


@route("GET", "/api/v3/repos/{owner}/{repo}/issues/{number:int}/comments")
def list_comments(req, owner, repo, number):
    row, issue = find_issue(req, owner, repo, number)
    where, args = "issue_id = ?", [issue["id"]]
    if req.query.get("since"):
        where, args = where + " AND updated_at >= ?", args + [req.query["since"]]
    rows = req.paginate(req.app.store.all("SELECT * FROM comments WHERE %s ORDER BY id" % where, *args))
    note_untrusted(req, row, [("a comment on #%d" % issue["number"], c["user_id"]) for c in rows])
    return [comment_json(req.app, row, issue["number"], c) for c in rows]


@route("GET", "/api/v3/repos/{owner}/{repo}/issues/comments")
def list_repo_comments(req, owner, repo):
    row = find_repo(req, owner, repo)
    rows = req.paginate(req.app.store.all("SELECT c.*, i.number FROM comments c JOIN issues i ON i.id = c.issue_id"
                                          " WHERE i.repo_id = ? ORDER BY c.id", row["id"]))
    note_untrusted(req, row, [("a comment on #%d" % c["number"], c["user_id"]) for c in rows])
    return [comment_json(req.app, row, c["number"], c) for c in rows]


@route("POST", "/api/v3/repos/{owner}/{repo}/issues/{number:int}/comments")
def create_comment(req, owner, repo, number):
    body = req.json()
    text = req.text_field(body, "body", "IssueComment", required=True)
    row, issue = find_issue(req, owner, repo, number, "comment")
    return 201, comment_json(req.app, row, issue["number"], add_comment(req, issue, text))


def add_comment(req, issue, text):
    """After comment was allowed: the new comment row."""
    with req.transaction() as db:
        stamp = now()
        helped, task = acting_for(req.principal)
        comment_id = insert_row(db, "comments", {"issue_id": issue["id"], "user_id": req.principal.user["id"],
                                                 "body": text, "created_at": stamp, "updated_at": stamp,
                                                 "acting_for": helped, "task": task})
        db.execute("UPDATE issues SET updated_at = ? WHERE id = ?", (stamp, issue["id"]))
        insert_event(db, issue["id"], req.principal.user["id"], "commented", {"comment_id": comment_id}, stamp=stamp)
        req.announce(issue["repo_id"], "issue_comment", "created", {"issue_id": issue["id"], "comment_id": comment_id})
        notify(req, db, issue["id"], text)
        req.effect("commented on #%d (comment %d)" % (issue["number"], comment_id))
    return req.app.store.one("SELECT * FROM comments WHERE id = ?", comment_id)


def find_comment(req, owner, repo, comment_id, action="read_code"):
    row = find_repo(req, owner, repo)
    comment = req.app.store.one("SELECT c.*, i.number FROM comments c JOIN issues i ON i.id = c.issue_id"
                                " WHERE c.id = ? AND i.repo_id = ?", int(comment_id), row["id"])
    if comment is None:
        raise HTTPError(404, "Not Found")
    if action != "read_code":
        req.authorize(action, Resource.repo(row), author_id=comment["user_id"])
    return row, comment


@route("GET", "/api/v3/repos/{owner}/{repo}/issues/comments/{comment_id:int}")
def get_comment(req, owner, repo, comment_id):
    row, comment = find_comment(req, owner, repo, comment_id)
    note_untrusted(req, row, [("a comment on #%d" % comment["number"], comment["user_id"])])
    return comment_json(req.app, row, comment["number"], comment)


@route("PATCH", "/api/v3/repos/{owner}/{repo}/issues/comments/{comment_id:int}")
def update_comment(req, owner, repo, comment_id):
    body = req.json()
    text = req.text_field(body, "body", "IssueComment", required=True)
    row, comment = find_comment(req, owner, repo, comment_id, "edit_comment")
    with req.transaction() as db:
        db.execute("UPDATE comments SET body = ?, updated_at = ? WHERE id = ?", (text, now(), comment["id"]))
        req.effect("edited comment %d" % comment["id"])
    return comment_json(req.app, row, comment["number"],
                        req.app.store.one("SELECT * FROM comments WHERE id = ?", comment["id"]))


@route("DELETE", "/api/v3/repos/{owner}/{repo}/issues/comments/{comment_id:int}")
def delete_comment(req, owner, repo, comment_id):
    _, comment = find_comment(req, owner, repo, comment_id, "edit_comment")
    with req.transaction() as db:
        db.execute("DELETE FROM comments WHERE id = ?", (comment["id"],))
        req.effect("deleted comment %d on #%d" % (comment["id"], comment["number"]))
    return 204, None


def label_fields(req, body, creating):
    fields = {}
    name = req.field(body, "name", str, "Label", required=creating)
    if name is not None:
        if not name.strip() or len(name) > 50:
            raise invalid("Label", "name", message="name must be 1 to 50 characters")
        fields["name"] = name
    new_name = req.field(body, "new_name", str, "Label")
    if new_name is not None:
        if not new_name.strip() or len(new_name) > 50:
            raise invalid("Label", "new_name", message="new_name must be 1 to 50 characters")
        fields["name"] = new_name
    color = req.field(body, "color", str, "Label", default="ededed" if creating else None)
    if color is not None:
        color = color.lstrip("#")
        if not HEX_COLOR_RE.match(color):
            raise invalid("Label", "color", message="color must be six hexadecimal digits, like f29513")
        fields["color"] = color.lower()
    description = req.text_field(body, "description", "Label", limit=100)
    if description is not None:
        fields["description"] = description
    return fields


def find_label(req, row, name):
    label = req.app.store.one("SELECT * FROM labels WHERE repo_id = ? AND name = ?", row["id"], name)
    if label is None:
        raise HTTPError(404, "Not Found")
    return label


@route("GET", "/api/v3/repos/{owner}/{repo}/labels")
def list_labels(req, owner, repo):
    row = find_repo(req, owner, repo)
    return [label_json(req.app, row, l) for l in req.paginate(
        req.app.store.all("SELECT * FROM labels WHERE repo_id = ? ORDER BY name", row["id"]))]


@route("POST", "/api/v3/repos/{owner}/{repo}/labels")
def create_label(req, owner, repo):
    body = req.json()
    fields = label_fields(req, body, creating=True)
    row = find_repo(req, owner, repo, "manage_labels")
    with req.transaction() as db:
        if db.execute("SELECT 1 FROM labels WHERE repo_id = ? AND name = ?", (row["id"], fields["name"])).fetchone():
            raise invalid("Label", "name", "already_exists", "label %s already exists" % fields["name"])
        label_id = insert(db, "INSERT INTO labels (repo_id, name, color, description) VALUES (?, ?, ?, ?)",
                              (row["id"], fields["name"], fields["color"], fields.get("description")))
        req.effect("created label %s" % fields["name"])
    return 201, label_json(req.app, row, req.app.store.one("SELECT * FROM labels WHERE id = ?", label_id))


@route("GET", "/api/v3/repos/{owner}/{repo}/labels/{name}")
def get_label(req, owner, repo, name):
    row = find_repo(req, owner, repo)
    return label_json(req.app, row, find_label(req, row, name))


@route("PATCH", "/api/v3/repos/{owner}/{repo}/labels/{name}")
def update_label(req, owner, repo, name):
    body = req.json()
    fields = label_fields(req, body, creating=False)
    row = find_repo(req, owner, repo, "manage_labels")
    label = find_label(req, row, name)
    with req.transaction() as db:
        if "name" in fields and fields["name"].lower() != label["name"].lower() and db.execute(
                "SELECT 1 FROM labels WHERE repo_id = ? AND name = ?", (row["id"], fields["name"])).fetchone():
            raise invalid("Label", "name", "already_exists", "label %s already exists" % fields["name"])
        update_row(db, "labels", fields, "id", label["id"])
        req.effect("updated label %s" % label["name"])
    return label_json(req.app, row, req.app.store.one("SELECT * FROM labels WHERE id = ?", label["id"]))


@route("DELETE", "/api/v3/repos/{owner}/{repo}/labels/{name}")
def delete_label(req, owner, repo, name):
    row = find_repo(req, owner, repo, "manage_labels")
    label = find_label(req, row, name)
    with req.transaction() as db:
        db.execute("DELETE FROM labels WHERE id = ?", (label["id"],))
        req.effect("deleted label %s" % label["name"])
    return 204, None


def issue_labels_json(req, row, issue):
    return [label_json(req.app, row, l) for l in req.app.store.all(
        "SELECT l.* FROM labels l JOIN issue_labels il ON il.label_id = l.id WHERE il.issue_id = ? ORDER BY l.name",
        issue["id"])]


@route("GET", "/api/v3/repos/{owner}/{repo}/issues/{number:int}/labels")
def list_issue_labels(req, owner, repo, number):
    row, issue = find_issue(req, owner, repo, number)
    return req.paginate(issue_labels_json(req, row, issue))


def label_names(req, body):
    """POST/PUT bodies for issue labels: {"labels": ["bug"]}, {"labels": [{"name": "bug"}]} or ["bug"]."""
    names = req.field(body, "labels", list, "Issue", required=True)
    return [l["name"] if isinstance(l, dict) and "name" in l else l for l in names]


def change_issue_labels(req, owner, repo, number, replace):
    body = req.json(array_key="labels")
    row, issue = find_issue(req, owner, repo, number, "triage_issue")
    names = label_names(req, body)
    with changing_issue(req, issue["id"]) as db:
        if replace:
            db.execute("DELETE FROM issue_labels WHERE issue_id = ?", (issue["id"],))
        for label_id in resolve_labels(db, row["id"], names):
            db.execute("INSERT INTO issue_labels (issue_id, label_id) VALUES (?, ?)"
                       " ON CONFLICT DO NOTHING", (issue["id"], label_id))
        db.execute("UPDATE issues SET updated_at = ? WHERE id = ?", (now(), issue["id"]))
        req.effect("%s labels of #%d: %s" % ("set" if replace else "added", issue["number"], ", ".join(names)))
    return issue_labels_json(req, row, issue)


@route("POST", "/api/v3/repos/{owner}/{repo}/issues/{number:int}/labels")
def add_issue_labels(req, owner, repo, number):
    return change_issue_labels(req, owner, repo, number, replace=False)


@route("PUT", "/api/v3/repos/{owner}/{repo}/issues/{number:int}/labels")
def set_issue_labels(req, owner, repo, number):
    return change_issue_labels(req, owner, repo, number, replace=True)


@route("DELETE", "/api/v3/repos/{owner}/{repo}/issues/{number:int}/labels")
def clear_issue_labels(req, owner, repo, number):
    _, issue = find_issue(req, owner, repo, number, "triage_issue")
    with changing_issue(req, issue["id"]) as db:
        db.execute("DELETE FROM issue_labels WHERE issue_id = ?", (issue["id"],))
        req.effect("removed every label of #%d" % issue["number"])
    return 204, None


@route("DELETE", "/api/v3/repos/{owner}/{repo}/issues/{number:int}/labels/{name}")
def remove_issue_label(req, owner, repo, number, name):
    row, issue = find_issue(req, owner, repo, number, "triage_issue")
    label = find_label(req, row, name)
    with changing_issue(req, issue["id"]) as db:
        if not db.execute("DELETE FROM issue_labels WHERE issue_id = ? AND label_id = ?",
                          (issue["id"], label["id"])).rowcount:
            raise HTTPError(404, "Label does not exist")
        req.effect("removed label %s from #%d" % (label["name"], issue["number"]))
    return issue_labels_json(req, row, issue)


def milestone_fields(req, body, creating):
    fields = {}
    title = req.text_field(body, "title", "Milestone", required=creating, limit=256)
    if title is not None:
        fields["title"] = title
    if "description" in body:
        fields["description"] = req.text_field(body, "description", "Milestone")
    state = req.field(body, "state", str, "Milestone")
    if state is not None:
        if state not in ("open", "closed"):
            raise invalid("Milestone", "state", message="state must be open or closed")
        fields["state"] = state
        fields["closed_at"] = now() if state == "closed" else None
    due_on = req.field(body, "due_on", str, "Milestone")
    if due_on is not None:
        try:
            fields["due_on"] = parse_time(due_on).strftime("%Y-%m-%dT%H:%M:%SZ")
        except ValueError:
            raise invalid("Milestone", "due_on", message="due_on must be an ISO 8601 time with a zone")
    return fields


def find_milestone(req, row, number):
    milestone = req.app.store.one("SELECT * FROM milestones WHERE repo_id = ? AND number = ?", row["id"], int(number))
    if milestone is None:
        raise HTTPError(404, "Not Found")
    return milestone


@route("GET", "/api/v3/repos/{owner}/{repo}/milestones")
def list_milestones(req, owner, repo):
    row = find_repo(req, owner, repo)
    state = req.query.get("state", "open")
    rows = req.app.store.all("SELECT * FROM milestones WHERE repo_id = ?%s ORDER BY %s %s" % (
        " AND state = ?" if state in ("open", "closed") else "",
        "due_on" if req.query.get("sort", "due_on") == "due_on" else "number",
        "DESC" if req.query.get("direction") == "desc" else "ASC"), row["id"],
        *([state] if state in ("open", "closed") else []))
    return [milestone_json(req.app, row, m) for m in req.paginate(rows)]


@route("POST", "/api/v3/repos/{owner}/{repo}/milestones")
def create_milestone(req, owner, repo):
    body = req.json()
    fields = milestone_fields(req, body, creating=True)
    row = find_repo(req, owner, repo, "manage_labels")
    with req.transaction() as db:
        if db.execute("SELECT 1 FROM milestones WHERE repo_id = ? AND title = ?", (row["id"], fields["title"])).fetchone():
            raise invalid("Milestone", "title", "already_exists", "milestone %s already exists" % fields["title"])
        number = db.execute("SELECT COALESCE(MAX(number), 0) + 1 AS n FROM milestones WHERE repo_id = ?",
                            (row["id"],)).fetchone()["n"]
        stamp = now()
        columns = dict(fields, repo_id=row["id"], number=number, creator_id=req.principal.user["id"],
                       created_at=stamp, updated_at=stamp)
        milestone_id = insert_row(db, "milestones", columns)
        req.effect("created milestone %d %s" % (number, fields["title"]))
    return 201, milestone_json(req.app, row, req.app.store.one("SELECT * FROM milestones WHERE id = ?", milestone_id))


@route("GET", "/api/v3/repos/{owner}/{repo}/milestones/{number:int}")
def get_milestone(req, owner, repo, number):
    row = find_repo(req, owner, repo)
    return milestone_json(req.app, row, find_milestone(req, row, number))


@route("GET", "/api/v3/repos/{owner}/{repo}/milestones/{number:int}/labels")
def list_milestone_labels(req, owner, repo, number):
    """The labels on the milestone's issues and pull requests, each once, by name."""
    row = find_repo(req, owner, repo)
    milestone = find_milestone(req, row, number)
    rows = req.app.store.all("SELECT DISTINCT l.* FROM labels l JOIN issue_labels il ON il.label_id = l.id JOIN issues i"
                             " ON i.id = il.issue_id WHERE i.milestone_id = ? ORDER BY l.name", milestone["id"])
    return req.paginate([label_json(req.app, row, r) for r in rows])


@route("PATCH", "/api/v3/repos/{owner}/{repo}/milestones/{number:int}")
def update_milestone(req, owner, repo, number):
    body = req.json()
    fields = milestone_fields(req, body, creating=False)
    row = find_repo(req, owner, repo, "manage_labels")
    milestone = find_milestone(req, row, number)
    with req.transaction() as db:
        fields["updated_at"] = now()
        update_row(db, "milestones", fields, "id", milestone["id"])
        req.effect("updated milestone %d" % milestone["number"])
    return milestone_json(req.app, row, req.app.store.one("SELECT * FROM milestones WHERE id = ?", milestone["id"]))


@route("DELETE", "/api/v3/repos/{owner}/{repo}/milestones/{number:int}")
def delete_milestone(req, owner, repo, number):
    row = find_repo(req, owner, repo, "manage_labels")
    milestone = find_milestone(req, row, number)
    with req.transaction() as db:
        db.execute("DELETE FROM milestones WHERE id = ?", (milestone["id"],))
        req.effect("deleted milestone %d" % milestone["number"])
    return 204, None
