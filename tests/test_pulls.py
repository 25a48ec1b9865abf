"""Pull requests with real merges (merge, squash, rebase), reviews and their bad inputs, checked with git."""
import os

import pytest

from conftest import api, commit_file, git, remote, shape_checker

SPEC = shape_checker()


@pytest.fixture
def project(server, tmp_path):
    """alice owns alice/app (public); walt may push, rita may read. A clone with a feature branch pushed."""
    t = {n: server.add_user(n) for n in ("alice", "walt", "rita")}
    api(server, "POST", "/user/repos", t["alice"], {"name": "app", "auto_init": True})
    api(server, "PUT", "/repos/alice/app/collaborators/walt", t["alice"], {"permission": "push"})
    api(server, "PUT", "/repos/alice/app/collaborators/rita", t["alice"], {"permission": "pull"})
    work = str(tmp_path / "work")
    git(str(tmp_path), "clone", "-q", remote(server, "alice/app", t["walt"]), work)
    t["work"] = work
    return t


def branch(work, name, files, base="origin/main"):
    git(work, "checkout", "-q", "-B", name, base)
    shas = [commit_file(work, path, text, "add %s" % path) for path, text in files]
    git(work, "push", "-q", "-f", "origin", name)
    return shas


def fresh_log(server, tmp_path, token, name):
    d = str(tmp_path / name)
    git(str(tmp_path), "clone", "-q", remote(server, "alice/app", token), d)
    return d


def checked(method, path, r):
    if SPEC is not None and r.json is not None:
        assert SPEC.check(method, path, r.status, r.json) == []
    return r


def test_open_review_merge_with_merge_commit(server, project, tmp_path):
    walt, alice, rita, work = project["walt"], project["alice"], project["rita"], project["work"]
    api(server, "POST", "/repos/alice/app/issues", rita, {"title": "needs a feature"})
    shas = branch(work, "feature", [("a.txt", "a\n"), ("b.txt", "b\n")])
    r = checked("POST", "/repos/alice/app/pulls", api(server, "POST", "/repos/alice/app/pulls", walt, {
        "title": "Add a and b", "body": "Fixes #1", "head": "feature", "base": "main"}))
    assert r.status == 201 and r.json["number"] == 2 and r.json["head"]["sha"] == shas[-1]
    assert (r.json["commits"], r.json["additions"], r.json["changed_files"], r.json["mergeable"]) == (2, 2, 2, True)
    assert api(server, "POST", "/repos/alice/app/pulls", walt, {"title": "again", "head": "feature",
                                                                "base": "main"}).status == 422
    # the pull request is an issue too, with a pull_request key
    assert "pull_request" in api(server, "GET", "/repos/alice/app/issues/2", rita).json
    files = checked("GET", "/repos/alice/app/pulls/2/files", api(server, "GET", "/repos/alice/app/pulls/2/files", rita))
    assert [(f["filename"], f["status"], f["additions"]) for f in files.json] == [("a.txt", "added", 1),
                                                                                   ("b.txt", "added", 1)]
    assert [c["sha"] for c in api(server, "GET", "/repos/alice/app/pulls/2/commits", rita).json] == shas
    diff = api(server, "GET", "/repos/alice/app/pulls/2", rita, headers={"Accept": "application/vnd.github.diff"})
    assert diff.headers["content-type"].startswith("text/plain") and b"diff --git a/a.txt b/a.txt" in diff.raw
    assert b"+a" in diff.raw
    patch = api(server, "GET", "/repos/alice/app/pulls/2", rita, headers={"Accept": "application/vnd.github.patch"})
    assert patch.raw.count(b"Subject: [PATCH") == 2 and b"add b.txt" in patch.raw
    # reviews: the author cannot approve; a reader can review; only write may merge
    assert api(server, "POST", "/repos/alice/app/pulls/2/reviews", walt, {"event": "APPROVE"}).status == 422
    r = checked("POST", "/repos/alice/app/pulls/2/reviews", api(server, "POST", "/repos/alice/app/pulls/2/reviews",
                                                                 rita, {"event": "COMMENT", "body": "nice", "comments": [
                                                                     {"path": "a.txt", "line": 1, "body": "why a?"}]}))
    assert r.json["state"] == "COMMENTED"
    assert api(server, "POST", "/repos/alice/app/pulls/2/reviews", alice, {"event": "APPROVE"}).json["state"] == "APPROVED"
    assert [c["body"] for c in api(server, "GET", "/repos/alice/app/pulls/2/comments", rita).json] == ["why a?"]
    assert api(server, "POST", "/repos/alice/app/pulls/2/reviews", rita, {"event": "LGTM"}).status == 422
    r = api(server, "PUT", "/repos/alice/app/pulls/2/merge", rita, {})
    assert r.status == 403 and "merge_pr needs write" in r.json["message"]
    assert api(server, "PUT", "/repos/alice/app/pulls/2/merge", walt, {"sha": "0" * 40}).status == 409
    r = checked("PUT", "/repos/alice/app/pulls/2/merge", api(server, "PUT", "/repos/alice/app/pulls/2/merge", walt,
                                                              {"sha": shas[-1]}))
    assert r.status == 200 and r.json["merged"] is True
    pr = checked("GET", "/repos/alice/app/pulls/2", api(server, "GET", "/repos/alice/app/pulls/2", rita)).json
    assert (pr["state"], pr["merged"], pr["merge_commit_sha"], pr["merged_by"]["login"]) == (
        "closed", True, r.json["sha"], "walt")
    assert api(server, "GET", "/repos/alice/app/issues/1", rita).json["state"] == "closed"      # Fixes #1
    assert api(server, "GET", "/repos/alice/app/pulls/2/merge", rita).status == 204
    assert api(server, "PUT", "/repos/alice/app/pulls/2/merge", walt, {}).status == 405
    d = fresh_log(server, tmp_path, walt, "check")
    assert git(d, "log", "-1", "--format=%B").stdout.startswith("Merge pull request #2 from alice/feature\n\nAdd a and b")
    assert git(d, "rev-parse", "HEAD^1", "HEAD^2").stdout.split() == [git(d, "rev-parse", "HEAD~1").stdout.strip(),
                                                                      shas[-1]]
    assert sorted(os.listdir(d)) == [".git", "README.md", "a.txt", "b.txt"]
    assert git(d, "fsck", "--strict").returncode == 0


def test_squash_and_rebase(server, project, tmp_path):
    walt, work = project["walt"], project["work"]
    branch(work, "squashme", [("s1.txt", "1\n"), ("s2.txt", "2\n")])
    api(server, "POST", "/repos/alice/app/pulls", walt, {"title": "Squash it", "head": "squashme", "base": "main"})
    r = api(server, "PUT", "/repos/alice/app/pulls/1/merge", walt, {"merge_method": "squash"})
    assert r.status == 200
    d = fresh_log(server, tmp_path, walt, "after-squash")
    assert git(d, "log", "--format=%s").stdout.split("\n")[:2] == ["Squash it (#1)", "Initial commit"]
    assert git(d, "log", "-1", "--format=%an <%ae>").stdout.strip() == "walt <walt@users.noreply.agentgit>"
    assert "* add s1.txt" in git(d, "log", "-1", "--format=%b").stdout
    # rebase: both commits replayed on top of a main that moved meanwhile
    rebased = branch(work, "rebaseme", [("r1.txt", "1\n"), ("r2.txt", "2\n")])   # from the old main
    api(server, "POST", "/repos/alice/app/pulls", walt, {"title": "Rebase it", "head": "rebaseme", "base": "main"})
    r = api(server, "PUT", "/repos/alice/app/pulls/2/merge", walt, {"merge_method": "rebase"})
    assert r.status == 200
    d = fresh_log(server, tmp_path, walt, "after-rebase")
    assert git(d, "log", "--format=%s").stdout.split("\n")[:4] == ["add r2.txt", "add r1.txt", "Squash it (#1)",
                                                                   "Initial commit"]
    assert git(d, "rev-parse", "HEAD").stdout.strip() == r.json["sha"] and r.json["sha"] not in rebased
    assert sorted(f for f in os.listdir(d) if f.endswith(".txt")) == ["r1.txt", "r2.txt", "s1.txt", "s2.txt"]
    assert api(server, "PUT", "/repos/alice/app/pulls/2/merge", walt, {"merge_method": "octopus"}).status == 422


def test_conflict_is_405_and_moves_nothing(server, project, tmp_path):
    walt, work = project["walt"], project["work"]
    branch(work, "left", [("same.txt", "left\n")])
    branch(work, "right", [("same.txt", "right\n")])
    api(server, "POST", "/repos/alice/app/pulls", walt, {"title": "left", "head": "left", "base": "main"})
    api(server, "POST", "/repos/alice/app/pulls", walt, {"title": "right", "head": "right", "base": "main"})
    assert api(server, "PUT", "/repos/alice/app/pulls/1/merge", walt, {}).status == 200
    before = git(work, "ls-remote", "origin", "refs/heads/main").stdout
    pr = api(server, "GET", "/repos/alice/app/pulls/2", walt).json
    assert (pr["mergeable"], pr["mergeable_state"]) == (False, "dirty")
    for method in ("merge", "squash", "rebase"):
        r = api(server, "PUT", "/repos/alice/app/pulls/2/merge", walt, {"merge_method": method})
        assert r.status == 405 and r.json["message"] == "Pull Request is not mergeable", method
    assert git(work, "ls-remote", "origin", "refs/heads/main").stdout == before
    assert api(server, "GET", "/repos/alice/app/pulls/2", walt).json["state"] == "open"


def test_three_way_content_merge(server, project, tmp_path):
    """Changes to different lines of one file, merged one after the other, both survive."""
    walt, work = project["walt"], project["work"]
    branch(work, "base", [("poem.txt", "one\ntwo\nthree\nfour\nfive\n")])
    git(work, "push", "-q", "origin", "base:main")
    git(work, "fetch", "-q", "origin")
    branch(work, "top", [("poem.txt", "ONE\ntwo\nthree\nfour\nfive\n")])
    branch(work, "bottom", [("poem.txt", "one\ntwo\nthree\nfour\nFIVE\n")])
    for n, head in ((1, "top"), (2, "bottom")):
        api(server, "POST", "/repos/alice/app/pulls", walt, {"title": head, "head": head, "base": "main"})
    for n, method in ((1, "merge"), (2, "squash")):
        assert api(server, "PUT", "/repos/alice/app/pulls/%d/merge" % n, walt, {"merge_method": method}).status == 200
    d = fresh_log(server, tmp_path, walt, "merged")
    assert open(os.path.join(d, "poem.txt")).read() == "ONE\ntwo\nthree\nfour\nFIVE\n"


def test_bad_pull_requests(server, project):
    walt, work = project["walt"], project["work"]
    branch(work, "feature", [("x.txt", "x\n")])
    cases = [({"title": "t", "head": "nope", "base": "main"}, "head branch nope does not exist"),
             ({"title": "t", "head": "feature", "base": "nope"}, "base branch nope does not exist"),
             ({"title": "t", "head": "main", "base": "main"}, "No commits between main and main"),
             ({"title": "t", "head": "someone:feature", "base": "main"}, "someone has no fork of alice/app"),
             ({"head": "feature", "base": "main"}, None), ({"title": "t", "head": 3, "base": "main"}, None)]
    for body, message in cases:
        r = api(server, "POST", "/repos/alice/app/pulls", walt, body)
        assert r.status == 422, body
        if message:
            assert message in r.json["errors"][0]["message"], r.json
    assert api(server, "GET", "/repos/alice/app/pulls/9", walt).status == 404
    api(server, "POST", "/repos/alice/app/issues", walt, {"title": "plain issue"})
    assert api(server, "GET", "/repos/alice/app/pulls/1", walt).status == 404        # an issue, not a PR


def test_push_updates_open_pr_and_close_reopen(server, project):
    walt, work, rita = project["walt"], project["work"], project["rita"]
    branch(work, "grow", [("g1.txt", "1\n")])
    api(server, "POST", "/repos/alice/app/pulls", walt, {"title": "grow", "head": "grow", "base": "main"})
    sha = commit_file(work, "g2.txt", "2\n")
    git(work, "push", "-q", "origin", "grow")
    pr = api(server, "GET", "/repos/alice/app/pulls/1", walt).json
    assert (pr["head"]["sha"], pr["commits"]) == (sha, 2)
    assert [p["number"] for p in api(server, "GET", "/repos/alice/app/pulls?head=alice:grow", rita).json] == [1]
    r = api(server, "POST", "/repos/alice/app/pulls/1/requested_reviewers", walt, {"reviewers": ["rita"]})
    assert r.status == 201 and [u["login"] for u in r.json["requested_reviewers"]] == ["rita"]
    assert api(server, "POST", "/repos/alice/app/pulls/1/requested_reviewers", walt, {"reviewers": ["walt"]}).status == 422
    assert api(server, "PATCH", "/repos/alice/app/pulls/1", rita, {"state": "closed"}).status == 403
    r = api(server, "PATCH", "/repos/alice/app/pulls/1", walt, {"state": "closed", "title": "grown"})
    assert (r.json["state"], r.json["title"]) == ("closed", "grown")
    assert api(server, "GET", "/repos/alice/app/pulls", rita).json == []
    assert api(server, "PATCH", "/repos/alice/app/pulls/1", walt, {"state": "open"}).json["state"] == "open"


def test_update_branch(server):
    """The base's new commits merged into the head branch (GitHub's Update branch), decided as a push to
    the head branch; nothing moves on a conflict."""
    import base64
    alice, walt = server.add_user("alice"), server.add_user("walt")
    api(server, "POST", "/user/repos", alice, {"name": "app", "auto_init": True})
    api(server, "PUT", "/repos/alice/app/collaborators/walt", alice, {"permission": "pull"})
    main = api(server, "GET", "/repos/alice/app/git/ref/heads/main", alice).json["object"]["sha"]

    def put(path, text, branch="main"):
        return api(server, "PUT", "/repos/alice/app/contents/" + path, alice, {
            "message": "edit " + path, "content": base64.b64encode(text.encode()).decode(), "branch": branch}).json
    for branch in ("fix", "clash"):
        api(server, "POST", "/repos/alice/app/git/refs", alice, {"ref": "refs/heads/" + branch, "sha": main})
    put("fix.txt", "fix\n", "fix")
    put("shared.txt", "from clash\n", "clash")
    for head in ("fix", "clash"):
        api(server, "POST", "/repos/alice/app/pulls", alice, {"title": head, "head": head, "base": "main"})
    r = api(server, "PUT", "/repos/alice/app/pulls/1/update-branch", alice, {})
    assert r.status == 422 and "no new commits" in r.json["message"]
    put("shared.txt", "from main\n")
    assert api(server, "PUT", "/repos/alice/app/pulls/1/update-branch", walt, {}).status == 403   # walt reads only
    before = api(server, "GET", "/repos/alice/app/git/ref/heads/fix", alice).json["object"]["sha"]
    assert api(server, "PUT", "/repos/alice/app/pulls/1/update-branch", alice,
               {"expected_head_sha": "0" * 40}).status == 422
    r = api(server, "PUT", "/repos/alice/app/pulls/1/update-branch", alice, {"expected_head_sha": before})
    assert r.status == 202
    head = api(server, "GET", "/repos/alice/app/commits/fix", alice).json
    assert [p["sha"] for p in head["parents"]][0] == before and head["commit"]["message"] == "Merge branch 'main' into fix"
    assert api(server, "GET", "/repos/alice/app/contents/shared.txt?ref=fix", alice).json["content"].strip() == \
        base64.b64encode(b"from main\n").decode()
    clash = api(server, "GET", "/repos/alice/app/git/ref/heads/clash", alice).json["object"]["sha"]
    r = api(server, "PUT", "/repos/alice/app/pulls/2/update-branch", alice, {})
    assert r.status == 422 and "conflict" in r.json["message"] and "shared.txt" in r.json["message"]
    assert api(server, "GET", "/repos/alice/app/git/ref/heads/clash", alice).json["object"]["sha"] == clash


def test_pending_review_is_its_authors_alone_until_submitted(server, project):
    """A review created without an event is pending: rita adds comments to it (REST and GraphQL), nobody
    else sees it or its comments, branch protection does not count it, and she has one at a time; she
    submits it, or deletes another. Submitted, it cannot be deleted or submitted again."""
    from test_graphql import gql
    walt, alice, rita, work = project["walt"], project["alice"], project["rita"], project["work"]
    branch(work, "feature", [("a.txt", "a\n")])
    api(server, "PUT", "/repos/alice/app/collaborators/rita", alice, {"permission": "push"})
    api(server, "PUT", "/repos/alice/app/branches/main/protection", alice, {
        "required_status_checks": None, "enforce_admins": True, "restrictions": None,
        "required_pull_request_reviews": {"required_approving_review_count": 1}})
    api(server, "POST", "/repos/alice/app/pulls", walt, {"title": "A", "head": "feature", "base": "main"})
    pending = checked("POST", "/repos/alice/app/pulls/1/reviews", api(
        server, "POST", "/repos/alice/app/pulls/1/reviews", rita, {"comments": [
            {"path": "a.txt", "line": 1, "body": "first thought"}]}))
    assert (pending.status, pending.json["state"], "submitted_at" in pending.json) == (200, "PENDING", False)
    again = api(server, "POST", "/repos/alice/app/pulls/1/reviews", rita, {})
    assert again.status == 422 and "one pending review" in again.raw.decode()
    # a second comment by GraphQL, as github-mcp-server adds it
    thread = gql(server, rita, 'mutation($r: ID!) { addPullRequestReviewThread(input: {pullRequestReviewId: $r,'
                 ' path: "a.txt", body: "second thought", line: 1, side: RIGHT, subjectType: LINE})'
                 ' { thread { id path line } } }', {"r": pending.json["node_id"]})
    assert thread["data"]["addPullRequestReviewThread"]["thread"]["path"] == "a.txt", thread
    # hidden from walt, in REST and GraphQL; shown to rita
    for token, seen in ((walt, []), (rita, ["PENDING"])):
        assert [r["state"] for r in api(server, "GET", "/repos/alice/app/pulls/1/reviews", token).json] == seen
        answer = gql(server, token, '{ repository(owner: "alice", name: "app") { pullRequest(number: 1) {'
                     ' reviews(first: 5, author: "rita") { nodes { state } } } } }')
        assert [n["state"] for n in answer["data"]["repository"]["pullRequest"]["reviews"]["nodes"]] == seen
    assert api(server, "GET", "/repos/alice/app/pulls/1/comments", walt).json == []
    assert api(server, "GET", "/repos/alice/app/pulls/1/reviews/%d" % pending.json["id"], walt).status == 404
    assert api(server, "POST", "/repos/alice/app/pulls/1/reviews/%d/events" % pending.json["id"], walt,
               {"event": "COMMENT", "body": "x"}).status == 404
    assert api(server, "GET", "/repos/alice/app/pulls/1", walt).json["review_comments"] == 0
    # submitted as an approval: now everyone sees it and both comments, and it counts
    r = checked("POST", "/repos/alice/app/pulls/1/reviews/1/events", api(
        server, "POST", "/repos/alice/app/pulls/1/reviews/%d/events" % pending.json["id"], rita, {"event": "APPROVE"}))
    assert (r.json["state"], "submitted_at" in r.json) == ("APPROVED", True)
    assert [c["body"] for c in api(server, "GET", "/repos/alice/app/pulls/1/comments", walt).json] == [
        "first thought", "second thought"]
    assert api(server, "DELETE", "/repos/alice/app/pulls/1/reviews/%d" % pending.json["id"], rita).status == 422
    # alice's pending change request is deleted, never submitted: the merge goes by rita's approval
    mine = gql(server, alice, 'mutation($p: ID!) { addPullRequestReview(input: {pullRequestId: $p}) {'
               ' pullRequestReview { id state } } }',
               {"p": api(server, "GET", "/repos/alice/app/pulls/1", alice).json["node_id"]})
    review = mine["data"]["addPullRequestReview"]["pullRequestReview"]
    assert review["state"] == "PENDING"
    deleted = gql(server, alice, 'mutation($r: ID!) { deletePullRequestReview(input: {pullRequestReviewId: $r}) {'
                  ' pullRequestReview { state } } }', {"r": review["id"]})
    assert deleted["data"]["deletePullRequestReview"]["pullRequestReview"]["state"] == "PENDING", deleted
    assert api(server, "PUT", "/repos/alice/app/pulls/1/merge", walt, {}).json["merged"] is True


def test_the_pull_requests_a_commit_belongs_to(server):
    """GET /repos/{o}/{r}/commits/{sha}/pulls (release tools ask it after a push): the head commit's pull
    request, and after the merge the merge commit's; it was swallowed by /commits/{ref} and answered 404."""
    alice = server.add_user("alice")
    api(server, "POST", "/user/repos", alice, {"name": "app", "auto_init": True})
    main = api(server, "GET", "/repos/alice/app/git/ref/heads/main", alice).json["object"]["sha"]
    api(server, "POST", "/repos/alice/app/git/refs", alice, {"ref": "refs/heads/feature", "sha": main})
    head = api(server, "PUT", "/repos/alice/app/contents/f.txt", alice, {"message": "f", "content": "Zgo=",
                                                                          "branch": "feature"}).json["commit"]["sha"]
    number = api(server, "POST", "/repos/alice/app/pulls", alice, {"title": "F", "head": "feature",
                                                                   "base": "main"}).json["number"]
    found = api(server, "GET", "/repos/alice/app/commits/%s/pulls" % head, alice)
    assert found.status == 200 and [p["number"] for p in found.json] == [number]
    if SPEC:
        assert SPEC.check("GET", "/repos/alice/app/commits/%s/pulls" % head, 200, found.json) == []
    merged = api(server, "PUT", "/repos/alice/app/pulls/%d/merge" % number, alice, {}).json["sha"]
    assert [p["number"] for p in api(server, "GET", "/repos/alice/app/commits/%s/pulls" % merged, alice).json] == [number]
    assert api(server, "GET", "/repos/alice/app/commits/%s/pulls" % main, alice).json == []
    assert api(server, "GET", "/repos/alice/app/commits/%s/pulls" % ("f" * 40), alice).status == 422


def test_single_review_comments_and_replies(server, project):
    """A review comment on its own (what bots post on a line) is a submitted COMMENT review holding it; a
    reply (in_reply_to, or the replies route) lands in its thread, on its path and line. Each is readable
    alone, in GitHub's shape; a path the pull request does not change, or a thread that is not there, is
    refused."""
    walt, rita, work = project["walt"], project["rita"], project["work"]
    branch(work, "feature", [("a.txt", "a\nb\n")])
    api(server, "POST", "/repos/alice/app/pulls", walt, {"title": "A", "head": "feature", "base": "main"})
    first = checked("POST", "/repos/alice/app/pulls/1/comments", api(
        server, "POST", "/repos/alice/app/pulls/1/comments", rita, {"body": "why b?", "path": "a.txt", "line": 2,
                                                                   "side": "RIGHT"}))
    assert first.status == 201 and (first.json["path"], first.json["line"]) == ("a.txt", 2)
    reply = api(server, "POST", "/repos/alice/app/pulls/1/comments", walt, {"body": "because", "in_reply_to":
                                                                          first.json["id"]})
    also = api(server, "POST", "/repos/alice/app/pulls/1/comments/%d/replies" % first.json["id"], rita,
               {"body": "fair"})
    assert reply.status == 201 and also.status == 201
    assert [(c["path"], c["line"]) for c in (reply.json, also.json)] == [("a.txt", 2), ("a.txt", 2)]
    got = checked("GET", "/repos/alice/app/pulls/comments/%d" % reply.json["id"], api(
        server, "GET", "/repos/alice/app/pulls/comments/%d" % reply.json["id"], rita))
    assert got.json["body"] == "because" and got.json["user"]["login"] == "walt"
    react = api(server, "POST", "/repos/alice/app/pulls/comments/%d/reactions" % reply.json["id"], rita,
                {"content": "hooray"})
    assert react.status == 201 and api(server, "GET", "/repos/alice/app/pulls/comments/%d" % reply.json["id"],
                                       rita).json["reactions"]["hooray"] == 1
    reviews = api(server, "GET", "/repos/alice/app/pulls/1/reviews", rita).json
    assert [(r["user"]["login"], r["state"]) for r in reviews] == [("rita", "COMMENTED"), ("walt", "COMMENTED"),
                                                                   ("rita", "COMMENTED")]
    assert api(server, "POST", "/repos/alice/app/pulls/1/comments", rita, {"body": "x", "path": "nope.txt",
                                                                          "line": 1}).status == 422
    assert api(server, "POST", "/repos/alice/app/pulls/1/comments", rita, {"body": "x", "in_reply_to": 999}).status == 404
    assert api(server, "POST", "/repos/alice/app/pulls/1/comments", rita, {"path": "a.txt", "line": 1}).status == 422
    assert api(server, "GET", "/repos/alice/app/pulls/comments/999", rita).status == 404
