"""Typed HMAC tokens: header forms, forged/altered/expired/revoked tokens, the tokens API, storage."""
import base64
import os

from conftest import CLI, api, call, database_of, ext, git, remote


def test_every_header_form_is_accepted(server):
    token = server.add_user("alice")
    basic = base64.b64encode(("anything:" + token).encode()).decode()
    for header in ("token " + token, "Bearer " + token, "Basic " + basic,
                   "Basic " + base64.b64encode((token + ":x-oauth-basic").encode()).decode()):
        r = call(server, "GET", "/api/v3/user", headers={"Authorization": header})
        assert r.status == 200 and r.json["login"] == "alice", header
        assert "repo" in r.headers["x-oauth-scopes"] and "read:org" in r.headers["x-oauth-scopes"]


def test_kinds_have_their_own_prefix(server):
    human = server.add_user("alice")
    _, agent, _ = server.add_agent("bot")
    assert human.startswith("agp_") and agent.startswith("aga_")
    assert api(server, "GET", "/user", agent).json["user_kind"] == "agent"
    assert api(server, "GET", "/user", human).json["user_kind"] == "human"


def test_forged_altered_expired_revoked_are_bad_credentials_on_rest_and_git(server, tmp_path):
    token = server.add_user("alice")
    _, agent, full_name = server.add_agent("bot")
    altered = token[:-1] + ("0" if token[-1] != "0" else "1")
    wrong_kind = "aga_" + token[4:]          # same body, other kind's prefix: the MAC no longer matches
    forged = "agp_" + "a" * 48
    created = ext(server, "POST", "/user/tokens", token, {"name": "short", "scopes": ["repo"],
                                                         "expires_at": "2099-01-01T00:00:00Z"})
    assert created.status == 201
    short = created.json["token"]
    db = database_of(server.app.config.data_dir)
    db.execute("UPDATE tokens SET expires_at = '2000-01-01T00:00:00Z' WHERE id = ?", (created.json["id"],))
    db.commit()
    revoked = ext(server, "POST", "/user/tokens", token, {"name": "gone", "scopes": ["repo"]}).json
    assert ext(server, "DELETE", "/user/tokens/%d" % revoked["id"], token).status == 204
    for bad in (altered, wrong_kind, forged, short, revoked["token"], "not-a-token"):
        r = api(server, "GET", "/user", bad)
        assert r.status == 401 and r.json["message"] == "Bad credentials", bad
        assert "documentation_url" in r.json
        proc = git(str(tmp_path), "ls-remote", remote(server, full_name, bad), check=False)
        assert proc.returncode != 0 and "Bad credentials" in proc.stderr
    assert git(str(tmp_path), "ls-remote", remote(server, full_name, agent)).returncode == 0


def test_token_api_lists_metadata_never_values(server):
    token = server.add_user("alice")
    r = ext(server, "POST", "/user/tokens", token, {"name": "ci", "scopes": ["repo", "read:org"]})
    assert r.status == 201 and r.json["token"].startswith("agp_")
    assert r.json["scopes"] == ["repo", "read:org"] and len(r.json["fingerprint"]) == 12
    listed = ext(server, "GET", "/user/tokens", token).json
    assert [t["name"] for t in listed] == ["initial", "ci"]
    assert all("token" not in t for t in listed)
    assert r.json["token"] not in ext(server, "GET", "/user/tokens", token).raw.decode()
    # the new token only carries what it was given
    scoped = api(server, "GET", "/user", r.json["token"])
    assert scoped.headers["x-oauth-scopes"] == "read:org, repo"


def test_token_api_refuses_bad_input_and_escalation(server):
    token = server.add_user("alice")
    narrow = ext(server, "POST", "/user/tokens", token, {"name": "narrow", "scopes": ["read:org"]}).json["token"]
    r = ext(server, "POST", "/user/tokens", narrow, {"name": "wide", "scopes": ["repo"]})
    assert r.status == 403 and "repo" in r.json["message"]
    assert ext(server, "POST", "/user/tokens", token, {"scopes": ["repo"]}).json["errors"][0]["code"] == "missing_field"
    r = ext(server, "POST", "/user/tokens", token, {"name": "x", "scopes": ["root"]})
    assert r.status == 422 and "root" in r.json["errors"][0]["message"]
    r = ext(server, "POST", "/user/tokens", token, {"name": "x", "expires_at": "2001-01-01T00:00:00Z"})
    assert r.status == 422 and r.json["errors"][0]["field"] == "expires_at"
    r = ext(server, "POST", "/user/tokens", token, {"name": "x", "expires_at": "tomorrow"})
    assert r.status == 422
    # agents hold no personal tokens
    _, agent, _ = server.add_agent("bot")
    r = ext(server, "POST", "/user/tokens", agent, {"name": "x"})
    assert r.status == 403 and "humans" in r.json["message"]
    # another user's token id is simply not found
    other = server.add_user("bob")
    bob_ids = [t["id"] for t in ext(server, "GET", "/user/tokens", other).json]
    assert ext(server, "DELETE", "/user/tokens/%d" % bob_ids[0], token).status == 404
    assert api(server, "GET", "/user", other).status == 200


def test_tokens_hashed_at_rest_key_0600_and_never_logged(tmp_path):
    import io
    import agentgit
    log = io.StringIO()
    srv = agentgit.make_server(tmp_path / "d", port=0, access_log=log).start()
    try:
        admin_login, admin_token = srv.admin
        token = srv.add_user("alice")
        api(srv, "GET", "/user", token)
        api(srv, "GET", "/user", "agp_" + "b" * 48)
        key = os.path.join(str(tmp_path / "d"), "server.key")
        assert oct(os.stat(key).st_mode & 0o777) == "0o600"
        raw = b""
        for name in os.listdir(str(tmp_path / "d")):
            path = os.path.join(str(tmp_path / "d"), name)
            if os.path.isfile(path):
                raw += open(path, "rb").read()
        assert token.encode() not in raw and admin_token.encode() not in raw
        assert token not in log.getvalue() and "GET /api/v3/user" in log.getvalue()
    finally:
        srv.stop()


def test_revocation_takes_effect_on_the_next_request(server, tmp_path):
    """Hot reads are cached; any commit (here or by the CLI in another process) must end that at once."""
    import subprocess
    import time
    import agentgit
    token = server.add_user("alice")
    extra = ext(server, "POST", "/user/tokens", token, {"name": "hot", "scopes": ["repo"]}).json
    for _ in range(3):
        assert api(server, "GET", "/user", extra["token"]).status == 200
    assert ext(server, "DELETE", "/user/tokens/%d" % extra["id"], token).status == 204
    assert api(server, "GET", "/user", extra["token"]).status == 401
    # another process: the CLI suspends alice while the server keeps running
    assert api(server, "GET", "/user", token).status == 200
    subprocess.run([*CLI, "user", "suspend", "alice", "--data",
                    server.app.config.data_dir], check=True, capture_output=True)
    time.sleep(agentgit.OTHER_PROCESS_POLL * 2)
    r = api(server, "GET", "/user", token)
    assert r.status == 403 and "suspended" in r.json["message"]


def test_missing_scope_is_403_with_accepted_scopes(server):
    """A token without the scope an endpoint needs gets 403 and X-Accepted-OAuth-Scopes (gh turns it into
    a hint), and a private repository stays hidden from a token without 'repo'."""
    token = server.add_user("alice")
    api(server, "POST", "/user/repos", token, {"name": "secret", "private": True})
    api(server, "POST", "/user/repos", token, {"name": "open"})
    narrow = ext(server, "POST", "/user/tokens", token, {"name": "read-org", "scopes": ["read:org"]}).json["token"]
    r = api(server, "DELETE", "/repos/alice/open", narrow)
    assert r.status == 403 and r.headers["x-accepted-oauth-scopes"] == "delete_repo"
    assert "delete_repo" in r.json["message"]
    assert api(server, "GET", "/repos/alice/secret", narrow).status == 404
    assert api(server, "GET", "/repos/alice/open", narrow).status == 200
    r = api(server, "PATCH", "/repos/alice/open", narrow, {"description": "x"})
    assert r.status == 403 and r.headers["x-accepted-oauth-scopes"] == "public_repo"
