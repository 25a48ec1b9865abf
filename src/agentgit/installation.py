"""The installation: one data directory's state and services, as every module below the HTTP
pipeline reaches them (through a request's ``req.app``, or given directly): its configuration, the
database, the server key, the audit checkpoint, the git engine, the rate limiters, the URL. The
server builds its App on one; the command line and the embedding API build one without serving."""

import getpass
import os
import secrets
import threading
import time

from agentgit.config import AGENT_CREDENTIALS, AGENT_STANDING_ACCESS, now
from agentgit.storage import open_store
from agentgit.gitstore import merge_support_missing
from agentgit.gitwire import make_git_engine
from agentgit.tokens import token_fingerprint
from agentgit.proofs import StoredReplayCache
from agentgit.accounts import create_human, register_agent, reseal_legacy_totp_secrets
from agentgit.audit import AuditAnchor
from agentgit.authentication import Principal
from agentgit.ledger import Ledger


def load_server_key(path):
    """The HMAC key for tokens and the audit chain: 32 random bytes made on first start, mode 0600."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        with open(path, "rb") as f:
            key = f.read()
        if len(key) < 32:
            raise SystemExit("%s is damaged (shorter than 32 bytes)" % path)
        return key
    key = secrets.token_bytes(32)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    return key


FAILED_PROOFS_PER_MINUTE = 30


class RateLimiter:
    """At most ``limit`` hits per key in any ``window`` seconds; a limit of 0 counts nothing and refuses
    nothing (the operator's `serve --registration-limit 0`). The hits are rows of the database, so every
    server process on it counts them together (one process's own count would let each of N processes
    allow the limit again)."""

    def __init__(self, store, name, limit, window):
        self.store, self.name, self.limit, self.window = store, name, limit, window

    def hit(self, key):
        """0 when this hit is allowed (and counted), else the seconds until the next one would be."""
        return self.count(key, True)

    def wait(self, key):
        """The seconds until a hit would be allowed (0: now), counting nothing: for a limit on failures,
        asked before the work and hit after a failure."""
        return self.count(key, False)

    def count(self, key, counting):
        if not self.limit:
            return 0
        moment = time.time()
        recent = "SELECT at FROM rate_hits WHERE limiter = ? AND key = ? AND at > ? ORDER BY at LIMIT ?"
        asked = (self.name, key, moment - self.window, self.limit)
        if not counting:
            hits = self.store.all(recent, *asked)
            return int(hits[0]["at"] + self.window - moment) + 1 if len(hits) >= self.limit else 0
        with self.store.transaction(records_only=True) as db:     # (no cached answer reads these rows)
            # the limiter's hits past its window go, whichever key: keys that hit nothing lately are not kept
            db.execute("DELETE FROM rate_hits WHERE limiter = ? AND at <= ?", (self.name, moment - self.window))
            hits = db.execute(recent, asked).fetchall()
            if len(hits) >= self.limit:
                return int(hits[0]["at"] + self.window - moment) + 1
            db.execute("INSERT INTO rate_hits (limiter, key, at) VALUES (?, ?, ?)", (self.name, key, moment))
            return 0


def restrict_data_dir(data_dir):
    """The data directory holds the server key, the database and every repository: its owner's only,
    also when it was made before (or by hand) with looser modes. Every entry is tightened, not only
    the directory, so none stays readable should the directory's own mode be loosened again."""
    os.chmod(data_dir, 0o700)
    for entry in os.scandir(data_dir):
        if not entry.is_symlink():
            os.chmod(entry.path, 0o700 if entry.is_dir() else 0o600)


class Installation:
    """One data directory's state and services. Its attributes, and who uses them:

    - ``config``: the Config it was built from (every module reading a setting: registration, the
      broker's loopback and connect-to, DPoP nonces, sender constraints, the listeners' guards);
    - ``store``: the database (every module); ``key``: the server key (tokens, the audit chain, the
      vault's seals, TOTP); ``anchor``: the audit checkpoint beside the database (audit verify, the
      server, which keeps it up from a thread of its own);
    - ``repos_dir``: where the bare repositories are (gitstore); ``git_engine``: git's wire protocol
      (githttp, forks in gitstore);
    - ``url`` and ``api``: the public base URL and its REST root (every serializer's links);
    - ``authenticator``: an embedding program's vouching for humans (authentication);
    - ``registrations`` and ``sign_ins``: rate limits per address (agents, OAuth clients and client
      documents; web sign-in); ``failed_proofs``: failed DPoP proofs and client assertions per address
      and per agent (authentication, client_assertions); ``token_seen``: when each token's last use was
      recorded (touch_token);
      ``dpop_replay``: DPoP proofs' jti seen, in the database (proofs);
    - ``agent_credentials``: "bootstrap" or "direct", and ``agent_standing_access``: "read" or "write",
      the installation's choices (authentication and policy, the banner)."""


    def __init__(self, config, authenticator=None):
        missing = merge_support_missing()
        if missing:
            raise RuntimeError(missing)       # before anything is written: a pull request would fail half-way
        self.config = config
        os.makedirs(config.data_dir, mode=0o700, exist_ok=True)
        self.repos_dir = os.path.join(config.data_dir, "repos")
        os.makedirs(self.repos_dir, exist_ok=True)
        self.key = load_server_key(os.path.join(config.data_dir, "server.key"))
        self.store = open_store(config.database, config.data_dir)
        reseal_legacy_totp_secrets(self.store, self.key)
        restrict_data_dir(config.data_dir)
        self.anchor = AuditAnchor(os.path.join(config.data_dir, "audit-head"), self.key)
        self.anchor.attach(self.store)         # (an installation from before gets its first checkpoint now)
        self.git_engine = make_git_engine(config.git_engine)
        self.authenticator = authenticator
        self.registrations = RateLimiter(self.store, "registrations", config.registration_limit,
                                         config.registration_window)
        self.sign_ins = RateLimiter(self.store, "sign_ins", 10, 300)
        # failed proofs of possession (DPoP proofs, client assertions), per address and per agent: past
        # the limit, further ones are refused before any signature is checked
        self.failed_proofs = RateLimiter(self.store, "failed_proofs", FAILED_PROOFS_PER_MINUTE, 60)
        self.token_seen = {}
        self.reads_noted = set()       # (task, kind, resource, what) already in task_reads: noted once
        self.dpop_replay = StoredReplayCache(self.store)
        # set when a committed change queued webhook deliveries: the delivery worker (webhooks) waits on it
        self.deliveries_waiting = threading.Event()
        self.runs_waiting = threading.Event()
        self.set_url(config.url)
        self.agent_credentials = self.chosen("agent_credentials", config.agent_credentials, AGENT_CREDENTIALS)
        self.agent_standing_access = self.chosen("agent_standing_access", config.agent_standing_access,
                                                 AGENT_STANDING_ACCESS)

    def chosen(self, name, choice, allowed):
        """The operator's choice of ``name`` (one of ``allowed``), kept for the installation. One that
        never chose gets the first (the safer); one upgraded from before the choice existed keeps what it
        did then (its migration wrote that down) until the operator switches."""
        if choice is not None:
            if choice not in allowed:
                raise ValueError("%s is %s, not %r" % (name, " or ".join(allowed), choice))
            with self.store.transaction() as db:
                db.execute("INSERT INTO settings (name, value) VALUES (?, ?)"
                           " ON CONFLICT (name) DO UPDATE SET value = excluded.value", (name, choice))
            return choice
        row = self.store.one("SELECT value FROM settings WHERE name = ?", name)
        return row["value"] if row is not None else allowed[0]

    def set_url(self, url):
        self.url = url.rstrip("/")
        self.api = self.url + "/api/v3"

    def touch_token(self, token_id):
        """Record last use at most once a minute per token, so reads do not all become writes."""
        moment = time.monotonic()
        if moment - self.token_seen.get(token_id, -120) >= 60:
            self.token_seen[token_id] = moment
            with self.store.transaction() as db:
                db.execute("UPDATE tokens SET last_used_at = ? WHERE id = ?", (now(), token_id))

    def first_start_admin(self):
        """On an empty database: create the site admin 'admin' and return (login, token), else None."""
        if self.store.one("SELECT 1 FROM accounts LIMIT 1"):
            return None
        login = "admin"
        try:
            _, token = create_human(self, login, admin=True)
        except self.store.integrity_errors:        # another server starting on the same database made it
            return None
        Ledger(self, Principal(runtime="first start", operator=True), "cli").record(
            "create_user", "user:" + login, [OPERATOR_REASON], "created site admin %s, token %s" % (
                login, token_fingerprint(token)))
        return login, token


OPERATOR_REASON = "local operator with access to the data directory"


def operator():
    return Principal(runtime="cli %s" % getpass.getuser(), operator=True)


def operator_ledger(app):
    """The command line's ledger: the local operator, on the surface cli."""
    return Ledger(app, operator(), "cli")


def cli_add_user(app, login, admin=False, password=None):
    _, token = create_human(app, login, admin=admin, password=password)
    operator_ledger(app).record("create_user", "user:" + login, [OPERATOR_REASON], "created %s%s, token %s" % (
        "site admin " if admin else "human ", login, token_fingerprint(token)))
    return token


def cli_add_agent(app, prefix, repo_name="workspace"):
    login, token, full_name = register_agent(app, prefix, repo_name)
    operator_ledger(app).record("register_agent", "site", [OPERATOR_REASON], "registered agent %s with repository "
                                "%s, token %s" % (login, full_name, token_fingerprint(token)))
    return login, token, full_name
