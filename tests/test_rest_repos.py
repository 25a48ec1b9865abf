"""REST v3 repositories, branches, refs, commits: content, errors, pagination."""
import base64
import os

from conftest import api, commit_file, git, remote


def test_create_get_update_delete(server):
    token = server.add_user("alice")
    r = api(server, "POST", "/user/repos", token, {"name": "demo", "description": "a demo", "private": True,
                                                   "auto_init": True})
    assert r.status == 201 and r.headers["location"].endswith("/api/v3/repos/alice/demo")
    repo = r.json
    assert (repo["full_name"], repo["private"], repo["description"]) == ("alice/demo", True, "a demo")
    assert repo["clone_url"] == server.url + "/alice/demo.git" and repo["owner"]["login"] == "alice"
    assert api(server, "GET", "/repos/alice/demo", token).json["id"] == repo["id"]
    r = api(server, "PATCH", "/repos/alice/demo", token, {"name": "renamed", "private": False, "description": None})
    assert r.status == 200 and r.json["name"] == "renamed" and r.json["private"] is False
    assert api(server, "GET", "/repos/alice/demo", token).status == 404
    assert api(server, "GET", "/repos/alice/renamed").status == 200           # public now: anonymous reads
    assert api(server, "DELETE", "/repos/alice/renamed", token).status == 204
    assert api(server, "GET", "/repos/alice/renamed", token).status == 404
    assert [d for d in os.listdir(server.app.repos_dir) if not d.startswith(".")] == []


def test_create_validation(server):
    token = server.add_user("alice")
    api(server, "POST", "/user/repos", token, {"name": "taken"})
    cases = [({"name": "taken"}, "name already exists on this account"), ({"name": ".."}, None),
             ({"name": "a/b"}, None), ({"name": "x.git"}, None), ({"name": "x" * 101}, None),
             ({"name": 5}, "name must be a string"), ({}, None), ({"name": "ok", "private": "yes"}, None),
             ({"name": "TAKEN"}, "name already exists on this account")]
    for body, message in cases:
        r = api(server, "POST", "/user/repos", token, body)
        assert r.status == 422 and r.json["message"] == "Validation Failed", body
        assert r.json["errors"][0]["field"] in ("name", "private")
        if message:
            assert r.json["errors"][0]["message"] == message
    r = api(server, "POST", "/user/repos", token, raw_body=b"[1,2]", headers={"Content-Type": "application/json"})
    assert r.status == 400
    # an oversized body is refused from its Content-Length, before it is read
    import socket
    import urllib.parse
    u = urllib.parse.urlsplit(server.url)
    with socket.create_connection((u.hostname, u.port), timeout=10) as s:
        s.sendall(b"POST /api/v3/user/repos HTTP/1.1\r\nHost: x\r\nAuthorization: token %s\r\n"
                  b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (token.encode(), 11 << 20))
        reply = b""
        while b"larger than" not in reply:
            chunk = s.recv(65536)
            if not chunk:
                break
            reply += chunk
        reply = reply.decode()
    assert reply.startswith("HTTP/1.1 413") and "larger than" in reply
    r = api(server, "GET", "/nope/nothing", token)
    assert r.status == 404 and r.json == {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"}


def test_empty_repo_then_branches_refs_commits(server, tmp_path):
    token = server.add_user("alice")
    api(server, "POST", "/user/repos", token, {"name": "empty"})
    assert api(server, "GET", "/repos/alice/empty/commits", token).status == 409
    assert api(server, "GET", "/repos/alice/empty/branches", token).json == []
    work = str(tmp_path / "w")
    git(str(tmp_path), "clone", "-q", remote(server, "alice/empty", token), work)
    shas = [commit_file(work, "f%d.txt" % i, str(i)) for i in range(7)]
    git(work, "push", "-q", "origin", "HEAD:main", "HEAD~2:refs/heads/feature/old")
    git(work, "tag", "v1", shas[0])
    git(work, "push", "-q", "origin", "v1")
    branches = api(server, "GET", "/repos/alice/empty/branches", token).json
    assert [(b["name"], b["commit"]["sha"]) for b in branches] == [("feature/old", shas[4]), ("main", shas[6])]
    branch = api(server, "GET", "/repos/alice/empty/branches/feature/old", token).json
    assert branch["commit"]["commit"]["message"] == "change f4.txt" and branch["protected"] is False
    ref = api(server, "GET", "/repos/alice/empty/git/ref/heads/main", token).json
    assert ref["ref"] == "refs/heads/main" and ref["object"] == {
        "type": "commit", "sha": shas[6], "url": server.url + "/api/v3/repos/alice/empty/git/commits/" + shas[6]}
    assert api(server, "GET", "/repos/alice/empty/git/ref/heads/nope", token).status == 404
    matching = api(server, "GET", "/repos/alice/empty/git/matching-refs/heads/f", token).json
    assert [m["ref"] for m in matching] == ["refs/heads/feature/old"]
    assert [m["ref"] for m in api(server, "GET", "/repos/alice/empty/git/matching-refs/tags", token).json] == [
        "refs/tags/v1"]
    # commits: newest first, paginated with a Link header
    page1 = api(server, "GET", "/repos/alice/empty/commits?per_page=3", token)
    assert [c["sha"] for c in page1.json] == shas[::-1][:3]
    assert 'rel="next"' in page1.headers["link"] and "page=2" in page1.headers["link"]
    page3 = api(server, "GET", "/repos/alice/empty/commits?per_page=3&page=3", token)
    assert [c["sha"] for c in page3.json] == [shas[0]] and 'rel="next"' not in page3.headers["link"]
    old = api(server, "GET", "/repos/alice/empty/commits?sha=feature/old&per_page=100", token).json
    assert len(old) == 5
    one = api(server, "GET", "/repos/alice/empty/commits/" + shas[3][:10], token).json
    assert one["sha"] == shas[3] and one["parents"][0]["sha"] == shas[2]
    assert one["commit"]["author"]["email"] == "test@example.com"
    assert api(server, "GET", "/repos/alice/empty/commits/v1", token).json["sha"] == shas[0]
    assert api(server, "GET", "/repos/alice/empty/commits/deadbeef", token).status == 404
    # default branch can be switched to an existing branch only, and a refused change moves nothing
    assert api(server, "PATCH", "/repos/alice/empty", token, {"default_branch": "nope"}).status == 422
    api(server, "POST", "/user/repos", token, {"name": "taken"})
    assert api(server, "PATCH", "/repos/alice/empty", token, {"default_branch": "feature/old",
                                                              "name": "taken"}).status == 422
    assert git(str(tmp_path), "ls-remote", "--symref", remote(server, "alice/empty", token), "HEAD").stdout.startswith(
        "ref: refs/heads/main")
    assert api(server, "PATCH", "/repos/alice/empty", token, {"default_branch": "feature/old"}).json[
        "default_branch"] == "feature/old"
    assert git(str(tmp_path), "ls-remote", "--symref", remote(server, "alice/empty", token), "HEAD").stdout.startswith(
        "ref: refs/heads/feature/old")


def test_user_repo_lists_and_pagination(server):
    alice = server.add_user("alice")
    bob = server.add_user("bob")
    for i in range(5):
        api(server, "POST", "/user/repos", alice, {"name": "r%d" % i, "private": i % 2 == 1})
    names = [r["name"] for r in api(server, "GET", "/user/repos?per_page=100", alice).json]
    assert names == ["r0", "r1", "r2", "r3", "r4"]
    page = api(server, "GET", "/user/repos?per_page=2&page=2", alice)
    assert [r["name"] for r in page.json] == ["r2", "r3"] and 'rel="last"' in page.headers["link"]
    assert [r["name"] for r in api(server, "GET", "/users/alice/repos", bob).json] == ["r0", "r2", "r4"]
    assert [r["name"] for r in api(server, "GET", "/users/alice/repos").json] == ["r0", "r2", "r4"]
    # her own private ones are under /user/repos, not here, even to her (GitHub: "public repositories")
    assert [r["name"] for r in api(server, "GET", "/users/alice/repos", alice).json] == ["r0", "r2", "r4"]
    assert api(server, "GET", "/user/repos?visibility=private", alice).json[0]["name"] == "r1"
    assert api(server, "GET", "/user/repos", bob).json == []
    assert api(server, "GET", "/users/alice", bob).json["public_repos"] == 3
    assert api(server, "GET", "/user", None).status == 401


def test_conditional_requests_answer_304_for_what_the_client_has(tmp_path):
    """GitHub's conditional requests: every REST read carries an ETag; If-None-Match with it (weak or
    strong, alone or in a list, or *) is a 304 with no body; a change, or another caller's view, is a
    200 with a new ETag. githubkit, whose HTTP cache revalidates, gets its 304s and the right data."""
    import io
    import agentgit
    log = io.StringIO()
    srv = agentgit.make_server(tmp_path / "d", port=0, access_log=log).start()
    try:
        alice, rita = srv.add_user("alice"), srv.add_user("rita")
        api(srv, "POST", "/user/repos", alice, {"name": "demo", "auto_init": True})
        first = api(srv, "GET", "/repos/alice/demo", alice)
        etag = first.headers["etag"]
        assert etag.startswith('W/"')
        for asked in (etag, etag[2:], 'W/"other", ' + etag, "*"):
            again = api(srv, "GET", "/repos/alice/demo", alice, headers={"If-None-Match": asked})
            assert (again.status, again.raw, again.headers["etag"]) == (304, b"", etag), asked
        assert api(srv, "GET", "/repos/alice/demo", alice, headers={"If-None-Match": 'W/"other"'}).status == 200
        assert api(srv, "GET", "/repos/alice/demo", rita).headers["etag"] != etag       # her permissions differ
        api(srv, "PATCH", "/repos/alice/demo", alice, {"description": "changed"})
        changed = api(srv, "GET", "/repos/alice/demo", alice, headers={"If-None-Match": etag})
        assert changed.status == 200 and changed.json["description"] == "changed" and changed.headers["etag"] != etag
        from githubkit import GitHub, TokenAuthStrategy
        kit = GitHub(TokenAuthStrategy(alice), base_url=srv.url + "/api/v3/", http_cache=True, auto_retry=False)
        before = log.getvalue().count('" 304 ')
        for _ in range(3):
            assert kit.rest.repos.get("alice", "demo").parsed_data.description == "changed"
        assert log.getvalue().count('" 304 ') - before == 2         # the first read, then two revalidations
        api(srv, "PATCH", "/repos/alice/demo", alice, {"description": "again"})
        assert kit.rest.repos.get("alice", "demo").parsed_data.description == "again"
    finally:
        srv.stop()


def test_topics_and_languages(server):
    """A repository's topics (GitHub's rules, its admins' to set, in the repository's JSON too) and the
    bytes of code per language on its default branch."""
    alice, bob = server.add_user("alice"), server.add_user("bob")
    api(server, "POST", "/user/repos", alice, {"name": "app", "auto_init": True})
    assert api(server, "GET", "/repos/alice/app/topics", alice).json == {"names": []}
    put = api(server, "PUT", "/repos/alice/app/topics", alice, {"names": ["Agents", "git", "agents"]})
    assert put.status == 200 and put.json == {"names": ["agents", "git"]}
    assert api(server, "GET", "/repos/alice/app", alice).json["topics"] == ["agents", "git"]
    for bad in (["has space"], ["x" * 51], ["-lead"], [f"t{i}" for i in range(21)], [7]):
        assert api(server, "PUT", "/repos/alice/app/topics", alice, {"names": bad}).status == 422, bad
    assert api(server, "PUT", "/repos/alice/app/topics", bob, {"names": ["mine"]}).status == 403
    for path, text in (("main.py", "print('hi')\n" * 10), ("util.py", "x = 1\n"), ("web/app.js", "let a = 1;\n")):
        api(server, "PUT", "/repos/alice/app/contents/" + path, alice, {
            "message": path, "content": base64.b64encode(text.encode()).decode()})
    languages = api(server, "GET", "/repos/alice/app/languages", alice).json
    assert languages == {"Python": 12 * 10 + 6, "JavaScript": 11} and list(languages) == ["Python", "JavaScript"]


def test_contributors(server, tmp_path):
    """Who wrote the default branch, most commits first: accounts by their commits' emails; with anon=1
    also the authors no account matches."""
    alice = server.add_user("alice")
    api(server, "POST", "/user/repos", alice, {"name": "app", "auto_init": True})
    work = str(tmp_path / "w")
    git(str(tmp_path), "clone", "-q", remote(server, "alice/app", alice), work)
    for n in range(3):
        commit_file(work, "t%d.txt" % n, "t")          # as Test <test@example.com>, whom no account has
    git(work, "push", "-q", "origin", "HEAD:main")
    assert [(c["login"], c["contributions"]) for c in api(server, "GET", "/repos/alice/app/contributors",
                                                          alice).json] == [("alice", 1)]
    everyone = api(server, "GET", "/repos/alice/app/contributors?anon=1", alice).json
    assert [(c.get("login"), c.get("email"), c["type"], c["contributions"]) for c in everyone] == [
        (None, "test@example.com", "Anonymous", 3), ("alice", None, "User", 1)]
