"""GitHub's Actions toolkit, unchanged, as an Action runs it on a pull_request event: @actions/github's context
read from the event file and GITHUB_* variables a runner sets, getOctokit with the throttling and retry
plugins, @octokit/graphql on its own. Skipped where make test could not install them with npm."""
import json
import os
import shutil
import subprocess

import pytest

from conftest import alice_and_her_agent, api, commit_file, ext, git, remote, sweep

pytestmark = sweep        # (a slow end-to-end walk: once, against the single file)

HERE = os.path.dirname(os.path.abspath(__file__))
NODE_DIR = os.path.join(HERE, "..", ".venv", "node")     # where make test installs the toolkit


def run_action(server, token, event, tmp_path):
    """The Action's script with a runner's environment: the event payload in a file, GITHUB_* set."""
    if shutil.which("node") is None or not os.path.isdir(os.path.join(NODE_DIR, "node_modules", "@actions", "github")):
        pytest.skip("node or @actions/github is not installed (make test installs them with npm)")
    shutil.copy(os.path.join(HERE, "actions_toolkit.mjs"), NODE_DIR)
    event_path = tmp_path / "event.json"
    event_path.write_text(json.dumps(event))
    pull = event["pull_request"]
    env = dict(os.environ, GITHUB_EVENT_NAME="pull_request", GITHUB_EVENT_PATH=str(event_path),
               GITHUB_REPOSITORY=event["repository"]["full_name"], GITHUB_SHA=pull["merge_commit_sha"] or pull["head"]["sha"],
               GITHUB_REF="refs/pull/%d/merge" % pull["number"], GITHUB_SERVER_URL=server.url,
               GITHUB_API_URL=server.url + "/api/v3", GITHUB_GRAPHQL_URL=server.url + "/api/graphql",
               GITHUB_ACTOR=event["sender"]["login"], GITHUB_WORKFLOW="review", GITHUB_RUN_ID="1")
    proc = subprocess.run(["node", "actions_toolkit.mjs", token], cwd=NODE_DIR, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def test_an_action_on_a_pull_request_event_run_by_an_agent(server, tmp_path):
    """alice's review bot is an agent on a task grant that names what the Action does (no merging, no
    pushing); it reads the pull request, reports a check, a status, a label, a comment with a reaction, a
    review and a preview deployment, and reads them back over REST and GraphQL. Each landed as the agent."""
    alice, login, agent = alice_and_her_agent(server, ("app",))
    work = str(tmp_path / "w")
    git(str(tmp_path), "clone", "-q", remote(server, "alice/app", alice), work)
    git(work, "checkout", "-q", "-b", "feature")
    for n in range(3):
        commit_file(work, "lib.js" if n == 0 else "lib%d.js" % n, "export const x = %d;\n" % n)
    git(work, "push", "-q", "origin", "feature")
    pull = api(server, "POST", "/repos/alice/app/pulls", alice, {"title": "Lib", "head": "feature", "base": "main"}).json
    api(server, "POST", "/repos/alice/app/labels", alice, {"name": "checked", "color": "00ff00"})
    grant = ext(server, "POST", "/task-grants", alice, {
        "agent": "agent:" + login, "delegator": "user:alice", "task": "task:review-bot", "resources": ["repo:alice/app"],
        "actions": ["read_code", "write_status", "triage_issue", "comment", "review_pr", "deploy"], "constraints": {}}).json
    token = ext(server, "POST", "/task-grants/%s/tokens" % grant["id"], agent, {}).json["token"]
    event = {"action": "opened", "number": pull["number"], "pull_request": pull,
             "repository": api(server, "GET", "/repos/alice/app", alice).json,
             "sender": api(server, "GET", "/users/alice", alice).json}
    seen = run_action(server, token, event, tmp_path)
    assert (seen["event"], seen["action"], seen["repo"], seen["number"]) == ("pull_request", "opened", "alice/app", 1)
    assert seen["files"] == ["lib.js", "lib1.js", "lib2.js"] and seen["commits"] == 3 and seen["diff"] is True
    assert seen["readme"] == "# app\n" and seen["head"] == pull["head"]["sha"]
    assert seen["comments"] == ["Lint passed."] and seen["combined"] == "success"
    assert seen["checks"] == ["lint:success"] and seen["deployment"] == "preview"
    assert seen["graphql"] is True and seen["rollup"] == ["build", "lint"]
    assert seen["rateLimit"] == 5000 and seen["throttled"] == []
    # what landed, and whose it is
    comment = api(server, "GET", "/repos/alice/app/issues/1/comments", alice).json[0]
    assert comment["user"]["login"] == login and comment["reactions"]["rocket"] == 1
    assert [label["name"] for label in api(server, "GET", "/repos/alice/app/issues/1/labels", alice).json] == ["checked"]
    review = api(server, "GET", "/repos/alice/app/pulls/1/reviews", alice).json[0]
    assert (review["user"]["login"], review["state"]) == (login, "COMMENTED")
    deployment = api(server, "GET", "/repos/alice/app/deployments", alice).json[0]
    assert deployment["creator"]["login"] == login and deployment["sha"] == pull["head"]["sha"]
    # the task named no merge: the same token cannot merge what it reviewed
    assert api(server, "PUT", "/repos/alice/app/pulls/1/merge", token, {}).status == 403
