"""REST: organizations, memberships and teams."""

import re

from agentgit.config import LOGIN_RE, TEAM_NAME_MAX, now
from agentgit.errors import HTTPError, invalid
from agentgit.storage import insert, update_row
from agentgit.accounts import REPO_SELECT, account_by_id, insert_account, permission_of_org_member
from agentgit.policy import PERMISSION_ALIASES, Resource, SITE
from agentgit.routing import route
from agentgit.serializers import org_json, repo_json, standing_access, team_json, user_json
from agentgit.lookups import find_account, find_repo, signed_in, sort_repos, visible_repos
from agentgit.repositories import create_repo_for


# -- organizations and teams --------------------------------------------------------------------

def find_org(req, login, action="read_org"):
    org = find_account(req, login, kinds=("org",))
    req.authorize(action, Resource.account(org))
    return org


@route("POST", "/api/ext/v1/user/orgs")
def create_org(req):
    """A new organization owned by the caller."""
    body = req.json()
    user = signed_in(req)
    login = req.field(body, "login", str, "Organization", required=True)
    if not LOGIN_RE.match(login):
        raise invalid("Organization", "login", message="login may use letters, digits and single hyphens, "
                                                         "up to 39 characters")
    name = req.field(body, "name", str, "Organization")
    req.authorize("create_org", SITE)
    with req.transaction() as db:
        if db.execute("SELECT 1 FROM accounts WHERE login = ?", (login,)).fetchone():
            raise invalid("Organization", "login", "already_exists", "login %s is taken" % login)
        org_id = insert_account(db, login, "org", name=name)
        db.execute("INSERT INTO org_members (org_id, user_id, role) VALUES (?, ?, 'admin')", (org_id, user["id"]))
        req.effect("created org %s with admin %s" % (login, user["login"]))
    return 201, org_json(req.app, account_by_id(req.app.store, org_id), detail=True)


@route("GET", "/api/v3/orgs/{org}")
def get_org(req, org):
    return org_json(req.app, find_org(req, org), detail=True)


@route("GET", "/api/v3/orgs/{org}/issue-types")
def list_issue_types(req, org):
    """github.com's issue types: agentgit has none, so every organization's list is empty."""
    find_org(req, org)
    return []


@route("PATCH", "/api/v3/orgs/{org}")
def update_org(req, org):
    body = req.json()
    row = find_org(req, org, "manage_org")
    fields = {}
    for key in ("name", "description", "email"):
        value = req.field(body, key, str, "Organization")
        if value is not None:
            fields[key] = value
    base = req.field(body, "default_repository_permission", str, "Organization")
    if base is not None:
        if base not in ("none", "read", "write", "admin"):
            raise invalid("Organization", "default_repository_permission")
        fields["base_permission"] = base
    with req.transaction() as db:
        if fields:
            fields["updated_at"] = now()
            update_row(db, "accounts", fields, "id", row["id"])
        req.effect("updated org %s: %s" % (row["login"], ", ".join(sorted(fields))))
    return org_json(req.app, account_by_id(req.app.store, row["id"]), detail=True)


@route("GET", "/api/v3/user/orgs")
def list_own_orgs(req):
    user = signed_in(req)
    req.check("read_account", Resource.account(user))
    rows = req.app.store.all("SELECT a.* FROM accounts a JOIN org_members m ON m.org_id = a.id"
                             " WHERE m.user_id = ? ORDER BY a.login", user["id"])
    return [org_json(req.app, row) for row in req.paginate(rows)]


@route("GET", "/api/v3/orgs/{org}/repos")
def list_org_repos(req, org):
    row = find_org(req, org)
    rows = req.app.store.all(REPO_SELECT + " WHERE r.owner_id = ?", row["id"])
    kind = req.query.get("type", "all")
    pairs = [(r, p) for r, p in visible_repos(req, rows)
             if kind in ("all", "member") or (kind == "private") == bool(r["private"])]
    return sort_repos(req, pairs, default_sort="created")


@route("POST", "/api/v3/orgs/{org}/repos")
def create_org_repo(req, org):
    return create_repo_for(req, find_account(req, org, kinds=("org",)))


@route("GET", "/api/v3/orgs/{org}/members")
def list_org_members(req, org):
    row = find_org(req, org)
    if not req.can("read_org_private", Resource.account(row)):
        return []    # membership is private to members here (GitHub shows 'public' members; we have none)
    role = req.query.get("role", "all")
    rows = req.app.store.all("SELECT a.*, m.role FROM accounts a JOIN org_members m ON m.user_id = a.id"
                             " WHERE m.org_id = ? ORDER BY a.login", row["id"])
    return [user_json(req.app, r) for r in req.paginate([r for r in rows if role in ("all", r["role"])])]


def membership_json(app, org, user, role):
    return {"url": "%s/orgs/%s/memberships/%s" % (app.api, org["login"], user["login"]), "state": "active",
            "role": role, "organization_url": "%s/orgs/%s" % (app.api, org["login"]),
            "organization": org_json(app, org), "user": user_json(app, user)}


@route("GET", "/api/v3/orgs/{org}/memberships/{login}")
def get_org_membership(req, org, login):
    row = find_org(req, org, "read_org_private")
    user = find_account(req, login, kinds=("human", "agent"))
    role = permission_of_org_member(req.app.store, row["id"], user["id"])
    if role is None:
        raise HTTPError(404, "Not Found")
    return membership_json(req.app, row, user, role)


@route("PUT", "/api/v3/orgs/{org}/memberships/{login}")
def set_org_membership(req, org, login):
    body = req.json()
    row = find_org(req, org, "manage_org")
    user = find_account(req, login, kinds=("human", "agent"))
    role = req.field(body, "role", str, "Membership", default="member")
    if role not in ("admin", "member"):
        raise invalid("Membership", "role", message="role must be admin or member")
    with req.transaction() as db:
        db.execute("INSERT INTO org_members (org_id, user_id, role) VALUES (?, ?, ?)"
                   " ON CONFLICT (org_id, user_id) DO UPDATE SET role = excluded.role, granted_by = NULL",
                   (row["id"], user["id"], role))
        req.effect("%s is %s of org %s" % (user["login"], role, row["login"]))
    return membership_json(req.app, row, user, role)


@route("DELETE", "/api/v3/orgs/{org}/memberships/{login}")
@route("DELETE", "/api/v3/orgs/{org}/members/{login}")
def remove_org_member(req, org, login):
    row = find_org(req, org, "manage_org")
    user = find_account(req, login, kinds=("human", "agent"))
    with req.transaction() as db:
        admins = db.execute("SELECT user_id FROM org_members WHERE org_id = ? AND role = 'admin'",
                            (row["id"],)).fetchall()
        if [a["user_id"] for a in admins] == [user["id"]]:
            raise invalid("Membership", "login", "custom", "an organization keeps at least one admin")
        db.execute("DELETE FROM team_members WHERE user_id = ? AND team_id IN (SELECT id FROM teams WHERE org_id = ?)",
                   (user["id"], row["id"]))
        db.execute("DELETE FROM org_members WHERE org_id = ? AND user_id = ?", (row["id"], user["id"]))
        req.effect("%s left org %s" % (user["login"], row["login"]))
    return 204, None


def find_team(req, org, slug, action="read_team"):
    org_row = find_account(req, org, kinds=("org",))
    team = req.app.store.one("SELECT * FROM teams WHERE org_id = ? AND slug = ?", org_row["id"], slug)
    if team is None:
        raise HTTPError(404, "Not Found")
    req.authorize(action, Resource.team(team, org_row["login"]))
    return org_row, team


def team_slug(name):
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


@route("GET", "/api/v3/orgs/{org}/teams")
def list_teams(req, org):
    row = find_org(req, org, "read_org_private")
    teams = req.app.store.all("SELECT * FROM teams WHERE org_id = ? ORDER BY name", row["id"])
    visible = [t for t in teams if req.can("read_team", Resource.team(t, row["login"]))]
    return [team_json(req.app, t, row) for t in req.paginate(visible)]


@route("POST", "/api/v3/orgs/{org}/teams")
def create_team(req, org):
    body = req.json()
    row = find_org(req, org, "manage_org")
    name = req.field(body, "name", str, "Team", required=True)
    slug = team_slug(name)
    if not slug or len(name) > TEAM_NAME_MAX:
        raise invalid("Team", "name", message="name needs a letter or digit and at most 255 characters")
    privacy = req.field(body, "privacy", str, "Team", default="closed")
    if privacy not in ("secret", "closed"):
        raise invalid("Team", "privacy", message="privacy must be secret or closed")
    description = req.field(body, "description", str, "Team")
    with req.transaction() as db:
        if db.execute("SELECT 1 FROM teams WHERE org_id = ? AND slug = ?", (row["id"], slug)).fetchone():
            raise invalid("Team", "name", "already_exists", "team %s already exists" % slug)
        stamp = now()
        team_id = insert(db, "INSERT INTO teams (org_id, slug, name, description, privacy, created_at, updated_at)"
                             " VALUES (?, ?, ?, ?, ?, ?, ?)",
                             (row["id"], slug, name, description, privacy, stamp, stamp))
        db.execute("INSERT INTO team_members (team_id, user_id, role) VALUES (?, ?, 'maintainer')",
                   (team_id, req.principal.user["id"]))
        req.effect("created team %s/%s" % (row["login"], slug))
    team = req.app.store.one("SELECT * FROM teams WHERE id = ?", team_id)
    return 201, team_json(req.app, team, row, detail=True)


@route("GET", "/api/v3/orgs/{org}/teams/{slug}")
def get_team(req, org, slug):
    org_row, team = find_team(req, org, slug)
    return team_json(req.app, team, org_row, detail=True)


@route("PATCH", "/api/v3/orgs/{org}/teams/{slug}")
def update_team(req, org, slug):
    body = req.json()
    org_row, team = find_team(req, org, slug, "manage_team")
    fields = {}
    for key in ("name", "description", "privacy"):
        value = req.field(body, key, str, "Team")
        if value is not None:
            fields[key] = value
    if fields.get("privacy", "closed") not in ("secret", "closed"):
        raise invalid("Team", "privacy", message="privacy must be secret or closed")
    if "name" in fields:
        fields["slug"] = team_slug(fields["name"])
        if not fields["slug"] or len(fields["name"]) > TEAM_NAME_MAX:
            raise invalid("Team", "name")
    with req.transaction() as db:
        if "slug" in fields and db.execute("SELECT 1 FROM teams WHERE org_id = ? AND slug = ? AND id != ?",
                                           (org_row["id"], fields["slug"], team["id"])).fetchone():
            raise invalid("Team", "name", "already_exists", "team %s already exists" % fields["slug"])
        if fields:
            fields["updated_at"] = now()
            update_row(db, "teams", fields, "id", team["id"])
        req.effect("updated team %s/%s" % (org_row["login"], team["slug"]))
    team = req.app.store.one("SELECT * FROM teams WHERE id = ?", team["id"])
    return team_json(req.app, team, org_row, detail=True)


@route("DELETE", "/api/v3/orgs/{org}/teams/{slug}")
def delete_team(req, org, slug):
    org_row, team = find_team(req, org, slug, "manage_team")
    with req.transaction() as db:
        db.execute("DELETE FROM teams WHERE id = ?", (team["id"],))
        req.effect("deleted team %s/%s" % (org_row["login"], team["slug"]))
    return 204, None


@route("GET", "/api/v3/orgs/{org}/teams/{slug}/members")
def list_team_members(req, org, slug):
    _, team = find_team(req, org, slug)
    role = req.query.get("role", "all")
    rows = req.app.store.all("SELECT a.*, tm.role, g.login AS granted_via FROM accounts a JOIN team_members tm"
                             " ON tm.user_id = a.id LEFT JOIN accounts g ON g.id = tm.granted_by"
                             " WHERE tm.team_id = ? ORDER BY a.login", team["id"])
    return [dict(user_json(req.app, r), granted_via=r["granted_via"], **({"standing_access": standing_access(
        req.app, r)} if r["kind"] == "agent" else {})) for r in req.paginate([r for r in rows if role in (
            "all", r["role"])])]


def team_membership_json(app, org, team, user, role):
    return {"url": "%s/orgs/%s/teams/%s/memberships/%s" % (app.api, org["login"], team["slug"], user["login"]),
            "role": role, "state": "active"}


@route("GET", "/api/v3/orgs/{org}/teams/{slug}/memberships/{login}")
def get_team_membership(req, org, slug, login):
    org_row, team = find_team(req, org, slug)
    user = find_account(req, login, kinds=("human", "agent"))
    member = req.app.store.one("SELECT role FROM team_members WHERE team_id = ? AND user_id = ?",
                               team["id"], user["id"])
    if member is None:
        raise HTTPError(404, "Not Found")
    return team_membership_json(req.app, org_row, team, user, member["role"])


@route("PUT", "/api/v3/orgs/{org}/teams/{slug}/memberships/{login}")
def set_team_membership(req, org, slug, login):
    body = req.json()
    org_row, team = find_team(req, org, slug, "manage_team")
    user = find_account(req, login, kinds=("human", "agent"))
    role = req.field(body, "role", str, "Team", default="member")
    if role not in ("member", "maintainer"):
        raise invalid("Team", "role", message="role must be member or maintainer")
    with req.transaction() as db:
        if permission_of_org_member(req.app.store, org_row["id"], user["id"]) is None:
            raise invalid("Team", "login", "custom", "%s is not a member of %s; add them to the organization first"
                          % (user["login"], org_row["login"]))
        db.execute("INSERT INTO team_members (team_id, user_id, role) VALUES (?, ?, ?)"
                   " ON CONFLICT (team_id, user_id) DO UPDATE SET role = excluded.role, granted_by = NULL",
                   (team["id"], user["id"], role))
        req.effect("%s is %s of team %s/%s" % (user["login"], role, org_row["login"], team["slug"]))
    return team_membership_json(req.app, org_row, team, user, role)


@route("DELETE", "/api/v3/orgs/{org}/teams/{slug}/memberships/{login}")
def remove_team_membership(req, org, slug, login):
    org_row, team = find_team(req, org, slug, "manage_team")
    user = find_account(req, login, kinds=("human", "agent"))
    with req.transaction() as db:
        db.execute("DELETE FROM team_members WHERE team_id = ? AND user_id = ?", (team["id"], user["id"]))
        req.effect("%s left team %s/%s" % (user["login"], org_row["login"], team["slug"]))
    return 204, None


@route("GET", "/api/v3/orgs/{org}/teams/{slug}/repos")
def list_team_repos(req, org, slug):
    _, team = find_team(req, org, slug)
    rows = req.app.store.all(REPO_SELECT + " JOIN team_repos tr ON tr.repo_id = r.id WHERE tr.team_id = ? ORDER BY r.name",
                             team["id"])
    return [repo_json(req.app, r) for r in req.paginate([r for r in rows if req.can("read_code", Resource.repo(r))])]


def team_repo(req, org, slug, owner, repo, action):
    org_row, team = find_team(req, org, slug, action)
    row = find_repo(req, owner, repo, "admin_repo" if action == "manage_team" else "read_code")
    if row["owner_id"] != org_row["id"]:
        raise invalid("Team", "repo", "custom", "only repositories of %s can be added to its teams" % org_row["login"])
    return org_row, team, row


@route("GET", "/api/v3/orgs/{org}/teams/{slug}/repos/{owner}/{repo}")
def check_team_repo(req, org, slug, owner, repo):
    _, team, row = team_repo(req, org, slug, owner, repo, "read_team")
    grant = req.app.store.one("SELECT permission FROM team_repos WHERE team_id = ? AND repo_id = ?",
                              team["id"], row["id"])
    if grant is None:
        raise HTTPError(404, "Not Found")
    if "repository+json" in (req.headers.get("Accept") or ""):
        return repo_json(req.app, row, grant["permission"])
    return 204, None


@route("PUT", "/api/v3/orgs/{org}/teams/{slug}/repos/{owner}/{repo}")
def add_team_repo(req, org, slug, owner, repo):
    body = req.json()
    org_row, team, row = team_repo(req, org, slug, owner, repo, "manage_team")
    permission = PERMISSION_ALIASES.get(req.field(body, "permission", str, "Team", default="push"))
    if permission is None:
        raise invalid("Team", "permission", message="permission must be pull, triage, push, maintain or admin")
    with req.transaction() as db:
        db.execute("INSERT INTO team_repos (team_id, repo_id, permission) VALUES (?, ?, ?)"
                   " ON CONFLICT (team_id, repo_id) DO UPDATE SET permission = excluded.permission",
                   (team["id"], row["id"], permission))
        req.effect("team %s/%s holds %s on %s" % (org_row["login"], team["slug"], permission, row["name"]))
    return 204, None


@route("DELETE", "/api/v3/orgs/{org}/teams/{slug}/repos/{owner}/{repo}")
def remove_team_repo(req, org, slug, owner, repo):
    org_row, team, row = team_repo(req, org, slug, owner, repo, "manage_team")
    with req.transaction() as db:
        db.execute("DELETE FROM team_repos WHERE team_id = ? AND repo_id = ?", (team["id"], row["id"]))
        req.effect("team %s/%s no longer holds %s" % (org_row["login"], team["slug"], row["name"]))
    return 204, None
