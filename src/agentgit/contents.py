"""REST: file contents and READMEs, read and written as commits."""

import base64
import urllib.parse

from dulwich.errors import NotTreeError
from dulwich.objects import Blob, Tree

from agentgit.config import now
from agentgit.errors import HTTPError, invalid
from agentgit.gitstore import ZERO_SHA, branch_sha, list_refs, open_repo, resolve_commit, write_commit
from agentgit.accounts import full_name, signature
from agentgit.policy import Resource
from agentgit.routing import route
from agentgit.serializers import git_person_json, node_id
from agentgit.lookups import find_repo
from agentgit.repositories import head_commit_or_409


# -- contents -----------------------------------------------------------------------------------

RAW_MEDIA = ("application/vnd.github.raw", "application/vnd.github.v3.raw")
README_NAMES = ("README.md", "README", "README.markdown", "README.rst", "README.txt", "readme.md")


def content_path(path):
    """A repository path from a URL or a body: no empty, '.', '..' or '.git' segments, no NUL."""
    parts = path.strip("/").split("/") if path else []
    if any(p in ("", ".", "..") or p.lower() == ".git" or "\0" in p for p in parts) or len(path) > 4096:
        raise invalid("Content", "path", "invalid", "%r is not a valid path: no empty, '.', '..' or '.git' segments"
                      % path[:200])
    return "/".join(parts)


def lookup_path(git, tree_id, path):
    """(mode, sha) at ``path`` under a tree, or None; the tree itself for the empty path."""
    if not path:
        return 0o040000, tree_id
    try:
        mode, sha = git.object_store[tree_id.encode()].lookup_path(git.object_store.__getitem__, path.encode())
    except (KeyError, NotTreeError):
        return None
    return mode, sha.decode()


def path_at(git, ref, path):
    """(the commit ``ref`` names, (mode, sha) of ``path`` in its tree): either None where it is not there."""
    sha = resolve_commit(git, ref)
    return sha, lookup_path(git, git[sha.encode()].tree.decode(), path) if sha else None


def split_ref(git, rest):
    """(ref, path) from REF/PATH, where a ref may hold slashes (feature/x, refs/heads/feature/x): the
    longest branch, tag, full ref name or HEAD that starts it, else its first segment (a commit sha)."""
    full = list(list_refs(git, "refs/heads/")) + list(list_refs(git, "refs/tags/"))
    names = full + [r.split("/", 2)[2] for r in full] + ["HEAD"]
    for name in sorted(names, key=len, reverse=True):
        if rest == name or rest.startswith(name + "/"):
            return name, rest[len(name) + 1:]
    ref, _, path = rest.partition("/")
    return ref, path


def file_at(req, row, rest):
    """The bytes of the file at REF/PATH in the repository, or 404."""
    with open_repo(req.app, row["id"]) as git:
        _, found = path_at(git, *split_ref(git, rest))
        if found is None or found[0] in (0o040000, 0o160000):       # a directory or a submodule
            raise HTTPError(404, "Not Found")
        return git[found[1].encode()].data


@route("GET", "/raw/{owner}/{repo}/{rest:path}")
def raw_file(req, owner, repo, rest):
    """A file's bytes at a ref, where GitHub Enterprise serves them (/raw/OWNER/REPO/REF/PATH, the
    download_url of the contents API): what github-mcp-server's get_file_contents reads."""
    return raw_answer(file_at(req, find_repo(req, owner, repo), rest))


def raw_answer(data):
    """A file's bytes as GitHub's raw hosts answer them: text as text/plain, the rest as octets."""
    return 200, data, {"Content-Type": "application/octet-stream" if looks_binary(data) else
                       "text/plain; charset=utf-8"}


def looks_binary(data):
    """git's own test: a NUL byte in the first 8000 bytes makes a file binary."""
    return b"\0" in data[:8000]


def tree_with(git, tree_id, parts, blob):
    """A copy of the tree with the file at ``parts`` set to ``blob`` (mode, sha) or removed (None)."""
    tree = Tree()
    if tree_id:
        for item in git[tree_id.encode()].items():
            tree.add(item.path, item.mode, item.sha)
    name = parts[0].encode()
    if len(parts) == 1:
        if blob is None:
            if name in tree:
                del tree[name]
        else:
            tree.add(name, blob[0], blob[1].encode())
    else:
        sub = tree[name][1].decode() if name in tree and tree[name][0] == 0o040000 else None
        if name in tree and sub is None:
            raise invalid("Content", "path", "custom", "%s is a file, not a directory" % parts[0])
        new_sub = tree_with(git, sub, parts[1:], blob)
        if len(git[new_sub.encode()]) == 0:
            if name in tree:
                del tree[name]     # git keeps no empty directories
        else:
            tree.add(name, 0o040000, new_sub.encode())
    git.object_store.add_object(tree)
    return tree.id.decode()


def content_entry_json(app, repo_row, path, mode, sha, size, ref):
    name, api = full_name(repo_row), app.api
    kind = "dir" if mode == 0o040000 else "symlink" if mode == 0o120000 else "submodule" if mode == 0o160000 else "file"
    quoted = urllib.parse.quote(path)
    url = "%s/repos/%s/contents/%s?ref=%s" % (api, name, quoted, urllib.parse.quote(ref))
    git_url = "%s/repos/%s/git/%s/%s" % (api, name, "trees" if kind == "dir" else "blobs", sha)
    html_url = "%s/%s/%s/%s/%s" % (app.url, name, "tree" if kind == "dir" else "blob", ref, quoted)
    return {"type": kind, "size": size, "name": path.rsplit("/", 1)[-1], "path": path, "sha": sha, "url": url,
            "git_url": git_url, "html_url": html_url,
            "download_url": "%s/raw/%s/%s/%s" % (app.url, name, ref, quoted) if kind == "file" else None,
            "_links": {"self": url, "git": git_url, "html": html_url}}


def file_json(app, repo_row, git, path, sha, ref):
    data = git[sha.encode()].data
    out = content_entry_json(app, repo_row, path, 0o100644, sha, len(data), ref)
    encoded = base64.b64encode(data).decode()
    out.update(encoding="base64", content="\n".join(encoded[i:i + 60] for i in range(0, len(encoded), 60)) + "\n")
    return out


def git_commit_json(app, name, commit):
    """GitHub's git-commit: the commit object itself (git data API, contents API answers)."""
    sha, api = commit.id.decode(), "%s/repos/%s" % (app.api, name)
    return {"sha": sha, "node_id": node_id("Commit", sha), "url": "%s/git/commits/%s" % (api, sha),
            "html_url": "%s/%s/commit/%s" % (app.url, name, sha),
            "author": git_person_json(commit.author, commit.author_time, commit.author_timezone),
            "committer": git_person_json(commit.committer, commit.commit_time, commit.commit_timezone),
            "message": commit.message.decode("utf-8", "replace").rstrip("\n"),
            "tree": {"sha": commit.tree.decode(), "url": "%s/git/trees/%s" % (api, commit.tree.decode())},
            "parents": [{"sha": p.decode(), "url": "%s/git/commits/%s" % (api, p.decode()),
                         "html_url": "%s/%s/commit/%s" % (app.url, name, p.decode())} for p in commit.parents],
            "verification": {"verified": False, "reason": "unsigned", "signature": None, "payload": None,
                             "verified_at": None}}


@route("GET", "/api/v3/repos/{owner}/{repo}/contents")
@route("GET", "/api/v3/repos/{owner}/{repo}/contents/{path:path}")
def get_contents(req, owner, repo, path=""):
    row = find_repo(req, owner, repo)
    path = content_path(path)
    ref = req.query.get("ref") or row["default_branch"]
    with open_repo(req.app, row["id"]) as git:
        sha = head_commit_or_409(git, row, ref)
        found = lookup_path(git, git[sha.encode()].tree.decode(), path)
        if found is None:
            raise HTTPError(404, "Not Found")
        mode, obj = found
        if mode == 0o040000:
            entries = []
            for item in sorted(git[obj.encode()].items(), key=lambda i: i.path):
                child = (path + "/" if path else "") + item.path.decode("utf-8", "replace")
                size = git[item.sha].raw_length() if item.mode not in (0o040000, 0o160000) else 0
                entries.append(content_entry_json(req.app, row, child, item.mode, item.sha.decode(), size, ref))
            return entries
        if any(m in (req.headers.get("Accept") or "") for m in RAW_MEDIA):
            return 200, git[obj.encode()].data, {"Content-Type": "application/octet-stream"}
        return file_json(req.app, row, git, path, obj, ref)


@route("GET", "/api/v3/repos/{owner}/{repo}/readme")
def get_readme(req, owner, repo):
    row = find_repo(req, owner, repo)
    ref = req.query.get("ref") or row["default_branch"]
    with open_repo(req.app, row["id"]) as git:
        tree = git[head_commit_or_409(git, row, ref).encode()].tree.decode()
        for name in README_NAMES:
            found = lookup_path(git, tree, name)
            if found and found[0] != 0o040000:
                if any(m in (req.headers.get("Accept") or "") for m in RAW_MEDIA):
                    return 200, git[found[1].encode()].data, {"Content-Type": "application/octet-stream"}
                return file_json(req.app, row, git, name, found[1], ref)
    raise HTTPError(404, "Not Found")


def change_file(req, owner, repo, path, deleting):
    """PUT and DELETE /contents: one commit on the branch, moved by compare-and-swap, decided like a push."""
    body = req.json()
    path = content_path(path)
    if not path:
        raise invalid("Content", "path", "missing_field", "a file path is required")
    message = req.text_field(body, "message", "Content", required=True)
    expected = req.field(body, "sha", str, "Content", required=deleting)
    data = None
    if not deleting:
        encoded = req.field(body, "content", str, "Content", required=True)
        try:
            data = base64.b64decode(encoded, validate=False)
        except ValueError:
            raise invalid("Content", "content", message="content must be base64")
    row = find_repo(req, owner, repo)
    branch = req.field(body, "branch", str, "Content", default=row["default_branch"])
    ref = "refs/heads/" + branch
    with open_repo(req.app, row["id"]) as git:
        old = branch_sha(git, branch)
        if old is None and list_refs(git, "refs/heads/"):
            raise HTTPError(404, "Branch %s not found" % branch)
        req.authorize("push_branch" if old else "create_branch", Resource.repo(row), ref=ref)
        old_tree = git[old.encode()].tree.decode() if old else None
        current = lookup_path(git, old_tree, path) if old_tree else None
        if current and current[0] == 0o040000:
            raise invalid("Content", "path", "custom", "%s is a directory" % path)
        if deleting and current is None:
            raise HTTPError(404, "Not Found")
        if current and expected != current[1]:
            if expected is None:
                raise invalid("Content", "sha", "missing_field", "\"sha\" wasn't supplied.")
            raise HTTPError(409, "%s does not match %s" % (path, expected))
        if not deleting:
            blob = Blob.from_string(data)
            git.object_store.add_object(blob)
        new_tree = tree_with(git, old_tree, path.split("/"), None if deleting else (0o100644, blob.id.decode()))
        user = req.principal.user
        author = body.get("author") if isinstance(body.get("author"), dict) else None
        author_sig = "%s <%s>" % (author["name"], author["email"]) if author and isinstance(author.get("name"), str) \
            and isinstance(author.get("email"), str) else signature(user)
        new = write_commit(git, new_tree, [old] if old else [], author_sig, signature(user), message)
        if not req.move_ref(git, row["id"], ref, old or ZERO_SHA, new):
            raise HTTPError(409, "%s was modified meanwhile; fetch and try again" % branch)
        content = None if deleting else file_json(req.app, row, git, path, blob.id.decode(), branch)
        if content:
            content.pop("content"), content.pop("encoding")
        commit = git_commit_json(req.app, full_name(row), git[new.encode()])
    with req.transaction() as db:
        db.execute("UPDATE repos SET pushed_at = ? WHERE id = ?", (now(), row["id"]))
        req.effect("%s %s: %s %s→%s" % ("deleted" if deleting else "wrote", path, ref, (old or ZERO_SHA)[:12], new[:12]))
    return (200 if current or deleting else 201), {"content": content, "commit": commit}


@route("PUT", "/api/v3/repos/{owner}/{repo}/contents/{path:path}")
def put_contents(req, owner, repo, path):
    return change_file(req, owner, repo, path, deleting=False)


@route("DELETE", "/api/v3/repos/{owner}/{repo}/contents/{path:path}")
def delete_contents(req, owner, repo, path):
    return change_file(req, owner, repo, path, deleting=True)
