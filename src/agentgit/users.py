"""REST: the API root, meta, rate limit and users."""

from agentgit.config import API_RATE_LIMIT, GHES_VERSION, __version__, rate_limit_reset
from agentgit.accounts import suspend_account
from agentgit.policy import Resource, SITE
from agentgit.routing import route
from agentgit.serializers import user_json
from agentgit.lookups import find_account, signed_in


# -- meta and users -----------------------------------------------------------------------------

ROOT_LINKS = {
    "current_user_url": "/user", "current_user_authorizations_html_url": "{web}/settings/connections/applications{/client_id}",
    "authorizations_url": "/authorizations", "code_search_url": "/search/code?q={query}{&page,per_page,sort,order}",
    "commit_search_url": "/search/commits?q={query}{&page,per_page,sort,order}", "emails_url": "/user/emails",
    "emojis_url": "/emojis", "events_url": "/events", "feeds_url": "/feeds", "followers_url": "/user/followers",
    "following_url": "/user/following{/target}", "gists_url": "/gists{/gist_id}", "hub_url": "/hub",
    "issue_search_url": "/search/issues?q={query}{&page,per_page,sort,order}", "issues_url": "/issues",
    "keys_url": "/user/keys", "label_search_url": "/search/labels?q={query}&repository_id={repository_id}{&page,per_page}",
    "notifications_url": "/notifications", "organization_url": "/orgs/{org}",
    "organization_repositories_url": "/orgs/{org}/repos{?type,page,per_page,sort}",
    "organization_teams_url": "/orgs/{org}/teams", "public_gists_url": "/gists/public", "rate_limit_url": "/rate_limit",
    "repository_url": "/repos/{owner}/{repo}", "repository_search_url": "/search/repositories?q={query}{&page,per_page,sort,order}",
    "current_user_repositories_url": "/user/repos{?type,page,per_page,sort}", "starred_url": "/user/starred{/owner}{/repo}",
    "starred_gists_url": "/gists/starred", "user_url": "/users/{user}", "user_organizations_url": "/user/orgs",
    "user_repositories_url": "/users/{user}/repos{?type,page,per_page,sort}",
    "user_search_url": "/search/users?q={query}{&page,per_page,sort,order}",
}


@route("GET", "/api/v3")
def get_root(req):
    """The API's front door; `gh auth status` reads X-OAuth-Scopes from it."""
    req.check("read_meta", SITE)
    return {name: link.replace("{web}", req.app.url) if link.startswith("{web}") else req.app.api + link
            for name, link in ROOT_LINKS.items()}


@route("GET", "/api/v3/meta")
def get_meta(req):
    """GHES's meta document; gh reads installed_version to know which features the server has. agentgit adds
    its version and whether workflow runs execute here."""
    req.check("read_meta", SITE)
    return {"verifiable_password_authentication": False, "installed_version": GHES_VERSION,
            "agentgit_version": __version__,
            # whether workflow runs execute here (serve --run-workflows, with act) or are records only
            "agentgit_workflow_runs": "act" if req.app.config.workflow_runner else "records"}


@route("GET", "/api/v3/rate_limit")
def rate_limit(req):
    """The API is not rate-limited (only agent registration and sign-in are), so every category is
    full. Clients that pace themselves by this endpoint (PyGithub, octokit's plugins) then never wait."""
    req.check("read_meta", SITE)
    bucket = {"limit": API_RATE_LIMIT, "remaining": API_RATE_LIMIT, "used": 0, "reset": rate_limit_reset()}
    return {"resources": {name: dict(bucket) for name in ("core", "search", "graphql")}, "rate": bucket}


@route("GET", "/api/v3/user")
def get_authenticated_user(req):
    user = signed_in(req)
    req.check("read_account", Resource.account(user))
    return user_json(req.app, user, detail=True, private=True)


@route("GET", "/api/v3/user/emails")
def list_own_emails(req):
    """The signed-in account's addresses: the one it gave (primary) and its noreply address, which is what
    agentgit writes into the commits it makes for it. Bots (renovate) take their git author from here."""
    user = signed_in(req)
    req.check("read_account", Resource.account(user))
    noreply = {"email": "%s@users.noreply.agentgit" % user["login"], "primary": not user["email"], "verified": True,
               "visibility": None}
    given = [{"email": user["email"], "primary": True, "verified": True, "visibility": "private"}] if user["email"] else []
    return req.paginate(given + [noreply])


@route("GET", "/api/v3/users/{login}")
def get_user(req, login):
    row = find_account(req, login)
    req.check("read_account", Resource.account(row))
    return user_json(req.app, row, detail=True)     # organizations too, with type "Organization", as GitHub does


@route("PUT", "/api/v3/users/{login}/suspended")
def suspend_user(req, login):
    row = find_account(req, login, kinds=("human", "agent"))
    req.authorize("suspend_user", SITE)
    with req.transaction() as db:
        req.effect(suspend_account(db, row, True))
    return 204, None


@route("DELETE", "/api/v3/users/{login}/suspended")
def unsuspend_user(req, login):
    row = find_account(req, login, kinds=("human", "agent"))
    req.authorize("suspend_user", SITE)
    with req.transaction() as db:
        req.effect(suspend_account(db, row, False))
    return 204, None
