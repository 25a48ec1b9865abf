"""Task-first by default: the README's own example, end to end. alice invites her agent with push on
alice/payments, then grants it a task with a branch prefix and a merge that needs her approval. On a new
installation the task is the permission boundary whatever token the agent holds: its bootstrap token,
its agent session tokens (for the API, for the repository, for /mcp) and its task token change nothing
outside the task on REST, GraphQL, git or MCP. The refusal says what to do. `--agent-standing-access
write` (what an installation upgraded from before keeps) brings back the invite's standing push."""
import json
import os
import re

import pytest

import agentgit
from conftest import ROOT, api, call, commit_file, exchange, ext, git, remote, session_token


def readme_bodies():
    """The JSON bodies the README's "Bind an agent to a human" sends, by endpoint, as it writes them."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    block = next(b for b in readme.split("```") if "/api/ext/v1/agent-invites" in b and "task-grants" in b)
    return {endpoint: json.loads(body) for endpoint, body in re.findall(r"/api/ext/v1/([\w/-]+) \\\n\s+-d '(.*?)'",
                                                                          block, re.S)}


def readme_example(server, tmp_path):
    """The README's walkthrough: alice, alice/payments, an agent bound by an invite with push, a task
    grant with a branch prefix and merge_pr needing approval, and a pull request of alice's to merge."""
    bodies = readme_bodies()
    assert set(bodies) == {"agent-invites", "agent-bindings/confirm", "task-grants"}
    alice = server.add_user("alice")
    assert api(server, "POST", "/user/repos", alice, {"name": "payments", "private": True,
                                                      "auto_init": True}).status == 201
    login, agent, _ = server.add_agent("coder")
    invite = ext(server, "POST", "/agent-invites", alice, bodies["agent-invites"]).json["invite_token"]
    assert ext(server, "POST", "/agent-bindings/confirm", agent, {"invite_token": invite}).status == 201
    grant = ext(server, "POST", "/task-grants", alice, dict(bodies["task-grants"], agent="agent:" + login)).json
    work = str(tmp_path / "alice")
    git(str(tmp_path), "clone", "-q", remote(server, "alice/payments", alice), work)
    git(work, "checkout", "-q", "-b", "feature")
    commit_file(work, "feature.txt", "alice's\n")
    git(work, "push", "-q", "origin", "feature")
    pull = api(server, "POST", "/repos/alice/payments/pulls", alice, {"title": "feature", "head": "feature",
                                                                        "base": "main"}).json["number"]
    task = ext(server, "POST", "/task-grants/%s/tokens" % grant["id"], agent, {}).json["token"]
    return {"alice": alice, "login": login, "agent": agent, "grant": grant, "pull": pull, "task": task}


def changes(server, tmp_path, token, pull, name):
    """Every way the agent could change alice/payments outside its task with ``token``: (surface, answer)
    for a push to main over git, a file written on main over REST, the pull request merged over REST
    and over GraphQL."""
    work = str(tmp_path / name)
    git(str(tmp_path), "clone", "-q", remote(server, "alice/payments", token), work, check=False)
    pushed = None
    if (tmp_path / name).exists():
        commit_file(work, "agent.txt", "agent's\n")
        pushed = git(work, "push", "origin", "HEAD:main", check=False)
    written = api(server, "PUT", "/repos/alice/payments/contents/agent.txt", token, {
        "message": "by REST", "content": "YWdlbnQ=", "branch": "main"})
    merged = api(server, "PUT", "/repos/alice/payments/pulls/%d/merge" % pull, token, {})
    node = api(server, "GET", "/repos/alice/payments/pulls/%d" % pull, token).json or {}
    graphql = call(server, "POST", "/api/graphql", token, body={
        "query": "mutation($id: ID!) { mergePullRequest(input: {pullRequestId: $id}) { pullRequest { merged } } }",
        "variables": {"id": node.get("node_id", "PR_x")}})
    return {"git": pushed, "rest_write": written, "rest_merge": merged, "graphql": graphql}


def refused_everywhere(result, words):
    assert result["git"] is None or result["git"].returncode != 0, result["git"]
    assert result["git"] is None or words in result["git"].stderr, result["git"].stderr
    for surface in ("rest_write", "rest_merge"):
        answer = result[surface]
        assert answer.status in (403, 404), (surface, answer)
    graphql = result["graphql"].json
    assert graphql.get("errors") and not (graphql.get("data") or {}).get("mergePullRequest"), graphql


def mcp_merge(server, token, pull):
    """merge_pull_request over /mcp with ``token``: the tool's answer."""
    answer = call(server, "POST", "/mcp", token, body={
        "jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
            "name": "merge_pull_request", "arguments": {"owner": "alice", "repo": "payments", "pullNumber": pull}}},
        headers={"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2025-06-18"})
    return answer.status, answer.json


def test_the_readme_example_keeps_the_agent_inside_its_task_by_any_token(server, tmp_path):
    world = readme_example(server, tmp_path)
    agent, pull = world["agent"], world["pull"]
    hint = "alice grants it a task, POST /api/ext/v1/task-grants"
    # the bootstrap token changes nothing of alice's
    refused_everywhere(changes(server, tmp_path, agent, pull, "bootstrap"), "trade it for a short-lived token")
    # agent session tokens, for any repository and for alice/payments: read only, and the refusal says why
    for name, token in (("session", session_token(server, agent)),
                        ("repo-session", session_token(server, agent, "alice/payments"))):
        assert api(server, "GET", "/repos/alice/payments", token).json["permissions"]["push"] is False
        result = changes(server, tmp_path, token, pull, name)
        refused_everywhere(result, hint)
        assert hint in result["rest_merge"].json["message"]
    # over MCP, with a session token minted for /mcp
    mcp_session = exchange(server, subject_token=agent, resource=server.url + "/mcp").json["access_token"]
    status, answer = mcp_merge(server, mcp_session, pull)
    assert status == 200 and answer["result"]["isError"] and hint in json.dumps(answer)
    # the task token: its branch prefix only, and a merge waits for alice
    result = changes(server, tmp_path, world["task"], pull, "task")
    assert result["git"].returncode != 0 and "agent/task-123/" in result["git"].stderr
    assert result["rest_write"].status == 403 and result["rest_merge"].status == 403
    assert "approval" in result["rest_merge"].json["message"]
    git(str(tmp_path / "task"), "push", "-q", "origin", "HEAD:agent/task-123/fix")
    main = api(server, "GET", "/repos/alice/payments/branches/main", world["alice"]).json["commit"]["sha"]
    assert "agent.txt" not in [e["name"] for e in api(server, "GET", "/repos/alice/payments/contents/?ref=" + main,
                                                      world["alice"]).json]
    assert api(server, "GET", "/repos/alice/payments/pulls/%d" % pull, world["alice"]).json["merged"] is False
    # where access is shown, the cap is said: the collaborator list, alice's list of her agents
    collaborators = api(server, "GET", "/repos/alice/payments/collaborators", world["alice"]).json
    listed = next(c for c in collaborators if c["login"] == world["login"])
    assert listed["role_name"] == "write" and listed["standing_access"].startswith("read (outside a task")
    mine = ext(server, "GET", "/user/agents", world["alice"]).json
    assert mine[0]["standing_access"].startswith("read (outside a task")
    # what the agent may do, as the policy endpoint says it, names the cap
    policy = ext(server, "GET", "/policy?resource=repo:alice/payments", session_token(server, agent)).json
    assert policy["actions"]["push_branch"]["decision"] == "deny" and hint in policy["actions"]["push_branch"]["because"]


def test_standing_write_brings_back_the_invites_push(tmp_path):
    server = agentgit.make_server(tmp_path / "data", port=0, agent_standing_access="write").start()
    try:
        world = readme_example(server, tmp_path)
        token = session_token(server, world["agent"], "alice/payments")
        result = changes(server, tmp_path, token, world["pull"], "session")
        assert result["git"].returncode == 0, result["git"].stderr
        assert result["rest_merge"].status == 200
    finally:
        server.stop()


@pytest.mark.parametrize("chosen, said", [(None, "agent standing access: read"),
                                          ("write", "agent standing access: write")])
def test_the_choice_is_the_installations_and_said_at_start(tmp_path, chosen, said):
    """A new installation starts with read; an operator's choice is kept until changed."""
    app = agentgit.Installation(agentgit.Config(data_dir=str(tmp_path / "d"), agent_standing_access=chosen))
    assert app.agent_standing_access == (chosen or "read")
    again = agentgit.Installation(agentgit.Config(data_dir=str(tmp_path / "d")))
    assert again.agent_standing_access == (chosen or "read")
    assert agentgit.STANDING_ACCESS_BANNER[again.agent_standing_access].startswith(said)


def test_the_delegator_is_told_where_she_already_reads(server, tmp_path):
    """A merge waiting on alice's approval is a thread in her notifications (GitHub's reason
    approval_requested), which gh api notifications and github-mcp-server's list_notifications read."""
    world = readme_example(server, tmp_path)
    token = world["task"]
    work = str(tmp_path / "task")
    git(str(tmp_path), "clone", "-q", remote(server, "alice/payments", token), work)
    commit_file(work, "fix.txt", "fixed\n")
    git(work, "push", "-q", "origin", "HEAD:agent/task-123/fix")
    pull = api(server, "POST", "/repos/alice/payments/pulls", token, {"title": "Fix the bug", "head":
                                                                      "agent/task-123/fix", "base": "main"}).json
    assert api(server, "PUT", "/notifications", world["alice"], {}).status in (202, 205)
    assert api(server, "PUT", "/repos/alice/payments/pulls/%d/merge" % pull["number"], token, {}).status == 403
    threads = api(server, "GET", "/notifications", world["alice"]).json
    waiting = [t for t in threads if t["subject"]["title"] == "Fix the bug"]
    assert len(waiting) == 1 and waiting[0]["reason"] == "approval_requested" and waiting[0]["unread"] is True
    assert waiting[0]["subject"]["type"] == "PullRequest"


def test_pages_that_name_an_agent_say_for_whom_and_under_which_task(server, tmp_path):
    """The pull request an agent opened and the commit it pushed name it with the human it acted for and
    its task: a page shows the chain, not only a login."""
    from conftest import Browser
    world = readme_example(server, tmp_path)
    token = world["task"]
    work = str(tmp_path / "task")
    git(str(tmp_path), "clone", "-q", remote(server, "alice/payments", token), work)
    sha = commit_file(work, "fix.txt", "fixed\n")
    git(work, "push", "-q", "origin", "HEAD:agent/task-123/fix")
    pull = api(server, "POST", "/repos/alice/payments/pulls", token, {"title": "Fix", "head": "agent/task-123/fix",
                                                                      "base": "main"}).json
    review = ext(server, "POST", "/task-grants", world["alice"], {
        "agent": "agent:" + world["login"], "task": "task:review", "resources": ["repo:alice/payments"],
        "actions": ["read_code", "comment"]}).json
    reviewer = ext(server, "POST", "/task-grants/%s/tokens" % review["id"], world["agent"], {}).json["token"]
    assert api(server, "POST", "/repos/alice/payments/issues/%d/comments" % pull["number"], reviewer,
               {"body": "ready"}).status == 201
    subprocess_passwd(server)
    browser = Browser(server)
    browser.sign_in("alice", "long enough")
    chain = "(for alice, under task:fix-payment-bug)"
    _, page = browser.request("GET", "/alice/payments/pull/%d" % pull["number"])
    assert chain in page and "(for alice, under task:review)" in page          # the author, the comment's
    _, page = browser.request("GET", "/alice/payments/commit/" + sha)
    assert "by %s %s" % (world["login"], chain) in page


def subprocess_passwd(server):
    import subprocess
    from conftest import CLI
    subprocess.run([*CLI, "user", "passwd", "alice", "--password-stdin", "--data", server.app.config.data_dir],
                   input="long enough\n", text=True, check=True, capture_output=True)
