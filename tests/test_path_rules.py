"""A task grant's path rules: ``paths`` the agent may change and ``requires_approval_paths`` a human
approves first, judged on every commit a ref move brings (not only the tip), wherever content changes:
git pushes on either engine, the contents and git-data APIs, merges, and the MCP tools."""
import asyncio
import time
import base64

import pytest

import agentgit

from conftest import alice_and_her_agent, api, commit_file, ext, git, grant_a_task, mcp_client, remote

PATHS = {"paths": ["services/payments/**"], "requires_approval_paths": [".github/workflows/**"],
         "branch_prefix": "agent/"}
ACTIONS = ["read_code", "create_branch", "push_branch", "open_pr", "merge_pr", "write_objects"]


def audit(server, action):
    return server.app.store.all("SELECT decision, reasons, side_effect FROM audit WHERE action = ? ORDER BY id", action)


def test_a_commit_before_the_tip_that_leaves_the_paths_refuses_the_push(engine_server, tmp_path):
    """The second-to-last commit touches docs/, the tip only services/payments/: the push is refused
    by name (ref, commit, path) on either engine; the same work without that commit lands, and so does
    the agent's branch once it merges main, whose commits were not the agent's to judge. A merge that
    slips a change of its own in is a commit like any other."""
    server = engine_server
    w = grant_a_task(server, "task:payments", ACTIONS, PATHS)
    work = str(tmp_path / "w")
    git(str(tmp_path), "clone", "-q", remote(server, "alice/payments", w["token"]), work)
    base = git(work, "rev-parse", "HEAD").stdout.strip()
    commit_file(work, "services/payments/a.py", "a = 1\n")
    stray = commit_file(work, "docs/notes.md", "the agent was here\n")
    commit_file(work, "services/payments/b.py", "b = 2\n")
    proc = git(work, "push", "origin", "HEAD:refs/heads/agent/fix", check=False)
    assert proc.returncode != 0
    assert "commit %s changes docs/notes.md (refs/heads/agent/fix)" % stray in proc.stderr, proc.stderr
    assert "refs/heads/agent/fix" not in git(work, "ls-remote", "origin").stdout
    (refusal,) = audit(server, "change_paths")
    assert refusal["decision"] == "deny" and "allows changes to services/payments/** only" in refusal["reasons"]
    push = audit(server, "create_branch")[-1]
    assert push["decision"] == "deny" and "docs/notes.md" in push["reasons"] and "not moved" in push["side_effect"]

    git(work, "reset", "-q", "--hard", base)
    commit_file(work, "services/payments/a.py", "a = 1\n")
    git(work, "push", "-q", "origin", "HEAD:refs/heads/agent/fix")
    assert [r["decision"] for r in audit(server, "change_paths")] == ["deny", "allow"]

    # alice moves main on meanwhile (README.md, outside the agent's paths); the agent merges it in
    human = str(tmp_path / "alice")
    git(str(tmp_path), "clone", "-q", remote(server, "alice/payments", w["alice"]), human)
    commit_file(human, "README.md", "# payments, by alice\n")
    git(human, "push", "-q", "origin", "HEAD:main")
    git(work, "pull", "-q", "--no-rebase", "--no-edit", "origin", "main")
    git(work, "push", "-q", "origin", "HEAD:refs/heads/agent/fix")

    commit_file(human, "services/payments/c.py", "c = 3\n")
    git(human, "push", "-q", "origin", "HEAD:main")
    git(work, "fetch", "-q", "origin", "main")
    git(work, "merge", "-q", "--no-commit", "origin/main")
    commit_file(work, "setup.cfg", "[evil]\n", message="Merge main")       # the merge's own change
    assert len(git(work, "log", "-1", "--format=%P").stdout.split()) == 2
    proc = git(work, "push", "origin", "HEAD:refs/heads/agent/fix", check=False)
    assert proc.returncode != 0 and "changes setup.cfg" in proc.stderr, proc.stderr


def test_a_workflow_change_waits_for_alice_and_then_lands(server, tmp_path):
    """A push touching .github/workflows/ becomes an approval request that lists the files; once alice
    approves, the same push lands and spends the approval; another content needs another yes."""
    w = grant_a_task(server, "task:payments", ACTIONS, PATHS)
    work = str(tmp_path / "w")
    git(str(tmp_path), "clone", "-q", remote(server, "alice/payments", w["token"]), work)
    commit_file(work, "services/payments/a.py", "a = 1\n")
    commit_file(work, ".github/workflows/ci.yml", "on: push\n")
    proc = git(work, "push", "origin", "HEAD:refs/heads/agent/ci", check=False)
    assert proc.returncode != 0 and "requires_approval_paths" in proc.stderr and "waits for alice" in proc.stderr, proc.stderr
    (waiting,) = ext(server, "GET", "/approvals", w["alice"]).json
    assert waiting["action"] == "change_paths" and ".github/workflows/ci.yml" in waiting["subject"]
    assert "refs/heads/agent/ci" not in git(work, "ls-remote", "origin").stdout
    assert ext(server, "POST", "/approvals/%s/approve" % waiting["id"], w["alice"], {}).status == 200
    git(work, "push", "-q", "origin", "HEAD:refs/heads/agent/ci")
    assert ext(server, "GET", "/approvals/" + waiting["id"], w["token"]).json["state"] == "used"
    assert [r["decision"] for r in audit(server, "change_paths")] == ["needs_approval", "allow"]
    assert waiting["id"] in audit(server, "change_paths")[-1]["reasons"]

    commit_file(work, ".github/workflows/ci.yml", "on: [push, pull_request]\n")
    proc = git(work, "push", "origin", "HEAD:refs/heads/agent/ci", check=False)
    assert proc.returncode != 0 and "waits for alice" in proc.stderr


def test_the_apis_and_merges_judge_the_same_paths(server):
    """The contents API, the git-data API and a pull request's merge move refs on the server: each is
    judged on what it brings, as a push is."""
    rules = {key: PATHS[key] for key in ("paths", "requires_approval_paths")}        # main itself, this time
    w = grant_a_task(server, "task:payments", ACTIONS, rules)
    token, repo = w["token"], "/repos/alice/payments"
    put = lambda path, branch="main": api(server, "PUT", repo + "/contents/" + path, token, {  # noqa: E731
        "message": "m", "content": base64.b64encode(b"x = 1\n").decode(), "branch": branch})
    assert put("services/payments/x.py").status == 201
    refused = put("docs/x.md")
    assert refused.status == 403 and "changes docs/x.md (refs/heads/main)" in refused.json["message"], refused
    asked = put(".github/workflows/x.yml")
    assert asked.status == 403 and asked.json["approval_id"].startswith("ap_"), asked
    assert ext(server, "POST", "/approvals/%s/approve" % asked.json["approval_id"], w["alice"], {}).status == 200
    assert put(".github/workflows/x.yml").status == 201          # the same file, the same content: approved
    assert [r["decision"] for r in audit(server, "change_paths")] == ["allow", "deny", "needs_approval", "allow"]

    main = api(server, "GET", repo + "/git/ref/heads/main", token).json["object"]["sha"]
    main_tree = api(server, "GET", repo + "/git/commits/" + main, token).json["tree"]["sha"]
    tree = api(server, "POST", repo + "/git/trees", token, {"base_tree": main_tree, "tree": [
        {"path": "Makefile", "mode": "100644", "type": "blob", "content": "all:\n"}]}).json["sha"]
    commit = api(server, "POST", repo + "/git/commits", token, {"message": "m", "tree": tree, "parents": [main]})
    moved = api(server, "PATCH", repo + "/git/refs/heads/main", token, {"sha": commit.json["sha"]})
    assert moved.status == 403 and "changes Makefile" in moved.json["message"], moved

    # alice's own branch touches docs/; the agent may not merge it in
    alice = w["alice"]
    api(server, "POST", repo + "/git/refs", alice, {"ref": "refs/heads/docs", "sha": main})
    api(server, "PUT", repo + "/contents/docs/guide.md", alice, {"message": "d", "branch": "docs",
                                                                  "content": base64.b64encode(b"guide\n").decode()})
    pull = api(server, "POST", repo + "/pulls", alice, {"title": "Docs", "head": "docs", "base": "main"}).json
    merged = api(server, "PUT", repo + "/pulls/%d/merge" % pull["number"], token, {})
    assert merged.status == 403 and "changes docs/guide.md" in merged.json["message"], merged
    assert api(server, "PUT", repo + "/pulls/%d/merge" % pull["number"], alice, {}).status == 200


def test_mcp_tools_are_judged_and_wait_for_approval_by_elicitation(server):
    """GitHub's MCP tool names through the MCP SDK: a file outside the paths is a tool error naming it;
    a workflow file waits for alice by URL elicitation and lands on the SDK's retry."""
    pytest.importorskip("mcp", reason="make test installs the mcp SDK")
    w = grant_a_task(server, "task:payments", ACTIONS, PATHS)
    asked = []

    async def scenario():
        async with mcp_client(server, w["token"], approve_as=w["alice"], asked=asked) as c:
            repo = {"owner": "alice", "repo": "payments"}
            assert not (await c.call_tool("create_branch", dict(repo, branch="agent/mcp"))).is_error
            outside = await c.call_tool("create_or_update_file", dict(repo, path="docs/x.md", content="x",
                                                                      message="m", branch="agent/mcp"))
            assert outside.is_error and "changes docs/x.md" in " ".join(c.text for c in outside.content)
            files = [{"path": "services/payments/p.py", "content": "p"}, {"path": ".github/workflows/w.yml",
                                                                          "content": "on: push"}]
            pushed = await c.call_tool("push_files", dict(repo, branch="agent/mcp", files=files, message="m"))
            assert not pushed.is_error, pushed

    asyncio.run(scenario())
    assert len(asked) == 1
    landed = api(server, "GET", "/repos/alice/payments/contents/.github/workflows/w.yml?ref=agent/mcp", w["token"])
    assert landed.status == 200 and base64.b64decode(landed.json["content"]) == b"on: push"


def test_path_rules_are_checked_when_granted(server):
    alice, login, _ = alice_and_her_agent(server)
    for bad in ("docs/**", ["x" * 300], [""], [None], ["a"] * 101):
        r = ext(server, "POST", "/task-grants", alice, {"agent": "agent:" + login, "task": "task:t",
                                                        "resources": ["repo:alice/payments"], "actions": ["read_code"],
                                                        "constraints": {"paths": bad}})
        assert r.status == 422 and "constraints.paths is a list" in r.json["errors"][0]["message"], (bad, r)


@pytest.mark.parametrize("pattern, path, matches", [
    ("services/payments/**", "services/payments/a/b.py", True), ("services/payments/**", "services/paymentsx/a", False),
    ("docs", "docs/guide/a.md", True), ("docs", "docs.md", False),                 # a directory covers what it holds
    ("*.md", "README.md", True), ("*.md", "docs/a.md", False), ("**/*.md", "docs/a.md", True),
    ("**/*.md", "a.md", True), ("a?c", "abc", True), ("a?c", "a/c", False), ("a.b", "axb", False),
    ("src/**/test", "src/test", True), ("src/**/test", "src/a/b/test", True)])
def test_how_a_path_glob_reads(pattern, path, matches):
    assert agentgit.path_matches([pattern], path) is matches


def test_a_glob_costs_no_more_than_the_path_it_reads():
    """Globs are the delegator's, paths the agent's: neither can make the matcher backtrack without end."""
    started = time.monotonic()
    assert not agentgit.path_matches(["*a*a*a*a*a*a*a*a*a*a*a*b", "**/*a*a*a*a*a*a*c/**/x"], "a" * 5000)
    assert not agentgit.path_matches(["**/**/**/**/**/**/z"], "/".join("a" * 2000))
    assert time.monotonic() - started < 1
