// The MCP TypeScript SDK, unchanged, as an agent host connects it to agentgit's /mcp and calls GitHub's MCP
// server's tools by their names. Run by test_mcp.py from the folder where make test installed the SDK:
// node mcp_typescript.mjs URL TOKEN; prints one JSON object of what it saw.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const [url, token] = process.argv.slice(2);
const transport = new StreamableHTTPClientTransport(new URL(url + "/mcp"), {
  requestInit: { headers: { Authorization: `Bearer ${token}` } },
});
const client = new Client({ name: "agent-host", version: "1.0.0" });
await client.connect(transport);
const call = async (name, args) => {
  const result = await client.callTool({ name, arguments: args });
  const text = result.content.filter((c) => c.type === "text").map((c) => c.text).join(" ");
  return { error: !!result.isError, text, data: result.structuredContent };
};
const out = { protocol: transport.protocolVersion, server: client.getServerVersion().name };
out.tools = (await client.listTools()).tools.map((t) => t.name);
const made = await call("create_repository", { name: "tools", autoInit: true, private: true });
out.created = made.error ? made.text : JSON.parse(made.text).full_name;
await call("create_issue", { owner: "alice", repo: "tools", title: "first" });
out.updated = JSON.parse((await call("update_issue", { owner: "alice", repo: "tools", issue_number: 1,
                                                         state: "closed" })).text).state;
await call("add_issue_comment", { owner: "alice", repo: "tools", issue_number: 1, body: "done" });
out.comments = JSON.parse((await call("get_issue_comments", { owner: "alice", repo: "tools", issue_number: 1 })).text)
  .map((c) => c.body);
out.tags = JSON.parse((await call("list_tags", { owner: "alice", repo: "tools" })).text).length;
out.unknown = await call("no_such_tool", {}).then((r) => r.error, (e) => `thrown: ${e.code}`);
await client.close();
console.log(JSON.stringify(out));
