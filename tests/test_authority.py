"""Delegated authority: a task token carries its delegator's authority as it stands at each request,
and nothing of the agent's own standing access; when the delegator loses access, so does the token."""
from conftest import api, commit_file, ext, git, remote, session_token

SEED_ACTIONS = ["read_code", "create_branch", "push_branch", "open_pr"]
SEED_CONSTRAINTS = {"branch_prefix": "agent/task-123/", "requires_approval": ["merge_pr"]}


def bind(server, human, agent):
    """An invite that grants nothing, and the agent's consent: a binding, no standing access."""
    invite = ext(server, "POST", "/agent-invites", human, {}).json["invite_token"]
    assert ext(server, "POST", "/agent-bindings/confirm", agent, {"invite_token": invite}).status == 201


def grant_task(server, delegator, delegator_login, agent_login, agent, repo="alice/payments"):
    grant = ext(server, "POST", "/task-grants", delegator, {
        "agent": "agent:" + agent_login, "delegator": "user:" + delegator_login, "task": "task:fix-payment-bug",
        "resources": ["repo:" + repo], "actions": SEED_ACTIONS, "constraints": SEED_CONSTRAINTS})
    assert grant.status == 201, grant
    minted = ext(server, "POST", "/task-grants/%s/tokens" % grant.json["id"], agent, {})
    assert minted.status == 201, minted
    return grant.json, minted.json["token"]


def set_collaborator(server, admin, login, permission, repo="alice/payments"):
    assert api(server, "PUT", "/repos/%s/collaborators/%s" % (repo, login), admin,
               {"permission": permission}).status == 204


def test_a_task_grant_is_sufficient_without_standing_access(server, tmp_path):
    alice = server.add_user("alice")
    api(server, "POST", "/user/repos", alice, {"name": "payments", "private": True, "auto_init": True})
    login, agent, _ = server.add_agent("coder")
    bind(server, alice, agent)
    assert api(server, "GET", "/repos/alice/payments", agent).status == 404          # the agent itself: nothing
    grant, token = grant_task(server, alice, "alice", login, agent)
    # what the grant names, with alice's authority: read, branch under the prefix, pull request
    assert api(server, "GET", "/repos/alice/payments", token).status == 200
    work = str(tmp_path / "w")
    git(str(tmp_path), "clone", "-q", remote(server, "alice/payments", token), work)
    sha = commit_file(work, "fix.py", "ok = 1\n")
    proc = git(work, "push", "origin", "HEAD:refs/heads/agent/task-123/fix", "HEAD:refs/heads/main", check=False)
    assert "allows pushes to branches under agent/task-123/ only" in proc.stderr
    refs = git(work, "ls-remote", "origin").stdout
    assert "%s\trefs/heads/agent/task-123/fix" % sha in refs and "%s\trefs/heads/main" % sha not in refs
    pull = api(server, "POST", "/repos/alice/payments/pulls", token, {"title": "Fix", "head": "agent/task-123/fix",
                                                                      "base": "main"})
    assert pull.status == 201
    merge = api(server, "PUT", "/repos/alice/payments/pulls/1/merge", token, {})
    assert merge.status == 403 and "needs a human's approval" in merge.json["message"]
    # the audit row says whose authority it was, and which grant allowed it
    row = server.app.store.one("SELECT * FROM audit WHERE action = 'open_pr' AND decision = 'allow'")
    assert "alice (delegator of task grant %s) holds admin on repo:alice/payments (owner)" % grant["id"] in \
        row["reasons"] and "task grant %s allows open_pr" % grant["id"] in row["reasons"]
    # what the delegator asks of the policy endpoint matches what the token gets
    policy = ext(server, "GET", "/policy?resource=repo:alice/payments&grant=" + grant["id"], alice).json
    assert policy["actions"]["push_branch"]["decision"] == "allow"
    assert policy["actions"]["open_issue"]["decision"] == "deny"


def test_a_task_token_loses_what_its_delegator_loses_on_the_next_request(server, tmp_path):
    alice, bob = server.add_user("alice"), server.add_user("bob")
    root = server.add_user("root", admin=True)
    api(server, "POST", "/user/repos", alice, {"name": "payments", "private": True, "auto_init": True})
    login, agent, _ = server.add_agent("coder")
    bind(server, bob, agent)
    set_collaborator(server, alice, "bob", "push")
    set_collaborator(server, alice, login, "admin")          # the agent's own standing access: never used
    grant, token = grant_task(server, bob, "bob", login, agent)
    work = str(tmp_path / "w")
    git(str(tmp_path), "clone", "-q", remote(server, "alice/payments", token), work)
    commit_file(work, "fix.py", "ok = 1\n")
    git(work, "push", "-q", "origin", "HEAD:refs/heads/agent/task-123/one")
    # bob drops to read: the token can still read, and no longer push, whatever the agent holds itself
    set_collaborator(server, alice, "bob", "pull")
    commit_file(work, "fix.py", "ok = 2\n")
    proc = git(work, "push", "origin", "HEAD:refs/heads/agent/task-123/two", check=False)
    assert proc.returncode != 0 and "bob (delegator of task grant %s) has read" % grant["id"] in proc.stderr
    r = api(server, "POST", "/repos/alice/payments/git/refs", token,
            {"ref": "refs/heads/agent/task-123/three", "sha": git(work, "rev-parse", "HEAD").stdout.strip()})
    assert r.status == 403 and "create_branch needs write" in r.json["message"]
    assert api(server, "GET", "/repos/alice/payments", token).status == 200
    # bob removed: the repository is hidden from the token, on REST and git alike
    assert api(server, "DELETE", "/repos/alice/payments/collaborators/bob", alice).status == 204
    assert api(server, "GET", "/repos/alice/payments", token).status == 404
    assert git(work, "ls-remote", "origin", check=False).returncode != 0
    own = session_token(server, agent, "alice/payments")
    assert api(server, "GET", "/repos/alice/payments", own).status == 200            # the agent's own access stays
    # bob back with push, then suspended: the token carries a suspended authority, and is refused
    set_collaborator(server, alice, "bob", "push")
    assert api(server, "GET", "/repos/alice/payments", token).status == 200
    assert api(server, "PUT", "/users/bob/suspended", root).status == 204
    r = api(server, "GET", "/repos/alice/payments", token)
    assert r.status == 403 and "carries the authority of bob, who is suspended" in r.json["message"]
    row = server.app.store.one("SELECT * FROM audit WHERE decision = 'deny' ORDER BY id DESC")
    assert (row["actor"], row["task"]) == (login, "task:fix-payment-bug") and "bob" in row["reasons"]


def test_a_grant_its_delegator_could_not_use_is_refused_at_creation(server):
    alice, bob = server.add_user("alice"), server.add_user("bob")
    api(server, "POST", "/user/repos", alice, {"name": "payments", "private": True, "auto_init": True})
    login, agent, _ = server.add_agent("coder")
    bind(server, bob, agent)
    set_collaborator(server, alice, "bob", "pull")
    set_collaborator(server, alice, login, "admin")
    r = ext(server, "POST", "/task-grants", bob, {
        "agent": "agent:" + login, "task": "task:x", "resources": ["repo:alice/payments"],
        "actions": SEED_ACTIONS, "constraints": SEED_CONSTRAINTS})
    assert r.status == 403 and "create_branch needs write on repo:alice/payments; bob has read" in r.json["message"]


def test_invite_derived_access_is_capped_by_its_grantor_live(server):
    """bob, an admin collaborator, invites his agent with admin: the agent's access is bob's to give
    only while bob holds it; lowering, suspending or removing bob cuts it on the next request (on an
    installation that lets invites give agents more than read: serve --agent-standing-access write)."""
    server.app.agent_standing_access = "write"
    alice, bob = server.add_user("alice"), server.add_user("bob")
    root = server.add_user("root", admin=True)
    api(server, "POST", "/user/repos", alice, {"name": "payments", "private": True, "auto_init": True})
    set_collaborator(server, alice, "bob", "admin")
    login, agent, _ = server.add_agent("coder")
    invite = ext(server, "POST", "/agent-invites", bob, {"repo_grants": [
        {"repo_full_name": "alice/payments", "permission": "admin"}]}).json["invite_token"]
    assert ext(server, "POST", "/agent-bindings/confirm", agent, {"invite_token": invite}).status == 201
    bootstrap, agent = agent, session_token(server, agent)   # its runtime works with a session token
    listed = {c["login"]: c for c in api(server, "GET", "/repos/alice/payments/collaborators", alice).json}
    assert (listed[login]["role_name"], listed[login]["granted_via"]) == ("admin", "bob")
    assert listed["bob"]["granted_via"] is None
    assert api(server, "PATCH", "/repos/alice/payments", agent, {"description": "by the agent"}).status == 200
    # bob lowered to write: the agent holds write at most
    set_collaborator(server, alice, "bob", "push")
    r = api(server, "PATCH", "/repos/alice/payments", agent, {"description": "again"})
    assert r.status == 403 and "collaborator via bob, who holds write" in r.json["message"]
    assert api(server, "GET", "/repos/alice/payments", agent).json["permissions"]["push"] is True
    # bob suspended: his agent's sessions end, and it gets nothing but its own repositories (bob is its
    # delegator too)
    assert api(server, "PUT", "/users/bob/suspended", root).status == 204
    assert api(server, "GET", "/repos/alice/payments", agent).status == 401
    r = api(server, "GET", "/repos/alice/payments", session_token(server, bootstrap))
    assert r.status == 403 and "delegator bob is suspended" in r.json["message"]
    assert api(server, "DELETE", "/users/bob/suspended", root).status == 204
    agent = session_token(server, bootstrap)
    assert api(server, "GET", "/repos/alice/payments", agent).status == 200
    # bob removed: the agent's access goes with him, so a switch session into it cannot put bob back
    assert api(server, "DELETE", "/repos/alice/payments/collaborators/bob", alice).status == 204
    assert api(server, "GET", "/repos/alice/payments", agent).status == 404
    row = server.app.store.one("SELECT * FROM audit WHERE actor = ? AND decision = 'deny' ORDER BY id DESC", login)
    assert "collaborator via bob, who holds none" in row["reasons"]
    switch = ext(server, "POST", "/agent-bindings/%s/switch-session" % login, bob, {})
    assert switch.status == 201
    r = api(server, "PUT", "/repos/alice/payments/collaborators/bob", switch.json["token"], {"permission": "admin"})
    assert r.status == 404
    assert "bob" not in {c["login"] for c in api(server, "GET", "/repos/alice/payments/collaborators", alice).json}


def test_a_team_grant_that_would_add_an_outsider_to_the_org_needs_an_org_admin(server):
    alice, bob = server.add_user("alice"), server.add_user("bob")
    ext(server, "POST", "/user/orgs", alice, {"login": "acme"})
    api(server, "POST", "/orgs/acme/teams", alice, {"name": "bots"})
    assert api(server, "PUT", "/orgs/acme/memberships/bob", alice, {"role": "member"}).status == 200
    assert api(server, "PUT", "/orgs/acme/teams/bots/memberships/bob", alice, {"role": "maintainer"}).status == 200
    login, agent, _ = server.add_agent("coder")
    invite = ext(server, "POST", "/agent-invites", bob, {"team_grants": [{"org": "acme", "team_slug": "bots"}]})
    assert invite.status == 201                               # a team maintainer may invite to the team ...
    r = ext(server, "POST", "/agent-bindings/confirm", agent, {"invite_token": invite.json["invite_token"]})
    assert r.status == 403 and "only an organization admin can add it" in r.json["message"]   # ... not into the org
    assert api(server, "GET", "/orgs/acme/memberships/" + login, alice).status == 404
    # from alice, an org admin, the same grant binds; the agent's membership then lasts while alice's does
    invite = ext(server, "POST", "/agent-invites", alice, {"team_grants": [{"org": "acme", "team_slug": "bots"}]})
    assert ext(server, "POST", "/agent-bindings/confirm", agent,
               {"invite_token": invite.json["invite_token"]}).status == 201
    members = api(server, "GET", "/orgs/acme/teams/bots/members", alice).json
    assert {m["login"]: m["granted_via"] for m in members}[login] == "alice"


def test_a_token_cannot_confer_more_than_it_holds(server):
    """Actions that make a credential or delegate access need a token holding every scope they would
    confer: a no-scope or read:user token is refused each of them, with the scope named and a row."""
    import urllib.parse
    from conftest import call
    alice = server.add_user("alice")
    api(server, "POST", "/user/repos", alice, {"name": "payments", "private": True, "auto_init": True})
    login, agent, _ = server.add_agent("coder")
    bind(server, alice, agent)
    weak = {scopes: ext(server, "POST", "/user/tokens", alice, {"name": scopes or "none",
                                                                 "scopes": scopes.split()}).json["token"]
            for scopes in ("", "read:user")}
    device = call(server, "POST", "/login/device/code", raw_body=urllib.parse.urlencode(
        {"client_id": "cli", "scope": "repo admin:org delete_repo workflow"}).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}).json
    attempts = [
        ("POST", "/oauth/device/approve", {"user_code": device["user_code"]}, "'repo', 'admin:org', 'delete_repo'"),
        ("POST", "/agent-invites", {"repo_grants": [{"repo_full_name": "alice/payments", "permission": "admin"}]},
         "'repo'"),
        ("POST", "/agent-bindings/%s/switch-session" % login, {}, "'repo'"),
        ("POST", "/agent-bindings/%s/reset-token" % login, {}, "'repo'"),
        ("POST", "/task-grants", {"agent": "agent:" + login, "task": "task:x", "resources": ["repo:alice/payments"],
                                  "actions": ["read_code"]}, "'repo'"),
    ]
    for token in weak.values():
        for method, path, body, named in attempts:
            before = server.app.store.one("SELECT count(*) FROM audit WHERE decision = 'deny'")[0]
            r = ext(server, method, path, token, body)
            assert r.status == 403 and "token lacks %s" % named in r.json["message"], (path, r)
            assert server.app.store.one("SELECT count(*) FROM audit WHERE decision = 'deny'")[0] == before + 1
    assert server.app.store.one("SELECT approved_by FROM device_codes")[0] is None
    assert server.app.store.one("SELECT count(*) FROM agent_invites")[0] == 1          # only bind()'s
    # the same requests from a token that holds what they confer go through
    r = ext(server, "POST", "/oauth/device/approve", alice, {"user_code": device["user_code"]})
    assert r.status == 200 and r.json["approved"] is True
    assert ext(server, "POST", "/agent-bindings/%s/switch-session" % login, alice, {}).status == 201


def test_the_agents_own_token_is_a_bootstrap_credential_on_every_surface(server, tmp_path):
    """With its aga_ token alone an agent acts on its own account and repositories and reads what is
    public; anything delegated to it answers 403 with the way to a short-lived token, on REST,
    GraphQL, git and uploads. The agent session token it trades it for covers its standing access, on
    the repositories it was minted for, for an hour (standing write: serve --agent-standing-access write)."""
    from conftest import call, exchange
    server.app.agent_standing_access = "write"
    alice = server.add_user("alice")
    for name, private in (("payments", True), ("other", True), ("open", False), ("closed", True)):
        api(server, "POST", "/user/repos", alice, {"name": name, "private": private, "auto_init": True})
    release = api(server, "POST", "/repos/alice/payments/releases", alice, {"tag_name": "v1"}).json
    login, agent, workspace = server.add_agent("coder")
    invite = ext(server, "POST", "/agent-invites", alice, {"repo_grants": [
        {"repo_full_name": "alice/payments", "permission": "push"},
        {"repo_full_name": "alice/other", "permission": "push"}]}).json["invite_token"]
    assert ext(server, "POST", "/agent-bindings/confirm", agent, {"invite_token": invite}).status == 201
    # its own account and repositories, and what is public: yes
    assert api(server, "GET", "/user", agent).json["login"] == login
    assert api(server, "PATCH", "/repos/" + workspace, agent, {"description": "mine"}).status == 200
    assert api(server, "GET", "/repos/alice/open", agent).status == 200
    # delegated: refused with the way, on every surface
    r = api(server, "GET", "/repos/alice/payments", agent)
    assert r.status == 403 and "bootstrap credential" in r.json["message"] and "token exchange" in r.json["message"]
    r = api(server, "POST", "/repos/alice/open/issues", agent, {"title": "x"})
    assert r.status == 403 and "bootstrap credential" in r.json["message"]
    gql = call(server, "POST", "/api/graphql", agent, {"query": '{ repository(owner: "alice", name: "payments")'
                                                                '{ name } }'}).json
    assert gql["data"]["repository"] is None and "bootstrap credential" in gql["errors"][0]["message"]
    proc = git(str(tmp_path), "ls-remote", remote(server, "alice/payments", agent), check=False)
    assert proc.returncode != 0 and "bootstrap credential" in proc.stderr
    upload = call(server, "POST", "/api/uploads/repos/alice/payments/releases/%d/assets?name=a.txt" % release["id"],
                  agent, raw_body=b"x", headers={"Content-Type": "text/plain"})
    assert upload.status == 403 and "bootstrap credential" in upload.json["message"]
    assert api(server, "GET", "/repos/alice/closed", agent).status == 404           # still hidden where no access
    # an agent session token for one repository: its standing access there, for an hour, nothing else
    r = exchange(server, subject_token=agent, resource=server.url + "/alice/payments.git", scope="repo bogus")
    assert r.status == 200 and r.json["access_token"].startswith("agr_")
    assert (r.json["audience"], r.json["scope"], r.json["decision"]) == (["repo:alice/payments"], "repo",
                                                                         "allow_narrowed")
    assert 3500 <= r.json["expires_in"] <= 3600 and r.json["token_type"] == "bearer"
    session = r.json["access_token"]
    assert api(server, "GET", "/repos/alice/payments", session).json["permissions"]["push"] is True
    assert api(server, "GET", "/repos/alice/other", session).status == 404            # outside its audience
    row = server.app.store.one("SELECT * FROM audit WHERE actor = ? AND decision = 'deny' ORDER BY id DESC", login)
    assert "is for repo:alice/payments, not repo:alice/other" in row["reasons"]
    work = str(tmp_path / "w")
    git(str(tmp_path), "clone", "-q", remote(server, "alice/payments", session), work)
    commit_file(work, "fix.py", "ok = 1\n")
    git(work, "push", "-q", "origin", "HEAD:refs/heads/fix")
    # nothing to trade for where it has no standing access, or for another server, or from another token
    assert exchange(server, subject_token=agent, resource="repo:alice/closed").json["error"] == "invalid_target"
    refused = server.app.store.one("SELECT * FROM audit WHERE action = 'mint_session_token' AND decision = 'deny'")
    assert refused["actor"] == login and "no standing access of %s covers repo:alice/closed" % login in refused["reasons"]
    assert exchange(server, subject_token=session, resource="repo:alice/payments").json["error"] == "invalid_grant"
    assert exchange(server, subject_token=alice, resource="repo:alice/payments").json["error"] == "invalid_grant"
    # revoked by fingerprint, by the agent's human
    fingerprint = server.app.store.one("SELECT fingerprint FROM tokens WHERE kind = 'session'")["fingerprint"]
    assert ext(server, "POST", "/revocations", alice, {"token_fingerprint": fingerprint}).json == {"revoked": 1}
    assert api(server, "GET", "/repos/alice/payments", session).status == 401


def test_an_installation_that_chose_direct_agent_credentials(tmp_path):
    """direct keeps agent-git-service's behaviour: the agent's own token acts on all it may do."""
    import agentgit
    srv = agentgit.make_server(tmp_path / "data", port=0, agent_credentials="direct", agent_standing_access="write").start()
    try:
        alice = srv.add_user("alice")
        api(srv, "POST", "/user/repos", alice, {"name": "payments", "private": True, "auto_init": True})
        login, agent, _ = srv.add_agent("coder")
        set_collaborator(srv, alice, login, "push")
        assert api(srv, "GET", "/repos/alice/payments", agent).json["permissions"]["push"] is True
    finally:
        srv.stop()
    again = agentgit.make_server(tmp_path / "data", port=0)          # the choice is kept for the installation
    assert again.app.agent_credentials == "direct"
    again.httpd.server_close()


def test_the_runtime_holds_only_the_bootstrap_token_file(tmp_path):
    """git's credential helper and `connect gh --token-file` trade the agent's bootstrap token (in a
    file git and gh never see) for short-lived task tokens: clone, push inside the prefix, a push
    outside it refused per ref, gh pr create, and gh pr merge waiting for the human's approval."""
    import json
    import os
    import re
    import shlex
    import subprocess
    from conftest import CLI, apply_exports, gh, git_env, plain_gh_env, socket_server
    with socket_server(tmp_path) as srv:
        alice = srv.add_user("alice")
        api(srv, "POST", "/user/repos", alice, {"name": "payments", "private": True, "auto_init": True})
        login, agent, _ = srv.add_agent("coder")
        bind(srv, alice, agent)
        grant, _ = grant_task(srv, alice, "alice", login, agent)
        token_file = tmp_path / "agent.token"
        token_file.write_text(agent + "\n")
        token_file.chmod(0o600)
        helper = "!" + " ".join(shlex.quote(part) for part in CLI + ["credential", "--token-file", str(token_file)])
        env = dict(git_env(tmp_path), AGENTGIT_TASK="task:fix-payment-bug")
        config = ["-c", "credential.helper=" + helper, "-c", "credential.useHttpPath=true"]
        work = str(tmp_path / "w")
        git(str(tmp_path), *config, "clone", "-q", remote(srv, "alice/payments"), work, env=env)
        for args in (("config", "credential.helper", helper), ("config", "credential.useHttpPath", "true")):
            git(work, *args, env=env)
        commit_file(work, "fix.py", "ok = 1\n")
        git(work, "push", "-q", "origin", "HEAD:refs/heads/agent/task-123/fix", env=env)
        proc = git(work, "push", "origin", "HEAD:refs/heads/main", env=env, check=False)
        assert proc.returncode != 0 and "allows pushes to branches under agent/task-123/ only" in proc.stderr
        # one task token served all three (the other is grant_task's): the helper cached it; nothing but the
        # token file holds the agent's own
        assert srv.app.store.one("SELECT count(*) FROM tokens WHERE kind = 'task'")[0] == 2
        assert agent not in open(os.path.join(work, ".git", "config")).read()
        cache = json.load(open(tmp_path / ".cache" / "agentgit" / "credentials.json"))
        assert [entry["token"][:4] for entry in cache.values()] == ["agt_"]
        # gh: connect gh trades the token file for a task token on the repository
        out = subprocess.run([*CLI, "connect", "gh", "--token-file", str(token_file), "--task", "task:fix-payment-bug",
                              "--repo", "alice/payments", "--mode", "socket", "--socket", str(tmp_path / "agentgit.sock"),
                              "--url", srv.url, "--dir", str(tmp_path / "gh")], cwd=tmp_path,
                             capture_output=True, text=True, check=True)
        assert "run `agentgit.py connect gh` again" in out.stderr
        ghenv = apply_exports(plain_gh_env(tmp_path), out.stdout)
        assert json.loads(gh(ghenv, "api", "user").stdout)["login"] == login
        gh(ghenv, "pr", "create", "-R", "alice/payments", "-H", "agent/task-123/fix", "-B", "main", "-t", "Fix",
           "-b", "it")
        proc = gh(ghenv, "pr", "merge", "1", "-R", "alice/payments", "--merge", check=False)
        approval = re.search(r"approval (ap_[0-9a-f]+) waits for alice at http", proc.stderr)
        assert proc.returncode != 0 and approval, proc.stderr
        assert ext(srv, "POST", "/approvals/%s/approve" % approval.group(1), alice, {}).status == 200
        gh(ghenv, "pr", "merge", "1", "-R", "alice/payments", "--merge")
        assert api(srv, "GET", "/repos/alice/payments/pulls/1", alice).json["merged"] is True
        # a refusal of the exchange reaches git as the helper's message
        git(work, "config", "--unset", "credential.useHttpPath", env=env)
        proc = git(work, "fetch", "origin", env=env, check=False)
        assert proc.returncode != 0 and "credential.useHttpPath true" in proc.stderr



def test_approvals_a_human_can_judge_approve_or_deny(server, tmp_path):
    """An approval names exactly what it allows (a push: the ref and the commit; a merge: the pull
    request at its head) and shows what the human needs to decide; the human may deny it with a
    reason, which the agent reads when it polls or tries again."""
    import re
    from conftest import Browser
    alice = server.add_user("alice", password="pw")
    api(server, "POST", "/user/repos", alice, {"name": "payments", "private": True, "auto_init": True})
    login, agent, _ = server.add_agent("coder")
    bind(server, alice, agent)
    grant = ext(server, "POST", "/task-grants", alice, {
        "agent": "agent:" + login, "task": "task:hotfix", "resources": ["repo:alice/payments"],
        "actions": ["read_code", "create_branch", "open_pr"],
        "constraints": {"branch_prefix": "agent/", "requires_approval": ["push_branch", "merge_pr"]}}).json
    token = ext(server, "POST", "/task-grants/%s/tokens" % grant["id"], agent, {}).json["token"]
    work = str(tmp_path / "w")
    git(str(tmp_path), "clone", "-q", remote(server, "alice/payments", token), work)
    commit_file(work, "a.txt", "1\n")
    git(work, "push", "-q", "origin", "HEAD:refs/heads/agent/fix")
    b = commit_file(work, "a.txt", "2\n", "Fix the rounding")
    proc = git(work, "push", "origin", "HEAD:refs/heads/agent/fix", check=False)
    first = re.search(r"approval (ap_[0-9a-f]+) waits for alice", proc.stderr).group(1)
    shown = ext(server, "GET", "/approvals/" + first, alice).json
    assert (shown["agent"], shown["delegator"], shown["task"], shown["grant"], shown["action"]) == (
        "agent:" + login, "user:alice", "task:hotfix", grant["id"], "push_branch")
    assert shown["subject"] == "refs/heads/agent/fix at " + b and shown["context"]["sha"] == b
    assert [c["message"] for c in shown["context"]["commits"]] == ["Fix the rounding"]     # what the push brings
    # another commit on the same ref is another question: the first approval cannot carry it
    git(work, "commit", "-q", "--amend", "-m", "Fix the rounding, again")
    c = git(work, "rev-parse", "HEAD").stdout.strip()
    proc = git(work, "push", "origin", "+HEAD:refs/heads/agent/fix", check=False)
    second = re.search(r"approval (ap_[0-9a-f]+) waits", proc.stderr).group(1)
    assert second != first
    assert ext(server, "POST", "/approvals/%s/approve" % first, alice, {}).status == 200
    proc = git(work, "push", "origin", "+HEAD:refs/heads/agent/fix", check=False)
    assert proc.returncode != 0 and second in proc.stderr                         # still waits, for c
    git(work, "reset", "-q", "--hard", b)
    git(work, "push", "-q", "origin", "HEAD:refs/heads/agent/fix")                 # b, as approved
    assert git(work, "ls-remote", "origin", "refs/heads/agent/fix").stdout.split()[0] == b != c
    # a merge: the human sees the pull request, its files and commits, and says no, with a reason
    api(server, "POST", "/repos/alice/payments/pulls", token, {"title": "Rounding", "body": "Rounds half up.",
                                                               "head": "agent/fix", "base": "main"})
    merge = api(server, "PUT", "/repos/alice/payments/pulls/1/merge", token, {})
    approval = merge.json["approval_id"]
    details = ext(server, "GET", "/approvals/" + approval, alice).json["context"]
    assert (details["title"], details["body"], details["changed_files"]) == ("Rounding", "Rounds half up.", ["a.txt"])
    assert details["diff_url"].endswith("/alice/payments/pull/1.diff")
    assert "Fix the rounding" in [c["message"] for c in details["commits"]]
    browser = Browser(server)
    browser.sign_in("alice", "pw", "/approvals")
    _, page = browser.request("GET", "/approvals")
    assert "Rounding" in page and "Rounds half up." in page and "a.txt" in page and "Fix the rounding" in page
    resp, page = browser.request("POST", "/approvals", {"csrf": browser.csrf(page), "approval_id": approval,
                                                        "decision": "deny", "reason": "tests are missing"})
    assert resp.status == 200 and "Denied merge_pr on repo:alice/payments" in page
    polled = ext(server, "GET", "/approvals/" + approval, token).json
    assert (polled["state"], polled["denied_by"], polled["denial_reason"]) == ("denied", "user:alice",
                                                                               "tests are missing")
    retry = api(server, "PUT", "/repos/alice/payments/pulls/1/merge", token, {})
    assert retry.status == 403 and "alice denied merge_pr of pull request #1" in retry.json["message"] and \
        "tests are missing" in retry.json["message"] and "approval_id" not in retry.json
    assert server.app.store.one("SELECT count(*) FROM approvals WHERE action = 'merge_pr'")[0] == 1
    assert ext(server, "POST", "/approvals/%s/approve" % approval, alice, {}).status == 409    # a no stands
    denial = server.app.store.one("SELECT * FROM audit WHERE side_effect LIKE 'denied %s%%'" % approval)
    assert denial["actor"] == "alice" and "tests are missing" in denial["side_effect"]
    assert ext(server, "POST", "/approvals/%s/deny" % approval, token, {}).status == 404       # not the agent's


def test_the_policy_endpoint_answers_for_every_kind_of_agent_token(server):
    """Bootstrap, session and task tokens each ask what they may do on a repository, and each answer
    names the rule that decided and the chain behind it."""
    alice = server.add_user("alice")
    api(server, "POST", "/user/repos", alice, {"name": "payments", "private": True, "auto_init": True})
    login, agent, _ = server.add_agent("coder")
    invite = ext(server, "POST", "/agent-invites", alice, {"repo_grants": [
        {"repo_full_name": "alice/payments", "permission": "triage"}]}).json["invite_token"]
    assert ext(server, "POST", "/agent-bindings/confirm", agent, {"invite_token": invite}).status == 201
    grant, task = grant_task(server, alice, "alice", login, agent)
    ask = lambda token: ext(server, "GET", "/policy?resource=repo:alice/payments", token).json  # noqa: E731
    bootstrap = ask(agent)
    assert bootstrap["token_kind"] == "bootstrap"
    assert bootstrap["actions"]["read_code"]["rule"] == "agent_credentials"
    assert "trade it for a short-lived token" in bootstrap["actions"]["read_code"]["because"]
    session = ask(session_token(server, agent, "alice/payments"))
    assert session["token_kind"] == "session"
    assert session["actions"]["read_code"]["decision"] == "allow"
    assert session["actions"]["read_code"]["because"].startswith(
        "%s holds read on repo:alice/payments (triage: collaborator via alice, who holds admin; an agent outside a "
        "task holds it as read: to change it, alice grants it a task, POST /api/ext/v1/task-grants)" % login)
    assert (session["actions"]["push_branch"]["decision"], session["actions"]["push_branch"]["rule"]) == (
        "deny", "permission")
    by_task = ask(task)
    assert by_task["token_kind"] == "task" and by_task["grant"]["id"] == grant["id"]
    assert by_task["actions"]["push_branch"]["because"] == (
        "alice (delegator of task grant %s) holds admin on repo:alice/payments (owner) → task grant %s allows "
        "push_branch under agent/task-123/" % (grant["id"], grant["id"]))
    assert (by_task["actions"]["merge_pr"]["decision"], by_task["actions"]["merge_pr"]["rule"]) == (
        "needs_approval", "task_grant")
