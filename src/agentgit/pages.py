"""Pages: what the API's html_url links open: the landing page, accounts, repositories, files,
commits, pull requests and issues, for whoever may read them."""

import html
import json
import re
import urllib.parse

from agentgit.errors import HTTPError
from agentgit.gitstore import changed_files, list_refs, open_repo, resolve_commit
from agentgit.accounts import REPO_SELECT, account_by_id, account_by_login, full_name, lookup_repo
from agentgit.policy import Resource, bound_human_id
from agentgit.routing import not_found_message
from agentgit.lookups import find_repo
from agentgit.issues import find_issue
from agentgit.pulls import PullState, find_pull, pull_text
from agentgit.contents import file_at, looks_binary, path_at, raw_answer, split_ref
from agentgit.tasks import APPROVAL_SELECT, approval_json, approval_outcome
from agentgit.web import html_page, web_route


# Read-only and server-rendered, like the other pages: the session cookie decides what is shown
# (decide(), through the same lookups as the API: what the caller may not read is a 404), and every
# value from the database or a repository is escaped on its way into the HTML.

MAX_SHOWN_BYTES = 512 * 1024      # a file (or a diff) larger than this is not shown whole


def esc(value):
    return html.escape("" if value is None else str(value))


def link(href, text):
    return '<a href="%s">%s</a>' % (esc(href), esc(text))


def repo_path(row, *parts):
    return "/" + "/".join([row["owner_login"], row["name"]] + [urllib.parse.quote(p) for p in parts])


def shown_text(data):
    """Bytes as text for a <pre>, or why they are not shown."""
    if len(data) > MAX_SHOWN_BYTES:
        return None, "%d bytes: too large to show here" % len(data)
    if looks_binary(data):
        return None, "%d bytes of binary data" % len(data)
    return data.decode("utf-8", "replace"), None


def pre(data):
    text, why = shown_text(data)
    return "<p><em>%s</em></p>" % esc(why) if why else "<pre>%s</pre>" % esc(text)


@web_route("GET", "/")
def landing_page(req):
    url, user = req.app.url, req.principal.user
    who = ("<p>Signed in as %s.</p>" % link("/" + user["login"], user["login"]) if user else
           "<p>%s to manage your agents, tokens and approvals.</p>" % link("/login", "Sign in"))
    repos = req.app.store.all(REPO_SELECT + " WHERE r.private = 0 ORDER BY r.pushed_at DESC LIMIT 20")
    listing = "".join("<li>%s</li>" % link(repo_path(r), full_name(r)) for r in repos) or "<li>none yet</li>"
    body = (
        "<p>A GitHub-compatible Git service in which AI agents are first-class accounts: each agent has its own "
        "login, repositories and audit trail, and acts for the humans who delegate to it within what they grant.</p>"
        "%s<h2>Connect</h2><ul><li>REST: <code>%s/api/v3</code> (GitHub's v3 shapes)</li>"
        "<li>GraphQL: <code>%s/api/graphql</code></li><li>agentgit's extensions: <code>%s/api/ext/v1</code></li>"
        "<li>git: <code>git clone %s/OWNER/REPO.git</code> (any user name, a token as the password)</li>"
        "<li>gh: <code>eval \"$(python agentgit.py connect gh --token TOKEN%s --url %s)\"</code></li></ul>"
        "<h2>Public repositories</h2><ul>%s</ul>") % (who, esc(url), esc(url), esc(url), esc(url),
                                                      # gh reaches a plain-HTTP server through its localhost mode
                                                      " --mode localhost" if url.startswith("http:") else "", esc(url),
                                                      listing)
    return html_page("agentgit", body)


@web_route("GET", "/{owner}")
def account_page(req, owner):
    account = account_by_login(req.app.store, owner)
    if account is None:       # a GitHub API path without /api/v3 (/user) lands here: say where the API is
        raise HTTPError(404, not_found_message(req.method, req.raw_path, [owner]))
    facts = ["<li>%s</li>" % esc({"human": "a human", "agent": "an agent", "org": "an organization"}[account["kind"]])]
    if account["kind"] == "agent":
        human = account_by_id(req.app.store, bound_human_id(req.app.store, account["id"]) or 0)
        facts.append("<li>bound to %s</li>" % link("/" + human["login"], human["login"]) if human else
                     "<li>bound to no human</li>")
    repos = [r for r in req.app.store.all(REPO_SELECT + " WHERE r.owner_id = ? ORDER BY r.name", account["id"])
             if req.can("read_code", Resource.repo(r))]
    listing = "".join("<li>%s</li>" % link(repo_path(r), r["name"]) for r in repos) or "<li>none you can see</li>"
    rows = {r["id"]: r for r in req.app.store.all(REPO_SELECT + " WHERE r.id IN (SELECT repo_id FROM issues WHERE"
                                                  " user_id = ?)", account["id"])}
    opened = [i for i in req.app.store.all("SELECT * FROM issues WHERE user_id = ? ORDER BY created_at DESC, id DESC"
                                           " LIMIT 100", account["id"])
              if req.can("read_code", Resource.repo(rows[i["repo_id"]]))][:10]
    recent = "".join("<li>%s %s</li>" % ("opened pull request" if i["is_pull"] else "opened issue", link(
        repo_path(rows[i["repo_id"]], "pull" if i["is_pull"] else "issues", str(i["number"])),
        "%s#%d %s" % (full_name(rows[i["repo_id"]]), i["number"], i["title"]))) for i in opened)
    body = "<ul>%s</ul><h2>Repositories</h2><ul>%s</ul><h2>Recent activity</h2><ul>%s</ul>" % (
        "".join(facts), listing, recent or "<li>nothing you can see</li>")
    return html_page(account["login"], body)


@web_route("GET", "/{owner}/{repo}")
def repository_page(req, owner, repo):
    name = repo[:-4] if repo.endswith(".git") else repo
    if lookup_repo(req.app.store, owner, name) is None:
        raise HTTPError(404, not_found_message(req.method, req.raw_path, [owner, repo]))
    row = find_repo(req, owner, name)
    return tree_page(req, row, row["default_branch"], "")


@web_route("GET", "/{owner}/{repo}/tree/{rest:path}")
def tree_route(req, owner, repo, rest):
    row = find_repo(req, owner, repo)
    with open_repo(req.app, row["id"]) as git:
        ref, path = split_ref(git, rest)
    return tree_page(req, row, ref, path)


@web_route("GET", "/{owner}/{repo}/blob/{rest:path}")
def blob_route(req, owner, repo, rest):
    row = find_repo(req, owner, repo)
    data = file_at(req, row, rest)
    with open_repo(req.app, row["id"]) as git:
        ref, path = split_ref(git, rest)
    crumbs = "%s @ %s" % (link(repo_path(row), full_name(row)), esc(ref))
    return html_page(path, "<p>%s</p>%s" % (crumbs, pre(data)))


@web_route("GET", "/{owner}/{repo}/raw/{rest:path}")
def raw_route(req, owner, repo, rest):
    """A file's bytes (the raw_url of a pull request's files), for whoever is signed in here."""
    return raw_answer(file_at(req, find_repo(req, owner, repo), rest))


def tree_page(req, row, ref, path):
    with open_repo(req.app, row["id"]) as git:
        branches = sorted(r[len("refs/heads/"):] for r in list_refs(git, "refs/heads/"))
        sha, found = path_at(git, ref, path)
        if sha is None and (path or branches):
            raise HTTPError(404, "Not Found")
        if sha and (found is None or found[0] != 0o040000):
            raise HTTPError(404, "Not Found")
        entries = sorted(git[found[1].encode()].items(), key=lambda e: (e.mode != 0o040000, e.path)) if sha else []
        readme = next((git[e.sha].data for e in entries if e.path.decode("utf-8", "replace").lower() in (
            "readme.md", "readme", "readme.txt")), None)
    files = "".join("<li>%s</li>" % link(repo_path(row, "tree" if e.mode == 0o040000 else "blob", ref, *(
        [path] if path else []), e.path.decode("utf-8", "replace")), e.path.decode("utf-8", "replace") + (
        "/" if e.mode == 0o040000 else "")) for e in entries) or "<li>empty</li>"
    branch_links = " ".join(link(repo_path(row, "tree", b), b) for b in branches) or "none yet"
    body = ("<p>%s · %s open issues and pull requests · default branch %s</p><p>%s</p><p>Clone: <code>git clone "
            "%s/%s.git</code></p><p>Branches: %s</p><p>%s</p><h2>%s</h2><ul>%s</ul>%s") % (
        "private" if row["private"] else "public", open_count(req, row), esc(row["default_branch"]),
        esc(row["description"] or ""), esc(req.app.url), esc(full_name(row)), branch_links,
        ("Last commit: " + link(repo_path(row, "commit", sha), sha[:12])) if sha else "",
        esc("%s/%s" % (ref, path) if path else ref), files, "<h2>README</h2>" + pre(readme) if readme else "")
    return html_page(full_name(row), body)


def open_count(req, row):
    return req.app.store.one("SELECT COUNT(*) FROM issues WHERE repo_id = ? AND state = 'open'", row["id"])[0]


@web_route("GET", "/{owner}/{repo}/commit/{sha}")
def commit_page(req, owner, repo, sha):
    row = find_repo(req, owner, repo)
    with open_repo(req.app, row["id"]) as git:
        full = resolve_commit(git, sha)
        if full is None:
            raise HTTPError(404, "Not Found")
        commit = git[full.encode()]
        parent = commit.parents[0].decode() if commit.parents else None
        files = changed_files(git, git[parent.encode()].tree.decode() if parent else None, commit.tree.decode())
    parents = " ".join(link(repo_path(row, "commit", p.decode()), p.decode()[:12]) for p in commit.parents) or "none"
    body = "<p>%s</p><p>%s · commit <code>%s</code> · parents %s</p>%s<pre>%s</pre>%s" % (
        link(repo_path(row), full_name(row)), esc(commit.author.decode("utf-8", "replace")), esc(full), parents,
        pushed_by(req, row, full), esc(commit.message.decode("utf-8", "replace")), diff_html(files))
    return html_page("Commit %s" % full[:12], body)


def pushed_by(req, row, sha):
    """Who moved a ref to this commit (the audit log keeps each ref's move), and for an agent for whom and
    under which task: a commit's author is what git wrote, not who acted."""
    moved = req.app.store.one("SELECT actor, user_kind, delegator, task, side_effect, at FROM audit WHERE resource = ?"
                              " AND decision = 'allow' AND side_effect LIKE ? ORDER BY id LIMIT 1",
                              "repo:" + full_name(row), "%→" + sha[:12] + "%")
    if moved is None:
        return ""
    chain = " (for %s%s)" % (esc(moved["delegator"] or "nobody"), ", under " + esc(moved["task"]) if moved["task"]
                             else "") if moved["user_kind"] == "agent" else ""
    return "<p>%s by %s%s, %s</p>" % (esc(moved["side_effect"].split(";")[0]), esc(moved["actor"] or "?"), chain,
                                      esc(moved["at"]))


def diff_html(files):
    shown = []
    for path, status, additions, deletions, _, patch in files:
        shown.append("<h3>%s</h3><p>%s, +%d −%d</p>%s" % (esc(path), esc(status), additions, deletions,
                                                          pre(patch.encode())))
    return "<h2>Files changed</h2>" + ("".join(shown) or "<p>none</p>")


@web_route("GET", "/{owner}/{repo}/pull/{number:int}")
def pull_page(req, owner, repo, number):
    row, issue, pull = find_pull(req, owner, repo, number)
    state = PullState(req.app, row, issue, pull)
    commits = "".join("<li>%s %s</li>" % (link(repo_path(row, "commit", c.id.decode()), c.id.decode()[:12]), esc(
        c.message.decode("utf-8", "replace").split("\n")[0])) for c in state.commits) or "<li>none</li>"
    store = req.app.store
    checks = "".join("<li>%s: %s %s</li>" % (esc(c["name"]), esc(c["status"]), esc(c["conclusion"] or ""))
                     for c in store.all("SELECT * FROM check_runs WHERE repo_id = ? AND head_sha = ? ORDER BY id",
                                        row["id"], state.head_sha)) or "<li>none</li>"
    reviews = "".join("<li>%s %s: %s</li>" % (esc(r["login"]), esc(r["state"].lower().replace("_", " ")),
                                               esc(r["body"] or ""))
                      for r in store.all("SELECT v.*, a.login FROM reviews v JOIN accounts a ON a.id = v.user_id"
                                         " WHERE v.issue_id = ? AND v.state != 'PENDING' ORDER BY v.id", issue["id"])) or "<li>none</li>"
    merged = "merged" if pull["merged_at"] else issue["state"]
    body = ("<p>%s · %s wants to merge %s into %s · %s · %s · %s</p>%s%s<h2>Commits</h2><ul>%s</ul><h2>Checks</h2>"
            "<ul>%s</ul><h2>Reviews</h2><ul>%s</ul>%s%s") % (
        link(repo_path(row), full_name(row)), author_link(req, issue), esc(pull["head_ref"]), esc(pull["base_ref"]),
        esc(merged), link(repo_path(row, "pull", "%d.diff" % issue["number"]), "diff"),
        link(repo_path(row, "pull", "%d.patch" % issue["number"]), "patch"), pre((issue["body"] or "").encode()),
        merge_approvals_html(req, row, issue), commits, checks, reviews, comments_html(req, issue),
        diff_html(state.files))
    return html_page("%s #%d" % (issue["title"], issue["number"]), body)


@web_route("GET", "/{owner}/{repo}/pull/{name}")
def pull_diff_page(req, owner, repo, name):
    """diff_url and patch_url: /owner/repo/pull/N.diff and N.patch, GitHub's diff and patch media."""
    found = re.fullmatch(r"(\d{1,12})\.(diff|patch)", name)
    if found is None:
        raise HTTPError(404, "Not Found")
    row, issue, pull = find_pull(req, owner, repo, int(found.group(1)))
    return 200, pull_text(req.app, row, issue, pull, found.group(2) == "patch"), {
        "Content-Type": "text/plain; charset=utf-8", "X-Content-Type-Options": "nosniff"}


def merge_approvals_html(req, row, issue):
    """The approvals asked for merging this pull request: waiting (with the page where its delegator
    decides), approved, denied, used."""
    rows = req.app.store.all(APPROVAL_SELECT + " WHERE a.action = 'merge_pr' AND a.resource = ? ORDER BY a.id",
                             "repo:" + full_name(row))
    items = []
    for approval in (approval_json(req.app, r) for r in rows
                     if json.loads(r["context"] or "{}").get("pull_number") == issue["number"]):
        items.append("<li>%s, for %s under %s (%s): %s%s</li>" % (
            esc(approval["agent"]), esc(approval["task"]), esc(approval["grant"]), esc(approval["subject"] or ""),
            esc(approval_outcome(approval)), " &middot; " + link("/approvals/" + approval["id"], "decide")
            if approval["state"] == "pending" else ""))
    return "<h2>Merge approvals</h2><ul>%s</ul>" % "".join(items) if items else ""


@web_route("GET", "/{owner}/{repo}/issues/{number:int}")
def issue_page(req, owner, repo, number):
    row, issue = find_issue(req, owner, repo, number)
    labels = ", ".join(esc(l["name"]) for l in req.app.store.all(
        "SELECT l.name FROM labels l JOIN issue_labels il ON il.label_id = l.id WHERE il.issue_id = ? ORDER BY l.name",
        issue["id"])) or "none"
    body = "<p>%s · %s opened this · %s · labels: %s</p>%s%s" % (
        link(repo_path(row), full_name(row)), author_link(req, issue), esc(issue["state"]), labels,
        pre((issue["body"] or "").encode()), comments_html(req, issue))
    return html_page("%s #%d" % (issue["title"], issue["number"]), body)


def author_link(req, issue):
    author = account_by_id(req.app.store, issue["user_id"]) if issue["user_id"] else None
    return (link("/" + author["login"], author["login"]) + for_whom(issue)) if author else "someone since removed"


def for_whom(row):
    """For an agent's issue, pull request or comment: for whom it acted, and under which task."""
    if not row["acting_for"] and not row["task"]:
        return ""
    return " (for %s%s)" % (esc(row["acting_for"] or "nobody"), ", under " + esc(row["task"]) if row["task"] else "")


def comments_html(req, issue):
    rows = req.app.store.all("SELECT c.*, a.login FROM comments c LEFT JOIN accounts a ON a.id = c.user_id"
                             " WHERE c.issue_id = ? ORDER BY c.id", issue["id"])
    return "<h2>Comments</h2>" + ("".join("<h3>%s%s, %s</h3>%s" % (esc(c["login"] or "someone since removed"),
                                                                   for_whom(c), esc(c["created_at"]),
                                                                   pre(c["body"].encode())) for c in rows)
                                  or "<p>none</p>")
