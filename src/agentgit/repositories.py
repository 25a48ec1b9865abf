"""REST: repositories, forks, branches, refs, commits and collaborators."""

import collections
import itertools
import json
import os
import re
import shutil
import tempfile

from dulwich.object_store import iter_tree_contents

from agentgit.config import now, valid_repo_name
from agentgit.errors import HTTPError, invalid
from agentgit.storage import update_row
from agentgit.gitstore import (branch_sha, commit_patch, copy_refs, list_refs, merge_base, merge_commit, open_repo,
                               repo_dir, resolve_commit, tree_diff, walk_commits)
from agentgit.accounts import REPO_SELECT, create_repository, full_name, network_root, repo_by_id, signature
from agentgit.policy import PERMISSION_ALIASES, RANK, Resource, branch_protection, private_upstream, repo_permission
from agentgit.routing import route
from agentgit.serializers import (account_for_email, branch_json, commit_json, encode_json, ref_json, repo_json,
                                  standing_access, user_json)
from agentgit.lookups import find_account, find_repo, signed_in, sort_repos, visible_repos


# -- repositories and forks ---------------------------------------------------------------------

def repos_reachable_by(store, user):
    """Every repository that ``user`` owns or reaches through a grant (the candidates for /user/repos)."""
    return store.db.execute(
        REPO_SELECT + " WHERE r.owner_id = ?"
        " OR r.id IN (SELECT repo_id FROM collaborators WHERE user_id = ?)"
        " OR r.owner_id IN (SELECT org_id FROM org_members WHERE user_id = ?)"
        " OR r.id IN (SELECT tr.repo_id FROM team_repos tr JOIN team_members tm ON tm.team_id = tr.team_id"
        "             WHERE tm.user_id = ?)", (user["id"],) * 4).fetchall()


@route("GET", "/api/v3/user/repos")
def list_own_repos(req):
    user = signed_in(req)
    req.check("read_account", Resource.account(user))
    affiliation = set(req.query.get("affiliation", "owner,collaborator,organization_member").split(","))
    visibility = req.query.get("visibility", "all")
    pairs = []
    for row, perm in visible_repos(req, repos_reachable_by(req.app.store, user)):
        is_owner = row["owner_id"] == user["id"]
        is_org = row["owner_kind"] == "org"
        if not ((is_owner and "owner" in affiliation) or (is_org and "organization_member" in affiliation)
                or (not is_owner and not is_org and "collaborator" in affiliation)):
            continue
        if visibility in ("public", "private") and bool(row["private"]) != (visibility == "private"):
            continue
        pairs.append((row, perm))
    return sort_repos(req, pairs)


@route("GET", "/api/v3/users/{login}/repos")
def list_user_repos(req, login):
    """GitHub's rule: an account's public repositories, to anyone (its own private ones are under
    /user/repos)."""
    owner = find_account(req, login)
    req.check("read_account", Resource.account(owner))
    rows = req.app.store.all(REPO_SELECT + " WHERE r.owner_id = ? AND r.private = 0", owner["id"])
    return sort_repos(req, visible_repos(req, rows))


def repo_fields(req, body, creating):
    """The settable fields of a repository from a POST or PATCH body, type-checked."""
    fields = {}
    name = req.field(body, "name", str, "Repository", required=creating)
    if name is not None:
        if not valid_repo_name(name):
            raise invalid("Repository", "name", "custom",
                          "name may use letters, digits, '.', '-' and '_', up to 100 characters, "
                          "and may not be '.', '..' or end in '.git'")
        fields["name"] = name
    for key in ("description", "homepage"):
        value = req.field(body, key, str, "Repository")
        if value is not None:
            if len(value) > 1000:
                raise invalid("Repository", key, "custom", "%s is longer than 1000 characters" % key)
            fields[key] = value
    for key in ("private", "archived"):
        value = req.field(body, key, bool, "Repository")
        if value is not None:
            fields[key] = int(value)
    if body.get("visibility") is not None:
        if body["visibility"] not in ("public", "private", "internal"):
            raise invalid("Repository", "visibility")
        fields["private"] = int(body["visibility"] != "public")
    return fields


def create_repo_for(req, owner):
    body = req.json()
    fields = repo_fields(req, body, creating=True)
    auto_init = req.field(body, "auto_init", bool, "Repository", default=False)
    branch = req.field(body, "default_branch", str, "Repository", default="main")
    if not re.fullmatch(r"[A-Za-z0-9._/-]{1,200}", branch) or ".." in branch or branch.endswith((".lock", "/")):
        raise invalid("Repository", "default_branch")
    req.authorize("create_repo", Resource.account(owner))
    row = new_repository(req, owner, fields, auto_init, branch)
    return 201, repo_json(req.app, row, "admin"), {"Location": "%s/repos/%s/%s" % (req.app.api, owner["login"],
                                                                                   row["name"])}


def new_repository(req, owner, fields, auto_init, branch="main", parent_id=None):
    """After create_repo was allowed: the new repository's row (422 if the name is taken)."""
    with req.transaction() as db:
        if db.execute("SELECT 1 FROM repos WHERE owner_id = ? AND name = ?", (owner["id"], fields["name"])).fetchone():
            raise invalid("Repository", "name", "custom", "name already exists on this account")
        author = req.principal.user
        repo_id = create_repository(req.app, db, {"id": owner["id"], "login": author["login"]}, fields["name"],
                                    private=fields.get("private", 0), auto_init=auto_init,
                                    description=fields.get("description"), homepage=fields.get("homepage"),
                                    default_branch=branch, parent_id=parent_id,
                                    forked_by=author["id"] if parent_id is not None else None)
        req.effect("created %s/%s" % (owner["login"], fields["name"]))
    return repo_by_id(req.app.store, repo_id)


@route("POST", "/api/v3/user/repos")
def create_own_repo(req):
    return create_repo_for(req, signed_in(req))


@route("GET", "/api/v3/repos/{owner}/{repo}")
def get_repo(req, owner, repo):
    row = find_repo(req, owner, repo)
    lineage = fork_lineage(req, row)
    # The most requested body of all (clients look a repository up before almost anything else):
    # encoded once per permission level until the next commit anywhere changes what it could say.
    return req.app.store.cached(("repo body", row["id"], req.level, bool(lineage)), lambda: encode_json(dict(
        repo_json(req.app, row, req.level), **lineage)))


def fork_lineage(req, row):
    """A fork's parent and source (the root of its network), as GitHub shows them on the repository,
    when the caller can see the parent."""
    parent = repo_by_id(req.app.store, row["parent_id"]) if row["parent_id"] else None
    if parent is None or not req.can("read_code", Resource.repo(parent)):
        return {}
    return {"parent": repo_json(req.app, parent), "source": repo_json(req.app, network_root(req.app.store, parent))}


@route("POST", "/api/v3/repos/{owner}/{repo}/forks")
def create_fork(req, owner, repo):
    """A copy of the repository's branches and tags under the caller (or an organization it may create
    repositories in), remembering its parent. 202, as on GitHub; here the copy is done when it answers.
    Forking again answers the fork that exists."""
    body = req.json()
    org = req.field(body, "organization", str, "Fork")
    name = req.field(body, "name", str, "Fork")
    only_default = req.field(body, "default_branch_only", bool, "Fork", default=False)
    source = find_repo(req, owner, repo)
    target = find_account(req, org, kinds=("org",)) if org else signed_in(req)
    req.authorize("create_repo", Resource.account(target))
    existing = req.app.store.one(REPO_SELECT + " WHERE r.owner_id = ? AND r.parent_id = ?", target["id"], source["id"])
    if existing is not None:
        return 202, fork_json(req, existing)
    fields = {"name": name or source["name"], "private": source["private"], "description": source["description"],
              "homepage": source["homepage"]}
    if not valid_repo_name(fields["name"]):
        raise invalid("Fork", "name")
    with open_repo(req.app, source["id"]) as git:
        refs = dict(list_refs(git, "refs/heads/"), **list_refs(git, "refs/tags/"))
    if only_default:
        refs = {ref: sha for ref, sha in refs.items() if ref == "refs/heads/" + source["default_branch"]}
    req.effect("forked from %s (%d refs)" % (full_name(source), len(refs)))
    row = new_repository(req, target, fields, auto_init=False, branch=source["default_branch"],
                         parent_id=source["id"])
    # the fork's row is in: now its refs (a racing clone may see it empty for a moment, as on GitHub)
    try:
        copy_refs(req.app, repo_dir(req.app, source["id"]), repo_dir(req.app, row["id"]), {ref: ref for ref in refs})
    except BaseException:
        # a fork that could not be filled is no fork: nothing half-made stays behind
        with req.app.store.transaction() as db:
            db.execute("DELETE FROM repos WHERE id = ?", (row["id"],))
        shutil.rmtree(repo_dir(req.app, row["id"]), ignore_errors=True)
        req.refuse("create_repo", "repo:" + full_name(row), ["the fork's refs could not be copied from %s" % full_name(
            source)], "removed the empty fork")
        raise
    if refs:
        with req.app.store.transaction() as db:
            db.execute("UPDATE repos SET pushed_at = ? WHERE id = ?", (now(), row["id"]))
    return 202, fork_json(req, repo_by_id(req.app.store, row["id"]))


def fork_json(req, row):
    """A fork as the create call answers it: with the caller's permissions, its parent and its source."""
    level = repo_permission(req.app.store, req.principal.user, row)[0]
    return dict(repo_json(req.app, row, level), **fork_lineage(req, row))


@route("POST", "/api/v3/repos/{owner}/{repo}/merge-upstream")
def merge_upstream(req, owner, repo):
    """Sync a fork's branch with the same branch of its parent (gh repo sync): a fast-forward when the
    fork has nothing of its own, else a merge commit; 409 and nothing moved on a conflict. Decided as a
    push to the fork's branch."""
    body = req.json()
    branch = req.field(body, "branch", str, "MergeUpstream", required=True)
    row = find_repo(req, owner, repo)
    parent = repo_by_id(req.app.store, row["parent_id"]) if row["parent_id"] else None
    if parent is None or not req.can("read_code", Resource.repo(parent)):
        raise invalid("MergeUpstream", "repository", message="%s is not a fork of a repository you can see"
                      % full_name(row))
    ref = "refs/heads/" + branch
    req.authorize("push_branch", Resource.repo(row), ref=ref)
    label = "%s:%s" % (parent["owner_login"], branch)
    with open_repo(req.app, parent["id"]) as upstream:
        theirs = branch_sha(upstream, branch)
    if theirs is None:
        raise invalid("MergeUpstream", "branch", message="the upstream has no branch %s" % branch)
    copy_refs(req.app, repo_dir(req.app, parent["id"]), repo_dir(req.app, row["id"]), {None: ref})
    with open_repo(req.app, row["id"]) as git:
        ours = branch_sha(git, branch)
        if ours is None:
            raise invalid("MergeUpstream", "branch", message="the fork has no branch %s" % branch)
        common = merge_base(git, ours, theirs)
        if common == theirs:
            return {"message": "This branch is not behind the upstream %s." % label, "merge_type": "none",
                    "base_branch": label}
        merge_type, new_sha = "fast-forward", theirs
        if common != ours:
            new_sha, conflicts = merge_commit(git, common, ours, theirs, signature(req.principal.user),
                                              "Merge branch '%s' of %s into %s" % (branch, full_name(parent), branch))
            if conflicts:
                raise HTTPError(409, "There are merge conflicts with the upstream %s" % label)
            merge_type = "merge"
        if not req.move_ref(git, row["id"], ref, ours, new_sha):
            raise HTTPError(409, "The branch was updated meanwhile; try again")
    with req.transaction() as db:
        db.execute("UPDATE repos SET pushed_at = ? WHERE id = ?", (now(), row["id"]))
        req.effect("synced %s with %s (%s): %s→%s" % (ref, label, merge_type, ours[:12], new_sha[:12]))
    return {"message": "Successfully fetched and %s from upstream %s." % (
        "fast-forwarded" if merge_type == "fast-forward" else "merged", label), "merge_type": merge_type,
            "base_branch": label}


@route("GET", "/api/v3/repos/{owner}/{repo}/forks")
def list_forks(req, owner, repo):
    source = find_repo(req, owner, repo)
    rows = req.app.store.all(REPO_SELECT + " WHERE r.parent_id = ? ORDER BY r.created_at DESC", source["id"])
    return req.paginate([repo_json(req.app, r) for r in rows if req.can("read_code", Resource.repo(r))])


@route("PATCH", "/api/v3/repos/{owner}/{repo}")
def update_repo(req, owner, repo):
    body = req.json()
    row = find_repo(req, owner, repo, "admin_repo")
    fields = repo_fields(req, body, creating=False)
    if fields.get("private") == 0 and private_upstream(req.app.store, row) is not None:
        # as on GitHub: a copy of private code does not become public by its forker's say
        raise invalid("Repository", "private", "custom", "a fork of a private repository stays private")
    branch = req.field(body, "default_branch", str, "Repository")
    if branch is not None:
        with open_repo(req.app, row["id"]) as git:
            empty = not list_refs(git, "refs/heads/")
            if not empty and ("refs/heads/" + branch).encode() not in git.refs:
                raise invalid("Repository", "default_branch", "custom", "branch %s does not exist" % branch)
        fields["default_branch"] = branch
    with req.transaction() as db:
        if "name" in fields and fields["name"].lower() != row["name"].lower() and db.execute(
                "SELECT 1 FROM repos WHERE owner_id = ? AND name = ?", (row["owner_id"], fields["name"])).fetchone():
            raise invalid("Repository", "name", "custom", "name already exists on this account")
        if fields:
            fields["updated_at"] = now()
            update_row(db, "repos", fields, "id", row["id"])
        if branch is not None:
            # last, once every check passed: a refused change leaves HEAD where it was
            with open_repo(req.app, row["id"]) as git:
                git.refs.set_symbolic_ref(b"HEAD", b"refs/heads/" + branch.encode())
        req.effect("updated %s" % ", ".join(sorted(k for k in fields if k != "updated_at")))
    row = repo_by_id(req.app.store, row["id"])
    return repo_json(req.app, row, "admin")


@route("DELETE", "/api/v3/repos/{owner}/{repo}")
def delete_repo(req, owner, repo):
    row = find_repo(req, owner, repo, "delete_repo")
    path = repo_dir(req.app, row["id"])
    trash = tempfile.mkdtemp(prefix=".trash-", dir=req.app.repos_dir)
    os.rename(path, os.path.join(trash, "repo.git"))     # out of reach first, so no push lands mid-delete
    try:
        with req.transaction() as db:
            db.execute("DELETE FROM repos WHERE id = ?", (row["id"],))
            req.effect("deleted %s/%s" % (row["owner_login"], row["name"]))
    except BaseException:
        os.rename(os.path.join(trash, "repo.git"), path)
        raise
    finally:
        shutil.rmtree(trash, ignore_errors=True)
    return 204, None


# -- branches, refs, commits --------------------------------------------------------------------

@route("GET", "/api/v3/repos/{owner}/{repo}/branches")
def list_branches(req, owner, repo):
    row = find_repo(req, owner, repo)
    with open_repo(req.app, row["id"]) as git:
        refs = list_refs(git, "refs/heads/")
    branches = [(ref[len("refs/heads/"):], sha) for ref, sha in refs.items()]
    if req.query.get("protected") in ("true", "false"):
        wanted = req.query["protected"] == "true"
        branches = [b for b in branches if (branch_protection(req.app.store, row["id"], b[0]) is not None) == wanted]
    return [branch_json(req.app, full_name(row), name, sha, branch_protection(req.app.store, row["id"], name) is not None)
            for name, sha in req.paginate(branches)]


@route("GET", "/api/v3/repos/{owner}/{repo}/branches/{branch:path}")
def get_branch(req, owner, repo, branch):
    row = find_repo(req, owner, repo)
    name = full_name(row)
    rule = branch_protection(req.app.store, row["id"], branch)
    with open_repo(req.app, row["id"]) as git:
        sha = branch_sha(git, branch)
        if sha is None:
            raise HTTPError(404, "Branch not found")
        out = branch_json(req.app, name, branch, sha, rule is not None)
        out["commit"] = commit_json(req.app, name, git[sha.encode()])
    checks = json.loads(rule["required_checks"]) if rule is not None and rule["required_checks"] else []
    out["_links"] = {"self": "%s/repos/%s/branches/%s" % (req.app.api, name, branch),
                     "html": "%s/%s/tree/%s" % (req.app.url, name, branch)}
    out["protection"] = {"enabled": rule is not None, "required_status_checks": {
        "enforcement_level": "non_admins" if checks else "off", "contexts": checks,
        "checks": [{"context": c, "app_id": None} for c in checks]}}
    out["protection_url"] = "%s/repos/%s/branches/%s/protection" % (req.app.api, name, branch)
    return out


def refs_json(req, row, prefix):
    """The refs whose names start with ``prefix``, matched as text: what a request names never becomes
    a path on disk (matching-refs/../../ would otherwise walk the filesystem)."""
    name = full_name(row)
    out = []
    with open_repo(req.app, row["id"]) as git:
        for ref, sha in list_refs(git, "refs/").items():
            if ref.startswith(prefix):
                out.append(ref_json(req.app, name, ref, sha, git[sha.encode()].type_name.decode()))
    return out


@route("GET", "/api/v3/repos/{owner}/{repo}/git/ref/{ref:path}")
def get_ref(req, owner, repo, ref):
    row = find_repo(req, owner, repo)
    matches = [r for r in refs_json(req, row, "refs/" + ref) if r["ref"] == "refs/" + ref]
    if not matches:
        raise HTTPError(404, "Not Found")
    return matches[0]


@route("GET", "/api/v3/repos/{owner}/{repo}/git/matching-refs/{ref:path}")
def matching_refs(req, owner, repo, ref):
    row = find_repo(req, owner, repo)
    return req.paginate(refs_json(req, row, "refs/" + ref))


def head_commit_or_409(git, row, ref):
    if not list_refs(git, "refs/heads/"):
        raise HTTPError(409, "Git Repository is empty.")
    sha = resolve_commit(git, ref or row["default_branch"])
    if sha is None:
        raise HTTPError(404, "No commit found for SHA: %s" % (ref or row["default_branch"]))
    return sha


@route("GET", "/api/v3/repos/{owner}/{repo}/commits")
def list_commits(req, owner, repo):
    row = find_repo(req, owner, repo)
    per_page, page = req.page()
    with open_repo(req.app, row["id"]) as git:
        sha = head_commit_or_409(git, row, req.query.get("sha"))
        commits = walk_commits(git, sha, (page - 1) * per_page, per_page + 1)
        req.link_header(page, per_page, page + 1 if len(commits) > per_page else None)
        return [commit_json(req.app, full_name(row), c) for c in commits[:per_page]]


@route("GET", "/api/v3/repos/{owner}/{repo}/commits/{ref:path}")
def get_commit(req, owner, repo, ref):
    row = find_repo(req, owner, repo)
    media = req.text_media()
    with open_repo(req.app, row["id"]) as git:
        sha = head_commit_or_409(git, row, ref)
        commit = git[sha.encode()]
        if media == "patch":
            return 200, commit_patch(git, commit), {"Content-Type": "text/plain; charset=utf-8"}
        if media == "diff":
            parent = git[commit.parents[0]].tree.decode() if commit.parents else None
            return 200, tree_diff(git, parent, commit.tree.decode()), {"Content-Type": "text/plain; charset=utf-8"}
        return commit_json(req.app, full_name(row), commit)


# -- topics and languages -----------------------------------------------------------------------

TOPIC_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,49}")
MAX_TOPICS = 20


@route("GET", "/api/v3/repos/{owner}/{repo}/topics")
def get_topics(req, owner, repo):
    return {"names": json.loads(find_repo(req, owner, repo)["topics"])}


@route("PUT", "/api/v3/repos/{owner}/{repo}/topics")
def replace_topics(req, owner, repo):
    """GitHub's rules: lowercase letters, digits and hyphens, at most 50 characters, at most 20 topics."""
    row = find_repo(req, owner, repo, "admin_repo")
    names = req.field(req.json(), "names", list, "Repository", required=True)
    names = [n.strip().lower() if isinstance(n, str) else n for n in names]
    if len(names) > MAX_TOPICS or not all(isinstance(n, str) and TOPIC_RE.fullmatch(n) for n in names):
        raise invalid("Repository", "names", message="topics are at most %d names of lowercase letters, digits and "
                                                    "hyphens, starting with a letter or digit, at most 50 characters"
                                                    % MAX_TOPICS)
    names = sorted(set(names), key=names.index)
    with req.transaction() as db:
        db.execute("UPDATE repos SET topics = ?, updated_at = ? WHERE id = ?", (json.dumps(names), now(), row["id"]))
        req.effect("topics of %s: %s" % (full_name(row), ", ".join(names) or "none"))
    return {"names": names}


# What a file's extension says its language is, as GitHub's linguist names them (the common ones)
LANGUAGES = {"py": "Python", "js": "JavaScript", "mjs": "JavaScript", "ts": "TypeScript", "go": "Go", "rs": "Rust",
             "java": "Java", "c": "C", "h": "C", "cc": "C++", "cpp": "C++", "rb": "Ruby", "sh": "Shell",
             "html": "HTML", "css": "CSS", "kt": "Kotlin", "swift": "Swift", "php": "PHP", "cs": "C#"}
MAX_LANGUAGE_FILES = 20000


@route("GET", "/api/v3/repos/{owner}/{repo}/languages")
def get_languages(req, owner, repo):
    """Bytes of code per language on the default branch, most first (the first MAX_LANGUAGE_FILES files)."""
    row = find_repo(req, owner, repo)
    sizes = collections.Counter()
    with open_repo(req.app, row["id"]) as git:
        sha = branch_sha(git, row["default_branch"])
        if sha is not None:
            for entry in itertools.islice(iter_tree_contents(git.object_store, git[sha.encode()].tree),
                                          MAX_LANGUAGE_FILES):
                language = LANGUAGES.get(entry.path.decode("utf-8", "replace").rsplit(".", 1)[-1].lower())
                if language and entry.mode != 0o160000:
                    sizes[language] += len(git.object_store.get_raw(entry.sha)[1])
    return dict(sizes.most_common())


# -- collaborators ------------------------------------------------------------------------------

MAX_CONTRIBUTOR_COMMITS = 10000      # the newest commits of the default branch that contributors are counted in


@route("GET", "/api/v3/repos/{owner}/{repo}/contributors")
def list_contributors(req, owner, repo):
    """Who wrote the default branch's commits, most commits first: accounts (matched by their email, as
    commits' authors are) with a contributions count; with anon=1 also the authors no account matches."""
    row = find_repo(req, owner, repo)
    counts, names = collections.Counter(), {}
    with open_repo(req.app, row["id"]) as git:
        sha = branch_sha(git, row["default_branch"])
        if sha is not None:
            for commit in walk_commits(git, sha, 0, MAX_CONTRIBUTOR_COMMITS):
                name, _, email = commit.author.decode("utf-8", "replace").partition(" <")
                counts[email.rstrip(">").lower()] += 1
                names.setdefault(email.rstrip(">").lower(), name)
    accounts, anonymous = {}, []
    for email, count in counts.items():
        account = account_for_email(req.app, email)
        if account is not None:
            accounts.setdefault(account["login"], dict(account, contributions=0))["contributions"] += count
        elif req.query.get("anon") in ("1", "true"):
            anonymous.append({"type": "Anonymous", "email": email, "name": names[email], "contributions": count})
    return req.paginate(sorted(list(accounts.values()) + anonymous, key=lambda p: -p["contributions"]))


def people_with_access(store, repo):
    """Accounts that hold a grant on the repository (owner, collaborators, org members, team members)."""
    return store.db.execute(
        "SELECT * FROM accounts WHERE kind != 'org' AND (id = ?"
        " OR id IN (SELECT user_id FROM collaborators WHERE repo_id = ?)"
        " OR id IN (SELECT user_id FROM org_members WHERE org_id = ?)"
        " OR id IN (SELECT tm.user_id FROM team_members tm JOIN team_repos tr ON tr.team_id = tm.team_id"
        "           WHERE tr.repo_id = ?)) ORDER BY login", (repo["owner_id"], repo["id"], repo["owner_id"], repo["id"])
    ).fetchall()


def collaborator_json(app, user, level, granted_via=None):
    """GitHub's collaborator, and (agentgit's) whose invite an agent's access derives from."""
    out = user_json(app, user)
    rank = RANK[level]
    out["permissions"] = {"admin": rank >= RANK["admin"], "maintain": rank >= RANK["maintain"],
                          "push": rank >= RANK["write"], "triage": rank >= RANK["triage"], "pull": rank >= 1}
    out["role_name"] = level
    out["granted_via"] = granted_via
    if user["kind"] == "agent":
        out["standing_access"] = standing_access(app, user, level)
    return out


@route("GET", "/api/v3/repos/{owner}/{repo}/collaborators")
def list_collaborators(req, owner, repo):
    row = find_repo(req, owner, repo, "read_collaborators")
    grantors = {r["user_id"]: r["login"] for r in req.app.store.all(
        "SELECT c.user_id, a.login FROM collaborators c JOIN accounts a ON a.id = c.granted_by WHERE c.repo_id = ?",
        row["id"])}
    out = []
    for user in people_with_access(req.app.store, row):
        level, how = repo_permission(req.app.store, user, row)
        if RANK[level] >= RANK["read"] and how not in ("public repository", "site admin"):
            out.append(collaborator_json(req.app, user, level, grantors.get(user["id"])))
    return req.paginate(out)


@route("GET", "/api/v3/repos/{owner}/{repo}/collaborators/{login}")
def check_collaborator(req, owner, repo, login):
    row = find_repo(req, owner, repo, "read_collaborators")
    user = find_account(req, login, kinds=("human", "agent"))
    level, how = repo_permission(req.app.store, user, row)
    if RANK[level] < RANK["read"] or how == "public repository":
        raise HTTPError(404, "Not Found")
    return 204, None


@route("PUT", "/api/v3/repos/{owner}/{repo}/collaborators/{login}")
def add_collaborator(req, owner, repo, login):
    body = req.json()
    row = find_repo(req, owner, repo, "admin_repo")
    user = find_account(req, login, kinds=("human", "agent"))
    permission = PERMISSION_ALIASES.get(req.field(body, "permission", str, "Collaborator", default="push"))
    if permission is None:
        raise invalid("Collaborator", "permission", message="permission must be pull, triage, push, maintain or admin")
    with req.transaction() as db:
        # set by an admin directly, the access is the admin's standing grant, no longer derived from an invite
        db.execute("INSERT INTO collaborators (repo_id, user_id, permission) VALUES (?, ?, ?)"
                   " ON CONFLICT (repo_id, user_id) DO UPDATE SET permission = excluded.permission, granted_by = NULL",
                   (row["id"], user["id"], permission))
        req.effect("%s is a collaborator with %s" % (user["login"], permission))
    return 204, None


@route("DELETE", "/api/v3/repos/{owner}/{repo}/collaborators/{login}")
def remove_collaborator(req, owner, repo, login):
    row = find_repo(req, owner, repo, "admin_repo")
    user = find_account(req, login, kinds=("human", "agent"))
    with req.transaction() as db:
        db.execute("DELETE FROM collaborators WHERE repo_id = ? AND user_id = ?", (row["id"], user["id"]))
        req.effect("%s is no longer a collaborator" % user["login"])
    return 204, None


@route("GET", "/api/v3/repos/{owner}/{repo}/collaborators/{login}/permission")
def collaborator_permission(req, owner, repo, login):
    row = find_repo(req, owner, repo)
    user = find_account(req, login, kinds=("human", "agent"))
    level = repo_permission(req.app.store, user, row)[0]
    # The legacy 'permission' field knows only admin, write, read and none.
    legacy = {"maintain": "write", "triage": "read"}.get(level, level)
    return {"permission": legacy, "role_name": level, "user": collaborator_json(req.app, user, level)}
