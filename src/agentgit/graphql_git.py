"""GraphQL resolvers of git's own objects: refs (branches and tags), what they point at (commits, annotated
tags, trees, blobs), a commit's history and pull requests, as Repository.ref, refs and object, Ref.target,
Release.tagCommit and PullRequest.mergeCommit reach them. Whoever found the repository checked it readable."""

import datetime
import re

from dulwich.walk import ORDER_TOPO

from agentgit.gitstore import list_refs, open_repo, resolve_commit, valid_ref_name
from agentgit.accounts import account_by_id, full_name
from agentgit.serializers import account_for_email, git_person_json, node_id
from agentgit.pulls import pulls_by_commit
from agentgit.contents import lookup_path
from agentgit.graphql_language import GraphQLError
from agentgit.graphql_resolvers import (MAX_PAGE, checked_page_size, cursor_position, gql_pull, gql_ref, gql_user,
                                        paginate_connection, pull_state)


MAX_BLOB_TEXT = 512 * 1024      # Blob.text stops here (isTruncated says so)
MAX_EXPRESSION = 4096           # an object expression ("main:path/to/file") or a history path


def invalid_argument(message):
    return GraphQLError(message, kind="INVALID_ARGUMENT")


# -- objects ----------------------------------------------------------------------------------------------

def gql_git_actor(ctx, signature, when, offset):
    """A commit's or tag's author, committer or tagger, with the account its email names (if any)."""
    person = git_person_json(signature, when, offset)
    account = account_for_email(ctx.app, person["email"])
    return {"__typename": "GitActor", "name": person["name"], "email": person["email"], "date": person["date"],
            "user": gql_user(ctx.app, account_by_id(ctx.app.store, account["id"])) if account else None}


def gql_commit(ctx, repo_row, commit):
    sha = commit.id.decode()
    message = commit.message.decode("utf-8", "replace").rstrip("\n")
    headline, _, body = message.partition("\n")
    author = gql_git_actor(ctx, commit.author, commit.author_time, commit.author_timezone)
    committer = gql_git_actor(ctx, commit.committer, commit.commit_time, commit.commit_timezone)
    path = "/%s/commit/%s" % (full_name(repo_row), sha)
    return {"__typename": "Commit", "id": node_id("Commit", sha), "oid": sha, "abbreviatedOid": sha[:7],
            "message": message, "messageHeadline": headline, "messageBody": body.strip("\n"),
            "authoredDate": author["date"], "committedDate": committer["date"], "author": author,
            "committer": committer, "resourcePath": path, "url": ctx.app.url + path, "commitUrl": ctx.app.url + path,
            "_authors": [author], "_repo": repo_row, "_tree": commit.tree.decode(),
            "_parents": [p.decode() for p in commit.parents]}


def gql_object(ctx, repo_row, git, sha, path=""):
    """The GitObject ``sha`` names (a Commit, Tag, Tree or Blob), or None when the repository has none.
    ``path``: where a tree or blob sits in its commit's tree, for TreeEntry.path."""
    try:
        obj = git[sha.encode()]
    except (KeyError, ValueError):
        return None
    if obj.type_name == b"commit":
        return gql_commit(ctx, repo_row, obj)
    kind = obj.type_name.decode().capitalize()
    common = {"__typename": kind, "id": node_id(kind, sha), "oid": sha, "abbreviatedOid": sha[:7], "_repo": repo_row,
              "_path": path}
    if kind == "Tag":
        return dict(common, name=obj.name.decode("utf-8", "replace"),
                    message=obj.message.decode("utf-8", "replace").rstrip("\n") if obj.message else None,
                    tagger=gql_git_actor(ctx, obj.tagger, obj.tag_time, obj.tag_timezone) if obj.tagger else None,
                    _target=obj.object[1].decode())
    if kind == "Blob":
        data = obj.as_raw_string()
        binary = b"\0" in data[:8000]         # git's own test for a binary file
        return dict(common, byteSize=len(data), isBinary=binary, isTruncated=len(data) > MAX_BLOB_TEXT,
                    text=None if binary else data[:MAX_BLOB_TEXT].decode("utf-8", "replace"))
    return common                               # a Tree: its entries are read when asked for


def object_at(ctx, repo_row, sha, path=""):
    with open_repo(ctx.app, repo_row["id"]) as git:
        return gql_object(ctx, repo_row, git, sha, path)


def resolve_tree_entries(ctx, parent, args):
    prefix = parent["_path"] + "/" if parent["_path"] else ""
    with open_repo(ctx.app, parent["_repo"]["id"]) as git:
        items = list(git[parent["oid"].encode()].items())
    return [{"__typename": "TreeEntry", "name": name.decode("utf-8", "replace"), "mode": mode,
             "path": prefix + name.decode("utf-8", "replace"), "oid": sha.decode(),
             "type": "tree" if mode & 0o170000 == 0o040000 else "commit" if mode & 0o170000 == 0o160000 else "blob",
             "_repo": parent["_repo"]} for name, mode, sha in items]


def resolve_entry_object(ctx, parent, args):
    """A tree entry's object; a submodule's commit lives in another repository, so it has none here."""
    return None if parent["type"] == "commit" else object_at(ctx, parent["_repo"], parent["oid"], parent["path"])


# -- refs -------------------------------------------------------------------------------------------------

def prefix_and_name(full):
    """refs/heads/feature/x -> ("refs/heads/", "feature/x"): GitHub's Ref.prefix and Ref.name."""
    first, second, name = full.split("/", 2)
    return "%s/%s/" % (first, second), name


def resolve_repo_ref(ctx, parent, args):
    """Repository.ref(qualifiedName:): a full ref name, or a branch (then a tag) by its short name."""
    name = args["qualifiedName"]
    candidates = [name] if name.startswith("refs/") else ["refs/heads/" + name, "refs/tags/" + name]
    with open_repo(ctx.app, parent["_row"]["id"]) as git:
        full = next((c for c in candidates if valid_ref_name(c) and c.encode() in git.refs), None)
    return gql_ref(ctx, parent["_row"], *prefix_and_name(full)[::-1]) if full else None


def resolve_ref_target(ctx, parent, args):
    """What a ref points at, unpeeled: a branch's commit, or an annotated tag's Tag object."""
    with open_repo(ctx.app, parent["_repo"]["id"]) as git:
        full = (parent["prefix"] + parent["name"]).encode()
        return gql_object(ctx, parent["_repo"], git, git.refs[full].decode()) if full in git.refs else None


def resolve_repo_refs(ctx, parent, args):
    """Repository.refs(refPrefix:): the refs in one namespace, by name or by their commits' dates."""
    prefix = args["refPrefix"]
    if not prefix.endswith("/") or not valid_ref_name(prefix + "x"):
        raise invalid_argument("refPrefix must be a ref namespace ending in a slash, such as refs/heads/")
    checked_page_size(args)
    order = args.get("orderBy") or {"field": "ALPHABETICAL", "direction": args.get("direction") or "ASC"}
    repo_row = parent["_row"]
    with open_repo(ctx.app, repo_row["id"]) as git:
        refs = list_refs(git, prefix)
        names = [full[len(prefix):] for full in refs if args.get("query", "") in full[len(prefix):]]
        if order["field"] == "TAG_COMMIT_DATE":
            dates = {n: git[resolve_commit(git, prefix + n).encode()].commit_time if resolve_commit(git, prefix + n)
                     else 0 for n in names}
            names.sort(key=lambda n: (dates[n], n))
    if order["direction"] == "DESC":
        names.reverse()
    return paginate_connection(names, args, lambda n: gql_ref(ctx, repo_row, n, prefix))


def resolve_repo_object(ctx, parent, args):
    """Repository.object(oid: | expression:): an object by its id, or by git's REV[:PATH] ("main:README.md",
    "v1.0", "HEAD~2"); None when nothing is there."""
    repo_row = parent["_row"]
    with open_repo(ctx.app, repo_row["id"]) as git:
        if args.get("oid") is not None:
            oid = args["oid"]
            return gql_object(ctx, repo_row, git, oid) if re.fullmatch(r"[0-9a-f]{40}", oid) else None
        expression = args.get("expression")
        if expression is None:
            raise invalid_argument("Repository.object needs an oid or an expression")
        if len(expression) > MAX_EXPRESSION:
            raise invalid_argument("the expression is longer than %d characters" % MAX_EXPRESSION)
        rev, colon, path = expression.partition(":")
        rev = repo_row["default_branch"] if rev in ("", "HEAD") else rev
        if not colon:
            for full in ("refs/tags/" + rev, rev):      # a tag's own object, as git rev-parse answers it
                if valid_ref_name(full) and full.encode() in git.refs:
                    return gql_object(ctx, repo_row, git, git.refs[full.encode()].decode())
        sha = resolve_commit(git, rev)
        if sha is None or not colon:
            return gql_object(ctx, repo_row, git, sha) if sha else None
        found = lookup_path(git, git[sha.encode()].tree.decode(), path.strip("/"))
        return gql_object(ctx, repo_row, git, found[1], path.strip("/")) if found else None


def resolve_release_tag(ctx, parent, args):
    """Release.tag: the tag's ref, once the tag exists (a draft's may not)."""
    with open_repo(ctx.app, parent["_repo"]["id"]) as git:
        exists = valid_ref_name("refs/tags/" + parent["tagName"]) and \
            ("refs/tags/" + parent["tagName"]).encode() in git.refs
    return gql_ref(ctx, parent["_repo"], parent["tagName"], "refs/tags/") if exists else None


def resolve_release_commit(ctx, parent, args):
    with open_repo(ctx.app, parent["_repo"]["id"]) as git:
        sha = resolve_commit(git, "refs/tags/" + parent["tagName"]) if valid_ref_name(
            "refs/tags/" + parent["tagName"]) else None
        return gql_object(ctx, parent["_repo"], git, sha) if sha else None


# -- a commit's history, parents and pull requests --------------------------------------------------------

def git_timestamp(value, name):
    """A GitTimestamp argument (ISO 8601) as epoch seconds."""
    try:
        when = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        raise invalid_argument("%s is not an ISO 8601 timestamp: %r" % (name, str(value)[:100]))
    return int((when if when.tzinfo else when.replace(tzinfo=datetime.timezone.utc)).timestamp())


def resolve_history(ctx, parent, args):
    """Commit.history: the commits reachable from this one, newest first and never a parent before its
    child (git log --topo-order), optionally only those that
    change ``path`` or fall between ``since`` and ``until``. Going forward (first/after) walks no further
    than the page; totalCount walks the whole history only when asked for."""
    first, last = checked_page_size(args)
    path = args.get("path")
    if path is not None and (len(path) > MAX_EXPRESSION or not path.strip("/")):
        raise invalid_argument("path must name a file or directory, at most %d characters" % MAX_EXPRESSION)
    since = git_timestamp(args["since"], "since") if args.get("since") else None
    until = git_timestamp(args["until"], "until") if args.get("until") else None
    repo_row = parent["_repo"]

    def walk(limit):
        with open_repo(ctx.app, repo_row["id"]) as git:
            return [entry.commit for entry in git.get_walker(
                include=[parent["oid"].encode()], paths=[path.strip("/").encode()] if path else None,
                since=since, until=until, max_entries=limit, order=ORDER_TOPO)]
    whole = last is not None or bool(args.get("before"))
    start = cursor_position(args["after"]) + 1 if args.get("after") else 0
    commits = walk(None if whole else start + (MAX_PAGE if first is None else first) + 1)
    connection = paginate_connection(commits, args, lambda c: gql_commit(ctx, repo_row, c))
    connection["_count"] = (lambda: len(commits)) if whole else (lambda: len(walk(None)))
    return connection


def resolve_parents(ctx, parent, args):
    with open_repo(ctx.app, parent["_repo"]["id"]) as git:
        parents = [gql_commit(ctx, parent["_repo"], git[sha.encode()]) for sha in parent["_parents"]]
    return paginate_connection(parents, args, lambda p: p)


def resolve_associated_pulls(ctx, parent, args):
    """Commit.associatedPullRequests: the pull requests this commit is the head, part or merge of, newest
    first."""
    repo_row = parent["_repo"]
    issue_ids = pulls_by_commit(ctx.app, repo_row).get(parent["oid"], [])
    return paginate_connection(issue_ids, args, lambda issue_id: gql_pull(
        ctx, repo_row, ctx.app.store.one("SELECT * FROM issues WHERE id = ?", issue_id)))


def resolve_merge_commit(ctx, parent, args):
    sha = ctx.app.store.one("SELECT merge_commit_sha FROM pulls WHERE issue_id = ?", parent["_row"]["id"])[0]
    return object_at(ctx, parent["_repo"], sha) if parent["merged"] and sha else None


def resolve_pull_commits(ctx, parent, args):
    return paginate_connection(pull_state(ctx, parent).commits, args, lambda commit: {
        "__typename": "PullRequestCommit", "id": node_id("PullRequestCommit", commit.id.decode()),
        "commit": gql_commit(ctx, parent["_repo"], commit)})
