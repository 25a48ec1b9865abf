"""Every 2xx JSON body checked against GitHub's own REST description (skipped without ../shared)."""
import pytest

from conftest import api, commit_file, ext, git, remote, shape_checker

SPEC = shape_checker()


@pytest.mark.skipif(SPEC is None, reason="../shared/tools/github_shape.py is not present")
def test_rest_bodies_have_githubs_shape(server, tmp_path):
    olivia = server.add_user("olivia")
    server.add_user("bob")
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
        ("GET", "/rate_limit", None, 200), ("GET", "/user/emails", None, 200),
        ("GET", "/repos/olivia/demo/contributors", None, 200),
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
        ("POST", "/repos/olivia/demo/forks", {"organization": "acme"}, 202), ("GET", "/repos/olivia/demo/forks", None, 200),
        ("GET", "/repos/acme/demo", None, 200), ("POST", "/repos/acme/demo/merge-upstream", {"branch": "main"}, 200),
    ]
    problems = []
    for method, path, body, status in requests:
        r = api(server, method, path, olivia, body)
        assert r.status == status, (method, path, r)
        if r.json is not None:
            problems += SPEC.check(method, path, status, r.json)
    assert problems == [], "\n".join(problems)


@pytest.mark.skipif(SPEC is None, reason="../shared/tools/github_shape.py is not present")
def test_collaboration_bodies_have_githubs_shape(server, tmp_path):
    import base64
    alice = server.add_user("alice")
    server.add_user("walt")
    api(server, "POST", "/user/repos", alice, {"name": "app", "auto_init": True})
    api(server, "PUT", "/repos/alice/app/collaborators/walt", alice, {"permission": "push"})
    work = str(tmp_path / "w")
    git(str(tmp_path), "clone", "-q", remote(server, "alice/app", alice), work)
    git(work, "checkout", "-q", "-b", "feature")
    sha = commit_file(work, "f.txt", "f\n")
    git(work, "push", "-q", "origin", "feature")
    b64 = base64.b64encode(b"name: CI\non: workflow_dispatch\n").decode()
    r = "/repos/alice/app"
    key_id = api(server, "GET", r + "/actions/secrets/public-key", alice).json["key_id"]
    sealed = base64.b64encode(bytes(64)).decode()
    requests = [
        ("POST", r + "/labels", {"name": "crash", "color": "ff0000"}, 201),
        ("POST", r + "/milestones", {"title": "v1"}, 201),
        ("POST", r + "/issues", {"title": "t", "labels": ["bug"], "milestone": 1, "assignees": ["walt"]}, 201),
        ("GET", r + "/issues", None, 200), ("GET", r + "/issues/1", None, 200),
        ("PATCH", r + "/issues/1", {"body": "b"}, 200), ("GET", "/issues?filter=all", None, 200),
        ("POST", r + "/issues/1/comments", {"body": "c"}, 201), ("GET", r + "/issues/1/comments", None, 200),
        ("GET", r + "/issues/comments", None, 200), ("GET", r + "/issues/comments/1", None, 200),
        ("PATCH", r + "/issues/comments/1", {"body": "d"}, 200),
        ("GET", r + "/labels", None, 200), ("GET", r + "/labels/bug", None, 200),
        ("PATCH", r + "/labels/bug", {"description": "x"}, 200), ("GET", r + "/issues/1/labels", None, 200),
        ("POST", r + "/issues/1/labels", {"labels": ["bug"]}, 200), ("GET", r + "/milestones", None, 200),
        ("GET", r + "/milestones/1", None, 200), ("PATCH", r + "/milestones/1", {"description": "m"}, 200),
        ("POST", r + "/pulls", {"title": "p", "head": "feature", "base": "main"}, 201),
        ("GET", r + "/pulls", None, 200), ("GET", r + "/pulls/2", None, 200), ("PATCH", r + "/pulls/2", {"body": "x"}, 200),
        ("GET", r + "/pulls/2/commits", None, 200), ("GET", r + "/pulls/2/files", None, 200),
        ("POST", r + "/pulls/2/requested_reviewers", {"reviewers": ["walt"]}, 201),
        ("GET", r + "/pulls/2/requested_reviewers", None, 200),
        ("POST", r + "/pulls/2/reviews", {"event": "COMMENT", "body": "hm", "comments": [
            {"path": "f.txt", "line": 1, "body": "here"}]}, 200),
        ("GET", r + "/pulls/2/reviews", None, 200), ("GET", r + "/pulls/2/reviews/1", None, 200),
        ("GET", r + "/pulls/2/comments", None, 200),
        ("POST", r + "/statuses/" + sha, {"state": "success", "context": "ci"}, 201),
        ("GET", r + "/commits/%s/statuses" % sha, None, 200), ("GET", r + "/commits/%s/status" % sha, None, 200),
        ("POST", r + "/check-runs", {"name": "ci", "head_sha": sha}, 201), ("GET", r + "/check-runs/1", None, 200),
        ("PATCH", r + "/check-runs/1", {"conclusion": "success"}, 200),
        ("GET", r + "/commits/%s/check-runs" % sha, None, 200),
        ("PUT", r + "/pulls/2/merge", {"merge_method": "squash"}, 200),
        ("GET", r + "/contents/f.txt", None, 200), ("GET", r + "/contents", None, 200), ("GET", r + "/readme", None, 200),
        ("PUT", r + "/contents/.github/workflows/ci.yml", {"message": "ci", "content": b64}, 201),
        ("GET", r + "/actions/workflows", None, 200), ("GET", r + "/actions/workflows/ci.yml", None, 200),
        ("POST", r + "/actions/workflows/ci.yml/dispatches", {"ref": "main"}, 204),
        ("GET", r + "/actions/runs", None, 200), ("GET", r + "/actions/runs/1", None, 200),
        ("GET", r + "/actions/secrets/public-key", None, 200),
        ("PUT", r + "/actions/secrets/TOKEN", {"encrypted_value": sealed, "key_id": key_id}, 201),
        ("GET", r + "/actions/secrets", None, 200), ("GET", r + "/actions/secrets/TOKEN", None, 200),
        ("POST", r + "/actions/variables", {"name": "REGION", "value": "eu"}, 201),
        ("GET", r + "/actions/variables", None, 200), ("GET", r + "/actions/variables/REGION", None, 200),
        ("POST", r + "/releases", {"tag_name": "v1"}, 201), ("GET", r + "/releases", None, 200),
        ("GET", r + "/releases/latest", None, 200), ("GET", r + "/releases/tags/v1", None, 200),
        ("GET", r + "/tags", None, 200), ("GET", r + "/compare/main~1...main", None, 200),
        ("GET", r + "/git/refs", None, 200), ("GET", r + "/git/trees/main", None, 200),
        ("PUT", r + "/branches/main/protection", {"required_status_checks": None, "enforce_admins": None,
                                                 "required_pull_request_reviews": None, "restrictions": None}, 200),
        ("GET", r + "/branches/main/protection", None, 200), ("GET", r + "/branches/main", None, 200),
    ]
    problems = []
    for method, path, body, status in requests:
        resp = api(server, method, path, alice, body)
        assert resp.status == status, (method, path, resp)
        # /contents (the root) and GET /git/refs are GitHub behaviours its description leaves out
        if resp.json is not None and resp.json != {} and SPEC.operation(method, path.split("?")[0])[1]:
            problems += SPEC.check(method, path.split("?")[0], status, resp.json)
    assert problems == [], "\n".join(problems)
