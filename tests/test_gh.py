"""The real GitHub CLI against agentgit over HTTPS: sign-in, status, REST and GraphQL calls, git over gh."""
import base64
import contextlib
import html
import json
import os
import re
import shlex
import shutil
import subprocess

import pytest

from conftest import (CLI, GH_HOST, api, call, commit_file, connect_gh, ext, gh, gh_over_socket, git,
                      plain_gh_env, remote, socket_server, sweep)

pytestmark = sweep


def test_gh_login_status_api_and_git(gh_server, tmp_path):
    srv, env = gh_server
    token = srv.add_user("alice")
    gh(env, "auth", "login", "--hostname", GH_HOST, "--with-token", stdin=token + "\n")
    made = json.loads(gh(env, "api", "-X", "POST", "user/repos", "-f", "name=demo", "-F", "private=true",
                         "-F", "auto_init=true").stdout)
    assert made["full_name"] == "alice/demo" and made["private"] is True
    status = gh(env, "auth", "status", "--hostname", GH_HOST)
    assert "Logged in to %s account alice" % GH_HOST in status.stdout + status.stderr
    user = json.loads(gh(env, "api", "user").stdout)
    assert (user["login"], user["user_kind"]) == ("alice", "human")
    repo = json.loads(gh(env, "api", "repos/alice/demo").stdout)
    assert repo["clone_url"] == "https://%s/alice/demo.git" % GH_HOST
    out = json.loads(gh(env, "api", "graphql", "-f", "query=query($o: String!) { viewer { login } "
                                                        "repository(owner: $o, name: \"demo\") { isPrivate } }",
                        "-F", "o=alice").stdout)
    assert out["data"] == {"viewer": {"login": "alice"}, "repository": {"isPrivate": True}}
    # gh as git's credential helper: git first asks without credentials, gets 401, then asks gh
    gh(env, "auth", "setup-git", "--hostname", GH_HOST)
    work = str(tmp_path / "clone")
    git(str(tmp_path), "clone", "-q", "https://%s/alice/demo.git" % GH_HOST, work, env=env)
    assert sorted(os.listdir(work)) == [".git", "README.md"]


def test_gh_refuses_a_bad_token(gh_server):
    srv, env = gh_server
    proc = gh(env, "auth", "login", "--hostname", GH_HOST, "--with-token", stdin="agp_" + "0" * 48 + "\n", check=False)
    assert proc.returncode != 0 and "401" in proc.stderr


def test_gh_repo_view_issue_and_label_lists(gh_server):
    srv, env = gh_server
    token = srv.add_user("alice")
    gh(env, "auth", "login", "--hostname", GH_HOST, "--with-token", stdin=token + "\n")
    gh(env, "api", "-X", "POST", "user/repos", "-f", "name=demo", "-f", "description=A demo", "-F", "auto_init=true")
    for title in ("First bug", "Second thing"):
        gh(env, "api", "-X", "POST", "repos/alice/demo/issues", "-f", "title=" + title)
    # bug is one of the nine labels GitHub gives every new repository
    gh(env, "api", "-X", "POST", "repos/alice/demo/issues/1/labels", "-f", "labels[]=bug")
    gh(env, "api", "-X", "PATCH", "repos/alice/demo/issues/2", "-f", "state=closed")
    view = gh(env, "repo", "view", "alice/demo").stdout
    assert "name:\talice/demo" in view and "description:\tA demo" in view and "# demo" in view
    listing = gh(env, "issue", "list", "-R", "alice/demo").stdout
    assert "First bug" in listing and "bug" in listing and "Second thing" not in listing
    gh(env, "api", "-X", "POST", "repos/alice/demo/issues", "-f", "title=Third, unlabelled")
    labelled = gh(env, "issue", "list", "-R", "alice/demo", "--label", "bug").stdout     # GraphQL search
    assert "First bug" in labelled and "Third" not in labelled
    closed = json.loads(gh(env, "issue", "list", "-R", "alice/demo", "--state", "closed", "--json",
                           "number,title,state").stdout)
    assert closed == [{"number": 2, "title": "Second thing", "state": "CLOSED"}]
    labels = gh(env, "label", "list", "-R", "alice/demo").stdout
    assert "bug" in labels and "d73a4a" in labels.lower()


def test_gh_issue_create_comment_close_reopen(gh_server):
    """GraphQL mutations from gh; the audit rows say they came through GraphQL."""
    srv, env = gh_server
    token = srv.add_user("alice")
    gh(env, "auth", "login", "--hostname", GH_HOST, "--with-token", stdin=token + "\n")
    gh(env, "api", "-X", "POST", "user/repos", "-f", "name=demo", "-F", "auto_init=true")
    created = gh(env, "issue", "create", "-R", "alice/demo", "-t", "Crash on start", "-b", "Steps: run it")
    assert created.stdout.strip() == "https://%s/alice/demo/issues/1" % GH_HOST
    gh(env, "issue", "comment", "1", "-R", "alice/demo", "-b", "Looking into it")
    gh(env, "issue", "close", "1", "-R", "alice/demo")
    issue = json.loads(gh(env, "api", "repos/alice/demo/issues/1").stdout)
    assert (issue["state"], issue["comments"], issue["body"]) == ("closed", 1, "Steps: run it")
    gh(env, "issue", "reopen", "1", "-R", "alice/demo")
    assert json.loads(gh(env, "api", "repos/alice/demo/issues/1").stdout)["state"] == "open"
    view = gh(env, "issue", "view", "1", "-R", "alice/demo").stdout
    assert "title:\tCrash on start" in view and "state:\tOPEN" in view and "Steps: run it" in view
    viewed = json.loads(gh(env, "issue", "view", "1", "-R", "alice/demo", "--json", "number,author,comments").stdout)
    assert viewed["author"]["login"] == "alice" and viewed["comments"][0]["body"] == "Looking into it"
    comments = json.loads(gh(env, "api", "repos/alice/demo/issues/1/comments").stdout)
    assert [c["body"] for c in comments] == ["Looking into it"]
    rows = srv.app.store.all("SELECT action, surface FROM audit WHERE surface = 'graphql' ORDER BY id")
    assert [r["action"] for r in rows] == ["open_issue", "comment", "edit_issue", "edit_issue"]


def test_gh_repo_create_list_clone(gh_server, tmp_path):
    srv, env = gh_server
    token = srv.add_user("alice")
    gh(env, "auth", "login", "--hostname", GH_HOST, "--with-token", stdin=token + "\n")
    gh(env, "repo", "create", "alice/open", "--public", "--description", "An open one")
    gh(env, "repo", "create", "alice/shut", "--private", "--add-readme")
    listing = gh(env, "repo", "list").stdout
    assert "alice/open" in listing and "alice/shut" in listing and "private" in listing
    shut = json.loads(gh(env, "api", "repos/alice/shut").stdout)
    assert shut["private"] is True
    assert json.loads(gh(env, "api", "repos/alice/open").stdout)["description"] == "An open one"
    gh(env, "auth", "setup-git", "--hostname", GH_HOST)
    gh(env, "repo", "clone", "alice/shut", str(tmp_path / "shut"), cwd=str(tmp_path))
    assert sorted(os.listdir(tmp_path / "shut")) == [".git", "README.md"]
    assert "already exists" in gh(env, "repo", "create", "alice/open", "--public", check=False).stderr


def test_gh_releases(gh_server):
    srv, env = gh_server
    token = srv.add_user("alice")
    gh(env, "auth", "login", "--hostname", GH_HOST, "--with-token", stdin=token + "\n")
    gh(env, "api", "-X", "POST", "user/repos", "-f", "name=demo", "-F", "auto_init=true")
    gh(env, "release", "create", "v1.0", "-R", "alice/demo", "--title", "First", "--notes", "It works")
    gh(env, "release", "create", "v2.0-rc", "-R", "alice/demo", "--title", "Next", "--notes", "Soon", "--prerelease")
    listing = gh(env, "release", "list", "-R", "alice/demo").stdout
    assert "First" in listing and "Latest" in listing and "Pre-release" in listing
    view = gh(env, "release", "view", "v1.0", "-R", "alice/demo").stdout
    assert "First" in view and "It works" in view
    tags = json.loads(gh(env, "api", "repos/alice/demo/tags").stdout)
    assert sorted(t["name"] for t in tags) == ["v1.0", "v2.0-rc"]
    # an artifact: uploaded to GHES's /api/uploads, downloaded byte for byte, deleted
    artifact = os.path.join(env["HOME"], "build.tar.gz")
    with open(artifact, "wb") as f:
        f.write(bytes(range(256)) * 64)
    gh(env, "release", "upload", "v1.0", artifact, "-R", "alice/demo")
    assets = json.loads(gh(env, "release", "view", "v1.0", "-R", "alice/demo", "--json", "assets").stdout)["assets"]
    assert [(a["name"], a["size"]) for a in assets] == [("build.tar.gz", 16384)]
    target = os.path.join(env["HOME"], "dl")
    gh(env, "release", "download", "v1.0", "-R", "alice/demo", "-D", target)
    with open(os.path.join(target, "build.tar.gz"), "rb") as f:
        assert f.read() == bytes(range(256)) * 64
    gh(env, "release", "delete-asset", "v1.0", "build.tar.gz", "-R", "alice/demo", "--yes")
    assert json.loads(gh(env, "release", "view", "v1.0", "-R", "alice/demo", "--json", "assets").stdout)["assets"] == []


def test_connect_gh_over_a_unix_socket(tmp_path):
    """`connect gh --mode socket`: gh's API calls go over the server's Unix socket as plain HTTP, git
    goes to the TCP port; no certificates, no root."""
    with socket_server(tmp_path) as srv:
        env = gh_over_socket(srv, srv.add_user("alice"), tmp_path)
        assert env["GH_HOST"] == "localhost" and oct(os.stat(tmp_path / "gh" / "hosts.yml").st_mode & 0o777) == "0o600"
        assert json.loads(gh(env, "api", "user").stdout)["login"] == "alice"
        gh(env, "repo", "create", "alice/demo", "--private", "--add-readme")
        assert "alice/demo" in gh(env, "repo", "list").stdout
        gh(env, "repo", "clone", "alice/demo", str(tmp_path / "clone"), cwd=str(tmp_path))
        assert sorted(os.listdir(tmp_path / "clone")) == [".git", "README.md"]
    assert not os.path.exists(tmp_path / "agentgit.sock")


def test_gh_walks_a_private_list_whole_by_another_name_of_the_server(tmp_path):
    """In socket and localhost modes gh calls the server by another name than its URL (localhost,
    api.github.localhost), and sends its token only to that name. The API's URLs in the answers (the next
    page's link, a run's jobs, an upload URL) are in the name it called, so gh walks a private repository's
    list by its links whole, where with the server's own URL the next page answered 404."""
    with socket_server(tmp_path) as srv:
        alice = srv.add_user("alice")
        assert api(srv, "POST", "/user/repos", alice, {"name": "secret", "private": True}).status == 201
        for n in range(5):
            assert api(srv, "POST", "/repos/alice/secret/issues", alice, {"title": "issue %d" % n}).status == 201
        for mode, env in (("socket", gh_over_socket(srv, alice, tmp_path)), ("localhost", connect_gh(
                srv, alice, plain_gh_env(tmp_path), "--mode", "localhost", "--url", srv.url,
                "--dir", str(tmp_path / "gh-localhost")))):
            walked = gh(env, "api", "--paginate", "repos/alice/secret/issues?per_page=2", "--jq", ".[].title").stdout
            assert sorted(walked.split("\n")[:-1]) == ["issue %d" % n for n in range(5)], (mode, walked)
            repo = json.loads(gh(env, "api", "repos/alice/secret").stdout)
            assert repo["issues_url"].startswith("http://%s/" % ("localhost/api/v3" if mode == "socket" else
                                                                  "api.github.localhost/repos"))
            assert repo["html_url"] == srv.url + "/alice/secret"       # a page stays where a browser opens it
        assert api(srv, "GET", "/repos/alice/secret", alice).json["url"] == srv.url + "/api/v3/repos/alice/secret"


def test_gh_issue_edit_labels_assignees_and_repo_edit_delete(gh_server):
    srv, env = gh_server
    token = srv.add_user("alice")
    gh(env, "auth", "login", "--hostname", GH_HOST, "--with-token", stdin=token + "\n")
    gh(env, "api", "-X", "POST", "user/repos", "-f", "name=demo", "-F", "auto_init=true")
    gh(env, "issue", "create", "-R", "alice/demo", "-t", "old title", "-b", "old body")
    gh(env, "label", "create", "crash", "-R", "alice/demo", "--color", "d73a4a")
    gh(env, "label", "edit", "crash", "-R", "alice/demo", "--description", "Broken")
    gh(env, "issue", "edit", "1", "-R", "alice/demo", "--title", "new title", "--body", "new body",
       "--add-label", "crash", "--add-assignee", "alice")
    issue = json.loads(gh(env, "api", "repos/alice/demo/issues/1").stdout)
    assert (issue["title"], issue["body"]) == ("new title", "new body")
    assert [l["name"] for l in issue["labels"]] == ["crash"] and [a["login"] for a in issue["assignees"]] == ["alice"]
    gh(env, "issue", "edit", "1", "-R", "alice/demo", "--remove-label", "crash", "--remove-assignee", "alice")
    issue = json.loads(gh(env, "api", "repos/alice/demo/issues/1").stdout)
    assert issue["labels"] == [] and issue["assignees"] == []
    assert json.loads(gh(env, "api", "repos/alice/demo/labels/crash").stdout)["description"] == "Broken"
    gh(env, "repo", "edit", "alice/demo", "--description", "Edited")
    assert json.loads(gh(env, "api", "repos/alice/demo").stdout)["description"] == "Edited"
    gh(env, "repo", "delete", "alice/demo", "--yes")
    assert gh(env, "api", "repos/alice/demo", check=False).returncode != 0


def test_gh_pr_list(gh_server):
    srv, env = gh_server
    token = srv.add_user("alice")
    gh(env, "auth", "login", "--hostname", GH_HOST, "--with-token", stdin=token + "\n")
    gh(env, "api", "-X", "POST", "user/repos", "-f", "name=demo", "-F", "auto_init=true")
    main = gh(env, "api", "repos/alice/demo/git/ref/heads/main", "-q", ".object.sha").stdout.strip()
    gh(env, "api", "-X", "POST", "repos/alice/demo/git/refs", "-f", "ref=refs/heads/feature", "-f", "sha=" + main)
    gh(env, "api", "-X", "PUT", "repos/alice/demo/contents/f.txt", "-f", "message=f", "-f", "content=Zg==",
       "-f", "branch=feature")
    gh(env, "api", "-X", "POST", "repos/alice/demo/pulls", "-f", "title=Add f", "-f", "head=feature", "-f", "base=main")
    listing = gh(env, "pr", "list", "-R", "alice/demo").stdout
    assert listing.startswith("1\tAdd f\tfeature\tOPEN")
    gh(env, "api", "-X", "PUT", "repos/alice/demo/pulls/1/merge")
    assert gh(env, "pr", "list", "-R", "alice/demo").stdout == ""
    merged = json.loads(gh(env, "pr", "list", "-R", "alice/demo", "--state", "merged", "--json",
                           "number,state,headRefName").stdout)
    assert merged == [{"number": 1, "state": "MERGED", "headRefName": "feature"}]


@contextlib.contextmanager
def gh_as_alice(tmp_path):
    """(server, gh's environment, alice's token): gh signed in as alice, over a Unix socket, with the
    REST helpers still at hand on the server's own address."""
    with socket_server(tmp_path) as srv:
        alice = srv.add_user("alice")
        yield srv, gh_over_socket(srv, alice, tmp_path), alice


def test_gh_repo_archive_makes_it_read_only(tmp_path):
    with gh_as_alice(tmp_path) as (srv, env, alice):
        api(srv, "POST", "/user/repos", alice, {"name": "demo", "auto_init": True})
        gh(env, "repo", "archive", "alice/demo", "--yes")
        proc = gh(env, "issue", "create", "-R", "alice/demo", "-t", "x", "-b", "y", check=False)
        assert proc.returncode != 0 and "archived so is read-only" in proc.stderr
        gh(env, "repo", "unarchive", "alice/demo", "--yes")
        gh(env, "issue", "create", "-R", "alice/demo", "-t", "x", "-b", "y")
        decisions = [r["decision"] for r in srv.app.store.all("SELECT decision FROM audit WHERE action = 'open_issue'"
                                                              " ORDER BY id")]
        assert decisions == ["read_only", "allow"]


def test_gh_pr_edit_back_to_draft_and_update_branch(tmp_path):
    with gh_as_alice(tmp_path) as (srv, env, alice):
        srv.add_user("bob")
        api(srv, "POST", "/user/repos", alice, {"name": "demo", "auto_init": True})
        api(srv, "PUT", "/repos/alice/demo/collaborators/bob", alice, {"permission": "push"})
        main = api(srv, "GET", "/repos/alice/demo/git/ref/heads/main", alice).json["object"]["sha"]
        for branch in ("fix", "dev"):
            api(srv, "POST", "/repos/alice/demo/git/refs", alice, {"ref": "refs/heads/" + branch, "sha": main})
        api(srv, "PUT", "/repos/alice/demo/contents/fix.txt", alice, {"message": "fix", "content": "Zgo=",
                                                                       "branch": "fix"})
        gh(env, "pr", "create", "-R", "alice/demo", "-H", "fix", "-B", "main", "-t", "Fix", "-b", "")
        gh(env, "pr", "edit", "1", "-R", "alice/demo", "--title", "Fix it", "--base", "dev", "--add-label", "bug",
           "--add-assignee", "alice", "--add-reviewer", "bob")
        gh(env, "pr", "ready", "1", "-R", "alice/demo", "--undo")
        fields = "title,baseRefName,labels,assignees,reviewRequests,isDraft"
        seen = json.loads(gh(env, "pr", "view", "1", "-R", "alice/demo", "--json", fields).stdout)
        assert (seen["title"], seen["baseRefName"], seen["isDraft"]) == ("Fix it", "dev", True)
        assert [label["name"] for label in seen["labels"]] == ["bug"]
        assert [a["login"] for a in seen["assignees"]] == ["alice"]
        assert [r["login"] for r in seen["reviewRequests"]] == ["bob"]
        assert api(srv, "GET", "/repos/alice/demo/pulls/1", alice).json["base"]["ref"] == "dev"
        api(srv, "PUT", "/repos/alice/demo/contents/dev.txt", alice, {"message": "dev moves", "content": "Zgo=",
                                                                       "branch": "dev"})
        assert "PR branch updated" in gh(env, "pr", "update-branch", "1", "-R", "alice/demo").stdout
        assert "already up-to-date" in gh(env, "pr", "update-branch", "1", "-R", "alice/demo").stdout


def test_gh_issue_lock_and_unlock(tmp_path):
    with gh_as_alice(tmp_path) as (srv, env, alice):
        reader = srv.add_user("reader")
        api(srv, "POST", "/user/repos", alice, {"name": "demo"})
        api(srv, "POST", "/repos/alice/demo/issues", alice, {"title": "Heated"})
        gh(env, "issue", "lock", "1", "-R", "alice/demo", "--reason", "too_heated")
        issue = api(srv, "GET", "/repos/alice/demo/issues/1", alice).json
        assert (issue["locked"], issue["active_lock_reason"]) == (True, "too heated")
        assert json.loads(gh(env, "api", "graphql", "-f", 'query={ repository(owner: "alice", name: "demo") {'
                                 ' issue(number: 1) { locked activeLockReason } } }').stdout)["data"] == {
            "repository": {"issue": {"locked": True, "activeLockReason": "TOO_HEATED"}}}
        assert api(srv, "POST", "/repos/alice/demo/issues/1/comments", reader, {"body": "!"}).status == 403
        gh(env, "issue", "unlock", "1", "-R", "alice/demo")
        assert api(srv, "POST", "/repos/alice/demo/issues/1/comments", reader, {"body": "ok"}).status == 201


def test_gh_views_an_agent_reads(tmp_path):
    """What an agent reads before it acts: pr view --json (files, commits and their authors, the review
    decision a protected base asks for, latest reviews), pr status, pr checks, repo view --json, run view,
    org list."""
    with gh_as_alice(tmp_path) as (srv, env, alice):
        bob = srv.add_user("bob")
        ext(srv, "POST", "/user/orgs", alice, {"login": "acme"})
        api(srv, "POST", "/orgs/acme/repos", alice, {"name": "demo", "auto_init": True})
        api(srv, "PUT", "/repos/acme/demo/collaborators/bob", alice, {"permission": "push"})
        main = api(srv, "GET", "/repos/acme/demo/git/ref/heads/main", alice).json["object"]["sha"]
        api(srv, "POST", "/repos/acme/demo/git/refs", alice, {"ref": "refs/heads/feature", "sha": main})
        api(srv, "PUT", "/repos/acme/demo/contents/f.txt", alice, {"message": "Add f\n\nwhy", "content": "Zgo=",
                                                                    "branch": "feature"})
        api(srv, "PUT", "/repos/acme/demo/branches/main/protection", alice, {
            "required_status_checks": None, "enforce_admins": False, "restrictions": None,
            "required_pull_request_reviews": {"required_approving_review_count": 1}})
        gh(env, "pr", "create", "-R", "acme/demo", "-H", "feature", "-B", "main", "-t", "Add f", "-b", "")
        fields = "files,commits,reviewDecision,latestReviews,additions"
        view = json.loads(gh(env, "pr", "view", "1", "-R", "acme/demo", "--json", fields).stdout)
        assert view["files"] == [{"path": "f.txt", "additions": 1, "deletions": 0, "changeType": "ADDED"}]
        commit = view["commits"][0]
        assert (commit["messageHeadline"], commit["messageBody"], commit["authors"][0]["login"]) == (
            "Add f", "why", "alice")
        assert view["reviewDecision"] == "REVIEW_REQUIRED" and view["latestReviews"] == []
        assert api(srv, "POST", "/repos/acme/demo/pulls/1/reviews", bob, {"event": "APPROVE"}).status == 200
        view = json.loads(gh(env, "pr", "view", "1", "-R", "acme/demo", "--json", fields).stdout)
        assert view["reviewDecision"] == "APPROVED" and [r["author"]["login"] for r in view["latestReviews"]] == ["bob"]
        assert "#1  Add f [feature]" in gh(env, "pr", "status", "-R", "acme/demo").stdout
        head = api(srv, "GET", "/repos/acme/demo/pulls/1", alice).json["head"]["sha"]
        api(srv, "POST", "/repos/acme/demo/statuses/" + head, alice, {"state": "success", "context": "ci/unit"})
        api(srv, "POST", "/repos/acme/demo/check-runs", alice, {"name": "lint", "head_sha": head,
                                                                 "status": "completed", "conclusion": "failure"})
        checks = json.loads(gh(env, "pr", "checks", "1", "-R", "acme/demo", "--json", "name,bucket").stdout)
        assert sorted((c["name"], c["bucket"]) for c in checks) == [("ci/unit", "pass"), ("lint", "fail")]
        assert gh(env, "pr", "checks", "1", "-R", "acme/demo", check=False).returncode == 1    # gh: a check failed
        gh(env, "release", "create", "v1", "-R", "acme/demo", "-t", "One", "-n", "")
        repo = json.loads(gh(env, "repo", "view", "acme/demo", "--json", "latestRelease,languages").stdout)
        assert repo["latestRelease"]["tagName"] == "v1" and repo["languages"] == []
        assert gh(env, "org", "list").stdout.split() == ["acme"]
        api(srv, "PUT", "/repos/acme/demo/contents/.github/workflows/ci.yml", alice, {
            "message": "ci", "content": base64.b64encode(b"name: CI\non: workflow_dispatch\n").decode()})
        gh(env, "workflow", "run", "ci.yml", "-R", "acme/demo", "--ref", "main")
        assert "workflow_dispatch" in gh(env, "run", "view", "1", "-R", "acme/demo").stdout


def test_gh_pr_create_and_merge(gh_server, tmp_path):
    """From a clone: push a branch, gh pr create, gh pr merge --squash; a fresh clone shows the result.
    A conflicting pull request is refused with GitHub's message and moves nothing."""
    srv, env = gh_server
    token = srv.add_user("alice")
    gh(env, "auth", "login", "--hostname", GH_HOST, "--with-token", stdin=token + "\n")
    gh(env, "auth", "setup-git", "--hostname", GH_HOST)
    gh(env, "repo", "create", "alice/demo", "--public", "--add-readme")
    work = str(tmp_path / "work")
    gh(env, "repo", "clone", "alice/demo", work, cwd=str(tmp_path))
    git(work, "checkout", "-q", "-b", "feature", env=env)
    for name in ("a.txt", "b.txt"):
        with open(os.path.join(work, name), "w") as f:
            f.write(name + "\n")
        git(work, "add", name, env=env)
        git(work, "commit", "-q", "-m", "add " + name, env=env)
    git(work, "push", "-q", "-u", "origin", "feature", env=env)
    url = gh(env, "pr", "create", "--head", "feature", "--base", "main", "--title", "Add files", "--body", "Two",
             cwd=work).stdout.strip()
    assert url == "https://%s/alice/demo/pull/1" % GH_HOST
    reviewer = str(tmp_path / "reviewer")
    gh(env, "repo", "clone", "alice/demo", reviewer, cwd=str(tmp_path))
    gh(env, "pr", "checkout", "1", cwd=reviewer)
    assert git(reviewer, "branch", "--show-current", env=env).stdout.strip() == "feature"
    assert sorted(f for f in os.listdir(reviewer) if f.endswith(".txt")) == ["a.txt", "b.txt"]
    assert "+b.txt" in gh(env, "pr", "diff", "1", "-R", "alice/demo").stdout
    gh(env, "pr", "merge", "1", "-R", "alice/demo", "--squash")
    fresh = str(tmp_path / "fresh")
    git(str(tmp_path), "clone", "-q", "https://%s/alice/demo.git" % GH_HOST, fresh, env=env)
    log = git(fresh, "log", "--format=%s", env=env).stdout.split("\n")
    assert log[0] == "Add files (#1)" and sorted(f for f in os.listdir(fresh) if f.endswith(".txt")) == ["a.txt", "b.txt"]
    # a conflict: both sides change a.txt
    git(work, "checkout", "-q", "-b", "left", "origin/main", env=env)
    git(work, "pull", "-q", "origin", "main", env=env)
    with open(os.path.join(work, "a.txt"), "w") as f:
        f.write("left\n")
    git(work, "commit", "-q", "-am", "left", env=env)
    git(work, "push", "-q", "origin", "left", env=env)
    gh(env, "api", "-X", "PUT", "repos/alice/demo/contents/a.txt", "-f", "message=main side", "-f", "content=bWFpbgo=",
       "-f", "sha=" + json.loads(gh(env, "api", "repos/alice/demo/contents/a.txt").stdout)["sha"])
    gh(env, "pr", "create", "-R", "alice/demo", "--head", "left", "--base", "main", "--title", "Left", "--body", "x")
    before = json.loads(gh(env, "api", "repos/alice/demo/git/ref/heads/main").stdout)["object"]["sha"]
    proc = gh(env, "pr", "merge", "2", "-R", "alice/demo", "--merge", check=False)
    assert proc.returncode != 0
    assert json.loads(gh(env, "api", "repos/alice/demo/git/ref/heads/main").stdout)["object"]["sha"] == before


def test_gh_pr_review_comment_close_reopen_ready(gh_server):
    srv, env = gh_server
    alice, bob = srv.add_user("alice"), srv.add_user("bob")
    gh(env, "auth", "login", "--hostname", GH_HOST, "--with-token", stdin=alice + "\n")
    gh(env, "api", "-X", "POST", "user/repos", "-f", "name=demo", "-F", "auto_init=true")
    gh(env, "api", "-X", "PUT", "repos/alice/demo/collaborators/bob", "-f", "permission=push")
    main = gh(env, "api", "repos/alice/demo/git/ref/heads/main", "-q", ".object.sha").stdout.strip()
    gh(env, "api", "-X", "POST", "repos/alice/demo/git/refs", "-f", "ref=refs/heads/feature", "-f", "sha=" + main)
    gh(env, "api", "-X", "PUT", "repos/alice/demo/contents/f.txt", "-f", "message=f", "-f", "content=Zg==",
       "-f", "branch=feature")
    gh(env, "pr", "create", "-R", "alice/demo", "--head", "feature", "--base", "main", "--title", "F", "--body", "b",
       "--draft")
    assert json.loads(gh(env, "api", "repos/alice/demo/pulls/1").stdout)["draft"] is True
    gh(env, "pr", "ready", "1", "-R", "alice/demo")
    assert json.loads(gh(env, "api", "repos/alice/demo/pulls/1").stdout)["draft"] is False
    gh(env, "pr", "comment", "1", "-R", "alice/demo", "-b", "please look")
    assert gh(env, "pr", "review", "1", "-R", "alice/demo", "--approve", check=False).returncode != 0   # own PR
    bob_env = dict(env, GH_CONFIG_DIR=env["GH_CONFIG_DIR"] + "-bob")
    gh(bob_env, "auth", "login", "--hostname", GH_HOST, "--with-token", stdin=bob + "\n")
    gh(bob_env, "pr", "review", "1", "-R", "alice/demo", "--approve", "-b", "ship it")
    reviews = json.loads(gh(env, "api", "repos/alice/demo/pulls/1/reviews").stdout)
    assert [(r["user"]["login"], r["state"], r["body"]) for r in reviews] == [("bob", "APPROVED", "ship it")]
    gh(env, "pr", "close", "1", "-R", "alice/demo")
    assert json.loads(gh(env, "api", "repos/alice/demo/pulls/1").stdout)["state"] == "closed"
    gh(env, "pr", "reopen", "1", "-R", "alice/demo")
    assert json.loads(gh(env, "api", "repos/alice/demo/pulls/1").stdout)["state"] == "open"
    comments = json.loads(gh(env, "api", "repos/alice/demo/issues/1/comments").stdout)
    assert [c["body"] for c in comments] == ["please look"]
    gh(env, "api", "-X", "POST", "repos/alice/demo/statuses/" + json.loads(gh(env, "api", "repos/alice/demo/pulls/1").stdout)[
        "head"]["sha"], "-f", "state=success", "-f", "context=ci/test")
    view = gh(env, "pr", "view", "1", "-R", "alice/demo").stdout
    assert "title:\tF" in view and "state:\tOPEN" in view and "reviewers:\tbob (Approved)" in view
    detail = json.loads(gh(env, "pr", "view", "1", "-R", "alice/demo", "--json", "number,headRefName,additions").stdout)
    assert detail == {"number": 1, "headRefName": "feature", "additions": 1}


def test_gh_org_repositories(gh_server):
    srv, env = gh_server
    token = srv.add_user("alice")
    import agentgit
    with srv.app.store.transaction() as db:            # an org alice administers, as POST /user/orgs makes it
        org_id = agentgit.insert_account(db, "acme", "org")
        alice_id = db.execute("SELECT id FROM accounts WHERE login = 'alice'").fetchone()["id"]
        db.execute("INSERT INTO org_members (org_id, user_id, role) VALUES (?, ?, 'admin')", (org_id, alice_id))
    gh(env, "auth", "login", "--hostname", GH_HOST, "--with-token", stdin=token + "\n")
    gh(env, "repo", "create", "acme/tool", "--private", "--description", "Org tool")
    view = json.loads(gh(env, "repo", "view", "acme/tool", "--json", "name,visibility,owner,description").stdout)
    assert (view["name"], view["visibility"], view["owner"]["login"], view["description"]) == (
        "tool", "PRIVATE", "acme", "Org tool")
    assert gh(env, "repo", "list", "acme").stdout.startswith("acme/tool\tOrg tool\tprivate")


def test_connect_gh_localhost_mode(tmp_path):
    """`connect gh --mode localhost`, run far from the server's data: gh's plain-HTTP host
    github.localhost, with agentgit as the HTTP proxy of gh (by a wrapper first on PATH) and of git (for
    that host alone), so the made-up name never resolves and nothing needs root. gh works in a script
    with only the printed environment, and inside a clone, however it was cloned, without -R."""
    import shutil
    import agentgit
    if shutil.which("gh") is None:
        import pytest
        pytest.skip("gh is not installed")
    srv = agentgit.make_server(tmp_path / "data", port=0).start()
    try:
        token = srv.add_user("alice")
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        env = plain_gh_env(tmp_path)
        env.pop("GH_TOKEN", None)
        # the line the landing page shows, as it is shown, in a shell started far from the server's data
        line = html.unescape(re.search(r"<li>gh: <code>(.*?)</code>", call(srv, "GET", "/").raw.decode()).group(1))
        assert "--mode localhost" in line
        line = line.replace("python agentgit.py", " ".join(map(shlex.quote, CLI))).replace("TOKEN", token)
        shown = subprocess.run(["/bin/sh", "-c", line + "\nenv -0"], capture_output=True, check=True, env=env,
                               cwd=elsewhere).stdout
        assert os.listdir(elsewhere) == []                       # nothing written where it ran
        env = dict(entry.decode().partition("=")[::2] for entry in shown.split(b"\0") if entry)
        assert env["GH_HOST"] == "github.localhost" and "HTTP_PROXY" not in env     # gh's wrapper holds the proxy
        assert json.loads(gh(env, "api", "user").stdout)["login"] == "alice"
        gh(env, "repo", "create", "alice/demo", "--private", "--add-readme")
        gh(env, "issue", "create", "-R", "alice/demo", "-t", "Over localhost", "-b", "b")
        # a clone by gh, and one by git from the API's clone_url: gh knows the repository in both
        gh(env, "repo", "clone", "alice/demo", str(tmp_path / "clone"), cwd=str(tmp_path))
        assert sorted(os.listdir(tmp_path / "clone")) == [".git", "README.md"]
        clone_url = api(srv, "GET", "/repos/alice/demo", token).json["clone_url"]
        git(str(tmp_path), "clone", "-q", clone_url, str(tmp_path / "by-git"), env=env)
        for clone in (tmp_path / "clone", tmp_path / "by-git"):
            assert "Over localhost" in gh(env, "issue", "list", cwd=str(clone)).stdout
        clone = str(tmp_path / "by-git")
        git(clone, "checkout", "-q", "-b", "fix", env=env)
        commit_file(clone, "fix.txt", "fixed\n")
        git(clone, "push", "-q", "origin", "fix", env=env)
        # an agent framework's script: sh, a subprocess of it, gh by name, no -R
        script = tmp_path / "agent.sh"
        script.write_text('set -e\ngh pr create -H fix -B main -t "Fix it" -b "from a script"\n'
                          'sh -c "gh pr list --json title -q .[].title"\n')
        ran = subprocess.run(["/bin/sh", str(script)], cwd=clone, env=env, capture_output=True, text=True, timeout=120)
        assert ran.returncode == 0 and ran.stdout.strip().endswith("Fix it"), ran
        assert api(srv, "GET", "/repos/alice/demo/pulls/2", token).json["title"] == "Fix it"
    finally:
        srv.stop()


def test_connect_gh_https_mode_and_rebase_merge(gh_server, tmp_path):
    """`connect gh --mode https` writes what `gh auth login` would; a rebase merge from gh lands the commits."""
    srv, env = gh_server
    token = srv.add_user("alice")
    connect_gh(srv, token, env, "--url", "https://" + GH_HOST, "--dir", str(tmp_path / "conf"))
    assert env["GH_HOST"] == GH_HOST
    status = gh(env, "auth", "status", "--hostname", GH_HOST)
    assert "account alice" in status.stdout + status.stderr
    gh(env, "api", "-X", "POST", "user/repos", "-f", "name=demo", "-F", "auto_init=true")
    main = gh(env, "api", "repos/alice/demo/git/ref/heads/main", "-q", ".object.sha").stdout.strip()
    gh(env, "api", "-X", "POST", "repos/alice/demo/git/refs", "-f", "ref=refs/heads/feature", "-f", "sha=" + main)
    for name in ("one", "two"):
        gh(env, "api", "-X", "PUT", "repos/alice/demo/contents/%s.txt" % name, "-f", "message=add " + name,
           "-f", "content=eAo=", "-f", "branch=feature")
    gh(env, "pr", "create", "-R", "alice/demo", "--head", "feature", "--base", "main", "--title", "T", "--body", "b")
    gh(env, "pr", "merge", "1", "-R", "alice/demo", "--rebase")
    commits = json.loads(gh(env, "api", "repos/alice/demo/commits").stdout)
    assert [c["commit"]["message"] for c in commits][:3] == ["add two", "add one", "Initial commit"]


def test_gh_secrets_and_variables(gh_server):
    """gh seals the value to the repository's X25519 key; agentgit keeps the sealed box, shows names only."""
    srv, env = gh_server
    token = srv.add_user("alice")
    gh(env, "auth", "login", "--hostname", GH_HOST, "--with-token", stdin=token + "\n")
    gh(env, "api", "-X", "POST", "user/repos", "-f", "name=demo", "-F", "private=true")
    gh(env, "secret", "set", "DEPLOY_KEY", "--body", "hunter2", "-R", "alice/demo")
    gh(env, "secret", "set", "deploy_key", "--body", "hunter3", "-R", "alice/demo")     # names are upper-cased
    listing = gh(env, "secret", "list", "-R", "alice/demo").stdout
    assert listing.startswith("DEPLOY_KEY\t") and len(listing.splitlines()) == 1
    sealed = srv.app.store.one("SELECT encrypted_value FROM secrets")["encrypted_value"]
    assert "hunter" not in sealed and len(base64.b64decode(sealed)) == 32 + 16 + len("hunter3")
    gh(env, "secret", "delete", "DEPLOY_KEY", "-R", "alice/demo")
    assert gh(env, "secret", "list", "-R", "alice/demo").stdout == ""
    # variables are in the clear
    gh(env, "variable", "set", "REGION", "--body", "eu-west-1", "-R", "alice/demo")
    gh(env, "variable", "set", "REGION", "--body", "eu-north-1", "-R", "alice/demo")        # an update
    assert gh(env, "variable", "get", "REGION", "-R", "alice/demo").stdout.strip() == "eu-north-1"
    assert gh(env, "variable", "list", "-R", "alice/demo").stdout.startswith("REGION\teu-north-1\t")
    gh(env, "variable", "delete", "REGION", "-R", "alice/demo")
    assert gh(env, "variable", "list", "-R", "alice/demo").stdout == ""


def test_gh_fork_and_a_pull_request_from_it(gh_server, tmp_path):
    """bob cannot push to alice/demo: he forks it with gh, pushes a branch to his fork, and opens a pull
    request from it; alice checks it out with gh and merges it."""
    srv, alice_env = gh_server
    gh(alice_env, "auth", "login", "--hostname", GH_HOST, "--with-token", stdin=srv.add_user("alice") + "\n")
    gh(alice_env, "auth", "setup-git", "--hostname", GH_HOST)
    gh(alice_env, "repo", "create", "alice/demo", "--public", "--add-readme")
    bob_env = dict(alice_env, GH_CONFIG_DIR=str(tmp_path / "bob-gh"), HOME=str(tmp_path / "bob-home"))
    os.makedirs(bob_env["HOME"])
    gh(bob_env, "auth", "login", "--hostname", GH_HOST, "--with-token", stdin=srv.add_user("bob") + "\n")
    gh(bob_env, "auth", "setup-git", "--hostname", GH_HOST)
    gh(bob_env, "repo", "fork", "alice/demo", "--clone=false")
    work = str(tmp_path / "fork")
    gh(bob_env, "repo", "clone", "bob/demo", work, cwd=str(tmp_path))
    git(work, "checkout", "-q", "-b", "fix", env=bob_env)
    with open(os.path.join(work, "fix.txt"), "w") as f:
        f.write("fixed\n")
    git(work, "add", "fix.txt", env=bob_env)
    git(work, "commit", "-q", "-m", "Fix it", env=bob_env)
    git(work, "push", "-q", "-u", "origin", "fix", env=bob_env)
    gh(bob_env, "pr", "create", "-t", "Fix", "-b", "", cwd=work)      # gh finds the upstream and the head itself
    seen = json.loads(gh(alice_env, "pr", "view", "1", "-R", "alice/demo", "--json",
                         "isCrossRepository,headRepositoryOwner,commits").stdout)
    assert seen["isCrossRepository"] is True and seen["headRepositoryOwner"]["login"] == "bob"
    assert [c["messageHeadline"] for c in seen["commits"]] == ["Fix it"]
    upstream = str(tmp_path / "upstream")
    gh(alice_env, "repo", "clone", "alice/demo", upstream, cwd=str(tmp_path))
    gh(alice_env, "pr", "checkout", "1", cwd=upstream)                      # through refs/pull/1/head
    assert os.path.exists(os.path.join(upstream, "fix.txt"))
    gh(alice_env, "pr", "merge", "1", "-R", "alice/demo", "--merge")
    git(upstream, "fetch", "-q", "origin", env=alice_env)
    assert "Fix it" in git(upstream, "log", "--format=%s", "origin/main", env=alice_env).stdout
    # bob's fork catches up with the merge
    gh(bob_env, "repo", "sync", "bob/demo")
    synced = json.loads(gh(bob_env, "api", "repos/bob/demo/branches/main").stdout)["commit"]["sha"]
    assert synced == json.loads(gh(alice_env, "api", "repos/alice/demo/branches/main").stdout)["commit"]["sha"]


def test_gh_understands_at_me(tmp_path):
    """gh pr status and gh pr list --author @me ask GitHub's search for author:@me (and
    review-requested:@me): the caller, as GitHub reads it."""
    with gh_as_alice(tmp_path) as (srv, env, alice):
        bob = srv.add_user("bob")
        api(srv, "POST", "/user/repos", alice, {"name": "demo", "auto_init": True})
        api(srv, "PUT", "/repos/alice/demo/collaborators/bob", alice, {"permission": "push"})
        main = api(srv, "GET", "/repos/alice/demo/branches/main", alice).json["commit"]["sha"]
        for owner, branch in ((alice, "mine"), (bob, "bobs")):
            api(srv, "POST", "/repos/alice/demo/git/refs", owner, {"ref": "refs/heads/" + branch, "sha": main})
            api(srv, "PUT", "/repos/alice/demo/contents/%s.txt" % branch, owner, {
                "message": branch, "content": "eA==", "branch": branch})
            assert api(srv, "POST", "/repos/alice/demo/pulls", owner, {
                "title": "PR from " + branch, "head": branch, "base": "main"}).status == 201
        assert api(srv, "POST", "/repos/alice/demo/pulls/2/requested_reviewers", bob,
                   {"reviewers": ["alice"]}).status == 201
        mine = gh(env, "pr", "list", "-R", "alice/demo", "--author", "@me").stdout
        assert "PR from mine" in mine and "PR from bobs" not in mine
        status = gh(env, "pr", "status", "-R", "alice/demo").stdout
        created = status.split("Created by you")[1].split("Requesting a code review from you")[0]
        assert "PR from mine" in created and "PR from bobs" not in created, status
        assert "PR from bobs" in status.split("Requesting a code review from you")[1], status
        searched = api(srv, "GET", "/search/issues?q=involves:@me+is:pr", bob).json
        assert [i["title"] for i in searched["items"]] == ["PR from bobs"]


def test_gh_labels_a_new_repositorys_issue_and_pull_request_with_githubs_defaults(tmp_path):
    """GitHub gives every new repository nine labels; gh's --label counts on them."""
    with gh_as_alice(tmp_path) as (srv, env, alice):
        api(srv, "POST", "/user/repos", alice, {"name": "demo", "auto_init": True})
        main = api(srv, "GET", "/repos/alice/demo/branches/main", alice).json["commit"]["sha"]
        api(srv, "POST", "/repos/alice/demo/git/refs", alice, {"ref": "refs/heads/fix", "sha": main})
        api(srv, "PUT", "/repos/alice/demo/contents/fix.txt", alice, {"message": "fix", "content": "eA==",
                                                                       "branch": "fix"})
        gh(env, "issue", "create", "-R", "alice/demo", "-t", "Crash", "-b", "b", "--label", "bug")
        gh(env, "pr", "create", "-R", "alice/demo", "-H", "fix", "-B", "main", "-t", "Fix", "-b", "",
           "--label", "enhancement", "--label", "good first issue")
        assert [l["name"] for l in api(srv, "GET", "/repos/alice/demo/issues/1", alice).json["labels"]] == ["bug"]
        assert [l["name"] for l in api(srv, "GET", "/repos/alice/demo/issues/2", alice).json["labels"]] == [
            "enhancement", "good first issue"]
        names = gh(env, "label", "list", "-R", "alice/demo").stdout
        for name in ("bug", "documentation", "duplicate", "enhancement", "good first issue", "help wanted",
                     "invalid", "question", "wontfix"):
            assert name in names


def test_gh_release_download_archives(tmp_path):
    """gh release download --archive fetches the release's zipball and tarball: the tree at its tag,
    under one OWNER-REPO-SHA/ directory, modes and symlinks kept, named as GitHub names them (REPO-TAG
    without the tag's leading v)."""
    import tarfile
    import zipfile
    with gh_as_alice(tmp_path) as (srv, env, alice):
        api(srv, "POST", "/user/repos", alice, {"name": "demo", "auto_init": True})
        work = str(tmp_path / "w")
        git(str(tmp_path), "clone", "-q", remote(srv, "alice/demo", alice), work)
        os.makedirs(os.path.join(work, "bin"))
        with open(os.path.join(work, "bin", "run"), "w") as f:
            f.write("#!/bin/sh\necho hi\n")
        os.chmod(os.path.join(work, "bin", "run"), 0o755)
        os.symlink("bin/run", os.path.join(work, "run"))
        git(work, "add", ".")
        git(work, "commit", "-qm", "tools")
        git(work, "push", "-q", "origin", "HEAD:main")
        sha = git(work, "rev-parse", "HEAD").stdout.strip()
        gh(env, "release", "create", "v1", "-R", "alice/demo", "--title", "One", "--notes", "first")
        out = tmp_path / "dl"
        gh(env, "release", "download", "v1", "-R", "alice/demo", "--archive", "zip", "-D", str(out))
        gh(env, "release", "download", "v1", "-R", "alice/demo", "--archive", "tar.gz", "-D", str(out))
        root = "alice-demo-%s/" % sha[:7]
        with zipfile.ZipFile(out / "demo-1.zip") as z:
            assert sorted(z.namelist()) == [root + "README.md", root + "bin/run", root + "run"]
            assert z.read(root + "README.md") == b"# demo\n" and z.getinfo(root + "bin/run").external_attr >> 16 == 0o100755
        with tarfile.open(out / "demo-1.tar.gz") as t:
            assert t.getmember(root + "run").issym() and t.getmember(root + "run").linkname == "bin/run"
            assert t.getmember(root + "bin/run").mode == 0o755
            assert t.extractfile(root + "bin/run").read() == b"#!/bin/sh\necho hi\n"
        assert api(srv, "GET", "/repos/alice/demo/zipball/nope", alice).status == 404
        public = call(srv, "GET", "/api/v3/repos/alice/demo/tarball")          # the default branch, for anyone
        assert public.status == 200 and public.headers["content-type"] == "application/x-gzip"
        assert "attachment; filename=demo-%s.tar.gz" % sha[:7] == public.headers["content-disposition"]


def test_gh_org_and_environment_secrets_and_variables(tmp_path):
    """acme's secrets and variables for all its repositories, its private ones or those selected, and
    an environment's own, set and listed with gh; no value ever comes back."""
    with gh_as_alice(tmp_path) as (srv, env, alice):
        org_and_environment_secrets(srv, env, alice)


def org_and_environment_secrets(srv, env, alice):
    assert ext(srv, "POST", "/user/orgs", alice, {"login": "acme"}).status == 201
    for name in ("web", "api"):
        gh(env, "api", "-X", "POST", "orgs/acme/repos", "-f", "name=" + name, "-F", "private=true")
    gh(env, "secret", "set", "NPM_TOKEN", "--org", "acme", "--body", "s3cret", "--visibility", "all")
    gh(env, "secret", "set", "DEPLOY", "--org", "acme", "--body", "d3ploy", "--repos", "web")
    listing = gh(env, "secret", "list", "--org", "acme").stdout.splitlines()
    assert [line.split("\t")[0] for line in listing] == ["DEPLOY", "NPM_TOKEN"]
    assert "1 selected repositor" in listing[0] or "SELECTED" in listing[0].upper(), listing
    selected = json.loads(gh(env, "api", "orgs/acme/actions/secrets/DEPLOY/repositories").stdout)
    assert [r["full_name"] for r in selected["repositories"]] == ["acme/web"]
    assert "s3cret" not in gh(env, "api", "orgs/acme/actions/secrets/NPM_TOKEN").stdout
    gh(env, "variable", "set", "REGION", "--org", "acme", "--body", "eu-west-1", "--visibility", "private")
    gh(env, "variable", "set", "CHANNEL", "--org", "acme", "--body", "beta", "--repos", "web,api")
    variables = gh(env, "variable", "list", "--org", "acme").stdout
    assert variables.startswith("CHANNEL\tbeta\t") and "REGION\teu-west-1\t" in variables, variables
    assert gh(env, "variable", "get", "REGION", "--org", "acme").stdout.strip() == "eu-west-1"
    gh(env, "secret", "delete", "DEPLOY", "--org", "acme")
    gh(env, "variable", "delete", "CHANNEL", "--org", "acme")
    assert [l.split("\t")[0] for l in gh(env, "secret", "list", "--org", "acme").stdout.splitlines()] == ["NPM_TOKEN"]
    # an environment with a wait timer and its own secret and variable
    gh(env, "api", "-X", "PUT", "repos/acme/web/environments/production", "-F", "wait_timer=5")
    gh(env, "secret", "set", "DB_PASSWORD", "--env", "production", "--body", "pw", "-R", "acme/web")
    gh(env, "variable", "set", "URL", "--env", "production", "--body", "https://web.example", "-R", "acme/web")
    assert gh(env, "secret", "list", "--env", "production", "-R", "acme/web").stdout.startswith("DB_PASSWORD\t")
    assert gh(env, "variable", "get", "URL", "--env", "production", "-R", "acme/web").stdout.strip() == \
        "https://web.example"
    environments = json.loads(gh(env, "api", "repos/acme/web/environments").stdout)
    assert [(e["name"], e["protection_rules"][0]["wait_timer"]) for e in environments["environments"]] == [
        ("production", 5)]
    assert gh(env, "secret", "list", "-R", "acme/web").stdout == ""      # the repository's own: none
    gh(env, "api", "-X", "DELETE", "repos/acme/web/environments/production")
    assert srv.app.store.one("SELECT COUNT(*) AS n FROM environment_secrets")["n"] == 0


def test_gh_deploy_keys_and_workflow_switches(tmp_path):
    """gh repo deploy-key add/list/delete with a key from ssh-keygen (kept, listed; agentgit has no SSH),
    and gh workflow disable/enable: a disabled workflow is not dispatched."""
    if shutil.which("ssh-keygen") is None:
        pytest.skip("ssh-keygen is not installed")
    with gh_as_alice(tmp_path) as (srv, env, alice):
        api(srv, "POST", "/user/repos", alice, {"name": "demo", "auto_init": True})
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ci@builder", "-f",
                        str(tmp_path / "deploy")], check=True)
        gh(env, "repo", "deploy-key", "add", str(tmp_path / "deploy.pub"), "-R", "alice/demo", "-t", "CI")
        listing = gh(env, "repo", "deploy-key", "list", "-R", "alice/demo").stdout
        key_id, title, access, key = listing.split("\t")[:4]
        assert (title, access, key.split()[0]) == ("CI", "read-only", "ssh-ed25519"), listing
        # the same key again, here or anywhere, is in use; a line that is no key is refused
        again = gh(env, "repo", "deploy-key", "add", str(tmp_path / "deploy.pub"), "-R", "alice/demo", check=False)
        assert again.returncode != 0 and "key is already in use" in again.stderr
        (tmp_path / "bad.pub").write_text("ssh-ed25519 bm90IGEga2V5\n")
        bad = gh(env, "repo", "deploy-key", "add", str(tmp_path / "bad.pub"), "-R", "alice/demo", check=False)
        assert bad.returncode != 0 and "OpenSSH public key format" in bad.stderr
        gh(env, "repo", "deploy-key", "delete", key_id, "-R", "alice/demo")
        assert gh(env, "repo", "deploy-key", "list", "-R", "alice/demo").stdout == ""
        api(srv, "PUT", "/repos/alice/demo/contents/.github/workflows/ci.yml", alice, {
            "message": "ci", "content": base64.b64encode(b"name: CI\non: workflow_dispatch\n").decode()})
        gh(env, "workflow", "disable", "CI", "-R", "alice/demo")
        assert "disabled_manually" in gh(env, "workflow", "list", "--all", "-R", "alice/demo").stdout
        refused = gh(env, "workflow", "run", "ci.yml", "-R", "alice/demo", check=False)
        assert refused.returncode != 0, refused
        gh(env, "workflow", "enable", "CI", "-R", "alice/demo")
        gh(env, "workflow", "run", "ci.yml", "-R", "alice/demo")
        assert gh(env, "workflow", "list", "-R", "alice/demo").stdout.startswith("CI\tactive\t")
