"""REST: search over repositories, issues, code and accounts."""

import re
import stat
import urllib.parse

from dulwich.object_store import iter_tree_contents

from agentgit.errors import invalid
from agentgit.gitstore import branch_sha, open_repo
from agentgit.accounts import REPO_SELECT, full_name
from agentgit.policy import Resource, SITE
from agentgit.routing import route
from agentgit.serializers import repo_json, user_json
from agentgit.issues import issue_json
from agentgit.contents import looks_binary


# -- search -------------------------------------------------------------------------------------
# GitHub's search syntax, the common part: free words, "quoted phrases", and qualifiers (key:value).
# Only what the caller may read is ever found.

SEARCH_TOKEN_RE = re.compile(r'(-?)([\w-]+):("[^"]*"|\S+)|"([^"]*)"|(\S+)')
# Qualifiers that name a user, where GitHub reads @me as the caller (gh pr status asks author:@me)
USER_QUALIFIERS = ("author", "assignee", "mentions", "review-requested", "involves", "commenter", "user", "owner")


def parse_search(q, me=None):
    """(words, {qualifier: [values]}, {qualifier: [negated values]}); @me in a user qualifier is ``me``
    (the caller's login; for an anonymous caller it matches no one)."""
    words, quals, negated = [], {}, {}
    for neg, key, value, phrase, word in SEARCH_TOKEN_RE.findall(q or ""):
        if key:
            key, value = key.lower(), value.strip('"').lower()
            if value == "@me" and key in USER_QUALIFIERS:
                value = me.lower() if me else "@me"
            (negated if neg else quals).setdefault(key, []).append(value)
        elif phrase:
            words.append(phrase.lower())
        else:
            # grouping and boolean operators (gh writes "( crash ) type:issue") are not narrowed on here
            word = word.strip("()").lower()
            if word and word not in ("and", "or", "not"):
                words.append(word)
    return words, quals, negated


def search_page(req, items, kind=None):
    body = {"total_count": len(items), "incomplete_results": False, "items": req.paginate(items)}
    if kind:
        body["search_type"] = kind
    return body


def owner_matches(row, quals):
    owners = quals.get("user", []) + quals.get("org", []) + quals.get("owner", [])
    repos = quals.get("repo", [])
    name = full_name(row).lower()
    return (not owners or row["owner_login"].lower() in owners) and (not repos or name in repos)


@route("GET", "/api/v3/search/repositories")
def search_repositories(req):
    """Free words match the name and description; user:/org:/repo:, is:public|private, archived:."""
    words, quals, _ = parse_search(req.query.get("q", ""), req.principal.login)
    if not words and not quals:
        raise invalid("Search", "q", "missing", "a search needs words or qualifiers")
    req.check("read_meta", SITE)
    out = []
    for row in req.app.store.all(REPO_SELECT + " ORDER BY r.name"):
        text = ("%s %s" % (row["name"], row["description"] or "")).lower()
        visibility = "private" if row["private"] else "public"
        if not owner_matches(row, quals) or not all(w in text for w in words):
            continue
        if any(v in ("public", "private") and v != visibility for v in quals.get("is", [])):
            continue
        if quals.get("archived") and quals["archived"][0] != ("true" if row["archived"] else "false"):
            continue
        if req.can("read_code", Resource.repo(row)):
            out.append(dict(repo_json(req.app, row), score=1.0))
    if req.query.get("sort") in ("updated", "stars", "forks", "help-wanted-issues"):
        out.sort(key=lambda r: r["updated_at"], reverse=req.query.get("order", "desc") == "desc")
    return search_page(req, out)


@route("GET", "/api/v3/search/users")
def search_users(req):
    """Free words match the login and the name; type:user (humans and agents) or type:org. Suspended
    and retired accounts are not found, as GitHub leaves suspended ones out."""
    words, quals, _ = parse_search(req.query.get("q", ""), req.principal.login)
    if not words and not quals:
        raise invalid("Search", "q", "missing", "a search needs words or qualifiers")
    req.check("read_meta", SITE)
    kinds = {"user": ("human", "agent"), "org": ("org",)}
    wanted = [k for t in quals.get("type", []) for k in kinds.get(t, ())] or ["human", "agent", "org"]
    out = []
    for row in req.app.store.all("SELECT * FROM accounts WHERE suspended_at IS NULL AND retired_at IS NULL"
                                 " ORDER BY login"):
        text = ("%s %s" % (row["login"], row["name"] or "")).lower()
        if row["kind"] in wanted and all(w in text for w in words) and req.can("read_account", Resource.account(row)):
            out.append(dict(user_json(req.app, row), score=1.0))
    return search_page(req, out)


CODE_SEARCH_MAX_FILE = 384 * 1024     # GitHub leaves larger files out of code search too
CODE_SEARCH_MAX_RESULTS = 1000        # and answers at most this many


@route("GET", "/api/v3/search/code")
def search_code(req):
    """Every free word (case-insensitive) in a text file on the default branch of a repository the
    caller can read; repo:/user:/org:, path: (a directory prefix), filename:, extension:. There is no
    index: files are read at query time, which suits the repositories a reference server holds."""
    words, quals, _ = parse_search(req.query.get("q", ""), req.principal.login)
    paths, names, extensions = quals.get("path", []), quals.get("filename", []), quals.get("extension", [])
    if not words and not (paths or names or extensions):
        raise invalid("Search", "q", "missing", "a code search needs words, path:, filename: or extension:")
    req.check("read_meta", SITE)
    items, incomplete = [], False
    for row in req.app.store.all(REPO_SELECT + " ORDER BY r.id"):
        if not owner_matches(row, quals) or not req.can("read_code", Resource.repo(row)):
            continue
        name = full_name(row)
        with open_repo(req.app, row["id"]) as git:
            head = branch_sha(git, row["default_branch"])
            entries = iter_tree_contents(git.object_store, git[head.encode()].tree) if head else ()
            for entry in entries:
                path = entry.path.decode("utf-8", "replace")
                base = path.rsplit("/", 1)[-1]
                if (paths and not any(path.lower().startswith(p.strip("/") + "/") for p in paths)
                        or names and base.lower() not in names
                        or extensions and base.rsplit(".", 1)[-1].lower() not in extensions
                        or not stat.S_ISREG(entry.mode)):
                    continue
                data = git[entry.sha].data if words else b""
                if len(data) > CODE_SEARCH_MAX_FILE or looks_binary(data):
                    continue       # too large, or binary
                text = data.decode("utf-8", "replace").lower()
                if not all(word in text for word in words):
                    continue
                if len(items) == CODE_SEARCH_MAX_RESULTS:
                    incomplete = True
                    break
                sha, quoted = entry.sha.decode(), urllib.parse.quote(path)
                items.append({"name": base, "path": path, "sha": sha, "score": 1.0,
                              "url": "%s/repos/%s/contents/%s?ref=%s" % (req.app.api, name, quoted, head),
                              "git_url": "%s/repos/%s/git/blobs/%s" % (req.app.api, name, sha),
                              "html_url": "%s/%s/blob/%s/%s" % (req.app.url, name, head, quoted),
                              "repository": repo_json(req.app, row)})
        if incomplete:
            break
    return dict(search_page(req, items), incomplete_results=incomplete)


@route("GET", "/api/v3/search/issues")
def search_issues(req):
    """Free words match title and body; repo:/user:/org:, is:issue|pr|open|closed, state:, author:,
    assignee:, label:, mentions:, review-requested:, commenter:, involves: (@me for the caller)."""
    found = matching_issues(req, req.query.get("q", ""))
    return search_page(req, [dict(data, score=1.0) for _, _, data in found], kind="lexical")


def matching_issues(req, q):
    """[(repository row, issue row, issue_json)] that the query matches, newest first (REST and GraphQL)."""
    words, quals, negated = parse_search(q, req.principal.login)
    if not words and not quals:
        raise invalid("Search", "q", "missing", "a search needs words or qualifiers")
    req.check("read_meta", SITE)
    store = req.app.store
    readable = {}
    for row in store.all(REPO_SELECT):
        if owner_matches(row, quals) and req.can("read_code", Resource.repo(row)):
            readable[row["id"]] = row
    states = set(quals.get("state", [])) | {v for v in quals.get("is", []) if v in ("open", "closed")}
    kinds = {v for v in quals.get("is", []) + quals.get("type", []) if v in ("issue", "pr")}
    out = []
    for issue in store.all("SELECT * FROM issues ORDER BY created_at DESC, id DESC"):
        row = readable.get(issue["repo_id"])
        if row is None or (states and issue["state"] not in states):
            continue
        if kinds and ("pr" if issue["is_pull"] else "issue") not in kinds:
            continue
        text = ("%s %s" % (issue["title"], issue["body"] or "")).lower()
        if not all(w in text for w in words):
            continue
        data = issue_json(req.app, row, issue)
        labels = {l["name"].lower() for l in data["labels"]}
        assignees = {a["login"].lower() for a in data["assignees"]}
        author = (data["user"] or {}).get("login", "").lower()
        if any(l not in labels for l in quals.get("label", [])) or any(l in labels for l in negated.get("label", [])):
            continue
        if any(a != author for a in quals.get("author", [])) or any(a not in assignees for a in
                                                                     quals.get("assignee", [])):
            continue
        if any("@" + m not in text for m in quals.get("mentions", [])):
            continue
        if not people_match(store, issue, quals, author, assignees, text):
            continue
        out.append((row, issue, data))
    return out


def people_match(store, issue, quals, author, assignees, text):
    """review-requested:, commenter: and involves: (author, assignee, mentioned or commenter)."""
    if not any(k in quals for k in ("review-requested", "commenter", "involves")):
        return True
    requested = {r["login"].lower() for r in store.all(
        "SELECT a.login FROM review_requests r JOIN accounts a ON a.id = r.user_id WHERE r.issue_id = ?", issue["id"])}
    commenters = {r["login"].lower() for r in store.all(
        "SELECT a.login FROM comments c JOIN accounts a ON a.id = c.user_id WHERE c.issue_id = ?", issue["id"])}
    return (all(r in requested for r in quals.get("review-requested", []))
            and all(c in commenters for c in quals.get("commenter", []))
            and all(p == author or p in assignees or p in commenters or "@" + p in text
                    for p in quals.get("involves", [])))
