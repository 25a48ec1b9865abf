"""Storage: the SQLite database (schema.sql), its migrations, one connection per thread, transactions."""

import collections
import contextlib
import itertools
import pathlib
import sqlite3
import sys
import threading
import time

from agentgit.config import OTHER_PROCESS_POLL


# schema.sql is the schema's only source: the package reads it from the top of the checkout, and
# `make dist` writes its text in place of this line into agentgit.py.
SCHEMA = pathlib.Path(__file__).parents[2].joinpath("schema.sql").read_text(encoding="utf-8")
SCHEMA_VERSION = 12
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
    """The SQLite database: WAL, foreign keys, one connection per thread, short transactions.

    Connections are in autocommit mode; ``transaction()`` opens ``BEGIN IMMEDIATE`` so that writers
    (this server, the CLI run beside it) queue on the database lock instead of failing mid-way.
    """

    def __init__(self, path):
        self.path = path
        self.local = threading.local()
        self.generations = itertools.count(1)
        self.generation, self.memo = 0, {}
        self.after_commit = None           # called after each commit (the audit chain's anchor keeps up)
        db = self.db
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version < SCHEMA_VERSION:
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
        self.watch = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.watch_lock = threading.Lock()
        self.watch_version, self.polled = self.watch.execute("PRAGMA data_version").fetchone()[0], -1.0

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

    def one(self, sql, *args):
        return self.db.execute(sql, args).fetchone()

    def cached(self, key, compute):
        """compute(), remembered until anyone commits anything, so hot reads (token, account,
        repository, permission) cost no queries. Commits in this process invalidate at once
        (transaction() moves the generation after COMMIT); commits by another process (the CLI) are
        noticed through sqlite's data_version within OTHER_PROCESS_POLL seconds. A value is stored
        with the generation current *before* it was read, so one read across a commit is never served."""
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

    def all(self, sql, *args):
        return self.db.execute(sql, args).fetchall()

    def poll_other_processes(self):
        """At most every OTHER_PROCESS_POLL seconds, ask one long-lived connection whether anyone
        else committed (data_version is only comparable within one connection)."""
        moment = time.monotonic()
        if moment - self.polled < OTHER_PROCESS_POLL:
            return
        with self.watch_lock:
            if moment - self.polled < OTHER_PROCESS_POLL:
                return
            version = self.watch.execute("PRAGMA data_version").fetchone()[0]
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
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        if not records_only:
            self.generation = next(self.generations)     # itertools.count: atomic under the GIL
        if self.after_commit is not None:
            self.after_commit()


def insert_row(db, table, fields):
    """INSERT a {column: value} dict and return the new row id. Column names always come from the
    code, never from a request, so formatting them into the statement is safe."""
    return db.execute("INSERT INTO %s (%s) VALUES (%s)" % (table, ", ".join(fields), ", ".join("?" * len(fields))),
                      tuple(fields.values())).lastrowid


def update_row(db, table, fields, key_column, key):
    """UPDATE the columns in ``fields`` of the row whose ``key_column`` is ``key``; nothing if empty."""
    if fields:
        db.execute("UPDATE %s SET %s WHERE %s = ?" % (table, ", ".join("%s = ?" % k for k in fields), key_column),
                   tuple(fields.values()) + (key,))
