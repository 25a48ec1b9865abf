"""Bad input never gets a 500: every route, with its path filled in, is sent bodies of the wrong shape
and values of the wrong type, as the owner (by token and by web session), an outsider and anonymously."""
import json

import agentgit
from conftest import Browser, api, call, ext, sweep

pytestmark = sweep

# What a route's path parameters are filled with: names that exist, so the handler gets past its lookups
VALUES = {"owner": "alice", "repo": "demo", "org": "acme", "username": "alice", "login": "alice", "slug": "devs",
          "team_slug": "devs", "branch": "main", "ref": "heads/main", "tag": "v1", "path": "README.md",
          "name": "bug", "basehead": "main...main", "workflow_id": "ci.yml", "sha": "main", "commit_sha": "main",
          "file_sha": "0" * 40, "tree_sha": "main", "grant_id": "tg_x", "approval_id": "ap_x", "freeze_id": "fz_x"}
JSON = "application/json"
BODIES = [(None, JSON), ("[]", JSON), ('"text"', JSON), ("{", JSON), ("\xff\xfe", JSON),
          (json.dumps({"title": 5, "name": [], "body": {}, "state": 7, "ref": None, "sha": 1, "labels": "x",
                       "permission": 3, "tag_name": {}, "resource": 9, "actions": "x", "constraints": 1,
                       "otp": [], "query": 3, "variables": [], "event": {}, "head": 1, "base": []}), JSON),
          ("csrf=x&action=unbind&agent=%00&totp=1&approval_id=", "application/x-www-form-urlencoded")]


def path_of(segments):
    parts = []
    for kind, name in segments:
        if kind == "literal":
            parts.append(name)
        elif kind == "int":
            parts.append("1")
        else:
            parts.append(VALUES.get(name, "x"))
    return "/" + "/".join(parts)


def test_no_route_answers_500(server):
    alice, outsider = server.add_user("alice", password="pw"), server.add_user("mallory")
    browser = Browser(server)
    browser.sign_in("alice", "pw")
    session = {"Cookie": "; ".join("%s=%s" % kv for kv in browser.jar.items())}
    ext(server, "POST", "/user/orgs", alice, {"login": "acme"})
    api(server, "POST", "/orgs/acme/teams", alice, {"name": "devs"})
    api(server, "POST", "/user/repos", alice, {"name": "demo", "auto_init": True})
    api(server, "POST", "/repos/alice/demo/issues", alice, {"title": "one"})
    failures = []
    for method, routes in sorted(agentgit.ROUTES.items()):
        for route in routes:
            path = path_of(route.segments)
            for token, cookie in ((alice, {}), (outsider, {}), (None, {}), (None, session)):
                for body, kind in BODIES:
                    r = call(server, method, path, token, raw_body=body.encode("latin-1") if body else None,
                             headers=dict(cookie, **{"Content-Type": kind}))
                    if r.status >= 500:
                        failures.append((method, path, body, r.status, r.raw[:200]))
    assert failures == [], failures[:10]
