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
from agentgit.gitstore import commits_between, open_repo
from agentgit.proofs import spiffe_id
from agentgit.accounts import account_by_id, account_by_login, full_name, repo_by_full_name
from agentgit.guardrails import grant_org_ids, guardrail_excess, guardrails_over, task_reads
from agentgit.policy import ACTIONS, SITE, Decision, Resource, STEP_UP_SECONDS, decide, permission_on
from agentgit.approvals import approval_page
from agentgit.authentication import Principal, confirm_totp, load_grant, remember_runtime_certificate
from agentgit.routing import route
from agentgit.lookups import find_account, signed_in
from agentgit.vault import held_credential
from agentgit.pulls import PullState


# -- task grants and task tokens --------------------------------------------------------------------
# The task is the permission boundary: a human grants an agent named actions on named resources
# for one task, and the agent works with short-lived task tokens that carry nothing more.

TASK_TOKEN_SECONDS, TASK_GRANT_MAX_SECONDS = 3600, 30 * 86400
# (not one only a kind of token holds: a run's job grant alone adds to its run's artifacts)
TASK_ACTIONS = tuple(name for name, spec in ACTIONS.items() if spec.on == "repo" and not spec.humans_only and
                     not spec.token_kinds and not spec.follow_up)
# what a grant may name: actions on its repositories, and calls through the broker with its credentials
# (asking for a tool token, use_credential, is what requires_approval may reserve for a human's yes)
GRANT_ACTIONS, APPROVABLE_ACTIONS = TASK_ACTIONS + ("call_api",), TASK_ACTIONS + ("call_api", "use_credential")
TASK_CONSTRAINTS = ("branch_prefix", "expires_at", "network_allowlist", "paths", "private_sinks", "requires_approval",
                    "requires_approval_after_untrusted", "requires_approval_paths", "runtime", "sender_constrained")
PATH_RULES_MAX = 100          # globs in one of a grant's path lists, each of at most 256 characters
ALLOWLIST_ENTRY_RE = re.compile(r"(?:https?://)?(?:\*\.)?[A-Za-z0-9.-]{1,253}(?::[0-9]{1,5})?")


def grant_json(app, row):
    grant = load_grant(app.store, row["id"])
    agent = account_by_id(app.store, row["agent_id"])
    return {"id": row["public_id"], "agent": "agent:" + agent["login"], "delegator": "user:" + grant["delegator_login"],
            "task": row["task"], "resources": sorted(grant["resources"]), "actions": sorted(grant["actions"]),
            "constraints": grant["constraints"], "created_at": row["created_at"], "expires_at": row["expires_at"],
            "revoked_at": row["revoked_at"], "read": [{"kind": r["kind"], "resource": r["resource"], "what": r["what"],
                                                       "at": r["at"]} for r in task_reads(app.store, grant["task_id"])]}


def strip_kind(value, kind):
    return value[len(kind) + 1:] if isinstance(value, str) and value.startswith(kind + ":") else value


@route("POST", "/api/ext/v1/task-grants")
def create_task_grant(req):
    """The seed's shape. No escalation: every action on every resource must be the delegator's to do,
    and the agent must be bound to the delegator."""
    return 201, grant_json(req.app, make_task_grant(req, req.json()))


def make_task_grant(req, body):
    """The task grant ``body`` asks for (the API's JSON, or the console's form made into it), once every
    check holds: its row."""
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
    if not resources or not all(isinstance(r, str) and r.startswith(("repo:", "credential:")) for r in resources):
        raise invalid("TaskGrant", "resources", message="resources are repositories (repo:owner/name) and broker "
                                                        "credentials (credential:owner/name)")
    unknown = [a for a in actions if a not in GRANT_ACTIONS]
    approval = [constraints.get(name, []) for name in ("requires_approval", "requires_approval_after_untrusted")]
    if not actions or unknown or not all(isinstance(names, list) and all(a in APPROVABLE_ACTIONS for a in names)
                                         for names in approval):
        raise invalid("TaskGrant", "actions", message="actions are from %s" % ", ".join(GRANT_ACTIONS))
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
    check_network_constraints(constraints)
    check_path_rules(constraints)
    unknown = sorted(set(constraints) - set(TASK_CONSTRAINTS))
    if unknown:      # a misspelt constraint would otherwise constrain nothing, silently
        raise invalid("TaskGrant", "constraints", message="unknown constraint %s; constraints are %s" % (
            unknown[0], ", ".join(TASK_CONSTRAINTS)))
    agent = find_account(req, agent_login, kinds=("agent",))
    # first, whether this token may delegate repository access at all (a refusal is audited)
    req.check("grant_task", Resource.account(human), confers=("repo",))
    rows, credentials = [], []
    for name in resources:
        if name.startswith("credential:"):
            credentials.append(granted_credential(req, human, name))
            continue
        row = repo_by_full_name(req.app.store, name[len("repo:"):])
        if row is None or not req.can("read_code", Resource.repo(row)):
            raise invalid("TaskGrant", "resources", "invalid", "%s is not a repository you can see" % name)
        rows.append(row)
    authorize_grant(req, agent, rows)
    refusals = [decide(req.app.store, Principal(user=human), action, Resource.repo(row)) for row in rows
                for action in actions if action != "call_api"]
    refusals += [Decision("deny", "grant_task", c.name, ["%s may not use %s: its owner (or its organization's admins) "
                                                         "may" % (human["login"], c.name)])
                 for c in credentials if permission_on(req.app.store, human, c)[0] != "admin"]
    excess = guardrail_excess(req.app.store, actions, constraints, resources)
    if excess:
        req.record_refusal(Decision("deny", "grant_task", "agent:" + agent["login"], [excess]))
        raise HTTPError(403, "The grant asks for more than agents may hold here: %s" % excess)
    refusal = next((d for d in refusals if not d.allowed), None)
    if refusal is not None:
        req.record_refusal(dataclasses.replace(refusal, action="grant_task"))
        raise HTTPError(403, "No escalation: %s" % refusal.reasons[0])
    with req.transaction() as db:
        grant_id, public_id = insert_task_grant(db, agent["id"], human["id"], task, resources, actions, constraints,
                                                expires.strftime("%Y-%m-%dT%H:%M:%SZ"))
        req.effect("task grant %s for %s: %s on %s" % (public_id, agent["login"], ",".join(actions), ",".join(resources)))
    return req.app.store.one("SELECT * FROM task_grants WHERE id = ?", grant_id)


def insert_task_grant(db, agent_id, delegator_id, task, resources, actions, constraints, expires_at, parent_id=None):
    """A task_grants row, its expiry in its constraints too, as every grant says it: (row id, public id).
    A human's grant, an App's installation and a run's job grant are each one."""
    public_id = "tg_" + secrets.token_hex(8)
    grant_id = insert_row(db, "task_grants", {
        "public_id": public_id, "agent_id": agent_id, "delegator_id": delegator_id, "task": task,
        "resources": json.dumps(sorted(resources)), "actions": json.dumps(sorted(set(actions))),
        "constraints": json.dumps(dict(constraints, expires_at=expires_at)), "created_at": now(),
        "expires_at": expires_at, "parent_id": parent_id})
    return grant_id, public_id


def check_network_constraints(constraints):
    """network_allowlist, and private_sinks (where what the task read privately may go without a human's
    yes): [scheme://]host[:port] entries (a leading *. for subdomains); runtime: SPIFFE
    IDs (* for any part), normalized in place; sender_constrained: a boolean."""
    for name in ("network_allowlist", "private_sinks"):
        hosts = constraints.get(name, [])
        if not isinstance(hosts, list) or not all(isinstance(h, str) and ALLOWLIST_ENTRY_RE.fullmatch(h) for h in hosts):
            raise invalid("TaskGrant", "constraints", message="%s is a list of hosts: host, host:port, *.domain, or "
                                                              "http://host:port for plain HTTP" % name)
    runtimes = constraints.get("runtime", [])
    try:
        if not isinstance(runtimes, list):
            raise ValueError("a list")
        if runtimes:        # normalized as a certificate's identity is, so each compares as it will be read
            constraints["runtime"] = [spiffe_id(runtime, pattern=True) for runtime in runtimes]
    except ValueError:
        raise invalid("TaskGrant", "constraints", message="constraints.runtime is a list of SPIFFE IDs "
                                                          "(spiffe://trust-domain/path, * for any part)")
    if not isinstance(constraints.get("sender_constrained", False), bool):
        raise invalid("TaskGrant", "constraints", message="constraints.sender_constrained is a boolean")


def check_path_rules(constraints):
    """paths and requires_approval_paths: lists of path globs."""
    for name in ("paths", "requires_approval_paths"):
        check_globs(constraints.get(name, []), "TaskGrant", "constraints." + name)


def check_globs(globs, resource, field):
    """A list of path globs (``**`` any directories, ``*`` and ``?`` within a name) relative to the
    repository's root: 422 naming ``field`` of ``resource`` otherwise."""
    if not isinstance(globs, list) or len(globs) > PATH_RULES_MAX or not all(
            isinstance(g, str) and 0 < len(g.strip("/")) <= 256 and "\0" not in g for g in globs):
        raise invalid(resource, field.split(".")[0], message="%s is a list of at most %d path globs such as "
                      "services/payments/** or .github/workflows/*.yml" % (field, PATH_RULES_MAX))


def granted_credential(req, human, name):
    """The Resource of a broker credential a grant names, if the delegator can see it; 422 otherwise."""
    row, resource = held_credential(req.app.store, human, name)
    if row is None:
        raise invalid("TaskGrant", "resources", "invalid", "%s is not a credential you hold" % name)
    return resource


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
        req.authorize(action, Resource.account(user), grant=row,
                      site_requires_binding=req.app.config.require_sender_constrained,
                      site_requires_certificates=req.app.config.require_runtime_certificates)
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
    """The task grants the caller made, or (an agent) holds."""
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
    """Revoke one task grant and every token of it, for its delegator; or, for an orchestrator with a task
    token of a grant above it, a part of its task it handed down (delegate_task, undone)."""
    held = req.principal.grant
    row = req.app.store.one("SELECT * FROM task_grants WHERE public_id = ?", grant_id) if held else None
    if row is not None and held["public_id"] in [link for _, link in load_grant(req.app.store, row["id"])["chain"][1:]]:
        req.authorize("delegate_task", SITE, agent=account_by_id(req.app.store, row["agent_id"])["login"],
                      taking_back=True)
        revoke_grant(req, row)
        return 204, None
    revoke_grant(req, find_grant(req, grant_id, "grant_task"))
    return 204, None


def revoke_grant(req, row):
    with req.transaction() as db:
        db.execute("UPDATE task_grants SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?", (now(), row["id"]))
        count = revoke(db, "grant_id = ?", (row["id"],))
        req.effect("revoked task grant %s and %d task tokens" % (row["public_id"], count))


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


def issue_task_token(req, row, asked=None, resource=None):
    """A task token for the grant's row, for the actions asked that the grant gives (narrowed, and
    said so, when that is fewer); for all it gives when none are asked. ``resource``: the one
    resource it works on (RFC 8707), such as the MCP endpoint; None: the API and MCP alike."""
    with req.transaction() as db:
        return task_token_in(db, req, row, asked, resource)


def task_token_in(db, req, row, asked=None, resource=None):
    """issue_task_token() in the caller's transaction (which records the request's decisions)."""
    granted = json.loads(row["actions"])
    asked = granted if asked is None else asked
    given = sorted(set(asked) & set(granted))
    expires_at = min(from_now(token_seconds(req.app.store, json.loads(row["resources"]))), row["expires_at"])
    cnf = req.principal.confirmation()
    token, _ = issue_token(db, req.app.key, row["agent_id"], "task", name="task " + row["task"], scopes=given,
                           expires_at=expires_at, grant_id=row["id"], resource=resource, cnf=cnf,
                           runtime=req.principal.runtime_id)
    remember_runtime_certificate(db, req.principal)
    req.effect("task token %s for %s until %s%s%s" % (token_fingerprint(token), row["public_id"], expires_at,
                                                     " (narrowed)" if set(asked) - set(given) else "", bound_to(cnf)))
    return {"token": token, "expires_at": expires_at, "grant": row["public_id"], "task": row["task"],
            "scope": " ".join(given), "decision": "allow_narrowed" if set(asked) - set(given) else "allow",
            "token_type": "DPoP" if cnf and "jkt" in cnf else "Bearer", "cnf": cnf}


def token_seconds(store, resource_names):
    """How long a task token lives: an hour, or less where a guardrail over its resources says so."""
    caps = [policy["max_task_token_seconds"] for _, policy in guardrails_over(store, grant_org_ids(store, resource_names))
            if policy.get("max_task_token_seconds")]
    return min([TASK_TOKEN_SECONDS] + caps)


def bound_to(cnf):
    """How an audit row's side effect says what a minted token is bound to."""
    return ", bound to %s" % " and ".join("%s %s" % (k, v[:16]) for k, v in sorted(cnf.items())) if cnf else ""


# -- step-up and approvals: a human's fresh second factor, a human's yes ------------------------------

@route("POST", "/api/ext/v1/step-up")
def step_up(req):
    """The token's human confirms a TOTP code; for ten minutes the token may then do what asks for one.
    A switch session's human steps it up with her own code (it then does as her agent what asks for one)."""
    user = signed_in(req)
    otp = req.field(req.json(), "otp", str, "StepUp", required=True)
    if req.principal.token_kind == "switch-session":
        req.authorize("refresh_session", Resource.account(user))
        user = account_by_login(req.app.store, req.principal.switched_by)
    else:
        req.authorize("issue_token", Resource.account(user))
    if req.principal.token_id is None or user is None or not user["totp_secret"]:
        raise HTTPError(422, "Step-up needs a token of a human with TOTP turned on (python agentgit.py user totp)")
    confirm_totp(req, user, otp)
    with req.transaction() as db:
        db.execute("INSERT INTO step_ups (token_id, at) VALUES (?, ?)"
                   " ON CONFLICT (token_id) DO UPDATE SET at = excluded.at", (req.principal.token_id, now()))
        req.effect("stepped up token %s" % req.principal.fingerprint)
    return 200, {"stepped_up_until": from_now(STEP_UP_SECONDS)}


APPROVAL_SELECT = ("SELECT a.*, g.delegator_id, g.agent_id, g.task, g.public_id AS grant_public,"
                   " ag.login AS agent_login, d.login AS delegator_login, ap.login AS approver_login,"
                   " dn.login AS denier_login FROM approvals a JOIN task_grants g ON g.id = a.grant_id"
                   " JOIN accounts ag ON ag.id = g.agent_id JOIN accounts d ON d.id = g.delegator_id"
                   " LEFT JOIN accounts ap ON ap.id = a.approved_by LEFT JOIN accounts dn ON dn.id = a.denied_by")
APPROVAL_COMMITS = 20
MAX_DENIAL_REASON = 1000      # a push's commits shown to the human who decides on it, at most


def approval_json(app, row):
    """An approval as its delegator judges it and its agent polls it: who asks, under which task and
    grant, for exactly what, with what the human needs to decide (the pull request, the commits)."""
    details = approval_details(app, row)
    # a merge of a pull request that was merged or closed meanwhile can no longer happen: the ask is withdrawn
    state = ("used" if row["used_at"] else "approved" if row["approved_at"] else "denied" if row["denied_at"] else
             "expired" if row["expires_at"] <= now() else "withdrawn" if details.get("pull_state", "open") != "open"
             else "pending")
    return {"id": row["public_id"], "state": state, "agent": "agent:" + row["agent_login"],
            "delegator": "user:" + row["delegator_login"], "task": row["task"], "grant": row["grant_public"],
            "action": row["action"], "resource": row["resource"], "subject": row["subject"],
            "context": details, "created_at": row["created_at"], "expires_at": row["expires_at"],
            "approved_by": "user:" + row["approver_login"] if row["approver_login"] else None,
            "approved_at": row["approved_at"], "denied_by": "user:" + row["denier_login"] if row["denier_login"]
            else None, "denied_at": row["denied_at"], "denial_reason": row["denial_reason"], "used_at": row["used_at"],
            "approval_url": approval_page(app, row["public_id"]),
            "approve_url": "%s/api/ext/v1/approvals/%s/approve" % (app.url, row["public_id"]),
            "deny_url": "%s/api/ext/v1/approvals/%s/deny" % (app.url, row["public_id"])}


def approval_outcome(approval):
    """What became of an approval, in a sentence's words."""
    if approval["state"] == "withdrawn":
        return "withdrawn: the pull request was %s meanwhile" % approval["context"]["pull_state"]
    if approval["denied_by"]:
        return "denied by %s at %s (%s)" % (approval["denied_by"], approval["denied_at"],
                                           approval["denial_reason"] or "no reason given")
    if approval["approved_by"]:
        return "approved by %s at %s%s" % (approval["approved_by"], approval["approved_at"],
                                          ", and used at %s" % approval["used_at"] if approval["used_at"] else "")
    return "%s, waiting for %s" % (approval["state"], approval["delegator"])


def approval_details(app, row):
    """The pull request a merge would bring in (title, description, files, commits, diff), or the
    commits a push would put on its ref, as they stand now; the workflow or secret otherwise."""
    context = json.loads(row["context"] or "{}")
    repo = repo_by_full_name(app.store, strip_kind(row["resource"], "repo"))
    if repo is None:
        return context
    if "pull_number" in context:
        issue = app.store.one("SELECT * FROM issues WHERE repo_id = ? AND number = ?", repo["id"], context["pull_number"])
        pull = app.store.one("SELECT * FROM pulls WHERE issue_id = ?", issue["id"]) if issue else None
        if pull is None:
            return context
        state, html_url = PullState(app, repo, issue, pull), "%s/%s/pull/%d" % (app.url, full_name(repo),
                                                                               issue["number"])
        return dict(context, title=issue["title"], body=issue["body"], html_url=html_url, diff_url=html_url + ".diff",
                    head_sha_now=state.head_sha, changed_files=[f[0] for f in state.files],
                    commits=[commit_line(c) for c in state.commits[-APPROVAL_COMMITS:]],
                    pull_state="merged" if pull["merged_at"] else issue["state"])
    if context.get("sha") and context.get("ref"):
        with open_repo(app, repo["id"]) as git:
            if context["sha"].encode() not in git.object_store:
                return dict(context, commits=[], note="the commits have not reached the server yet")
            current = git.refs[context["ref"].encode()].decode() if context["ref"].encode() in git.refs else None
            return dict(context, commits=[commit_line(c) for c in commits_between(git, current, context["sha"])[
                -APPROVAL_COMMITS:]])
    return context


def commit_line(commit):
    return {"sha": commit.id.decode(), "message": commit.message.decode("utf-8", "replace").split("\n")[0],
            "author": commit.author.decode("utf-8", "replace")}


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
    """The delegator's yes to a pending approval: the action may then happen once."""
    answer_approval(req, signed_in(req), approval_id, approve=True)
    return approval_json(req.app, req.app.store.one(APPROVAL_SELECT + " WHERE a.public_id = ?", approval_id))


@route("POST", "/api/ext/v1/approvals/{approval_id}/deny")
def deny(req, approval_id):
    """The delegator's no to a pending approval, with a reason the agent sees."""
    reason = req.field(req.json(), "reason", str, "Approval", default="")
    answer_approval(req, signed_in(req), approval_id, approve=False, reason=reason)
    return approval_json(req.app, req.app.store.one(APPROVAL_SELECT + " WHERE a.public_id = ?", approval_id))


def answer_approval(req, user, approval_id, approve, reason=""):
    """The grant's delegator says yes to exactly this action on exactly this resource, once, or no
    with a reason, which the agent reads when it polls or asks again (a no stands until it expires)."""
    row = req.app.store.one(APPROVAL_SELECT + " WHERE a.public_id = ?", approval_id)
    if row is None or row["delegator_id"] != user["id"]:
        raise HTTPError(404, "Not Found")
    if len(reason) > MAX_DENIAL_REASON:
        raise invalid("Approval", "reason", message="a reason is at most %d characters" % MAX_DENIAL_REASON)
    grant = req.app.store.one("SELECT * FROM task_grants WHERE id = ?", row["grant_id"])
    authorize_grant(req, account_by_id(req.app.store, row["agent_id"]), grant_repos(req.app.store, grant), grant=grant)
    state = approval_json(req.app, row)["state"]
    if state != "pending":
        raise HTTPError(409, "This approval is %s: %s" % (state, "the pull request it is for was merged or closed "
                                                          "meanwhile" if state == "withdrawn" else "it cannot be "
                                                          "answered again"))
    with req.transaction() as db:
        if approve:
            db.execute("UPDATE approvals SET approved_by = ?, approved_at = ? WHERE id = ?", (user["id"], now(),
                                                                                           row["id"]))
        else:
            db.execute("UPDATE approvals SET denied_by = ?, denied_at = ?, denial_reason = ? WHERE id = ?",
                       (user["id"], now(), reason, row["id"]))
        req.effect("%s %s: %s on %s under %s%s" % ("approved" if approve else "denied", row["public_id"], row["action"],
                                                   row["resource"], row["grant_public"],
                                                   "" if approve else " (%s)" % (reason or "no reason given")))
    return row
