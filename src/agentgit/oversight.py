"""REST: what a person overseeing agents reads and sets: the audit log (each row explained), the policy
in force (what a token could do, decided by decide() itself), and freezes (read-only by policy)."""

import json
import secrets

from agentgit.config import now
from agentgit.errors import HTTPError, invalid
from agentgit.storage import insert_row
from agentgit.accounts import account_by_id, account_by_login, repo_by_full_name, repo_by_id
from agentgit.guardrails import AGENT_POLICY_FIELDS, agent_policies, guardrails_over, resource_org_ids
from agentgit.policy import ACTIONS, POLICY_RULES, Resource, SITE, decide, permission_on
from agentgit.audit import audit_json, explain
from agentgit.authentication import grant_holder, load_grant
from agentgit.routing import route
from agentgit.lookups import find_account, signed_in
from agentgit.proofs import spiffe_id
from agentgit.vault import credential_by_name
from agentgit.tasks import ALLOWLIST_ENTRY_RE, TASK_ACTIONS, TASK_TOKEN_SECONDS, check_globs, grant_json, strip_kind


# -- the audit log ------------------------------------------------------------------------------------

@route("GET", "/api/ext/v1/audit/{audit_id:int}")
def read_audit_row(req, audit_id):
    """One row, explained: for site admins, the actor, and the human on whose behalf it acted."""
    user = signed_in(req)
    row = req.app.store.one("SELECT * FROM audit WHERE id = ?", int(audit_id))
    mine = row is not None and user["login"] in (row["actor"], row["delegator"])
    if row is None or not (mine or req.can("read_site_audit", SITE)):
        raise HTTPError(404, "Not Found")
    req.check("read_audit", Resource.account(user))
    return dict(audit_json(row), explanation=explain(row))


@route("GET", "/api/ext/v1/audit")
def read_audit(req):
    """Site admins read every row; anyone else their own and those of agents acting for them (as
    delegator). Filters: actor, delegator, task, grant, action, decision, resource, surface, since (ISO
    time), after (row id)."""
    user = signed_in(req)
    where, args = [], []
    if not req.can("read_site_audit", SITE):
        req.check("read_audit", Resource.account(user))
        where.append("(actor = ? OR delegator = ?)")
        args += [user["login"], user["login"]]
    for key, column in (("actor", "actor"), ("delegator", "delegator"), ("task", "task"), ("grant", "grant_id"),
                        ("action", "action"), ("decision", "decision"), ("resource", "resource"),
                        ("surface", "surface")):
        if req.query.get(key):
            where.append("%s = ?" % column)
            args.append(req.query[key])
    if req.query.get("since"):
        where.append("at >= ?")
        args.append(req.query["since"])
    if req.query.get("after", "").isdigit():
        where.append("id > ?")
        args.append(int(req.query["after"]))
    per_page, page = req.page()
    rows = req.app.store.all("SELECT * FROM audit%s ORDER BY id LIMIT ? OFFSET ?" % (
        " WHERE " + " AND ".join(where) if where else ""), *args, per_page + 1, (page - 1) * per_page)
    req.link_header(page, per_page, page + 1 if len(rows) > per_page else None)
    return [audit_json(r) for r in rows[:per_page]]


# -- policy as data ------------------------------------------------------------------------------------

@route("GET", "/api/ext/v1/policy")
def effective_policy(req):
    """What the caller's token could do on one repository ("what could this task token do on
    acme/payments?"), or with ``grant=tg_…`` what a task token of that grant could (for its delegator
    and its agent), each action decided by decide() itself, so the answer cannot drift from the
    enforcement. It answers for every kind of token: a bootstrap token learns what it may do itself and
    how to trade for the rest. Each action names the rule that decided it and states the chain. It only
    asks, so nothing is audited."""
    signed_in(req)
    name = req.query.get("resource", "")
    row = repo_by_full_name(req.app.store, strip_kind(name, "repo"))
    if row is None or decide(req.app.store, req.principal, "read_code", Resource.repo(row)).hidden:
        raise HTTPError(404, "Not Found")
    resource, principal = Resource.repo(row), req.principal
    if "grant" in req.query:
        found = req.app.store.one("SELECT * FROM task_grants WHERE public_id = ?", req.query["grant"])
        if found is None or principal.user["id"] not in (found["delegator_id"], found["agent_id"]):
            raise HTTPError(404, "Not Found")
        principal = grant_holder(req.app.store, load_grant(req.app.store, found["id"]))
    user, grant = principal.user, principal.grant
    decisions = [decide(req.app.store, principal, action, resource) for action in TASK_ACTIONS]
    return 200, {"principal": "%s:%s" % ("agent" if user["kind"] == "agent" else "user", user["login"]),
                 "token_kind": "bootstrap" if principal.bootstrap else principal.token_kind, "resource": resource.name,
                 "runtime": req.principal.runtime_id, "presented": req.principal.confirmation(),
                 "grant": grant_json(req.app, req.app.store.one("SELECT * FROM task_grants WHERE id = ?", grant["id"]))
                 if grant else None,
                 "rules": ["%d. %s" % (number, rule.says) for number, rule in enumerate(POLICY_RULES, 1)],
                 "guardrails": [agent_policy_json(who, policy) for who, policy in guardrails_over(
                     req.app.store, resource_org_ids(resource))],
                 "actions": {d.action: {"decision": d.effect, "rule": d.rule, "because": " → ".join(d.reasons),
                                        "reasons": d.reasons} for d in decisions}}


# -- guardrails: what no agent may do, whatever a grant says ------------------------------------------
# An organization's owners set them for what the organization owns, the site's admins for everything;
# decide() reads them live (rule_guardrails), so a tightening cuts the grants beyond it at once.

def agent_policy_json(who, policy):
    return dict({field: policy.get(field) for field in AGENT_POLICY_FIELDS}, set_by=who)


def agent_policy_from(req, body):
    """The guardrails a PUT sends, each field checked (a misspelt one would guard nothing, silently)."""
    unknown = sorted(set(body) - set(AGENT_POLICY_FIELDS))
    if unknown:
        raise invalid("AgentPolicy", unknown[0], message="unknown field %s; an agent policy has %s" % (
            unknown[0], ", ".join(AGENT_POLICY_FIELDS)))
    policy = {}
    for field in ("deny", "requires_approval"):
        actions = req.field(body, field, list, "AgentPolicy", default=[])
        if not all(isinstance(a, str) and a in ACTIONS for a in actions):
            raise invalid("AgentPolicy", field, message="%s is a list of actions from GET /api/ext/v1/policy" % field)
        policy[field] = sorted(set(actions))
    policy["requires_approval_paths"] = req.field(body, "requires_approval_paths", list, "AgentPolicy", default=[])
    check_globs(policy["requires_approval_paths"], "AgentPolicy", "requires_approval_paths")
    seconds = body.get("max_task_token_seconds")
    if seconds is not None and (type(seconds) is not int or not 60 <= seconds <= TASK_TOKEN_SECONDS):
        raise invalid("AgentPolicy", "max_task_token_seconds", message="max_task_token_seconds is a number of "
                      "seconds from 60 to %d" % TASK_TOKEN_SECONDS)
    policy["max_task_token_seconds"] = seconds
    policy["sender_constrained"] = req.field(body, "sender_constrained", bool, "AgentPolicy", default=False)
    try:
        policy["runtimes"] = [spiffe_id(p, pattern=True) for p in req.field(body, "runtimes", list, "AgentPolicy",
                                                                             default=[])]
    except ValueError:
        raise invalid("AgentPolicy", "runtimes", message="runtimes is a list of SPIFFE IDs (* for any part)")
    hosts = body.get("network_allowlist_max")
    if hosts is not None and not (isinstance(hosts, list) and all(
            isinstance(h, str) and ALLOWLIST_ENTRY_RE.fullmatch(h) for h in hosts)):
        raise invalid("AgentPolicy", "network_allowlist_max", message="network_allowlist_max is a list of hosts: "
                      "host, host:port, *.domain, or http://host:port (null: no maximum)")
    policy["network_allowlist_max"] = hosts
    return {field: value for field, value in policy.items() if value not in ([], None, False)}


def save_agent_policy(req, scope, policy):
    with req.transaction() as db:
        db.execute("INSERT INTO settings (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value ="
                   " excluded.value", ("agent_policy:" + scope, json.dumps(policy, sort_keys=True)))
        req.effect("agent policy of %s: %s" % (scope, json.dumps(policy, sort_keys=True)))


@route("GET", "/api/ext/v1/orgs/{org}/agent-policy")
def get_org_agent_policy(req, org):
    """An organization's guardrails for agents, for its members (the site's apply too: GET /site/agent-policy)."""
    row = find_account(req, org, kinds=("org",))
    req.check("read_org_private", Resource.account(row))
    return agent_policy_json(*agent_policies(req.app.store).get(row["id"], ("organization " + row["login"], {})))


@route("PUT", "/api/ext/v1/orgs/{org}/agent-policy")
def put_org_agent_policy(req, org):
    """An organization's owners set what no agent may do on what the organization owns."""
    body = req.json()
    row = find_account(req, org, kinds=("org",))
    req.authorize("manage_agent_policy", Resource.account(row))
    policy = agent_policy_from(req, body)
    save_agent_policy(req, "org:%d" % row["id"], policy)
    return agent_policy_json("organization " + row["login"], policy)


@route("GET", "/api/ext/v1/site/agent-policy")
def get_site_agent_policy(req):
    """The site's guardrails for agents (a new installation's safe defaults until its admins set them)."""
    signed_in(req)
    req.check("read_meta", SITE)
    return agent_policy_json(*agent_policies(req.app.store)["site"])


@route("PUT", "/api/ext/v1/site/agent-policy")
def put_site_agent_policy(req):
    """The site's admins set what no agent may do anywhere but on its own."""
    body = req.json()
    signed_in(req)
    req.authorize("manage_site_agent_policy", SITE)
    policy = agent_policy_from(req, body)
    save_agent_policy(req, "site", policy)
    return agent_policy_json("the site", policy)


# -- freezes: read-only by policy ------------------------------------------------------------------
# A repository's admin, or an organization's owner for the whole organization, freezes it for an
# incident, an audit or a release: decide() then answers read_only to every change until a thaw.

def named_resource(req, name):
    """The Resource that repo:owner/name, org:login or credential:owner/name names, or None (as for a
    repository the caller cannot read): what a freeze and the access review are asked about."""
    kind, _, rest = name.partition(":") if isinstance(name, str) else ("", "", "")
    if kind == "repo":
        row = repo_by_full_name(req.app.store, rest)
        return Resource.repo(row) if row is not None and req.can("read_code", Resource.repo(row)) else None
    if kind == "org":
        row = account_by_login(req.app.store, rest)
        return Resource.account(row) if row is not None and row["kind"] == "org" else None
    if kind == "credential":
        row, owner = credential_by_name(req.app.store, name)
        return Resource.credential(row, owner) if row is not None else None
    return None


def freeze_target(req, name):
    """(Resource, the action that freezes it) for repo:owner/name or org:login, if the caller can see it."""
    resource = named_resource(req, name)
    action = {"repo": "freeze_repo", "org": "freeze_org"}.get(resource.kind) if resource is not None else None
    return (resource, action) if action else (None, None)


def frozen_resource(store, row):
    """(Resource, the action that freezes and thaws it) for a freezes row."""
    if row["repo_id"] is not None:
        return Resource.repo(repo_by_id(store, row["repo_id"])), "freeze_repo"
    return Resource.account(account_by_id(store, row["org_id"])), "freeze_org"


def freeze_json(app, row):
    frozen_by = account_by_id(app.store, row["frozen_by"]) if row["frozen_by"] else None
    return {"id": row["public_id"], "resource": frozen_resource(app.store, row)[0].name, "reason": row["reason"],
            "frozen_by": "user:" + frozen_by["login"] if frozen_by else None, "created_at": row["created_at"]}


@route("POST", "/api/ext/v1/freezes")
def create_freeze(req):
    """Make a repository or an organization read-only, with a reason (an incident, an audit)."""
    body = req.json()
    user = signed_in(req)
    name = req.field(body, "resource", str, "Freeze", required=True)
    reason = req.field(body, "reason", str, "Freeze", required=True).strip()
    if not reason or len(reason) > 1000:
        raise invalid("Freeze", "reason", message="say why, in at most 1000 characters")
    resource, action = freeze_target(req, name)
    if resource is None and name.startswith(("repo:", "org:")):
        raise HTTPError(404, "Not Found")         # one the caller cannot see is, for the caller, not there
    if resource is None:
        raise invalid("Freeze", "resource", message="resource is repo:owner/name or org:login")
    req.authorize(action, resource)
    column = "repo_id" if resource.kind == "repo" else "org_id"
    with req.transaction() as db:
        if db.execute("SELECT 1 FROM freezes WHERE %s = ?" % column, (resource.row["id"],)).fetchone():
            raise invalid("Freeze", "resource", "already_exists", "%s is already frozen" % resource.name)
        freeze_id = insert_row(db, "freezes", {"public_id": "fz_" + secrets.token_hex(8), column: resource.row["id"],
                                               "reason": reason, "frozen_by": user["id"], "created_at": now()})
        req.effect("froze %s: %s" % (resource.name, reason))
    return 201, freeze_json(req.app, req.app.store.one("SELECT * FROM freezes WHERE id = ?", freeze_id))


@route("GET", "/api/ext/v1/freezes")
def list_freezes(req):
    """The freezes on the repositories the caller can see and the organizations the caller is in."""
    user = signed_in(req)
    shown = []
    for row in req.app.store.all("SELECT * FROM freezes ORDER BY id"):
        resource, _ = frozen_resource(req.app.store, row)
        if resource.kind == "repo":
            visible = req.can("read_code", resource)
        else:
            visible = permission_on(req.app.store, user, resource)[0] != "none"
        if visible:
            shown.append(freeze_json(req.app, row))
    return req.paginate(shown)


@route("DELETE", "/api/ext/v1/freezes/{freeze_id}")
def thaw(req, freeze_id):
    """Lift a freeze."""
    signed_in(req)
    row = req.app.store.one("SELECT * FROM freezes WHERE public_id = ?", freeze_id)
    resource, action = frozen_resource(req.app.store, row) if row else (None, None)
    if resource is None or resource.kind == "repo" and not req.can("read_code", resource):
        raise HTTPError(404, "Not Found")
    req.authorize(action, resource)
    with req.transaction() as db:
        db.execute("DELETE FROM freezes WHERE id = ?", (row["id"],))
        req.effect("thawed %s (%s)" % (resource.name, row["public_id"]))
    return 204, None
