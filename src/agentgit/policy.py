"""Policy: the action table and decide(), the one policy decision point."""

import collections
import dataclasses
import fnmatch
import hashlib
import json

from agentgit.config import from_now, now
from agentgit.gitstore import MAX_JUDGED_CHANGES
from agentgit.accounts import account_by_id, full_name, permission_of_org_member, repo_by_id
from agentgit.guardrails import (DEFAULT_SITE_AGENT_POLICY, MAX_DELEGATION_DEPTH, grant_org_ids, guardrail_excess,
                                 guardrail_paths, guardrails_over, made_from_permissions, outlives, outside_allowlist,
                                 path_matches, path_rules, reads_named, resource_org_ids, wider_audience)


# decide() is the only place that says yes or no. Endpoints name an action from ACTIONS and a
# resource; decide() answers with a Decision that carries its reasons, which become the audit row
# and the error message.

LEVELS = ("none", "read", "triage", "write", "maintain", "admin")
RANK = {name: i for i, name in enumerate(LEVELS)}
# GitHub's API spells permissions two ways; collaborators and teams take either.
PERMISSION_ALIASES = {"pull": "read", "push": "write", "read": "read", "triage": "triage", "write": "write",
                      "maintain": "maintain", "admin": "admin"}


@dataclasses.dataclass(frozen=True)
class Action:
    on: str                  # the resource kind it applies to: repo, account, org, team, site
    needs: str               # the permission level the principal must hold on that resource
    scope: str = None        # the token scope it needs (for repositories: see scope_needed)
    mutation: bool = True    # mutations are audited whether allowed or denied; reads only when denied
    humans_only: bool = False
    authors_need: str = None  # what the author of the thing acted on needs instead (editing one's own)
    anonymous: bool = False  # may an anonymous caller do it at all (reads decide by permission alone)
    token_kinds: tuple = None  # only with these kinds of token (consent takes the agent's own)
    sensitive: bool = False  # a read audited even when allowed, which a task grant must name itself
    follow_up: bool = False  # asked only once another action is allowed, never granted by name


# The action vocabulary. Accounts: self and org admins hold admin; org members hold write (they may
# create repositories in the org). Site: site admins hold admin, every signed-in account read.
ACTIONS = {
    "read_code":          Action("repo", "read", mutation=False),
    "create_branch":      Action("repo", "write"),
    "push_branch":        Action("repo", "write"),
    "delete_branch":      Action("repo", "write"),
    "admin_repo":         Action("repo", "admin"),
    "manage_protection":  Action("repo", "admin"),      # a branch's protection: what guardrails keep from agents
    "manage_hooks":       Action("repo", "admin"),
    "read_deploy_keys":   Action("repo", "admin", mutation=False),
    "read_repo_settings": Action("repo", "admin", mutation=False),
    "manage_workflows":   Action("repo", "write"),
    "delete_repo":        Action("repo", "admin", scope="delete_repo"),
    "read_collaborators": Action("repo", "write", mutation=False),
    "open_issue":         Action("repo", "read"),
    "edit_issue":         Action("repo", "triage", authors_need="read"),
    "pin_issue":          Action("repo", "write"),
    "delete_issue":       Action("repo", "admin"),
    "triage_issue":       Action("repo", "triage"),
    "comment":            Action("repo", "read"),
    "edit_comment":       Action("repo", "triage", authors_need="read"),
    "manage_labels":      Action("repo", "write"),
    "open_pr":            Action("repo", "read"),
    "review_pr":          Action("repo", "read"),
    "watch_repo":         Action("repo", "read"),
    "merge_pr":           Action("repo", "write"),
    "write_status":       Action("repo", "write"),
    "deploy":             Action("repo", "write"),
    "write_objects":      Action("repo", "write"),
    # what a ref move brings into the ref, path by path: asked after the move itself was allowed, when
    # a task grant or a guardrail over the repository limits paths (paths_judged)
    "change_paths":       Action("repo", "write", follow_up=True),
    "write_release":      Action("repo", "write"),
    "run_workflow":       Action("repo", "write", scope="workflow"),
    # a run's job token keeps its run's files, artifacts and caches (GitHub's runtime token's right,
    # whatever permissions: say)
    "keep_run_files":     Action("repo", "read", token_kinds=("task",)),
    "read_secret":        Action("repo", "write", scope="repo", mutation=False, sensitive=True),
    "write_secret":       Action("repo", "write", scope="repo"),
    "read_variables":     Action("repo", "write", scope="repo", mutation=False),
    "write_variables":    Action("repo", "write", scope="repo"),
    "freeze_repo":        Action("repo", "admin", humans_only=True),
    "read_meta":          Action("site", "none", mutation=False),
    "read_account":       Action("account", "none", mutation=False),
    "read_notifications": Action("account", "admin", mutation=False),
    "manage_notifications": Action("account", "admin"),
    "create_repo":        Action("account", "write", scope="repo"),
    "issue_token":        Action("account", "admin", humans_only=True),
    "revoke_token":       Action("account", "admin"),
    "read_tokens":        Action("account", "admin", mutation=False, humans_only=True),
    "read_audit":         Action("account", "admin", mutation=False),
    "read_org":           Action("org", "none", mutation=False),
    "read_org_private":   Action("org", "read", scope="read:org", mutation=False),
    "manage_org":         Action("org", "admin", scope="admin:org"),
    "manage_org_hooks":   Action("org", "admin", scope="admin:org"),
    "read_org_secrets":   Action("org", "admin", scope="admin:org", mutation=False, sensitive=True),
    "write_org_secrets":  Action("org", "admin", scope="admin:org"),
    "read_org_variables": Action("org", "admin", scope="admin:org", mutation=False),
    "write_org_variables": Action("org", "admin", scope="admin:org"),
    "revoke_org_access":  Action("org", "admin", scope="admin:org"),   # taking access away: even when frozen
    "freeze_org":         Action("org", "admin", scope="admin:org", humans_only=True),
    "read_team":          Action("team", "read", scope="read:org", mutation=False),
    "manage_team":        Action("team", "admin", scope="admin:org"),
    "register_agent":     Action("site", "none", anonymous=True),
    "delegate_access":    Action("repo", "admin"),      # giving access is a change: a freeze refuses it
    "delegate_team":      Action("team", "admin"),
    "create_invite":      Action("site", "read", humans_only=True),
    "approve_device":     Action("site", "read", humans_only=True),
    "register_app":       Action("account", "admin", humans_only=True),
    "bind_agent":         Action("account", "admin", token_kinds=("agent",)),
    "register_agent_key": Action("account", "admin", token_kinds=("agent",)),
    "refresh_session":    Action("account", "admin", token_kinds=("switch-session",)),
    "manage_agent":       Action("account", "admin", humans_only=True),
    "read_agent":         Action("account", "admin", mutation=False, humans_only=True),
    "revoke_tokens":      Action("account", "admin", humans_only=True),
    "grant_task":         Action("account", "admin", humans_only=True),
    "manage_credentials": Action("account", "admin", humans_only=True),     # the broker's vault: never an agent's
    "read_credentials":   Action("account", "admin", mutation=False, humans_only=True),
    # the broker: a task token asks for a tool token for one credential; the tool token calls its upstream
    "use_credential":     Action("credential", "admin", token_kinds=("task",)),
    "call_api":           Action("credential", "admin", token_kinds=("tool",)),
    "mint_task_token":    Action("account", "admin", token_kinds=("agent",)),
    # an orchestrator agent hands a narrower part of its task to another agent (RFC 8693 with an actor token)
    "delegate_task":      Action("site", "read", token_kinds=("task",)),
    # GitHub Apps: a human installs one on an account she administers (a delegation to the App's agent);
    # the App, with its JWT, reads itself and its installations and mints their tokens
    "install_app":        Action("account", "admin", humans_only=True),
    "read_app":           Action("account", "admin", mutation=False, token_kinds=("app",)),
    "manage_app":         Action("account", "admin", token_kinds=("app",)),
    "mint_session_token": Action("account", "admin", token_kinds=("agent",)),
    "create_org":         Action("site", "read", scope="admin:org", humans_only=True),
    "read_site_audit":    Action("site", "admin", mutation=False),
    # who can act on a repository, an organization or a credential, and through whom: its admins ask
    "review_access":      Action("repo", "admin", mutation=False, humans_only=True),
    "suspend_user":       Action("site", "admin", scope="site_admin"),
    # guardrails: what an organization's owners, or the site's admins, let no agent do
    "manage_agent_policy": Action("org", "admin", scope="admin:org", humans_only=True),
    "manage_site_agent_policy": Action("site", "admin", scope="site_admin", humans_only=True),
}
REF_ACTIONS = ("create_branch", "push_branch", "delete_branch")
# A freeze refuses every change but a thaw and the revocations an incident calls for (a frozen
# repository is not deleted either); an archived repository still lets its admins unarchive or delete
# it, as on GitHub.
FREEZE_ACTIONS = ("freeze_repo", "freeze_org", "revoke_org_access")
ARCHIVED_EXEMPT = ("admin_repo", "delete_repo")


@dataclasses.dataclass
class Resource:
    kind: str                # repo, account, org, team, site
    row: object = None       # the repos / accounts / teams row (repos rows carry owner_login, owner_kind)
    name: str = ""           # how audit rows and messages name it: repo:alice/demo, user:bob, team:acme/bots

    @staticmethod
    def repo(row):
        return Resource("repo", row, "repo:%s/%s" % (row["owner_login"], row["name"]))

    @staticmethod
    def account(row):
        return Resource("org" if row["kind"] == "org" else "account", row, "%s:%s" % (
            "org" if row["kind"] == "org" else "user", row["login"]))

    @staticmethod
    def team(row, org_login):
        return Resource("team", row, "team:%s/%s" % (org_login, row["slug"]))

    @staticmethod
    def credential(row, owner):
        """A broker credential; ``owner`` is its accounts row (whose permission is the credential's)."""
        return Resource("credential", dict(row, owner=owner), "credential:%s/%s" % (owner["login"], row["name"]))


SITE = Resource("site", None, "site")


@dataclasses.dataclass
class Decision:
    effect: str              # "allow", "deny", or why not: "needs_approval", "read_only", "needs_review"
    action: str
    resource: str
    reasons: list
    hidden: bool = False     # the principal may not know the resource exists: answer 404
    scope: str = None        # the scope that was missing, for X-Accepted-OAuth-Scopes
    level: str = "none"      # the permission the principal holds on the resource
    ff_only: bool = False    # allowed for fast-forwards only (a protected branch): the Git engine checks
    status: int = None       # the HTTP status a refusal takes where GitHub uses a special one
    approval: int = None     # allowed on the strength of this approval, which the action uses up
    subject: str = ""        # needs_approval: exactly what a human is asked to approve
    rule: str = None         # the POLICY_RULES rule that decided; "all" when none refused

    @property
    def allowed(self):
        return self.effect == "allow"


def repo_permission(store, user, repo):
    """(level, how) that ``user`` holds on the repository: the highest of owner, site admin, org role,
    org base permission, team grants, collaborator grants and, for a private fork of a private
    repository, what the user holds upstream (up to write); public repositories are readable by all;
    a private fork whose owner lost access to its private parent, by no one but site admins."""
    return store.cached(("permission", user["id"] if user is not None else None, repo["id"]),
                        lambda: compute_repo_permission(store, user, repo))


def compute_repo_permission(store, user, repo):
    upstream = private_upstream(store, repo)
    # GitHub deletes a private fork when its forker loses the private upstream; here nobody but a site
    # admin reaches it, so that taking access away (a collaborator removed, an agent unbound) takes the
    # copies of the code away too, into an organization as well (a fork from before forked_by was
    # recorded answers for its owner, or, in an organization, for nobody it could name)
    forker = repo["forked_by"] if repo["forked_by"] is not None else (
        repo["owner_id"] if repo["owner_kind"] != "org" else None)
    if upstream is not None and forker is not None and not (user is not None and user["site_admin"]) \
            and RANK[repo_permission(store, account_by_id(store, forker), upstream)[0]] < RANK["read"]:
        return "none", "a private fork whose forker can no longer read %s" % full_name(upstream)
    best, how = ("read", "public repository") if not repo["private"] else ("none", "private repository")

    def consider(level, source):
        nonlocal best, how
        # an explicit grant names the source even where a public repository gives as much (or, capped
        # by its grantor, no more than a private one: the reason then names the grantor)
        if RANK[level] > RANK[best] or (RANK[level] == RANK[best] and how in ("public repository",
                                                                              "private repository")):
            best, how = level, source

    if user is None:
        return best, how
    if user["site_admin"]:
        consider("admin", "site admin")
    if repo["owner_id"] == user["id"]:
        consider("admin", "owner")
    if upstream is not None:
        # GitHub: a private fork inherits its upstream's permissions, so the upstream's people keep
        # control of their code; up to write here, for admin over another's repository is its owner's
        inherited = repo_permission(store, user, upstream)[0]
        consider(LEVELS[min(RANK[inherited], RANK["write"])], "upstream %s" % full_name(upstream))
    if repo["owner_kind"] == "org":
        org = store.one("SELECT m.role, m.granted_by, a.base_permission FROM org_members m JOIN accounts a"
                        " ON a.id = m.org_id WHERE m.org_id = ? AND m.user_id = ?", repo["owner_id"], user["id"])
        if org is not None:
            consider(*capped_by_grantor(store, repo, "admin" if org["role"] == "admin" else org["base_permission"],
                                        "org %s %s" % (repo["owner_login"], org["role"]), org["granted_by"]))
        for team in store.all("SELECT t.slug, tr.permission, tm.granted_by FROM team_repos tr JOIN teams t"
                              " ON t.id = tr.team_id JOIN team_members tm ON tm.team_id = t.id"
                              " WHERE tr.repo_id = ? AND tm.user_id = ?", repo["id"], user["id"]):
            consider(*capped_by_grantor(store, repo, team["permission"], "team %s" % team["slug"], team["granted_by"]))
    collab = store.one("SELECT permission, granted_by FROM collaborators WHERE repo_id = ? AND user_id = ?",
                       repo["id"], user["id"])
    if collab is not None:
        consider(*capped_by_grantor(store, repo, collab["permission"], "collaborator", collab["granted_by"]))
    return best, how


def capped_by_grantor(store, repo, level, source, grantor_id):
    """(level, how) of one grant. An agent's access from an invite is derived, not copied: it is the
    grantor's to give only while she holds it, so it is capped at each request by what the grantor
    holds on the repository now, and is nothing while she is suspended."""
    if grantor_id is None:
        return level, source
    grantor = account_by_id(store, grantor_id)
    if grantor is None or grantor["suspended_at"]:
        return "none", "%s via %s, who is suspended" % (source, grantor["login"] if grantor else "a removed account")
    held = repo_permission(store, grantor, repo)[0]
    return LEVELS[min(RANK[level], RANK[held])], "%s via %s, who holds %s" % (source, grantor["login"], held)


def private_upstream(store, repo):
    """A private fork's parent when that is private too: the fork inherits its permissions, and is out
    of reach once its owner cannot read it."""
    if not repo["private"] or repo["parent_id"] is None:
        return None
    parent = repo_by_id(store, repo["parent_id"])
    return parent if parent is not None and parent["private"] else None


def bound_human_id(store, agent_id):
    """The id of the human an agent is bound to, or None."""
    binding = store.cached(("binding", agent_id), lambda: store.one(
        "SELECT human_id FROM agent_bindings WHERE agent_id = ?", agent_id))
    return binding["human_id"] if binding is not None else None


def permission_on(store, user, resource):
    """(level, how) for any resource kind. A credential is its owner's: the human herself, or an
    organization's admins, may use it."""
    if resource.kind == "repo":
        return repo_permission(store, user, resource.row)
    if resource.kind == "credential":
        level, how = permission_on(store, user, Resource.account(resource.row["owner"]))
        return level, "%s of %s" % (how, resource.row["owner"]["login"])
    if user is None:
        return "none", "anonymous"
    if user["site_admin"]:
        return "admin", "site admin"
    if resource.kind == "site":
        return "read", "signed in"
    if resource.kind == "account":
        if resource.row["id"] == user["id"]:
            return "admin", "self"
        if resource.row["kind"] == "agent" and bound_human_id(store, resource.row["id"]) == user["id"]:
            return "admin", "bound human"
        return "none", "another account"
    org_id = resource.row["org_id"] if resource.kind == "team" else resource.row["id"]
    role = permission_of_org_member(store, org_id, user["id"])
    if resource.kind == "team":
        if role == "admin":
            return "admin", "org admin"
        member = store.one("SELECT role, granted_by FROM team_members WHERE team_id = ? AND user_id = ?",
                           resource.row["id"], user["id"])
        if member is not None and member["granted_by"] is not None:
            # from an invite: a member while the grantor may still manage the team (and is not suspended)
            grantor = account_by_id(store, member["granted_by"])
            if grantor is None or grantor["suspended_at"] or permission_on(store, grantor, resource)[0] != "admin":
                member = None
        if member is not None:
            return ("admin", "team maintainer") if member["role"] == "maintainer" else ("read", "team member")
        # Visible ('closed') teams can be seen by every org member; secret ones only by their members.
        if role and resource.row["privacy"] == "closed":
            return "read", "org member"
        return "none", "not a member"
    return {"admin": ("admin", "org admin"), "member": ("write", "org member")}.get(role, ("none", "not a member"))


def scope_needed(action, spec, resource):
    """GitHub's rule for repositories: private ones need 'repo'; public ones need 'public_repo' to change."""
    if spec.scope or resource.kind != "repo":
        return spec.scope
    if resource.row["private"]:
        return "repo"
    return "public_repo" if spec.mutation else None


def branch_protection(store, repo_id, branch):
    return store.cached(("protection", repo_id, branch), lambda: store.one(
        "SELECT * FROM branch_protections WHERE repo_id = ? AND branch = ?", repo_id, branch))


def unmet_protection(store, rule, action, context, agent=False):
    """What a protected branch rule still asks for before ``action`` may happen, or None. An agent
    pushes to it not at all, and merges into it only with a human's approving review."""
    if action == "delete_branch":
        return None if rule["allow_deletions"] and not agent else "deletions are not allowed"
    checks = json.loads(rule["required_checks"]) if rule["required_checks"] else []
    if agent and action in ("create_branch", "push_branch"):
        return "an agent's changes must arrive through a pull request with a human's approving review"
    if action in ("create_branch", "push_branch"):
        if rule["required_approvals"] is not None:
            return "changes must arrive through a pull request with %d approving review%s" % (
                rule["required_approvals"], "" if rule["required_approvals"] == 1 else "s")
        if checks:
            return "changes must arrive through a pull request whose status checks pass (%s)" % ", ".join(checks)
        return None
    # merge_pr: the pull request's reviews and its head commit's checks
    head_sha = context["head_sha"]
    approvals, human_approvals, blockers = 0, 0, []
    for review in latest_reviews(store, context["pull_issue_id"], context["repo"]).values():
        if review["state"] == "APPROVED" and (not rule["dismiss_stale"] or review["commit_id"] == head_sha):
            approvals += 1
            # for an agent's merge, only a human's yes to the head as it is now: commits the agent
            # pushed after the review were never reviewed
            human_approvals += review["user_kind"] == "human" and review["commit_id"] == head_sha
        elif review["state"] == "CHANGES_REQUESTED":
            blockers.append(review["login"])
    if blockers:
        return "changes were requested by %s" % ", ".join(sorted(blockers))
    if agent and not human_approvals:
        return "an agent's merge needs a human's approving review of its head commit"
    if rule["required_approvals"] and approvals < rule["required_approvals"]:
        return "%d approving review%s required, %d given" % (rule["required_approvals"], "" if
                                                             rule["required_approvals"] == 1 else "s", approvals)
    states = check_states(store, context["repo"]["id"], head_sha)
    for check in checks:
        if states.get(check) != "success":
            return "required status check %r is %s" % (check, states.get(check, "missing"))
    return None


def latest_reviews(store, issue_id, repo):
    """{user id: review} of each reviewer's latest approval or change request, counting only
    reviewers who could push to the repository (as GitHub counts them); with their login and kind."""
    latest = {}
    for review in store.all("SELECT * FROM reviews WHERE issue_id = ? AND state NOT IN ('COMMENTED', 'PENDING')"
                            " ORDER BY id", issue_id):
        latest[review["user_id"]] = review
    counted = {}
    for user_id, review in latest.items():
        user = account_by_id(store, user_id)
        if user is not None and RANK[repo_permission(store, user, repo)[0]] >= RANK["write"]:
            counted[user_id] = dict(review, login=user["login"], user_kind=user["kind"])
    return counted


def check_states(store, repo_id, sha):
    """{context: state} of a commit: the latest status per context, and completed check runs by name."""
    states = {}
    for row in store.all("SELECT context, state FROM statuses WHERE repo_id = ? AND sha = ? ORDER BY id", repo_id, sha):
        states[row["context"]] = row["state"]
    for row in store.all("SELECT name, status, conclusion FROM check_runs WHERE repo_id = ? AND head_sha = ?"
                         " ORDER BY id", repo_id, sha):
        states[row["name"]] = row["conclusion"] if row["status"] == "completed" else "pending"
    return states


SELF_ACTIONS = ("read_account", "read_meta")       # a task token may always ask who it is


def approval_subject(action, context):
    """Exactly what a human approves, so that a yes is not spent on something else: a merge of one
    pull request at its head commit (new commits need a new yes), a workflow on a ref, a push of a ref
    to one commit, a secret by name."""
    if "pull_number" in context:
        return "pull request #%d at %s" % (context["pull_number"], context["head_sha"][:12])
    if context.get("workflow"):
        return "%s on %s" % (context["workflow"], context.get("ref"))
    if context.get("secret"):
        return "secret %s" % context["secret"]
    if context.get("upstream"):
        return "calls to %s" % context["upstream"]
    if context.get("ref") and context.get("sha"):
        return "%s at %s" % (context["ref"], context["sha"])
    return context.get("ref") or ""


def task_grant_refusal(store, grant, action, spec, resource, context, user):
    """A task token does only what its grant names: its actions (a read beyond read access too), on its
    resources, within its branch prefix; what it reserves for a human's approval waits for one."""
    gid = grant["public_id"]
    deny = lambda reason, **kw: Decision("deny", action, resource.name, [reason], **kw)  # noqa: E731
    if action in SELF_ACTIONS and resource.kind in ("site", "account") and (
            resource.kind == "site" or resource.row["id"] == user["id"]):
        return None
    if action == "delegate_task":
        return delegation_verdict(store, grant, resource, context)
    if resource.name not in grant["resources"]:
        return deny("task grant %s does not cover %s" % (gid, resource.name), hidden=resource.kind in ("repo",
                                                                                                        "credential"))
    needed = action if spec.mutation or spec.sensitive or RANK[spec.needs] > RANK["read"] else "read_code"
    if resource.kind == "credential":
        needed = "call_api"          # a grant names calls; a tool token for them is asked for first
    if resource.kind == "credential" or "upstream" in context:     # a broker's call, a hook's deliveries
        outside = outside_allowlist(grant["constraints"].get("network_allowlist", []), context.get("upstream", ""))
        if outside:
            return deny("task grant %s: %s" % (gid, outside))
    reserved = grant["constraints"].get("requires_approval", [])
    ref = context.get("ref") or ""
    if action in REF_ACTIONS and not ref and set(REF_ACTIONS) & (grant["actions"] | set(reserved)):
        return None     # git asking whether it may push at all: each ref is decided when the push names it
    if action in reserved:
        subject = approval_subject(action, context)
        return approval_verdict(store, grant, action, resource, subject, "%s%s needs a human's approval first" % (
            action, " of " + subject if subject else ""))
    if action == "change_paths":
        return path_verdict(store, grant, resource, context)
    if needed not in grant["actions"]:
        if spec.mutation and not any(ACTIONS[a].mutation for a in grant["actions"]):
            return Decision("read_only", action, resource.name,
                            ["task grant %s is read-only: it allows no %s" % (gid, action)])
        return deny("task grant %s does not allow %s" % (gid, needed))
    prefix = grant["constraints"].get("branch_prefix")
    if prefix and action in REF_ACTIONS and not ref.startswith("refs/heads/" + prefix):
        return deny("task grant %s allows pushes to branches under %s only, not %s" % (gid, prefix, ref))
    return None


def delegation_verdict(store, grant, resource, context):
    """An orchestrator's task token hands part of its task to ``context["agent"]`` (or takes it back,
    which it always may): within the depth limit; to an agent bound to the same human, or once that
    human approves the hand-over."""
    gid, agent = grant["public_id"], context["agent"]
    if context.get("taking_back"):
        return None
    if len(grant["chain"]) >= MAX_DELEGATION_DEPTH:
        return Decision("deny", "delegate_task", resource.name, ["task grant %s is %d links below %s already: "
                        "delegation stops at %d" % (gid, len(grant["chain"]), grant["delegator_login"],
                                                     MAX_DELEGATION_DEPTH)])
    if context["bound_to"] == grant["delegator_id"]:
        return None
    return approval_verdict(store, grant, "delegate_task", resource, "agent %s" % agent,
                            "%s is not bound to %s, who approves handing task %s to it first" % (
                                agent, grant["delegator_login"], grant["task"]))


def approval_verdict(store, grant, action, resource, subject, waiting):
    """What a human said of ``action`` on ``subject``: a refusal when she denied it, needs_approval
    (``waiting`` says why) until she approves, then an allow that names her approval, which the action
    spends."""
    gid, what = grant["public_id"], " of " + subject if subject else ""
    denied = store.one("SELECT a.public_id, a.denial_reason, h.login FROM approvals a LEFT JOIN accounts h ON"
                       " h.id = a.denied_by WHERE a.grant_id = ? AND a.action = ? AND a.resource = ? AND"
                       " a.subject = ? AND a.denied_at IS NOT NULL AND a.expires_at > ?",
                       grant["id"], action, resource.name, subject, now())
    if denied is not None:
        return Decision("deny", action, resource.name, ["task grant %s: %s denied %s (approval %s): %s" % (
            gid, denied["login"] or "the delegator", action + what, denied["public_id"],
            denied["denial_reason"] or "no reason given")])
    approved = store.one("SELECT a.id, a.public_id, h.login FROM approvals a LEFT JOIN accounts h ON"
                         " h.id = a.approved_by WHERE a.grant_id = ? AND a.action = ? AND a.resource = ? AND"
                         " a.subject = ? AND a.approved_at IS NOT NULL AND a.used_at IS NULL AND a.expires_at > ?",
                         grant["id"], action, resource.name, subject, now())
    if approved is None:
        return Decision("needs_approval", action, resource.name, ["task grant %s: %s" % (gid, waiting)],
                        subject=subject)
    # not a refusal: the rest of decide() still applies, and names the approval (and who gave it) among
    # its reasons, so the action's audit row carries the whole chain
    return Decision("allow", action, resource.name, ["approved by %s (approval %s)" % (
        approved["login"] or "a human since removed", approved["public_id"])], approval=approved["id"])


def path_verdict(store, grant, resource, context):
    """A grant's path rules, with the guardrails' requires_approval_paths over the repository, on what a
    ref move brings (context["changes"], from changes_brought): a path outside ``paths`` refuses it,
    naming the ref, the commit and the path; paths needing approval wait for a human's yes to exactly
    those files at exactly that content."""
    rules, gid, ref = path_rules(grant), grant["public_id"], context.get("ref", "")
    deny = lambda reason: Decision("deny", "change_paths", resource.name, [reason])  # noqa: E731
    guarded = guardrail_paths(store, resource.row)
    if rules is None and not guarded:
        return None
    paths, approval_paths = rules or (None, [])
    approval_paths = approval_paths + guarded
    if context.get("changes") is None:
        return deny("task grant %s limits paths, and %s brings more than %d commits or changes (or objects that "
                    "are missing) to check: push fewer commits at a time" % (gid, ref, MAX_JUDGED_CHANGES))
    waiting = []
    for commit, path, blob in context["changes"]:
        if path_matches(approval_paths, path):
            waiting.append((path, blob))
        elif paths is not None and not path_matches(paths, path):
            return deny("task grant %s allows changes to %s only: %s changes %s (%s)" % (
                gid, ", ".join(paths) or "no paths", "commit " + commit if commit else "this change", path, ref))
    if not waiting:
        return None
    files = sorted({path for path, _ in waiting})
    content = hashlib.sha256("\n".join(sorted("%s\0%s" % (path, blob) for path, blob in set(waiting))).encode())
    subject = "%s changing %s (content %s)" % (ref, ", ".join(files[:5]) + (" and %d more" % (len(files) - 5)
                                               if len(files) > 5 else ""), content.hexdigest()[:16])
    return approval_verdict(store, grant, "change_paths", resource, subject, "%s changes %s, which its "
                            "requires_approval_paths (%s) give a human to approve first" % (
                                ref, ", ".join(files), ", ".join(approval_paths)))


def binding_refusal(q, constraints, minting):
    """A grant's runtime and sender constraints: its tokens are minted and used only by a runtime
    whose certificate names an allowed identity, and (sender_constrained) minted only bound to the
    holder's certificate or DPoP key."""
    principal, grant_id = q.principal, principal_grant_id(q)
    runtimes = constraints.get("runtime")
    if runtimes and not any(fnmatch.fnmatchcase(principal.runtime_id or "", pattern) for pattern in runtimes):
        return q.deny("task grant %s is for runtimes %s; this connection presents %s" % (
            grant_id, ", ".join(runtimes), principal.runtime_id or "no runtime identity (no client certificate)"))
    if minting and not principal.confirmation() and (constraints.get("sender_constrained") or
                                                     q.context.get("site_requires_binding")):
        return q.deny("%s tokens are sender-constrained only: present a client certificate (mTLS, RFC 8705) or a "
                      "DPoP proof (RFC 9449) when minting" % ("task grant %s's" % grant_id if constraints.get(
                          "sender_constrained") else "this site's task and tool"))
    return None


def principal_grant_id(q):
    grant = q.principal.grant or q.context.get("grant")
    return grant["public_id"] if grant is not None else "?"


def freeze_of(store, resource):
    """The freeze that holds a repository, an organization or a team (its own or its organization's)."""
    if resource.kind == "repo":
        where, ids = "f.repo_id = ? OR f.org_id = ?", (resource.row["id"], resource.row["owner_id"])
    elif resource.kind in ("org", "team"):
        where, ids = "f.org_id = ?", (resource.row["org_id" if resource.kind == "team" else "id"],)
    else:
        return None
    return store.cached(("freeze",) + ids, lambda: store.one(
        "SELECT f.*, a.login AS frozen_by_login, o.login AS org_login FROM freezes f LEFT JOIN accounts a"
        " ON a.id = f.frozen_by LEFT JOIN accounts o ON o.id = f.org_id WHERE %s ORDER BY f.repo_id IS NULL"
        " LIMIT 1" % where, *ids))


# Destructive actions and binding changes ask a human who has a second factor for a fresh code.
STEP_UP_ACTIONS = ("delete_repo", "manage_agent", "revoke_tokens")
MINT_ACTIONS = ("mint_task_token", "mint_session_token")
STEP_UP_SECONDS = 600


class Question:
    """One decide() call on its way through the rules: what is asked, and what the rules learn on the
    way (the permission held, an approval the action rests on, a fast-forward-only branch).

    ``authority`` is the account whose permission counts: the principal's own, except for a task
    token, which carries its grant's delegator's authority as it stands at this request (her
    permission, her suspension), never the agent's own standing access."""
    __slots__ = ("store", "principal", "action", "resource", "spec", "user", "context", "level", "how", "approval",
                 "approved", "ff_only", "authority", "holder")

    def __init__(self, store, principal, action, resource, context):
        self.store, self.principal, self.action, self.resource = store, principal, action, resource
        self.spec, self.user, self.context = ACTIONS[action], principal.user, context
        self.level, self.how, self.approval, self.approved, self.ff_only = "none", "", None, None, False
        grant = principal.grant
        if grant is None:
            self.authority, self.holder = self.user, principal.login or "anonymous"
        else:
            self.authority = store.cached(("account", grant["delegator_id"]),
                                          lambda: account_by_id(store, grant["delegator_id"]))
            self.holder = "%s (delegator of task grant %s)" % (grant["delegator_login"], grant["public_id"])

    def deny(self, reason, **details):
        return Decision("deny", self.action, self.resource.name, [reason], **details)


def runtime_revocation(store, principal):
    """The revocation that covers the runtime this principal's certificate names, or None: a site-wide
    one, or one by the human an agent is bound to."""
    if not principal.runtime_id or principal.user is None:
        return None
    revocations = store.cached(("revoked-runtimes",), lambda: store.all(
        "SELECT r.*, a.login AS revoker FROM revoked_runtimes r LEFT JOIN accounts a ON a.id = r.revoked_by"))
    human = bound_human_id(store, principal.user["id"]) if principal.user["kind"] == "agent" else None
    return next((r for r in revocations if (r["human_id"] is None or r["human_id"] == human) and
                 fnmatch.fnmatchcase(principal.runtime_id, r["pattern"])), None)


def rule_standing(q):
    user, spec = q.user, q.spec
    if user is not None and user["retired_at"]:
        return q.deny("agent %s is retired" % user["login"])
    if user is not None and user["suspended_at"]:
        return q.deny("account %s is suspended" % user["login"])
    revoked = runtime_revocation(q.store, q.principal)
    if revoked is not None:
        return q.deny("runtime %s is revoked (%s, %s by %s)" % (q.principal.runtime_id, revoked["public_id"],
                                                               revoked["pattern"], revoked["revoker"] or "?"))
    if q.action in MINT_ACTIONS and user is not None and user["kind"] == "agent" and not q.principal.certificate and (
            user["runtime_certificate_at"] or q.context.get("site_requires_certificates")):
        return q.deny("agent %s mints with a client certificate only (%s)" % (
            user["login"], "it minted with one before" if user["runtime_certificate_at"] else "this site says so"))
    if q.principal.token_kind == "app" and not spec.token_kinds and not (q.action in SELF_ACTIONS and (
            q.resource.kind == "site" or q.resource.row["id"] == user["id"])):
        return q.deny("an App's JWT reaches the App's own endpoints only; trade it for an installation token "
                      "(POST /app/installations/{id}/access_tokens)", hidden=q.resource.kind in ("repo", "credential"))
    if spec.token_kinds and q.principal.token_kind not in spec.token_kinds:
        return q.deny("%s needs the %s token itself; this is a %s token" % (
            q.action, " or ".join(spec.token_kinds), q.principal.token_kind or "missing"))
    if q.authority is not user and (q.authority is None or q.authority["suspended_at"]):
        return q.deny("task grant %s carries the authority of %s, who is suspended" % (
            q.principal.grant["public_id"], q.principal.grant["delegator_login"]))
    return None


def rule_task_grant(q):
    minted = q.context.get("grant")      # a grant a token is about to be minted under
    if minted is not None and (minted["revoked_at"] or minted["expires_at"] <= now()):
        return q.deny("task grant %s is %s" % (minted["public_id"], "revoked" if minted["revoked_at"] else "expired"))
    held = q.principal.grant
    constraints = held["constraints"] if held is not None else json.loads(minted["constraints"]) if minted else {}
    refusal = binding_refusal(q, constraints, minted is not None or q.action == "use_credential")
    if refusal is not None:
        return refusal
    if held is not None:
        verdict = task_grant_refusal(q.store, held, q.action, q.spec, q.resource, q.context, q.user)
        if verdict is not None and verdict.effect == "needs_approval":
            return guardrail_refusal(q) or verdict        # what cannot happen is refused before anyone is asked
        if verdict is not None and not verdict.allowed:
            return verdict
        q.approval = verdict.approval if verdict is not None else None
        q.approved = verdict.reasons[0] if verdict is not None and verdict.approval is not None else None
    return None


def rule_guardrails(q):
    policies = guardrails_asked(q)
    refusal = guardrail_refusal(q, policies)
    if refusal is not None:
        return refusal
    for who, policy in policies:
        if q.action in policy.get("requires_approval", ()) and q.approval is None:
            if q.principal.grant is None:
                return q.deny("%s's agent policy: %s needs a human's approval, which an agent asks for through a "
                              "task grant" % (who, q.action))
            return approval_asked(q, "%s's agent policy gives %s to a human to approve first" % (who, q.action))
    return None


def approval_asked(q, why):
    """What the grant's delegator said of q's action (approval_verdict): a refusal or a wait, or None
    once she approved, her approval then noted on q for the decision to name and spend."""
    verdict = approval_verdict(q.store, q.principal.grant, q.action, q.resource, approval_subject(q.action, q.context),
                               why)
    if not verdict.allowed:
        return verdict
    q.approval, q.approved = verdict.approval, verdict.reasons[0]
    return None


def guardrails_asked(q):
    """The guardrails over what an agent acts on, when it is not its own: [(who, policy)]."""
    user, grant, resource = q.user, q.principal.grant, q.resource
    if user is None or user["kind"] != "agent" or owns(user, resource) or q.action in SELF_ACTIONS:
        return []
    return guardrails_over(q.store, grant_org_ids(q.store, grant["resources"]) if q.action == "delegate_task"
                           else resource_org_ids(resource))


def guardrail_refusal(q, policies=None):
    """What the guardrails refuse outright (asked before a human is asked for anything): a grant beyond
    them, a denied action, a runtime, a token or an upstream outside them. ``policies``: guardrails_asked's."""
    user, grant = q.user, q.principal.grant
    if user is None or user["kind"] != "agent":
        return None
    # a grant a human chose is cut whole when it exceeds them; a run's or an App installation's, made
    # from the workflow's or the App's permissions, is refused the denied actions one by one below
    if grant is not None and not made_from_permissions(grant):
        excess = q.store.cached(("grant-excess", grant["id"]), lambda: guardrail_excess(
            q.store, grant["actions"], grant["constraints"], grant["resources"]))
        if excess:
            return q.deny("task grant %s is cut: %s" % (grant["public_id"], excess))
    for who, policy in guardrails_asked(q) if policies is None else policies:
        if q.action in policy.get("deny", ()):
            return q.deny("%s's agent policy: no agent may %s, whatever a grant says" % (who, q.action))
        runtimes = policy.get("runtimes")
        if runtimes and not any(fnmatch.fnmatchcase(q.principal.runtime_id or "", p) for p in runtimes):
            return q.deny("%s's agent policy: agents act from runtimes %s only; this connection presents %s" % (
                who, ", ".join(runtimes), q.principal.runtime_id or "no runtime identity"))
        if policy.get("sender_constrained") and q.principal.token_kind == "task" and not q.principal.confirmation():
            return q.deny("%s's agent policy: task tokens are sender-constrained only" % who)
        longest = policy.get("max_task_token_seconds")
        if longest and q.principal.token_kind == "task" and outlives(q.principal.token_life, longest):
            return q.deny("%s's agent policy: task tokens live %d seconds at most; this one was minted for longer: "
                          "mint another" % (who, longest))
        if policy.get("network_allowlist_max") is not None and "upstream" in q.context:
            outside = outside_allowlist(policy["network_allowlist_max"], q.context["upstream"])
            if outside:
                return q.deny("%s's agent policy: %s" % (who, outside.replace("its network_allowlist", "its maximum")))
        if q.action == "change_paths" and grant is None and policy.get("requires_approval_paths") and any(
                path_matches(policy["requires_approval_paths"], path) for _, path, _ in q.context.get("changes") or ()):
            return q.deny("%s's agent policy gives changes to %s to a human to approve: an agent makes them through a "
                          "task grant" % (who, ", ".join(policy["requires_approval_paths"])))
    return None


# -- information flow: a public issue's instructions make an agent read a private repository and publish
# it (the documented attack on coding agents). With its task's reads recorded (Ledger.note_read), the
# publishing waits for a human; and so do, after untrusted input, the actions its grant names.

def rule_information_flow(q):
    grant = q.principal.grant
    if grant is None or not q.spec.mutation or q.action in ("change_paths", "delegate_task") or q.approval is not None \
            or made_from_permissions(grant):
        return None
    audience = wider_audience(q)
    after_untrusted = q.action in grant["constraints"].get("requires_approval_after_untrusted", ())
    if audience is None and not after_untrusted:
        return None
    reads = reads_named(q.store, grant["task_id"])
    if audience and reads.get("private"):
        return approval_asked(q, "task %s read %s, and %s on %s reaches a wider audience (%s): a human approves it "
                                 "first" % (grant["task"], reads["private"], q.action, q.resource.name, audience))
    if after_untrusted and reads.get("untrusted"):
        return approval_asked(q, "task %s read untrusted input, %s; its grant gives %s after that to a human to "
                                 "approve" % (grant["task"], reads["untrusted"], q.action))
    return None


def rule_delegator(q):
    resource, user = q.resource, q.user
    # (a task token answers for its grant's delegator, whom rule_standing checks)
    if q.principal.delegator_suspended and q.principal.grant is None and not (
            resource.kind == "repo" and resource.row["owner_id"] == user["id"] or resource.kind == "account"
            and resource.row["id"] == user["id"]):
        return q.deny("%s's delegator %s is suspended: the agent works on its own repositories only" % (
            user["login"], q.principal.delegator))
    return None


def rule_humans_only(q):
    if q.spec.humans_only and q.user is not None and q.user["kind"] != "human":
        return q.deny("%s is for humans; %s is an %s" % (q.action, q.user["login"], q.user["kind"]))
    return None


def rule_permission(q):
    spec, user, resource, login = q.spec, q.user, q.resource, q.holder
    q.level, q.how = permission_on(q.store, q.authority, resource)
    if q.principal.standing_read and RANK[q.level] > RANK["read"] and not owns(user, resource):
        q.level, q.how = "read", "%s: %s; an agent outside a task holds it as read: to change it, %s grants it " \
            "a task, POST /api/ext/v1/task-grants" % (q.level, q.how, q.principal.delegator or "the human it acts for")
    if resource.kind in ("repo", "credential") and RANK[q.level] < RANK["read"]:
        return q.deny("%s cannot see %s (%s)" % (login, resource.name, q.how), hidden=True)
    if user is None and (spec.humans_only or spec.mutation and not spec.anonymous):
        return q.deny("%s requires authentication" % q.action)
    needs = spec.needs
    if spec.authors_need and user is not None and q.context.get("author_id") == user["id"]:
        needs = spec.authors_need
    if q.context.get("locked") and q.action == "comment":
        needs = "triage"     # a locked conversation takes comments from triage and up only
    if RANK[q.level] < RANK[needs]:
        return q.deny("%s needs %s on %s; %s has %s (%s)" % (q.action, needs, resource.name, login, q.level, q.how),
                      hidden=resource.kind == "team" and q.level == "none")
    return None


def owns(user, resource):
    """Is ``resource`` the account's own: itself, or a repository it owns?"""
    return user is not None and (resource.kind == "account" and resource.row["id"] == user["id"] or
                                 resource.kind == "repo" and resource.row["owner_id"] == user["id"])


def rule_agent_credentials(q):
    principal, resource = q.principal, q.resource
    if principal.credential_id is not None and q.action not in SELF_ACTIONS and not (
            resource.kind == "credential" and resource.row["id"] == principal.credential_id):
        return q.deny("this tool token is for one other credential; ask the broker for a tool token for %s" %
                      resource.name)
    if principal.audience is not None and resource.kind == "repo" and resource.name not in principal.audience:
        return q.deny("this %s token is for %s, not %s" % ("installation" if principal.grant else "agent session",
                                                           ", ".join(sorted(principal.audience)), resource.name),
                      hidden=True)
    if not principal.bootstrap:
        return None
    user, spec = q.user, q.spec
    own = resource.kind == "site" or owns(user, resource)
    public_read = not spec.mutation and not spec.sensitive and (
        resource.kind == "repo" and not resource.row["private"] or q.action in ("read_org", "read_account"))
    if own or public_read:
        return None
    return q.deny("this is %s's bootstrap credential: it acts on %s's own account and repositories and reads what "
                  "is public. For %s, trade it for a short-lived token: token exchange at /login/oauth/access_token "
                  "(grant_type=urn:ietf:params:oauth:grant-type:token-exchange, subject_token=this token, resource="
                  "the repository's URL, and task=the task for a task token), or `agentgit.py credential` as git's "
                  "credential helper" % (user["login"], user["login"], resource.name))


def rule_scope(q):
    scope, scopes, token = scope_needed(q.action, q.spec, q.resource), q.principal.scopes, q.principal.token_id
    if scope and token is not None and scope not in scopes:
        if q.resource.kind == "repo" and q.resource.row["private"] and "repo" not in scopes:
            return q.deny("token lacks the 'repo' scope that private repositories need", hidden=True, scope="repo")
        return q.deny("token lacks the %r scope that %s needs" % (scope, q.action), scope=scope)
    # delegation cannot stretch a token: what an action confers (a token, an invite's access), the
    # token asking for it must hold itself; a signed-in web session holds every scope
    missing = [s for s in q.context.get("confers", ()) if s not in scopes]
    if missing and token is not None:
        return q.deny("token lacks %s, which %s would confer" % (", ".join(repr(s) for s in missing), q.action),
                      scope=missing[0])
    return None


def rule_read_only(q):
    resource = q.resource
    if not q.spec.mutation or q.action in FREEZE_ACTIONS:
        return None
    freeze = freeze_of(q.store, resource)
    if freeze is not None:
        frozen = "org:" + freeze["org_login"] if freeze["org_id"] else resource.name
        return Decision("read_only", q.action, resource.name, ["%s is frozen by policy (%s, by %s: %s); reads "
                        "pass, changes wait until it is thawed" % (frozen, freeze["public_id"],
                                                                    freeze["frozen_by_login"], freeze["reason"])])
    if resource.kind == "repo" and resource.row["archived"] and q.action not in ARCHIVED_EXEMPT:
        return Decision("read_only", q.action, resource.name, ["Repository was archived so is read-only."])
    return None


def rule_branches(q):
    action, resource, ref = q.action, q.resource, q.context.get("ref", "")
    if action in REF_ACTIONS and ref.startswith("refs/pull/"):
        return q.deny("refs/pull/ is reserved for pull requests and written by the server only")
    if resource.kind == "repo" and ref.startswith("refs/heads/") and action in REF_ACTIONS + ("merge_pr",):
        rule = branch_protection(q.store, resource.row["id"], ref[len("refs/heads/"):])
        agent = q.user is not None and q.user["kind"] == "agent"
        # agents never pass as admins: what they change on a protected branch a human reviews first
        if rule is not None and (agent or not (q.level == "admin" and not rule["enforce_admins"])):
            unmet = unmet_protection(q.store, rule, action, q.context, agent)
            if unmet:
                return Decision("needs_review" if agent else "deny", action, resource.name, [
                    "protected branch %s: %s" % (rule["branch"], unmet)], status=405 if action == "merge_pr" else None)
            q.ff_only = action == "push_branch" and not rule["allow_force_pushes"]
    return None


def rule_step_up(q):
    if q.action not in STEP_UP_ACTIONS:
        return None
    human = step_up_human(q)
    if human is None or not human["totp_secret"] or (q.principal.stepped_up_at or "") >= from_now(-STEP_UP_SECONDS):
        return None
    if human is q.user:
        reason = "%s needs a TOTP code confirmed in the last %d minutes: POST /api/ext/v1/step-up {\"otp\": ...}" % (
            q.action, STEP_UP_SECONDS // 60)
    else:
        reason = ("%s by agent %s needs a TOTP code its delegator %s confirmed in the last %d minutes: she may do it "
                  "herself, or step up a switch session (POST /api/ext/v1/step-up with it)" % (
                      q.action, q.user["login"], human["login"], STEP_UP_SECONDS // 60))
    return Decision("needs_step_up", q.action, q.resource.name, [reason])


def step_up_human(q):
    """Whose fresh second factor a step-up action needs: a human's own; for an agent, on what is not
    its own, its delegator's (the grant's for a task token, else the human it is bound to), so that an
    agent never does with nobody's code what its human could do only with hers."""
    user, store = q.user, q.store
    if user["kind"] == "human":
        return user
    if q.resource.kind == "repo" and q.resource.row["owner_id"] == user["id"]:
        return None
    if q.principal.grant is not None:
        return q.authority
    human_id = bound_human_id(store, user["id"])
    return account_by_id(store, human_id) if human_id is not None else None


PolicyRule = collections.namedtuple("PolicyRule", "says check")     # check's name, less rule_, names it

# decide()'s rules, in the order it applies them; the first that says no decides. decide() walks this
# table and the policy endpoint publishes it, so what is published is what is enforced.
POLICY_RULES = (
    PolicyRule("a suspended or retired account may do nothing, nor a task token whose delegator is suspended, "
               "nor a runtime whose identity was revoked; an agent that minted with a client certificate (or any, "
               "where the site says so) mints with one only; an action that needs a certain kind of token (consent "
               "needs the agent's own) refuses others", rule_standing),
    PolicyRule("nothing is minted or approved under a revoked or expired task grant; a grant's tokens are minted "
               "and used only by the runtimes it names, and minted only sender-constrained where it (or the site) "
               "says so; a task token does only what its grant names, within its constraints (branch prefix, the "
               "network allowlist for the broker's upstreams), needing a human's approval where the grant says so; "
               "where a grant has path rules, every ref move (a push on either engine, the contents and git-data "
               "APIs, a merge, the MCP tools) is judged on each commit it brings that the ref and the default "
               "branch lack, each path the commit changes against its parents (a merge: those it took from none), "
               "as change_paths: a path outside its paths refuses the move by ref, commit and path, a path in its "
               "requires_approval_paths waits for a human's yes to exactly those files at exactly that content; "
               "a task token may hand a narrower part of its task to another agent (delegate_task: RFC 8693 token "
               "exchange with the other agent's own token as actor_token), one bound to the same human or once she "
               "approves, at most %d agents below her; the sub-agent's grant is every link's at once, and dies with "
               "any grant or agent above it" % MAX_DELEGATION_DEPTH,
               rule_task_grant),
    PolicyRule("guardrails: an organization's owners (PUT /api/ext/v1/orgs/{org}/agent-policy) and the site's "
               "admins (PUT /api/ext/v1/site/agent-policy) say what no agent may do on what is not its own, "
               "whatever a grant says (deny), what always waits for a human (requires_approval, "
               "requires_approval_paths: through a task grant), and what task grants may hold at most (runtimes, "
               "sender_constrained, network_allowlist_max, max_task_token_seconds); a grant beyond them is refused "
               "when made and cut when they tighten. Until the site's admins say otherwise: %s" % json.dumps(
                   DEFAULT_SITE_AGENT_POLICY), rule_guardrails),
    PolicyRule("information flow, for task tokens: once a task (every grant of its chain) has read private content "
               "(a private repository's code or issues, a secret, the broker's answers), a change where a wider "
               "audience reads (a public repository, its issues and comments; a broker call outside the grant's "
               "private_sinks) waits for a human's approval that names the read and the write; once it has read "
               "untrusted input (issues, comments, pull requests by accounts without write access), so do the actions "
               "its grant lists in requires_approval_after_untrusted. A run's and an App installation's grants, made "
               "from permissions, are not held to it", rule_information_flow),
    PolicyRule("an agent whose delegator is suspended works on its own repositories only", rule_delegator),
    PolicyRule("some actions are for humans only", rule_humans_only),
    PolicyRule("the permission held on the resource must reach the action's level: the principal's own, or "
               "for a task token its delegator's, as it stands now (the agent's own standing access never adds "
               "to a task token); outside a task, an agent holds read at most on what is not its own (unless "
               "the installation chose standing write); a repository that cannot be read is hidden: 404, not "
               "403; anonymous callers "
               "may only read (and register agents); authors editing what they wrote need less; commenting on a "
               "locked conversation needs triage", rule_permission),
    PolicyRule("an agent's own long-lived token is a bootstrap credential (unless the installation chose "
               "direct): it acts on the agent's own account and repositories and reads what is public, and is "
               "traded for a short-lived token for the rest; an agent session token acts on the repositories it "
               "was minted for only, and a tool token on its one credential", rule_agent_credentials),
    PolicyRule("the token must carry the scope the action needs, and every scope that an action creating a "
               "credential or delegating access would confer (a web session holds them all)", rule_scope),
    PolicyRule("a repository or organization frozen by policy, and an archived repository, are read-only: "
               "reads pass, every change is refused (read_only), granting access too, but undoing the freeze and "
               "revoking access", rule_read_only),
    PolicyRule("refs/pull/ is the server's own; a protected branch takes no deletions, no direct pushes where "
               "it requires pull requests or status checks, no force pushes (the engine checks fast-forward once "
               "the pack is in), and no merges without the approvals and passing checks it requires. Admins pass "
               "unless the protection is enforced for admins too. Agents never pass as admins: they push to a "
               "protected branch not at all and merge into one only with a human's approving review "
               "(needs_review)", rule_branches),
    PolicyRule("%s need a TOTP code confirmed in the last %d minutes when the human has a second factor, and "
               "for an agent (but on its own repositories) its delegator's code (needs_step_up)" % (
                   ", ".join(STEP_UP_ACTIONS), STEP_UP_SECONDS // 60), rule_step_up),
)


def decide(store, principal, action, resource, context=None):
    """The one policy decision point: the rules of POLICY_RULES in order; the first that says no
    decides. What none refuses is allowed, with the reasons that let it through."""
    q = Question(store, principal, action, resource, context or {})
    for rule in POLICY_RULES:
        refusal = rule.check(q)
        if refusal is not None:
            return dataclasses.replace(refusal, rule=rule.check.__name__[len("rule_"):])
    reasons = ["%s holds %s on %s (%s)" % (q.holder, q.level, resource.name, q.how)]
    if principal.grant is not None:
        prefix = principal.grant["constraints"].get("branch_prefix")
        reasons.append("task grant %s allows %s%s" % (principal.grant["public_id"], action, " under " + prefix
                                                      if prefix and action in REF_ACTIONS else ""))
        reasons += ["handed down by agent %s (task grant %s)" % link for link in principal.grant["chain"][1:]]
    if q.context.get("ref"):
        reasons.append("ref %s" % q.context["ref"])
    if q.ff_only:
        reasons.append("protected branch: fast-forwards only")
    if q.approval is not None:
        reasons.append(q.approved)
    return Decision("allow", action, resource.name, reasons, level=q.level, ff_only=q.ff_only, approval=q.approval,
                    rule="all")
