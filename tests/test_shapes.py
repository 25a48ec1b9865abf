"""Every 2xx JSON body checked against GitHub's own REST description (skipped without ../shared)."""
import pytest

from conftest import api, commit_file, ext, git, remote, shape_checker

SPEC = shape_checker()


@pytest.mark.skipif(SPEC is None, reason="../shared/tools/github_shape.py is not present")
def test_rest_bodies_have_githubs_shape(server, tmp_path):
    olivia = server.add_user("olivia")
    bob = server.add_user("bob")
    ext(server, "POST", "/user/orgs", olivia, {"login": "acme", "name": "Acme"})
    api(server, "PUT", "/orgs/acme/memberships/bob", olivia)
    api(server, "POST", "/orgs/acme/teams", olivia, {"name": "devs"})
    work = str(tmp_path / "w")
    api(server, "POST", "/user/repos", olivia, {"name": "demo", "auto_init": True})
    git(str(tmp_path), "clone", "-q", remote(server, "olivia/demo", olivia), work)
    sha = commit_file(work, "a.txt", "a")
    git(work, "push", "-q", "origin", "HEAD:main")
    requests = [
        ("GET", "/", None, 200), ("GET", "/user", None, 200), ("GET", "/users/bob", None, 200),
        ("GET", "/users/acme", None, 200), ("GET", "/user/repos", None, 200), ("GET", "/users/olivia/repos", None, 200),
        ("POST", "/user/repos", {"name": "made", "private": True}, 201),
        ("GET", "/repos/olivia/demo", None, 200),
        ("PATCH", "/repos/olivia/demo", {"description": "d"}, 200),
        ("GET", "/repos/olivia/demo/branches", None, 200), ("GET", "/repos/olivia/demo/branches/main", None, 200),
        ("GET", "/repos/olivia/demo/git/ref/heads/main", None, 200),
        ("GET", "/repos/olivia/demo/git/matching-refs/heads", None, 200),
        ("GET", "/repos/olivia/demo/commits", None, 200), ("GET", "/repos/olivia/demo/commits/" + sha, None, 200),
        ("PUT", "/repos/olivia/demo/collaborators/bob", {"permission": "push"}, 204),
        ("GET", "/repos/olivia/demo/collaborators", None, 200),
        ("GET", "/repos/olivia/demo/collaborators/bob/permission", None, 200),
        ("GET", "/orgs/acme", None, 200), ("PATCH", "/orgs/acme", {"description": "x"}, 200),
        ("GET", "/user/orgs", None, 200), ("GET", "/orgs/acme/repos", None, 200),
        ("POST", "/orgs/acme/repos", {"name": "org-repo"}, 201), ("GET", "/orgs/acme/members", None, 200),
        ("GET", "/orgs/acme/memberships/bob", None, 200), ("PUT", "/orgs/acme/memberships/bob", {"role": "member"}, 200),
        ("GET", "/orgs/acme/teams", None, 200), ("POST", "/orgs/acme/teams", {"name": "ops"}, 201),
        ("GET", "/orgs/acme/teams/devs", None, 200), ("PATCH", "/orgs/acme/teams/devs", {"description": "x"}, 200),
        ("PUT", "/orgs/acme/teams/devs/memberships/bob", {"role": "member"}, 200),
        ("GET", "/orgs/acme/teams/devs/memberships/bob", None, 200),
        ("GET", "/orgs/acme/teams/devs/members", None, 200),
        ("PUT", "/orgs/acme/teams/devs/repos/acme/org-repo", {"permission": "push"}, 204),
        ("GET", "/orgs/acme/teams/devs/repos", None, 200),
    ]
    problems = []
    for method, path, body, status in requests:
        r = api(server, method, path, olivia, body)
        assert r.status == status, (method, path, r)
        if r.json is not None:
            problems += SPEC.check(method, path, status, r.json)
    assert problems == [], "\n".join(problems)
