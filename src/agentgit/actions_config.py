"""REST: Actions configuration: environments, and secrets and variables at three levels.

What workflows would be configured with: environments, and the secrets and variables of a repository,
of one of its environments, and of an organization (for all its repositories, its private ones, or
those selected).

Clients seal a secret to the server's public key (libsodium's crypto_box_seal), so its value never
reaches agentgit in the clear and no endpoint ever returns it: names and dates are readable, values
never are. Variables are configuration in the clear. Each level has its own tables; one set of
handlers serves all three, told which by a Scope.
"""

import base64
import dataclasses
import hashlib
import hmac
import json
import re

from agentgit.config import now
from agentgit.errors import HTTPError, invalid
from agentgit.crypto import sealed_box_open, x25519_public_key
from agentgit.accounts import REPO_SELECT, account_by_id, full_name, repo_by_id
from agentgit.policy import Resource
from agentgit.routing import route
from agentgit.serializers import node_id, repo_json, user_json
from agentgit.lookups import find_repo
from agentgit.orgs import find_org

SECRET_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,199}")
ENVIRONMENT_NAME_RE = re.compile(r"[^\x00-\x1f/,:;*?\"<>|\\]{1,255}")
VARIABLE_MAX_BYTES = 48 * 1024
ORG_VISIBILITIES = ("all", "private", "selected")


def secrets_private_key(app):
    return hmac.new(app.key, b"actions secrets", hashlib.sha256).digest()


def secrets_public_key(app):
    """(key_id, base64 public key): one X25519 key for the server, derived from its key."""
    public = x25519_public_key(secrets_private_key(app))
    return str(int.from_bytes(hashlib.sha256(public).digest()[:6], "big")), base64.b64encode(public).decode()


def secrets_of_repo(app, repo_row):
    """{name: value} of the Actions secrets a run of the repository is given: its own, and its organization's
    that reach it (all, private ones for a private repository, selected), opened from their sealed boxes."""
    store = app.store
    rows = []
    if repo_row["owner_kind"] == "org":
        rows += store.all("SELECT name, encrypted_value FROM org_secrets s WHERE org_id = ? AND (visibility = 'all' OR"
                          " (visibility = 'private' AND ?) OR (visibility = 'selected' AND EXISTS (SELECT 1 FROM"
                          " org_selected_repos r WHERE r.org_id = s.org_id AND r.kind = 'secrets' AND r.name = s.name"
                          " AND r.repo_id = ?)))", repo_row["owner_id"], repo_row["private"], repo_row["id"])
    rows += store.all("SELECT name, encrypted_value FROM secrets WHERE repo_id = ?", repo_row["id"])
    return opened_secrets(app, rows)      # (the repository's own last: a name it shares with its organization)


def secrets_of_environment(app, environment_id):
    """{name: value} of an environment's Actions secrets, opened."""
    return opened_secrets(app, app.store.all("SELECT name, encrypted_value FROM environment_secrets WHERE"
                                             " environment_id = ?", environment_id))


def opened_secrets(app, rows):
    """{name: value} of each row's secret opened from its sealed box, a later row's in place of an earlier
    one of the same name; a box that does not open (sealed to another key) leaves its name out."""
    out = {}
    for row in rows:
        try:
            out[row["name"]] = sealed_box_open(secrets_private_key(app), base64.b64decode(row["encrypted_value"])
                                               ).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            out.pop(row["name"], None)
    return out


# -- where secrets and variables live -----------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Scope:
    """A repository (tables secrets, variables), an environment (environment_*) or an organization
    (org_*): its tables' owner column and id, what decide() decides on and is told, and how actions
    and rows are named there."""
    prefix: str              # "", "environment_" or "org_"
    key: str                 # repo_id, environment_id, org_id
    owner_id: int
    resource: Resource
    context: dict
    url: str                 # the API URL of its secrets/variables, without the kind

    def table(self, kind):
        return self.prefix + kind

    def action(self, verb, kind):
        """read_secret, write_variables, read_org_secrets, ... : what the caller must be allowed."""
        if self.prefix == "org_":
            return "%s_org_%s" % (verb, kind)
        return "%s_%s" % (verb, "secret" if kind == "secrets" else "variables")


def repo_scope(req, owner, repo):
    row = find_repo(req, owner, repo)
    return Scope("", "repo_id", row["id"], Resource.repo(row), {}, "%s/repos/%s/actions" % (req.app.api, full_name(row)))


def environment_scope(req, owner, repo, environment):
    row, env = find_environment(req, owner, repo, environment)
    return Scope("environment_", "environment_id", env["id"], Resource.repo(row), {"environment": env["name"]},
                 "%s/repos/%s/environments/%s" % (req.app.api, full_name(row), env["name"]))


def org_scope(req, org):
    row = find_org(req, org)
    return Scope("org_", "org_id", row["id"], Resource.account(row), {},
                 "%s/orgs/%s/actions" % (req.app.api, row["login"]))


def item_json(scope, kind, row):
    out = {"name": row["name"], "created_at": row["created_at"], "updated_at": row["updated_at"]}
    if kind == "variables":
        out["value"] = row["value"]
    if scope.prefix == "org_":
        out["visibility"] = row["visibility"]
        if row["visibility"] == "selected":
            out["selected_repositories_url"] = "%s/%s/%s/repositories" % (scope.url, kind, row["name"])
    return out


def item_name(name, resource):
    """A secret's or variable's name as GitHub stores it (upper case), or 422."""
    if not isinstance(name, str) or not SECRET_NAME_RE.fullmatch(name) or name.upper().startswith("GITHUB_"):
        raise invalid(resource, "name", message="names are letters, digits and _, not starting with a digit"
                                                " or GITHUB_")
    return name.upper()


def find_item(req, scope, kind, name):
    row = req.app.store.one("SELECT * FROM %s WHERE %s = ? AND name = ?" % (scope.table(kind), scope.key),
                            scope.owner_id, name.upper())
    if row is None:
        raise HTTPError(404, "Not Found")
    return row


def list_items(req, scope, kind):
    req.authorize(scope.action("read", kind), scope.resource, **scope.context)
    rows = req.app.store.all("SELECT * FROM %s WHERE %s = ? ORDER BY name" % (scope.table(kind), scope.key),
                             scope.owner_id)
    return {"total_count": len(rows), kind: [item_json(scope, kind, r) for r in req.paginate(rows)]}


def get_item(req, scope, kind, name):
    req.authorize(scope.action("read", kind), scope.resource, **dict(scope.context, secret=name.upper()))
    return item_json(scope, kind, find_item(req, scope, kind, name))


def delete_item(req, scope, kind, name):
    req.authorize(scope.action("write", kind), scope.resource, **scope.context)
    with req.transaction() as db:
        if not db.execute("DELETE FROM %s WHERE %s = ? AND name = ?" % (scope.table(kind), scope.key),
                          (scope.owner_id, name.upper())).rowcount:
            raise HTTPError(404, "Not Found")
        if scope.prefix == "org_":
            db.execute("DELETE FROM org_selected_repos WHERE org_id = ? AND kind = ? AND name = ?",
                       (scope.owner_id, kind, name.upper()))
        req.effect("deleted %s %s" % (kind[:-1], name.upper()))
    return 204, None


def sealed_value(req, body):
    """The sealed box a client sends for a secret, checked for shape (opened only for a run: secrets_of_repo)."""
    value = req.field(body, "encrypted_value", str, "Secret", required=True)
    key_id = req.field(body, "key_id", str, "Secret", required=True)
    if key_id != secrets_public_key(req.app)[0]:
        raise invalid("Secret", "key_id", message="seal the value to the key from actions/secrets/public-key")
    try:
        sealed = base64.b64decode(value, validate=True)
    except ValueError:
        sealed = b""
    if not 48 <= len(sealed) <= 48 + 48 * 1024:        # a sealed box: 32-byte key, 16-byte tag, the value
        raise invalid("Secret", "encrypted_value", message="a base64 libsodium sealed box of at most 48 KB")
    return value


def variable_value(req, body, required):
    value = req.field(body, "value", str, "Variable", required=required)
    if value is not None and len(value.encode()) > VARIABLE_MAX_BYTES:
        raise invalid("Variable", "value", message="a value is at most 48 KB")
    return value


def org_visibility(req, scope, kind, body, required):
    """(visibility, selected repository ids or None) for an organization's secret or variable."""
    if scope.prefix != "org_":
        return None, None
    visibility = req.field(body, "visibility", str, kind[:-1].title(), required=required)
    if visibility is not None and visibility not in ORG_VISIBILITIES:
        raise invalid(kind[:-1].title(), "visibility", message="visibility is all, private or selected")
    ids = req.field(body, "selected_repository_ids", list, kind[:-1].title())
    return visibility, None if ids is None else org_repo_ids(req, scope, ids)


def org_repo_ids(req, scope, ids):
    """The ids, checked to be repositories of the organization."""
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids) or len(ids) > 1000:
        raise invalid("Repository", "selected_repository_ids", message="a list of at most 1000 repository ids")
    found = {r["id"] for r in req.app.store.all("SELECT id FROM repos WHERE owner_id = ?", scope.owner_id)}
    if set(ids) - found:
        raise invalid("Repository", "selected_repository_ids", "invalid",
                      "not repositories of this organization: %s" % sorted(set(ids) - found)[:10])
    return sorted(set(ids))


def write_item(db, scope, kind, name, columns, visibility, selected):
    """Insert or update one row; True when it is new. Its repository selection replaced when given."""
    stamp = now()
    columns = dict(columns, updated_at=stamp, **({"visibility": visibility} if visibility else {}))
    table = scope.table(kind)
    if db.execute("SELECT 1 FROM %s WHERE %s = ? AND name = ?" % (table, scope.key), (scope.owner_id, name)).fetchone():
        db.execute("UPDATE %s SET %s WHERE %s = ? AND name = ?" % (table, ", ".join("%s = ?" % c for c in columns),
                                                                   scope.key), (*columns.values(), scope.owner_id, name))
        created = False
    else:
        columns.update({scope.key: scope.owner_id, "name": name, "created_at": stamp})
        db.execute("INSERT INTO %s (%s) VALUES (%s)" % (table, ", ".join(columns), ", ".join("?" * len(columns))),
                   tuple(columns.values()))
        created = True
    if selected is not None:
        replace_selection(db, scope, kind, name, selected)
    return created


def replace_selection(db, scope, kind, name, ids):
    db.execute("DELETE FROM org_selected_repos WHERE org_id = ? AND kind = ? AND name = ?", (scope.owner_id, kind, name))
    for repo_id in ids:
        db.execute("INSERT INTO org_selected_repos (org_id, kind, name, repo_id) VALUES (?, ?, ?, ?)",
                   (scope.owner_id, kind, name, repo_id))


def put_secret(req, scope, name):
    req.authorize(scope.action("write", "secrets"), scope.resource, **scope.context)
    body = req.json()
    name = item_name(name, "Secret")
    value = sealed_value(req, body)
    visibility, selected = org_visibility(req, scope, "secrets", body, required=False)
    with req.transaction() as db:
        exists = db.execute("SELECT 1 FROM %s WHERE %s = ? AND name = ?" % (scope.table("secrets"), scope.key),
                            (scope.owner_id, name)).fetchone()
        if scope.prefix == "org_" and not exists and visibility is None:
            raise invalid("Secret", "visibility", "missing_field", "a new organization secret needs a visibility")
        created = write_item(db, scope, "secrets", name, {"encrypted_value": value}, visibility, selected)
        req.effect("%s secret %s" % ("created" if created else "updated", name))
    return (201, {}) if created else (204, None)


def create_variable(req, scope):
    req.authorize(scope.action("write", "variables"), scope.resource, **scope.context)
    body = req.json()
    name = item_name(req.field(body, "name", str, "Variable", required=True), "Variable")
    value = variable_value(req, body, required=True)
    visibility, selected = org_visibility(req, scope, "variables", body, required=True)
    with req.transaction() as db:
        if db.execute("SELECT 1 FROM %s WHERE %s = ? AND name = ?" % (scope.table("variables"), scope.key),
                      (scope.owner_id, name)).fetchone():
            raise HTTPError(409, "Already exists - Variable already exists")
        write_item(db, scope, "variables", name, {"value": value}, visibility, selected)
        req.effect("created variable %s" % name)
    return 201, {}


def update_variable(req, scope, name):
    req.authorize(scope.action("write", "variables"), scope.resource, **scope.context)
    body = req.json()
    new_name = item_name(req.field(body, "name", str, "Variable", default=name), "Variable")
    value = variable_value(req, body, required=False)
    visibility, selected = org_visibility(req, scope, "variables", body, required=False)
    table = scope.table("variables")
    with req.transaction() as db:
        found = db.execute("SELECT * FROM %s WHERE %s = ? AND name = ?" % (table, scope.key),
                           (scope.owner_id, name.upper())).fetchone()
        if found is None:
            raise HTTPError(404, "Not Found")
        if new_name != found["name"] and db.execute("SELECT 1 FROM %s WHERE %s = ? AND name = ?" % (table, scope.key),
                                                    (scope.owner_id, new_name)).fetchone():
            raise HTTPError(409, "Already exists - Variable already exists")
        db.execute("UPDATE %s SET name = ? WHERE %s = ? AND name = ?" % (table, scope.key),
                   (new_name, scope.owner_id, found["name"]))
        if scope.prefix == "org_":
            db.execute("UPDATE org_selected_repos SET name = ? WHERE org_id = ? AND kind = 'variables' AND name = ?",
                       (new_name, scope.owner_id, found["name"]))
        write_item(db, scope, "variables", new_name, {"value": found["value"] if value is None else value},
                   visibility, selected)
        req.effect("updated variable %s" % new_name)
    return 204, None


def public_key(req, scope):
    req.authorize("read_code" if scope.prefix != "org_" else "read_org", scope.resource)
    key_id, key = secrets_public_key(req.app)
    return {"key_id": key_id, "key": key}


# -- the routes: each at the three levels, the scope told by the path -----------------------------

REPO = "/api/v3/repos/{owner}/{repo}/actions"
ENV = "/api/v3/repos/{owner}/{repo}/environments/{environment}"
ENV_BY_ID = "/api/v3/repositories/{repository_id:int}/environments/{environment}"
ORG = "/api/v3/orgs/{org}/actions"


def scope_of(req, where):
    """(the Scope the path's parameters name, the kind it is about: secrets or variables, the segment
    after the scope's own, at a fixed place: an environment or owner named "secrets" is no kind)."""
    parts = req.raw_path.strip("/").split("/")
    if "repository_id" in where:        # GitHub's older /repositories/{id}/environments/{name}/..., which gh uses
        row = repo_by_id(req.app.store, int(where["repository_id"]))
        if row is None:
            raise HTTPError(404, "Not Found")
        scope, at = environment_scope(req, row["owner_login"], row["name"], where["environment"]), 6
    elif "environment" in where:
        scope, at = environment_scope(req, where["owner"], where["repo"], where["environment"]), 7
    elif "org" in where:
        scope, at = org_scope(req, where["org"]), 5
    else:
        scope, at = repo_scope(req, where["owner"], where["repo"]), 6
    return scope, parts[at]


@route("GET", REPO + "/secrets/public-key")
@route("GET", ENV + "/secrets/public-key")
@route("GET", ENV_BY_ID + "/secrets/public-key")
@route("GET", ORG + "/secrets/public-key")
def get_public_key(req, **where):
    return public_key(req, scope_of(req, where)[0])


@route("GET", REPO + "/secrets")
@route("GET", REPO + "/variables")
@route("GET", ENV + "/secrets")
@route("GET", ENV_BY_ID + "/secrets")
@route("GET", ENV + "/variables")
@route("GET", ENV_BY_ID + "/variables")
@route("GET", ORG + "/secrets")
@route("GET", ORG + "/variables")
def list_secrets_or_variables(req, **where):
    return list_items(req, *scope_of(req, where))


@route("GET", REPO + "/secrets/{name}")
@route("GET", REPO + "/variables/{name}")
@route("GET", ENV + "/secrets/{name}")
@route("GET", ENV_BY_ID + "/secrets/{name}")
@route("GET", ENV + "/variables/{name}")
@route("GET", ENV_BY_ID + "/variables/{name}")
@route("GET", ORG + "/secrets/{name}")
@route("GET", ORG + "/variables/{name}")
def get_secret_or_variable(req, name, **where):
    return get_item(req, *scope_of(req, where), name)


@route("DELETE", REPO + "/secrets/{name}")
@route("DELETE", REPO + "/variables/{name}")
@route("DELETE", ENV + "/secrets/{name}")
@route("DELETE", ENV_BY_ID + "/secrets/{name}")
@route("DELETE", ENV + "/variables/{name}")
@route("DELETE", ENV_BY_ID + "/variables/{name}")
@route("DELETE", ORG + "/secrets/{name}")
@route("DELETE", ORG + "/variables/{name}")
def delete_secret_or_variable(req, name, **where):
    return delete_item(req, *scope_of(req, where), name)


@route("PUT", REPO + "/secrets/{name}")
@route("PUT", ENV + "/secrets/{name}")
@route("PUT", ENV_BY_ID + "/secrets/{name}")
@route("PUT", ORG + "/secrets/{name}")
def put_secret_route(req, name, **where):
    return put_secret(req, scope_of(req, where)[0], name)


@route("POST", REPO + "/variables")
@route("POST", ENV + "/variables")
@route("POST", ENV_BY_ID + "/variables")
@route("POST", ORG + "/variables")
def create_variable_route(req, **where):
    return create_variable(req, scope_of(req, where)[0])


@route("PATCH", REPO + "/variables/{name}")
@route("PATCH", ENV + "/variables/{name}")
@route("PATCH", ENV_BY_ID + "/variables/{name}")
@route("PATCH", ORG + "/variables/{name}")
def update_variable_route(req, name, **where):
    return update_variable(req, scope_of(req, where)[0], name)


# -- an organization's selection of repositories ------------------------------------------------

def selected_item(req, org, name, write):
    scope, kind = scope_of(req, {"org": org})
    req.authorize(scope.action("write" if write else "read", kind), scope.resource)
    row = find_item(req, scope, kind, name)
    if write and row["visibility"] != "selected":
        raise HTTPError(409, "The visibility of %s is %s: set it to selected first" % (row["name"], row["visibility"]))
    return scope, kind, row


@route("GET", ORG + "/secrets/{name}/repositories")
@route("GET", ORG + "/variables/{name}/repositories")
def list_selected_repos(req, org, name):
    scope, kind, row = selected_item(req, org, name, write=False)
    repos = req.app.store.all(REPO_SELECT + " JOIN org_selected_repos s ON s.repo_id = r.id WHERE s.org_id = ? AND"
                              " s.kind = ? AND s.name = ? ORDER BY r.name", scope.owner_id, kind, row["name"])
    return {"total_count": len(repos), "repositories": [repo_json(req.app, r) for r in req.paginate(repos)]}


@route("PUT", ORG + "/secrets/{name}/repositories")
@route("PUT", ORG + "/variables/{name}/repositories")
def set_selected_repos(req, org, name):
    scope, kind, row = selected_item(req, org, name, write=True)
    ids = org_repo_ids(req, scope, req.field(req.json(), "selected_repository_ids", list, "Repository",
                                             required=True))
    with req.transaction() as db:
        replace_selection(db, scope, kind, row["name"], ids)
        req.effect("%s %s: selected repositories %s" % (kind[:-1], row["name"], ids))
    return 204, None


@route("PUT", ORG + "/secrets/{name}/repositories/{repository_id:int}")
@route("PUT", ORG + "/variables/{name}/repositories/{repository_id:int}")
@route("DELETE", ORG + "/secrets/{name}/repositories/{repository_id:int}")
@route("DELETE", ORG + "/variables/{name}/repositories/{repository_id:int}")
def change_selected_repo(req, org, name, repository_id):
    scope, kind, row = selected_item(req, org, name, write=True)
    repo_id = org_repo_ids(req, scope, [int(repository_id)])[0]
    with req.transaction() as db:
        if req.method == "PUT":
            db.execute("INSERT INTO org_selected_repos (org_id, kind, name, repo_id) VALUES (?, ?, ?, ?)"
                       " ON CONFLICT DO NOTHING",
                       (scope.owner_id, kind, row["name"], repo_id))
        else:
            db.execute("DELETE FROM org_selected_repos WHERE org_id = ? AND kind = ? AND name = ? AND repo_id = ?",
                       (scope.owner_id, kind, row["name"], repo_id))
        req.effect("%s %s: repository %d %s" % (kind[:-1], row["name"], repo_id,
                                                 "selected" if req.method == "PUT" else "no longer selected"))
    return 204, None


# -- environments -------------------------------------------------------------------------------
# Nothing deploys here, so an environment is its name, its secrets and variables, and the protection
# rules a deployment would wait on, kept and shown as GitHub shows them.

MAX_WAIT_TIMER = 43200


def find_environment(req, owner, repo, name):
    row = find_repo(req, owner, repo)
    env = req.app.store.one("SELECT * FROM environments WHERE repo_id = ? AND name = ?", row["id"], name)
    if env is None:
        raise HTTPError(404, "Not Found")
    return row, env


def environment_json(req, row, env):
    url = "%s/repos/%s/environments/%s" % (req.app.api, full_name(row), env["name"])
    rules, settings = [], json.loads(env["settings"])
    if settings.get("wait_timer"):
        rules.append({"id": env["id"] * 10 + 1, "node_id": node_id("WaitTimer", env["id"]), "type": "wait_timer",
                      "wait_timer": settings["wait_timer"]})
    if settings.get("reviewers"):
        rules.append({"id": env["id"] * 10 + 2, "node_id": node_id("RequiredReviewers", env["id"]),
                      "type": "required_reviewers", "prevent_self_review": settings.get("prevent_self_review", False),
                      "reviewers": [{"type": "User", "reviewer": user_json(req.app, account_by_id(req.app.store, uid))}
                                    for uid in settings["reviewers"] if account_by_id(req.app.store, uid)]})
    return {"id": env["id"], "node_id": node_id("Environment", env["id"]), "name": env["name"], "url": url,
            "html_url": "%s/%s/deployments/activity_log?environments_filter=%s" % (req.app.url, full_name(row),
                                                                                   env["name"]),
            "created_at": env["created_at"], "updated_at": env["updated_at"], "protection_rules": rules,
            "deployment_branch_policy": settings.get("deployment_branch_policy")}


@route("GET", "/api/v3/repos/{owner}/{repo}/environments")
def list_environments(req, owner, repo):
    row = find_repo(req, owner, repo)
    envs = req.app.store.all("SELECT * FROM environments WHERE repo_id = ? ORDER BY name", row["id"])
    return {"total_count": len(envs), "environments": [environment_json(req, row, e) for e in req.paginate(envs)]}


@route("GET", "/api/v3/repos/{owner}/{repo}/environments/{environment}")
def get_environment(req, owner, repo, environment):
    return environment_json(req, *find_environment(req, owner, repo, environment))


def environment_settings(req, row, body):
    """wait_timer, reviewers (users who may push, by id), prevent_self_review and
    deployment_branch_policy from a PUT body, checked."""
    settings = {"wait_timer": req.field(body, "wait_timer", int, "Environment", default=0),
                "prevent_self_review": req.field(body, "prevent_self_review", bool, "Environment", default=False)}
    if not 0 <= settings["wait_timer"] <= MAX_WAIT_TIMER:
        raise invalid("Environment", "wait_timer", message="wait_timer is 0 to %d minutes" % MAX_WAIT_TIMER)
    reviewers = req.field(body, "reviewers", list, "Environment", default=[]) or []
    if len(reviewers) > 6 or not all(isinstance(r, dict) and r.get("type") == "User" and isinstance(r.get("id"), int)
                                     for r in reviewers):
        raise invalid("Environment", "reviewers", message="at most 6 reviewers, each {\"type\": \"User\", \"id\": N}"
                                                          " (team reviewers are not served)")
    settings["reviewers"] = []
    for reviewer in reviewers:
        if account_by_id(req.app.store, reviewer["id"]) is None:
            raise invalid("Environment", "reviewers", "invalid", "no user with id %d" % reviewer["id"])
        settings["reviewers"].append(reviewer["id"])
    policy = req.field(body, "deployment_branch_policy", dict, "Environment")
    if policy is not None:
        protected, custom = policy.get("protected_branches"), policy.get("custom_branch_policies")
        if not isinstance(protected, bool) or not isinstance(custom, bool) or protected == custom:
            raise invalid("Environment", "deployment_branch_policy",
                          message="protected_branches and custom_branch_policies: one true, the other false")
        settings["deployment_branch_policy"] = {"protected_branches": protected, "custom_branch_policies": custom}
    return settings


@route("PUT", "/api/v3/repos/{owner}/{repo}/environments/{environment}")
def put_environment(req, owner, repo, environment):
    row = find_repo(req, owner, repo, "admin_repo", environment=environment)
    if not ENVIRONMENT_NAME_RE.fullmatch(environment) or environment.strip() != environment:
        raise invalid("Environment", "name", message="an environment name is 1 to 255 characters, without / , : ;"
                                                     " * ? \" < > | \\ or control characters")
    settings = json.dumps(environment_settings(req, row, req.json()))
    stamp = now()
    with req.transaction() as db:
        created = db.execute("INSERT INTO environments (repo_id, name, settings, created_at, updated_at)"
                             " VALUES (?, ?, ?, ?, ?)"
                             " ON CONFLICT DO NOTHING", (row["id"], environment, settings, stamp, stamp)).rowcount
        if not created:
            db.execute("UPDATE environments SET settings = ?, updated_at = ? WHERE repo_id = ? AND name = ?",
                       (settings, stamp, row["id"], environment))
        req.effect("%s environment %s" % ("created" if created else "updated", environment))
    return environment_json(req, *find_environment(req, owner, repo, environment))


@route("DELETE", "/api/v3/repos/{owner}/{repo}/environments/{environment}")
def delete_environment(req, owner, repo, environment):
    row = find_repo(req, owner, repo, "admin_repo", environment=environment)
    with req.transaction() as db:
        if not db.execute("DELETE FROM environments WHERE repo_id = ? AND name = ?", (row["id"], environment)).rowcount:
            raise HTTPError(404, "Not Found")
        req.effect("deleted environment %s with its secrets and variables" % environment)
    return 204, None


# -- what a workflow's token holds where it says nothing ------------------------------------------

@route("GET", REPO + "/permissions/workflow")
def get_workflow_permissions(req, owner, repo):
    """GitHub's default for a job token: read (the restricted default, contents and metadata read) or
    write, where a workflow's permissions: say nothing; and whether a job token may approve a pull
    request."""
    row = find_repo(req, owner, repo, "read_repo_settings")
    return {"default_workflow_permissions": row["workflow_permissions"],
            "can_approve_pull_request_reviews": bool(row["actions_can_approve"])}


@route("PUT", REPO + "/permissions/workflow")
def set_workflow_permissions(req, owner, repo):
    body = req.json()
    default = req.field(body, "default_workflow_permissions", str, "WorkflowPermissions")
    approve = req.field(body, "can_approve_pull_request_reviews", bool, "WorkflowPermissions")
    if default not in (None, "read", "write"):
        raise invalid("WorkflowPermissions", "default_workflow_permissions", message="read or write")
    row = find_repo(req, owner, repo, "admin_repo")
    default = row["workflow_permissions"] if default is None else default
    approve = bool(row["actions_can_approve"]) if approve is None else approve
    with req.transaction() as db:
        db.execute("UPDATE repos SET workflow_permissions = ?, actions_can_approve = ? WHERE id = ?",
                   (default, int(approve), row["id"]))
        req.effect("job tokens hold %s where a workflow says nothing, and %s approve pull requests" % (
            default, "may" if approve else "may not"))
    return 204, None
