"""The Git data API (refs, blobs, trees, commits, tags) and compare: an agent that never runs git."""
import base64

from conftest import api, git, remote, shape_checker

SPEC = shape_checker()


def checked(method, path, r, status):
    assert r.status == status, (method, path, r)
    if SPEC is not None and r.json is not None:
        assert SPEC.check(method, path, status, r.json) == []
    return r.json


def test_build_a_commit_without_git(server, tmp_path):
    alice = server.add_user("alice")
    api(server, "POST", "/user/repos", alice, {"name": "lab", "auto_init": True})
    base = "/repos/alice/lab"
    main = checked("GET", base + "/git/ref/heads/main", api(server, "GET", base + "/git/ref/heads/main", alice), 200)
    parent = main["object"]["sha"]
    parent_tree = api(server, "GET", base + "/git/commits/" + parent, alice).json["tree"]["sha"]
    blob = checked("POST", base + "/git/blobs", api(server, "POST", base + "/git/blobs", alice, {
        "content": base64.b64encode(b"\x00binary\xff").decode(), "encoding": "base64"}), 201)
    got = checked("GET", base + "/git/blobs/" + blob["sha"], api(server, "GET", base + "/git/blobs/" + blob["sha"], alice), 200)
    assert base64.b64decode(got["content"]) == b"\x00binary\xff"
    tree = checked("POST", base + "/git/trees", api(server, "POST", base + "/git/trees", alice, {
        "base_tree": parent_tree, "tree": [
            {"path": "src/app.py", "mode": "100644", "type": "blob", "content": "print('hi')\n"},
            {"path": "data.bin", "mode": "100644", "type": "blob", "sha": blob["sha"]},
            {"path": "README.md", "mode": "100644", "type": "blob", "sha": None}]}), 201)
    assert sorted(e["path"] for e in tree["tree"]) == ["data.bin", "src"]
    commit = checked("POST", base + "/git/commits", api(server, "POST", base + "/git/commits", alice, {
        "message": "Built by REST", "tree": tree["sha"], "parents": [parent],
        "author": {"name": "Robo", "email": "robo@example.com", "date": "2026-01-02T03:04:05Z"}}), 201)
    assert commit["author"]["date"] == "2026-01-02T03:04:05Z" and commit["parents"][0]["sha"] == parent
    # moving main is a push: fast-forward fine, rewind refused without force
    ref = checked("PATCH", base + "/git/refs/heads/main", api(server, "PATCH", base + "/git/refs/heads/main", alice,
                                                              {"sha": commit["sha"]}), 200)
    assert ref["object"]["sha"] == commit["sha"]
    r = api(server, "PATCH", base + "/git/refs/heads/main", alice, {"sha": parent})
    assert r.status == 422 and r.json["message"] == "Update is not a fast forward"
    checked("POST", base + "/git/refs", api(server, "POST", base + "/git/refs", alice,
                                            {"ref": "refs/heads/old", "sha": parent}), 201)
    assert api(server, "POST", base + "/git/refs", alice, {"ref": "refs/heads/old", "sha": parent}).status == 422
    assert api(server, "POST", base + "/git/refs", alice, {"ref": "refs/heads/bad..name", "sha": parent}).status == 422
    assert api(server, "POST", base + "/git/refs", alice, {"ref": "refs/heads/x", "sha": "f" * 40}).status == 422
    tag = checked("POST", base + "/git/tags", api(server, "POST", base + "/git/tags", alice, {
        "tag": "v1", "message": "first", "object": commit["sha"], "type": "commit"}), 201)
    api(server, "POST", base + "/git/refs", alice, {"ref": "refs/tags/v1", "sha": tag["sha"]})
    assert api(server, "GET", base + "/git/tags/" + tag["sha"], alice).json["object"]["sha"] == commit["sha"]
    full = api(server, "GET", base + "/git/trees/main?recursive=1", alice).json
    assert sorted(e["path"] for e in full["tree"]) == ["data.bin", "src", "src/app.py"]
    # what git sees
    d = str(tmp_path / "c")
    git(str(tmp_path), "clone", "-q", remote(server, "alice/lab", alice), d)
    assert git(d, "log", "-1", "--format=%an|%s").stdout.strip() == "Robo|Built by REST"
    assert open(d + "/src/app.py").read() == "print('hi')\n" and open(d + "/data.bin", "rb").read() == b"\x00binary\xff"
    assert git(d, "cat-file", "-t", "v1").stdout.strip() == "tag" and git(d, "fsck", "--strict").returncode == 0
    # compare and deletion
    cmp = checked("GET", base + "/compare/old...main", api(server, "GET", base + "/compare/old...main", alice), 200)
    assert (cmp["status"], cmp["ahead_by"], cmp["behind_by"]) == ("ahead", 1, 0)
    assert sorted(f["filename"] for f in cmp["files"]) == ["README.md", "data.bin", "src/app.py"]
    assert api(server, "GET", base + "/compare/main...old", alice).json["status"] == "behind"
    assert api(server, "GET", base + "/compare/main...nope", alice).status == 404
    assert api(server, "DELETE", base + "/git/refs/heads/old", alice).status == 204
    assert api(server, "DELETE", base + "/git/refs/heads/old", alice).status == 422
    refs = [r["ref"] for r in api(server, "GET", base + "/git/refs", alice).json]
    assert refs == ["refs/heads/main", "refs/tags/v1"]


def test_readers_cannot_write_objects_or_refs(server):
    alice, bob = server.add_user("alice"), server.add_user("bob")
    api(server, "POST", "/user/repos", alice, {"name": "lab", "auto_init": True})
    sha = api(server, "GET", "/repos/alice/lab/git/ref/heads/main", bob).json["object"]["sha"]
    assert api(server, "POST", "/repos/alice/lab/git/blobs", bob, {"content": "x"}).status == 403
    assert api(server, "POST", "/repos/alice/lab/git/refs", bob, {"ref": "refs/heads/b", "sha": sha}).status == 403
    assert api(server, "DELETE", "/repos/alice/lab/git/refs/heads/main", bob).status == 403
    assert api(server, "GET", "/repos/alice/lab/git/blobs/" + "0" * 40, bob).status == 404


def test_commits_and_comparisons_in_diff_and_patch_media_and_the_empty_tree(server):
    """GitHub's diff and patch media on a commit and a comparison (as on a pull request), and git's empty
    tree (4b825dc6…) taken as a base_tree, though no repository stores it."""
    alice = server.add_user("alice")
    api(server, "POST", "/user/repos", alice, {"name": "app", "auto_init": True})
    main = api(server, "GET", "/repos/alice/app/git/ref/heads/main", alice).json["object"]["sha"]
    api(server, "POST", "/repos/alice/app/git/refs", alice, {"ref": "refs/heads/feature", "sha": main})
    head = api(server, "PUT", "/repos/alice/app/contents/f.txt", alice, {"message": "Add f", "content": "Zgo=",
                                                                          "branch": "feature"}).json["commit"]["sha"]
    for path in ("/repos/alice/app/commits/%s" % head, "/repos/alice/app/compare/main...feature"):
        diff = api(server, "GET", path, alice, headers={"Accept": "application/vnd.github.diff"})
        assert diff.status == 200 and diff.headers["content-type"].startswith("text/plain"), path
        assert diff.raw.startswith(b"diff --git a/f.txt b/f.txt") and b"+f" in diff.raw, diff.raw[:200]
        patch = api(server, "GET", path, alice, headers={"Accept": "application/vnd.github.v3.patch"})
        assert patch.raw.startswith(b"From %s" % head.encode()) and b"Subject: [PATCH" in patch.raw, path
    empty = api(server, "POST", "/repos/alice/app/git/trees", alice, {
        "base_tree": "4b825dc642cb6eb9a060e54bf8d69288fbee4904", "tree": [
            {"path": "only.txt", "mode": "100644", "type": "blob", "content": "only\n"}]})
    assert empty.status == 201 and [e["path"] for e in empty.json["tree"]] == ["only.txt"]
