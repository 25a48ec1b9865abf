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
    gh(env, "api", "-X", "PUT", "repos/alice/payments/contents/refund.py", "-f", "message=add",
       "-f", "content=ZGVmIHJlZnVuZCgpOiBwYXNzCg==")                                 # def refund(): pass
    code = json.loads(gh(env, "search", "code", "refund", "--json", "path,repository").stdout)
    assert [(c["path"], c["repository"]["nameWithOwner"]) for c in code] == [("refund.py", "alice/payments")]


def test_code_search(server):
    """Words in the default branch's text files of readable repositories only; path:, filename:, extension:."""
    import base64
    alice, bob = server.add_user("alice"), server.add_user("bob")
    api(server, "POST", "/user/repos", alice, {"name": "app", "auto_init": True})
    api(server, "POST", "/user/repos", alice, {"name": "secret", "private": True, "auto_init": True})
    for repo, path, text in (("app", "src/pay.py", "def charge(card):\n    return Stripe.charge(card)\n"),
                             ("app", "docs/pay.md", "How we charge cards."),
                             ("secret", "keys.py", "charge_key = 'sk_live'\n")):
        api(server, "PUT", "/repos/alice/%s/contents/%s" % (repo, path), alice,
            {"message": "add", "content": base64.b64encode(text.encode()).decode()})

    def found(q, token=bob):
        r = api(server, "GET", "/search/code?q=" + q, token)
        assert r.status == 200, r
        return sorted("%s:%s" % (i["repository"]["full_name"], i["path"]) for i in r.json["items"])
    assert found("charge") == ["alice/app:docs/pay.md", "alice/app:src/pay.py"]          # not alice/secret
    assert found("charge", alice) == ["alice/app:docs/pay.md", "alice/app:src/pay.py", "alice/secret:keys.py"]
    assert found("STRIPE+card") == ["alice/app:src/pay.py"]                               # all words, any case
    assert found("charge+extension:md") == ["alice/app:docs/pay.md"]
    assert found("charge+path:src") == ["alice/app:src/pay.py"]
    assert found("filename:keys.py", alice) == ["alice/secret:keys.py"] and found("filename:keys.py") == []
    assert found("charge+repo:alice/secret") == []
    assert api(server, "GET", "/search/code?q=", bob).status == 422
    if SPEC:
        r = api(server, "GET", "/search/code?q=charge", bob)
        assert SPEC.check("GET", "/search/code", 200, r.json) == []
