"""REST: GitHub Apps, as agents. An App is GitHub's workload identity, and here it is an agent account
(login ``NAME[bot]``, GitHub's type Bot) that proves itself with a JWT signed by its private key.

- Registering one: by GitHub's manifest flow (a human confirms the manifest an App's server posts to
  ``/settings/apps/new``; the server trades the code for the App's id, private key and webhook secret at
  ``POST /app-manifests/{code}/conversions``), or by ``POST /api/ext/v1/apps`` for scripts. The server
  makes the RSA key, hands the private half over once and keeps the public half.
- Installing one is a delegation: a human who administers an account puts the App to work on its
  repositories (all of them, or those she selects) with the App's permissions. The installation is a task
  grant, delegator the installer, agent the App; an installation token (``POST
  /app/installations/{id}/access_tokens``, with the JWT) is a task token of that grant for an hour:
  the App's permissions, narrowed as asked, on the installation's repositories, never more than the
  installer may do at each request. The audit names the App acting for its installer.
- The App's webhook receives the events it subscribes to from the repositories its installations cover,
  each naming the installation, and the ``installation`` events.

GitHub's permissions are mapped to agentgit's actions (APP_PERMISSIONS). agentgit has one action for
reading a repository, so every installation token reads the code of its repositories (GitHub's
mandatory metadata permission, here with the contents).
"""

import html
import json
import re
import secrets
import urllib.parse

from agentgit.config import INSTALLATION_TASK_PREFIX, from_now, now
from agentgit.errors import HTTPError, invalid
from agentgit.crypto import rsa_private_key, seal, unseal
from agentgit.storage import insert, insert_row
from agentgit.tokens import issue_token, revoke, token_fingerprint, token_hash
from agentgit.accounts import REPO_SELECT, account_by_id, account_by_login, full_name, insert_account
from agentgit.policy import Resource
from agentgit.outbox import queue_delivery
from agentgit.routing import route
from agentgit.serializers import node_id, repo_json, user_json
from agentgit.lookups import find_account, one_or_404, signed_in
from agentgit.web import (csp_allowing_form_redirect_to, form_fields, hidden_input, html_page, redirect, signed_in_page,
                          web_route)
from agentgit.webhooks import (chain_of_request, checked_config, delivery_json, find_delivery, queue_redelivery,
                               sealed_secret, write_hook)
from agentgit.tasks import insert_task_grant

# GitHub's repository permissions: (what read gives, what write adds), as agentgit's actions. Every
# installation token reads its repositories and who works on them (metadata, which every App holds).
APP_PERMISSIONS = {
    "metadata": (("read_collaborators",), ()),
    "contents": ((), ("create_branch", "push_branch", "delete_branch", "write_objects", "write_release", "merge_pr")),
    "issues": ((), ("open_issue", "edit_issue", "comment", "edit_comment", "triage_issue", "manage_labels",
                    "pin_issue")),
    "pull_requests": ((), ("open_pr", "review_pr", "comment", "edit_comment", "triage_issue", "manage_labels")),
    "statuses": ((), ("write_status",)),
    "checks": ((), ("write_status",)),
    "deployments": ((), ("deploy",)),
    "actions": ((), ("run_workflow",)),
    "workflows": ((), ("manage_workflows",)),
    "administration": (("read_repo_settings", "read_deploy_keys"), ("admin_repo", "manage_protection")),
    "repository_hooks": ((), ("manage_hooks",)),
    "secrets": (("read_secret",), ("write_secret",)),
    "actions_variables": (("read_variables",), ("write_variables",)),
}
APP_LEVELS = ("read", "write")
# the events an App may subscribe to, and the permission each needs (GitHub's rule)
APP_EVENTS = {"push": "contents", "create": "contents", "delete": "contents", "release": "contents",
              "issues": "issues", "issue_comment": "issues", "pull_request": "pull_requests",
              "pull_request_review": "pull_requests", "check_run": "checks", "workflow_run": "actions",
              "workflow_job": "actions", "repository_dispatch": "contents"}
APP_NAME_MAX = 34                       # GitHub's
RESERVED_APP_SLUGS = ("github-actions",)     # github-actions[bot] is the account workflow job tokens act as
INSTALLATION_TOKEN_SECONDS = 3600
MANIFEST_CODE_SECONDS = 3600
MANIFEST_PURPOSE = b"app manifest"
# an installation lasts until it is uninstalled (its grant is revoked then); its tokens, an hour each
INSTALLATION_GRANT_EXPIRES = "9999-12-31T23:59:59Z"


# -- shapes ------------------------------------------------------------------------------------------

def github_app_json(app, row):
    """GitHub's App (an "integration")."""
    count = app.store.one("SELECT COUNT(*) AS n FROM app_installations WHERE app_id = ?", row["id"])["n"]
    return {"id": row["id"], "slug": row["slug"], "node_id": node_id("Integration", row["id"]),
            "client_id": row["client_id"], "owner": user_json(app, account_by_id(app.store, row["owner_id"])),
            "name": row["name"], "description": row["description"], "external_url": row["url"],
            "html_url": "%s/apps/%s" % (app.url, row["slug"]), "created_at": row["created_at"],
            "updated_at": row["updated_at"], "permissions": json.loads(row["permissions"]),
            "events": json.loads(row["events"]), "installations_count": count,
            "agentgit": {"agent": account_by_id(app.store, row["agent_id"])["login"]}}


def installation_json(app, row):
    """GitHub's installation, with an ``agentgit`` object naming its delegator and its task grant."""
    store = app.store
    account, gh_app = account_by_id(store, row["account_id"]), app_row(store, row["app_id"])
    grant = store.one("SELECT public_id, task FROM task_grants WHERE id = ?", row["grant_id"])
    return {"id": row["id"], "account": user_json(app, account), "repository_selection": row["repository_selection"],
            "access_tokens_url": "%s/app/installations/%d/access_tokens" % (app.api, row["id"]),
            "repositories_url": "%s/installation/repositories" % app.api,
            "html_url": "%s/settings/installations/%d" % (app.url, row["id"]), "app_id": gh_app["id"],
            "app_slug": gh_app["slug"], "client_id": gh_app["client_id"], "target_id": account["id"],
            "target_type": "Organization" if account["kind"] == "org" else "User",
            "permissions": json.loads(row["permissions"]), "events": json.loads(gh_app["events"]),
            "created_at": row["created_at"], "updated_at": row["updated_at"], "single_file_name": None,
            "has_multiple_single_files": False, "single_file_paths": [], "suspended_by": None,
            "suspended_at": row["suspended_at"],
            "agentgit": {"installer": "user:" + account_by_id(store, row["installer_id"])["login"],
                         "grant": grant["public_id"], "task": grant["task"]}}


def app_row(store, app_id):
    return store.one("SELECT * FROM apps WHERE id = ?", app_id)


# -- permissions and events, checked -----------------------------------------------------------------

def checked_permissions(permissions):
    """GitHub's permission map, each a known repository permission at read or write; metadata read always."""
    if not isinstance(permissions, dict) or not all(
            name in APP_PERMISSIONS and level in APP_LEVELS for name, level in permissions.items()):
        raise invalid("Integration", "default_permissions", message="permissions are %s, each read or write" %
                      ", ".join(sorted(APP_PERMISSIONS)))
    return dict(permissions, metadata=permissions.get("metadata", "read"))


def checked_app_events(events, permissions):
    if not isinstance(events, list) or not all(isinstance(e, str) and e in APP_EVENTS for e in events):
        raise invalid("Integration", "default_events", message="events are %s" % ", ".join(sorted(APP_EVENTS)))
    unpermitted = [e for e in events if APP_EVENTS[e] not in permissions and not (
        e == "issue_comment" and "pull_requests" in permissions)]
    if unpermitted:
        raise invalid("Integration", "default_events", message="the %s event needs the %s permission" % (
            unpermitted[0], APP_EVENTS[unpermitted[0]]))
    return sorted(set(events))


def permitted_actions(permissions):
    """The actions a permission map gives: reading always, and what each level adds."""
    actions = {"read_code", *APP_PERMISSIONS["metadata"][0]}
    for name, level in permissions.items():
        read, write = APP_PERMISSIONS[name]
        actions.update(read + (write if level == "write" else ()))
    return sorted(actions)


# -- registering an App --------------------------------------------------------------------------------

def register_github_app(req, owner, spec):
    """An App owned by ``owner`` (the signed-in human, or an organization she administers: authorized
    by the caller) from a manifest's fields: its agent account (bound to her), its public key and its
    webhook. Returns (its row, the credentials shown once: the private key, the webhook secret, the
    client secret)."""
    human = req.principal.user
    name = req.text_field(spec, "name", "Integration", required=True, limit=APP_NAME_MAX)
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    if not slug:
        raise invalid("Integration", "name", message="a name needs a letter or a digit")
    if slug in RESERVED_APP_SLUGS:
        raise invalid("Integration", "name", "already_exists", "Name is reserved")
    url = req.text_field(spec, "url", "Integration", limit=2048) or ""
    description = req.text_field(spec, "description", "Integration", limit=1000) or ""
    permissions = checked_permissions(req.field(spec, "default_permissions", dict, "Integration", default={}))
    events = checked_app_events(req.field(spec, "default_events", list, "Integration", default=[]), permissions)
    hook = req.field(spec, "hook_attributes", dict, "Integration", default={})
    hook_url = checked_config(req, {"url": hook["url"]}, creating=True)["url"] if hook.get("url") else None
    setup_url = req.text_field(spec, "setup_url", "Integration", limit=2048)
    public = req.field(spec, "public", bool, "Integration", default=False)
    pem, jwk = rsa_private_key()         # before the transaction: the standard library's takes a second
    webhook_secret = req.text_field(spec, "webhook_secret", "Integration", limit=1024) or secrets.token_hex(20)
    client_secret = secrets.token_hex(20)
    with req.transaction() as db:
        if db.execute("SELECT 1 FROM apps WHERE slug = ? OR name = ?", (slug, name)).fetchone() or \
                db.execute("SELECT 1 FROM accounts WHERE login = ?", (slug + "[bot]",)).fetchone():
            raise invalid("Integration", "name", "already_exists", "Name is already in use")
        stamp = now()
        agent_id = insert_account(db, slug + "[bot]", "agent", name=name, description=description)
        db.execute("INSERT INTO agent_bindings (agent_id, human_id, display_name, bound_at) VALUES (?, ?, ?, ?)",
                   (agent_id, human["id"], name, stamp))
        app_id = insert_row(db, "apps", {
            "agent_id": agent_id, "owner_id": owner["id"], "creator_id": human["id"], "slug": slug, "name": name,
            "description": description, "url": url, "client_id": "Iv1." + secrets.token_hex(8),
            "client_secret_hash": token_hash(client_secret), "public_keys": json.dumps([jwk]),
            "permissions": json.dumps(permissions), "events": json.dumps(events), "public": int(public),
            "setup_url": setup_url, "created_at": stamp, "updated_at": stamp})
        if hook_url:
            hook_id = insert(db, "INSERT INTO hooks (app_id, url, content_type, events, active, creator_id, created_at,"
                                 " updated_at) VALUES (?, ?, 'json', ?, ?, ?, ?, ?)",
                                 (app_id, hook_url, json.dumps(events), int(hook.get("active", True) is not False),
                                  human["id"], stamp, stamp))
            db.execute("UPDATE hooks SET secret_sealed = ? WHERE id = ?",
                       (sealed_secret(req.app, hook_id, webhook_secret), hook_id))
        req.effect("registered GitHub App %s (id %d, agent %s[bot]) owned by %s" % (name, app_id, slug, owner["login"]))
    return app_row(req.app.store, app_id), {"pem": pem, "webhook_secret": webhook_secret if hook_url else None,
                                            "client_secret": client_secret}


def app_owner(req, login):
    """The account an App will belong to, once registering one there is allowed (a human's own, an
    organization's admins')."""
    owner = find_account(req, login)
    req.authorize("register_app", Resource.account(owner))
    if owner["kind"] == "agent":
        raise invalid("Integration", "owner", message="an App belongs to a person or an organization")
    return owner


def app_with_credentials(app, row, credentials):
    """What GitHub's manifest conversion answers: the App, its client id and secret, webhook secret and key."""
    return dict(github_app_json(app, row), client_id=row["client_id"], **credentials)


@route("POST", "/api/ext/v1/apps")
def create_github_app(req):
    """Register an App for a script: the manifest's fields as JSON (``owner`` an organization you
    administer, or yourself); answers as the manifest conversion does, the private key included, once."""
    body = req.json()
    human = signed_in(req)
    owner_login = req.text_field(body, "owner", "Integration", limit=100) or human["login"]
    owner = app_owner(req, owner_login)
    row, credentials = register_github_app(req, owner, body)
    return 201, app_with_credentials(req.app, row, credentials)


MANIFEST_PAGES = ("/settings/apps/new", "/organizations/{org}/settings/apps/new")


@route("GET", MANIFEST_PAGES[0], "web", "session")
@route("POST", MANIFEST_PAGES[0], "web", "session")
@route("GET", MANIFEST_PAGES[1], "web", "session")
@route("POST", MANIFEST_PAGES[1], "web", "session")
def manifest_page(req, org=None):
    """GitHub's manifest flow, first step: an App's server sends the browser here with the manifest
    (a form POST from its own page, or the query). Nothing changes yet, so no CSRF token is asked for;
    the page shows what the App asks for, and the human's button confirms it (with one)."""
    fields = dict(req.query)
    if req.method == "POST":
        fields.update(form_fields(req))
    manifest, state = fields.get("manifest", ""), fields.get("state", "")
    if req.principal.user is None:       # back here after signing in, the manifest in the query
        here = req.raw_path.split("?")[0] + "?" + urllib.parse.urlencode({"manifest": manifest, "state": state})
        return redirect("/login?next=" + urllib.parse.quote(here, safe=""))
    spec = parsed_manifest(manifest)
    owner = find_account(req, org, kinds=("org",)) if org else req.principal.user
    permissions = spec.get("default_permissions") if isinstance(spec.get("default_permissions"), dict) else {}
    rows = "".join("<li>%s: %s</li>" % (html.escape(str(k)), html.escape(str(v))) for k, v in sorted(permissions.items()))
    body = ("<p>An App&rsquo;s server asks you to register this GitHub App, owned by <strong>%s</strong>. It will be "
            "an agent account acting only where someone installs it, never beyond what its installer may do.</p>"
            "<p>Name: <strong>%s</strong><br>Homepage: %s<br>Webhook: %s<br>Events: %s</p><p>Permissions it will ask "
            "for:</p><ul>%s</ul><form method=\"post\" action=\"/settings/apps/new/confirm\">%s%s%s%s<p><button>Create "
            "GitHub App for %s</button></p></form>") % (
        html.escape(owner["login"]), html.escape(str(spec.get("name", ""))), html.escape(str(spec.get("url", ""))),
        html.escape(str((spec.get("hook_attributes") or {}).get("url", "none"))),
        html.escape(", ".join(map(str, spec.get("default_events") or [])) or "none"), rows or "<li>none</li>",
        hidden_input("csrf", req.session["csrf"]), hidden_input("manifest", manifest), hidden_input("state", state),
        hidden_input("org", org or ""), html.escape(owner["login"]))
    redirect_url = str(spec.get("redirect_url") or "")
    return html_page("Register a GitHub App", body, headers={
        "Content-Security-Policy": csp_allowing_form_redirect_to(redirect_url)})


def parsed_manifest(text):
    try:
        spec = json.loads(text)
    except (ValueError, RecursionError):
        spec = None
    if not isinstance(spec, dict):
        raise HTTPError(422, "The manifest is not a JSON object")
    redirect_url = spec.get("redirect_url")
    if not isinstance(redirect_url, str) or urllib.parse.urlsplit(redirect_url).scheme not in ("http", "https"):
        raise HTTPError(422, "The manifest needs a redirect_url (http or https), where the code is sent")
    return spec


@web_route("POST", "/settings/apps/new/confirm")
def confirm_manifest(req):
    """The human's yes: the App is registered, and the browser goes back to the App's server with a code
    it trades (once, within an hour) for the App's credentials."""
    spec = parsed_manifest(req.form.get("manifest", ""))
    owner = app_owner(req, req.form.get("org") or req.principal.user["login"])
    row, credentials = register_github_app(req, owner, spec)
    code = secrets.token_hex(20)
    sealed = seal(req.app.key, MANIFEST_PURPOSE, json.dumps(credentials).encode(), token_hash(code).encode())
    with req.app.store.transaction() as db:
        db.execute("INSERT INTO app_manifest_codes (hash, app_id, sealed, expires_at) VALUES (?, ?, ?, ?)",
                   (token_hash(code), row["id"], sealed, from_now(MANIFEST_CODE_SECONDS)))
    target = spec["redirect_url"]
    query = urllib.parse.urlencode({"code": code, **({"state": req.form["state"]} if req.form.get("state") else {})})
    return redirect(target + ("&" if "?" in target else "?") + query)


@route("POST", "/api/v3/app-manifests/{code}/conversions", "rest", "none")
def convert_manifest(req, code):
    """The manifest flow's last step, for the App's server (no credentials: the code is one): the App,
    its private key, webhook secret and client secret. The code works once."""
    if not re.fullmatch(r"[0-9a-f]{40}", code):
        raise invalid("AppManifest", "code", message="a manifest code is the one the redirect brought")
    digest = token_hash(code)
    with req.app.store.transaction() as db:
        row = db.execute("SELECT * FROM app_manifest_codes WHERE hash = ? AND expires_at > ?", (digest, now())).fetchone()
        db.execute("DELETE FROM app_manifest_codes WHERE hash = ? OR expires_at <= ?", (digest, now()))
    if row is None:
        raise HTTPError(404, "Not Found")
    credentials = json.loads(unseal(req.app.key, MANIFEST_PURPOSE, row["sealed"], digest.encode()))
    gh_app = app_row(req.app.store, row["app_id"])
    req.record("convert_app_manifest", "app:" + gh_app["slug"], ["the manifest code, once"],
               "handed App %d's private key over" % gh_app["id"])
    return 201, app_with_credentials(req.app, gh_app, credentials)


@route("GET", "/api/v3/apps/{app_slug}")
def get_github_app(req, app_slug):
    """An App's public face, for anyone."""
    return github_app_json(req.app, one_or_404(req, "SELECT * FROM apps WHERE slug = ?", app_slug))


# -- installing an App: a delegation ---------------------------------------------------------------------

@route("POST", "/api/ext/v1/apps/{app_slug}/installations")
def install_github_app(req, app_slug):
    """A human installs an App on an account she administers (herself, or an organization): on all its
    repositories or the ones named. The installation is a task grant from her to the App."""
    body = req.json()
    human = signed_in(req)
    gh_app = one_or_404(req, "SELECT * FROM apps WHERE slug = ?", app_slug)
    row = install_on(req, gh_app, req.text_field(body, "account", "Installation", limit=100) or human["login"],
                     req.field(body, "repository_selection", str, "Installation", default="all"),
                     req.field(body, "repositories", list, "Installation", default=[]))
    return 201, installation_json(req.app, row)


def install_on(req, gh_app, login, selection, names):
    """The installation of ``gh_app`` on the account ``login``, once the caller may install there: on
    all its repositories, or (selected) on those ``names`` names."""
    target = find_account(req, login)
    if selection not in ("all", "selected") or (selection == "selected") != bool(names):
        raise invalid("Installation", "repository_selection", message="repository_selection is all, or selected "
                                                                      "with the repositories named")
    req.authorize("install_app", Resource.account(target))
    if target["kind"] == "agent":
        raise invalid("Installation", "account", message="an App is installed on a person or an organization")
    if not gh_app["public"] and gh_app["owner_id"] != target["id"]:
        raise HTTPError(403, "This App is private: it can be installed on its owner's account only")
    return create_installation(req, gh_app, target, selection, [owned_repo(req, target, name) for name in names])


@web_route("GET", "/apps/{app_slug}/installations/new")
def install_page(req, app_slug):
    """Where GitHub sends a person to install an App (probot's setup sends her here): what the App asks
    for, the accounts she administers, all repositories or the ones she ticks."""
    user = signed_in_page(req)
    gh_app = one_or_404(req, "SELECT * FROM apps WHERE slug = ?", app_slug)
    store = req.app.store
    accounts = [user] + store.all("SELECT a.* FROM org_members m JOIN accounts a ON a.id = m.org_id WHERE"
                                  " m.user_id = ? AND m.role = 'admin' ORDER BY a.login", user["id"])
    accounts = [a for a in accounts if gh_app["public"] or a["id"] == gh_app["owner_id"]]
    if not accounts:
        raise HTTPError(403, "This App is private: it can be installed on its owner's account only")
    repos = [full_name(r) for a in accounts for r in store.all(REPO_SELECT + " WHERE r.owner_id = ? ORDER BY r.name",
                                                                a["id"])]
    permissions = "".join("<li>%s: %s</li>" % (html.escape(k), html.escape(v)) for k, v in sorted(json.loads(
        gh_app["permissions"]).items()))
    options = "".join('<option value="%s">%s</option>' % ((html.escape(a["login"]),) * 2) for a in accounts)
    ticks = " ".join('<label><input type="checkbox" name="repository" value="%s"> %s</label>' % ((html.escape(r),) * 2)
                     for r in repos)
    body = ("<p><strong>%s</strong> will act on the repositories you choose with these permissions, as your "
            "delegate: never beyond what you may do yourself, and only while you may.</p><ul>%s</ul>"
            "<form method=\"post\" action=\"/apps/%s/installations/new\">%s<p><label>Install on <select name=\"account\">"
            "%s</select></label></p><p><label><input type=\"radio\" name=\"repository_selection\" value=\"all\" checked>"
            " All repositories</label> <label><input type=\"radio\" name=\"repository_selection\" value=\"selected\">"
            " Only select repositories:</label> %s</p><p><button>Install</button></p></form>") % (
        html.escape(gh_app["name"]), permissions, html.escape(gh_app["slug"]), hidden_input("csrf", req.session["csrf"]),
        options, ticks or "(none yet)")
    return html_page("Install %s" % gh_app["name"], body)


@web_route("POST", "/apps/{app_slug}/installations/new")
def install_submit(req, app_slug):
    """The person's Install: the installation, then the App's setup URL (GitHub's installation_id and
    setup_action), or the installation's page."""
    gh_app = one_or_404(req, "SELECT * FROM apps WHERE slug = ?", app_slug)
    account = req.form.get("account", "")
    selection = req.form.get("repository_selection", "all")
    names = [n.partition("/")[2] for n in req.form_values.get("repository", []) if n.partition("/")[0].lower() ==
             account.lower()] if selection == "selected" else []
    row = install_on(req, gh_app, account, selection, names)
    if gh_app["setup_url"]:
        target = gh_app["setup_url"]
        return redirect(target + ("&" if "?" in target else "?") + urllib.parse.urlencode(
            {"installation_id": row["id"], "setup_action": "install"}))
    return redirect("/settings/installations/%d" % row["id"])


@web_route("GET", "/settings/installations/{installation_id:int}")
def installation_page(req, installation_id):
    """One installation, for its installer and its account's administrators: what the App may do where,
    under which task grant."""
    row = one_or_404(req, "SELECT * FROM app_installations WHERE id = ?", installation_id)
    user = signed_in_page(req)
    if user["id"] != row["installer_id"] and not req.can("install_app", Resource.account(account_by_id(
            req.app.store, row["account_id"]))):
        raise HTTPError(404, "Not Found")
    shown = installation_json(req.app, row)
    repos = [full_name(r) for r in installation_repos(req.app.store.db, row)]
    body = ("<p>%s is installed on %s by %s, as task grant <a href=\"/settings/tasks/%s\">%s</a>.</p>"
            "<p>Repositories: %s</p><p>Permissions: %s</p>") % (
        html.escape(shown["app_slug"]), html.escape(shown["account"]["login"]), html.escape(shown["agentgit"][
            "installer"]), html.escape(shown["agentgit"]["grant"]), html.escape(shown["agentgit"]["grant"]),
        html.escape(", ".join(repos) or "none"), html.escape(", ".join("%s: %s" % kv for kv in sorted(
            shown["permissions"].items()))))
    return html_page("Installation %d" % row["id"], body)


def owned_repo(req, target, name):
    row = req.app.store.one(REPO_SELECT + " WHERE r.owner_id = ? AND r.name = ?", target["id"],
                            str(name).rpartition("/")[2])
    if row is None:
        raise invalid("Installation", "repositories", message="%s is not a repository of %s" % (name, target["login"]))
    return row


def create_installation(req, gh_app, target, selection, repos):
    human, store = req.principal.user, req.app.store
    permissions = json.loads(gh_app["permissions"])
    with req.transaction() as db:
        if db.execute("SELECT 1 FROM app_installations WHERE app_id = ? AND account_id = ?",
                      (gh_app["id"], target["id"])).fetchone():
            raise invalid("Installation", "account", "already_exists", "%s is installed on %s already" % (
                gh_app["name"], target["login"]))
        stamp = now()
        grant_id, _ = insert_task_grant(db, gh_app["agent_id"], human["id"], "task:installation", [],
                                        permitted_actions(permissions), {}, INSTALLATION_GRANT_EXPIRES)
        installation_id = insert_row(db, "app_installations", {
            "app_id": gh_app["id"], "account_id": target["id"], "installer_id": human["id"], "grant_id": grant_id,
            "repository_selection": selection, "permissions": json.dumps(permissions), "created_at": stamp,
            "updated_at": stamp})
        db.execute("UPDATE task_grants SET task = ? WHERE id = ?", (INSTALLATION_TASK_PREFIX + str(installation_id), grant_id))
        for repo in repos:
            db.execute("INSERT INTO app_installation_repos (installation_id, repo_id) VALUES (?, ?)"
                       " ON CONFLICT DO NOTHING",
                       (installation_id, repo["id"]))
        row = db.execute("SELECT * FROM app_installations WHERE id = ?", (installation_id,)).fetchone()
        covered = refresh_installation_grant(db, store, row)
        queue_installation_event(req, db, row, "created", covered)
        req.effect("installed App %s on %s (installation %d, %s repositories): a task grant to %s" % (
            gh_app["slug"], target["login"], installation_id, selection, account_by_id(store, gh_app["agent_id"])["login"]))
    return store.one("SELECT * FROM app_installations WHERE id = ?", installation_id)


def installation_repos(db, row):
    """The repositories an installation covers now: all its account's, or the selected ones."""
    if row["repository_selection"] == "all":
        return db.execute(REPO_SELECT + " WHERE r.owner_id = ? ORDER BY r.id", (row["account_id"],)).fetchall()
    return db.execute(REPO_SELECT + " JOIN app_installation_repos s ON s.repo_id = r.id WHERE s.installation_id = ?"
                      " ORDER BY r.id", (row["id"],)).fetchall()


def refresh_installation_grant(db, store, row):
    """The installation's grant names the repositories it covers now (a repository made, renamed or
    moved since is caught up here, before each token is minted). Returns them."""
    repos = installation_repos(db, row)
    db.execute("UPDATE task_grants SET resources = ? WHERE id = ?",
               (json.dumps(sorted("repo:" + full_name(r) for r in repos)), row["grant_id"]))
    return repos


def queue_installation_event(req, db, row, action, repos):
    """An ``installation`` event to the App's webhook (every App receives them, subscribed or not)."""
    hook = db.execute("SELECT id FROM hooks WHERE app_id = ? AND active = 1", (row["app_id"],)).fetchone()
    if hook is None:
        return
    payload = {"action": action, "installation": installation_json(req.app, row), "repositories": [
                   {"id": r["id"], "node_id": node_id("Repository", r["id"]), "name": r["name"],
                    "full_name": full_name(r), "private": bool(r["private"])} for r in repos],
               "requester": None, "sender": user_json(req.app, req.principal.user)}
    queue_delivery(db, hook["id"], "installation", action, None, {}, chain_of_request(req), json.dumps(payload))


@route("DELETE", "/api/ext/v1/installations/{installation_id:int}")
def uninstall_github_app(req, installation_id):
    """Its installer, or an administrator of the account it is on, takes an App away: its grant and
    every token of it revoked."""
    row = one_or_404(req, "SELECT * FROM app_installations WHERE id = ?", installation_id)
    user = signed_in(req)
    if user["id"] != row["installer_id"]:
        req.authorize("install_app", Resource.account(account_by_id(req.app.store, row["account_id"])))
    else:
        req.authorize("install_app", Resource.account(user))
    remove_installation(req, row)
    return 204, None


def remove_installation(req, row):
    with req.transaction() as db:
        repos = installation_repos(db, row)
        queue_installation_event(req, db, row, "deleted", repos)
        db.execute("UPDATE task_grants SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?", (now(), row["grant_id"]))
        count = revoke(db, "grant_id = ?", (row["grant_id"],))
        db.execute("DELETE FROM app_installations WHERE id = ?", (row["id"],))
        req.effect("uninstalled installation %d; revoked its grant and %d tokens" % (row["id"], count))
    req.app.deliveries_waiting.set()


# -- the App with its JWT ------------------------------------------------------------------------------

def calling_app(req, action="read_app"):
    """The App whose JWT signs this request, once ``action`` on its own account is allowed."""
    gh_app = jwt_app(req)
    req.authorize(action, Resource.account(req.principal.user))
    return gh_app


def jwt_app(req):
    if req.principal.token_kind != "app":
        raise HTTPError(401, "A JSON web token could not be decoded: this endpoint is for a GitHub App's JWT "
                             "(RS256, signed by its private key, iss its App ID)")
    return req.app.store.one("SELECT * FROM apps WHERE agent_id = ?", req.principal.user["id"])


def own_installation(req, gh_app, installation_id):
    return one_or_404(req, "SELECT * FROM app_installations WHERE id = ? AND app_id = ?", installation_id, gh_app["id"])


@route("GET", "/api/v3/app")
def get_authenticated_app(req):
    return github_app_json(req.app, calling_app(req))


@route("GET", "/api/v3/app/installations")
def list_app_installations(req):
    gh_app = calling_app(req)
    rows = req.app.store.all("SELECT * FROM app_installations WHERE app_id = ? ORDER BY id", gh_app["id"])
    return [installation_json(req.app, r) for r in req.paginate(rows)]


@route("GET", "/api/v3/app/installations/{installation_id:int}")
def get_app_installation(req, installation_id):
    return installation_json(req.app, own_installation(req, calling_app(req), installation_id))


@route("DELETE", "/api/v3/app/installations/{installation_id:int}")
def delete_app_installation(req, installation_id):
    """The App leaves an account: as its installer's uninstall does."""
    remove_installation(req, own_installation(req, calling_app(req, "manage_app"), installation_id))
    return 204, None


@route("GET", "/api/v3/repos/{owner}/{repo}/installation")
@route("GET", "/api/v3/orgs/{org}/installation")
@route("GET", "/api/v3/users/{username}/installation")
def find_installation(req, owner=None, repo=None, org=None, username=None):
    """The calling App's installation on a repository, organization or user; 404 alike where it has none
    and where there is nothing (an App learns nothing of what it is not installed on)."""
    gh_app, store = calling_app(req), req.app.store
    account = account_by_login(store, owner or org or username)
    row = store.one("SELECT * FROM app_installations WHERE app_id = ? AND account_id = ?", gh_app["id"],
                    account["id"] if account else None)
    if row is None or (repo is not None and not any(r["name"].lower() == repo.lower()
                                                    for r in installation_repos(store.db, row))):
        raise HTTPError(404, "Not Found")
    return installation_json(req.app, row)


@route("POST", "/api/v3/app/installations/{installation_id:int}/access_tokens")
def create_installation_token(req, installation_id):
    """An installation token: a task token of the installation's grant for an hour, narrowed to the
    ``repositories`` (names) or ``repository_ids`` and the ``permissions`` asked for, never wider."""
    body = req.json()
    gh_app, store = jwt_app(req), req.app.store
    row = own_installation(req, gh_app, installation_id)
    if row["suspended_at"]:
        raise HTTPError(403, "This installation has been suspended")
    grant = store.one("SELECT * FROM task_grants WHERE id = ?", row["grant_id"])
    req.authorize("manage_app", Resource.account(req.principal.user), grant=grant)     # a revoked grant mints nothing
    held = json.loads(row["permissions"])
    asked = req.field(body, "permissions", dict, "InstallationToken", default=held)
    if not all(name in held and level in APP_LEVELS and (level == "read" or held[name] == "write")
               for name, level in asked.items()):
        raise HTTPError(422, "The permissions requested are not granted to this installation.")
    names = req.field(body, "repositories", list, "InstallationToken", default=[])
    ids = req.field(body, "repository_ids", list, "InstallationToken", default=[])
    if not all(isinstance(n, str) for n in names) or not all(isinstance(i, int) for i in ids):
        raise invalid("InstallationToken", "repositories", message="repositories are names, repository_ids numbers")
    with req.transaction() as db:
        covered = refresh_installation_grant(db, store, row)
        if set(names) - {r["name"] for r in covered} or set(ids) - {r["id"] for r in covered}:
            raise HTTPError(422, "There is at least one repository that does not exist or is not accessible to the "
                                 "parent installation.")
        chosen = [r for r in covered if r["name"] in names or r["id"] in ids]
        audience = ["repo:" + full_name(r) for r in chosen] if names or ids else None
        expires_at = from_now(INSTALLATION_TOKEN_SECONDS)
        token, _ = issue_token(db, req.app.key, gh_app["agent_id"], "task", name="installation %d" % row["id"],
                               scopes=permitted_actions(asked), expires_at=expires_at, grant_id=row["grant_id"],
                               audience=audience)
        req.effect("installation token %s for installation %d (%s) until %s" % (
            token_fingerprint(token), row["id"], grant["public_id"], expires_at))
    out = {"token": token, "expires_at": expires_at, "permissions": asked,
           "repository_selection": row["repository_selection"] if audience is None else "selected"}
    if audience is not None or row["repository_selection"] == "selected":
        out["repositories"] = [repo_json(req.app, r) for r in (chosen if audience is not None else covered)]
    return 201, out


# -- what an installation token reads of itself ----------------------------------------------------------

def token_installation(req):
    """The installation whose token makes this request; 403 for any other caller."""
    grant = signed_in(req) and req.principal.grant
    row = req.app.store.one("SELECT * FROM app_installations WHERE grant_id = ?", grant["id"]) if grant else None
    if row is None:
        raise HTTPError(403, "This endpoint is for an installation token")
    return row


@route("GET", "/api/v3/installation/repositories")
def list_installation_repositories(req):
    row = token_installation(req)
    req.check("read_account", Resource.account(req.principal.user))
    repos = [r for r in installation_repos(req.app.store.db, row) if req.can("read_code", Resource.repo(r))]
    return {"total_count": len(repos), "repository_selection": row["repository_selection"],
            "repositories": [repo_json(req.app, r) for r in req.paginate(repos)]}


@route("DELETE", "/api/v3/installation/token")
def revoke_installation_token(req):
    """The token revokes itself (taking power away needs no permission)."""
    token_installation(req)
    with req.transaction() as db:
        db.execute("UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (now(), req.principal.token_id))
        req.record("revoke_token", "user:" + req.principal.login, ["a token may always revoke itself"],
                   "revoked installation token %s" % req.principal.fingerprint, db)
    return 204, None


# -- the App's webhook, with its JWT ---------------------------------------------------------------------

def app_hook(req, action="read_app"):
    gh_app = calling_app(req, action)
    return one_or_404(req, "SELECT * FROM hooks WHERE app_id = ?", gh_app["id"])


@route("GET", "/api/v3/app/hook/config")
def get_app_hook_config(req):
    hook = app_hook(req)
    config = {"content_type": hook["content_type"], "insecure_ssl": hook["insecure_ssl"], "url": hook["url"]}
    if hook["secret_sealed"]:
        config["secret"] = "********"
    return config


@route("PATCH", "/api/v3/app/hook/config")
def update_app_hook_config(req):
    """The App's webhook: its url (public addresses only), content type, secret and insecure_ssl."""
    fields = checked_config(req, req.json(), creating=False)
    hook = app_hook(req, "manage_app")
    with req.transaction() as db:
        write_hook(req, db, hook["id"], fields)
        req.effect("changed the App's hook config (%s)" % (", ".join(sorted(fields)) or "nothing"))
    return get_app_hook_config(req)


@route("GET", "/api/v3/app/hook/deliveries")
def list_app_hook_deliveries(req):
    hook = app_hook(req)
    rows = req.app.store.all("SELECT * FROM hook_deliveries WHERE hook_id = ? ORDER BY id DESC", hook["id"])
    return [dict(delivery_json(r), installation_id=json.loads(r["subject"]).get("installation"))
            for r in req.paginate(rows)]


@route("GET", "/api/v3/app/hook/deliveries/{delivery_id:int}")
def get_app_hook_delivery(req, delivery_id):
    return delivery_json(find_delivery(req, app_hook(req), delivery_id), detail=True)


@route("POST", "/api/v3/app/hook/deliveries/{delivery_id:int}/attempts")
def redeliver_app_hook_delivery(req, delivery_id):
    hook = app_hook(req, "manage_app")
    return queue_redelivery(req, hook, find_delivery(req, hook, delivery_id))
