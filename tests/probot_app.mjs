// A probot App as probot's documentation writes one: it thanks whoever opens an issue. test_apps.py runs it
// with probot's own command line (probot run ./probot_app.mjs) from the folder where make test installed
// probot, pointed at agentgit by GHE_HOST and GHE_PROTOCOL as at a GitHub Enterprise Server.
export default (app) => {
  app.on("issues.opened", async (context) => {
    await context.octokit.rest.issues.createComment(context.issue({ body: "Thanks for opening this issue!" }));
  });
};
