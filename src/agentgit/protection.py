"""REST: branch protection, commit statuses and check runs."""

import json

from agentgit.config import now
from agentgit.errors import HTTPError, invalid
from agentgit.storage import insert, insert_row, update_row
from agentgit.gitstore import branch_sha, open_repo, resolve_commit
from agentgit.accounts import full_name
from agentgit.policy import branch_protection
from agentgit.routing import route
from agentgit.serializers import node_id, repo_json, user_json_by_id
from agentgit.lookups import find_repo, one_or_404


# -- branch protection, statuses, check runs ----------------------------------------------------

def protection_json(app, repo_row, rule):
    base = "%s/repos/%s/branches/%s/protection" % (app.api, full_name(repo_row), rule["branch"])
    checks = json.loads(rule["required_checks"]) if rule["required_checks"] is not None else None
    out = {"url": base,
           "enforce_admins": {"url": base + "/enforce_admins", "enabled": bool(rule["enforce_admins"])},
           "allow_force_pushes": {"enabled": bool(rule["allow_force_pushes"])},
           "allow_deletions": {"enabled": bool(rule["allow_deletions"])},
           "required_linear_history": {"enabled": False}, "required_conversation_resolution": {"enabled": False},
           "required_signatures": {"url": base + "/required_signatures", "enabled": False},
           "lock_branch": {"enabled": False}, "block_creations": {"enabled": False},
           "allow_fork_syncing": {"enabled": False}}
    if checks is not None:
        out["required_status_checks"] = {"url": base + "/required_status_checks", "strict": bool(rule["strict_checks"]),
                                         "contexts": checks, "contexts_url": base + "/required_status_checks/contexts",
                                         "checks": [{"context": c, "app_id": None} for c in checks]}
    if rule["required_approvals"] is not None:
        out["required_pull_request_reviews"] = {
            "url": base + "/required_pull_request_reviews", "dismiss_stale_reviews": bool(rule["dismiss_stale"]),
            "require_code_owner_reviews": False, "required_approving_review_count": rule["required_approvals"],
            "require_last_push_approval": False}
    return out


def find_protected_branch(req, owner, repo, branch, action):
    row = find_repo(req, owner, repo, action)
    with open_repo(req.app, row["id"]) as git:
        if branch_sha(git, branch) is None:
            raise HTTPError(404, "Branch not found")
    return row


@route("GET", "/api/v3/repos/{owner}/{repo}/branches/{branch:path}/protection")
def get_protection(req, owner, repo, branch):
    row = find_protected_branch(req, owner, repo, branch, "admin_repo")
    rule = branch_protection(req.app.store, row["id"], branch)
    if rule is None:
        raise HTTPError(404, "Branch not protected")
    return protection_json(req.app, row, rule)


@route("GET", "/api/v3/repos/{owner}/{repo}/rules/branches/{branch:path}")
def branch_rules(req, owner, repo, branch):
    """The rulesets' rules that apply to a branch: none, as agentgit has no rulesets (a branch's protection
    is its classic protection above, which GitHub does not list here either). Renovate asks."""
    find_repo(req, owner, repo)
    return req.paginate([])


def bool_setting(req, body, name):
    value = body.get(name)
    if isinstance(value, dict):       # GitHub answers {"enabled": x}; accept that shape back
        value = value.get("enabled")
    if value is not None and not isinstance(value, bool):
        raise invalid("BranchProtection", name, message="%s must be true, false or null" % name)
    return int(bool(value))


@route("PUT", "/api/v3/repos/{owner}/{repo}/branches/{branch:path}/protection")
def set_protection(req, owner, repo, branch):
    body = req.json()
    for key in ("required_status_checks", "enforce_admins", "required_pull_request_reviews", "restrictions"):
        if key not in body:
            raise invalid("BranchProtection", key, "missing_field", "%s is required (null to leave it off)" % key)
    checks = body["required_status_checks"]
    if checks is not None and (not isinstance(checks, dict) or not isinstance(checks.get("contexts", []), list)
                               or not all(isinstance(c, str) for c in checks.get("contexts", []))):
        raise invalid("BranchProtection", "required_status_checks", message="expected {strict, contexts: [names]}")
    reviews = body["required_pull_request_reviews"]
    approvals = None
    if reviews is not None:
        if not isinstance(reviews, dict):
            raise invalid("BranchProtection", "required_pull_request_reviews", message="expected an object or null")
        approvals = reviews.get("required_approving_review_count", 1)
        if isinstance(approvals, bool) or not isinstance(approvals, int) or not 0 <= approvals <= 6:
            raise invalid("BranchProtection", "required_approving_review_count", message="must be 0 to 6")
    row = find_protected_branch(req, owner, repo, branch, "manage_protection")
    with req.transaction() as db:
        db.execute("INSERT INTO branch_protections (repo_id, branch, required_approvals, dismiss_stale,"
                   " required_checks, strict_checks, enforce_admins, allow_force_pushes, allow_deletions, updated_at)"
                   " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (repo_id, branch) DO UPDATE SET"
                   " required_approvals = excluded.required_approvals, dismiss_stale = excluded.dismiss_stale,"
                   " required_checks = excluded.required_checks, strict_checks = excluded.strict_checks,"
                   " enforce_admins = excluded.enforce_admins, allow_force_pushes = excluded.allow_force_pushes,"
                   " allow_deletions = excluded.allow_deletions, updated_at = excluded.updated_at",
                   (row["id"], branch, approvals, int(bool((reviews or {}).get("dismiss_stale_reviews"))),
                    json.dumps(checks.get("contexts", [])) if checks is not None else None,
                    int(bool((checks or {}).get("strict"))), bool_setting(req, body, "enforce_admins"),
                    bool_setting(req, body, "allow_force_pushes"), bool_setting(req, body, "allow_deletions"), now()))
        req.effect("protected branch %s" % branch)
    return protection_json(req.app, row, req.app.store.one(
        "SELECT * FROM branch_protections WHERE repo_id = ? AND branch = ?", row["id"], branch))


@route("DELETE", "/api/v3/repos/{owner}/{repo}/branches/{branch:path}/protection")
def delete_protection(req, owner, repo, branch):
    row = find_protected_branch(req, owner, repo, branch, "manage_protection")
    with req.transaction() as db:
        if not db.execute("DELETE FROM branch_protections WHERE repo_id = ? AND branch = ?", (row["id"], branch)).rowcount:
            raise HTTPError(404, "Branch not protected")
        req.effect("unprotected branch %s" % branch)
    return 204, None


STATUS_STATES = ("error", "failure", "pending", "success")


def status_json(app, repo_row, row):
    return {"url": "%s/repos/%s/statuses/%s" % (app.api, full_name(repo_row), row["sha"]), "id": row["id"],
            "node_id": node_id("StatusContext", row["id"]), "avatar_url": "%s/avatars/agentgit" % app.url,
            "state": row["state"], "description": row["description"] or "", "target_url": row["target_url"] or "",
            "context": row["context"], "created_at": row["created_at"], "updated_at": row["created_at"],
            "creator": user_json_by_id(app, row["creator_id"])}


def commit_of(req, row, ref):
    with open_repo(req.app, row["id"]) as git:
        sha = resolve_commit(git, ref)
    if sha is None:
        raise HTTPError(404, "No commit found for SHA: %s" % ref)
    return sha


@route("POST", "/api/v3/repos/{owner}/{repo}/statuses/{sha}")
def create_status(req, owner, repo, sha):
    body = req.json()
    state = req.field(body, "state", str, "Status", required=True)
    if state not in STATUS_STATES:
        raise invalid("Status", "state", message="state must be error, failure, pending or success")
    context = req.text_field(body, "context", "Status", limit=255) or "default"
    description = req.text_field(body, "description", "Status", limit=1024)
    target_url = req.text_field(body, "target_url", "Status", limit=2048)
    row = find_repo(req, owner, repo, "write_status")
    sha = commit_of(req, row, sha)
    with req.transaction() as db:
        status_id = insert(db, "INSERT INTO statuses (repo_id, sha, state, context, description, target_url,"
                               " creator_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                               (row["id"], sha, state, context, description, target_url, req.principal.user["id"],
                                now()))
        req.effect("status %s=%s on %s" % (context, state, sha[:12]))
    return 201, status_json(req.app, row, req.app.store.one("SELECT * FROM statuses WHERE id = ?", status_id))


@route("GET", "/api/v3/repos/{owner}/{repo}/commits/{ref:path}/statuses")
def list_statuses(req, owner, repo, ref):
    row = find_repo(req, owner, repo)
    sha = commit_of(req, row, ref)
    rows = req.app.store.all("SELECT * FROM statuses WHERE repo_id = ? AND sha = ? ORDER BY id DESC", row["id"], sha)
    return [status_json(req.app, row, r) for r in req.paginate(rows)]


def latest_statuses(store, repo_id, sha):
    """{context: its latest status row} of a commit."""
    latest = {}
    for r in store.all("SELECT * FROM statuses WHERE repo_id = ? AND sha = ? ORDER BY id", repo_id, sha):
        latest[r["context"]] = r
    return latest


@route("GET", "/api/v3/repos/{owner}/{repo}/commits/{ref:path}/status")
def combined_status(req, owner, repo, ref):
    row = find_repo(req, owner, repo)
    sha = commit_of(req, row, ref)
    latest = latest_statuses(req.app.store, row["id"], sha)
    states = {r["state"] for r in latest.values()}
    state = "failure" if states & {"error", "failure"} else "pending" if "pending" in states or not states else "success"
    name = full_name(row)
    return {"state": state, "sha": sha, "total_count": len(latest),
            "statuses": [status_json(req.app, row, r) for r in req.paginate(list(latest.values()))], "repository": repo_json(req.app, row),
            "commit_url": "%s/repos/%s/commits/%s" % (req.app.api, name, sha),
            "url": "%s/repos/%s/commits/%s/status" % (req.app.api, name, sha)}


CHECK_STATUSES = ("queued", "in_progress", "completed")
CHECK_CONCLUSIONS = ("action_required", "cancelled", "failure", "neutral", "success", "skipped", "stale", "timed_out")


def check_run_json(app, repo_row, row):
    name, api = full_name(repo_row), app.api
    output = json.loads(row["output"])
    url = "%s/repos/%s/check-runs/%d" % (api, name, row["id"])
    return {"id": row["id"], "node_id": node_id("CheckRun", row["id"]), "head_sha": row["head_sha"],
            "external_id": row["external_id"] or "", "url": url,
            "html_url": "%s/%s/runs/%d" % (app.url, name, row["id"]), "details_url": row["details_url"] or "",
            "status": row["status"], "conclusion": row["conclusion"], "started_at": row["started_at"],
            "completed_at": row["completed_at"], "name": row["name"], "check_suite": {"id": row["id"]},
            "output": {"title": output.get("title"), "summary": output.get("summary"), "text": output.get("text"),
                       "annotations_count": len(output.get("annotations", [])), "annotations_url": url + "/annotations"},
            "app": None, "pull_requests": []}


def check_run_fields(req, body, creating):
    fields = {}
    name = req.text_field(body, "name", "CheckRun", required=creating, limit=255)
    if name is not None:
        fields["name"] = name
    status = req.field(body, "status", str, "CheckRun", default="queued" if creating else None)
    if status is not None:
        if status not in CHECK_STATUSES:
            raise invalid("CheckRun", "status", message="status must be queued, in_progress or completed")
        fields["status"] = status
    conclusion = req.field(body, "conclusion", str, "CheckRun")
    if conclusion is not None:
        if conclusion not in CHECK_CONCLUSIONS:
            raise invalid("CheckRun", "conclusion", message="conclusion must be one of %s" % ", ".join(CHECK_CONCLUSIONS))
        fields.update(conclusion=conclusion, status="completed")
    if fields.get("status") == "completed":
        if "conclusion" not in fields:
            raise invalid("CheckRun", "conclusion", "missing_field", "a completed check run needs a conclusion")
        fields["completed_at"] = req.field(body, "completed_at", str, "CheckRun") or now()
    for key in ("external_id", "details_url", "started_at"):
        value = req.text_field(body, key, "CheckRun", limit=2048)
        if value is not None:
            fields[key] = value
    output = req.field(body, "output", dict, "CheckRun")
    if output is not None:
        fields["output"] = json.dumps({k: output.get(k) for k in ("title", "summary", "text")
                                       if isinstance(output.get(k), str)})
    return fields


@route("POST", "/api/v3/repos/{owner}/{repo}/check-runs")
def create_check_run(req, owner, repo):
    body = req.json()
    fields = check_run_fields(req, body, creating=True)
    head = req.field(body, "head_sha", str, "CheckRun", required=True)
    row = find_repo(req, owner, repo, "write_status")
    fields.update(head_sha=commit_of(req, row, head), repo_id=row["id"], creator_id=req.principal.user["id"])
    fields.setdefault("started_at", now())
    with req.transaction() as db:
        run_id = insert_row(db, "check_runs", fields)
        req.effect("check run %d %s (%s) on %s" % (run_id, fields["name"], fields["status"], fields["head_sha"][:12]))
        req.announce(row["id"], "check_run", "completed" if fields["status"] == "completed" else "created",
                     {"check_run_id": run_id})
    return 201, check_run_json(req.app, row, req.app.store.one("SELECT * FROM check_runs WHERE id = ?", run_id))


def find_check_run(req, row, run_id):
    return one_or_404(req, "SELECT * FROM check_runs WHERE id = ? AND repo_id = ?", int(run_id), row["id"])


@route("GET", "/api/v3/repos/{owner}/{repo}/check-runs/{run_id:int}")
def get_check_run(req, owner, repo, run_id):
    row = find_repo(req, owner, repo)
    return check_run_json(req.app, row, find_check_run(req, row, run_id))


@route("PATCH", "/api/v3/repos/{owner}/{repo}/check-runs/{run_id:int}")
def update_check_run(req, owner, repo, run_id):
    body = req.json()
    fields = check_run_fields(req, body, creating=False)
    row = find_repo(req, owner, repo, "write_status")
    run = find_check_run(req, row, run_id)
    with req.transaction() as db:
        update_row(db, "check_runs", fields, "id", run["id"])
        req.effect("check run %d updated: %s" % (run["id"], ", ".join(sorted(fields))))
        if fields.get("status") == "completed" and run["status"] != "completed":
            req.announce(row["id"], "check_run", "completed", {"check_run_id": run["id"]})
    return check_run_json(req.app, row, find_check_run(req, row, run_id))


@route("GET", "/api/v3/repos/{owner}/{repo}/check-runs/{run_id:int}/annotations")
def list_check_run_annotations(req, owner, repo, run_id):
    """The annotations of a check run: a workflow job's ::error::, ::warning:: and ::notice:: lines."""
    row = find_repo(req, owner, repo)
    return req.paginate(json.loads(find_check_run(req, row, run_id)["output"]).get("annotations", []))


@route("GET", "/api/v3/repos/{owner}/{repo}/commits/{ref:path}/check-runs")
def list_check_runs(req, owner, repo, ref):
    row = find_repo(req, owner, repo)
    sha = commit_of(req, row, ref)
    rows = req.app.store.all("SELECT * FROM check_runs WHERE repo_id = ? AND head_sha = ? ORDER BY id DESC", row["id"], sha)
    return {"total_count": len(rows), "check_runs": [check_run_json(req.app, row, r) for r in req.paginate(rows)]}
