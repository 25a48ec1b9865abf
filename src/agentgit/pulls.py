"""REST: pull requests and their merges."""

import re
import subprocess
import sys
import urllib.parse


from agentgit.config import now
from agentgit.errors import HTTPError, invalid
from agentgit.storage import update_row
from agentgit.gitstore import (branch_sha, changed_files, commit_patch, commits_between, copy_refs, merge_base,
                               merge_commit, merge_trees, open_repo, repo_dir, resolve_commit, tree_diff, write_commit)
from agentgit.accounts import REPO_SELECT, account_by_id, full_name, network_root, repo_by_id, signature
from agentgit.policy import Resource
from agentgit.intents import INTENT_FOLLOW_UPS
from agentgit.routing import route
from agentgit.serializers import commit_json, node_id, repo_json, user_json, user_json_by_id
from agentgit.lookups import find_repo
from agentgit.notifications import notify
from agentgit.issues import changing_issue, find_issue, insert_event, insert_issue, issue_json, note_untrusted


# -- pull requests ------------------------------------------------------------------------------

CLOSING_KEYWORDS_RE = re.compile(r"\b(?:close[sd]?|fix(?:e[sd])?|resolve[sd]?)\s*:?\s+#(\d+)\b", re.IGNORECASE)


class PullState:
    """A pull request as the repository sees it now: live head and base shas (pushing to the head
    branch updates an open pull request), merge base, the commits it brings, and mergeability."""

    def __init__(self, app, repo_row, issue, pull):
        self.app, self.repo_row, self.issue, self.pull = app, repo_row, issue, pull
        self.head_sha, self.base_sha = pull["head_sha"], pull["base_sha"]
        open_ = issue["state"] == "open"
        self.head_repo = head_repository(app.store, repo_row, pull)
        self.cross = pull["head_repo_id"] != repo_row["id"]
        if open_ and self.cross:
            self.head_sha = follow_fork_head(app, repo_row, issue, pull, self.head_repo) or self.head_sha
        with open_repo(app, repo_row["id"]) as git:
            if open_ and not self.cross:
                self.head_sha = git.refs[b"refs/heads/" + pull["head_ref"].encode()].decode() if (
                    b"refs/heads/" + pull["head_ref"].encode()) in git.refs else self.head_sha
                self.base_sha = git.refs[b"refs/heads/" + pull["base_ref"].encode()].decode() if (
                    b"refs/heads/" + pull["base_ref"].encode()) in git.refs else self.base_sha
            self.merge_base = merge_base(git, self.base_sha, self.head_sha)
            self.commits = commits_between(git, self.merge_base or "", self.head_sha) if not pull["merged_at"] else \
                commits_between(git, pull["base_sha"], pull["head_sha"])
            base_tree = git[self.merge_base.encode()].tree.decode() if self.merge_base else None
            self.files = changed_files(git, base_tree, git[self.head_sha.encode()].tree.decode())


def head_repository(store, repo_row, pull):
    """The repository a pull request's head branch lives in: its own, a fork's, or None once that fork
    is deleted."""
    if pull["head_repo_id"] == repo_row["id"]:
        return repo_row
    return repo_by_id(store, pull["head_repo_id"]) if pull["head_repo_id"] else None


def follow_fork_head(app, repo_row, issue, pull, head_repo):
    """The live head of a pull request from a fork: the fork's branch, whose new commits are brought
    over as refs/pull/N/head when the pull request is next looked at. None once the fork or its
    branch is gone (the last head brought over stands)."""
    pull_ref = "refs/pull/%d/head" % issue["number"]
    with open_repo(app, repo_row["id"]) as git:
        known = git.refs[pull_ref.encode()].decode() if pull_ref.encode() in git.refs else None
    if head_repo is None:
        return known
    with open_repo(app, head_repo["id"]) as fork:
        sha = branch_sha(fork, pull["head_ref"])
    if sha is not None and sha != known:
        try:
            copy_refs(app, repo_dir(app, head_repo["id"]), repo_dir(app, repo_row["id"]),
                      {pull_ref: "refs/heads/" + pull["head_ref"]})
        except (OSError, subprocess.CalledProcessError, KeyError) as error:
            # a read must not fail because the fork cannot be read now: the last head brought over stands
            print("agentgit: could not bring over %s of pull request #%d: %s" % (pull["head_ref"], issue["number"],
                                                                              error), file=sys.stderr)
            return known
    return sha


def mergeability(app, state):
    """(mergeable, mergeable_state) as GitHub reports them, from a trial merge that moves nothing."""
    if state.issue["state"] != "open":
        return None, "unknown"
    with open_repo(app, state.repo_row["id"]) as git:
        _, conflicts = merge_trees(git, state.merge_base, state.base_sha, state.head_sha)
    if conflicts:
        return False, "dirty"
    return True, "draft" if state.pull["draft"] else "clean"


def pull_side_json(app, repo_row, ref, sha):
    owner = {"id": repo_row["owner_id"], "login": repo_row["owner_login"], "kind": repo_row["owner_kind"],
             "site_admin": repo_row["owner_site_admin"]}
    return {"label": "%s:%s" % (repo_row["owner_login"], ref), "ref": ref, "sha": sha,
            "user": user_json(app, owner), "repo": repo_json(app, repo_row)}


def pull_json(app, repo_row, issue, pull, detail=False):
    """GitHub's pull-request (``detail``: with mergeability and diff statistics) or pull-request-simple."""
    state = PullState(app, repo_row, issue, pull)
    name = full_name(repo_row)
    api = "%s/repos/%s" % (app.api, name)
    html_url = "%s/%s/pull/%d" % (app.url, name, issue["number"])
    base = issue_json(app, repo_row, issue)
    requested = app.store.all("SELECT a.* FROM accounts a JOIN review_requests r ON r.user_id = a.id"
                              " WHERE r.issue_id = ? ORDER BY a.login", issue["id"])
    out = {
        "url": "%s/pulls/%d" % (api, issue["number"]), "id": issue["id"], "node_id": node_id("PullRequest", issue["id"]),
        "html_url": html_url, "diff_url": html_url + ".diff", "patch_url": html_url + ".patch", "issue_url": base["url"],
        "commits_url": "%s/pulls/%d/commits" % (api, issue["number"]),
        "review_comments_url": "%s/pulls/%d/comments" % (api, issue["number"]),
        "review_comment_url": "%s/pulls/comments{/number}" % api, "comments_url": base["comments_url"],
        "statuses_url": "%s/statuses/%s" % (api, state.head_sha), "number": issue["number"],
        "state": issue["state"], "locked": base["locked"], "title": issue["title"], "user": base["user"],
        "body": issue["body"], "labels": base["labels"], "milestone": base["milestone"],
        "active_lock_reason": base["active_lock_reason"], "created_at": issue["created_at"],
        "updated_at": issue["updated_at"], "closed_at": issue["closed_at"], "merged_at": pull["merged_at"],
        "merge_commit_sha": pull["merge_commit_sha"], "assignee": base["assignee"], "assignees": base["assignees"],
        "requested_reviewers": [user_json(app, r) for r in requested], "requested_teams": [],
        "head": pull_side_json(app, state.head_repo or repo_row, pull["head_ref"], state.head_sha),
        "base": pull_side_json(app, repo_row, pull["base_ref"], state.base_sha),
        "_links": {key: {"href": href} for key, href in (
            ("self", "%s/pulls/%d" % (api, issue["number"])), ("html", html_url), ("issue", base["url"]),
            ("comments", base["comments_url"]), ("review_comments", "%s/pulls/%d/comments" % (api, issue["number"])),
            ("review_comment", "%s/pulls/comments{/number}" % api),
            ("commits", "%s/pulls/%d/commits" % (api, issue["number"])),
            ("statuses", "%s/statuses/%s" % (api, state.head_sha)))},
        "author_association": base["author_association"], "auto_merge": None, "draft": bool(pull["draft"]),
    }
    if detail:
        mergeable, mergeable_state = mergeability(app, state)
        reviews = app.store.one("SELECT COUNT(*) AS n FROM review_comments WHERE issue_id = ? AND review_id IN (SELECT id"
                                 " FROM reviews WHERE state != 'PENDING')", issue["id"])["n"]
        out.update({
            "merged": pull["merged_at"] is not None, "mergeable": mergeable, "rebaseable": mergeable,
            "mergeable_state": mergeable_state, "merged_by": user_json_by_id(app, pull["merged_by"]),
            "comments": base["comments"], "review_comments": reviews, "maintainer_can_modify": False,
            "commits": len(state.commits), "additions": sum(f[2] for f in state.files),
            "deletions": sum(f[3] for f in state.files), "changed_files": len(state.files),
        })
    return out


def find_pull(req, owner, repo, number, action="read_code", **context):
    repo_row, issue = find_issue(req, owner, repo, number, action, **context)
    pull = req.app.store.one("SELECT * FROM pulls WHERE issue_id = ?", issue["id"])
    if pull is None:
        raise HTTPError(404, "Not Found")
    return repo_row, issue, pull


@route("POST", "/api/v3/repos/{owner}/{repo}/pulls")
def create_pull(req, owner, repo):
    body = req.json()
    title = req.text_field(body, "title", "PullRequest", required=True, limit=256)
    text = req.text_field(body, "body", "PullRequest")
    head = req.field(body, "head", str, "PullRequest", required=True)
    base = req.field(body, "base", str, "PullRequest", required=True)
    draft = req.field(body, "draft", bool, "PullRequest", default=False)
    row = find_repo(req, owner, repo, "open_pr")
    issue_id = open_pull(req, row, head, base, title, text, draft)
    return 201, pull_json(req.app, row, *pull_rows(req.app, issue_id), detail=True)


def open_pull(req, row, head, base, title, text, draft):
    """After open_pr was allowed: validate the branches and open the pull request; its issue id. The
    head is a branch of this repository, or ``owner:branch`` of a repository in its fork network, whose
    commits are brought over as refs/pull/N/head."""
    head_owner, _, head_ref = head.rpartition(":")
    head_repo = row
    if head_owner and head_owner.lower() != row["owner_login"].lower():
        head_repo = fork_in_network(req, row, head_owner)
        if head_repo is None:
            raise invalid("PullRequest", "head", "invalid", "%s has no fork of %s you can see" % (
                head_owner, full_name(row)))
    with open_repo(req.app, head_repo["id"]) as fork:
        head_sha = branch_sha(fork, head_ref)
    if head_sha is not None and head_repo is not row:     # its commits, so that they can be compared
        copy_refs(req.app, repo_dir(req.app, head_repo["id"]), repo_dir(req.app, row["id"]),
                  {None: "refs/heads/" + head_ref})
    with open_repo(req.app, row["id"]) as git:
        base_sha = branch_sha(git, base)
        if base_sha is None:
            raise invalid("PullRequest", "base", "invalid", "base branch %s does not exist" % base)
        if head_sha is None:
            raise invalid("PullRequest", "head", "invalid", "head branch %s does not exist" % head_ref)
        if head_repo is row and head_ref == base or not commits_between(git, base_sha, head_sha):
            raise invalid("PullRequest", "head", "custom", "No commits between %s and %s" % (base, head_ref))
    with req.transaction() as db:
        if db.execute("SELECT 1 FROM pulls p JOIN issues i ON i.id = p.issue_id WHERE i.repo_id = ? AND i.state = 'open'"
                      " AND p.head_repo_id = ? AND p.head_ref = ? AND p.base_ref = ?",
                      (row["id"], head_repo["id"], head_ref, base)).fetchone():
            raise invalid("PullRequest", "head", "custom", "A pull request already exists for %s:%s." % (
                head_repo["owner_login"], head_ref))
        issue_id, number = insert_issue(db, row["id"], req.principal, title, text, is_pull=True)
        db.execute("INSERT INTO pulls (issue_id, head_repo_id, head_ref, head_sha, base_ref, base_sha, draft)"
                   " VALUES (?, ?, ?, ?, ?, ?, ?)", (issue_id, head_repo["id"], head_ref, head_sha, base, base_sha,
                                                     int(draft)))
        notify(req, db, issue_id, text)
        req.effect("opened pull request #%d %s:%s → %s" % (number, head_repo["owner_login"], head_ref, base))
        req.announce(row["id"], "pull_request", "opened", {"issue_id": issue_id})
        if head_repo is not row:
            # before the commit: a pull request is never recorded without its head (a ref left by a
            # failed commit names a number the next pull request takes, and overwrites)
            with open_repo(req.app, row["id"]) as git:
                git.refs[b"refs/pull/%d/head" % number] = head_sha.encode()
    return issue_id


def fork_in_network(req, row, owner_login):
    """The repository of ``owner_login`` in ``row``'s fork network (same root) that the caller can see."""
    store = req.app.store
    root = network_root(store, row)
    for candidate in store.all(REPO_SELECT + " WHERE a.login = ? AND r.parent_id IS NOT NULL OR a.login = ? AND"
                               " r.id = ?", owner_login, owner_login, root["id"]):
        if network_root(store, candidate)["id"] == root["id"] and req.can("read_code", Resource.repo(candidate)):
            return candidate
    return None


def pull_rows(app, issue_id):
    return (app.store.one("SELECT * FROM issues WHERE id = ?", issue_id),
            app.store.one("SELECT * FROM pulls WHERE issue_id = ?", issue_id))


@route("GET", "/api/v3/repos/{owner}/{repo}/pulls")
def list_pulls(req, owner, repo):
    row = find_repo(req, owner, repo)
    where, args = ["i.repo_id = ?"], [row["id"]]
    state = req.query.get("state", "open")
    if state in ("open", "closed"):
        where.append("i.state = ?")
        args.append(state)
    elif state != "all":
        raise invalid("PullRequest", "state", message="state must be open, closed or all")
    if req.query.get("head"):
        owner, _, branch = req.query["head"].rpartition(":")
        where.append("p.head_ref = ?")
        args.append(branch)
        if owner:       # user:branch, as GitHub takes it: the head repository's owner too
            where.append("p.head_repo_id IN (SELECT r.id FROM repos r JOIN accounts a ON a.id = r.owner_id"
                         " WHERE a.login = ?)")
            args.append(owner)
    if req.query.get("base"):
        where.append("p.base_ref = ?")
        args.append(req.query["base"])
    sort = {"created": "i.created_at", "updated": "i.updated_at", "popularity": "i.updated_at",
            "long-running": "i.created_at"}.get(req.query.get("sort", "created"), "i.created_at")
    direction = "ASC" if req.query.get("direction", "desc" if sort != "long-running" else "asc") == "asc" else "DESC"
    rows = req.paginate(req.app.store.all("SELECT i.*, p.* FROM issues i JOIN pulls p ON p.issue_id = i.id WHERE %s"
                                          " ORDER BY %s %s, i.number %s" % (" AND ".join(where), sort, direction,
                                                                             direction), *args))
    note_untrusted(req, row, [("pull request #%d" % r["number"], r["user_id"]) for r in rows])
    return [pull_json(req.app, row, *pull_rows(req.app, r["issue_id"])) for r in rows]


ASSOCIATED_PULLS_SOUGHT = 200       # a commit's pull requests are sought among its repository's newest 200


def pulls_by_commit(app, repo_row):
    """{commit sha: [issue id, ...] newest first}: each of the repository's newest pull requests under its
    head, its merge commit and every commit it brings (GitHub's "associated pull requests" of a commit).
    One walk per pull request, kept until the next commit to the database (every ref move and every change
    to a pull request is one), so the release tools' question after each push costs one walk."""
    return app.store.cached(("pulls by commit", repo_row["id"]), lambda: walk_pulls(app, repo_row))


def walk_pulls(app, repo_row):
    found = {}
    with open_repo(app, repo_row["id"]) as git:
        for r in app.store.all("SELECT i.state, p.* FROM issues i JOIN pulls p ON p.issue_id = i.id WHERE i.repo_id = ?"
                               " ORDER BY i.number DESC LIMIT ?", repo_row["id"], ASSOCIATED_PULLS_SOUGHT):
            head, base = r["head_sha"], r["base_sha"]
            if r["state"] == "open" and r["head_repo_id"] == repo_row["id"]:     # an open one follows its branches
                head = branch_sha(git, r["head_ref"]) or head
                base = merge_base(git, branch_sha(git, r["base_ref"]) or base, head) or ""
            try:
                shas = {c.id.decode() for c in commits_between(git, base, head)} | {head, r["merge_commit_sha"]}
            except KeyError:        # a head whose commits this repository no longer holds (a fork's, deleted)
                shas = {head, r["merge_commit_sha"]}
            for sha in shas - {None}:
                found.setdefault(sha, []).append(r["issue_id"])
    return found


@route("GET", "/api/v3/repos/{owner}/{repo}/commits/{sha}/pulls")
def commit_pulls(req, owner, repo, sha):
    """The pull requests a commit belongs to (their head, one of their commits, or their merge), newest
    first: what release-please and semantic-release ask after a push."""
    row = find_repo(req, owner, repo)
    with open_repo(req.app, row["id"]) as git:
        full = resolve_commit(git, sha)
    if full is None:
        raise HTTPError(422, "No commit found for SHA: %s" % sha[:100])
    return req.paginate([pull_json(req.app, row, *pull_rows(req.app, issue_id))
                         for issue_id in pulls_by_commit(req.app, row).get(full, [])])


@route("GET", "/api/v3/repos/{owner}/{repo}/pulls/{number:int}")
def get_pull(req, owner, repo, number):
    row, issue, pull = find_pull(req, owner, repo, number)
    note_untrusted(req, row, [("pull request #%d" % issue["number"], issue["user_id"])])
    media = req.text_media()
    if media:
        return 200, pull_text(req.app, row, issue, pull, media == "patch"), {"Content-Type": "text/plain; charset=utf-8"}
    return pull_json(req.app, row, issue, pull, detail=True)


def pull_text(app, row, issue, pull, patch):
    """A pull request as GitHub's diff media (the head against the merge base) or patch media (each
    commit as `git format-patch` writes it)."""
    state = PullState(app, row, issue, pull)
    with open_repo(app, row["id"]) as git:
        if patch:
            return b"".join(commit_patch(git, c, i + 1, len(state.commits)) for i, c in enumerate(state.commits))
        base_tree = git[state.merge_base.encode()].tree.decode() if state.merge_base else None
        return tree_diff(git, base_tree, git[state.head_sha.encode()].tree.decode())


@route("PATCH", "/api/v3/repos/{owner}/{repo}/pulls/{number:int}")
def update_pull(req, owner, repo, number):
    body = req.json()
    row, issue, pull = find_pull(req, owner, repo, number, "edit_issue")
    fields, pull_fields = {}, {}
    title = req.text_field(body, "title", "PullRequest", limit=256)
    if title is not None:
        fields["title"] = title
    if "body" in body:
        fields["body"] = req.text_field(body, "body", "PullRequest")
    state = req.field(body, "state", str, "PullRequest")
    if state is not None and state != issue["state"]:
        if state not in ("open", "closed"):
            raise invalid("PullRequest", "state", message="state must be open or closed")
        if pull["merged_at"]:
            raise invalid("PullRequest", "state", "custom", "a merged pull request cannot be reopened")
        fields.update(state=state, closed_at=now() if state == "closed" else None,
                      closed_by=req.principal.user["id"] if state == "closed" else None)
        if state == "closed":     # remember what it held when it closed
            current = PullState(req.app, row, issue, pull)
            pull_fields.update(head_sha=current.head_sha, base_sha=current.base_sha)
    base = req.field(body, "base", str, "PullRequest")
    if base is not None:
        with open_repo(req.app, row["id"]) as git:
            sha = branch_sha(git, base)
        if sha is None:
            raise invalid("PullRequest", "base", "invalid", "base branch %s does not exist" % base)
        pull_fields.update(base_ref=base, base_sha=sha)
    with changing_issue(req, issue["id"]) as db:
        fields["updated_at"] = now()
        update_row(db, "issues", fields, "id", issue["id"])
        update_row(db, "pulls", pull_fields, "issue_id", issue["id"])
        req.effect("updated pull request #%d: %s" % (issue["number"], ", ".join(
            sorted((set(fields) | set(pull_fields)) - {"updated_at"})) or "nothing"))
    return pull_json(req.app, row, *pull_rows(req.app, issue["id"]), detail=True)


@route("GET", "/api/v3/repos/{owner}/{repo}/pulls/{number:int}/commits")
def list_pull_commits(req, owner, repo, number):
    row, issue, pull = find_pull(req, owner, repo, number)
    state = PullState(req.app, row, issue, pull)
    return [commit_json(req.app, full_name(row), c) for c in req.paginate(state.commits)]


@route("GET", "/api/v3/repos/{owner}/{repo}/pulls/{number:int}/files")
def list_pull_files(req, owner, repo, number):
    row, issue, pull = find_pull(req, owner, repo, number)
    state = PullState(req.app, row, issue, pull)
    api, name = req.app.api, full_name(row)
    out = []
    for path, status, additions, deletions, sha, patch in state.files:
        quoted = urllib.parse.quote(path)
        out.append({"sha": sha, "filename": path, "status": status, "additions": additions, "deletions": deletions,
                    "changes": additions + deletions, "patch": patch,
                    "blob_url": "%s/%s/blob/%s/%s" % (req.app.url, name, state.head_sha, quoted),
                    "raw_url": "%s/%s/raw/%s/%s" % (req.app.url, name, state.head_sha, quoted),
                    "contents_url": "%s/repos/%s/contents/%s?ref=%s" % (api, name, quoted, state.head_sha)})
    return req.paginate(out)


@route("GET", "/api/v3/repos/{owner}/{repo}/pulls/{number:int}/merge")
def check_merged(req, owner, repo, number):
    _, _, pull = find_pull(req, owner, repo, number)
    if not pull["merged_at"]:
        raise HTTPError(404, "Not Found")
    return 204, None


MERGE_METHODS = ("merge", "squash", "rebase")


@route("PUT", "/api/v3/repos/{owner}/{repo}/pulls/{number:int}/merge")
def merge_pull(req, owner, repo, number):
    """Merge by merge commit, squash or rebase: real commits made with dulwich, a three-way content
    merge, and a compare-and-swap of the base branch, so nothing moves on a conflict or a race."""
    body = req.json()
    method = req.field(body, "merge_method", str, "PullRequest", default="merge")
    if method not in MERGE_METHODS:
        raise invalid("PullRequest", "merge_method", message="merge_method must be merge, squash or rebase")
    expected_sha = req.field(body, "sha", str, "PullRequest")
    title = req.text_field(body, "commit_title", "PullRequest", limit=256)
    message = req.text_field(body, "commit_message", "PullRequest")
    row, issue, pull = find_pull(req, owner, repo, number)
    new_sha = merge_pull_request(req, row, issue, pull, method, expected_sha, title, message)
    return {"sha": new_sha, "merged": True, "message": "Pull Request successfully merged"}


@route("PUT", "/api/v3/repos/{owner}/{repo}/pulls/{number:int}/update-branch")
def update_branch_endpoint(req, owner, repo, number):
    body = req.json()
    expected_sha = req.field(body, "expected_head_sha", str, "PullRequest")
    row, issue, pull = find_pull(req, owner, repo, number)
    update_pull_branch(req, row, issue, pull, expected_sha)
    return 202, {"message": "Updating pull request branch.", "url": "%s/%s/pull/%d" % (
        req.app.url, full_name(row), issue["number"])}


def update_pull_branch(req, row, issue, pull, expected_sha=None):
    """GitHub's "Update branch": merge the base branch into the head branch, in the repository the head
    lives in (a fork's too), as a push to that branch is decided. Nothing moves on a conflict or a race."""
    state = PullState(req.app, row, issue, pull)
    head_repo = state.head_repo
    if issue["state"] != "open" or head_repo is None:
        raise HTTPError(422, "The pull request is closed or its head repository is gone")
    head_ref = b"refs/heads/" + pull["head_ref"].encode()
    req.authorize("push_branch", Resource.repo(head_repo), ref=head_ref.decode())
    if expected_sha and expected_sha != state.head_sha:
        raise HTTPError(422, "expected head sha didn't match current head ref.")
    if state.merge_base == state.base_sha:
        raise HTTPError(422, "There are no new commits on the base branch.")
    if head_repo["id"] != row["id"]:      # the fork needs the base's commits to make the merge
        copy_refs(req.app, repo_dir(req.app, row["id"]), repo_dir(req.app, head_repo["id"]),
                  {None: "refs/heads/" + pull["base_ref"]})
    with open_repo(req.app, head_repo["id"]) as git:
        new_sha, conflicts = merge_commit(git, state.merge_base, state.head_sha, state.base_sha,
                                          signature(req.principal.user),
                                          "Merge branch '%s' into %s" % (pull["base_ref"], pull["head_ref"]))
        if conflicts:
            raise HTTPError(422, "merge conflict between base and head (%s)" % ", ".join(conflicts[:5]))
        if not req.move_ref(git, head_repo["id"], head_ref.decode(), state.head_sha, new_sha):
            raise HTTPError(409, "Head branch was modified. Review and try again.")
    with req.transaction():
        req.effect("merged %s into %s of #%d: %s→%s" % (pull["base_ref"], pull["head_ref"], issue["number"],
                                                        state.head_sha[:12], new_sha[:12]))
    return new_sha


def merge_pull_request(req, row, issue, pull, method, expected_sha=None, title=None, message=None):
    """Decide, merge, record: the new head of the base branch. HTTPError 405/409 when it cannot."""
    state = PullState(req.app, row, issue, pull)
    # what cannot happen is said before a human is asked to approve it (an approval would meet a 405)
    if pull["merged_at"] or issue["state"] != "open":
        raise HTTPError(405, "Pull Request is not mergeable", extra={
            "reason": "it is %s" % ("merged" if pull["merged_at"] else "closed")})
    if expected_sha and expected_sha != state.head_sha:
        raise HTTPError(409, "Head branch was modified. Review and try the merge again.")
    if mergeability(req.app, state)[0] is False:
        raise HTTPError(405, "Pull Request is not mergeable", extra={"reason": "its head conflicts with %s" % (
            pull["base_ref"])})
    req.authorize("merge_pr", Resource.repo(row), ref="refs/heads/" + pull["base_ref"], repo=row,
                  pull_number=issue["number"],
                  pull_issue_id=issue["id"], head_sha=state.head_sha)
    merger, author = req.principal.user, account_by_id(req.app.store, issue["user_id"]) or req.principal.user
    head_label = "%s/%s" % (row["owner_login"], pull["head_ref"])
    with open_repo(req.app, row["id"]) as git:
        if method == "rebase":
            new_sha = state.base_sha
            for commit in state.commits:
                if len(commit.parents) > 1:
                    raise HTTPError(405, "This branch can't be rebased: it contains merge commits")
                tree, conflicts = merge_trees(git, commit.parents[0].decode(), new_sha, commit.id.decode())
                if conflicts:
                    raise HTTPError(405, "Pull Request is not mergeable")
                new_sha = write_commit(git, tree, [new_sha], commit.author.decode("utf-8", "replace"),
                                       signature(merger), commit.message.decode("utf-8", "replace"),
                                       commit.author_time, commit.author_timezone)
        else:
            tree, conflicts = merge_trees(git, state.merge_base, state.base_sha, state.head_sha)
            if conflicts:
                raise HTTPError(405, "Pull Request is not mergeable")
            if method == "merge":
                text = "%s\n\n%s" % (title or "Merge pull request #%d from %s" % (issue["number"], head_label),
                                     message if message is not None else issue["title"])
                new_sha = write_commit(git, tree, [state.base_sha, state.head_sha], signature(merger),
                                       signature(merger), text)
            else:
                squashed = "\n\n".join("* " + c.message.decode("utf-8", "replace").strip() for c in state.commits)
                text = "%s\n\n%s" % (title or "%s (#%d)" % (issue["title"], issue["number"]),
                                     message if message is not None else squashed)
                new_sha = write_commit(git, tree, [state.base_sha], signature(author), signature(merger), text)
        base_ref = "refs/heads/" + pull["base_ref"]
        merged = {"kind": "merge", "repo_id": row["id"], "issue_id": issue["id"], "merger_id": merger["id"],
                  "head_sha": state.head_sha, "base_sha": state.base_sha, "merge_sha": new_sha}
        if not req.move_ref(git, row["id"], base_ref, state.base_sha, new_sha, follow_up=merged):
            raise HTTPError(409, "Base branch was modified. Review and try the merge again.")
    with req.transaction() as db:
        closed = record_merge(db, merged)
        req.announce(row["id"], "pull_request", "closed", {"issue_id": issue["id"]})
        req.effect("merged #%d by %s: %s %s→%s" % (issue["number"], method, base_ref, state.base_sha[:12],
                                                   new_sha[:12]))
        if closed:
            req.effect("closed %s" % ", ".join("#%d" % n for n in closed))
    return new_sha


def record_merge(db, merged):
    """The database's part of a merge whose base branch has moved: the pull request merged and closed,
    and the issues it names with a closing keyword closed when it merged into the default branch.
    Also run at start-up for a merge a crash interrupted after the move (INTENT_FOLLOW_UPS)."""
    stamp = now()
    db.execute("UPDATE pulls SET merged_at = ?, merged_by = ?, merge_commit_sha = ?, head_sha = ?, base_sha = ?"
               " WHERE issue_id = ?", (stamp, merged["merger_id"], merged["merge_sha"], merged["head_sha"],
                                       merged["base_sha"], merged["issue_id"]))
    db.execute("UPDATE issues SET state = 'closed', closed_at = ?, closed_by = ?, updated_at = ? WHERE id = ?",
               (stamp, merged["merger_id"], stamp, merged["issue_id"]))
    for event in ("merged", "closed"):
        insert_event(db, merged["issue_id"], merged["merger_id"], event, commit_id=merged["merge_sha"], stamp=stamp)
    db.execute("UPDATE repos SET pushed_at = ? WHERE id = ?", (stamp, merged["repo_id"]))
    repo_row = db.execute("SELECT * FROM repos WHERE id = ?", (merged["repo_id"],)).fetchone()
    issue = db.execute("SELECT * FROM issues WHERE id = ?", (merged["issue_id"],)).fetchone()
    pull = db.execute("SELECT base_ref FROM pulls WHERE issue_id = ?", (merged["issue_id"],)).fetchone()
    if pull["base_ref"] != repo_row["default_branch"]:
        return []
    return close_referenced_issues(db, repo_row, issue, merged["merger_id"], stamp, merged["merge_sha"])


INTENT_FOLLOW_UPS["merge"] = record_merge


def close_referenced_issues(db, repo_row, pull_issue, merger_id, stamp, merge_sha):
    """Issues a merged pull request names with a closing keyword (Fixes #3, closes #4, resolved #5), each
    with its closed event naming the merge commit."""
    numbers = sorted({int(n) for n in CLOSING_KEYWORDS_RE.findall(pull_issue["body"] or "")})
    closed = []
    for number in numbers:
        if db.execute("UPDATE issues SET state = 'closed', state_reason = 'completed', closed_at = ?, closed_by = ?,"
                      " updated_at = ? WHERE repo_id = ? AND number = ? AND state = 'open' AND is_pull = 0",
                      (stamp, merger_id, stamp, repo_row["id"], number)).rowcount:
            issue_id = db.execute("SELECT id FROM issues WHERE repo_id = ? AND number = ?", (repo_row["id"], number))
            insert_event(db, issue_id.fetchone()[0], merger_id, "closed", commit_id=merge_sha, stamp=stamp)
            closed.append(number)
    return closed
