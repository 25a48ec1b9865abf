"""Guardrails for agents: what an organization's owners, or the site's admins, let no agent do whatever
a grant says. Safe defaults on a new installation; grants beyond them refused when made and cut, live,
when they tighten; actions and paths that always wait for a human; limits on what task tokens hold."""
import asyncio
import datetime
import importlib.util

import pytest

from conftest import api, call, commit_file, ext, git, mcp_client, remote

mcp = importlib.util.find_spec("mcp")

ACTIONS = ["read_code", "create_branch", "push_branch", "open_pr", "merge_pr", "open_issue"]


@pytest.fixture
def acme(server):
    """alice owns the organization acme and its repository acme/payments; her agent is bound to her with
    push on it and holds a task grant there; bob is a member who owns nothing."""
    alice = server.add_user("alice", password="pw")
    assert ext(server, "POST", "/user/orgs", alice, {"login": "acme"}).status == 201
    assert api(server, "POST", "/orgs/acme/repos", alice, {"name": "payments", "auto_init": True,
                                                             "private": True}).status == 201
    login, agent, _ = server.add_agent("coder")
    invite = ext(server, "POST", "/agent-invites", alice, {"repo_grants": [
        {"repo_full_name": "acme/payments", "permission": "push"}]}).json["invite_token"]
    assert ext(server, "POST", "/agent-bindings/confirm", agent, {"invite_token": invite}).status == 201

    def grant(actions=ACTIONS, **constraints):
        return ext(server, "POST", "/task-grants", alice, {"agent": "agent:" + login, "task": "task:payments",
                                                           "resources": ["repo:acme/payments"], "actions": actions,
                                                           "constraints": constraints})

    def token(actions=ACTIONS, **constraints):
        made = grant(actions, **constraints)
        assert made.status == 201, made
        return ext(server, "POST", "/task-grants/%s/tokens" % made.json["id"], agent, {}).json["token"]
    return {"alice": alice, "agent": agent, "login": login, "grant": grant, "token": token}


def test_a_new_installation_keeps_agents_from_deleting_protecting_and_managing_members(server, acme):
    policy = ext(server, "GET", "/site/agent-policy", acme["alice"]).json
    assert {"delete_repo", "manage_protection", "manage_team", "manage_org", "delegate_access"} <= set(policy["deny"])
    assert policy["set_by"] == "the site"
    shown = ext(server, "GET", "/policy?resource=repo:acme/payments", acme["alice"]).json
    assert shown["guardrails"][0]["deny"] == policy["deny"]
    assert any("delete_repo" in rule and "guardrails" in rule for rule in shown["rules"])
    refused = acme["grant"](["read_code", "manage_protection"])
    assert refused.status == 403 and "the site's agent policy lets no agent manage_protection" in refused.json["message"]
    assert server.app.store.one("SELECT COUNT(*) FROM audit WHERE action = 'grant_task' AND decision = 'deny' AND"
                                " reasons LIKE '%agent policy%'")[0] == 1
    # the site's admin lifts the defaults; then alice may give her agent the branch's protection
    admin = server.add_user("root", admin=True)
    assert ext(server, "PUT", "/site/agent-policy", acme["alice"], {}).status == 403      # not a site admin
    assert ext(server, "PUT", "/site/agent-policy", admin, {}).json["deny"] is None
    token = acme["token"](["read_code", "manage_protection"])
    protect = api(server, "PUT", "/repos/acme/payments/branches/main/protection", token, {
        "required_status_checks": None, "enforce_admins": True, "required_pull_request_reviews": None,
        "restrictions": None})
    assert protect.status == 200, protect


def test_a_guardrail_added_while_a_task_token_is_live_cuts_it_on_the_next_request(server, acme, tmp_path):
    token = acme["token"]()
    assert api(server, "POST", "/repos/acme/payments/issues", token, {"title": "found a bug"}).status == 201
    bob = server.add_user("bob")
    api(server, "PUT", "/orgs/acme/memberships/bob", acme["alice"], {"role": "member"})
    assert ext(server, "PUT", "/orgs/acme/agent-policy", bob, {"deny": ["open_issue"]}).status in (403, 404)
    put = ext(server, "PUT", "/orgs/acme/agent-policy", acme["alice"], {"deny": ["open_issue"]})
    assert put.status == 200 and put.json["set_by"] == "organization acme" and put.json["deny"] == ["open_issue"]
    cut = api(server, "GET", "/repos/acme/payments", token)
    assert cut.status == 403 and "is cut: organization acme's agent policy lets no agent open_issue" in cut.json[
        "message"], cut
    proc = git(str(tmp_path), "ls-remote", remote(server, "acme/payments", token), check=False)
    assert proc.returncode != 0

    async def through_mcp():
        async with mcp_client(server, token) as c:
            return await c.call_tool("list_branches", {"owner": "acme", "repo": "payments"})
    if mcp is not None:            # the MCP SDK's session does not even open
        with pytest.raises(BaseException, match="error"):
            asyncio.run(through_mcp())
        answer = call(server, "POST", "/mcp", token, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
        assert answer.status == 403 and "is cut" in answer.raw.decode(), answer
    refused = acme["grant"]()
    assert refused.status == 403 and "open_issue" in refused.json["message"]           # and none like it is made
    assert ext(server, "PUT", "/orgs/acme/agent-policy", acme["alice"], {}).status == 200
    assert api(server, "GET", "/repos/acme/payments", token).status == 200             # live both ways


def push_a_workflow(server, token, tmp_path, branch):
    """With ``token``: a clone of acme/payments, a commit of code pushed to ``branch``, then a commit of a
    workflow pushed there too: (the clone, that second push's git process)."""
    work = str(tmp_path / "w")
    git(str(tmp_path), "clone", "-q", remote(server, "acme/payments", token), work)
    commit_file(work, "app.py", "ok = 1\n")
    git(work, "push", "-q", "origin", "HEAD:refs/heads/" + branch)
    commit_file(work, ".github/workflows/ci.yml", "on: push\n")
    return work, git(work, "push", "origin", "HEAD:refs/heads/" + branch, check=False)


def test_what_always_waits_for_a_human(server, acme, tmp_path):
    """requires_approval and requires_approval_paths hold whatever the grant says: the merge and the
    workflow change wait for alice, through the task (an agent outside one is refused, told why)."""
    ext(server, "PUT", "/orgs/acme/agent-policy", acme["alice"], {"requires_approval": ["merge_pr"],
                                                                  "requires_approval_paths": [".github/workflows/**"]})
    token = acme["token"]()
    work, proc = push_a_workflow(server, token, tmp_path, "fix")
    assert proc.returncode != 0 and "organization acme's agent policy" not in proc.stderr
    assert ".github/workflows/ci.yml" in proc.stderr and "waits for alice" in proc.stderr, proc.stderr
    (waiting,) = ext(server, "GET", "/approvals", acme["alice"]).json
    ext(server, "POST", "/approvals/%s/approve" % waiting["id"], acme["alice"], {})
    git(work, "push", "-q", "origin", "HEAD:refs/heads/fix")
    pull = api(server, "POST", "/repos/acme/payments/pulls", token, {"title": "Fix", "head": "fix", "base": "main"})
    merge = api(server, "PUT", "/repos/acme/payments/pulls/%d/merge" % pull.json["number"], token, {})
    assert merge.status == 403 and "organization acme's agent policy gives merge_pr" in merge.json["message"], merge
    ext(server, "POST", "/approvals/%s/approve" % merge.json["approval_id"], acme["alice"], {})
    # the workflow file reaching main is a change of main's: a yes of its own (the merge's is kept meanwhile)
    merge = api(server, "PUT", "/repos/acme/payments/pulls/%d/merge" % pull.json["number"], token, {})
    assert merge.status == 403 and "refs/heads/main changes .github/workflows/ci.yml" in merge.json["message"], merge
    ext(server, "POST", "/approvals/%s/approve" % merge.json["approval_id"], acme["alice"], {})
    assert api(server, "PUT", "/repos/acme/payments/pulls/%d/merge" % pull.json["number"], token, {}).status == 200


def test_limits_on_what_a_task_token_holds(server, acme):
    """max_task_token_seconds shortens tokens; sender_constrained, runtimes and network_allowlist_max
    refuse grants that do not keep within them."""
    alice = acme["alice"]
    older = acme["token"]()                                        # minted for an hour, before the limit
    ext(server, "PUT", "/orgs/acme/agent-policy", alice, {"max_task_token_seconds": 300})
    cut = api(server, "GET", "/repos/acme/payments", older)
    assert cut.status == 403 and "task tokens live 300 seconds at most" in cut.json["message"], cut
    made = acme["grant"]()
    minted = ext(server, "POST", "/task-grants/%s/tokens" % made.json["id"], acme["agent"], {}).json
    left = datetime.datetime.fromisoformat(minted["expires_at"].replace("Z", "+00:00")) - datetime.datetime.now(
        datetime.timezone.utc)
    assert 200 < left.total_seconds() <= 300
    assert api(server, "GET", "/repos/acme/payments", minted["token"]).status == 200
    ext(server, "PUT", "/orgs/acme/agent-policy", alice, {"sender_constrained": True,
                                                          "runtimes": ["spiffe://acme.example/agents/*"],
                                                          "network_allowlist_max": ["api.acme.example"]})
    assert "sender_constrained" in acme["grant"]().json["message"]
    assert "runtime constraint within spiffe://acme.example/agents/*" in acme["grant"](
        sender_constrained=True).json["message"]
    beyond = acme["grant"](sender_constrained=True, runtime=["spiffe://acme.example/agents/coder"],
                           network_allowlist=["api.acme.example", "evil.example"])
    assert beyond.status == 403 and "not evil.example" in beyond.json["message"], beyond
    assert acme["grant"](sender_constrained=True, runtime=["spiffe://acme.example/agents/coder"],
                         network_allowlist=["api.acme.example"]).status == 201


@pytest.mark.parametrize("body, field", [({"deny": ["fly"]}, "deny"), ({"requires_approval": "merge_pr"}, None),
                                         ({"requires_approval_paths": [""]}, "requires_approval_paths"),
                                         ({"max_task_token_seconds": 10}, "max_task_token_seconds"),
                                         ({"runtimes": ["https://x"]}, "runtimes"), ({"denny": []}, "denny"),
                                         ({"network_allowlist_max": "x.example"}, "network_allowlist_max")])
def test_a_policy_that_does_not_read_is_refused(server, acme, body, field):
    r = ext(server, "PUT", "/orgs/acme/agent-policy", acme["alice"], body)
    assert r.status == 422 and r.json["message"] == "Validation Failed", r
    if field:
        assert field in r.json["errors"][0]["message"]


def test_an_agent_outside_a_task_does_not_change_what_waits_for_a_human(server, acme, tmp_path):
    """On an installation whose agents keep standing write, a path the organization gives to a human
    is still changed only through a task, whose approval a human can give."""
    from conftest import session_token, standing_write
    standing_write(server)
    ext(server, "PUT", "/orgs/acme/agent-policy", acme["alice"], {"requires_approval_paths": [".github/**"]})
    _, proc = push_a_workflow(server, session_token(server, acme["agent"], "acme/payments"), tmp_path, "standing")
    assert proc.returncode != 0 and "an agent makes them through a task grant" in proc.stderr, proc.stderr
