"""Guardrails, path rules and information flow, the data decide() reads about them: what an
organization's owners or the site's admins let no agent do (agent policies, kept as settings), which
files a task grant lets its agent change (path globs), the network allowlists' host patterns, and what
a task's reads and writes are for the information-flow rule."""

import fnmatch
import functools
import json
import re
import urllib.parse

from agentgit.config import INSTALLATION_TASK_PREFIX, JOB_TASK_PREFIX, parse_time
from agentgit.accounts import account_by_id


def made_from_permissions(grant):
    """Is ``grant`` a run's job grant or an App installation's, made from the workflow's or the App's
    permissions rather than chosen by a human?"""
    return grant["task"].startswith((JOB_TASK_PREFIX, INSTALLATION_TASK_PREFIX))


def path_rules(grant):
    """A grant's path rules, (paths, requires_approval_paths), or None when it has neither."""
    constraints = grant["constraints"] if grant is not None else {}
    if "paths" not in constraints and "requires_approval_paths" not in constraints:
        return None
    return constraints.get("paths"), constraints.get("requires_approval_paths") or []


@functools.lru_cache(maxsize=1024)
def glob_parts(pattern):
    """A path glob, name by name: None for ``**`` (any number of directories), else the name's pattern
    (``*``, ``?`` and ``[...]`` within one name) as fnmatch reads it, whose expressions do not backtrack
    without end (atomic groups), whatever an attacker names its files."""
    return tuple(None if part == "**" else re.compile(fnmatch.translate(part)) for part in pattern.strip("/").split("/"))


def path_matches(patterns, path):
    """Does one of the globs cover ``path``: match it, or a directory it is in (``docs`` is docs/**)?"""
    names = path.split("/")
    for pattern in patterns:
        reached = {0}            # how many of the path's names the glob's parts so far can stand for
        for part in glob_parts(pattern):
            reached = set(range(min(reached), len(names) + 1)) if part is None else {
                n + 1 for n in reached if n < len(names) and part.match(names[n])}
            if not reached:
                break
        if reached - {0}:
            return True
    return False


# -- guardrails: what an organization's owners, or the site's admins, let no agent do ------------------

AGENT_POLICY_FIELDS = ("deny", "requires_approval", "requires_approval_paths", "max_task_token_seconds",
                       "sender_constrained", "runtimes", "network_allowlist_max")
# A new installation's, until its admins set their own: no agent deletes a repository, changes a
# branch's protection, or manages who belongs (members, teams, collaborators), on anything not its own,
# whatever a grant says.
DEFAULT_SITE_AGENT_POLICY = {"deny": ["delegate_access", "delegate_team", "delete_repo", "manage_org", "manage_protection",
                                      "manage_team"]}


def agent_policies(store):
    """{"site": (who, policy), org id: (who, policy)}: the guardrails set (settings rows
    agent_policy:site and agent_policy:org:<id>), the site's default where none is."""
    def load():
        found = {"site": ("the site", DEFAULT_SITE_AGENT_POLICY)}
        for row in store.all("SELECT name, value FROM settings WHERE name LIKE 'agent_policy:%'"):
            scope = row["name"][len("agent_policy:"):]
            if scope == "site":
                found["site"] = ("the site", json.loads(row["value"]))
            else:
                org = account_by_id(store, int(scope[len("org:"):]))
                if org is not None:
                    found[org["id"]] = ("organization " + org["login"], json.loads(row["value"]))
        return found
    return store.cached(("agent-policies",), load)


def guardrails_over(store, org_ids):
    """[(who, policy)]: the site's guardrails, and those of each organization of ``org_ids`` that has set any."""
    policies = agent_policies(store)
    return [policies["site"]] + [policies[org_id] for org_id in sorted(org_ids) if org_id in policies]


def repo_org_ids(repo_row):
    """The organization that owns a repository, as a set of its id (empty for a user's)."""
    return {repo_row["owner_id"]} if repo_row["owner_kind"] == "org" else set()


def resource_org_ids(resource):
    """The organization a policy Resource belongs to, as a set of its id (empty for a user's)."""
    row = resource.row
    if resource.kind == "repo":
        return repo_org_ids(row)
    if resource.kind in ("org", "team"):
        return {row["org_id" if resource.kind == "team" else "id"]}
    if resource.kind == "account" and row["kind"] == "org":
        return {row["id"]}
    return set()


def guardrail_paths(store, repo_row):
    """The requires_approval_paths of the guardrails over a repository."""
    return [glob for _, policy in guardrails_over(store, repo_org_ids(repo_row))
            for glob in policy.get("requires_approval_paths", ())]


def paths_judged(store, principal, repo_row):
    """Whether a ref move by ``principal`` on ``repo_row`` is judged path by path (change_paths): its task
    grant has path rules, or it is an agent on what is not its own under guardrails that give paths to a
    human to approve."""
    user = principal.user
    return path_rules(principal.grant) is not None or (
        user is not None and user["kind"] == "agent" and repo_row["owner_id"] != user["id"] and
        bool(guardrail_paths(store, repo_row)))


def grant_org_ids(store, resource_names):
    """The organizations that own what a grant names (repo:org/name, credential:org/name)."""
    owners = {name.split(":", 1)[-1].split("/")[0] for name in resource_names}
    return {row["id"] for row in (store.one("SELECT id, kind FROM accounts WHERE login = ?", login) for login in owners)
            if row is not None and row["kind"] == "org"}


def within_allowlist(entry, allowed):
    """Is a network_allowlist entry inside ``allowed`` (the same entry, or under one's *. domain)?"""
    return any(allowlist_covers(a, allowlist_entry(entry)) for a in map(allowlist_entry, allowed))


def guardrail_excess(store, actions, constraints, resource_names):
    """Why a grant of ``actions`` with ``constraints`` on ``resource_names`` asks for more than the
    guardrails over those resources allow now, or None: refused when it is made, cut when they tighten."""
    for who, policy in guardrails_over(store, grant_org_ids(store, resource_names)):
        denied = sorted(set(actions) & set(policy.get("deny", ())))
        if denied:
            return "%s's agent policy lets no agent %s" % (who, ", ".join(denied))
        if policy.get("sender_constrained") and not constraints.get("sender_constrained"):
            return "%s's agent policy wants every task grant sender_constrained" % who
        runtimes, granted = policy.get("runtimes"), constraints.get("runtime") or []
        if runtimes and not (granted and all(any(fnmatch.fnmatchcase(g, p) for p in runtimes) for g in granted)):
            return "%s's agent policy wants a runtime constraint within %s" % (who, ", ".join(runtimes))
        hosts = policy.get("network_allowlist_max")
        outside = [entry for entry in constraints.get("network_allowlist", ()) if hosts is not None and
                   not within_allowlist(entry, hosts)]
        if outside:
            return "%s's agent policy allows calls to %s at most, not %s" % (who, ", ".join(hosts) or "none",
                                                                              ", ".join(outside))
    return None


DEFAULT_PORTS = {"https": 443, "http": 80}
MAX_DELEGATION_DEPTH = 3      # agents in a chain below the human: an orchestrator, its sub-agent, and one more


def allowlist_entry(entry):
    """(scheme, host pattern, port) of a network_allowlist entry: host (https, 443), host:port, a
    leading *. for any subdomain, and http:// spelled out for a plain-HTTP upstream."""
    scheme, _, rest = entry.rpartition("://") if "://" in entry else ("https", "", entry)
    host, _, port = rest.partition(":")
    return scheme, host.lower(), int(port) if port.isdigit() else DEFAULT_PORTS.get(scheme)


def allowlist_covers(allowed, origin):
    """Does an allowlist entry, (scheme, host pattern, port), cover ``origin``, (scheme, host, port)?"""
    scheme, host, port = allowed
    return (scheme, port) == (origin[0], origin[2]) and (host == origin[1] or host.startswith("*.") and
                                                         origin[1].endswith(host[1:]))


def outside_allowlist(allowlist, url):
    """Why ``url`` is outside a grant's network_allowlist (scheme, host and port must match one
    entry), or None when it is inside."""
    parts = urllib.parse.urlsplit(url)
    try:
        origin = (parts.scheme, (parts.hostname or "").lower(), parts.port or DEFAULT_PORTS.get(parts.scheme))
    except ValueError:
        return "%s is not a URL" % url[:200]
    if any(allowlist_covers(allowed, origin) for allowed in map(allowlist_entry, allowlist)):
        return None
    return "%s://%s:%s is not in its network_allowlist (%s)" % (origin + (", ".join(allowlist) or "empty",))


def read_of(action, spec, resource, context):
    """(kind, resource, what) that an allowed ``action`` reads, that decides where its task may write
    next, or None: a private repository's code and issues, a secret, a broker's answers."""
    if spec.sensitive:
        return "private", resource.name, "secret %s" % context.get("secret", "")
    if resource.kind == "credential":
        return "private", resource.name, "answers through the broker"
    if resource.kind == "repo" and not spec.mutation and resource.row["private"]:
        return "private", resource.name, "its code and issues"
    return None


def wider_audience(q):
    """Why a write by ``q`` reaches readers a task's private reads did not have, or None."""
    if q.resource.kind == "repo" and not q.resource.row["private"]:
        return "%s is public" % q.resource.name
    upstream = q.context.get("upstream")
    sinks = q.principal.grant["constraints"].get("private_sinks")
    if upstream and sinks is not None and outside_allowlist(sinks, upstream):
        return "%s is outside its private_sinks (%s)" % (upstream, ", ".join(sinks) or "none")
    return None


def task_reads(store, task_id):
    """What a task has read that decides where it may write (task_reads rows, oldest first)."""
    return store.all("SELECT * FROM task_reads WHERE grant_id = ? ORDER BY id", task_id)


def reads_named(store, task_id):
    """{kind: "what (resource); …"} of what a task has read, for a reason to name."""
    named = {}
    for row in task_reads(store, task_id):
        named[row["kind"]] = (named[row["kind"]] + "; " if row["kind"] in named else "") + "%s (%s)" % (
            row["what"], row["resource"])
    return named


def outlives(token_life, seconds):
    """Was a token, (issued at, expires at), minted to live longer than ``seconds`` (5 s for the clocks)?"""
    return bool(token_life and token_life[1]) and (
        parse_time(token_life[1]) - parse_time(token_life[0])).total_seconds() > seconds + 5
