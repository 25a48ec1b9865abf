// What an Action does on a pull_request event, with GitHub's own toolkit unchanged: @actions/github's context
// (read from GITHUB_EVENT_PATH and GITHUB_* as a runner sets them) and getOctokit with the throttling and
// retry plugins, plus @octokit/graphql on its own. Run by test_actions_toolkit.py from the folder where
// make test installed them: node actions_toolkit.mjs TOKEN; prints one JSON object of what it saw.
import * as github from "@actions/github";
import { throttling } from "@octokit/plugin-throttling";
import { retry } from "@octokit/plugin-retry";
import { graphql } from "@octokit/graphql";

const token = process.argv[2];
const throttled = [];
const octokit = github.getOctokit(token, {
  log: { debug() {}, info() {}, warn() {}, error() {} },
  throttle: {
    onRateLimit: (after, options) => { throttled.push(options.url); return false; },
    onSecondaryRateLimit: (after, options) => { throttled.push(options.url); return false; },
  },
}, throttling, retry);
const { context } = github;
const { owner, repo } = context.repo;
const number = context.issue.number;
const out = { event: context.eventName, action: context.payload.action, repo: `${owner}/${repo}`, number,
              sha: context.sha, serverUrl: context.serverUrl };

const pull = (await octokit.rest.pulls.get({ owner, repo, pull_number: number })).data;
out.head = pull.head.sha;
out.files = (await octokit.paginate(octokit.rest.pulls.listFiles, { owner, repo, pull_number: number, per_page: 2 }))
  .map((f) => f.filename).sort();
out.commits = (await octokit.paginate(octokit.rest.pulls.listCommits, { owner, repo, pull_number: number, per_page: 1 }))
  .length;
out.diff = (await octokit.rest.pulls.get({ owner, repo, pull_number: number, mediaType: { format: "diff" } })).data
  .startsWith("diff --git");
const readme = (await octokit.rest.repos.getContent({ owner, repo, path: "README.md", ref: pull.head.sha })).data;
out.readme = Buffer.from(readme.content, "base64").toString();
// report: a check run (started, then finished), a commit status, a label, a comment, a reaction, a review
const check = (await octokit.rest.checks.create({ owner, repo, name: "lint", head_sha: pull.head.sha,
                                                   status: "in_progress" })).data;
await octokit.rest.checks.update({ owner, repo, check_run_id: check.id, status: "completed", conclusion: "success",
                                   output: { title: "Lint", summary: "no findings" } });
await octokit.rest.repos.createCommitStatus({ owner, repo, sha: pull.head.sha, state: "success", context: "build" });
await octokit.rest.issues.addLabels({ owner, repo, issue_number: number, labels: ["checked"] });
const comment = (await octokit.rest.issues.createComment({ owner, repo, issue_number: number, body: "Lint passed." })).data;
await octokit.rest.reactions.createForIssueComment({ owner, repo, comment_id: comment.id, content: "rocket" });
await octokit.rest.pulls.createReview({ owner, repo, pull_number: number, event: "COMMENT", body: "Looks tidy.",
                                        comments: [{ path: "lib.js", line: 1, body: "a nit" }] });
out.comments = (await octokit.paginate(octokit.rest.issues.listComments, { owner, repo, issue_number: number }))
  .map((c) => c.body);
out.combined = (await octokit.rest.repos.getCombinedStatusForRef({ owner, repo, ref: pull.head.sha })).data.state;
out.checks = (await octokit.rest.checks.listForRef({ owner, repo, ref: pull.head.sha })).data.check_runs
  .map((c) => `${c.name}:${c.conclusion}`);
// a preview deployment of the head
const deployment = (await octokit.rest.repos.createDeployment({ owner, repo, ref: pull.head.ref, environment: "preview",
                                                                required_contexts: [], auto_merge: false })).data;
await octokit.rest.repos.createDeploymentStatus({ owner, repo, deployment_id: deployment.id, state: "success",
                                                  environment_url: "https://preview.example" });
out.deployment = deployment.environment;
// GraphQL through the same client, and @octokit/graphql on its own pointed at the runner's GITHUB_GRAPHQL_URL
const query = `query($owner: String!, $repo: String!, $number: Int!) { repository(owner: $owner, name: $repo) {
  pullRequest(number: $number) { title headRefOid files(first: 10) { nodes { path } }
    commits(last: 1) { nodes { commit { oid statusCheckRollup { contexts(first: 10) { nodes {
      __typename ... on CheckRun { name conclusion } ... on StatusContext { context state } } } } } } } } } }`;
const seen = await octokit.graphql(query, { owner, repo, number });
const alone = await graphql(query, { owner, repo, number, baseUrl: process.env.GITHUB_GRAPHQL_URL.replace(/\/graphql$/, ""),
                                     headers: { authorization: `token ${token}` } });
out.graphql = seen.repository.pullRequest.title === alone.repository.pullRequest.title &&
  seen.repository.pullRequest.headRefOid === pull.head.sha;
out.rollup = seen.repository.pullRequest.commits.nodes[0].commit.statusCheckRollup.contexts.nodes
  .map((n) => n.name || n.context).sort();
out.rateLimit = (await octokit.rest.rateLimit.get()).data.resources.core.limit;
out.throttled = throttled;
console.log(JSON.stringify(out));
