"""The permission matrix on REST and Git: anonymous, owner, read/write collaborator, team member,
org member under the base permission, outsider, suspended account, revoked and forged tokens."""
import pytest

from conftest import api, commit_file, ext, git, remote


@pytest.fixture
def world(server, tmp_path):
    s = server
    t = {name: s.add_user(name) for name in ("olivia", "reader", "writer", "tina", "mia", "outsider", "sam")}
    assert ext(s, "POST", "/user/orgs", t["olivia"], {"login": "acme", "name": "Acme"}).status == 201
    assert api(s, "POST", "/orgs/acme/repos", t["olivia"], {"name": "app", "private": True, "auto_init": True}).status == 201
    assert api(s, "PATCH", "/orgs/acme", t["olivia"], {"default_repository_permission": "none"}).status == 200
    for login, perm in (("reader", "pull"), ("writer", "push"), ("sam", "push")):
        assert api(s, "PUT", "/repos/acme/app/collaborators/" + login, t["olivia"], {"permission": perm}).status == 204
    for login in ("tina", "mia"):
        assert api(s, "PUT", "/orgs/acme/memberships/" + login, t["olivia"], {"role": "member"}).status == 200
    assert api(s, "POST", "/orgs/acme/teams", t["olivia"], {"name": "Devs"}).json["slug"] == "devs"
    assert api(s, "PUT", "/orgs/acme/teams/devs/memberships/tina", t["olivia"]).status == 200
    assert api(s, "PUT", "/orgs/acme/teams/devs/repos/acme/app", t["olivia"], {"permission": "push"}).status == 204
    admin_token = s.admin[1]
    assert api(s, "PUT", "/users/sam/suspended", admin_token).status == 204
    revoked = ext(s, "POST", "/user/tokens", t["writer"], {"name": "old", "scopes": ["repo"]}).json
    assert ext(s, "DELETE", "/user/tokens/%d" % revoked["id"], t["writer"]).status == 204
    t["revoked"] = revoked["token"]
    t["forged"] = "agp_" + "0" * 48
    t["anonymous"] = None
    return t


READ = {"anonymous": 404, "olivia": 200, "reader": 200, "writer": 200, "tina": 200, "mia": 404,
        "outsider": 404, "sam": 403, "revoked": 401, "forged": 401}
ADMIN = {"olivia": 200, "reader": 403, "writer": 403, "tina": 403, "outsider": 404, "sam": 403}


def test_rest_read_matrix(server, world):
    for who, status in READ.items():
        r = api(server, "GET", "/repos/acme/app", world[who])
        assert r.status == status, (who, r)
    assert api(server, "GET", "/repos/acme/app", world["sam"]).json["message"] == "account sam is suspended"
    perms = api(server, "GET", "/repos/acme/app", world["tina"]).json["permissions"]
    assert perms == {"admin": False, "maintain": False, "push": True, "triage": True, "pull": True}


def test_rest_admin_matrix(server, world):
    for who, status in ADMIN.items():
        r = api(server, "PATCH", "/repos/acme/app", world[who], {"description": "by " + who})
        assert r.status == status, (who, r)
    assert api(server, "GET", "/repos/acme/app", world["olivia"]).json["description"] == "by olivia"


def test_org_base_permission_and_removal(server, world):
    assert api(server, "GET", "/repos/acme/app", world["mia"]).status == 404
    api(server, "PATCH", "/orgs/acme", world["olivia"], {"default_repository_permission": "read"})
    assert api(server, "GET", "/repos/acme/app", world["mia"]).json["permissions"]["push"] is False
    assert api(server, "DELETE", "/orgs/acme/teams/devs/memberships/tina", world["olivia"]).status == 204
    assert api(server, "GET", "/repos/acme/app", world["tina"]).json["permissions"]["push"] is False
    assert api(server, "DELETE", "/orgs/acme/members/tina", world["olivia"]).status == 204
    api(server, "PATCH", "/orgs/acme", world["olivia"], {"default_repository_permission": "none"})
    assert api(server, "GET", "/repos/acme/app", world["tina"]).status == 404


def test_git_read_and_push_matrix(server, world, tmp_path):
    work = str(tmp_path / "work")
    git(str(tmp_path), "clone", "-q", remote(server, "acme/app", world["olivia"]), work)
    expect_read = {"anonymous": "terminal prompts disabled", "outsider": "not found", "mia": "not found",
                   "sam": "account sam is suspended", "revoked": "Bad credentials", "forged": "Bad credentials"}
    for who in READ:
        proc = git(str(tmp_path), "ls-remote", remote(server, "acme/app", world[who]), check=False)
        if who in expect_read:
            assert proc.returncode != 0 and expect_read[who] in proc.stderr, (who, proc.stderr)
        else:
            assert proc.returncode == 0 and "refs/heads/main" in proc.stdout, who
    for who, allowed in (("olivia", True), ("writer", True), ("tina", True), ("reader", False)):
        sha = commit_file(work, who + ".txt", who)
        proc = git(work, "push", remote(server, "acme/app", world[who]), "HEAD:main", check=False)
        assert (proc.returncode == 0) == allowed, (who, proc.stderr)
        if not allowed:
            assert "push_branch needs write on repo:acme/app; reader has read (collaborator)" in proc.stderr
            git(work, "reset", "-q", "--hard", "HEAD~1")
        else:
            assert git(work, "ls-remote", remote(server, "acme/app", world["olivia"]),
                       "refs/heads/main").stdout.startswith(sha)


def test_collaborator_endpoints(server, world):
    o = world["olivia"]
    listed = {c["login"]: c["role_name"] for c in api(server, "GET", "/repos/acme/app/collaborators", o).json}
    assert listed == {"olivia": "admin", "reader": "read", "writer": "write", "tina": "write", "sam": "write"}
    assert api(server, "GET", "/repos/acme/app/collaborators", world["reader"]).status == 403
    perm = api(server, "GET", "/repos/acme/app/collaborators/tina/permission", o).json
    assert (perm["permission"], perm["role_name"], perm["user"]["login"]) == ("write", "write", "tina")
    assert api(server, "GET", "/repos/acme/app/collaborators/writer", o).status == 204
    assert api(server, "GET", "/repos/acme/app/collaborators/outsider", o).status == 404
    assert api(server, "PUT", "/repos/acme/app/collaborators/reader", o, {"permission": "owner"}).status == 422
    assert api(server, "PUT", "/repos/acme/app/collaborators/ghost", o).status == 404
    assert api(server, "PUT", "/repos/acme/app/collaborators/outsider", world["writer"]).status == 403
    assert api(server, "DELETE", "/repos/acme/app/collaborators/reader", o).status == 204
    assert api(server, "GET", "/repos/acme/app", world["reader"]).status == 404
