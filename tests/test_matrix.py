"""The authorization matrix: every route in the route table, called by every kind of principal, answers
the class the table below expects (pass = got past authorization: 2xx, 3xx or a 4xx about the
request itself; 401, 403 or 404 = refused). A route added without an entry in ROUTE_ACCESS fails.

The world: alice owns the private repository alice/secret and the organization acme (private
acme/orgrepo); rita reads and walt writes alice/secret; olga is an outsider; mona is a member of
acme; sam wrote alice/secret and is suspended; alice's agent bot holds push on alice/secret and
alice/other through her invite, and a task grant on each. Every principal calls with its credential
in the Authorization header, as API clients send it."""
import base64
import json
import os
import shutil
import urllib.parse

from conftest import api, call, ext, sweep      # first: it puts the build under test on the path
import agentgit  # noqa: E402

pytestmark = sweep

# An RSA public key the bot signs client assertions with (its private half thrown away)
WORLD_JWK = {"kty": "RSA", "e": "AQAB", "n": "w51wk-Ui18_1B9pat9-lTauaer8HQEX04QtaTpXxWrVGMbnk-k33emk4MShROFg2QY0TnSjbCubk9mbSy5nTl7wDy9sCTFooX_HsqJQ6O-wsl-pU5FBXrTEr3eJJf2CdvZorm6KSkhgHUSbvWsotlzF0NzgU7ofJPZxLuzPQMY"
             "hggbd3G-qYAk32n_sDQmcyutt1OM38vDNODr1Mco9QCIYVQK3Zydrp-h-PI70RjCgg_5hCbU6DLI1kjf5F9XfWsf7ZhOSShuWrWGAcVY0WeJA9RTGVOBRyhHpdmsP6puEpXYObrqzX76VImhgxY6sJ8MUWNlwqTQTnA3EyFxPRVQ"}

# Two public keys from ssh-keygen -t ed25519 (their private halves thrown away): one the world
# registers, one a cell may add
DEPLOY_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMoLuQae0kkbqYxRJXdWbeQogVAxb0cK07QHBeDIkccE ci"
OTHER_DEPLOY_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEjMWbo+iwrUQoEykR6DgxElDYxWGMI3Bd1uLG+vzvqX cd"

# The principals, in the order of the columns below.
PRINCIPALS = ("anonymous", "owner", "outsider", "reader", "writer", "org_member", "agent_bootstrap",
              "agent_session", "task_inside", "task_outside", "switch_session", "suspended", "revoked", "expired",
              "forged", "foreign")


def build_world(data_dir):
    """The world above, in ``data_dir``; returns {principal: token or None} and the ids routes need."""
    srv = agentgit.make_server(data_dir, port=0, egress_allow_loopback=True).start()
    try:
        admin = srv.admin[1]
        alice, rita, walt, olga, mona, sam = (srv.add_user(n, password="pw") for n in (
            "alice", "rita", "walt", "olga", "mona", "sam"))
        for name in ("secret", "other"):
            assert api(srv, "POST", "/user/repos", alice, {"name": name, "private": True, "auto_init": True}).status == 201
        for login, permission in (("rita", "pull"), ("walt", "push"), ("sam", "push")):
            assert api(srv, "PUT", "/repos/alice/secret/collaborators/" + login, alice,
                       {"permission": permission}).status in (201, 204)
        assert ext(srv, "POST", "/user/orgs", alice, {"login": "acme"}).status == 201
        assert api(srv, "POST", "/orgs/acme/repos", alice, {"name": "orgrepo", "private": True}).status == 201
        assert api(srv, "PUT", "/orgs/acme/memberships/mona", alice, {"role": "member"}).status == 200
        assert api(srv, "POST", "/orgs/acme/teams", alice, {"name": "devs"}).status == 201
        assert api(srv, "PUT", "/orgs/acme/teams/devs/memberships/mona", alice, {}).status == 200
        assert api(srv, "PUT", "/orgs/acme/teams/devs/repos/acme/orgrepo", alice, {"permission": "pull"}).status == 204
        # alice/secret's objects
        main = api(srv, "GET", "/repos/alice/secret/branches/main", alice).json["commit"]["sha"]
        workflow = base64.b64encode(b"name: CI\non: [push, workflow_dispatch]\n").decode()
        assert api(srv, "PUT", "/repos/alice/secret/contents/.github/workflows/ci.yml", alice,
                   {"message": "ci", "content": workflow}).status == 201
        main = api(srv, "GET", "/repos/alice/secret/branches/main", alice).json["commit"]["sha"]
        assert api(srv, "POST", "/repos/alice/secret/git/refs", alice, {"ref": "refs/heads/feature", "sha": main}).status == 201
        assert api(srv, "PUT", "/repos/alice/secret/contents/f.txt", alice, {
            "message": "f", "content": base64.b64encode(b"f\n").decode(), "branch": "feature"}).status == 201
        issue = api(srv, "POST", "/repos/alice/secret/issues", alice, {"title": "bug", "labels": ["bug"]}).json
        comment = api(srv, "POST", "/repos/alice/secret/issues/1/comments", alice, {"body": "hi"}).json
        pull = api(srv, "POST", "/repos/alice/secret/pulls", alice, {"title": "f", "head": "feature", "base": "main"}).json
        review = api(srv, "POST", "/repos/alice/secret/pulls/2/reviews", walt, {
            "event": "COMMENT", "body": "ok", "comments": [{"path": "f.txt", "line": 1, "body": "this line"}]}).json
        review_comment = api(srv, "GET", "/repos/alice/secret/pulls/2/comments", walt).json[0]["id"]
        deployment = api(srv, "POST", "/repos/alice/secret/deployments", alice, {"ref": "main"}).json["id"]
        hook = api(srv, "POST", "/repos/alice/secret/hooks", alice, {"config": {"url": "http://127.0.0.1:9/x"}}).json["id"]
        delivery = api(srv, "GET", "/repos/alice/secret/hooks/%d/deliveries" % hook, alice).json[0]["id"]   # its ping
        org_hook = api(srv, "POST", "/orgs/acme/hooks", alice, {"config": {"url": "http://127.0.0.1:9/o"}}).json["id"]
        org_delivery = api(srv, "GET", "/orgs/acme/hooks/%d/deliveries" % org_hook, alice).json[0]["id"]
        deployment_status = api(srv, "POST", "/repos/alice/secret/deployments/%d/statuses" % deployment, alice,
                                {"state": "inactive"}).json["id"]
        reactions = {kind: api(srv, "POST", "/repos/alice/secret/%s/reactions" % path, alice, {"content": "+1"}).json["id"]
                     for kind, path in (("issues/{number", "issues/1"), ("issues/comments", "issues/comments/%d" % comment[
                         "id"]), ("pulls/comments", "pulls/comments/%d" % review_comment))}
        epic = api(srv, "POST", "/repos/alice/secret/issues", alice, {"title": "epic"}).json     # #1's parent
        assert api(srv, "POST", "/repos/alice/secret/issues/%d/sub_issues" % epic["number"], alice,
                   {"sub_issue_id": issue["id"]}).status == 201
        assert api(srv, "POST", "/repos/alice/secret/milestones", alice, {"title": "v1"}).status == 201
        assert api(srv, "PATCH", "/repos/alice/secret/issues/1", alice, {"milestone": 1}).status == 200
        event = api(srv, "GET", "/repos/alice/secret/issues/1/events", alice).json[0]["id"]       # milestoned
        release = api(srv, "POST", "/repos/alice/secret/releases", alice, {"tag_name": "v1"}).json
        asset = call(srv, "POST", "/api/uploads/repos/alice/secret/releases/%d/assets?name=a.txt" % release["id"], alice,
                     raw_body=b"asset", headers={"Content-Type": "text/plain"}).json
        check = api(srv, "POST", "/repos/alice/secret/check-runs", alice, {"name": "ci", "head_sha": main}).json
        assert api(srv, "POST", "/repos/alice/secret/actions/variables", alice, {"name": "VAR", "value": "v"}).status == 201
        assert api(srv, "POST", "/repos/alice/secret/actions/workflows/ci.yml/dispatches", alice,
                   {"ref": "main"}).status == 204
        run = api(srv, "GET", "/repos/alice/secret/actions/runs", alice).json["workflow_runs"][0]
        with srv.app.store.transaction() as db:     # a job as the executor records one (the world runs no act)
            job = db.execute("INSERT INTO workflow_jobs (run_id, run_attempt, job_key, name, status, conclusion, steps,"
                             " log, step_lines, started_at, completed_at, created_at) VALUES (?, 1, 'build', 'build',"
                             " 'completed', 'success', '[]', '', '[]', ?, ?, ?)", (run["id"],) + (run["created_at"],) * 3
                             ).lastrowid
            cache = db.execute("INSERT INTO caches (repo_id, key, ref, size_in_bytes, archive, created_at,"
                               " last_accessed_at) VALUES (?, 'deps', 'refs/heads/main', 22, ?, ?, ?)",
                               (run["repository"]["id"], b"PK\x05\x06" + b"\0" * 18, run["created_at"],
                                run["created_at"])).lastrowid
            artifact = db.execute("INSERT INTO artifacts (repo_id, run_id, run_attempt, name, size_in_bytes, digest,"
                                  " archive, created_at, expires_at) VALUES (?, ?, 1, 'dist', 22, 'sha256:0', ?, ?,"
                                  " '9999-12-31T00:00:00Z')", (run["repository"]["id"], run["id"],
                                                               b"PK\x05\x06" + b"\0" * 18, run["created_at"])).lastrowid
        assert api(srv, "PUT", "/repos/alice/secret/branches/main/protection", alice, {
            "required_status_checks": None, "enforce_admins": False, "required_pull_request_reviews": None,
            "restrictions": None}).status == 200
        # the agent: bound to alice with push on both her repositories, a task on each
        bot, bootstrap, _ = srv.add_agent("bot")
        invite = ext(srv, "POST", "/agent-invites", alice, {"repo_grants": [
            {"repo_full_name": "alice/secret", "permission": "push"},
            {"repo_full_name": "alice/other", "permission": "push"}]}).json["invite_token"]
        assert ext(srv, "POST", "/agent-bindings/confirm", bootstrap, {"invite_token": invite}).status == 201
        # (registered once bound, the key waits for alice's approval)
        assert ext(srv, "POST", "/agent-keys", bootstrap, {"jwk": dict(WORLD_JWK, kid="world-key")}).json["state"] == \
            "pending"
        # the world's site lifts the default guardrails (tests/test_guardrails.py holds them), so that its
        # task tokens hold every action, and each cell says what the rest of decide() answers
        with srv.app.store.transaction() as db:
            db.execute("INSERT INTO settings (name, value) VALUES ('agent_policy:site', '{}')")
        tasks = {}
        for name in ("secret", "other"):
            grant = ext(srv, "POST", "/task-grants", alice, {
                "agent": "agent:" + bot, "delegator": "user:alice", "task": "task:work-on-" + name,
                "resources": ["repo:alice/" + name], "actions": list(agentgit.TASK_ACTIONS),
                # the world's hooks deliver to a closed loopback port, which the task may reach
                "constraints": {"requires_approval": ["manage_labels"]} if name == "other" else {
                    "network_allowlist": ["http://127.0.0.1:9"]}}).json
            tasks[name] = grant
        session = urllib.parse.urlencode({"grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
                                          "subject_token": bootstrap, "resource": srv.url})
        exchanged = call(srv, "POST", "/login/oauth/access_token", raw_body=session.encode(), headers={
            "Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}).json
        minted = {name: ext(srv, "POST", "/task-grants/%s/tokens" % g["id"], bootstrap, {}).json["token"]
                  for name, g in tasks.items()}
        switch = ext(srv, "POST", "/agent-bindings/%s/switch-session" % bot, alice, {}).json["token"]
        # alice's GitHub App, installed on alice/secret
        assert ext(srv, "POST", "/apps", alice, {"name": "world-bot", "default_permissions": {"issues": "write"}}).status == 201
        installation = ext(srv, "POST", "/apps/world-bot/installations", alice, {
            "repository_selection": "selected", "repositories": ["secret"]}).json["id"]
        asked = api(srv, "POST", "/repos/alice/other/labels", minted["other"], {"name": "needs-a-yes"})
        assert asked.status == 403, asked
        approval_id = asked.json["approval_id"]
        tag = api(srv, "POST", "/repos/alice/secret/git/tags", alice, {"tag": "t1", "message": "t", "object": main,
                                                                     "type": "commit"}).json["sha"]
        tree = api(srv, "GET", "/repos/alice/secret/git/commits/" + main, alice).json["tree"]["sha"]
        blob = api(srv, "GET", "/repos/alice/secret/contents/README.md", alice).json["sha"]
        key_id = api(srv, "GET", "/repos/alice/secret/actions/secrets/public-key", alice).json["key_id"]
        assert api(srv, "PUT", "/repos/alice/secret/actions/secrets/TOKEN", alice, {
            "encrypted_value": base64.b64encode(os.urandom(60)).decode(), "key_id": key_id}).status == 201
        # an environment with its own secret and variable; acme's, for its selected repository; a deploy key
        assert api(srv, "PUT", "/repos/alice/secret/environments/production", alice, {}).status == 200
        env = "/repos/alice/secret/environments/production"
        assert api(srv, "PUT", env + "/secrets/TOKEN", alice, {
            "encrypted_value": base64.b64encode(os.urandom(60)).decode(), "key_id": key_id}).status == 201
        assert api(srv, "POST", env + "/variables", alice, {"name": "VAR", "value": "v"}).status == 201
        orgrepo = api(srv, "GET", "/repos/acme/orgrepo", alice).json["id"]
        assert api(srv, "PUT", "/orgs/acme/actions/secrets/TOKEN", alice, {
            "encrypted_value": base64.b64encode(os.urandom(60)).decode(), "key_id": key_id, "visibility": "selected",
            "selected_repository_ids": [orgrepo]}).status == 201
        assert api(srv, "POST", "/orgs/acme/actions/variables", alice, {
            "name": "VAR", "value": "v", "visibility": "selected", "selected_repository_ids": [orgrepo]}).status == 201
        deploy_key = api(srv, "POST", "/repos/alice/secret/keys", alice, {"title": "ci", "key": DEPLOY_KEY}).json["id"]
        secret_repo = api(srv, "GET", "/repos/alice/secret", alice).json["id"]
        credential = ext(srv, "POST", "/broker/credentials", alice, {
            "name": "jira", "kind": "api_key", "base_url": "https://jira.example.com", "value": "k", "header": "X-Key"})
        assert credential.status == 201
        runtime_revocation = ext(srv, "POST", "/revocations", alice, {"runtime": "spiffe://world.example/*"}).json
        assert api(srv, "POST", "/repos/alice/secret/git/refs", alice, {"ref": "refs/heads/done", "sha": main}).status == 201
        assert api(srv, "PUT", "/repos/alice/secret/contents/d.txt", alice, {
            "message": "d", "content": base64.b64encode(b"d\n").decode(), "branch": "done"}).status == 201
        merged = api(srv, "POST", "/repos/alice/secret/pulls", alice, {"title": "d", "head": "done", "base": "main"}).json
        assert api(srv, "PUT", "/repos/alice/secret/pulls/%d/merge" % merged["number"], alice, {}).status == 200
        main = api(srv, "GET", "/repos/alice/secret/branches/main", alice).json["commit"]["sha"]
        alices_row = srv.app.store.one("SELECT MAX(id) AS id FROM audit WHERE actor = 'alice'")["id"]
        freeze = ext(srv, "POST", "/freezes", alice, {"resource": "repo:alice/other", "reason": "audit"}).json
        revoked = ext(srv, "POST", "/user/tokens", rita, {"name": "old", "scopes": ["repo"]}).json
        assert ext(srv, "DELETE", "/user/tokens/%d" % revoked["id"], rita).status == 204
        with srv.app.store.transaction() as db:
            expired, _ = agentgit.issue_token(db, srv.app.key, srv.app.store.one(
                "SELECT id FROM accounts WHERE login = 'walt'")["id"], "personal", scopes=["repo"],
                expires_at="2020-01-01T00:00:00Z")
        assert api(srv, "PUT", "/users/sam/suspended", admin).status == 204
        client = ext(srv, "POST", "/oauth/apps", alice, {"name": "cli", "redirect_uris": []}).json["client_id"]
        device = call(srv, "POST", "/login/device/code", raw_body=b"client_id=" + client.encode(), headers={
            "Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}).json
        forged = agentgit.mint_token(b"k" * 32, "agp")
        foreign = agentgit.mint_token(os.urandom(32), "agp")
        tokens = {"anonymous": None, "owner": alice, "outsider": olga, "reader": rita, "writer": walt,
                  "org_member": mona, "agent_bootstrap": bootstrap, "agent_session": exchanged["access_token"],
                  "task_inside": minted["secret"], "task_outside": minted["other"], "switch_session": switch,
                  "suspended": sam, "revoked": revoked["token"], "expired": expired,
                  "forged": forged[:-6] + "abcdef", "foreign": foreign}
        thread = api(srv, "GET", "/notifications", alice).json[0]["id"]     # walt reviewed her pull request
        ids = {"issue": issue["number"], "comment": comment["id"], "pull": pull["number"], "review": review["id"],
               "review_comment": review_comment, "reactions": reactions, "deployment": deployment, "event": event, "hook": hook,
               "delivery": delivery, "org_hook": org_hook, "org_delivery": org_delivery,
               "deployment_status": deployment_status,
               "thread": thread, "epic": epic["id"],
               "release": release["id"], "asset": asset["id"], "check": check["id"], "run": run["id"],
               "sha": main, "bot": bot, "grant": tasks["secret"]["id"], "freeze": freeze["id"],
               "token": revoked["id"], "approval": approval_id, "admin": admin, "tag": tag, "tree": tree,
               "blob": blob, "key_id": key_id, "merged": merged["number"], "audit_row": alices_row,
               "orgrepo": orgrepo, "deploy_key": deploy_key, "secret_repo": secret_repo,
               "credential": credential.json["id"], "runtime_revocation": runtime_revocation["revocation"],
               "user_code": device["user_code"], "installation": installation, "job": job, "artifact": artifact, "cache": cache}
        return tokens, ids
    finally:
        srv.stop()


def route_path(method, pattern, ids):
    """``pattern`` with each placeholder filled by an object of the world that the route can act on."""
    fill = {"owner": "alice", "repo": "secret", "org": "acme", "slug": "devs", "branch": "main", "tag": "v1",
            "workflow_id": "ci.yml", "approval_id": ids["approval"], "freeze_id": ids["freeze"],
            "grant_id": ids["grant"], "token_id": ids["token"], "audit_id": ids["audit_row"], "basehead": "main...feature",
            "comment_id": ids["review_comment" if "/pulls/" in pattern else "comment"],
            "review_comment_id": ids["review_comment"], "release_id": ids["release"], "asset_id": ids["asset"],
            "review_id": ids["review"], "thread_id": ids["thread"], "kid": "world-key",
            "credential_id": ids["credential"], "revocation_id": ids["runtime_revocation"], "path": "README.md", "environment": "production",
            "repository_id": ids["orgrepo"] if "/orgs/" in pattern else ids["secret_repo"],
            "app_slug": "world-bot", "installation_id": ids["installation"], "code": "bogus", "username": "alice",
            "job_id": ids["job"], "attempt_number": 1, "artifact_id": ids["artifact"], "archive_format": "zip",
            "cache_id": ids["cache"]}
    if "/teams/{slug}/repos/" in pattern:
        fill.update(owner="acme", repo="orgrepo")
    fill["login"] = ("bot" if "/agent" in pattern else "olga" if pattern.endswith("/suspended") else
                     "walt" if "/collaborators/" in pattern else "mona" if "/orgs/" in pattern else "rita")
    if fill["login"] == "bot":
        fill["login"] = ids["bot"]
    fill["number"] = (ids["merged"] if pattern.endswith("/merge") and method == "GET" else ids["pull"]
                      if "/pulls/" in pattern else 1)
    fill["run_id"] = ids["check"] if "/check-runs/" in pattern else ids["run"]
    fill["key_id"] = ids["deploy_key"]
    fill["deployment_id"], fill["status_id"] = ids["deployment"], ids["deployment_status"]
    fill["event_id"], fill["hook_id"], fill["delivery_id"] = ids["event"], ids["hook"], ids["delivery"]
    if pattern.startswith("/api/v3/orgs/{org}/hooks"):
        fill["hook_id"], fill["delivery_id"] = ids["org_hook"], ids["org_delivery"]
    fill["reaction_id"] = next((ids["reactions"][kind] for kind in ids["reactions"] if "/%s" % kind in pattern), 0)
    fill["sha"] = {"blobs": ids["blob"], "trees": ids["tree"], "tags": ids["tag"]}.get(
        pattern.split("/")[-2], ids["sha"])
    fill["rest"] = "main/README.md" if "/blob/" in pattern or "raw/" in pattern else "main"
    fill["ref"] = ("main" if "/commits/" in pattern or "ball/" in pattern else "heads/" if "matching-refs" in pattern else
                   "heads/feature" if method != "GET" else "heads/main")
    fill["name"] = ("TOKEN" if "/secrets/" in pattern else "VAR" if "/variables/" in pattern else
                    "a.txt" if "/download/" in pattern else "bug")
    path = pattern
    for placeholder in [p for p in pattern.split("/") if p.startswith("{")]:
        path = path.replace(placeholder, urllib.parse.quote(str(fill[placeholder[1:-1].split(":")[0]]), safe="/."), 1)
    if path.endswith("/info/refs"):
        path += "?service=git-upload-pack"
    if "/api/uploads/" in path:
        path += "?name=b.txt"
    if "/search/" in path:
        path += "?q=bug"
    if path.endswith(("/api/ext/v1/policy", "/access-review")):
        path += "?resource=repo:alice/secret"
    return path


def answer_class(status):
    return str(status) if status in (401, 403, 404) or status >= 500 else "pass"


# Who may not know alice/secret exists: no answer to them may name it. (bot may: it holds push
# there, whichever of its tokens it calls with.)
NOT_READERS = {"anonymous", "outsider", "org_member", "suspended", "revoked", "expired", "forged", "foreign"}


def observe(template, tokens, ids, routes):
    """({(method, pattern): [class per principal]}, [cells whose answer named alice/secret to someone
    who may not read it]): each cell a real request; the world is restored from ``template`` after a
    change that could change what the next cell sees."""
    data = str(template) + "-live"
    shutil.copytree(template, data)
    srv = agentgit.make_server(data, port=0, egress_allow_loopback=True).start()
    table, leaks = {}, []
    try:
        for method, pattern in routes:
            row = []
            for principal in PRINCIPALS:
                headers = {"Authorization": "token " + tokens[principal]} if tokens[principal] else {}
                raw = json.dumps(route_body(method, pattern, ids)).encode() if method != "GET" else None
                headers["Content-Type"] = "application/json"
                r = call(srv, method, route_path(method, pattern, ids), raw_body=raw, headers=headers)
                row.append(answer_class(r.status))
                if principal in NOT_READERS and b"alice/secret" in r.raw:
                    leaks.append("%s %s as %s: %r" % (method, pattern, principal, r.raw[:200]))
                if method != "GET" and 200 <= r.status < 300 and (method, pattern) not in HARMLESS:
                    srv.stop()
                    shutil.rmtree(data)
                    shutil.copytree(template, data)
                    srv = agentgit.make_server(data, port=0, egress_allow_loopback=True).start()
            table[method, pattern] = row
    finally:
        srv.stop()
    return table, leaks


def route_body(method, pattern, ids):
    """A request body the route would act on (for a caller allowed to), so a refusal is authorization's."""
    repo = "/api/v3/repos/{owner}/{repo}"
    env, org = repo + "/environments/{environment}", "/api/v3/orgs/{org}/actions"
    env_by_id = "/api/v3/repositories/{repository_id:int}/environments/{environment}"
    sealed = base64.b64encode(os.urandom(60)).decode()
    bodies = {
        ("DELETE", repo + "/contents/{path:path}"): {"message": "m", "sha": ids["blob"]},
        ("DELETE", repo + "/pulls/{number:int}/requested_reviewers"): {"reviewers": ["walt"]},
        ("PATCH", "/api/ext/v1/agent-bindings/{login}"): {"display_name": "Bot"},
        ("PUT", repo + "/topics"): {"names": ["payments"]},
        ("POST", repo + "/dispatches"): {"event_type": "release"},
        ("PATCH", "/api/v3/orgs/{org}"): {"name": "Acme"},
        ("PATCH", "/api/v3/orgs/{org}/teams/{slug}"): {"description": "d"},
        ("PATCH", repo): {"description": "d"},
        ("PATCH", repo + "/actions/variables/{name}"): {"value": "v2"},
        ("PATCH", repo + "/check-runs/{run_id:int}"): {"status": "in_progress"},
        ("PATCH", repo + "/git/refs/{ref:path}"): {"sha": ids["sha"], "force": True},
        ("PATCH", repo + "/issues/comments/{comment_id:int}"): {"body": "edited"},
        ("PATCH", repo + "/issues/{number:int}"): {"title": "bug!"},
        ("PATCH", repo + "/labels/{name}"): {"color": "ffffff"},
        ("PATCH", repo + "/milestones/{number:int}"): {"title": "v1!"},
        ("PATCH", repo + "/pulls/{number:int}"): {"title": "f!"},
        ("PATCH", repo + "/releases/assets/{asset_id:int}"): {"label": "l"},
        ("PATCH", repo + "/releases/{release_id:int}"): {"name": "r"},
        ("POST", "/api/ext/v1/agent-bindings/confirm"): {"invite_token": "agi_" + "0" * 40},
        ("POST", "/api/ext/v1/agents"): {"prefix_login": "new"},
        ("POST", "/api/ext/v1/freezes"): {"resource": "repo:alice/secret", "reason": "incident"},
        ("POST", "/api/ext/v1/policy/simulate"): {"principal": "user:alice", "action": "read_code",
                                                  "resource": "repo:alice/secret"},
        ("POST", "/api/ext/v1/oauth/apps"): {"name": "app", "redirect_uris": ["http://127.0.0.1/cb"]},
        ("POST", "/api/ext/v1/oauth/device/approve"): {"user_code": ids["user_code"]},
        ("POST", "/api/ext/v1/revocations"): {"agent": ids["bot"]},
        ("POST", "/api/ext/v1/step-up"): {"otp": "000000"},
        ("POST", "/api/ext/v1/task-grants"): {"agent": "agent:" + ids["bot"], "delegator": "user:alice",
                                              "task": "task:more", "resources": ["repo:alice/secret"],
                                              "actions": ["read_code"], "constraints": {}},
        ("POST", "/api/ext/v1/task-grants/revocations"): {"task": "task:work-on-secret"},
        ("POST", "/api/ext/v1/user/orgs"): {"login": "neworg"},
        ("POST", "/api/ext/v1/user/tokens"): {"name": "t", "scopes": ["repo"]},
        ("POST", "/api/graphql"): {"query": "{ viewer { login } }"},
        ("POST", "/api/v3/orgs/{org}/repos"): {"name": "new"},
        ("POST", "/api/v3/orgs/{org}/teams"): {"name": "ops"},
        ("POST", "/api/v3/user/repos"): {"name": "new"},
        ("POST", repo + "/actions/variables"): {"name": "V2", "value": "x"},
        ("POST", repo + "/actions/workflows/{workflow_id}/dispatches"): {"ref": "main"},
        ("POST", repo + "/check-runs"): {"name": "c", "head_sha": ids["sha"]},
        ("POST", repo + "/git/blobs"): {"content": "x"},
        ("POST", repo + "/git/commits"): {"message": "m", "tree": ids["tree"], "parents": [ids["sha"]]},
        ("POST", repo + "/git/refs"): {"ref": "refs/heads/new", "sha": ids["sha"]},
        ("POST", repo + "/git/tags"): {"tag": "t2", "message": "m", "object": ids["sha"], "type": "commit"},
        ("POST", repo + "/git/trees"): {"tree": [{"path": "x", "mode": "100644", "type": "blob", "content": "x"}]},
        ("POST", repo + "/issues"): {"title": "t"},
        ("POST", repo + "/issues/{number:int}/comments"): {"body": "b"},
        ("POST", repo + "/issues/{number:int}/labels"): {"labels": ["bug"]},
        ("POST", repo + "/labels"): {"name": "l"},
        ("POST", repo + "/merge-upstream"): {"branch": "main"},
        ("POST", repo + "/milestones"): {"title": "v2"},
        ("POST", repo + "/pulls"): {"title": "t", "head": "feature", "base": "main"},
        ("POST", repo + "/pulls/{number:int}/requested_reviewers"): {"reviewers": ["walt"]},
        ("POST", repo + "/pulls/{number:int}/reviews"): {"event": "COMMENT", "body": "b"},
        ("POST", repo + "/pulls/{number:int}/comments"): {"body": "b", "path": "f.txt", "line": 1},
        ("POST", repo + "/deployments"): {"ref": "main", "required_contexts": []},
        ("POST", repo + "/hooks"): {"config": {"url": "http://127.0.0.1:9/x"}},
        ("POST", "/api/v3/orgs/{org}/hooks"): {"config": {"url": "http://127.0.0.1:9/o"}},
        ("POST", repo + "/deployments/{deployment_id:int}/statuses"): {"state": "success"},
        ("POST", repo + "/issues/{number:int}/reactions"): {"content": "heart"},
        ("POST", repo + "/issues/comments/{comment_id:int}/reactions"): {"content": "heart"},
        ("POST", repo + "/pulls/comments/{review_comment_id:int}/reactions"): {"content": "heart"},
        ("POST", repo + "/pulls/{number:int}/comments/{comment_id:int}/replies"): {"body": "b"},
        ("POST", repo + "/issues/{number:int}/sub_issues"): {"sub_issue_id": ids["epic"]},
        ("DELETE", repo + "/issues/{number:int}/sub_issue"): {"sub_issue_id": ids["epic"]},
        ("PATCH", repo + "/issues/{number:int}/sub_issues/priority"): {"sub_issue_id": ids["epic"], "after_id": 1},
        ("POST", repo + "/releases"): {"tag_name": "v2"},
        ("POST", repo + "/statuses/{sha}"): {"state": "success"},
        ("PUT", "/api/v3/orgs/{org}/memberships/{login}"): {"role": "admin"},
        ("PUT", "/api/v3/orgs/{org}/teams/{slug}/repos/{owner}/{repo}"): {"permission": "push"},
        ("PUT", repo + "/actions/secrets/{name}"): {"encrypted_value": sealed, "key_id": ids["key_id"]},
        ("PUT", env + "/secrets/{name}"): {"encrypted_value": sealed, "key_id": ids["key_id"]},
        ("PUT", env_by_id + "/secrets/{name}"): {"encrypted_value": sealed, "key_id": ids["key_id"]},
        ("PUT", org + "/secrets/{name}"): {"encrypted_value": sealed, "key_id": ids["key_id"], "visibility": "all"},
        ("POST", env + "/variables"): {"name": "V2", "value": "x"},
        ("POST", env_by_id + "/variables"): {"name": "V2", "value": "x"},
        ("POST", org + "/variables"): {"name": "V2", "value": "x", "visibility": "all"},
        ("PUT", org + "/secrets/{name}/repositories"): {"selected_repository_ids": [ids["orgrepo"]]},
        ("PUT", org + "/variables/{name}/repositories"): {"selected_repository_ids": [ids["orgrepo"]]},
        ("POST", repo + "/keys"): {"title": "t", "key": OTHER_DEPLOY_KEY},
        ("POST", "/api/ext/v1/broker/credentials"): {"name": "ci", "kind": "basic", "base_url": "https://ci.example",
                                                     "username": "u", "password": "p"},
        ("PUT", "/api/ext/v1/broker/credentials/{credential_id}/secret"): {"value": "k2", "header": "X-Key"},
        ("POST", "/api/ext/v1/broker/tokens"): {"credential": ids["credential"]},
        ("PUT", repo + "/branches/{branch:path}/protection"): {
            "required_status_checks": None, "enforce_admins": True, "required_pull_request_reviews": None,
            "restrictions": None},
        ("PUT", repo + "/collaborators/{login}"): {"permission": "admin"},
        ("PUT", repo + "/contents/{path:path}"): {"message": "m", "content": "eA==", "sha": ids["blob"]},
        ("PUT", repo + "/issues/{number:int}/labels"): {"labels": ["bug"]},
        ("PUT", repo + "/pulls/{number:int}/merge"): {"merge_method": "merge"},
    }
    return bodies.get((method, pattern), {})


# Routes whose success leaves the world as the next cell needs it (a second issue, a label already
# there); after any other change the world is restored.
HARMLESS = {(m, "/api/v3/repos/{owner}/{repo}" + p) for m, p in (
    ("POST", "/issues"), ("POST", "/issues/{number:int}/comments"), ("POST", "/labels"), ("POST", "/milestones"),
    ("POST", "/releases"), ("POST", "/statuses/{sha}"), ("POST", "/check-runs"), ("POST", "/git/blobs"),
    ("POST", "/git/trees"), ("POST", "/git/commits"), ("POST", "/git/tags"), ("POST", "/git/refs"),
    ("POST", "/pulls/{number:int}/reviews"), ("POST", "/actions/variables"), ("PATCH", "/issues/{number:int}"),
    ("PATCH", "/labels/{name}"), ("PATCH", "/milestones/{number:int}"), ("PATCH", "/pulls/{number:int}"),
    ("PATCH", "/releases/{release_id:int}"), ("PATCH", "/releases/assets/{asset_id:int}"),
    ("PATCH", "/check-runs/{run_id:int}"), ("PATCH", "/actions/variables/{name}"),
    ("PATCH", "/issues/comments/{comment_id:int}"), ("PATCH", ""),
    ("POST", "/actions/workflows/{workflow_id}/dispatches"), ("POST", "/actions/runs/{run_id:int}/cancel"),
    ("POST", "/actions/runs/{run_id:int}/rerun"), ("POST", "/pulls/{number:int}/requested_reviewers"),
    ("POST", "/issues/{number:int}/labels"), ("PUT", "/issues/{number:int}/labels"),
    ("PUT", "/actions/secrets/{name}"))} | {
    ("POST", "/api/ext/v1/user/tokens"), ("POST", "/api/ext/v1/user/orgs"), ("POST", "/api/ext/v1/task-grants"),
    ("POST", "/api/ext/v1/agent-invites"), ("POST", "/api/ext/v1/oauth/apps"), ("POST", "/login/device/code"),
    ("POST", "/api/graphql"), ("PATCH", "/api/v3/orgs/{org}"), ("PATCH", "/api/v3/orgs/{org}/teams/{slug}"),
    ("PATCH", "/api/ext/v1/agent-bindings/{login}"), ("POST", "/api/ext/v1/agents")}


# What each kind of route answers each principal, column by column in the order of PRINCIPALS:
# anonymous owner outsider reader writer org_member agent_bootstrap agent_session task_inside
# task_outside switch_session suspended revoked expired forged foreign. Revoked, expired, forged and
# foreign tokens are 401 on every API route; a suspended account is 403 on every one.
EXPECTED = {
    # anyone, signed in or not; a task token too (it may ask who it is, and what the server is)
    "public":                 "pass pass pass pass pass pass pass pass pass pass pass 403 401 401 401 401",
    # public accounts and their listings: outside a task token's repositories
    "public_outside_tasks":   "pass pass pass pass pass pass pass pass 403 403 pass 403 401 401 401 401",
    # a public document, or a request that names its client: credentials are not read, so none is refused
    "credentials_unread":     "pass pass pass pass pass pass pass pass pass pass pass pass pass pass pass pass",
    # web pages sign in with a session cookie: a token in the Authorization header is no one there
    "web_page":               "pass pass pass pass pass pass pass pass pass pass pass pass pass pass pass pass",
    # so a private repository's pages are not there for any of them (a session may show them)
    "web_private":            "404 404 404 404 404 404 404 404 404 404 404 404 404 404 404 404",
    "signed_in":              "401 pass pass pass pass pass pass pass pass pass pass 403 401 401 401 401",
    # /mcp takes the tokens issued for it: not an agent's bootstrap token, nor a session token for the API
    "mcp":                    "401 pass pass pass pass pass 401 401 pass pass pass 403 401 401 401 401",
    "mcp_public":             "pass pass pass pass pass pass 401 401 pass pass pass 403 401 401 401 401",
    "signed_in_untasked":     "401 pass pass pass pass pass pass pass 403 403 pass 403 401 401 401 401",
    # humans only: an agent's token, a task token and a switch session are refused
    "humans":                 "401 pass pass pass pass pass 403 403 403 403 403 403 401 401 401 401",
    "humans_and_switch":      "401 pass pass pass pass pass 403 403 403 403 pass 403 401 401 401 401",
    # alice/secret, private: 404 for who may not know it exists; the bootstrap token acts only on
    # its own account; the task token inside its grant may do all the grant names
    # a reaction is removed by whoever made it (alice): to anyone else who may react there, it is not found
    "reaction_owner":         "404 pass 404 404 404 404 403 404 404 404 404 403 401 401 401 401",
    "repo_read":              "404 pass 404 pass pass 404 403 pass pass 404 pass 403 401 401 401 401",
    # an agent outside a task holds read at most on what is not its own (--agent-standing-access read, the
    # default): its session token, and a switch session into it, write nothing of alice's
    "repo_write":             "404 pass 404 403 pass 404 403 403 pass 404 403 403 401 401 401 401",
    # main is protected: agents change it through pull requests only
    "protected_branch_write": "404 pass 404 403 pass 404 403 403 403 404 403 403 401 401 401 401",
    "repo_admin":             "404 pass 404 403 403 404 403 403 pass 404 403 403 401 401 401 401",
    # a fork is a new repository outside the task's grant
    "repo_fork":              "404 pass 404 pass pass 404 403 pass 403 404 pass 403 401 401 401 401",
    # git asks anonymous callers for credentials (401) before it says anything
    "git_read":               "401 pass 404 pass pass 404 403 pass pass 404 pass 403 401 401 401 401",
    "git_write":              "401 pass 404 403 pass 404 403 403 pass 404 403 403 401 401 401 401",
    # alice alone: acme's owner, bot's delegator
    "owner_only":             "401 pass 403 403 403 403 403 403 403 403 403 403 401 401 401 401",
    "owner_only_hidden":      "401 pass 404 404 404 404 404 404 404 404 404 403 401 401 401 401",
    "org_member":             "401 pass 403 403 403 pass 403 403 403 403 403 403 401 401 401 401",
    "team_read":              "404 pass 404 404 404 pass 404 404 403 403 404 403 401 401 401 401",
    "team_admin":             "401 pass 404 404 404 403 404 404 403 403 404 403 401 401 401 401",
    # a task grant and its approvals: its delegator and its agent
    "grant_parties":          "401 pass 404 404 404 404 pass pass pass pass pass 403 401 401 401 401",
    "grant_agent_bootstrap":  "401 404 404 404 404 404 pass 403 403 403 403 403 401 401 401 401",
    "freeze":                 "401 pass 404 403 403 404 404 403 403 404 403 403 401 401 401 401",
    # a repository's human admins (alice) ask who reaches it; who cannot see it does not learn it exists
    "repo_review":            "401 pass 404 403 403 404 404 403 403 404 403 403 401 401 401 401",
    "thaw":                   "401 pass 404 404 404 404 404 403 404 403 403 403 401 401 401 401",
    "policy":                 "401 pass 404 pass pass 404 pass pass pass 404 pass 403 401 401 401 401",
    "token_holder":           "401 404 404 pass 404 404 404 404 404 404 404 403 401 401 401 401",
    "device_code":            "401 pass pass pass pass pass 403 403 403 403 403 403 401 401 401 401",
    "switch_session_only":    "401 403 403 403 403 403 403 403 403 403 pass 403 401 401 401 401",
    "agent_bootstrap_only":   "401 403 403 403 403 403 pass 403 403 403 403 403 401 401 401 401",
    "site_admin":             "401 403 403 403 403 403 403 403 403 403 403 403 401 401 401 401",
    # a GitHub App's own endpoints take its JWT only (tests/test_apps.py holds the JWT's side)
    "app_jwt":                "401 401 401 401 401 401 401 401 401 401 401 403 401 401 401 401",
    # what an installation token reads of itself (tests/test_apps.py holds the installation token's side)
    "installation_token":     "401 403 403 403 403 403 403 403 403 403 403 403 401 401 401 401",
    # the token endpoint takes no bearer credentials: its callers prove themselves in the request
    "token_endpoint":         "pass pass pass pass pass pass pass pass pass pass pass pass pass pass pass pass",
    # notifications are the account's inbox, no task token's; a thread is its account's alone
    "repo_inbox":             "401 pass 404 pass pass 404 403 pass 403 403 pass 403 401 401 401 401",
    "inbox_thread":           "401 pass 404 404 404 404 404 404 403 403 404 403 401 401 401 401",
    # GitHub's answer to whoever does not watch the repository is 404; alice watches her own
    # the broker: a tool token is a task token's to ask for, for a credential its delegator holds and its
    # grant names (the world's grants name none); the proxy takes tool tokens only
    "broker_token":           "401 403 404 404 404 404 404 404 404 404 404 403 401 401 401 401",
    "broker_proxy":           "401 403 404 404 404 404 404 404 403 403 404 403 401 401 401 401",
    "own_watch":              "404 pass 404 404 404 404 403 404 404 404 404 403 401 401 401 401",
    # a run's artifacts are added by a job of the run alone, with its job token while it runs (the world
    # runs no job: tests/test_artifacts.py holds the job token's side)
    "job_token":              "404 403 404 403 403 404 403 403 403 404 403 403 401 401 401 401",
}

# Every route, and the row of EXPECTED it answers by.
ROUTE_ACCESS = """
POST    /api/ext/v1/apps                                                           humans
POST    /api/ext/v1/repos/{owner}/{repo}/actions/runs/{run_id:int}/artifacts       job_token
GET     /api/ext/v1/repos/{owner}/{repo}/actions/runs/{run_id:int}/cache           job_token
POST    /api/ext/v1/repos/{owner}/{repo}/actions/runs/{run_id:int}/cache           job_token
POST    /api/ext/v1/apps/{app_slug}/installations                                  owner_only
DELETE  /api/ext/v1/installations/{installation_id:int}                            owner_only
GET     /api/v3/app                                                                app_jwt
POST    /api/v3/app-manifests/{code}/conversions                                   credentials_unread
GET     /api/v3/app/hook/config                                                    app_jwt
PATCH   /api/v3/app/hook/config                                                    app_jwt
GET     /api/v3/app/hook/deliveries                                                app_jwt
GET     /api/v3/app/hook/deliveries/{delivery_id:int}                              app_jwt
POST    /api/v3/app/hook/deliveries/{delivery_id:int}/attempts                     app_jwt
GET     /api/v3/app/installations                                                  app_jwt
DELETE  /api/v3/app/installations/{installation_id:int}                            app_jwt
GET     /api/v3/app/installations/{installation_id:int}                            app_jwt
POST    /api/v3/app/installations/{installation_id:int}/access_tokens              app_jwt
GET     /api/v3/apps/{app_slug}                                                    public
GET     /api/v3/installation/repositories                                          installation_token
DELETE  /api/v3/installation/token                                                 installation_token
GET     /api/v3/orgs/{org}/hooks                                                   owner_only
POST    /api/v3/orgs/{org}/hooks                                                   owner_only
GET     /api/v3/orgs/{org}/hooks/{hook_id:int}                                     owner_only
PATCH   /api/v3/orgs/{org}/hooks/{hook_id:int}                                     owner_only
DELETE  /api/v3/orgs/{org}/hooks/{hook_id:int}                                     owner_only
GET     /api/v3/orgs/{org}/hooks/{hook_id:int}/config                              owner_only
PATCH   /api/v3/orgs/{org}/hooks/{hook_id:int}/config                              owner_only
POST    /api/v3/orgs/{org}/hooks/{hook_id:int}/pings                               owner_only
GET     /api/v3/orgs/{org}/hooks/{hook_id:int}/deliveries                          owner_only
GET     /api/v3/orgs/{org}/hooks/{hook_id:int}/deliveries/{delivery_id:int}        owner_only
POST    /api/v3/orgs/{org}/hooks/{hook_id:int}/deliveries/{delivery_id:int}/attempts owner_only
GET     /api/v3/orgs/{org}/installation                                            app_jwt
GET     /api/v3/repos/{owner}/{repo}/hooks                                         repo_admin
POST    /api/v3/repos/{owner}/{repo}/hooks                                         repo_admin
GET     /api/v3/repos/{owner}/{repo}/hooks/{hook_id:int}                           repo_admin
PATCH   /api/v3/repos/{owner}/{repo}/hooks/{hook_id:int}                           repo_admin
DELETE  /api/v3/repos/{owner}/{repo}/hooks/{hook_id:int}                           repo_admin
GET     /api/v3/repos/{owner}/{repo}/hooks/{hook_id:int}/config                    repo_admin
PATCH   /api/v3/repos/{owner}/{repo}/hooks/{hook_id:int}/config                    repo_admin
POST    /api/v3/repos/{owner}/{repo}/hooks/{hook_id:int}/pings                     repo_admin
POST    /api/v3/repos/{owner}/{repo}/hooks/{hook_id:int}/tests                     repo_admin
GET     /api/v3/repos/{owner}/{repo}/hooks/{hook_id:int}/deliveries                repo_admin
GET     /api/v3/repos/{owner}/{repo}/hooks/{hook_id:int}/deliveries/{delivery_id:int} repo_admin
POST    /api/v3/repos/{owner}/{repo}/hooks/{hook_id:int}/deliveries/{delivery_id:int}/attempts repo_admin
GET     /api/v3/repos/{owner}/{repo}/installation                                  app_jwt
GET     /api/v3/repos/{owner}/{repo}/issues/{number:int}/events                    repo_read
GET     /api/v3/repos/{owner}/{repo}/issues/{number:int}/timeline                  repo_read
GET     /api/v3/repos/{owner}/{repo}/issues/events                                 repo_read
GET     /api/v3/repos/{owner}/{repo}/issues/events/{event_id:int}                  repo_read
GET     /api/v3/repos/{owner}/{repo}/deployments                                   repo_read
POST    /api/v3/repos/{owner}/{repo}/deployments                                   repo_write
GET     /api/v3/repos/{owner}/{repo}/deployments/{deployment_id:int}               repo_read
DELETE  /api/v3/repos/{owner}/{repo}/deployments/{deployment_id:int}               repo_write
GET     /api/v3/repos/{owner}/{repo}/deployments/{deployment_id:int}/statuses      repo_read
POST    /api/v3/repos/{owner}/{repo}/deployments/{deployment_id:int}/statuses      repo_write
GET     /api/v3/repos/{owner}/{repo}/deployments/{deployment_id:int}/statuses/{status_id:int} repo_read
GET     /api/v3/repos/{owner}/{repo}/issues/{number:int}/reactions                repo_read
GET     /api/v3/repos/{owner}/{repo}/issues/comments/{comment_id:int}/reactions   repo_read
GET     /api/v3/repos/{owner}/{repo}/pulls/comments/{review_comment_id:int}/reactions    repo_read
POST    /api/v3/repos/{owner}/{repo}/issues/{number:int}/reactions                repo_read
POST    /api/v3/repos/{owner}/{repo}/issues/comments/{comment_id:int}/reactions   repo_read
POST    /api/v3/repos/{owner}/{repo}/pulls/comments/{review_comment_id:int}/reactions    repo_read
DELETE  /api/v3/repos/{owner}/{repo}/issues/{number:int}/reactions/{reaction_id:int} reaction_owner
DELETE  /api/v3/repos/{owner}/{repo}/issues/comments/{comment_id:int}/reactions/{reaction_id:int} reaction_owner
DELETE  /api/v3/repos/{owner}/{repo}/pulls/comments/{review_comment_id:int}/reactions/{reaction_id:int} reaction_owner
DELETE  /api/ext/v1/agent-bindings/{login}                                        owner_only
DELETE  /api/ext/v1/agent-bindings/{login}/keys/{kid}                             owner_only
DELETE  /api/ext/v1/agent-keys/{kid}                                              agent_bootstrap_only
DELETE  /api/ext/v1/agents/{login}                                                owner_only
DELETE  /api/ext/v1/broker/credentials/{credential_id}                            owner_only_hidden
DELETE  /api/ext/v1/broker/proxy/{credential_id}/{rest:path}                      broker_proxy
DELETE  /api/ext/v1/freezes/{freeze_id}                                           thaw
DELETE  /api/ext/v1/revocations/runtimes/{revocation_id}                          owner_only_hidden
DELETE  /api/ext/v1/task-grants/{grant_id}                                        owner_only_hidden
DELETE  /api/ext/v1/user/tokens/{token_id:int}                                    token_holder
DELETE  /api/v3/notifications/threads/{thread_id:int}                             inbox_thread
DELETE  /api/v3/notifications/threads/{thread_id:int}/subscription                inbox_thread
DELETE  /api/v3/orgs/{org}/actions/secrets/{name}                                 owner_only
DELETE  /api/v3/orgs/{org}/actions/secrets/{name}/repositories/{repository_id:int} owner_only
DELETE  /api/v3/orgs/{org}/actions/variables/{name}                               owner_only
DELETE  /api/v3/orgs/{org}/actions/variables/{name}/repositories/{repository_id:int} owner_only
DELETE  /api/v3/orgs/{org}/members/{login}                                        owner_only
DELETE  /api/v3/orgs/{org}/memberships/{login}                                    owner_only
DELETE  /api/v3/orgs/{org}/teams/{slug}                                           team_admin
DELETE  /api/v3/orgs/{org}/teams/{slug}/memberships/{login}                       team_admin
DELETE  /api/v3/orgs/{org}/teams/{slug}/repos/{owner}/{repo}                      team_admin
DELETE  /api/v3/repos/{owner}/{repo}                                              repo_admin
DELETE  /api/v3/repos/{owner}/{repo}/actions/runs/{run_id:int}                    repo_write
DELETE  /api/v3/repos/{owner}/{repo}/actions/artifacts/{artifact_id:int}          repo_write
DELETE  /api/v3/repos/{owner}/{repo}/actions/caches                               repo_write
DELETE  /api/v3/repos/{owner}/{repo}/actions/caches/{cache_id:int}                repo_write
DELETE  /api/v3/repos/{owner}/{repo}/actions/secrets/{name}                       repo_write
DELETE  /api/v3/repos/{owner}/{repo}/actions/variables/{name}                     repo_write
DELETE  /api/v3/repos/{owner}/{repo}/branches/{branch:path}/protection            repo_admin
DELETE  /api/v3/repos/{owner}/{repo}/collaborators/{login}                        repo_admin
DELETE  /api/v3/repos/{owner}/{repo}/contents/{path:path}                         protected_branch_write
DELETE  /api/v3/repos/{owner}/{repo}/environments/{environment}                   repo_admin
DELETE  /api/v3/repos/{owner}/{repo}/environments/{environment}/secrets/{name}    repo_write
DELETE  /api/v3/repos/{owner}/{repo}/environments/{environment}/variables/{name}  repo_write
DELETE  /api/v3/repos/{owner}/{repo}/git/refs/{ref:path}                          repo_write
DELETE  /api/v3/repos/{owner}/{repo}/issues/comments/{comment_id:int}             repo_write
DELETE  /api/v3/repos/{owner}/{repo}/issues/{number:int}/labels                   repo_write
DELETE  /api/v3/repos/{owner}/{repo}/issues/{number:int}/labels/{name}            repo_write
DELETE  /api/v3/repos/{owner}/{repo}/issues/{number:int}/lock                     repo_write
DELETE  /api/v3/repos/{owner}/{repo}/issues/{number:int}/sub_issue                repo_write
DELETE  /api/v3/repos/{owner}/{repo}/keys/{key_id:int}                            repo_admin
DELETE  /api/v3/repos/{owner}/{repo}/labels/{name}                                repo_write
DELETE  /api/v3/repos/{owner}/{repo}/milestones/{number:int}                      repo_write
DELETE  /api/v3/repos/{owner}/{repo}/pulls/{number:int}/requested_reviewers       repo_write
DELETE  /api/v3/repos/{owner}/{repo}/pulls/{number:int}/reviews/{review_id:int}   repo_read
DELETE  /api/v3/repos/{owner}/{repo}/releases/assets/{asset_id:int}               repo_write
DELETE  /api/v3/repos/{owner}/{repo}/releases/{release_id:int}                    repo_write
DELETE  /api/v3/repos/{owner}/{repo}/subscription                                 repo_read
DELETE  /api/v3/repositories/{repository_id:int}/environments/{environment}/secrets/{name} repo_write
DELETE  /api/v3/repositories/{repository_id:int}/environments/{environment}/variables/{name} repo_write
DELETE  /api/v3/users/{login}/suspended                                           site_admin
GET     /api/v3/users/{username}/installation                                      app_jwt
GET     /apps/{app_slug}/installations/new                                         web_page
POST    /apps/{app_slug}/installations/new                                         web_page
DELETE  /mcp                                                                      mcp_public
GET     /                                                                         web_page
GET     /.well-known/oauth-authorization-server                                   credentials_unread
GET     /.well-known/oauth-protected-resource                                     credentials_unread
GET     /.well-known/oauth-protected-resource/mcp                                 credentials_unread
GET     /.well-known/openid-configuration                                         credentials_unread
GET     /agentgit.css                                                             web_page
GET     /access-review                                                            web_page
GET     /api/ext/v1/agent-keys                                                    agent_bootstrap_only
GET     /api/ext/v1/agent-bindings/{login}/keys                                   owner_only
GET     /api/ext/v1/agents/{login}/activity                                       owner_only
GET     /api/ext/v1/approvals                                                     signed_in
GET     /api/ext/v1/approvals/{approval_id}                                       grant_parties
GET     /api/ext/v1/audit                                                         signed_in_untasked
GET     /api/ext/v1/audit/{audit_id:int}                                          owner_only_hidden
GET     /api/ext/v1/broker/credentials                                            humans
GET     /api/ext/v1/broker/credentials/{credential_id}                            owner_only_hidden
GET     /api/ext/v1/broker/proxy/{credential_id}/{rest:path}                      broker_proxy
GET     /api/ext/v1/freezes                                                       signed_in
GET     /api/ext/v1/policy                                                        policy
GET     /api/ext/v1/revocations/runtimes                                          humans
GET     /api/ext/v1/task-grants                                                   signed_in
GET     /api/ext/v1/task-grants/{grant_id}                                        grant_parties
GET     /api/ext/v1/user/agents                                                   humans
GET     /api/ext/v1/user/tokens                                                   humans
GET     /api/v3                                                                   public
GET     /api/v3/issues                                                            signed_in
GET     /api/v3/meta                                                              public
GET     /api/v3/notifications                                                     signed_in_untasked
GET     /api/v3/notifications/threads/{thread_id:int}                             inbox_thread
GET     /api/v3/notifications/threads/{thread_id:int}/subscription                inbox_thread
GET     /api/v3/orgs/{org}                                                        public_outside_tasks
GET     /api/v3/orgs/{org}/actions/secrets                                        owner_only
GET     /api/v3/orgs/{org}/actions/secrets/public-key                             public_outside_tasks
GET     /api/v3/orgs/{org}/actions/secrets/{name}                                 owner_only
GET     /api/v3/orgs/{org}/actions/secrets/{name}/repositories                    owner_only
GET     /api/v3/orgs/{org}/actions/variables                                      owner_only
GET     /api/v3/orgs/{org}/actions/variables/{name}                               owner_only
GET     /api/v3/orgs/{org}/actions/variables/{name}/repositories                  owner_only
GET     /api/v3/orgs/{org}/issue-types                                            public_outside_tasks
GET     /api/v3/orgs/{org}/members                                                public_outside_tasks
GET     /api/v3/orgs/{org}/memberships/{login}                                    org_member
GET     /api/v3/orgs/{org}/repos                                                  public_outside_tasks
GET     /api/v3/orgs/{org}/teams                                                  org_member
GET     /api/ext/v1/orgs/{org}/agent-policy                                       org_member
GET     /api/ext/v1/access-review                                                 repo_review
POST    /api/ext/v1/policy/simulate                                               repo_review
PUT     /api/ext/v1/orgs/{org}/agent-policy                                       owner_only
GET     /api/ext/v1/site/agent-policy                                             signed_in
PUT     /api/ext/v1/site/agent-policy                                             site_admin
GET     /api/v3/orgs/{org}/teams/{slug}                                           team_read
GET     /api/v3/orgs/{org}/teams/{slug}/members                                   team_read
GET     /api/v3/orgs/{org}/teams/{slug}/memberships/{login}                       team_read
GET     /api/v3/orgs/{org}/teams/{slug}/repos                                     team_read
GET     /api/v3/orgs/{org}/teams/{slug}/repos/{owner}/{repo}                      team_read
GET     /api/v3/rate_limit                                                        public
GET     /api/v3/repos/{owner}/{repo}                                              repo_read
GET     /api/v3/repos/{owner}/{repo}/actions/jobs/{job_id:int}                    repo_read
GET     /api/v3/repos/{owner}/{repo}/actions/jobs/{job_id:int}/logs               repo_read
GET     /api/v3/repos/{owner}/{repo}/actions/runs                                 repo_read
GET     /api/v3/repos/{owner}/{repo}/actions/runs/{run_id:int}                    repo_read
GET     /api/v3/repos/{owner}/{repo}/actions/runs/{run_id:int}/artifacts          repo_read
GET     /api/v3/repos/{owner}/{repo}/actions/artifacts                            repo_read
GET     /api/v3/repos/{owner}/{repo}/actions/caches                               repo_read
GET     /api/v3/repos/{owner}/{repo}/actions/permissions/workflow                 repo_admin
PUT     /api/v3/repos/{owner}/{repo}/actions/permissions/workflow                 repo_admin
GET     /api/v3/repos/{owner}/{repo}/actions/cache/usage                          repo_read
GET     /api/v3/repos/{owner}/{repo}/actions/artifacts/{artifact_id:int}          repo_read
GET     /api/v3/repos/{owner}/{repo}/actions/artifacts/{artifact_id:int}/{archive_format} repo_read
GET     /api/v3/repos/{owner}/{repo}/actions/runs/{run_id:int}/jobs               repo_read
GET     /api/v3/repos/{owner}/{repo}/actions/runs/{run_id:int}/attempts/{attempt_number:int} repo_read
GET     /api/v3/repos/{owner}/{repo}/actions/runs/{run_id:int}/attempts/{attempt_number:int}/jobs repo_read
GET     /api/v3/repos/{owner}/{repo}/actions/runs/{run_id:int}/attempts/{attempt_number:int}/logs repo_read
GET     /api/v3/repos/{owner}/{repo}/actions/runs/{run_id:int}/logs               repo_read
GET     /api/v3/repos/{owner}/{repo}/actions/secrets                              repo_write
GET     /api/v3/repos/{owner}/{repo}/actions/secrets/public-key                   repo_read
GET     /api/v3/repos/{owner}/{repo}/actions/secrets/{name}                       repo_write
GET     /api/v3/repos/{owner}/{repo}/actions/variables                            repo_write
GET     /api/v3/repos/{owner}/{repo}/actions/variables/{name}                     repo_write
GET     /api/v3/repos/{owner}/{repo}/actions/workflows                            repo_read
GET     /api/v3/repos/{owner}/{repo}/actions/workflows/{workflow_id}              repo_read
GET     /api/v3/repos/{owner}/{repo}/actions/workflows/{workflow_id}/runs         repo_read
GET     /api/v3/repos/{owner}/{repo}/branches                                     repo_read
GET     /api/v3/repos/{owner}/{repo}/branches/{branch:path}                       repo_read
GET     /api/v3/repos/{owner}/{repo}/branches/{branch:path}/protection            repo_admin
GET     /api/v3/repos/{owner}/{repo}/check-runs/{run_id:int}                      repo_read
GET     /api/v3/repos/{owner}/{repo}/check-runs/{run_id:int}/annotations          repo_read
GET     /api/v3/repos/{owner}/{repo}/collaborators                                repo_write
GET     /api/v3/repos/{owner}/{repo}/collaborators/{login}                        repo_write
GET     /api/v3/repos/{owner}/{repo}/collaborators/{login}/permission             repo_read
GET     /api/v3/repos/{owner}/{repo}/commits                                      repo_read
GET     /api/v3/repos/{owner}/{repo}/contributors                                 repo_read
GET     /api/v3/repos/{owner}/{repo}/commits/{ref:path}                           repo_read
GET     /api/v3/repos/{owner}/{repo}/commits/{sha}/pulls                          repo_read
GET     /api/v3/repos/{owner}/{repo}/commits/{ref:path}/check-runs                repo_read
GET     /api/v3/repos/{owner}/{repo}/commits/{ref:path}/status                    repo_read
GET     /api/v3/repos/{owner}/{repo}/commits/{ref:path}/statuses                  repo_read
GET     /api/v3/repos/{owner}/{repo}/compare/{basehead:path}                      repo_read
GET     /api/v3/repos/{owner}/{repo}/contents                                     repo_read
GET     /api/v3/repos/{owner}/{repo}/contents/{path:path}                         repo_read
GET     /api/v3/repos/{owner}/{repo}/environments                                 repo_read
GET     /api/v3/repos/{owner}/{repo}/environments/{environment}                   repo_read
GET     /api/v3/repos/{owner}/{repo}/environments/{environment}/secrets           repo_write
GET     /api/v3/repos/{owner}/{repo}/environments/{environment}/secrets/public-key repo_read
GET     /api/v3/repos/{owner}/{repo}/environments/{environment}/secrets/{name}    repo_write
GET     /api/v3/repos/{owner}/{repo}/environments/{environment}/variables         repo_write
GET     /api/v3/repos/{owner}/{repo}/environments/{environment}/variables/{name}  repo_write
GET     /api/v3/repos/{owner}/{repo}/forks                                        repo_read
GET     /api/v3/repos/{owner}/{repo}/git/blobs/{sha}                              repo_read
GET     /api/v3/repos/{owner}/{repo}/git/commits/{sha}                            repo_read
GET     /api/v3/repos/{owner}/{repo}/git/matching-refs/{ref:path}                 repo_read
GET     /api/v3/repos/{owner}/{repo}/git/ref/{ref:path}                           repo_read
GET     /api/v3/repos/{owner}/{repo}/git/refs                                     repo_read
GET     /api/v3/repos/{owner}/{repo}/git/tags/{sha}                               repo_read
GET     /api/v3/repos/{owner}/{repo}/git/trees/{sha}                              repo_read
GET     /api/v3/repos/{owner}/{repo}/issues                                       repo_read
GET     /api/v3/repos/{owner}/{repo}/issues/comments                              repo_read
GET     /api/v3/repos/{owner}/{repo}/issues/comments/{comment_id:int}             repo_read
GET     /api/v3/repos/{owner}/{repo}/issues/{number:int}                          repo_read
GET     /api/v3/repos/{owner}/{repo}/issues/{number:int}/comments                 repo_read
GET     /api/v3/repos/{owner}/{repo}/issues/{number:int}/labels                   repo_read
GET     /api/v3/repos/{owner}/{repo}/issues/{number:int}/parent                   repo_read
GET     /api/v3/repos/{owner}/{repo}/issues/{number:int}/sub_issues               repo_read
GET     /api/v3/repos/{owner}/{repo}/keys                                         repo_admin
GET     /api/v3/repos/{owner}/{repo}/keys/{key_id:int}                            repo_admin
GET     /api/v3/repos/{owner}/{repo}/labels                                       repo_read
GET     /api/v3/repos/{owner}/{repo}/labels/{name}                                repo_read
GET     /api/v3/repos/{owner}/{repo}/milestones                                   repo_read
GET     /api/v3/repos/{owner}/{repo}/milestones/{number:int}                      repo_read
GET     /api/v3/repos/{owner}/{repo}/milestones/{number:int}/labels               repo_read
GET     /api/v3/repos/{owner}/{repo}/notifications                                repo_inbox
GET     /api/v3/repos/{owner}/{repo}/pulls                                        repo_read
GET     /api/v3/repos/{owner}/{repo}/pulls/{number:int}                           repo_read
GET     /api/v3/repos/{owner}/{repo}/pulls/{number:int}/comments                  repo_read
GET     /api/v3/repos/{owner}/{repo}/pulls/{number:int}/commits                   repo_read
GET     /api/v3/repos/{owner}/{repo}/pulls/{number:int}/files                     repo_read
GET     /api/v3/repos/{owner}/{repo}/pulls/{number:int}/merge                     repo_read
GET     /api/v3/repos/{owner}/{repo}/pulls/{number:int}/requested_reviewers       repo_read
GET     /api/v3/repos/{owner}/{repo}/pulls/{number:int}/reviews                   repo_read
GET     /api/v3/repos/{owner}/{repo}/pulls/comments/{comment_id:int}              repo_read
GET     /api/v3/repos/{owner}/{repo}/pulls/{number:int}/reviews/{review_id:int}   repo_read
GET     /api/v3/repos/{owner}/{repo}/pulls/{number:int}/reviews/{review_id:int}/comments repo_read
GET     /api/v3/repos/{owner}/{repo}/readme                                       repo_read
GET     /api/v3/repos/{owner}/{repo}/releases                                     repo_read
GET     /api/v3/repos/{owner}/{repo}/rules/branches/{branch:path}                 repo_read
GET     /api/v3/repos/{owner}/{repo}/releases/assets/{asset_id:int}               repo_read
GET     /api/v3/repos/{owner}/{repo}/releases/latest                              repo_read
GET     /api/v3/repos/{owner}/{repo}/releases/tags/{tag:path}                     repo_read
GET     /api/v3/repos/{owner}/{repo}/releases/{release_id:int}                    repo_read
GET     /api/v3/repos/{owner}/{repo}/releases/{release_id:int}/assets             repo_read
GET     /api/v3/repos/{owner}/{repo}/subscription                                 own_watch
GET     /api/v3/repos/{owner}/{repo}/tags                                         repo_read
GET     /api/v3/repos/{owner}/{repo}/topics                                       repo_read
GET     /api/v3/repos/{owner}/{repo}/languages                                    repo_read
GET     /api/v3/repos/{owner}/{repo}/tarball                                      repo_read
GET     /api/v3/repos/{owner}/{repo}/tarball/{ref:path}                           repo_read
GET     /api/v3/repos/{owner}/{repo}/zipball                                      repo_read
GET     /api/v3/repos/{owner}/{repo}/zipball/{ref:path}                           repo_read
GET     /api/v3/repositories/{repository_id:int}/environments/{environment}/secrets repo_write
GET     /api/v3/repositories/{repository_id:int}/environments/{environment}/secrets/public-key repo_read
GET     /api/v3/repositories/{repository_id:int}/environments/{environment}/secrets/{name} repo_write
GET     /api/v3/repositories/{repository_id:int}/environments/{environment}/variables repo_write
GET     /api/v3/repositories/{repository_id:int}/environments/{environment}/variables/{name} repo_write
GET     /api/v3/search/code                                                       public
GET     /api/v3/search/issues                                                     public
GET     /api/v3/search/repositories                                               public
GET     /api/v3/search/users                                                      public
GET     /api/v3/user                                                              signed_in
GET     /api/v3/user/emails                                                       signed_in
GET     /api/v3/user/issues                                                       signed_in
GET     /api/v3/user/orgs                                                         signed_in
GET     /api/v3/user/repos                                                        signed_in
GET     /api/v3/users/{login}                                                     public_outside_tasks
GET     /api/v3/users/{login}/repos                                               public_outside_tasks
GET     /approvals                                                                web_page
GET     /approvals/{approval_id}                                                  web_page
GET     /login                                                                    web_page
GET     /login/device                                                             web_page
GET     /login/oauth/authorize                                                    web_page
GET     /mcp                                                                      mcp_public
GET     /organizations/{org}/settings/apps/new                                     web_page
POST    /organizations/{org}/settings/apps/new                                     web_page
GET     /raw/{owner}/{repo}/{rest:path}                                           repo_read
GET     /settings/agents                                                          web_page
GET     /settings/apps/new                                                         web_page
POST    /settings/apps/new                                                         web_page
POST    /settings/apps/new/confirm                                                 web_page
GET     /settings/installations/{installation_id:int}                              web_page
GET     /settings/tokens                                                          web_page
GET     /settings/tasks                                                           web_page
GET     /settings/tasks/{grant_id}                                                web_page
GET     /{owner}                                                                  web_page
GET     /{owner}/{repo}                                                           web_private
GET     /{owner}/{repo}/blob/{rest:path}                                          web_private
GET     /{owner}/{repo}/commit/{sha}                                              web_private
GET     /{owner}/{repo}/info/refs                                                 git_read
GET     /{owner}/{repo}/issues/{number:int}                                       web_private
GET     /{owner}/{repo}/pull/{number:int}                                         web_private
GET     /{owner}/{repo}/pull/{name}                                               web_private
GET     /{owner}/{repo}/raw/{rest:path}                                           web_private
GET     /{owner}/{repo}/releases/download/{tag}/{name}                            git_read
GET     /{owner}/{repo}/tree/{rest:path}                                          web_private
PATCH   /api/ext/v1/agent-bindings/{login}                                        owner_only
PATCH   /api/ext/v1/broker/proxy/{credential_id}/{rest:path}                      broker_proxy
PATCH   /api/v3/notifications/threads/{thread_id:int}                             inbox_thread
PATCH   /api/v3/orgs/{org}                                                        owner_only
PATCH   /api/v3/orgs/{org}/actions/variables/{name}                               owner_only
PATCH   /api/v3/orgs/{org}/teams/{slug}                                           team_admin
PATCH   /api/v3/repos/{owner}/{repo}                                              repo_admin
PATCH   /api/v3/repos/{owner}/{repo}/actions/variables/{name}                     repo_write
PATCH   /api/v3/repos/{owner}/{repo}/check-runs/{run_id:int}                      repo_write
PATCH   /api/v3/repos/{owner}/{repo}/environments/{environment}/variables/{name}  repo_write
PATCH   /api/v3/repos/{owner}/{repo}/git/refs/{ref:path}                          repo_write
PATCH   /api/v3/repos/{owner}/{repo}/issues/comments/{comment_id:int}             repo_write
PATCH   /api/v3/repos/{owner}/{repo}/issues/{number:int}                          repo_write
PATCH   /api/v3/repos/{owner}/{repo}/issues/{number:int}/sub_issues/priority      repo_write
PATCH   /api/v3/repos/{owner}/{repo}/labels/{name}                                repo_write
PATCH   /api/v3/repos/{owner}/{repo}/milestones/{number:int}                      repo_write
PATCH   /api/v3/repos/{owner}/{repo}/pulls/{number:int}                           repo_write
PATCH   /api/v3/repos/{owner}/{repo}/releases/assets/{asset_id:int}               repo_write
PATCH   /api/v3/repos/{owner}/{repo}/releases/{release_id:int}                    repo_write
PATCH   /api/v3/repositories/{repository_id:int}/environments/{environment}/variables/{name} repo_write
POST    /api/ext/v1/agent-bindings/confirm                                        agent_bootstrap_only
POST    /api/ext/v1/agent-bindings/{login}/keys/{kid}/approve                     owner_only
POST    /api/ext/v1/agent-bindings/{login}/refresh-session                        switch_session_only
POST    /api/ext/v1/agent-bindings/{login}/reset-token                            owner_only
POST    /api/ext/v1/agent-bindings/{login}/resume                                 owner_only
POST    /api/ext/v1/agent-bindings/{login}/suspend                                owner_only
POST    /api/ext/v1/agent-bindings/{login}/switch-session                         owner_only
POST    /api/ext/v1/agent-invites                                                 humans
POST    /api/ext/v1/agent-keys                                                    agent_bootstrap_only
POST    /api/ext/v1/agents                                                        public_outside_tasks
POST    /api/ext/v1/approvals/{approval_id}/approve                               owner_only_hidden
POST    /api/ext/v1/approvals/{approval_id}/deny                                  owner_only_hidden
POST    /api/ext/v1/broker/credentials                                            humans
POST    /api/ext/v1/broker/proxy/{credential_id}/{rest:path}                      broker_proxy
POST    /api/ext/v1/broker/tokens                                                 broker_token
POST    /api/ext/v1/freezes                                                       freeze
POST    /api/ext/v1/oauth/apps                                                    humans
POST    /api/ext/v1/oauth/device/approve                                          device_code
POST    /api/ext/v1/revocations                                                   owner_only
POST    /api/ext/v1/step-up                                                       humans_and_switch
POST    /api/ext/v1/task-grants                                                   signed_in
POST    /api/ext/v1/task-grants/revocations                                       humans
POST    /api/ext/v1/task-grants/{grant_id}/tokens                                 grant_agent_bootstrap
POST    /api/ext/v1/user/orgs                                                     humans
POST    /api/ext/v1/user/tokens                                                   humans
POST    /api/graphql                                                              signed_in
POST    /api/uploads/repos/{owner}/{repo}/releases/{release_id:int}/assets        repo_write
POST    /api/v3/orgs/{org}/actions/variables                                      owner_only
POST    /api/v3/orgs/{org}/repos                                                  org_member
POST    /api/v3/orgs/{org}/teams                                                  owner_only
POST    /api/v3/repos/{owner}/{repo}/actions/runs/{run_id:int}/cancel             repo_write
POST    /api/v3/repos/{owner}/{repo}/actions/runs/{run_id:int}/rerun              repo_write
POST    /api/v3/repos/{owner}/{repo}/actions/runs/{run_id:int}/rerun-failed-jobs  repo_write
POST    /api/v3/repos/{owner}/{repo}/actions/runs/{run_id:int}/approve            repo_write
POST    /api/v3/repos/{owner}/{repo}/actions/jobs/{job_id:int}/rerun              repo_write
POST    /api/v3/repos/{owner}/{repo}/actions/variables                            repo_write
POST    /api/v3/repos/{owner}/{repo}/actions/workflows/{workflow_id}/dispatches   repo_write
POST    /api/v3/repos/{owner}/{repo}/dispatches                                   repo_write
POST    /api/v3/repos/{owner}/{repo}/check-runs                                   repo_write
POST    /api/v3/repos/{owner}/{repo}/environments/{environment}/variables         repo_write
POST    /api/v3/repos/{owner}/{repo}/forks                                        repo_fork
POST    /api/v3/repos/{owner}/{repo}/git/blobs                                    repo_write
POST    /api/v3/repos/{owner}/{repo}/git/commits                                  repo_write
POST    /api/v3/repos/{owner}/{repo}/git/refs                                     repo_write
POST    /api/v3/repos/{owner}/{repo}/git/tags                                     repo_write
POST    /api/v3/repos/{owner}/{repo}/git/trees                                    repo_write
POST    /api/v3/repos/{owner}/{repo}/issues                                       repo_read
POST    /api/v3/repos/{owner}/{repo}/issues/{number:int}/comments                 repo_read
POST    /api/v3/repos/{owner}/{repo}/issues/{number:int}/labels                   repo_write
POST    /api/v3/repos/{owner}/{repo}/issues/{number:int}/sub_issues               repo_write
POST    /api/v3/repos/{owner}/{repo}/keys                                         repo_admin
POST    /api/v3/repos/{owner}/{repo}/labels                                       repo_write
POST    /api/v3/repos/{owner}/{repo}/merge-upstream                               repo_read
POST    /api/v3/repos/{owner}/{repo}/milestones                                   repo_write
POST    /api/v3/repos/{owner}/{repo}/pulls                                        repo_read
POST    /api/v3/repos/{owner}/{repo}/pulls/{number:int}/requested_reviewers       repo_write
POST    /api/v3/repos/{owner}/{repo}/pulls/{number:int}/reviews                   repo_read
POST    /api/v3/repos/{owner}/{repo}/pulls/{number:int}/comments                  repo_read
POST    /api/v3/repos/{owner}/{repo}/pulls/{number:int}/comments/{comment_id:int}/replies repo_read
POST    /api/v3/repos/{owner}/{repo}/pulls/{number:int}/reviews/{review_id:int}/events repo_read
POST    /api/v3/repos/{owner}/{repo}/releases                                     repo_write
POST    /api/v3/repos/{owner}/{repo}/releases/{release_id:int}/assets             repo_write
POST    /api/v3/repos/{owner}/{repo}/statuses/{sha}                               repo_write
POST    /api/v3/repositories/{repository_id:int}/environments/{environment}/variables repo_write
POST    /api/v3/user/repos                                                        signed_in_untasked
POST    /approvals                                                                web_page
POST    /login                                                                    web_page
POST    /login/device                                                             web_page
POST    /login/device/code                                                        credentials_unread
POST    /login/oauth/access_token                                                 token_endpoint
POST    /login/oauth/authorize                                                    web_page
POST    /login/oauth/introspect                                                   signed_in
POST    /login/oauth/revoke                                                       signed_in
POST    /logout                                                                   web_page
POST    /mcp                                                                      mcp
POST    /register                                                                 credentials_unread
POST    /settings/agents                                                          web_page
POST    /settings/tokens                                                          web_page
POST    /settings/tasks                                                           web_page
POST    /{owner}/{repo}/git-receive-pack                                          git_write
POST    /{owner}/{repo}/git-upload-pack                                           git_read
PUT     /api/ext/v1/broker/credentials/{credential_id}/secret                     owner_only_hidden
PUT     /api/ext/v1/broker/proxy/{credential_id}/{rest:path}                      broker_proxy
PUT     /api/v3/notifications                                                     signed_in_untasked
PUT     /api/v3/notifications/threads/{thread_id:int}/subscription                inbox_thread
PUT     /api/v3/orgs/{org}/actions/secrets/{name}                                 owner_only
PUT     /api/v3/orgs/{org}/actions/secrets/{name}/repositories                    owner_only
PUT     /api/v3/orgs/{org}/actions/secrets/{name}/repositories/{repository_id:int} owner_only
PUT     /api/v3/orgs/{org}/actions/variables/{name}/repositories                  owner_only
PUT     /api/v3/orgs/{org}/actions/variables/{name}/repositories/{repository_id:int} owner_only
PUT     /api/v3/orgs/{org}/memberships/{login}                                    owner_only
PUT     /api/v3/orgs/{org}/teams/{slug}/memberships/{login}                       team_admin
PUT     /api/v3/orgs/{org}/teams/{slug}/repos/{owner}/{repo}                      team_admin
PUT     /api/v3/repos/{owner}/{repo}/actions/secrets/{name}                       repo_write
PUT     /api/v3/repos/{owner}/{repo}/actions/workflows/{workflow_id}/disable      repo_write
PUT     /api/v3/repos/{owner}/{repo}/actions/workflows/{workflow_id}/enable       repo_write
PUT     /api/v3/repos/{owner}/{repo}/branches/{branch:path}/protection            repo_admin
PUT     /api/v3/repos/{owner}/{repo}/collaborators/{login}                        repo_admin
PUT     /api/v3/repos/{owner}/{repo}/contents/{path:path}                         protected_branch_write
PUT     /api/v3/repos/{owner}/{repo}/environments/{environment}                   repo_admin
PUT     /api/v3/repos/{owner}/{repo}/environments/{environment}/secrets/{name}    repo_write
PUT     /api/v3/repos/{owner}/{repo}/issues/{number:int}/labels                   repo_write
PUT     /api/v3/repos/{owner}/{repo}/issues/{number:int}/lock                     repo_write
PUT     /api/v3/repos/{owner}/{repo}/notifications                                repo_inbox
PUT     /api/v3/repos/{owner}/{repo}/pulls/{number:int}/merge                     repo_write
PUT     /api/v3/repos/{owner}/{repo}/pulls/{number:int}/update-branch             repo_write
PUT     /api/v3/repos/{owner}/{repo}/subscription                                 repo_read
PUT     /api/v3/repos/{owner}/{repo}/topics                                       repo_admin
PUT     /api/v3/repositories/{repository_id:int}/environments/{environment}/secrets/{name} repo_write
PUT     /api/v3/users/{login}/suspended                                           site_admin
"""


def route_access():
    return {(m, p): label for m, p, label in (line.split() for line in ROUTE_ACCESS.strip().splitlines())}


def all_routes():
    return sorted((method, r.pattern) for method, rs in agentgit.ROUTES.items() for r in rs)


def test_every_route_has_an_entry():
    assert sorted(route_access()) == all_routes()
    assert set(route_access().values()) <= set(EXPECTED)
    # the kinds that follow from what a route declares agree with its declaration
    for method, routes in agentgit.ROUTES.items():
        for r in routes:
            kind = route_access()[method, r.pattern]
            assert (kind == "credentials_unread") == (r.authentication == "none"), (method, r.pattern)
            assert kind.startswith("web_") == (r.surface == "web"), (method, r.pattern)


def test_the_matrix(tmp_path):
    template = tmp_path / "world"
    tokens, ids = build_world(template)
    access = route_access()
    table, leaks = observe(template, tokens, ids, all_routes())
    wrong = []
    for (method, pattern), row in table.items():
        expected = EXPECTED[access[method, pattern]].split()
        wrong += ["%s %s as %s: %s, expected %s" % (method, pattern, who, got, want)
                  for who, got, want in zip(PRINCIPALS, row, expected) if got != want]
    cells = len(table) * len(PRINCIPALS)
    print("authorization matrix: %d routes x %d principals = %d cells" % (len(table), len(PRINCIPALS), cells))
    assert not wrong, "%d of %d cells differ:\n%s" % (len(wrong), cells, "\n".join(wrong))
    assert not leaks, "\n".join(leaks)


# -- the extension endpoints' table (docs/extensions.md), from the route table and this matrix -------

EXTENSIONS_DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "extensions.md")
WHO = {"owner": "owner", "reader": "reader", "writer": "writer", "org_member": "org member",
       "agent_bootstrap": "agent (own token)", "agent_session": "agent session", "task_inside": "task token",
       "task_outside": "task token of another grant", "switch_session": "switch session"}
HUMANS = ("owner", "outsider", "reader", "writer", "org_member")
AGENT_TOKENS = ("agent_bootstrap", "agent_session", "task_inside", "task_outside", "switch_session")
# Where the world's principal would mislead (rita holds the token the route is called with)
LABEL_WORDS = {"token_holder": "the token's holder", "grant_parties": "the grant's delegator; its agent, with any token",
               "grant_agent_bootstrap": "the grant's agent, with its own token",
               # (the matrix's world holds no tool token and no grant naming a credential: tests/test_broker.py)
               "broker_token": "a task token whose grant names the credential",
               "broker_proxy": "a tool token for the credential",
               "job_token": "a job of the run, with its job token, while the run runs",
               "site_admin": "a site admin"}


def who_gets_through(label):
    if label in LABEL_WORDS:
        return LABEL_WORDS[label]
    passed = [p for p, c in zip(PRINCIPALS, EXPECTED[label].split()) if c == "pass"]
    if "anonymous" in passed:
        return "anyone"
    words = []
    if "outsider" in passed:
        words.append("any human")
        passed = [p for p in passed if p not in HUMANS]
    if all(p in passed for p in AGENT_TOKENS):
        words.append("any of an agent's tokens")
        passed = [p for p in passed if p not in AGENT_TOKENS]
    return ", ".join(words + [WHO[p] for p in passed if p in WHO])
EXTENSIONS_INTRO = """# agentgit's extension endpoints

Everything agentgit adds to GitHub's API, under `/api/ext/v1`. Written from the route table and the
authorization matrix (`tests/test_matrix.py`) by `python tests/test_matrix.py`; `make test` fails when
this file differs from what they say, so it cannot drift.

*Who gets through* lists the callers the matrix sees pass authorization (an answer about the request
itself, such as 422, still counts): **owner** is the human a thing belongs to: the agent's bound human,
the grant's delegator, the organization's owner; **any human** includes one with no relation to it;
**agent (own token)** is the agent's long-lived bootstrap token; **agent session** and **task token**
are the short-lived tokens it trades that for; **switch session** is its human acting as the agent.
Suspended accounts and revoked, expired or forged tokens get through nowhere.

| Method | Path | Who gets through | What it does |
|---|---|---|---|
"""


def extensions_table():
    access, rows = route_access(), []
    for method, pattern in sorted(access, key=lambda mp: (mp[1], mp[0])):
        if not pattern.startswith("/api/ext/"):
            continue
        who = who_gets_through(access[method, pattern])
        handler = next(r.handler for r in agentgit.ROUTES[method] if r.pattern == pattern)
        what = " ".join((handler.__doc__ or "").split("\n\n")[0].split())
        rows.append("| %s | `%s` | %s | %s |" % (method, pattern, who, what.replace("|", "\\|")))
    return EXTENSIONS_INTRO + "\n".join(rows) + "\n"


def test_the_extensions_table_is_what_the_routes_and_the_matrix_say():
    with open(EXTENSIONS_DOC, encoding="utf-8") as f:
        assert f.read() == extensions_table(), "docs/extensions.md is stale: run python tests/test_matrix.py"
    assert "|  |" not in extensions_table() and "| |" not in extensions_table()     # every endpoint says what it does


if __name__ == "__main__":
    os.makedirs(os.path.dirname(EXTENSIONS_DOC), exist_ok=True)
    with open(EXTENSIONS_DOC, "w", encoding="utf-8") as f:
        f.write(extensions_table())
