"""REST and a page: the access review and the what-if. For a repository, an organization or a broker
credential, every principal that can act on it today, at which level, through which chain (owner,
organization role, team, collaborator and whose invite, task grant and from whom, App installation,
sub-delegation), with the rule of decide() that answers each action: JSON for tools, CSV for auditors,
a page with a drawn graph (SVG, no JavaScript) for humans. The same engine answers what-if questions
(POST /api/ext/v1/policy/simulate): decide() itself, for a principal or a grant not yet made, with no
side effect."""

import csv
import html
import io
import secrets

from agentgit.config import INSTALLATION_TASK_PREFIX, now
from agentgit.errors import HTTPError, invalid
from agentgit.tokens import AGENT_SCOPES, ALL_SCOPES, expand_scopes
from agentgit.accounts import account_by_id, account_by_login
from agentgit.policy import ACTIONS, RANK, REF_ACTIONS, SITE, decide, permission_on
from agentgit.authentication import Principal, grant_holder, load_grant, name_delegator
from agentgit.routing import route
from agentgit.lookups import signed_in
from agentgit.web import html_page, signed_in_page, web_route
from agentgit.oversight import named_resource
from agentgit.tasks import GRANT_ACTIONS, check_network_constraints, check_path_rules

# what the review asks decide() about, per kind of resource (a credential's: what a task may use it for)
REVIEWED_ACTIONS = {kind: tuple(name for name, spec in ACTIONS.items() if spec.on == kind and not spec.token_kinds
                                and not spec.follow_up) for kind in ("repo", "org")}
REVIEWED_ACTIONS["credential"] = ("use_credential", "review_access")
SIMULATED_CONTEXT = ("ref", "sha", "secret", "upstream", "pull_number", "head_sha", "workflow")


def reviewed_resource(req, name):
    """The Resource that ``name`` (repo:owner/name, org:login, credential:owner/name) is, if the caller can
    see it (an organization or a credential: holds something on it); 404 otherwise, as for anything the
    caller may not know exists."""
    resource = named_resource(req, name)
    if resource is None or resource.kind != "repo" and permission_on(req.app.store, req.principal.user,
                                                                     resource)[0] == "none":
        raise HTTPError(404, "Not Found")
    return resource


def standing_principal(app, user):
    """What an account acts as by itself: a human's personal token, an agent's session token."""
    if user["kind"] == "agent":
        principal = Principal(user=user, token_id=0, token_kind="session", scopes=expand_scopes(AGENT_SCOPES),
                              standing_read=app.agent_standing_access == "read")
        name_delegator(app.store, principal)
        return principal
    return Principal(user=user, token_id=0, token_kind="personal", scopes=expand_scopes(ALL_SCOPES))


def accounts_reaching(store, resource):
    """The accounts that may hold something on ``resource`` by themselves (the grants come apart)."""
    row, ids = resource.row, [r["id"] for r in store.all("SELECT id FROM accounts WHERE site_admin = 1")]
    if resource.kind == "repo":
        ids.append(row["owner_id"])
        ids += [r["user_id"] for r in store.all("SELECT user_id FROM collaborators WHERE repo_id = ?", row["id"])]
        ids += [r["user_id"] for r in store.all("SELECT tm.user_id FROM team_repos tr JOIN team_members tm ON"
                                                " tm.team_id = tr.team_id WHERE tr.repo_id = ?", row["id"])]
        org_id = row["owner_id"] if row["owner_kind"] == "org" else None
    else:
        org_id = row["id"] if resource.kind == "org" else row["owner"]["id"]
        ids.append(org_id)
    if org_id is not None:
        ids += [r["user_id"] for r in store.all("SELECT user_id FROM org_members WHERE org_id = ?", org_id)]
    return [a for a in (account_by_id(store, i) for i in dict.fromkeys(ids)) if a is not None and a["kind"] != "org"]


def live_grants_naming(store, name):
    """The live grants (load_grant's, so a parent's revocation counts) whose resources name ``name``."""
    rows = store.all("SELECT id FROM task_grants WHERE revoked_at IS NULL AND expires_at > ? AND resources LIKE ?"
                     " ORDER BY id", now(), '%"' + name + '"%')
    grants = [load_grant(store, r["id"]) for r in rows]
    return [g for g in grants if name in g["resources"] and not g["revoked_at"] and g["expires_at"] > now()]


def grant_hops(grant):
    """Who hands what to whom, from the human down to the grant's agent: [(giver, taker, what)], each
    agent named with the grant it holds (agent:coder (tg_…)), each hand-over by its grant and task, or
    as an App's installation."""
    if grant["task"].startswith(INSTALLATION_TASK_PREFIX):
        return [("user:" + grant["delegator_login"], "agent:%s (%s)" % (grant["agent_login"], grant["public_id"]),
                 "installation %s" % grant["task"][len(INSTALLATION_TASK_PREFIX):])]
    links = list(reversed(grant["chain"]))
    nodes = ["user:" + grant["delegator_login"]] + ["agent:%s (%s)" % link for link in links]
    return [(giver, taker, "task grant %s (%s)" % (public_id, grant["task"]))
            for giver, taker, (_, public_id) in zip(nodes, nodes[1:], links)]


def answers(store, principal, resource):
    """{action: decision} of what the review asks about ``resource``, decided as a request would be: a
    branch's actions of a branch the principal could be given (under its grant's prefix, else the
    default branch), for no ref at all is git's question whether it may push anything; a credential's
    of its own upstream."""
    context = {}
    if resource.kind == "repo":
        prefix = principal.grant["constraints"].get("branch_prefix") if principal.grant else None
        context["ref"] = "refs/heads/" + (prefix + "review" if prefix else resource.row["default_branch"])
    elif resource.kind == "credential":
        context["upstream"] = resource.row["base_url"]
    return {action: decide(store, principal, action, resource, context if action in REF_ACTIONS + (
        "use_credential",) else {}) for action in REVIEWED_ACTIONS[resource.kind]}


def entry(principal, decisions, via, edges, grant=None):
    allowed = [action for action, d in decisions.items() if d.allowed]
    level = max((ACTIONS[a].needs for a in allowed), key=RANK.get, default="none")
    user = principal.user
    return {"principal": ("agent:" if user["kind"] == "agent" else "user:") + user["login"], "kind": user["kind"],
            "token": principal.token_kind, "grant": grant["public_id"] if grant else None,
            "task": grant["task"] if grant else None, "level": level, "via": via, "edges": edges, "allowed": allowed,
            "actions": {a: {"decision": d.effect, "rule": d.rule, "because": d.reasons[0] if d.reasons else ""}
                        for a, d in decisions.items()}}


def review(app, resource):
    """Every principal that can act on ``resource`` today, each with how, and decide()'s answer to each
    action (only those that can do something are listed)."""
    store, entries = app.store, []
    for user in accounts_reaching(store, resource):
        principal = standing_principal(app, user)
        how = permission_on(store, user, resource)[1]
        name = ("agent:" if user["kind"] == "agent" else "user:") + user["login"]
        entries.append(entry(principal, answers(store, principal, resource), [how], [(name, resource.name, how)]))
    for grant in live_grants_naming(store, resource.name):
        principal = grant_holder(store, grant)
        hops = grant_hops(grant)
        entries.append(entry(principal, answers(store, principal, resource), [
            "%s: %s to %s" % (giver.partition(" (")[0], what, taker.partition(" (")[0]) for giver, taker, what in hops],
            hops, grant))
    return [e for e in entries if e["allowed"]]


def review_of(req):
    """The reviewed Resource and its review, for a caller who administers it (review_access)."""
    signed_in(req)
    resource = reviewed_resource(req, req.query.get("resource", ""))
    req.check("review_access", resource)
    return resource, review(req.app, resource)


@route("GET", "/api/ext/v1/access-review")
def get_access_review(req):
    """Who can act on a repository, an organization or a credential today, and through whom: JSON, or
    CSV (format=csv) with a row per principal and action."""
    resource, entries = review_of(req)
    if req.query.get("format", "json") == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["resource", "principal", "kind", "token", "grant", "level", "via", "action", "decision",
                         "rule"])
        for e in entries:
            for action, answer in e["actions"].items():
                writer.writerow([resource.name, e["principal"], e["kind"], e["token"], e["grant"] or "", e["level"],
                                 "; ".join(e["via"]), action, answer["decision"], answer["rule"]])
        return 200, out.getvalue().encode(), {"Content-Type": "text/csv; charset=utf-8",
                                              "Content-Disposition": 'attachment; filename="access-review.csv"'}
    if req.query.get("format", "json") != "json":
        raise invalid("AccessReview", "format", message="format is json or csv")
    return {"resource": resource.name, "reviewed_at": now(), "actions": list(REVIEWED_ACTIONS[resource.kind]),
            "principals": [{k: v for k, v in e.items() if k != "edges"} for e in entries]}


@web_route("GET", "/access-review")
def access_review_page(req):
    """The review for a human: a drawn graph of who reaches the resource through whom, and a table."""
    signed_in_page(req)
    resource, entries = review_of(req)
    rows = "".join("<tr><td>%s</td><td>%s</td><td>%s</td><td>%s</td></tr>" % tuple(html.escape(text) for text in (
        e["principal"], e["level"], "; ".join(e["via"]), ", ".join(e["allowed"]))) for e in entries)
    body = ('<p>Who can act on <code>%s</code> today, and through whom. <a href="/api/ext/v1/access-review?resource=%s'
            '&amp;format=csv">CSV</a></p>%s<table><tr><th>Principal</th><th>Level</th><th>Through</th>'
            '<th>May</th></tr>%s</table>') % (html.escape(resource.name), html.escape(resource.name),
                                              access_graph(resource.name, entries), rows)
    return html_page("Access review", body)


def access_graph(target, entries):
    """An SVG drawing, the resource on the right: who holds access by themselves one column to its left,
    each agent a task was handed to one column further left than whoever handed it, and an arrow from
    each to what it acts through (labelled with the way of access, or the grant), so every arrow joins
    neighbouring columns and points towards the resource."""
    edges = list(dict.fromkeys(edge for e in entries for edge in e["edges"]))
    depth = {target: 0}
    for giver, taker, _ in edges:              # (a grant's hops come in order, from the human down)
        depth.setdefault(giver, 1)
        depth[taker] = max(depth.get(taker, 0), 0 if taker == target else depth[giver] + 1)
    last = max(depth.values())
    rows, place = {}, {}
    for node, column in sorted(((node, last - d) for node, d in depth.items()), key=lambda item: item[1]):
        rows[column] = rows.get(column, 0) + 1
        place[node] = (20 + column * 400, 20 + (rows[column] - 1) * 56)
    width, height = (last + 1) * 400 - 120, 40 + max(rows.values()) * 56
    arrows = [(b, a, label) if depth[a] < depth[b] else (a, b, label) for a, b, label in edges]
    shapes = ['<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#555" marker-end="url(#arrow)"/><text x="%d" y="%d" '
              'font-size="10" fill="#444">%s</text>' % (
                  place[a][0] + 240, place[a][1] + 15, place[b][0], place[b][1] + 15, place[a][0] + 244,
                  place[a][1] + 11, html.escape(label[:28])) for a, b, label in arrows]
    shapes += ['<rect x="%d" y="%d" width="240" height="30" rx="4" fill="%s" stroke="#333"/><text x="%d" y="%d" '
               'font-size="11">%s</text>' % (x, y, "#fde68a" if node == target else "#dbeafe" if node.startswith(
                   "agent:") else "#dcfce7", x + 6, y + 19, html.escape(node[:40])) for node, (x, y) in place.items()]
    return ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" width="100%%" role="img" aria-label="who '
            'reaches %s">'
            '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" markerHeight="6" '
            'orient="auto"><path d="M0,0 L10,5 L0,10 z"/></marker></defs>%s</svg>') % (
                width, height, html.escape(target), "".join(shapes))


# -- the what-if ------------------------------------------------------------------------------------

def simulated_grant(req, body, human):
    """A grant not yet made, as load_grant would read it once made by the caller (checked as a grant's
    constraints are); its ids are its own, so nothing of a real grant's is read for it."""
    agent = account_by_login(req.app.store, str(body.get("agent", "")).removeprefix("agent:"))
    if agent is None or agent["kind"] != "agent":
        raise invalid("Simulation", "grant", message="grant.agent names an agent (agent:login)")
    actions, resources = body.get("actions"), body.get("resources")
    constraints = body.get("constraints", {})
    if not isinstance(actions, list) or not all(a in GRANT_ACTIONS for a in actions) or not isinstance(
            resources, list) or not all(isinstance(r, str) for r in resources) or not isinstance(constraints, dict):
        raise invalid("Simulation", "grant", message="grant has agent, resources, actions (from %s) and constraints"
                      % ", ".join(GRANT_ACTIONS))
    check_network_constraints(constraints)
    check_path_rules(constraints)
    fake = -1 - secrets.randbelow(1 << 40)
    return {"id": fake, "task_id": fake, "public_id": "tg_simulated", "agent_id": agent["id"], "agent_login":
            agent["login"], "delegator_id": human["id"], "delegator_login": human["login"],
            "task": str(body.get("task", "task:simulated")), "resources": set(resources), "actions": set(actions),
            "constraints": constraints, "revoked_at": None, "expires_at": "9999-12-31T00:00:00Z", "parent_id": None,
            "chain": [(agent["login"], "tg_simulated")]}


@route("POST", "/api/ext/v1/policy/simulate")
def simulate(req):
    """What decide() would answer -- a principal (user:login, agent:login: as it acts by itself; a grant
    by id: its task token; a grant not yet made, as an object), an action, a resource, a context --
    without doing anything. Of itself and of a grant it made (or would) anyone asks; of others, who
    administers the resource."""
    body = req.json()
    human = signed_in(req)
    action = req.field(body, "action", str, "Simulation", required=True)
    if action not in ACTIONS:
        raise invalid("Simulation", "action", message="action is one of GET /api/ext/v1/policy's actions")
    name = req.field(body, "resource", str, "Simulation", required=True)
    resource = SITE if name == "site" else reviewed_resource(req, name)
    context = req.field(body, "context", dict, "Simulation", default={})
    if any(k not in SIMULATED_CONTEXT or not isinstance(v, (str, int)) for k, v in context.items()):
        raise invalid("Simulation", "context", message="context has %s (strings)" % ", ".join(SIMULATED_CONTEXT))
    grant, who = body.get("grant"), body.get("principal")
    if isinstance(grant, dict):
        principal, own = grant_holder(req.app.store, simulated_grant(req, grant, human)), True
    elif isinstance(grant, str):
        row = req.app.store.one("SELECT * FROM task_grants WHERE public_id = ?", grant)
        if row is None:
            raise invalid("Simulation", "grant", message="no grant %s" % grant[:40])
        principal, own = grant_holder(req.app.store, load_grant(req.app.store, row["id"])), row["delegator_id"] == human["id"]
    elif isinstance(who, str) or who is None:
        user = account_by_login(req.app.store, (who or "user:" + human["login"]).partition(":")[2])
        if user is None or user["kind"] == "org":
            raise invalid("Simulation", "principal", message="principal is user:login or agent:login")
        principal, own = standing_principal(req.app, user), user["id"] == human["id"]
    else:
        raise invalid("Simulation", "principal", message="principal is user:login or agent:login")
    if not own and resource is not SITE:
        req.check("review_access", resource)
    decision = decide(req.app.store, principal, action, resource, dict(context))
    return {"principal": ("agent:" if principal.user["kind"] == "agent" else "user:") + principal.user["login"],
            "grant": principal.grant["public_id"] if principal.grant else None, "action": action,
            "resource": resource.name, "decision": decision.effect, "rule": decision.rule, "reasons": decision.reasons,
            "level": decision.level if decision.allowed else None, "simulated": True}
