"""REST: agents' lifecycle and delegation: registration, invites, consent, bindings, switch sessions,
suspension, retirement, revocation."""

import fnmatch
import json
import secrets

from agentgit.config import AGENT_PREFIX_RE, from_now, now, valid_repo_name
from agentgit.errors import HTTPError, invalid
from agentgit.storage import insert_row
from agentgit.tokens import (AGENT_SCOPES, INVITE_PREFIX, SWITCH_SESSION_HOURS, genuine_mac, issue_token,
                             mint_token, revoke, token_fingerprint, token_hash)
from agentgit.proofs import spiffe_id
from agentgit.accounts import (account_by_id, permission_of_org_member, register_agent, repo_by_full_name, suspend_account,
                               team_by_slug)
from agentgit.policy import PERMISSION_ALIASES, Resource, SITE, decide
from agentgit.audit import audit_json
from agentgit.authentication import Principal
from agentgit.routing import route
from agentgit.serializers import standing_access, user_json, user_json_by_id
from agentgit.lookups import find_account, signed_in


# -- registration: an agent's account, with no delegator yet --------------------------------------

@route("POST", "/api/ext/v1/agents")
def register_agent_endpoint(req):
    """agent-git-service's registration contract: anonymous, rate-limited per client address (`serve
    --registration-limit N`, 0 for none); a site admin's token is never counted, and registers past
    `--registration closed` too."""
    body = req.json()
    prefix = req.field(body, "prefix_login", str, "Agent", required=True)
    if not AGENT_PREFIX_RE.match(prefix):
        raise invalid("Agent", "prefix_login", message="prefix_login must match ^[a-z0-9][a-z0-9-]{0,31}$")
    repo_name = req.field(body, "default_repo_name", str, "Agent", default="workspace")
    if not valid_repo_name(repo_name):
        raise invalid("Agent", "default_repo_name", message="not a valid repository name")
    # a site admin's token registers agents however registration is set for everyone else (a harness
    # that needs fifty agents runs as the admin); the rest is anonymous, so it is counted per address
    admin = req.principal.user is not None and bool(req.principal.user["site_admin"])
    if req.app.config.registration != "open" and not admin:
        req.refuse("register_agent", "site", ["registration is closed on this server"])
        raise HTTPError(403, "Agent registration is closed on this server")
    retry_after = 0 if admin else req.app.registrations.hit(req.client)
    if retry_after:
        raise HTTPError(429, "Too many agent registrations from this address; retry later, or register with a site "
                        "admin's token (serve --registration-limit sets the limit)", headers={"Retry-After": str(retry_after)})
    req.authorize("register_agent", SITE)
    login, token, full_name = register_agent(req.app, prefix, repo_name)
    req.effect("registered agent %s with repository %s, token %s" % (login, full_name, token_fingerprint(token)))
    return 201, {"login": login, "token": token, "repo_full_name": full_name, "user_kind": "agent",
                 "clone_url": "%s/%s.git" % (req.app.url, full_name)}


# -- delegation: invites, consent, bindings, switch sessions, lifecycle, revocation ---------------
# A human invites (with the grants they may give); the agent consents with its own token; the grants
# are applied in the same transaction as the binding. The human can then rename, unbind, reset,
# switch into, suspend, resume and retire the agent, and revoke along every path.

INVITE_DEFAULT_SECONDS, INVITE_MAX_SECONDS = 7 * 86400, 30 * 86400
REPO_GRANT_PERMISSIONS = ("pull", "triage", "push", "maintain", "admin")


def check_grant_authority(store, principal, grants, agent=None):
    """Every grant an invite carries must be the inviter's to give: admin on the repository (which
    covers any permission on it), and the right to manage the team; a team grant that would make an
    agent a member of the organization too needs an organization admin. Returns the first reason not,
    or None. Run when the invite is made, with the inviter's real principal (her token's scopes
    count), and again when the agent (then known) consents."""
    inviter = principal.user
    for grant in grants["repo_grants"]:
        repo = repo_by_full_name(store, grant["repo_full_name"])
        decision = decide(store, principal, "delegate_access", Resource.repo(repo)) if repo else None
        if decision is None or not decision.allowed:
            return "%s cannot grant access to %s" % (inviter["login"], grant["repo_full_name"])
    for grant in grants["team_grants"]:
        team = team_by_slug(store, grant["org"], grant["team_slug"])
        decision = decide(store, principal, "delegate_team", Resource.team(team, grant["org"])) if team else None
        if decision is None or not decision.allowed:
            return "%s cannot add members to team %s/%s" % (inviter["login"], grant["org"], grant["team_slug"])
        if agent is not None and permission_of_org_member(store, team["org_id"], agent["id"]) is None and \
                permission_of_org_member(store, team["org_id"], inviter["id"]) != "admin" and not inviter["site_admin"]:
            return "%s is not a member of %s, and only an organization admin can add it" % (agent["login"], grant["org"])
    return None


def invite_grants(req, body):
    repo_grants = req.field(body, "repo_grants", list, "AgentInvite", default=[])
    team_grants = req.field(body, "team_grants", list, "AgentInvite", default=[])
    out = {"repo_grants": [], "team_grants": []}
    for grant in repo_grants:
        if not isinstance(grant, dict) or not isinstance(grant.get("repo_full_name"), str) or \
                grant.get("permission", "push") not in REPO_GRANT_PERMISSIONS:
            raise invalid("AgentInvite", "repo_grants", message="each repo grant needs repo_full_name and a "
                                                                 "permission of %s" % ", ".join(REPO_GRANT_PERMISSIONS))
        out["repo_grants"].append({"repo_full_name": grant["repo_full_name"], "permission": grant.get("permission", "push")})
    for grant in team_grants:
        if not isinstance(grant, dict) or not all(isinstance(grant.get(k), str) for k in ("org", "team_slug")) or \
                grant.get("role", "member") not in ("member", "maintainer"):
            raise invalid("AgentInvite", "team_grants", message="each team grant needs org, team_slug and a role of "
                                                                 "member or maintainer")
        out["team_grants"].append({"org": grant["org"], "team_slug": grant["team_slug"],
                                   "role": grant.get("role", "member")})
    return out


def grant_scopes(grants):
    """The scopes an invite's grants confer, which the token that makes it must hold itself."""
    return tuple(scope for scope, given in (("repo", grants["repo_grants"]), ("admin:org", grants["team_grants"]))
                 if given)


def authorize_invite(req, grants):
    """An invite is a signed-in human's, from a token holding what it confers (or a web session), and
    each grant must be hers to give; a refusal is audited."""
    req.authorize("create_invite", SITE, confers=grant_scopes(grants))
    refused = check_grant_authority(req.app.store, req.principal, grants)
    if refused:
        req.refuse("create_invite", "site", [refused])
        raise HTTPError(403, refused)


@route("POST", "/api/ext/v1/agent-invites")
def create_invite(req):
    """An invite from the caller for an agent to bind to them, with repository and team grants the caller may
    give; its token is shown once."""
    body = req.json()
    grants = invite_grants(req, body)
    seconds = req.field(body, "expires_in", int, "AgentInvite", default=INVITE_DEFAULT_SECONDS)
    if not 60 <= seconds <= INVITE_MAX_SECONDS:
        raise invalid("AgentInvite", "expires_in", message="expires_in must be 60 to %d seconds" % INVITE_MAX_SECONDS)
    user = signed_in(req)
    authorize_invite(req, grants)
    with req.transaction() as db:
        token, expires_at, effect = make_invite(db, req.app.key, user, grants, seconds)
        req.effect(effect)
    return 201, dict(grants, invite_token=token, expires_at=expires_at)


def make_invite(db, key, inviter, grants, seconds):
    """(invite token, expiry, what happened). The token is shown once; only its hash is kept."""
    token = mint_token(key, INVITE_PREFIX)
    expires_at = from_now(seconds)
    insert_row(db, "agent_invites", {"inviter_id": inviter["id"], "hash": token_hash(token),
                                     "fingerprint": token_fingerprint(token), "grants": json.dumps(grants),
                                     "created_at": now(), "expires_at": expires_at})
    return token, expires_at, "invite %s from %s with %d repo and %d team grants, expires %s" % (
        token_fingerprint(token), inviter["login"], len(grants["repo_grants"]), len(grants["team_grants"]), expires_at)


def apply_grants(db, store, agent, grants, grantor):
    """Collaborator and team rows for the invite's grants, remembered in agent_grants. Each names its
    grantor: the access is derived, and decide() caps it by what the grantor holds at each request."""
    stamp = now()
    for grant in grants["repo_grants"]:
        repo = repo_by_full_name(store, grant["repo_full_name"])
        permission = PERMISSION_ALIASES[grant["permission"]]
        db.execute("INSERT INTO collaborators (repo_id, user_id, permission, granted_by) VALUES (?, ?, ?, ?)"
                   " ON CONFLICT (repo_id, user_id) DO UPDATE SET permission = excluded.permission,"
                   " granted_by = excluded.granted_by", (repo["id"], agent["id"], permission, grantor["id"]))
        insert_row(db, "agent_grants", {"agent_id": agent["id"], "repo_id": repo["id"], "permission": permission,
                                        "created_at": stamp})
    for grant in grants["team_grants"]:
        team = team_by_slug(store, grant["org"], grant["team_slug"])
        if db.execute("INSERT INTO org_members (org_id, user_id, role, granted_by) VALUES (?, ?, 'member', ?)"
                      " ON CONFLICT DO NOTHING",
                      (team["org_id"], agent["id"], grantor["id"])).rowcount:
            insert_row(db, "agent_grants", {"agent_id": agent["id"], "org_id": team["org_id"], "permission": "member",
                                            "created_at": stamp})
        db.execute("INSERT INTO team_members (team_id, user_id, role, granted_by) VALUES (?, ?, ?, ?)"
                   ""
                   " ON CONFLICT (team_id, user_id) DO UPDATE SET role = excluded.role, granted_by = excluded.granted_by",
                   (team["id"], agent["id"], grant["role"], grantor["id"]))
        insert_row(db, "agent_grants", {"agent_id": agent["id"], "team_id": team["id"], "permission": grant["role"],
                                        "created_at": stamp})


def remove_grants(db, agent_id, where="", args=()):
    """Take back what bindings granted (all of it, or those matching ``where``)."""
    grants = db.execute("SELECT * FROM agent_grants WHERE agent_id = ?%s" % where, (agent_id,) + tuple(args)).fetchall()
    for grant in grants:
        if grant["repo_id"]:
            db.execute("DELETE FROM collaborators WHERE repo_id = ? AND user_id = ?", (grant["repo_id"], agent_id))
        elif grant["team_id"]:
            db.execute("DELETE FROM team_members WHERE team_id = ? AND user_id = ?", (grant["team_id"], agent_id))
        else:
            db.execute("DELETE FROM org_members WHERE org_id = ? AND user_id = ?", (grant["org_id"], agent_id))
        db.execute("DELETE FROM agent_grants WHERE id = ?", (grant["id"],))
    return len(grants)


def binding_json(app, agent, human, binding):
    return {"human": user_json(app, human), "agent": user_json(app, agent), "bound_at": binding["bound_at"],
            "display_name": binding["display_name"]}


@route("POST", "/api/ext/v1/agent-bindings/confirm")
def confirm_binding(req):
    """The agent's consent, with its own token. 422 unknown or expired invite; 409 used or bound."""
    body = req.json()
    token = req.field(body, "invite_token", str, "AgentBinding", required=True)
    agent = signed_in(req)
    req.authorize("bind_agent", Resource.account(agent))      # the agent's own token, nothing else
    with req.transaction() as db:
        inviter, effect = accept_invite(db, req.app, agent, token)
        req.effect(effect)
    binding = req.app.store.one("SELECT * FROM agent_bindings WHERE agent_id = ?", agent["id"])
    return 201, binding_json(req.app, agent, inviter, binding)


def accept_invite(db, app, agent, token):
    """Inside the caller's transaction: consume the invite, bind, apply its grants. Returns
    (inviter, what happened); HTTPError 422/409/403 when it cannot be honoured, with nothing applied."""
    store = app.store
    invite = db.execute("SELECT * FROM agent_invites WHERE hash = ?", (token_hash(token),)).fetchone() if genuine_mac(
        app.key, token, INVITE_PREFIX) else None
    if invite is None or invite["expires_at"] <= now():
        raise invalid("AgentBinding", "invite_token", "invalid", "the invite is unknown or has expired")
    if invite["consumed_at"]:
        raise HTTPError(409, "This invite has been used")
    if db.execute("SELECT 1 FROM agent_bindings WHERE agent_id = ?", (agent["id"],)).fetchone():
        raise HTTPError(409, "%s is already bound to a human" % agent["login"])
    inviter = account_by_id(store, invite["inviter_id"])
    if inviter is None or inviter["suspended_at"]:
        raise HTTPError(403, "The inviting human can no longer delegate")
    grants = json.loads(invite["grants"])
    refused = check_grant_authority(store, Principal(user=inviter), grants, agent)   # she may have lost it since
    if refused:
        raise HTTPError(403, "The invite can no longer be honoured: " + refused)
    stamp = now()
    db.execute("UPDATE agent_invites SET consumed_at = ?, consumed_by = ? WHERE id = ?", (stamp, agent["id"],
                                                                                         invite["id"]))
    insert_row(db, "agent_bindings", {"agent_id": agent["id"], "human_id": inviter["id"], "invite_id": invite["id"],
                                      "bound_at": stamp})
    apply_grants(db, store, agent, grants, inviter)
    return inviter, "bound %s to %s (invite %s); granted %s" % (agent["login"], inviter["login"], invite["fingerprint"],
                                                                 json.dumps(grants, separators=(",", ":")))


def bound_agent(req, login, action="manage_agent", confers=()):
    """The agent ``login`` once ``action`` on it is allowed (its bound human or a site admin), from a
    token that holds the scopes of any credential the action makes (``confers``)."""
    agent = find_account(req, login, kinds=("agent",))
    req.authorize(action, Resource.account(agent), confers=confers)
    binding = req.app.store.one("SELECT * FROM agent_bindings WHERE agent_id = ?", agent["id"])
    if binding is None:
        raise HTTPError(404, "%s is not bound to anyone" % login)
    return agent, binding


def token_status(store, agent_id):
    live = store.one("SELECT COUNT(*) AS n FROM tokens WHERE user_id = ? AND kind = 'agent' AND revoked_at IS NULL",
                     agent_id)["n"]
    return "active" if live else "revoked"


@route("GET", "/api/ext/v1/user/agents")
def list_my_agents(req):
    """The agents bound to the caller, with their grants and state."""
    user = signed_in(req)
    req.check("read_tokens", Resource.account(user))
    out = []
    for binding in req.app.store.all("SELECT * FROM agent_bindings WHERE human_id = ? ORDER BY bound_at", user["id"]):
        agent = account_by_id(req.app.store, binding["agent_id"])
        grants = req.app.store.all("SELECT g.permission, r.name, o.login AS owner, t.slug, ta.login AS org"
                                   " FROM agent_grants g LEFT JOIN repos r ON r.id = g.repo_id"
                                   " LEFT JOIN accounts o ON o.id = r.owner_id LEFT JOIN teams t ON t.id = g.team_id"
                                   " LEFT JOIN accounts ta ON ta.id = t.org_id WHERE g.agent_id = ?", agent["id"])
        out.append(dict(binding_json(req.app, agent, user, binding), token_status=token_status(req.app.store, agent["id"]),
                        suspended=bool(agent["suspended_at"]), retired=bool(agent["retired_at"]),
                        access=["%s/%s:%s" % (g["owner"], g["name"], g["permission"]) if g["name"] else
                                "team %s/%s:%s" % (g["org"], g["slug"], g["permission"]) for g in grants],
                        standing_access=standing_access(req.app, agent)))
    return req.paginate(out)


@route("PATCH", "/api/ext/v1/agent-bindings/{login}")
def rename_binding(req, login):
    """The display name the bound human gives the agent."""
    body = req.json()
    name = req.text_field(body, "display_name", "AgentBinding", required=True, limit=100)
    agent, binding = bound_agent(req, login)
    with req.transaction() as db:
        db.execute("UPDATE agent_bindings SET display_name = ? WHERE agent_id = ?", (name, agent["id"]))
        req.effect("named %s %r" % (agent["login"], name))
    human = account_by_id(req.app.store, binding["human_id"])
    return binding_json(req.app, agent, human, req.app.store.one("SELECT * FROM agent_bindings WHERE agent_id = ?",
                                                                 agent["id"]))


@route("DELETE", "/api/ext/v1/agent-bindings/{login}")
def unbind(req, login):
    """The agent stays, with its token and its own repositories; switch sessions and the access the
    binding granted go."""
    agent, binding = bound_agent(req, login)
    with req.transaction() as db:
        req.effect(unbind_agent(db, agent))
    return 204, None


def revoke_agent_credentials(db, agent_ids, token_kinds=None):
    """Everything the agents authenticate with, the one place every revocation path goes through: their
    tokens (of every kind, or of ``token_kinds``), their registered keys (which mint tokens by client
    assertion, as a token would), and their OAuth refresh families. Returns (tokens revoked, keys deleted)."""
    if not agent_ids:
        return 0, 0
    among = "IN (%s)" % ",".join("?" * len(agent_ids))
    kinds = " AND kind IN (%s)" % ",".join("'%s'" % kind for kind in token_kinds) if token_kinds else ""
    tokens = revoke(db, "user_id %s%s" % (among, kinds), agent_ids)
    keys = db.execute("DELETE FROM agent_keys WHERE agent_id %s" % among, agent_ids).rowcount
    db.execute("UPDATE oauth_refresh_tokens SET used_at = COALESCE(used_at, ?) WHERE user_id %s" % among,
               (now(), *agent_ids))
    return tokens, keys


def revoked_phrase(tokens, keys):
    return "revoked %d tokens%s" % (tokens, " and %d keys" % keys if keys else "")


def unbind_agent(db, agent):
    # what the binding gave: switch sessions and session tokens, and the keys the human approved (the
    # agent's own token stays, and task tokens stand on their grants, which go below if they were hers)
    credentials = revoked_phrase(*revoke_agent_credentials(db, (agent["id"],), ("switch-session", "session")))
    grants = remove_grants(db, agent["id"])
    # a task grant stands on the binding: without it, its tokens would act for a human no longer behind them
    tasks = db.execute("UPDATE task_grants SET revoked_at = ? WHERE agent_id = ? AND revoked_at IS NULL AND"
                       " delegator_id IN (SELECT human_id FROM agent_bindings WHERE agent_id = ?)",
                       (now(), agent["id"], agent["id"])).rowcount
    db.execute("DELETE FROM agent_bindings WHERE agent_id = ?", (agent["id"],))
    return "unbound %s; %s (sessions), revoked %d task grants, took back %d grants" % (
        agent["login"], credentials, tasks, grants)


@route("POST", "/api/ext/v1/agent-bindings/{login}/reset-token")
def reset_agent_token(req, login):
    """Revoke every credential of the agent (its tokens, its keys) and issue it a new token (shown once),
    for its bound human."""
    agent, _ = bound_agent(req, login, confers=AGENT_SCOPES)
    with req.transaction() as db:
        token, (tokens, keys), effect = reset_agent_credentials(db, req.app.key, agent)
        req.effect(effect)
    return 201, {"login": agent["login"], "token": token, "revoked": tokens, "keys_revoked": keys}


def reset_agent_credentials(db, key, agent):
    """Revoke everything the agent authenticates with (revoke_agent_credentials) and mint it one token."""
    revoked = revoke_agent_credentials(db, (agent["id"],))
    token, _ = issue_token(db, key, agent["id"], "agent", name="agent", scopes=AGENT_SCOPES)
    return token, revoked, "reset %s: %s, new agent token %s" % (agent["login"], revoked_phrase(*revoked),
                                                                  token_fingerprint(token))


def set_agent_suspended(req, login, suspended):
    agent, _ = bound_agent(req, login)
    with req.transaction() as db:
        req.effect(suspend_account(db, agent, suspended))
    return user_json(req.app, account_by_id(req.app.store, agent["id"]), detail=True)


@route("POST", "/api/ext/v1/agent-bindings/{login}/suspend")
def suspend_agent(req, login):
    """Refuse the agent everything until resumed, for its bound human."""
    return set_agent_suspended(req, login, True)


@route("POST", "/api/ext/v1/agent-bindings/{login}/resume")
def resume_agent(req, login):
    """Lift the agent's suspension, for its bound human."""
    return set_agent_suspended(req, login, False)


@route("POST", "/api/ext/v1/agent-bindings/{login}/switch-session")
def open_switch_session(req, login):
    """A token that acts as the agent for at most 12 hours without touching the agent's own token;
    the actor of record stays the agent, and every row it makes names the human who switched in."""
    agent, _ = bound_agent(req, login, confers=AGENT_SCOPES)
    expires_at = from_now(SWITCH_SESSION_HOURS * 3600)
    human = req.principal.user
    with req.transaction() as db:
        token, _ = issue_token(db, req.app.key, agent["id"], "switch-session", name="switch by " + human["login"],
                               scopes=AGENT_SCOPES, expires_at=expires_at, issued_by=human["id"])
        req.effect("switch session %s into %s until %s" % (token_fingerprint(token), agent["login"], expires_at))
    return 201, {"agent_login": agent["login"], "token": token, "expires_at": expires_at,
                 "user": user_json(req.app, human)}


@route("POST", "/api/ext/v1/agent-bindings/{login}/refresh-session")
def refresh_switch_session(req, login):
    """Authenticated with the switch-session token itself: a new one replaces it (the old one dies)."""
    signed_in(req)
    agent = find_account(req, login, kinds=("agent",))
    req.authorize("refresh_session", Resource.account(agent))
    old = req.app.store.one("SELECT * FROM tokens WHERE id = ?", req.principal.token_id)
    expires_at = from_now(SWITCH_SESSION_HOURS * 3600)
    with req.transaction() as db:
        if not revoke(db, "id = ?", (old["id"],)):
            raise HTTPError(401, "Bad credentials")
        token, _ = issue_token(db, req.app.key, agent["id"], "switch-session", name=old["name"], scopes=AGENT_SCOPES,
                               expires_at=expires_at, issued_by=old["issued_by"])
        req.effect("refreshed switch session %s → %s" % (old["fingerprint"], token_fingerprint(token)))
    return 201, {"agent_login": agent["login"], "token": token, "expires_at": expires_at,
                 "user": user_json_by_id(req.app, old["issued_by"])}


@route("DELETE", "/api/ext/v1/agents/{login}")
def retire_agent(req, login):
    """Retire for good: tokens revoked, login reserved, repositories moved to the human or archived."""
    body = req.json()
    repositories = req.field(body, "repositories", str, "Agent", default="archive")
    if repositories not in ("transfer", "archive"):
        raise invalid("Agent", "repositories", message="repositories must be transfer or archive")
    agent, binding = bound_agent(req, login)
    store = req.app.store
    own = store.all("SELECT * FROM repos WHERE owner_id = ?", agent["id"])
    if repositories == "transfer":
        clash = [r["name"] for r in own if store.one("SELECT 1 FROM repos WHERE owner_id = ? AND name = ?",
                                                     binding["human_id"], r["name"])]
        if clash:
            raise HTTPError(409, "%s already has repositories named %s" % (
                account_by_id(store, binding["human_id"])["login"], ", ".join(clash)))
    with req.transaction() as db:
        req.effect(retire(db, agent, binding["human_id"], repositories))
    return 204, None


def retire(db, agent, human_id, repositories):
    revoked = revoked_phrase(*revoke_agent_credentials(db, (agent["id"],)))
    if repositories == "transfer":
        moved = db.execute("UPDATE repos SET owner_id = ?, updated_at = ? WHERE owner_id = ?",
                           (human_id, now(), agent["id"])).rowcount
    else:
        moved = db.execute("UPDATE repos SET archived = 1, updated_at = ? WHERE owner_id = ?",
                           (now(), agent["id"])).rowcount
    remove_grants(db, agent["id"])
    db.execute("UPDATE accounts SET retired_at = ?, suspended_at = COALESCE(suspended_at, ?) WHERE id = ?",
               (now(), now(), agent["id"]))
    return "retired %s: %s, %s %d repositories" % (
        agent["login"], revoked, "transferred" if repositories == "transfer" else "archived", moved)


@route("POST", "/api/ext/v1/revocations")
def revocations(req):
    """Exactly one of {"agent"}, {"delegator"}, {"org"}, {"token_fingerprint"}, {"runtime"}; answers how
    many tokens were revoked. Allowed to the bound human (agent), the human themself (delegator), org
    admins (org), the token's holder or its agent's human (fingerprint), and site admins for all. A
    runtime (a SPIFFE ID, * for any part) revokes every token minted by a runtime of that identity,
    and keeps such runtimes refused until the revocation is lifted: for the caller's agents, or for a
    site admin everyone's."""
    body = req.json()
    kinds = [k for k in ("agent", "delegator", "org", "token_fingerprint", "runtime") if body.get(k) is not None]
    if len(kinds) != 1 or not isinstance(body[kinds[0]], str):
        raise invalid("Revocation", "target", "invalid", "name exactly one of agent, delegator, org, token_fingerprint, "
                                                         "runtime")
    kind, target = kinds[0], body[kinds[0]]
    signed_in(req)
    store = req.app.store
    if kind == "agent":
        agent = find_account(req, target, kinds=("agent",))
        req.authorize("revoke_tokens", Resource.account(agent))
        where, args, also, agents = "user_id = ?", (agent["id"],), None, (agent["id"],)
    elif kind == "delegator":
        human = find_account(req, target, kinds=("human",))
        req.authorize("revoke_tokens", Resource.account(human))
        where = ("user_id IN (SELECT agent_id FROM agent_bindings WHERE human_id = ?) OR (kind = 'switch-session'"
                 " AND issued_by = ?)")
        args, also = (human["id"], human["id"]), None
        agents = tuple(r["agent_id"] for r in store.all("SELECT agent_id FROM agent_bindings WHERE human_id = ?",
                                                        human["id"]))
    elif kind == "runtime":
        # the runtime's tokens, and every credential of the agents that minted from it: what it held
        # (a bootstrap token, a key) would mint again, from anywhere, without the certificate
        target = runtime_pattern(target)
        also = runtime_revoker(req)
        minted = [r for r in store.all(
            "SELECT t.id, t.user_id, t.runtime, t.revoked_at, a.kind FROM tokens t JOIN accounts a ON a.id = t.user_id WHERE"
            " t.runtime IS NOT NULL" + (" AND t.user_id IN (SELECT agent_id FROM agent_bindings WHERE human_id = ?)"
                                        if also is not None else ""), *([also] if also is not None else []))
            if fnmatch.fnmatchcase(r["runtime"], target)]
        live = [r["id"] for r in minted if r["revoked_at"] is None]
        where, args = "id IN (%s)" % ", ".join("?" * len(live)) if live else "FALSE", live
        agents = tuple({r["user_id"] for r in minted if r["kind"] == "agent"})
    elif kind == "org":
        org = find_account(req, target, kinds=("org",))
        req.authorize("revoke_org_access", Resource.account(org))
        reached = [r["agent_id"] for r in store.all(
            "SELECT DISTINCT g.agent_id FROM agent_grants g LEFT JOIN repos r ON r.id = g.repo_id"
            " LEFT JOIN teams t ON t.id = g.team_id WHERE r.owner_id = ? OR t.org_id = ? OR g.org_id = ?",
            org["id"], org["id"], org["id"])]
        where = "user_id IN (%s)" % ",".join("?" * len(reached)) if reached else "FALSE"
        args, also, agents = tuple(reached), (org, reached), tuple(reached)
    else:
        row = store.one("SELECT * FROM tokens WHERE fingerprint = ?", target)
        holder = account_by_id(store, row["user_id"]) if row else None
        if holder is None:
            raise HTTPError(404, "Not Found")
        req.authorize("revoke_tokens", Resource.account(holder))
        where, args, also, agents = "id = ?", (row["id"],), None, ()
    answer = {}
    with req.transaction() as db:
        # the agents revoked lose every credential (keys and refresh families with their tokens)
        count = revoke(db, where, args)
        tokens, keys = revoke_agent_credentials(db, agents)
        count += tokens
        taken = 0
        if kind == "runtime":        # (``also`` is whose agents the runtime is revoked for)
            answer = block_runtime(req, db, target, also)
            req.effect("runtime %s revoked (%s)" % (target, answer["revocation"]))
        elif also:
            org, reached = also
            for agent_id in reached:
                taken += remove_grants(db, agent_id, " AND (repo_id IN (SELECT id FROM repos WHERE owner_id = ?)"
                                       " OR team_id IN (SELECT id FROM teams WHERE org_id = ?) OR org_id = ?)",
                                       (org["id"], org["id"], org["id"]))
        req.effect("%s by %s %s%s" % (revoked_phrase(count, keys), kind, target,
                                      "; took back %d grants" % taken if taken else ""))
    return 200, dict(answer, revoked=count, **({"keys_revoked": keys} if kind != "token_fingerprint" else {}))


def runtime_revoker(req):
    """Whose agents a revocation by runtime is for: the caller's (her id), or a site admin's everyone's
    (None)."""
    human = signed_in(req)
    req.authorize("revoke_tokens", Resource.account(human))
    return None if req.can("read_site_audit", SITE) else human["id"]


def runtime_pattern(text):
    """A revocation's SPIFFE ID pattern, normalized as identities are (proofs.spiffe_id)."""
    try:
        return spiffe_id(text, pattern=True)
    except ValueError as error:
        raise invalid("Revocation", "runtime", message="%s (* for any part)" % error)


def block_runtime(req, db, pattern, human_id):
    """Keep the runtime revoked: decide() refuses it from now on (rule_standing), until it is lifted."""
    public_id = "rr_" + secrets.token_hex(8)
    insert_row(db, "revoked_runtimes", {"public_id": public_id, "pattern": pattern, "human_id": human_id,
                                        "revoked_by": req.principal.user["id"], "created_at": now()})
    return {"revocation": public_id, "runtime": pattern}


def runtime_revocation_json(app, row):
    revoker = account_by_id(app.store, row["revoked_by"]) if row["revoked_by"] else None
    return {"id": row["public_id"], "runtime": row["pattern"], "for": "everyone" if row["human_id"] is None else
            "the agents of user:" + account_by_id(app.store, row["human_id"])["login"],
            "revoked_by": "user:" + revoker["login"] if revoker else None, "created_at": row["created_at"]}


@route("GET", "/api/ext/v1/revocations/runtimes")
def list_runtime_revocations(req):
    """The runtime identities the caller revoked for her agents (a site admin: every one), still in force."""
    user = signed_in(req)
    req.check("read_tokens", Resource.account(user))
    everyone = req.can("read_site_audit", SITE)
    rows = req.app.store.all("SELECT * FROM revoked_runtimes WHERE human_id = ? OR ? ORDER BY id", user["id"], everyone)
    return [runtime_revocation_json(req.app, r) for r in req.paginate(rows)]


@route("DELETE", "/api/ext/v1/revocations/runtimes/{revocation_id}")
def lift_runtime_revocation(req, revocation_id):
    """Lift a runtime's revocation: its runtimes may mint and use tokens again (those revoked stay so)."""
    user = signed_in(req)
    row = req.app.store.one("SELECT * FROM revoked_runtimes WHERE public_id = ?", revocation_id)
    mine = row is not None and (row["human_id"] == user["id"] or row["human_id"] is None and req.can(
        "read_site_audit", SITE))
    if not mine:
        raise HTTPError(404, "Not Found")
    req.authorize("revoke_tokens", Resource.account(user))
    with req.transaction() as db:
        db.execute("DELETE FROM revoked_runtimes WHERE id = ?", (row["id"],))
        req.effect("lifted the revocation %s of runtime %s" % (row["public_id"], row["pattern"]))
    return 204, None


@route("GET", "/api/ext/v1/agents/{login}/activity")
def agent_activity(req, login):
    """Everything the agent did, for its bound human: each row says for whom and through what."""
    agent, _ = bound_agent(req, login, "read_agent")
    per_page, page = req.page()
    rows = req.app.store.all("SELECT * FROM audit WHERE actor = ? ORDER BY id DESC LIMIT ? OFFSET ?", agent["login"],
                             per_page + 1, (page - 1) * per_page)
    req.link_header(page, per_page, page + 1 if len(rows) > per_page else None)
    return [audit_json(r) for r in rows[:per_page]]
