"""Organizations, memberships and teams over REST."""
from conftest import api, ext


def test_org_lifecycle_and_membership(server):
    olivia, bob, carl = (server.add_user(n) for n in ("olivia", "bob", "carl"))
    r = ext(server, "POST", "/user/orgs", olivia, {"login": "acme", "name": "Acme Inc"})
    assert r.status == 201 and r.json["login"] == "acme" and r.json["type"] == "Organization"
    assert ext(server, "POST", "/user/orgs", bob, {"login": "ACME"}).json["errors"][0]["code"] == "already_exists"
    assert ext(server, "POST", "/user/orgs", bob, {"login": "bad name"}).status == 422
    _, agent, _ = server.add_agent("bot")
    assert ext(server, "POST", "/user/orgs", agent, {"login": "botorg"}).status == 403
    assert api(server, "GET", "/orgs/acme").json["name"] == "Acme Inc"
    assert api(server, "GET", "/users/acme").json["type"] == "Organization"
    assert api(server, "PATCH", "/orgs/acme", bob, {"name": "hijack"}).status == 403
    assert api(server, "PATCH", "/orgs/acme", olivia, {"default_repository_permission": "root"}).status == 422
    m = api(server, "PUT", "/orgs/acme/memberships/bob", olivia, {"role": "member"})
    assert m.status == 200 and (m.json["role"], m.json["state"], m.json["user"]["login"]) == ("member", "active", "bob")
    assert [o["login"] for o in api(server, "GET", "/user/orgs", bob).json] == ["acme"]
    assert [u["login"] for u in api(server, "GET", "/orgs/acme/members", bob).json] == ["bob", "olivia"]
    assert [u["login"] for u in api(server, "GET", "/orgs/acme/members?role=admin", bob).json] == ["olivia"]
    assert api(server, "GET", "/orgs/acme/members", carl).json == []
    assert api(server, "GET", "/orgs/acme/memberships/bob", carl).status == 403
    # members create repositories in the org; outsiders cannot
    assert api(server, "POST", "/orgs/acme/repos", bob, {"name": "tool"}).status == 201
    assert api(server, "POST", "/orgs/acme/repos", carl, {"name": "evil"}).status == 403
    assert [r["name"] for r in api(server, "GET", "/orgs/acme/repos", carl).json] == ["tool"]
    # the last admin cannot leave
    r = api(server, "DELETE", "/orgs/acme/memberships/olivia", olivia)
    assert r.status == 422 and "at least one admin" in r.json["errors"][0]["message"]
    assert api(server, "DELETE", "/orgs/acme/memberships/bob", olivia).status == 204
    assert api(server, "GET", "/user/orgs", bob).json == []


def test_teams(server):
    olivia, bob, carl = (server.add_user(n) for n in ("olivia", "bob", "carl"))
    ext(server, "POST", "/user/orgs", olivia, {"login": "acme"})
    api(server, "PUT", "/orgs/acme/memberships/bob", olivia)
    api(server, "POST", "/orgs/acme/repos", olivia, {"name": "app", "private": True})
    r = api(server, "POST", "/orgs/acme/teams", olivia, {"name": "Core Devs", "description": "the core"})
    assert r.status == 201 and r.json["slug"] == "core-devs" and r.json["members_count"] == 1
    assert api(server, "POST", "/orgs/acme/teams", olivia, {"name": "core devs"}).status == 422
    assert api(server, "POST", "/orgs/acme/teams", olivia, {"name": "!!!"}).status == 422
    assert api(server, "POST", "/orgs/acme/teams", olivia, {"name": "x", "privacy": "open"}).status == 422
    assert api(server, "POST", "/orgs/acme/teams", bob, {"name": "mine"}).status == 403
    secret = api(server, "POST", "/orgs/acme/teams", olivia, {"name": "Secret", "privacy": "secret"})
    assert secret.status == 201
    # members see visible teams, not secret ones; outsiders see none
    assert [t["slug"] for t in api(server, "GET", "/orgs/acme/teams", bob).json] == ["core-devs"]
    assert api(server, "GET", "/orgs/acme/teams/secret", bob).status == 404
    assert api(server, "GET", "/orgs/acme/teams", carl).status == 403
    # membership needs org membership first
    r = api(server, "PUT", "/orgs/acme/teams/core-devs/memberships/carl", olivia)
    assert r.status == 422 and "not a member of acme" in r.json["errors"][0]["message"]
    r = api(server, "PUT", "/orgs/acme/teams/core-devs/memberships/bob", olivia, {"role": "maintainer"})
    assert r.json == {"url": server.url + "/api/v3/orgs/acme/teams/core-devs/memberships/bob", "role": "maintainer",
                      "state": "active"}
    assert [u["login"] for u in api(server, "GET", "/orgs/acme/teams/core-devs/members", bob).json] == ["bob", "olivia"]
    # a maintainer manages the team but cannot grant a repository it does not administer
    assert api(server, "PATCH", "/orgs/acme/teams/core-devs", bob, {"description": "by bob"}).json[
        "description"] == "by bob"
    r = api(server, "PUT", "/orgs/acme/teams/core-devs/repos/acme/app", bob, {"permission": "admin"})
    assert r.status == 403 and r.json["message"].startswith("admin_repo needs admin on repo:acme/app; bob has read")
    assert api(server, "PUT", "/orgs/acme/teams/core-devs/repos/acme/app", olivia, {"permission": "maintain"}).status == 204
    assert api(server, "GET", "/orgs/acme/teams/core-devs/repos/acme/app", bob).status == 204
    repo = api(server, "GET", "/orgs/acme/teams/core-devs/repos/acme/app", bob,
               headers={"Accept": "application/vnd.github.v3.repository+json"}).json
    assert repo["permissions"]["maintain"] is True and repo["permissions"]["admin"] is False
    assert [r["name"] for r in api(server, "GET", "/orgs/acme/teams/core-devs/repos", bob).json] == ["app"]
    assert api(server, "GET", "/repos/acme/app", bob).json["permissions"]["maintain"] is True
    r = api(server, "PATCH", "/orgs/acme/teams/core-devs", olivia, {"name": "Platform"})
    assert r.json["slug"] == "platform"
    assert api(server, "DELETE", "/orgs/acme/teams/platform/repos/acme/app", olivia).status == 204
    assert api(server, "GET", "/repos/acme/app", bob).json["permissions"]["push"] is False
    assert api(server, "DELETE", "/orgs/acme/teams/platform", olivia).status == 204
    assert api(server, "GET", "/orgs/acme/teams/platform", olivia).status == 404
