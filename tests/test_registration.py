"""Agent registration: agent-git-service's contract, rate limit, closed registration, all-or-nothing."""
import os
import re

import pytest

import agentgit
from conftest import CLI, api, ext, git, patch_everywhere, remote


def test_register_returns_login_token_and_private_repo(server, tmp_path):
    r = ext(server, "POST", "/agents", None, {"prefix_login": "coder", "default_repo_name": "workspace"})
    assert r.status == 201
    assert re.fullmatch(r"coder-[0-9a-f]{6}", r.json["login"])
    assert r.json["repo_full_name"] == r.json["login"] + "/workspace"
    token = r.json["token"]
    repo = api(server, "GET", "/repos/" + r.json["repo_full_name"], token).json
    assert repo["private"] is True and repo["default_branch"] == "main" and repo["permissions"]["admin"]
    assert api(server, "GET", "/repos/" + r.json["repo_full_name"]).status == 404     # private to others
    commits = api(server, "GET", "/repos/%s/commits" % r.json["repo_full_name"], token).json
    assert [c["commit"]["message"] for c in commits] == ["Initial commit"]
    work = str(tmp_path / "w")
    git(str(tmp_path), "clone", "-q", remote(server, r.json["repo_full_name"], token), work)
    assert sorted(os.listdir(work)) == [".git", "README.md"]


def test_bad_prefixes_and_names(server):
    for body in ({"prefix_login": "Coder"}, {"prefix_login": "-x"}, {"prefix_login": "a" * 33},
                 {"prefix_login": "ok", "default_repo_name": "../../etc"}, {"prefix_login": "ok",
                                                                            "default_repo_name": "x.git"},
                 {"prefix_login": 7}, {}):
        r = ext(server, "POST", "/agents", None, body)
        assert r.status == 422 and r.json["message"] == "Validation Failed", body
    r = ext(server, "POST", "/agents", None, raw_body=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status == 400 and r.json["message"] == "Problems parsing JSON"


def test_rate_limited_per_address(tmp_path):
    srv = agentgit.make_server(tmp_path / "d", port=0, registration_limit=2, registration_window=60).start()
    try:
        assert [ext(srv, "POST", "/agents", None, {"prefix_login": "a"}).status for _ in range(2)] == [201, 201]
        r = ext(srv, "POST", "/agents", None, {"prefix_login": "a"})
        assert r.status == 429 and 0 < int(r.headers["retry-after"]) <= 61
    finally:
        srv.stop()


def test_closed_registration_is_403(tmp_path):
    srv = agentgit.make_server(tmp_path / "d", port=0, registration="closed").start()
    try:
        r = ext(srv, "POST", "/agents", None, {"prefix_login": "a"})
        assert r.status == 403 and "closed" in r.json["message"]
        assert srv.app.store.one("SELECT COUNT(*) AS n FROM accounts WHERE kind = 'agent'")["n"] == 0
    finally:
        srv.stop()


def test_nothing_half_created_when_a_step_fails(server, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError("disk full")
    patch_everywhere(monkeypatch, "init_repository", broken)
    r = ext(server, "POST", "/agents", None, {"prefix_login": "doomed"})
    assert r.status == 500 and r.json == {"message": "Server Error", "documentation_url": agentgit.DOCS_URL}
    store = server.app.store
    assert not [r for r in store.all("SELECT login FROM accounts") if r["login"].startswith("doomed-")]
    assert store.one("SELECT COUNT(*) AS n FROM repos")["n"] == 0
    assert store.one("SELECT COUNT(*) AS n FROM tokens WHERE kind = 'agent'")["n"] == 0
    assert [d for d in os.listdir(server.app.repos_dir)] == []


@pytest.mark.parametrize("prefix", ["coder", "a-b-c"])
def test_cli_agent_add_prints_token_last(tmp_path, prefix):
    import subprocess
    agentgit.Installation(agentgit.Config(data_dir=str(tmp_path / "d")))       # the data a server made
    out = subprocess.run([*CLI, "agent", "add", prefix, "--data", str(tmp_path / "d")],
                         capture_output=True, text=True, check=True).stdout.strip().split("\n")
    assert out[-1].startswith("aga_")
    srv = agentgit.make_server(tmp_path / "d", port=0).start()
    try:
        assert api(srv, "GET", "/user", out[-1]).json["login"].startswith(prefix + "-")
    finally:
        srv.stop()


def test_a_harness_registers_fifty_agents_as_the_operator_allows(tmp_path, new_database):
    """`serve --registration-limit 0` lifts the per-address limit; with the default one, a site admin's
    token registers past it (and past closed registration), anonymous callers still may not."""
    from conftest import CLI
    import subprocess
    parsed = agentgit.build_parser().parse_args(["serve", "--registration-limit", "0"])
    srv = agentgit.make_server(tmp_path / "open", port=0, registration_limit=parsed.registration_limit).start()
    try:
        assert {ext(srv, "POST", "/agents", None, {"prefix_login": "h"}).status for _ in range(50)} == {201}
    finally:
        srv.stop()
    srv = agentgit.make_server(tmp_path / "default", port=0, registration="closed", database=new_database()).start()
    try:
        admin = srv.admin[1]
        assert {ext(srv, "POST", "/agents", admin, {"prefix_login": "h"}).status for _ in range(25)} == {201}
        assert ext(srv, "POST", "/agents", None, {"prefix_login": "h"}).status == 403
    finally:
        srv.stop()
    srv = agentgit.make_server(tmp_path / "limited", port=0, database=new_database()).start()
    try:
        assert [ext(srv, "POST", "/agents", None, {"prefix_login": "h"}).status for _ in range(21)][-2:] == [201, 429]
        alice = srv.add_user("alice")           # not an admin: counted as anyone is
        refused = ext(srv, "POST", "/agents", alice, {"prefix_login": "h"})
        assert refused.status == 429 and "site admin" in refused.json["message"]
    finally:
        srv.stop()
    wrong = subprocess.run([*CLI, "serve", "--registration-limit", "-1", "--data", str(tmp_path / "x")],
                           capture_output=True, text=True)
    assert wrong.returncode != 0 and "0 for no limit" in wrong.stderr and not (tmp_path / "x").exists()
