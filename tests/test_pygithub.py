"""PyGithub, unchanged, against agentgit: a human's everyday calls, and an agent that holds only a task token."""
import base64
import hashlib
import hmac

import pytest

from conftest import ext, grant_a_task

github = pytest.importorskip("github")      # make test installs it; the suite still runs without


def client(server, token):
    # PyGithub paces itself for github.com (0.25 s between requests, 1 s between writes); not needed here
    return github.Github(base_url=server.url + "/api/v3", auth=github.Auth.Token(token), retry=None,
                         seconds_between_requests=0, seconds_between_writes=0)


def test_pygithub_everyday_calls(server):
    g = client(server, server.add_user("alice"))
    me = g.get_user()
    assert me.login == "alice"
    repo = me.create_repo("demo", private=True, auto_init=True)
    assert g.get_repo("alice/demo").private is True and [b.name for b in repo.get_branches()] == ["main"]
    assert repo.get_contents("README.md").decoded_content == b"# demo\n"
    repo.create_file("a.txt", "add a", "hello\n")
    repo.update_file("a.txt", "edit a", "hello again\n", repo.get_contents("a.txt").sha)
    assert repo.get_contents("a.txt").decoded_content == b"hello again\n"
    repo.create_git_ref("refs/heads/feature", repo.get_branch("main").commit.sha)
    repo.create_file("b.txt", "add b", "b\n", branch="feature")
    issue = repo.create_issue("Bug", body="broken")
    issue.create_comment("me too")
    repo.create_label("crash", "ff0000")
    issue.add_to_labels("crash", "bug")                   # bug: one of GitHub's default labels
    assert [label.name for label in repo.get_issue(issue.number).labels] == ["bug", "crash"]
    pull = repo.create_pull(base="main", head="feature", title="Feature", body="adds b")
    assert [f.filename for f in pull.get_files()] == ["b.txt"] and repo.get_pull(pull.number).mergeable is True
    assert pull.merge(merge_method="squash").merged is True
    assert repo.get_contents("b.txt").decoded_content == b"b\n"
    head = repo.get_branch("main").commit.sha
    repo.get_commit(head).create_status("success", context="ci")
    assert repo.get_commit(head).get_combined_status().state == "success"
    assert repo.create_git_release("v1", "v1", "first").tag_name == "v1" and [t.name for t in repo.get_tags()] == ["v1"]
    assert g.get_rate_limit().resources.core.remaining > 0
    assert [r.full_name for r in g.search_repositories("demo")] == ["alice/demo"]


def test_pygithub_seals_a_secret_that_the_servers_key_opens(server):
    """PyGithub seals with libsodium (PyNaCl) to /actions/secrets/public-key: the stored box opens with the
    server's private key, so the pure-Python X25519 key is the real thing."""
    public = pytest.importorskip("nacl.public")
    g = client(server, server.add_user("alice"))
    repo = g.get_user().create_repo("demo", private=True)
    repo.create_secret("API_KEY", "s3cr3t")
    assert [s.name for s in repo.get_secrets()] == ["API_KEY"]
    sealed = base64.b64decode(server.app.store.one("SELECT encrypted_value FROM secrets")["encrypted_value"])
    private = hmac.new(server.app.key, b"actions secrets", hashlib.sha256).digest()
    assert public.SealedBox(public.PrivateKey(private)).decrypt(sealed) == b"s3cr3t"


def test_pygithub_with_a_task_token(server):
    """The agent's runtime holds only the task token: PyGithub sees the agent, the granted repository
    and nothing else, and a merge waits for the delegator's approval."""
    w = grant_a_task(server, "task:pygithub", ["read_code", "create_branch", "push_branch", "open_pr"],
                     {"branch_prefix": "agent/", "requires_approval": ["merge_pr"]})
    g = client(server, w["token"])
    assert g.get_user().login == w["login"]
    with pytest.raises(github.UnknownObjectException):
        g.get_repo("alice/other")
    repo = g.get_repo("alice/payments")
    repo.create_git_ref("refs/heads/agent/fix", repo.get_branch("main").commit.sha)
    repo.create_file("fix.txt", "fix", "fixed\n", branch="agent/fix")
    with pytest.raises(github.GithubException) as refused:
        repo.create_git_ref("refs/heads/main-copy", repo.get_branch("main").commit.sha)
    assert refused.value.status == 403 and "agent/ only" in refused.value.data["message"]
    pull = repo.create_pull(base="main", head="agent/fix", title="Fix", body="")
    with pytest.raises(github.GithubException) as waiting:
        pull.merge()
    assert waiting.value.status == 403 and waiting.value.data["approval_id"].startswith("ap_")
    assert ext(server, "POST", "/approvals/%s/approve" % waiting.value.data["approval_id"], w["alice"], {}).status == 200
    assert pull.merge().merged is True
    with pytest.raises(github.GithubException) as no_issues:
        repo.create_issue("not granted")
    assert no_issues.value.status == 403 and "does not allow open_issue" in no_issues.value.data["message"]
