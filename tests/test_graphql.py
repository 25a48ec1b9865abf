"""GraphQL at /api/graphql: the grammar gh uses, errors with locations, limits, GitHub's type names."""
import gzip
import json
import os

import pytest

import agentgit
from unittest.mock import ANY

from conftest import ROOT, call, commit_file, git, remote

TYPES_FILE = os.path.join(ROOT, "..", "shared", "github", "github-graphql-types.json.gz")


def gql(server, token, query, variables=None, operation=None):
    body = {"query": query, "variables": variables}
    if operation:
        body["operationName"] = operation
    r = call(server, "POST", "/api/graphql", token, body)
    assert r.status == 200, r
    return r.json


@pytest.fixture
def alice(server):
    token = server.add_user("alice")
    call(server, "POST", "/api/v3/user/repos", token, {"name": "demo", "description": "d", "auto_init": True})
    return token


def test_viewer_fragments_aliases_variables(server, alice):
    out = gql(server, alice, """
        query Repo($owner: String!, $name: String = "demo", $unused: Int) {
          me: viewer { ...Who }
          repository(owner: $owner, name: $name) {
            nameWithOwner isPrivate visibility
            owner { __typename login ... on User { databaseId } ... on Organization { name } }
            defaultBranchRef { name }
            viewerPermission
            skipped: name @skip(if: true)
            kept: name @include(if: $yes)
          }
        }
        fragment Who on Actor { login ...More }
        fragment More on User { isSiteAdmin }
        """, {"owner": "alice", "yes": True, "extra": "ignored"})
    assert "errors" not in out, out
    assert out["data"]["me"] == {"login": "alice", "isSiteAdmin": False}
    repo = out["data"]["repository"]
    assert repo["nameWithOwner"] == "alice/demo" and repo["visibility"] == "PUBLIC"
    assert repo["owner"] == {"__typename": "User", "login": "alice", "databaseId": 2}
    assert repo["defaultBranchRef"] == {"name": "main"} and repo["viewerPermission"] == "ADMIN"
    assert "skipped" not in repo and "kept" not in repo      # $yes is undeclared: ignored, so @include(if: null)


def test_node_ids_round_trip(server, alice):
    repo_id = gql(server, alice, '{ repository(owner:"alice", name:"demo") { id } }')["data"]["repository"]["id"]
    out = gql(server, alice, 'query($id: ID!) { node(id: $id) { __typename ... on Repository { name } } }',
              {"id": repo_id})
    assert out["data"]["node"] == {"__typename": "Repository", "name": "demo"}


def test_hidden_and_missing_are_not_found(server, alice):
    call(server, "POST", "/api/v3/user/repos", alice, {"name": "secret", "private": True})
    bob = server.add_user("bob")
    out = gql(server, bob, '{ a: repository(owner:"alice", name:"secret") { name } b: viewer { login } }')
    assert out["data"] == {"a": None, "b": {"login": "bob"}}
    assert out["errors"][0]["type"] == "NOT_FOUND" and out["errors"][0]["path"] == ["a"]
    assert "alice/secret" in out["errors"][0]["message"]
    assert call(server, "POST", "/api/graphql", None, {"query": "{ viewer { login } }"}).status == 401


@pytest.mark.parametrize("query,needle", [
    ('{ viewer { login ', "found the end of the document"),
    ('{ viewer { login(size: "x") } }', "doesn't accept argument"),
    ('{ viewer { nope } }', "Field 'nope' doesn't exist on type 'User'"),
    ('{ repository(owner: "a") { name } }', "missing required argument 'name'"),
    ('{ viewer { login } } fragment F on User { login ...F }', None),
    ('{ viewer { ...Missing } }', "Unknown fragment 'Missing'"),
    ('{ viewer { ...F } } fragment F on User { ...G } fragment G on User { ...F }', "spreads itself"),
    ('query { viewer { login } } query { viewer { login } }', "operationName is required"),
    ('{ viewer { login } } "unterminated', "Unterminated string"),
    ('{ viewer }', "Field must have selections"),
    ('{ viewer { login { x } } }', "Selections can't be made on scalars"),
    ('mutation { x }', "Field 'x' doesn't exist on type 'Mutation'"),
    ('subscription { x }', "Subscriptions are not served"),
    ('{' + ' a {' * 40 + ' b' + '}' * 41, "nests deeper"),
])
def test_bad_documents_are_graphql_errors(server, alice, query, needle):
    out = gql(server, alice, query)
    if needle is None:          # a fragment nobody uses may spread itself; the operation still runs
        assert out["data"]["viewer"]["login"] == "alice"
        return
    assert needle in json.dumps(out["errors"]), out
    assert all("message" in e for e in out["errors"])


def test_wrong_variable_types_and_locations(server, alice):
    out = gql(server, alice, 'query($n: String!) { repository(owner: "alice", name: $n) { name } }', {"n": 5})
    assert "Variable $n" in out["errors"][0]["message"] and "data" not in out
    out = gql(server, alice, 'query($n: String!) { viewer { login } }', {})
    assert "Variable $n" in out["errors"][0]["message"]
    out = gql(server, alice, '{\n  viewer {\n    bogus\n  }\n}')
    assert out["errors"][0]["locations"] == [{"line": 3, "column": 5}]
    huge = "{ viewer { %s } }" % " ".join("a%d: login" % i for i in range(30000))
    assert "longer than" in gql(server, alice, huge)["errors"][0]["message"]


# Newer than the schema in ../shared, but gh 2.102 asks for them in `gh issue view`; agentgit answers
# with nulls and empty lists (no issue types or sub-issues here).
NEWER_THAN_REFERENCE = {"IssueType", "SubIssuesSummary", ("Issue", "issueType"), ("Issue", "parent"),
                        ("Issue", "subIssues"), ("Issue", "subIssuesSummary")}


@pytest.mark.skipif(not os.path.exists(TYPES_FILE), reason="../shared/github is not present")
def test_types_and_fields_match_githubs_schema():
    with gzip.open(TYPES_FILE, "rt") as f:
        github = json.load(f)
    for name, spec in agentgit.GRAPHQL_TYPES.items():
        if name.startswith("__") or name in NEWER_THAN_REFERENCE:
            continue
        assert name in github and github[name]["kind"] == spec["kind"], name
        for field, definition in spec["fields"].items():
            if (name, field) in NEWER_THAN_REFERENCE:
                continue
            theirs = github[name]["fields"].get(field)
            assert theirs is not None, "%s.%s is not GitHub's" % (name, field)
            assert theirs["type"] == definition.type, "%s.%s: %s, GitHub says %s" % (
                name, field, definition.type, theirs["type"])
            assert set(definition.args) <= set(theirs.get("args", {})), "%s.%s args" % (name, field)
            for arg, arg_type in definition.args.items():
                assert theirs["args"][arg] == arg_type, "%s.%s(%s)" % (name, field, arg)
        for possible in spec.get("possibleTypes", []):
            assert possible in github[name]["possibleTypes"], (name, possible)
    for enum, values in agentgit.GRAPHQL_ENUMS.items():
        assert set(values) <= set(github[enum]["enumValues"]), enum


def test_variables_inside_input_objects_and_connections(server, alice):
    for title in ("one", "two", "three"):
        call(server, "POST", "/api/v3/repos/alice/demo/issues", alice, {"title": title})
    query = """query($who: String, $n: Int, $after: String) { repository(owner: "alice", name: "demo") {
        issues(first: $n, after: $after, states: OPEN, filterBy: {createdBy: $who},
               orderBy: {field: CREATED_AT, direction: ASC}) {
          totalCount edges { cursor node { number title state } } pageInfo { hasNextPage endCursor } } } }"""
    page1 = gql(server, alice, query, {"who": "alice", "n": 2})["data"]["repository"]["issues"]
    assert page1["totalCount"] == 3 and [e["node"]["title"] for e in page1["edges"]] == ["one", "two"]
    assert page1["pageInfo"]["hasNextPage"] is True
    page2 = gql(server, alice, query, {"who": "alice", "n": 2, "after": page1["pageInfo"]["endCursor"]})
    assert [e["node"]["number"] for e in page2["data"]["repository"]["issues"]["edges"]] == [3]
    nobody = gql(server, alice, query, {"who": "nobody", "n": 5})["data"]["repository"]["issues"]
    assert nobody["totalCount"] == 0
    bad = gql(server, alice, query, {"who": "alice", "n": 500})
    assert "between 0 and 100" in bad["errors"][0]["message"]
    assert "not a valid cursor" in gql(server, alice, query, {"n": 1, "after": "zzz"})["errors"][0]["message"]


def test_node_limit_refuses_hostile_queries_before_running(server, alice):
    one = 'r%d: repository(owner: "alice", name: "demo") { issues(first: 100) { nodes { labels(first: 100) { nodes { name } } } } }'
    out = gql(server, alice, "{ %s }" % " ".join(one % i for i in range(30)))
    assert out["errors"][0]["type"] == "MAX_NODE_LIMIT_EXCEEDED" and "data" not in out
    assert "requests up to" in out["errors"][0]["message"]
    ok = gql(server, alice, "{ %s }" % " ".join(one % i for i in range(2)))
    assert "errors" not in ok and ok["data"]["r0"]["issues"]["nodes"] == []
    # fragments count too, and a variable page size is read from the variables
    spread = gql(server, alice, "query($n: Int) { ...F } fragment F on Query { %s }" % " ".join(
        (one % i).replace("first: 100", "first: $n") for i in range(30)), {"n": 100})
    assert spread["errors"][0]["type"] == "MAX_NODE_LIMIT_EXCEEDED"


def test_issues_and_pull_requests_carry_their_rest_ids_as_database_id(server, alice):
    """github-mcp-server's list_issues asks Issue.databaseId: the REST id of the same issue."""
    issue = call(server, "POST", "/api/v3/repos/alice/demo/issues", alice, {"title": "t"}).json
    out = gql(server, alice, '{ repository(owner: "alice", name: "demo") { issue(number: 1) { databaseId number }'
                             ' issues(first: 5) { nodes { databaseId } } } }')
    assert out["data"]["repository"]["issue"] == {"databaseId": issue["id"], "number": 1}
    assert out["data"]["repository"]["issues"]["nodes"] == [{"databaseId": issue["id"]}]


def test_the_git_object_model(server, alice, tmp_path):
    """What release and dependency tools read: refs and what they point at, a commit's history (paged, by
    path and by time), the pull requests a commit belongs to, annotated tags, trees and blobs by expression."""
    work = str(tmp_path / "w")
    git(str(tmp_path), "clone", "-q", remote(server, "alice/demo", alice), work)
    docs = commit_file(work, "docs/guide.md", "read me\n", "docs: a guide")
    git(work, "tag", "-a", "v1", "-m", "the first")
    git(work, "push", "-q", "origin", "HEAD:main", "--tags")
    git(work, "checkout", "-q", "-b", "feature")
    commit_file(work, "src/x.py", "x = 1\n", "feat: x")
    git(work, "push", "-q", "origin", "feature")
    call(server, "POST", "/api/v3/repos/alice/demo/pulls", alice, {"title": "x", "head": "feature", "base": "main"})
    merge = call(server, "PUT", "/api/v3/repos/alice/demo/pulls/1/merge", alice, {"merge_method": "merge"}).json["sha"]
    call(server, "POST", "/api/v3/repos/alice/demo/releases", alice, {"tag_name": "v1", "name": "one"})
    out = gql(server, alice, """{ repository(owner: "alice", name: "demo") {
        main: ref(qualifiedName: "main") { prefix name target { __typename ... on Commit {
          oid messageHeadline author { name email } parents(first: 5) { nodes { oid } }
          history(first: 2) { totalCount nodes { oid } pageInfo { hasNextPage endCursor } }
          docs: history(first: 10, path: "docs") { totalCount nodes { messageHeadline } }
          future: history(first: 10, since: "2999-01-01T00:00:00Z") { totalCount }
          associatedPullRequests(first: 5) { nodes { number merged mergeCommit { oid } changedFiles closedAt
                                                     authorAssociation mergedBy { login } } } } } }
        tag: ref(qualifiedName: "refs/tags/v1") { prefix target { __typename ... on Tag { name message
          target { oid } } } }
        missing: ref(qualifiedName: "nope") { name }
        refs(refPrefix: "refs/heads/", first: 5, orderBy: {field: ALPHABETICAL, direction: DESC}) {
          totalCount nodes { name target { oid } } }
        readme: object(expression: "main:README.md") { __typename ... on Blob { text byteSize isBinary } }
        dir: object(expression: "main:docs") { ... on Tree { entries { name path type
          object { ... on Blob { text } } } } }
        byOid: object(oid: "%s") { __typename oid }
        nothing: object(expression: "main:nope.txt") { oid }
        releases(first: 1) { nodes { tag { name prefix } tagCommit { oid } } } }
      rateLimit { limit remaining used cost nodeCount resetAt } }""" % merge)
    assert "errors" not in out, out
    repo = out["data"]["repository"]
    main = repo["main"]["target"]
    assert (repo["main"]["prefix"], repo["main"]["name"], main["__typename"], main["oid"]) == (
        "refs/heads/", "main", "Commit", merge)
    assert main["author"] == {"name": "alice", "email": "alice@users.noreply.agentgit"}     # who merged
    assert len(main["parents"]["nodes"]) == 2 and main["history"]["totalCount"] == 4
    assert [n["oid"] for n in main["history"]["nodes"]][0] == merge and main["history"]["pageInfo"]["hasNextPage"]
    assert [n["messageHeadline"] for n in main["docs"]["nodes"]] == ["docs: a guide"]
    assert main["future"]["totalCount"] == 0
    assert main["associatedPullRequests"]["nodes"][0]["number"] == 1
    pull = main["associatedPullRequests"]["nodes"][0]
    assert pull["mergeCommit"] == {"oid": merge} and pull["changedFiles"] == 1 and pull["closedAt"]
    assert pull["authorAssociation"] == "OWNER" and pull["mergedBy"] == {"login": "alice"}
    assert repo["tag"] == {"prefix": "refs/tags/", "target": {"__typename": "Tag", "name": "v1",
                                                              "message": "the first", "target": {"oid": docs}}}
    assert repo["missing"] is None
    assert [(n["name"], n["target"]["oid"]) for n in repo["refs"]["nodes"]] == [("main", merge), ("feature", ANY)]
    assert repo["readme"] == {"__typename": "Blob", "text": "# demo\n", "byteSize": 7, "isBinary": False}
    assert repo["dir"]["entries"] == [{"name": "guide.md", "path": "docs/guide.md", "type": "blob",
                                       "object": {"text": "read me\n"}}]
    assert repo["byOid"] == {"__typename": "Commit", "oid": merge} and repo["nothing"] is None
    assert repo["releases"]["nodes"] == [{"tag": {"name": "v1", "prefix": "refs/tags/"}, "tagCommit": {"oid": docs}}]
    assert out["data"]["rateLimit"]["limit"] == 5000 and out["data"]["rateLimit"]["nodeCount"] > 0
    # the rest of the history, after the first page's cursor
    cursor = main["history"]["pageInfo"]["endCursor"]
    rest = gql(server, alice, """query($c: String) { repository(owner: "alice", name: "demo") { ref(qualifiedName:
        "main") { target { ... on Commit { history(first: 10, after: $c) { nodes { messageHeadline }
        pageInfo { hasNextPage } } } } } } }""", {"c": cursor})["data"]["repository"]["ref"]["target"]["history"]
    first_page = [n["oid"] for n in main["history"]["nodes"]]
    assert len(rest["nodes"]) == 2 and rest["nodes"][-1]["messageHeadline"] == "Initial commit"    # parents last
    headlines = [n["messageHeadline"] for n in rest["nodes"]]
    assert docs in first_page or headlines[0] == "docs: a guide"          # the two pages: four commits, each once
    assert rest["pageInfo"]["hasNextPage"] is False


@pytest.mark.parametrize("selection, needle", [
    ('refs(refPrefix: "refs/../", first: 5) { totalCount }', "refPrefix"),
    ('refs(refPrefix: "refs/heads", first: 5) { totalCount }', "refPrefix"),
    ('object(expression: "main:%s") { oid }' % ("a/" * 3000), "longer than"),
    ('ref(qualifiedName: "main") { target { ... on Commit { history(first: 1, since: "yesterday") { totalCount } } } }',
     "ISO 8601"),
    ('ref(qualifiedName: "main") { target { ... on Commit { history(first: 101) { totalCount } } } }', "between 0"),
])
def test_the_git_object_model_refuses_bad_arguments(server, alice, selection, needle):
    out = gql(server, alice, '{ repository(owner: "alice", name: "demo") { %s } }' % selection)
    assert needle in out["errors"][0]["message"], out


def test_pin_and_delete_issues(server, alice):
    """At most three pinned issues a repository; deleting an issue is its admins' (a reader may not), takes
    all it holds, and its number is never given again."""
    bob = server.add_user("bob")
    ids = [call(server, "POST", "/api/v3/repos/alice/demo/issues", alice, {"title": "t%d" % n}).json["node_id"]
           for n in range(5)]
    pin = 'mutation($id: ID!) { pinIssue(input: {issueId: $id}) { issue { number isPinned } } }'
    assert [gql(server, alice, pin, {"id": i})["data"]["pinIssue"]["issue"] for i in ids[:3]] == [
        {"number": n, "isPinned": True} for n in (1, 2, 3)]
    assert "at most 3" in gql(server, alice, pin, {"id": ids[3]})["errors"][0]["message"]
    unpin = gql(server, alice, 'mutation($id: ID!) { unpinIssue(input: {issueId: $id}) { issue { isPinned } } }',
                {"id": ids[0]})
    assert unpin["data"]["unpinIssue"]["issue"]["isPinned"] is False
    delete = 'mutation($id: ID!) { deleteIssue(input: {issueId: $id}) { repository { nameWithOwner } } }'
    call(server, "POST", "/api/v3/repos/alice/demo/issues/5/comments", alice, {"body": "gone soon"})
    assert gql(server, bob, delete, {"id": ids[4]})["errors"][0]["type"] == "FORBIDDEN"
    assert gql(server, alice, delete, {"id": ids[4]})["data"]["deleteIssue"]["repository"]["nameWithOwner"] == \
        "alice/demo"
    assert call(server, "GET", "/api/v3/repos/alice/demo/issues/5", alice).status == 404
    assert call(server, "POST", "/api/v3/repos/alice/demo/issues", alice, {"title": "next"}).json["number"] == 6
