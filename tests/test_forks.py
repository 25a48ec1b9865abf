"""Forks and pull requests from them, on both Git engines: how an agent without push access contributes."""
from conftest import api, commit_file, ext, git, grant_a_task, patch_everywhere, remote, session_token


def test_fork_rules(engine_server):
    server = engine_server
    alice, bob, carl = server.add_user("alice"), server.add_user("bob"), server.add_user("carl")
    api(server, "POST", "/user/repos", alice, {"name": "demo", "private": True, "auto_init": True})
    api(server, "PUT", "/repos/alice/demo/collaborators/bob", alice, {"permission": "pull"})
    assert api(server, "POST", "/repos/alice/demo/forks", carl).status == 404         # cannot see it
    r = api(server, "POST", "/repos/alice/demo/forks", bob)
    assert r.status == 202 and (r.json["full_name"], r.json["fork"], r.json["private"]) == ("bob/demo", True, True)
    assert r.json["parent"]["full_name"] == r.json["source"]["full_name"] == "alice/demo"
    again = api(server, "POST", "/repos/alice/demo/forks", bob)
    assert again.status == 202 and again.json["id"] == r.json["id"]                   # forking again: the same fork
    main = api(server, "GET", "/repos/alice/demo/branches/main", alice).json["commit"]["sha"]
    assert api(server, "GET", "/repos/bob/demo/branches/main", bob).json["commit"]["sha"] == main
    assert api(server, "GET", "/repos/bob/demo", carl).status == 404                  # private, as its parent
    assert api(server, "GET", "/repos/alice/demo", alice).json["forks_count"] == 1
    assert [f["full_name"] for f in api(server, "GET", "/repos/alice/demo/forks", bob).json] == ["bob/demo"]
    # as on GitHub, a private fork inherits the upstream's permissions (here up to write: bob owns it)
    assert [f["full_name"] for f in api(server, "GET", "/repos/alice/demo/forks", alice).json] == ["bob/demo"]
    permissions = api(server, "GET", "/repos/bob/demo", alice).json["permissions"]
    assert permissions["push"] is True and permissions["admin"] is False
    assert api(server, "DELETE", "/repos/bob/demo", alice).status == 403
    ext(server, "POST", "/user/orgs", carl, {"login": "acme"})
    assert api(server, "POST", "/repos/alice/demo/forks", bob, {"organization": "acme"}).status == 403
    api(server, "POST", "/user/repos", carl, {"name": "demo"})
    api(server, "PUT", "/repos/alice/demo/collaborators/carl", alice, {"permission": "pull"})
    assert api(server, "POST", "/repos/alice/demo/forks", carl).status == 422          # the name is taken
    r = api(server, "POST", "/repos/alice/demo/forks", carl, {"name": "demo-fork", "default_branch_only": True})
    assert r.status == 202 and r.json["full_name"] == "carl/demo-fork"


def test_a_pull_request_from_a_fork_follows_its_branch(engine_server, tmp_path):
    server = engine_server
    alice, bob = server.add_user("alice"), server.add_user("bob")
    api(server, "POST", "/user/repos", alice, {"name": "demo", "auto_init": True})
    api(server, "POST", "/repos/alice/demo/forks", bob)
    work = str(tmp_path / "fork")
    git(str(tmp_path), "clone", "-q", remote(server, "bob/demo", bob), work)
    git(work, "checkout", "-q", "-b", "fix")
    commit_file(work, "fix.txt", "1\n")
    git(work, "push", "-q", "origin", "fix")
    assert git(work, "push", "-q", remote(server, "alice/demo", bob), "fix", check=False).returncode != 0
    r = api(server, "POST", "/repos/alice/demo/pulls", bob, {"title": "Fix", "head": "bob:fix", "base": "main"})
    assert r.status == 201 and r.json["head"]["label"] == "bob:fix" and r.json["head"]["repo"]["full_name"] == "bob/demo"
    assert api(server, "POST", "/repos/alice/demo/pulls", bob, {"title": "Again", "head": "bob:fix",
                                                                 "base": "main"}).status == 422
    assert [p["number"] for p in api(server, "GET", "/repos/alice/demo/pulls?head=bob:fix", alice).json] == [1]
    assert api(server, "GET", "/repos/alice/demo/pulls?head=alice:fix", alice).json == []
    second = commit_file(work, "fix.txt", "2\n")
    git(work, "push", "-q", "origin", "fix")
    pull = api(server, "GET", "/repos/alice/demo/pulls/1", alice).json
    assert pull["head"]["sha"] == second and pull["commits"] == 2                    # it follows the fork
    listed = git(str(tmp_path), "ls-remote", remote(server, "alice/demo", alice)).stdout
    assert "%s\trefs/pull/1/head" % second in listed
    assert api(server, "PUT", "/repos/alice/demo/pulls/1/merge", bob, {}).status == 403   # bob only reads
    assert api(server, "PUT", "/repos/alice/demo/pulls/1/merge", alice, {}).json["merged"] is True
    assert api(server, "GET", "/repos/alice/demo/contents/fix.txt", alice).json["content"].strip() == "Mgo="


def test_an_agent_that_only_reads_contributes_through_its_own_fork(server, tmp_path):
    """Bound with read access, an agent forks into its own account (with an agent session token for
    that access), pushes there with its own token, and opens a pull request upstream; the human merges it. Its task token, bound to the upstream
    repository, may neither make the fork nor reach into it; a grant that names the fork as well can."""
    w = grant_a_task(server, "task:readme", ["read_code", "open_pr"], {})
    alice, agent, login = w["alice"], w["agent"], w["login"]
    api(server, "PUT", "/repos/alice/payments/collaborators/" + login, alice, {"permission": "pull"})
    assert api(server, "POST", "/repos/alice/payments/forks", w["token"]).status == 403
    assert server.app.store.one("SELECT decision FROM audit WHERE action = 'create_repo' ORDER BY id DESC"
                                " LIMIT 1")["decision"] == "deny"
    r = api(server, "POST", "/repos/alice/payments/forks", agent)
    assert r.status == 403 and "bootstrap credential" in r.json["message"]      # delegated: not the agent's own
    session = session_token(server, agent, "alice/payments")
    assert api(server, "POST", "/repos/alice/payments/forks", session).json["full_name"] == login + "/payments"
    work = str(tmp_path / "w")
    git(str(tmp_path), "clone", "-q", remote(server, login + "/payments", agent), work)
    commit_file(work, "README.md", "# payments, documented\n")
    git(work, "push", "-q", "origin", "HEAD:refs/heads/docs")
    # the task token sees only alice/payments, not the fork its pull request would come from
    r = api(server, "POST", "/repos/alice/payments/pulls", w["token"], {"title": "Docs", "head": login + ":docs",
                                                                      "base": "main"})
    assert r.status == 422 and "no fork of alice/payments you can see" in r.json["errors"][0]["message"]
    # the fork inherits alice's access to her private repository, so her grant may name it too
    both = ext(server, "POST", "/task-grants", alice, {
        "agent": "agent:" + login, "task": "task:readme-2", "actions": ["read_code", "open_pr"],
        "resources": ["repo:alice/payments", "repo:%s/payments" % login]})
    assert both.status == 201, both
    token = ext(server, "POST", "/task-grants/%s/tokens" % both.json["id"], agent, {}).json["token"]
    r = api(server, "POST", "/repos/alice/payments/pulls", token, {"title": "Docs", "head": login + ":docs",
                                                                 "base": "main"})
    assert r.status == 201 and r.json["user"]["login"] == login
    assert api(server, "PUT", "/repos/alice/payments/pulls/1/merge", alice, {}).json["merged"] is True
    # the fork deleted, the pull request keeps what it brought over
    assert api(server, "DELETE", "/repos/%s/payments" % login, agent).status == 204
    assert api(server, "GET", "/repos/alice/payments/pulls/1", alice).json["merged"] is True


def test_losing_access_takes_a_private_fork_with_it(server, tmp_path):
    """Removing a collaborator, or unbinding an agent, leaves no reachable copy of the private code."""
    alice, bob = server.add_user("alice"), server.add_user("bob")
    api(server, "POST", "/user/repos", alice, {"name": "secret", "private": True, "auto_init": True})
    api(server, "PUT", "/repos/alice/secret/collaborators/bob", alice, {"permission": "pull"})
    api(server, "POST", "/repos/alice/secret/forks", bob)
    assert git(str(tmp_path), "ls-remote", remote(server, "bob/secret", bob), check=False).returncode == 0
    assert api(server, "DELETE", "/repos/alice/secret/collaborators/bob", alice).status == 204
    assert api(server, "GET", "/repos/bob/secret", bob).status == 404
    assert git(str(tmp_path), "ls-remote", remote(server, "bob/secret", bob), check=False).returncode != 0
    api(server, "PUT", "/repos/alice/secret/collaborators/bob", alice, {"permission": "pull"})
    assert api(server, "GET", "/repos/bob/secret", bob).status == 200                 # access back, fork back
    # an agent whose binding granted the access: unbinding takes the fork out of reach
    login, agent, _ = server.add_agent("helper")
    invite = ext(server, "POST", "/agent-invites", alice, {"repo_grants": [
        {"repo_full_name": "alice/secret", "permission": "pull"}]}).json["invite_token"]
    ext(server, "POST", "/agent-bindings/confirm", agent, {"invite_token": invite})
    assert api(server, "POST", "/repos/alice/secret/forks", session_token(server, agent)).status == 202
    assert api(server, "GET", "/repos/%s/secret" % login, agent).status == 200          # its own repository
    assert ext(server, "DELETE", "/agent-bindings/" + login, alice).status == 204
    assert api(server, "GET", "/repos/%s/secret" % login, agent).status == 404


def test_a_fork_that_cannot_be_filled_leaves_nothing(server, monkeypatch):
    import os
    alice, bob = server.add_user("alice"), server.add_user("bob")
    api(server, "POST", "/user/repos", alice, {"name": "demo", "auto_init": True})

    def broken(*args):
        raise OSError("disk full")
    patch_everywhere(monkeypatch, "copy_refs", broken)
    assert api(server, "POST", "/repos/alice/demo/forks", bob).status == 500
    assert api(server, "GET", "/repos/bob/demo", bob).status == 404
    assert len([d for d in os.listdir(server.app.repos_dir) if d.endswith(".git")]) == 1     # alice/demo's only
    row = server.app.store.one("SELECT * FROM audit WHERE action = 'create_repo' ORDER BY id DESC LIMIT 1")
    assert row["decision"] == "deny" and row["side_effect"] == "removed the empty fork"


def test_syncing_a_fork_with_its_upstream(engine_server):
    import base64
    server = engine_server
    alice, bob, carl = server.add_user("alice"), server.add_user("bob"), server.add_user("carl")
    api(server, "POST", "/user/repos", alice, {"name": "demo", "auto_init": True})
    api(server, "POST", "/repos/alice/demo/forks", bob)

    def put(repo, path, text, token):
        return api(server, "PUT", "/repos/%s/contents/%s" % (repo, path), token, {
            "message": "edit " + path, "content": base64.b64encode(text.encode()).decode()})

    def sync(token=bob, repo="bob/demo"):
        return api(server, "POST", "/repos/%s/merge-upstream" % repo, token, {"branch": "main"})
    assert sync().json["merge_type"] == "none"
    put("alice/demo", "a.txt", "1\n", alice)
    r = sync()
    assert r.status == 200 and r.json == {"message": "Successfully fetched and fast-forwarded from upstream alice:main.",
                                          "merge_type": "fast-forward", "base_branch": "alice:main"}
    assert api(server, "GET", "/repos/bob/demo/contents/a.txt", bob).status == 200
    put("bob/demo", "b.txt", "mine\n", bob)
    put("alice/demo", "c.txt", "theirs\n", alice)
    assert sync().json["merge_type"] == "merge"
    assert {p["name"] for p in api(server, "GET", "/repos/bob/demo/contents/", bob).json} >= {"a.txt", "b.txt", "c.txt"}
    assert put("bob/demo", "d.txt", "bob's\n", bob).status == 201                # both add d.txt: a conflict
    assert put("alice/demo", "d.txt", "alice's\n", alice).status == 201
    before = api(server, "GET", "/repos/bob/demo/git/ref/heads/main", bob).json["object"]["sha"]
    assert sync().status == 409
    assert api(server, "GET", "/repos/bob/demo/git/ref/heads/main", bob).json["object"]["sha"] == before
    assert sync(carl).status == 403                                  # carl may read bob's fork, not push to it
    assert sync(alice, "alice/demo").status == 422                   # not a fork


def test_a_fork_that_cannot_be_read_does_not_break_its_pull_request(server, tmp_path, monkeypatch):
    alice, bob = server.add_user("alice"), server.add_user("bob")
    api(server, "POST", "/user/repos", alice, {"name": "demo", "auto_init": True})
    api(server, "POST", "/repos/alice/demo/forks", bob)
    work = str(tmp_path / "w")
    git(str(tmp_path), "clone", "-q", remote(server, "bob/demo", bob), work)
    first = commit_file(work, "a.txt", "1\n")
    git(work, "push", "-q", "origin", "HEAD:refs/heads/fix")
    api(server, "POST", "/repos/alice/demo/pulls", bob, {"title": "Fix", "head": "bob:fix", "base": "main"})
    commit_file(work, "a.txt", "2\n")
    git(work, "push", "-q", "origin", "HEAD:refs/heads/fix")

    def broken(*args):
        raise OSError("fork unreadable")
    patch_everywhere(monkeypatch, "copy_refs", broken)
    r = api(server, "GET", "/repos/alice/demo/pulls/1", alice)
    assert r.status == 200 and r.json["head"]["sha"] == first          # the last head brought over stands
