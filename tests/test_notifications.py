"""Notifications: alice's inbox fills as bob works on her repository, with GitHub's reasons; she reads,
finishes, ignores; bob watches and stops; nobody is told of, or sees, a repository they cannot read."""
from conftest import api, shape_checker

SPEC = shape_checker()


def inbox(server, token, query=""):
    r = api(server, "GET", "/notifications" + query, token)
    assert r.status == 200, r
    if SPEC is not None:
        assert SPEC.check("GET", "/notifications", 200, r.json) == []
    return [(t["subject"]["title"], t["reason"], t["unread"]) for t in r.json]


def test_an_inbox_with_githubs_reasons(server):
    alice, bob, carol = (server.add_user(n) for n in ("alice", "bob", "carol"))
    api(server, "POST", "/user/repos", alice, {"name": "demo", "auto_init": True})
    api(server, "PUT", "/repos/alice/demo/collaborators/bob", alice, {"permission": "push"})
    api(server, "POST", "/repos/alice/demo/issues", bob, {"title": "Crash", "body": "it breaks"})
    # alice watches her own repository; bob, who acted, is not told of his own issue
    assert inbox(server, alice) == [("Crash", "subscribed", True)]
    assert inbox(server, bob) == []
    api(server, "POST", "/repos/alice/demo/issues/1/comments", alice, {"body": "@bob which version? cc @carol"})
    assert inbox(server, bob) == [("Crash", "mention", True)]
    assert inbox(server, carol) == [("Crash", "mention", True)]       # a public repository: carol may read it
    api(server, "PATCH", "/repos/alice/demo/issues/1", alice, {"assignees": ["bob"]})
    assert inbox(server, bob) == [("Crash", "assign", True)]
    api(server, "POST", "/repos/alice/demo/issues/1/comments", bob, {"body": "2.1"})
    assert inbox(server, alice) == [("Crash", "comment", True)]      # she has commented: that is her reason now
    assert inbox(server, bob) == [("Crash", "assign", True)]          # his own comment changes nothing for him

    # read one thread: out of the default list, still in all=true; marked done: out of both
    thread = api(server, "GET", "/notifications", alice).json[0]
    assert thread["subject"]["latest_comment_url"].endswith("/issues/comments/2")
    assert api(server, "PATCH", "/notifications/threads/" + thread["id"], alice).status == 205
    assert inbox(server, alice) == [] and inbox(server, alice, "?all=true") == [("Crash", "comment", False)]
    assert api(server, "GET", "/notifications/threads/" + thread["id"], bob).status == 404   # not his
    assert api(server, "DELETE", "/notifications/threads/" + thread["id"], alice).status == 204
    assert inbox(server, alice, "?all=true") == []
    # something new brings a finished thread back; ignoring it keeps it quiet
    api(server, "POST", "/repos/alice/demo/issues/1/comments", bob, {"body": "more"})
    assert inbox(server, alice) == [("Crash", "comment", True)]
    r = api(server, "PUT", "/notifications/threads/%s/subscription" % thread["id"], alice, {"ignored": True})
    assert (r.status, r.json["ignored"], r.json["subscribed"]) == (200, True, False)
    api(server, "PUT", "/notifications", alice, {})
    api(server, "POST", "/repos/alice/demo/issues/1/comments", bob, {"body": "even more"})
    assert inbox(server, alice) == []

    # a pull request: review requested, then the review reaches its author
    api(server, "POST", "/repos/alice/demo/git/refs", bob, {
        "ref": "refs/heads/fix", "sha": api(server, "GET", "/repos/alice/demo/branches/main", bob).json["commit"]["sha"]})
    api(server, "PUT", "/repos/alice/demo/contents/fix.txt", bob, {"message": "fix", "content": "Zml4", "branch": "fix"})
    api(server, "POST", "/repos/alice/demo/pulls", bob, {"title": "Fix crash", "head": "fix", "base": "main"})
    api(server, "POST", "/repos/alice/demo/pulls/2/requested_reviewers", bob, {"reviewers": ["alice"]})
    assert inbox(server, alice) == [("Fix crash", "review_requested", True)]
    api(server, "POST", "/repos/alice/demo/pulls/2/reviews", alice, {"event": "APPROVE"})
    assert ("Fix crash", "author", True) in inbox(server, bob)
    assert inbox(server, carol, "?participating=true") == [("Crash", "mention", True)]


def test_watching_and_private_repositories(server):
    alice, bob, carol = (server.add_user(n) for n in ("alice", "bob", "carol"))
    api(server, "POST", "/user/repos", alice, {"name": "secret", "private": True, "auto_init": True})
    api(server, "PUT", "/repos/alice/secret/collaborators/bob", alice, {"permission": "pull"})
    assert api(server, "GET", "/repos/alice/secret/subscription", bob).status == 404        # not watching
    r = api(server, "PUT", "/repos/alice/secret/subscription", bob, {"subscribed": True})
    assert (r.status, r.json["subscribed"], r.json["ignored"]) == (200, True, False)
    assert api(server, "GET", "/repos/alice/secret/subscription", bob).json["subscribed"] is True
    assert api(server, "PUT", "/repos/alice/secret/subscription", carol, {"subscribed": True}).status == 404
    api(server, "POST", "/repos/alice/secret/issues", alice, {"title": "Plan", "body": "for @carol too"})
    assert inbox(server, bob) == [("Plan", "subscribed", True)]
    assert inbox(server, carol) == []          # mentioned, but she cannot read it: never told
    # bob loses access: his thread is not shown, and opening it is 404
    thread = api(server, "GET", "/notifications", bob).json[0]["id"]
    api(server, "DELETE", "/repos/alice/secret/collaborators/bob", alice)
    assert inbox(server, bob) == []
    assert api(server, "GET", "/notifications/threads/" + thread, bob).status == 404
    # alice stops watching her own repository: nothing more from it
    assert api(server, "DELETE", "/repos/alice/secret/subscription", alice).status == 204
    assert api(server, "GET", "/repos/alice/secret/subscription", alice).status == 404
    api(server, "POST", "/user/repos", carol, {"name": "c", "auto_init": True})
    api(server, "POST", "/repos/alice/secret/issues", bob, {"title": "x"})     # bob can no longer open one
    assert inbox(server, alice) == []
