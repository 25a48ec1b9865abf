"""The access review: who can act on a repository today, at which level and through whom (organization
role, team, collaborator, the agent's own standing access, a task grant, a sub-agent's hand-over), with
the rule that decides each action; as JSON, as CSV and as a page with a drawn graph. And the what-if:
decide() for a principal or a grant not yet made, with nothing written."""
import csv
import io

from conftest import Browser, api, call, exchange, ext


def acme(server):
    """alice owns acme and its private acme/payments; carol is on team ops (push), dave a collaborator
    (read); alice's agent coder holds a task there and hands part of it to her agent tester."""
    alice = server.add_user("alice", password="pw")
    ext(server, "POST", "/user/orgs", alice, {"login": "acme"})
    api(server, "POST", "/orgs/acme/repos", alice, {"name": "payments", "private": True, "auto_init": True})
    carol, dave, erin = server.add_user("carol"), server.add_user("dave"), server.add_user("erin")
    api(server, "PUT", "/orgs/acme/memberships/carol", alice, {"role": "member"})
    api(server, "POST", "/orgs/acme/teams", alice, {"name": "ops"})
    api(server, "PUT", "/orgs/acme/teams/ops/memberships/carol", alice, {})
    api(server, "PUT", "/orgs/acme/teams/ops/repos/acme/payments", alice, {"permission": "push"})
    api(server, "PUT", "/repos/acme/payments/collaborators/dave", alice, {"permission": "pull"})
    agents = {}
    for name in ("coder", "tester"):
        login, token, _ = server.add_agent(name)
        invite = ext(server, "POST", "/agent-invites", alice, {"repo_grants": [
            {"repo_full_name": "acme/payments", "permission": "push"}]}).json["invite_token"]
        assert ext(server, "POST", "/agent-bindings/confirm", token, {"invite_token": invite}).status == 201
        agents[name] = (login, token)
    grant = ext(server, "POST", "/task-grants", alice, {
        "agent": "agent:" + agents["coder"][0], "task": "task:payments", "resources": ["repo:acme/payments"],
        "actions": ["read_code", "create_branch", "push_branch", "open_pr"]}).json
    task_token = ext(server, "POST", "/task-grants/%s/tokens" % grant["id"], agents["coder"][1], {}).json["token"]
    handed = exchange(server, subject_token=task_token, actor_token=agents["tester"][1], scope="read_code")
    assert handed.status == 200, handed
    return {"alice": alice, "carol": carol, "dave": dave, "erin": erin, "agents": agents, "grant": grant["id"],
            "sub_token": handed.json["access_token"]}


def test_the_review_names_everyone_and_the_chain_they_came_through(server):
    w = acme(server)
    coder, tester = w["agents"]["coder"][0], w["agents"]["tester"][0]
    review = ext(server, "GET", "/access-review?resource=repo:acme/payments", w["alice"])
    assert review.status == 200, review
    by = {}
    for p in review.json["principals"]:
        by.setdefault(p["principal"], []).append(p)
    (alice,) = by["user:alice"]
    assert alice["level"] == "admin" and "org acme admin" in alice["via"][0]
    (carol,) = by["user:carol"]
    assert carol["level"] == "write" and "team ops" in carol["via"][0]
    assert by["user:dave"][0]["level"] == "read" and by["user:dave"][0]["actions"]["push_branch"]["rule"] == "permission"
    assert "user:erin" not in by                                                       # she reaches nothing here
    standing, task = sorted(by["agent:" + coder], key=lambda p: p["token"] == "task")
    assert standing["token"] == "session" and standing["level"] == "read"              # outside a task: read
    assert task["grant"] == w["grant"] and task["via"] == [
        "user:alice: task grant %s (task:payments) to agent:%s" % (w["grant"], coder)]
    assert {"read_code", "create_branch", "push_branch", "open_pr"} <= set(task["allowed"])
    assert not {"delete_branch", "merge_pr", "comment"} & set(task["allowed"])
    assert task["actions"]["merge_pr"] == {"decision": "deny", "rule": "task_grant",
                                           "because": "task grant %s does not allow merge_pr" % w["grant"]}
    handed = [p for p in by["agent:" + tester] if p["token"] == "task"]
    assert len(handed) == 1 and "read_code" in handed[0]["allowed"] and "push_branch" not in handed[0]["allowed"]
    assert handed[0]["via"][-1].startswith("agent:%s: task grant tg_" % coder) and handed[0]["via"][-1].endswith(
        "to agent:" + tester)

    exported = call(server, "GET", "/api/ext/v1/access-review?resource=repo:acme/payments&format=csv", w["alice"])
    assert exported.status == 200 and exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.raw.decode())))
    assert {r["principal"] for r in rows} == set(by)
    assert any(r["principal"] == "agent:" + tester and r["action"] == "read_code" and r["decision"] == "allow"
               for r in rows)

    # only the repository's admins see it; the rest do not learn more than they may
    assert ext(server, "GET", "/access-review?resource=repo:acme/payments", w["carol"]).status == 403
    assert ext(server, "GET", "/access-review?resource=repo:acme/payments", w["erin"]).status == 404
    assert ext(server, "GET", "/access-review?resource=repo:acme/payments", w["sub_token"]).status == 403
    assert ext(server, "GET", "/access-review?resource=team:acme/ops", w["alice"]).status == 404
    assert ext(server, "GET", "/access-review?resource=repo:acme/payments&format=xml", w["alice"]).status == 422

    # revoking the orchestrator's grant takes both tasks off the review
    ext(server, "DELETE", "/task-grants/" + w["grant"], w["alice"])
    after = ext(server, "GET", "/access-review?resource=repo:acme/payments", w["alice"]).json["principals"]
    assert not [p for p in after if p["token"] == "task"]


def test_an_organization_and_a_credential_are_reviewed_alike(server):
    w = acme(server)
    org = {p["principal"]: p for p in ext(server, "GET", "/access-review?resource=org:acme", w["alice"]).json[
        "principals"]}
    assert org["user:alice"]["level"] == "admin" and "manage_org" in org["user:alice"]["allowed"]
    assert org["user:carol"]["allowed"] == ["read_org", "read_org_private"]
    assert ext(server, "GET", "/access-review?resource=org:acme", w["carol"]).status == 403
    coder, own = w["agents"]["coder"]
    ci = ext(server, "POST", "/broker/credentials", w["alice"], {"name": "ci", "kind": "basic", "username": "a",
                                                                 "password": "secret-1", "base_url": "https://ci.example"})
    assert ci.status == 201, ci
    grant = ext(server, "POST", "/task-grants", w["alice"], {
        "agent": "agent:" + coder, "task": "task:ci", "resources": ["credential:alice/ci"], "actions": ["call_api"],
        "constraints": {"network_allowlist": ["ci.example"]}})
    assert grant.status == 201, grant
    seen = ext(server, "GET", "/access-review?resource=credential:alice/ci", w["alice"]).json["principals"]
    assert [(p["principal"], p["grant"], p["allowed"]) for p in seen] == [
        ("user:admin", None, ["review_access"]), ("user:alice", None, ["review_access"]),    # (the site's admin)
        ("agent:" + coder, grant.json["id"], ["use_credential"])]
    assert ext(server, "GET", "/access-review?resource=credential:alice/ci", w["carol"]).status == 404


def test_the_page_draws_who_reaches_the_repository(server):
    w = acme(server)
    browser = Browser(server)
    browser.sign_in("alice", "pw", next_path="/access-review?resource=repo:acme/payments")
    answer, page = browser.request("GET", "/access-review?resource=repo:acme/payments")
    assert answer.status == 200 and "<svg" in page and "<script" not in page
    for name in ("user:alice", "user:carol", "agent:" + w["agents"]["coder"][0], "agent:" + w["agents"]["tester"][0],
                 "repo:acme/payments"):
        assert ">%s</text>" % name in page, name


def test_what_if_asks_decide_and_changes_nothing(server):
    w = acme(server)
    coder = w["agents"]["coder"][0]
    counted = lambda: [server.app.store.one("SELECT COUNT(*) FROM %s" % t)[0]  # noqa: E731
                       for t in ("audit", "approvals", "task_reads", "task_grants", "tokens")]
    before = counted()
    simulate = lambda who, body: ext(server, "POST", "/policy/simulate", who, body)  # noqa: E731
    asked = simulate(w["alice"], {"principal": "agent:" + coder, "action": "push_branch",
                                  "resource": "repo:acme/payments", "context": {"ref": "refs/heads/main"}})
    assert asked.status == 200 and asked.json["decision"] == "deny" and asked.json["rule"] == "permission", asked
    planned = simulate(w["alice"], {"grant": {"agent": "agent:" + coder, "resources": ["repo:acme/payments"],
                                              "actions": ["push_branch"], "constraints": {"branch_prefix": "agent/"}},
                                    "action": "push_branch", "resource": "repo:acme/payments",
                                    "context": {"ref": "refs/heads/agent/x"}})
    assert planned.json["decision"] == "allow" and planned.json["grant"] == "tg_simulated", planned
    outside = simulate(w["alice"], {"grant": w["grant"], "action": "push_branch", "resource": "repo:acme/payments",
                                    "context": {"ref": "refs/heads/agent/x"}})
    assert outside.json["decision"] == "allow"
    assert simulate(w["alice"], {"action": "delete_repo", "resource": "repo:acme/payments"}).json["decision"] == "allow"
    assert counted() == before
    # of others, only the resource's admins ask; bad questions are told so
    assert simulate(w["carol"], {"principal": "user:dave", "action": "read_code",
                                 "resource": "repo:acme/payments"}).status == 403
    assert simulate(w["carol"], {"action": "read_code", "resource": "repo:acme/payments"}).json["decision"] == "allow"
    for body in ({"action": "fly", "resource": "repo:acme/payments"}, {"action": "read_code"},
                 {"action": "read_code", "resource": "repo:acme/payments", "context": {"ref": ["x"]}},
                 {"action": "read_code", "resource": "repo:acme/payments", "principal": "org:acme"},
                 {"action": "read_code", "resource": "repo:acme/payments", "grant": {"agent": "user:dave"}}):
        assert simulate(w["alice"], body).status == 422, body
    assert simulate(w["erin"], {"action": "read_code", "resource": "repo:acme/payments"}).status == 404
