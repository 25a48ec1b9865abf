"""Storage: the database behind every module, its schema (schema.sql) and migrations, one connection per
thread, transactions. SQLite in the data directory is the default; PostgreSQL (`--database
postgresql://…`, through pg8000) is for installations that outgrow one machine. Modules write one SQL:
SQLite's, in what PostgreSQL also reads (``?`` placeholders, ON CONFLICT upserts, RETURNING ids); what
the two still do differently is in this module alone."""

import collections
import contextlib
import decimal
import functools
import getpass
import importlib
import itertools
import os
import pathlib
import re
import sqlite3
import ssl
import sys
import threading
import time
import urllib.parse

from agentgit.config import OTHER_PROCESS_POLL


# schema.sql is the schema's only source: the package reads it from the top of the checkout, and
# `make dist` writes its text in place of this line into agentgit.py.
SCHEMA = pathlib.Path(__file__).parents[2].joinpath("schema.sql").read_text(encoding="utf-8")
SCHEMA_VERSION = 14
# SCHEMA is idempotent, so a newer version re-runs it whole; a migration does what it cannot do alone,
# all in one transaction. Its new columns are added to the tables that exist without them (SCHEMA makes
# a missing table whole); then every version's ``before`` runs in order, SCHEMA, and every ``after``.
# A table whose CHECK changes is renamed before SCHEMA makes it anew and copied after (the foreign keys
# of other tables keep pointing at its name); tokens is rebuilt once, by the latest version that changed it.
Migration = collections.namedtuple("Migration", "columns before after")


def rebuilt(table, index, version, columns):
    """(before, after) of a table SCHEMA makes anew: renamed aside (its index dropped, so SCHEMA makes it
    for the new table), then its rows copied in by name and the old one dropped."""
    aside = "%s_before_v%d" % (table, version)
    return ("DROP INDEX IF EXISTS %s; ALTER TABLE %s RENAME TO %s;" % (index, table, aside),
            "INSERT INTO %s (%s) SELECT %s FROM %s; DROP TABLE %s;" % (table, columns, columns, aside, aside))


AUDIT_REBUILT = rebuilt("audit", "audit_by_actor", 10, "id, at, actor, user_kind, delegator, task, grant_id, runtime,"
                        " token_fingerprint, surface, action, resource, decision, reasons, side_effect, token_kind,"
                        " rule, prev_hash, hash")
GRANTOR = "granted_by INTEGER REFERENCES accounts(id) ON DELETE CASCADE"
MIGRATIONS = {
    5: Migration([("tokens", "issued_by INTEGER REFERENCES accounts(id) ON DELETE SET NULL"),
                  ("tokens", "grant_id INTEGER REFERENCES task_grants(id) ON DELETE CASCADE"),
                  ("accounts", "retired_at TEXT"), ("accounts", "totp_secret TEXT"),
                  ("repos", "parent_id INTEGER REFERENCES repos(id) ON DELETE SET NULL")], "", ""),
    # agent session tokens (a new kind, an audience); an agent's invite-derived access records its
    # grantor (the human the agent is bound to, who invited it); approvals can be denied and keep what
    # they are for; an existing installation keeps its agents' tokens working directly until the
    # operator chooses bootstrap
    6: Migration(
        [("tokens", "audience TEXT"), ("collaborators", GRANTOR), ("team_members", GRANTOR), ("org_members", GRANTOR),
         ("approvals", "context TEXT"),
         ("approvals", "denied_by INTEGER REFERENCES accounts(id) ON DELETE SET NULL"),
         ("approvals", "denied_at TEXT"), ("approvals", "denial_reason TEXT"), ("audit", "token_kind TEXT"),
         ("audit", "rule TEXT"), ("repos", "forked_by INTEGER REFERENCES accounts(id) ON DELETE SET NULL")],
        "",
        "UPDATE collaborators SET granted_by = (SELECT human_id FROM agent_bindings WHERE agent_id = user_id)"
        " WHERE EXISTS (SELECT 1 FROM agent_grants g WHERE g.agent_id = user_id AND g.repo_id = collaborators.repo_id);"
        " UPDATE team_members SET granted_by = (SELECT human_id FROM agent_bindings WHERE agent_id = user_id)"
        " WHERE EXISTS (SELECT 1 FROM agent_grants g WHERE g.agent_id = user_id AND g.team_id = team_members.team_id);"
        " UPDATE org_members SET granted_by = (SELECT human_id FROM agent_bindings WHERE agent_id = user_id)"
        " WHERE EXISTS (SELECT 1 FROM agent_grants g WHERE g.agent_id = user_id AND g.org_id = org_members.org_id);"
        " INSERT OR IGNORE INTO settings (name, value) VALUES ('agent_credentials', 'direct');"
        " UPDATE repos SET forked_by = owner_id WHERE parent_id IS NOT NULL AND forked_by IS NULL AND"
        " owner_id IN (SELECT id FROM accounts WHERE kind != 'org');"),
    # pending reviews: a new state, and no submission time until submitted; multi-line review comments;
    # workflows disabled by hand; tokens, codes and refresh families bound to a resource (RFC 8707);
    # OAuth clients nobody owns (dynamic registration, metadata documents)
    8: Migration([("review_comments", "start_line INTEGER"), ("review_comments", "start_side TEXT NOT NULL DEFAULT 'RIGHT'"),
                  ("review_comments", "subject_type TEXT NOT NULL DEFAULT 'LINE'"),
                  ("workflows", "disabled_at TEXT"), ("tokens", "resource TEXT"), ("oauth_codes", "resource TEXT"),
                  ("oauth_refresh_tokens", "resource TEXT")],
                 # (an installation older than OAuth apps gets an empty one of the old shape to copy from)
                 "ALTER TABLE reviews RENAME TO reviews_before_v8; CREATE TABLE IF NOT EXISTS oauth_apps (id INTEGER"
                 " PRIMARY KEY, client_id TEXT, secret_hash TEXT, name TEXT, redirect_uris TEXT, owner_id INTEGER,"
                 " created_at TEXT); ALTER TABLE oauth_apps RENAME TO oauth_apps_before_v8;",
                 "INSERT INTO reviews (id, issue_id, user_id, state, body, commit_id, submitted_at) SELECT id, issue_id,"
                 " user_id, state, body, commit_id, submitted_at FROM reviews_before_v8; DROP TABLE reviews_before_v8;"
                 " INSERT INTO oauth_apps (id, client_id, secret_hash, name, redirect_uris, owner_id, created_at)"
                 " SELECT id, client_id, secret_hash, name, redirect_uris, owner_id, created_at FROM oauth_apps_before_v8;"
                 " DROP TABLE oauth_apps_before_v8;"),
    # tool tokens (a new kind, for one credential); tokens bound to a client certificate or a DPoP key,
    # and the runtime that minted them; an upstream's access token kept for its credential
    9: Migration([("broker_credentials", "access_sealed TEXT"), ("broker_credentials", "access_expires_at TEXT")],
                 *rebuilt("tokens", "tokens_by_user", 9, "id, user_id, kind, issued_by, grant_id, audience, resource,"
                          " name, scopes, hash, fingerprint, created_at, expires_at, revoked_at, last_used_at")),
    # a bound agent's new key waits for its human's approval; the keys registered before stay in use
    # audit row ids are never reused (AUTOINCREMENT: the table is made anew and its rows copied); an
    # agent that minted with a client certificate mints with one; an existing installation keeps its
    # agents' standing write access until the operator chooses read (a new one starts with read); what an
    # agent opens or writes says for whom and under which task
    10: Migration([("agent_keys", "approved_at TEXT"),
                   ("agent_keys", "approved_by INTEGER REFERENCES accounts(id) ON DELETE SET NULL"),
                   ("accounts", "runtime_certificate_at TEXT"), ("issues", "acting_for TEXT"), ("issues", "task TEXT"),
                   ("comments", "acting_for TEXT"), ("comments", "task TEXT"),
                   ("repos", "topics TEXT NOT NULL DEFAULT '[]'"), ("issues", "pinned_at TEXT"),
                   ("repos", "deleted_issue_number INTEGER NOT NULL DEFAULT 0")],
                  AUDIT_REBUILT[0],
                  "UPDATE agent_keys SET approved_at = created_at WHERE approved_at IS NULL;"
                  " INSERT OR IGNORE INTO settings (name, value) VALUES ('agent_standing_access', 'write'); "
                  + AUDIT_REBUILT[1]),
    # GitHub Apps, and their webhooks among the hooks (whose table a version-10 database may not have yet:
    # an empty one of the old shape is made to copy from); runs that execute, with their jobs
    11: Migration([("workflow_runs", "run_started_at TEXT"), ("workflow_runs", "leased_until REAL"),
                   ("workflow_runs", "grant_id INTEGER REFERENCES task_grants(id) ON DELETE SET NULL"),
                   ("workflow_runs", "job_grant_id INTEGER REFERENCES task_grants(id) ON DELETE SET NULL"),
                   ("workflow_runs", "pushed TEXT"),
                   ("task_grants", "parent_id INTEGER REFERENCES task_grants(id) ON DELETE CASCADE")],
                  "CREATE TABLE IF NOT EXISTS hooks (id INTEGER PRIMARY KEY, repo_id INTEGER, org_id INTEGER,"
                      " url TEXT, content_type TEXT, secret_sealed TEXT, insecure_ssl TEXT, events TEXT, active INTEGER,"
                      " creator_id INTEGER, created_at TEXT, updated_at TEXT);"
                      " ALTER TABLE hooks RENAME TO hooks_before_v11;",
                  "INSERT INTO hooks (%s) SELECT %s FROM hooks_before_v11; DROP TABLE hooks_before_v11;" % ((
                      "id, repo_id, org_id, url, content_type, secret_sealed, insecure_ssl, events, active, creator_id,"
                      " created_at, updated_at",) * 2)),
    # a run keeps what its event carried, whichever event it was; pull requests and repository_dispatch
    # start runs too; an attempt may rerun some of a run's jobs; a repository says what job tokens hold
    # where a workflow says nothing, and whether they may approve pull requests
    12: Migration([("run_triggers", "event TEXT NOT NULL DEFAULT 'push'"),
                   ("run_triggers", "fields TEXT NOT NULL DEFAULT '{}'"), ("workflow_runs", "rerun_jobs TEXT"),
                   ("repos", "workflow_permissions TEXT NOT NULL DEFAULT 'read'"),
                   ("repos", "actions_can_approve INTEGER NOT NULL DEFAULT 0")],
                  "ALTER TABLE workflow_runs RENAME COLUMN pushed TO event_fields;", ""),
    # rate limits counted in the database, by every server process together (SCHEMA makes the table)
    13: Migration([], "", ""),
    # what each task has read, for the information-flow rule (SCHEMA makes the table)
    14: Migration([], "", ""),
}


def added_columns(db, steps):
    """ALTER TABLE ... ADD COLUMN for each new column of a table that exists without it."""
    statements = []
    for table, definition in (column for step in steps for column in step.columns):
        present = {row[1] for row in db.execute("PRAGMA table_info(%s)" % table)}
        if present and definition.split()[0] not in present:
            statements.append("ALTER TABLE %s ADD COLUMN %s;" % (table, definition))
    return "\n".join(statements)


class Store:
    """What both databases answer alike: one() and all(), the cache of hot reads, transaction().

    A subclass opens its connections (``db``: this thread's), begins a write transaction (``begin``)
    and says what another process last committed (``committed_version``)."""

    def __init__(self):
        self.generations = itertools.count(1)
        self.generation, self.memo = 0, {}
        self.after_commit = None           # called after each commit (the audit chain's anchor keeps up)
        self.watch_lock = threading.Lock()
        self.watch_version, self.polled = self.committed_version(), -1.0

    def one(self, sql, *args):
        return self.db.execute(sql, args).fetchone()

    def all(self, sql, *args):
        return self.db.execute(sql, args).fetchall()

    def cached(self, key, compute):
        """compute(), remembered until anyone commits anything, so hot reads (token, account,
        repository, permission) cost no queries. Commits in this process invalidate at once
        (transaction() moves the generation after COMMIT); commits by another process (the CLI, another
        server) are noticed through committed_version() within OTHER_PROCESS_POLL seconds. A value is
        stored with the generation current *before* it was read, so one read across a commit is never
        served."""
        self.poll_other_processes()
        generation = self.generation
        hit = self.memo.get(key)
        if hit is not None and hit[0] == generation:
            return hit[1]
        value = compute()
        if len(self.memo) > 10000:
            self.memo = {}
        self.memo[key] = (generation, value)
        return value

    def release(self):
        """A request ended: what it held of the database may serve the next (PostgreSQL's connections,
        few and shared; an SQLite connection costs nothing to keep with its thread)."""

    def close(self):
        """The server stopped: what it kept open of the database is closed (PostgreSQL's connections)."""

    def poll_other_processes(self):
        """At most every OTHER_PROCESS_POLL seconds, ask whether anyone else committed."""
        moment = time.monotonic()
        if moment - self.polled < OTHER_PROCESS_POLL:
            return
        with self.watch_lock:
            if moment - self.polled < OTHER_PROCESS_POLL:
                return
            version = self.committed_version()
            if version != self.watch_version:
                self.watch_version, self.generation = version, next(self.generations)
            self.polled = moment

    @contextlib.contextmanager
    def transaction(self, records_only=False):
        """``records_only``: the transaction only appends records no cached value is read from (audit
        rows), so what cached() remembers stays good: a proxied call, or a refusal, then costs the
        next request no queries."""
        db = self.db
        if db.in_transaction:          # nested: the outer transaction commits
            yield db
            return
        self.begin(db, records_only)
        try:
            yield db
        except BaseException:
            db.rollback()
            raise
        db.commit()
        if not records_only:
            self.generation = next(self.generations)     # itertools.count: atomic under the GIL
        if self.after_commit is not None:
            self.after_commit()


class SqliteStore(Store):
    """The SQLite database in the data directory: WAL, foreign keys, one connection per thread.

    Connections are in autocommit mode; ``transaction()`` opens ``BEGIN IMMEDIATE`` so that writers
    (this server, the CLI run beside it) queue on the database lock instead of failing mid-way.
    """
    integrity_errors = (sqlite3.IntegrityError,)
    described = ""                         # (the banner's: the data directory says where)

    def __init__(self, path):
        self.path = path
        self.local = threading.local()
        self.migrate(self.db)
        self.watch = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        super().__init__()

    @property
    def db(self):
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=30, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA synchronous = NORMAL")
            self.local.conn = conn
        return conn

    @staticmethod
    def migrate(db):
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version >= SCHEMA_VERSION:
            return
        steps = [MIGRATIONS[v] for v in range(version + 1, SCHEMA_VERSION + 1) if version and v in MIGRATIONS]
        # a renamed table must keep the foreign keys that point at its name: both pragmas, outside the
        # transaction (foreign_keys cannot change inside one), and a check before the commit
        db.execute("PRAGMA foreign_keys = OFF")
        db.execute("PRAGMA legacy_alter_table = ON")
        try:
            db.executescript("BEGIN IMMEDIATE;\n%s\n%s\n%s\n%s\nPRAGMA user_version = %d;" % (
                added_columns(db, steps), "\n".join(step.before for step in steps), SCHEMA,
                "\n".join(step.after for step in steps), SCHEMA_VERSION))
            broken = db.execute("PRAGMA foreign_key_check").fetchall()
        finally:
            if db.in_transaction:
                db.execute("ROLLBACK" if sys.exc_info()[0] or broken else "COMMIT")
        db.execute("PRAGMA legacy_alter_table = OFF")
        db.execute("PRAGMA foreign_keys = ON")
        if broken:
            raise RuntimeError("the migration to schema version %d would break %d foreign keys (%s)" % (
                SCHEMA_VERSION, len(broken), tuple(broken[0])))

    def begin(self, db, records_only):
        db.execute("BEGIN IMMEDIATE")

    def committed_version(self):
        """sqlite's data_version: moves when another connection commits (comparable within one connection)."""
        return self.watch.execute("PRAGMA data_version").fetchone()[0]


# -- PostgreSQL: `--database postgresql://…` -------------------------------------------------------
# The same SQL through pg8000 (pure Python, optional: `pip install pg8000`). What SQLite's file gives for
# free is made here: its types' names
# (postgres_schema), NOCASE (a case-blind ICU collation), rows by name, and its one writer at a time:
# every write transaction takes one advisory lock, as BEGIN IMMEDIATE takes SQLite's database lock, so
# numbering, the audit chain's append and ref updates are serialized across every process and node
# while reads go on beside them.
WRITE_LOCK = 0x61676974                    # the advisory lock's key ("agit")
POSTGRES_PREAMBLE = """
CREATE COLLATION IF NOT EXISTS nocase (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
CREATE TABLE IF NOT EXISTS agentgit_schema (version INTEGER NOT NULL, generation BIGINT NOT NULL);
"""
CONNECTIONS_IN_USE = 32                    # a process's connections at work at once; more threads wait their turn
IDLE_CONNECTIONS = 8                       # kept open for the next request; more are closed


class IntegrityError(Exception):
    """A constraint refused a change (PostgreSQL's class 23), as sqlite3.IntegrityError."""


def only_new_tables(version):
    """Do the migrations since ``version`` only add tables (SCHEMA makes them), so that PostgreSQL, which
    runs none of SQLite's migration steps, is upgraded by SCHEMA alone?"""
    return all(MIGRATIONS.get(v) == Migration([], "", "") for v in range(version + 1, SCHEMA_VERSION + 1))


def postgres_schema(schema):
    """schema.sql as PostgreSQL reads it, (tables, foreign keys): ids from an identity column (never
    reused, as AUTOINCREMENT), SQLite's 64-bit INTEGER, REAL and BLOB by PostgreSQL's names, and the
    foreign keys added once every table is made (SQLite lets a column name a table made further down;
    PostgreSQL does not)."""
    schema = re.sub(r"\bid(\s+)INTEGER PRIMARY KEY( AUTOINCREMENT)?", r"id\1BIGINT GENERATED BY DEFAULT AS IDENTITY"
                    r" PRIMARY KEY", schema)
    for sqlite_type, postgres_type in (("INTEGER", "BIGINT"), ("REAL", "DOUBLE PRECISION"), ("BLOB", "BYTEA")):
        schema = re.sub(r"(?<!AS )\b%s\b" % sqlite_type, postgres_type, schema)    # (not a CAST's)
    foreign_keys = []

    def later(table, match):
        foreign_keys.append("ALTER TABLE %s ADD FOREIGN KEY (%s) %s;" % (table, match[1].strip(), match[3]))
        return match[1] + match[2]
    tables = re.split(r"(?m)^(?=CREATE )", schema)
    for position, statement in enumerate(tables):
        table = re.match(r"CREATE TABLE IF NOT EXISTS (\w+)", statement)
        if table:
            tables[position] = re.sub(r"(?m)^(\s+\w+)(.*?) (REFERENCES \w+\(\w+\)(?: ON DELETE (?:CASCADE|SET NULL))?)",
                                      lambda match: later(table[1], match), statement)
    return "".join(tables), "\n".join(foreign_keys)


def connection_parameters(url):
    """pg8000's connect() arguments from a libpq URL: postgresql://user:password@host:port/database,
    ?host=/directory for a Unix socket, ?sslmode=require (or verify-full) for TLS, checked as HTTPS is."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError("a database is postgresql://user@host/name, not %r" % url.split(":")[0])
    query = dict(urllib.parse.parse_qsl(parts.query))
    unknown = set(query) - {"host", "sslmode"}
    if unknown:
        raise ValueError("unknown database URL parameters: %s" % ", ".join(sorted(unknown)))
    parameters = {"user": urllib.parse.unquote(parts.username or "") or getpass.getuser(),
                  "database": urllib.parse.unquote(parts.path.lstrip("/")) or None,
                  "application_name": "agentgit"}
    if parts.password:
        parameters["password"] = urllib.parse.unquote(parts.password)
    port = parts.port or 5432
    if query.get("host", "").startswith("/"):
        parameters["unix_sock"] = os.path.join(query["host"], ".s.PGSQL.%d" % port)
    else:
        parameters.update(host=query.get("host") or parts.hostname or "localhost", port=port)
    if query.get("sslmode", "disable") not in ("disable", "allow", "prefer"):
        parameters["ssl_context"] = ssl.create_default_context()
    return parameters


def shown_url(url):
    """A database URL as it may be printed: without its password."""
    parts = urllib.parse.urlsplit(url)
    user, at, host = parts.netloc.rpartition("@")
    return parts._replace(netloc=user.partition(":")[0] + at + host).geturl()


@functools.lru_cache(maxsize=512)
def row_type(names):
    """The row class of one result's columns: a tuple read by position or by name (case-blind), as
    sqlite3.Row is."""
    index = {name.lower(): position for position, name in enumerate(names)}

    class Row(tuple):
        __slots__ = ()

        def __getitem__(self, key):
            if isinstance(key, str):
                if key.lower() not in index:
                    raise IndexError("No item with that key")
                key = index[key.lower()]
            return tuple.__getitem__(self, key)

        def keys(self):
            return list(names)
    return Row


def from_postgres(value):
    """A value as sqlite3 answers it: truth as 0 or 1, a sum (numeric) as an int."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


class PostgresResult:
    """A statement's answer as sqlite3's cursor gives it: fetchone(), fetchall(), iteration, rowcount."""

    def __init__(self, context):
        self.rowcount = context.row_count
        self.rows = []
        if context.columns:
            make = row_type(tuple(column["name"] for column in context.columns))
            self.rows = [make(from_postgres(value) for value in row) for row in context.rows]
        self.rows.reverse()                # popped from the end: fetchone() in order

    def fetchone(self):
        return self.rows.pop() if self.rows else None

    def fetchall(self):
        rows, self.rows = self.rows[::-1], []
        return rows

    def __iter__(self):
        return iter(self.fetchall())


PREPARED_KEPT = 500                        # statements a connection keeps prepared; past it, it starts afresh


class PostgresConnection:
    """One pg8000 connection, answering as sqlite3's does for the SQL agentgit writes. A statement with
    arguments is prepared once a connection (its ``?`` made $1…$n by pg8000's own quote-aware scanner)
    and run by name after: one round trip a call, where an unnamed statement takes three."""

    def __init__(self, driver, parameters):
        self.driver, self.core = driver, importlib.import_module("pg8000.core")
        try:
            self.raw = driver.connect(**parameters)
        except (driver.Error, OSError) as error:
            raise RuntimeError("cannot reach the PostgreSQL database %s@%s: %s" % (
                parameters["user"], parameters["database"], error)) from None
        self.raw.autocommit = True         # as sqlite's isolation_level=None: BEGIN says where a transaction starts
        self.in_transaction = False
        self.prepared = {}                 # sql -> (statement, name, columns, input conversions)

    def execute(self, sql, args=()):
        try:
            if not args:                   # one simple query (BEGIN, COMMIT, or several statements)
                return PostgresResult(self.raw.execute_simple(sql))
            prepared = self.prepared.get(sql)
            if prepared is None:
                if len(self.prepared) >= PREPARED_KEPT:
                    for _, name, _, _ in self.prepared.values():
                        self.raw.close_prepared_statement(name)
                    self.prepared = {}
                statement = self.driver.convert_paramstyle("qmark", sql, args)[0]
                prepared = self.prepared[sql] = (statement, *self.raw.prepare_statement(statement, ()))
            statement, name, columns, conversions = prepared
            values = self.core.make_params(self.raw.py_types, [int(a) if isinstance(a, bool) else a for a in args])
            return PostgresResult(self.raw.execute_named(name, values, columns, conversions, statement))
        except self.driver.DatabaseError as error:
            fields = error.args[0] if error.args and isinstance(error.args[0], dict) else {}
            if fields.get("C", "").startswith("23"):
                raise IntegrityError(fields.get("M", str(error))) from None
            raise

    def executemany(self, sql, many):
        for args in many:
            self.execute(sql, args)

    def executescript(self, script):
        self.execute(script)

    def begin(self, then=""):
        """BEGIN, and ``then`` (statements without arguments) in the same message."""
        self.execute("BEGIN; " + then)
        self.in_transaction = True

    def commit(self):
        self.in_transaction = False
        self.execute("COMMIT")

    def rollback(self):
        self.in_transaction = False
        self.execute("ROLLBACK")


class PostgresStore(Store):
    """A PostgreSQL database: a thread holds a connection for a request (release() gives it back, as
    does the thread's end), taken from a few kept open; the version another process last committed is a
    row that each write transaction moves."""
    integrity_errors = (IntegrityError,)

    def __init__(self, url, fill=None):
        """``fill(db)``: the rows of a new database, written before its foreign keys are checked (db copy)."""
        try:
            self.driver = importlib.import_module("pg8000.dbapi")
        except ImportError:
            raise RuntimeError("a PostgreSQL database needs pg8000: pip install pg8000") from None
        self.parameters = connection_parameters(url)
        self.described = "; database: PostgreSQL %s" % shown_url(url)
        self.local = threading.local()
        self.idle, self.idle_lock, self.closed = [], threading.Lock(), False
        self.in_use = threading.BoundedSemaphore(CONNECTIONS_IN_USE)
        self.migrate(fill)
        self.watch = PostgresConnection(self.driver, self.parameters)
        super().__init__()

    @property
    def db(self):
        lease = getattr(self.local, "lease", None)
        if lease is None:
            if not self.in_use.acquire(timeout=60):
                raise RuntimeError("no database connection came free in 60 s (%d at work)" % CONNECTIONS_IN_USE)
            with self.idle_lock:
                conn = self.idle.pop() if self.idle else None
            try:
                lease = self.local.lease = ConnectionLease(self, conn or PostgresConnection(self.driver,
                                                                                           self.parameters))
            except BaseException:
                self.in_use.release()
                raise
        return lease.conn

    def release(self):
        lease = getattr(self.local, "lease", None)
        if lease is not None and not lease.conn.in_transaction:
            self.local.lease = None
            lease.end()

    def close(self):
        """Close the connections kept: the calling thread's, the idle ones and the watch (a server stopped,
        an embedding program done with the database). Threads still at work keep theirs until they end,
        and then close them; a store used after this opens what it needs again."""
        self.closed = True
        self.release()
        with self.idle_lock:
            idle, self.idle = self.idle, []
        watch, self.watch = self.watch, None
        for conn in idle + ([watch] if watch is not None else []):
            conn.raw.close()

    def give_back(self, conn):
        """A lease ended (its request, or its thread): the connection waits for another, or closes if
        enough do."""
        try:
            if conn.in_transaction:
                conn.rollback()
            with self.idle_lock:
                if len(self.idle) < IDLE_CONNECTIONS and not self.closed:
                    self.idle.append(conn)
                    return
            conn.raw.close()
        finally:
            self.in_use.release()

    def migrate(self, fill):
        db = self.db
        db.begin("SELECT pg_advisory_xact_lock(%d);" % WRITE_LOCK)      # two servers starting at once
        try:
            db.executescript(POSTGRES_PREAMBLE)
            row = db.execute("SELECT version FROM agentgit_schema").fetchone()
            if fill is not None and row is not None:
                raise RuntimeError("the database to copy into is not empty: it holds agentgit's tables already")
            if row is None:
                tables, foreign_keys = postgres_schema(SCHEMA)
                db.executescript(tables)
                if fill is not None:
                    fill(db)
                db.executescript(foreign_keys)
                db.execute("INSERT INTO agentgit_schema (version, generation) VALUES (?, 0)", (SCHEMA_VERSION,))
            elif row["version"] < SCHEMA_VERSION and only_new_tables(row["version"]):
                # what SCHEMA adds by itself (its tables are made if missing): the new tables' foreign keys too
                existing = {r[0] for r in db.execute("SELECT table_name FROM information_schema.tables WHERE"
                                                     " table_schema = current_schema()").fetchall()}
                tables, foreign_keys = postgres_schema(SCHEMA)
                db.executescript(tables)
                db.executescript("\n".join(key for key in foreign_keys.splitlines() if key.split()[2] not in existing))
                db.execute("UPDATE agentgit_schema SET version = ?", (SCHEMA_VERSION,))
            elif row["version"] != SCHEMA_VERSION:
                raise RuntimeError("this PostgreSQL database is at schema version %d; this agentgit reads %d%s" % (
                    row["version"], SCHEMA_VERSION, "" if row["version"] > SCHEMA_VERSION else ", and upgrades on "
                    "PostgreSQL only what later versions made by adding tables"))
        except BaseException:
            db.rollback()
            raise
        db.commit()

    def begin(self, db, records_only):
        # one message, one round trip: the transaction, the writers' lock, and (unless it only appends
        # records) the move of the generation other processes poll
        db.begin("SELECT pg_advisory_xact_lock(%d);%s" % (
            WRITE_LOCK, "" if records_only else " UPDATE agentgit_schema SET generation = generation + 1;"))

    def committed_version(self):
        if self.watch is None:              # (closed, and used again)
            self.watch = PostgresConnection(self.driver, self.parameters)
        return self.watch.execute("SELECT generation FROM agentgit_schema").fetchone()[0]


class ConnectionLease:
    """A thread's hold on a connection, until release() ends it or the thread's end drops it."""

    def __init__(self, store, conn):
        self.store, self.conn, self.ended = store, conn, False

    def end(self):
        if not self.ended:
            self.ended = True
            self.store.give_back(self.conn)

    __del__ = end


def copy_database(source, url, batch=200):
    """Copy every row of ``source`` (a SqliteStore, at SCHEMA_VERSION) into a new PostgreSQL database at
    ``url``, ids and all (the audit chain's hashes cover them), in one transaction; each id column goes
    on from the highest id the source ever gave (SQLite's AUTOINCREMENT remembers deleted ones).
    Answers {table: rows copied}."""
    copied = {}

    def fill(db):
        given = {r["name"]: r["seq"] for r in source.all("SELECT name, seq FROM sqlite_sequence")}
        for table in re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", SCHEMA):
            known = {r[0] for r in db.execute("SELECT column_name FROM information_schema.columns WHERE table_name = ?",
                                              (table,))}
            result = source.db.execute("SELECT * FROM %s" % table)
            columns = [d[0] for d in result.description if d[0] in known]   # (not what an old migration left)
            copied[table], highest, with_ids = 0, given.get(table, 0), table in tables_with_ids()
            for chunk in iter(lambda: result.fetchmany(batch), []):
                db.execute("INSERT INTO %s (%s) VALUES %s" % (table, ", ".join(columns), ", ".join(
                    ["(%s)" % ", ".join("?" * len(columns))] * len(chunk))), [row[c] for row in chunk for c in columns])
                copied[table] += len(chunk)
                if with_ids:
                    highest = max(highest, max(row["id"] for row in chunk))
            if with_ids:
                db.execute("SELECT setval(pg_get_serial_sequence(?, 'id'), ?, false)", (table, highest + 1))
    snapshot = source.db
    snapshot.execute("BEGIN")              # one snapshot of the source, whatever a running server writes meanwhile
    try:
        PostgresStore(url, fill=fill)
    finally:
        snapshot.rollback()
    return copied


def open_store(database, data_dir):
    """The installation's database: ``database`` a postgresql:// URL, or empty for the SQLite file in
    the data directory."""
    if database:
        return PostgresStore(database)
    return SqliteStore(os.path.join(data_dir, "agentgit.db"))


def insert(db, sql, args):
    """Run one INSERT and return the new row's id (RETURNING, which both databases read)."""
    return db.execute(sql + " RETURNING id", args).fetchall()[0][0]


def insert_row(db, table, fields):
    """INSERT a {column: value} dict and return the new row id (if the table has ids). Column names
    always come from the code, never from a request, so formatting them into the statement is safe."""
    sql = "INSERT INTO %s (%s) VALUES (%s)" % (table, ", ".join(fields), ", ".join("?" * len(fields)))
    if table in tables_with_ids():
        return insert(db, sql, tuple(fields.values()))
    db.execute(sql, tuple(fields.values()))


@functools.lru_cache(maxsize=1)
def tables_with_ids():
    """The tables whose rows have an id column (read when first asked: the single file's SCHEMA comes last)."""
    return frozenset(re.findall(r"CREATE TABLE IF NOT EXISTS (\w+) \(\s*id\s", SCHEMA))


def update_row(db, table, fields, key_column, key):
    """UPDATE the columns in ``fields`` of the row whose ``key_column`` is ``key``; nothing if empty."""
    if fields:
        db.execute("UPDATE %s SET %s WHERE %s = ?" % (table, ", ".join("%s = ?" % k for k in fields), key_column),
                   tuple(fields.values()) + (key,))
