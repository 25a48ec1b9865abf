"""agentgit: a GitHub-compatible Git service in which AI agents are first-class accounts.

An agent is a durable user (``user_kind = agent``) with its own login, token, repositories and audit
trail. Humans delegate to agents; every decision is made in one place (``decide``) and written to a
hash-chained audit log. Existing clients speak to it unchanged: REST v3 under ``/api/v3``, GraphQL at
``/api/graphql``, the agent extensions under ``/api/ext/v1``, and Git Smart HTTP at ``/<owner>/<repo>.git``.

Run it::

    pip install 'dulwich[merge]'
    python agentgit.py serve                  # http://127.0.0.1:8080, data in ./agentgit-data
    python agentgit.py serve --help           # host, port, data dir, TLS, Unix socket, registration, engine
    python agentgit.py user add alice         # prints alice's personal token on its last line
    python agentgit.py agent add coder        # registers an agent, prints its token last
    python agentgit.py connect gh --token T   # writes a configuration for gh and git, prints the exports
    python agentgit.py audit verify           # exit 0 when the audit chain is intact
    python agentgit.py routes                 # every route: method, path, surface, authentication, handler

Embed it (a pytest fixture)::

    srv = agentgit.make_server(tmp_path, port=0).start(); ...; srv.stop()
"""

import importlib
import importlib.util

# What a machine without dulwich is told (the single file says it too, from its imports).
DEPENDENCY_MISSING = ("agentgit needs dulwich, its one dependency: pip install 'dulwich[merge]' (in a checkout where "
                      "`make serve` has run, .venv/bin/python agentgit.py ... has it)")
if importlib.util.find_spec("dulwich") is None:
    raise ImportError(DEPENDENCY_MISSING)

# The build order: each module imports only from those before it. `make dist` (tools/amalgamate.py)
# writes their bodies in this order into the single file agentgit.py.
MODULES = (
    "config", "errors", "crypto", "egress", "storage", "background", "gitstore", "gitwire", "tokens", "proofs", "accounts", "guardrails", "policy", "audit", "outbox", "approvals", "intents",
    "ledger", "authentication", "installation", "routing", "request", "serializers", "lookups", "web",
    "users", "repositories", "notifications", "issues", "sub_issues", "pulls", "reviews", "reactions", "timeline", "contents", "protection", "deployments", "gitdata", "releases", "deploy_keys", "actions", "artifacts",
    "search", "orgs", "webhooks", "actions_config", "personal_tokens", "delegation", "vault", "tasks", "apps", "runner", "oversight", "access_review",
    "graphql_language", "graphql_resolvers", "graphql_git", "graphql_mutations", "graphql_schema", "graphql_execution",
    "client_assertions", "settings_pages", "oauth_clients", "broker", "oauth", "mcp_server", "githttp", "pages", "server", "clients", "cli",
)

# Where a reader of agentgit.py starts: the model in six stops, each a sentence and the places that are it
# (module.name, or module.Class.method). `make dist` writes them, with their line numbers, at the top of
# the single file, and refuses a place that no longer exists.
READING_PATH = (
    ("Tokens: every credential is a typed, HMAC-signed string whose row says who holds it, for what, until when; "
     "an agent's long-lived one is traded for short-lived ones.", ("tokens.issue_token", "tokens.verify_token")),
    ("decide() and its rules: one function answers every action on every resource, walking a published table.",
     ("policy.POLICY_RULES", "policy.decide")),
    ("The audit chain: each decision is a row hashed over the one before it, so an edited or deleted row shows.",
     ("audit.audit_append", "audit.audit_verify")),
    ("Delegation and task grants: a human binds an agent by invite and the agent's consent, then grants it a task, "
     "whose token does exactly that and never more than the human may do now.",
     ("delegation.create_invite", "delegation.confirm_binding", "tasks.create_task_grant", "authentication.load_grant")),
    ("The request pipeline: authenticate, route, decide, audit, answer; the ledger that every surface records through.",
     ("server.App.dispatch", "authentication.authenticate", "ledger.Ledger")),
    ("The git push path: each ref a push moves is decided, approved, written down before it moves, and audited.",
     ("githttp.git_receive_pack", "ledger.Ledger.decide_each", "intents.reconcile_intents")),
)

# One namespace, as in the single file: `agentgit.make_server`, `agentgit.decide`, ... are the same
# objects whichever build is imported.
for module_name in MODULES:
    module = importlib.import_module("agentgit." + module_name)
    for name, value in vars(module).items():
        if not name.startswith("__") or name == "__version__":
            globals()[name] = value
del module_name, module, name, value
