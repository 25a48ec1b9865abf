"""Serializers: one JSON shape per resource, shared by REST, GraphQL and the web pages."""

import base64
import datetime
import json
import urllib.parse

from agentgit.accounts import account_by_id, account_by_login, full_name
from agentgit.policy import RANK


# -- serializers: one per resource, shared by every surface ------------------------------------

def encode_json(body):
    return json.dumps(body, separators=(",", ":")).encode()


def node_id(kind, ident):
    return base64.b64encode(("%s:%s" % (kind, ident)).encode()).decode()


def user_json(app, row, detail=False, private=False):
    """GitHub's simple-user; ``detail`` adds public-user fields, ``private`` the private-user ones."""
    login, api = row["login"], app.api
    out = {
        "login": login, "id": row["id"], "node_id": node_id("User", row["id"]),
        "avatar_url": "%s/avatars/%s" % (app.url, login), "gravatar_id": "",
        "url": "%s/users/%s" % (api, login), "html_url": "%s/%s" % (app.url, login),
        "followers_url": "%s/users/%s/followers" % (api, login),
        "following_url": "%s/users/%s/following{/other_user}" % (api, login),
        "gists_url": "%s/users/%s/gists{/gist_id}" % (api, login),
        "starred_url": "%s/users/%s/starred{/owner}{/repo}" % (api, login),
        "subscriptions_url": "%s/users/%s/subscriptions" % (api, login),
        "organizations_url": "%s/users/%s/orgs" % (api, login),
        "repos_url": "%s/users/%s/repos" % (api, login),
        "events_url": "%s/users/%s/events{/privacy}" % (api, login),
        "received_events_url": "%s/users/%s/received_events" % (api, login),
        # an App's agent account is GitHub's Bot (its login, NAME[bot], is one no one can register)
        "type": "Organization" if row["kind"] == "org" else "Bot" if login.endswith("[bot]") else "User",
        "user_kind": row["kind"] if row["kind"] != "org" else None,
        "site_admin": bool(row["site_admin"]),
    }
    if detail:
        counts = app.store.one("SELECT COUNT(*) FILTER (WHERE private = 0) AS public, COUNT(*) FILTER (WHERE private = 1)"
                               " AS private FROM repos"
                               " WHERE owner_id = ?", row["id"])
        out.update({
            "name": row["name"], "company": None, "blog": "", "location": None, "email": row["email"],
            "hireable": None, "bio": row["description"], "twitter_username": None,
            "public_repos": counts["public"] or 0, "public_gists": 0, "followers": 0, "following": 0,
            "created_at": row["created_at"], "updated_at": row["updated_at"],
            "suspended_at": row["suspended_at"],
        })
    if private:
        out.update({"private_gists": 0, "total_private_repos": counts["private"] or 0,
                    "owned_private_repos": counts["private"] or 0, "disk_usage": 0, "collaborators": 0,
                    "two_factor_authentication": False,
                    "plan": {"name": "free", "space": 976562499, "private_repos": 10000, "collaborators": 0}})
    return out


REPO_URL_TEMPLATES = (
    "archive_url:{archive_format}{/ref}", "assignees_url:assignees{/user}", "blobs_url:git/blobs{/sha}",
    "branches_url:branches{/branch}", "collaborators_url:collaborators{/collaborator}",
    "comments_url:comments{/number}", "commits_url:commits{/sha}", "compare_url:compare/{base}...{head}",
    "contents_url:contents/{+path}", "contributors_url:contributors", "deployments_url:deployments",
    "downloads_url:downloads", "events_url:events", "forks_url:forks", "git_commits_url:git/commits{/sha}",
    "git_refs_url:git/refs{/sha}", "git_tags_url:git/tags{/sha}", "hooks_url:hooks",
    "issue_comment_url:issues/comments{/number}", "issue_events_url:issues/events{/number}",
    "issues_url:issues{/number}", "keys_url:keys{/key_id}", "labels_url:labels{/name}",
    "languages_url:languages", "merges_url:merges", "milestones_url:milestones{/number}",
    "notifications_url:notifications{?since,all,participating}", "pulls_url:pulls{/number}",
    "releases_url:releases{/id}", "stargazers_url:stargazers", "statuses_url:statuses/{sha}",
    "subscribers_url:subscribers", "subscription_url:subscription", "tags_url:tags",
    "teams_url:teams", "trees_url:git/trees{/sha}")


def standing_access(app, user, level=None):
    """agentgit's word, for an agent, on what a grant (of ``level``; None: whatever it gives) lets it do
    outside a task: read at most where the installation caps it (a change needs a task grant), else
    the grant's. None for a human."""
    if user["kind"] != "agent":
        return None
    if app.agent_standing_access == "read" and (level is None or RANK[level] > RANK["read"]):
        return "read (outside a task; a change needs a task grant)"
    return level or "as granted"


def user_json_by_id(app, user_id):
    row = account_by_id(app.store, user_id) if user_id is not None else None
    return user_json(app, row) if row is not None else None


def repo_json(app, row, permission=None):
    """GitHub's full-repository. ``row`` is a repos row joined with its owner (see REPO_SELECT)."""
    name = full_name(row)
    api_url = "%s/repos/%s" % (app.api, name)
    # every repository body counts its forks (pull requests carry two bodies): once per commit generation
    forks = app.store.cached(("forks", row["id"]), lambda: app.store.one(
        "SELECT COUNT(*) AS n FROM repos WHERE parent_id = ?", row["id"])["n"])
    out = {
        "id": row["id"], "node_id": node_id("Repository", row["id"]), "name": row["name"],
        "full_name": name, "private": bool(row["private"]),
        "owner": user_json(app, {"id": row["owner_id"], "login": row["owner_login"], "kind": row["owner_kind"],
                                 "site_admin": row["owner_site_admin"]}),
        "html_url": "%s/%s" % (app.url, name), "description": row["description"],
        "fork": row["parent_id"] is not None,
        "url": api_url,
    }
    for template in REPO_URL_TEMPLATES:
        key, _, suffix = template.partition(":")
        out[key] = "%s/%s" % (api_url, suffix) if suffix[0] != "{" else api_url + suffix
    host = urllib.parse.urlsplit(app.url).netloc
    out.update({
        "clone_url": "%s/%s.git" % (app.url, name), "git_url": "git://%s/%s.git" % (host, name),
        "ssh_url": "git@%s:%s.git" % (host.split(":")[0], name), "svn_url": "%s/%s" % (app.url, name),
        "mirror_url": None, "homepage": row["homepage"], "language": None, "size": 0,
        "forks": forks, "forks_count": forks, "stargazers_count": 0, "watchers": 0, "watchers_count": 0,
        "open_issues": 0, "open_issues_count": 0, "network_count": 0, "subscribers_count": 0,
        "default_branch": row["default_branch"], "visibility": "private" if row["private"] else "public",
        "has_issues": True, "has_projects": False, "has_wiki": False, "has_pages": False,
        "has_downloads": True, "has_discussions": False, "archived": bool(row["archived"]), "disabled": False,
        "is_template": False, "allow_forking": True, "web_commit_signoff_required": False, "topics": json.loads(row["topics"]),
        "license": None, "pushed_at": row["pushed_at"] or row["created_at"],
        "created_at": row["created_at"], "updated_at": row["updated_at"],
    })
    if permission is not None:
        rank = RANK[permission]
        out["permissions"] = {"admin": rank >= RANK["admin"], "maintain": rank >= RANK["maintain"],
                              "push": rank >= RANK["write"], "triage": rank >= RANK["triage"],
                              "pull": rank >= RANK["read"]}
    return out


def org_json(app, row, detail=False):
    login, api = row["login"], app.api
    out = {
        "login": login, "id": row["id"], "node_id": node_id("Organization", row["id"]),
        "url": "%s/orgs/%s" % (api, login), "repos_url": "%s/orgs/%s/repos" % (api, login),
        "events_url": "%s/orgs/%s/events" % (api, login), "hooks_url": "%s/orgs/%s/hooks" % (api, login),
        "issues_url": "%s/orgs/%s/issues" % (api, login),
        "members_url": "%s/orgs/%s/members{/member}" % (api, login),
        "public_members_url": "%s/orgs/%s/public_members{/member}" % (api, login),
        "avatar_url": "%s/avatars/%s" % (app.url, login), "description": row["description"],
    }
    if detail:
        public = app.store.one("SELECT COUNT(*) AS n FROM repos WHERE owner_id = ? AND private = 0", row["id"])
        out.update({
            "name": row["name"], "email": row["email"] or "", "has_organization_projects": False, "has_repository_projects": False,
            "public_repos": public["n"], "public_gists": 0, "followers": 0, "following": 0,
            "html_url": "%s/%s" % (app.url, login), "type": "Organization",
            "created_at": row["created_at"], "updated_at": row["updated_at"], "archived_at": None,
            "default_repository_permission": row["base_permission"],
        })
    return out


def team_json(app, row, org, detail=False):
    base = "%s/orgs/%s/teams/%s" % (app.api, org["login"], row["slug"])
    out = {
        "id": row["id"], "node_id": node_id("Team", row["id"]), "url": base,
        "html_url": "%s/orgs/%s/teams/%s" % (app.url, org["login"], row["slug"]), "name": row["name"],
        "slug": row["slug"], "description": row["description"], "privacy": row["privacy"],
        "notification_setting": "notifications_enabled", "permission": "pull",
        "members_url": base + "/members{/member}", "repositories_url": base + "/repos", "parent": None,
        "type": "organization",
    }
    if detail:
        counts = app.store.one("SELECT (SELECT COUNT(*) FROM team_members WHERE team_id = ?) AS members,"
                               " (SELECT COUNT(*) FROM team_repos WHERE team_id = ?) AS repos", row["id"], row["id"])
        out.update({"members_count": counts["members"], "repos_count": counts["repos"],
                    "created_at": row["created_at"], "updated_at": row["updated_at"],
                    "organization": org_json(app, org, detail=True)})
    return out


def git_person_json(sig, when, offset):
    name, _, email = sig.decode("utf-8", "replace").partition(" <")
    stamp = datetime.datetime.fromtimestamp(when, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"name": name, "email": email.rstrip(">"), "date": stamp}


def commit_json(app, repo_name, commit):
    """GitHub's commit shape for a dulwich Commit; author/committer accounts are matched by noreply email."""
    sha, api = commit.id.decode(), "%s/repos/%s" % (app.api, repo_name)
    author = git_person_json(commit.author, commit.author_time, commit.author_timezone)
    committer = git_person_json(commit.committer, commit.commit_time, commit.commit_timezone)
    return {
        "sha": sha, "node_id": node_id("Commit", sha), "url": "%s/commits/%s" % (api, sha),
        "html_url": "%s/%s/commit/%s" % (app.url, repo_name, sha), "comments_url": "%s/commits/%s/comments" % (api, sha),
        "commit": {
            "url": "%s/git/commits/%s" % (api, sha), "author": author, "committer": committer,
            "message": commit.message.decode("utf-8", "replace").rstrip("\n"),
            "tree": {"sha": commit.tree.decode(), "url": "%s/git/trees/%s" % (api, commit.tree.decode())},
            "comment_count": 0,
            "verification": {"verified": False, "reason": "unsigned", "signature": None, "payload": None,
                             "verified_at": None},
        },
        "author": account_for_email(app, author["email"]), "committer": account_for_email(app, committer["email"]),
        "parents": [{"sha": p.decode(), "url": "%s/commits/%s" % (api, p.decode()),
                     "html_url": "%s/%s/commit/%s" % (app.url, repo_name, p.decode())} for p in commit.parents],
    }


def account_for_email(app, email):
    login = email[:-len("@users.noreply.agentgit")] if email.endswith("@users.noreply.agentgit") else None
    row = account_by_login(app.store, login) if login else app.store.one(
        "SELECT * FROM accounts WHERE email = ? COLLATE NOCASE", email)
    return user_json(app, row) if row else None


def branch_json(app, repo_name, name, sha, protected=False):
    return {"name": name, "commit": {"sha": sha, "url": "%s/repos/%s/commits/%s" % (app.api, repo_name, sha)},
            "protected": protected}


def ref_json(app, repo_name, ref, sha, obj_type):
    return {"ref": ref, "node_id": node_id("Ref", "%s:%s" % (repo_name, ref)),
            "url": "%s/repos/%s/git/%s" % (app.api, repo_name, ref),
            "object": {"type": obj_type, "sha": sha,
                       "url": "%s/repos/%s/git/%ss/%s" % (app.api, repo_name, obj_type, sha)}}
