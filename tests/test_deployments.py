"""Deployments: a deployer records a deployment of a ref, reports its statuses, and the environment's earlier
ones go inactive; required status contexts hold a deployment back; an agent deploys only under a task."""
from conftest import alice_and_her_agent, api, ext, session_token, shape_checker

SPEC = shape_checker()


def checked(method, path, r):
    if SPEC is not None and r.json is not None:
        assert SPEC.check(method, path, r.status, r.json) == [], r.json
    return r


def test_deploy_report_and_supersede(server):
    alice = server.add_user("alice")
    api(server, "POST", "/user/repos", alice, {"name": "app", "auto_init": True})
    sha = api(server, "GET", "/repos/alice/app/commits/main", alice).json["sha"]
    # a failing status holds a deployment back until it passes (or the contexts asked for are others)
    api(server, "POST", "/repos/alice/app/statuses/" + sha, alice, {"state": "failure", "context": "ci"})
    held = api(server, "POST", "/repos/alice/app/deployments", alice, {"ref": "main", "environment": "staging"})
    assert held.status == 409 and held.json["errors"][0]["contexts"] == [{"context": "ci", "state": "missing"}]
    api(server, "POST", "/repos/alice/app/statuses/" + sha, alice, {"state": "success", "context": "ci"})
    first = checked("POST", "/repos/alice/app/deployments", api(server, "POST", "/repos/alice/app/deployments", alice, {
        "ref": "main", "environment": "staging", "payload": {"region": "eu"}, "description": "first"}))
    assert first.status == 201 and (first.json["sha"], first.json["payload"], first.json["task"]) == (
        sha, {"region": "eu"}, "deploy")
    path = "/repos/alice/app/deployments/%d/statuses" % first.json["id"]
    live = checked("POST", path, api(server, "POST", path, alice, {"state": "success",
                                                                   "environment_url": "https://staging.example"}))
    assert live.status == 201 and live.json["state"] == "success"
    second = api(server, "POST", "/repos/alice/app/deployments", alice, {"ref": "main", "environment": "staging",
                                                                         "required_contexts": []}).json
    api(server, "POST", "/repos/alice/app/deployments/%d/statuses" % second["id"], alice, {"state": "success"})
    # the first is superseded: a new inactive status on it
    assert [s["state"] for s in api(server, "GET", path, alice).json] == ["inactive", "success"]
    listed = checked("GET", "/repos/alice/app/deployments", api(server, "GET", "/repos/alice/app/deployments?"
                                                                               "environment=staging", alice))
    assert [d["id"] for d in listed.json] == [second["id"], first.json["id"]]
    one = api(server, "GET", "%s/%d" % (path, live.json["id"]), alice)
    assert one.json["environment_url"] == "https://staging.example"
    # the live one cannot be deleted; the inactive one can
    assert api(server, "DELETE", "/repos/alice/app/deployments/%d" % second["id"], alice).status == 422
    assert api(server, "DELETE", "/repos/alice/app/deployments/%d" % first.json["id"], alice).status == 204
    for bad in ({}, {"ref": "nope"}, {"ref": "main", "payload": 5}, {"ref": "main", "required_contexts": [1]}):
        assert api(server, "POST", "/repos/alice/app/deployments", alice, bad).status in (404, 422), bad
    assert api(server, "POST", "/repos/alice/app/deployments/%d/statuses" % second["id"], alice,
               {"state": "done"}).status == 422


def test_an_agent_deploys_only_under_a_task_that_names_deploy(server):
    alice, login, agent = alice_and_her_agent(server, ("app",))
    grant = ext(server, "POST", "/task-grants", alice, {
        "agent": "agent:" + login, "delegator": "user:alice", "task": "task:ship", "resources": ["repo:alice/app"],
        "actions": ["read_code", "deploy"], "constraints": {}}).json
    token = ext(server, "POST", "/task-grants/%s/tokens" % grant["id"], agent, {}).json["token"]
    standing = session_token(server, agent, "alice/app")
    assert api(server, "POST", "/repos/alice/app/deployments", standing, {"ref": "main"}).status == 403
    made = api(server, "POST", "/repos/alice/app/deployments", token, {"ref": "main"})
    assert made.status == 201 and made.json["creator"]["login"] == login
