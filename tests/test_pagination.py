"""Pagination, the way clients walk it: every list the route table serves, three pages long, followed
from page 1 by `rel="next"` — by octokit's paginate, PyGithub's PaginatedList and githubkit's paginate —
must hand over every item exactly once; and each page's Link header must follow GitHub's rules (prev and
first on every page but the first, next and last on every page but the last).

The world: alice owns alice/many and the organization many-org, with five of everything a list shows
(issues, comments, labels, pulls, reviews, releases, forks by five other people, ...). Each list route
is read two items a page, so five items are three pages. A GET route that answers a list and is not
walked here (or named in SHORT_LISTS with the reason it cannot be) fails the sweep: a list route added
later is walked too. GraphQL connections are walked by cursor the same way."""
import base64
import json
import os
import shutil
import subprocess
import urllib.parse

import pytest

from conftest import api, call, ext, sweep      # first: it puts the build under test on the path
import agentgit  # noqa: E402

pytestmark = sweep

HERE = os.path.dirname(os.path.abspath(__file__))
NODE_DIR = os.path.join(HERE, "..", ".venv", "node")     # where make test installs @octokit/rest
PER_PAGE = 2
FIVE = range(1, 6)
PEOPLE = ["u%d" % n for n in FIVE]

# Lists that hold fewer than three pages in this world, and why that is all they can hold here.
SHORT_LISTS = {
    "/api/v3/repos/{owner}/{repo}/actions/runs/{run_id:int}/jobs": "this world executes no runs (tests/test_runs.py)",
    "/api/v3/repos/{owner}/{repo}/actions/runs/{run_id:int}/attempts/{attempt_number:int}/jobs":
        "this world executes no runs (tests/test_runs.py)",
    "/api/v3/repos/{owner}/{repo}/check-runs/{run_id:int}/annotations": "a workflow job's commands make them, and "
                                                                         "this world executes no runs",
    "/api/v3/user/emails": "an account has its noreply address and at most one other",
    "/api/v3/repos/{owner}/{repo}/rules/branches/{branch:path}": "no rulesets here: always empty",
}


def b64(text):
    return base64.b64encode(text.encode()).decode()


def build_world(srv):
    """The world above; returns (alice's token, the ids route patterns are filled with)."""
    alice = srv.add_user("alice", password="pw")
    people = {login: srv.add_user(login, password="pw") for login in PEOPLE}
    repo = "/repos/alice/many"
    assert api(srv, "POST", "/user/repos", alice, {"name": "many", "auto_init": True}).status == 201
    for n in FIVE:
        assert api(srv, "POST", "/user/repos", alice, {"name": "extra%d" % n}).status == 201
    assert ext(srv, "POST", "/user/orgs", alice, {"login": "many-org"}).status == 201
    for n in FIVE:
        assert api(srv, "POST", "/orgs/many-org/repos", alice, {"name": "orgrepo%d" % n}).status == 201
        assert ext(srv, "POST", "/user/orgs", people[PEOPLE[n - 1]], {"login": "org%d" % n}).status == 201
        # each person's first organization takes alice in, so hers are five too
        assert api(srv, "PUT", "/orgs/org%d/memberships/alice" % n, people[PEOPLE[n - 1]], {"role": "member"}).status == 200
    for login in PEOPLE:
        assert api(srv, "PUT", repo + "/collaborators/" + login, alice, {"permission": "push"}).status in (201, 204)
        assert api(srv, "PUT", "/orgs/many-org/memberships/" + login, alice, {"role": "member"}).status == 200
        assert api(srv, "POST", repo + "/forks", people[login], {}).status == 202
    for n in FIVE:
        assert api(srv, "POST", "/orgs/many-org/teams", alice, {"name": "team%d" % n}).status == 201
        assert api(srv, "PUT", "/orgs/many-org/teams/team1/repos/many-org/orgrepo%d" % n, alice,
                   {"permission": "pull"}).status == 204
    for login in PEOPLE:
        assert api(srv, "PUT", "/orgs/many-org/teams/team1/memberships/" + login, alice, {}).status == 200

    # five workflows, branches, tags, commits; a pull request whose branch has five commits and files
    for n in FIVE:
        assert api(srv, "PUT", repo + "/contents/.github/workflows/ci%d.yml" % n, alice, {
            # (dispatched only: a push's runs would make the list grow as the world is walked)
            "message": "workflow %d" % n, "content": b64("name: CI%d\non: [workflow_dispatch]\n" % n)}).status == 201
    main = api(srv, "GET", repo + "/branches/main", alice).json["commit"]["sha"]
    for n in FIVE:
        assert api(srv, "POST", repo + "/git/refs", alice, {"ref": "refs/heads/feature%d" % n, "sha": main}).status == 201
        assert api(srv, "POST", repo + "/git/refs", alice, {"ref": "refs/tags/v%d" % n, "sha": main}).status == 201
    for n in FIVE:
        assert api(srv, "PUT", repo + "/contents/f%d.txt" % n, alice, {
            "message": "f%d" % n, "content": b64("f%d\n" % n), "branch": "feature1"}).status == 201
    for n in range(2, 6):
        assert api(srv, "PUT", repo + "/contents/g%d.txt" % n, alice, {
            "message": "g%d" % n, "content": b64("g%d\n" % n), "branch": "feature%d" % n}).status == 201

    # issues: five to list and to be sub-issues of a sixth; the pull requests come after them
    for n in FIVE:
        assert api(srv, "POST", repo + "/issues", alice, {"title": "bug %d" % n, "assignees": ["alice"]}).status == 201
    epic = api(srv, "POST", repo + "/issues", alice, {"title": "epic"}).json
    for n in FIVE:
        sub = api(srv, "GET", repo + "/issues/%d" % n, alice).json
        assert api(srv, "POST", repo + "/issues/%d/sub_issues" % epic["number"], alice,
                   {"sub_issue_id": sub["id"]}).status == 201
        assert api(srv, "POST", repo + "/labels", alice, {"name": "label%d" % n, "color": "ededed"}).status == 201
        assert api(srv, "POST", repo + "/milestones", alice, {"title": "m%d" % n}).status == 201
        assert api(srv, "POST", repo + "/issues/1/comments", alice, {"body": "comment %d" % n}).status == 201
    assert api(srv, "POST", repo + "/issues/1/labels", alice, {"labels": ["label%d" % n for n in FIVE]}).status == 200
    assert api(srv, "PATCH", repo + "/issues/1", alice, {"milestone": 1}).status == 200
    for login in PEOPLE:        # five more contributors to main
        assert api(srv, "PUT", repo + "/contents/%s.txt" % login, people[login], {
            "message": "by " + login, "content": b64(login)}).status == 201
    pulls = [api(srv, "POST", repo + "/pulls", alice, {"title": "pull %d" % n, "head": "feature%d" % n, "base": "main"}).json
             for n in FIVE]
    pull = pulls[0]["number"]
    head = pulls[0]["head"]["sha"]
    for n, login in enumerate(PEOPLE, 1):       # five reviews, the last with five comments
        review = api(srv, "POST", repo + "/pulls/%d/reviews" % pull, people[login], {
            "event": "COMMENT", "body": "review %d" % n,
            "comments": [{"path": "f%d.txt" % m, "line": 1, "body": "line %d" % m} for m in range(1, n + 1)]})
        assert review.status == 200, review
    review_id = review.json["id"]
    for content in ("+1", "-1", "laugh", "hooray", "heart"):       # five reactions on an issue and each comment
        for subject in ("issues/1", "issues/comments/1", "pulls/comments/1"):
            assert api(srv, "POST", repo + "/%s/reactions" % subject, alice, {"content": content}).status == 201

    # releases, each with assets (the first with five); checks and statuses on the head of pull 1
    release_id = None
    for n in FIVE:
        release = api(srv, "POST", repo + "/releases", alice, {"tag_name": "r%d" % n, "name": "release %d" % n}).json
        release_id = release_id or release["id"]
    for n in FIVE:
        assert call(srv, "POST", "/api/uploads/repos/alice/many/releases/%d/assets?name=a%d.txt" % (release_id, n), alice,
                    raw_body=b"asset", headers={"Content-Type": "text/plain"}).status == 201
        assert api(srv, "POST", repo + "/check-runs", alice, {"name": "ci%d" % n, "head_sha": head}).status == 201
        assert api(srv, "POST", repo + "/statuses/" + head, alice, {"state": "success", "context": "c%d" % n}).status == 201
        assert api(srv, "POST", repo + "/actions/workflows/ci1.yml/dispatches", alice, {"ref": "main"}).status == 204
    run = api(srv, "GET", repo + "/actions/runs", alice).json["workflow_runs"][0]["id"]
    with srv.app.store.transaction() as db:      # five artifacts of the run and five caches, as its jobs keep them
        for n in FIVE:
            db.execute("INSERT INTO artifacts (repo_id, run_id, run_attempt, name, size_in_bytes, digest, archive,"
                       " created_at, expires_at) SELECT repo_id, id, 1, ?, 22, 'sha256:0', ?, created_at,"
                       " '9999-12-31T00:00:00Z' FROM workflow_runs WHERE id = ?", ("a%d" % n, b"PK\x05\x06" + b"\0" * 18,
                                                                                run))
            db.execute("INSERT INTO caches (repo_id, key, ref, size_in_bytes, archive, created_at, last_accessed_at)"
                       " SELECT repo_id, ?, 'refs/heads/main', 22, ?, created_at, created_at FROM workflow_runs WHERE"
                       " id = ?", ("deps-%d" % n, b"PK\x05\x06" + b"\0" * 18, run))
    deployments = [api(srv, "POST", repo + "/deployments", alice, {"ref": "main", "required_contexts": []}).json["id"]
                   for n in FIVE]
    hooks = [api(srv, "POST", repo + "/hooks", alice, {"config": {"url": "http://127.0.0.1:9/h%d" % n}}).json["id"]
             for n in FIVE]
    org_hooks = [api(srv, "POST", "/orgs/many-org/hooks", alice, {"config": {"url": "http://127.0.0.1:9/o%d" % n}})
                 .json["id"] for n in FIVE]
    for n in range(4):          # the first hooks' pings and four more: five deliveries each
        assert api(srv, "POST", repo + "/hooks/%d/pings" % hooks[0], alice).status == 204
        assert api(srv, "POST", "/orgs/many-org/hooks/%d/pings" % org_hooks[0], alice).status == 204
    for state in ("queued", "pending", "in_progress", "success", "inactive"):
        assert api(srv, "POST", repo + "/deployments/%d/statuses" % deployments[0], alice, {"state": state}).status == 201

    # Actions configuration: secrets and variables at each level, environments
    key_id = api(srv, "GET", repo + "/actions/secrets/public-key", alice).json["key_id"]
    sealed = {"encrypted_value": base64.b64encode(os.urandom(60)).decode(), "key_id": key_id}
    org_repos = [api(srv, "GET", "/repos/many-org/orgrepo%d" % n, alice).json["id"] for n in FIVE]
    for n in FIVE:
        assert api(srv, "PUT", repo + "/environments/env%d" % n, alice, {}).status == 200
        for base in (repo + "/actions", repo + "/environments/env1"):
            assert api(srv, "PUT", base + "/secrets/S%d" % n, alice, sealed).status == 201
            assert api(srv, "POST", base + "/variables", alice, {"name": "V%d" % n, "value": "v"}).status == 201
        assert api(srv, "PUT", "/orgs/many-org/actions/secrets/S%d" % n, alice, dict(
            sealed, visibility="selected", selected_repository_ids=org_repos)).status == 201
        assert api(srv, "POST", "/orgs/many-org/actions/variables", alice, {
            "name": "V%d" % n, "value": "v", "visibility": "selected", "selected_repository_ids": org_repos}).status == 201
        assert api(srv, "POST", repo + "/keys", alice, {"title": "k%d" % n, "key": deploy_key(n)}).status == 201

    # agentgit's own lists: tokens, agents, grants, approvals, freezes, revocations, credentials
    bot = None
    for n in FIVE:
        assert ext(srv, "POST", "/user/tokens", alice, {"name": "t%d" % n, "scopes": ["repo"]}).status == 201
        login, bootstrap, _ = srv.add_agent("bot%d" % n)
        invite = ext(srv, "POST", "/agent-invites", alice, {"repo_grants": [
            {"repo_full_name": "alice/many", "permission": "push"}]}).json["invite_token"]
        assert ext(srv, "POST", "/agent-bindings/confirm", bootstrap, {"invite_token": invite}).status == 201
        grant = ext(srv, "POST", "/task-grants", alice, {
            "agent": "agent:" + login, "delegator": "user:alice", "task": "task:t%d" % n, "resources": ["repo:alice/many"],
            "actions": ["read_code", "manage_labels"], "constraints": {"requires_approval": ["manage_labels"]}}).json
        token = ext(srv, "POST", "/task-grants/%s/tokens" % grant["id"], bootstrap, {}).json["token"]
        assert api(srv, "POST", repo + "/labels", token, {"name": "asked%d" % n}).status == 403
        bot = bot or (login, token)
        assert ext(srv, "POST", "/freezes", alice, {"resource": "repo:alice/extra%d" % n, "reason": "audit"}).status == 201
        assert ext(srv, "POST", "/revocations", alice, {"runtime": "spiffe://many.example/%d" % n}).status in (200, 201)
        assert ext(srv, "POST", "/broker/credentials", alice, {
            "name": "c%d" % n, "kind": "api_key", "base_url": "https://c%d.example.com" % n, "value": "k",
            "header": "X-Key"}).status == 201
    for n in FIVE:            # the first agent's activity: five asks of its own
        assert api(srv, "POST", repo + "/labels", bot[1], {"name": "again%d" % n}).status == 403
    # alice's notifications: five threads by the people who reviewed and commented
    for n, login in enumerate(PEOPLE, 1):
        assert api(srv, "POST", repo + "/issues/%d/comments" % (n + 1), people[login], {"body": "hi alice"}).status == 201
    return alice, {"epic": epic["number"], "pull": pull, "review": review_id, "release": release_id, "run": run,
                   "sha": head, "bot": bot[0], "deployment": deployments[0], "hook": hooks[0], "org_hook": org_hooks[0],
                   "repo_id": api(srv, "GET", repo, alice).json["id"]}


def deploy_key(n):
    """An ed25519 public key in OpenSSH's form (random bytes: nobody needs its private half)."""
    blob = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + bytes([n]) * 32
    return "ssh-ed25519 " + base64.b64encode(blob).decode()


# Lists GitHub answers whole (a directory's entries, a tree), or that are a single object holding a
# list, not a page of one.
WHOLE_LISTS = {
    "/api/v3/repos/{owner}/{repo}/contents": "a directory's entries, whole on GitHub too",
    "/api/v3/repos/{owner}/{repo}/contents/{path:path}": "a directory's entries, whole on GitHub too",
    "/api/v3/orgs/{org}/issue-types": "GitHub answers an organization's issue types whole",
    "/api/ext/v1/agent-keys": "at most ten keys an agent, answered whole",
}


def list_path(pattern, ids):
    """``pattern`` filled with the world's objects that have five of what the route lists."""
    fill = {"owner": "alice", "repo": "many", "org": "many-org", "slug": "team1", "environment": "env1",
            "review_id": ids["review"], "deployment_id": ids["deployment"],
            "hook_id": ids["org_hook" if pattern.startswith("/api/v3/orgs/") else "hook"], "release_id": ids["release"], "run_id": ids["run"], "login": ids["bot"] if "/agents/" in pattern else "alice",
            "name": "V1" if "/variables/" in pattern else "S1", "ref": ids["sha"], "path": "",
            "workflow_id": "ci1.yml", "repository_id": ids["repo_id"]}
    fill["number"] = ids["epic"] if "/sub_issues" in pattern else ids["pull"] if "/pulls/" in pattern else 1
    if "matching-refs" in pattern:
        fill["ref"] = "heads/feature"
    path = pattern
    for placeholder in [p for p in pattern.split("/") if p.startswith("{")]:
        path = path.replace(placeholder, urllib.parse.quote(str(fill.get(placeholder[1:-1].split(":")[0], 1)), safe="/"), 1)
    query = {"/search/repositories": "q=user:alice", "/search/users": "q=u", "/search/code": "q=workflow_dispatch",
             "/search/issues": "q=bug", "/api/v3/repos/alice/many/branches": "", "/api/ext/v1/audit": "actor=" + ids["bot"]}
    for suffix, q in query.items():
        if path.endswith(suffix) and q:
            return path + "?" + q
    if path.endswith("/issues") and "/repos/" not in path:
        return path + "?filter=all"
    return path


def items_of(body):
    """The items of a list answer: the array, or the one array beside total_count (as octokit reads it)."""
    if isinstance(body, list):
        return body
    if isinstance(body, dict) and "total_count" in body:
        arrays = [v for k, v in body.items() if isinstance(v, list)]
        if len(arrays) == 1:
            return arrays[0]
    return None


def with_query(path, **params):
    base, _, query = path.partition("?")
    return base + "?" + urllib.parse.urlencode(dict(urllib.parse.parse_qsl(query), **params))


def links(response):
    """{rel: page number} from a Link header."""
    out = {}
    for part in filter(None, (response.headers.get("link") or "").split(",")):
        url, _, rel = part.partition(";")
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url.strip()[1:-1]).query))
        out[rel.strip().split("=")[1].strip('"')] = int(query["page"])
    return out


def walk_by_links(srv, token, path):
    """Every page from page 1 by rel="next", checking GitHub's rules on each; returns the items."""
    items, page, url = [], 1, with_query(path, per_page=PER_PAGE)
    while True:
        r = call(srv, "GET", url, token)
        assert r.status == 200, (url, r)
        got, rels = items_of(r.json), links(r)
        assert len(got) <= PER_PAGE, (url, len(got))
        items += got
        assert rels.get("prev") == (page - 1 if page > 1 else None) and rels.get("first") == (1 if page > 1 else None), \
            (url, rels)
        if "next" not in rels:
            assert "last" not in rels or rels["last"] == page, (url, rels)
            return items, page
        assert rels["next"] == page + 1 and rels.get("last", page + 1) >= page + 1, (url, rels)
        page += 1
        url = with_query(path, per_page=PER_PAGE, page=page)


def key(item):
    """An item as a comparable string; a whole float as the integer JavaScript writes it (search's score)."""
    def plain(value):
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list):
            return [plain(v) for v in value]
        return int(value) if isinstance(value, float) and value.is_integer() else value
    return json.dumps(plain(item), sort_keys=True)


@pytest.fixture(scope="module")
def world(tmp_path_factory, new_database):
    srv = agentgit.make_server(tmp_path_factory.mktemp("pages") / "data", port=0, egress_allow_loopback=True,
                               database=new_database()).start()
    try:
        token, ids = build_world(srv)
        lists = {}
        for route in agentgit.ROUTES["GET"]:
            if not route.pattern.startswith(("/api/v3/", "/api/ext/v1/")) or route.pattern in WHOLE_LISTS:
                continue
            path = list_path(route.pattern, ids)
            whole = call(srv, "GET", with_query(path, per_page=100), token)
            if whole.status == 200 and items_of(whole.json) is not None:
                lists[route.pattern] = (path, items_of(whole.json))
        yield srv, token, lists
    finally:
        srv.stop()


def test_every_list_is_walked_whole_by_its_links(world):
    srv, token, lists = world
    assert len(lists) > 50, sorted(lists)      # the sweep found the list routes
    failures = []
    for pattern, (path, whole) in sorted(lists.items()):
        if len(whole) < 2 * PER_PAGE + 1:
            if pattern not in SHORT_LISTS:
                failures.append("%s: %d items, not three pages" % (path, len(whole)))
            continue
        try:
            walked, pages = walk_by_links(srv, token, path)
        except AssertionError as e:
            failures.append("%s: %s" % (path, e))
            continue
        if sorted(map(key, walked)) != sorted(map(key, whole)) or pages < 3:
            failures.append("%s: %d of %d items in %d pages" % (path, len(walked), len(whole), pages))
    assert not failures, "\n".join(failures)


def test_octokit_paginate_gets_every_item_of_every_list_once(world):
    srv, token, lists = world
    if shutil.which("node") is None or not os.path.isdir(os.path.join(NODE_DIR, "node_modules", "@octokit", "rest")):
        pytest.skip("node or @octokit/rest is not installed (make test installs it with npm)")
    shutil.copy(os.path.join(HERE, "octokit_pages.mjs"), NODE_DIR)
    # every list of three pages but the combined status, an object whose statuses octokit does not page
    wanted = {path: whole for path, whole in lists.values() if len(whole) > 2 * PER_PAGE and not path.endswith("/status")}
    proc = subprocess.run(["node", "octokit_pages.mjs"], cwd=NODE_DIR, capture_output=True, text=True, timeout=120,
                          input=json.dumps({"url": srv.url, "token": token, "paths": sorted(wanted)}))
    assert proc.returncode == 0, proc.stderr
    walked = json.loads(proc.stdout)
    lost = ["%s: %d of %d" % (path, len(walked[path]), len(whole)) for path, whole in sorted(wanted.items())
            if sorted(map(key, walked[path])) != sorted(map(key, whole))]
    assert not lost, "\n".join(lost)


def test_pygithub_and_githubkit_walk_lists_by_next(world):
    srv, token, lists = world
    github = pytest.importorskip("github")
    g = github.Github(base_url=srv.url + "/api/v3", auth=github.Auth.Token(token), per_page=PER_PAGE, retry=None,
                      seconds_between_requests=0, seconds_between_writes=0)
    repo, org = g.get_repo("alice/many"), g.get_organization("many-org")
    pull = repo.get_pull(7)

    def whole(pattern, field="id"):
        return sorted(item[field] for item in lists[pattern][1])
    prefix = "/api/v3/repos/{owner}/{repo}"
    walks = {
        prefix + "/issues": ([i.id for i in repo.get_issues(state="all")], "id"),
        prefix + "/issues/{number:int}/comments": ([c.id for c in repo.get_issue(1).get_comments()], "id"),
        prefix + "/labels": ([label.name for label in repo.get_labels()], "name"),
        prefix + "/milestones": ([m.number for m in repo.get_milestones(state="all")], "number"),
        prefix + "/pulls": ([p.number for p in repo.get_pulls(state="all")], "number"),
        prefix + "/pulls/{number:int}/reviews": ([r.id for r in pull.get_reviews()], "id"),
        prefix + "/pulls/{number:int}/comments": ([c.id for c in pull.get_review_comments()], "id"),
        prefix + "/pulls/{number:int}/files": ([f.filename for f in pull.get_files()], "filename"),
        prefix + "/pulls/{number:int}/commits": ([c.sha for c in pull.get_commits()], "sha"),
        prefix + "/forks": ([f.id for f in repo.get_forks()], "id"),
        prefix + "/collaborators": ([c.login for c in repo.get_collaborators()], "login"),
        prefix + "/branches": ([b.name for b in repo.get_branches()], "name"),
        prefix + "/tags": ([t.name for t in repo.get_tags()], "name"),
        prefix + "/releases": ([r.id for r in repo.get_releases()], "id"),
        prefix + "/commits": ([c.sha for c in repo.get_commits()], "sha"),
        prefix + "/actions/workflows": ([w.id for w in repo.get_workflows()], "id"),
        prefix + "/actions/runs": ([r.id for r in repo.get_workflow_runs()], "id"),
        "/api/v3/user/repos": ([r.id for r in g.get_user().get_repos()], "id"),
        "/api/v3/orgs/{org}/members": ([m.login for m in org.get_members()], "login"),
        "/api/v3/orgs/{org}/teams": ([t.id for t in org.get_teams()], "id"),
        "/api/v3/search/issues": ([i.id for i in g.search_issues("bug")], "id"),
    }
    lost = ["%s: %d of %d" % (pattern, len(got), len(lists[pattern][1])) for pattern, (got, field) in walks.items()
            if sorted(got) != whole(pattern, field)]
    assert not lost, "\n".join(lost)
    assert repo.get_issues(state="all").totalCount == len(lists[prefix + "/issues"][1])   # read from rel="last"

    kit = pytest.importorskip("githubkit")
    client = kit.GitHub(kit.TokenAuthStrategy(token), base_url=srv.url + "/api/v3/", auto_retry=False)
    issues = [i.id for i in client.rest.paginate(client.rest.issues.list_for_repo, owner="alice", repo="many",
                                                  state="all", per_page=PER_PAGE)]
    assert sorted(issues) == whole(prefix + "/issues")
    comments = [c.id for c in client.rest.paginate(client.rest.issues.list_comments_for_repo, owner="alice",
                                                    repo="many", per_page=PER_PAGE)]
    assert sorted(comments) == whole(prefix + "/issues/comments")


# GraphQL connections, each the only field on its path so githubkit's paginator finds its pageInfo
CONNECTIONS = {
    "issues": 'repository(owner: "alice", name: "many") { issues(%s, states: [OPEN, CLOSED]) { %s } }',
    "pull requests": 'repository(owner: "alice", name: "many") { pullRequests(%s) { %s } }',
    "labels": 'repository(owner: "alice", name: "many") { labels(%s) { %s } }',
    "releases": 'repository(owner: "alice", name: "many") { releases(%s) { %s } }',
    "comments": 'repository(owner: "alice", name: "many") { issue(number: 1) { comments(%s) { %s } } }',
    "an issue's labels": 'repository(owner: "alice", name: "many") { issue(number: 1) { labels(%s) { %s } } }',
    "sub-issues": 'repository(owner: "alice", name: "many") { issue(number: 6) { subIssues(%s) { %s } } }',
    "reviews": 'repository(owner: "alice", name: "many") { pullRequest(number: 7) { reviews(%s) { %s } } }',
    "files": 'repository(owner: "alice", name: "many") { pullRequest(number: 7) { files(%s) { %s } } }',
    "commits": 'repository(owner: "alice", name: "many") { pullRequest(number: 7) { commits(%s) { %s } } }',
    "teams": 'organization(login: "many-org") { teams(%s) { %s } }',
    "repositories": 'viewer { repositories(%s) { %s } }',
    "organizations": 'viewer { organizations(%s) { %s } }',
    "search": 'search(query: "bug", type: ISSUE, %s) { %s }',
}
FORWARD = ("first: 2, after: $cursor", "nodes { __typename ... on Node { id } } pageInfo { hasNextPage endCursor }")
BACKWARD = ("last: 2, before: $cursor", "nodes { __typename ... on Node { id } } pageInfo { hasPreviousPage startCursor }")


def test_graphql_connections_walk_whole_by_cursor_both_ways(world):
    srv, token, _ = world
    kit = pytest.importorskip("githubkit")
    client = kit.GitHub(kit.TokenAuthStrategy(token), base_url=srv.url + "/api/v3/", auto_retry=False)

    def nodes(data):
        while "nodes" not in data:
            data = next(v for v in data.values() if isinstance(v, dict))
        return data["nodes"]
    lost = []
    for name, shape in CONNECTIONS.items():
        whole = nodes(client.graphql("query { %s }" % shape % ("first: 100", "nodes { __typename ... on Node { id } }")))
        if len(whole) <= 2 * PER_PAGE:
            lost.append("%s: %d nodes, not three pages" % (name, len(whole)))
            continue
        for args, fields in (FORWARD, BACKWARD):
            pages = [nodes(page) for page in client.graphql.paginate(
                "query($cursor: String) { %s }" % shape % (args, fields), {"cursor": None})]
            walked = [n for page in (pages if args == FORWARD[0] else reversed(pages)) for n in page]
            if walked != whole or len(pages) < 3:
                lost.append("%s (%s): %d of %d nodes in %d pages" % (name, args, len(walked), len(whole), len(pages)))
    assert not lost, "\n".join(lost)


def test_the_audit_log_walks_whole_by_its_after_cursor(world):
    """A reader that keeps up with the audit log asks for what came after the last row it saw."""
    srv, token, lists = world
    path, whole = lists["/api/ext/v1/audit"]
    walked, after = [], 0
    while True:
        page = call(srv, "GET", with_query(path, per_page=PER_PAGE, after=after), token).json
        if not page:
            break
        assert len(page) <= PER_PAGE
        walked += page
        after = page[-1]["id"]
    assert [row["id"] for row in walked] == [row["id"] for row in whole] and len(walked) > 2 * PER_PAGE
