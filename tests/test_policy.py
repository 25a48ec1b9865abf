"""read_only by policy: a frozen repository or organization, and an archived repository, take reads
and refuse every change, on REST, GraphQL and Git alike, until it is thawed."""
from conftest import api, call, commit_file, ext, git, remote


def last_decision(server, action):
    return server.app.store.one("SELECT decision, reasons FROM audit WHERE action = ? ORDER BY id DESC LIMIT 1",
                                action)


def test_a_frozen_repository_is_read_only(server, tmp_path):
    alice, bob, carl = server.add_user("alice"), server.add_user("bob"), server.add_user("carl")
    api(server, "POST", "/user/repos", alice, {"name": "payments", "private": True, "auto_init": True})
    api(server, "PUT", "/repos/alice/payments/collaborators/bob", alice, {"permission": "push"})
    work = str(tmp_path / "w")
    git(str(tmp_path), "clone", "-q", remote(server, "alice/payments", bob), work)
    before = git(work, "rev-parse", "HEAD").stdout.strip()
    # only an admin of the repository freezes it; one who cannot see it is told nothing more
    body = {"resource": "repo:alice/payments", "reason": "incident 42: payments double-charge"}
    assert ext(server, "POST", "/freezes", bob, body).status == 403
    assert ext(server, "POST", "/freezes", carl, body).status == 404     # for carl it is not there
    assert ext(server, "POST", "/freezes", alice, {"resource": "repo:alice/payments"}).status == 422
    r = ext(server, "POST", "/freezes", alice, body)
    assert r.status == 201 and r.json["id"].startswith("fz_") and r.json["frozen_by"] == "user:alice", r
    freeze = r.json["id"]
    assert ext(server, "POST", "/freezes", alice, body).json["errors"][0]["code"] == "already_exists"
    assert [f["resource"] for f in ext(server, "GET", "/freezes", bob).json] == ["repo:alice/payments"]
    assert ext(server, "GET", "/freezes", carl).json == []
    # reads pass
    assert api(server, "GET", "/repos/alice/payments", bob).status == 200
    assert git(work, "fetch", "-q", "origin").returncode == 0
    # every change is refused as read_only, the owner's too, and says why
    r = api(server, "POST", "/repos/alice/payments/issues", bob, {"title": "x"})
    assert r.status == 403 and "frozen by policy" in r.json["message"] and "incident 42" in r.json["message"]
    assert last_decision(server, "open_issue")["decision"] == "read_only"
    assert api(server, "POST", "/repos/alice/payments/issues", alice, {"title": "x"}).status == 403
    assert api(server, "DELETE", "/repos/alice/payments", alice).status == 403      # nor is it deleted
    commit_file(work, "fix.py", "ok = 1\n")
    proc = git(work, "push", "origin", "HEAD:refs/heads/main", "HEAD:refs/heads/feature", check=False)
    assert proc.returncode != 0 and "frozen by policy" in proc.stderr
    refs = git(work, "ls-remote", "origin").stdout
    assert "%s\trefs/heads/main" % before in refs and "refs/heads/feature" not in refs
    query = 'mutation { createIssue(input: {repositoryId: "%s", title: "x"}) { issue { number } } }' % (
        api(server, "GET", "/repos/alice/payments", bob).json["node_id"])
    r = call(server, "POST", "/api/graphql", bob, {"query": query})
    assert r.json["data"]["createIssue"] is None and "frozen by policy" in r.json["errors"][0]["message"]
    assert api(server, "GET", "/repos/alice/payments/issues", bob).json == []
    # the policy endpoint says so too
    actions = ext(server, "GET", "/policy?resource=repo:alice/payments", bob).json["actions"]
    assert actions["push_branch"]["decision"] == "read_only" and actions["read_code"]["decision"] == "allow"
    # a thaw: only the admin, and a stranger learns nothing
    assert ext(server, "DELETE", "/freezes/" + freeze, carl).status == 404
    assert ext(server, "DELETE", "/freezes/" + freeze, bob).status == 403
    assert ext(server, "DELETE", "/freezes/" + freeze, alice).status == 204
    assert ext(server, "DELETE", "/freezes/" + freeze, alice).status == 404
    assert api(server, "POST", "/repos/alice/payments/issues", bob, {"title": "x"}).status == 201
    assert git(work, "push", "-q", "origin", "HEAD:refs/heads/main").returncode == 0
    effects = [r["side_effect"] for r in server.app.store.all("SELECT side_effect FROM audit WHERE action ="
                                                               " 'freeze_repo' AND decision = 'allow' ORDER BY id")]
    assert effects[0].startswith("froze repo:alice/payments") and effects[-1].startswith("thawed repo:alice/payments")


def test_a_frozen_organization_is_read_only(server, tmp_path):
    olivia, bob = server.add_user("olivia"), server.add_user("bob")
    ext(server, "POST", "/user/orgs", olivia, {"login": "acme"})
    api(server, "PUT", "/orgs/acme/memberships/bob", olivia, {"role": "member"})
    api(server, "POST", "/orgs/acme/repos", olivia, {"name": "app", "auto_init": True})
    api(server, "POST", "/user/repos", bob, {"name": "mine", "auto_init": True})
    body = {"resource": "org:acme", "reason": "quarterly audit"}
    assert ext(server, "POST", "/freezes", bob, body).status == 403               # members do not freeze
    r = ext(server, "POST", "/freezes", olivia, body)
    assert r.status == 201 and r.json["resource"] == "org:acme"
    r = api(server, "POST", "/orgs/acme/repos", bob, {"name": "new"})
    assert r.status == 403 and "org:acme is frozen by policy" in r.json["message"]
    r = api(server, "POST", "/repos/acme/app/issues", olivia, {"title": "x"})
    assert r.status == 403 and "org:acme is frozen by policy" in r.json["message"]
    assert last_decision(server, "open_issue")["decision"] == "read_only"
    assert api(server, "PATCH", "/orgs/acme", olivia, {"name": "Acme"}).status == 403
    assert api(server, "GET", "/repos/acme/app", bob).status == 200                # reads pass
    assert api(server, "POST", "/repos/bob/mine/issues", bob, {"title": "x"}).status == 201  # elsewhere, no freeze
    work = str(tmp_path / "w")
    git(str(tmp_path), "clone", "-q", remote(server, "acme/app", olivia), work)
    commit_file(work, "a.txt", "a\n")
    proc = git(work, "push", "origin", "HEAD:refs/heads/topic", check=False)
    assert proc.returncode != 0 and "frozen by policy" in proc.stderr
    assert ext(server, "GET", "/freezes", server.add_user("outsider")).json == []        # members see it
    assert ext(server, "DELETE", "/freezes/" + ext(server, "GET", "/freezes", bob).json[0]["id"], olivia).status == 204
    assert api(server, "POST", "/orgs/acme/repos", bob, {"name": "new"}).status == 201


def test_an_archived_repository_is_read_only(server):
    alice = server.add_user("alice")
    api(server, "POST", "/user/repos", alice, {"name": "old", "auto_init": True})
    assert api(server, "PATCH", "/repos/alice/old", alice, {"archived": True}).json["archived"] is True
    r = api(server, "POST", "/repos/alice/old/issues", alice, {"title": "x"})
    assert r.status == 403 and r.json["message"] == "Repository was archived so is read-only."
    assert last_decision(server, "open_issue")["decision"] == "read_only"
    assert api(server, "PATCH", "/repos/alice/old", alice, {"archived": False}).json["archived"] is False
    assert api(server, "POST", "/repos/alice/old/issues", alice, {"title": "x"}).status == 201
