// @octokit/auth-app with @octokit/rest, unchanged, as an App's server uses them: the App's JWT for /app and
// its installations, then an installation token (made and cached by auth-app) to work on a repository.
// Run by test_apps.py: node octokit_auth_app.mjs BASE_URL APP_ID KEY_FILE OWNER REPO; prints one JSON object.
import { readFileSync } from "node:fs";
import { createAppAuth } from "@octokit/auth-app";
import { Octokit } from "@octokit/rest";

const [baseUrl, appId, keyFile, owner, repo] = process.argv.slice(2);
const privateKey = readFileSync(keyFile, "utf8");
const app = new Octokit({ baseUrl, authStrategy: createAppAuth, auth: { appId, privateKey } });
const { data: me } = await app.rest.apps.getAuthenticated();
const { data: installations } = await app.rest.apps.listInstallations();
const { data: installation } = await app.rest.apps.getRepoInstallation({ owner, repo });
const octokit = new Octokit({ baseUrl, authStrategy: createAppAuth,
                              auth: { appId, privateKey, installationId: installation.id } });
const { data: accessible } = await octokit.rest.apps.listReposAccessibleToInstallation();
const { data: issue } = await octokit.rest.issues.create({ owner, repo, title: "Nightly check failed" });
const { data: comment } = await octokit.rest.issues.createComment({ owner, repo, issue_number: issue.number,
                                                                    body: "Retrying the nightly check." });
const auth = await octokit.auth({ type: "installation" });
console.log(JSON.stringify({ slug: me.slug, installations: installations.map((i) => i.id), installation: installation.id,
                             repositories: accessible.repositories.map((r) => r.full_name), author: comment.user.login,
                             tokenType: auth.tokenType, permissions: auth.permissions }));
