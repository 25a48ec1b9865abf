// octokit's paginate, unchanged, walking lists by rel="next". Run by test_pagination.py from the folder
// where make test installed @octokit/rest: reads {"url", "token", "paths"} on stdin and prints
// {path: [items]}, each list as octokit.paginate returned it from per_page=2 pages.
import { Octokit } from "@octokit/rest";

let input = "";
for await (const chunk of process.stdin) input += chunk;
const { url, token, paths } = JSON.parse(input);
const octokit = new Octokit({ auth: token, baseUrl: url + "/api/v3", log: { debug() {}, info() {}, warn() {}, error() {} } });
const out = {};
for (const path of paths) {
  // the query as parameters: octokit would read ":alice" in "q=user:alice" as a placeholder of the route
  const target = new URL(url + path);
  const params = Object.fromEntries(target.searchParams);
  out[path] = await octokit.paginate("GET " + url + target.pathname, { ...params, per_page: 2 });
}
console.log(JSON.stringify(out));
