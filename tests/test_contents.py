"""The contents API: read files and directories, write and delete with sha checks, raw media type."""
import base64
import os

from conftest import api, git, remote, shape_checker

SPEC = shape_checker()


def b64(text):
    return base64.b64encode(text.encode()).decode()


def test_create_update_delete_read(server, tmp_path):
    alice = server.add_user("alice")
    reader = server.add_user("reader")
    api(server, "POST", "/user/repos", alice, {"name": "docs"})            # empty: the first write creates main
    r = api(server, "PUT", "/repos/alice/docs/contents/guide/intro.md", alice,
            {"message": "Add intro", "content": b64("# Intro\n")})
    assert r.status == 201 and r.json["content"]["path"] == "guide/intro.md"
    if SPEC:
        assert SPEC.check("PUT", "/repos/alice/docs/contents/guide/intro.md", 201, r.json) == []
    first_sha = r.json["content"]["sha"]
    got = api(server, "GET", "/repos/alice/docs/contents/guide/intro.md", reader).json
    assert base64.b64decode(got["content"]) == b"# Intro\n" and got["encoding"] == "base64" and got["sha"] == first_sha
    if SPEC:
        assert SPEC.check("GET", "/repos/alice/docs/contents/guide/intro.md", 200, got) == []
    raw = api(server, "GET", "/repos/alice/docs/contents/guide/intro.md", reader,
              headers={"Accept": "application/vnd.github.raw"})
    assert raw.raw == b"# Intro\n"
    # updating needs the current sha: missing → 422, stale → 409
    body = {"message": "Edit", "content": b64("# Intro\nmore\n")}
    assert api(server, "PUT", "/repos/alice/docs/contents/guide/intro.md", alice, body).status == 422
    assert api(server, "PUT", "/repos/alice/docs/contents/guide/intro.md", alice, dict(body, sha="0" * 40)).status == 409
    r = api(server, "PUT", "/repos/alice/docs/contents/guide/intro.md", alice, dict(body, sha=first_sha))
    assert r.status == 200 and r.json["commit"]["message"] == "Edit"
    api(server, "PUT", "/repos/alice/docs/contents/README.md", alice, {"message": "readme", "content": b64("hi\n")})
    listing = api(server, "GET", "/repos/alice/docs/contents", reader).json
    assert [(e["name"], e["type"]) for e in listing] == [("README.md", "file"), ("guide", "dir")]
    assert base64.b64decode(api(server, "GET", "/repos/alice/docs/readme", reader).json["content"]) == b"hi\n"
    # deleting the last file of a directory removes the directory
    sha = api(server, "GET", "/repos/alice/docs/contents/guide/intro.md", reader).json["sha"]
    r = api(server, "DELETE", "/repos/alice/docs/contents/guide/intro.md", alice, {"message": "rm", "sha": sha})
    assert r.status == 200 and r.json["content"] is None
    assert api(server, "GET", "/repos/alice/docs/contents/guide", reader).status == 404
    # a reader may not write; git sees exactly the commits made
    assert api(server, "PUT", "/repos/alice/docs/contents/x.txt", reader, {"message": "x", "content": b64("x")}).status == 403
    d = str(tmp_path / "clone")
    git(str(tmp_path), "clone", "-q", remote(server, "alice/docs", alice), d)
    assert git(d, "log", "--format=%s").stdout.strip().split("\n") == ["rm", "readme", "Edit", "Add intro"]
    assert sorted(os.listdir(d)) == [".git", "README.md"]
    assert git(d, "log", "-1", "--format=%an <%ae>", "HEAD~1").stdout.strip() == "alice <alice@users.noreply.agentgit>"


def test_bad_paths_and_refs(server):
    alice = server.add_user("alice")
    api(server, "POST", "/user/repos", alice, {"name": "docs", "auto_init": True})
    for path in ("../etc/passwd", "a/../b", ".git/config", "a//b", "./x"):
        r = api(server, "PUT", "/repos/alice/docs/contents/" + path, alice, {"message": "x", "content": b64("x")})
        assert r.status in (404, 422), path       # 404 where the URL itself normalises away
        if r.status == 422:
            assert r.json["errors"][0]["field"] == "path"
    assert api(server, "GET", "/repos/alice/docs/contents/.git/config", alice).status == 422
    assert api(server, "GET", "/repos/alice/docs/contents/nope.txt", alice).status == 404
    assert api(server, "GET", "/repos/alice/docs/contents/README.md?ref=nope", alice).status == 404
    r = api(server, "PUT", "/repos/alice/docs/contents/README.md/child", alice, {"message": "x", "content": b64("x")})
    assert r.status == 422 and "is a file" in r.json["errors"][0]["message"]
    r = api(server, "PUT", "/repos/alice/docs/contents/n.txt", alice, {"message": "x", "content": b64("x"),
                                                                      "branch": "nope"})
    assert r.status == 404
    assert api(server, "PUT", "/repos/alice/docs/contents/n.txt", alice, {"content": b64("x")}).status == 422
