"""Task grants and task tokens: the task is the permission boundary, on REST and Git alike."""
import base64
import re
import time

import pytest

import agentgit

from conftest import (Browser, CLI, api, commit_file, exchange, ext, git, grant_a_task, remote, session_token,
                      standing_write, turn_on_totp)


@pytest.fixture
def task(server):
    return grant_a_task(server, "task:fix-payment-bug", ["read_code", "create_branch", "push_branch", "open_pr"],
                        {"branch_prefix": "agent/task-123/", "requires_approval": ["merge_pr"]})


def test_task_token_is_bounded_on_rest_and_git(server, task, tmp_path):
    token, login = task["token"], task["login"]
    me = api(server, "GET", "/user", token)
    assert me.status == 200 and me.json["login"] == login                       # who am I: the agent
    assert api(server, "GET", "/repos/alice/payments", token).status == 200
    assert api(server, "GET", "/repos/alice/other", token).status == 404          # outside the resources
    r = api(server, "POST", "/repos/alice/payments/issues", token, {"title": "x"})
    assert r.status == 403 and "does not allow open_issue" in r.json["message"]
    r = api(server, "POST", "/repos/alice/payments/git/refs", token, {"ref": "refs/heads/main", "sha": "bad"})
    assert r.status == 403 and "branches under agent/task-123/ only" in r.json["message"]   # refused before checked
    work = str(tmp_path / "w")
    git(str(tmp_path), "clone", "-q", remote(server, "alice/payments", token), work)
    sha = commit_file(work, "fix.py", "ok = 1\n")
    proc = git(work, "push", "origin", "HEAD:refs/heads/agent/task-123/fix", "HEAD:refs/heads/main", check=False)
    assert proc.returncode != 0 and "allows pushes to branches under agent/task-123/ only" in proc.stderr
    refs = git(work, "ls-remote", "origin").stdout
    assert "%s\trefs/heads/agent/task-123/fix" % sha in refs and "%s\trefs/heads/main" % sha not in refs
    assert git(str(tmp_path), "ls-remote", remote(server, "alice/other", token), check=False).returncode != 0
    r = api(server, "POST", "/repos/alice/payments/pulls", token, {"title": "Fix", "head": "agent/task-123/fix",
                                                                   "base": "main"})
    assert r.status == 201
    r = api(server, "PUT", "/repos/alice/payments/pulls/1/merge", token, {})
    assert r.status == 403 and "needs a human's approval" in r.json["message"]
    approval = r.json["approval_id"]
    assert r.json["approval_url"] == server.url + "/approvals/" + approval          # a page for alice
    again = api(server, "PUT", "/repos/alice/payments/pulls/1/merge", token, {})
    assert again.json["approval_id"] == approval                              # one pending request, not many
    assert ext(server, "POST", "/approvals/%s/approve" % approval, token, {}).status in (403, 404)
    assert ext(server, "POST", "/approvals/%s/approve" % approval, task["agent"], {}).status == 404
    mallory = server.add_user("mallory")
    assert ext(server, "POST", "/approvals/%s/approve" % approval, mallory, {}).status == 404
    assert ext(server, "GET", "/approvals/" + approval, mallory).status == 404
    assert ext(server, "GET", "/approvals/" + approval, token).json["state"] == "pending"     # the agent polls
    assert [a["id"] for a in ext(server, "GET", "/approvals", task["alice"]).json] == [approval]
    r = ext(server, "POST", "/approvals/%s/approve" % approval, task["alice"], {})
    assert r.status == 200 and (r.json["action"], r.json["resource"], r.json["state"], r.json["approved_by"]) == (
        "merge_pr", "repo:alice/payments", "approved", "user:alice")
    assert ext(server, "GET", "/task-grants/" + task["grant"]["id"], token).json["task"] == "task:fix-payment-bug"
    assert ext(server, "GET", "/task-grants/" + task["grant"]["id"], mallory).status == 404
    assert ext(server, "POST", "/approvals/%s/approve" % approval, task["alice"], {}).status == 409
    r = api(server, "PUT", "/repos/alice/payments/pulls/1/merge", token, {})
    assert r.status == 200 and r.json["merged"] is True, r
    assert api(server, "GET", "/repos/alice/payments/git/ref/heads/main", token).json["object"]["sha"] != sha
    row = server.app.store.one("SELECT * FROM audit WHERE action = 'merge_pr' AND decision = 'allow'")
    assert row["task"] == "task:fix-payment-bug" and approval in server.app.store.one(
        "SELECT side_effect FROM audit WHERE action = 'grant_task' AND side_effect LIKE 'approved%'")["side_effect"]
    assert ext(server, "GET", "/approvals/" + approval, token).json["state"] == "used"
    asked = server.app.store.one("SELECT COUNT(*) FROM approvals")[0]
    r = api(server, "PUT", "/repos/alice/payments/pulls/1/merge", token, {})    # merged: nothing to ask alice
    assert r.status == 405 and r.json["reason"] == "it is merged"
    assert server.app.store.one("SELECT COUNT(*) FROM approvals")[0] == asked
    row = server.app.store.one("SELECT * FROM audit WHERE action = 'open_pr' AND decision = 'allow'")
    assert (row["actor"], row["delegator"], row["task"], row["grant_id"]) == (
        login, "alice", "task:fix-payment-bug", task["grant"]["id"])
    # revoking the grant kills its tokens at once
    assert ext(server, "DELETE", "/task-grants/" + task["grant"]["id"], task["alice"]).status == 204
    assert api(server, "GET", "/user", token).status == 401


def test_grants_refuse_escalation_and_narrow_tokens(server, task, tmp_path):
    alice, agent, login = task["alice"], task["agent"], task["login"]
    bob = server.add_user("bob")
    api(server, "POST", "/user/repos", bob, {"name": "bobs", "private": True})
    base = {"agent": "agent:" + login, "task": "task:x", "actions": ["read_code"]}
    r = ext(server, "POST", "/task-grants", alice, dict(base, resources=["repo:bob/bobs"]))
    assert r.status == 422                                      # alice cannot see it
    r = ext(server, "POST", "/task-grants", alice, dict(base, resources=["repo:alice/payments"],
                                                        actions=["delete_repo"], constraints={}))
    assert r.status == 403 and "the site's agent policy lets no agent delete_repo" in r.json["message"]
    r = ext(server, "POST", "/task-grants", alice, dict(base, resources=["repo:alice/payments"],
                                                        actions=["merge_pr"], constraints={}))
    assert r.status == 201                                      # alice may merge in her own repository
    r = ext(server, "POST", "/task-grants", bob, dict(base, resources=["repo:bob/bobs"]))
    assert r.status == 403                                      # the agent is not bound to bob
    r = ext(server, "POST", "/task-grants", agent, dict(base, resources=["repo:alice/payments"]))
    assert r.status == 403                                      # agents do not grant
    r = ext(server, "POST", "/task-grants", alice, dict(base, resources=["repo:alice/payments"], actions=["fly"]))
    assert r.status == 422
    for constraints in ([], {"branch_prefx": "agent/"}, {"network_allowlist": "pypi.org"},
                        {"requires_approval": "merge_pr"}, {"expires_at": 5}):
        r = ext(server, "POST", "/task-grants", alice, dict(base, resources=["repo:alice/payments"],
                                                            constraints=constraints))
        assert r.status == 422, (constraints, r)                # a misspelt constraint is not ignored
    # narrowed: asking for more than the grant gives
    minted = ext(server, "POST", "/task-grants/%s/tokens" % task["grant"]["id"], agent,
                 {"actions": ["read_code", "merge_pr", "delete_repo"]}).json
    assert minted["decision"] == "allow_narrowed" and minted["scope"] == "read_code"
    assert api(server, "GET", "/repos/alice/payments", minted["token"]).status == 200
    main = api(server, "GET", "/repos/alice/payments/git/ref/heads/main", minted["token"]).json["object"]["sha"]
    r = api(server, "POST", "/repos/alice/payments/git/refs", minted["token"], {"ref": "refs/heads/agent/task-123/x",
                                                                                "sha": main})
    assert r.status == 403 and "is read-only: it allows no create_branch" in r.json["message"]
    assert server.app.store.one("SELECT decision FROM audit WHERE action = 'create_branch' ORDER BY id DESC"
                                " LIMIT 1")["decision"] == "read_only"
    work = str(tmp_path / "ro")
    git(str(tmp_path), "clone", "-q", remote(server, "alice/payments", minted["token"]), work)   # reads pass
    commit_file(work, "x.txt", "x\n")
    proc = git(work, "push", "origin", "HEAD:refs/heads/agent/task-123/ro", check=False)
    assert proc.returncode != 0 and "read-only" in proc.stderr
    # a task token mints nothing, and only the agent's own token mints task tokens
    assert ext(server, "POST", "/task-grants/%s/tokens" % task["grant"]["id"], task["token"], {}).status == 403
    assert ext(server, "POST", "/task-grants/%s/tokens" % task["grant"]["id"], alice, {}).status == 404
    assert ext(server, "POST", "/agent-invites", task["token"], {}).status == 403
    assert ext(server, "POST", "/task-grants", task["token"], dict(base, resources=["repo:alice/payments"])).status == 403


def test_explain_and_revoke_by_task(server, task, tmp_path):
    import subprocess
    token, login = task["token"], task["login"]
    r = api(server, "POST", "/repos/alice/payments/git/refs", token, {
        "ref": "refs/heads/agent/task-123/x",
        "sha": api(server, "GET", "/repos/alice/payments/git/ref/heads/main", token).json["object"]["sha"]})
    assert r.status == 201
    audit_id = int(r.headers["x-agentgit-audit-id"])
    row = ext(server, "GET", "/audit/%d" % audit_id, task["alice"]).json          # the delegator may read it
    assert (row["actor"], row["delegator"], row["task"], row["decision"]) == (login, "alice", "task:fix-payment-bug",
                                                                               "allow")
    assert "refs/heads/agent/task-123/x" in row["side_effect"] and "task:fix-payment-bug" in row["explanation"]
    assert ext(server, "GET", "/audit/%d" % audit_id, server.add_user("bob")).status == 404
    out = subprocess.run([*CLI, "audit", "explain", str(audit_id), "--data",
                          server.app.config.data_dir], capture_output=True, text=True, check=True).stdout
    assert "acting for      alice" in out and task["grant"]["id"] in out and "because" in out
    assert "token kind      task" in out and "rule            all" in out
    r = ext(server, "POST", "/task-grants/revocations", task["alice"], {"task": "task:fix-payment-bug"})
    assert r.json == {"grants": 1, "revoked": 1}
    assert api(server, "GET", "/user", token).status == 401


def test_policy_shows_what_a_token_could_do(server, task):
    token = task["token"]
    r = ext(server, "GET", "/policy?resource=repo:alice/payments", token)
    assert r.status == 200, r
    policy = r.json
    assert policy["principal"] == "agent:" + task["login"] and policy["token_kind"] == "task"
    assert policy["grant"]["id"] == task["grant"]["id"] and policy["grant"]["task"] == "task:fix-payment-bug"
    actions = policy["actions"]
    assert actions["open_pr"]["decision"] == "allow" and actions["read_code"]["decision"] == "allow"
    assert actions["merge_pr"]["decision"] == "needs_approval"
    assert actions["open_issue"]["decision"] == "deny" and task["grant"]["id"] in actions["open_issue"]["reasons"][0]
    assert policy["rules"][0].startswith("1. ") and any("its grant names" in rule for rule in policy["rules"])
    assert any("needs_step_up" in rule for rule in policy["rules"])     # the step-up rule decide() applies too
    # the same question through the delegator's own token: her permission, no grant
    mine = ext(server, "GET", "/policy?resource=alice/payments", task["alice"]).json
    assert mine["grant"] is None and mine["actions"]["merge_pr"]["decision"] == "allow"
    # the delegator asks what a task token of her grant could do: the token's own answer
    query = "/policy?resource=repo:alice/payments&grant=" + task["grant"]["id"]
    theirs = ext(server, "GET", query, task["alice"]).json
    assert theirs["actions"] == actions and theirs["principal"] == "agent:" + task["login"]
    assert ext(server, "GET", query, server.add_user("mallory")).status == 404
    assert ext(server, "GET", "/policy?resource=repo:alice/other", token).status == 404     # outside the grant
    assert ext(server, "GET", "/policy?resource=repo:alice/payments", server.add_user("eve")).status == 404
    assert ext(server, "GET", "/policy", token).status == 404
    assert server.app.store.one("SELECT count(*) AS n FROM audit WHERE action = 'open_issue'")["n"] == 0


def test_approvals_page(server, task):
    token = task["token"]
    main = api(server, "GET", "/repos/alice/payments/git/ref/heads/main", token).json["object"]["sha"]
    api(server, "POST", "/repos/alice/payments/git/refs", token, {"ref": "refs/heads/agent/task-123/fix", "sha": main})
    assert api(server, "PUT", "/repos/alice/payments/contents/fix.py", token, {
        "message": "fix", "content": "b2sgPSAxCg==", "branch": "agent/task-123/fix"}).status == 201
    assert api(server, "POST", "/repos/alice/payments/pulls", token, {"title": "Fix", "head": "agent/task-123/fix",
                                                                      "base": "main"}).status == 201
    assert api(server, "PUT", "/repos/alice/payments/pulls/1/merge", token, {}).status == 403
    approval = server.app.store.one("SELECT public_id FROM approvals")["public_id"]
    browser = Browser(server)
    resp, text = browser.request("GET", "/approvals")
    assert resp.status == 303 and resp.getheader("Location").startswith("/login")
    browser.sign_in("alice", "pw", "/approvals")
    resp, text = browser.request("GET", "/approvals")
    assert resp.status == 200 and approval in text and "merge_pr" in text and task["login"] in text
    resp, _ = browser.request("POST", "/approvals", {"csrf": "forged", "approval_id": approval})
    assert resp.status == 403
    resp, text = browser.request("POST", "/approvals", {"csrf": browser.csrf(text), "approval_id": approval})
    assert resp.status == 200 and "Approved merge_pr on repo:alice/payments" in text and "Nothing waits" in text
    assert server.app.store.one("SELECT approved_at FROM approvals")["approved_at"] is not None


def test_token_exchange(server, task, tmp_path):
    agent, login = task["agent"], task["login"]
    r = exchange(server, subject_token=agent, resource=server.url + "/alice/payments.git",
                 scope="read_code push_branch merge_pr", task="task:fix-payment-bug")
    assert r.status == 200, r
    assert r.json["issued_token_type"] == "urn:ietf:params:oauth:token-type:access_token"
    assert r.json["decision"] == "allow_narrowed" and r.json["scope"] == "push_branch read_code"
    assert 3500 <= r.json["expires_in"] <= 3600 and r.json["task"] == "task:fix-payment-bug"
    token = r.json["access_token"]
    assert token.startswith("agt_") and api(server, "GET", "/user", token).json["login"] == login
    assert "refs/heads/main" in git(str(tmp_path), "ls-remote", remote(server, "alice/payments", token)).stdout
    assert api(server, "GET", "/repos/alice/other", token).status == 404
    r = exchange(server, subject_token=agent, resource="repo:alice/payments", task="task:fix-payment-bug")
    assert r.status == 200 and r.json["decision"] == "allow"
    # refusals: another repository, a task token or a human's token as the subject, a forged token
    assert exchange(server, subject_token=agent, resource="repo:alice/other",
                    task="task:fix-payment-bug").json["error"] == "invalid_target"
    r = exchange(server, subject_token=agent, resource="https://elsewhere.example/alice/payments.git")
    assert r.json["error"] == "invalid_target"                                  # RFC 8707: not this server
    for subject in (token, task["alice"], "ghp_" + "0" * 40):
        assert exchange(server, subject_token=subject, resource="repo:alice/payments").json["error"] == "invalid_grant"
    # a second grant for the same repository: each task names its own
    assert ext(server, "POST", "/task-grants", task["alice"], {
        "agent": "agent:" + login, "task": "task:second", "resources": ["repo:alice/payments"],
        "actions": ["read_code"]}).status == 201
    r = exchange(server, subject_token=agent, resource="repo:alice/payments", task="task:second")
    assert r.json["task"] == "task:second" and r.json["scope"] == "read_code"


def test_agent_changes_to_a_protected_branch_need_a_humans_review(server, task, tmp_path):
    standing_write(server)
    alice, agent = task["alice"], session_token(server, task["agent"], "alice/payments")   # its standing push
    assert api(server, "PUT", "/repos/alice/payments/branches/main/protection", alice, {
        "required_status_checks": None, "enforce_admins": False, "required_pull_request_reviews": None,
        "restrictions": None}).status == 200
    work = str(tmp_path / "w")
    git(str(tmp_path), "clone", "-q", remote(server, "alice/payments", agent), work)
    commit_file(work, "fix.py", "ok = 1\n")
    proc = git(work, "push", "origin", "HEAD:refs/heads/main", "HEAD:refs/heads/fix", check=False)
    assert proc.returncode != 0 and "must arrive through a pull request with a human's approving review" in proc.stderr
    assert server.app.store.one("SELECT decision FROM audit WHERE action = 'push_branch' AND reasons LIKE"
                                " '%protected branch main%'")["decision"] == "needs_review"
    assert api(server, "POST", "/repos/alice/payments/pulls", agent, {"title": "Fix", "head": "fix",
                                                                      "base": "main"}).status == 201
    r = api(server, "PUT", "/repos/alice/payments/pulls/1/merge", agent, {})
    assert r.status == 405 and "an agent's merge needs a human's approving review" in r.json["message"]
    assert api(server, "POST", "/repos/alice/payments/pulls/1/reviews", alice, {"event": "APPROVE"}).status == 200
    r = api(server, "PUT", "/repos/alice/payments/pulls/1/merge", agent, {})
    assert r.status == 200 and r.json["merged"] is True, r
    # a human is held only to what the rule asks: alice pushes straight to main
    proc = git(work, "push", remote(server, "alice/payments", alice), "HEAD:refs/heads/main", check=False)
    assert "needs_review" not in proc.stderr


def test_a_merge_that_cannot_happen_asks_nobody_and_spends_no_approval(server, task, tmp_path):
    """A merge that conflicts is refused before a human is asked; one approved that then conflicts (the
    base moved) is refused before the approval is spent; a merge once merged asks nobody again, and an
    approval asked for a pull request closed meanwhile is withdrawn."""
    token, alice = task["token"], task["alice"]
    work = str(tmp_path / "w")
    git(str(tmp_path), "clone", "-q", remote(server, "alice/payments", token), work)
    commit_file(work, "pay.py", "fee = 2\n")
    git(work, "push", "-q", "origin", "HEAD:refs/heads/agent/task-123/fee")
    assert api(server, "POST", "/repos/alice/payments/pulls", token, {"title": "Fee", "head": "agent/task-123/fee",
                                                                      "base": "main"}).status == 201
    approval = api(server, "PUT", "/repos/alice/payments/pulls/1/merge", token, {}).json["approval_id"]
    assert ext(server, "POST", "/approvals/%s/approve" % approval, alice, {}).status == 200
    git(work, "reset", "-q", "--hard", "HEAD~1")
    commit_file(work, "pay.py", "fee = 3\n")
    git(work, "push", "-q", remote(server, "alice/payments", alice), "HEAD:refs/heads/main")     # the base moves
    asked = server.app.store.one("SELECT COUNT(*) FROM approvals")[0]
    r = api(server, "PUT", "/repos/alice/payments/pulls/1/merge", token, {})
    assert r.status == 405 and r.json["reason"] == "its head conflicts with main"
    row = server.app.store.one("SELECT * FROM approvals WHERE public_id = ?", approval)
    assert row["used_at"] is None and row["approved_at"] is not None
    assert server.app.store.one("SELECT COUNT(*) FROM approvals")[0] == asked
    # another pull request, asked about, then closed: the ask is withdrawn, and cannot be approved
    git(work, "checkout", "-q", "-b", "other", "origin/main")
    commit_file(work, "other.txt", "x\n")
    git(work, "push", "-q", "origin", "HEAD:refs/heads/agent/task-123/other")
    assert api(server, "POST", "/repos/alice/payments/pulls", token, {"title": "Other", "head": "agent/task-123/other",
                                                                      "base": "main"}).status == 201
    other = api(server, "PUT", "/repos/alice/payments/pulls/2/merge", token, {}).json["approval_id"]
    assert api(server, "PATCH", "/repos/alice/payments/pulls/2", alice, {"state": "closed"}).status == 200
    assert ext(server, "GET", "/approvals/" + other, alice).json["state"] == "withdrawn"
    refused = ext(server, "POST", "/approvals/%s/approve" % other, alice, {})
    assert refused.status == 409 and "closed meanwhile" in refused.json["message"]


def test_an_approval_is_for_one_pull_request_at_one_commit(server, task, tmp_path):
    """The human approves merging this pull request as it stands: new commits, or another pull
    request, need a yes of their own."""
    token, alice = task["token"], task["alice"]
    work = str(tmp_path / "w")
    git(str(tmp_path), "clone", "-q", remote(server, "alice/payments", token), work)
    commit_file(work, "a.txt", "1\n")
    git(work, "push", "-q", "origin", "HEAD:refs/heads/agent/task-123/a", "HEAD:refs/heads/agent/task-123/b")
    for head in ("a", "b"):
        assert api(server, "POST", "/repos/alice/payments/pulls", token, {
            "title": head, "head": "agent/task-123/" + head, "base": "main"}).status == 201
    r = api(server, "PUT", "/repos/alice/payments/pulls/1/merge", token, {})
    first = r.json["approval_id"]
    assert "of pull request #1 at " in r.json["message"]
    assert ext(server, "GET", "/approvals/" + first, alice).json["subject"].startswith("pull request #1 at ")
    assert ext(server, "POST", "/approvals/%s/approve" % first, alice, {}).status == 200
    r = api(server, "PUT", "/repos/alice/payments/pulls/2/merge", token, {})         # another pull request
    assert r.status == 403 and r.json["approval_id"] != first
    commit_file(work, "a.txt", "2, after the approval\n")
    git(work, "push", "-q", "origin", "HEAD:refs/heads/agent/task-123/a")
    r = api(server, "PUT", "/repos/alice/payments/pulls/1/merge", token, {})         # new commits
    assert r.status == 403 and r.json["approval_id"] not in (first,)
    assert ext(server, "GET", "/approvals/" + first, alice).json["state"] == "approved"      # unspent
    assert api(server, "GET", "/repos/alice/payments/pulls/1", token).json["merged"] is False


def test_attacks_on_grants_and_approvals(server, task):
    alice, agent, login = task["alice"], task["agent"], task["login"]
    # an approval is bound to its resource: one given for payments does not merge on other
    grant = ext(server, "POST", "/task-grants", alice, {
        "agent": "agent:" + login, "task": "task:both", "resources": ["repo:alice/payments", "repo:alice/other"],
        "actions": ["read_code", "create_branch", "push_branch", "open_pr"],
        "constraints": {"requires_approval": ["merge_pr"]}}).json
    token = ext(server, "POST", "/task-grants/%s/tokens" % grant["id"], agent, {}).json["token"]
    for repo in ("payments", "other"):
        main = api(server, "GET", "/repos/alice/%s/git/ref/heads/main" % repo, token).json["object"]["sha"]
        api(server, "POST", "/repos/alice/%s/git/refs" % repo, token, {"ref": "refs/heads/fix", "sha": main})
        assert api(server, "PUT", "/repos/alice/%s/contents/f.txt" % repo, token, {
            "message": "f", "content": "Zgo=", "branch": "fix"}).status == 201
        assert api(server, "POST", "/repos/alice/%s/pulls" % repo, token, {"title": "f", "head": "fix",
                                                                           "base": "main"}).status == 201
    approval = api(server, "PUT", "/repos/alice/payments/pulls/1/merge", token, {}).json["approval_id"]
    assert ext(server, "POST", "/approvals/%s/approve" % approval, alice, {}).status == 200
    r = api(server, "PUT", "/repos/alice/other/pulls/1/merge", token, {})
    assert r.status == 403 and r.json["approval_id"] != approval
    assert api(server, "GET", "/repos/alice/other/pulls/1", token).json["merged"] is False
    # an expired grant takes its tokens with it
    with server.app.store.transaction() as db:
        db.execute("UPDATE task_grants SET expires_at = '2000-01-01T00:00:00Z' WHERE public_id = ?", (grant["id"],))
    assert api(server, "GET", "/user", token).status == 401
    row = server.app.store.one("SELECT * FROM audit WHERE action = 'use_task_token'")
    assert (row["decision"], row["task"], row["reasons"]) == ("deny", "task:both", '["task grant %s is expired"]'
                                                              % grant["id"]), dict(row)
    r = ext(server, "POST", "/task-grants/%s/tokens" % grant["id"], agent, {})
    assert r.status == 403 and r.json["message"] == "task grant %s is expired" % grant["id"]
    assert server.app.store.one("SELECT decision FROM audit WHERE action = 'mint_task_token' ORDER BY id DESC"
                                " LIMIT 1")["decision"] == "deny"
    pending = api(server, "PUT", "/repos/alice/payments/pulls/1/merge", task["token"], {}).json["approval_id"]
    assert ext(server, "DELETE", "/task-grants/" + task["grant"]["id"], alice).status == 204
    r = ext(server, "POST", "/approvals/%s/approve" % pending, alice, {})          # nothing to approve under
    assert r.status == 403 and "is revoked" in r.json["message"]
    # unbinding the agent revokes its task grants, and so their tokens
    third = ext(server, "POST", "/task-grants", alice, {"agent": "agent:" + login, "task": "task:third",
                                                        "resources": ["repo:alice/payments"], "actions": ["read_code"]})
    token = ext(server, "POST", "/task-grants/%s/tokens" % third.json["id"], agent, {}).json["token"]
    assert api(server, "GET", "/user", token).status == 200
    assert ext(server, "DELETE", "/agent-bindings/" + login, alice).status == 204
    assert api(server, "GET", "/user", token).status == 401
    row = server.app.store.one("SELECT side_effect FROM audit WHERE side_effect LIKE 'unbound%'")
    assert "revoked 0 tokens (sessions), revoked 2 task grants" in row["side_effect"]


def test_gh_with_a_task_token(tmp_path):
    """The agent's runtime holds only the task token: `connect gh --token <task token>`, then gh (REST
    and GraphQL) works within the grant and nowhere else."""
    import json
    from conftest import gh, gh_over_socket, socket_server
    with socket_server(tmp_path) as srv:
        world = grant_a_task(srv, "task:gh", ["read_code", "open_pr"], {"requires_approval": ["merge_pr"]})
        token, login = world["token"], world["login"]
        env = gh_over_socket(srv, token, tmp_path)
        assert json.loads(gh(env, "api", "user").stdout)["login"] == login
        assert "alice/payments" in gh(env, "repo", "view", "alice/payments").stdout
        proc = gh(env, "repo", "view", "alice/other", check=False)
        assert proc.returncode != 0 and "Could not resolve to a Repository" in proc.stderr
        proc = gh(env, "issue", "create", "-R", "alice/payments", "-t", "x", "-b", "y", check=False)
        assert proc.returncode != 0 and "does not allow open_issue" in proc.stderr
        # a merge the grant reserves for a human: gh prints where the approval waits; once given, it merges
        alice = world["alice"]
        main = api(srv, "GET", "/repos/alice/payments/git/ref/heads/main", alice).json["object"]["sha"]
        api(srv, "POST", "/repos/alice/payments/git/refs", alice, {"ref": "refs/heads/fix", "sha": main})
        api(srv, "PUT", "/repos/alice/payments/contents/fix.txt", alice, {
            "message": "fix", "content": base64.b64encode(b"fixed\n").decode(), "branch": "fix"})
        gh(env, "pr", "create", "-R", "alice/payments", "-H", "fix", "-B", "main", "-t", "Fix", "-b", "it")
        proc = gh(env, "pr", "merge", "1", "-R", "alice/payments", "--merge", check=False)
        approval = re.search(r"approval (ap_[0-9a-f]+) waits for alice at http", proc.stderr)
        assert proc.returncode != 0 and approval, proc.stderr
        assert ext(srv, "POST", "/approvals/%s/approve" % approval.group(1), alice, {}).status == 200
        gh(env, "pr", "merge", "1", "-R", "alice/payments", "--merge")
        assert api(srv, "GET", "/repos/alice/payments/pulls/1", alice).json["merged"] is True
    row = srv.app.store.one("SELECT * FROM audit WHERE action = 'open_issue' AND decision = 'deny'")
    assert (row["actor"], row["delegator"], row["task"], row["surface"]) == (login, "alice", "task:gh", "graphql")


def test_step_up_for_destructive_actions(server):
    """needs_step_up: a human with TOTP deletes a repository only within ten minutes of confirming a code
    (RFC 9470's 401); a human without a second factor is not asked (agents: see test_hardening)."""
    alice = server.add_user("alice")
    api(server, "POST", "/user/repos", alice, {"name": "doomed"})
    key = turn_on_totp(server, "alice")
    r = api(server, "DELETE", "/repos/alice/doomed", alice)
    assert r.status == 401 and "needs a TOTP code" in r.json["message"]
    assert r.headers["www-authenticate"].startswith('Bearer error="insufficient_user_authentication"')
    assert "max_age=600" in r.headers["www-authenticate"]
    assert server.app.store.one("SELECT decision FROM audit WHERE action = 'delete_repo'")["decision"] == "needs_step_up"
    assert ext(server, "POST", "/step-up", alice, {"otp": "000000" if agentgit.totp_code(key, time.time()) != "000000"
                                                  else "111111"}).status == 401
    assert api(server, "GET", "/repos/alice/doomed", alice).status == 200           # nothing happened
    assert ext(server, "POST", "/step-up", alice, {"otp": agentgit.totp_code(key, time.time())}).status == 200
    assert api(server, "DELETE", "/repos/alice/doomed", alice).status == 204
    # another of alice's tokens has not stepped up
    other = ext(server, "POST", "/user/tokens", alice, {"name": "other", "scopes": ["repo", "delete_repo"]})
    api(server, "POST", "/user/repos", alice, {"name": "second"})
    assert other.status == 201 and api(server, "DELETE", "/repos/alice/second", other.json["token"]).status == 401
    # a step-up ten minutes old no longer counts
    with server.app.store.transaction() as db:
        db.execute("UPDATE step_ups SET at = '2000-01-01T00:00:00Z'")
    assert api(server, "DELETE", "/repos/alice/second", alice).status == 401
    bob = server.add_user("bob")                                                    # no second factor
    api(server, "POST", "/user/repos", bob, {"name": "gone"})
    assert api(server, "DELETE", "/repos/bob/gone", bob).status == 204


def test_step_up_on_the_web_pages(server):
    """A web session whose code is older than ten minutes is asked for one before it unbinds an agent;
    the page sends the refused form again with the code, and the action then happens once."""
    server.add_user("alice", password="pw")
    login, agent, _ = server.add_agent("helper")
    key = turn_on_totp(server, "alice")
    b = Browser(server)
    _, page = b.request("GET", "/login")
    resp, _ = b.request("POST", "/login", {"csrf": b.csrf(page), "login": "alice", "password": "pw",
                                           "totp": agentgit.totp_code(key, time.time()), "next": "/settings/agents"})
    assert resp.status == 303
    _, page = b.request("GET", "/settings/agents")
    invite = b.request("POST", "/settings/agents", {"csrf": b.csrf(page), "action": "invite", "repo_grants": ""})[1]
    token = re.search(r"<code>([^<]+)</code>", invite).group(1)
    assert ext(server, "POST", "/agent-bindings/confirm", agent, {"invite_token": token}).status == 201
    with server.app.store.transaction() as db:              # the code at sign-in was eleven minutes ago
        db.execute("UPDATE web_sessions SET totp_at = ?", (agentgit.from_now(-660),))
    resp, page = b.request("POST", "/settings/agents", {"csrf": b.csrf(page), "agent": login, "action": "unbind",
                                                        "confirmed": "yes"})
    assert resp.status == 401 and 'name="totp"' in page and 'name="agent" value="%s"' % login in page
    assert server.app.store.one("SELECT 1 FROM agent_bindings") is not None          # nothing happened yet
    form = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page))
    wrong = "000000" if agentgit.totp_code(key, time.time()) != "000000" else "111111"
    resp, again = b.request("POST", "/settings/agents", dict(form, totp=wrong))
    assert resp.status == 401 and "Wrong TOTP code" in again and 'name="totp"' in again
    assert server.app.store.one("SELECT 1 FROM agent_bindings") is not None
    resp, done = b.request("POST", "/settings/agents", dict(form, totp=agentgit.totp_code(key, time.time())))
    assert resp.status == 200 and "unbound" in done
    assert server.app.store.one("SELECT 1 FROM agent_bindings") is None
    assert server.app.store.one("SELECT decision FROM audit WHERE action = 'manage_agent' AND decision ="
                                " 'needs_step_up'") is not None
    assert server.app.store.one("SELECT 1 FROM audit WHERE side_effect = 'stepped up the web session'") is not None


def test_an_org_owner_grants_tasks_on_the_orgs_repositories(server, tmp_path):
    """The owner of the organization that owns every resource may grant a task to an agent bound to
    someone else; unbinding the agent from that someone leaves her grant standing."""
    olivia, bob, carl = server.add_user("olivia"), server.add_user("bob"), server.add_user("carl")
    ext(server, "POST", "/user/orgs", olivia, {"login": "acme"})
    api(server, "POST", "/orgs/acme/repos", olivia, {"name": "app", "private": True, "auto_init": True})
    api(server, "POST", "/user/repos", olivia, {"name": "own", "private": True})
    login, agent, _ = server.add_agent("fixer")
    invite = ext(server, "POST", "/agent-invites", bob, {}).json["invite_token"]
    assert ext(server, "POST", "/agent-bindings/confirm", agent, {"invite_token": invite}).status == 201
    assert api(server, "PUT", "/repos/acme/app/collaborators/" + login, olivia, {"permission": "push"}).status in (
        201, 204)
    body = {"agent": "agent:" + login, "task": "task:bump", "resources": ["repo:acme/app"],
            "actions": ["read_code", "push_branch", "create_branch"], "constraints": {"branch_prefix": "bump/"}}
    assert ext(server, "POST", "/task-grants", carl, body).status == 422            # carl cannot see acme/app
    r = ext(server, "POST", "/task-grants", olivia, dict(body, resources=["repo:acme/app", "repo:olivia/own"]))
    assert r.status == 403                                  # not every resource is the org's, and fixer is bob's
    r = ext(server, "POST", "/task-grants", olivia, body)
    assert r.status == 201 and r.json["delegator"] == "user:olivia", r
    token = ext(server, "POST", "/task-grants/%s/tokens" % r.json["id"], agent, {}).json["token"]
    work = str(tmp_path / "w")
    git(str(tmp_path), "clone", "-q", remote(server, "acme/app", token), work)
    commit_file(work, "v.txt", "2\n")
    git(work, "push", "-q", "origin", "HEAD:refs/heads/bump/v2")
    row = server.app.store.one("SELECT * FROM audit WHERE action = 'create_branch' AND decision = 'allow'")
    assert (row["actor"], row["delegator"], row["task"]) == (login, "olivia", "task:bump")
    assert ext(server, "DELETE", "/agent-bindings/" + login, bob).status == 204
    assert api(server, "GET", "/repos/acme/app", token).status == 200              # olivia's grant stands
    assert ext(server, "DELETE", "/task-grants/" + r.json["id"], carl).status == 404
    assert ext(server, "DELETE", "/task-grants/" + r.json["id"], olivia).status == 204
    assert api(server, "GET", "/repos/acme/app", token).status == 401


def test_the_seeds_grant_verbatim_and_an_approved_secret_read(server):
    """The seed's grant, as written, is accepted; a secret read it reserves for a human's approval
    waits for one, then happens once, audited with the task."""
    w = grant_a_task(server, "task:fix-payment-bug", ["read_code", "create_branch", "push_branch", "open_pr"], {
        "branch_prefix": "agent/task-123/", "expires_at": agentgit.from_now(3 * 3600),
        "network_allowlist": ["api.stripe.com", "pypi.org"],
        "requires_approval": ["merge_pr", "read_secret", "run_workflow"]})
    assert w["grant"]["constraints"]["network_allowlist"] == ["api.stripe.com", "pypi.org"]
    key_id = api(server, "GET", "/repos/alice/payments/actions/secrets/public-key", w["alice"]).json["key_id"]
    sealed = base64.b64encode(bytes(48 + 6)).decode()
    assert api(server, "PUT", "/repos/alice/payments/actions/secrets/STRIPE_KEY", w["alice"],
               {"encrypted_value": sealed, "key_id": key_id}).status == 201
    r = api(server, "GET", "/repos/alice/payments/actions/secrets", w["token"])
    assert r.status == 403 and "read_secret needs a human's approval" in r.json["message"]
    assert ext(server, "POST", "/approvals/%s/approve" % r.json["approval_id"], w["alice"], {}).status == 200
    r = api(server, "GET", "/repos/alice/payments/actions/secrets", w["token"])
    assert r.status == 200 and [s["name"] for s in r.json["secrets"]] == ["STRIPE_KEY"], r
    assert "encrypted_value" not in r.json["secrets"][0]
    assert api(server, "GET", "/repos/alice/payments/actions/secrets", w["token"]).status == 403     # used up
    row = server.app.store.one("SELECT * FROM audit WHERE action = 'read_secret' AND decision = 'allow'")
    assert (row["task"], row["grant_id"]) == ("task:fix-payment-bug", w["grant"]["id"]) and "approval" in row["reasons"]
    assert api(server, "PUT", "/repos/alice/payments/actions/secrets/X", w["token"],
               {"encrypted_value": sealed, "key_id": key_id}).status == 403           # not granted
    actions = ext(server, "GET", "/policy?resource=repo:alice/payments", w["token"]).json["actions"]
    assert actions["run_workflow"]["decision"] == "needs_approval" and actions["write_secret"]["decision"] == "deny"
    api(server, "PUT", "/repos/alice/payments/contents/.github/workflows/ci.yml", w["alice"], {
        "message": "ci", "content": base64.b64encode(b"name: CI\non: workflow_dispatch\n").decode()})
    r = api(server, "POST", "/repos/alice/payments/actions/workflows/ci.yml/dispatches", w["token"], {"ref": "main"})
    assert r.status == 403 and ("run_workflow of .github/workflows/ci.yml on refs/heads/main needs a human's "
                                "approval") in r.json["message"]
    assert ext(server, "POST", "/approvals/%s/approve" % r.json["approval_id"], w["alice"], {}).status == 200
    assert api(server, "POST", "/repos/alice/payments/actions/workflows/ci.yml/dispatches", w["token"],
               {"ref": "main"}).status == 204
    assert api(server, "GET", "/repos/alice/payments/actions/runs", w["alice"]).json["total_count"] == 1


def test_a_push_the_grant_reserves_waits_for_an_approval(server, tmp_path):
    """push_branch under requires_approval: git prints where the approval waits; once a human gives it,
    one push lands, and the next waits for another."""
    w = grant_a_task(server, "task:hotfix", ["read_code", "create_branch"], {"branch_prefix": "agent/",
                                                                             "requires_approval": ["push_branch"]})
    work = str(tmp_path / "w")
    git(str(tmp_path), "clone", "-q", remote(server, "alice/payments", w["token"]), work)
    commit_file(work, "a.txt", "1\n")
    git(work, "push", "-q", "origin", "HEAD:refs/heads/agent/fix")                    # creating is granted
    second = commit_file(work, "a.txt", "2\n")
    proc = git(work, "push", "origin", "HEAD:refs/heads/agent/fix", check=False)
    approval = re.search(r"approval (ap_[0-9a-f]+) waits for alice", proc.stderr)
    assert proc.returncode != 0 and approval, proc.stderr
    assert ext(server, "POST", "/approvals/%s/approve" % approval.group(1), w["alice"], {}).status == 200
    git(work, "push", "-q", "origin", "HEAD:refs/heads/agent/fix")
    assert git(work, "ls-remote", "origin", "refs/heads/agent/fix").stdout.split()[0] == second
    commit_file(work, "a.txt", "3\n")
    proc = git(work, "push", "origin", "HEAD:refs/heads/agent/fix", check=False)
    again = re.search(r"approval (ap_[0-9a-f]+) waits", proc.stderr)
    assert proc.returncode != 0 and again and again.group(1) != approval.group(1)


def test_a_push_and_an_api_call_that_need_approval_read_alike_in_the_audit_log(server, tmp_path):
    """One enforcement ledger for every surface: a ref of a push and a REST call that each need a
    human's yes are asked for, and recorded, in the same words; so is each one's refusal."""
    w = grant_a_task(server, "task:both", ["read_code", "create_branch", "manage_labels"], {
        "branch_prefix": "agent/", "requires_approval": ["push_branch", "manage_labels"]})
    work = str(tmp_path / "w")
    git(str(tmp_path), "clone", "-q", remote(server, "alice/payments", w["token"]), work)
    commit_file(work, "a.txt", "1\n")
    git(work, "push", "-q", "origin", "HEAD:refs/heads/agent/fix")
    commit_file(work, "a.txt", "2\n")
    assert git(work, "push", "origin", "HEAD:refs/heads/agent/fix", check=False).returncode != 0
    assert api(server, "POST", "/repos/alice/payments/labels", w["token"], {"name": "x"}).status == 403
    asked = server.app.store.all("SELECT surface, action, decision, side_effect FROM audit WHERE side_effect LIKE"
                                 " 'approval % requested' ORDER BY id")
    assert [(r["surface"], r["action"], r["decision"]) for r in asked] == [
        ("git", "push_branch", "needs_approval"), ("rest", "manage_labels", "needs_approval")]
    assert git(work, "push", "origin", "HEAD:refs/heads/other", check=False).returncode != 0    # outside agent/
    refused = server.app.store.one("SELECT surface, decision, side_effect FROM audit WHERE surface = 'git' AND"
                                   " decision = 'deny' ORDER BY id DESC LIMIT 1")
    assert (refused["decision"], refused["side_effect"]) == ("deny", "refused refs/heads/other")


def test_a_read_beyond_read_access_is_named_by_the_grant(server):
    """read_code reads code and issues; a repository's collaborators, variables, deploy keys and settings
    need the grant to name them, as a change does, whatever the delegator holds."""
    w = grant_a_task(server, "task:read", ["read_code"], {})
    for path in ("/collaborators", "/actions/variables", "/keys"):
        r = api(server, "GET", "/repos/alice/payments" + path, w["token"])
        assert r.status == 403 and "does not allow read_" in r.json["message"], (path, r)
    more = ext(server, "POST", "/task-grants", w["alice"], {
        "agent": "agent:" + w["login"], "task": "task:read-more", "resources": ["repo:alice/payments"],
        "actions": ["read_code", "read_collaborators"]}).json
    token = ext(server, "POST", "/task-grants/%s/tokens" % more["id"], w["agent"], {}).json["token"]
    assert api(server, "GET", "/repos/alice/payments/collaborators", token).status == 200
