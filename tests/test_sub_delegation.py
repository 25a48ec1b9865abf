"""Agents delegating to agents: an orchestrator's task token hands a narrower part of its task to a
sub-agent by RFC 8693 token exchange (its task token as subject_token, the sub-agent's own token as
actor_token). The sub-agent's authority is every link's at once, live; its act claim nests the chain."""
import urllib.parse

from conftest import api, call, commit_file, exchange, ext, git, grant_a_task, remote


def bind(server, alice, name, repos=("alice/payments",)):
    """Another agent bound to alice by invite: (login, its own token)."""
    login, token, _ = server.add_agent(name)
    invite = ext(server, "POST", "/agent-invites", alice, {"repo_grants": [
        {"repo_full_name": repo, "permission": "push"} for repo in repos]}).json["invite_token"]
    assert ext(server, "POST", "/agent-bindings/confirm", token, {"invite_token": invite}).status == 201
    return login, token


def hand_down(server, task_token, actor_token, **params):
    return exchange(server, subject_token=task_token, actor_token=actor_token,
                    actor_token_type="urn:ietf:params:oauth:token-type:access_token", **params)


def introspect(server, token, asker):
    return call(server, "POST", "/login/oauth/introspect", asker, raw_body=urllib.parse.urlencode(
        {"token": token}).encode(), headers={"Content-Type": "application/x-www-form-urlencoded",
                                             "Accept": "application/json"}).json


def test_an_orchestrator_hands_part_of_its_task_to_a_sub_agent(server, tmp_path):
    w = grant_a_task(server, "task:payments", ["read_code", "create_branch", "push_branch", "open_issue"],
                     {"branch_prefix": "agent/", "paths": ["src/**"]})
    alice = w["alice"]
    sub, sub_own = bind(server, alice, "tester")
    handed = hand_down(server, w["token"], sub_own, scope="read_code push_branch create_branch merge_pr",
                       resource=server.url + "/alice/payments.git", expires_in="600")
    assert handed.status == 200 and handed.json["decision"] == "allow_narrowed", handed      # merge_pr: not its own
    token = handed.json["access_token"]
    assert handed.json["scope"] == "create_branch push_branch read_code" and handed.json["expires_in"] <= 600
    facts = introspect(server, token, alice)
    assert facts["act"] == {"sub": "agent:" + sub, "act": {"sub": "agent:" + w["login"], "act": {"sub": "user:alice"}}}
    assert (facts["sub"], facts["delegator"], facts["task"]) == (sub, "alice", "task:payments")

    # within every link: the sub-agent pushes under agent/ and in src/ only; it opens no issue
    assert api(server, "POST", "/repos/alice/payments/issues", token, {"title": "x"}).status == 403
    assert api(server, "GET", "/repos/alice/other", token).status == 404
    work = str(tmp_path / "w")
    git(str(tmp_path), "clone", "-q", remote(server, "alice/payments", token), work)
    commit_file(work, "src/test_pay.py", "def test(): pass\n")
    git(work, "push", "-q", "origin", "HEAD:refs/heads/agent/tests")
    commit_file(work, "README.md", "# by the tester\n")
    assert git(work, "push", "origin", "HEAD:refs/heads/agent/tests", check=False).returncode != 0
    row = server.app.store.one("SELECT * FROM audit WHERE actor = ? AND action = 'create_branch' AND decision ="
                               " 'allow'", sub)
    assert (row["delegator"], row["task"]) == ("alice", "task:payments")
    assert "handed down by agent %s (task grant %s)" % (w["login"], w["grant"]["id"]) in row["reasons"]
    made = server.app.store.one("SELECT side_effect FROM audit WHERE action = 'delegate_task' AND decision = 'allow'")
    assert "task grant tg_" in made[0] and "task token " in made[0]          # the grant and its token, one record
    grants = {g["agent"]: g for g in ext(server, "GET", "/task-grants", alice).json}
    assert grants["agent:" + sub]["constraints"]["paths"] == ["src/**"]          # the orchestrator's limits too

    # the orchestrator takes back what it handed down; nobody else's task token may
    _, reviewer_own = bind(server, alice, "reviewer")
    handed = hand_down(server, w["token"], reviewer_own, scope="read_code").json
    assert ext(server, "DELETE", "/task-grants/" + handed["grant"], token).status == 404           # not the tester's
    assert ext(server, "DELETE", "/task-grants/" + handed["grant"], w["token"]).status == 204
    assert api(server, "GET", "/repos/alice/payments", handed["access_token"]).status == 401
    assert api(server, "GET", "/repos/alice/payments", token).status == 200                       # the other stays

    # revoking the orchestrator's grant cuts the sub-agent at once
    assert ext(server, "DELETE", "/task-grants/" + w["grant"]["id"], alice).status == 204
    assert api(server, "GET", "/repos/alice/payments", token).status == 401
    assert git(str(tmp_path), "ls-remote", remote(server, "alice/payments", token), check=False).returncode != 0


def test_a_stranger_needs_the_humans_yes_and_the_chain_has_an_end(server):
    w = grant_a_task(server, "task:payments", ["read_code"], {})
    alice = w["alice"]
    bob = server.add_user("bob")
    stranger, stranger_own, _ = server.add_agent("stranger")          # bound to nobody (bob's would do as well)
    asked = hand_down(server, w["token"], stranger_own)
    assert asked.status == 403 and asked.json["error"] == "access_denied" and asked.json["approval_id"], asked
    assert "is not bound to alice" in asked.json["error_description"]
    assert ext(server, "POST", "/approvals/%s/approve" % asked.json["approval_id"], bob, {}).status == 404
    assert ext(server, "POST", "/approvals/%s/approve" % asked.json["approval_id"], alice, {}).status == 200
    handed = hand_down(server, w["token"], stranger_own)
    assert handed.status == 200, handed
    assert api(server, "GET", "/repos/alice/payments", handed.json["access_token"]).status == 200

    # a link below a link below a link, and no further
    token = w["token"]
    for depth, name in enumerate(("one", "two", "three")):
        _, own = bind(server, alice, name)
        step = hand_down(server, token, own)
        if depth < 2:
            assert step.status == 200, step
            token = step.json["access_token"]
        else:
            assert step.status == 403 and "delegation stops at 3" in step.json["error_description"], step

    assert hand_down(server, w["token"], w["token"]).json["error"] == "invalid_grant"        # not an agent's own
    assert hand_down(server, w["token"], w["agent"]).json["error"] == "invalid_grant"        # not to itself
    assert hand_down(server, w["token"], stranger_own, resource="repo:alice/other").json["error"] == "invalid_target"
    assert hand_down(server, w["token"], stranger_own, scope="push_branch").json["error"] == "invalid_scope"
    _, later = bind(server, alice, "later")
    forever = hand_down(server, w["token"], later, expires_in="9" * 40)              # no longer than the grant above
    assert forever.status == 200 and forever.json["expires_in"] <= 3600, forever
    # the site's admins (or an organization's owners, for its repositories) may forbid it outright
    root = server.add_user("root", admin=True)
    assert ext(server, "PUT", "/site/agent-policy", root, {"deny": ["delegate_task"]}).status == 200
    refused = hand_down(server, w["token"], stranger_own)
    assert refused.status == 403 and "no agent may delegate_task" in refused.json["error_description"], refused
