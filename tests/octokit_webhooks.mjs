// @octokit/webhooks, unchanged, as a bot's endpoint uses it: each delivery agentgit sent is verified with the
// hook's secret and dispatched to the handler of its event and action. Run by test_webhooks.py from the folder
// where make test installed it: node octokit_webhooks.mjs SECRET < deliveries.json (a list of {id, name,
// signature, body}); prints one JSON object: what the handlers saw, and which deliveries did not verify.
import { Webhooks } from "@octokit/webhooks";

const webhooks = new Webhooks({ secret: process.argv[2] });
const seen = [];
webhooks.on("issues.opened", ({ payload }) => seen.push(`opened: ${payload.issue.title} by ${payload.agentgit.actor}`));
webhooks.on("issue_comment.created", ({ payload }) => seen.push(`comment: ${payload.comment.body}`));
webhooks.on("push", ({ payload }) => seen.push(`push: ${payload.ref} ${payload.commits.length}`));
webhooks.on("ping", ({ payload }) => seen.push(`ping: ${payload.hook_id}`));
const deliveries = JSON.parse(await new Promise((done) => {
  let text = "";
  process.stdin.on("data", (chunk) => { text += chunk; });
  process.stdin.on("end", () => done(text));
}));
const refused = [];
for (const d of deliveries) {
  try {
    await webhooks.verifyAndReceive({ id: d.id, name: d.name, payload: d.body, signature: d.signature });
  } catch (error) {
    refused.push(d.id);
  }
}
console.log(JSON.stringify({ seen, refused }));
