// The agent story with octokit/rest.js alone (test_agent_story.py runs it from where make test installed
// octokit): node octokit_story.mjs URL ALICE_TOKEN GRANT_JSON; prints one JSON object of what it saw.
import { Octokit } from "@octokit/rest";

const [url, aliceToken, grantJson] = process.argv.slice(2);
const quiet = { debug() {}, info() {}, warn() {}, error() {} };
const client = (token) => new Octokit({ auth: token, baseUrl: url + "/api/v3", log: quiet });
const ext = async (octokit, route, body = {}) => (await octokit.request(route.replace(" ", " " + url + "/api/ext/v1"), body)).data;

const alice = client(aliceToken);
const agent = await ext(client(undefined), "POST /agents", { prefix_login: "fixer" });
await alice.rest.repos.createForAuthenticatedUser({ name: "payments", private: true, auto_init: true });
const invite = await ext(alice, "POST /agent-invites", { repo_grants: [{ repo_full_name: "alice/payments", permission: "push" }] });
const bot = client(agent.token);
await ext(bot, "POST /agent-bindings/confirm", { invite_token: invite.invite_token });
const grant = await ext(alice, "POST /task-grants", { ...JSON.parse(grantJson), agent: "agent:" + agent.login, delegator: "user:alice" });
const task = client((await ext(bot, `POST /task-grants/${grant.id}/tokens`)).token);
const where = { owner: "alice", repo: "payments" };
const main = (await task.rest.git.getRef({ ...where, ref: "heads/main" })).data.object.sha;
await task.rest.git.createRef({ ...where, ref: "refs/heads/agent/fix", sha: main });
await task.rest.repos.createOrUpdateFileContents({ ...where, path: "fix.txt", branch: "agent/fix", message: "fix",
                                                   content: Buffer.from("fixed\n").toString("base64") });
const pull = (await task.rest.pulls.create({ ...where, head: "agent/fix", base: "main", title: "Fix" })).data.number;
const out = { login: agent.login };
try { await task.rest.pulls.merge({ ...where, pull_number: pull }); }
catch (e) {
  out.waiting = e.status;
  await ext(alice, `POST /approvals/${e.response.data.approval_id}/approve`);
}
out.merged = (await task.rest.pulls.merge({ ...where, pull_number: pull })).data.merged;
out.activity = await ext(alice, `GET /agents/${agent.login}/activity?per_page=100`);
console.log(JSON.stringify(out));
