"""githubkit, a published client whose pydantic models are generated from GitHub's current REST
description, used as a user would: each answer is parsed into its model, so a field of the wrong type,
or a required one missing, fails here (from a fresh clone: no ../shared needed)."""
import base64

import pytest
from githubkit import GitHub, TokenAuthStrategy

from conftest import commit_file, ext, git, remote


@pytest.fixture
def kit(server):
    def as_(token):
        return GitHub(TokenAuthStrategy(token), base_url=server.url + "/api/v3/", auto_retry=False)
    return as_


def test_repositories_users_orgs_and_teams_parse_as_githubs_models(server, kit, tmp_path):
    olivia = server.add_user("olivia")
    server.add_user("bob")
    gh = kit(olivia)
    me = gh.rest.users.get_authenticated().parsed_data
    assert me.login == "olivia" and me.id > 0
    assert gh.rest.users.get_by_username("bob").parsed_data.login == "bob"
    repo = gh.rest.repos.create_for_authenticated_user(name="demo", auto_init=True, private=True).parsed_data
    assert repo.full_name == "olivia/demo" and repo.private is True
    assert gh.rest.repos.get("olivia", "demo").parsed_data.default_branch == "main"
    assert gh.rest.repos.update("olivia", "demo", description="d").parsed_data.description == "d"
    assert [r.name for r in gh.rest.repos.list_for_authenticated_user().parsed_data] == ["demo"]
    work = str(tmp_path / "w")
    git(str(tmp_path), "clone", "-q", remote(server, "olivia/demo", olivia), work)
    sha = commit_file(work, "a.txt", "a")
    git(work, "push", "-q", "origin", "HEAD:main")
    assert [b.name for b in gh.rest.repos.list_branches("olivia", "demo").parsed_data] == ["main"]
    assert gh.rest.repos.get_branch("olivia", "demo", "main").parsed_data.commit.sha == sha
    assert gh.rest.repos.get_commit("olivia", "demo", sha).parsed_data.sha == sha
    assert gh.rest.repos.list_commits("olivia", "demo").parsed_data[0].sha == sha
    assert gh.rest.repos.compare_commits("olivia", "demo", "main~1...main").parsed_data.ahead_by == 1
    assert gh.rest.git.get_ref("olivia", "demo", "heads/main").parsed_data.object_.sha == sha
    gh.rest.repos.add_collaborator("olivia", "demo", "bob", permission="push")
    assert sorted(c.login for c in gh.rest.repos.list_collaborators("olivia", "demo").parsed_data) == ["bob", "olivia"]
    assert gh.rest.repos.get_collaborator_permission_level("olivia", "demo", "bob").parsed_data.permission == "write"
    assert gh.rest.repos.get_content("olivia", "demo", "a.txt").parsed_data.name == "a.txt"
    put = gh.rest.repos.create_or_update_file_contents("olivia", "demo", "b.txt", message="b",
                                                       content=base64.b64encode(b"b\n").decode()).parsed_data
    assert put.content.name == "b.txt" and put.commit.sha
    assert gh.rest.repos.get_readme("olivia", "demo").parsed_data.name == "README.md"

    ext(server, "POST", "/user/orgs", olivia, {"login": "acme", "name": "Acme"})
    assert gh.rest.orgs.get("acme").parsed_data.login == "acme"
    assert gh.rest.orgs.set_membership_for_user("acme", "bob", role="member").parsed_data.role == "member"
    assert [m.login for m in gh.rest.orgs.list_members("acme").parsed_data] == ["bob", "olivia"]
    assert [o.login for o in gh.rest.orgs.list_for_authenticated_user().parsed_data] == ["acme"]
    assert gh.rest.repos.create_in_org("acme", name="tools").parsed_data.full_name == "acme/tools"
    team = gh.rest.teams.create("acme", name="devs").parsed_data
    assert team.slug == "devs"
    assert gh.rest.teams.add_or_update_membership_for_user_in_org("acme", "devs", "bob").parsed_data.state
    assert [t.slug for t in gh.rest.teams.list("acme").parsed_data] == ["devs"]
    assert sorted(m.login for m in gh.rest.teams.list_members_in_org("acme", "devs").parsed_data) == ["bob", "olivia"]
    fork = gh.rest.repos.create_fork("olivia", "demo", organization="acme").parsed_data
    assert fork.full_name == "acme/demo" and fork.fork is True
    assert gh.rest.rate_limit.get().parsed_data.resources.core.limit > 0


def test_issues_pulls_releases_and_checks_parse_as_githubs_models(server, kit, tmp_path):
    alice, walt = server.add_user("alice"), server.add_user("walt")
    gh = kit(alice)
    gh.rest.repos.create_for_authenticated_user(name="app", auto_init=True)
    gh.rest.repos.add_collaborator("alice", "app", "walt", permission="push")
    assert "bug" in [l.name for l in gh.rest.issues.list_labels_for_repo("alice", "app").parsed_data]   # a default
    label = gh.rest.issues.create_label("alice", "app", name="crash", color="ff0000").parsed_data
    assert label.name == "crash"
    milestone = gh.rest.issues.create_milestone("alice", "app", title="v1").parsed_data
    issue = gh.rest.issues.create("alice", "app", title="t", labels=["crash"], milestone=milestone.number,
                                  assignees=["walt"]).parsed_data
    assert (issue.number, issue.labels[0].name, issue.assignees[0].login) == (1, "crash", "walt")
    assert gh.rest.issues.update("alice", "app", 1, body="b").parsed_data.body == "b"
    comment = gh.rest.issues.create_comment("alice", "app", 1, body="c").parsed_data
    assert [c.id for c in gh.rest.issues.list_comments("alice", "app", 1).parsed_data] == [comment.id]
    assert gh.rest.issues.list_for_repo("alice", "app").parsed_data[0].title == "t"
    assert [m.title for m in gh.rest.issues.list_milestones("alice", "app").parsed_data] == ["v1"]
    work = str(tmp_path / "w")
    git(str(tmp_path), "clone", "-q", remote(server, "alice/app", alice), work)
    git(work, "checkout", "-q", "-b", "feature")
    head = commit_file(work, "f.txt", "f\n")
    git(work, "push", "-q", "origin", "feature")
    pull = gh.rest.pulls.create("alice", "app", title="Feature", head="feature", base="main", body="Fixes #1").parsed_data
    assert (pull.number, pull.head.sha, pull.mergeable_state is not None) == (2, head, True)
    assert [f.filename for f in gh.rest.pulls.list_files("alice", "app", 2).parsed_data] == ["f.txt"]
    assert [c.sha for c in gh.rest.pulls.list_commits("alice", "app", 2).parsed_data] == [head]
    as_walt = kit(walt)          # githubkit's namespaces need their client alive
    review = as_walt.rest.pulls.create_review("alice", "app", 2, event="APPROVE", body="ok").parsed_data
    assert review.state == "APPROVED"
    assert [r.id for r in gh.rest.pulls.list_reviews("alice", "app", 2).parsed_data] == [review.id]
    check = gh.rest.checks.create("alice", "app", name="ci", head_sha=head, status="completed",
                                  conclusion="success").parsed_data
    assert check.conclusion == "success"
    assert gh.rest.checks.list_for_ref("alice", "app", head).parsed_data.total_count == 1
    status = gh.rest.repos.create_commit_status("alice", "app", head, state="success", context="lint").parsed_data
    assert status.state == "success"
    assert gh.rest.repos.get_combined_status_for_ref("alice", "app", head).parsed_data.state == "success"
    merged = gh.rest.pulls.merge("alice", "app", 2, merge_method="squash").parsed_data
    assert merged.merged is True
    assert gh.rest.pulls.get("alice", "app", 2).parsed_data.merged is True
    assert gh.rest.issues.get("alice", "app", 1).parsed_data.state == "closed"       # Fixes #1
    release = gh.rest.repos.create_release("alice", "app", tag_name="v1", name="One").parsed_data
    assert gh.rest.repos.get_release_by_tag("alice", "app", "v1").parsed_data.id == release.id
    assert [r.tag_name for r in gh.rest.repos.list_releases("alice", "app").parsed_data] == ["v1"]
    assert [t.name for t in gh.rest.repos.list_tags("alice", "app").parsed_data] == ["v1"]
    found = gh.rest.search.issues_and_pull_requests(q="repo:alice/app is:pr author:@me").parsed_data
    assert [i.number for i in found.items] == [2]
    assert gh.rest.search.repos(q="app user:alice").parsed_data.items[0].full_name == "alice/app"
