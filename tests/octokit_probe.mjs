// octokit/rest.js, unchanged, against agentgit. Run by test_octokit.py from the folder where make test
// installed it: node octokit_probe.mjs MODE URL TOKEN; prints one JSON object of what it saw.
import { Octokit } from "@octokit/rest";

const [mode, url, token] = process.argv.slice(2);
const octokit = new Octokit({ auth: token, baseUrl: url + "/api/v3", log: { debug() {}, info() {}, warn() {}, error() {} } });
const status = (promise) => promise.then((r) => r.status, (e) => e.status);
const out = {};
if (mode === "human") {
  out.login = (await octokit.rest.users.getAuthenticated()).data.login;
  out.repo = (await octokit.rest.repos.createForAuthenticatedUser({ name: "demo", private: true, auto_init: true })).data.full_name;
  for (const title of ["one", "two", "three"]) await octokit.rest.issues.create({ owner: "alice", repo: "demo", title });
  const issues = await octokit.paginate(octokit.rest.issues.listForRepo, { owner: "alice", repo: "demo", per_page: 2 });
  out.titles = issues.map((i) => i.title);
  out.graphql = await octokit.graphql(`{ viewer { login } repository(owner: "alice", name: "demo") { issues(first: 5) { totalCount } } }`);
  out.missing = await status(octokit.rest.repos.get({ owner: "alice", repo: "nope" }));
} else if (mode === "task") {
  out.login = (await octokit.rest.users.getAuthenticated()).data.login;
  out.other = await status(octokit.rest.repos.get({ owner: "alice", repo: "other" }));
  const main = (await octokit.rest.git.getRef({ owner: "alice", repo: "payments", ref: "heads/main" })).data.object.sha;
  await octokit.rest.git.createRef({ owner: "alice", repo: "payments", ref: "refs/heads/agent/fix", sha: main });
  await octokit.rest.repos.createOrUpdateFileContents({ owner: "alice", repo: "payments", path: "fix.txt", branch: "agent/fix",
                                                        message: "fix", content: Buffer.from("fixed\n").toString("base64") });
  out.pull = (await octokit.rest.pulls.create({ owner: "alice", repo: "payments", head: "agent/fix", base: "main", title: "Fix" })).data.number;
  try { await octokit.rest.pulls.merge({ owner: "alice", repo: "payments", pull_number: out.pull }); }
  catch (e) { out.merge = { status: e.status, approval_id: e.response.data.approval_id, message: e.response.data.message }; }
} else if (mode === "merge") {
  out.merged = (await octokit.rest.pulls.merge({ owner: "alice", repo: "payments", pull_number: 1 })).data.merged;
}
console.log(JSON.stringify(out));
