"""Releases and tags; workflow records (listed from .github/workflows, dispatched runs recorded, never run);
Actions secrets (sealed by the client, never opened)."""
import base64

from conftest import api, git, patch_everywhere, remote, shape_checker

SPEC = shape_checker()


def checked(method, path, r, status):
    assert r.status == status, (method, path, r)
    if SPEC is not None and r.json:
        assert SPEC.check(method, path, status, r.json) == []
    return r.json


def test_releases_and_tags(server, tmp_path):
    alice, bob = server.add_user("alice"), server.add_user("bob")
    api(server, "POST", "/user/repos", alice, {"name": "app", "auto_init": True})
    base = "/repos/alice/app"
    rel = checked("POST", base + "/releases", api(server, "POST", base + "/releases", alice, {
        "tag_name": "v1.0", "name": "First", "body": "notes"}), 201)
    assert rel["tag_name"] == "v1.0" and rel["author"]["login"] == "alice" and rel["published_at"]
    draft = api(server, "POST", base + "/releases", alice, {"tag_name": "v2.0", "draft": True}).json
    assert draft["published_at"] is None
    assert api(server, "POST", base + "/releases", alice, {"tag_name": "v1.0"}).status == 422
    assert api(server, "POST", base + "/releases", alice, {"tag_name": "bad..tag"}).status == 422
    assert api(server, "POST", base + "/releases", alice, {"tag_name": "v3", "target_commitish": "nope"}).status == 422
    assert api(server, "POST", base + "/releases", bob, {"tag_name": "v9"}).status == 403
    assert [r["tag_name"] for r in api(server, "GET", base + "/releases", alice).json] == ["v2.0", "v1.0"]
    assert [r["tag_name"] for r in api(server, "GET", base + "/releases", bob).json] == ["v1.0"]   # no drafts
    assert api(server, "GET", base + "/releases/latest", bob).json["id"] == rel["id"]
    assert api(server, "GET", base + "/releases/tags/v1.0", bob).json["name"] == "First"
    assert api(server, "GET", base + "/releases/%d" % draft["id"], bob).status == 404
    tags = checked("GET", base + "/tags", api(server, "GET", base + "/tags", bob), 200)
    assert [t["name"] for t in tags] == ["v1.0"]
    published = api(server, "PATCH", base + "/releases/%d" % draft["id"], alice, {"draft": False}).json
    assert published["published_at"] and [t["name"] for t in api(server, "GET", base + "/tags", bob).json] == [
        "v2.0", "v1.0"]
    assert api(server, "DELETE", base + "/releases/%d" % rel["id"], alice).status == 204
    assert api(server, "GET", base + "/releases/latest", bob).json["tag_name"] == "v2.0"
    d = str(tmp_path / "c")
    git(str(tmp_path), "clone", "-q", remote(server, "alice/app", alice), d)
    assert git(d, "tag").stdout.split() == ["v1.0", "v2.0"]


WORKFLOW = "name: CI\non:\n  workflow_dispatch:\n    inputs:\n      level: {type: string}\njobs: {}\n"


def test_workflow_records(server):
    alice, bob = server.add_user("alice"), server.add_user("bob")
    api(server, "POST", "/user/repos", alice, {"name": "app", "auto_init": True})
    base = "/repos/alice/app"
    assert api(server, "GET", base + "/actions/workflows", alice).json == {"total_count": 0, "workflows": []}
    api(server, "PUT", base + "/contents/.github/workflows/ci.yml", alice, {
        "message": "ci", "content": base64.b64encode(WORKFLOW.encode()).decode()})
    listing = checked("GET", base + "/actions/workflows", api(server, "GET", base + "/actions/workflows", bob), 200)
    assert [(w["name"], w["path"], w["state"]) for w in listing["workflows"]] == [("CI", ".github/workflows/ci.yml",
                                                                                   "active")]
    wf_id = listing["workflows"][0]["id"]
    assert api(server, "GET", base + "/actions/workflows/ci.yml", bob).json["id"] == wf_id
    r = api(server, "POST", base + "/actions/workflows/ci.yml/dispatches", bob, {"ref": "main"})
    assert r.status == 403 and "run_workflow needs write" in r.json["message"]
    assert api(server, "POST", base + "/actions/workflows/ci.yml/dispatches", alice, {"ref": "nope"}).status == 422
    assert api(server, "POST", base + "/actions/workflows/%d/dispatches" % wf_id, alice,
               {"ref": "main", "inputs": {"level": "3"}}).status == 204
    runs = checked("GET", base + "/actions/runs", api(server, "GET", base + "/actions/runs", bob), 200)
    assert runs["total_count"] == 1
    run = runs["workflow_runs"][0]
    assert (run["status"], run["event"], run["head_branch"], run["inputs"]) == ("queued", "workflow_dispatch", "main",
                                                                                 {"level": "3"})
    assert api(server, "POST", base + "/actions/runs/%d/cancel" % run["id"], bob).status == 403
    assert api(server, "POST", base + "/actions/runs/%d/cancel" % run["id"], alice).status == 202
    got = api(server, "GET", base + "/actions/runs/%d" % run["id"], bob).json
    assert (got["status"], got["conclusion"]) == ("completed", "cancelled")
    assert api(server, "POST", base + "/actions/runs/%d/cancel" % run["id"], alice).status == 409
    assert api(server, "POST", base + "/actions/runs/%d/rerun" % run["id"], alice).status == 201
    assert api(server, "GET", base + "/actions/runs/%d" % run["id"], bob).json["run_attempt"] == 2
    assert api(server, "GET", base + "/actions/workflows/%d/runs" % wf_id, bob).json["total_count"] == 1
    assert api(server, "DELETE", base + "/actions/runs/%d" % run["id"], alice).status == 204
    assert api(server, "GET", base + "/actions/runs", bob).json["total_count"] == 0
    audit = server.app.store.one("SELECT * FROM audit WHERE action = 'run_workflow' AND decision = 'allow'")
    assert "this server executes no runs" in audit["side_effect"]


def test_the_secrets_key_is_x25519_per_rfc_7748():
    import agentgit
    for private, public in (("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
                             "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"),
                            ("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb",
                             "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")):
        assert agentgit.x25519_public_key(bytes.fromhex(private)).hex() == public


def test_secrets_refuse_bad_input_and_outsiders(server):
    alice, walt, eve = server.add_user("alice"), server.add_user("walt"), server.add_user("eve")
    api(server, "POST", "/user/repos", alice, {"name": "app", "private": True})
    api(server, "PUT", "/repos/alice/app/collaborators/walt", alice, {"permission": "pull"})
    path = "/repos/alice/app/actions/secrets/"
    key_id = api(server, "GET", path + "public-key", walt).json["key_id"]       # readers may seal
    sealed = base64.b64encode(bytes(60)).decode()
    for name, body in (("GITHUB_TOKEN", {"encrypted_value": sealed, "key_id": key_id}),
                       ("1ST", {"encrypted_value": sealed, "key_id": key_id}),
                       ("OK", {"encrypted_value": sealed, "key_id": "123"}),
                       ("OK", {"encrypted_value": "not base64!", "key_id": key_id}),
                       ("OK", {"encrypted_value": base64.b64encode(b"short").decode(), "key_id": key_id})):
        assert api(server, "PUT", path + name, alice, body).status == 422, name
    assert api(server, "PUT", path + "OK", alice, {"encrypted_value": sealed, "key_id": key_id}).status == 201
    assert api(server, "PUT", path + "OK", alice, {"encrypted_value": sealed, "key_id": key_id}).status == 204
    assert api(server, "GET", path[:-1], walt).status == 403                    # reading names needs write
    assert api(server, "GET", path[:-1], eve).status == 404
    assert api(server, "DELETE", path + "OK", eve).status == 404
    assert api(server, "DELETE", path + "MISSING", alice).status == 404
    assert api(server, "DELETE", path + "OK", alice).status == 204


def test_variables_refuse_bad_input_and_outsiders(server):
    alice, walt, eve = server.add_user("alice"), server.add_user("walt"), server.add_user("eve")
    api(server, "POST", "/user/repos", alice, {"name": "app", "private": True})
    api(server, "PUT", "/repos/alice/app/collaborators/walt", alice, {"permission": "pull"})
    path = "/repos/alice/app/actions/variables"
    for body in ({"name": "GITHUB_SHA", "value": "x"}, {"name": "1ST", "value": "x"}, {"name": "A"},
                 {"name": "A", "value": 5}, {"name": "A", "value": "x" * (48 * 1024 + 1)}):
        assert api(server, "POST", path, alice, body).status == 422, body
    assert api(server, "POST", path, alice, {"name": "region", "value": "eu"}).status == 201
    assert api(server, "POST", path, alice, {"name": "REGION", "value": "us"}).status == 409
    assert api(server, "GET", path + "/region", alice).json["value"] == "eu"
    assert api(server, "POST", path, alice, {"name": "ZONE", "value": "a"}).status == 201
    assert api(server, "PATCH", path + "/ZONE", alice, {"name": "REGION"}).status == 409   # taken
    assert api(server, "PATCH", path + "/ZONE", alice, {"name": "AZ", "value": "b"}).status == 204
    assert [(v["name"], v["value"]) for v in api(server, "GET", path, alice).json["variables"]] == [
        ("AZ", "b"), ("REGION", "eu")]
    assert api(server, "GET", path, walt).status == 403                         # reading them needs write
    assert api(server, "GET", path, eve).status == 404
    assert api(server, "DELETE", path + "/AZ", eve).status == 404
    assert api(server, "DELETE", path + "/AZ", alice).status == 204
    assert api(server, "DELETE", path + "/AZ", alice).status == 404
    # an owner named "actions" with a repository named "secrets" still has variables, not secrets
    owner = server.add_user("actions")
    api(server, "POST", "/user/repos", owner, {"name": "secrets"})
    assert api(server, "POST", "/repos/actions/secrets/actions/variables", owner, {"name": "A", "value": "1"}).status == 201
    assert api(server, "GET", "/repos/actions/secrets/actions/variables", owner).json["variables"][0]["value"] == "1"


def test_release_assets(server, monkeypatch):
    import hashlib
    from conftest import call
    alice, walt, eve = server.add_user("alice"), server.add_user("walt"), server.add_user("eve")
    api(server, "POST", "/user/repos", alice, {"name": "app", "private": True, "auto_init": True})
    api(server, "PUT", "/repos/alice/app/collaborators/walt", alice, {"permission": "pull"})
    release = api(server, "POST", "/repos/alice/app/releases", alice, {"tag_name": "v1"}).json
    upload = release["upload_url"].split("{")[0][len(server.url):]
    assert upload == "/api/uploads/repos/alice/app/releases/%d/assets" % release["id"]     # GHES's uploads path

    def put(name, data, token=alice, kind="application/gzip"):
        return call(server, "POST", upload + "?name=" + name, token, raw_body=data, headers={"Content-Type": kind})
    r = put("app.tar.gz", b"\x1f\x8b payload")
    assert r.status == 201 and (r.json["size"], r.json["content_type"], r.json["state"]) == (10, "application/gzip",
                                                                                          "uploaded")
    assert r.json["digest"] == "sha256:" + hashlib.sha256(b"\x1f\x8b payload").hexdigest()
    if SPEC:
        assert SPEC.check("POST", "/repos/alice/app/releases/1/assets", 201, r.json) == []
    asset = r.json
    for bad in ("", "a%2Fb", "..", "x%00y"):
        assert put(bad, b"x").status == 422, bad
    assert put("app.tar.gz", b"again").json["errors"][0]["code"] == "already_exists"
    assert put("x.bin", b"x", token=walt).status == 403                                  # readers do not upload
    patch_everywhere(monkeypatch, "MAX_ASSET_BYTES", 1024)
    assert put("big.bin", b"x" * 2048).status == 413
    # reading it: the description, or the bytes; readers yes, strangers no
    assert api(server, "GET", "/repos/alice/app/releases/assets/%d" % asset["id"], walt).json["name"] == "app.tar.gz"
    raw = call(server, "GET", "/api/v3/repos/alice/app/releases/assets/%d" % asset["id"], walt,
               headers={"Accept": "application/octet-stream"})
    assert raw.status == 200 and raw.raw == b"\x1f\x8b payload" and raw.headers["content-type"] == "application/gzip"
    download = "/alice/app/releases/download/v1/app.tar.gz"
    assert call(server, "GET", download, walt).raw == b"\x1f\x8b payload"
    page = put("page.html", b"<script>alert(1)</script>", kind="text/html")            # not rendered here
    served = call(server, "GET", "/alice/app/releases/download/v1/page.html", walt)
    assert page.status == 201 and served.headers["content-disposition"].startswith("attachment")
    assert served.headers["x-content-type-options"] == "nosniff" and "sandbox" in served.headers[
        "content-security-policy"]
    assert call(server, "GET", download).status == 401 and call(server, "GET", download, eve).status == 404
    assert api(server, "GET", "/repos/alice/app/releases/assets/%d" % asset["id"], eve).status == 404
    assert api(server, "GET", "/repos/alice/app/releases/%d/assets" % release["id"], walt).json[0]["download_count"] == 2
    # renamed, then gone with its release
    r = api(server, "PATCH", "/repos/alice/app/releases/assets/%d" % asset["id"], alice, {"name": "app-1.tar.gz",
                                                                                          "label": "App"})
    assert (r.json["name"], r.json["label"]) == ("app-1.tar.gz", "App")
    assert api(server, "DELETE", "/repos/alice/app/releases/%d" % release["id"], alice).status == 204
    assert server.app.store.one("SELECT COUNT(*) AS n FROM release_assets")["n"] == 0


def test_archive_names_and_deploy_key_titles_as_github_gives_them(server):
    """A version tag's archive is repo-1.2.3 (its leading v dropped), which `gh release download --archive`
    saves under; a deploy key added without a title is named by its own comment."""
    alice = server.add_user("alice")
    api(server, "POST", "/user/repos", alice, {"name": "app", "auto_init": True})
    main = api(server, "GET", "/repos/alice/app/git/ref/heads/main", alice).json["object"]["sha"]
    api(server, "POST", "/repos/alice/app/git/refs", alice, {"ref": "refs/tags/v1.2.3", "sha": main})
    for kind in ("tarball", "zipball"):
        served = api(server, "GET", "/repos/alice/app/%s/v1.2.3" % kind, alice)
        assert served.headers["content-disposition"] == "attachment; filename=app-1.2.3.%s" % (
            "tar.gz" if kind == "tarball" else "zip")
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGb8hVBqOr0gB2nHMjbJ0NHyN2hJ7Wm3E1m+3fNdzKUn ci@build-host"
    added = api(server, "POST", "/repos/alice/app/keys", alice, {"key": key})
    assert added.status == 201 and added.json["title"] == "ci@build-host"


def test_repository_dispatch_is_decided_and_recorded(server):
    """POST /repos/{o}/{r}/dispatches, as release tools and bots send it: 204 for who may start a workflow
    there, recorded in the audit log; 404 for who may not see the repository, 422 for a bad body."""
    alice, eve = server.add_user("alice"), server.add_user("eve")
    api(server, "POST", "/user/repos", alice, {"name": "app", "private": True, "auto_init": True})
    sent = api(server, "POST", "/repos/alice/app/dispatches", alice, {"event_type": "release", "client_payload":
                                                                      {"version": "1.2.3"}})
    assert sent.status == 204
    row = server.app.store.one("SELECT * FROM audit WHERE action = 'run_workflow' ORDER BY id DESC")
    assert row["decision"] == "allow" and "repository_dispatch release" in row["side_effect"]
    assert api(server, "POST", "/repos/alice/app/dispatches", eve, {"event_type": "release"}).status == 404
    for body in ({}, {"event_type": ""}, {"event_type": "x", "client_payload": {str(i): i for i in range(11)}}):
        assert api(server, "POST", "/repos/alice/app/dispatches", alice, body).status == 422, body
