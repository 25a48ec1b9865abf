"""octokit/rest.js, unchanged, against agentgit (skipped where make test could not install it with npm)."""
import json
import os
import shutil
import subprocess

import pytest

from conftest import ext, grant_a_task

HERE = os.path.dirname(os.path.abspath(__file__))
NODE_DIR = os.path.join(HERE, "..", ".venv", "node")     # where make test installs @octokit/rest


def octokit(mode, server, token):
    if shutil.which("node") is None or not os.path.isdir(os.path.join(NODE_DIR, "node_modules", "@octokit", "rest")):
        pytest.skip("node or @octokit/rest is not installed (make test installs it with npm)")
    # node resolves packages from the script's own folder, so the script runs from there
    shutil.copy(os.path.join(HERE, "octokit_probe.mjs"), NODE_DIR)
    proc = subprocess.run(["node", "octokit_probe.mjs", mode, server.url, token], cwd=NODE_DIR, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_octokit_everyday_calls(server):
    seen = octokit("human", server, server.add_user("alice"))
    assert (seen["login"], seen["repo"], seen["missing"]) == ("alice", "alice/demo", 404)
    assert sorted(seen["titles"]) == ["one", "three", "two"]                   # paginate follows Link
    assert seen["graphql"] == {"viewer": {"login": "alice"}, "repository": {"issues": {"totalCount": 3}}}


def test_octokit_with_a_task_token(server):
    w = grant_a_task(server, "task:octokit", ["read_code", "create_branch", "push_branch", "open_pr"],
                     {"branch_prefix": "agent/", "requires_approval": ["merge_pr"]})
    seen = octokit("task", server, w["token"])
    assert (seen["login"], seen["other"], seen["pull"]) == (w["login"], 404, 1)
    assert seen["merge"]["status"] == 403 and "needs a human's approval" in seen["merge"]["message"]
    assert ext(server, "POST", "/approvals/%s/approve" % seen["merge"]["approval_id"], w["alice"], {}).status == 200
    assert octokit("merge", server, w["token"]) == {"merged": True}
