"""The agent story, told by each published client end to end with nothing done behind its back: an agent
registers itself, alice invites it and it consents, alice grants it a task on alice/payments, it mints a
task token, branches, commits and opens a pull request, its merge waits for alice's approval, then
merges; alice reads what it did. githubkit parses every typed answer into GitHub's current models,
PyGithub into its objects, octokit/rest.js into its own; agentgit's extension endpoints go through each
client's generic request."""
import json
import os
import shutil
import subprocess

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
NODE_DIR = os.path.join(HERE, "..", ".venv", "node")
GRANT = {"task": "task:fix-payments", "resources": ["repo:alice/payments"],
         "actions": ["read_code", "create_branch", "push_branch", "open_pr", "merge_pr"],
         "constraints": {"branch_prefix": "agent/", "requires_approval": ["merge_pr"]}}


def check_activity(rows, login):
    """alice's view of what her agent did: the merge asked for approval, then went through on it."""
    merges = [(r["decision"], r["task"], r["delegator"]) for r in rows if r["action"] == "merge_pr" and r["actor"] == login]
    assert ("needs_approval", "task:fix-payments", "alice") in merges and \
        ("allow", "task:fix-payments", "alice") in merges, merges


def test_githubkit_tells_the_agent_story(server):
    from githubkit import GitHub, TokenAuthStrategy, UnauthAuthStrategy
    from githubkit.exception import RequestFailed

    def kit(token=None):
        return GitHub(TokenAuthStrategy(token) if token else UnauthAuthStrategy(), base_url=server.url + "/api/v3/",
                      auto_retry=False)

    def ext(client, method, path, body=None):
        return client.request(method, server.url + "/api/ext/v1" + path, json=body).json()
    alice = kit(server.add_user("alice"))
    agent = ext(kit(), "POST", "/agents", {"prefix_login": "fixer"})
    alice.rest.repos.create_for_authenticated_user(name="payments", private=True, auto_init=True)
    invite = ext(alice, "POST", "/agent-invites", {"repo_grants": [{"repo_full_name": "alice/payments",
                                                                    "permission": "push"}]})
    bot = kit(agent["token"])
    ext(bot, "POST", "/agent-bindings/confirm", {"invite_token": invite["invite_token"]})
    grant = ext(alice, "POST", "/task-grants", dict(GRANT, agent="agent:" + agent["login"], delegator="user:alice"))
    task = kit(ext(bot, "POST", "/task-grants/%s/tokens" % grant["id"])["token"])
    assert task.rest.users.get_authenticated().parsed_data.login == agent["login"]
    main = task.rest.git.get_ref("alice", "payments", "heads/main").parsed_data.object_.sha
    task.rest.git.create_ref("alice", "payments", ref="refs/heads/agent/fix", sha=main)
    task.rest.repos.create_or_update_file_contents("alice", "payments", "fix.txt", message="fix", content="Zml4ZWQK",
                                                   branch="agent/fix")
    pull = task.rest.pulls.create("alice", "payments", head="agent/fix", base="main", title="Fix").parsed_data
    with pytest.raises(RequestFailed) as waiting:
        task.rest.pulls.merge("alice", "payments", pull.number)
    answer = waiting.value.response.json()
    assert waiting.value.response.status_code == 403 and answer["approval_id"].startswith("ap_")
    ext(alice, "POST", "/approvals/%s/approve" % answer["approval_id"])
    assert task.rest.pulls.merge("alice", "payments", pull.number).parsed_data.merged is True
    assert alice.rest.pulls.get("alice", "payments", pull.number).parsed_data.merged is True
    check_activity(ext(alice, "GET", "/agents/%s/activity?per_page=100" % agent["login"]), agent["login"])


def test_pygithub_tells_the_agent_story(server):
    import github

    def client(token=None):
        return github.Github(auth=github.Auth.Token(token) if token else None, base_url=server.url + "/api/v3")

    def ext(client, method, path, body=None):
        return client.requester.requestJsonAndCheck(method, server.url + "/api/ext/v1" + path, input=body)[1]
    alice = client(server.add_user("alice"))
    agent = ext(client(), "POST", "/agents", {"prefix_login": "fixer"})
    alice.get_user().create_repo("payments", private=True, auto_init=True)
    invite = ext(alice, "POST", "/agent-invites", {"repo_grants": [{"repo_full_name": "alice/payments",
                                                                    "permission": "push"}]})
    bot = client(agent["token"])
    ext(bot, "POST", "/agent-bindings/confirm", {"invite_token": invite["invite_token"]})
    grant = ext(alice, "POST", "/task-grants", dict(GRANT, agent="agent:" + agent["login"], delegator="user:alice"))
    task = client(ext(bot, "POST", "/task-grants/%s/tokens" % grant["id"], {})["token"])
    repo = task.get_repo("alice/payments")
    repo.create_git_ref("refs/heads/agent/fix", repo.get_branch("main").commit.sha)
    repo.create_file("fix.txt", "fix", "fixed\n", branch="agent/fix")
    pull = repo.create_pull(base="main", head="agent/fix", title="Fix", body="")
    with pytest.raises(github.GithubException) as waiting:
        pull.merge()
    assert waiting.value.status == 403
    ext(alice, "POST", "/approvals/%s/approve" % waiting.value.data["approval_id"], {})
    assert pull.merge().merged is True
    check_activity(ext(alice, "GET", "/agents/%s/activity?per_page=100" % agent["login"]), agent["login"])


def test_octokit_tells_the_agent_story(server):
    if shutil.which("node") is None or not os.path.isdir(os.path.join(NODE_DIR, "node_modules", "@octokit", "rest")):
        pytest.skip("node or @octokit/rest is not installed (make test installs it with npm)")
    shutil.copy(os.path.join(HERE, "octokit_story.mjs"), NODE_DIR)
    proc = subprocess.run(["node", "octokit_story.mjs", server.url, server.add_user("alice"), json.dumps(GRANT)],
                          cwd=NODE_DIR, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout)
    assert (seen["waiting"], seen["merged"]) == (403, True)
    check_activity(seen["activity"], seen["login"])
