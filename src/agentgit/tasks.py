"""REST: task grants, task tokens, step-up and approvals."""

import dataclasses
import datetime
import json
import re
import secrets

from agentgit.config import from_now, now, parse_time
from agentgit.errors import HTTPError, invalid
from agentgit.storage import insert_row
from agentgit.tokens import issue_token, revoke, token_fingerprint
from agentgit.accounts import account_by_id, check_totp, repo_by_full_name
from agentgit.policy import ACTIONS, Resource, STEP_UP_SECONDS, decide, permission_on
from agentgit.authentication import Principal, load_grant
from agentgit.plumbing import route
from agentgit.lookups import find_account, signed_in


# -- task grants and task tokens --------------------------------------------------------------------
# The task is the permission boundary: a human grants an agent named actions on named resources
# for one task, and the agent works with short-lived task tokens that carry nothing more.

TASK_TOKEN_SECONDS, TASK_GRANT_MAX_SECONDS = 3600, 30 * 86400
TASK_ACTIONS = tuple(name for name, spec in ACTIONS.items() if spec.on == "repo" and not spec.humans_only)
TASK_CONSTRAINTS = ("branch_prefix", "expires_at", "network_allowlist", "requires_approval")


def grant_json(app, row):
    grant = load_grant(app.store, row["id"])
    agent = account_by_id(app.store, row["agent_id"])
    return {"id": row["public_id"], "agent": "agent:" + agent["login"], "delegator": "user:" + grant["delegator_login"],
            "task": row["task"], "resources": sorted(grant["resources"]), "actions": sorted(grant["actions"]),
            "constraints": grant["constraints"], "created_at": row["created_at"], "expires_at": row["expires_at"],
            "revoked_at": row["revoked_at"]}


def strip_kind(value, kind):
    return value[len(kind) + 1:] if isinstance(value, str) and value.startswith(kind + ":") else value


@route("POST", "/api/ext/v1/task-grants")
def create_task_grant(req):
    """The seed's shape. No escalation: every action on every resource must be the delegator's to do,
    and the agent must be bound to the delegator."""
    body = req.json()
    human = signed_in(req)
    agent_login = strip_kind(req.field(body, "agent", str, "TaskGrant", required=True), "agent")
    delegator = strip_kind(req.field(body, "delegator", str, "TaskGrant", default="user:" + human["login"]), "user")
    task = req.field(body, "task", str, "TaskGrant", required=True)
    resources = req.field(body, "resources", list, "TaskGrant", required=True)
    actions = req.field(body, "actions", list, "TaskGrant", required=True)
    constraints = req.field(body, "constraints", dict, "TaskGrant", default={})
    if delegator.lower() != human["login"].lower():
        raise invalid("TaskGrant", "delegator", "invalid", "the delegator is the human who makes the grant")
    if not re.fullmatch(r"task:[\w./-]{1,100}", task):
        raise invalid("TaskGrant", "task", message="task names look like task:fix-payment-bug")
    if not resources or not all(isinstance(r, str) and r.startswith("repo:") for r in resources):
        raise invalid("TaskGrant", "resources", message="resources are repositories: repo:owner/name")
    unknown = [a for a in actions if a not in TASK_ACTIONS]
    approval = constraints.get("requires_approval", [])
    if not actions or unknown or not isinstance(approval, list) or any(a not in TASK_ACTIONS for a in approval):
        raise invalid("TaskGrant", "actions", message="actions are from %s" % ", ".join(TASK_ACTIONS))
    try:
        expires = parse_time(constraints.get("expires_at") or from_now(86400))
    except (ValueError, AttributeError):
        raise invalid("TaskGrant", "constraints", message="constraints.expires_at must be an ISO 8601 time")
    moment = datetime.datetime.now(datetime.timezone.utc)
    if not moment < expires <= moment + datetime.timedelta(seconds=TASK_GRANT_MAX_SECONDS):
        raise invalid("TaskGrant", "constraints", message="expires_at must be in the next 30 days")
    prefix = constraints.get("branch_prefix")
    if prefix is not None and (not isinstance(prefix, str) or ".." in prefix or not prefix.strip()):
        raise invalid("TaskGrant", "constraints", message="branch_prefix must be a branch name prefix")
    hosts = constraints.get("network_allowlist", [])
    if not isinstance(hosts, list) or not all(isinstance(h, str) and re.fullmatch(r"[\w.*:-]{1,255}", h)
                                              for h in hosts):
        raise invalid("TaskGrant", "constraints", message="network_allowlist is a list of host names")
    unknown = sorted(set(constraints) - set(TASK_CONSTRAINTS))
    if unknown:      # a misspelt constraint would otherwise constrain nothing, silently
        raise invalid("TaskGrant", "constraints", message="unknown constraint %s; constraints are %s" % (
            unknown[0], ", ".join(TASK_CONSTRAINTS)))
    agent = find_account(req, agent_login, kinds=("agent",))
    # first, whether this token may delegate repository access at all (a refusal is audited)
    req.check("grant_task", Resource.account(human), confers=("repo",))
    rows = []
    for name in resources:
        row = repo_by_full_name(req.app.store, name[len("repo:"):])
        if row is None or not req.can("read_code", Resource.repo(row)):
            raise invalid("TaskGrant", "resources", "invalid", "%s is not a repository you can see" % name)
        rows.append(row)
    authorize_grant(req, agent, rows)
    for row in rows:
        for action in actions:
            decision = decide(req.app.store, Principal(user=human), action, Resource.repo(row))
            if not decision.allowed:
                req.app.audit(req.principal, req.surface, dataclasses.replace(decision, action="grant_task"))
                raise HTTPError(403, "No escalation: %s" % decision.reasons[0])
    public_id = "tg_" + secrets.token_hex(8)
    with req.transaction() as db:
        grant_id = insert_row(db, "task_grants", {
            "public_id": public_id, "agent_id": agent["id"], "delegator_id": human["id"], "task": task,
            "resources": json.dumps(sorted(resources)), "actions": json.dumps(sorted(set(actions))),
            "constraints": json.dumps(dict(constraints, expires_at=expires.strftime("%Y-%m-%dT%H:%M:%SZ"))),
            "created_at": now(), "expires_at": expires.strftime("%Y-%m-%dT%H:%M:%SZ")})
        req.effect("task grant %s for %s: %s on %s" % (public_id, agent["login"], ",".join(actions), ",".join(resources)))
    return 201, grant_json(req.app, req.app.store.one("SELECT * FROM task_grants WHERE id = ?", grant_id))


def authorize_grant(req, agent, repo_rows, **context):
    """A task grant is a human's to make, revoke and approve under when the agent is bound to her, or
    when she owns every organization whose repositories it names: an owner may put an agent to work
    on her organization's repositories whoever it is bound to."""
    store, user = req.app.store, req.principal.user
    bound = permission_on(store, user, Resource.account(agent))[0] == "admin"
    if bound or not all(row["owner_kind"] == "org" for row in repo_rows):
        return req.authorize("grant_task", Resource.account(agent), **context)
    for org_id in sorted({row["owner_id"] for row in repo_rows}):
        req.authorize("grant_task", Resource.account(account_by_id(store, org_id)), **context)


def grant_repos(store, grant_row):
    """The repositories a grant names that still exist under those names."""
    names = json.loads(grant_row["resources"])
    return [row for row in (repo_by_full_name(store, strip_kind(n, "repo")) for n in names) if row is not None]


def find_grant(req, public_id, action):
    row = req.app.store.one("SELECT * FROM task_grants WHERE public_id = ?", public_id)
    if row is None:
        raise HTTPError(404, "Not Found")
    user = signed_in(req)
    if action == "mint_task_token":
        if row["agent_id"] != user["id"]:
            raise HTTPError(404, "Not Found")
        req.authorize(action, Resource.account(user), grant=row)
    else:
        try:
            authorize_grant(req, account_by_id(req.app.store, row["agent_id"]), grant_repos(req.app.store, row))
        except HTTPError:
            if row["delegator_id"] != user["id"]:
                raise HTTPError(404, "Not Found")      # a stranger does not learn that the grant exists
            raise
    return row


@route("GET", "/api/ext/v1/task-grants")
def list_task_grants(req):
    user = signed_in(req)
    req.check("read_account", Resource.account(user))
    rows = req.app.store.all("SELECT * FROM task_grants WHERE delegator_id = ? OR agent_id = ? ORDER BY id",
                             user["id"], user["id"])
    return req.paginate([grant_json(req.app, r) for r in rows])


@route("GET", "/api/ext/v1/task-grants/{grant_id}")
def get_task_grant(req, grant_id):
    """The grant, for its delegator and its agent (a task token of the agent included)."""
    user = signed_in(req)
    req.check("read_account", Resource.account(user))
    row = req.app.store.one("SELECT * FROM task_grants WHERE public_id = ?", grant_id)
    if row is None or user["id"] not in (row["delegator_id"], row["agent_id"]):
        raise HTTPError(404, "Not Found")
    return grant_json(req.app, row)


@route("DELETE", "/api/ext/v1/task-grants/{grant_id}")
def revoke_task_grant(req, grant_id):
    row = find_grant(req, grant_id, "grant_task")
    with req.transaction() as db:
        db.execute("UPDATE task_grants SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?", (now(), row["id"]))
        count = revoke(db, "grant_id = ?", (row["id"],))
        req.effect("revoked task grant %s and %d task tokens" % (row["public_id"], count))
    return 204, None


@route("POST", "/api/ext/v1/task-grants/revocations")
def revoke_task(req):
    """Every grant the caller made for a task, and every token of those grants."""
    body = req.json()
    task = req.field(body, "task", str, "TaskGrant", required=True)
    user = signed_in(req)
    rows = req.app.store.all("SELECT * FROM task_grants WHERE delegator_id = ? AND task = ? AND revoked_at IS NULL",
                             user["id"], task)
    req.authorize("grant_task", Resource.account(user))
    with req.transaction() as db:
        count = 0
        for row in rows:
            db.execute("UPDATE task_grants SET revoked_at = ? WHERE id = ?", (now(), row["id"]))
            count += revoke(db, "grant_id = ?", (row["id"],))
        req.effect("revoked task %s: %d grants, %d tokens" % (task, len(rows), count))
    return 200, {"grants": len(rows), "revoked": count}


@route("POST", "/api/ext/v1/task-grants/{grant_id}/tokens")
def mint_task_token(req, grant_id):
    """For the agent, with its own token: a task token for at most an hour and never past the grant.
    Asking for more actions than the grant gives is narrowed to what it gives, and the answer says so."""
    body = req.json()
    row = find_grant(req, grant_id, "mint_task_token")
    return 201, issue_task_token(req, row, req.field(body, "actions", list, "TaskToken"))


def issue_task_token(req, row, asked=None):
    """A task token for the grant's row, for the actions asked that the grant gives (narrowed, and
    said so, when that is fewer); for all it gives when none are asked."""
    granted = json.loads(row["actions"])
    asked = granted if asked is None else asked
    given = sorted(set(asked) & set(granted))
    expires_at = min(from_now(TASK_TOKEN_SECONDS), row["expires_at"])
    with req.transaction() as db:
        token, _ = issue_token(db, req.app.key, row["agent_id"], "task", name="task " + row["task"], scopes=given,
                               expires_at=expires_at, grant_id=row["id"])
        req.effect("task token %s for %s until %s%s" % (token_fingerprint(token), row["public_id"], expires_at,
                                                       " (narrowed)" if set(asked) - set(given) else ""))
    return {"token": token, "expires_at": expires_at, "grant": row["public_id"], "task": row["task"],
            "scope": " ".join(given), "decision": "allow_narrowed" if set(asked) - set(given) else "allow"}


# -- step-up and approvals: a human's fresh second factor, a human's yes ------------------------------

@route("POST", "/api/ext/v1/step-up")
def step_up(req):
    """The token's human confirms a TOTP code; for ten minutes the token may then do what asks for one."""
    user = signed_in(req)
    otp = req.field(req.json(), "otp", str, "StepUp", required=True)
    req.authorize("issue_token", Resource.account(user))
    if req.principal.token_id is None or not user["totp_secret"]:
        raise HTTPError(422, "Step-up needs a token of a human with TOTP turned on (python agentgit.py user totp)")
    confirm_totp(req, user, otp)
    with req.transaction() as db:
        db.execute("INSERT OR REPLACE INTO step_ups (token_id, at) VALUES (?, ?)", (req.principal.token_id, now()))
        req.effect("stepped up token %s" % req.principal.fingerprint)
    return 200, {"stepped_up_until": from_now(STEP_UP_SECONDS)}


def confirm_totp(req, user, code):
    """A step-up's code: rate-limited per human, 401 when wrong."""
    retry = req.app.sign_ins.hit("step-up:%d" % user["id"])
    if retry:
        raise HTTPError(429, "Too many codes; try again later", headers={"Retry-After": str(retry)})
    if not check_totp(req.app.key, user, code):
        raise HTTPError(401, "Wrong TOTP code")


APPROVAL_SELECT = ("SELECT a.*, g.delegator_id, g.agent_id, g.task, g.public_id AS grant_public"
                   " FROM approvals a JOIN task_grants g ON g.id = a.grant_id")


def approval_json(app, row):
    state = ("used" if row["used_at"] else "approved" if row["approved_at"] else
             "expired" if row["expires_at"] <= now() else "pending")
    approver = account_by_id(app.store, row["approved_by"]) if row["approved_by"] else None
    return {"id": row["public_id"], "state": state, "action": row["action"], "resource": row["resource"],
            "subject": row["subject"], "grant": row["grant_public"], "task": row["task"], "created_at": row["created_at"],
            "expires_at": row["expires_at"], "approved_by": "user:" + approver["login"] if approver else None,
            "approved_at": row["approved_at"], "used_at": row["used_at"],
            "approval_url": "%s/api/ext/v1/approvals/%s/approve" % (app.url, row["public_id"])}


@route("GET", "/api/ext/v1/approvals")
def list_approvals(req):
    """What waits on the caller, or on the caller's human: pending approvals first, newest first."""
    user = signed_in(req)
    req.check("read_account", Resource.account(user))
    rows = req.app.store.all(APPROVAL_SELECT + " WHERE g.delegator_id = ? OR g.agent_id = ? ORDER BY a.id DESC",
                             user["id"], user["id"])
    shown = [approval_json(req.app, r) for r in rows]
    return req.paginate(sorted(shown, key=lambda a: a["state"] != "pending"))


@route("GET", "/api/ext/v1/approvals/{approval_id}")
def get_approval(req, approval_id):
    """For the grant's delegator and its agent, who may wait on it by polling."""
    user = signed_in(req)
    req.check("read_account", Resource.account(user))
    row = req.app.store.one(APPROVAL_SELECT + " WHERE a.public_id = ?", approval_id)
    if row is None or user["id"] not in (row["delegator_id"], row["agent_id"]):
        raise HTTPError(404, "Not Found")
    return approval_json(req.app, row)


@route("POST", "/api/ext/v1/approvals/{approval_id}/approve")
def approve(req, approval_id):
    give_approval(req, signed_in(req), approval_id)
    return approval_json(req.app, req.app.store.one(APPROVAL_SELECT + " WHERE a.public_id = ?", approval_id))


def give_approval(req, user, approval_id):
    """The grant's delegator says yes to exactly this action on exactly this resource, once."""
    row = req.app.store.one(APPROVAL_SELECT + " WHERE a.public_id = ?", approval_id)
    if row is None or row["delegator_id"] != user["id"]:
        raise HTTPError(404, "Not Found")
    grant = req.app.store.one("SELECT * FROM task_grants WHERE id = ?", row["grant_id"])
    authorize_grant(req, account_by_id(req.app.store, row["agent_id"]), grant_repos(req.app.store, grant), grant=grant)
    if row["approved_at"] or row["expires_at"] <= now():
        raise HTTPError(409, "This approval was already given or has expired")
    with req.transaction() as db:
        db.execute("UPDATE approvals SET approved_by = ?, approved_at = ? WHERE id = ?", (user["id"], now(), row["id"]))
        req.effect("approved %s: %s on %s under %s" % (row["public_id"], row["action"], row["resource"],
                                                       row["grant_public"]))
    return row
