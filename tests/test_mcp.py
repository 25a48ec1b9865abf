"""agentgit's own MCP server at /mcp, driven by the official MCP SDK in both eras (2026-07-28 and the
2025 handshake): tools with GitHub's MCP server's names, decided and audited as REST is on surface mcp;
an agent's whole task through it, its merge held for alice's approval by URL-mode elicitation; and the
protocol's bad input, each answered in the protocol's own shape."""
import asyncio
import json
import urllib.parse

import pytest

from conftest import alice_and_her_agent, api, call, exchange, ext, grant_a_task, session_token

mcp = pytest.importorskip("mcp", reason="make test installs the mcp SDK")
import httpx2  # noqa: E402  (the SDK's HTTP client)
import mcp_types  # noqa: E402
from mcp import Client  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402
from mcp.shared.exceptions import MCPError  # noqa: E402

MODERN = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}


def client(server, token, mode="auto", **kwargs):
    http = httpx2.AsyncClient(headers={"Authorization": "Bearer " + token})
    return Client(streamable_http_client(server.url + "/mcp", http_client=http), mode=mode, **kwargs)


def text(result):
    return " ".join(c.text for c in result.content if getattr(c, "text", None))


@pytest.mark.parametrize("mode", ["auto", "legacy"])
def test_a_human_uses_the_tools_in_either_era(server, mode):
    alice = server.add_user("alice")
    api(server, "POST", "/user/repos", alice, {"name": "demo", "auto_init": True})

    async def scenario():
        async with client(server, alice, mode) as c:
            assert c.session.protocol_version == ("2026-07-28" if mode == "auto" else "2025-11-25")
            tools = {t.name: t for t in (await c.list_tools()).tools}
            assert {"get_me", "get_file_contents", "create_branch", "merge_pull_request", "get_permissions"} <= set(tools)
            assert tools["get_file_contents"].annotations.read_only_hint is True
            assert tools["delete_file"].annotations.destructive_hint is True
            assert "merge_pr" in tools["merge_pull_request"].description
            assert json.loads(text(await c.call_tool("get_me", {})))["login"] == "alice"
            made = await c.call_tool("create_issue", {"owner": "alice", "repo": "demo", "title": "From MCP"})
            assert not made.is_error and made.structured_content["number"] == 1
            listed = json.loads(text(await c.call_tool("list_issues", {"owner": "alice", "repo": "demo"})))
            assert [i["title"] for i in listed] == ["From MCP"]
            readme = (await c.call_tool("get_file_contents", {"owner": "alice", "repo": "demo", "path": "README.md"}))
            assert readme.structured_content["content"] == "# demo\n"
            api(server, "PUT", "/repos/alice/demo/contents/latin1.txt", alice, {"message": "l", "content": "Y2Fm6Q=="})
            latin = await c.call_tool("get_file_contents", {"owner": "alice", "repo": "demo", "path": "latin1.txt"})
            assert latin.structured_content["content"] == "caf\ufffd"      # not UTF-8: shown, not a server error
            missing = await c.call_tool("get_issue", {"owner": "alice", "repo": "demo", "issue_number": 9})
            assert missing.is_error and "HTTP 404" in text(missing)
            may = json.loads(text(await c.call_tool("get_permissions", {"owner": "alice", "repo": "demo"})))
            assert may["actions"]["merge_pr"]["decision"] == "allow"

    asyncio.run(scenario())
    rows = server.app.store.all("SELECT * FROM audit WHERE action = 'open_issue'")
    assert [(r["surface"], r["actor"], r["decision"]) for r in rows] == [("mcp", "alice", "allow")]


def test_an_agents_task_through_mcp_waits_for_alices_approval(server):
    """A task token bound to alice/payments: the tools its grant allows, a branch under its prefix, a
    commit, a pull request; the merge waits for alice (2026-07-28's input_required with a URL
    elicitation), the SDK retries once she approves, and the audit rows name the whole chain."""
    w = grant_a_task(server, "task:fix-payments", ["read_code", "create_branch", "push_branch", "open_pr", "merge_pr"],
                     {"branch_prefix": "agent/", "requires_approval": ["merge_pr"]})
    asked = []

    async def approve_at_the_url(context, params):
        asked.append(params)
        approval = urllib.parse.urlsplit(params.url).path.rsplit("/", 1)[1]          # /approvals/ap_…
        assert ext(server, "POST", "/approvals/%s/approve" % approval, w["alice"], {}).status == 200
        return mcp_types.ElicitResult(action="accept")

    async def scenario():
        async with client(server, w["token"], elicitation_callback=approve_at_the_url) as c:
            names = {t.name for t in (await c.list_tools()).tools}
            assert {"create_branch", "create_pull_request", "merge_pull_request"} <= names
            assert not names & {"create_issue", "add_issue_comment", "update_issue"}      # not in its grant
            repo = {"owner": "alice", "repo": "payments"}
            assert not (await c.call_tool("create_branch", dict(repo, branch="agent/fix"))).is_error
            refused = await c.call_tool("create_branch", dict(repo, branch="hotfix"))
            assert refused.is_error and "403" in text(refused) and "agent/" in text(refused)
            other = await c.call_tool("list_branches", {"owner": "alice", "repo": "other"})
            assert other.is_error and "404" in text(other)
            await c.call_tool("create_or_update_file", dict(repo, path="fix.py", content="fixed = True\n",
                                                            message="fix", branch="agent/fix"))
            pull = (await c.call_tool("create_pull_request", dict(repo, title="Fix", head="agent/fix",
                                                                  base="main"))).structured_content
            merged = await c.call_tool("merge_pull_request", dict(repo, pullNumber=pull["number"]))
            assert not merged.is_error and merged.structured_content["merged"] is True, text(merged)

    asyncio.run(scenario())
    assert len(asked) == 1 and asked[0].mode == "url" and "approval" in asked[0].message
    merges = server.app.store.all("SELECT * FROM audit WHERE action = 'merge_pr' ORDER BY id")
    assert [r["decision"] for r in merges] == ["needs_approval", "allow"]
    for row in merges:
        assert (row["surface"], row["actor"], row["delegator"], row["task"], row["grant_id"]) == (
            "mcp", w["login"], "alice", "task:fix-payments", w["grant"]["id"])


def test_the_handshake_era_asks_for_approval_with_error_32042(server):
    w = grant_a_task(server, "task:merge", ["read_code", "merge_pr", "create_branch", "push_branch", "open_pr"],
                     {"requires_approval": ["merge_pr"]})

    async def scenario():
        async with client(server, w["token"], mode="legacy") as c:
            repo = {"owner": "alice", "repo": "payments"}
            await c.call_tool("create_branch", dict(repo, branch="fix"))
            await c.call_tool("create_or_update_file", dict(repo, path="f", content="f", message="f", branch="fix"))
            pull = (await c.call_tool("create_pull_request", dict(repo, title="F", head="fix", base="main")))
            with pytest.raises(MCPError) as waiting:
                await c.call_tool("merge_pull_request", dict(repo, pullNumber=pull.structured_content["number"]))
            assert waiting.value.error.code == -32042
            elicitation = waiting.value.error.data["elicitations"][0]
            assert elicitation["mode"] == "url" and elicitation["url"].startswith(server.url + "/approvals/ap_")
            ext(server, "POST", "/approvals/%s/approve" % elicitation["elicitationId"], w["alice"], {})
            merged = await c.call_tool("merge_pull_request", dict(repo, pullNumber=pull.structured_content["number"]))
            assert merged.structured_content["merged"] is True

    asyncio.run(scenario())


def rpc(server, token, message, headers=None, raw=None):
    return call(server, "POST", "/mcp", token, raw_body=raw if raw is not None else json.dumps(message).encode(),
                headers=dict({"Content-Type": "application/json", "Accept": "application/json, text/event-stream"},
                             **(headers or {})))


def modern_headers(method, name=None, version="2026-07-28"):
    return dict({"MCP-Protocol-Version": version, "Mcp-Method": method}, **({"Mcp-Name": name} if name else {}))


def test_bad_input_gets_the_protocols_own_answers(server):
    alice = server.add_user("alice")
    # no token: 401 naming the protected resource metadata, which names agentgit as the authorization server
    r = rpc(server, None, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    challenge = r.headers["www-authenticate"]
    assert r.status == 401 and 'resource_metadata="%s/.well-known/oauth-protected-resource/mcp"' % server.url in challenge
    metadata = call(server, "GET", "/.well-known/oauth-protected-resource/mcp").json
    assert (metadata["resource"], metadata["authorization_servers"]) == (server.url + "/mcp", [server.url])
    bad = rpc(server, "agp_" + "0" * 40, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert bad.status == 401 and 'error="invalid_token"' in bad.headers["www-authenticate"]
    for raw, code in ((b"{not json", -32700), (b"[]", -32600), (b'[{"jsonrpc": "2.0", "id": 1, "method": "ping"}]', -32600),
                      (b'{"jsonrpc": "1.0", "id": 1, "method": "ping"}', -32600), (b'{"jsonrpc": "2.0", "id": 1}', -32600),
                      (b'{"jsonrpc": "2.0", "id": true, "method": "ping"}', -32600),
                      (b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": []}', -32602)):
        r = rpc(server, alice, None, raw=raw)
        assert (r.status, r.json["error"]["code"]) == (400 if code != -32602 else 200, code), (raw, r)
    legacy = {"MCP-Protocol-Version": "2025-06-18"}
    assert rpc(server, alice, {"jsonrpc": "2.0", "id": 2, "method": "resources/list"}, legacy).json["error"]["code"] == -32601
    for arguments, words in (({"owner": "alice"}, "missing required argument(s): repo"),
                             ({"owner": "alice", "repo": 5}, "repo must be a string"),
                             ({"owner": "alice", "repo": "x", "perPage": 1.5}, "whole number"),
                             ({"owner": "alice", "repo": "x", "evil": 1}, "takes no argument")):
        r = rpc(server, alice, {"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                                "params": {"name": "list_branches", "arguments": arguments}}, legacy)
        assert r.json["error"]["code"] == -32602 and words in r.json["error"]["message"], r
    r = rpc(server, alice, {"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "rm_rf"}}, legacy)
    assert r.json["error"] == {"code": -32602, "message": "Unknown tool: rm_rf"}
    assert rpc(server, alice, {"jsonrpc": "2.0", "method": "notifications/initialized"}, legacy).status == 202
    assert rpc(server, alice, {"jsonrpc": "2.0", "id": 5, "method": "ping"},
               {"MCP-Protocol-Version": "1999-01-01"}).status == 400
    # 2026-07-28: the envelope, the headers that must echo it, and the versions
    discover = {"jsonrpc": "2.0", "id": 6, "method": "server/discover", "params": {"_meta": MODERN}}
    ok = rpc(server, alice, discover, modern_headers("server/discover"))
    assert ok.status == 200 and "2026-07-28" in ok.json["result"]["supportedVersions"]
    assert ok.json["result"]["resultType"] == "complete"
    r = rpc(server, alice, discover, modern_headers("tools/list"))
    assert (r.status, r.json["error"]["code"]) == (400, -32020)
    call_it = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"_meta": MODERN, "name": "get_me"}}
    assert rpc(server, alice, call_it, modern_headers("tools/call", "list_branches")).json["error"]["code"] == -32020
    assert rpc(server, alice, call_it, modern_headers("tools/call", "get_me")).json["result"]["isError"] is False
    old = dict(discover, params={"_meta": dict(MODERN, **{"io.modelcontextprotocol/protocolVersion": "2027-01-01"})})
    r = rpc(server, alice, old, modern_headers("server/discover", version="2027-01-01"))
    assert (r.status, r.json["error"]["code"], r.json["error"]["data"]["requested"]) == (400, -32022, "2027-01-01")
    r = rpc(server, alice, {"jsonrpc": "2.0", "id": 8, "method": "server/discover", "params": {}})
    assert (r.status, r.json["error"]["code"]) == (400, -32602)
    r = rpc(server, alice, {"jsonrpc": "2.0", "id": 9, "method": "nope", "params": {"_meta": MODERN}},
            modern_headers("nope"))
    assert (r.status, r.json["error"]["code"]) == (404, -32601)
    # no stream to open, no session to end; a body past the limit is refused before it is read
    assert call(server, "GET", "/mcp", alice).status == 405
    assert call(server, "DELETE", "/mcp", alice).status == 405
    huge = rpc(server, alice, None, raw=b"{}", headers={"Content-Length": str(5 << 20)})
    assert huge.status == 413 and "larger than" in huge.json["message"]


def test_a_missing_scope_is_403_insufficient_scope_and_an_expired_token_401(server):
    """A token without repo (or public_repo) opening an issue: HTTP 403 naming every scope the client
    should re-authorize for (what it holds and what is missing), as MCP clients step up."""
    alice = server.add_user("alice")
    api(server, "POST", "/user/repos", alice, {"name": "secret", "auto_init": True})
    narrow = ext(server, "POST", "/user/tokens", alice, {"name": "narrow", "scopes": ["read:user"]}).json["token"]
    r = rpc(server, narrow, {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "create_issue", "arguments": {"owner": "alice", "repo": "secret", "title": "t"}}},
        {"MCP-Protocol-Version": "2025-11-25"})
    challenge = r.headers.get("www-authenticate", "")
    assert r.status == 403 and 'error="insufficient_scope"' in challenge, r
    assert set(challenge.split('scope="')[1].split('"')[0].split()) == {"read:user", "public_repo"}
    assert "resource_metadata=" in challenge
    server.app.store.db.execute("UPDATE tokens SET expires_at = '2020-01-01T00:00:00Z' WHERE name = 'narrow'")
    r = rpc(server, narrow, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
    assert r.status == 401 and 'error="invalid_token"' in r.headers["www-authenticate"]


def test_the_mcp_inspector_lists_and_calls_tools(server, tmp_path):
    """A second client, the MCP Inspector in CLI mode (npm), over Streamable HTTP with a bearer token."""
    import os
    import shutil
    import subprocess
    inspector = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".venv", "node", "node_modules",
                             ".bin", "mcp-inspector")
    if shutil.which("node") is None or not os.path.exists(inspector):
        pytest.skip("node or the MCP Inspector is not installed (make test installs it with npm)")
    alice = server.add_user("alice")
    api(server, "POST", "/user/repos", alice, {"name": "demo", "auto_init": True})
    base = [inspector, "--cli", server.url + "/mcp", "--transport", "http", "--header", "Authorization: Bearer " + alice]

    def inspect(*args):
        proc = subprocess.run(base + list(args), capture_output=True, text=True, timeout=60,
                              env=dict(os.environ, HOME=str(tmp_path)))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return json.loads(proc.stdout)
    assert "merge_pull_request" in [t["name"] for t in inspect("--method", "tools/list")["tools"]]
    called = inspect("--method", "tools/call", "--tool-name", "list_branches", "--tool-arg", "owner=alice", "repo=demo")
    assert called["isError"] is False and json.loads(called["content"][0]["text"])[0]["name"] == "main"


def test_a_task_token_for_mcp_by_exchange_and_its_introspection(server):
    """RFC 8693 with resource=/mcp: a task token that works on /mcp alone; its delegator introspects it
    and sees the chain (agent, delegator, task, grant)."""
    from conftest import exchange
    w = grant_a_task(server, "task:mcp", ["read_code"], {})
    minted = exchange(server, subject_token=w["agent"], resource=server.url + "/mcp", task="task:mcp")
    assert minted.status == 200, minted
    token = minted.json["access_token"]
    assert rpc(server, token, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).status == 200
    assert api(server, "GET", "/repos/alice/payments", token).status == 401
    facts = call(server, "POST", "/login/oauth/introspect", w["alice"], raw_body=urllib.parse.urlencode(
        {"token": token}).encode(), headers={"Content-Type": "application/x-www-form-urlencoded"}).json
    assert (facts["active"], facts["sub"], facts["user_kind"], facts["delegator"], facts["task"], facts["grant"],
            facts["aud"]) == (True, w["login"], "agent", "alice", "task:mcp", w["grant"]["id"], server.url + "/mcp")


def test_mcp_takes_only_tokens_issued_for_it_and_refuses_other_origins(server):
    """The MCP authorization rules: a server accepts the tokens issued for it as their audience. An
    agent's bootstrap token, and a session token it traded for the API or for one repository, are not
    (it trades for a token for /mcp); a human's personal token stands for her and stays. And the
    transport's rule against DNS rebinding: a request from another origin's page is refused (403),
    whatever it carries."""
    alice, login, agent = alice_and_her_agent(server)
    listing = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    for token in (agent, session_token(server, agent), session_token(server, agent, "alice/payments")):
        refused = rpc(server, token, listing)
        assert refused.status == 401 and "not /mcp" in refused.json["message"], refused
        assert 'error="invalid_token"' in refused.headers["www-authenticate"]
    minted = exchange(server, subject_token=agent, resource=server.url + "/mcp")
    assert rpc(server, minted.json["access_token"], listing).status == 200
    assert rpc(server, alice, listing).status == 200
    for origin in ("https://evil.example", "null", server.url.replace("127.0.0.1", "localhost")):
        refused = rpc(server, alice, listing, headers={"Origin": origin})
        assert refused.status == 403 and "another origin" in refused.json["message"], origin
    assert rpc(server, alice, listing, headers={"Origin": server.url}).status == 200
    assert call(server, "GET", "/mcp", alice, headers={"Origin": "https://evil.example"}).status == 403


def test_a_client_without_url_elicitation_gets_the_approval_page_in_the_tool_error(server):
    """The mcp SDK declares no URL elicitation unless given a callback: the merge its task allows only
    with approval is listed, marked as needing a human; the call answers a tool error whose text names
    the approval page and how to wait; once alice approves there, the same call succeeds."""
    w = grant_a_task(server, "task:fix-payments", ["read_code", "create_branch", "push_branch", "open_pr"],
                     {"branch_prefix": "agent/", "requires_approval": ["merge_pr"]})

    async def scenario():
        async with client(server, w["token"]) as c:
            assert c.session.protocol_version == "2026-07-28"
            tools = {t.name: t for t in (await c.list_tools()).tools}
            assert "merge_pull_request" in tools and "A human approves each call" in tools["merge_pull_request"].description
            assert tools["merge_pull_request"].meta["agentgit/needsApproval"] is True
            assert tools["create_branch"].meta["agentgit/needsApproval"] is False
            repo = {"owner": "alice", "repo": "payments"}
            assert not (await c.call_tool("create_branch", dict(repo, branch="agent/fix"))).is_error
            await c.call_tool("create_or_update_file", dict(repo, path="fix.py", content="fixed = True\n",
                                                            message="Fix", branch="agent/fix"))
            pull = await c.call_tool("create_pull_request", dict(repo, title="Fix", head="agent/fix", base="main"))
            merge = dict(repo, pullNumber=pull.structured_content["number"])
            waiting = await c.call_tool("merge_pull_request", merge)
            said = text(waiting)
            assert waiting.is_error and "%s/approvals/ap_" % server.url in said and "get_approval" in said
            approval = waiting.structured_content["approval_id"]
            assert ext(server, "POST", "/approvals/%s/approve" % approval, w["alice"], {}).status == 200
            merged = await c.call_tool("merge_pull_request", merge)
            assert not merged.is_error and merged.structured_content["merged"] is True

    asyncio.run(scenario())


def test_more_of_githubs_mcp_tools_as_thin_rest_calls(server):
    """GitHub's MCP server's tools that are thin REST calls, with its names and arguments: each decided
    and audited as the REST call it makes."""
    alice, bob = server.add_user("alice"), server.add_user("bob")

    async def scenario():
        async with client(server, alice) as c:
            made = await c.call_tool("create_repository", {"name": "tools", "autoInit": True, "description": "d"})
            assert not made.is_error and made.structured_content["full_name"] == "alice/tools"
            repo = {"owner": "alice", "repo": "tools"}
            api(server, "POST", "/repos/alice/tools/releases", alice, {"tag_name": "v1.0.0", "name": "One"})
            assert (await c.call_tool("get_latest_release", repo)).structured_content["tag_name"] == "v1.0.0"
            assert (await c.call_tool("get_release_by_tag", dict(repo, tag="v1.0.0"))).structured_content["name"] == "One"
            assert [r["tag_name"] for r in json.loads(text(await c.call_tool("list_releases", repo)))] == ["v1.0.0"]
            assert [t["name"] for t in json.loads(text(await c.call_tool("list_tags", repo)))] == ["v1.0.0"]
            main = api(server, "GET", "/repos/alice/tools/git/ref/heads/main", alice).json["object"]["sha"]
            light = (await c.call_tool("get_tag", dict(repo, tag="v1.0.0"))).structured_content
            assert (light["ref"], light["object"]["sha"]) == ("refs/tags/v1.0.0", main)
            tag = api(server, "POST", "/repos/alice/tools/git/tags", alice, {"tag": "v2", "message": "second",
                                                                             "object": main, "type": "commit"}).json
            api(server, "POST", "/repos/alice/tools/git/refs", alice, {"ref": "refs/tags/v2", "sha": tag["sha"]})
            annotated = (await c.call_tool("get_tag", dict(repo, tag="v2"))).structured_content
            assert (annotated["tag"], annotated["message"].rstrip(), annotated["object"]["sha"]) == ("v2", "second", main)
            api(server, "POST", "/repos/alice/tools/git/refs", alice, {"ref": "refs/heads/f", "sha": main})
            api(server, "PUT", "/repos/alice/tools/contents/f.txt", alice, {"message": "f", "content": "Zgo=",
                                                                            "branch": "f"})
            number = api(server, "POST", "/repos/alice/tools/pulls", alice, {"title": "F", "head": "f",
                                                                             "base": "main"}).json["number"]
            api(server, "POST", "/repos/alice/tools/issues/%d/comments" % number, alice, {"body": "looks fine"})
            said = json.loads(text(await c.call_tool("get_issue_comments", dict(repo, issue_number=number))))
            assert [s["body"] for s in said] == ["looks fine"]
            edited = await c.call_tool("update_pull_request", dict(repo, pullNumber=number, title="F, retitled"))
            assert edited.structured_content["title"] == "F, retitled"
            assert json.loads(text(await c.call_tool("list_pull_request_reviews", dict(repo, pullNumber=number)))) == []
            found = json.loads(text(await c.call_tool("search_pull_requests", {"query": "retitled"})))
            assert [i["number"] for i in found["items"]] == [number]
        async with client(server, bob) as c:
            forked = await c.call_tool("fork_repository", {"owner": "alice", "repo": "tools"})
            assert not forked.is_error and forked.structured_content["full_name"] == "bob/tools"

    asyncio.run(scenario())
    rows = server.app.store.all("SELECT action, surface FROM audit WHERE action = 'create_repo' AND decision = 'allow'")
    assert {r["surface"] for r in rows} == {"mcp"} and len(rows) == 2


def test_the_typescript_sdk_with_githubs_tool_names(server):
    """The MCP TypeScript SDK (what most agent hosts embed), unchanged, over Streamable HTTP: GitHub's MCP
    server's tool names (create_repository, update_issue, get_issue_comments, list_tags) work as they do
    there; a tool that is not there is the protocol's error, not a crash."""
    import os
    import shutil
    import subprocess
    here = os.path.dirname(os.path.abspath(__file__))
    node_dir = os.path.join(here, "..", ".venv", "node")
    if shutil.which("node") is None or not os.path.isdir(os.path.join(node_dir, "node_modules", "@modelcontextprotocol",
                                                                       "sdk")):
        pytest.skip("node or the MCP TypeScript SDK is not installed (make test installs it with npm)")
    shutil.copy(os.path.join(here, "mcp_typescript.mjs"), node_dir)
    alice = server.add_user("alice")
    proc = subprocess.run(["node", "mcp_typescript.mjs", server.url, alice], cwd=node_dir, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout)
    assert seen["server"] == "agentgit" and seen["protocol"]
    assert {"create_repository", "update_issue", "get_issue_comments", "list_tags", "search_issues"} <= set(seen["tools"])
    assert (seen["created"], seen["updated"], seen["comments"], seen["tags"]) == ("alice/tools", "closed", ["done"], 0)
    assert seen["unknown"] == "thrown: -32602"              # Invalid params: no such tool
    assert api(server, "GET", "/repos/alice/tools", alice).json["private"] is True
