"""Search: GitHub's query syntax over what the caller may read, for REST clients and `gh search`."""
import json

from conftest import GH_HOST, api, gh, shape_checker

SPEC = shape_checker()


def test_search_repositories_and_issues(server):
    alice, bob = server.add_user("alice"), server.add_user("bob")
    api(server, "POST", "/user/repos", alice, {"name": "payments", "description": "Pays things", "auto_init": True})
    api(server, "POST", "/user/repos", alice, {"name": "secret-payments", "private": True})
    api(server, "POST", "/user/repos", bob, {"name": "notes"})
    api(server, "POST", "/repos/alice/payments/issues", alice, {"title": "Refund crash", "body": "ask @bob"})
    api(server, "POST", "/repos/alice/payments/issues", bob, {"title": "Docs typo"})
    api(server, "POST", "/repos/alice/secret-payments/issues", alice, {"title": "Secret crash"})
    api(server, "PATCH", "/repos/alice/payments/issues/2", alice, {"state": "closed", "labels": ["docs"]})
    r = api(server, "GET", "/search/repositories?q=payments", bob)
    assert [i["full_name"] for i in r.json["items"]] == ["alice/payments"]          # the private one is hidden
    if SPEC:
        assert SPEC.check("GET", "/search/repositories", 200, r.json) == []
    names = [i["full_name"] for i in api(server, "GET", "/search/repositories?q=payments+is:private", alice).json["items"]]
    assert names == ["alice/secret-payments"]
    assert [i["full_name"] for i in api(server, "GET", "/search/repositories?q=user:bob", alice).json["items"]] == [
        "bob/notes"]
    r = api(server, "GET", "/search/issues?q=crash", bob)
    assert [i["title"] for i in r.json["items"]] == ["Refund crash"]
    if SPEC:
        assert SPEC.check("GET", "/search/issues", 200, r.json) == []
    assert [i["title"] for i in api(server, "GET", "/search/issues?q=crash", alice).json["items"]] == [
        "Secret crash", "Refund crash"]
    q = "/search/issues?q=repo:alice/payments+is:closed+label:docs+author:bob"
    assert [i["number"] for i in api(server, "GET", q, alice).json["items"]] == [2]
    assert [i["number"] for i in api(server, "GET", "/search/issues?q=mentions:bob", alice).json["items"]] == [1]
    assert api(server, "GET", "/search/issues?q=", alice).status == 422


def test_gh_search(gh_server):
    srv, env = gh_server
    token = srv.add_user("alice")
    gh(env, "auth", "login", "--hostname", GH_HOST, "--with-token", stdin=token + "\n")
    gh(env, "api", "-X", "POST", "user/repos", "-f", "name=payments", "-f", "description=Pays things")
    gh(env, "api", "-X", "POST", "repos/alice/payments/issues", "-f", "title=Refund crash")
    repos = json.loads(gh(env, "search", "repos", "payments", "--json", "fullName,description").stdout)
    assert repos == [{"fullName": "alice/payments", "description": "Pays things"}]
    issues = gh(env, "search", "issues", "crash").stdout
    assert "Refund crash" in issues and "alice/payments" in issues
