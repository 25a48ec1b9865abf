"""Git storage: bare repositories on disk, initial commits, refs, commits, merges and diffs via dulwich."""

import contextlib
import importlib.util
import io
import os
import re
import subprocess
import time

from dulwich.graph import find_merge_base
from dulwich.object_store import peel_sha
from dulwich.objects import Blob, Commit, Tree
from dulwich.patch import write_commit_patch, write_object_diff, write_tree_diff
from dulwich.repo import Repo


# Bare repositories live at <data>/repos/<repo id>.git: a rename or transfer is a row update, and no
# user-chosen name ever becomes a path. dulwich is the object library (initial commits, refs, commit
# walks); Git Smart HTTP (section 10) serves packs through the git binary when there is one.

ZERO_SHA = "0" * 40
EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"     # git's tree of nothing, in every repository


def merge_support_missing():
    """Why pull requests could not be merged here, or None: dulwich's merges need its 'merge' extra
    (the merge3 package). Looked up, not imported, so starting stays quick."""
    if importlib.util.find_spec("merge3") is None:
        return ("agentgit needs dulwich's merge extra for pull requests, and the merge3 package is missing: "
                "pip install 'dulwich[merge]'")
    return None


def repo_dir(app, repo_id):
    return os.path.join(app.repos_dir, "%d.git" % repo_id)


def init_repository(path, default_branch, initial=None):
    """A bare repository at ``path`` whose HEAD names ``default_branch``. ``initial`` =
    (author login, author email, repository name) adds a first commit holding README.md."""
    repo = Repo.init_bare(path, mkdir=not os.path.exists(path))
    try:
        repo.refs.set_symbolic_ref(b"HEAD", b"refs/heads/" + default_branch.encode())
        if initial:
            login, email, name = initial
            blob = Blob.from_string(("# %s\n" % name).encode())
            tree = Tree()
            tree.add(b"README.md", 0o100644, blob.id)
            commit = Commit()
            commit.tree = tree.id
            commit.author = commit.committer = ("%s <%s>" % (login, email)).encode()
            commit.author_time = commit.commit_time = int(time.time())
            commit.author_timezone = commit.commit_timezone = 0
            commit.message = b"Initial commit\n"
            for obj in (blob, tree, commit):
                repo.object_store.add_object(obj)
            repo.refs[b"refs/heads/" + default_branch.encode()] = commit.id
    finally:
        repo.close()


@contextlib.contextmanager
def open_repo(app, repo_id):
    """A fresh dulwich Repo per use: dulwich's Repo caches pack lists that go stale across pushes."""
    repo = Repo(repo_dir(app, repo_id))
    try:
        yield repo
    finally:
        repo.close()


def copy_refs(app, source_path, target_path, refs):
    """Point each of ``refs`` ({target ref: source ref}) in the target repository at what the source
    ref holds, bringing over the objects it lacks (a target of None: the objects only), through `git
    fetch` when git is the engine (as fast as a local clone), else through dulwich."""
    if not refs:
        return
    if app.git_engine.name == "git":
        subprocess.run([app.git_engine.git, "--git-dir", target_path, "fetch", "--quiet", "--no-tags", source_path]
                       + ["+%s:%s" % (source, target) if target else source for target, source in refs.items()],
                       check=True, capture_output=True, stdin=subprocess.DEVNULL)
        return
    with contextlib.closing(Repo(source_path)) as source, contextlib.closing(Repo(target_path)) as target:
        wanted = {target_ref: source.refs[source_ref.encode()] for target_ref, source_ref in refs.items()}
        source.fetch(target, determine_wants=lambda remote_refs, depth=None: [
            sha for sha in set(wanted.values()) if sha not in target.object_store])
        for ref, sha in wanted.items():
            if ref:
                target.refs[ref.encode()] = sha


def branch_sha(git, branch):
    ref = b"refs/heads/" + branch.encode()
    return git.refs[ref].decode() if ref in git.refs else None


REF_FORBIDDEN_RE = re.compile(r"[\x00-\x20~^:?*\[\\\x7f]|@\{|\.\.")


def valid_ref_name(ref):
    """git's rules for a full ref name (git check-ref-format), for every surface that takes one: REST,
    and each ref of a push, decided on the exact bytes git would write (which must be UTF-8)."""
    if isinstance(ref, bytes):
        try:
            ref = ref.decode("utf-8")
        except UnicodeDecodeError:
            return False
    parts = ref.split("/")
    return ref.startswith("refs/") and len(parts) >= 3 and not REF_FORBIDDEN_RE.search(ref) and not any(
        p in ("", ".", "..") or p.endswith(".lock") or p.startswith(".") for p in parts) and not ref.endswith("/")


def list_refs(repo, prefix):
    """{full ref name: sha} under ``prefix`` (e.g. 'refs/heads/', always one of the code's own: refs
    may be loose files, and the prefix is a directory), sorted by name."""
    refs = repo.refs.as_dict(prefix.encode())
    return {prefix + name.decode(): sha.decode() for name, sha in sorted(refs.items())}


def resolve_commit(repo, ref):
    """The commit sha that a branch, tag, full ref or (abbreviated) sha names, or None; a trailing
    ~N or ^ walks first parents (main~2)."""
    m = re.fullmatch(r"(.+?)((?:~\d*|\^)+)", ref)
    if m:
        sha = resolve_commit(repo, m.group(1))
        for step in re.findall(r"~\d*|\^", m.group(2)):
            for _ in range(int(step[1:] or 1) if step[0] == "~" else 1):
                parents = repo[sha.encode()].parents if sha else []
                sha = parents[0].decode() if parents else None
        return sha
    ref_b = ref.encode()
    for candidate in (ref_b, b"refs/heads/" + ref_b, b"refs/tags/" + ref_b):
        if candidate.startswith(b"refs/") and candidate in repo.refs:
            sha = repo.refs[candidate]
            obj = repo[sha]
            while obj.type_name == b"tag":       # peel annotated tags
                obj = repo[obj.object[1]]
            return obj.id.decode() if obj.type_name == b"commit" else None
    if re.fullmatch(r"[0-9a-f]{4,40}", ref):
        matches = _expand_sha(repo, ref)
        if len(matches) == 1 and repo[matches[0]].type_name == b"commit":
            return matches[0].decode()
    return None


def _expand_sha(repo, prefix):
    if len(prefix) == 40:
        return [prefix.encode()] if prefix.encode() in repo.object_store else []
    return list(repo.object_store.iter_prefix(prefix.encode()))

def commits_between(repo, base_sha, head_sha):
    """Commits reachable from head but not from base, oldest first (what a pull request brings)."""
    walker = repo.get_walker(include=[head_sha.encode()], exclude=[base_sha.encode()] if base_sha else [])
    return [entry.commit for entry in walker][::-1]


def merge_base(repo, a, b):
    bases = find_merge_base(repo, [a.encode(), b.encode()])
    return bases[0].decode() if bases else None


def merge_trees(repo, base_sha, ours_sha, theirs_sha):
    """Three-way content merge of two commits over their base: (tree id, conflicted paths)."""
    from dulwich.merge import three_way_merge   # here, not at start: it pulls in merge3 and costs start-up time
    base = repo[base_sha.encode()] if base_sha else None
    tree, conflicts = three_way_merge(repo.object_store, base, repo[ours_sha.encode()], repo[theirs_sha.encode()])
    repo.object_store.add_object(tree)
    return tree.id.decode(), [c.decode("utf-8", "replace") for c in conflicts]


def merge_commit(repo, common, ours, theirs, who, message):
    """``theirs`` merged into ``ours`` over their common ancestor as a commit by ``who`` ('Name <email>'),
    no ref moved: (its sha, []), or (None, the conflicted paths)."""
    tree, conflicts = merge_trees(repo, common, ours, theirs)
    if conflicts:
        return None, conflicts
    return write_commit(repo, tree, [ours, theirs], who, who, message), []


def write_commit(repo, tree, parents, author, committer, message, author_time=None, author_tz=0):
    """A new commit object (no ref moves); ``author``/``committer`` are 'Name <email>'."""
    commit = Commit()
    commit.tree = tree.encode()
    commit.parents = [p.encode() for p in parents]
    commit.author, commit.committer = author.encode(), committer.encode()
    commit.commit_time = int(time.time())
    commit.author_time = author_time if author_time is not None else commit.commit_time
    commit.author_timezone, commit.commit_timezone = author_tz, 0
    commit.message = message.encode() if message.endswith("\n") else (message + "\n").encode()
    repo.object_store.add_object(commit)
    return commit.id.decode()


def tree_diff(repo, old_tree, new_tree):
    """A git-style unified diff of two trees, as bytes."""
    out = io.BytesIO()
    write_tree_diff(out, repo.object_store, old_tree.encode() if old_tree else None, new_tree.encode())
    return out.getvalue()


def commit_patch(git, commit, index=1, total=1):
    """One commit as `git format-patch` writes it."""
    out = io.BytesIO()
    parent_tree = git[commit.parents[0]].tree.decode() if commit.parents else None
    diff = tree_diff(git, parent_tree, commit.tree.decode())
    write_commit_patch(out, commit, diff, (index, total))
    return out.getvalue()


def changed_files(repo, old_tree, new_tree):
    """[(path, status, additions, deletions, new blob sha, patch text)] between two trees."""
    out = []
    for change in repo.object_store.tree_changes(old_tree.encode() if old_tree else None, new_tree.encode()):
        (old_path, new_path), _, (old_sha, new_sha) = change
        status = "added" if old_path is None else "removed" if new_path is None else (
            "renamed" if old_path != new_path else "modified")
        buf = io.BytesIO()
        write_object_diff(buf, repo.object_store, (old_path, change[1][0], old_sha), (new_path, change[1][1], new_sha))
        lines = buf.getvalue().decode("utf-8", "replace").split("\n")
        hunks = lines[next((i for i, l in enumerate(lines) if l.startswith("@@")), len(lines)):]
        additions = sum(1 for l in hunks if l.startswith("+"))
        deletions = sum(1 for l in hunks if l.startswith("-"))
        out.append(((new_path or old_path).decode("utf-8", "replace"), status, additions, deletions,
                    (new_sha or old_sha).decode(), "\n".join(hunks).rstrip("\n")))
    return out


def walk_commits(repo, sha, skip, limit):
    """Commits reachable from ``sha``, newest first, as dulwich Commit objects."""
    walker = repo.get_walker(include=[sha.encode()], max_entries=skip + limit)
    return [entry.commit for entry in walker][skip:]


# More commits or changed paths than this in one ref move are refused rather than judged path by path:
# an attacker's push must not buy unbounded CPU. An import that large is pushed in parts.
MAX_JUDGED_CHANGES = 20000


def changes_brought(repo, new, exclude):
    """What moving a ref to ``new`` brings into it: [(commit, path, new blob or None when deleted)] for
    each path that each commit reachable from ``new`` and from none of ``exclude`` changes against its
    parent, with no rename detection, so a move out of a directory changes both paths. A merge changes
    the paths it took from none of its parents as they were (git's combined diff), a root commit every
    path it has. None when there are more than MAX_JUDGED_CHANGES commits or changes, or an object is
    missing: what cannot be judged is refused."""
    try:
        return walk_changes(repo, new, exclude)
    except KeyError:
        return None


def walk_changes(repo, new, exclude):
    store = repo.object_store
    peeled = peel_sha(store, new.encode())[1]
    if not isinstance(peeled, Commit):
        return []                                    # a tag of a tree or a blob brings no commit
    known = [sha.encode() for sha in exclude if sha and sha != ZERO_SHA and sha.encode() in store]
    changes = []
    for count, entry in enumerate(repo.get_walker(include=[peeled.id], exclude=known)):
        commit = entry.commit
        per_parent = [{new_path or old_path: new_sha for (old_path, new_path), _, (_, new_sha) in store.tree_changes(
            store[parent].tree if parent else None, commit.tree)} for parent in commit.parents or [None]]
        for path in sorted(set(per_parent[0]).intersection(*per_parent[1:])):
            blob = per_parent[0][path]
            changes.append((commit.id.decode(), path.decode("utf-8", "surrogateescape"), blob and blob.decode()))
        if count >= MAX_JUDGED_CHANGES or len(changes) > MAX_JUDGED_CHANGES:
            return None
    return changes
