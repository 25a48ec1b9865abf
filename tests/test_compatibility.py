"""The README's compatibility table, written from the route table and the tests: each REST area (a
module of src/agentgit/, its title and how many routes it serves), which published clients' tests
drive it, the GraphQL schema's size, and what is left out on purpose. `python tests/test_compatibility.py`
writes it into README.md; the test fails when the README's copy is not what the code and tests make."""
import ast
import os
import re
import sys

from conftest import ROOT   # first: it puts the build under test on the path
import agentgit  # noqa: E402

README = os.path.join(ROOT, "README.md")
BEGIN = "<!-- the compatibility table: written by `python tests/test_compatibility.py` -->"
END = "<!-- end of the compatibility table -->"

# Each client, and where its tests are: a file, or file::prefix for the tests of a file named so.
CLIENTS = {
    "gh": ["test_gh.py", "test_first_hour.py"],
    "github-mcp-server": ["test_github_mcp_server.py"],
    "PyGithub": ["test_pygithub.py", "test_agent_story.py::test_pygithub"],
    "githubkit": ["test_githubkit.py", "test_agent_story.py::test_githubkit"],
    "octokit": ["test_octokit.py", "octokit_probe.mjs", "octokit_story.mjs", "octokit_webhooks.mjs",
                "octokit_auth_app.mjs"],
    "mcp SDK": ["test_mcp.py", "test_oauth_mcp.py", "mcp_typescript.mjs"],
    "Actions toolkit": ["test_actions_toolkit.py", "actions_toolkit.mjs"],
    "ghapi, gidgethub": ["test_bot_libraries.py", "test_apps.py::test_gidgethub"],
}
# The tools CI and bots run, each driven through a whole workflow by the test named (which must exist).
WORKFLOW_TOOLS = [
    ("release-please 17", "test_release_tools.py::test_release_please_two_release_cycles",
     "its API mode (what its GitHub Action runs): a release pull request from conventional commits, merged, "
     "tagged and published, twice"),
    ("semantic-release 25 with @semantic-release/github 12", "test_release_tools.py::test_semantic_release_two_releases_"
     "with_its_success_step", "two releases from a checkout, the second's success step commenting on and labelling "
     "the pull request it released"),
    ("renovate 44", "test_release_tools.py::test_renovate_as_an_agent_from_onboarding_to_an_update",
     "run by an agent on a task grant (branches under renovate/ only): its onboarding pull request, then, once a "
     "human merged that, a dependency's update looked up in a stand-in npm registry"),
    ("probot 14", "test_apps.py::test_a_probot_app_thanks_whoever_opens_an_issue",
     "an App run with probot's own command line, agentgit as its GitHub Enterprise Server: the App's webhook "
     "received and verified, its JWT traded for an installation token, a comment on the new issue as the App, "
     "audited as acting for the human who installed it"),
]
# How each client says it drives an area: gh by its commands, the libraries by their methods,
# github-mcp-server by its tools. A client's tests that match drive the area.
AREA_WORDS = {
    "users": r'get_me\b|get_user\(|getAuthenticated|get_authenticated|"api", "user"|search_users|"auth", "status"',
    "repositories": r'"repo", "(create|view|list|clone|edit|delete|fork|sync|archive)|create_repo\(|get_repo\(|'
                    r'create_for_authenticated_user|createForAuthenticatedUser|repos\.get\(|"(create|fork)_repository"|'
                    r'"list_branches"|"list_commits"|"get_commit"|get_branch\(',
    "contents": r'create_file\(|create_or_update_file|createOrUpdateFileContents|"get_file_contents"|"push_files"|'
                r'"delete_file"|get_contents\(|getContent\(',
    "gitdata": r'create_git_ref|createRef|create_ref\(|getRef|get_ref\(|"create_branch"|"get_tag"|git/(refs|tags|trees)',
    "issues": r'"issue", "(create|list|view|comment|edit|close|reopen|lock)|create_issue\(|issues\.(create|listForRepo)|'
              r'"(list_issues|get_issue|add_issue_comment|update_issue)"|"label", "',
    "sub_issues": r'"(add|list|remove|reprioritize)_sub_issues?"',
    "pulls": r'"pr", "(create|merge|list|view|checkout|diff|status|edit|update-branch|close|reopen|ready)|create_pull\(|'
             r'pulls\.(create|merge|get)\(|"(create|merge|get|update)_pull_request"|\.merge\(\)',
    "reviews": r'"pr", "review"|_pull_request_review|create_review\(|createReview\(|requested_reviewers|pending_review',
    "reactions": r'reactions\.create|/reactions"',
    "notifications": r'notification',
    "releases": r'"release", "|"(list_releases|get_latest_release)"|create_git_release|get_releases|'
                r'\.create_release\(|get_latest_release\(',
    "actions": r'"workflow", "|"run", "(view|list)"|"(list_workflows|run_workflow|list_workflow_runs)"',
    "actions_config": r'"(secret|variable)", "|get_secrets\(|create_secret\(|environments/',
    "deploy_keys": r'"deploy-key"',
    "protection": r'branches/[^"]*/protection|"pr", "checks"|statuses/|check-runs|checks\.create|createCommitStatus',
    "deployments": r'createDeployment|/deployments"',
    "webhooks": r'createWebhook|create_hook\(|/hooks"|verifyAndReceive',
    "apps": r'createAppAuth|get_installation_access_token\(',
    "search": r'"search", "|"search_(repositories|code|issues|pull_requests|users|orgs)"|search_(repositories|issues)\(',
    "orgs": r'"org", "list"|orgs/|"get_teams"|"search_orgs"|get_organization\(',
    "personal_tokens": r'/user/tokens',
    "delegation": r'agent-invites|agent-bindings|/agents\b|"agents"',
    "oversight": r'/ext/v1/(audit|policy|freezes)',
    "tasks": r'task-grants|task_grants|"--task"',
    "oauth": r'"auth", "login"|/login/oauth|device|OAuthClientProvider',
    "oauth_clients": r'/register\b|client_metadata_url|oauth/apps',
    "mcp_server": r'streamable_http_client|"/mcp"',
}
GRAPHQL_WORDS = r'"api", "graphql"|\.graphql\(|"pr", "(view|list|status|checks)"|"issue", "(list|view)"|' \
                r'"(list_issues|get_teams|create_pending_pull_request_review)"|\bgql\('
LEFT_OUT = [
    ("Workflow execution by default", "runs execute only with `serve --run-workflows` (nektos act in host mode); "
                                      "otherwise they are recorded and stay queued. Remote actions (but checkout "
                                      "and agentgit's stand-ins for upload-artifact, download-artifact and cache) "
                                      "fail their step; a job is kept to its task's network_allowlist only where "
                                      "the server is root"),
    ("SSH", "Git is served over HTTP only; deploy keys are kept and listed for the tools that manage them"),
    ("Code scanning, Dependabot, secret scanning", "nothing here scans code: github-mcp-server's code_security, "
                                                   "dependabot and secret_protection toolsets are left out"),
    ("Discussions, gists, projects, packages, Pages, Codespaces, Copilot", "not a Git service's to serve; "
                                                                           "github-mcp-server's discussions and gists "
                                                                           "toolsets and its Copilot tools are left out"),
    ("Issue types", "none are defined: an organization's list is empty"),
]


def module_title(module):
    """The module's title: its docstring's first sentence, up to a colon."""
    doc = ast.get_docstring(ast.parse(open(os.path.join(ROOT, "src", "agentgit", module + ".py")).read()))
    return re.split(r"[.:](\s|$)", doc.replace("REST: ", "").replace("\n", " "))[0]


# A line of a test that calls the server through the suite's own helpers, not through the client
HARNESS_LINE = re.compile(r"\b(api|ext|call|gql)\((server|srv)\b")


def client_text(sources):
    """The text of a client's tests (whole files, or the functions of a file named by prefix) but the
    lines that reach the server through the suite's helpers instead of the client."""
    text = []
    for source in sources:
        name, _, prefix = source.partition("::")
        code = open(os.path.join(ROOT, "tests", name)).read()
        if prefix:
            tree = ast.parse(code)
            code = "\n".join(ast.get_source_segment(code, f) for f in tree.body
                             if isinstance(f, ast.FunctionDef) and f.name.startswith(prefix))
        text.append("\n".join(line for line in code.splitlines() if not HARNESS_LINE.search(line)))
    return "\n".join(text)


def compatibility_table():
    counts = {}
    for routes in agentgit.ROUTES.values():
        for r in routes:
            module = agentgit.source_module(r.handler)      # the module it is written in, in either build
            counts[module] = counts.get(module, 0) + 1
    texts = {client: client_text(sources) for client, sources in CLIENTS.items()}
    lines = ["| area (`src/agentgit/` module) | routes | %s |" % " | ".join(CLIENTS),
             "|---|---:|%s" % (":-:|" * len(CLIENTS))]
    for module, words in AREA_WORDS.items():
        marks = ["✓" if re.search(words, texts[c]) else "" for c in CLIENTS]
        lines.append("| %s (`%s`) | %d | %s |" % (module_title(module), module, counts.get(module, 0), " | ".join(marks)))
    marks = ["✓" if re.search(GRAPHQL_WORDS, texts[c]) else "" for c in CLIENTS]
    schema = agentgit.GRAPHQL_TYPES
    objects = sum(1 for t in schema.values() if t.get("kind") == "OBJECT")
    lines.append("| GraphQL v4 at `/api/graphql`: %d object types, %d mutations, GitHub's names | 1 | %s |" % (
        objects, len(schema["Mutation"]["fields"]), " | ".join(marks)))
    lines += ["", "Git Smart HTTP (%d routes, `githttp`) is driven by `git` itself with both engines (`tests/test_git.py`),"
              " and by gh's (`gh repo clone`, `gh pr checkout`, git with gh as its credential helper). A ✓ means that client's tests in `tests/` "
              "drive the area (by its commands, methods or tools); the count is the route table's "
              "(`python agentgit.py routes`)." % counts.get("githttp", 0), "",
              "Tools that CI and bots run, each through a whole workflow against a fresh server:", ""]
    for tool, test, workflow in WORKFLOW_TOOLS:
        name, _, function = test.partition("::")
        assert "def %s(" % function in open(os.path.join(ROOT, "tests", name)).read(), test
        lines.append("- **%s**: %s (`tests/%s`)." % (tool, workflow, test))
    lines += ["", "Left out on purpose:", ""]
    lines += ["- **%s**: %s." % item for item in LEFT_OUT]
    return "\n".join(lines)


def readme_with_table(text):
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    return text[:start] + "\n" + compatibility_table() + "\n" + text[end:]


def test_the_readme_carries_the_table():
    text = open(README, encoding="utf-8").read()
    assert text == readme_with_table(text), "run: python tests/test_compatibility.py"


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    with open(README, encoding="utf-8") as f:
        text = f.read()
    with open(README, "w", encoding="utf-8") as f:
        f.write(readme_with_table(text))
