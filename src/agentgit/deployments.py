"""REST: deployments (a request to deploy a ref's commit to an environment) and the statuses a deployer reports.

agentgit deploys nothing itself: a deployment is a record that a deployer (an Action, a bot, an agent)
reads and reports on, as on GitHub. Creating one is decided as ``deploy`` and, as GitHub does, refused
(409) while the commit's required status contexts (all of them, unless named) are not successful; its
``auto_merge`` (merging the default branch into the ref first) is not done. A new successful status marks
the environment's earlier successful deployments inactive (``auto_inactive``, GitHub's rule), and a
deployment is deleted only once inactive.
"""

import json

from agentgit.config import now
from agentgit.storage import insert
from agentgit.errors import HTTPError, invalid
from agentgit.accounts import full_name
from agentgit.routing import route
from agentgit.serializers import node_id, user_json_by_id
from agentgit.lookups import delete_row, find_repo, one_or_404
from agentgit.protection import commit_of, latest_statuses

DEPLOYMENT_STATES = ("error", "failure", "inactive", "in_progress", "queued", "pending", "success")
MAX_PAYLOAD = 65536         # the JSON of a deployment's payload


def deployment_json(app, repo_row, row):
    url = "%s/repos/%s/deployments/%d" % (app.api, full_name(repo_row), row["id"])
    return {"url": url, "id": row["id"], "node_id": node_id("Deployment", row["id"]), "sha": row["sha"],
            "ref": row["ref"], "task": row["task"], "payload": json.loads(row["payload"]),
            "original_environment": row["environment"], "environment": row["environment"],
            "description": row["description"], "creator": user_json_by_id(app, row["creator_id"]),
            "created_at": row["created_at"], "updated_at": row["updated_at"], "statuses_url": url + "/statuses",
            "repository_url": "%s/repos/%s" % (app.api, full_name(repo_row)),
            "transient_environment": bool(row["transient_environment"]),
            "production_environment": bool(row["production_environment"]), "performed_via_github_app": None}


def deployment_status_json(app, repo_row, deployment, row):
    url = "%s/repos/%s/deployments/%d" % (app.api, full_name(repo_row), deployment["id"])
    return {"url": "%s/statuses/%d" % (url, row["id"]), "id": row["id"],
            "node_id": node_id("DeploymentStatus", row["id"]), "state": row["state"],
            "creator": user_json_by_id(app, row["creator_id"]), "description": row["description"],
            "environment": row["environment"], "target_url": row["target_url"], "log_url": row["log_url"],
            "environment_url": row["environment_url"], "created_at": row["created_at"],
            "updated_at": row["created_at"], "deployment_url": url,
            "repository_url": "%s/repos/%s" % (app.api, full_name(repo_row)), "performed_via_github_app": None}


def find_deployment(req, owner, repo, deployment_id, action="read_code"):
    row = find_repo(req, owner, repo, action)
    return row, one_or_404(req, "SELECT * FROM deployments WHERE id = ? AND repo_id = ?", int(deployment_id), row["id"])


@route("GET", "/api/v3/repos/{owner}/{repo}/deployments")
def list_deployments(req, owner, repo):
    """Newest first, filtered by sha, ref, task or environment."""
    row = find_repo(req, owner, repo)
    where, args = ["repo_id = ?"], [row["id"]]
    for name in ("sha", "ref", "task", "environment"):
        if req.query.get(name):
            where.append("%s = ?" % name)
            args.append(req.query[name])
    rows = req.app.store.all("SELECT * FROM deployments WHERE %s ORDER BY id DESC" % " AND ".join(where), *args)
    return [deployment_json(req.app, row, r) for r in req.paginate(rows)]


def required_contexts_missing(req, row, sha, required):
    """The required status contexts of the commit that are not successful (all its contexts when None)."""
    latest = latest_statuses(req.app.store, row["id"], sha)
    names = latest if required is None else required
    return [name for name in names if name not in latest or latest[name]["state"] != "success"]


@route("POST", "/api/v3/repos/{owner}/{repo}/deployments")
def create_deployment(req, owner, repo):
    body = req.json()
    ref = req.text_field(body, "ref", "Deployment", required=True, limit=255)
    task = req.text_field(body, "task", "Deployment", limit=255) or "deploy"
    environment = req.text_field(body, "environment", "Deployment", limit=255) or "production"
    description = req.text_field(body, "description", "Deployment", limit=1024)
    required = req.field(body, "required_contexts", list, "Deployment")
    if required is not None and not all(isinstance(c, str) for c in required):
        raise invalid("Deployment", "required_contexts", message="required_contexts must be an array of strings")
    payload = body.get("payload", {})
    if not isinstance(payload, (dict, str)) or len(json.dumps(payload)) > MAX_PAYLOAD:
        raise invalid("Deployment", "payload", message="payload must be an object or a string of at most %d "
                                                       "characters" % MAX_PAYLOAD)
    flags = [req.field(body, name, bool, "Deployment", default=default) for name, default in (
        ("transient_environment", False), ("production_environment", environment == "production"))]
    row = find_repo(req, owner, repo, "deploy")
    sha = commit_of(req, row, ref)
    missing = required_contexts_missing(req, row, sha, required)
    if missing:
        raise HTTPError(409, "Conflict: Commit status checks failed for %s." % ref[:255],
                        errors=[{"contexts": [{"context": name, "state": "missing"} for name in missing[:100]],
                                 "resource": "Deployment", "field": "required_contexts", "code": "invalid"}])
    with req.transaction() as db:
        stamp = now()
        deployment_id = insert(
            db, "INSERT INTO deployments (repo_id, sha, ref, task, payload, environment, description, transient_environment,"
            " production_environment, creator_id, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (row["id"], sha, ref, task, json.dumps(payload), environment, description, int(flags[0]), int(flags[1]),
             req.principal.user["id"], stamp, stamp))
        req.effect("deployment %d of %s (%s) to %s" % (deployment_id, ref[:100], sha[:12], environment[:100]))
    return 201, deployment_json(req.app, row, req.app.store.one("SELECT * FROM deployments WHERE id = ?",
                                                                deployment_id))


@route("GET", "/api/v3/repos/{owner}/{repo}/deployments/{deployment_id:int}")
def get_deployment(req, owner, repo, deployment_id):
    return deployment_json(req.app, *find_deployment(req, owner, repo, deployment_id))


def is_active(store, deployment):
    latest = store.one("SELECT state FROM deployment_statuses WHERE deployment_id = ? ORDER BY id DESC LIMIT 1",
                       deployment["id"])
    return latest is not None and latest["state"] != "inactive"


@route("DELETE", "/api/v3/repos/{owner}/{repo}/deployments/{deployment_id:int}")
def delete_deployment(req, owner, repo, deployment_id):
    row, deployment = find_deployment(req, owner, repo, deployment_id, "deploy")
    if is_active(req.app.store, deployment):
        raise invalid("Deployment", "state", "custom", "We cannot delete an active deployment unless it is the only "
                                                       "deployment in a given environment.")
    return delete_row(req, "deployments", deployment["id"], "deployment %d" % deployment["id"])


@route("GET", "/api/v3/repos/{owner}/{repo}/deployments/{deployment_id:int}/statuses")
def list_deployment_statuses(req, owner, repo, deployment_id):
    row, deployment = find_deployment(req, owner, repo, deployment_id)
    rows = req.app.store.all("SELECT * FROM deployment_statuses WHERE deployment_id = ? ORDER BY id DESC",
                             deployment["id"])
    return [deployment_status_json(req.app, row, deployment, r) for r in req.paginate(rows)]


@route("POST", "/api/v3/repos/{owner}/{repo}/deployments/{deployment_id:int}/statuses")
def create_deployment_status(req, owner, repo, deployment_id):
    body = req.json()
    state = req.field(body, "state", str, "DeploymentStatus", required=True)
    if state not in DEPLOYMENT_STATES:
        raise invalid("DeploymentStatus", "state", message="state must be one of %s" % ", ".join(DEPLOYMENT_STATES))
    text = {name: req.text_field(body, name, "DeploymentStatus", limit=limit) or "" for name, limit in (
        ("description", 140), ("target_url", 2048), ("log_url", 2048), ("environment_url", 2048),
        ("environment", 255))}
    auto_inactive = req.field(body, "auto_inactive", bool, "DeploymentStatus", default=True)
    row, deployment = find_deployment(req, owner, repo, deployment_id, "deploy")
    environment = text.pop("environment") or deployment["environment"]
    with req.transaction() as db:
        stamp = now()
        status_id = insert(
            db, "INSERT INTO deployment_statuses (deployment_id, state, description, environment, target_url, log_url,"
            " environment_url, creator_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (deployment["id"], state, text["description"], environment, text["target_url"] or text["log_url"],
             text["log_url"] or text["target_url"], text["environment_url"], req.principal.user["id"], stamp))
        db.execute("UPDATE deployments SET environment = ?, updated_at = ? WHERE id = ?",
                   (environment, stamp, deployment["id"]))
        if state == "success" and auto_inactive:
            # GitHub's rule: the environment's earlier successful deployments, but transient and production ones
            for earlier in db.execute(
                    "SELECT d.id FROM deployments d WHERE d.repo_id = ? AND d.environment = ? AND d.id < ? AND"
                    " d.transient_environment = 0 AND d.production_environment = 0 AND (SELECT s.state FROM"
                    " deployment_statuses s WHERE s.deployment_id = d.id ORDER BY s.id DESC LIMIT 1) = 'success'",
                    (row["id"], environment, deployment["id"])).fetchall():
                db.execute("INSERT INTO deployment_statuses (deployment_id, state, environment, creator_id, created_at)"
                           " VALUES (?, 'inactive', ?, ?, ?)", (earlier[0], environment, req.principal.user["id"],
                                                               stamp))
        req.effect("deployment %d status %s" % (deployment["id"], state))
    return 201, deployment_status_json(req.app, row, deployment, req.app.store.one(
        "SELECT * FROM deployment_statuses WHERE id = ?", status_id))


@route("GET", "/api/v3/repos/{owner}/{repo}/deployments/{deployment_id:int}/statuses/{status_id:int}")
def get_deployment_status(req, owner, repo, deployment_id, status_id):
    row, deployment = find_deployment(req, owner, repo, deployment_id)
    return deployment_status_json(req.app, row, deployment, one_or_404(
        req, "SELECT * FROM deployment_statuses WHERE id = ? AND deployment_id = ?", int(status_id), deployment["id"]))
