"""Branch protection, enforced where refs move by push (git prints why) and at merge (405 with the rule)."""
import pytest

from conftest import api, commit_file, git, remote, shape_checker

SPEC = shape_checker()
PROTECT = {"required_status_checks": {"strict": False, "contexts": ["ci/test"]}, "enforce_admins": False,
           "required_pull_request_reviews": {"required_approving_review_count": 1, "dismiss_stale_reviews": True},
           "restrictions": None}


@pytest.fixture
def protected(engine_server, tmp_path):
    srv = engine_server
    t = {n: srv.add_user(n) for n in ("alice", "walt", "rita")}
    api(srv, "POST", "/user/repos", t["alice"], {"name": "app", "auto_init": True})
    for login, perm in (("walt", "push"), ("rita", "push")):
        api(srv, "PUT", "/repos/alice/app/collaborators/" + login, t["alice"], {"permission": perm})
    r = api(srv, "PUT", "/repos/alice/app/branches/main/protection", t["alice"], PROTECT)
    assert r.status == 200, r
    if SPEC:
        assert SPEC.check("PUT", "/repos/alice/app/branches/main/protection", 200, r.json) == []
    work = str(tmp_path / "work")
    git(str(tmp_path), "clone", "-q", remote(srv, "alice/app", t["walt"]), work)
    t["work"], t["srv"] = work, srv
    return t


def test_protection_api(protected):
    srv, alice, walt = protected["srv"], protected["alice"], protected["walt"]
    got = api(srv, "GET", "/repos/alice/app/branches/main/protection", alice).json
    assert got["required_pull_request_reviews"]["required_approving_review_count"] == 1
    assert got["required_status_checks"]["contexts"] == ["ci/test"] and got["allow_force_pushes"]["enabled"] is False
    assert api(srv, "GET", "/repos/alice/app/branches/main", walt).json["protected"] is True
    assert api(srv, "GET", "/repos/alice/app/branches/main/protection", walt).status == 403
    assert api(srv, "PUT", "/repos/alice/app/branches/main/protection", alice, {"enforce_admins": True}).status == 422
    assert api(srv, "PUT", "/repos/alice/app/branches/nope/protection", alice, PROTECT).status == 404
    bad = dict(PROTECT, required_pull_request_reviews={"required_approving_review_count": 9})
    assert api(srv, "PUT", "/repos/alice/app/branches/main/protection", alice, bad).status == 422


def test_direct_push_refused_with_reason_other_refs_land(protected):
    work = protected["work"]
    sha = commit_file(work, "x.txt", "x\n")
    proc = git(work, "push", "origin", "HEAD:main", "HEAD:refs/heads/topic", check=False)
    assert proc.returncode != 0
    assert "protected branch main: changes must arrive through a pull request with 1 approving review" in proc.stderr
    refs = git(work, "ls-remote", "origin").stdout
    assert "%s\trefs/heads/topic" % sha in refs and "%s\trefs/heads/main" % sha not in refs
    bare = {"required_status_checks": None, "enforce_admins": True, "required_pull_request_reviews": None,
            "restrictions": None}
    assert api(protected["srv"], "PUT", "/repos/alice/app/branches/topic/protection", protected["alice"], bare).status == 200
    proc = git(work, "push", "origin", ":topic", check=False)
    assert proc.returncode != 0 and "protected branch topic: deletions are not allowed" in proc.stderr


def test_merge_needs_approval_and_checks(protected):
    srv, work, walt, rita, alice = (protected[k] for k in ("srv", "work", "walt", "rita", "alice"))
    git(work, "checkout", "-q", "-b", "feature")
    sha = commit_file(work, "f.txt", "f\n")
    git(work, "push", "-q", "origin", "feature")
    api(srv, "POST", "/repos/alice/app/pulls", walt, {"title": "f", "head": "feature", "base": "main"})
    r = api(srv, "PUT", "/repos/alice/app/pulls/1/merge", walt, {})
    assert r.status == 405 and r.json["message"] == "protected branch main: 1 approving review required, 0 given"
    api(srv, "POST", "/repos/alice/app/pulls/1/reviews", rita, {"event": "REQUEST_CHANGES", "body": "no"})
    r = api(srv, "PUT", "/repos/alice/app/pulls/1/merge", walt, {})
    assert r.status == 405 and "changes were requested by rita" in r.json["message"]
    api(srv, "POST", "/repos/alice/app/pulls/1/reviews", rita, {"event": "APPROVE"})
    r = api(srv, "PUT", "/repos/alice/app/pulls/1/merge", walt, {})
    assert r.status == 405 and r.json["message"] == "protected branch main: required status check 'ci/test' is missing"
    assert api(srv, "POST", "/repos/alice/app/statuses/" + sha, walt, {"state": "failure", "context": "ci/test"}).status == 201
    r = api(srv, "PUT", "/repos/alice/app/pulls/1/merge", walt, {})
    assert "required status check 'ci/test' is failure" in r.json["message"]
    run = api(srv, "POST", "/repos/alice/app/check-runs", walt, {"name": "ci/test", "head_sha": sha,
                                                                 "status": "in_progress"})
    assert run.status == 201
    assert "is pending" in api(srv, "PUT", "/repos/alice/app/pulls/1/merge", walt, {}).json["message"]
    api(srv, "PATCH", "/repos/alice/app/check-runs/%d" % run.json["id"], walt, {"conclusion": "success"})
    status = api(srv, "GET", "/repos/alice/app/commits/%s/check-runs" % sha, walt).json
    assert status["total_count"] == 1 and status["check_runs"][0]["conclusion"] == "success"
    # a stale approval: a new push dismisses it
    new_sha = commit_file(work, "g.txt", "g\n")
    git(work, "push", "-q", "origin", "feature")
    r = api(srv, "PUT", "/repos/alice/app/pulls/1/merge", walt, {})
    assert r.status == 405 and "0 given" in r.json["message"]
    api(srv, "POST", "/repos/alice/app/pulls/1/reviews", rita, {"event": "APPROVE"})
    api(srv, "POST", "/repos/alice/app/statuses/" + new_sha, walt, {"state": "success", "context": "ci/test"})
    combined = api(srv, "GET", "/repos/alice/app/commits/feature/status", walt).json
    assert combined["state"] == "success" and combined["total_count"] == 1
    r = api(srv, "PUT", "/repos/alice/app/pulls/1/merge", walt, {})
    assert r.status == 200 and r.json["merged"] is True
    row = srv.app.store.one("SELECT * FROM audit WHERE action = 'merge_pr' AND decision = 'allow'")
    assert "merged #1 by merge" in row["side_effect"]
    denied = srv.app.store.all("SELECT reasons FROM audit WHERE action = 'merge_pr' AND decision = 'deny'")
    assert len(denied) == 6          # every refused merge above, with its reason


def test_force_push_refused_admin_bypass(protected):
    srv, work, alice = protected["srv"], protected["work"], protected["alice"]
    relaxed = dict(PROTECT, required_pull_request_reviews=None, required_status_checks=None)
    assert api(srv, "PUT", "/repos/alice/app/branches/main/protection", alice, relaxed).status == 200
    commit_file(work, "a.txt", "a\n")
    git(work, "push", "-q", "origin", "HEAD:main")                    # a fast-forward is fine
    git(work, "reset", "-q", "--hard", "HEAD~1")
    rewritten = commit_file(work, "b.txt", "b\n")
    proc = git(work, "push", "--force", "origin", "HEAD:main", check=False)
    assert proc.returncode != 0 and "protected branch main: force pushes are not allowed" in proc.stderr
    assert rewritten not in git(work, "ls-remote", "origin", "main").stdout
    row = srv.app.store.all("SELECT * FROM audit WHERE surface = 'git' AND action = 'push_branch' ORDER BY id")[-1]
    assert row["decision"] == "deny" and "not moved" in row["side_effect"]
    # the admin passes, since the protection is not enforced for admins
    proc = git(work, "push", "--force", remote(srv, "alice/app", alice), "HEAD:main", check=False)
    assert proc.returncode == 0, proc.stderr
    assert api(srv, "DELETE", "/repos/alice/app/branches/main/protection", alice).status == 204
    assert api(srv, "GET", "/repos/alice/app/branches/main", alice).json["protected"] is False
