"""Issues, comments, labels and milestones over REST, with GitHub's permission rules."""
import pytest

from conftest import api, shape_checker

SPEC = shape_checker()


@pytest.fixture
def repo(server):
    tokens = {n: server.add_user(n) for n in ("olivia", "tess", "rita", "walt", "out")}
    api(server, "POST", "/user/repos", tokens["olivia"], {"name": "app", "auto_init": True})
    for login, perm in (("tess", "triage"), ("rita", "pull"), ("walt", "push")):
        api(server, "PUT", "/repos/olivia/app/collaborators/" + login, tokens["olivia"], {"permission": perm})
    return tokens


def check(method, path, r):
    if SPEC is not None and r.json is not None:
        assert SPEC.check(method, path, r.status, r.json) == []


def test_issue_lifecycle_label_comment_close(server, repo):
    o, rita, tess = repo["olivia"], repo["rita"], repo["tess"]
    r = api(server, "POST", "/repos/olivia/app/issues", rita, {"title": "Crash on start", "body": "see @olivia",
                                                              "labels": ["bug"], "assignees": ["walt"]})
    assert r.status == 201 and r.json["number"] == 1 and r.json["user"]["login"] == "rita"
    assert r.json["labels"] == [] and r.json["assignees"] == []     # a reader's labels/assignees are dropped
    check("POST", "/repos/olivia/app/issues", r)
    # a new repository has GitHub's nine default labels, bug among them
    defaults = api(server, "GET", "/repos/olivia/app/labels", o).json
    assert len(defaults) == 9 and {"name": "bug", "color": "d73a4a", "default": True} == {
        k: v for k, v in defaults[0].items() if k in ("name", "color", "default")}
    r = api(server, "POST", "/repos/olivia/app/labels", o, {"name": "crash", "color": "#D73A4A", "description": "broken"})
    assert r.status == 201 and r.json["color"] == "d73a4a" and r.json["default"] is False
    check("POST", "/repos/olivia/app/labels", r)
    assert api(server, "POST", "/repos/olivia/app/labels", o, {"name": "BUG"}).status == 422
    assert api(server, "POST", "/repos/olivia/app/labels", o, {"name": "x", "color": "red"}).json["errors"][0][
        "field"] == "color"
    assert api(server, "POST", "/repos/olivia/app/labels", tess, {"name": "triaged"}).status == 403
    # triage may label, assign and close; a reader may not
    assert api(server, "POST", "/repos/olivia/app/issues/1/labels", rita, ["bug"]).status == 403
    r = api(server, "POST", "/repos/olivia/app/issues/1/labels", tess, ["bug", "new-one"])
    assert [l["name"] for l in r.json] == ["bug", "new-one"]
    r = api(server, "PATCH", "/repos/olivia/app/issues/1", tess, {"assignees": ["walt"], "milestone": None})
    assert [a["login"] for a in r.json["assignees"]] == ["walt"] and r.json["assignee"]["login"] == "walt"
    assert api(server, "PATCH", "/repos/olivia/app/issues/1", tess, {"assignees": ["out"]}).status == 422
    r = api(server, "POST", "/repos/olivia/app/issues/1/comments", walt := repo["walt"], {"body": "on it"})
    assert r.status == 201 and r.json["body"] == "on it" and r.json["author_association"] == "COLLABORATOR"
    check("POST", "/repos/olivia/app/issues/1/comments", r)
    comment_id = r.json["id"]
    assert api(server, "PATCH", "/repos/olivia/app/issues/comments/%d" % comment_id, rita, {"body": "x"}).status == 403
    assert api(server, "PATCH", "/repos/olivia/app/issues/comments/%d" % comment_id, walt, {"body": "done"}).json[
        "body"] == "done"
    r = api(server, "PATCH", "/repos/olivia/app/issues/1", rita, {"state": "closed", "state_reason": "completed"})
    assert r.status == 200 and r.json["state"] == "closed" and r.json["closed_by"]["login"] == "rita"   # the author
    issue = api(server, "GET", "/repos/olivia/app/issues/1", repo["out"]).json
    assert (issue["state"], issue["comments"], [l["name"] for l in issue["labels"]]) == ("closed", 1, ["bug", "new-one"])
    check("GET", "/repos/olivia/app/issues/1", api(server, "GET", "/repos/olivia/app/issues/1", o))
    assert api(server, "PATCH", "/repos/olivia/app/issues/1", repo["out"], {"state": "open"}).status == 403
    assert api(server, "GET", "/repos/olivia/app/issues", o).json == []
    closed = api(server, "GET", "/repos/olivia/app/issues?state=closed&labels=bug", o).json
    assert [i["number"] for i in closed] == [1]
    assert api(server, "GET", "/repos/olivia/app/issues?state=bogus", o).status == 422


def test_lock_filters_and_lists(server, repo):
    o, rita, tess, walt = repo["olivia"], repo["rita"], repo["tess"], repo["walt"]
    for i in range(4):
        api(server, "POST", "/repos/olivia/app/issues", o, {"title": "issue %d" % i, "assignees": ["walt"] if i % 2 else []})
    assert api(server, "PUT", "/repos/olivia/app/issues/2/lock", rita, {"lock_reason": "spam"}).status == 403
    assert api(server, "PUT", "/repos/olivia/app/issues/2/lock", tess, {"lock_reason": "too heated"}).status == 204
    r = api(server, "POST", "/repos/olivia/app/issues/2/comments", rita, {"body": "me too"})
    assert r.status == 403 and "needs triage" in r.json["message"]
    assert api(server, "POST", "/repos/olivia/app/issues/2/comments", tess, {"body": "calm down"}).status == 201
    assert api(server, "GET", "/repos/olivia/app/issues/2", o).json["active_lock_reason"] == "too heated"
    assert api(server, "DELETE", "/repos/olivia/app/issues/2/lock", tess).status == 204
    assert [i["number"] for i in api(server, "GET", "/repos/olivia/app/issues?assignee=walt", o).json] == [4, 2]
    assert [i["number"] for i in api(server, "GET", "/repos/olivia/app/issues?assignee=none&direction=asc", o).json] == [1, 3]
    assert [i["number"] for i in api(server, "GET", "/user/issues", walt).json] == [4, 2]
    assert [i["number"] for i in api(server, "GET", "/issues?filter=created", o).json] == [4, 3, 2, 1]
    page = api(server, "GET", "/repos/olivia/app/issues?per_page=3", o)
    assert len(page.json) == 3 and 'rel="next"' in page.headers["link"]
    assert api(server, "GET", "/repos/olivia/app/issues/99", o).status == 404
    assert api(server, "POST", "/repos/olivia/app/issues", o, {"title": "  "}).status == 422
    assert api(server, "POST", "/repos/olivia/app/issues", o, {"title": "x", "body": "y" * 70000}).status == 422
    assert api(server, "POST", "/repos/olivia/app/issues", repo["out"], {"title": "drive-by"}).status == 201  # public
    assert api(server, "POST", "/repos/olivia/app/issues", None, {"title": "anon"}).status == 401


def test_milestones(server, repo):
    o = repo["olivia"]
    r = api(server, "POST", "/repos/olivia/app/milestones", o, {"title": "v1", "due_on": "2027-01-01T00:00:00Z"})
    assert r.status == 201 and r.json["number"] == 1 and r.json["open_issues"] == 0
    check("POST", "/repos/olivia/app/milestones", r)
    assert api(server, "POST", "/repos/olivia/app/milestones", o, {"title": "v1"}).status == 422
    assert api(server, "POST", "/repos/olivia/app/milestones", o, {"title": "v2", "due_on": "soon"}).status == 422
    api(server, "POST", "/repos/olivia/app/issues", o, {"title": "a", "milestone": 1})
    api(server, "POST", "/repos/olivia/app/issues", o, {"title": "b", "milestone": 1})
    assert api(server, "POST", "/repos/olivia/app/issues", o, {"title": "c", "milestone": 9}).status == 422
    api(server, "PATCH", "/repos/olivia/app/issues/2", o, {"state": "closed"})
    m = api(server, "GET", "/repos/olivia/app/milestones/1", o).json
    assert (m["open_issues"], m["closed_issues"]) == (1, 1)
    assert [i["number"] for i in api(server, "GET", "/repos/olivia/app/issues?milestone=1", o).json] == [1]
    r = api(server, "PATCH", "/repos/olivia/app/milestones/1", o, {"state": "closed"})
    assert r.json["state"] == "closed" and r.json["closed_at"]
    assert api(server, "GET", "/repos/olivia/app/milestones", o).json == []
    assert api(server, "DELETE", "/repos/olivia/app/milestones/1", repo["rita"]).status == 403
    assert api(server, "DELETE", "/repos/olivia/app/milestones/1", o).status == 204
    assert api(server, "GET", "/repos/olivia/app/issues/1", o).json["milestone"] is None


def test_private_repo_issues_are_hidden(server, repo):
    o = repo["olivia"]
    api(server, "POST", "/user/repos", o, {"name": "secret", "private": True})
    api(server, "POST", "/repos/olivia/secret/issues", o, {"title": "hidden"})
    for method, path, body in (("GET", "/repos/olivia/secret/issues", None), ("GET", "/repos/olivia/secret/issues/1", None),
                               ("POST", "/repos/olivia/secret/issues", {"title": "x"}),
                               ("POST", "/repos/olivia/secret/issues/1/comments", {"body": "x"})):
        assert api(server, method, path, repo["out"], body).status == 404, path
    assert api(server, "GET", "/issues?filter=all", repo["out"]).json == []


def test_sub_issues_a_tree_in_order(server, repo):
    """tess (triage) files issues under an epic, orders them, moves one to another parent and takes one
    out; no cycles, no pull requests, no issues of another owner; a reader may look, not change."""
    o, tess, rita = repo["olivia"], repo["tess"], repo["rita"]
    ids = {}
    for title in ("Epic", "Parse", "Render", "Ship"):
        ids[title] = api(server, "POST", "/repos/olivia/app/issues", o, {"title": title}).json["id"]

    def sub_issues(number):
        return [i["title"] for i in api(server, "GET", "/repos/olivia/app/issues/%d/sub_issues" % number, rita).json]
    for title in ("Parse", "Render", "Ship"):
        r = api(server, "POST", "/repos/olivia/app/issues/1/sub_issues", tess, {"sub_issue_id": ids[title]})
        assert (r.status, r.json["number"]) == (201, 1)
    assert sub_issues(1) == ["Parse", "Render", "Ship"]
    assert api(server, "GET", "/repos/olivia/app/issues/3/parent", rita).json["title"] == "Epic"
    r = api(server, "PATCH", "/repos/olivia/app/issues/1/sub_issues/priority", tess,
            {"sub_issue_id": ids["Ship"], "before_id": ids["Parse"]})
    assert r.status == 200 and sub_issues(1) == ["Ship", "Parse", "Render"]
    # Render moves under Parse only with replace_parent; Epic under Render would be a cycle
    again = api(server, "POST", "/repos/olivia/app/issues/2/sub_issues", tess, {"sub_issue_id": ids["Render"]})
    assert again.status == 422 and "replace_parent" in again.json["errors"][0]["message"]
    assert api(server, "POST", "/repos/olivia/app/issues/2/sub_issues", tess,
               {"sub_issue_id": ids["Render"], "replace_parent": True}).status == 201
    assert sub_issues(1) == ["Ship", "Parse"] and sub_issues(2) == ["Render"]
    cycle = api(server, "POST", "/repos/olivia/app/issues/3/sub_issues", tess, {"sub_issue_id": ids["Epic"]})
    assert cycle.status == 422 and "itself" in cycle.json["errors"][0]["message"]
    # a reader cannot change the tree; an unknown or foreign issue is refused
    assert api(server, "POST", "/repos/olivia/app/issues/1/sub_issues", rita, {"sub_issue_id": ids["Ship"]}).status == 403
    assert api(server, "POST", "/repos/olivia/app/issues/1/sub_issues", tess, {"sub_issue_id": 999}).status == 422
    api(server, "POST", "/user/repos", repo["out"], {"name": "theirs", "auto_init": True})
    foreign = api(server, "POST", "/repos/out/theirs/issues", repo["out"], {"title": "theirs"}).json["id"]
    r = api(server, "POST", "/repos/olivia/app/issues/1/sub_issues", tess, {"sub_issue_id": foreign})
    assert r.status == 422 and "same repository owner" in r.json["errors"][0]["message"]
    r = api(server, "DELETE", "/repos/olivia/app/issues/1/sub_issue", tess, {"sub_issue_id": ids["Ship"]})
    assert r.status == 200 and sub_issues(1) == ["Parse"]
    assert api(server, "GET", "/repos/olivia/app/issues/4/parent", rita).status == 404


def test_reactions_on_issues_and_comments(server, repo):
    """Each account has each emoji once on an issue or comment (again answers the one it has); the counts
    show in the issue's and comment's JSON and in GraphQL's reactionGroups; a reaction is removed only by
    whoever made it; a locked issue takes them only from who may still comment there."""
    from test_graphql import gql
    o, rita, walt, out = repo["olivia"], repo["rita"], repo["walt"], repo["out"]
    api(server, "POST", "/repos/olivia/app/issues", rita, {"title": "Crash"})
    comment = api(server, "POST", "/repos/olivia/app/issues/1/comments", rita, {"body": "also here"}).json
    first = api(server, "POST", "/repos/olivia/app/issues/1/reactions", walt, {"content": "+1"})
    check("POST", "/repos/olivia/app/issues/1/reactions", first)
    assert first.status == 201 and first.json["content"] == "+1" and first.json["user"]["login"] == "walt"
    again = api(server, "POST", "/repos/olivia/app/issues/1/reactions", walt, {"content": "+1"})
    assert again.status == 200 and again.json["id"] == first.json["id"]
    assert api(server, "POST", "/repos/olivia/app/issues/1/reactions", out, {"content": "heart"}).status == 201
    assert api(server, "POST", "/repos/olivia/app/issues/comments/%d/reactions" % comment["id"], o,
               {"content": "eyes"}).status == 201
    assert api(server, "POST", "/repos/olivia/app/issues/1/reactions", walt, {"content": "thumbs"}).status == 422
    issue = api(server, "GET", "/repos/olivia/app/issues/1", rita).json
    assert (issue["reactions"]["total_count"], issue["reactions"]["+1"], issue["reactions"]["heart"]) == (2, 1, 1)
    assert api(server, "GET", "/repos/olivia/app/issues/comments/%d" % comment["id"], rita).json["reactions"]["eyes"] == 1
    hearts = api(server, "GET", "/repos/olivia/app/issues/1/reactions?content=heart", rita).json
    assert [r["user"]["login"] for r in hearts] == ["out"]
    groups = gql(server, rita, '{ repository(owner: "olivia", name: "app") { issue(number: 1) { reactionGroups {'
                               ' content users { totalCount } } } } }')["data"]["repository"]["issue"]["reactionGroups"]
    assert {g["content"]: g["users"]["totalCount"] for g in groups if g["users"]["totalCount"]} == {
        "THUMBS_UP": 1, "HEART": 1}
    # only whoever reacted removes it
    path = "/repos/olivia/app/issues/1/reactions/%d" % first.json["id"]
    assert api(server, "DELETE", path, o).status == 404
    assert api(server, "DELETE", path, walt).status == 204
    assert api(server, "GET", "/repos/olivia/app/issues/1", rita).json["reactions"]["+1"] == 0
    # locked: an outsider may no longer react, a collaborator may
    api(server, "PUT", "/repos/olivia/app/issues/1/lock", o, {})
    assert api(server, "POST", "/repos/olivia/app/issues/1/reactions", out, {"content": "rocket"}).status == 403
    assert api(server, "POST", "/repos/olivia/app/issues/1/reactions", walt, {"content": "rocket"}).status == 201


def test_events_and_the_timeline(server, repo, tmp_path):
    """Each change is an event by whoever made it, written with the change, on every surface (REST and
    GraphQL here; a merge too, with its commit, and the issue it closes); the timeline puts them with the
    comments and reviews in order. Events are in GitHub's shape."""
    from test_graphql import gql
    from conftest import commit_file, git, remote
    o, walt, tess = repo["olivia"], repo["walt"], repo["tess"]
    api(server, "POST", "/repos/olivia/app/issues", walt, {"title": "Crash"})
    api(server, "POST", "/repos/olivia/app/milestones", o, {"title": "v1"})
    api(server, "PATCH", "/repos/olivia/app/issues/1", tess, {"title": "Crash on start", "labels": ["bug"],
                                                              "assignees": ["walt"], "milestone": 1})
    api(server, "POST", "/repos/olivia/app/issues/1/comments", walt, {"body": "looking"})
    api(server, "PUT", "/repos/olivia/app/issues/1/lock", o, {"lock_reason": "resolved"})
    api(server, "DELETE", "/repos/olivia/app/issues/1/labels/bug", tess)
    issue_id = api(server, "GET", "/repos/olivia/app/issues/1", o).json["node_id"]
    gql(server, o, 'mutation($id: ID!) { closeIssue(input: {issueId: $id}) { issue { state } } }', {"id": issue_id})
    events = api(server, "GET", "/repos/olivia/app/issues/1/events", o)
    check("GET", "/repos/olivia/app/issues/1/events", events)
    assert [(e["event"], e["actor"]["login"]) for e in events.json] == [
        ("renamed", "tess"), ("milestoned", "tess"), ("labeled", "tess"), ("assigned", "tess"), ("locked", "olivia"),
        ("unlabeled", "tess"), ("closed", "olivia")]
    by_name = {e["event"]: e for e in events.json}
    assert by_name["renamed"]["rename"] == {"from": "Crash", "to": "Crash on start"}
    assert by_name["labeled"]["label"]["name"] == "bug" and by_name["milestoned"]["milestone"] == {"title": "v1"}
    assert by_name["assigned"]["assignee"]["login"] == "walt" and by_name["locked"]["lock_reason"] == "resolved"
    timeline = [(t["event"], t["actor"]["login"]) for t in api(server, "GET", "/repos/olivia/app/issues/1/timeline",
                                                                o).json]
    assert ("commented", "walt") in timeline and timeline.index(("commented", "walt")) < timeline.index(
        ("locked", "olivia"))
    one = api(server, "GET", "/repos/olivia/app/issues/events/%d" % events.json[0]["id"], o).json
    assert one["event"] == "renamed" and one["issue"]["number"] == 1
    # a merge: the pull request's merged and closed events name the merge commit; the issue it fixes is closed
    api(server, "POST", "/repos/olivia/app/issues", walt, {"title": "Typo"})
    work = str(tmp_path / "w")
    git(str(tmp_path), "clone", "-q", remote(server, "olivia/app", walt), work)
    git(work, "checkout", "-q", "-b", "fix")
    commit_file(work, "fix.txt", "fixed\n")
    git(work, "push", "-q", "origin", "fix")
    api(server, "POST", "/repos/olivia/app/pulls", walt, {"title": "Fix", "head": "fix", "base": "main",
                                                          "body": "Fixes #2"})
    sha = api(server, "PUT", "/repos/olivia/app/pulls/3/merge", o, {}).json["sha"]
    assert [(e["event"], e["commit_id"]) for e in api(server, "GET", "/repos/olivia/app/issues/3/events", o).json] == [
        ("merged", sha), ("closed", sha)]
    assert [(e["event"], e["commit_id"]) for e in api(server, "GET", "/repos/olivia/app/issues/2/events", o).json] == [
        ("closed", sha)]
    latest = api(server, "GET", "/repos/olivia/app/issues/events", o).json
    assert [(e["event"], e["issue"]["number"]) for e in latest[:3]] == [("closed", 2), ("closed", 3), ("merged", 3)]
