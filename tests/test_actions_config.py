"""What workflows would be configured with: environments, organization and environment secrets and
variables, deploy keys; in GitHub's shapes, refusing bad input and whoever may not see them."""
import base64
import subprocess

import pytest

from conftest import api, ext, shape_checker

SPEC = shape_checker()


def checked(method, path, r, status):
    assert r.status == status, r
    if SPEC is not None and r.json is not None:
        assert SPEC.check(method, path, r.status, r.json) == []
    return r.json


@pytest.fixture
def acme(server):
    """alice owns acme (repositories web, private, and api, public); mona is a member; eve is no one."""
    tokens = {n: server.add_user(n) for n in ("alice", "mona", "eve")}
    ext(server, "POST", "/user/orgs", tokens["alice"], {"login": "acme"})
    api(server, "PUT", "/orgs/acme/memberships/mona", tokens["alice"], {"role": "member"})
    ids = {name: api(server, "POST", "/orgs/acme/repos", tokens["alice"], {"name": name, "private": private}).json["id"]
           for name, private in (("web", True), ("api", False))}
    return tokens, ids


def sealed(server, token, path):
    key_id = api(server, "GET", path + "/public-key", token).json["key_id"]
    return {"encrypted_value": base64.b64encode(bytes(60)).decode(), "key_id": key_id}


def test_organization_secrets_and_variables_with_a_selection(server, acme):
    tokens, ids = acme
    alice = tokens["alice"]
    secrets = "/orgs/acme/actions/secrets"
    box = sealed(server, alice, secrets)
    assert api(server, "PUT", secrets + "/NPM", alice, box).status == 422          # a new one needs a visibility
    assert api(server, "PUT", secrets + "/NPM", alice, dict(box, visibility="everyone")).status == 422
    assert api(server, "PUT", secrets + "/NPM", alice, dict(box, visibility="selected",
                                                          selected_repository_ids=[999])).status == 422
    assert api(server, "PUT", secrets + "/NPM", alice, dict(box, visibility="selected",
                                                          selected_repository_ids=[ids["web"]])).status == 201
    assert api(server, "PUT", secrets + "/NPM", alice, box).status == 204           # an update keeps its selection
    listed = checked("GET", "/orgs/{org}/actions/secrets", api(server, "GET", secrets, alice), 200)
    assert [(s["name"], s["visibility"]) for s in listed["secrets"]] == [("NPM", "selected")]
    assert listed["secrets"][0]["selected_repositories_url"].endswith("/orgs/acme/actions/secrets/NPM/repositories")
    assert "encrypted_value" not in api(server, "GET", secrets + "/NPM", alice).raw.decode()
    repos = secrets + "/NPM/repositories"
    chosen = checked("GET", "/orgs/{org}/actions/secrets/{secret_name}/repositories", api(server, "GET", repos, alice), 200)
    assert [r["name"] for r in chosen["repositories"]] == ["web"]
    assert api(server, "PUT", repos + "/%d" % ids["api"], alice).status == 204
    assert api(server, "DELETE", repos + "/%d" % ids["web"], alice).status == 204
    assert [r["name"] for r in api(server, "GET", repos, alice).json["repositories"]] == ["api"]
    assert api(server, "PUT", repos, alice, {"selected_repository_ids": [ids["web"], ids["api"]]}).status == 204
    assert api(server, "GET", repos, alice).json["total_count"] == 2
    # a member is no admin; an outsider; a variable for all repositories cannot take a selection
    for token in (tokens["mona"], tokens["eve"]):
        assert api(server, "GET", secrets, token).status == 403
    variables = "/orgs/acme/actions/variables"
    assert api(server, "POST", variables, alice, {"name": "REGION", "value": "eu"}).status == 422   # visibility
    assert api(server, "POST", variables, alice, {"name": "REGION", "value": "eu", "visibility": "all"}).status == 201
    got = checked("GET", "/orgs/{org}/actions/variables/{name}", api(server, "GET", variables + "/REGION", alice), 200)
    assert (got["value"], got["visibility"]) == ("eu", "all")
    assert api(server, "PUT", variables + "/REGION/repositories/%d" % ids["web"], alice).status == 409
    assert api(server, "PATCH", variables + "/REGION", alice, {"name": "ZONE", "visibility": "private"}).status == 204
    assert [(v["name"], v["visibility"]) for v in api(server, "GET", variables, alice).json["variables"]] == [
        ("ZONE", "private")]
    assert api(server, "DELETE", secrets + "/NPM", alice).status == 204
    assert server.app.store.one("SELECT COUNT(*) AS n FROM org_selected_repos")["n"] == 0


def test_an_environment_with_its_own_secrets_and_variables(server, acme):
    tokens, ids = acme
    alice, mona = tokens["alice"], tokens["mona"]
    api(server, "PUT", "/repos/acme/web/collaborators/mona", alice, {"permission": "push"})
    path = "/repos/acme/web/environments/production"
    for body in ({"wait_timer": -1}, {"wait_timer": 50000}, {"reviewers": [{"type": "Team", "id": 1}]},
                 {"reviewers": [{"type": "User", "id": 999}]},
                 {"deployment_branch_policy": {"protected_branches": True, "custom_branch_policies": True}}):
        assert api(server, "PUT", path, alice, body).status == 422, body
    assert api(server, "PUT", "/repos/acme/web/environments/a%2Fb", alice, {}).status in (404, 422)
    assert api(server, "PUT", path, mona, {}).status == 403                        # environments are the admin's
    mona_id = api(server, "GET", "/users/mona", alice).json["id"]
    made = checked("PUT", "/repos/{owner}/{repo}/environments/{environment_name}", api(server, "PUT", path, alice, {
        "wait_timer": 30, "reviewers": [{"type": "User", "id": mona_id}],
        "deployment_branch_policy": {"protected_branches": True, "custom_branch_policies": False}}), 200)
    assert [r["type"] for r in made["protection_rules"]] == ["wait_timer", "required_reviewers"]
    assert made["protection_rules"][1]["reviewers"][0]["reviewer"]["login"] == "mona"
    listed = checked("GET", "/repos/{owner}/{repo}/environments",
                     api(server, "GET", "/repos/acme/web/environments", mona), 200)
    assert [e["name"] for e in listed["environments"]] == ["production"]
    box = sealed(server, alice, path + "/secrets")
    assert api(server, "PUT", path + "/secrets/DB", mona, box).status == 201      # secrets: write, as the repository's
    assert api(server, "POST", path + "/variables", mona, {"name": "URL", "value": "https://web"}).status == 201
    secrets = checked("GET", "/repos/{owner}/{repo}/environments/{environment_name}/secrets",
                      api(server, "GET", path + "/secrets", mona), 200)
    assert [s["name"] for s in secrets["secrets"]] == ["DB"]
    assert api(server, "GET", "/repos/acme/web/actions/secrets", alice).json["total_count"] == 0   # not the repository's
    by_id = "/repositories/%d/environments/production/variables/URL" % ids["web"]
    assert api(server, "GET", by_id, mona).json["value"] == "https://web"
    assert api(server, "GET", by_id, tokens["eve"]).status == 404
    assert api(server, "GET", "/repos/acme/web/environments/staging/secrets", alice).status == 404
    assert api(server, "DELETE", path, alice).status == 204
    assert api(server, "GET", path + "/variables/URL", alice).status == 404


def test_deploy_keys(server, tmp_path):
    alice, bob = server.add_user("alice"), server.add_user("bob")
    for name in ("app", "other"):
        api(server, "POST", "/user/repos", alice, {"name": name, "private": True})
    api(server, "PUT", "/repos/alice/app/collaborators/bob", alice, {"permission": "push"})
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "deploy", "-f", str(tmp_path / "k")], check=True)
    key = (tmp_path / "k.pub").read_text().strip()
    for bad in ("", "ssh-ed25519", "ssh-dss AAAAB3NzaC1kc3MAAACBAP", "ssh-rsa " + key.split()[1], "x" * 20000):
        assert api(server, "POST", "/repos/alice/app/keys", alice, {"key": bad}).status == 422, bad[:20]
    assert api(server, "POST", "/repos/alice/app/keys", bob, {"key": key}).status == 403     # admins only
    made = checked("POST", "/repos/{owner}/{repo}/keys", api(server, "POST", "/repos/alice/app/keys", alice, {
        "key": key, "title": "ci", "read_only": False}), 201)
    assert (made["key"], made["read_only"], made["added_by"]) == (" ".join(key.split()[:2]), False, "alice")
    again = api(server, "POST", "/repos/alice/other/keys", alice, {"key": key})
    assert again.status == 422 and "already in use" in again.raw.decode()
    listed = checked("GET", "/repos/{owner}/{repo}/keys", api(server, "GET", "/repos/alice/app/keys", alice), 200)
    assert [k["title"] for k in listed] == ["ci"]
    assert api(server, "GET", "/repos/alice/app/keys", bob).status == 403
    assert api(server, "GET", "/repos/alice/other/keys/%d" % made["id"], alice).status == 404
    assert api(server, "DELETE", "/repos/alice/app/keys/%d" % made["id"], alice).status == 204
    assert api(server, "POST", "/repos/alice/other/keys", alice, {"key": key}).status == 201   # free again
