"""Delegation: invite, the agent's consent, grants, switch sessions, reset, suspend, revoke, retire."""
import threading

import pytest

from conftest import CLI, api, commit_file, ext, git, remote, session_token, standing_write


@pytest.fixture
def world(server):
    t = {n: server.add_user(n) for n in ("alice", "bob")}
    api(server, "POST", "/user/repos", t["alice"], {"name": "payments", "private": True, "auto_init": True})
    api(server, "POST", "/user/repos", t["bob"], {"name": "bobs", "private": True, "auto_init": True})
    api(server, "PUT", "/repos/bob/bobs/collaborators/alice", t["bob"], {"permission": "pull"})
    t["agent_login"], t["agent"], t["agent_repo"] = server.add_agent("coder")
    return t


def invite(server, token, **body):
    return ext(server, "POST", "/agent-invites", token, body)


def audit_rows(server, **where):
    sql = "SELECT * FROM audit WHERE " + " AND ".join("%s = ?" % k for k in where) + " ORDER BY id"
    return server.app.store.all(sql, *where.values())


def test_the_whole_lifecycle(server, world, tmp_path):
    standing_write(server)
    alice, agent, login = world["alice"], world["agent"], world["agent_login"]
    r = invite(server, alice, repo_grants=[{"repo_full_name": "alice/payments", "permission": "push"}])
    assert r.status == 201 and r.json["invite_token"].startswith("agi_") and r.json["expires_at"]
    assert api(server, "GET", "/repos/alice/payments", agent).status == 404        # nothing granted yet
    r = ext(server, "POST", "/agent-bindings/confirm", agent, {"invite_token": r.json["invite_token"]})
    assert r.status == 201 and (r.json["human"]["login"], r.json["agent"]["login"]) == ("alice", login)
    # its own token is a bootstrap credential: refused with the way to a short-lived one, which pushes
    proc = git(str(tmp_path), "ls-remote", remote(server, "alice/payments", agent), check=False)
    assert proc.returncode != 0 and "bootstrap credential" in proc.stderr and "token exchange" in proc.stderr
    session = session_token(server, agent, "alice/payments")
    work = str(tmp_path / "w")
    git(str(tmp_path), "clone", "-q", remote(server, "alice/payments", session), work)
    sha = commit_file(work, "fix.py", "fixed = True\n")
    git(work, "push", "-q", "origin", "HEAD:refs/heads/agent/fix")
    push = audit_rows(server, actor=login, action="create_branch")[-1]
    assert (push["delegator"], push["user_kind"]) == ("alice", "agent") and sha[:12] in push["side_effect"]
    mine = ext(server, "GET", "/user/agents", alice).json
    assert [(a["agent"]["login"], a["token_status"], a["access"]) for a in mine] == [
        (login, "active", ["alice/payments:write"])]
    assert ext(server, "PATCH", "/agent-bindings/" + login, alice, {"display_name": "Payments bot"}).json[
        "display_name"] == "Payments bot"
    # a switch session acts as the agent; the record names both
    r = ext(server, "POST", "/agent-bindings/%s/switch-session" % login, alice)
    assert r.status == 201 and r.json["token"].startswith("ags_") and r.json["agent_login"] == login
    switch = r.json["token"]
    assert api(server, "GET", "/user", switch).json["login"] == login
    api(server, "POST", "/repos/alice/payments/issues", alice, {"title": "bug"})
    assert api(server, "POST", "/repos/alice/payments/issues/1/comments", switch, {"body": "on it"}).json[
        "user"]["login"] == login
    row = audit_rows(server, action="comment")[-1]
    assert (row["actor"], row["delegator"]) == (login, "alice") and "switch-session:alice" in row["runtime"]
    for path in ("/agent-invites", "/agent-bindings/%s/reset-token" % login, "/agent-bindings/%s/switch-session" % login):
        assert ext(server, "POST", path, switch, {}).status == 403, path
    refreshed = ext(server, "POST", "/agent-bindings/%s/refresh-session" % login, switch).json["token"]
    assert api(server, "GET", "/user", switch).status == 401 and api(server, "GET", "/user", refreshed).status == 200
    # reset: the old token fails on REST and Git, the new one works; the agent's own token was untouched before
    assert api(server, "GET", "/user", agent).status == 200
    r = ext(server, "POST", "/agent-bindings/%s/reset-token" % login, alice)
    new = r.json["token"]
    assert r.status == 201 and r.json["revoked"] == 3           # the agent token, the agent session, the switch session
    assert api(server, "GET", "/user", agent).status == 401 and api(server, "GET", "/user", refreshed).status == 401
    assert git(str(tmp_path), "ls-remote", remote(server, "alice/payments", session), check=False).returncode != 0
    assert git(str(tmp_path), "ls-remote", remote(server, "alice/payments", session_token(server, new))).returncode == 0
    # suspend: everything refused, with a message that says so; resume
    assert ext(server, "POST", "/agent-bindings/%s/suspend" % login, alice).status == 200
    r = api(server, "GET", "/repos/" + world["agent_repo"], new)
    assert r.status == 403 and r.json["message"] == "account %s is suspended" % login
    proc = git(str(tmp_path), "ls-remote", remote(server, world["agent_repo"], new), check=False)
    assert proc.returncode != 0 and "suspended" in proc.stderr
    assert ext(server, "POST", "/agent-bindings/%s/resume" % login, alice).status == 200
    assert api(server, "GET", "/repos/" + world["agent_repo"], new).status == 200
    # revoke by delegator: every token of every agent alice holds
    r = ext(server, "POST", "/revocations", alice, {"delegator": "alice"})
    assert r.status == 200 and r.json == {"revoked": 2, "keys_revoked": 0}             # the agent's token and its agent session
    assert api(server, "GET", "/user", new).status == 401
    activity = ext(server, "GET", "/agents/%s/activity" % login, alice).json
    assert {a["action"] for a in activity} >= {"create_branch", "comment"}
    assert all(a["actor"] == login for a in activity)
    assert ext(server, "GET", "/agents/%s/activity" % login, world["bob"]).status == 403
    # retire: the login stays reserved, repositories move to alice
    assert ext(server, "DELETE", "/agents/" + login, alice, {"repositories": "transfer"}).status == 204
    assert api(server, "GET", "/repos/alice/workspace", alice).status == 200
    assert api(server, "GET", "/users/" + login).status == 200                   # reserved, not reusable
    r = ext(server, "POST", "/agent-bindings/%s/reset-token" % login, alice).json["token"]
    assert api(server, "GET", "/user", r).json["message"] == "agent %s is retired" % login


def test_invite_authority(server, world):
    alice, agent = world["alice"], world["agent"]
    r = invite(server, agent)
    assert r.status == 403 and "humans" in r.json["message"]                      # agents cannot invite
    r = invite(server, alice, repo_grants=[{"repo_full_name": "bob/bobs", "permission": "pull"}])
    assert r.status == 403 and r.json["message"] == "alice cannot grant access to bob/bobs"   # alice only reads
    r = invite(server, alice, repo_grants=[{"repo_full_name": "nobody/nothing", "permission": "pull"}])
    assert r.status == 403
    assert invite(server, alice, repo_grants=[{"repo_full_name": "alice/payments", "permission": "owner"}]).status == 422
    assert invite(server, alice, expires_in=5).status == 422
    assert invite(server, None).status == 401


def test_consent_rules(server, world):
    alice, bob, agent = world["alice"], world["bob"], world["agent"]
    token = invite(server, alice).json["invite_token"]
    for bad in ("agi_" + "0" * 48, token[:-1] + ("0" if token[-1] != "0" else "1"), token[:20], "garbage"):
        r = ext(server, "POST", "/agent-bindings/confirm", agent, {"invite_token": bad})
        assert r.status == 422, bad
    r = ext(server, "POST", "/agent-bindings/confirm", alice, {"invite_token": token})
    assert r.status == 403 and "agent token" in r.json["message"]                  # a human cannot consent
    assert ext(server, "POST", "/agent-bindings/confirm", agent, {"invite_token": token}).status == 201
    assert ext(server, "POST", "/agent-bindings/confirm", agent, {"invite_token": token}).status == 409   # used
    other = invite(server, bob).json["invite_token"]
    r = ext(server, "POST", "/agent-bindings/confirm", agent, {"invite_token": other})
    assert r.status == 409 and "already bound" in r.json["message"]
    # a switch-session token is not consent
    _, agent2, _ = server.add_agent("second")
    second_login = api(server, "GET", "/user", agent2).json["login"]
    ext(server, "POST", "/agent-bindings/confirm", agent2, {"invite_token": invite(server, bob).json["invite_token"]})
    switch = ext(server, "POST", "/agent-bindings/%s/switch-session" % second_login, bob).json["token"]
    r = ext(server, "POST", "/agent-bindings/confirm", switch, {"invite_token": invite(server, alice).json["invite_token"]})
    assert r.status == 403 and "switch-session token" in r.json["message"]
    # expired invites
    expired = invite(server, alice, expires_in=60).json["invite_token"]
    server.app.store.db.execute("UPDATE agent_invites SET expires_at = '2000-01-01T00:00:00Z'")
    _, agent3, _ = server.add_agent("third")
    assert ext(server, "POST", "/agent-bindings/confirm", agent3, {"invite_token": expired}).status == 422


def test_authority_is_checked_again_at_consent(server, world):
    alice, bob, agent = world["alice"], world["bob"], world["agent"]
    api(server, "PUT", "/repos/bob/bobs/collaborators/alice", bob, {"permission": "admin"})
    token = invite(server, alice, repo_grants=[{"repo_full_name": "bob/bobs", "permission": "push"}]).json["invite_token"]
    api(server, "PUT", "/repos/bob/bobs/collaborators/alice", bob, {"permission": "pull"})   # alice loses admin
    r = ext(server, "POST", "/agent-bindings/confirm", agent, {"invite_token": token})
    assert r.status == 403 and "alice cannot grant access to bob/bobs" in r.json["message"]
    assert api(server, "GET", "/repos/bob/bobs", agent).status == 404                       # nothing applied
    assert server.app.store.one("SELECT COUNT(*) AS n FROM agent_bindings")["n"] == 0


def test_racing_confirms_bind_once(server, world):
    alice, bob, agent = world["alice"], world["bob"], world["agent"]
    tokens = [invite(server, alice).json["invite_token"], invite(server, bob).json["invite_token"]]
    results = [None, None]

    def confirm(i):
        results[i] = ext(server, "POST", "/agent-bindings/confirm", agent, {"invite_token": tokens[i]}).status

    threads = [threading.Thread(target=confirm, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [201, 409]
    assert server.app.store.one("SELECT COUNT(*) AS n FROM agent_bindings")["n"] == 1


def test_org_revocation_and_suspended_delegator(server, world, tmp_path):
    standing_write(server)
    alice, agent, login = world["alice"], world["agent"], world["agent_login"]
    ext(server, "POST", "/user/orgs", alice, {"login": "acme"})
    api(server, "POST", "/orgs/acme/repos", alice, {"name": "core", "private": True, "auto_init": True})
    api(server, "POST", "/orgs/acme/teams", alice, {"name": "bots"})
    api(server, "PUT", "/orgs/acme/teams/bots/repos/acme/core", alice, {"permission": "push"})
    token = invite(server, alice, team_grants=[{"org": "acme", "team_slug": "bots"}],
                   repo_grants=[{"repo_full_name": "alice/payments", "permission": "pull"}]).json["invite_token"]
    assert ext(server, "POST", "/agent-bindings/confirm", agent, {"invite_token": token}).status == 201
    session = session_token(server, agent)
    assert api(server, "GET", "/repos/acme/core", session).json["permissions"]["push"] is True
    # alice is suspended by a site admin: her agent keeps its own repositories only, and its session goes
    admin = server.admin[1]
    api(server, "PUT", "/users/alice/suspended", admin)
    assert api(server, "GET", "/repos/alice/payments", session).status == 401
    r = api(server, "GET", "/repos/alice/payments", session_token(server, agent))
    assert r.status == 403 and "delegator alice is suspended" in r.json["message"]
    assert api(server, "GET", "/repos/" + world["agent_repo"], agent).status == 200
    api(server, "DELETE", "/users/alice/suspended", admin)
    # the org's admin revokes by org: the agent's tokens die and the org grants go, others stay
    r = ext(server, "POST", "/revocations", alice, {"org": "acme"})
    assert r.json == {"revoked": 2, "keys_revoked": 0}                               # its own token and the second session
    assert api(server, "GET", "/user", agent).status == 401
    new = session_token(server, ext(server, "POST", "/agent-bindings/%s/reset-token" % login, alice).json["token"])
    assert api(server, "GET", "/repos/acme/core", new).status == 404
    assert api(server, "GET", "/repos/alice/payments", new).status == 200
    assert ext(server, "POST", "/revocations", world["bob"], {"org": "acme"}).status == 403
    assert ext(server, "POST", "/revocations", alice, {"org": "acme", "agent": login}).status == 422
    # by fingerprint: the holder or the agent's human may; someone else may not
    fp = ext(server, "GET", "/user/tokens", world["bob"]).json[0]["fingerprint"]
    assert ext(server, "POST", "/revocations", alice, {"token_fingerprint": fp}).status == 403
    assert ext(server, "POST", "/revocations", world["bob"], {"token_fingerprint": fp}).json == {"revoked": 1}
    assert api(server, "GET", "/user", world["bob"]).status == 401


def test_cli_parity(server, world):
    """The same lifecycle from a script: invite, the agent's consent (its token on stdin), suspend,
    resume, reset, unbind; each leaves an audit row."""
    standing_write(server)
    import subprocess
    data = server.app.config.data_dir

    def cli(*args, stdin=None, ok=True):
        proc = subprocess.run([*CLI, "agent", *args, "--data", data], input=stdin,
                              capture_output=True, text=True)
        assert (proc.returncode == 0) == ok, proc.stderr
        return proc
    agent, login = world["agent"], world["agent_login"]
    assert "bob cannot grant access to alice/payments" in cli("invite", "bob", "--repo-grant", "alice/payments:push",
                                                              ok=False).stderr
    token = cli("invite", "alice", "--repo-grant", "alice/payments:push").stdout.strip().split("\n")[-1]
    assert "consent needs the agent's own token" in cli("confirm", token, stdin=world["alice"] + "\n", ok=False).stderr
    assert cli("confirm", token, stdin=agent + "\n").stdout.strip() == "%s is bound to alice" % login
    assert api(server, "GET", "/repos/alice/payments", session_token(server, agent)).json["permissions"]["push"] is True
    cli("suspend", login)
    assert api(server, "GET", "/user", agent).status == 403
    cli("resume", login)
    new = cli("reset-token", login).stdout.strip().split("\n")[-1]
    assert api(server, "GET", "/user", agent).status == 401 and api(server, "GET", "/user", new).status == 200
    session = session_token(server, new)
    cli("unbind", login)
    assert api(server, "GET", "/repos/alice/payments", session).status == 401        # unbinding ends its sessions
    assert api(server, "GET", "/repos/alice/payments", session_token(server, new)).status == 404
    assert "no bound agent" in cli("suspend", login, ok=False).stderr
    rows = server.app.store.all("SELECT action, user_kind FROM audit WHERE surface = 'cli' ORDER BY id")
    assert [r["action"] for r in rows][-6:] == ["create_invite", "bind_agent"] + ["manage_agent"] * 4
    assert [r["user_kind"] for r in rows][-6:] == ["operator", "agent"] + ["operator"] * 4
