#!/usr/bin/env python3
"""agentgit: a GitHub-compatible Git service in which AI agents are first-class accounts.

An agent is a durable user (``user_kind = agent``) with its own login, token, repositories and audit
trail. Humans delegate to agents; every decision is made in one place (``decide``) and written to a
hash-chained audit log. Existing clients speak to it unchanged: REST v3 under ``/api/v3``, the agent
extensions under ``/api/ext/v1``, and Git Smart HTTP at ``/<owner>/<repo>.git``.

Run it::

    pip install dulwich
    python agentgit.py serve                  # http://127.0.0.1:8080, data in ./agentgit-data
    python agentgit.py serve --help           # host, port, data dir, TLS, Unix socket, registration, engine
    python agentgit.py user add alice         # prints alice's personal token on its last line
    python agentgit.py agent add coder        # registers an agent, prints its token last
    python agentgit.py connect gh --token T   # writes a configuration for gh and git, prints the exports
    python agentgit.py audit verify           # exit 0 when the audit chain is intact

Embed it (a pytest fixture)::

    srv = agentgit.make_server(tmp_path, port=0); srv.start(); ...; srv.stop()

Sections, in the order a request travels through them (the pipeline that calls them in turn,
App.dispatch, sits with the server in section 13):

    1. Configuration        constants, names, limits
    2. Storage              SQLite schema, one connection per thread, transactions
    3. Identity             accounts (humans, agents, organizations), teams, passwords
    4. Tokens               typed HMAC-signed tokens, the Principal, authentication
    5. Policy               the action table and decide(): the one policy decision point
    6. Audit                the hash-chained log and its verifier
    7. Git storage          bare repositories, initial commits, refs and commits via dulwich
    8. HTTP plumbing        request parsing, routing, errors, pagination, serializers
    9. REST endpoints       users, repositories and forks, branches and commits, collaborators,
                            issues, pull requests and reviews, contents, protection and statuses,
                            git data, releases and their assets, workflow records, Actions
                            secrets and variables, search (code too), organizations and teams,
                            agent registration, tokens, audit, delegation, task grants and
                            approvals, policy, freezes
   10. GraphQL              lexer, parser, limits, executor, schema table, mutations, __type
   11. Web pages and OAuth  sign-in, sessions with CSRF tokens, /settings pages, the device flow,
                            authorization code with PKCE, metadata
   12. Git Smart HTTP       info/refs, upload-pack and receive-pack through git or dulwich
   13. Server and embedding make_server(), TLS, the Unix socket
   14. Command line         serve, user, agent, connect, audit
"""

import argparse
import base64
import collections
import contextlib
import dataclasses
import datetime
import getpass
import hashlib
import hmac
import html
import http.server
import io
import itertools
import json
import os
import re
import secrets
import shlex
import shutil
import socket
import socketserver
import sqlite3
import stat
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
import zlib

from dulwich.errors import NotTreeError
from dulwich.graph import can_fast_forward, find_merge_base
from dulwich.object_store import iter_tree_contents
from dulwich.objects import Blob, Commit, Tag, Tree
from dulwich.patch import write_commit_patch, write_object_diff, write_tree_diff
from dulwich.repo import Repo

__version__ = "0.1.0"


# ════════════════════════════════════════════════════════════════════════════════════════════════
# 1. Configuration
# ════════════════════════════════════════════════════════════════════════════════════════════════

DEFAULT_DATA_DIR = "agentgit-data"
DOCS_URL = "https://docs.github.com/rest"
API_VERSION = "2022-11-28"
MAX_JSON_BODY = 10 * 1024 * 1024          # REST bodies; larger ones are refused with 413
MAX_PACK_BODY = 2 * 1024 * 1024 * 1024    # one push; the pack is streamed, never held in memory
MAX_ASSET_BYTES = 100 * 1024 * 1024       # one release asset, held in the database (GitHub allows 2 GB)
REQUEST_IDLE_TIMEOUT = 120                # seconds a client may stay silent before its thread gives up
PER_PAGE_DEFAULT, PER_PAGE_MAX = 30, 100
OTHER_PROCESS_POLL = 0.05                 # seconds: how soon a CLI change (e.g. a revocation) takes effect

# GitHub's own rules: logins are alphanumeric with single inner hyphens, at most 39 characters;
# repository names are letters, digits, '.', '-', '_' and at most 100 characters.
LOGIN_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){0,38}$")
REPO_NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,100}$")
AGENT_PREFIX_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
TEAM_NAME_MAX = 255


def now():
    """The current UTC time as GitHub writes it: 2026-01-31T12:00:00Z."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text):
    """ISO 8601 (with Z or an offset) to an aware datetime; ValueError when it is not one."""
    value = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError("a time zone is required")
    return value.astimezone(datetime.timezone.utc)


def valid_repo_name(name):
    """A repository name that is safe as a path segment and as GitHub would take it."""
    return (isinstance(name, str) and bool(REPO_NAME_RE.match(name)) and name not in (".", "..")
            and not name.lower().endswith(".git"))


@dataclasses.dataclass
class Config:
    data_dir: str
    url: str = ""                          # public base URL; filled in from the bound address if empty
    registration: str = "open"             # "open" or "closed": anonymous agent registration
    git_engine: str = "auto"               # "auto", "git" or "dulwich"
    registration_limit: int = 20           # registrations per client address per window
    registration_window: int = 600         # seconds


# ════════════════════════════════════════════════════════════════════════════════════════════════
# 2. Storage
# ════════════════════════════════════════════════════════════════════════════════════════════════

SCHEMA = """-- agentgit schema (SQLite). agentgit.py carries this same text as SCHEMA; a test keeps the two identical.
-- Times are UTC ISO 8601 with a trailing Z. Permissions are read < triage < write < maintain < admin.

-- Humans, agents and organizations share one namespace of logins, as on GitHub.
CREATE TABLE IF NOT EXISTS accounts (
    id               INTEGER PRIMARY KEY,
    login            TEXT NOT NULL UNIQUE COLLATE NOCASE,
    kind             TEXT NOT NULL CHECK (kind IN ('human', 'agent', 'org')),
    name             TEXT,
    email            TEXT,
    description      TEXT,
    site_admin       INTEGER NOT NULL DEFAULT 0,
    suspended_at     TEXT,
    retired_at       TEXT,              -- agents only: retired for good; the login stays reserved
    password_hash    TEXT,
    totp_secret      TEXT,              -- a TOTP secret encrypted with the server key; NULL: no second factor
    -- organizations only: what every member may do on every repository of the org
    base_permission  TEXT NOT NULL DEFAULT 'read'
                     CHECK (base_permission IN ('none', 'read', 'write', 'admin')),
    -- humans vouched for by an embedding program's authenticator
    idp_provider     TEXT,
    idp_subject      TEXT,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    UNIQUE (idp_provider, idp_subject)
);

CREATE TABLE IF NOT EXISTS org_members (
    org_id   INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    user_id  INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    role     TEXT NOT NULL CHECK (role IN ('admin', 'member')),
    PRIMARY KEY (org_id, user_id)
);

CREATE TABLE IF NOT EXISTS teams (
    id           INTEGER PRIMARY KEY,
    org_id       INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    slug         TEXT NOT NULL COLLATE NOCASE,
    name         TEXT NOT NULL,
    description  TEXT,
    privacy      TEXT NOT NULL DEFAULT 'closed' CHECK (privacy IN ('secret', 'closed')),
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    UNIQUE (org_id, slug)
);

CREATE TABLE IF NOT EXISTS team_members (
    team_id  INTEGER NOT NULL REFERENCES teams(id) ON DELETE CASCADE,
    user_id  INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    role     TEXT NOT NULL CHECK (role IN ('member', 'maintainer')),
    PRIMARY KEY (team_id, user_id)
);

-- AUTOINCREMENT: a repository id (and so its directory name) is never reused.
CREATE TABLE IF NOT EXISTS repos (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    owner_id        INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name            TEXT NOT NULL COLLATE NOCASE,
    description     TEXT,
    homepage        TEXT,
    private         INTEGER NOT NULL DEFAULT 0,
    archived        INTEGER NOT NULL DEFAULT 0,
    default_branch  TEXT NOT NULL DEFAULT 'main',
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    pushed_at       TEXT,
    parent_id       INTEGER REFERENCES repos(id) ON DELETE SET NULL,   -- a fork: the repository it forked
    UNIQUE (owner_id, name)
);
CREATE INDEX IF NOT EXISTS repos_by_parent ON repos(parent_id);

CREATE TABLE IF NOT EXISTS collaborators (
    repo_id     INTEGER NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    user_id     INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    permission  TEXT NOT NULL CHECK (permission IN ('read', 'triage', 'write', 'maintain', 'admin')),
    PRIMARY KEY (repo_id, user_id)
);

CREATE TABLE IF NOT EXISTS team_repos (
    team_id     INTEGER NOT NULL REFERENCES teams(id) ON DELETE CASCADE,
    repo_id     INTEGER NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    permission  TEXT NOT NULL CHECK (permission IN ('read', 'triage', 'write', 'maintain', 'admin')),
    PRIMARY KEY (team_id, repo_id)
);

-- Tokens are stored as sha256 of the whole token (they carry 128 random bits, so no salt is needed).
-- A switch-session token acts as the agent (user_id) and names the human who opened it (issued_by).
CREATE TABLE IF NOT EXISTS tokens (
    id            INTEGER PRIMARY KEY,
    user_id       INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    kind          TEXT NOT NULL CHECK (kind IN ('personal', 'agent', 'switch-session', 'oauth', 'task')),
    issued_by     INTEGER REFERENCES accounts(id) ON DELETE SET NULL,
    grant_id      INTEGER REFERENCES task_grants(id) ON DELETE CASCADE,   -- task tokens: their grant
    name          TEXT NOT NULL DEFAULT '',
    scopes        TEXT NOT NULL DEFAULT '',
    hash          TEXT NOT NULL UNIQUE,
    fingerprint   TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    expires_at    TEXT,
    revoked_at    TEXT,
    last_used_at  TEXT
);
CREATE INDEX IF NOT EXISTS tokens_by_user ON tokens(user_id);

-- Append-only. hash = HMAC(server key, prev_hash + the row's fields): editing or deleting a row breaks the chain.
CREATE TABLE IF NOT EXISTS audit (
    id                 INTEGER PRIMARY KEY,
    at                 TEXT NOT NULL,
    actor              TEXT,
    user_kind          TEXT,
    delegator          TEXT,
    task               TEXT,
    grant_id           TEXT,
    runtime            TEXT,
    token_fingerprint  TEXT,
    surface            TEXT NOT NULL,
    action             TEXT NOT NULL,
    resource           TEXT NOT NULL,
    decision           TEXT NOT NULL,
    reasons            TEXT NOT NULL,
    side_effect        TEXT,
    prev_hash          TEXT NOT NULL,
    hash               TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_by_actor ON audit(actor);

-- Collaboration (schema version 2). Issues and pull requests share one number sequence per repository.
CREATE TABLE IF NOT EXISTS milestones (
    id           INTEGER PRIMARY KEY,
    repo_id      INTEGER NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    number       INTEGER NOT NULL,
    title        TEXT NOT NULL,
    description  TEXT,
    state        TEXT NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'closed')),
    due_on       TEXT,
    creator_id   INTEGER REFERENCES accounts(id) ON DELETE SET NULL,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    closed_at    TEXT,
    UNIQUE (repo_id, number)
);

CREATE TABLE IF NOT EXISTS issues (
    id            INTEGER PRIMARY KEY,
    repo_id       INTEGER NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    number        INTEGER NOT NULL,
    user_id       INTEGER REFERENCES accounts(id) ON DELETE SET NULL,
    title         TEXT NOT NULL,
    body          TEXT,
    state         TEXT NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'closed')),
    state_reason  TEXT,
    locked        INTEGER NOT NULL DEFAULT 0,
    lock_reason   TEXT,
    milestone_id  INTEGER REFERENCES milestones(id) ON DELETE SET NULL,
    is_pull       INTEGER NOT NULL DEFAULT 0,
    closed_by     INTEGER REFERENCES accounts(id) ON DELETE SET NULL,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    closed_at     TEXT,
    UNIQUE (repo_id, number)
);

CREATE TABLE IF NOT EXISTS issue_assignees (
    issue_id  INTEGER NOT NULL REFERENCES issues(id) ON DELETE CASCADE,
    user_id   INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    PRIMARY KEY (issue_id, user_id)
);

CREATE TABLE IF NOT EXISTS labels (
    id           INTEGER PRIMARY KEY,
    repo_id      INTEGER NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    name         TEXT NOT NULL COLLATE NOCASE,
    color        TEXT NOT NULL,
    description  TEXT,
    UNIQUE (repo_id, name)
);

CREATE TABLE IF NOT EXISTS issue_labels (
    issue_id  INTEGER NOT NULL REFERENCES issues(id) ON DELETE CASCADE,
    label_id  INTEGER NOT NULL REFERENCES labels(id) ON DELETE CASCADE,
    PRIMARY KEY (issue_id, label_id)
);

CREATE TABLE IF NOT EXISTS comments (
    id          INTEGER PRIMARY KEY,
    issue_id    INTEGER NOT NULL REFERENCES issues(id) ON DELETE CASCADE,
    user_id     INTEGER REFERENCES accounts(id) ON DELETE SET NULL,
    body        TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS comments_by_issue ON comments(issue_id);

-- A pull request is an issue (is_pull = 1) plus where it comes from and goes to.
CREATE TABLE IF NOT EXISTS pulls (
    issue_id          INTEGER PRIMARY KEY REFERENCES issues(id) ON DELETE CASCADE,
    head_repo_id      INTEGER REFERENCES repos(id) ON DELETE SET NULL,
    head_ref          TEXT NOT NULL,
    head_sha          TEXT NOT NULL,
    base_ref          TEXT NOT NULL,
    base_sha          TEXT NOT NULL,
    draft             INTEGER NOT NULL DEFAULT 0,
    merged_at         TEXT,
    merged_by         INTEGER REFERENCES accounts(id) ON DELETE SET NULL,
    merge_commit_sha  TEXT
);

CREATE TABLE IF NOT EXISTS reviews (
    id            INTEGER PRIMARY KEY,
    issue_id      INTEGER NOT NULL REFERENCES issues(id) ON DELETE CASCADE,
    user_id       INTEGER REFERENCES accounts(id) ON DELETE SET NULL,
    state         TEXT NOT NULL CHECK (state IN ('APPROVED', 'CHANGES_REQUESTED', 'COMMENTED', 'DISMISSED')),
    body          TEXT NOT NULL DEFAULT '',
    commit_id     TEXT,
    submitted_at  TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS review_comments (
    id          INTEGER PRIMARY KEY,
    review_id   INTEGER NOT NULL REFERENCES reviews(id) ON DELETE CASCADE,
    issue_id    INTEGER NOT NULL REFERENCES issues(id) ON DELETE CASCADE,
    user_id     INTEGER REFERENCES accounts(id) ON DELETE SET NULL,
    path        TEXT NOT NULL,
    line        INTEGER,
    side        TEXT NOT NULL DEFAULT 'RIGHT',
    body        TEXT NOT NULL,
    commit_id   TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS review_requests (
    issue_id  INTEGER NOT NULL REFERENCES issues(id) ON DELETE CASCADE,
    user_id   INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    PRIMARY KEY (issue_id, user_id)
);

-- Branch protection, commit statuses and check runs (schema version 3). Records only: nothing runs here.
CREATE TABLE IF NOT EXISTS branch_protections (
    repo_id             INTEGER NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    branch              TEXT NOT NULL,
    required_approvals  INTEGER,            -- NULL: no pull request required; 0..6: approvals a merge needs
    dismiss_stale       INTEGER NOT NULL DEFAULT 0,
    required_checks     TEXT,               -- JSON list of contexts, NULL: none required
    strict_checks       INTEGER NOT NULL DEFAULT 0,
    enforce_admins      INTEGER NOT NULL DEFAULT 0,
    allow_force_pushes  INTEGER NOT NULL DEFAULT 0,
    allow_deletions     INTEGER NOT NULL DEFAULT 0,
    updated_at          TEXT NOT NULL,
    PRIMARY KEY (repo_id, branch)
);

CREATE TABLE IF NOT EXISTS statuses (
    id           INTEGER PRIMARY KEY,
    repo_id      INTEGER NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    sha          TEXT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('error', 'failure', 'pending', 'success')),
    context      TEXT NOT NULL,
    description  TEXT,
    target_url   TEXT,
    creator_id   INTEGER REFERENCES accounts(id) ON DELETE SET NULL,
    created_at   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS statuses_by_sha ON statuses(repo_id, sha);

CREATE TABLE IF NOT EXISTS check_runs (
    id            INTEGER PRIMARY KEY,
    repo_id       INTEGER NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    head_sha      TEXT NOT NULL,
    name          TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('queued', 'in_progress', 'completed')),
    conclusion    TEXT,
    external_id   TEXT,
    details_url   TEXT,
    output        TEXT NOT NULL DEFAULT '{}',
    creator_id    INTEGER REFERENCES accounts(id) ON DELETE SET NULL,
    started_at    TEXT,
    completed_at  TEXT
);
CREATE INDEX IF NOT EXISTS check_runs_by_sha ON check_runs(repo_id, head_sha);

-- Releases and workflow records (schema version 4). Workflows are files in the repository; runs are
-- records of dispatches that an authorization layer gates: nothing executes here.
CREATE TABLE IF NOT EXISTS releases (
    id                INTEGER PRIMARY KEY,
    repo_id           INTEGER NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    tag_name          TEXT NOT NULL,
    target_commitish  TEXT NOT NULL,
    name              TEXT,
    body              TEXT,
    draft             INTEGER NOT NULL DEFAULT 0,
    prerelease        INTEGER NOT NULL DEFAULT 0,
    author_id         INTEGER REFERENCES accounts(id) ON DELETE SET NULL,
    created_at        TEXT NOT NULL,
    published_at      TEXT,
    UNIQUE (repo_id, tag_name)
);

-- Release assets: uploaded files, kept in the database (MAX_ASSET_BYTES at most each) so that deleting
-- a release or a repository takes them in the same transaction.
CREATE TABLE IF NOT EXISTS release_assets (
    id              INTEGER PRIMARY KEY,
    release_id      INTEGER NOT NULL REFERENCES releases(id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    label           TEXT,
    content_type    TEXT NOT NULL,
    size            INTEGER NOT NULL,
    digest          TEXT NOT NULL,           -- sha256:<hex>, as GitHub reports it
    data            BLOB NOT NULL,
    download_count  INTEGER NOT NULL DEFAULT 0,
    uploader_id     INTEGER REFERENCES accounts(id) ON DELETE SET NULL,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    UNIQUE (release_id, name)
);

CREATE TABLE IF NOT EXISTS workflows (
    id          INTEGER PRIMARY KEY,
    repo_id     INTEGER NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    path        TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    UNIQUE (repo_id, path)
);

CREATE TABLE IF NOT EXISTS workflow_runs (
    id           INTEGER PRIMARY KEY,
    repo_id      INTEGER NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    workflow_id  INTEGER NOT NULL REFERENCES workflows(id) ON DELETE CASCADE,
    run_number   INTEGER NOT NULL,
    run_attempt  INTEGER NOT NULL DEFAULT 1,
    event        TEXT NOT NULL,
    head_branch  TEXT NOT NULL,
    head_sha     TEXT NOT NULL,
    inputs       TEXT NOT NULL DEFAULT '{}',
    status       TEXT NOT NULL CHECK (status IN ('queued', 'in_progress', 'completed')),
    conclusion   TEXT,
    actor_id     INTEGER REFERENCES accounts(id) ON DELETE SET NULL,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);

-- Delegation (schema version 5): a human invites, the agent consents with its own token, and the
-- grants the invite carried are applied in the same transaction as the binding.
CREATE TABLE IF NOT EXISTS agent_invites (
    id           INTEGER PRIMARY KEY,
    inviter_id   INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    hash         TEXT NOT NULL UNIQUE,
    fingerprint  TEXT NOT NULL,
    grants       TEXT NOT NULL,         -- JSON {"repo_grants": [...], "team_grants": [...]}
    created_at   TEXT NOT NULL,
    expires_at   TEXT NOT NULL,
    consumed_at  TEXT,
    consumed_by  INTEGER REFERENCES accounts(id) ON DELETE SET NULL
);

-- agent_id is the key: an agent is bound to at most one human.
CREATE TABLE IF NOT EXISTS agent_bindings (
    agent_id      INTEGER PRIMARY KEY REFERENCES accounts(id) ON DELETE CASCADE,
    human_id      INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    invite_id     INTEGER REFERENCES agent_invites(id) ON DELETE SET NULL,
    display_name  TEXT,
    bound_at      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS agent_bindings_by_human ON agent_bindings(human_id);

-- What a binding granted, so unbinding or revoking by organization takes exactly that back.
CREATE TABLE IF NOT EXISTS agent_grants (
    id          INTEGER PRIMARY KEY,
    agent_id    INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    repo_id     INTEGER REFERENCES repos(id) ON DELETE CASCADE,
    team_id     INTEGER REFERENCES teams(id) ON DELETE CASCADE,
    org_id      INTEGER REFERENCES accounts(id) ON DELETE CASCADE,   -- membership a team grant needed
    permission  TEXT NOT NULL,
    created_at  TEXT NOT NULL
);

-- Signed-in humans on the web pages. The cookie carries a random id; the table keeps its sha256.
CREATE TABLE IF NOT EXISTS web_sessions (
    hash        TEXT PRIMARY KEY,
    user_id     INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    csrf        TEXT NOT NULL,
    totp_at     TEXT,                    -- when the second factor was last shown (for step-up)
    created_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL
);

-- OAuth device flow (RFC 8628): what a client asked for, and which human approved or denied it.
CREATE TABLE IF NOT EXISTS device_codes (
    id           INTEGER PRIMARY KEY,
    hash         TEXT NOT NULL UNIQUE,    -- sha256 of the device code; the code itself is the client's
    user_code    TEXT NOT NULL UNIQUE,
    client_id    TEXT NOT NULL,
    scopes       TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    expires_at   TEXT NOT NULL,
    interval     INTEGER NOT NULL,
    last_poll    REAL,
    approved_by  INTEGER REFERENCES accounts(id) ON DELETE CASCADE,
    denied       INTEGER NOT NULL DEFAULT 0,
    consumed_at  TEXT
);

-- OAuth apps for the authorization code flow with PKCE; codes live 60 s and are single use, and
-- refresh tokens rotate within a family so that replaying an old one revokes the family.
CREATE TABLE IF NOT EXISTS oauth_apps (
    id             INTEGER PRIMARY KEY,
    client_id      TEXT NOT NULL UNIQUE,
    secret_hash    TEXT,                  -- NULL: a public client (PKCE alone)
    name           TEXT NOT NULL,
    redirect_uris  TEXT NOT NULL,         -- JSON list
    owner_id       INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    created_at     TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS oauth_codes (
    id            INTEGER PRIMARY KEY,
    hash          TEXT NOT NULL UNIQUE,
    app_id        INTEGER NOT NULL REFERENCES oauth_apps(id) ON DELETE CASCADE,
    user_id       INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    redirect_uri  TEXT NOT NULL,
    scopes        TEXT NOT NULL,
    challenge     TEXT NOT NULL,
    expires_at    TEXT NOT NULL,
    consumed_at   TEXT,
    family        TEXT                    -- the refresh family it started, to revoke on replay
);

CREATE TABLE IF NOT EXISTS oauth_refresh_tokens (
    id           INTEGER PRIMARY KEY,
    hash         TEXT NOT NULL UNIQUE,
    family       TEXT NOT NULL,
    app_id       INTEGER NOT NULL REFERENCES oauth_apps(id) ON DELETE CASCADE,
    user_id      INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    scopes       TEXT NOT NULL,
    access_id    INTEGER REFERENCES tokens(id) ON DELETE SET NULL,
    created_at   TEXT NOT NULL,
    used_at      TEXT
);

-- Task grants: what an agent may do for one task, on which resources, under which constraints.
CREATE TABLE IF NOT EXISTS task_grants (
    id            INTEGER PRIMARY KEY,
    public_id     TEXT NOT NULL UNIQUE,
    agent_id      INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    delegator_id  INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    task          TEXT NOT NULL,
    resources     TEXT NOT NULL,          -- JSON list: "repo:owner/name"
    actions       TEXT NOT NULL,          -- JSON list of action names
    constraints   TEXT NOT NULL,          -- JSON: branch_prefix, expires_at, network_allowlist, requires_approval
    created_at    TEXT NOT NULL,
    expires_at    TEXT NOT NULL,
    revoked_at    TEXT
);
CREATE INDEX IF NOT EXISTS task_grants_by_agent ON task_grants(agent_id);

-- Approvals: a human's yes to one action on one resource under one grant; single use, short-lived.
CREATE TABLE IF NOT EXISTS approvals (
    id            INTEGER PRIMARY KEY,
    public_id     TEXT NOT NULL UNIQUE,
    grant_id      INTEGER NOT NULL REFERENCES task_grants(id) ON DELETE CASCADE,
    action        TEXT NOT NULL,
    resource      TEXT NOT NULL,
    subject       TEXT NOT NULL DEFAULT '',  -- exactly what: "pull request #3 at 1a2b3c4d5e6f", a ref
    created_at    TEXT NOT NULL,
    expires_at    TEXT NOT NULL,
    approved_by   INTEGER REFERENCES accounts(id) ON DELETE SET NULL,
    approved_at   TEXT,
    used_at       TEXT
);

-- Step-up: when a token's holder last confirmed a TOTP code, for the actions that ask for a fresh one.
CREATE TABLE IF NOT EXISTS step_ups (
    token_id      INTEGER PRIMARY KEY REFERENCES tokens(id) ON DELETE CASCADE,
    at            TEXT NOT NULL
);

-- Freezes: a repository or a whole organization made read-only by policy (an incident, an audit, a
-- release): reads pass and every change is refused as read_only until someone thaws it.
CREATE TABLE IF NOT EXISTS freezes (
    id            INTEGER PRIMARY KEY,
    public_id     TEXT NOT NULL UNIQUE,
    repo_id       INTEGER UNIQUE REFERENCES repos(id) ON DELETE CASCADE,
    org_id        INTEGER UNIQUE REFERENCES accounts(id) ON DELETE CASCADE,
    reason        TEXT NOT NULL,
    frozen_by     INTEGER REFERENCES accounts(id) ON DELETE SET NULL,
    created_at    TEXT NOT NULL,
    CHECK ((repo_id IS NULL) != (org_id IS NULL))
);

-- Actions secrets, sealed by the client (a libsodium sealed box) to the server's X25519 key. agentgit
-- runs no workflows: it keeps them for a runner and never opens them.
CREATE TABLE IF NOT EXISTS secrets (
    repo_id          INTEGER NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    name             TEXT NOT NULL,
    encrypted_value  TEXT NOT NULL,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    PRIMARY KEY (repo_id, name)
);

-- Actions variables: plain configuration values for workflows (which nothing here runs).
CREATE TABLE IF NOT EXISTS variables (
    repo_id          INTEGER NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    name             TEXT NOT NULL,
    value            TEXT NOT NULL,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    PRIMARY KEY (repo_id, name)
);
"""
SCHEMA_VERSION = 5
# SCHEMA is idempotent, so a newer version re-runs it whole. What it cannot do alone (new columns, a
# changed CHECK) a migration does around it: (before SCHEMA, after SCHEMA), all in one transaction.
MIGRATIONS = {
    5: ("DROP INDEX IF EXISTS tokens_by_user; ALTER TABLE tokens RENAME TO tokens_before_v5;"
        " ALTER TABLE accounts ADD COLUMN retired_at TEXT; ALTER TABLE accounts ADD COLUMN totp_secret TEXT;"
        " ALTER TABLE repos ADD COLUMN parent_id INTEGER REFERENCES repos(id) ON DELETE SET NULL;",
        "INSERT INTO tokens (id, user_id, kind, name, scopes, hash, fingerprint, created_at, expires_at,"
        " revoked_at, last_used_at) SELECT id, user_id, kind, name, scopes, hash, fingerprint, created_at,"
        " expires_at, revoked_at, last_used_at FROM tokens_before_v5; DROP TABLE tokens_before_v5;"),
}


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
        db = self.db
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version < SCHEMA_VERSION:
            steps = [MIGRATIONS[v] for v in range(version + 1, SCHEMA_VERSION + 1) if version and v in MIGRATIONS]
            db.executescript("BEGIN IMMEDIATE;\n%s\n%s\n%s\nPRAGMA user_version = %d;\nCOMMIT;" % (
                "\n".join(before for before, _ in steps), SCHEMA, "\n".join(after for _, after in steps),
                SCHEMA_VERSION))
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
    def transaction(self):
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
        self.generation = next(self.generations)     # itertools.count: atomic under the GIL


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


# ════════════════════════════════════════════════════════════════════════════════════════════════
# 3. Identity
# ════════════════════════════════════════════════════════════════════════════════════════════════
# One table holds humans, agents and organizations, so a login is unique across all three (as on
# GitHub) and a repository owner is simply an account.

def account_by_login(store, login):
    return store.one("SELECT * FROM accounts WHERE login = ?", login)


def account_by_id(store, account_id):
    return store.one("SELECT * FROM accounts WHERE id = ?", account_id)


def insert_account(db, login, kind, **fields):
    stamp = now()
    columns = dict(fields, login=login, kind=kind, created_at=stamp, updated_at=stamp)
    return insert_row(db, "accounts", columns)


def hash_password(password):
    """scrypt with a per-password salt, written as scrypt$n$r$p$salt$hash."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2 ** 14, r=8, p=1)
    return "scrypt$16384$8$1$%s$%s" % (salt.hex(), digest.hex())


DUMMY_PASSWORD_HASH = "scrypt$16384$8$1$%s$%s" % ("00" * 16, "00" * 64)   # checked for unknown logins


def check_password(stored, password):
    try:
        _, n, r, p, salt, digest = stored.split("$")
        got = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p))
    except (ValueError, AttributeError):
        return False
    return hmac.compare_digest(got.hex(), digest)


def totp_code(secret, moment, step=30):
    """RFC 6238 with SHA-1 and six digits, as authenticator apps compute it."""
    counter = int(moment // step).to_bytes(8, "big")
    mac = hmac.new(secret, counter, hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    return "%06d" % ((int.from_bytes(mac[offset:offset + 4], "big") & 0x7FFFFFFF) % 1000000)


def totp_mask(key, account_id):
    """The keystream that encrypts an account's TOTP secret at rest (a database alone does not reveal it)."""
    return hmac.new(key, b"totp:%d" % account_id, hashlib.sha256).digest()[:20]


def totp_secret(key, account):
    stored = account["totp_secret"]
    if not stored:
        return None
    return bytes(a ^ b for a, b in zip(bytes.fromhex(stored), totp_mask(key, account["id"])))


def check_totp(key, account, code):
    """The code for this 30-second step, or the one before or after (clocks drift)."""
    secret, moment = totp_secret(key, account), time.time()
    return secret is not None and any(hmac.compare_digest(totp_code(secret, moment + drift), (code or "").strip())
                                      for drift in (-30, 0, 30))


def create_human(app, login, admin=False, password=None, name=None, idp=None):
    """A human account and a personal token with every scope (the CLI's and first start's way in).

    Returns (account id, token). ``idp`` is (provider, subject) for humans an authenticator vouched for.
    """
    if not LOGIN_RE.match(login or ""):
        raise ValueError("%r is not a valid login" % login)
    with app.store.transaction() as db:
        fields = {"site_admin": int(admin), "name": name}
        if password:
            fields["password_hash"] = hash_password(password)
        if idp:
            fields["idp_provider"], fields["idp_subject"] = idp
        user_id = insert_account(db, login, "human", **fields)
        token, _ = issue_token(db, app.key, user_id, "personal", name="initial", scopes=ALL_SCOPES)
    return user_id, token


def register_agent(app, prefix, repo_name="workspace"):
    """An agent account, its token and its private default repository with an initial commit.

    All or nothing: one transaction writes the rows and moves the finished repository into place.
    Returns (login, token, repository full name).
    """
    with app.store.transaction() as db:
        for _ in range(20):   # 24 random bits per login: collisions are rare, retry them
            login = "%s-%s" % (prefix, secrets.token_hex(3))
            if not db.execute("SELECT 1 FROM accounts WHERE login = ?", (login,)).fetchone():
                break
        else:
            raise RuntimeError("no free login for prefix %r" % prefix)
        agent_id = insert_account(db, login, "agent")
        token, _ = issue_token(db, app.key, agent_id, "agent", name="agent", scopes=AGENT_SCOPES)
        create_repository(app, db, {"id": agent_id, "login": login}, repo_name, private=True, auto_init=True)
    return login, token, "%s/%s" % (login, repo_name)


def noreply_email(login):
    return "%s@users.noreply.agentgit" % login


def create_repository(app, db, owner, name, private, auto_init, description=None, homepage=None,
                      default_branch="main", parent_id=None):
    """Inside the caller's transaction: build the bare repository in a scratch directory, insert its
    row, and move the directory into place. If anything raises, the transaction rolls back and the
    scratch directory goes; repository ids are never reused, so nothing stale can collide later."""
    scratch = tempfile.mkdtemp(prefix=".new-", dir=app.repos_dir)
    try:
        init_repository(scratch, default_branch,
                        initial=(owner["login"], noreply_email(owner["login"]), name) if auto_init else None)
        stamp = now()
        repo_id = db.execute(
            "INSERT INTO repos (owner_id, name, description, homepage, private, default_branch, created_at,"
            " updated_at, pushed_at, parent_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (owner["id"], name, description, homepage, int(bool(private)), default_branch, stamp, stamp,
             stamp if auto_init else None, parent_id)).lastrowid
        os.rename(scratch, repo_dir(app, repo_id))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return repo_id


def suspend_account(db, account, suspended):
    """Suspend or lift it; a suspended human's switch sessions die with it (their agents are then
    limited to their own repositories by decide()). Returns what happened, for the audit row."""
    db.execute("UPDATE accounts SET suspended_at = ?, updated_at = ? WHERE id = ?",
               (now() if suspended else None, now(), account["id"]))
    if not suspended:
        return "unsuspended %s" % account["login"]
    sessions = revoke(db, "kind = 'switch-session' AND issued_by = ?", (account["id"],))
    return "suspended %s; revoked %d switch sessions" % (account["login"], sessions)


def permission_of_org_member(store, org_id, user_id):
    """'admin', 'member' or None."""
    row = store.one("SELECT role FROM org_members WHERE org_id = ? AND user_id = ?", org_id, user_id)
    return row["role"] if row else None


# ════════════════════════════════════════════════════════════════════════════════════════════════
# 4. Tokens
# ════════════════════════════════════════════════════════════════════════════════════════════════
# A token is   <prefix>_<32 hex random><16 hex HMAC-SHA256(server key, prefix_random)>.
# The MAC lets a forged or altered token be refused before the database is asked; the database holds
# only sha256(token) and decides expiry and revocation. The prefix tells a reader (and a secret
# scanner) what kind of token leaked. Later kinds (task, tool) get their own. Agent invites
# use the same form (prefix agi) but are kept apart: they are consent material, never credentials.

TOKEN_PREFIXES = {"personal": "agp", "agent": "aga", "switch-session": "ags", "oauth": "ago", "task": "agt"}
INVITE_PREFIX = "agi"
SWITCH_SESSION_HOURS = 12
TOKEN_RE = re.compile(r"^(ag[a-z])_([0-9a-f]{32})([0-9a-f]{16})$")
ALL_SCOPES = ("repo", "read:org", "write:org", "admin:org", "workflow", "delete_repo", "gist",
              "read:user", "user:email", "site_admin")
# An agent acts on its own repositories and whatever humans grant it; it administers no org or site.
AGENT_SCOPES = ("repo", "read:org", "workflow", "delete_repo", "gist", "read:user")
SCOPE_IMPLIES = {"repo": {"public_repo", "repo:status"}, "admin:org": {"write:org", "read:org"},
                 "write:org": {"read:org"}, "user": {"read:user", "user:email"}}


def expand_scopes(scopes):
    out = set(scopes)
    for scope in scopes:
        out |= SCOPE_IMPLIES.get(scope, set())
    return frozenset(out)


def token_mac(key, prefix, random_part):
    return hmac.new(key, ("%s_%s" % (prefix, random_part)).encode(), hashlib.sha256).hexdigest()[:16]


def token_fingerprint(token):
    return hashlib.sha256(token.encode()).hexdigest()[:12]


def mint_token(key, prefix):
    random_part = secrets.token_hex(16)
    return "%s_%s%s" % (prefix, random_part, token_mac(key, prefix, random_part))


def token_hash(token):
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(db, key, user_id, kind, name="", scopes=(), expires_at=None, issued_by=None, grant_id=None):
    """Mint a token, store its hash, return (token, row id). The token itself is shown once."""
    token = mint_token(key, TOKEN_PREFIXES[kind])
    token_id = insert_row(db, "tokens", {
        "user_id": user_id, "kind": kind, "name": name, "scopes": ",".join(scopes), "hash": token_hash(token),
        "fingerprint": token_fingerprint(token), "created_at": now(), "expires_at": expires_at,
        "issued_by": issued_by, "grant_id": grant_id})
    return token, token_id


def genuine_mac(key, token, prefix):
    """Does ``token`` carry a valid MAC for ``prefix``? (Forged and altered tokens do not.)"""
    m = TOKEN_RE.match(token)
    return bool(m) and m.group(1) == prefix and hmac.compare_digest(token_mac(key, prefix, m.group(2)), m.group(3))


def verify_token(store, key, token):
    """The token's row when it is genuine and live, else None."""
    digest = token_hash(token)
    row = store.cached(("token", digest), lambda: genuine_token_row(store, key, token, digest))
    if row is None or (row["expires_at"] and row["expires_at"] <= now()):
        return None
    return row


def genuine_token_row(store, key, token, digest):
    """The stored row of a token whose MAC is right; None for forged, altered, unknown or revoked ones."""
    prefix = token.partition("_")[0]
    if prefix not in TOKEN_PREFIXES.values() or not genuine_mac(key, token, prefix):
        return None
    # The lookup is by sha256 of a MAC-checked value, so a timing side channel on the index reveals
    # nothing an attacker could not compute alone.
    row = store.one("SELECT * FROM tokens WHERE hash = ?", digest)
    if row is None or row["revoked_at"] or TOKEN_PREFIXES[row["kind"]] != prefix:
        return None
    return row


@dataclasses.dataclass
class Principal:
    """Who acts, with which token, from where. Anonymous is a principal too (user None)."""
    user: object = None                 # accounts row
    token_id: int = None
    token_kind: str = None
    fingerprint: str = None
    scopes: frozenset = frozenset()     # as granted, with implied scopes added (expand_scopes)
    scopes_header: str = ""             # as granted, for X-OAuth-Scopes
    runtime: str = ""                   # client address; the authenticator's provider:subject if one vouched
    delegator: str = None               # an agent's bound human
    delegator_suspended: bool = False   # then the agent may work on its own repositories only
    switched_by: str = None             # a switch-session token: the human acting as the agent
    grant: dict = None                  # a task token: its grant (public_id, task, resources, actions, constraints)
    operator: bool = False              # the CLI: whoever can read the data directory
    stepped_up_at: str = None           # when the holder last confirmed a TOTP code (step-up, RFC 9470)

    @property
    def login(self):
        return self.user["login"] if self.user is not None else None

    @property
    def kind(self):
        if self.user is not None:
            return self.user["kind"]
        return "operator" if self.operator else "anonymous"


def credentials_from_header(value):
    """The token in an Authorization header: 'token X', 'Bearer X', or Basic with the token as password
    (or as username, as some clients send it with an empty or 'x-oauth-basic' password)."""
    scheme, _, rest = (value or "").strip().partition(" ")
    scheme, rest = scheme.lower(), rest.strip()
    if scheme in ("token", "bearer"):
        return rest
    if scheme == "basic":
        try:
            user, _, password = base64.b64decode(rest, validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return ""
        return password if password not in ("", "x-oauth-basic") else user
    return ""


def authenticate(app, headers, client_address, peer_cert=None):
    """Build the Principal for a request; raise 401 'Bad credentials' for any token that is not live.

    An embedding program's authenticator runs first and wins: it vouches for a human identity
    (provider, subject, login, name, email), which is mapped to a local human account, created on
    first sight. It cannot vouch for agents: agents always present their own credentials.
    """
    runtime = client_address
    if app.authenticator is not None:
        identity = app.authenticator({"headers": dict(headers.items()), "client_address": client_address,
                                      "peer_cert": peer_cert})
        if identity:
            user = human_for_identity(app, identity)
            return Principal(user=user, scopes=expand_scopes(ALL_SCOPES),
                             runtime="%s %s:%s" % (client_address, identity["provider"], identity["subject"]))
    header = headers.get("Authorization")
    if not header:
        return Principal(runtime=runtime)
    token = credentials_from_header(header)
    row = verify_token(app.store, app.key, token) if token else None
    if row is None:
        raise HTTPError(401, "Bad credentials")
    app.touch_token(row["id"])
    granted = [s for s in row["scopes"].split(",") if s]
    user = app.store.cached(("account", row["user_id"]), lambda: account_by_id(app.store, row["user_id"]))
    principal = Principal(user=user, token_id=row["id"], token_kind=row["kind"], fingerprint=row["fingerprint"],
                          scopes=expand_scopes(granted), scopes_header=", ".join(sorted(granted)), runtime=runtime)
    if user["totp_secret"]:
        principal.stepped_up_at = app.store.cached(("step-up", row["id"]), lambda: (app.store.one(
            "SELECT at FROM step_ups WHERE token_id = ?", row["id"]) or {"at": None})["at"])
    if user["kind"] == "agent":
        name_delegator(app.store, principal)
    if row["kind"] == "task":
        grant = app.store.cached(("grant", row["grant_id"]), lambda: load_grant(app.store, row["grant_id"]))
        if grant is None:
            raise HTTPError(401, "Bad credentials")
        if grant["revoked_at"] or grant["expires_at"] <= now():
            # a genuine token (its tag checks out) of a dead grant: a replay worth a row in the audit log
            principal.grant, principal.delegator = grant, grant["delegator_login"]
            app.audit(principal, "auth", Decision("deny", "use_task_token", "user:" + user["login"], [
                "task grant %s is %s" % (grant["public_id"], "revoked" if grant["revoked_at"] else "expired")]))
            raise HTTPError(401, "Bad credentials")
        # a task token's scopes are the actions it was minted for (never more than its grant gives)
        hold_task_grant(principal, grant, granted)
    if row["kind"] == "switch-session":
        switched = account_by_id(app.store, row["issued_by"]) if row["issued_by"] else None
        principal.switched_by = switched["login"] if switched else "?"
        principal.runtime = "%s switch-session:%s" % (runtime, principal.switched_by)
    return principal


def name_delegator(store, principal):
    """An agent's principal names the human it is bound to, and whether that human is suspended."""
    human = store.cached(("delegator", principal.user["id"]), lambda: store.one(
        "SELECT a.login, a.suspended_at FROM agent_bindings b JOIN accounts a ON a.id = b.human_id"
        " WHERE b.agent_id = ?", principal.user["id"]))
    if human is not None:
        principal.delegator, principal.delegator_suspended = human["login"], bool(human["suspended_at"])


def hold_task_grant(principal, grant, actions):
    """An agent's principal as the holder of a task token of ``grant`` minted for ``actions``: the
    grant narrowed to them, the grant's delegator, and for decide()'s scope checks what an agent
    token holds. authenticate() and the policy endpoint's what-if both build it so."""
    principal.grant = dict(grant, actions=grant["actions"] & set(actions))
    principal.delegator, principal.scopes = grant["delegator_login"], expand_scopes(AGENT_SCOPES)


def load_grant(store, grant_id):
    row = store.one("SELECT g.*, a.login AS delegator_login FROM task_grants g JOIN accounts a ON a.id = g.delegator_id"
                    " WHERE g.id = ?", grant_id)
    if row is None:
        return None
    return dict(row, resources=set(json.loads(row["resources"])), actions=set(json.loads(row["actions"])),
                constraints=json.loads(row["constraints"]))


def human_for_identity(app, identity):
    provider, subject = str(identity["provider"]), str(identity["subject"])
    user = app.store.one("SELECT * FROM accounts WHERE idp_provider = ? AND idp_subject = ?", provider, subject)
    if user is not None:
        return user
    wanted = re.sub(r"[^A-Za-z0-9-]", "-", str(identity.get("login") or subject)).strip("-")[:30] or "user"
    login = wanted
    while account_by_login(app.store, login) or not LOGIN_RE.match(login):
        login = "%s-%s" % (wanted, secrets.token_hex(2))
    with app.store.transaction() as db:
        user_id = insert_account(db, login, "human", name=identity.get("name"), email=identity.get("email"),
                                 idp_provider=provider, idp_subject=subject)
    return account_by_id(app.store, user_id)


# ════════════════════════════════════════════════════════════════════════════════════════════════
# 5. Policy
# ════════════════════════════════════════════════════════════════════════════════════════════════
# decide() is the only place that says yes or no. Endpoints name an action from ACTIONS and a
# resource; decide() answers with a Decision that carries its reasons, which become the audit row
# and the error message.

LEVELS = ("none", "read", "triage", "write", "maintain", "admin")
RANK = {name: i for i, name in enumerate(LEVELS)}
# GitHub's API spells permissions two ways; collaborators and teams take either.
PERMISSION_ALIASES = {"pull": "read", "push": "write", "read": "read", "triage": "triage", "write": "write",
                      "maintain": "maintain", "admin": "admin"}


@dataclasses.dataclass(frozen=True)
class Action:
    on: str                  # the resource kind it applies to: repo, account, org, team, site
    needs: str               # the permission level the principal must hold on that resource
    scope: str = None        # the token scope it needs (for repositories: see scope_needed)
    mutation: bool = True    # mutations are audited whether allowed or denied; reads only when denied
    humans_only: bool = False
    authors_need: str = None  # what the author of the thing acted on needs instead (editing one's own)
    anonymous: bool = False  # may an anonymous caller do it at all (reads decide by permission alone)
    token_kinds: tuple = None  # only with these kinds of token (consent takes the agent's own)
    sensitive: bool = False  # a read audited even when allowed, which a task grant must name itself


# The action vocabulary. Accounts: self and org admins hold admin; org members hold write (they may
# create repositories in the org). Site: site admins hold admin, every signed-in account read.
ACTIONS = {
    "read_code":          Action("repo", "read", mutation=False),
    "create_branch":      Action("repo", "write"),
    "push_branch":        Action("repo", "write"),
    "delete_branch":      Action("repo", "write"),
    "admin_repo":         Action("repo", "admin"),
    "delete_repo":        Action("repo", "admin", scope="delete_repo"),
    "read_collaborators": Action("repo", "write", mutation=False),
    "open_issue":         Action("repo", "read"),
    "edit_issue":         Action("repo", "triage", authors_need="read"),
    "triage_issue":       Action("repo", "triage"),
    "comment":            Action("repo", "read"),
    "edit_comment":       Action("repo", "triage", authors_need="read"),
    "manage_labels":      Action("repo", "write"),
    "open_pr":            Action("repo", "read"),
    "review_pr":          Action("repo", "read"),
    "merge_pr":           Action("repo", "write"),
    "write_status":       Action("repo", "write"),
    "write_objects":      Action("repo", "write"),
    "write_release":      Action("repo", "write"),
    "run_workflow":       Action("repo", "write", scope="workflow"),
    "read_secret":        Action("repo", "write", scope="repo", mutation=False, sensitive=True),
    "write_secret":       Action("repo", "write", scope="repo"),
    "read_variables":     Action("repo", "write", scope="repo", mutation=False),
    "write_variables":    Action("repo", "write", scope="repo"),
    "freeze_repo":        Action("repo", "admin", humans_only=True),
    "read_meta":          Action("site", "none", mutation=False),
    "read_account":       Action("account", "none", mutation=False),
    "create_repo":        Action("account", "write", scope="repo"),
    "issue_token":        Action("account", "admin", humans_only=True),
    "revoke_token":       Action("account", "admin"),
    "read_tokens":        Action("account", "admin", mutation=False, humans_only=True),
    "read_audit":         Action("account", "admin", mutation=False),
    "read_org":           Action("org", "none", mutation=False),
    "read_org_private":   Action("org", "read", scope="read:org", mutation=False),
    "manage_org":         Action("org", "admin", scope="admin:org"),
    "freeze_org":         Action("org", "admin", scope="admin:org", humans_only=True),
    "read_team":          Action("team", "read", scope="read:org", mutation=False),
    "manage_team":        Action("team", "admin", scope="admin:org"),
    "register_agent":     Action("site", "none", anonymous=True),
    "delegate_access":    Action("repo", "admin", mutation=False),
    "delegate_team":      Action("team", "admin", mutation=False),
    "create_invite":      Action("site", "read", humans_only=True),
    "approve_device":     Action("site", "read", humans_only=True),
    "register_app":       Action("account", "admin", humans_only=True),
    "bind_agent":         Action("account", "admin", token_kinds=("agent",)),
    "refresh_session":    Action("account", "admin", token_kinds=("switch-session",)),
    "manage_agent":       Action("account", "admin", humans_only=True),
    "read_agent":         Action("account", "admin", mutation=False, humans_only=True),
    "revoke_tokens":      Action("account", "admin", humans_only=True),
    "grant_task":         Action("account", "admin", humans_only=True),
    "mint_task_token":    Action("account", "admin", token_kinds=("agent",)),
    "create_org":         Action("site", "read", scope="admin:org", humans_only=True),
    "read_site_audit":    Action("site", "admin", mutation=False),
    "suspend_user":       Action("site", "admin", scope="site_admin"),
}
REF_ACTIONS = ("create_branch", "push_branch", "delete_branch")
# A freeze refuses every change but a thaw (a frozen repository is not deleted either); an archived
# repository still lets its admins unarchive or delete it, as on GitHub.
FREEZE_ACTIONS = ("freeze_repo", "freeze_org")
ARCHIVED_EXEMPT = ("admin_repo", "delete_repo")


@dataclasses.dataclass
class Resource:
    kind: str                # repo, account, org, team, site
    row: object = None       # the repos / accounts / teams row (repos rows carry owner_login, owner_kind)
    name: str = ""           # how audit rows and messages name it: repo:alice/demo, user:bob, team:acme/bots

    @staticmethod
    def repo(row):
        return Resource("repo", row, "repo:%s/%s" % (row["owner_login"], row["name"]))

    @staticmethod
    def account(row):
        return Resource("org" if row["kind"] == "org" else "account", row, "%s:%s" % (
            "org" if row["kind"] == "org" else "user", row["login"]))

    @staticmethod
    def team(row, org_login):
        return Resource("team", row, "team:%s/%s" % (org_login, row["slug"]))


SITE = Resource("site", None, "site")


@dataclasses.dataclass
class Decision:
    effect: str              # "allow", "deny", or why not: "needs_approval", "read_only", "needs_review"
    action: str
    resource: str
    reasons: list
    hidden: bool = False     # the principal may not know the resource exists: answer 404
    scope: str = None        # the scope that was missing, for X-Accepted-OAuth-Scopes
    level: str = "none"      # the permission the principal holds on the resource
    ff_only: bool = False    # allowed for fast-forwards only (a protected branch): the Git engine checks
    status: int = None       # the HTTP status a refusal takes where GitHub uses a special one
    approval: int = None     # allowed on the strength of this approval, which the action uses up
    subject: str = ""        # needs_approval: exactly what a human is asked to approve

    @property
    def allowed(self):
        return self.effect == "allow"


def repo_permission(store, user, repo):
    """(level, how) that ``user`` holds on the repository: the highest of owner, site admin, org role,
    org base permission, team grants, collaborator grants and, for a private fork of a private
    repository, what the user holds upstream (up to write); public repositories are readable by all;
    a private fork whose owner lost access to its private parent, by no one but site admins."""
    return store.cached(("permission", user["id"] if user is not None else None, repo["id"]),
                        lambda: compute_repo_permission(store, user, repo))


def compute_repo_permission(store, user, repo):
    upstream = private_upstream(store, repo)
    # GitHub deletes a user's private fork when the user loses its private upstream; here nobody but a
    # site admin reaches it, so that taking access away (a collaborator removed, an agent unbound)
    # takes the copies of the code away too
    if upstream is not None and repo["owner_kind"] != "org" and not (user is not None and user["site_admin"]) \
            and RANK[repo_permission(store, account_by_id(store, repo["owner_id"]), upstream)[0]] < RANK["read"]:
        return "none", "a private fork whose owner can no longer read %s" % full_name(upstream)
    best, how = ("read", "public repository") if not repo["private"] else ("none", "private repository")

    def consider(level, source):
        nonlocal best, how
        # an explicit grant names the source even where a public repository gives as much
        if RANK[level] > RANK[best] or (RANK[level] == RANK[best] and how == "public repository"):
            best, how = level, source

    if user is None:
        return best, how
    if user["site_admin"]:
        consider("admin", "site admin")
    if repo["owner_id"] == user["id"]:
        consider("admin", "owner")
    if upstream is not None:
        # GitHub: a private fork inherits its upstream's permissions, so the upstream's people keep
        # control of their code; up to write here, for admin over another's repository is its owner's
        inherited = repo_permission(store, user, upstream)[0]
        consider(LEVELS[min(RANK[inherited], RANK["write"])], "upstream %s" % full_name(upstream))
    if repo["owner_kind"] == "org":
        org = store.one("SELECT m.role, a.base_permission FROM org_members m JOIN accounts a ON a.id = m.org_id"
                        " WHERE m.org_id = ? AND m.user_id = ?", repo["owner_id"], user["id"])
        if org is not None:
            consider("admin" if org["role"] == "admin" else org["base_permission"],
                     "org %s %s" % (repo["owner_login"], org["role"]))
        for team in store.all("SELECT t.slug, tr.permission FROM team_repos tr JOIN teams t ON t.id = tr.team_id"
                              " JOIN team_members tm ON tm.team_id = t.id WHERE tr.repo_id = ? AND tm.user_id = ?",
                              repo["id"], user["id"]):
            consider(team["permission"], "team %s" % team["slug"])
    collab = store.one("SELECT permission FROM collaborators WHERE repo_id = ? AND user_id = ?", repo["id"], user["id"])
    if collab is not None:
        consider(collab["permission"], "collaborator")
    return best, how


def private_upstream(store, repo):
    """A private fork's parent when that is private too: the fork inherits its permissions, and is out
    of reach once its owner cannot read it."""
    if not repo["private"] or repo["parent_id"] is None:
        return None
    parent = repo_by_id(store, repo["parent_id"])
    return parent if parent is not None and parent["private"] else None


def permission_on(store, user, resource):
    """(level, how) for any resource kind."""
    if resource.kind == "repo":
        return repo_permission(store, user, resource.row)
    if user is None:
        return "none", "anonymous"
    if user["site_admin"]:
        return "admin", "site admin"
    if resource.kind == "site":
        return "read", "signed in"
    if resource.kind == "account":
        if resource.row["id"] == user["id"]:
            return "admin", "self"
        if resource.row["kind"] == "agent":
            binding = store.cached(("binding", resource.row["id"]), lambda: store.one(
                "SELECT human_id FROM agent_bindings WHERE agent_id = ?", resource.row["id"]))
            if binding is not None and binding["human_id"] == user["id"]:
                return "admin", "bound human"
        return "none", "another account"
    org_id = resource.row["org_id"] if resource.kind == "team" else resource.row["id"]
    role = permission_of_org_member(store, org_id, user["id"])
    if resource.kind == "team":
        if role == "admin":
            return "admin", "org admin"
        member = store.one("SELECT role FROM team_members WHERE team_id = ? AND user_id = ?",
                           resource.row["id"], user["id"])
        if member is not None:
            return ("admin", "team maintainer") if member["role"] == "maintainer" else ("read", "team member")
        # Visible ('closed') teams can be seen by every org member; secret ones only by their members.
        if role and resource.row["privacy"] == "closed":
            return "read", "org member"
        return "none", "not a member"
    return {"admin": ("admin", "org admin"), "member": ("write", "org member")}.get(role, ("none", "not a member"))


def scope_needed(action, spec, resource):
    """GitHub's rule for repositories: private ones need 'repo'; public ones need 'public_repo' to change."""
    if spec.scope or resource.kind != "repo":
        return spec.scope
    if resource.row["private"]:
        return "repo"
    return "public_repo" if spec.mutation else None


def branch_protection(store, repo_id, branch):
    return store.cached(("protection", repo_id, branch), lambda: store.one(
        "SELECT * FROM branch_protections WHERE repo_id = ? AND branch = ?", repo_id, branch))


def unmet_protection(store, rule, action, context, agent=False):
    """What a protected branch rule still asks for before ``action`` may happen, or None. An agent
    pushes to it not at all, and merges into it only with a human's approving review."""
    if action == "delete_branch":
        return None if rule["allow_deletions"] and not agent else "deletions are not allowed"
    checks = json.loads(rule["required_checks"]) if rule["required_checks"] else []
    if agent and action in ("create_branch", "push_branch"):
        return "an agent's changes must arrive through a pull request with a human's approving review"
    if action in ("create_branch", "push_branch"):
        if rule["required_approvals"] is not None:
            return "changes must arrive through a pull request with %d approving review%s" % (
                rule["required_approvals"], "" if rule["required_approvals"] == 1 else "s")
        if checks:
            return "changes must arrive through a pull request whose status checks pass (%s)" % ", ".join(checks)
        return None
    # merge_pr: the pull request's reviews and its head commit's checks
    head_sha = context["head_sha"]
    approvals, human_approvals, blockers = 0, 0, []
    for review in latest_reviews(store, context["pull_issue_id"], context["repo"]).values():
        if review["state"] == "APPROVED" and (not rule["dismiss_stale"] or review["commit_id"] == head_sha):
            approvals += 1
            human_approvals += review["user_kind"] == "human"
        elif review["state"] == "CHANGES_REQUESTED":
            blockers.append(review["login"])
    if blockers:
        return "changes were requested by %s" % ", ".join(sorted(blockers))
    if agent and not human_approvals:
        return "an agent's merge needs a human's approving review"
    if rule["required_approvals"] and approvals < rule["required_approvals"]:
        return "%d approving review%s required, %d given" % (rule["required_approvals"], "" if
                                                             rule["required_approvals"] == 1 else "s", approvals)
    states = check_states(store, context["repo"]["id"], head_sha)
    for check in checks:
        if states.get(check) != "success":
            return "required status check %r is %s" % (check, states.get(check, "missing"))
    return None


def latest_reviews(store, issue_id, repo):
    """{user id: review} of each reviewer's latest approval or change request, counting only
    reviewers who could push to the repository (as GitHub counts them); with their login and kind."""
    latest = {}
    for review in store.all("SELECT * FROM reviews WHERE issue_id = ? AND state != 'COMMENTED' ORDER BY id", issue_id):
        latest[review["user_id"]] = review
    counted = {}
    for user_id, review in latest.items():
        user = account_by_id(store, user_id)
        if user is not None and RANK[repo_permission(store, user, repo)[0]] >= RANK["write"]:
            counted[user_id] = dict(review, login=user["login"], user_kind=user["kind"])
    return counted


def check_states(store, repo_id, sha):
    """{context: state} of a commit: the latest status per context, and completed check runs by name."""
    states = {}
    for row in store.all("SELECT context, state FROM statuses WHERE repo_id = ? AND sha = ? ORDER BY id", repo_id, sha):
        states[row["context"]] = row["state"]
    for row in store.all("SELECT name, status, conclusion FROM check_runs WHERE repo_id = ? AND head_sha = ?"
                         " ORDER BY id", repo_id, sha):
        states[row["name"]] = row["conclusion"] if row["status"] == "completed" else "pending"
    return states


SELF_ACTIONS = ("read_account", "read_meta")       # a task token may always ask who it is


def approval_subject(action, context):
    """Exactly what a human approves, so that a yes is not spent on something else: a merge of one
    pull request at its head commit (new commits need a new yes), a workflow on a ref, a push of a ref."""
    if "pull_number" in context:
        return "pull request #%d at %s" % (context["pull_number"], context["head_sha"][:12])
    if context.get("workflow"):
        return "%s on %s" % (context["workflow"], context.get("ref"))
    return context.get("ref") or ""


def task_grant_refusal(store, grant, action, spec, resource, context, user):
    """A task token may do only what its grant names: the actions, on the resources, within the
    branch prefix; actions the grant reserves for a human's approval wait for one."""
    gid = grant["public_id"]
    deny = lambda reason, **kw: Decision("deny", action, resource.name, [reason], **kw)  # noqa: E731
    if action in SELF_ACTIONS and resource.kind in ("site", "account") and (
            resource.kind == "site" or resource.row["id"] == user["id"]):
        return None
    if resource.name not in grant["resources"]:
        return deny("task grant %s does not cover %s" % (gid, resource.name), hidden=resource.kind == "repo")
    needed = action if spec.mutation or spec.sensitive else "read_code"
    reserved = grant["constraints"].get("requires_approval", [])
    ref = context.get("ref") or ""
    if action in REF_ACTIONS and not ref and set(REF_ACTIONS) & (grant["actions"] | set(reserved)):
        return None     # git asking whether it may push at all: each ref is decided when the push names it
    if action in reserved:
        subject = approval_subject(action, context)
        approved = store.one("SELECT id FROM approvals WHERE grant_id = ? AND action = ? AND resource = ? AND"
                             " subject = ? AND approved_at IS NOT NULL AND used_at IS NULL AND expires_at > ?",
                             grant["id"], action, resource.name, subject, now())
        if approved is None:
            return Decision("needs_approval", action, resource.name, ["task grant %s: %s%s needs a human's "
                            "approval first" % (gid, action, " of " + subject if subject else "")], subject=subject)
        # not a refusal: the rest of decide() still applies, and names the approval among its reasons
        return Decision("allow", action, resource.name, [], approval=approved["id"])
    if needed not in grant["actions"]:
        if spec.mutation and not any(ACTIONS[a].mutation for a in grant["actions"]):
            return Decision("read_only", action, resource.name,
                            ["task grant %s is read-only: it allows no %s" % (gid, action)])
        return deny("task grant %s does not allow %s" % (gid, needed))
    prefix = grant["constraints"].get("branch_prefix")
    if prefix and action in REF_ACTIONS and not ref.startswith("refs/heads/" + prefix):
        return deny("task grant %s allows pushes to branches under %s only, not %s" % (gid, prefix, ref))
    return None


def freeze_of(store, resource):
    """The freeze that holds a repository, an organization or a team (its own or its organization's)."""
    if resource.kind == "repo":
        where, ids = "f.repo_id = ? OR f.org_id = ?", (resource.row["id"], resource.row["owner_id"])
    elif resource.kind in ("org", "team"):
        where, ids = "f.org_id = ?", (resource.row["org_id" if resource.kind == "team" else "id"],)
    else:
        return None
    return store.cached(("freeze",) + ids, lambda: store.one(
        "SELECT f.*, a.login AS frozen_by_login, o.login AS org_login FROM freezes f LEFT JOIN accounts a"
        " ON a.id = f.frozen_by LEFT JOIN accounts o ON o.id = f.org_id WHERE %s ORDER BY f.repo_id IS NULL"
        " LIMIT 1" % where, *ids))


# Destructive actions and binding changes ask a human who has a second factor for a fresh code.
STEP_UP_ACTIONS = ("delete_repo", "manage_agent", "revoke_tokens")
STEP_UP_SECONDS = 600


def decide(store, principal, action, resource, context=None):
    """The one policy decision point. Rules, in order; the first that says no decides:

    1. a suspended or retired account may do nothing; an action that needs a certain kind of token
       (consent needs the agent's own) refuses others; nothing is minted or approved under a revoked
       or expired task grant, and a task token does only what its grant names (task_grant_refusal);
       an agent whose delegator is suspended works on its own repositories only;
    2. some actions are for humans only; anonymous callers may only read (and register agents);
    3. the principal's permission on the resource must reach the action's level (a repository the
       principal cannot read is hidden: 404, not 403). Authors editing what they wrote need less;
       commenting on a locked conversation needs triage;
    4. the token must carry the scope the action needs;
    5. a repository or organization frozen by policy, and an archived repository, are read-only:
       reads pass, every change is refused (read_only) but undoing that; refs/pull/ is the server's own;
    6. a protected branch takes no deletions, no direct pushes where it requires pull requests or
       status checks, no force pushes (the engine checks fast-forward once the pack is in), and no
       merges without the approvals and passing checks it requires. Admins pass unless the
       protection is enforced for admins too. Agents never pass as admins: they push to a protected
       branch not at all and merge into one only with a human's approving review (needs_review).
    """
    spec = ACTIONS[action]
    user = principal.user
    deny = lambda reason, **kw: Decision("deny", action, resource.name, [reason], **kw)  # noqa: E731
    if user is not None and user["retired_at"]:
        return deny("agent %s is retired" % user["login"])
    if user is not None and user["suspended_at"]:
        return deny("account %s is suspended" % user["login"])
    if spec.token_kinds and principal.token_kind not in spec.token_kinds:
        return deny("%s needs the %s token itself; this is a %s token" % (
            action, " or ".join(spec.token_kinds), principal.token_kind or "missing"))
    dead = (context or {}).get("grant")
    if dead is not None and (dead["revoked_at"] or dead["expires_at"] <= now()):
        return deny("task grant %s is %s" % (dead["public_id"], "revoked" if dead["revoked_at"] else "expired"))
    approval = None
    if principal.grant is not None:
        verdict = task_grant_refusal(store, principal.grant, action, spec, resource, context or {}, user)
        if verdict is not None and not verdict.allowed:
            return verdict
        approval = verdict.approval if verdict is not None else None
    if principal.delegator_suspended and not (
            resource.kind == "repo" and resource.row["owner_id"] == user["id"] or resource.kind == "account"
            and resource.row["id"] == user["id"]):
        return deny("%s's delegator %s is suspended: the agent works on its own repositories only" % (
            user["login"], principal.delegator))
    if spec.humans_only and user is not None and user["kind"] != "human":
        return deny("%s is for humans; %s is an %s" % (action, user["login"], user["kind"]))
    level, how = permission_on(store, user, resource)
    if resource.kind == "repo" and RANK[level] < RANK["read"]:
        return deny("%s cannot see %s" % (principal.login or "anonymous", resource.name), hidden=True)
    if user is None and (spec.humans_only or spec.mutation and not spec.anonymous):
        return deny("%s requires authentication" % action)
    needs = spec.needs
    if spec.authors_need and user is not None and (context or {}).get("author_id") == user["id"]:
        needs = spec.authors_need
    if (context or {}).get("locked") and action == "comment":
        needs = "triage"     # a locked conversation takes comments from triage and up only
    if RANK[level] < RANK[needs]:
        return deny("%s needs %s on %s; %s has %s (%s)" % (action, needs, resource.name,
                                                           principal.login or "anonymous", level, how),
                    hidden=resource.kind == "team" and level == "none")
    scope = scope_needed(action, spec, resource)
    if scope and principal.token_id is not None and scope not in principal.scopes:
        if resource.kind == "repo" and resource.row["private"] and "repo" not in principal.scopes:
            return deny("token lacks the 'repo' scope that private repositories need", hidden=True, scope="repo")
        return deny("token lacks the %r scope that %s needs" % (scope, action), scope=scope)
    if spec.mutation and action not in FREEZE_ACTIONS:
        freeze = freeze_of(store, resource)
        if freeze is not None:
            frozen = "org:" + freeze["org_login"] if freeze["org_id"] else resource.name
            return Decision("read_only", action, resource.name, ["%s is frozen by policy (%s, by %s: %s); reads "
                            "pass, changes wait until it is thawed" % (frozen, freeze["public_id"],
                                                                        freeze["frozen_by_login"], freeze["reason"])])
        if resource.kind == "repo" and resource.row["archived"] and action not in ARCHIVED_EXEMPT:
            return Decision("read_only", action, resource.name, ["Repository was archived so is read-only."])
    ref = (context or {}).get("ref", "")
    if action in REF_ACTIONS and ref.startswith("refs/pull/"):
        return deny("refs/pull/ is reserved for pull requests and written by the server only")
    ff_only = False
    if resource.kind == "repo" and ref.startswith("refs/heads/") and action in REF_ACTIONS + ("merge_pr",):
        rule = branch_protection(store, resource.row["id"], ref[len("refs/heads/"):])
        agent = user is not None and user["kind"] == "agent"
        # agents never pass as admins: what they change on a protected branch a human reviews first
        if rule is not None and (agent or not (level == "admin" and not rule["enforce_admins"])):
            unmet = unmet_protection(store, rule, action, context, agent)
            if unmet:
                return Decision("needs_review" if agent else "deny", action, resource.name, [
                    "protected branch %s: %s" % (rule["branch"], unmet)], status=405 if action == "merge_pr" else None)
            ff_only = action == "push_branch" and not rule["allow_force_pushes"]
    reasons = ["%s holds %s on %s (%s)" % (principal.login or "anonymous", level, resource.name, how)]
    if context and context.get("ref"):
        reasons.append("ref %s" % context["ref"])
    if ff_only:
        reasons.append("protected branch: fast-forwards only")
    if approval is not None:
        reasons.append("approved by a human (approval %d)" % approval)
    if action in STEP_UP_ACTIONS and user["totp_secret"] and (principal.stepped_up_at or "") < later(-STEP_UP_SECONDS):
        return Decision("needs_step_up", action, resource.name, [
            "%s needs a TOTP code confirmed in the last %d minutes: POST /api/ext/v1/step-up {\"otp\": ...}" % (
                action, STEP_UP_SECONDS // 60)])
    return Decision("allow", action, resource.name, reasons, level=level, ff_only=ff_only, approval=approval)


# ════════════════════════════════════════════════════════════════════════════════════════════════
# 6. Audit
# ════════════════════════════════════════════════════════════════════════════════════════════════
# Each row's hash is an HMAC (server key) over the previous row's hash and its own fields, so editing
# or deleting a row, or re-hashing the chain without the key, is caught by ``audit verify``.

AUDIT_FIELDS = ("at", "actor", "user_kind", "delegator", "task", "grant_id", "runtime", "token_fingerprint",
                "surface", "action", "resource", "decision", "reasons", "side_effect")
GENESIS_HASH = "0" * 64


def audit_hash(key, prev_hash, row):
    payload = prev_hash + json.dumps([row.get(f) for f in AUDIT_FIELDS], separators=(",", ":"))
    return hmac.new(key, payload.encode(), hashlib.sha256).hexdigest()


def audit_append(db, key, principal, surface, decision, side_effect=None):
    """Append one row; call inside a transaction (BEGIN IMMEDIATE keeps the chain's tip stable)."""
    row = {"at": now(), "actor": principal.login, "user_kind": principal.kind, "delegator": principal.delegator,
           "task": principal.grant["task"] if principal.grant else None,
           "grant_id": principal.grant["public_id"] if principal.grant else None, "runtime": principal.runtime,
           "token_fingerprint": principal.fingerprint, "surface": surface, "action": decision.action,
           "resource": decision.resource, "decision": decision.effect,
           "reasons": json.dumps(decision.reasons), "side_effect": side_effect}
    tip = db.execute("SELECT hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
    row["prev_hash"] = tip["hash"] if tip else GENESIS_HASH
    row["hash"] = audit_hash(key, row["prev_hash"], row)
    return insert_row(db, "audit", row)


def audit_verify(store, key):
    """(ok, rows checked, first broken row id or None, what is wrong)."""
    prev, count = GENESIS_HASH, 0
    expected_id = None
    for row in store.db.execute("SELECT * FROM audit ORDER BY id"):
        count += 1
        row = dict(row)
        if expected_id is not None and row["id"] != expected_id:
            return False, count, row["id"], "row %d is missing" % expected_id
        if row["prev_hash"] != prev:
            return False, count, row["id"], "prev_hash does not match the row before"
        if not hmac.compare_digest(audit_hash(key, prev, row), row["hash"]):
            return False, count, row["id"], "row contents do not match its hash"
        prev, expected_id = row["hash"], row["id"] + 1
    return True, count, None, ""


def audit_json(row):
    out = {f: row[f] for f in ("id",) + AUDIT_FIELDS + ("prev_hash", "hash")}
    out["reasons"] = json.loads(row["reasons"])
    return out


# ════════════════════════════════════════════════════════════════════════════════════════════════
# 7. Git storage
# ════════════════════════════════════════════════════════════════════════════════════════════════
# Bare repositories live at <data>/repos/<repo id>.git: a rename or transfer is a row update, and no
# user-chosen name ever becomes a path. dulwich is the object library (initial commits, refs, commit
# walks); Git Smart HTTP (section 10) serves packs through the git binary when there is one.

ZERO_SHA = "0" * 40


def repo_dir(app, repo_id):
    return os.path.join(app.repos_dir, "%d.git" % repo_id)


def init_repository(path, default_branch, initial=None):
    """A bare repository at ``path`` whose HEAD names ``default_branch``. ``initial`` =
    (author login, author email, repository name) adds a first commit holding README.md."""
    repo = Repo.init_bare(path, mkdir=not os.path.exists(path))
    try:
        repo.refs.set_symbolic_ref(b"HEAD", b"refs/heads/" + default_branch.encode())
        if initial:
            login, email, name = initial
            blob = Blob.from_string(("# %s\n" % name).encode())
            tree = Tree()
            tree.add(b"README.md", 0o100644, blob.id)
            commit = Commit()
            commit.tree = tree.id
            commit.author = commit.committer = ("%s <%s>" % (login, email)).encode()
            commit.author_time = commit.commit_time = int(time.time())
            commit.author_timezone = commit.commit_timezone = 0
            commit.message = b"Initial commit\n"
            for obj in (blob, tree, commit):
                repo.object_store.add_object(obj)
            repo.refs[b"refs/heads/" + default_branch.encode()] = commit.id
    finally:
        repo.close()


@contextlib.contextmanager
def open_repo(app, repo_id):
    """A fresh dulwich Repo per use: dulwich's Repo caches pack lists that go stale across pushes."""
    repo = Repo(repo_dir(app, repo_id))
    try:
        yield repo
    finally:
        repo.close()


def copy_refs(app, source_path, target_path, refs):
    """Point each of ``refs`` ({target ref: source ref}) in the target repository at what the source
    ref holds, bringing over the objects it lacks (a target of None: the objects only), through `git
    fetch` when git is the engine (as fast as a local clone), else through dulwich."""
    if not refs:
        return
    if app.git_engine.name == "git":
        subprocess.run([app.git_engine.git, "--git-dir", target_path, "fetch", "--quiet", "--no-tags", source_path]
                       + ["+%s:%s" % (source, target) if target else source for target, source in refs.items()],
                       check=True, capture_output=True, stdin=subprocess.DEVNULL)
        return
    with contextlib.closing(Repo(source_path)) as source, contextlib.closing(Repo(target_path)) as target:
        wanted = {target_ref: source.refs[source_ref.encode()] for target_ref, source_ref in refs.items()}
        source.fetch(target, determine_wants=lambda remote_refs, depth=None: [
            sha for sha in set(wanted.values()) if sha not in target.object_store])
        for ref, sha in wanted.items():
            if ref:
                target.refs[ref.encode()] = sha


def branch_sha(git, branch):
    ref = b"refs/heads/" + branch.encode()
    return git.refs[ref].decode() if ref in git.refs else None


def list_refs(repo, prefix):
    """{full ref name: sha} under ``prefix`` (e.g. 'refs/heads/'), sorted by name."""
    refs = repo.refs.as_dict(prefix.encode())
    return {prefix + name.decode(): sha.decode() for name, sha in sorted(refs.items())}


def resolve_commit(repo, ref):
    """The commit sha that a branch, tag, full ref or (abbreviated) sha names, or None; a trailing
    ~N or ^ walks first parents (main~2)."""
    m = re.fullmatch(r"(.+?)((?:~\d*|\^)+)", ref)
    if m:
        sha = resolve_commit(repo, m.group(1))
        for step in re.findall(r"~\d*|\^", m.group(2)):
            for _ in range(int(step[1:] or 1) if step[0] == "~" else 1):
                parents = repo[sha.encode()].parents if sha else []
                sha = parents[0].decode() if parents else None
        return sha
    ref_b = ref.encode()
    for candidate in (ref_b, b"refs/heads/" + ref_b, b"refs/tags/" + ref_b):
        if candidate.startswith(b"refs/") and candidate in repo.refs:
            sha = repo.refs[candidate]
            obj = repo[sha]
            while obj.type_name == b"tag":       # peel annotated tags
                obj = repo[obj.object[1]]
            return obj.id.decode() if obj.type_name == b"commit" else None
    if re.fullmatch(r"[0-9a-f]{4,40}", ref):
        matches = _expand_sha(repo, ref)
        if len(matches) == 1 and repo[matches[0]].type_name == b"commit":
            return matches[0].decode()
    return None


def _expand_sha(repo, prefix):
    if len(prefix) == 40:
        return [prefix.encode()] if prefix.encode() in repo.object_store else []
    return list(repo.object_store.iter_prefix(prefix.encode()))

def commits_between(repo, base_sha, head_sha):
    """Commits reachable from head but not from base, oldest first (what a pull request brings)."""
    walker = repo.get_walker(include=[head_sha.encode()], exclude=[base_sha.encode()] if base_sha else [])
    return [entry.commit for entry in walker][::-1]


def merge_base(repo, a, b):
    bases = find_merge_base(repo, [a.encode(), b.encode()])
    return bases[0].decode() if bases else None


def merge_trees(repo, base_sha, ours_sha, theirs_sha):
    """Three-way content merge of two commits over their base: (tree id, conflicted paths)."""
    from dulwich.merge import three_way_merge   # here, not at start: it pulls in merge3 and costs start-up time
    base = repo[base_sha.encode()] if base_sha else None
    tree, conflicts = three_way_merge(repo.object_store, base, repo[ours_sha.encode()], repo[theirs_sha.encode()])
    repo.object_store.add_object(tree)
    return tree.id.decode(), [c.decode("utf-8", "replace") for c in conflicts]


def merge_commit(repo, common, ours, theirs, who, message):
    """``theirs`` merged into ``ours`` over their common ancestor as a commit by ``who`` ('Name <email>'),
    no ref moved: (its sha, []), or (None, the conflicted paths)."""
    tree, conflicts = merge_trees(repo, common, ours, theirs)
    if conflicts:
        return None, conflicts
    return write_commit(repo, tree, [ours, theirs], who, who, message), []


def write_commit(repo, tree, parents, author, committer, message, author_time=None, author_tz=0):
    """A new commit object (no ref moves); ``author``/``committer`` are 'Name <email>'."""
    commit = Commit()
    commit.tree = tree.encode()
    commit.parents = [p.encode() for p in parents]
    commit.author, commit.committer = author.encode(), committer.encode()
    commit.commit_time = int(time.time())
    commit.author_time = author_time if author_time is not None else commit.commit_time
    commit.author_timezone, commit.commit_timezone = author_tz, 0
    commit.message = message.encode() if message.endswith("\n") else (message + "\n").encode()
    repo.object_store.add_object(commit)
    return commit.id.decode()


def tree_diff(repo, old_tree, new_tree):
    """A git-style unified diff of two trees, as bytes."""
    out = io.BytesIO()
    write_tree_diff(out, repo.object_store, old_tree.encode() if old_tree else None, new_tree.encode())
    return out.getvalue()


def changed_files(repo, old_tree, new_tree):
    """[(path, status, additions, deletions, new blob sha, patch text)] between two trees."""
    out = []
    for change in repo.object_store.tree_changes(old_tree.encode() if old_tree else None, new_tree.encode()):
        (old_path, new_path), _, (old_sha, new_sha) = change
        status = "added" if old_path is None else "removed" if new_path is None else (
            "renamed" if old_path != new_path else "modified")
        buf = io.BytesIO()
        write_object_diff(buf, repo.object_store, (old_path, change[1][0], old_sha), (new_path, change[1][1], new_sha))
        lines = buf.getvalue().decode("utf-8", "replace").split("\n")
        hunks = lines[next((i for i, l in enumerate(lines) if l.startswith("@@")), len(lines)):]
        additions = sum(1 for l in hunks if l.startswith("+"))
        deletions = sum(1 for l in hunks if l.startswith("-"))
        out.append(((new_path or old_path).decode("utf-8", "replace"), status, additions, deletions,
                    (new_sha or old_sha).decode(), "\n".join(hunks).rstrip("\n")))
    return out


def walk_commits(repo, sha, skip, limit):
    """Commits reachable from ``sha``, newest first, as dulwich Commit objects."""
    walker = repo.get_walker(include=[sha.encode()], max_entries=skip + limit)
    return [entry.commit for entry in walker][skip:]


# ════════════════════════════════════════════════════════════════════════════════════════════════
# 8. HTTP plumbing
# ════════════════════════════════════════════════════════════════════════════════════════════════

class HTTPError(Exception):
    """An answer in GitHub's error shape: {"message", "documentation_url"[, "errors"]}."""

    def __init__(self, status, message, errors=None, headers=None, extra=None, page=None):
        super().__init__(message)
        self.status, self.message, self.errors, self.headers = status, message, errors, headers or {}
        self.extra = extra or {}
        self.page = page        # on web pages: HTML to show instead of the bare message

    def body(self):
        body = dict(self.extra, message=self.message, documentation_url=DOCS_URL)
        if self.errors:
            body["errors"] = self.errors
        return body


def invalid(resource, field, code="invalid", message=None):
    """422 Validation Failed naming the field, as GitHub answers bad input."""
    error = {"resource": resource, "field": field, "code": code}
    if message:
        error["message"] = message
    return HTTPError(422, "Validation Failed", errors=[error])


class BodyReader:
    """A request body as a stream: Content-Length or chunked transfer coding, at most ``limit`` bytes."""

    def __init__(self, rfile, headers, limit):
        self.rfile, self.limit, self.total = rfile, limit, 0
        self.chunked = "chunked" in (headers.get("Transfer-Encoding") or "").lower()
        self.chunk_left, self.done = 0, False
        if not self.chunked:
            length = headers.get("Content-Length") or "0"
            if not length.isdigit():
                raise HTTPError(400, "Content-Length is not a number")
            self.remaining = int(length)
            if self.remaining > limit:
                raise HTTPError(413, "Request body is larger than %d bytes" % limit)
            self.done = self.remaining == 0

    def read(self, size=65536):
        if self.done:
            return b""
        if not self.chunked:
            data = self.rfile.read(min(size, self.remaining))
            if not data:
                raise ConnectionError("client closed the connection mid-body")
            self.remaining -= len(data)
            self.done = self.remaining == 0
            return data
        if self.chunk_left == 0:
            line = self.rfile.readline(1024)
            try:
                self.chunk_left = int(line.split(b";")[0].strip(), 16)
            except ValueError:
                raise HTTPError(400, "Malformed chunked request body")
            if self.chunk_left == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                self.done = True
                return b""
        data = self.rfile.read(min(size, self.chunk_left))
        if not data:
            raise ConnectionError("client closed the connection mid-chunk")
        self.chunk_left -= len(data)
        self.total += len(data)
        if self.total > self.limit:
            raise HTTPError(413, "Request body is larger than %d bytes" % self.limit)
        if self.chunk_left == 0:
            self.rfile.readline(16)
        return data

    def read_all(self):
        parts = []
        while True:
            data = self.read()
            if not data:
                return b"".join(parts)
            parts.append(data)


class GunzipReader:
    """Decodes a gzip Content-Encoding on the fly, refusing to inflate past ``limit`` bytes."""

    def __init__(self, raw, limit):
        self.raw, self.limit, self.total = raw, limit, 0
        self.inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)

    def read(self, size=65536):
        while True:
            if self.inflater.unconsumed_tail:
                data = self.inflater.decompress(self.inflater.unconsumed_tail, size)
            else:
                chunk = self.raw.read(size)
                if not chunk:
                    return self.inflater.flush()
                try:
                    data = self.inflater.decompress(chunk, size)
                except zlib.error:
                    raise HTTPError(400, "Request body is not valid gzip")
            self.total += len(data)
            if self.total > self.limit:
                raise HTTPError(413, "Decompressed request body is larger than %d bytes" % self.limit)
            if data:
                return data


ROUTES = collections.defaultdict(list)   # method -> [(segments, handler, order)], declared with @route
SEGMENT_RE = re.compile(r"^\{(\w+)(?::(int|path))?\}$")


def route(method, pattern):
    """Register a handler. ``{name}`` matches one path segment, ``{name:int}`` a number, ``{name:path}``
    one or more segments (``/branches/{branch:path}/protection`` takes ``a/b`` for the branch).
    Templates are matched segment by segment, not as regular expressions: nothing to compile at start."""
    segments = []
    for part in pattern.strip("/").split("/"):
        m = SEGMENT_RE.match(part)
        segments.append((m.group(2) or "one", m.group(1)) if m else ("literal", part))

    def register(handler):
        # {name:path} routes are tried after all others, longest first, so /branches/{b}/protection is not
        # taken for a branch named "x/protection"
        greedy = any(kind == "path" for kind, _ in segments)
        ROUTES[method].append((segments, handler, (greedy, -len(pattern) if greedy else 0)))
        ROUTES[method].sort(key=lambda r: r[2])
        return handler
    return register


def match_segments(segments, parts):
    """{name: value} when the path's segments fit the template, else None."""
    greedy = next((i for i, (kind, _) in enumerate(segments) if kind == "path"), None)
    if greedy is None:
        if len(parts) != len(segments):
            return None
        pairs = list(zip(segments, parts))
    else:
        tail = len(segments) - greedy - 1
        if len(parts) < len(segments):
            return None
        middle = "/".join(parts[greedy:len(parts) - tail])
        pairs = list(zip(segments[:greedy], parts)) + [(segments[greedy], middle)] + list(
            zip(segments[greedy + 1:], parts[len(parts) - tail:]))
    params = {}
    for (kind, value), part in pairs:
        if kind == "literal":
            if part != value:
                return None
        elif not part or kind == "int" and not (part.isdigit() and len(part) <= 12):
            return None
        else:
            params[value] = urllib.parse.unquote(part)
    return params


class Request:
    """One HTTP request on its way through authenticate → route → authorize → act → audit → respond."""

    def __init__(self, app, handler):
        self.app, self.handler = app, handler
        split = urllib.parse.urlsplit(handler.path)
        self.raw_path = split.path
        self.query = {k: v[-1] for k, v in urllib.parse.parse_qs(split.query, keep_blank_values=True).items()}
        self.headers = handler.headers
        self.method = handler.command
        # the peer's address; a Unix socket has none (gh's http_unix_socket setting connects that way)
        self.client = handler.client_address[0] if isinstance(handler.client_address, tuple) else "unix-socket"
        self.surface = "rest"
        self.principal = None
        self.response_headers = {}
        self.pending = []          # allowed mutations waiting for their audit row
        self.form = {}             # a web page's form fields, once read
        self.effects = []          # what the mutations did, for those rows
        self.body_reader = None
        self.level = "none"        # the caller's permission on the resource last found (find_repo)
        self.session = None        # web pages: the signed-in session row
        self.audit_id = None       # the last audit row this request wrote (X-Agentgit-Audit-Id)

    # -- input ----------------------------------------------------------------------------------
    def body(self, limit):
        if self.body_reader is None:
            self.body_reader = BodyReader(self.handler.rfile, self.headers, limit)
        return self.body_reader

    def json(self, array_key=None):
        """The JSON object sent as the body ({} for none); 400 for anything that is not one. Where GitHub
        also takes a bare array (issue labels), ``array_key`` names the key it stands for."""
        raw = self.body(MAX_JSON_BODY).read_all()
        if not raw.strip():
            return {}
        try:
            value = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise HTTPError(400, "Problems parsing JSON")
        if isinstance(value, list) and array_key:
            return {array_key: value}
        if not isinstance(value, dict):
            raise HTTPError(400, "Problems parsing JSON: the body must be a JSON object")
        return value

    def field(self, body, name, kind, resource, required=False, default=None):
        """body[name] checked for type: 422 'missing_field' or 'invalid' naming the field."""
        if name not in body or body[name] is None:
            if required:
                raise invalid(resource, name, "missing_field")
            return default
        value = body[name]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise invalid(resource, name, message="%s must be %s" % (name, {str: "a string", bool: "a boolean",
                                                                              int: "an integer", list: "an array",
                                                                              dict: "an object"}[kind]))
        return value

    def page(self):
        """(per_page, page) from the query, within GitHub's bounds."""
        try:
            per_page = min(max(int(self.query.get("per_page", PER_PAGE_DEFAULT)), 1), PER_PAGE_MAX)
            page = max(int(self.query.get("page", 1)), 1)
        except ValueError:
            raise HTTPError(400, "per_page and page must be whole numbers")
        return per_page, page

    def paginate(self, items):
        """The requested page of ``items``, with a Link header like GitHub's."""
        per_page, page = self.page()
        last = max((len(items) + per_page - 1) // per_page, 1)
        self.link_header(page, per_page, last if page < last else None, last)
        return items[(page - 1) * per_page: page * per_page]

    def link_header(self, page, per_page, next_page, last=None):
        def url(n):
            query = dict(self.query, per_page=str(per_page), page=str(n))
            return "<%s%s?%s>" % (self.app.url, self.raw_path, urllib.parse.urlencode(query))
        links = []
        if next_page:
            links.append('%s; rel="next"' % url(next_page))
            if last:
                links.append('%s; rel="last"' % url(last))
        if page > 1:
            links += ['%s; rel="first"' % url(1), '%s; rel="prev"' % url(page - 1)]
        if links:
            self.response_headers["Link"] = ", ".join(links)

    # -- authorize, act, audit ------------------------------------------------------------------
    def check(self, action, resource, **context):
        """decide(); a denial is audited at once and raised as the surface's error."""
        # Decide before acting: inside a transaction a denial's audit row would roll back with it.
        assert not self.app.store.db.in_transaction, "authorize %s before opening the transaction" % action
        decision = decide(self.app.store, self.principal, action, resource, context)
        if decision.effect == "needs_approval":
            decision, approval_id, url = ask_for_approval(self.app, self.principal, decision)
            self.app.audit(self.principal, self.surface, decision, "approval %s requested" % approval_id)
            raise HTTPError(403, decision.reasons[0], extra={"approval_id": approval_id, "approval_url": url})
        if not decision.allowed:
            self.app.audit(self.principal, self.surface, decision)
            raise self.refusal(decision)
        if decision.approval is not None and not spend_approval(self.app.store, decision.approval):
            raise HTTPError(409, "That approval was just used; ask for another")
        return decision

    def authorize(self, action, resource, **context):
        """check(), and for a mutation (or a sensitive read) keep the decision for the audit row its side
        effect will get."""
        decision = self.check(action, resource, **context)
        if ACTIONS[action].mutation or ACTIONS[action].sensitive:
            self.pending.append(decision)
        return decision

    def can(self, action, resource):
        """decide() for filtering lists: an item the caller may not see is left out, not reported."""
        return decide(self.app.store, self.principal, action, resource).allowed

    def refusal(self, decision):
        """404 for what the caller may not know exists, 401 for anonymous callers, 403 otherwise.
        Git clients send credentials only after a 401, so there an anonymous caller always gets 401."""
        if self.surface == "git" and self.principal.user is None:
            return HTTPError(401, "Authentication required")
        if decision.hidden:
            return HTTPError(404, "Not Found")
        if self.principal.user is None:
            return HTTPError(401, "Requires authentication")
        if decision.effect == "needs_step_up":       # RFC 9470: the client knows to ask for a fresh factor
            return HTTPError(401, decision.reasons[0], page=step_up_form(self) if self.surface == "web" else None,
                             headers={"WWW-Authenticate": 'Bearer error="insufficient_user_'
                             'authentication", error_description="a TOTP code is required", max_age=%d' % STEP_UP_SECONDS})
        headers = {"X-Accepted-OAuth-Scopes": decision.scope} if decision.scope else {}
        return HTTPError(decision.status or 403, decision.reasons[0], headers=headers)

    def effect(self, text):
        self.effects.append(text)

    @contextlib.contextmanager
    def transaction(self):
        """A write transaction whose commit includes the audit rows of this request's allowed mutations,
        so a side effect and its record land together or not at all."""
        with self.app.store.transaction() as db:
            yield db
            self.flush_audit(db)

    def flush_audit(self, db, outcome=None):
        side_effect = "; ".join(self.effects) or outcome
        for decision in self.pending:
            self.audit_id = audit_append(db, self.app.key, self.principal, self.surface, decision, side_effect)
        self.pending, self.effects = [], []

    def settle(self, outcome, failed):
        """Record allowed mutations that never reached a transaction with how they ended. One that
        failed (a merge that conflicts) gives back the approval it spent: the human's yes still holds."""
        with self.app.store.transaction() as db:
            for decision in self.pending if failed else ():
                if decision.approval is not None:
                    outcome += give_back_approval(db, decision.approval)
            self.flush_audit(db, outcome)


# -- serializers: one per resource, shared by every surface ------------------------------------

def encode_json(body):
    return json.dumps(body, separators=(",", ":")).encode()


def node_id(kind, ident):
    return base64.b64encode(("%s:%s" % (kind, ident)).encode()).decode()


def user_json(app, row, detail=False, private=False):
    """GitHub's simple-user; ``detail`` adds public-user fields, ``private`` the private-user ones."""
    login, api = row["login"], app.api
    out = {
        "login": login, "id": row["id"], "node_id": node_id("User", row["id"]),
        "avatar_url": "%s/avatars/%s" % (app.url, login), "gravatar_id": "",
        "url": "%s/users/%s" % (api, login), "html_url": "%s/%s" % (app.url, login),
        "followers_url": "%s/users/%s/followers" % (api, login),
        "following_url": "%s/users/%s/following{/other_user}" % (api, login),
        "gists_url": "%s/users/%s/gists{/gist_id}" % (api, login),
        "starred_url": "%s/users/%s/starred{/owner}{/repo}" % (api, login),
        "subscriptions_url": "%s/users/%s/subscriptions" % (api, login),
        "organizations_url": "%s/users/%s/orgs" % (api, login),
        "repos_url": "%s/users/%s/repos" % (api, login),
        "events_url": "%s/users/%s/events{/privacy}" % (api, login),
        "received_events_url": "%s/users/%s/received_events" % (api, login),
        "type": "Organization" if row["kind"] == "org" else "User",
        "user_kind": row["kind"] if row["kind"] != "org" else None,
        "site_admin": bool(row["site_admin"]),
    }
    if detail:
        counts = app.store.one("SELECT SUM(NOT private) AS public, SUM(private) AS private FROM repos"
                               " WHERE owner_id = ?", row["id"])
        out.update({
            "name": row["name"], "company": None, "blog": "", "location": None, "email": row["email"],
            "hireable": None, "bio": row["description"], "twitter_username": None,
            "public_repos": counts["public"] or 0, "public_gists": 0, "followers": 0, "following": 0,
            "created_at": row["created_at"], "updated_at": row["updated_at"],
            "suspended_at": row["suspended_at"],
        })
    if private:
        out.update({"private_gists": 0, "total_private_repos": counts["private"] or 0,
                    "owned_private_repos": counts["private"] or 0, "disk_usage": 0, "collaborators": 0,
                    "two_factor_authentication": False,
                    "plan": {"name": "free", "space": 976562499, "private_repos": 10000, "collaborators": 0}})
    return out


REPO_URL_TEMPLATES = (
    "archive_url:{archive_format}{/ref}", "assignees_url:assignees{/user}", "blobs_url:git/blobs{/sha}",
    "branches_url:branches{/branch}", "collaborators_url:collaborators{/collaborator}",
    "comments_url:comments{/number}", "commits_url:commits{/sha}", "compare_url:compare/{base}...{head}",
    "contents_url:contents/{+path}", "contributors_url:contributors", "deployments_url:deployments",
    "downloads_url:downloads", "events_url:events", "forks_url:forks", "git_commits_url:git/commits{/sha}",
    "git_refs_url:git/refs{/sha}", "git_tags_url:git/tags{/sha}", "hooks_url:hooks",
    "issue_comment_url:issues/comments{/number}", "issue_events_url:issues/events{/number}",
    "issues_url:issues{/number}", "keys_url:keys{/key_id}", "labels_url:labels{/name}",
    "languages_url:languages", "merges_url:merges", "milestones_url:milestones{/number}",
    "notifications_url:notifications{?since,all,participating}", "pulls_url:pulls{/number}",
    "releases_url:releases{/id}", "stargazers_url:stargazers", "statuses_url:statuses/{sha}",
    "subscribers_url:subscribers", "subscription_url:subscription", "tags_url:tags",
    "teams_url:teams", "trees_url:git/trees{/sha}")


def repo_json(app, row, permission=None):
    """GitHub's full-repository. ``row`` is a repos row joined with its owner (see REPO_SELECT)."""
    name = full_name(row)
    api_url = "%s/repos/%s" % (app.api, name)
    # every repository body counts its forks (pull requests carry two bodies): once per commit generation
    forks = app.store.cached(("forks", row["id"]), lambda: app.store.one(
        "SELECT COUNT(*) AS n FROM repos WHERE parent_id = ?", row["id"])["n"])
    out = {
        "id": row["id"], "node_id": node_id("Repository", row["id"]), "name": row["name"],
        "full_name": name, "private": bool(row["private"]),
        "owner": user_json(app, {"id": row["owner_id"], "login": row["owner_login"], "kind": row["owner_kind"],
                                 "site_admin": row["owner_site_admin"]}),
        "html_url": "%s/%s" % (app.url, name), "description": row["description"],
        "fork": row["parent_id"] is not None,
        "url": api_url,
    }
    for template in REPO_URL_TEMPLATES:
        key, _, suffix = template.partition(":")
        out[key] = "%s/%s" % (api_url, suffix) if suffix[0] != "{" else api_url + suffix
    host = urllib.parse.urlsplit(app.url).netloc
    out.update({
        "clone_url": "%s/%s.git" % (app.url, name), "git_url": "git://%s/%s.git" % (host, name),
        "ssh_url": "git@%s:%s.git" % (host.split(":")[0], name), "svn_url": "%s/%s" % (app.url, name),
        "mirror_url": None, "homepage": row["homepage"], "language": None, "size": 0,
        "forks": forks, "forks_count": forks, "stargazers_count": 0, "watchers": 0, "watchers_count": 0,
        "open_issues": 0, "open_issues_count": 0, "network_count": 0, "subscribers_count": 0,
        "default_branch": row["default_branch"], "visibility": "private" if row["private"] else "public",
        "has_issues": True, "has_projects": False, "has_wiki": False, "has_pages": False,
        "has_downloads": True, "has_discussions": False, "archived": bool(row["archived"]), "disabled": False,
        "is_template": False, "allow_forking": True, "web_commit_signoff_required": False, "topics": [],
        "license": None, "pushed_at": row["pushed_at"] or row["created_at"],
        "created_at": row["created_at"], "updated_at": row["updated_at"],
    })
    if permission is not None:
        rank = RANK[permission]
        out["permissions"] = {"admin": rank >= RANK["admin"], "maintain": rank >= RANK["maintain"],
                              "push": rank >= RANK["write"], "triage": rank >= RANK["triage"],
                              "pull": rank >= RANK["read"]}
    return out


def org_json(app, row, detail=False):
    login, api = row["login"], app.api
    out = {
        "login": login, "id": row["id"], "node_id": node_id("Organization", row["id"]),
        "url": "%s/orgs/%s" % (api, login), "repos_url": "%s/orgs/%s/repos" % (api, login),
        "events_url": "%s/orgs/%s/events" % (api, login), "hooks_url": "%s/orgs/%s/hooks" % (api, login),
        "issues_url": "%s/orgs/%s/issues" % (api, login),
        "members_url": "%s/orgs/%s/members{/member}" % (api, login),
        "public_members_url": "%s/orgs/%s/public_members{/member}" % (api, login),
        "avatar_url": "%s/avatars/%s" % (app.url, login), "description": row["description"],
    }
    if detail:
        public = app.store.one("SELECT COUNT(*) AS n FROM repos WHERE owner_id = ? AND NOT private", row["id"])
        out.update({
            "name": row["name"], "email": row["email"] or "", "has_organization_projects": False, "has_repository_projects": False,
            "public_repos": public["n"], "public_gists": 0, "followers": 0, "following": 0,
            "html_url": "%s/%s" % (app.url, login), "type": "Organization",
            "created_at": row["created_at"], "updated_at": row["updated_at"], "archived_at": None,
            "default_repository_permission": row["base_permission"],
        })
    return out


def team_json(app, row, org, detail=False):
    base = "%s/orgs/%s/teams/%s" % (app.api, org["login"], row["slug"])
    out = {
        "id": row["id"], "node_id": node_id("Team", row["id"]), "url": base,
        "html_url": "%s/orgs/%s/teams/%s" % (app.url, org["login"], row["slug"]), "name": row["name"],
        "slug": row["slug"], "description": row["description"], "privacy": row["privacy"],
        "notification_setting": "notifications_enabled", "permission": "pull",
        "members_url": base + "/members{/member}", "repositories_url": base + "/repos", "parent": None,
        "type": "organization",
    }
    if detail:
        counts = app.store.one("SELECT (SELECT COUNT(*) FROM team_members WHERE team_id = ?) AS members,"
                               " (SELECT COUNT(*) FROM team_repos WHERE team_id = ?) AS repos", row["id"], row["id"])
        out.update({"members_count": counts["members"], "repos_count": counts["repos"],
                    "created_at": row["created_at"], "updated_at": row["updated_at"],
                    "organization": org_json(app, org, detail=True)})
    return out


def git_person_json(sig, when, offset):
    name, _, email = sig.decode("utf-8", "replace").partition(" <")
    stamp = datetime.datetime.fromtimestamp(when, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"name": name, "email": email.rstrip(">"), "date": stamp}


def commit_json(app, repo_name, commit):
    """GitHub's commit shape for a dulwich Commit; author/committer accounts are matched by noreply email."""
    sha, api = commit.id.decode(), "%s/repos/%s" % (app.api, repo_name)
    author = git_person_json(commit.author, commit.author_time, commit.author_timezone)
    committer = git_person_json(commit.committer, commit.commit_time, commit.commit_timezone)
    return {
        "sha": sha, "node_id": node_id("Commit", sha), "url": "%s/commits/%s" % (api, sha),
        "html_url": "%s/%s/commit/%s" % (app.url, repo_name, sha), "comments_url": "%s/commits/%s/comments" % (api, sha),
        "commit": {
            "url": "%s/git/commits/%s" % (api, sha), "author": author, "committer": committer,
            "message": commit.message.decode("utf-8", "replace").rstrip("\n"),
            "tree": {"sha": commit.tree.decode(), "url": "%s/git/trees/%s" % (api, commit.tree.decode())},
            "comment_count": 0,
            "verification": {"verified": False, "reason": "unsigned", "signature": None, "payload": None,
                             "verified_at": None},
        },
        "author": account_for_email(app, author["email"]), "committer": account_for_email(app, committer["email"]),
        "parents": [{"sha": p.decode(), "url": "%s/commits/%s" % (api, p.decode()),
                     "html_url": "%s/%s/commit/%s" % (app.url, repo_name, p.decode())} for p in commit.parents],
    }


def account_for_email(app, email):
    login = email[:-len("@users.noreply.agentgit")] if email.endswith("@users.noreply.agentgit") else None
    row = account_by_login(app.store, login) if login else app.store.one(
        "SELECT * FROM accounts WHERE email = ? COLLATE NOCASE", email)
    return user_json(app, row) if row else None


def branch_json(app, repo_name, name, sha, protected=False):
    return {"name": name, "commit": {"sha": sha, "url": "%s/repos/%s/commits/%s" % (app.api, repo_name, sha)},
            "protected": protected}


def ref_json(app, repo_name, ref, sha, obj_type):
    return {"ref": ref, "node_id": node_id("Ref", "%s:%s" % (repo_name, ref)),
            "url": "%s/repos/%s/git/%s" % (app.api, repo_name, ref),
            "object": {"type": obj_type, "sha": sha,
                       "url": "%s/repos/%s/git/%ss/%s" % (app.api, repo_name, obj_type, sha)}}


# ════════════════════════════════════════════════════════════════════════════════════════════════
# 9. REST endpoints
# ════════════════════════════════════════════════════════════════════════════════════════════════
# Each handler takes the Request and the path's parameters and returns a body (200), or
# (status, body) / (status, body, headers). Every one names its action to req.authorize().

REPO_SELECT = ("SELECT r.*, a.login AS owner_login, a.kind AS owner_kind, a.site_admin AS owner_site_admin"
               " FROM repos r JOIN accounts a ON a.id = r.owner_id")


def full_name(row):
    return "%s/%s" % (row["owner_login"], row["name"])


def find_account(req, login, kinds=("human", "agent", "org")):
    row = account_by_login(req.app.store, login)
    if row is None or row["kind"] not in kinds:
        raise HTTPError(404, "Not Found")
    return row


def find_repo(req, owner, name, action="read_code"):
    """The repository, once ``action`` on it is allowed; 404 alike for missing and hidden ones.
    ``req.level`` is then the permission the caller holds on it."""
    row = lookup_repo(req.app.store, owner, name)
    if row is None:
        raise HTTPError(404, "Not Found")
    req.level = req.authorize(action, Resource.repo(row)).level
    return row


def lookup_repo(store, owner, name):
    return store.cached(("repo", owner.lower(), name.lower()),
                        lambda: store.one(REPO_SELECT + " WHERE a.login = ? AND r.name = ?", owner, name))


def signed_in(req):
    if req.principal.user is None:
        raise HTTPError(401, "Requires authentication")
    return req.principal.user


def visible_repos(req, rows):
    """The rows the caller may read, each with the caller's permission, via decide()."""
    out = []
    for row in rows:
        if req.can("read_code", Resource.repo(row)):
            out.append((row, repo_permission(req.app.store, req.principal.user, row)[0]))
    return out


def sort_repos(req, pairs, default_sort="full_name"):
    sort = req.query.get("sort", default_sort)
    keys = {"created": "created_at", "updated": "updated_at", "pushed": "pushed_at"}
    if sort in keys:
        pairs.sort(key=lambda p: p[0][keys[sort]] or "", reverse=req.query.get("direction", "desc") == "desc")
    else:
        pairs.sort(key=lambda p: ("%s/%s" % (p[0]["owner_login"], p[0]["name"])).lower(),
                   reverse=req.query.get("direction", "asc") == "desc")
    return [repo_json(req.app, row, perm) for row, perm in req.paginate(pairs)]


# -- meta and users -----------------------------------------------------------------------------

ROOT_LINKS = {
    "current_user_url": "/user", "current_user_authorizations_html_url": "{web}/settings/connections/applications{/client_id}",
    "authorizations_url": "/authorizations", "code_search_url": "/search/code?q={query}{&page,per_page,sort,order}",
    "commit_search_url": "/search/commits?q={query}{&page,per_page,sort,order}", "emails_url": "/user/emails",
    "emojis_url": "/emojis", "events_url": "/events", "feeds_url": "/feeds", "followers_url": "/user/followers",
    "following_url": "/user/following{/target}", "gists_url": "/gists{/gist_id}", "hub_url": "/hub",
    "issue_search_url": "/search/issues?q={query}{&page,per_page,sort,order}", "issues_url": "/issues",
    "keys_url": "/user/keys", "label_search_url": "/search/labels?q={query}&repository_id={repository_id}{&page,per_page}",
    "notifications_url": "/notifications", "organization_url": "/orgs/{org}",
    "organization_repositories_url": "/orgs/{org}/repos{?type,page,per_page,sort}",
    "organization_teams_url": "/orgs/{org}/teams", "public_gists_url": "/gists/public", "rate_limit_url": "/rate_limit",
    "repository_url": "/repos/{owner}/{repo}", "repository_search_url": "/search/repositories?q={query}{&page,per_page,sort,order}",
    "current_user_repositories_url": "/user/repos{?type,page,per_page,sort}", "starred_url": "/user/starred{/owner}{/repo}",
    "starred_gists_url": "/gists/starred", "user_url": "/users/{user}", "user_organizations_url": "/user/orgs",
    "user_repositories_url": "/users/{user}/repos{?type,page,per_page,sort}",
    "user_search_url": "/search/users?q={query}{&page,per_page,sort,order}",
}


@route("GET", "/api/v3")
def get_root(req):
    """The API's front door; `gh auth status` reads X-OAuth-Scopes from it."""
    req.check("read_meta", SITE)
    return {name: link.replace("{web}", req.app.url) if link.startswith("{web}") else req.app.api + link
            for name, link in ROOT_LINKS.items()}


API_RATE_LIMIT = 5000     # what /rate_limit reports: GitHub's hourly figure for a signed-in user


@route("GET", "/api/v3/meta")
def get_meta(req):
    """GHES's meta document; gh reads installed_version to know which features the server has."""
    req.check("read_meta", SITE)
    return {"verifiable_password_authentication": False, "installed_version": "3.19.0",
            "agentgit_version": __version__}


@route("GET", "/api/v3/rate_limit")
def rate_limit(req):
    """The API is not rate-limited (only agent registration and sign-in are), so every category is
    full. Clients that pace themselves by this endpoint (PyGithub, octokit's plugins) then never wait."""
    req.check("read_meta", SITE)
    bucket = {"limit": API_RATE_LIMIT, "remaining": API_RATE_LIMIT, "used": 0,
              "reset": int(time.time()) + 3600}
    return {"resources": {name: dict(bucket) for name in ("core", "search", "graphql")}, "rate": bucket}


@route("GET", "/api/v3/user")
def get_authenticated_user(req):
    user = signed_in(req)
    req.check("read_account", Resource.account(user))
    return user_json(req.app, user, detail=True, private=True)


@route("GET", "/api/v3/users/{login}")
def get_user(req, login):
    row = find_account(req, login)
    req.check("read_account", Resource.account(row))
    return user_json(req.app, row, detail=True)     # organizations too, with type "Organization", as GitHub does


@route("PUT", "/api/v3/users/{login}/suspended")
def suspend_user(req, login):
    row = find_account(req, login, kinds=("human", "agent"))
    req.authorize("suspend_user", SITE)
    with req.transaction() as db:
        req.effect(suspend_account(db, row, True))
    return 204, None


@route("DELETE", "/api/v3/users/{login}/suspended")
def unsuspend_user(req, login):
    row = find_account(req, login, kinds=("human", "agent"))
    req.authorize("suspend_user", SITE)
    with req.transaction() as db:
        req.effect(suspend_account(db, row, False))
    return 204, None


# -- repositories and forks ---------------------------------------------------------------------

def repos_reachable_by(store, user):
    """Every repository that ``user`` owns or reaches through a grant (the candidates for /user/repos)."""
    return store.db.execute(
        REPO_SELECT + " WHERE r.owner_id = :u"
        " OR r.id IN (SELECT repo_id FROM collaborators WHERE user_id = :u)"
        " OR r.owner_id IN (SELECT org_id FROM org_members WHERE user_id = :u)"
        " OR r.id IN (SELECT tr.repo_id FROM team_repos tr JOIN team_members tm ON tm.team_id = tr.team_id"
        "             WHERE tm.user_id = :u)", {"u": user["id"]}).fetchall()


@route("GET", "/api/v3/user/repos")
def list_own_repos(req):
    user = signed_in(req)
    req.check("read_account", Resource.account(user))
    affiliation = set(req.query.get("affiliation", "owner,collaborator,organization_member").split(","))
    visibility = req.query.get("visibility", "all")
    pairs = []
    for row, perm in visible_repos(req, repos_reachable_by(req.app.store, user)):
        is_owner = row["owner_id"] == user["id"]
        is_org = row["owner_kind"] == "org"
        if not ((is_owner and "owner" in affiliation) or (is_org and "organization_member" in affiliation)
                or (not is_owner and not is_org and "collaborator" in affiliation)):
            continue
        if visibility in ("public", "private") and bool(row["private"]) != (visibility == "private"):
            continue
        pairs.append((row, perm))
    return sort_repos(req, pairs)


@route("GET", "/api/v3/users/{login}/repos")
def list_user_repos(req, login):
    owner = find_account(req, login)
    req.check("read_account", Resource.account(owner))
    rows = req.app.store.all(REPO_SELECT + " WHERE r.owner_id = ?", owner["id"])
    return sort_repos(req, visible_repos(req, rows))


def repo_fields(req, body, creating):
    """The settable fields of a repository from a POST or PATCH body, type-checked."""
    fields = {}
    name = req.field(body, "name", str, "Repository", required=creating)
    if name is not None:
        if not valid_repo_name(name):
            raise invalid("Repository", "name", "custom",
                          "name may use letters, digits, '.', '-' and '_', up to 100 characters, "
                          "and may not be '.', '..' or end in '.git'")
        fields["name"] = name
    for key in ("description", "homepage"):
        value = req.field(body, key, str, "Repository")
        if value is not None:
            if len(value) > 1000:
                raise invalid("Repository", key, "custom", "%s is longer than 1000 characters" % key)
            fields[key] = value
    for key in ("private", "archived"):
        value = req.field(body, key, bool, "Repository")
        if value is not None:
            fields[key] = int(value)
    if body.get("visibility") is not None:
        if body["visibility"] not in ("public", "private", "internal"):
            raise invalid("Repository", "visibility")
        fields["private"] = int(body["visibility"] != "public")
    return fields


def create_repo_for(req, owner):
    body = req.json()
    fields = repo_fields(req, body, creating=True)
    auto_init = req.field(body, "auto_init", bool, "Repository", default=False)
    branch = req.field(body, "default_branch", str, "Repository", default="main")
    if not re.fullmatch(r"[A-Za-z0-9._/-]{1,200}", branch) or ".." in branch or branch.endswith((".lock", "/")):
        raise invalid("Repository", "default_branch")
    req.authorize("create_repo", Resource.account(owner))
    row = new_repository(req, owner, fields, auto_init, branch)
    return 201, repo_json(req.app, row, "admin"), {"Location": "%s/repos/%s/%s" % (req.app.api, owner["login"],
                                                                                   row["name"])}


def new_repository(req, owner, fields, auto_init, branch="main", parent_id=None):
    """After create_repo was allowed: the new repository's row (422 if the name is taken)."""
    with req.transaction() as db:
        if db.execute("SELECT 1 FROM repos WHERE owner_id = ? AND name = ?", (owner["id"], fields["name"])).fetchone():
            raise invalid("Repository", "name", "custom", "name already exists on this account")
        author = req.principal.user
        repo_id = create_repository(req.app, db, {"id": owner["id"], "login": author["login"]}, fields["name"],
                                    private=fields.get("private", 0), auto_init=auto_init,
                                    description=fields.get("description"), homepage=fields.get("homepage"),
                                    default_branch=branch, parent_id=parent_id)
        req.effect("created %s/%s" % (owner["login"], fields["name"]))
    return repo_by_id(req.app.store, repo_id)


@route("POST", "/api/v3/user/repos")
def create_own_repo(req):
    return create_repo_for(req, signed_in(req))


@route("GET", "/api/v3/repos/{owner}/{repo}")
def get_repo(req, owner, repo):
    row = find_repo(req, owner, repo)
    lineage = fork_lineage(req, row)
    # The most requested body of all (clients look a repository up before almost anything else):
    # encoded once per permission level until the next commit anywhere changes what it could say.
    return req.app.store.cached(("repo body", row["id"], req.level, bool(lineage)), lambda: encode_json(dict(
        repo_json(req.app, row, req.level), **lineage)))


def fork_lineage(req, row):
    """A fork's parent and source (the root of its network), as GitHub shows them on the repository,
    when the caller can see the parent."""
    parent = repo_by_id(req.app.store, row["parent_id"]) if row["parent_id"] else None
    if parent is None or not req.can("read_code", Resource.repo(parent)):
        return {}
    return {"parent": repo_json(req.app, parent), "source": repo_json(req.app, network_root(req.app.store, parent))}


@route("POST", "/api/v3/repos/{owner}/{repo}/forks")
def create_fork(req, owner, repo):
    """A copy of the repository's branches and tags under the caller (or an organization it may create
    repositories in), remembering its parent. 202, as on GitHub; here the copy is done when it answers.
    Forking again answers the fork that exists."""
    body = req.json()
    org = req.field(body, "organization", str, "Fork")
    name = req.field(body, "name", str, "Fork")
    only_default = req.field(body, "default_branch_only", bool, "Fork", default=False)
    source = find_repo(req, owner, repo)
    target = find_account(req, org, kinds=("org",)) if org else signed_in(req)
    req.authorize("create_repo", Resource.account(target))
    existing = req.app.store.one(REPO_SELECT + " WHERE r.owner_id = ? AND r.parent_id = ?", target["id"], source["id"])
    if existing is not None:
        return 202, fork_json(req, existing)
    fields = {"name": name or source["name"], "private": source["private"], "description": source["description"],
              "homepage": source["homepage"]}
    if not valid_repo_name(fields["name"]):
        raise invalid("Fork", "name")
    with open_repo(req.app, source["id"]) as git:
        refs = dict(list_refs(git, "refs/heads/"), **list_refs(git, "refs/tags/"))
    if only_default:
        refs = {ref: sha for ref, sha in refs.items() if ref == "refs/heads/" + source["default_branch"]}
    req.effect("forked from %s (%d refs)" % (full_name(source), len(refs)))
    row = new_repository(req, target, fields, auto_init=False, branch=source["default_branch"],
                         parent_id=source["id"])
    # the fork's row is in: now its refs (a racing clone may see it empty for a moment, as on GitHub)
    try:
        copy_refs(req.app, repo_dir(req.app, source["id"]), repo_dir(req.app, row["id"]), {ref: ref for ref in refs})
    except BaseException:
        # a fork that could not be filled is no fork: nothing half-made stays behind
        with req.app.store.transaction() as db:
            db.execute("DELETE FROM repos WHERE id = ?", (row["id"],))
        shutil.rmtree(repo_dir(req.app, row["id"]), ignore_errors=True)
        req.app.audit(req.principal, req.surface, Decision("deny", "create_repo", "repo:" + full_name(row), [
            "the fork's refs could not be copied from %s" % full_name(source)]), "removed the empty fork")
        raise
    if refs:
        with req.app.store.transaction() as db:
            db.execute("UPDATE repos SET pushed_at = ? WHERE id = ?", (now(), row["id"]))
    return 202, fork_json(req, repo_by_id(req.app.store, row["id"]))


def fork_json(req, row):
    """A fork as the create call answers it: with the caller's permissions, its parent and its source."""
    level = repo_permission(req.app.store, req.principal.user, row)[0]
    return dict(repo_json(req.app, row, level), **fork_lineage(req, row))


@route("POST", "/api/v3/repos/{owner}/{repo}/merge-upstream")
def merge_upstream(req, owner, repo):
    """Sync a fork's branch with the same branch of its parent (gh repo sync): a fast-forward when the
    fork has nothing of its own, else a merge commit; 409 and nothing moved on a conflict. Decided as a
    push to the fork's branch."""
    body = req.json()
    branch = req.field(body, "branch", str, "MergeUpstream", required=True)
    row = find_repo(req, owner, repo)
    parent = repo_by_id(req.app.store, row["parent_id"]) if row["parent_id"] else None
    if parent is None or not req.can("read_code", Resource.repo(parent)):
        raise invalid("MergeUpstream", "repository", message="%s is not a fork of a repository you can see"
                      % full_name(row))
    ref = "refs/heads/" + branch
    req.authorize("push_branch", Resource.repo(row), ref=ref)
    label = "%s:%s" % (parent["owner_login"], branch)
    with open_repo(req.app, parent["id"]) as upstream:
        theirs = branch_sha(upstream, branch)
    if theirs is None:
        raise invalid("MergeUpstream", "branch", message="the upstream has no branch %s" % branch)
    copy_refs(req.app, repo_dir(req.app, parent["id"]), repo_dir(req.app, row["id"]), {None: ref})
    with open_repo(req.app, row["id"]) as git:
        ours = branch_sha(git, branch)
        if ours is None:
            raise invalid("MergeUpstream", "branch", message="the fork has no branch %s" % branch)
        common = merge_base(git, ours, theirs)
        if common == theirs:
            return {"message": "This branch is not behind the upstream %s." % label, "merge_type": "none",
                    "base_branch": label}
        merge_type, new_sha = "fast-forward", theirs
        if common != ours:
            new_sha, conflicts = merge_commit(git, common, ours, theirs, signature(req.principal.user),
                                              "Merge branch '%s' of %s into %s" % (branch, full_name(parent), branch))
            if conflicts:
                raise HTTPError(409, "There are merge conflicts with the upstream %s" % label)
            merge_type = "merge"
        if not git.refs.set_if_equals(ref.encode(), ours.encode(), new_sha.encode()):
            raise HTTPError(409, "The branch was updated meanwhile; try again")
    with req.transaction() as db:
        db.execute("UPDATE repos SET pushed_at = ? WHERE id = ?", (now(), row["id"]))
        req.effect("synced %s with %s (%s): %s→%s" % (ref, label, merge_type, ours[:12], new_sha[:12]))
    return {"message": "Successfully fetched and %s from upstream %s." % (
        "fast-forwarded" if merge_type == "fast-forward" else "merged", label), "merge_type": merge_type,
            "base_branch": label}


@route("GET", "/api/v3/repos/{owner}/{repo}/forks")
def list_forks(req, owner, repo):
    source = find_repo(req, owner, repo)
    rows = req.app.store.all(REPO_SELECT + " WHERE r.parent_id = ? ORDER BY r.created_at DESC", source["id"])
    return req.paginate([repo_json(req.app, r) for r in rows if req.can("read_code", Resource.repo(r))])


@route("PATCH", "/api/v3/repos/{owner}/{repo}")
def update_repo(req, owner, repo):
    body = req.json()
    row = find_repo(req, owner, repo, "admin_repo")
    fields = repo_fields(req, body, creating=False)
    branch = req.field(body, "default_branch", str, "Repository")
    if branch is not None:
        with open_repo(req.app, row["id"]) as git:
            empty = not list_refs(git, "refs/heads/")
            if not empty and ("refs/heads/" + branch).encode() not in git.refs:
                raise invalid("Repository", "default_branch", "custom", "branch %s does not exist" % branch)
            git.refs.set_symbolic_ref(b"HEAD", b"refs/heads/" + branch.encode())
        fields["default_branch"] = branch
    with req.transaction() as db:
        if "name" in fields and fields["name"].lower() != row["name"].lower() and db.execute(
                "SELECT 1 FROM repos WHERE owner_id = ? AND name = ?", (row["owner_id"], fields["name"])).fetchone():
            raise invalid("Repository", "name", "custom", "name already exists on this account")
        if fields:
            fields["updated_at"] = now()
            update_row(db, "repos", fields, "id", row["id"])
        req.effect("updated %s" % ", ".join(sorted(k for k in fields if k != "updated_at")))
    row = repo_by_id(req.app.store, row["id"])
    return repo_json(req.app, row, "admin")


@route("DELETE", "/api/v3/repos/{owner}/{repo}")
def delete_repo(req, owner, repo):
    row = find_repo(req, owner, repo, "delete_repo")
    path = repo_dir(req.app, row["id"])
    trash = tempfile.mkdtemp(prefix=".trash-", dir=req.app.repos_dir)
    os.rename(path, os.path.join(trash, "repo.git"))     # out of reach first, so no push lands mid-delete
    try:
        with req.transaction() as db:
            db.execute("DELETE FROM repos WHERE id = ?", (row["id"],))
            req.effect("deleted %s/%s" % (row["owner_login"], row["name"]))
    except BaseException:
        os.rename(os.path.join(trash, "repo.git"), path)
        raise
    finally:
        shutil.rmtree(trash, ignore_errors=True)
    return 204, None


# -- branches, refs, commits --------------------------------------------------------------------

@route("GET", "/api/v3/repos/{owner}/{repo}/branches")
def list_branches(req, owner, repo):
    row = find_repo(req, owner, repo)
    with open_repo(req.app, row["id"]) as git:
        refs = list_refs(git, "refs/heads/")
    branches = [(ref[len("refs/heads/"):], sha) for ref, sha in refs.items()]
    if req.query.get("protected") in ("true", "false"):
        wanted = req.query["protected"] == "true"
        branches = [b for b in branches if (branch_protection(req.app.store, row["id"], b[0]) is not None) == wanted]
    return [branch_json(req.app, full_name(row), name, sha, branch_protection(req.app.store, row["id"], name) is not None)
            for name, sha in req.paginate(branches)]


@route("GET", "/api/v3/repos/{owner}/{repo}/branches/{branch:path}")
def get_branch(req, owner, repo, branch):
    row = find_repo(req, owner, repo)
    name = full_name(row)
    rule = branch_protection(req.app.store, row["id"], branch)
    with open_repo(req.app, row["id"]) as git:
        sha = branch_sha(git, branch)
        if sha is None:
            raise HTTPError(404, "Branch not found")
        out = branch_json(req.app, name, branch, sha, rule is not None)
        out["commit"] = commit_json(req.app, name, git[sha.encode()])
    checks = json.loads(rule["required_checks"]) if rule is not None and rule["required_checks"] else []
    out["_links"] = {"self": "%s/repos/%s/branches/%s" % (req.app.api, name, branch),
                     "html": "%s/%s/tree/%s" % (req.app.url, name, branch)}
    out["protection"] = {"enabled": rule is not None, "required_status_checks": {
        "enforcement_level": "non_admins" if checks else "off", "contexts": checks,
        "checks": [{"context": c, "app_id": None} for c in checks]}}
    out["protection_url"] = "%s/repos/%s/branches/%s/protection" % (req.app.api, name, branch)
    return out


def refs_json(req, row, prefix):
    name = full_name(row)
    out = []
    with open_repo(req.app, row["id"]) as git:
        for ref, sha in list_refs(git, prefix.rsplit("/", 1)[0] + "/" if "/" in prefix else prefix).items():
            if ref.startswith(prefix):
                out.append(ref_json(req.app, name, ref, sha, git[sha.encode()].type_name.decode()))
    return out


@route("GET", "/api/v3/repos/{owner}/{repo}/git/ref/{ref:path}")
def get_ref(req, owner, repo, ref):
    row = find_repo(req, owner, repo)
    matches = [r for r in refs_json(req, row, "refs/" + ref) if r["ref"] == "refs/" + ref]
    if not matches:
        raise HTTPError(404, "Not Found")
    return matches[0]


@route("GET", "/api/v3/repos/{owner}/{repo}/git/matching-refs/{ref:path}")
def matching_refs(req, owner, repo, ref):
    row = find_repo(req, owner, repo)
    return req.paginate(refs_json(req, row, "refs/" + ref))


def head_commit_or_409(git, row, ref):
    if not list_refs(git, "refs/heads/"):
        raise HTTPError(409, "Git Repository is empty.")
    sha = resolve_commit(git, ref or row["default_branch"])
    if sha is None:
        raise HTTPError(404, "No commit found for SHA: %s" % (ref or row["default_branch"]))
    return sha


@route("GET", "/api/v3/repos/{owner}/{repo}/commits")
def list_commits(req, owner, repo):
    row = find_repo(req, owner, repo)
    per_page, page = req.page()
    with open_repo(req.app, row["id"]) as git:
        sha = head_commit_or_409(git, row, req.query.get("sha"))
        commits = walk_commits(git, sha, (page - 1) * per_page, per_page + 1)
        req.link_header(page, per_page, page + 1 if len(commits) > per_page else None)
        return [commit_json(req.app, full_name(row), c) for c in commits[:per_page]]


@route("GET", "/api/v3/repos/{owner}/{repo}/commits/{ref:path}")
def get_commit(req, owner, repo, ref):
    row = find_repo(req, owner, repo)
    with open_repo(req.app, row["id"]) as git:
        sha = head_commit_or_409(git, row, ref)
        return commit_json(req.app, full_name(row), git[sha.encode()])


# -- collaborators ------------------------------------------------------------------------------

def people_with_access(store, repo):
    """Accounts that hold a grant on the repository (owner, collaborators, org members, team members)."""
    return store.db.execute(
        "SELECT * FROM accounts WHERE kind != 'org' AND (id = :owner"
        " OR id IN (SELECT user_id FROM collaborators WHERE repo_id = :repo)"
        " OR id IN (SELECT user_id FROM org_members WHERE org_id = :owner)"
        " OR id IN (SELECT tm.user_id FROM team_members tm JOIN team_repos tr ON tr.team_id = tm.team_id"
        "           WHERE tr.repo_id = :repo)) ORDER BY login", {"owner": repo["owner_id"], "repo": repo["id"]}
    ).fetchall()


def collaborator_json(app, user, level):
    out = user_json(app, user)
    rank = RANK[level]
    out["permissions"] = {"admin": rank >= RANK["admin"], "maintain": rank >= RANK["maintain"],
                          "push": rank >= RANK["write"], "triage": rank >= RANK["triage"], "pull": rank >= 1}
    out["role_name"] = level
    return out


@route("GET", "/api/v3/repos/{owner}/{repo}/collaborators")
def list_collaborators(req, owner, repo):
    row = find_repo(req, owner, repo, "read_collaborators")
    out = []
    for user in people_with_access(req.app.store, row):
        level, how = repo_permission(req.app.store, user, row)
        if RANK[level] >= RANK["read"] and how not in ("public repository", "site admin"):
            out.append(collaborator_json(req.app, user, level))
    return req.paginate(out)


@route("GET", "/api/v3/repos/{owner}/{repo}/collaborators/{login}")
def check_collaborator(req, owner, repo, login):
    row = find_repo(req, owner, repo, "read_collaborators")
    user = find_account(req, login, kinds=("human", "agent"))
    level, how = repo_permission(req.app.store, user, row)
    if RANK[level] < RANK["read"] or how == "public repository":
        raise HTTPError(404, "Not Found")
    return 204, None


@route("PUT", "/api/v3/repos/{owner}/{repo}/collaborators/{login}")
def add_collaborator(req, owner, repo, login):
    body = req.json()
    row = find_repo(req, owner, repo, "admin_repo")
    user = find_account(req, login, kinds=("human", "agent"))
    permission = PERMISSION_ALIASES.get(req.field(body, "permission", str, "Collaborator", default="push"))
    if permission is None:
        raise invalid("Collaborator", "permission", message="permission must be pull, triage, push, maintain or admin")
    with req.transaction() as db:
        db.execute("INSERT INTO collaborators (repo_id, user_id, permission) VALUES (?, ?, ?)"
                   " ON CONFLICT (repo_id, user_id) DO UPDATE SET permission = excluded.permission",
                   (row["id"], user["id"], permission))
        req.effect("%s is a collaborator with %s" % (user["login"], permission))
    return 204, None


@route("DELETE", "/api/v3/repos/{owner}/{repo}/collaborators/{login}")
def remove_collaborator(req, owner, repo, login):
    row = find_repo(req, owner, repo, "admin_repo")
    user = find_account(req, login, kinds=("human", "agent"))
    with req.transaction() as db:
        db.execute("DELETE FROM collaborators WHERE repo_id = ? AND user_id = ?", (row["id"], user["id"]))
        req.effect("%s is no longer a collaborator" % user["login"])
    return 204, None


@route("GET", "/api/v3/repos/{owner}/{repo}/collaborators/{login}/permission")
def collaborator_permission(req, owner, repo, login):
    row = find_repo(req, owner, repo)
    user = find_account(req, login, kinds=("human", "agent"))
    level = repo_permission(req.app.store, user, row)[0]
    # The legacy 'permission' field knows only admin, write, read and none.
    legacy = {"maintain": "write", "triage": "read"}.get(level, level)
    return {"permission": legacy, "role_name": level, "user": collaborator_json(req.app, user, level)}


# -- issues, comments, labels, milestones -------------------------------------------------------

HEX_COLOR_RE = re.compile(r"^[0-9a-fA-F]{6}$")
MAX_TEXT = 65536        # GitHub's limit on issue, pull request and comment bodies


def text_field(req, body, name, resource, required=False, limit=MAX_TEXT):
    value = req.field(body, name, str, resource, required=required)
    if value is not None and len(value) > limit:
        raise invalid(resource, name, "custom", "%s is longer than %d characters" % (name, limit))
    if required and value is not None and not value.strip():
        raise invalid(resource, name, "missing_field", "%s cannot be blank" % name)
    return value



def author_association(store, repo, user_id):
    if user_id is None:
        return "NONE"
    if user_id == repo["owner_id"]:
        return "OWNER"
    if repo["owner_kind"] == "org" and permission_of_org_member(store, repo["owner_id"], user_id):
        return "MEMBER"
    if store.one("SELECT 1 FROM collaborators WHERE repo_id = ? AND user_id = ?", repo["id"], user_id):
        return "COLLABORATOR"
    return "NONE"


def user_json_by_id(app, user_id):
    row = account_by_id(app.store, user_id) if user_id is not None else None
    return user_json(app, row) if row is not None else None


def label_json(app, repo, row):
    return {"id": row["id"], "node_id": node_id("Label", row["id"]),
            "url": "%s/repos/%s/labels/%s" % (app.api, full_name(repo), urllib.parse.quote(row["name"])),
            "name": row["name"], "color": row["color"], "default": False, "description": row["description"]}


def milestone_json(app, repo, row):
    counts = app.store.one("SELECT SUM(state = 'open') AS open, SUM(state = 'closed') AS closed FROM issues"
                           " WHERE milestone_id = ?", row["id"])
    base = "%s/repos/%s/milestones/%d" % (app.api, full_name(repo), row["number"])
    return {"url": base, "html_url": "%s/%s/milestone/%d" % (app.url, full_name(repo), row["number"]),
            "labels_url": base + "/labels", "id": row["id"], "node_id": node_id("Milestone", row["id"]),
            "number": row["number"], "state": row["state"], "title": row["title"], "description": row["description"],
            "creator": user_json_by_id(app, row["creator_id"]), "open_issues": counts["open"] or 0,
            "closed_issues": counts["closed"] or 0, "created_at": row["created_at"], "updated_at": row["updated_at"],
            "closed_at": row["closed_at"], "due_on": row["due_on"]}


def issue_json(app, repo, row):
    """GitHub's issue; pull requests appear too, with a pull_request key, as on GitHub."""
    store, name = app.store, full_name(repo)
    base = "%s/repos/%s/issues/%d" % (app.api, name, row["number"])
    labels = store.all("SELECT l.* FROM labels l JOIN issue_labels il ON il.label_id = l.id WHERE il.issue_id = ?"
                       " ORDER BY l.name", row["id"])
    assignees = store.all("SELECT a.* FROM accounts a JOIN issue_assignees ia ON ia.user_id = a.id"
                          " WHERE ia.issue_id = ? ORDER BY a.login", row["id"])
    milestone = store.one("SELECT * FROM milestones WHERE id = ?", row["milestone_id"]) if row["milestone_id"] else None
    comments = store.one("SELECT COUNT(*) AS n FROM comments WHERE issue_id = ?", row["id"])["n"]
    out = {
        "id": row["id"], "node_id": node_id("Issue", row["id"]), "url": base, "repository_url": "%s/repos/%s" % (
            app.api, name), "labels_url": base + "/labels{/name}", "comments_url": base + "/comments",
        "events_url": base + "/events", "html_url": "%s/%s/%s/%d" % (app.url, name, "pull" if row["is_pull"] else
                                                                     "issues", row["number"]),
        "number": row["number"], "state": row["state"], "state_reason": row["state_reason"], "title": row["title"],
        "body": row["body"], "user": user_json_by_id(app, row["user_id"]),
        "labels": [label_json(app, repo, label) for label in labels],
        "assignee": user_json(app, assignees[0]) if assignees else None,
        "assignees": [user_json(app, a) for a in assignees],
        "milestone": milestone_json(app, repo, milestone) if milestone else None,
        "locked": bool(row["locked"]), "active_lock_reason": row["lock_reason"], "comments": comments,
        "closed_at": row["closed_at"], "created_at": row["created_at"], "updated_at": row["updated_at"],
        "closed_by": user_json_by_id(app, row["closed_by"]),
        "author_association": author_association(store, repo, row["user_id"]),
    }
    if row["is_pull"]:
        pull = store.one("SELECT merged_at FROM pulls WHERE issue_id = ?", row["id"])
        html = "%s/%s/pull/%d" % (app.url, name, row["number"])
        out["pull_request"] = {"url": "%s/repos/%s/pulls/%d" % (app.api, name, row["number"]), "html_url": html,
                               "diff_url": html + ".diff", "patch_url": html + ".patch",
                               "merged_at": pull["merged_at"] if pull else None}
    return out


def comment_json(app, repo, issue_number, row):
    name = full_name(repo)
    return {"id": row["id"], "node_id": node_id("IssueComment", row["id"]),
            "url": "%s/repos/%s/issues/comments/%d" % (app.api, name, row["id"]),
            "html_url": "%s/%s/issues/%d#issuecomment-%d" % (app.url, name, issue_number, row["id"]),
            "issue_url": "%s/repos/%s/issues/%d" % (app.api, name, issue_number), "body": row["body"],
            "user": user_json_by_id(app, row["user_id"]), "created_at": row["created_at"],
            "updated_at": row["updated_at"], "author_association": author_association(app.store, repo, row["user_id"])}


def find_issue(req, owner, repo, number, action="read_code", **context):
    """(repository, issue row) once ``action`` is allowed; the issue's author and lock go to decide()."""
    repo_row = find_repo(req, owner, repo)
    issue = req.app.store.one("SELECT * FROM issues WHERE repo_id = ? AND number = ?", repo_row["id"], int(number))
    if issue is None:
        raise HTTPError(404, "Not Found")
    if action != "read_code":
        req.authorize(action, Resource.repo(repo_row), author_id=issue["user_id"], locked=bool(issue["locked"]),
                      **context)
    return repo_row, issue


def resolve_labels(db, repo_id, names, resource="Issue"):
    """Label ids for names, creating unknown labels with a grey colour as GitHub does."""
    ids = []
    for name in names:
        if not isinstance(name, str) or not name.strip() or len(name) > 50:
            raise invalid(resource, "labels", message="labels must be names of at most 50 characters")
        row = db.execute("SELECT id FROM labels WHERE repo_id = ? AND name = ?", (repo_id, name)).fetchone()
        ids.append(row["id"] if row else db.execute("INSERT INTO labels (repo_id, name, color) VALUES (?, ?, 'ededed')",
                                                    (repo_id, name)).lastrowid)
    return ids


def resolve_assignees(req, repo, logins):
    """Account ids for logins that may be assigned: people granted access, not everyone who can read
    a public repository."""
    ids = []
    for login in logins:
        user = account_by_login(req.app.store, login) if isinstance(login, str) else None
        level, how = repo_permission(req.app.store, user, repo) if user is not None else ("none", "")
        if user is None or user["kind"] == "org" or RANK[level] < RANK["read"] or how == "public repository":
            raise invalid("Issue", "assignees", "invalid", "%s cannot be assigned to this repository" % login)
        ids.append(user["id"])
    return ids


def resolve_milestone(db, repo_id, number):
    if number is None:
        return None
    if isinstance(number, bool) or not isinstance(number, int):
        raise invalid("Issue", "milestone", message="milestone must be a milestone number or null")
    row = db.execute("SELECT id FROM milestones WHERE repo_id = ? AND number = ?", (repo_id, number)).fetchone()
    if row is None:
        raise invalid("Issue", "milestone", "invalid", "milestone %d does not exist" % number)
    return row["id"]


def set_issue_relations(req, db, repo, issue_id, body):
    """labels, assignees (or assignee) and milestone from a body, for callers allowed to triage."""
    if "labels" in body:
        labels = [l["name"] if isinstance(l, dict) else l for l in req.field(body, "labels", list, "Issue")]
        db.execute("DELETE FROM issue_labels WHERE issue_id = ?", (issue_id,))
        for label_id in resolve_labels(db, repo["id"], labels):
            db.execute("INSERT OR IGNORE INTO issue_labels (issue_id, label_id) VALUES (?, ?)", (issue_id, label_id))
    logins = None
    if "assignees" in body:
        logins = req.field(body, "assignees", list, "Issue") or []
    elif "assignee" in body:
        logins = [body["assignee"]] if body["assignee"] else []
    if logins is not None:
        db.execute("DELETE FROM issue_assignees WHERE issue_id = ?", (issue_id,))
        for user_id in resolve_assignees(req, repo, logins[:10]):
            db.execute("INSERT OR IGNORE INTO issue_assignees (issue_id, user_id) VALUES (?, ?)", (issue_id, user_id))
    if "milestone" in body:
        db.execute("UPDATE issues SET milestone_id = ? WHERE id = ?",
                   (resolve_milestone(db, repo["id"], body["milestone"]), issue_id))


def state_change(req, state, reason=None):
    """The columns that closing or reopening an issue sets."""
    closing = state == "closed"
    return {"state": state, "closed_at": now() if closing else None,
            "closed_by": req.principal.user["id"] if closing else None,
            "state_reason": (reason or "completed") if closing else "reopened"}


def next_issue_number(db, repo_id):
    return db.execute("SELECT COALESCE(MAX(number), 0) + 1 AS n FROM issues WHERE repo_id = ?",
                      (repo_id,)).fetchone()["n"]


def insert_issue(db, repo_id, user_id, title, body, is_pull=False):
    stamp = now()
    number = next_issue_number(db, repo_id)
    issue_id = db.execute("INSERT INTO issues (repo_id, number, user_id, title, body, is_pull, created_at, updated_at)"
                          " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                          (repo_id, number, user_id, title, body, int(is_pull), stamp, stamp)).lastrowid
    return issue_id, number


@route("POST", "/api/v3/repos/{owner}/{repo}/issues")
def create_issue(req, owner, repo):
    body = req.json()
    title = text_field(req, body, "title", "Issue", required=True, limit=256)
    text = text_field(req, body, "body", "Issue")
    row = find_repo(req, owner, repo, "open_issue")
    return 201, issue_json(req.app, row, open_issue(req, row, title, text, body))


def open_issue(req, row, title, text, relations):
    """After open_issue was allowed: the issue row. As on GitHub, labels, assignees and milestone
    from someone who may not triage are dropped."""
    may_triage = req.can("triage_issue", Resource.repo(row))
    with req.transaction() as db:
        issue_id, number = insert_issue(db, row["id"], req.principal.user["id"], title, text)
        if may_triage:
            set_issue_relations(req, db, row, issue_id, relations)
        req.effect("opened issue #%d" % number)
    return req.app.store.one("SELECT * FROM issues WHERE id = ?", issue_id)


ISSUE_SORTS = {"created": "created_at", "updated": "updated_at",
               "comments": "(SELECT COUNT(*) FROM comments c WHERE c.issue_id = i.id)"}


def issue_filters(req, where, args):
    """The list filters GitHub takes: state, labels, assignee, creator, mentioned, milestone, since."""
    state = req.query.get("state", "open")
    if state in ("open", "closed"):
        where.append("i.state = ?")
        args.append(state)
    elif state != "all":
        raise invalid("Issue", "state", message="state must be open, closed or all")
    for label in [l for l in req.query.get("labels", "").split(",") if l.strip()]:
        where.append("i.id IN (SELECT il.issue_id FROM issue_labels il JOIN labels l ON l.id = il.label_id"
                     " WHERE l.name = ?)")
        args.append(label.strip())
    assignee = req.query.get("assignee")
    if assignee == "none":
        where.append("NOT EXISTS (SELECT 1 FROM issue_assignees ia WHERE ia.issue_id = i.id)")
    elif assignee == "*":
        where.append("EXISTS (SELECT 1 FROM issue_assignees ia WHERE ia.issue_id = i.id)")
    elif assignee:
        where.append("i.id IN (SELECT ia.issue_id FROM issue_assignees ia JOIN accounts a ON a.id = ia.user_id"
                     " WHERE a.login = ?)")
        args.append(assignee)
    if req.query.get("creator"):
        where.append("i.user_id = (SELECT id FROM accounts WHERE login = ?)")
        args.append(req.query["creator"])
    if req.query.get("mentioned"):
        mention = "%@" + req.query["mentioned"] + "%"
        where.append("(i.body LIKE ? OR i.id IN (SELECT issue_id FROM comments WHERE body LIKE ?))")
        args += [mention, mention]
    milestone = req.query.get("milestone")
    if milestone == "none":
        where.append("i.milestone_id IS NULL")
    elif milestone == "*":
        where.append("i.milestone_id IS NOT NULL")
    elif milestone:
        where.append("i.milestone_id = (SELECT id FROM milestones m WHERE m.repo_id = i.repo_id AND m.number = ?)")
        args.append(int(milestone) if milestone.isdigit() else -1)
    if req.query.get("since"):
        where.append("i.updated_at >= ?")
        args.append(req.query["since"])
    sort = ISSUE_SORTS.get(req.query.get("sort", "created"))
    if sort is None:
        raise invalid("Issue", "sort", message="sort must be created, updated or comments")
    direction = "ASC" if req.query.get("direction") == "asc" else "DESC"
    return " ORDER BY %s %s, i.number %s" % (sort, direction, direction)


@route("GET", "/api/v3/repos/{owner}/{repo}/issues")
def list_issues(req, owner, repo):
    row = find_repo(req, owner, repo)
    where, args = ["i.repo_id = ?"], [row["id"]]
    order = issue_filters(req, where, args)
    issues = req.app.store.all("SELECT i.* FROM issues i WHERE %s%s" % (" AND ".join(where), order), *args)
    return [issue_json(req.app, row, i) for i in req.paginate(issues)]


@route("GET", "/api/v3/issues")
@route("GET", "/api/v3/user/issues")
def list_my_issues(req):
    """Issues across the repositories the caller can read: filter=assigned (default), created,
    mentioned, subscribed (as assigned or created here) or all."""
    user = signed_in(req)
    req.check("read_account", Resource.account(user))
    where, args = [], []
    kind = req.query.get("filter", "assigned")
    if kind == "assigned":
        where.append("i.id IN (SELECT issue_id FROM issue_assignees WHERE user_id = ?)")
        args.append(user["id"])
    elif kind == "created":
        where.append("i.user_id = ?")
        args.append(user["id"])
    elif kind in ("mentioned", "subscribed"):
        where.append("(i.user_id = ? OR i.id IN (SELECT issue_id FROM issue_assignees WHERE user_id = ?)"
                     " OR i.body LIKE ?)")
        args += [user["id"], user["id"], "%@" + user["login"] + "%"]
    elif kind != "all":
        raise invalid("Issue", "filter", message="filter must be assigned, created, mentioned, subscribed or all")
    order = issue_filters(req, where, args)
    repos = {r["id"]: r for r, _ in visible_repos(req, repos_reachable_by(req.app.store, user))}
    if not repos:
        return []
    where.append("i.repo_id IN (%s)" % ",".join("?" * len(repos)))
    args += list(repos)
    issues = req.app.store.all("SELECT i.* FROM issues i WHERE %s%s" % (" AND ".join(where), order), *args)
    return [issue_json(req.app, repos[i["repo_id"]], i) for i in req.paginate(issues)]


@route("GET", "/api/v3/repos/{owner}/{repo}/issues/{number:int}")
def get_issue(req, owner, repo, number):
    row, issue = find_issue(req, owner, repo, number)
    return issue_json(req.app, row, issue)


@route("PATCH", "/api/v3/repos/{owner}/{repo}/issues/{number:int}")
def update_issue(req, owner, repo, number):
    body = req.json()
    row, issue = find_issue(req, owner, repo, number, "edit_issue")
    fields = {}
    title = text_field(req, body, "title", "Issue", limit=256)
    if title is not None:
        if not title.strip():
            raise invalid("Issue", "title", "missing_field", "title cannot be blank")
        fields["title"] = title
    if "body" in body:
        fields["body"] = text_field(req, body, "body", "Issue")
    state = req.field(body, "state", str, "Issue")
    if state is not None:
        if state not in ("open", "closed"):
            raise invalid("Issue", "state", message="state must be open or closed")
        if issue["is_pull"] and state == "open" and req.app.store.one(
                "SELECT merged_at FROM pulls WHERE issue_id = ?", issue["id"])["merged_at"]:
            raise invalid("PullRequest", "state", "custom", "a merged pull request cannot be reopened")
        reason = req.field(body, "state_reason", str, "Issue")
        if reason not in (None, "completed", "not_planned", "reopened"):
            raise invalid("Issue", "state_reason", message="state_reason must be completed, not_planned or reopened")
        if state != issue["state"]:
            fields.update(state_change(req, state, reason))
    relations = {k: body[k] for k in ("labels", "assignees", "assignee", "milestone") if k in body}
    if relations:
        req.authorize("triage_issue", Resource.repo(row))
    with req.transaction() as db:
        fields["updated_at"] = now()
        update_row(db, "issues", fields, "id", issue["id"])
        set_issue_relations(req, db, row, issue["id"], relations)
        req.effect("updated #%d: %s" % (issue["number"], ", ".join(sorted(set(fields) - {"updated_at"}
                                                                            | set(relations))) or "nothing"))
    return issue_json(req.app, row, req.app.store.one("SELECT * FROM issues WHERE id = ?", issue["id"]))


@route("PUT", "/api/v3/repos/{owner}/{repo}/issues/{number:int}/lock")
def lock_issue(req, owner, repo, number):
    body = req.json()
    row, issue = find_issue(req, owner, repo, number)
    req.authorize("triage_issue", Resource.repo(row))
    reason = req.field(body, "lock_reason", str, "Issue")
    if reason not in (None, "off-topic", "too heated", "resolved", "spam"):
        raise invalid("Issue", "lock_reason", message="lock_reason must be off-topic, too heated, resolved or spam")
    set_locked(req, issue, True, reason)
    return 204, None


@route("DELETE", "/api/v3/repos/{owner}/{repo}/issues/{number:int}/lock")
def unlock_issue(req, owner, repo, number):
    row, issue = find_issue(req, owner, repo, number)
    req.authorize("triage_issue", Resource.repo(row))
    set_locked(req, issue, False)
    return 204, None


def set_locked(req, issue, locked, reason=None):
    """Lock a conversation (comments then need triage) or unlock it; REST and GraphQL alike."""
    with req.transaction() as db:
        db.execute("UPDATE issues SET locked = ?, lock_reason = ?, updated_at = ? WHERE id = ?",
                   (int(locked), reason if locked else None, now(), issue["id"]))
        req.effect("%s #%d" % ("locked" if locked else "unlocked", issue["number"]))


@route("GET", "/api/v3/repos/{owner}/{repo}/issues/{number:int}/comments")
def list_comments(req, owner, repo, number):
    row, issue = find_issue(req, owner, repo, number)
    where, args = "issue_id = ?", [issue["id"]]
    if req.query.get("since"):
        where, args = where + " AND updated_at >= ?", args + [req.query["since"]]
    rows = req.app.store.all("SELECT * FROM comments WHERE %s ORDER BY id" % where, *args)
    return [comment_json(req.app, row, issue["number"], c) for c in req.paginate(rows)]


@route("GET", "/api/v3/repos/{owner}/{repo}/issues/comments")
def list_repo_comments(req, owner, repo):
    row = find_repo(req, owner, repo)
    rows = req.app.store.all("SELECT c.*, i.number FROM comments c JOIN issues i ON i.id = c.issue_id"
                             " WHERE i.repo_id = ? ORDER BY c.id", row["id"])
    return [comment_json(req.app, row, c["number"], c) for c in req.paginate(rows)]


@route("POST", "/api/v3/repos/{owner}/{repo}/issues/{number:int}/comments")
def create_comment(req, owner, repo, number):
    body = req.json()
    text = text_field(req, body, "body", "IssueComment", required=True)
    row, issue = find_issue(req, owner, repo, number, "comment")
    return 201, comment_json(req.app, row, issue["number"], add_comment(req, issue, text))


def add_comment(req, issue, text):
    """After comment was allowed: the new comment row."""
    with req.transaction() as db:
        stamp = now()
        comment_id = insert_row(db, "comments", {"issue_id": issue["id"], "user_id": req.principal.user["id"],
                                                 "body": text, "created_at": stamp, "updated_at": stamp})
        db.execute("UPDATE issues SET updated_at = ? WHERE id = ?", (stamp, issue["id"]))
        req.effect("commented on #%d (comment %d)" % (issue["number"], comment_id))
    return req.app.store.one("SELECT * FROM comments WHERE id = ?", comment_id)


def find_comment(req, owner, repo, comment_id, action="read_code"):
    row = find_repo(req, owner, repo)
    comment = req.app.store.one("SELECT c.*, i.number FROM comments c JOIN issues i ON i.id = c.issue_id"
                                " WHERE c.id = ? AND i.repo_id = ?", int(comment_id), row["id"])
    if comment is None:
        raise HTTPError(404, "Not Found")
    if action != "read_code":
        req.authorize(action, Resource.repo(row), author_id=comment["user_id"])
    return row, comment


@route("GET", "/api/v3/repos/{owner}/{repo}/issues/comments/{comment_id:int}")
def get_comment(req, owner, repo, comment_id):
    row, comment = find_comment(req, owner, repo, comment_id)
    return comment_json(req.app, row, comment["number"], comment)


@route("PATCH", "/api/v3/repos/{owner}/{repo}/issues/comments/{comment_id:int}")
def update_comment(req, owner, repo, comment_id):
    body = req.json()
    text = text_field(req, body, "body", "IssueComment", required=True)
    row, comment = find_comment(req, owner, repo, comment_id, "edit_comment")
    with req.transaction() as db:
        db.execute("UPDATE comments SET body = ?, updated_at = ? WHERE id = ?", (text, now(), comment["id"]))
        req.effect("edited comment %d" % comment["id"])
    return comment_json(req.app, row, comment["number"],
                        req.app.store.one("SELECT * FROM comments WHERE id = ?", comment["id"]))


@route("DELETE", "/api/v3/repos/{owner}/{repo}/issues/comments/{comment_id:int}")
def delete_comment(req, owner, repo, comment_id):
    _, comment = find_comment(req, owner, repo, comment_id, "edit_comment")
    with req.transaction() as db:
        db.execute("DELETE FROM comments WHERE id = ?", (comment["id"],))
        req.effect("deleted comment %d on #%d" % (comment["id"], comment["number"]))
    return 204, None


def label_fields(req, body, creating):
    fields = {}
    name = req.field(body, "name", str, "Label", required=creating)
    if name is not None:
        if not name.strip() or len(name) > 50:
            raise invalid("Label", "name", message="name must be 1 to 50 characters")
        fields["name"] = name
    new_name = req.field(body, "new_name", str, "Label")
    if new_name is not None:
        if not new_name.strip() or len(new_name) > 50:
            raise invalid("Label", "new_name", message="new_name must be 1 to 50 characters")
        fields["name"] = new_name
    color = req.field(body, "color", str, "Label", default="ededed" if creating else None)
    if color is not None:
        color = color.lstrip("#")
        if not HEX_COLOR_RE.match(color):
            raise invalid("Label", "color", message="color must be six hexadecimal digits, like f29513")
        fields["color"] = color.lower()
    description = text_field(req, body, "description", "Label", limit=100)
    if description is not None:
        fields["description"] = description
    return fields


def find_label(req, row, name):
    label = req.app.store.one("SELECT * FROM labels WHERE repo_id = ? AND name = ?", row["id"], name)
    if label is None:
        raise HTTPError(404, "Not Found")
    return label


@route("GET", "/api/v3/repos/{owner}/{repo}/labels")
def list_labels(req, owner, repo):
    row = find_repo(req, owner, repo)
    return [label_json(req.app, row, l) for l in req.paginate(
        req.app.store.all("SELECT * FROM labels WHERE repo_id = ? ORDER BY name", row["id"]))]


@route("POST", "/api/v3/repos/{owner}/{repo}/labels")
def create_label(req, owner, repo):
    body = req.json()
    fields = label_fields(req, body, creating=True)
    row = find_repo(req, owner, repo, "manage_labels")
    with req.transaction() as db:
        if db.execute("SELECT 1 FROM labels WHERE repo_id = ? AND name = ?", (row["id"], fields["name"])).fetchone():
            raise invalid("Label", "name", "already_exists", "label %s already exists" % fields["name"])
        label_id = db.execute("INSERT INTO labels (repo_id, name, color, description) VALUES (?, ?, ?, ?)",
                              (row["id"], fields["name"], fields["color"], fields.get("description"))).lastrowid
        req.effect("created label %s" % fields["name"])
    return 201, label_json(req.app, row, req.app.store.one("SELECT * FROM labels WHERE id = ?", label_id))


@route("GET", "/api/v3/repos/{owner}/{repo}/labels/{name}")
def get_label(req, owner, repo, name):
    row = find_repo(req, owner, repo)
    return label_json(req.app, row, find_label(req, row, name))


@route("PATCH", "/api/v3/repos/{owner}/{repo}/labels/{name}")
def update_label(req, owner, repo, name):
    body = req.json()
    fields = label_fields(req, body, creating=False)
    row = find_repo(req, owner, repo, "manage_labels")
    label = find_label(req, row, name)
    with req.transaction() as db:
        if "name" in fields and fields["name"].lower() != label["name"].lower() and db.execute(
                "SELECT 1 FROM labels WHERE repo_id = ? AND name = ?", (row["id"], fields["name"])).fetchone():
            raise invalid("Label", "name", "already_exists", "label %s already exists" % fields["name"])
        update_row(db, "labels", fields, "id", label["id"])
        req.effect("updated label %s" % label["name"])
    return label_json(req.app, row, req.app.store.one("SELECT * FROM labels WHERE id = ?", label["id"]))


@route("DELETE", "/api/v3/repos/{owner}/{repo}/labels/{name}")
def delete_label(req, owner, repo, name):
    row = find_repo(req, owner, repo, "manage_labels")
    label = find_label(req, row, name)
    with req.transaction() as db:
        db.execute("DELETE FROM labels WHERE id = ?", (label["id"],))
        req.effect("deleted label %s" % label["name"])
    return 204, None


def issue_labels_json(req, row, issue):
    return [label_json(req.app, row, l) for l in req.app.store.all(
        "SELECT l.* FROM labels l JOIN issue_labels il ON il.label_id = l.id WHERE il.issue_id = ? ORDER BY l.name",
        issue["id"])]


@route("GET", "/api/v3/repos/{owner}/{repo}/issues/{number:int}/labels")
def list_issue_labels(req, owner, repo, number):
    row, issue = find_issue(req, owner, repo, number)
    return req.paginate(issue_labels_json(req, row, issue))


def label_names(req, body):
    """POST/PUT bodies for issue labels: {"labels": ["bug"]}, {"labels": [{"name": "bug"}]} or ["bug"]."""
    names = req.field(body, "labels", list, "Issue", required=True)
    return [l["name"] if isinstance(l, dict) and "name" in l else l for l in names]


def change_issue_labels(req, owner, repo, number, replace):
    body = req.json(array_key="labels")
    row, issue = find_issue(req, owner, repo, number, "triage_issue")
    names = label_names(req, body)
    with req.transaction() as db:
        if replace:
            db.execute("DELETE FROM issue_labels WHERE issue_id = ?", (issue["id"],))
        for label_id in resolve_labels(db, row["id"], names):
            db.execute("INSERT OR IGNORE INTO issue_labels (issue_id, label_id) VALUES (?, ?)", (issue["id"], label_id))
        db.execute("UPDATE issues SET updated_at = ? WHERE id = ?", (now(), issue["id"]))
        req.effect("%s labels of #%d: %s" % ("set" if replace else "added", issue["number"], ", ".join(names)))
    return issue_labels_json(req, row, issue)


@route("POST", "/api/v3/repos/{owner}/{repo}/issues/{number:int}/labels")
def add_issue_labels(req, owner, repo, number):
    return change_issue_labels(req, owner, repo, number, replace=False)


@route("PUT", "/api/v3/repos/{owner}/{repo}/issues/{number:int}/labels")
def set_issue_labels(req, owner, repo, number):
    return change_issue_labels(req, owner, repo, number, replace=True)


@route("DELETE", "/api/v3/repos/{owner}/{repo}/issues/{number:int}/labels")
def clear_issue_labels(req, owner, repo, number):
    _, issue = find_issue(req, owner, repo, number, "triage_issue")
    with req.transaction() as db:
        db.execute("DELETE FROM issue_labels WHERE issue_id = ?", (issue["id"],))
        req.effect("removed every label of #%d" % issue["number"])
    return 204, None


@route("DELETE", "/api/v3/repos/{owner}/{repo}/issues/{number:int}/labels/{name}")
def remove_issue_label(req, owner, repo, number, name):
    row, issue = find_issue(req, owner, repo, number, "triage_issue")
    label = find_label(req, row, name)
    with req.transaction() as db:
        if not db.execute("DELETE FROM issue_labels WHERE issue_id = ? AND label_id = ?",
                          (issue["id"], label["id"])).rowcount:
            raise HTTPError(404, "Label does not exist")
        req.effect("removed label %s from #%d" % (label["name"], issue["number"]))
    return issue_labels_json(req, row, issue)


def milestone_fields(req, body, creating):
    fields = {}
    title = text_field(req, body, "title", "Milestone", required=creating, limit=256)
    if title is not None:
        fields["title"] = title
    if "description" in body:
        fields["description"] = text_field(req, body, "description", "Milestone")
    state = req.field(body, "state", str, "Milestone")
    if state is not None:
        if state not in ("open", "closed"):
            raise invalid("Milestone", "state", message="state must be open or closed")
        fields["state"] = state
        fields["closed_at"] = now() if state == "closed" else None
    due_on = req.field(body, "due_on", str, "Milestone")
    if due_on is not None:
        try:
            fields["due_on"] = parse_time(due_on).strftime("%Y-%m-%dT%H:%M:%SZ")
        except ValueError:
            raise invalid("Milestone", "due_on", message="due_on must be an ISO 8601 time with a zone")
    return fields


def find_milestone(req, row, number):
    milestone = req.app.store.one("SELECT * FROM milestones WHERE repo_id = ? AND number = ?", row["id"], int(number))
    if milestone is None:
        raise HTTPError(404, "Not Found")
    return milestone


@route("GET", "/api/v3/repos/{owner}/{repo}/milestones")
def list_milestones(req, owner, repo):
    row = find_repo(req, owner, repo)
    state = req.query.get("state", "open")
    rows = req.app.store.all("SELECT * FROM milestones WHERE repo_id = ?%s ORDER BY %s %s" % (
        " AND state = ?" if state in ("open", "closed") else "",
        "due_on" if req.query.get("sort", "due_on") == "due_on" else "number",
        "DESC" if req.query.get("direction") == "desc" else "ASC"), row["id"],
        *([state] if state in ("open", "closed") else []))
    return [milestone_json(req.app, row, m) for m in req.paginate(rows)]


@route("POST", "/api/v3/repos/{owner}/{repo}/milestones")
def create_milestone(req, owner, repo):
    body = req.json()
    fields = milestone_fields(req, body, creating=True)
    row = find_repo(req, owner, repo, "manage_labels")
    with req.transaction() as db:
        if db.execute("SELECT 1 FROM milestones WHERE repo_id = ? AND title = ?", (row["id"], fields["title"])).fetchone():
            raise invalid("Milestone", "title", "already_exists", "milestone %s already exists" % fields["title"])
        number = db.execute("SELECT COALESCE(MAX(number), 0) + 1 AS n FROM milestones WHERE repo_id = ?",
                            (row["id"],)).fetchone()["n"]
        stamp = now()
        columns = dict(fields, repo_id=row["id"], number=number, creator_id=req.principal.user["id"],
                       created_at=stamp, updated_at=stamp)
        milestone_id = insert_row(db, "milestones", columns)
        req.effect("created milestone %d %s" % (number, fields["title"]))
    return 201, milestone_json(req.app, row, req.app.store.one("SELECT * FROM milestones WHERE id = ?", milestone_id))


@route("GET", "/api/v3/repos/{owner}/{repo}/milestones/{number:int}")
def get_milestone(req, owner, repo, number):
    row = find_repo(req, owner, repo)
    return milestone_json(req.app, row, find_milestone(req, row, number))


@route("PATCH", "/api/v3/repos/{owner}/{repo}/milestones/{number:int}")
def update_milestone(req, owner, repo, number):
    body = req.json()
    fields = milestone_fields(req, body, creating=False)
    row = find_repo(req, owner, repo, "manage_labels")
    milestone = find_milestone(req, row, number)
    with req.transaction() as db:
        fields["updated_at"] = now()
        update_row(db, "milestones", fields, "id", milestone["id"])
        req.effect("updated milestone %d" % milestone["number"])
    return milestone_json(req.app, row, req.app.store.one("SELECT * FROM milestones WHERE id = ?", milestone["id"]))


@route("DELETE", "/api/v3/repos/{owner}/{repo}/milestones/{number:int}")
def delete_milestone(req, owner, repo, number):
    row = find_repo(req, owner, repo, "manage_labels")
    milestone = find_milestone(req, row, number)
    with req.transaction() as db:
        db.execute("DELETE FROM milestones WHERE id = ?", (milestone["id"],))
        req.effect("deleted milestone %d" % milestone["number"])
    return 204, None


# -- pull requests and reviews ------------------------------------------------------------------

CLOSING_KEYWORDS_RE = re.compile(r"\b(?:close[sd]?|fix(?:e[sd])?|resolve[sd]?)\s*:?\s+#(\d+)\b", re.IGNORECASE)


def signature(user):
    return "%s <%s>" % (user["name"] or user["login"], noreply_email(user["login"]))


class PullState:
    """A pull request as the repository sees it now: live head and base shas (pushing to the head
    branch updates an open pull request), merge base, the commits it brings, and mergeability."""

    def __init__(self, app, repo_row, issue, pull):
        self.app, self.repo_row, self.issue, self.pull = app, repo_row, issue, pull
        self.head_sha, self.base_sha = pull["head_sha"], pull["base_sha"]
        open_ = issue["state"] == "open"
        self.head_repo = head_repository(app.store, repo_row, pull)
        self.cross = pull["head_repo_id"] != repo_row["id"]
        if open_ and self.cross:
            self.head_sha = follow_fork_head(app, repo_row, issue, pull, self.head_repo) or self.head_sha
        with open_repo(app, repo_row["id"]) as git:
            if open_ and not self.cross:
                self.head_sha = git.refs[b"refs/heads/" + pull["head_ref"].encode()].decode() if (
                    b"refs/heads/" + pull["head_ref"].encode()) in git.refs else self.head_sha
                self.base_sha = git.refs[b"refs/heads/" + pull["base_ref"].encode()].decode() if (
                    b"refs/heads/" + pull["base_ref"].encode()) in git.refs else self.base_sha
            self.merge_base = merge_base(git, self.base_sha, self.head_sha)
            self.commits = commits_between(git, self.merge_base or "", self.head_sha) if not pull["merged_at"] else \
                commits_between(git, pull["base_sha"], pull["head_sha"])
            base_tree = git[self.merge_base.encode()].tree.decode() if self.merge_base else None
            self.files = changed_files(git, base_tree, git[self.head_sha.encode()].tree.decode())


def head_repository(store, repo_row, pull):
    """The repository a pull request's head branch lives in: its own, a fork's, or None once that fork
    is deleted."""
    if pull["head_repo_id"] == repo_row["id"]:
        return repo_row
    return repo_by_id(store, pull["head_repo_id"]) if pull["head_repo_id"] else None


def follow_fork_head(app, repo_row, issue, pull, head_repo):
    """The live head of a pull request from a fork: the fork's branch, whose new commits are brought
    over as refs/pull/N/head when the pull request is next looked at. None once the fork or its
    branch is gone (the last head brought over stands)."""
    pull_ref = "refs/pull/%d/head" % issue["number"]
    with open_repo(app, repo_row["id"]) as git:
        known = git.refs[pull_ref.encode()].decode() if pull_ref.encode() in git.refs else None
    if head_repo is None:
        return known
    with open_repo(app, head_repo["id"]) as fork:
        sha = branch_sha(fork, pull["head_ref"])
    if sha is not None and sha != known:
        try:
            copy_refs(app, repo_dir(app, head_repo["id"]), repo_dir(app, repo_row["id"]),
                      {pull_ref: "refs/heads/" + pull["head_ref"]})
        except (OSError, subprocess.CalledProcessError, KeyError) as error:
            # a read must not fail because the fork cannot be read now: the last head brought over stands
            print("agentgit: could not bring over %s of pull request #%d: %s" % (pull["head_ref"], issue["number"],
                                                                              error), file=sys.stderr)
            return known
    return sha


def mergeability(app, state):
    """(mergeable, mergeable_state) as GitHub reports them, from a trial merge that moves nothing."""
    if state.issue["state"] != "open":
        return None, "unknown"
    with open_repo(app, state.repo_row["id"]) as git:
        _, conflicts = merge_trees(git, state.merge_base, state.base_sha, state.head_sha)
    if conflicts:
        return False, "dirty"
    return True, "draft" if state.pull["draft"] else "clean"


def pull_side_json(app, repo_row, ref, sha):
    owner = {"id": repo_row["owner_id"], "login": repo_row["owner_login"], "kind": repo_row["owner_kind"],
             "site_admin": repo_row["owner_site_admin"]}
    return {"label": "%s:%s" % (repo_row["owner_login"], ref), "ref": ref, "sha": sha,
            "user": user_json(app, owner), "repo": repo_json(app, repo_row)}


def pull_json(app, repo_row, issue, pull, detail=False):
    """GitHub's pull-request (``detail``: with mergeability and diff statistics) or pull-request-simple."""
    state = PullState(app, repo_row, issue, pull)
    name = full_name(repo_row)
    api = "%s/repos/%s" % (app.api, name)
    html = "%s/%s/pull/%d" % (app.url, name, issue["number"])
    base = issue_json(app, repo_row, issue)
    requested = app.store.all("SELECT a.* FROM accounts a JOIN review_requests r ON r.user_id = a.id"
                              " WHERE r.issue_id = ? ORDER BY a.login", issue["id"])
    out = {
        "url": "%s/pulls/%d" % (api, issue["number"]), "id": issue["id"], "node_id": node_id("PullRequest", issue["id"]),
        "html_url": html, "diff_url": html + ".diff", "patch_url": html + ".patch", "issue_url": base["url"],
        "commits_url": "%s/pulls/%d/commits" % (api, issue["number"]),
        "review_comments_url": "%s/pulls/%d/comments" % (api, issue["number"]),
        "review_comment_url": "%s/pulls/comments{/number}" % api, "comments_url": base["comments_url"],
        "statuses_url": "%s/statuses/%s" % (api, state.head_sha), "number": issue["number"],
        "state": issue["state"], "locked": base["locked"], "title": issue["title"], "user": base["user"],
        "body": issue["body"], "labels": base["labels"], "milestone": base["milestone"],
        "active_lock_reason": base["active_lock_reason"], "created_at": issue["created_at"],
        "updated_at": issue["updated_at"], "closed_at": issue["closed_at"], "merged_at": pull["merged_at"],
        "merge_commit_sha": pull["merge_commit_sha"], "assignee": base["assignee"], "assignees": base["assignees"],
        "requested_reviewers": [user_json(app, r) for r in requested], "requested_teams": [],
        "head": pull_side_json(app, state.head_repo or repo_row, pull["head_ref"], state.head_sha),
        "base": pull_side_json(app, repo_row, pull["base_ref"], state.base_sha),
        "_links": {key: {"href": href} for key, href in (
            ("self", "%s/pulls/%d" % (api, issue["number"])), ("html", html), ("issue", base["url"]),
            ("comments", base["comments_url"]), ("review_comments", "%s/pulls/%d/comments" % (api, issue["number"])),
            ("review_comment", "%s/pulls/comments{/number}" % api),
            ("commits", "%s/pulls/%d/commits" % (api, issue["number"])),
            ("statuses", "%s/statuses/%s" % (api, state.head_sha)))},
        "author_association": base["author_association"], "auto_merge": None, "draft": bool(pull["draft"]),
    }
    if detail:
        mergeable, mergeable_state = mergeability(app, state)
        reviews = app.store.one("SELECT COUNT(*) AS n FROM review_comments WHERE issue_id = ?", issue["id"])["n"]
        out.update({
            "merged": pull["merged_at"] is not None, "mergeable": mergeable, "rebaseable": mergeable,
            "mergeable_state": mergeable_state, "merged_by": user_json_by_id(app, pull["merged_by"]),
            "comments": base["comments"], "review_comments": reviews, "maintainer_can_modify": False,
            "commits": len(state.commits), "additions": sum(f[2] for f in state.files),
            "deletions": sum(f[3] for f in state.files), "changed_files": len(state.files),
        })
    return out


def find_pull(req, owner, repo, number, action="read_code", **context):
    repo_row, issue = find_issue(req, owner, repo, number, action, **context)
    pull = req.app.store.one("SELECT * FROM pulls WHERE issue_id = ?", issue["id"])
    if pull is None:
        raise HTTPError(404, "Not Found")
    return repo_row, issue, pull



@route("POST", "/api/v3/repos/{owner}/{repo}/pulls")
def create_pull(req, owner, repo):
    body = req.json()
    title = text_field(req, body, "title", "PullRequest", required=True, limit=256)
    text = text_field(req, body, "body", "PullRequest")
    head = req.field(body, "head", str, "PullRequest", required=True)
    base = req.field(body, "base", str, "PullRequest", required=True)
    draft = req.field(body, "draft", bool, "PullRequest", default=False)
    row = find_repo(req, owner, repo, "open_pr")
    issue_id = open_pull(req, row, head, base, title, text, draft)
    return 201, pull_json(req.app, row, *pull_rows(req.app, issue_id), detail=True)


def open_pull(req, row, head, base, title, text, draft):
    """After open_pr was allowed: validate the branches and open the pull request; its issue id. The
    head is a branch of this repository, or ``owner:branch`` of a repository in its fork network, whose
    commits are brought over as refs/pull/N/head."""
    head_owner, _, head_ref = head.rpartition(":")
    head_repo = row
    if head_owner and head_owner.lower() != row["owner_login"].lower():
        head_repo = fork_in_network(req, row, head_owner)
        if head_repo is None:
            raise invalid("PullRequest", "head", "invalid", "%s has no fork of %s you can see" % (
                head_owner, full_name(row)))
    with open_repo(req.app, head_repo["id"]) as fork:
        head_sha = branch_sha(fork, head_ref)
    if head_sha is not None and head_repo is not row:     # its commits, so that they can be compared
        copy_refs(req.app, repo_dir(req.app, head_repo["id"]), repo_dir(req.app, row["id"]),
                  {None: "refs/heads/" + head_ref})
    with open_repo(req.app, row["id"]) as git:
        base_sha = branch_sha(git, base)
        if base_sha is None:
            raise invalid("PullRequest", "base", "invalid", "base branch %s does not exist" % base)
        if head_sha is None:
            raise invalid("PullRequest", "head", "invalid", "head branch %s does not exist" % head_ref)
        if head_repo is row and head_ref == base or not commits_between(git, base_sha, head_sha):
            raise invalid("PullRequest", "head", "custom", "No commits between %s and %s" % (base, head_ref))
    with req.transaction() as db:
        if db.execute("SELECT 1 FROM pulls p JOIN issues i ON i.id = p.issue_id WHERE i.repo_id = ? AND i.state = 'open'"
                      " AND p.head_repo_id = ? AND p.head_ref = ? AND p.base_ref = ?",
                      (row["id"], head_repo["id"], head_ref, base)).fetchone():
            raise invalid("PullRequest", "head", "custom", "A pull request already exists for %s:%s." % (
                head_repo["owner_login"], head_ref))
        issue_id, number = insert_issue(db, row["id"], req.principal.user["id"], title, text, is_pull=True)
        db.execute("INSERT INTO pulls (issue_id, head_repo_id, head_ref, head_sha, base_ref, base_sha, draft)"
                   " VALUES (?, ?, ?, ?, ?, ?, ?)", (issue_id, head_repo["id"], head_ref, head_sha, base, base_sha,
                                                     int(draft)))
        req.effect("opened pull request #%d %s:%s → %s" % (number, head_repo["owner_login"], head_ref, base))
    if head_repo is not row:
        with open_repo(req.app, row["id"]) as git:
            git.refs[b"refs/pull/%d/head" % number] = head_sha.encode()
    return issue_id


def fork_in_network(req, row, owner_login):
    """The repository of ``owner_login`` in ``row``'s fork network (same root) that the caller can see."""
    store = req.app.store
    root = network_root(store, row)
    for candidate in store.all(REPO_SELECT + " WHERE a.login = ? AND r.parent_id IS NOT NULL OR a.login = ? AND"
                               " r.id = ?", owner_login, owner_login, root["id"]):
        if network_root(store, candidate)["id"] == root["id"] and req.can("read_code", Resource.repo(candidate)):
            return candidate
    return None


def network_root(store, row):
    while row["parent_id"] is not None:
        parent = repo_by_id(store, row["parent_id"])
        if parent is None:
            break
        row = parent
    return row


def pull_rows(app, issue_id):
    return (app.store.one("SELECT * FROM issues WHERE id = ?", issue_id),
            app.store.one("SELECT * FROM pulls WHERE issue_id = ?", issue_id))


@route("GET", "/api/v3/repos/{owner}/{repo}/pulls")
def list_pulls(req, owner, repo):
    row = find_repo(req, owner, repo)
    where, args = ["i.repo_id = ?"], [row["id"]]
    state = req.query.get("state", "open")
    if state in ("open", "closed"):
        where.append("i.state = ?")
        args.append(state)
    elif state != "all":
        raise invalid("PullRequest", "state", message="state must be open, closed or all")
    if req.query.get("head"):
        owner, _, branch = req.query["head"].rpartition(":")
        where.append("p.head_ref = ?")
        args.append(branch)
        if owner:       # user:branch, as GitHub takes it: the head repository's owner too
            where.append("p.head_repo_id IN (SELECT r.id FROM repos r JOIN accounts a ON a.id = r.owner_id"
                         " WHERE a.login = ?)")
            args.append(owner)
    if req.query.get("base"):
        where.append("p.base_ref = ?")
        args.append(req.query["base"])
    sort = {"created": "i.created_at", "updated": "i.updated_at", "popularity": "i.updated_at",
            "long-running": "i.created_at"}.get(req.query.get("sort", "created"), "i.created_at")
    direction = "ASC" if req.query.get("direction", "desc" if sort != "long-running" else "asc") == "asc" else "DESC"
    rows = req.app.store.all("SELECT i.*, p.* FROM issues i JOIN pulls p ON p.issue_id = i.id WHERE %s"
                             " ORDER BY %s %s, i.number %s" % (" AND ".join(where), sort, direction, direction), *args)
    return [pull_json(req.app, row, *pull_rows(req.app, r["issue_id"])) for r in req.paginate(rows)]


DIFF_MEDIA = ("application/vnd.github.diff", "application/vnd.github.v3.diff")
PATCH_MEDIA = ("application/vnd.github.patch", "application/vnd.github.v3.patch")


@route("GET", "/api/v3/repos/{owner}/{repo}/pulls/{number:int}")
def get_pull(req, owner, repo, number):
    row, issue, pull = find_pull(req, owner, repo, number)
    accept = req.headers.get("Accept") or ""
    if any(m in accept for m in DIFF_MEDIA + PATCH_MEDIA):
        state = PullState(req.app, row, issue, pull)
        with open_repo(req.app, row["id"]) as git:
            if any(m in accept for m in PATCH_MEDIA):
                text = b"".join(commit_patch(git, c, i + 1, len(state.commits)) for i, c in enumerate(state.commits))
            else:
                base_tree = git[state.merge_base.encode()].tree.decode() if state.merge_base else None
                text = tree_diff(git, base_tree, git[state.head_sha.encode()].tree.decode())
        return 200, text, {"Content-Type": "text/plain; charset=utf-8"}
    return pull_json(req.app, row, issue, pull, detail=True)


def commit_patch(git, commit, index, total):
    """One commit as `git format-patch` writes it."""
    out = io.BytesIO()
    parent_tree = git[commit.parents[0]].tree.decode() if commit.parents else None
    diff = tree_diff(git, parent_tree, commit.tree.decode())
    write_commit_patch(out, commit, diff, (index, total))
    return out.getvalue()


@route("PATCH", "/api/v3/repos/{owner}/{repo}/pulls/{number:int}")
def update_pull(req, owner, repo, number):
    body = req.json()
    row, issue, pull = find_pull(req, owner, repo, number, "edit_issue")
    fields, pull_fields = {}, {}
    title = text_field(req, body, "title", "PullRequest", limit=256)
    if title is not None:
        fields["title"] = title
    if "body" in body:
        fields["body"] = text_field(req, body, "body", "PullRequest")
    state = req.field(body, "state", str, "PullRequest")
    if state is not None and state != issue["state"]:
        if state not in ("open", "closed"):
            raise invalid("PullRequest", "state", message="state must be open or closed")
        if pull["merged_at"]:
            raise invalid("PullRequest", "state", "custom", "a merged pull request cannot be reopened")
        fields.update(state=state, closed_at=now() if state == "closed" else None,
                      closed_by=req.principal.user["id"] if state == "closed" else None)
        if state == "closed":     # remember what it held when it closed
            current = PullState(req.app, row, issue, pull)
            pull_fields.update(head_sha=current.head_sha, base_sha=current.base_sha)
    base = req.field(body, "base", str, "PullRequest")
    if base is not None:
        with open_repo(req.app, row["id"]) as git:
            sha = branch_sha(git, base)
        if sha is None:
            raise invalid("PullRequest", "base", "invalid", "base branch %s does not exist" % base)
        pull_fields.update(base_ref=base, base_sha=sha)
    with req.transaction() as db:
        fields["updated_at"] = now()
        update_row(db, "issues", fields, "id", issue["id"])
        update_row(db, "pulls", pull_fields, "issue_id", issue["id"])
        req.effect("updated pull request #%d: %s" % (issue["number"], ", ".join(
            sorted((set(fields) | set(pull_fields)) - {"updated_at"})) or "nothing"))
    return pull_json(req.app, row, *pull_rows(req.app, issue["id"]), detail=True)


@route("GET", "/api/v3/repos/{owner}/{repo}/pulls/{number:int}/commits")
def list_pull_commits(req, owner, repo, number):
    row, issue, pull = find_pull(req, owner, repo, number)
    state = PullState(req.app, row, issue, pull)
    return [commit_json(req.app, full_name(row), c) for c in req.paginate(state.commits)]


@route("GET", "/api/v3/repos/{owner}/{repo}/pulls/{number:int}/files")
def list_pull_files(req, owner, repo, number):
    row, issue, pull = find_pull(req, owner, repo, number)
    state = PullState(req.app, row, issue, pull)
    api, name = req.app.api, full_name(row)
    out = []
    for path, status, additions, deletions, sha, patch in state.files:
        quoted = urllib.parse.quote(path)
        out.append({"sha": sha, "filename": path, "status": status, "additions": additions, "deletions": deletions,
                    "changes": additions + deletions, "patch": patch,
                    "blob_url": "%s/%s/blob/%s/%s" % (req.app.url, name, state.head_sha, quoted),
                    "raw_url": "%s/%s/raw/%s/%s" % (req.app.url, name, state.head_sha, quoted),
                    "contents_url": "%s/repos/%s/contents/%s?ref=%s" % (api, name, quoted, state.head_sha)})
    return req.paginate(out)


@route("GET", "/api/v3/repos/{owner}/{repo}/pulls/{number:int}/merge")
def check_merged(req, owner, repo, number):
    _, _, pull = find_pull(req, owner, repo, number)
    if not pull["merged_at"]:
        raise HTTPError(404, "Not Found")
    return 204, None


MERGE_METHODS = ("merge", "squash", "rebase")


@route("PUT", "/api/v3/repos/{owner}/{repo}/pulls/{number:int}/merge")
def merge_pull(req, owner, repo, number):
    """Merge by merge commit, squash or rebase: real commits made with dulwich, a three-way content
    merge, and a compare-and-swap of the base branch, so nothing moves on a conflict or a race."""
    body = req.json()
    method = req.field(body, "merge_method", str, "PullRequest", default="merge")
    if method not in MERGE_METHODS:
        raise invalid("PullRequest", "merge_method", message="merge_method must be merge, squash or rebase")
    expected_sha = req.field(body, "sha", str, "PullRequest")
    title = text_field(req, body, "commit_title", "PullRequest", limit=256)
    message = text_field(req, body, "commit_message", "PullRequest")
    row, issue, pull = find_pull(req, owner, repo, number)
    new_sha = merge(req, row, issue, pull, method, expected_sha, title, message)
    return {"sha": new_sha, "merged": True, "message": "Pull Request successfully merged"}


@route("PUT", "/api/v3/repos/{owner}/{repo}/pulls/{number:int}/update-branch")
def update_branch_endpoint(req, owner, repo, number):
    body = req.json()
    expected_sha = req.field(body, "expected_head_sha", str, "PullRequest")
    row, issue, pull = find_pull(req, owner, repo, number)
    update_pull_branch(req, row, issue, pull, expected_sha)
    return 202, {"message": "Updating pull request branch.", "url": "%s/%s/pull/%d" % (
        req.app.url, full_name(row), issue["number"])}


def update_pull_branch(req, row, issue, pull, expected_sha=None):
    """GitHub's "Update branch": merge the base branch into the head branch, in the repository the head
    lives in (a fork's too), as a push to that branch is decided. Nothing moves on a conflict or a race."""
    state = PullState(req.app, row, issue, pull)
    head_repo = state.head_repo
    if issue["state"] != "open" or head_repo is None:
        raise HTTPError(422, "The pull request is closed or its head repository is gone")
    head_ref = b"refs/heads/" + pull["head_ref"].encode()
    req.authorize("push_branch", Resource.repo(head_repo), ref=head_ref.decode())
    if expected_sha and expected_sha != state.head_sha:
        raise HTTPError(422, "expected head sha didn't match current head ref.")
    if state.merge_base == state.base_sha:
        raise HTTPError(422, "There are no new commits on the base branch.")
    if head_repo["id"] != row["id"]:      # the fork needs the base's commits to make the merge
        copy_refs(req.app, repo_dir(req.app, row["id"]), repo_dir(req.app, head_repo["id"]),
                  {None: "refs/heads/" + pull["base_ref"]})
    with open_repo(req.app, head_repo["id"]) as git:
        new_sha, conflicts = merge_commit(git, state.merge_base, state.head_sha, state.base_sha,
                                          signature(req.principal.user),
                                          "Merge branch '%s' into %s" % (pull["base_ref"], pull["head_ref"]))
        if conflicts:
            raise HTTPError(422, "merge conflict between base and head (%s)" % ", ".join(conflicts[:5]))
        if not git.refs.set_if_equals(head_ref, state.head_sha.encode(), new_sha.encode()):
            raise HTTPError(409, "Head branch was modified. Review and try again.")
    with req.transaction():
        req.effect("merged %s into %s of #%d: %s→%s" % (pull["base_ref"], pull["head_ref"], issue["number"],
                                                        state.head_sha[:12], new_sha[:12]))
    return new_sha


def merge(req, row, issue, pull, method, expected_sha=None, title=None, message=None):
    """Decide, merge, record: the new head of the base branch. HTTPError 405/409 when it cannot."""
    state = PullState(req.app, row, issue, pull)
    req.authorize("merge_pr", Resource.repo(row), ref="refs/heads/" + pull["base_ref"], repo=row,
                  pull_number=issue["number"],
                  pull_issue_id=issue["id"], head_sha=state.head_sha)
    if pull["merged_at"] or issue["state"] != "open":
        raise HTTPError(405, "Pull Request is not mergeable")
    if expected_sha and expected_sha != state.head_sha:
        raise HTTPError(409, "Head branch was modified. Review and try the merge again.")
    merger, author = req.principal.user, account_by_id(req.app.store, issue["user_id"]) or req.principal.user
    head_label = "%s/%s" % (row["owner_login"], pull["head_ref"])
    with open_repo(req.app, row["id"]) as git:
        if method == "rebase":
            new_sha = state.base_sha
            for commit in state.commits:
                if len(commit.parents) > 1:
                    raise HTTPError(405, "This branch can't be rebased: it contains merge commits")
                tree, conflicts = merge_trees(git, commit.parents[0].decode(), new_sha, commit.id.decode())
                if conflicts:
                    raise HTTPError(405, "Pull Request is not mergeable")
                new_sha = write_commit(git, tree, [new_sha], commit.author.decode("utf-8", "replace"),
                                       signature(merger), commit.message.decode("utf-8", "replace"),
                                       commit.author_time, commit.author_timezone)
        else:
            tree, conflicts = merge_trees(git, state.merge_base, state.base_sha, state.head_sha)
            if conflicts:
                raise HTTPError(405, "Pull Request is not mergeable")
            if method == "merge":
                text = "%s\n\n%s" % (title or "Merge pull request #%d from %s" % (issue["number"], head_label),
                                     message if message is not None else issue["title"])
                new_sha = write_commit(git, tree, [state.base_sha, state.head_sha], signature(merger),
                                       signature(merger), text)
            else:
                squashed = "\n\n".join("* " + c.message.decode("utf-8", "replace").strip() for c in state.commits)
                text = "%s\n\n%s" % (title or "%s (#%d)" % (issue["title"], issue["number"]),
                                     message if message is not None else squashed)
                new_sha = write_commit(git, tree, [state.base_sha], signature(author), signature(merger), text)
        base_ref = b"refs/heads/" + pull["base_ref"].encode()
        if not git.refs.set_if_equals(base_ref, state.base_sha.encode(), new_sha.encode()):
            raise HTTPError(409, "Base branch was modified. Review and try the merge again.")
    stamp = now()
    with req.transaction() as db:
        db.execute("UPDATE pulls SET merged_at = ?, merged_by = ?, merge_commit_sha = ?, head_sha = ?, base_sha = ?"
                   " WHERE issue_id = ?", (stamp, merger["id"], new_sha, state.head_sha, state.base_sha, issue["id"]))
        db.execute("UPDATE issues SET state = 'closed', closed_at = ?, closed_by = ?, updated_at = ? WHERE id = ?",
                   (stamp, merger["id"], stamp, issue["id"]))
        db.execute("UPDATE repos SET pushed_at = ? WHERE id = ?", (stamp, row["id"]))
        req.effect("merged #%d by %s: %s %s→%s" % (issue["number"], method, base_ref.decode(), state.base_sha[:12],
                                                   new_sha[:12]))
        if pull["base_ref"] == row["default_branch"]:
            closed = close_referenced_issues(db, row, issue, merger, stamp)
            if closed:
                req.effect("closed %s" % ", ".join("#%d" % n for n in closed))
    return new_sha


def close_referenced_issues(db, repo_row, pull_issue, merger, stamp):
    """Issues a merged pull request names with a closing keyword (Fixes #3, closes #4, resolved #5)."""
    numbers = sorted({int(n) for n in CLOSING_KEYWORDS_RE.findall(pull_issue["body"] or "")})
    closed = []
    for number in numbers:
        if db.execute("UPDATE issues SET state = 'closed', state_reason = 'completed', closed_at = ?, closed_by = ?,"
                      " updated_at = ? WHERE repo_id = ? AND number = ? AND state = 'open' AND is_pull = 0",
                      (stamp, merger["id"], stamp, repo_row["id"], number)).rowcount:
            closed.append(number)
    return closed


def review_json(app, repo_row, issue, row):
    name = full_name(repo_row)
    html = "%s/%s/pull/%d#pullrequestreview-%d" % (app.url, name, issue["number"], row["id"])
    pull_url = "%s/repos/%s/pulls/%d" % (app.api, name, issue["number"])
    return {"id": row["id"], "node_id": node_id("PullRequestReview", row["id"]),
            "user": user_json_by_id(app, row["user_id"]), "body": row["body"], "state": row["state"],
            "commit_id": row["commit_id"], "html_url": html, "pull_request_url": pull_url,
            "submitted_at": row["submitted_at"], "_links": {"html": {"href": html}, "pull_request": {"href": pull_url}},
            "author_association": author_association(app.store, repo_row, row["user_id"])}


REVIEW_EVENTS = {"APPROVE": "APPROVED", "REQUEST_CHANGES": "CHANGES_REQUESTED", "COMMENT": "COMMENTED"}


@route("POST", "/api/v3/repos/{owner}/{repo}/pulls/{number:int}/reviews")
def create_review(req, owner, repo, number):
    body = req.json()
    event = req.field(body, "event", str, "PullRequestReview", required=True)
    if event not in REVIEW_EVENTS:
        raise invalid("PullRequestReview", "event", message="event must be APPROVE, REQUEST_CHANGES or COMMENT "
                                                            "(pending reviews are not supported)")
    text = text_field(req, body, "body", "PullRequestReview") or ""
    comments = req.field(body, "comments", list, "PullRequestReview", default=[])
    if event != "APPROVE" and not text.strip() and not comments:
        raise invalid("PullRequestReview", "body", "missing_field", "a %s review needs a body" % event.lower())
    row, issue, pull = find_pull(req, owner, repo, number, "review_pr")
    review_id = record_review(req, row, issue, pull, event, text, comments,
                              req.field(body, "commit_id", str, "PullRequestReview"))
    return 200, review_json(req.app, row, issue, req.app.store.one("SELECT * FROM reviews WHERE id = ?", review_id))


def record_review(req, row, issue, pull, event, text, comments, commit_id=None):
    """After review_pr was allowed: the review's id. Authors cannot approve or reject their own."""
    if event != "COMMENT" and issue["user_id"] == req.principal.user["id"]:
        raise invalid("PullRequestReview", "event", "custom", "Can not %s your own pull request" % (
            "approve" if event == "APPROVE" else "request changes on"))
    state = PullState(req.app, row, issue, pull)
    commit_id = commit_id or state.head_sha
    paths = {f[0] for f in state.files}
    for c in comments:
        if not isinstance(c, dict) or not isinstance(c.get("path"), str) or not isinstance(c.get("body"), str):
            raise invalid("PullRequestReview", "comments", message="each comment needs a path and a body")
        if c["path"] not in paths:
            raise invalid("PullRequestReview", "comments", "custom", "%s is not changed by this pull request" % c["path"])
    with req.transaction() as db:
        stamp = now()
        review_id = db.execute("INSERT INTO reviews (issue_id, user_id, state, body, commit_id, submitted_at)"
                               " VALUES (?, ?, ?, ?, ?, ?)", (issue["id"], req.principal.user["id"], REVIEW_EVENTS[event],
                                                              text, commit_id, stamp)).lastrowid
        for c in comments:
            line = c.get("line", c.get("position"))
            db.execute("INSERT INTO review_comments (review_id, issue_id, user_id, path, line, side, body, commit_id,"
                       " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (review_id, issue["id"], req.principal.user["id"], c["path"],
                        line if isinstance(line, int) and not isinstance(line, bool) else None,
                        c.get("side") if c.get("side") in ("LEFT", "RIGHT") else "RIGHT", c["body"], commit_id,
                        stamp, stamp))
        db.execute("DELETE FROM review_requests WHERE issue_id = ? AND user_id = ?", (issue["id"], req.principal.user["id"]))
        req.effect("review %d on #%d: %s" % (review_id, issue["number"], REVIEW_EVENTS[event]))
    return review_id


@route("GET", "/api/v3/repos/{owner}/{repo}/pulls/{number:int}/reviews")
def list_reviews(req, owner, repo, number):
    row, issue, _ = find_pull(req, owner, repo, number)
    rows = req.app.store.all("SELECT * FROM reviews WHERE issue_id = ? ORDER BY id", issue["id"])
    return [review_json(req.app, row, issue, r) for r in req.paginate(rows)]


@route("GET", "/api/v3/repos/{owner}/{repo}/pulls/{number:int}/reviews/{review_id:int}")
def get_review(req, owner, repo, number, review_id):
    row, issue, _ = find_pull(req, owner, repo, number)
    review = req.app.store.one("SELECT * FROM reviews WHERE id = ? AND issue_id = ?", int(review_id), issue["id"])
    if review is None:
        raise HTTPError(404, "Not Found")
    return review_json(req.app, row, issue, review)


@route("GET", "/api/v3/repos/{owner}/{repo}/pulls/{number:int}/comments")
def list_review_comments(req, owner, repo, number):
    row, issue, _ = find_pull(req, owner, repo, number)
    name, api = full_name(row), req.app.api
    out = []
    for c in req.app.store.all("SELECT * FROM review_comments WHERE issue_id = ? ORDER BY id", issue["id"]):
        url = "%s/repos/%s/pulls/comments/%d" % (api, name, c["id"])
        html = "%s/%s/pull/%d#discussion_r%d" % (req.app.url, name, issue["number"], c["id"])
        pull_url = "%s/repos/%s/pulls/%d" % (api, name, issue["number"])
        out.append({"url": url, "id": c["id"], "node_id": node_id("PullRequestReviewComment", c["id"]),
                    "pull_request_review_id": c["review_id"], "diff_hunk": "", "path": c["path"],
                    "position": c["line"], "original_position": c["line"], "line": c["line"], "side": c["side"],
                    "commit_id": c["commit_id"], "original_commit_id": c["commit_id"],
                    "user": user_json_by_id(req.app, c["user_id"]), "body": c["body"], "created_at": c["created_at"],
                    "updated_at": c["updated_at"], "html_url": html, "pull_request_url": pull_url,
                    "author_association": author_association(req.app.store, row, c["user_id"]),
                    "_links": {"self": {"href": url}, "html": {"href": html}, "pull_request": {"href": pull_url}}})
    return req.paginate(out)


def requested_reviewers_json(req, issue):
    rows = req.app.store.all("SELECT a.* FROM accounts a JOIN review_requests r ON r.user_id = a.id"
                             " WHERE r.issue_id = ? ORDER BY a.login", issue["id"])
    return {"users": [user_json(req.app, r) for r in rows], "teams": []}


@route("GET", "/api/v3/repos/{owner}/{repo}/pulls/{number:int}/requested_reviewers")
def list_requested_reviewers(req, owner, repo, number):
    _, issue, _ = find_pull(req, owner, repo, number)
    return requested_reviewers_json(req, issue)


def change_requested_reviewers(req, owner, repo, number, add):
    body = req.json()
    logins = req.field(body, "reviewers", list, "PullRequest", default=[])
    row, issue, pull = find_pull(req, owner, repo, number, "edit_issue")
    with req.transaction() as db:
        for user_id in resolve_assignees(req, row, logins):
            if add:
                if user_id == issue["user_id"]:
                    raise invalid("PullRequest", "reviewers", "custom",
                                  "Review cannot be requested from pull request author.")
                db.execute("INSERT OR IGNORE INTO review_requests (issue_id, user_id) VALUES (?, ?)",
                           (issue["id"], user_id))
            else:
                db.execute("DELETE FROM review_requests WHERE issue_id = ? AND user_id = ?", (issue["id"], user_id))
        req.effect("%s review requests on #%d: %s" % ("added" if add else "removed", issue["number"],
                                                      ", ".join(map(str, logins))))
    return row, issue, pull


@route("POST", "/api/v3/repos/{owner}/{repo}/pulls/{number:int}/requested_reviewers")
def request_reviewers(req, owner, repo, number):
    row, issue, _ = change_requested_reviewers(req, owner, repo, number, add=True)
    return 201, pull_json(req.app, row, *pull_rows(req.app, issue["id"]))


@route("DELETE", "/api/v3/repos/{owner}/{repo}/pulls/{number:int}/requested_reviewers")
def remove_requested_reviewers(req, owner, repo, number):
    row, issue, _ = change_requested_reviewers(req, owner, repo, number, add=False)
    return pull_json(req.app, row, *pull_rows(req.app, issue["id"]))


# -- contents -----------------------------------------------------------------------------------

RAW_MEDIA = ("application/vnd.github.raw", "application/vnd.github.v3.raw")
README_NAMES = ("README.md", "README", "README.markdown", "README.rst", "README.txt", "readme.md")


def content_path(path):
    """A repository path from a URL or a body: no empty, '.', '..' or '.git' segments, no NUL."""
    parts = path.strip("/").split("/") if path else []
    if any(p in ("", ".", "..") or p.lower() == ".git" or "\0" in p for p in parts) or len(path) > 4096:
        raise invalid("Content", "path", "invalid", "%r is not a valid path: no empty, '.', '..' or '.git' segments"
                      % path[:200])
    return "/".join(parts)


def lookup_path(git, tree_id, path):
    """(mode, sha) at ``path`` under a tree, or None; the tree itself for the empty path."""
    if not path:
        return 0o040000, tree_id
    try:
        mode, sha = git.object_store[tree_id.encode()].lookup_path(git.object_store.__getitem__, path.encode())
    except (KeyError, NotTreeError):
        return None
    return mode, sha.decode()


def tree_with(git, tree_id, parts, blob):
    """A copy of the tree with the file at ``parts`` set to ``blob`` (mode, sha) or removed (None)."""
    tree = Tree()
    if tree_id:
        for item in git[tree_id.encode()].items():
            tree.add(item.path, item.mode, item.sha)
    name = parts[0].encode()
    if len(parts) == 1:
        if blob is None:
            if name in tree:
                del tree[name]
        else:
            tree.add(name, blob[0], blob[1].encode())
    else:
        sub = tree[name][1].decode() if name in tree and tree[name][0] == 0o040000 else None
        if name in tree and sub is None:
            raise invalid("Content", "path", "custom", "%s is a file, not a directory" % parts[0])
        new_sub = tree_with(git, sub, parts[1:], blob)
        if len(git[new_sub.encode()]) == 0:
            if name in tree:
                del tree[name]     # git keeps no empty directories
        else:
            tree.add(name, 0o040000, new_sub.encode())
    git.object_store.add_object(tree)
    return tree.id.decode()


def content_entry_json(app, repo_row, path, mode, sha, size, ref):
    name, api = full_name(repo_row), app.api
    kind = "dir" if mode == 0o040000 else "symlink" if mode == 0o120000 else "submodule" if mode == 0o160000 else "file"
    quoted = urllib.parse.quote(path)
    url = "%s/repos/%s/contents/%s?ref=%s" % (api, name, quoted, urllib.parse.quote(ref))
    git_url = "%s/repos/%s/git/%s/%s" % (api, name, "trees" if kind == "dir" else "blobs", sha)
    html_url = "%s/%s/%s/%s/%s" % (app.url, name, "tree" if kind == "dir" else "blob", ref, quoted)
    return {"type": kind, "size": size, "name": path.rsplit("/", 1)[-1], "path": path, "sha": sha, "url": url,
            "git_url": git_url, "html_url": html_url,
            "download_url": "%s/%s/raw/%s/%s" % (app.url, name, ref, quoted) if kind == "file" else None,
            "_links": {"self": url, "git": git_url, "html": html_url}}


def file_json(app, repo_row, git, path, sha, ref):
    data = git[sha.encode()].data
    out = content_entry_json(app, repo_row, path, 0o100644, sha, len(data), ref)
    encoded = base64.b64encode(data).decode()
    out.update(encoding="base64", content="\n".join(encoded[i:i + 60] for i in range(0, len(encoded), 60)) + "\n")
    return out


def git_commit_json(app, name, commit):
    """GitHub's git-commit: the commit object itself (git data API, contents API answers)."""
    sha, api = commit.id.decode(), "%s/repos/%s" % (app.api, name)
    return {"sha": sha, "node_id": node_id("Commit", sha), "url": "%s/git/commits/%s" % (api, sha),
            "html_url": "%s/%s/commit/%s" % (app.url, name, sha),
            "author": git_person_json(commit.author, commit.author_time, commit.author_timezone),
            "committer": git_person_json(commit.committer, commit.commit_time, commit.commit_timezone),
            "message": commit.message.decode("utf-8", "replace").rstrip("\n"),
            "tree": {"sha": commit.tree.decode(), "url": "%s/git/trees/%s" % (api, commit.tree.decode())},
            "parents": [{"sha": p.decode(), "url": "%s/git/commits/%s" % (api, p.decode()),
                         "html_url": "%s/%s/commit/%s" % (app.url, name, p.decode())} for p in commit.parents],
            "verification": {"verified": False, "reason": "unsigned", "signature": None, "payload": None,
                             "verified_at": None}}


@route("GET", "/api/v3/repos/{owner}/{repo}/contents")
@route("GET", "/api/v3/repos/{owner}/{repo}/contents/{path:path}")
def get_contents(req, owner, repo, path=""):
    row = find_repo(req, owner, repo)
    path = content_path(path)
    ref = req.query.get("ref") or row["default_branch"]
    with open_repo(req.app, row["id"]) as git:
        sha = head_commit_or_409(git, row, ref)
        found = lookup_path(git, git[sha.encode()].tree.decode(), path)
        if found is None:
            raise HTTPError(404, "Not Found")
        mode, obj = found
        if mode == 0o040000:
            entries = []
            for item in sorted(git[obj.encode()].items(), key=lambda i: i.path):
                child = (path + "/" if path else "") + item.path.decode("utf-8", "replace")
                size = git[item.sha].raw_length() if item.mode not in (0o040000, 0o160000) else 0
                entries.append(content_entry_json(req.app, row, child, item.mode, item.sha.decode(), size, ref))
            return entries
        if any(m in (req.headers.get("Accept") or "") for m in RAW_MEDIA):
            return 200, git[obj.encode()].data, {"Content-Type": "application/octet-stream"}
        return file_json(req.app, row, git, path, obj, ref)


@route("GET", "/api/v3/repos/{owner}/{repo}/readme")
def get_readme(req, owner, repo):
    row = find_repo(req, owner, repo)
    ref = req.query.get("ref") or row["default_branch"]
    with open_repo(req.app, row["id"]) as git:
        tree = git[head_commit_or_409(git, row, ref).encode()].tree.decode()
        for name in README_NAMES:
            found = lookup_path(git, tree, name)
            if found and found[0] != 0o040000:
                if any(m in (req.headers.get("Accept") or "") for m in RAW_MEDIA):
                    return 200, git[found[1].encode()].data, {"Content-Type": "application/octet-stream"}
                return file_json(req.app, row, git, name, found[1], ref)
    raise HTTPError(404, "Not Found")


def change_file(req, owner, repo, path, deleting):
    """PUT and DELETE /contents: one commit on the branch, moved by compare-and-swap, decided like a push."""
    body = req.json()
    path = content_path(path)
    if not path:
        raise invalid("Content", "path", "missing_field", "a file path is required")
    message = text_field(req, body, "message", "Content", required=True)
    expected = req.field(body, "sha", str, "Content", required=deleting)
    data = None
    if not deleting:
        encoded = req.field(body, "content", str, "Content", required=True)
        try:
            data = base64.b64decode(encoded, validate=False)
        except ValueError:
            raise invalid("Content", "content", message="content must be base64")
    row = find_repo(req, owner, repo)
    branch = req.field(body, "branch", str, "Content", default=row["default_branch"])
    ref = "refs/heads/" + branch
    with open_repo(req.app, row["id"]) as git:
        old = branch_sha(git, branch)
        if old is None and list_refs(git, "refs/heads/"):
            raise HTTPError(404, "Branch %s not found" % branch)
        req.authorize("push_branch" if old else "create_branch", Resource.repo(row), ref=ref)
        old_tree = git[old.encode()].tree.decode() if old else None
        current = lookup_path(git, old_tree, path) if old_tree else None
        if current and current[0] == 0o040000:
            raise invalid("Content", "path", "custom", "%s is a directory" % path)
        if deleting and current is None:
            raise HTTPError(404, "Not Found")
        if current and expected != current[1]:
            if expected is None:
                raise invalid("Content", "sha", "missing_field", "\"sha\" wasn't supplied.")
            raise HTTPError(409, "%s does not match %s" % (path, expected))
        if not deleting:
            blob = Blob.from_string(data)
            git.object_store.add_object(blob)
        new_tree = tree_with(git, old_tree, path.split("/"), None if deleting else (0o100644, blob.id.decode()))
        user = req.principal.user
        author = body.get("author") if isinstance(body.get("author"), dict) else None
        author_sig = "%s <%s>" % (author["name"], author["email"]) if author and isinstance(author.get("name"), str) \
            and isinstance(author.get("email"), str) else signature(user)
        new = write_commit(git, new_tree, [old] if old else [], author_sig, signature(user), message)
        moved = git.refs.set_if_equals(ref.encode(), old.encode(), new.encode()) if old else \
            git.refs.add_if_new(ref.encode(), new.encode())
        if not moved:
            raise HTTPError(409, "%s was modified meanwhile; fetch and try again" % branch)
        content = None if deleting else file_json(req.app, row, git, path, blob.id.decode(), branch)
        if content:
            content.pop("content"), content.pop("encoding")
        commit = git_commit_json(req.app, full_name(row), git[new.encode()])
    with req.transaction() as db:
        db.execute("UPDATE repos SET pushed_at = ? WHERE id = ?", (now(), row["id"]))
        req.effect("%s %s: %s %s→%s" % ("deleted" if deleting else "wrote", path, ref, (old or ZERO_SHA)[:12], new[:12]))
    return (200 if current or deleting else 201), {"content": content, "commit": commit}


@route("PUT", "/api/v3/repos/{owner}/{repo}/contents/{path:path}")
def put_contents(req, owner, repo, path):
    return change_file(req, owner, repo, path, deleting=False)


@route("DELETE", "/api/v3/repos/{owner}/{repo}/contents/{path:path}")
def delete_contents(req, owner, repo, path):
    return change_file(req, owner, repo, path, deleting=True)


# -- branch protection, statuses, check runs ----------------------------------------------------

def protection_json(app, repo_row, rule):
    base = "%s/repos/%s/branches/%s/protection" % (app.api, full_name(repo_row), rule["branch"])
    checks = json.loads(rule["required_checks"]) if rule["required_checks"] is not None else None
    out = {"url": base,
           "enforce_admins": {"url": base + "/enforce_admins", "enabled": bool(rule["enforce_admins"])},
           "allow_force_pushes": {"enabled": bool(rule["allow_force_pushes"])},
           "allow_deletions": {"enabled": bool(rule["allow_deletions"])},
           "required_linear_history": {"enabled": False}, "required_conversation_resolution": {"enabled": False},
           "required_signatures": {"url": base + "/required_signatures", "enabled": False},
           "lock_branch": {"enabled": False}, "block_creations": {"enabled": False},
           "allow_fork_syncing": {"enabled": False}}
    if checks is not None:
        out["required_status_checks"] = {"url": base + "/required_status_checks", "strict": bool(rule["strict_checks"]),
                                         "contexts": checks, "contexts_url": base + "/required_status_checks/contexts",
                                         "checks": [{"context": c, "app_id": None} for c in checks]}
    if rule["required_approvals"] is not None:
        out["required_pull_request_reviews"] = {
            "url": base + "/required_pull_request_reviews", "dismiss_stale_reviews": bool(rule["dismiss_stale"]),
            "require_code_owner_reviews": False, "required_approving_review_count": rule["required_approvals"],
            "require_last_push_approval": False}
    return out


def find_protected_branch(req, owner, repo, branch, action):
    row = find_repo(req, owner, repo, action)
    with open_repo(req.app, row["id"]) as git:
        if branch_sha(git, branch) is None:
            raise HTTPError(404, "Branch not found")
    return row


@route("GET", "/api/v3/repos/{owner}/{repo}/branches/{branch:path}/protection")
def get_protection(req, owner, repo, branch):
    row = find_protected_branch(req, owner, repo, branch, "admin_repo")
    rule = branch_protection(req.app.store, row["id"], branch)
    if rule is None:
        raise HTTPError(404, "Branch not protected")
    return protection_json(req.app, row, rule)


def bool_setting(req, body, name):
    value = body.get(name)
    if isinstance(value, dict):       # GitHub answers {"enabled": x}; accept that shape back
        value = value.get("enabled")
    if value is not None and not isinstance(value, bool):
        raise invalid("BranchProtection", name, message="%s must be true, false or null" % name)
    return int(bool(value))


@route("PUT", "/api/v3/repos/{owner}/{repo}/branches/{branch:path}/protection")
def set_protection(req, owner, repo, branch):
    body = req.json()
    for key in ("required_status_checks", "enforce_admins", "required_pull_request_reviews", "restrictions"):
        if key not in body:
            raise invalid("BranchProtection", key, "missing_field", "%s is required (null to leave it off)" % key)
    checks = body["required_status_checks"]
    if checks is not None and (not isinstance(checks, dict) or not isinstance(checks.get("contexts", []), list)
                               or not all(isinstance(c, str) for c in checks.get("contexts", []))):
        raise invalid("BranchProtection", "required_status_checks", message="expected {strict, contexts: [names]}")
    reviews = body["required_pull_request_reviews"]
    approvals = None
    if reviews is not None:
        if not isinstance(reviews, dict):
            raise invalid("BranchProtection", "required_pull_request_reviews", message="expected an object or null")
        approvals = reviews.get("required_approving_review_count", 1)
        if isinstance(approvals, bool) or not isinstance(approvals, int) or not 0 <= approvals <= 6:
            raise invalid("BranchProtection", "required_approving_review_count", message="must be 0 to 6")
    row = find_protected_branch(req, owner, repo, branch, "admin_repo")
    with req.transaction() as db:
        db.execute("INSERT OR REPLACE INTO branch_protections (repo_id, branch, required_approvals, dismiss_stale,"
                   " required_checks, strict_checks, enforce_admins, allow_force_pushes, allow_deletions, updated_at)"
                   " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (row["id"], branch, approvals, int(bool((reviews or {}).get("dismiss_stale_reviews"))),
                    json.dumps(checks.get("contexts", [])) if checks is not None else None,
                    int(bool((checks or {}).get("strict"))), bool_setting(req, body, "enforce_admins"),
                    bool_setting(req, body, "allow_force_pushes"), bool_setting(req, body, "allow_deletions"), now()))
        req.effect("protected branch %s" % branch)
    return protection_json(req.app, row, req.app.store.one(
        "SELECT * FROM branch_protections WHERE repo_id = ? AND branch = ?", row["id"], branch))


@route("DELETE", "/api/v3/repos/{owner}/{repo}/branches/{branch:path}/protection")
def delete_protection(req, owner, repo, branch):
    row = find_protected_branch(req, owner, repo, branch, "admin_repo")
    with req.transaction() as db:
        if not db.execute("DELETE FROM branch_protections WHERE repo_id = ? AND branch = ?", (row["id"], branch)).rowcount:
            raise HTTPError(404, "Branch not protected")
        req.effect("unprotected branch %s" % branch)
    return 204, None


STATUS_STATES = ("error", "failure", "pending", "success")


def status_json(app, repo_row, row):
    return {"url": "%s/repos/%s/statuses/%s" % (app.api, full_name(repo_row), row["sha"]), "id": row["id"],
            "node_id": node_id("StatusContext", row["id"]), "avatar_url": "%s/avatars/agentgit" % app.url,
            "state": row["state"], "description": row["description"] or "", "target_url": row["target_url"] or "",
            "context": row["context"], "created_at": row["created_at"], "updated_at": row["created_at"],
            "creator": user_json_by_id(app, row["creator_id"])}


def commit_of(req, row, ref):
    with open_repo(req.app, row["id"]) as git:
        sha = resolve_commit(git, ref)
    if sha is None:
        raise HTTPError(404, "No commit found for SHA: %s" % ref)
    return sha


@route("POST", "/api/v3/repos/{owner}/{repo}/statuses/{sha}")
def create_status(req, owner, repo, sha):
    body = req.json()
    state = req.field(body, "state", str, "Status", required=True)
    if state not in STATUS_STATES:
        raise invalid("Status", "state", message="state must be error, failure, pending or success")
    context = text_field(req, body, "context", "Status", limit=255) or "default"
    description = text_field(req, body, "description", "Status", limit=1024)
    target_url = text_field(req, body, "target_url", "Status", limit=2048)
    row = find_repo(req, owner, repo, "write_status")
    sha = commit_of(req, row, sha)
    with req.transaction() as db:
        status_id = db.execute("INSERT INTO statuses (repo_id, sha, state, context, description, target_url,"
                               " creator_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                               (row["id"], sha, state, context, description, target_url, req.principal.user["id"],
                                now())).lastrowid
        req.effect("status %s=%s on %s" % (context, state, sha[:12]))
    return 201, status_json(req.app, row, req.app.store.one("SELECT * FROM statuses WHERE id = ?", status_id))


@route("GET", "/api/v3/repos/{owner}/{repo}/commits/{ref:path}/statuses")
def list_statuses(req, owner, repo, ref):
    row = find_repo(req, owner, repo)
    sha = commit_of(req, row, ref)
    rows = req.app.store.all("SELECT * FROM statuses WHERE repo_id = ? AND sha = ? ORDER BY id DESC", row["id"], sha)
    return [status_json(req.app, row, r) for r in req.paginate(rows)]


@route("GET", "/api/v3/repos/{owner}/{repo}/commits/{ref:path}/status")
def combined_status(req, owner, repo, ref):
    row = find_repo(req, owner, repo)
    sha = commit_of(req, row, ref)
    latest = {}
    for r in req.app.store.all("SELECT * FROM statuses WHERE repo_id = ? AND sha = ? ORDER BY id", row["id"], sha):
        latest[r["context"]] = r
    states = {r["state"] for r in latest.values()}
    state = "failure" if states & {"error", "failure"} else "pending" if "pending" in states or not states else "success"
    name = full_name(row)
    return {"state": state, "sha": sha, "total_count": len(latest),
            "statuses": [status_json(req.app, row, r) for r in latest.values()], "repository": repo_json(req.app, row),
            "commit_url": "%s/repos/%s/commits/%s" % (req.app.api, name, sha),
            "url": "%s/repos/%s/commits/%s/status" % (req.app.api, name, sha)}


CHECK_STATUSES = ("queued", "in_progress", "completed")
CHECK_CONCLUSIONS = ("action_required", "cancelled", "failure", "neutral", "success", "skipped", "stale", "timed_out")


def check_run_json(app, repo_row, row):
    name, api = full_name(repo_row), app.api
    output = json.loads(row["output"])
    url = "%s/repos/%s/check-runs/%d" % (api, name, row["id"])
    return {"id": row["id"], "node_id": node_id("CheckRun", row["id"]), "head_sha": row["head_sha"],
            "external_id": row["external_id"] or "", "url": url,
            "html_url": "%s/%s/runs/%d" % (app.url, name, row["id"]), "details_url": row["details_url"] or "",
            "status": row["status"], "conclusion": row["conclusion"], "started_at": row["started_at"],
            "completed_at": row["completed_at"], "name": row["name"], "check_suite": {"id": row["id"]},
            "output": {"title": output.get("title"), "summary": output.get("summary"), "text": output.get("text"),
                       "annotations_count": 0, "annotations_url": url + "/annotations"},
            "app": None, "pull_requests": []}


def check_run_fields(req, body, creating):
    fields = {}
    name = text_field(req, body, "name", "CheckRun", required=creating, limit=255)
    if name is not None:
        fields["name"] = name
    status = req.field(body, "status", str, "CheckRun", default="queued" if creating else None)
    if status is not None:
        if status not in CHECK_STATUSES:
            raise invalid("CheckRun", "status", message="status must be queued, in_progress or completed")
        fields["status"] = status
    conclusion = req.field(body, "conclusion", str, "CheckRun")
    if conclusion is not None:
        if conclusion not in CHECK_CONCLUSIONS:
            raise invalid("CheckRun", "conclusion", message="conclusion must be one of %s" % ", ".join(CHECK_CONCLUSIONS))
        fields.update(conclusion=conclusion, status="completed")
    if fields.get("status") == "completed":
        if "conclusion" not in fields:
            raise invalid("CheckRun", "conclusion", "missing_field", "a completed check run needs a conclusion")
        fields["completed_at"] = req.field(body, "completed_at", str, "CheckRun") or now()
    for key in ("external_id", "details_url", "started_at"):
        value = text_field(req, body, key, "CheckRun", limit=2048)
        if value is not None:
            fields[key] = value
    output = req.field(body, "output", dict, "CheckRun")
    if output is not None:
        fields["output"] = json.dumps({k: output.get(k) for k in ("title", "summary", "text")
                                       if isinstance(output.get(k), str)})
    return fields


@route("POST", "/api/v3/repos/{owner}/{repo}/check-runs")
def create_check_run(req, owner, repo):
    body = req.json()
    fields = check_run_fields(req, body, creating=True)
    head = req.field(body, "head_sha", str, "CheckRun", required=True)
    row = find_repo(req, owner, repo, "write_status")
    fields.update(head_sha=commit_of(req, row, head), repo_id=row["id"], creator_id=req.principal.user["id"])
    fields.setdefault("started_at", now())
    with req.transaction() as db:
        run_id = insert_row(db, "check_runs", fields)
        req.effect("check run %d %s (%s) on %s" % (run_id, fields["name"], fields["status"], fields["head_sha"][:12]))
    return 201, check_run_json(req.app, row, req.app.store.one("SELECT * FROM check_runs WHERE id = ?", run_id))


def find_check_run(req, row, run_id):
    run = req.app.store.one("SELECT * FROM check_runs WHERE id = ? AND repo_id = ?", int(run_id), row["id"])
    if run is None:
        raise HTTPError(404, "Not Found")
    return run


@route("GET", "/api/v3/repos/{owner}/{repo}/check-runs/{run_id:int}")
def get_check_run(req, owner, repo, run_id):
    row = find_repo(req, owner, repo)
    return check_run_json(req.app, row, find_check_run(req, row, run_id))


@route("PATCH", "/api/v3/repos/{owner}/{repo}/check-runs/{run_id:int}")
def update_check_run(req, owner, repo, run_id):
    body = req.json()
    fields = check_run_fields(req, body, creating=False)
    row = find_repo(req, owner, repo, "write_status")
    run = find_check_run(req, row, run_id)
    with req.transaction() as db:
        update_row(db, "check_runs", fields, "id", run["id"])
        req.effect("check run %d updated: %s" % (run["id"], ", ".join(sorted(fields))))
    return check_run_json(req.app, row, find_check_run(req, row, run_id))


@route("GET", "/api/v3/repos/{owner}/{repo}/commits/{ref:path}/check-runs")
def list_check_runs(req, owner, repo, ref):
    row = find_repo(req, owner, repo)
    sha = commit_of(req, row, ref)
    rows = req.app.store.all("SELECT * FROM check_runs WHERE repo_id = ? AND head_sha = ? ORDER BY id DESC", row["id"], sha)
    return {"total_count": len(rows), "check_runs": [check_run_json(req.app, row, r) for r in req.paginate(rows)]}


# -- git data: refs, blobs, trees, commits, tags; compare ----------------------------------------
# For agents that never run git. Objects are written straight into the repository; only refs are
# decided like pushes (so branch protection applies to them exactly as to `git push`).

SHA_RE = re.compile(r"^[0-9a-f]{40}$")
TREE_MODES = {"100644": "blob", "100755": "blob", "040000": "tree", "160000": "commit", "120000": "blob"}


def git_object(git, sha, kind, resource):
    """The object ``sha`` of type ``kind`` (blob, tree, commit, tag) or 422 naming the field."""
    if not isinstance(sha, str) or not SHA_RE.match(sha) or sha.encode() not in git.object_store:
        raise invalid(resource, kind if kind != "blob" else "sha", "invalid", "%s is not a known %s" % (sha, kind))
    obj = git[sha.encode()]
    if obj.type_name.decode() != kind:
        raise invalid(resource, kind, "invalid", "%s is a %s, not a %s" % (sha, obj.type_name.decode(), kind))
    return obj


def find_object(req, owner, repo, sha, kind):
    row = find_repo(req, owner, repo)
    with open_repo(req.app, row["id"]) as git:
        if not SHA_RE.match(sha) or sha.encode() not in git.object_store or git[sha.encode()].type_name != kind.encode():
            raise HTTPError(404, "Not Found")
        return row, git[sha.encode()]


@route("GET", "/api/v3/repos/{owner}/{repo}/git/refs")
def list_refs_endpoint(req, owner, repo):
    row = find_repo(req, owner, repo)
    return req.paginate(refs_json(req, row, "refs/"))


def ref_name(ref):
    """'heads/x' or 'refs/heads/x' to 'refs/heads/x', refusing names git would refuse."""
    ref = ref if ref.startswith("refs/") else "refs/" + ref
    parts = ref.split("/")
    if (len(parts) < 3 or any(p in ("", ".", "..") or p.endswith(".lock") or p.startswith(".") for p in parts)
            or re.search(r"[\x00-\x20~^:?*\[\\\x7f]|@\{|\.\.", ref) or ref.endswith("/")):
        raise invalid("Reference", "ref", "invalid", "%s is not a valid ref name" % ref[:200])
    return ref


def object_type(git, sha):
    return git[sha.encode()].type_name.decode()


@route("POST", "/api/v3/repos/{owner}/{repo}/git/refs")
def create_ref(req, owner, repo):
    body = req.json()
    ref = ref_name(req.field(body, "ref", str, "Reference", required=True))
    if not ref.startswith(("refs/heads/", "refs/tags/")) and ref.count("/") < 2:
        raise invalid("Reference", "ref", "invalid", "ref must start with refs/ and have two slashes")
    sha = req.field(body, "sha", str, "Reference", required=True)
    row = find_repo(req, owner, repo)
    req.authorize("create_branch", Resource.repo(row), ref=ref)     # may it, before what it asks is checked
    with open_repo(req.app, row["id"]) as git:
        if not SHA_RE.match(sha) or sha.encode() not in git.object_store:
            raise invalid("Reference", "sha", "invalid", "Object does not exist")
        if not git.refs.add_if_new(ref.encode(), sha.encode()):
            raise invalid("Reference", "ref", "already_exists", "Reference already exists")
        out = ref_json(req.app, full_name(row), ref, sha, object_type(git, sha))
    with req.transaction() as db:
        db.execute("UPDATE repos SET pushed_at = ? WHERE id = ?", (now(), row["id"]))
        req.effect("%s %s→%s" % (ref, ZERO_SHA[:12], sha[:12]))
    return 201, out


@route("PATCH", "/api/v3/repos/{owner}/{repo}/git/refs/{ref:path}")
def update_ref(req, owner, repo, ref):
    body = req.json()
    ref = ref_name(ref)
    sha = req.field(body, "sha", str, "Reference", required=True)
    force = req.field(body, "force", bool, "Reference", default=False)
    row = find_repo(req, owner, repo)
    decision = req.authorize("push_branch", Resource.repo(row), ref=ref)
    with open_repo(req.app, row["id"]) as git:
        if ref.encode() not in git.refs:
            raise HTTPError(422, "Reference does not exist")
        old = git.refs[ref.encode()].decode()
        if not SHA_RE.match(sha) or sha.encode() not in git.object_store:
            raise invalid("Reference", "sha", "invalid", "Object does not exist")
        fast_forward = can_fast_forward(git, old.encode(), sha.encode()) if object_type(git, sha) == "commit" else False
        if not fast_forward and (not force or decision.ff_only):
            raise HTTPError(422, "Update is not a fast forward" if not force else
                            "protected branch %s: force pushes are not allowed" % ref[len("refs/heads/"):])
        if not git.refs.set_if_equals(ref.encode(), old.encode(), sha.encode()):
            raise HTTPError(409, "Reference was updated meanwhile; fetch it and try again")
        out = ref_json(req.app, full_name(row), ref, sha, object_type(git, sha))
    with req.transaction() as db:
        db.execute("UPDATE repos SET pushed_at = ? WHERE id = ?", (now(), row["id"]))
        req.effect("%s %s→%s%s" % (ref, old[:12], sha[:12], " (forced)" if not fast_forward else ""))
    return out


@route("DELETE", "/api/v3/repos/{owner}/{repo}/git/refs/{ref:path}")
def delete_ref(req, owner, repo, ref):
    ref = ref_name(ref)
    row = find_repo(req, owner, repo)
    req.authorize("delete_branch", Resource.repo(row), ref=ref)
    with open_repo(req.app, row["id"]) as git:
        if ref.encode() not in git.refs:
            raise HTTPError(422, "Reference does not exist")
        old = git.refs[ref.encode()]
        if not git.refs.remove_if_equals(ref.encode(), old):
            raise HTTPError(409, "Reference was updated meanwhile; fetch it and try again")
    with req.transaction():
        req.effect("%s %s→%s" % (ref, old.decode()[:12], ZERO_SHA[:12]))
    return 204, None


def blob_json(app, row, blob, with_content):
    sha = blob.id.decode()
    out = {"sha": sha, "url": "%s/repos/%s/git/blobs/%s" % (app.api, full_name(row), sha)}
    if with_content:
        out.update(node_id=node_id("Blob", sha), size=len(blob.data), encoding="base64",
                   content=base64.b64encode(blob.data).decode())
    return out


@route("POST", "/api/v3/repos/{owner}/{repo}/git/blobs")
def create_blob(req, owner, repo):
    body = req.json()
    content = req.field(body, "content", str, "Blob", required=True)
    encoding = req.field(body, "encoding", str, "Blob", default="utf-8")
    if encoding not in ("utf-8", "base64"):
        raise invalid("Blob", "encoding", message="encoding must be utf-8 or base64")
    try:
        data = base64.b64decode(content, validate=True) if encoding == "base64" else content.encode()
    except ValueError:
        raise invalid("Blob", "content", message="content is not valid base64")
    row = find_repo(req, owner, repo, "write_objects")
    blob = Blob.from_string(data)
    with open_repo(req.app, row["id"]) as git:
        git.object_store.add_object(blob)
    req.effect("blob %s" % blob.id.decode()[:12])
    return 201, blob_json(req.app, row, blob, with_content=False)


@route("GET", "/api/v3/repos/{owner}/{repo}/git/blobs/{sha}")
def get_blob(req, owner, repo, sha):
    row, blob = find_object(req, owner, repo, sha, "blob")
    return blob_json(req.app, row, blob, with_content=True)


def tree_json(app, row, git, tree, recursive):
    name, entries = full_name(row), []

    def walk(tree, prefix, depth):
        for item in tree.items():
            mode = "%06o" % item.mode
            kind = TREE_MODES.get(mode, "blob")
            path = prefix + item.path.decode("utf-8", "replace")
            entry = {"path": path, "mode": mode, "type": kind, "sha": item.sha.decode(),
                     "url": "%s/repos/%s/git/%ss/%s" % (app.api, name, kind, item.sha.decode())}
            if kind == "blob":
                entry["size"] = git[item.sha].raw_length()
            entries.append(entry)
            if recursive and kind == "tree" and len(entries) < 100000:
                walk(git[item.sha], path + "/", depth + 1)
    walk(tree, "", 0)
    sha = tree.id.decode()
    return {"sha": sha, "url": "%s/repos/%s/git/trees/%s" % (app.api, name, sha), "tree": entries[:100000],
            "truncated": len(entries) > 100000}


@route("POST", "/api/v3/repos/{owner}/{repo}/git/trees")
def create_tree(req, owner, repo):
    """A new tree from entries {path, mode, type, sha | content} over an optional base_tree; an entry
    with sha null removes that path. Paths may be nested (a/b/c.txt)."""
    body = req.json()
    entries = req.field(body, "tree", list, "Tree", required=True)
    base = req.field(body, "base_tree", str, "Tree")
    row = find_repo(req, owner, repo, "write_objects")
    with open_repo(req.app, row["id"]) as git:
        tree_id = git_object(git, base, "tree", "Tree").id.decode() if base else None
        for entry in entries:
            if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
                raise invalid("Tree", "tree", message="each entry needs a path")
            path = content_path(entry["path"])
            mode = entry.get("mode", "100644")
            if mode not in TREE_MODES or entry.get("type", TREE_MODES[mode]) != TREE_MODES[mode]:
                raise invalid("Tree", "tree", message="entry %s: mode %r and type %r do not go together" % (
                    path, mode, entry.get("type")))
            if "content" in entry:
                if not isinstance(entry["content"], str) or TREE_MODES[mode] != "blob":
                    raise invalid("Tree", "tree", message="entry %s: content must be a string for a blob" % path)
                blob = Blob.from_string(entry["content"].encode())
                git.object_store.add_object(blob)
                target = (int(mode, 8), blob.id.decode())
            elif entry.get("sha") is None:
                target = None
            else:
                if mode != "160000":     # a submodule's commit lives elsewhere
                    git_object(git, entry["sha"], TREE_MODES[mode], "Tree")
                target = (int(mode, 8), entry["sha"])
            if not path:
                raise invalid("Tree", "tree", message="an entry needs a non-empty path")
            tree_id = tree_with(git, tree_id, path.split("/"), target)
        if tree_id is None:
            empty = Tree()
            git.object_store.add_object(empty)
            tree_id = empty.id.decode()
        out = tree_json(req.app, row, git, git[tree_id.encode()], recursive=False)
    req.effect("tree %s" % tree_id[:12])
    return 201, out


@route("GET", "/api/v3/repos/{owner}/{repo}/git/trees/{sha}")
def get_tree(req, owner, repo, sha):
    row = find_repo(req, owner, repo)
    with open_repo(req.app, row["id"]) as git:
        commit = resolve_commit(git, sha)     # GitHub takes a branch or commit here too
        tree_sha = git[commit.encode()].tree.decode() if commit else sha
        if not SHA_RE.match(tree_sha) or tree_sha.encode() not in git.object_store or \
                git[tree_sha.encode()].type_name != b"tree":
            raise HTTPError(404, "Not Found")
        return tree_json(req.app, row, git, git[tree_sha.encode()], recursive=req.query.get("recursive") not in
                         (None, "", "0", "false"))


def person_signature(req, body, key, default):
    """'Name <email>' from {name, email[, date]} in a body, or the default."""
    person = body.get(key)
    if person is None:
        return default, None
    if not isinstance(person, dict) or not isinstance(person.get("name"), str) or not isinstance(
            person.get("email"), str) or re.search(r"[<>\n]", person["name"] + person["email"]):
        raise invalid("Commit", key, message="%s needs a name and an email" % key)
    when = None
    if isinstance(person.get("date"), str):
        try:
            when = int(parse_time(person["date"]).timestamp())
        except ValueError:
            raise invalid("Commit", key, message="%s.date must be an ISO 8601 time" % key)
    return "%s <%s>" % (person["name"], person["email"]), when


@route("POST", "/api/v3/repos/{owner}/{repo}/git/commits")
def create_commit(req, owner, repo):
    body = req.json()
    message = req.field(body, "message", str, "Commit", required=True)
    tree = req.field(body, "tree", str, "Commit", required=True)
    parents = req.field(body, "parents", list, "Commit", default=[])
    row = find_repo(req, owner, repo, "write_objects")
    me = signature(req.principal.user)
    author, author_time = person_signature(req, body, "author", me)
    committer, _ = person_signature(req, body, "committer", author if body.get("author") else me)
    with open_repo(req.app, row["id"]) as git:
        git_object(git, tree, "tree", "Commit")
        for parent in parents:
            git_object(git, parent, "commit", "Commit")
        sha = write_commit(git, tree, parents, author, committer, message, author_time)
        out = git_commit_json(req.app, full_name(row), git[sha.encode()])
    req.effect("commit %s" % sha[:12])
    return 201, out


@route("GET", "/api/v3/repos/{owner}/{repo}/git/commits/{sha}")
def get_git_commit(req, owner, repo, sha):
    row, commit = find_object(req, owner, repo, sha, "commit")
    return git_commit_json(req.app, full_name(row), commit)


def tag_json(app, row, tag):
    name, sha = full_name(row), tag.id.decode()
    kind, target = tag.object[0].type_name.decode(), tag.object[1].decode()
    return {"sha": sha, "node_id": node_id("Tag", sha), "url": "%s/repos/%s/git/tags/%s" % (app.api, name, sha),
            "tag": tag.name.decode("utf-8", "replace"), "message": tag.message.decode("utf-8", "replace"),
            "tagger": git_person_json(tag.tagger, tag.tag_time, tag.tag_timezone),
            "object": {"sha": target, "type": kind, "url": "%s/repos/%s/git/%ss/%s" % (app.api, name, kind, target)},
            "verification": {"verified": False, "reason": "unsigned", "signature": None, "payload": None,
                             "verified_at": None}}


@route("POST", "/api/v3/repos/{owner}/{repo}/git/tags")
def create_tag_object(req, owner, repo):
    body = req.json()
    name = req.field(body, "tag", str, "Tag", required=True)
    ref_name("refs/tags/" + name)
    message = req.field(body, "message", str, "Tag", required=True)
    target = req.field(body, "object", str, "Tag", required=True)
    kind = req.field(body, "type", str, "Tag", required=True)
    if kind not in ("commit", "tree", "blob"):
        raise invalid("Tag", "type", message="type must be commit, tree or blob")
    row = find_repo(req, owner, repo, "write_objects")
    tagger, when = person_signature(req, body, "tagger", signature(req.principal.user))
    with open_repo(req.app, row["id"]) as git:
        obj = git_object(git, target, kind, "Tag")
        tag = Tag()
        tag.name, tag.message = name.encode(), (message if message.endswith("\n") else message + "\n").encode()
        tag.object = (type(obj), obj.id)
        tag.tagger, tag.tag_time, tag.tag_timezone = tagger.encode(), when or int(time.time()), 0
        git.object_store.add_object(tag)
        out = tag_json(req.app, row, tag)
    req.effect("tag object %s %s" % (name, tag.id.decode()[:12]))
    return 201, out


@route("GET", "/api/v3/repos/{owner}/{repo}/git/tags/{sha}")
def get_tag_object(req, owner, repo, sha):
    row, tag = find_object(req, owner, repo, sha, "tag")
    return tag_json(req.app, row, tag)


@route("GET", "/api/v3/repos/{owner}/{repo}/compare/{basehead:path}")
def compare(req, owner, repo, basehead):
    """base...head (or base..head): the commits head has that base lacks, and the files they change."""
    base, sep, head = basehead.partition("...")
    if not sep:
        base, sep, head = basehead.partition("..")
    if not sep or not base or not head:
        raise HTTPError(404, "Not Found")
    row = find_repo(req, owner, repo)
    name, api = full_name(row), req.app.api
    with open_repo(req.app, row["id"]) as git:
        base_sha, head_sha = resolve_commit(git, base), resolve_commit(git, head)
        if base_sha is None or head_sha is None:
            raise HTTPError(404, "Not Found")
        mb = merge_base(git, base_sha, head_sha)
        ahead = commits_between(git, mb or "", head_sha)
        behind = commits_between(git, mb or "", base_sha)
        files = changed_files(git, git[mb.encode()].tree.decode() if mb else None, git[head_sha.encode()].tree.decode())
        status = "identical" if base_sha == head_sha else "ahead" if not behind else "behind" if not ahead else "diverged"
        html = "%s/%s/compare/%s" % (req.app.url, name, basehead)
        return {"url": "%s/repos/%s/compare/%s" % (api, name, basehead), "html_url": html,
                "permalink_url": "%s/%s/compare/%s...%s" % (req.app.url, name, base_sha, head_sha),
                "diff_url": html + ".diff", "patch_url": html + ".patch",
                "base_commit": commit_json(req.app, name, git[base_sha.encode()]),
                "merge_base_commit": commit_json(req.app, name, git[(mb or base_sha).encode()]),
                "status": status, "ahead_by": len(ahead), "behind_by": len(behind), "total_commits": len(ahead),
                "commits": [commit_json(req.app, name, c) for c in ahead[-250:]],
                "files": [{"sha": sha, "filename": path, "status": st, "additions": a, "deletions": d,
                           "changes": a + d, "patch": patch,
                           "blob_url": "%s/%s/blob/%s/%s" % (req.app.url, name, head_sha, urllib.parse.quote(path)),
                           "raw_url": "%s/%s/raw/%s/%s" % (req.app.url, name, head_sha, urllib.parse.quote(path)),
                           "contents_url": "%s/repos/%s/contents/%s?ref=%s" % (api, name, urllib.parse.quote(path),
                                                                               head_sha)}
                          for path, st, a, d, sha, patch in files]}


# -- releases and tags --------------------------------------------------------------------------

def release_json(app, repo_row, row):
    name, api = full_name(repo_row), app.api
    url = "%s/repos/%s/releases/%d" % (api, name, row["id"])
    return {"url": url, "html_url": "%s/%s/releases/tag/%s" % (app.url, name, urllib.parse.quote(row["tag_name"])),
            "assets_url": url + "/assets",
            "upload_url": "%s/api/uploads/repos/%s/releases/%d/assets{?name,label}" % (app.url, name, row["id"]),
            "tarball_url": "%s/repos/%s/tarball/%s" % (api, name, row["tag_name"]),
            "zipball_url": "%s/repos/%s/zipball/%s" % (api, name, row["tag_name"]), "id": row["id"],
            "node_id": node_id("Release", row["id"]), "tag_name": row["tag_name"],
            "target_commitish": row["target_commitish"], "name": row["name"], "body": row["body"],
            "draft": bool(row["draft"]), "prerelease": bool(row["prerelease"]), "created_at": row["created_at"],
            "published_at": row["published_at"], "author": user_json_by_id(app, row["author_id"]),
            "assets": [asset_json(app, repo_row, row, a) for a in app.store.all(
                "SELECT %s FROM release_assets WHERE release_id = ? ORDER BY id" % ASSET_COLUMNS, row["id"])]}


ASSET_COLUMNS = ("id, release_id, name, label, content_type, size, digest, download_count, uploader_id, created_at,"
                 " updated_at")     # all but the data, which only a download reads


def asset_json(app, repo_row, release, row):
    name = full_name(repo_row)
    return {"url": "%s/repos/%s/releases/assets/%d" % (app.api, name, row["id"]),
            "browser_download_url": "%s/%s/releases/download/%s/%s" % (
                app.url, name, urllib.parse.quote(release["tag_name"]), urllib.parse.quote(row["name"])),
            "id": row["id"], "node_id": node_id("ReleaseAsset", row["id"]), "name": row["name"],
            "label": row["label"] or "", "state": "uploaded", "content_type": row["content_type"],
            "size": row["size"], "digest": row["digest"], "download_count": row["download_count"],
            "created_at": row["created_at"], "updated_at": row["updated_at"],
            "uploader": user_json_by_id(app, row["uploader_id"])}


def visible_releases(req, row):
    """Drafts are shown only to those who may push, as on GitHub."""
    may_push = req.can("write_release", Resource.repo(row))
    return [r for r in req.app.store.all("SELECT * FROM releases WHERE repo_id = ? ORDER BY created_at DESC, id DESC",
                                         row["id"]) if may_push or not r["draft"]]


def release_fields(req, body, creating):
    fields = {}
    tag = req.field(body, "tag_name", str, "Release", required=creating)
    if tag is not None:
        ref_name("refs/tags/" + tag)
        fields["tag_name"] = tag
    for key, limit in (("name", 256), ("body", 125000), ("target_commitish", 256)):
        value = text_field(req, body, key, "Release", limit=limit)
        if value is not None:
            fields[key] = value
    for key in ("draft", "prerelease"):
        value = req.field(body, key, bool, "Release")
        if value is not None:
            fields[key] = int(value)
    return fields


def ensure_tag(req, row, tag, target):
    """The tag ref for a release, made at ``target`` (a branch or sha) when it does not exist yet."""
    ref = ("refs/tags/" + tag).encode()
    with open_repo(req.app, row["id"]) as git:
        if ref in git.refs:
            return
        sha = resolve_commit(git, target)
        if sha is None:
            raise invalid("Release", "target_commitish", "invalid", "%s is not a branch or commit" % target)
        req.authorize("create_branch", Resource.repo(row), ref=ref.decode())
        if not git.refs.add_if_new(ref, sha.encode()):
            raise HTTPError(409, "Tag %s was created meanwhile" % tag)
    req.effect("refs/tags/%s %s→%s" % (tag, ZERO_SHA[:12], sha[:12]))


@route("POST", "/api/v3/repos/{owner}/{repo}/releases")
def create_release(req, owner, repo):
    body = req.json()
    fields = release_fields(req, body, creating=True)
    row = find_repo(req, owner, repo, "write_release")
    fields.setdefault("target_commitish", row["default_branch"])
    if req.app.store.one("SELECT 1 FROM releases WHERE repo_id = ? AND tag_name = ?", row["id"], fields["tag_name"]):
        raise invalid("Release", "tag_name", "already_exists", "a release for %s exists" % fields["tag_name"])
    if not fields.get("draft"):
        ensure_tag(req, row, fields["tag_name"], fields["target_commitish"])
    with req.transaction() as db:
        stamp = now()
        release_id = insert_row(db, "releases", dict(fields, repo_id=row["id"], author_id=req.principal.user["id"],
                                                     created_at=stamp,
                                                     published_at=None if fields.get("draft") else stamp))
        req.effect("release %s" % fields["tag_name"])
    return 201, release_json(req.app, row, req.app.store.one("SELECT * FROM releases WHERE id = ?", release_id))


@route("GET", "/api/v3/repos/{owner}/{repo}/releases")
def list_releases(req, owner, repo):
    row = find_repo(req, owner, repo)
    return [release_json(req.app, row, r) for r in req.paginate(visible_releases(req, row))]


def find_release(req, row, match):
    for release in visible_releases(req, row):
        if match(release):
            return release
    raise HTTPError(404, "Not Found")


@route("GET", "/api/v3/repos/{owner}/{repo}/releases/latest")
def latest_release(req, owner, repo):
    row = find_repo(req, owner, repo)
    return release_json(req.app, row, find_release(req, row, lambda r: not r["draft"] and not r["prerelease"]))


@route("GET", "/api/v3/repos/{owner}/{repo}/releases/tags/{tag:path}")
def release_by_tag(req, owner, repo, tag):
    row = find_repo(req, owner, repo)
    return release_json(req.app, row, find_release(req, row, lambda r: r["tag_name"] == tag and not r["draft"]))


@route("GET", "/api/v3/repos/{owner}/{repo}/releases/{release_id:int}")
def get_release(req, owner, repo, release_id):
    row = find_repo(req, owner, repo)
    return release_json(req.app, row, find_release(req, row, lambda r: r["id"] == int(release_id)))


@route("PATCH", "/api/v3/repos/{owner}/{repo}/releases/{release_id:int}")
def update_release(req, owner, repo, release_id):
    body = req.json()
    fields = release_fields(req, body, creating=False)
    row = find_repo(req, owner, repo, "write_release")
    release = find_release(req, row, lambda r: r["id"] == int(release_id))
    merged = dict(release, **fields)
    if not merged["draft"]:
        ensure_tag(req, row, merged["tag_name"], merged["target_commitish"])
        if release["draft"]:
            fields["published_at"] = now()
    with req.transaction() as db:
        update_row(db, "releases", fields, "id", release["id"])
        req.effect("updated release %s" % merged["tag_name"])
    return release_json(req.app, row, req.app.store.one("SELECT * FROM releases WHERE id = ?", release["id"]))


@route("DELETE", "/api/v3/repos/{owner}/{repo}/releases/{release_id:int}")
def delete_release(req, owner, repo, release_id):
    row = find_repo(req, owner, repo, "write_release")
    release = find_release(req, row, lambda r: r["id"] == int(release_id))
    with req.transaction() as db:
        db.execute("DELETE FROM releases WHERE id = ?", (release["id"],))
        req.effect("deleted release %s (the tag stays)" % release["tag_name"])
    return 204, None


# -- release assets: GHES takes uploads at /api/uploads, the upload_url a release names -------------

ASSET_NAME_RE = re.compile(r"[^/\\\x00-\x1f\x7f]{1,255}")


@route("POST", "/api/uploads/repos/{owner}/{repo}/releases/{release_id:int}/assets")
@route("POST", "/api/v3/repos/{owner}/{repo}/releases/{release_id:int}/assets")
def upload_asset(req, owner, repo, release_id):
    row = find_repo(req, owner, repo, "write_release")
    release = find_release(req, row, lambda r: r["id"] == int(release_id))
    name, label = req.query.get("name", ""), req.query.get("label") or None
    if not ASSET_NAME_RE.fullmatch(name) or name in (".", ".."):
        raise invalid("ReleaseAsset", "name", message="name the file: ?name=, without slashes, up to 255 characters")
    data = req.body(MAX_ASSET_BYTES).read_all()
    stamp = now()
    with req.transaction() as db:
        if db.execute("SELECT 1 FROM release_assets WHERE release_id = ? AND name = ?", (release["id"], name)).fetchone():
            raise invalid("ReleaseAsset", "name", "already_exists", "an asset named %s exists" % name)
        asset_id = insert_row(db, "release_assets", {
            "release_id": release["id"], "name": name, "label": label, "size": len(data), "data": data,
            "content_type": req.headers.get("Content-Type") or "application/octet-stream",
            "digest": "sha256:" + hashlib.sha256(data).hexdigest(), "uploader_id": req.principal.user["id"],
            "created_at": stamp, "updated_at": stamp})
        req.effect("uploaded %s (%d bytes) to release %s" % (name, len(data), release["tag_name"]))
    return 201, asset_json(req.app, row, release, req.app.store.one(
        "SELECT %s FROM release_assets WHERE id = ?" % ASSET_COLUMNS, asset_id))


@route("GET", "/api/v3/repos/{owner}/{repo}/releases/{release_id:int}/assets")
def list_assets(req, owner, repo, release_id):
    row = find_repo(req, owner, repo)
    release = find_release(req, row, lambda r: r["id"] == int(release_id))
    return req.paginate(release_json(req.app, row, release)["assets"])


def find_asset(req, owner, repo, asset_id, action="read_code"):
    """(repository, release, asset row without its data) for an asset of a release the caller can see."""
    row = find_repo(req, owner, repo, action)
    asset = req.app.store.one("SELECT %s FROM release_assets WHERE id = ?" % ASSET_COLUMNS, int(asset_id))
    release = find_release(req, row, lambda r: asset is not None and r["id"] == asset["release_id"])
    return row, release, asset


@route("GET", "/api/v3/repos/{owner}/{repo}/releases/assets/{asset_id:int}")
def get_asset(req, owner, repo, asset_id):
    """The asset's description; with Accept: application/octet-stream, its bytes (as gh downloads)."""
    row, release, asset = find_asset(req, owner, repo, asset_id)
    if "application/octet-stream" in (req.headers.get("Accept") or ""):
        return asset_download(req, asset)
    return asset_json(req.app, row, release, asset)


@route("GET", "/{owner}/{repo}/releases/download/{tag}/{name}")
def browser_download(req, owner, repo, tag, name):
    row = find_repo(req, owner, repo)
    release = find_release(req, row, lambda r: r["tag_name"] == tag and not r["draft"])
    asset = req.app.store.one("SELECT %s FROM release_assets WHERE release_id = ? AND name = ?" % ASSET_COLUMNS,
                              release["id"], name)
    if asset is None:
        raise HTTPError(404, "Not Found")
    return asset_download(req, asset)


def asset_download(req, asset):
    with req.app.store.transaction() as db:
        db.execute("UPDATE release_assets SET download_count = download_count + 1 WHERE id = ?", (asset["id"],))
    data = req.app.store.one("SELECT data FROM release_assets WHERE id = ?", asset["id"])["data"]
    # served from the same origin as the signed-in pages: never rendered, never sniffed, never scripted
    return 200, bytes(data), {"Content-Type": asset["content_type"], "X-Content-Type-Options": "nosniff",
                              "Content-Security-Policy": "default-src 'none'; sandbox",
                              "Content-Disposition": 'attachment; filename="%s"' % asset["name"].replace('"', "")}


@route("PATCH", "/api/v3/repos/{owner}/{repo}/releases/assets/{asset_id:int}")
def update_asset(req, owner, repo, asset_id):
    body = req.json()
    name = req.field(body, "name", str, "ReleaseAsset")
    label = req.field(body, "label", str, "ReleaseAsset")
    row, release, asset = find_asset(req, owner, repo, asset_id, "write_release")
    if name is not None and (not ASSET_NAME_RE.fullmatch(name) or name in (".", "..")):
        raise invalid("ReleaseAsset", "name")
    with req.transaction() as db:
        if name not in (None, asset["name"]) and db.execute(
                "SELECT 1 FROM release_assets WHERE release_id = ? AND name = ?", (release["id"], name)).fetchone():
            raise invalid("ReleaseAsset", "name", "already_exists", "an asset named %s exists" % name)
        db.execute("UPDATE release_assets SET name = ?, label = ?, updated_at = ? WHERE id = ?",
                   (name or asset["name"], asset["label"] if label is None else label, now(), asset["id"]))
        req.effect("updated asset %s of release %s" % (name or asset["name"], release["tag_name"]))
    return asset_json(req.app, row, release, req.app.store.one(
        "SELECT %s FROM release_assets WHERE id = ?" % ASSET_COLUMNS, asset["id"]))


@route("DELETE", "/api/v3/repos/{owner}/{repo}/releases/assets/{asset_id:int}")
def delete_asset(req, owner, repo, asset_id):
    _, release, asset = find_asset(req, owner, repo, asset_id, "write_release")
    with req.transaction() as db:
        db.execute("DELETE FROM release_assets WHERE id = ?", (asset["id"],))
        req.effect("deleted asset %s of release %s" % (asset["name"], release["tag_name"]))
    return 204, None


@route("GET", "/api/v3/repos/{owner}/{repo}/tags")
def list_tags(req, owner, repo):
    row = find_repo(req, owner, repo)
    name, api = full_name(row), req.app.api
    out = []
    with open_repo(req.app, row["id"]) as git:
        for ref in sorted(list_refs(git, "refs/tags/"), reverse=True):
            tag = ref[len("refs/tags/"):]
            sha = resolve_commit(git, ref)
            if sha:
                out.append({"name": tag, "commit": {"sha": sha, "url": "%s/repos/%s/commits/%s" % (api, name, sha)},
                            "zipball_url": "%s/repos/%s/zipball/%s" % (api, name, tag),
                            "tarball_url": "%s/repos/%s/tarball/%s" % (api, name, tag),
                            "node_id": node_id("Ref", "%s:%s" % (name, ref))})
    return req.paginate(out)


# -- workflow records ---------------------------------------------------------------------------

WORKFLOW_NAME_RE = re.compile(rb"^name:\s*['\"]?(.+?)['\"]?\s*$", re.MULTILINE)


def workflow_files(git, row):
    """{path: display name} of .github/workflows/*.yml|yaml on the default branch."""
    sha = branch_sha(git, row["default_branch"])
    found = lookup_path(git, git[sha.encode()].tree.decode(), ".github/workflows") if sha else None
    if not found or found[0] != 0o040000:
        return {}
    out = {}
    for item in git[found[1].encode()].items():
        path = ".github/workflows/" + item.path.decode("utf-8", "replace")
        if path.endswith((".yml", ".yaml")) and item.mode != 0o040000:
            m = WORKFLOW_NAME_RE.search(git[item.sha].data)
            out[path] = m.group(1).decode("utf-8", "replace") if m else path
    return out


def sync_workflows(req, row):
    """The workflows table follows the files, so a workflow keeps its id across calls."""
    with open_repo(req.app, row["id"]) as git:
        files = workflow_files(git, row)
    known = {w["path"] for w in req.app.store.all("SELECT path FROM workflows WHERE repo_id = ?", row["id"])}
    if set(files) - known:
        with req.app.store.transaction() as db:
            for path in set(files) - known:
                db.execute("INSERT OR IGNORE INTO workflows (repo_id, path, created_at) VALUES (?, ?, ?)",
                           (row["id"], path, now()))
    rows = req.app.store.all("SELECT * FROM workflows WHERE repo_id = ? ORDER BY id", row["id"])
    return [(w, files.get(w["path"])) for w in rows]


def workflow_json(app, repo_row, wf, display):
    name = full_name(repo_row)
    return {"id": wf["id"], "node_id": node_id("Workflow", wf["id"]), "name": display or wf["path"],
            "path": wf["path"], "state": "active" if display else "deleted", "created_at": wf["created_at"],
            "updated_at": wf["created_at"], "url": "%s/repos/%s/actions/workflows/%d" % (app.api, name, wf["id"]),
            "html_url": "%s/%s/blob/%s/%s" % (app.url, name, repo_row["default_branch"], wf["path"]),
            "badge_url": "%s/%s/workflows/%s/badge.svg" % (app.url, name, wf["path"].rsplit("/", 1)[-1])}


def find_workflow(req, row, workflow_id):
    """By id or by file name, as GitHub takes either."""
    for wf, display in sync_workflows(req, row):
        if (str(wf["id"]) == workflow_id or wf["path"].rsplit("/", 1)[-1] == workflow_id) and display:
            return wf, display
    raise HTTPError(404, "Not Found")


@route("GET", "/api/v3/repos/{owner}/{repo}/actions/workflows")
def list_workflows(req, owner, repo):
    row = find_repo(req, owner, repo)
    workflows = [(w, d) for w, d in sync_workflows(req, row) if d]
    return {"total_count": len(workflows),
            "workflows": [workflow_json(req.app, row, w, d) for w, d in req.paginate(workflows)]}


@route("GET", "/api/v3/repos/{owner}/{repo}/actions/workflows/{workflow_id}")
def get_workflow(req, owner, repo, workflow_id):
    row = find_repo(req, owner, repo)
    return workflow_json(req.app, row, *find_workflow(req, row, workflow_id))


@route("POST", "/api/v3/repos/{owner}/{repo}/actions/workflows/{workflow_id}/dispatches")
def dispatch_workflow(req, owner, repo, workflow_id):
    body = req.json()
    ref = req.field(body, "ref", str, "Workflow", required=True)
    inputs = req.field(body, "inputs", dict, "Workflow", default={})
    if len(inputs) > 25 or not all(isinstance(v, (str, int, float, bool)) for v in inputs.values()):
        raise invalid("Workflow", "inputs", message="inputs must be at most 25 string, number or boolean values")
    row = find_repo(req, owner, repo)
    wf, _ = find_workflow(req, row, workflow_id)
    branch = ref[len("refs/heads/"):] if ref.startswith("refs/heads/") else ref
    with open_repo(req.app, row["id"]) as git:
        sha = resolve_commit(git, ref)
    if sha is None:
        raise invalid("Workflow", "ref", "invalid", "No ref found for: %s" % ref)
    req.authorize("run_workflow", Resource.repo(row), ref="refs/heads/" + branch, workflow=wf["path"])
    with req.transaction() as db:
        number = db.execute("SELECT COALESCE(MAX(run_number), 0) + 1 AS n FROM workflow_runs WHERE workflow_id = ?",
                            (wf["id"],)).fetchone()["n"]
        stamp = now()
        run_id = insert_row(db, "workflow_runs", {
            "repo_id": row["id"], "workflow_id": wf["id"], "run_number": number, "event": "workflow_dispatch",
            "head_branch": branch, "head_sha": sha, "inputs": json.dumps(inputs), "status": "queued",
            "actor_id": req.principal.user["id"], "created_at": stamp, "updated_at": stamp})
        req.effect("recorded run %d of %s on %s (nothing executes)" % (run_id, wf["path"], branch))
    return 204, None


def run_json(app, repo_row, run):
    name, api = full_name(repo_row), app.api
    wf = app.store.one("SELECT * FROM workflows WHERE id = ?", run["workflow_id"])
    url = "%s/repos/%s/actions/runs/%d" % (api, name, run["id"])
    return {"id": run["id"], "node_id": node_id("WorkflowRun", run["id"]), "name": wf["path"], "path": wf["path"],
            "display_title": wf["path"], "head_branch": run["head_branch"], "head_sha": run["head_sha"],
            "run_number": run["run_number"], "run_attempt": run["run_attempt"], "event": run["event"],
            "status": run["status"], "conclusion": run["conclusion"], "workflow_id": run["workflow_id"], "url": url,
            "html_url": "%s/%s/actions/runs/%d" % (app.url, name, run["id"]), "created_at": run["created_at"],
            "updated_at": run["updated_at"], "run_started_at": run["created_at"],
            "actor": user_json_by_id(app, run["actor_id"]), "triggering_actor": user_json_by_id(app, run["actor_id"]),
            "inputs": json.loads(run["inputs"]), "head_commit": None, "pull_requests": [],
            "repository": repo_json(app, repo_row), "head_repository": repo_json(app, repo_row),
            "jobs_url": url + "/jobs", "logs_url": url + "/logs", "check_suite_url": url + "/check-suite",
            "cancel_url": url + "/cancel", "rerun_url": url + "/rerun", "artifacts_url": url + "/artifacts",
            "workflow_url": "%s/repos/%s/actions/workflows/%d" % (api, name, run["workflow_id"])}


def runs_json(req, row, where, args):
    for key, column in (("branch", "head_branch"), ("event", "event"), ("status", "status"), ("head_sha", "head_sha")):
        if req.query.get(key):
            where.append("%s = ?" % column)
            args.append(req.query[key])
    runs = req.app.store.all("SELECT * FROM workflow_runs WHERE %s ORDER BY id DESC" % " AND ".join(where), *args)
    return {"total_count": len(runs), "workflow_runs": [run_json(req.app, row, r) for r in req.paginate(runs)]}


@route("GET", "/api/v3/repos/{owner}/{repo}/actions/runs")
def list_runs(req, owner, repo):
    row = find_repo(req, owner, repo)
    return runs_json(req, row, ["repo_id = ?"], [row["id"]])


@route("GET", "/api/v3/repos/{owner}/{repo}/actions/workflows/{workflow_id}/runs")
def list_workflow_runs(req, owner, repo, workflow_id):
    row = find_repo(req, owner, repo)
    wf, _ = find_workflow(req, row, workflow_id)
    return runs_json(req, row, ["workflow_id = ?"], [wf["id"]])


def find_run(req, owner, repo, run_id, action="read_code"):
    row = find_repo(req, owner, repo)
    run = req.app.store.one("SELECT * FROM workflow_runs WHERE id = ? AND repo_id = ?", int(run_id), row["id"])
    if run is None:
        raise HTTPError(404, "Not Found")
    if action != "read_code":
        req.authorize(action, Resource.repo(row), ref="refs/heads/" + run["head_branch"])
    return row, run


@route("GET", "/api/v3/repos/{owner}/{repo}/actions/runs/{run_id:int}")
def get_run(req, owner, repo, run_id):
    row, run = find_run(req, owner, repo, run_id)
    return run_json(req.app, row, run)


@route("GET", "/api/v3/repos/{owner}/{repo}/actions/runs/{run_id:int}/jobs")
@route("GET", "/api/v3/repos/{owner}/{repo}/actions/runs/{run_id:int}/artifacts")
def list_run_outputs(req, owner, repo, run_id):
    """Nothing runs here, so a run has no jobs and no artifacts (gh run view asks for both)."""
    find_run(req, owner, repo, run_id)
    return {"total_count": 0, req.raw_path.rstrip("/").rsplit("/", 1)[1]: []}


@route("POST", "/api/v3/repos/{owner}/{repo}/actions/runs/{run_id:int}/cancel")
def cancel_run(req, owner, repo, run_id):
    _, run = find_run(req, owner, repo, run_id, "run_workflow")
    if run["status"] == "completed":
        raise HTTPError(409, "Cannot cancel a workflow run that is completed.")
    with req.transaction() as db:
        db.execute("UPDATE workflow_runs SET status = 'completed', conclusion = 'cancelled', updated_at = ? WHERE id = ?",
                   (now(), run["id"]))
        req.effect("cancelled run %d" % run["id"])
    return 202, {}


@route("POST", "/api/v3/repos/{owner}/{repo}/actions/runs/{run_id:int}/rerun")
def rerun_run(req, owner, repo, run_id):
    _, run = find_run(req, owner, repo, run_id, "run_workflow")
    with req.transaction() as db:
        db.execute("UPDATE workflow_runs SET status = 'queued', conclusion = NULL, run_attempt = run_attempt + 1,"
                   " updated_at = ? WHERE id = ?", (now(), run["id"]))
        req.effect("re-queued run %d (attempt %d)" % (run["id"], run["run_attempt"] + 1))
    return 201, {}


@route("DELETE", "/api/v3/repos/{owner}/{repo}/actions/runs/{run_id:int}")
def delete_run(req, owner, repo, run_id):
    _, run = find_run(req, owner, repo, run_id, "run_workflow")
    with req.transaction() as db:
        db.execute("DELETE FROM workflow_runs WHERE id = ?", (run["id"],))
        req.effect("deleted run %d" % run["id"])
    return 204, None


# -- Actions secrets ----------------------------------------------------------------------------
# Clients seal a secret to the repository's public key (libsodium's crypto_box_seal), so the value
# never reaches agentgit in the clear. Names and dates are readable (read_secret); values never are.

SECRET_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,199}")
X25519_P = 2 ** 255 - 19


def x25519_public_key(private):
    """RFC 7748 X25519(k, 9): the public key of a 32-byte private key. Computed once, from the server
    key, never from what a request sends, so it need not be constant-time."""
    k = int.from_bytes(private, "little") & ~7 & ~(1 << 255) | (1 << 254)
    x2, z2, x3, z3, swap = 1, 0, 9, 1, 0
    for t in reversed(range(255)):      # the Montgomery ladder
        bit = (k >> t) & 1
        if swap ^ bit:
            x2, x3, z2, z3 = x3, x2, z3, z2
        swap = bit
        a, b, c, d = x2 + z2, x2 - z2, x3 + z3, x3 - z3
        aa, bb, da, cb = a * a % X25519_P, b * b % X25519_P, d * a % X25519_P, c * b % X25519_P
        e = aa - bb
        x3, z3 = (da + cb) ** 2 % X25519_P, 9 * (da - cb) ** 2 % X25519_P
        x2, z2 = aa * bb % X25519_P, e * (aa + 121665 * e) % X25519_P
    if swap:
        x2, z2 = x3, z3
    return (x2 * pow(z2, X25519_P - 2, X25519_P) % X25519_P).to_bytes(32, "little")


def secrets_public_key(app):
    """(key_id, base64 public key): one X25519 key for the server, derived from its key."""
    public = x25519_public_key(hmac.new(app.key, b"actions secrets", hashlib.sha256).digest())
    return str(int.from_bytes(hashlib.sha256(public).digest()[:6], "big")), base64.b64encode(public).decode()


def secret_json(row):
    return {"name": row["name"], "created_at": row["created_at"], "updated_at": row["updated_at"]}


@route("GET", "/api/v3/repos/{owner}/{repo}/actions/secrets/public-key")
def secrets_key(req, owner, repo):
    find_repo(req, owner, repo)
    key_id, key = secrets_public_key(req.app)
    return {"key_id": key_id, "key": key}


def actions_table(req):
    """(table, read action, write action, serializer): secrets and variables are listed, read and
    deleted by the same code, told apart by the path (/api/v3/repos/{owner}/{repo}/actions/{table})."""
    if req.raw_path.split("/")[7] == "secrets":
        return "secrets", "read_secret", "write_secret", secret_json
    return "variables", "read_variables", "write_variables", variable_json


@route("GET", "/api/v3/repos/{owner}/{repo}/actions/secrets")
@route("GET", "/api/v3/repos/{owner}/{repo}/actions/variables")
def list_secrets_or_variables(req, owner, repo):
    table, read, _, to_json = actions_table(req)
    row = find_repo(req, owner, repo, read)
    rows = req.app.store.all("SELECT * FROM %s WHERE repo_id = ? ORDER BY name" % table, row["id"])
    return {"total_count": len(rows), table: [to_json(r) for r in req.paginate(rows)]}


@route("GET", "/api/v3/repos/{owner}/{repo}/actions/secrets/{name}")
@route("GET", "/api/v3/repos/{owner}/{repo}/actions/variables/{name}")
def get_secret_or_variable(req, owner, repo, name):
    table, read, _, to_json = actions_table(req)
    row = find_repo(req, owner, repo, read)
    found = req.app.store.one("SELECT * FROM %s WHERE repo_id = ? AND name = ?" % table, row["id"], name.upper())
    if found is None:
        raise HTTPError(404, "Not Found")
    return to_json(found)


def actions_name(name, resource):
    """A secret's or variable's name as GitHub stores it (upper case), or 422."""
    if not isinstance(name, str) or not SECRET_NAME_RE.fullmatch(name) or name.upper().startswith("GITHUB_"):
        raise invalid(resource, "name", message="names are letters, digits and _, not starting with a digit"
                                                " or GITHUB_")
    return name.upper()


@route("PUT", "/api/v3/repos/{owner}/{repo}/actions/secrets/{name}")
def put_secret(req, owner, repo, name):
    body = req.json()
    value = req.field(body, "encrypted_value", str, "Secret", required=True)
    key_id = req.field(body, "key_id", str, "Secret", required=True)
    row = find_repo(req, owner, repo, "write_secret")
    name = actions_name(name, "Secret")
    if key_id != secrets_public_key(req.app)[0]:
        raise invalid("Secret", "key_id", message="seal the value to the key from actions/secrets/public-key")
    try:
        sealed = base64.b64decode(value, validate=True)
    except ValueError:
        sealed = b""
    if not 48 <= len(sealed) <= 48 + 48 * 1024:        # a sealed box: 32-byte key, 16-byte tag, the value
        raise invalid("Secret", "encrypted_value", message="a base64 libsodium sealed box of at most 48 KB")
    stamp = now()
    with req.transaction() as db:
        created = db.execute("INSERT OR IGNORE INTO secrets (repo_id, name, encrypted_value, created_at, updated_at)"
                             " VALUES (?, ?, ?, ?, ?)", (row["id"], name, value, stamp, stamp)).rowcount
        if not created:
            db.execute("UPDATE secrets SET encrypted_value = ?, updated_at = ? WHERE repo_id = ? AND name = ?",
                       (value, stamp, row["id"], name))
        req.effect("%s secret %s" % ("created" if created else "updated", name))
    return (201, {}) if created else (204, None)


@route("DELETE", "/api/v3/repos/{owner}/{repo}/actions/secrets/{name}")
@route("DELETE", "/api/v3/repos/{owner}/{repo}/actions/variables/{name}")
def delete_secret_or_variable(req, owner, repo, name):
    table, _, write, _ = actions_table(req)
    row = find_repo(req, owner, repo, write)
    with req.transaction() as db:
        if not db.execute("DELETE FROM %s WHERE repo_id = ? AND name = ?" % table, (row["id"], name.upper())).rowcount:
            raise HTTPError(404, "Not Found")
        req.effect("deleted %s %s" % (table[:-1], name.upper()))
    return 204, None


# -- Actions variables: configuration in the clear (deleted by delete_secret_or_variable above) -------

VARIABLE_MAX_BYTES = 48 * 1024


def variable_json(row):
    return {"name": row["name"], "value": row["value"], "created_at": row["created_at"],
            "updated_at": row["updated_at"]}


def variable_value(req, body, required):
    value = req.field(body, "value", str, "Variable", required=required)
    if value is not None and len(value.encode()) > VARIABLE_MAX_BYTES:
        raise invalid("Variable", "value", message="a value is at most 48 KB")
    return value


@route("POST", "/api/v3/repos/{owner}/{repo}/actions/variables")
def create_variable(req, owner, repo):
    body = req.json()
    row = find_repo(req, owner, repo, "write_variables")
    name = actions_name(req.field(body, "name", str, "Variable", required=True), "Variable")
    value = variable_value(req, body, required=True)
    stamp = now()
    with req.transaction() as db:
        if not db.execute("INSERT OR IGNORE INTO variables (repo_id, name, value, created_at, updated_at) VALUES"
                          " (?, ?, ?, ?, ?)", (row["id"], name, value, stamp, stamp)).rowcount:
            raise HTTPError(409, "Already exists - Variable already exists")
        req.effect("created variable %s" % name)
    return 201, {}


@route("PATCH", "/api/v3/repos/{owner}/{repo}/actions/variables/{name}")
def update_variable(req, owner, repo, name):
    body = req.json()
    row = find_repo(req, owner, repo, "write_variables")
    new_name = actions_name(req.field(body, "name", str, "Variable", default=name), "Variable")
    value = variable_value(req, body, required=False)
    with req.transaction() as db:
        found = db.execute("SELECT * FROM variables WHERE repo_id = ? AND name = ?", (row["id"], name.upper())).fetchone()
        if found is None:
            raise HTTPError(404, "Not Found")
        if new_name != found["name"] and db.execute("SELECT 1 FROM variables WHERE repo_id = ? AND name = ?",
                                                    (row["id"], new_name)).fetchone():
            raise HTTPError(409, "Already exists - Variable already exists")
        db.execute("UPDATE variables SET name = ?, value = ?, updated_at = ? WHERE repo_id = ? AND name = ?",
                   (new_name, found["value"] if value is None else value, now(), row["id"], found["name"]))
        req.effect("updated variable %s" % new_name)
    return 204, None


# -- search -------------------------------------------------------------------------------------
# GitHub's search syntax, the common part: free words, "quoted phrases", and qualifiers (key:value).
# Only what the caller may read is ever found.

SEARCH_TOKEN_RE = re.compile(r'(-?)(\w+):("[^"]*"|\S+)|"([^"]*)"|(\S+)')


def parse_search(q):
    """(words, {qualifier: [values]}, {qualifier: [negated values]})."""
    words, quals, negated = [], {}, {}
    for neg, key, value, phrase, word in SEARCH_TOKEN_RE.findall(q or ""):
        if key:
            (negated if neg else quals).setdefault(key.lower(), []).append(value.strip('"').lower())
        elif phrase:
            words.append(phrase.lower())
        else:
            # grouping and boolean operators (gh writes "( crash ) type:issue") are not narrowed on here
            word = word.strip("()").lower()
            if word and word not in ("and", "or", "not"):
                words.append(word)
    return words, quals, negated


def search_page(req, items, kind=None):
    per_page, page = req.page()
    body = {"total_count": len(items), "incomplete_results": False,
            "items": items[(page - 1) * per_page: page * per_page]}
    req.link_header(page, per_page, page + 1 if page * per_page < len(items) else None,
                    max((len(items) + per_page - 1) // per_page, 1))
    if kind:
        body["search_type"] = kind
    return body


def owner_matches(row, quals):
    owners = quals.get("user", []) + quals.get("org", []) + quals.get("owner", [])
    repos = quals.get("repo", [])
    name = full_name(row).lower()
    return (not owners or row["owner_login"].lower() in owners) and (not repos or name in repos)


@route("GET", "/api/v3/search/repositories")
def search_repositories(req):
    """Free words match the name and description; user:/org:/repo:, is:public|private, archived:."""
    words, quals, _ = parse_search(req.query.get("q", ""))
    if not words and not quals:
        raise invalid("Search", "q", "missing", "a search needs words or qualifiers")
    req.check("read_meta", SITE)
    out = []
    for row in req.app.store.all(REPO_SELECT + " ORDER BY r.name"):
        text = ("%s %s" % (row["name"], row["description"] or "")).lower()
        visibility = "private" if row["private"] else "public"
        if not owner_matches(row, quals) or not all(w in text for w in words):
            continue
        if any(v in ("public", "private") and v != visibility for v in quals.get("is", [])):
            continue
        if quals.get("archived") and quals["archived"][0] != ("true" if row["archived"] else "false"):
            continue
        if req.can("read_code", Resource.repo(row)):
            out.append(dict(repo_json(req.app, row), score=1.0))
    if req.query.get("sort") in ("updated", "stars", "forks", "help-wanted-issues"):
        out.sort(key=lambda r: r["updated_at"], reverse=req.query.get("order", "desc") == "desc")
    return search_page(req, out)


CODE_SEARCH_MAX_FILE = 384 * 1024     # GitHub leaves larger files out of code search too
CODE_SEARCH_MAX_RESULTS = 1000        # and answers at most this many


@route("GET", "/api/v3/search/code")
def search_code(req):
    """Every free word (case-insensitive) in a text file on the default branch of a repository the
    caller can read; repo:/user:/org:, path: (a directory prefix), filename:, extension:. There is no
    index: files are read at query time, which suits the repositories a reference server holds."""
    words, quals, _ = parse_search(req.query.get("q", ""))
    paths, names, extensions = quals.get("path", []), quals.get("filename", []), quals.get("extension", [])
    if not words and not (paths or names or extensions):
        raise invalid("Search", "q", "missing", "a code search needs words, path:, filename: or extension:")
    req.check("read_meta", SITE)
    items, incomplete = [], False
    for row in req.app.store.all(REPO_SELECT + " ORDER BY r.id"):
        if not owner_matches(row, quals) or not req.can("read_code", Resource.repo(row)):
            continue
        name = full_name(row)
        with open_repo(req.app, row["id"]) as git:
            head = branch_sha(git, row["default_branch"])
            entries = iter_tree_contents(git.object_store, git[head.encode()].tree) if head else ()
            for entry in entries:
                path = entry.path.decode("utf-8", "replace")
                base = path.rsplit("/", 1)[-1]
                if (paths and not any(path.lower().startswith(p.strip("/") + "/") for p in paths)
                        or names and base.lower() not in names
                        or extensions and base.rsplit(".", 1)[-1].lower() not in extensions
                        or not stat.S_ISREG(entry.mode)):
                    continue
                data = git[entry.sha].data if words else b""
                if len(data) > CODE_SEARCH_MAX_FILE or b"\0" in data[:8000]:
                    continue       # too large, or binary
                text = data.decode("utf-8", "replace").lower()
                if not all(word in text for word in words):
                    continue
                if len(items) == CODE_SEARCH_MAX_RESULTS:
                    incomplete = True
                    break
                sha, quoted = entry.sha.decode(), urllib.parse.quote(path)
                items.append({"name": base, "path": path, "sha": sha, "score": 1.0,
                              "url": "%s/repos/%s/contents/%s?ref=%s" % (req.app.api, name, quoted, head),
                              "git_url": "%s/repos/%s/git/blobs/%s" % (req.app.api, name, sha),
                              "html_url": "%s/%s/blob/%s/%s" % (req.app.url, name, head, quoted),
                              "repository": repo_json(req.app, row)})
        if incomplete:
            break
    return dict(search_page(req, items), incomplete_results=incomplete)


@route("GET", "/api/v3/search/issues")
def search_issues(req):
    """Free words match title and body; repo:/user:/org:, is:issue|pr|open|closed, state:, author:,
    assignee:, label:, mentions:."""
    found = matching_issues(req, req.query.get("q", ""))
    return search_page(req, [dict(data, score=1.0) for _, _, data in found], kind="lexical")


def matching_issues(req, q):
    """[(repository row, issue row, issue_json)] that the query matches, newest first (REST and GraphQL)."""
    words, quals, negated = parse_search(q)
    if not words and not quals:
        raise invalid("Search", "q", "missing", "a search needs words or qualifiers")
    req.check("read_meta", SITE)
    store = req.app.store
    readable = {}
    for row in store.all(REPO_SELECT):
        if owner_matches(row, quals) and req.can("read_code", Resource.repo(row)):
            readable[row["id"]] = row
    states = set(quals.get("state", [])) | {v for v in quals.get("is", []) if v in ("open", "closed")}
    kinds = {v for v in quals.get("is", []) + quals.get("type", []) if v in ("issue", "pr")}
    out = []
    for issue in store.all("SELECT * FROM issues ORDER BY created_at DESC, id DESC"):
        row = readable.get(issue["repo_id"])
        if row is None or (states and issue["state"] not in states):
            continue
        if kinds and ("pr" if issue["is_pull"] else "issue") not in kinds:
            continue
        text = ("%s %s" % (issue["title"], issue["body"] or "")).lower()
        if not all(w in text for w in words):
            continue
        data = issue_json(req.app, row, issue)
        labels = {l["name"].lower() for l in data["labels"]}
        assignees = {a["login"].lower() for a in data["assignees"]}
        author = (data["user"] or {}).get("login", "").lower()
        if any(l not in labels for l in quals.get("label", [])) or any(l in labels for l in negated.get("label", [])):
            continue
        if any(a != author for a in quals.get("author", [])) or any(a not in assignees for a in
                                                                     quals.get("assignee", [])):
            continue
        if any("@" + m not in text for m in quals.get("mentions", [])):
            continue
        out.append((row, issue, data))
    return out


# -- organizations and teams --------------------------------------------------------------------

def find_org(req, login, action="read_org"):
    org = find_account(req, login, kinds=("org",))
    req.authorize(action, Resource.account(org))
    return org


@route("POST", "/api/ext/v1/user/orgs")
def create_org(req):
    body = req.json()
    user = signed_in(req)
    login = req.field(body, "login", str, "Organization", required=True)
    if not LOGIN_RE.match(login):
        raise invalid("Organization", "login", message="login may use letters, digits and single hyphens, "
                                                         "up to 39 characters")
    name = req.field(body, "name", str, "Organization")
    req.authorize("create_org", SITE)
    with req.transaction() as db:
        if db.execute("SELECT 1 FROM accounts WHERE login = ?", (login,)).fetchone():
            raise invalid("Organization", "login", "already_exists", "login %s is taken" % login)
        org_id = insert_account(db, login, "org", name=name)
        db.execute("INSERT INTO org_members (org_id, user_id, role) VALUES (?, ?, 'admin')", (org_id, user["id"]))
        req.effect("created org %s with admin %s" % (login, user["login"]))
    return 201, org_json(req.app, account_by_id(req.app.store, org_id), detail=True)


@route("GET", "/api/v3/orgs/{org}")
def get_org(req, org):
    return org_json(req.app, find_org(req, org), detail=True)


@route("PATCH", "/api/v3/orgs/{org}")
def update_org(req, org):
    body = req.json()
    row = find_org(req, org, "manage_org")
    fields = {}
    for key in ("name", "description", "email"):
        value = req.field(body, key, str, "Organization")
        if value is not None:
            fields[key] = value
    base = req.field(body, "default_repository_permission", str, "Organization")
    if base is not None:
        if base not in ("none", "read", "write", "admin"):
            raise invalid("Organization", "default_repository_permission")
        fields["base_permission"] = base
    with req.transaction() as db:
        if fields:
            fields["updated_at"] = now()
            update_row(db, "accounts", fields, "id", row["id"])
        req.effect("updated org %s: %s" % (row["login"], ", ".join(sorted(fields))))
    return org_json(req.app, account_by_id(req.app.store, row["id"]), detail=True)


@route("GET", "/api/v3/user/orgs")
def list_own_orgs(req):
    user = signed_in(req)
    req.check("read_account", Resource.account(user))
    rows = req.app.store.all("SELECT a.* FROM accounts a JOIN org_members m ON m.org_id = a.id"
                             " WHERE m.user_id = ? ORDER BY a.login", user["id"])
    return [org_json(req.app, row) for row in req.paginate(rows)]


@route("GET", "/api/v3/orgs/{org}/repos")
def list_org_repos(req, org):
    row = find_org(req, org)
    rows = req.app.store.all(REPO_SELECT + " WHERE r.owner_id = ?", row["id"])
    kind = req.query.get("type", "all")
    pairs = [(r, p) for r, p in visible_repos(req, rows)
             if kind in ("all", "member") or (kind == "private") == bool(r["private"])]
    return sort_repos(req, pairs, default_sort="created")


@route("POST", "/api/v3/orgs/{org}/repos")
def create_org_repo(req, org):
    return create_repo_for(req, find_account(req, org, kinds=("org",)))


@route("GET", "/api/v3/orgs/{org}/members")
def list_org_members(req, org):
    row = find_org(req, org)
    if not req.can("read_org_private", Resource.account(row)):
        return []    # membership is private to members here (GitHub shows 'public' members; we have none)
    role = req.query.get("role", "all")
    rows = req.app.store.all("SELECT a.*, m.role FROM accounts a JOIN org_members m ON m.user_id = a.id"
                             " WHERE m.org_id = ? ORDER BY a.login", row["id"])
    return [user_json(req.app, r) for r in req.paginate([r for r in rows if role in ("all", r["role"])])]


def membership_json(app, org, user, role):
    return {"url": "%s/orgs/%s/memberships/%s" % (app.api, org["login"], user["login"]), "state": "active",
            "role": role, "organization_url": "%s/orgs/%s" % (app.api, org["login"]),
            "organization": org_json(app, org), "user": user_json(app, user)}


@route("GET", "/api/v3/orgs/{org}/memberships/{login}")
def get_org_membership(req, org, login):
    row = find_org(req, org, "read_org_private")
    user = find_account(req, login, kinds=("human", "agent"))
    role = permission_of_org_member(req.app.store, row["id"], user["id"])
    if role is None:
        raise HTTPError(404, "Not Found")
    return membership_json(req.app, row, user, role)


@route("PUT", "/api/v3/orgs/{org}/memberships/{login}")
def set_org_membership(req, org, login):
    body = req.json()
    row = find_org(req, org, "manage_org")
    user = find_account(req, login, kinds=("human", "agent"))
    role = req.field(body, "role", str, "Membership", default="member")
    if role not in ("admin", "member"):
        raise invalid("Membership", "role", message="role must be admin or member")
    with req.transaction() as db:
        db.execute("INSERT INTO org_members (org_id, user_id, role) VALUES (?, ?, ?)"
                   " ON CONFLICT (org_id, user_id) DO UPDATE SET role = excluded.role", (row["id"], user["id"], role))
        req.effect("%s is %s of org %s" % (user["login"], role, row["login"]))
    return membership_json(req.app, row, user, role)


@route("DELETE", "/api/v3/orgs/{org}/memberships/{login}")
@route("DELETE", "/api/v3/orgs/{org}/members/{login}")
def remove_org_member(req, org, login):
    row = find_org(req, org, "manage_org")
    user = find_account(req, login, kinds=("human", "agent"))
    with req.transaction() as db:
        admins = db.execute("SELECT user_id FROM org_members WHERE org_id = ? AND role = 'admin'",
                            (row["id"],)).fetchall()
        if [a["user_id"] for a in admins] == [user["id"]]:
            raise invalid("Membership", "login", "custom", "an organization keeps at least one admin")
        db.execute("DELETE FROM team_members WHERE user_id = ? AND team_id IN (SELECT id FROM teams WHERE org_id = ?)",
                   (user["id"], row["id"]))
        db.execute("DELETE FROM org_members WHERE org_id = ? AND user_id = ?", (row["id"], user["id"]))
        req.effect("%s left org %s" % (user["login"], row["login"]))
    return 204, None


def find_team(req, org, slug, action="read_team"):
    org_row = find_account(req, org, kinds=("org",))
    team = req.app.store.one("SELECT * FROM teams WHERE org_id = ? AND slug = ?", org_row["id"], slug)
    if team is None:
        raise HTTPError(404, "Not Found")
    req.authorize(action, Resource.team(team, org_row["login"]))
    return org_row, team


def team_slug(name):
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


@route("GET", "/api/v3/orgs/{org}/teams")
def list_teams(req, org):
    row = find_org(req, org, "read_org_private")
    teams = req.app.store.all("SELECT * FROM teams WHERE org_id = ? ORDER BY name", row["id"])
    visible = [t for t in teams if req.can("read_team", Resource.team(t, row["login"]))]
    return [team_json(req.app, t, row) for t in req.paginate(visible)]


@route("POST", "/api/v3/orgs/{org}/teams")
def create_team(req, org):
    body = req.json()
    row = find_org(req, org, "manage_org")
    name = req.field(body, "name", str, "Team", required=True)
    slug = team_slug(name)
    if not slug or len(name) > TEAM_NAME_MAX:
        raise invalid("Team", "name", message="name needs a letter or digit and at most 255 characters")
    privacy = req.field(body, "privacy", str, "Team", default="closed")
    if privacy not in ("secret", "closed"):
        raise invalid("Team", "privacy", message="privacy must be secret or closed")
    description = req.field(body, "description", str, "Team")
    with req.transaction() as db:
        if db.execute("SELECT 1 FROM teams WHERE org_id = ? AND slug = ?", (row["id"], slug)).fetchone():
            raise invalid("Team", "name", "already_exists", "team %s already exists" % slug)
        stamp = now()
        team_id = db.execute("INSERT INTO teams (org_id, slug, name, description, privacy, created_at, updated_at)"
                             " VALUES (?, ?, ?, ?, ?, ?, ?)",
                             (row["id"], slug, name, description, privacy, stamp, stamp)).lastrowid
        db.execute("INSERT INTO team_members (team_id, user_id, role) VALUES (?, ?, 'maintainer')",
                   (team_id, req.principal.user["id"]))
        req.effect("created team %s/%s" % (row["login"], slug))
    team = req.app.store.one("SELECT * FROM teams WHERE id = ?", team_id)
    return 201, team_json(req.app, team, row, detail=True)


@route("GET", "/api/v3/orgs/{org}/teams/{slug}")
def get_team(req, org, slug):
    org_row, team = find_team(req, org, slug)
    return team_json(req.app, team, org_row, detail=True)


@route("PATCH", "/api/v3/orgs/{org}/teams/{slug}")
def update_team(req, org, slug):
    body = req.json()
    org_row, team = find_team(req, org, slug, "manage_team")
    fields = {}
    for key in ("name", "description", "privacy"):
        value = req.field(body, key, str, "Team")
        if value is not None:
            fields[key] = value
    if fields.get("privacy", "closed") not in ("secret", "closed"):
        raise invalid("Team", "privacy", message="privacy must be secret or closed")
    if "name" in fields:
        fields["slug"] = team_slug(fields["name"])
        if not fields["slug"] or len(fields["name"]) > TEAM_NAME_MAX:
            raise invalid("Team", "name")
    with req.transaction() as db:
        if "slug" in fields and db.execute("SELECT 1 FROM teams WHERE org_id = ? AND slug = ? AND id != ?",
                                           (org_row["id"], fields["slug"], team["id"])).fetchone():
            raise invalid("Team", "name", "already_exists", "team %s already exists" % fields["slug"])
        if fields:
            fields["updated_at"] = now()
            update_row(db, "teams", fields, "id", team["id"])
        req.effect("updated team %s/%s" % (org_row["login"], team["slug"]))
    team = req.app.store.one("SELECT * FROM teams WHERE id = ?", team["id"])
    return team_json(req.app, team, org_row, detail=True)


@route("DELETE", "/api/v3/orgs/{org}/teams/{slug}")
def delete_team(req, org, slug):
    org_row, team = find_team(req, org, slug, "manage_team")
    with req.transaction() as db:
        db.execute("DELETE FROM teams WHERE id = ?", (team["id"],))
        req.effect("deleted team %s/%s" % (org_row["login"], team["slug"]))
    return 204, None


@route("GET", "/api/v3/orgs/{org}/teams/{slug}/members")
def list_team_members(req, org, slug):
    _, team = find_team(req, org, slug)
    role = req.query.get("role", "all")
    rows = req.app.store.all("SELECT a.*, tm.role FROM accounts a JOIN team_members tm ON tm.user_id = a.id"
                             " WHERE tm.team_id = ? ORDER BY a.login", team["id"])
    return [user_json(req.app, r) for r in req.paginate([r for r in rows if role in ("all", r["role"])])]


def team_membership_json(app, org, team, user, role):
    return {"url": "%s/orgs/%s/teams/%s/memberships/%s" % (app.api, org["login"], team["slug"], user["login"]),
            "role": role, "state": "active"}


@route("GET", "/api/v3/orgs/{org}/teams/{slug}/memberships/{login}")
def get_team_membership(req, org, slug, login):
    org_row, team = find_team(req, org, slug)
    user = find_account(req, login, kinds=("human", "agent"))
    member = req.app.store.one("SELECT role FROM team_members WHERE team_id = ? AND user_id = ?",
                               team["id"], user["id"])
    if member is None:
        raise HTTPError(404, "Not Found")
    return team_membership_json(req.app, org_row, team, user, member["role"])


@route("PUT", "/api/v3/orgs/{org}/teams/{slug}/memberships/{login}")
def set_team_membership(req, org, slug, login):
    body = req.json()
    org_row, team = find_team(req, org, slug, "manage_team")
    user = find_account(req, login, kinds=("human", "agent"))
    role = req.field(body, "role", str, "Team", default="member")
    if role not in ("member", "maintainer"):
        raise invalid("Team", "role", message="role must be member or maintainer")
    with req.transaction() as db:
        if permission_of_org_member(req.app.store, org_row["id"], user["id"]) is None:
            raise invalid("Team", "login", "custom", "%s is not a member of %s; add them to the organization first"
                          % (user["login"], org_row["login"]))
        db.execute("INSERT INTO team_members (team_id, user_id, role) VALUES (?, ?, ?)"
                   " ON CONFLICT (team_id, user_id) DO UPDATE SET role = excluded.role", (team["id"], user["id"], role))
        req.effect("%s is %s of team %s/%s" % (user["login"], role, org_row["login"], team["slug"]))
    return team_membership_json(req.app, org_row, team, user, role)


@route("DELETE", "/api/v3/orgs/{org}/teams/{slug}/memberships/{login}")
def remove_team_membership(req, org, slug, login):
    org_row, team = find_team(req, org, slug, "manage_team")
    user = find_account(req, login, kinds=("human", "agent"))
    with req.transaction() as db:
        db.execute("DELETE FROM team_members WHERE team_id = ? AND user_id = ?", (team["id"], user["id"]))
        req.effect("%s left team %s/%s" % (user["login"], org_row["login"], team["slug"]))
    return 204, None


@route("GET", "/api/v3/orgs/{org}/teams/{slug}/repos")
def list_team_repos(req, org, slug):
    _, team = find_team(req, org, slug)
    rows = req.app.store.all(REPO_SELECT + " JOIN team_repos tr ON tr.repo_id = r.id WHERE tr.team_id = ? ORDER BY r.name",
                             team["id"])
    return [repo_json(req.app, r) for r in req.paginate([r for r in rows if req.can("read_code", Resource.repo(r))])]


def team_repo(req, org, slug, owner, repo, action):
    org_row, team = find_team(req, org, slug, action)
    row = find_repo(req, owner, repo, "admin_repo" if action == "manage_team" else "read_code")
    if row["owner_id"] != org_row["id"]:
        raise invalid("Team", "repo", "custom", "only repositories of %s can be added to its teams" % org_row["login"])
    return org_row, team, row


@route("GET", "/api/v3/orgs/{org}/teams/{slug}/repos/{owner}/{repo}")
def check_team_repo(req, org, slug, owner, repo):
    _, team, row = team_repo(req, org, slug, owner, repo, "read_team")
    grant = req.app.store.one("SELECT permission FROM team_repos WHERE team_id = ? AND repo_id = ?",
                              team["id"], row["id"])
    if grant is None:
        raise HTTPError(404, "Not Found")
    if "repository+json" in (req.headers.get("Accept") or ""):
        return repo_json(req.app, row, grant["permission"])
    return 204, None


@route("PUT", "/api/v3/orgs/{org}/teams/{slug}/repos/{owner}/{repo}")
def add_team_repo(req, org, slug, owner, repo):
    body = req.json()
    org_row, team, row = team_repo(req, org, slug, owner, repo, "manage_team")
    permission = PERMISSION_ALIASES.get(req.field(body, "permission", str, "Team", default="push"))
    if permission is None:
        raise invalid("Team", "permission", message="permission must be pull, triage, push, maintain or admin")
    with req.transaction() as db:
        db.execute("INSERT INTO team_repos (team_id, repo_id, permission) VALUES (?, ?, ?)"
                   " ON CONFLICT (team_id, repo_id) DO UPDATE SET permission = excluded.permission",
                   (team["id"], row["id"], permission))
        req.effect("team %s/%s holds %s on %s" % (org_row["login"], team["slug"], permission, row["name"]))
    return 204, None


@route("DELETE", "/api/v3/orgs/{org}/teams/{slug}/repos/{owner}/{repo}")
def remove_team_repo(req, org, slug, owner, repo):
    org_row, team, row = team_repo(req, org, slug, owner, repo, "manage_team")
    with req.transaction() as db:
        db.execute("DELETE FROM team_repos WHERE team_id = ? AND repo_id = ?", (team["id"], row["id"]))
        req.effect("team %s/%s no longer holds %s" % (org_row["login"], team["slug"], row["name"]))
    return 204, None


# -- agent-first extensions: registration, personal tokens, audit -------------------------------

@route("POST", "/api/ext/v1/agents")
def register_agent_endpoint(req):
    """agent-git-service's registration contract: anonymous, rate-limited per client address."""
    body = req.json()
    prefix = req.field(body, "prefix_login", str, "Agent", required=True)
    if not AGENT_PREFIX_RE.match(prefix):
        raise invalid("Agent", "prefix_login", message="prefix_login must match ^[a-z0-9][a-z0-9-]{0,31}$")
    repo_name = req.field(body, "default_repo_name", str, "Agent", default="workspace")
    if not valid_repo_name(repo_name):
        raise invalid("Agent", "default_repo_name", message="not a valid repository name")
    if req.app.config.registration != "open":
        req.app.audit(req.principal, req.surface, Decision("deny", "register_agent", "site",
                                                           ["registration is closed on this server"]))
        raise HTTPError(403, "Agent registration is closed on this server")
    retry_after = req.app.registrations.hit(req.client)
    if retry_after:
        raise HTTPError(429, "Too many agent registrations from this address; retry later",
                        headers={"Retry-After": str(retry_after)})
    req.authorize("register_agent", SITE)
    login, token, full_name = register_agent(req.app, prefix, repo_name)
    req.effect("registered agent %s with repository %s, token %s" % (login, full_name, token_fingerprint(token)))
    return 201, {"login": login, "token": token, "repo_full_name": full_name, "user_kind": "agent",
                 "clone_url": "%s/%s.git" % (req.app.url, full_name)}


def token_json(row):
    return {"id": row["id"], "name": row["name"], "kind": row["kind"],
            "scopes": [s for s in row["scopes"].split(",") if s], "fingerprint": row["fingerprint"],
            "created_at": row["created_at"], "expires_at": row["expires_at"],
            "last_used_at": row["last_used_at"], "revoked_at": row["revoked_at"]}


@route("GET", "/api/ext/v1/user/tokens")
def list_tokens(req):
    user = signed_in(req)
    req.check("read_tokens", Resource.account(user))
    rows = req.app.store.all("SELECT * FROM tokens WHERE user_id = ? ORDER BY id", user["id"])
    return req.paginate([token_json(r) for r in rows])


@route("POST", "/api/ext/v1/user/tokens")
def create_token(req):
    body = req.json()
    user = signed_in(req)
    name = req.field(body, "name", str, "Token", required=True)
    scopes = req.field(body, "scopes", list, "Token", default=[])
    unknown = [s for s in scopes if s not in ALL_SCOPES]
    if unknown or not all(isinstance(s, str) for s in scopes):
        raise invalid("Token", "scopes", message="unknown scopes: %s" % ", ".join(map(str, unknown)))
    expires_at = req.field(body, "expires_at", str, "Token")
    if expires_at is not None:
        try:
            expires = parse_time(expires_at)
        except ValueError:
            raise invalid("Token", "expires_at", message="expires_at must be an ISO 8601 time with a zone")
        if expires <= datetime.datetime.now(datetime.timezone.utc):
            raise invalid("Token", "expires_at", message="expires_at is in the past")
        expires_at = expires.strftime("%Y-%m-%dT%H:%M:%SZ")
    token, row = mint_personal_token(req, user, name, scopes, expires_at)
    return 201, dict(token_json(row), token=token)


def mint_personal_token(req, user, name, scopes, expires_at):
    """(token, row) for the caller's own new personal token. No escalation: a token can only mint
    tokens with scopes it holds itself."""
    req.authorize("issue_token", Resource.account(user))
    beyond = [s for s in scopes if s not in req.principal.scopes]
    if beyond:
        raise HTTPError(403, "This token cannot grant scopes it does not hold: %s" % ", ".join(beyond))
    with req.transaction() as db:
        token, token_id = issue_token(db, req.app.key, user["id"], "personal", name=name, scopes=scopes,
                                      expires_at=expires_at)
        req.effect("issued personal token #%d %s" % (token_id, token_fingerprint(token)))
    return token, req.app.store.one("SELECT * FROM tokens WHERE id = ?", token_id)


@route("DELETE", "/api/ext/v1/user/tokens/{token_id:int}")
def revoke_token(req, token_id):
    user = signed_in(req)
    row = req.app.store.one("SELECT * FROM tokens WHERE id = ? AND user_id = ?", int(token_id), user["id"])
    if row is None:
        raise HTTPError(404, "Not Found")
    revoke_own_token(req, user, row)
    return 204, None


def revoke_own_token(req, user, row):
    req.authorize("revoke_token", Resource.account(user))
    with req.transaction() as db:
        db.execute("UPDATE tokens SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?", (now(), row["id"]))
        req.effect("revoked token #%d %s" % (row["id"], row["fingerprint"]))


AUDIT_EXPLAINED = (("agent or actor", "actor"), ("kind", "user_kind"), ("delegator", "delegator"), ("task", "task"),
                   ("grant", "grant_id"), ("runtime", "runtime"), ("surface", "surface"), ("resource", "resource"),
                   ("action", "action"), ("decision", "decision"), ("token", "token_fingerprint"),
                   ("side effect", "side_effect"), ("at", "at"))


def explain(row):
    """The whole chain of one decision, a line each, with the rules that decided it."""
    lines = ["%-15s %s" % (label, row[key] if row[key] is not None else "-") for label, key in AUDIT_EXPLAINED]
    lines += ["%-15s %s" % ("because" if i == 0 else "", reason) for i, reason in enumerate(json.loads(row["reasons"]))]
    return "\n".join(lines)


@route("GET", "/api/ext/v1/audit/{audit_id:int}")
def read_audit_row(req, audit_id):
    """One row, explained: for site admins, the actor, and the human on whose behalf it acted."""
    user = signed_in(req)
    row = req.app.store.one("SELECT * FROM audit WHERE id = ?", int(audit_id))
    mine = row is not None and user["login"] in (row["actor"], row["delegator"])
    if row is None or not (mine or req.can("read_site_audit", SITE)):
        raise HTTPError(404, "Not Found")
    req.check("read_audit", Resource.account(user))
    return dict(audit_json(row), explanation=explain(row))


@route("GET", "/api/ext/v1/audit")
def read_audit(req):
    """Site admins read every row; anyone else their own. Filters: actor, action, decision, resource,
    surface, since (ISO time), after (row id)."""
    user = signed_in(req)
    where, args = [], []
    if req.can("read_site_audit", SITE):
        if req.query.get("actor"):
            where.append("actor = ?")
            args.append(req.query["actor"])
    else:
        req.check("read_audit", Resource.account(user))
        where.append("actor = ?")
        args.append(user["login"])
    for key in ("action", "decision", "resource", "surface"):
        if req.query.get(key):
            where.append("%s = ?" % key)
            args.append(req.query[key])
    if req.query.get("since"):
        where.append("at >= ?")
        args.append(req.query["since"])
    if req.query.get("after", "").isdigit():
        where.append("id > ?")
        args.append(int(req.query["after"]))
    per_page, page = req.page()
    rows = req.app.store.all("SELECT * FROM audit%s ORDER BY id LIMIT ? OFFSET ?" % (
        " WHERE " + " AND ".join(where) if where else ""), *args, per_page + 1, (page - 1) * per_page)
    req.link_header(page, per_page, page + 1 if len(rows) > per_page else None)
    return [audit_json(r) for r in rows[:per_page]]


# -- delegation: invites, consent, bindings, switch sessions, lifecycle, revocation ---------------
# A human invites (with the grants they may give); the agent consents with its own token; the grants
# are applied in the same transaction as the binding. The human can then rename, unbind, reset,
# switch into, suspend, resume and retire the agent, and revoke along every path.

INVITE_DEFAULT_SECONDS, INVITE_MAX_SECONDS = 7 * 86400, 30 * 86400
REPO_GRANT_PERMISSIONS = ("pull", "triage", "push", "maintain", "admin")


def later(seconds):
    moment = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def repo_by_id(store, repo_id):
    return store.one(REPO_SELECT + " WHERE r.id = ?", repo_id)


def repo_by_full_name(store, full):
    owner, _, name = (full or "").partition("/")
    return lookup_repo(store, owner, name) if owner and name else None


def team_by_slug(store, org_login, slug):
    return store.one("SELECT t.*, a.login AS org_login FROM teams t JOIN accounts a ON a.id = t.org_id"
                     " WHERE a.login = ? AND t.slug = ?", org_login, slug)


def check_grant_authority(store, inviter, grants):
    """Every grant an invite carries must be the inviter's to give: admin on the repository (which
    covers any permission on it), and the right to manage the team. Returns the first reason not,
    or None. Run when the invite is made and again when the agent consents."""
    principal = Principal(user=inviter)
    for grant in grants["repo_grants"]:
        repo = repo_by_full_name(store, grant["repo_full_name"])
        decision = decide(store, principal, "delegate_access", Resource.repo(repo)) if repo else None
        if decision is None or not decision.allowed:
            return "%s cannot grant access to %s" % (inviter["login"], grant["repo_full_name"])
    for grant in grants["team_grants"]:
        team = team_by_slug(store, grant["org"], grant["team_slug"])
        decision = decide(store, principal, "delegate_team", Resource.team(team, grant["org"])) if team else None
        if decision is None or not decision.allowed:
            return "%s cannot add members to team %s/%s" % (inviter["login"], grant["org"], grant["team_slug"])
    return None


def invite_grants(req, body):
    repo_grants = req.field(body, "repo_grants", list, "AgentInvite", default=[])
    team_grants = req.field(body, "team_grants", list, "AgentInvite", default=[])
    out = {"repo_grants": [], "team_grants": []}
    for grant in repo_grants:
        if not isinstance(grant, dict) or not isinstance(grant.get("repo_full_name"), str) or \
                grant.get("permission", "push") not in REPO_GRANT_PERMISSIONS:
            raise invalid("AgentInvite", "repo_grants", message="each repo grant needs repo_full_name and a "
                                                                 "permission of %s" % ", ".join(REPO_GRANT_PERMISSIONS))
        out["repo_grants"].append({"repo_full_name": grant["repo_full_name"], "permission": grant.get("permission", "push")})
    for grant in team_grants:
        if not isinstance(grant, dict) or not all(isinstance(grant.get(k), str) for k in ("org", "team_slug")) or \
                grant.get("role", "member") not in ("member", "maintainer"):
            raise invalid("AgentInvite", "team_grants", message="each team grant needs org, team_slug and a role of "
                                                                 "member or maintainer")
        out["team_grants"].append({"org": grant["org"], "team_slug": grant["team_slug"],
                                   "role": grant.get("role", "member")})
    return out


@route("POST", "/api/ext/v1/agent-invites")
def create_invite(req):
    body = req.json()
    grants = invite_grants(req, body)
    seconds = req.field(body, "expires_in", int, "AgentInvite", default=INVITE_DEFAULT_SECONDS)
    if not 60 <= seconds <= INVITE_MAX_SECONDS:
        raise invalid("AgentInvite", "expires_in", message="expires_in must be 60 to %d seconds" % INVITE_MAX_SECONDS)
    user = signed_in(req)
    req.authorize("create_invite", SITE)
    refused = check_grant_authority(req.app.store, user, grants)
    if refused:
        req.app.audit(req.principal, req.surface, Decision("deny", "create_invite", "site", [refused]))
        raise HTTPError(403, refused)
    with req.transaction() as db:
        token, expires_at, effect = make_invite(db, req.app.key, user, grants, seconds)
        req.effect(effect)
    return 201, dict(grants, invite_token=token, expires_at=expires_at)


def make_invite(db, key, inviter, grants, seconds):
    """(invite token, expiry, what happened). The token is shown once; only its hash is kept."""
    token = mint_token(key, INVITE_PREFIX)
    expires_at = later(seconds)
    insert_row(db, "agent_invites", {"inviter_id": inviter["id"], "hash": token_hash(token),
                                     "fingerprint": token_fingerprint(token), "grants": json.dumps(grants),
                                     "created_at": now(), "expires_at": expires_at})
    return token, expires_at, "invite %s from %s with %d repo and %d team grants, expires %s" % (
        token_fingerprint(token), inviter["login"], len(grants["repo_grants"]), len(grants["team_grants"]), expires_at)


def apply_grants(db, store, agent, grants):
    """Collaborator and team rows for the invite's grants, remembered in agent_grants."""
    stamp = now()
    for grant in grants["repo_grants"]:
        repo = repo_by_full_name(store, grant["repo_full_name"])
        permission = PERMISSION_ALIASES[grant["permission"]]
        db.execute("INSERT INTO collaborators (repo_id, user_id, permission) VALUES (?, ?, ?)"
                   " ON CONFLICT (repo_id, user_id) DO UPDATE SET permission = excluded.permission",
                   (repo["id"], agent["id"], permission))
        insert_row(db, "agent_grants", {"agent_id": agent["id"], "repo_id": repo["id"], "permission": permission,
                                        "created_at": stamp})
    for grant in grants["team_grants"]:
        team = team_by_slug(store, grant["org"], grant["team_slug"])
        if db.execute("INSERT OR IGNORE INTO org_members (org_id, user_id, role) VALUES (?, ?, 'member')",
                      (team["org_id"], agent["id"])).rowcount:
            insert_row(db, "agent_grants", {"agent_id": agent["id"], "org_id": team["org_id"], "permission": "member",
                                            "created_at": stamp})
        db.execute("INSERT INTO team_members (team_id, user_id, role) VALUES (?, ?, ?)"
                   " ON CONFLICT (team_id, user_id) DO UPDATE SET role = excluded.role",
                   (team["id"], agent["id"], grant["role"]))
        insert_row(db, "agent_grants", {"agent_id": agent["id"], "team_id": team["id"], "permission": grant["role"],
                                        "created_at": stamp})


def remove_grants(db, agent_id, where="", args=()):
    """Take back what bindings granted (all of it, or those matching ``where``)."""
    grants = db.execute("SELECT * FROM agent_grants WHERE agent_id = ?%s" % where, (agent_id,) + tuple(args)).fetchall()
    for grant in grants:
        if grant["repo_id"]:
            db.execute("DELETE FROM collaborators WHERE repo_id = ? AND user_id = ?", (grant["repo_id"], agent_id))
        elif grant["team_id"]:
            db.execute("DELETE FROM team_members WHERE team_id = ? AND user_id = ?", (grant["team_id"], agent_id))
        else:
            db.execute("DELETE FROM org_members WHERE org_id = ? AND user_id = ?", (grant["org_id"], agent_id))
        db.execute("DELETE FROM agent_grants WHERE id = ?", (grant["id"],))
    return len(grants)


def binding_json(app, agent, human, binding):
    return {"human": user_json(app, human), "agent": user_json(app, agent), "bound_at": binding["bound_at"],
            "display_name": binding["display_name"]}


@route("POST", "/api/ext/v1/agent-bindings/confirm")
def confirm_binding(req):
    """The agent's consent, with its own token. 422 unknown or expired invite; 409 used or bound."""
    body = req.json()
    token = req.field(body, "invite_token", str, "AgentBinding", required=True)
    agent = signed_in(req)
    req.authorize("bind_agent", Resource.account(agent))      # the agent's own token, nothing else
    with req.transaction() as db:
        inviter, effect = accept_invite(db, req.app, agent, token)
        req.effect(effect)
    binding = req.app.store.one("SELECT * FROM agent_bindings WHERE agent_id = ?", agent["id"])
    return 201, binding_json(req.app, agent, inviter, binding)


def accept_invite(db, app, agent, token):
    """Inside the caller's transaction: consume the invite, bind, apply its grants. Returns
    (inviter, what happened); HTTPError 422/409/403 when it cannot be honoured, with nothing applied."""
    store = app.store
    invite = db.execute("SELECT * FROM agent_invites WHERE hash = ?", (token_hash(token),)).fetchone() if genuine_mac(
        app.key, token, INVITE_PREFIX) else None
    if invite is None or invite["expires_at"] <= now():
        raise invalid("AgentBinding", "invite_token", "invalid", "the invite is unknown or has expired")
    if invite["consumed_at"]:
        raise HTTPError(409, "This invite has been used")
    if db.execute("SELECT 1 FROM agent_bindings WHERE agent_id = ?", (agent["id"],)).fetchone():
        raise HTTPError(409, "%s is already bound to a human" % agent["login"])
    inviter = account_by_id(store, invite["inviter_id"])
    if inviter is None or inviter["suspended_at"]:
        raise HTTPError(403, "The inviting human can no longer delegate")
    grants = json.loads(invite["grants"])
    refused = check_grant_authority(store, inviter, grants)       # the inviter may have lost it since
    if refused:
        raise HTTPError(403, "The invite can no longer be honoured: " + refused)
    stamp = now()
    db.execute("UPDATE agent_invites SET consumed_at = ?, consumed_by = ? WHERE id = ?", (stamp, agent["id"],
                                                                                         invite["id"]))
    insert_row(db, "agent_bindings", {"agent_id": agent["id"], "human_id": inviter["id"], "invite_id": invite["id"],
                                      "bound_at": stamp})
    apply_grants(db, store, agent, grants)
    return inviter, "bound %s to %s (invite %s); granted %s" % (agent["login"], inviter["login"], invite["fingerprint"],
                                                                 json.dumps(grants, separators=(",", ":")))


def bound_agent(req, login, action="manage_agent"):
    """The agent ``login`` once ``action`` on it is allowed (its bound human or a site admin)."""
    agent = find_account(req, login, kinds=("agent",))
    req.authorize(action, Resource.account(agent))
    binding = req.app.store.one("SELECT * FROM agent_bindings WHERE agent_id = ?", agent["id"])
    if binding is None:
        raise HTTPError(404, "%s is not bound to anyone" % login)
    return agent, binding


def token_status(store, agent_id):
    live = store.one("SELECT COUNT(*) AS n FROM tokens WHERE user_id = ? AND kind = 'agent' AND revoked_at IS NULL",
                     agent_id)["n"]
    return "active" if live else "revoked"


@route("GET", "/api/ext/v1/user/agents")
def list_my_agents(req):
    user = signed_in(req)
    req.check("read_tokens", Resource.account(user))
    out = []
    for binding in req.app.store.all("SELECT * FROM agent_bindings WHERE human_id = ? ORDER BY bound_at", user["id"]):
        agent = account_by_id(req.app.store, binding["agent_id"])
        grants = req.app.store.all("SELECT g.permission, r.name, o.login AS owner, t.slug, ta.login AS org"
                                   " FROM agent_grants g LEFT JOIN repos r ON r.id = g.repo_id"
                                   " LEFT JOIN accounts o ON o.id = r.owner_id LEFT JOIN teams t ON t.id = g.team_id"
                                   " LEFT JOIN accounts ta ON ta.id = t.org_id WHERE g.agent_id = ?", agent["id"])
        out.append(dict(binding_json(req.app, agent, user, binding), token_status=token_status(req.app.store, agent["id"]),
                        suspended=bool(agent["suspended_at"]), retired=bool(agent["retired_at"]),
                        access=["%s/%s:%s" % (g["owner"], g["name"], g["permission"]) if g["name"] else
                                "team %s/%s:%s" % (g["org"], g["slug"], g["permission"]) for g in grants]))
    return req.paginate(out)


@route("PATCH", "/api/ext/v1/agent-bindings/{login}")
def rename_binding(req, login):
    body = req.json()
    name = text_field(req, body, "display_name", "AgentBinding", required=True, limit=100)
    agent, binding = bound_agent(req, login)
    with req.transaction() as db:
        db.execute("UPDATE agent_bindings SET display_name = ? WHERE agent_id = ?", (name, agent["id"]))
        req.effect("named %s %r" % (agent["login"], name))
    human = account_by_id(req.app.store, binding["human_id"])
    return binding_json(req.app, agent, human, req.app.store.one("SELECT * FROM agent_bindings WHERE agent_id = ?",
                                                                 agent["id"]))


def revoke(db, where, args):
    """Revoke the live tokens matching ``where``; returns how many."""
    return db.execute("UPDATE tokens SET revoked_at = ? WHERE revoked_at IS NULL AND (%s)" % where,
                      (now(),) + tuple(args)).rowcount


@route("DELETE", "/api/ext/v1/agent-bindings/{login}")
def unbind(req, login):
    """The agent stays, with its token and its own repositories; switch sessions and the access the
    binding granted go."""
    agent, binding = bound_agent(req, login)
    with req.transaction() as db:
        req.effect(unbind_agent(db, agent))
    return 204, None


def unbind_agent(db, agent):
    sessions = revoke(db, "user_id = ? AND kind = 'switch-session'", (agent["id"],))
    grants = remove_grants(db, agent["id"])
    # a task grant stands on the binding: without it, its tokens would act for a human no longer behind them
    tasks = db.execute("UPDATE task_grants SET revoked_at = ? WHERE agent_id = ? AND revoked_at IS NULL AND"
                       " delegator_id IN (SELECT human_id FROM agent_bindings WHERE agent_id = ?)",
                       (now(), agent["id"], agent["id"])).rowcount
    db.execute("DELETE FROM agent_bindings WHERE agent_id = ?", (agent["id"],))
    return "unbound %s; revoked %d switch sessions and %d task grants, took back %d grants" % (
        agent["login"], sessions, tasks, grants)


@route("POST", "/api/ext/v1/agent-bindings/{login}/reset-token")
def reset_agent_token(req, login):
    agent, _ = bound_agent(req, login)
    with req.transaction() as db:
        token, revoked, effect = reset_agent_credentials(db, req.app.key, agent)
        req.effect(effect)
    return 201, {"login": agent["login"], "token": token, "revoked": revoked}


def reset_agent_credentials(db, key, agent):
    """Revoke every token the agent has (its own, switch sessions, and later kinds) and mint one."""
    revoked = revoke(db, "user_id = ?", (agent["id"],))
    token, _ = issue_token(db, key, agent["id"], "agent", name="agent", scopes=AGENT_SCOPES)
    return token, revoked, "reset %s: revoked %d tokens, new agent token %s" % (agent["login"], revoked,
                                                                               token_fingerprint(token))


def set_agent_suspended(req, login, suspended):
    agent, _ = bound_agent(req, login)
    with req.transaction() as db:
        req.effect(suspend_account(db, agent, suspended))
    return user_json(req.app, account_by_id(req.app.store, agent["id"]), detail=True)


@route("POST", "/api/ext/v1/agent-bindings/{login}/suspend")
def suspend_agent(req, login):
    return set_agent_suspended(req, login, True)


@route("POST", "/api/ext/v1/agent-bindings/{login}/resume")
def resume_agent(req, login):
    return set_agent_suspended(req, login, False)


@route("POST", "/api/ext/v1/agent-bindings/{login}/switch-session")
def open_switch_session(req, login):
    """A token that acts as the agent for at most 12 hours without touching the agent's own token;
    the actor of record stays the agent, and every row it makes names the human who switched in."""
    agent, _ = bound_agent(req, login)
    expires_at = later(SWITCH_SESSION_HOURS * 3600)
    human = req.principal.user
    with req.transaction() as db:
        token, _ = issue_token(db, req.app.key, agent["id"], "switch-session", name="switch by " + human["login"],
                               scopes=AGENT_SCOPES, expires_at=expires_at, issued_by=human["id"])
        req.effect("switch session %s into %s until %s" % (token_fingerprint(token), agent["login"], expires_at))
    return 201, {"agent_login": agent["login"], "token": token, "expires_at": expires_at,
                 "user": user_json(req.app, human)}


@route("POST", "/api/ext/v1/agent-bindings/{login}/refresh-session")
def refresh_switch_session(req, login):
    """Authenticated with the switch-session token itself: a new one replaces it (the old one dies)."""
    signed_in(req)
    agent = find_account(req, login, kinds=("agent",))
    req.authorize("refresh_session", Resource.account(agent))
    old = req.app.store.one("SELECT * FROM tokens WHERE id = ?", req.principal.token_id)
    expires_at = later(SWITCH_SESSION_HOURS * 3600)
    with req.transaction() as db:
        if not revoke(db, "id = ?", (old["id"],)):
            raise HTTPError(401, "Bad credentials")
        token, _ = issue_token(db, req.app.key, agent["id"], "switch-session", name=old["name"], scopes=AGENT_SCOPES,
                               expires_at=expires_at, issued_by=old["issued_by"])
        req.effect("refreshed switch session %s → %s" % (old["fingerprint"], token_fingerprint(token)))
    return 201, {"agent_login": agent["login"], "token": token, "expires_at": expires_at,
                 "user": user_json_by_id(req.app, old["issued_by"])}


@route("DELETE", "/api/ext/v1/agents/{login}")
def retire_agent(req, login):
    """Retire for good: tokens revoked, login reserved, repositories moved to the human or archived."""
    body = req.json()
    repositories = req.field(body, "repositories", str, "Agent", default="archive")
    if repositories not in ("transfer", "archive"):
        raise invalid("Agent", "repositories", message="repositories must be transfer or archive")
    agent, binding = bound_agent(req, login)
    store = req.app.store
    own = store.all("SELECT * FROM repos WHERE owner_id = ?", agent["id"])
    if repositories == "transfer":
        clash = [r["name"] for r in own if store.one("SELECT 1 FROM repos WHERE owner_id = ? AND name = ?",
                                                     binding["human_id"], r["name"])]
        if clash:
            raise HTTPError(409, "%s already has repositories named %s" % (
                account_by_id(store, binding["human_id"])["login"], ", ".join(clash)))
    with req.transaction() as db:
        req.effect(retire(db, agent, binding["human_id"], repositories))
    return 204, None


def retire(db, agent, human_id, repositories):
    revoked = revoke(db, "user_id = ?", (agent["id"],))
    if repositories == "transfer":
        moved = db.execute("UPDATE repos SET owner_id = ?, updated_at = ? WHERE owner_id = ?",
                           (human_id, now(), agent["id"])).rowcount
    else:
        moved = db.execute("UPDATE repos SET archived = 1, updated_at = ? WHERE owner_id = ?",
                           (now(), agent["id"])).rowcount
    remove_grants(db, agent["id"])
    db.execute("UPDATE accounts SET retired_at = ?, suspended_at = COALESCE(suspended_at, ?) WHERE id = ?",
               (now(), now(), agent["id"]))
    return "retired %s: revoked %d tokens, %s %d repositories" % (
        agent["login"], revoked, "transferred" if repositories == "transfer" else "archived", moved)


@route("POST", "/api/ext/v1/revocations")
def revocations(req):
    """Exactly one of {"agent"}, {"delegator"}, {"org"}, {"token_fingerprint"}; answers how many tokens
    were revoked. Allowed to the bound human (agent), the human themself (delegator), org admins (org),
    the token's holder or its agent's human (fingerprint), and site admins for all."""
    body = req.json()
    kinds = [k for k in ("agent", "delegator", "org", "token_fingerprint") if body.get(k) is not None]
    if len(kinds) != 1 or not isinstance(body[kinds[0]], str):
        raise invalid("Revocation", "target", "invalid", "name exactly one of agent, delegator, org, token_fingerprint")
    kind, target = kinds[0], body[kinds[0]]
    signed_in(req)
    store = req.app.store
    if kind == "agent":
        agent = find_account(req, target, kinds=("agent",))
        req.authorize("revoke_tokens", Resource.account(agent))
        where, args, also = "user_id = ?", (agent["id"],), None
    elif kind == "delegator":
        human = find_account(req, target, kinds=("human",))
        req.authorize("revoke_tokens", Resource.account(human))
        where = ("user_id IN (SELECT agent_id FROM agent_bindings WHERE human_id = ?) OR (kind = 'switch-session'"
                 " AND issued_by = ?)")
        args, also = (human["id"], human["id"]), None
    elif kind == "org":
        org = find_account(req, target, kinds=("org",))
        req.authorize("manage_org", Resource.account(org))
        reached = [r["agent_id"] for r in store.all(
            "SELECT DISTINCT g.agent_id FROM agent_grants g LEFT JOIN repos r ON r.id = g.repo_id"
            " LEFT JOIN teams t ON t.id = g.team_id WHERE r.owner_id = ? OR t.org_id = ? OR g.org_id = ?",
            org["id"], org["id"], org["id"])]
        where = "user_id IN (%s)" % ",".join("?" * len(reached)) if reached else "0"
        args, also = tuple(reached), (org, reached)
    else:
        row = store.one("SELECT * FROM tokens WHERE fingerprint = ?", target)
        holder = account_by_id(store, row["user_id"]) if row else None
        if holder is None:
            raise HTTPError(404, "Not Found")
        req.authorize("revoke_tokens", Resource.account(holder))
        where, args, also = "id = ?", (row["id"],), None
    with req.transaction() as db:
        count = revoke(db, where, args)
        taken = 0
        if also:
            org, reached = also
            for agent_id in reached:
                taken += remove_grants(db, agent_id, " AND (repo_id IN (SELECT id FROM repos WHERE owner_id = ?)"
                                       " OR team_id IN (SELECT id FROM teams WHERE org_id = ?) OR org_id = ?)",
                                       (org["id"], org["id"], org["id"]))
        req.effect("revoked %d tokens by %s %s%s" % (count, kind, target, "; took back %d grants" % taken if also else ""))
    return 200, {"revoked": count}


@route("GET", "/api/ext/v1/agents/{login}/activity")
def agent_activity(req, login):
    """Everything the agent did, for its bound human: each row says for whom and through what."""
    agent, _ = bound_agent(req, login, "read_agent")
    per_page, page = req.page()
    rows = req.app.store.all("SELECT * FROM audit WHERE actor = ? ORDER BY id DESC LIMIT ? OFFSET ?", agent["login"],
                             per_page + 1, (page - 1) * per_page)
    req.link_header(page, per_page, page + 1 if len(rows) > per_page else None)
    return [audit_json(r) for r in rows[:per_page]]



# -- task grants and task tokens --------------------------------------------------------------------
# The task is the permission boundary: a human grants an agent named actions on named resources
# for one task, and the agent works with short-lived task tokens that carry nothing more.

TASK_TOKEN_SECONDS, TASK_GRANT_MAX_SECONDS = 3600, 30 * 86400
TASK_ACTIONS = tuple(name for name, spec in ACTIONS.items() if spec.on == "repo" and not spec.humans_only)
TASK_CONSTRAINTS = ("branch_prefix", "expires_at", "network_allowlist", "requires_approval")


def grant_json(app, row):
    grant = load_grant(app.store, row["id"])
    agent = account_by_id(app.store, row["agent_id"])
    return {"id": row["public_id"], "agent": "agent:" + agent["login"], "delegator": "user:" + grant["delegator_login"],
            "task": row["task"], "resources": sorted(grant["resources"]), "actions": sorted(grant["actions"]),
            "constraints": grant["constraints"], "created_at": row["created_at"], "expires_at": row["expires_at"],
            "revoked_at": row["revoked_at"]}


def strip_kind(value, kind):
    return value[len(kind) + 1:] if isinstance(value, str) and value.startswith(kind + ":") else value


@route("POST", "/api/ext/v1/task-grants")
def create_task_grant(req):
    """The seed's shape. No escalation: every action on every resource must be the delegator's to do,
    and the agent must be bound to the delegator."""
    body = req.json()
    human = signed_in(req)
    agent_login = strip_kind(req.field(body, "agent", str, "TaskGrant", required=True), "agent")
    delegator = strip_kind(req.field(body, "delegator", str, "TaskGrant", default="user:" + human["login"]), "user")
    task = req.field(body, "task", str, "TaskGrant", required=True)
    resources = req.field(body, "resources", list, "TaskGrant", required=True)
    actions = req.field(body, "actions", list, "TaskGrant", required=True)
    constraints = req.field(body, "constraints", dict, "TaskGrant", default={})
    if delegator.lower() != human["login"].lower():
        raise invalid("TaskGrant", "delegator", "invalid", "the delegator is the human who makes the grant")
    if not re.fullmatch(r"task:[\w./-]{1,100}", task):
        raise invalid("TaskGrant", "task", message="task names look like task:fix-payment-bug")
    if not resources or not all(isinstance(r, str) and r.startswith("repo:") for r in resources):
        raise invalid("TaskGrant", "resources", message="resources are repositories: repo:owner/name")
    unknown = [a for a in actions if a not in TASK_ACTIONS]
    approval = constraints.get("requires_approval", [])
    if not actions or unknown or not isinstance(approval, list) or any(a not in TASK_ACTIONS for a in approval):
        raise invalid("TaskGrant", "actions", message="actions are from %s" % ", ".join(TASK_ACTIONS))
    try:
        expires = parse_time(constraints.get("expires_at") or later(86400))
    except (ValueError, AttributeError):
        raise invalid("TaskGrant", "constraints", message="constraints.expires_at must be an ISO 8601 time")
    moment = datetime.datetime.now(datetime.timezone.utc)
    if not moment < expires <= moment + datetime.timedelta(seconds=TASK_GRANT_MAX_SECONDS):
        raise invalid("TaskGrant", "constraints", message="expires_at must be in the next 30 days")
    prefix = constraints.get("branch_prefix")
    if prefix is not None and (not isinstance(prefix, str) or ".." in prefix or not prefix.strip()):
        raise invalid("TaskGrant", "constraints", message="branch_prefix must be a branch name prefix")
    hosts = constraints.get("network_allowlist", [])
    if not isinstance(hosts, list) or not all(isinstance(h, str) and re.fullmatch(r"[\w.*:-]{1,255}", h)
                                              for h in hosts):
        raise invalid("TaskGrant", "constraints", message="network_allowlist is a list of host names")
    unknown = sorted(set(constraints) - set(TASK_CONSTRAINTS))
    if unknown:      # a misspelt constraint would otherwise constrain nothing, silently
        raise invalid("TaskGrant", "constraints", message="unknown constraint %s; constraints are %s" % (
            unknown[0], ", ".join(TASK_CONSTRAINTS)))
    agent = find_account(req, agent_login, kinds=("agent",))
    rows = []
    for name in resources:
        row = repo_by_full_name(req.app.store, name[len("repo:"):])
        if row is None or not req.can("read_code", Resource.repo(row)):
            raise invalid("TaskGrant", "resources", "invalid", "%s is not a repository you can see" % name)
        rows.append(row)
    authorize_grant(req, agent, rows)
    for row in rows:
        for action in actions:
            decision = decide(req.app.store, Principal(user=human), action, Resource.repo(row))
            if not decision.allowed:
                req.app.audit(req.principal, req.surface, dataclasses.replace(decision, action="grant_task"))
                raise HTTPError(403, "No escalation: %s" % decision.reasons[0])
    public_id = "tg_" + secrets.token_hex(8)
    with req.transaction() as db:
        grant_id = insert_row(db, "task_grants", {
            "public_id": public_id, "agent_id": agent["id"], "delegator_id": human["id"], "task": task,
            "resources": json.dumps(sorted(resources)), "actions": json.dumps(sorted(set(actions))),
            "constraints": json.dumps(dict(constraints, expires_at=expires.strftime("%Y-%m-%dT%H:%M:%SZ"))),
            "created_at": now(), "expires_at": expires.strftime("%Y-%m-%dT%H:%M:%SZ")})
        req.effect("task grant %s for %s: %s on %s" % (public_id, agent["login"], ",".join(actions), ",".join(resources)))
    return 201, grant_json(req.app, req.app.store.one("SELECT * FROM task_grants WHERE id = ?", grant_id))


def authorize_grant(req, agent, repo_rows, **context):
    """A task grant is a human's to make, revoke and approve under when the agent is bound to her, or
    when she owns every organization whose repositories it names: an owner may put an agent to work
    on her organization's repositories whoever it is bound to."""
    store, user = req.app.store, req.principal.user
    bound = permission_on(store, user, Resource.account(agent))[0] == "admin"
    if bound or not all(row["owner_kind"] == "org" for row in repo_rows):
        return req.authorize("grant_task", Resource.account(agent), **context)
    for org_id in sorted({row["owner_id"] for row in repo_rows}):
        req.authorize("grant_task", Resource.account(account_by_id(store, org_id)), **context)


def grant_repos(store, grant_row):
    """The repositories a grant names that still exist under those names."""
    names = json.loads(grant_row["resources"])
    return [row for row in (repo_by_full_name(store, strip_kind(n, "repo")) for n in names) if row is not None]


def find_grant(req, public_id, action):
    row = req.app.store.one("SELECT * FROM task_grants WHERE public_id = ?", public_id)
    if row is None:
        raise HTTPError(404, "Not Found")
    user = signed_in(req)
    if action == "mint_task_token":
        if row["agent_id"] != user["id"]:
            raise HTTPError(404, "Not Found")
        req.authorize(action, Resource.account(user), grant=row)
    else:
        try:
            authorize_grant(req, account_by_id(req.app.store, row["agent_id"]), grant_repos(req.app.store, row))
        except HTTPError:
            if row["delegator_id"] != user["id"]:
                raise HTTPError(404, "Not Found")      # a stranger does not learn that the grant exists
            raise
    return row


@route("GET", "/api/ext/v1/task-grants")
def list_task_grants(req):
    user = signed_in(req)
    req.check("read_account", Resource.account(user))
    rows = req.app.store.all("SELECT * FROM task_grants WHERE delegator_id = ? OR agent_id = ? ORDER BY id",
                             user["id"], user["id"])
    return req.paginate([grant_json(req.app, r) for r in rows])


@route("GET", "/api/ext/v1/task-grants/{grant_id}")
def get_task_grant(req, grant_id):
    """The grant, for its delegator and its agent (a task token of the agent included)."""
    user = signed_in(req)
    req.check("read_account", Resource.account(user))
    row = req.app.store.one("SELECT * FROM task_grants WHERE public_id = ?", grant_id)
    if row is None or user["id"] not in (row["delegator_id"], row["agent_id"]):
        raise HTTPError(404, "Not Found")
    return grant_json(req.app, row)


@route("DELETE", "/api/ext/v1/task-grants/{grant_id}")
def revoke_task_grant(req, grant_id):
    row = find_grant(req, grant_id, "grant_task")
    with req.transaction() as db:
        db.execute("UPDATE task_grants SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?", (now(), row["id"]))
        count = revoke(db, "grant_id = ?", (row["id"],))
        req.effect("revoked task grant %s and %d task tokens" % (row["public_id"], count))
    return 204, None


@route("POST", "/api/ext/v1/task-grants/revocations")
def revoke_task(req):
    """Every grant the caller made for a task, and every token of those grants."""
    body = req.json()
    task = req.field(body, "task", str, "TaskGrant", required=True)
    user = signed_in(req)
    rows = req.app.store.all("SELECT * FROM task_grants WHERE delegator_id = ? AND task = ? AND revoked_at IS NULL",
                             user["id"], task)
    req.authorize("grant_task", Resource.account(user))
    with req.transaction() as db:
        count = 0
        for row in rows:
            db.execute("UPDATE task_grants SET revoked_at = ? WHERE id = ?", (now(), row["id"]))
            count += revoke(db, "grant_id = ?", (row["id"],))
        req.effect("revoked task %s: %d grants, %d tokens" % (task, len(rows), count))
    return 200, {"grants": len(rows), "revoked": count}


@route("POST", "/api/ext/v1/task-grants/{grant_id}/tokens")
def mint_task_token(req, grant_id):
    """For the agent, with its own token: a task token for at most an hour and never past the grant.
    Asking for more actions than the grant gives is narrowed to what it gives, and the answer says so."""
    body = req.json()
    row = find_grant(req, grant_id, "mint_task_token")
    return 201, issue_task_token(req, row, req.field(body, "actions", list, "TaskToken"))


def issue_task_token(req, row, asked=None):
    """A task token for the grant's row, for the actions asked that the grant gives (narrowed, and
    said so, when that is fewer); for all it gives when none are asked."""
    granted = json.loads(row["actions"])
    asked = granted if asked is None else asked
    given = sorted(set(asked) & set(granted))
    expires_at = min(later(TASK_TOKEN_SECONDS), row["expires_at"])
    with req.transaction() as db:
        token, _ = issue_token(db, req.app.key, row["agent_id"], "task", name="task " + row["task"], scopes=given,
                               expires_at=expires_at, grant_id=row["id"])
        req.effect("task token %s for %s until %s%s" % (token_fingerprint(token), row["public_id"], expires_at,
                                                       " (narrowed)" if set(asked) - set(given) else ""))
    return {"token": token, "expires_at": expires_at, "grant": row["public_id"], "task": row["task"],
            "scope": " ".join(given), "decision": "allow_narrowed" if set(asked) - set(given) else "allow"}


# -- step-up and approvals: a human's fresh second factor, a human's yes ------------------------------

@route("POST", "/api/ext/v1/step-up")
def step_up(req):
    """The token's human confirms a TOTP code; for ten minutes the token may then do what asks for one."""
    user = signed_in(req)
    otp = req.field(req.json(), "otp", str, "StepUp", required=True)
    req.authorize("issue_token", Resource.account(user))
    if req.principal.token_id is None or not user["totp_secret"]:
        raise HTTPError(422, "Step-up needs a token of a human with TOTP turned on (python agentgit.py user totp)")
    confirm_totp(req, user, otp)
    with req.transaction() as db:
        db.execute("INSERT OR REPLACE INTO step_ups (token_id, at) VALUES (?, ?)", (req.principal.token_id, now()))
        req.effect("stepped up token %s" % req.principal.fingerprint)
    return 200, {"stepped_up_until": later(STEP_UP_SECONDS)}


def confirm_totp(req, user, code):
    """A step-up's code: rate-limited per human, 401 when wrong."""
    retry = req.app.sign_ins.hit("step-up:%d" % user["id"])
    if retry:
        raise HTTPError(429, "Too many codes; try again later", headers={"Retry-After": str(retry)})
    if not check_totp(req.app.key, user, code):
        raise HTTPError(401, "Wrong TOTP code")


APPROVAL_SECONDS = 3600


def ask_for_approval(app, principal, decision):
    """For a needs_approval decision: the pending approval for its grant, action and resource (one is
    made if none waits), and the decision with a reason that says where a human gives it, so that
    git and gh, which print only the message, show the way too. Returns (decision, id, url)."""
    grant = principal.grant
    with app.store.transaction() as db:
        row = db.execute("SELECT public_id FROM approvals WHERE grant_id = ? AND action = ? AND resource = ? AND"
                         " subject = ? AND approved_at IS NULL AND expires_at > ?",
                         (grant["id"], decision.action, decision.resource, decision.subject, now())).fetchone()
        public_id = row["public_id"] if row is not None else "ap_" + secrets.token_hex(8)
        if row is None:
            insert_row(db, "approvals", {"public_id": public_id, "grant_id": grant["id"], "action": decision.action,
                                         "resource": decision.resource, "subject": decision.subject,
                                         "created_at": now(), "expires_at": later(APPROVAL_SECONDS)})
    url = "%s/api/ext/v1/approvals/%s/approve" % (app.url, public_id)
    reason = "%s: approval %s waits for %s at %s/approvals" % (decision.reasons[0], public_id,
                                                               grant["delegator_login"], app.url)
    return dataclasses.replace(decision, reasons=[reason]), public_id, url


def spend_approval(store, approval_id):
    """Single use: of two requests allowed on the same approval, only one may spend it."""
    with store.transaction() as db:
        return db.execute("UPDATE approvals SET used_at = ? WHERE id = ? AND used_at IS NULL",
                          (now(), approval_id)).rowcount == 1


def give_back_approval(db, approval_id):
    """An action that was allowed on an approval but then did not happen leaves the approval unspent."""
    if db.execute("UPDATE approvals SET used_at = NULL WHERE id = ? AND used_at IS NOT NULL", (approval_id,)).rowcount:
        return "; approval %d given back" % approval_id
    return ""


APPROVAL_SELECT = ("SELECT a.*, g.delegator_id, g.agent_id, g.task, g.public_id AS grant_public"
                   " FROM approvals a JOIN task_grants g ON g.id = a.grant_id")


def approval_json(app, row):
    state = ("used" if row["used_at"] else "approved" if row["approved_at"] else
             "expired" if row["expires_at"] <= now() else "pending")
    approver = account_by_id(app.store, row["approved_by"]) if row["approved_by"] else None
    return {"id": row["public_id"], "state": state, "action": row["action"], "resource": row["resource"],
            "subject": row["subject"], "grant": row["grant_public"], "task": row["task"], "created_at": row["created_at"],
            "expires_at": row["expires_at"], "approved_by": "user:" + approver["login"] if approver else None,
            "approved_at": row["approved_at"], "used_at": row["used_at"],
            "approval_url": "%s/api/ext/v1/approvals/%s/approve" % (app.url, row["public_id"])}


@route("GET", "/api/ext/v1/approvals")
def list_approvals(req):
    """What waits on the caller, or on the caller's human: pending approvals first, newest first."""
    user = signed_in(req)
    req.check("read_account", Resource.account(user))
    rows = req.app.store.all(APPROVAL_SELECT + " WHERE g.delegator_id = ? OR g.agent_id = ? ORDER BY a.id DESC",
                             user["id"], user["id"])
    shown = [approval_json(req.app, r) for r in rows]
    return req.paginate(sorted(shown, key=lambda a: a["state"] != "pending"))


@route("GET", "/api/ext/v1/approvals/{approval_id}")
def get_approval(req, approval_id):
    """For the grant's delegator and its agent, who may wait on it by polling."""
    user = signed_in(req)
    req.check("read_account", Resource.account(user))
    row = req.app.store.one(APPROVAL_SELECT + " WHERE a.public_id = ?", approval_id)
    if row is None or user["id"] not in (row["delegator_id"], row["agent_id"]):
        raise HTTPError(404, "Not Found")
    return approval_json(req.app, row)


@route("POST", "/api/ext/v1/approvals/{approval_id}/approve")
def approve(req, approval_id):
    give_approval(req, signed_in(req), approval_id)
    return approval_json(req.app, req.app.store.one(APPROVAL_SELECT + " WHERE a.public_id = ?", approval_id))


def give_approval(req, user, approval_id):
    """The grant's delegator says yes to exactly this action on exactly this resource, once."""
    row = req.app.store.one(APPROVAL_SELECT + " WHERE a.public_id = ?", approval_id)
    if row is None or row["delegator_id"] != user["id"]:
        raise HTTPError(404, "Not Found")
    grant = req.app.store.one("SELECT * FROM task_grants WHERE id = ?", row["grant_id"])
    authorize_grant(req, account_by_id(req.app.store, row["agent_id"]), grant_repos(req.app.store, grant), grant=grant)
    if row["approved_at"] or row["expires_at"] <= now():
        raise HTTPError(409, "This approval was already given or has expired")
    with req.transaction() as db:
        db.execute("UPDATE approvals SET approved_by = ?, approved_at = ? WHERE id = ?", (user["id"], now(), row["id"]))
        req.effect("approved %s: %s on %s under %s" % (row["public_id"], row["action"], row["resource"],
                                                       row["grant_public"]))
    return row


# -- policy as data ------------------------------------------------------------------------------------

@route("GET", "/api/ext/v1/policy")
def effective_policy(req):
    """What the caller's token could do on one repository ("what could this task token do on
    acme/payments?"), or with ``grant=tg_…`` what a task token of that grant could (for its delegator
    and its agent), each action decided by decide() itself, so the answer cannot drift from the
    enforcement. It only asks, so nothing is audited."""
    signed_in(req)
    name = req.query.get("resource", "")
    row = repo_by_full_name(req.app.store, strip_kind(name, "repo"))
    if row is None or not req.can("read_code", Resource.repo(row)):
        raise HTTPError(404, "Not Found")
    resource, principal = Resource.repo(row), req.principal
    if "grant" in req.query:
        found = req.app.store.one("SELECT * FROM task_grants WHERE public_id = ?", req.query["grant"])
        if found is None or principal.user["id"] not in (found["delegator_id"], found["agent_id"]):
            raise HTTPError(404, "Not Found")
        grant = load_grant(req.app.store, found["id"])
        # a task token of this grant as authenticate() would build it (token_id set: scopes are checked)
        principal = Principal(user=account_by_id(req.app.store, found["agent_id"]), token_id=0, token_kind="task")
        name_delegator(req.app.store, principal)
        hold_task_grant(principal, grant, grant["actions"])
    user, grant = principal.user, principal.grant
    decisions = [decide(req.app.store, principal, action, resource) for action in TASK_ACTIONS]
    return 200, {"principal": "%s:%s" % ("agent" if user["kind"] == "agent" else "user", user["login"]),
                 "token_kind": principal.token_kind, "resource": resource.name,
                 "grant": grant_json(req.app, req.app.store.one("SELECT * FROM task_grants WHERE id = ?", grant["id"]))
                 if grant else None,
                 "rules": [" ".join(rule.split()) for rule in re.split(r"\n\s*(?=\d\. )", decide.__doc__)[1:]],
                 "actions": {d.action: {"decision": d.effect, "reasons": d.reasons} for d in decisions}}


# -- freezes: read-only by policy ------------------------------------------------------------------
# A repository's admin, or an organization's owner for the whole organization, freezes it for an
# incident, an audit or a release: decide() then answers read_only to every change until a thaw.

def freeze_target(req, name):
    """(Resource, the action that freezes it) for repo:owner/name or org:login, if the caller can see it."""
    if isinstance(name, str) and name.startswith("repo:"):
        row = repo_by_full_name(req.app.store, name[len("repo:"):])
        if row is not None and req.can("read_code", Resource.repo(row)):
            return Resource.repo(row), "freeze_repo"
    elif isinstance(name, str) and name.startswith("org:"):
        row = account_by_login(req.app.store, name[len("org:"):])
        if row is not None and row["kind"] == "org":
            return Resource.account(row), "freeze_org"
    return None, None


def frozen_resource(store, row):
    """(Resource, the action that freezes and thaws it) for a freezes row."""
    if row["repo_id"] is not None:
        return Resource.repo(repo_by_id(store, row["repo_id"])), "freeze_repo"
    return Resource.account(account_by_id(store, row["org_id"])), "freeze_org"


def freeze_json(app, row):
    frozen_by = account_by_id(app.store, row["frozen_by"]) if row["frozen_by"] else None
    return {"id": row["public_id"], "resource": frozen_resource(app.store, row)[0].name, "reason": row["reason"],
            "frozen_by": "user:" + frozen_by["login"] if frozen_by else None, "created_at": row["created_at"]}


@route("POST", "/api/ext/v1/freezes")
def create_freeze(req):
    body = req.json()
    user = signed_in(req)
    name = req.field(body, "resource", str, "Freeze", required=True)
    reason = req.field(body, "reason", str, "Freeze", required=True).strip()
    if not reason or len(reason) > 1000:
        raise invalid("Freeze", "reason", message="say why, in at most 1000 characters")
    resource, action = freeze_target(req, name)
    if resource is None:
        raise invalid("Freeze", "resource", message="resource is repo:owner/name or org:login, one you can see")
    req.authorize(action, resource)
    column = "repo_id" if resource.kind == "repo" else "org_id"
    with req.transaction() as db:
        if db.execute("SELECT 1 FROM freezes WHERE %s = ?" % column, (resource.row["id"],)).fetchone():
            raise invalid("Freeze", "resource", "already_exists", "%s is already frozen" % resource.name)
        freeze_id = insert_row(db, "freezes", {"public_id": "fz_" + secrets.token_hex(8), column: resource.row["id"],
                                               "reason": reason, "frozen_by": user["id"], "created_at": now()})
        req.effect("froze %s: %s" % (resource.name, reason))
    return 201, freeze_json(req.app, req.app.store.one("SELECT * FROM freezes WHERE id = ?", freeze_id))


@route("GET", "/api/ext/v1/freezes")
def list_freezes(req):
    """The freezes on the repositories the caller can see and the organizations the caller is in."""
    user = signed_in(req)
    shown = []
    for row in req.app.store.all("SELECT * FROM freezes ORDER BY id"):
        resource, _ = frozen_resource(req.app.store, row)
        if resource.kind == "repo":
            visible = req.can("read_code", resource)
        else:
            visible = permission_on(req.app.store, user, resource)[0] != "none"
        if visible:
            shown.append(freeze_json(req.app, row))
    return req.paginate(shown)


@route("DELETE", "/api/ext/v1/freezes/{freeze_id}")
def thaw(req, freeze_id):
    signed_in(req)
    row = req.app.store.one("SELECT * FROM freezes WHERE public_id = ?", freeze_id)
    resource, action = frozen_resource(req.app.store, row) if row else (None, None)
    if resource is None or resource.kind == "repo" and not req.can("read_code", resource):
        raise HTTPError(404, "Not Found")
    req.authorize(action, resource)
    with req.transaction() as db:
        db.execute("DELETE FROM freezes WHERE id = ?", (row["id"],))
        req.effect("thawed %s (%s)" % (resource.name, row["public_id"]))
    return 204, None


# ════════════════════════════════════════════════════════════════════════════════════════════════
# 10. GraphQL
# ════════════════════════════════════════════════════════════════════════════════════════════════
# A hand-written lexer and recursive-descent parser for GraphQL's executable grammar (operations,
# variables with defaults, fragments, inline fragments, aliases, directives, every literal kind), and
# an executor over a typed schema table whose types and fields keep GitHub's names and type strings
# (a test checks them against GitHub's schema). Resolvers reuse the REST serializers and decide().
# Size, depth and node-count limits refuse hostile documents before anything runs.

GRAPHQL_MAX_DOCUMENT = 100000        # characters
GRAPHQL_MAX_DEPTH = 25               # nested selection sets
GRAPHQL_MAX_TOKENS = 20000
GRAPHQL_MAX_NODES = 500000           # GitHub's own limit on the nodes one query may ask for
GRAPHQL_TOKEN_RE = re.compile(r'''
    (?P<skip>[\s,\ufeff]+|\#[^\n\r]*)
  | (?P<spread>\.\.\.)
  | (?P<punct>[!$&():=@\[\]{|}])
  | (?P<name>[_A-Za-z][_0-9A-Za-z]*)
  | (?P<number>-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)
  | (?P<block>"""(?:\\"""|(?!""")[\s\S])*""")
  | (?P<string>"(?:\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})|[^"\\\n\r])*")
''', re.VERBOSE)


class GraphQLError(Exception):
    def __init__(self, message, location=None, path=None, kind=None):
        super().__init__(message)
        self.message, self.location, self.path, self.kind = message, location, path, kind

    def json(self):
        out = {"message": self.message}
        if self.location:
            out["locations"] = [{"line": self.location[0], "column": self.location[1]}]
        if self.path is not None:
            out["path"] = self.path
        if self.kind:
            out["type"] = self.kind
        return out


def graphql_tokens(source):
    """[(kind, text, (line, column))], ending with an ("eof", "", loc) token."""
    tokens, pos, line, line_start = [], 0, 1, 0
    while pos < len(source):
        m = GRAPHQL_TOKEN_RE.match(source, pos)
        where = (line, pos - line_start + 1)
        if not m:
            raise GraphQLError("Unterminated string" if source[pos] == '"' else
                               "Unexpected character %r" % source[pos], where, kind="PARSE")
        kind, text = m.lastgroup, m.group()
        if kind != "skip":
            tokens.append((kind, text, where))
            if len(tokens) > GRAPHQL_MAX_TOKENS:
                raise GraphQLError("The document has more than %d tokens" % GRAPHQL_MAX_TOKENS, where, kind="PARSE")
        newlines = text.count("\n")
        if newlines:
            line, line_start = line + newlines, pos + text.rindex("\n") + 1
        pos = m.end()
    tokens.append(("eof", "", (line, pos - line_start + 1)))
    return tokens


def graphql_string(kind, text):
    if kind == "block":
        lines = text[3:-3].replace('\\"""', '"""').split("\n")
        indent = min((len(l) - len(l.lstrip()) for l in lines[1:] if l.strip()), default=0)
        lines = [lines[0]] + [l[indent:] for l in lines[1:]]
        while lines and not lines[0].strip():
            lines.pop(0)
        while lines and not lines[-1].strip():
            lines.pop()
        return "\n".join(lines)
    return json.loads(text)


class GraphQLParser:
    """Recursive descent over the token list. Nodes are small dicts; values are (kind, payload)."""

    def __init__(self, source):
        if len(source) > GRAPHQL_MAX_DOCUMENT:
            raise GraphQLError("The document is longer than %d characters" % GRAPHQL_MAX_DOCUMENT, kind="PARSE")
        self.tokens, self.i, self.depth = graphql_tokens(source), 0, 0

    def peek(self, text=None, kind=None):
        tok = self.tokens[self.i]
        return (text is None or tok[1] == text and tok[0] in ("punct", "name", "spread")) and (
            kind is None or tok[0] == kind)

    def take(self, text=None, kind=None):
        tok = self.tokens[self.i]
        if not self.peek(text, kind):
            wanted = text or kind
            raise GraphQLError("Expected %s, found %s" % (wanted, tok[1] or "the end of the document"), tok[2],
                               kind="PARSE")
        self.i += 1
        return tok

    def document(self):
        operations, fragments = [], {}
        while not self.peek(kind="eof"):
            if self.peek("fragment"):
                loc = self.take()[2]
                name = self.take(kind="name")[1]
                if name == "on":
                    raise GraphQLError("A fragment cannot be named 'on'", loc, kind="PARSE")
                self.take("on")
                fragment = {"name": name, "on": self.take(kind="name")[1], "directives": self.directives(),
                            "selections": self.selection_set(), "loc": loc}
                if name in fragments:
                    raise GraphQLError("There can be only one fragment named %r" % name, loc, kind="PARSE")
                fragments[name] = fragment
            elif self.peek("{") or self.peek("query") or self.peek("mutation") or self.peek("subscription"):
                operations.append(self.operation())
            else:
                tok = self.tokens[self.i]
                raise GraphQLError("Unexpected %s" % tok[1], tok[2], kind="PARSE")
        if not operations:
            raise GraphQLError("The document has no operation", kind="PARSE")
        return operations, fragments

    def operation(self):
        loc = self.tokens[self.i][2]
        if self.peek("{"):
            return {"type": "query", "name": None, "variables": [], "directives": [],
                    "selections": self.selection_set(), "loc": loc}
        op = self.take()[1]
        name = self.take(kind="name")[1] if self.peek(kind="name") else None
        variables = []
        if self.peek("("):
            self.take("(")
            while not self.peek(")"):
                self.take("$")
                var_loc = self.tokens[self.i][2]
                var = self.take(kind="name")[1]
                self.take(":")
                var_type = self.type_ref()
                default = None
                if self.peek("="):
                    self.take("=")
                    default = self.value(const=True)
                self.directives()
                variables.append((var, var_type, default, var_loc))
            self.take(")")
        return {"type": op, "name": name, "variables": variables, "directives": self.directives(),
                "selections": self.selection_set(), "loc": loc}

    def type_ref(self):
        if self.peek("["):
            self.take("[")
            inner = self.type_ref()
            self.take("]")
            text = "[%s]" % inner
        else:
            text = self.take(kind="name")[1]
        if self.peek("!"):
            self.take("!")
            text += "!"
        return text

    def selection_set(self):
        loc = self.take("{")[2]
        self.depth += 1
        if self.depth > GRAPHQL_MAX_DEPTH:
            raise GraphQLError("The document nests deeper than %d levels" % GRAPHQL_MAX_DEPTH, loc, kind="PARSE")
        selections = []
        while not self.peek("}"):
            selections.append(self.selection())
        self.take("}")
        self.depth -= 1
        if not selections:
            raise GraphQLError("A selection set cannot be empty", loc, kind="PARSE")
        return selections

    def selection(self):
        loc = self.tokens[self.i][2]
        if self.peek(kind="spread"):
            self.take()
            if self.peek(kind="name") and not self.peek("on"):
                return {"kind": "spread", "name": self.take()[1], "directives": self.directives(), "loc": loc}
            on = None
            if self.peek("on"):
                self.take("on")
                on = self.take(kind="name")[1]
            return {"kind": "inline", "on": on, "directives": self.directives(), "selections": self.selection_set(),
                    "loc": loc}
        name = self.take(kind="name")[1]
        alias = name
        if self.peek(":"):
            self.take(":")
            name = self.take(kind="name")[1]
        return {"kind": "field", "alias": alias, "name": name, "args": self.arguments(), "loc": loc,
                "directives": self.directives(), "selections": self.selection_set() if self.peek("{") else None}

    def arguments(self, const=False):
        args = {}
        if self.peek("("):
            self.take("(")
            while not self.peek(")"):
                name = self.take(kind="name")[1]
                self.take(":")
                args[name] = self.value(const)
            self.take(")")
        return args

    def directives(self):
        out = []
        while self.peek("@"):
            self.take("@")
            out.append((self.take(kind="name")[1], self.arguments()))
        return out

    def value(self, const=False):
        kind, text, loc = self.tokens[self.i]
        if self.peek("$"):
            if const:
                raise GraphQLError("A variable cannot stand in a default value", loc, kind="PARSE")
            self.take()
            return ("var", self.take(kind="name")[1])
        if self.peek("["):
            self.take("[")
            items = []
            while not self.peek("]"):
                items.append(self.value(const))
            self.take("]")
            return ("list", items)
        if self.peek("{"):
            self.take("{")
            fields = {}
            while not self.peek("}"):
                key = self.take(kind="name")[1]
                self.take(":")
                fields[key] = self.value(const)
            self.take("}")
            return ("object", fields)
        self.i += 1
        if kind == "number":
            return ("float", float(text)) if any(c in text for c in ".eE") else ("int", int(text))
        if kind in ("string", "block"):
            return ("string", graphql_string(kind, text))
        if kind == "name":
            return {"true": ("bool", True), "false": ("bool", False), "null": ("null", None)}.get(text, ("enum", text))
        raise GraphQLError("Unexpected %s" % (text or "end of document"), loc, kind="PARSE")


# -- the schema: GitHub's names and type strings; resolvers take (ctx, parent, args) -----------------

@dataclasses.dataclass
class GField:
    type: str
    resolve: object = None            # None: parent[name]
    args: dict = dataclasses.field(default_factory=dict)


SCALARS = {"String", "ID", "Int", "Float", "Boolean", "DateTime", "URI", "GitObjectID", "GitSSHRemote", "HTML",
           "GitTimestamp"}
GRAPHQL_ENUMS = {
    "RepositoryVisibility": ["INTERNAL", "PRIVATE", "PUBLIC"],
    "RepositoryPermission": ["ADMIN", "MAINTAIN", "READ", "TRIAGE", "WRITE"],
    "IssueState": ["OPEN", "CLOSED"],
    "IssueStateReason": ["REOPENED", "NOT_PLANNED", "COMPLETED"],
    "IssueClosedStateReason": ["COMPLETED", "NOT_PLANNED"],
    "PullRequestState": ["OPEN", "CLOSED", "MERGED"],
    "MergeStateStatus": ["DIRTY", "UNKNOWN", "BLOCKED", "BEHIND", "DRAFT", "UNSTABLE", "HAS_HOOKS", "CLEAN"],
    "MergeableState": ["MERGEABLE", "CONFLICTING", "UNKNOWN"],
    "PullRequestMergeMethod": ["MERGE", "SQUASH", "REBASE"],
    "SearchType": ["ISSUE", "REPOSITORY", "USER", "DISCUSSION"],
    "PullRequestReviewEvent": ["COMMENT", "APPROVE", "REQUEST_CHANGES", "DISMISS"],
    "PullRequestReviewState": ["PENDING", "COMMENTED", "APPROVED", "CHANGES_REQUESTED", "DISMISSED"],
    "StatusState": ["EXPECTED", "ERROR", "FAILURE", "PENDING", "SUCCESS"],
    "CheckStatusState": ["REQUESTED", "QUEUED", "IN_PROGRESS", "COMPLETED", "WAITING", "PENDING"],
    "CheckConclusionState": ["ACTION_REQUIRED", "TIMED_OUT", "CANCELLED", "FAILURE", "SUCCESS", "NEUTRAL", "SKIPPED",
                             "STARTUP_FAILURE", "STALE"],
    "RepositoryPrivacy": ["PUBLIC", "PRIVATE"],
    "MilestoneState": ["OPEN", "CLOSED"],
    "IssueCommentOrderField": ["UPDATED_AT"],
    "ReleaseOrderField": ["CREATED_AT", "NAME"],
    "CommentAuthorAssociation": ["MEMBER", "OWNER", "MANNEQUIN", "COLLABORATOR", "CONTRIBUTOR",
                                 "FIRST_TIME_CONTRIBUTOR", "FIRST_TIMER", "NONE"],
    "ReactionContent": ["THUMBS_UP", "THUMBS_DOWN", "LAUGH", "HOORAY", "CONFUSED", "HEART", "ROCKET", "EYES"],
    "RepositoryAffiliation": ["OWNER", "COLLABORATOR", "ORGANIZATION_MEMBER"],
    "RepositoryOrderField": ["CREATED_AT", "UPDATED_AT", "PUSHED_AT", "NAME", "STARGAZERS"],
    "IssueOrderField": ["CREATED_AT", "UPDATED_AT", "COMMENTS"],
    "LabelOrderField": ["NAME", "CREATED_AT"],
    "OrderDirection": ["ASC", "DESC"],
    "PullRequestReviewDecision": ["CHANGES_REQUESTED", "APPROVED", "REVIEW_REQUIRED"],
    "OrganizationOrderField": ["CREATED_AT", "LOGIN"],
    "PullRequestUpdateState": ["OPEN", "CLOSED"],
    "LockReason": ["OFF_TOPIC", "RESOLVED", "SPAM", "TOO_HEATED"],
    "ComparisonStatus": ["AHEAD", "BEHIND", "DIVERGED", "IDENTICAL"],
    "PullRequestBranchUpdateMethod": ["MERGE", "REBASE"],
    "PatchStatus": ["ADDED", "CHANGED", "COPIED", "DELETED", "MODIFIED", "RENAMED"],
    "LanguageOrderField": ["SIZE"],
}
GRAPHQL_INPUTS = {
    "IssueOrder": {"field": "IssueOrderField!", "direction": "OrderDirection!"},
    "LabelOrder": {"field": "LabelOrderField!", "direction": "OrderDirection!"},
    "RepositoryOrder": {"field": "RepositoryOrderField!", "direction": "OrderDirection!"},
    "CreateRepositoryInput": {"name": "String!", "visibility": "RepositoryVisibility!", "ownerId": "ID",
                              "description": "String", "homepageUrl": "URI", "hasIssuesEnabled": "Boolean",
                              "hasWikiEnabled": "Boolean", "teamId": "ID", "template": "Boolean",
                              "clientMutationId": "String"},
    "CreateIssueInput": {"repositoryId": "ID!", "title": "String!", "body": "String", "assigneeIds": "[ID!]",
                         "labelIds": "[ID!]", "milestoneId": "ID", "projectIds": "[ID!]", "issueTemplate": "String",
                         "clientMutationId": "String"},
    "CloseIssueInput": {"issueId": "ID!", "stateReason": "IssueClosedStateReason", "clientMutationId": "String"},
    "ReopenIssueInput": {"issueId": "ID!", "clientMutationId": "String"},
    "ArchiveRepositoryInput": {"repositoryId": "ID!", "clientMutationId": "String"},
    "UnarchiveRepositoryInput": {"repositoryId": "ID!", "clientMutationId": "String"},
    "AddCommentInput": {"subjectId": "ID!", "body": "String!", "clientMutationId": "String"},
    "UpdateIssueInput": {"id": "ID!", "title": "String", "body": "String", "state": "IssueState",
                         "assigneeIds": "[ID!]", "labelIds": "[ID!]", "milestoneId": "ID", "projectIds": "[ID!]",
                         "clientMutationId": "String"},
    "UpdatePullRequestInput": {"pullRequestId": "ID!", "title": "String", "body": "String",
                               "state": "PullRequestUpdateState", "baseRefName": "String", "assigneeIds": "[ID!]",
                               "labelIds": "[ID!]", "milestoneId": "ID", "projectIds": "[ID!]",
                               "maintainerCanModify": "Boolean", "clientMutationId": "String"},
    "ConvertPullRequestToDraftInput": {"pullRequestId": "ID!", "clientMutationId": "String"},
    "UpdatePullRequestBranchInput": {"pullRequestId": "ID!", "expectedHeadOid": "GitObjectID",
                                     "updateMethod": "PullRequestBranchUpdateMethod", "clientMutationId": "String"},
    "LockLockableInput": {"lockableId": "ID!", "lockReason": "LockReason", "clientMutationId": "String"},
    "UnlockLockableInput": {"lockableId": "ID!", "clientMutationId": "String"},
    "RequestReviewsInput": {"pullRequestId": "ID!", "userIds": "[ID!]", "teamIds": "[ID!]", "union": "Boolean",
                            "clientMutationId": "String"},
    "CreatePullRequestInput": {"repositoryId": "ID!", "baseRefName": "String!", "headRefName": "String!",
                               "title": "String!", "body": "String", "draft": "Boolean", "headRepositoryId": "ID",
                               "maintainerCanModify": "Boolean", "clientMutationId": "String"},
    "MergePullRequestInput": {"pullRequestId": "ID!", "mergeMethod": "PullRequestMergeMethod",
                              "commitHeadline": "String", "commitBody": "String", "expectedHeadOid": "GitObjectID",
                              "authorEmail": "String", "clientMutationId": "String"},
    "ClosePullRequestInput": {"pullRequestId": "ID!", "clientMutationId": "String"},
    "ReopenPullRequestInput": {"pullRequestId": "ID!", "clientMutationId": "String"},
    "MarkPullRequestReadyForReviewInput": {"pullRequestId": "ID!", "clientMutationId": "String"},
    "AddPullRequestReviewInput": {"pullRequestId": "ID!", "body": "String", "event": "PullRequestReviewEvent",
                                  "commitOID": "GitObjectID", "comments": "[DraftPullRequestReviewComment]",
                                  "threads": "[DraftPullRequestReviewThread]", "clientMutationId": "String"},
    "AddLabelsToLabelableInput": {"labelableId": "ID!", "labelIds": "[ID!]!", "clientMutationId": "String"},
    "RemoveLabelsFromLabelableInput": {"labelableId": "ID!", "labelIds": "[ID!]!", "clientMutationId": "String"},
    "IssueCommentOrder": {"field": "IssueCommentOrderField!", "direction": "OrderDirection!"},
    "ReleaseOrder": {"field": "ReleaseOrderField!", "direction": "OrderDirection!"},
    "OrganizationOrder": {"field": "OrganizationOrderField!", "direction": "OrderDirection!"},
    "LanguageOrder": {"field": "LanguageOrderField!", "direction": "OrderDirection!"},
    "IssueFilters": {"assignee": "String", "createdBy": "String", "labels": "[String!]", "mentioned": "String",
                     "milestone": "String", "milestoneNumber": "String", "since": "DateTime",
                     "states": "[IssueState!]", "viewerSubscribed": "Boolean"},
}
CONNECTION_ARGS = {"first": "Int", "after": "String", "last": "Int", "before": "String"}
MAX_PAGE = 100


def connection(items, args, to_node):
    """A GitHub connection (totalCount, nodes, edges with cursors, pageInfo) over ``items`` with
    first/after/last/before. Cursors are opaque: base64 of the item's position."""
    first, last = args.get("first"), args.get("last")
    for name, value in (("first", first), ("last", last)):
        if value is not None and not 0 <= value <= MAX_PAGE:
            raise GraphQLError("`%s` on a connection must be between 0 and %d" % (name, MAX_PAGE),
                               kind="INVALID_ARGUMENT")

    def position(cursor):
        try:
            kind, _, index = base64.b64decode(cursor).decode().partition(":")
            assert kind == "cursor"
            return int(index)
        except (ValueError, AssertionError, UnicodeDecodeError):
            raise GraphQLError("%r is not a valid cursor" % cursor, kind="INVALID_CURSOR_ARGUMENTS")
    start, end = 0, len(items)
    if args.get("after"):
        start = max(start, position(args["after"]) + 1)
    if args.get("before"):
        end = min(end, position(args["before"]))
    if first is None and last is None:
        first = MAX_PAGE
    window = list(range(start, max(start, end)))
    if first is not None:
        window = window[:first]
    if last is not None:
        window = window[-last:] if last else []
    cursor = lambda i: base64.b64encode(("cursor:%d" % i).encode()).decode()  # noqa: E731
    nodes = [to_node(items[i]) for i in window]
    return {"totalCount": len(items), "nodes": nodes,
            "edges": [{"cursor": cursor(i), "node": n} for i, n in zip(window, nodes)],
            "pageInfo": {"hasNextPage": bool(window) and window[-1] < end - 1,
                         "hasPreviousPage": bool(window) and window[0] > start,
                         "startCursor": cursor(window[0]) if window else None,
                         "endCursor": cursor(window[-1]) if window else None}}


def payload(**fields):
    """A mutation's payload type: clientMutationId and the named fields, each of the given type."""
    return {"kind": "OBJECT", "fields": dict({"clientMutationId": GField("String")},
                                             **{name: GField(kind) for name, kind in fields.items()})}


def connection_type(node_type):
    return {"kind": "OBJECT", "fields": {
        "totalCount": GField("Int!"), "nodes": GField("[%s]" % node_type), "edges": GField("[%sEdge]" % node_type),
        "pageInfo": GField("PageInfo!")}}


def edge_type(node_type):
    return {"kind": "OBJECT", "fields": {"cursor": GField("String!"), "node": GField(node_type)}}


def gql_user(app, row):
    u = user_json(app, row, detail=True)
    return {"__typename": "Organization" if row["kind"] == "org" else "User", "id": u["node_id"],
            "databaseId": u["id"], "login": u["login"], "name": u["name"], "email": u["email"] or "",
            "url": u["html_url"], "avatarUrl": u["avatar_url"], "isSiteAdmin": u["site_admin"],
            "createdAt": u["created_at"], "company": u["company"], "resourcePath": "/" + u["login"]}


def gql_repository(ctx, row):
    r = repo_json(ctx.app, row)
    level = repo_permission(ctx.app.store, ctx.req.principal.user, row)[0]
    owner = account_by_id(ctx.app.store, row["owner_id"])
    return {"__typename": "Repository", "id": r["node_id"], "databaseId": r["id"], "name": r["name"],
            "nameWithOwner": r["full_name"], "owner": gql_user(ctx.app, owner), "description": r["description"],
            "url": r["html_url"], "isPrivate": r["private"], "visibility": r["visibility"].upper(),
            "isArchived": r["archived"], "sshUrl": r["ssh_url"], "homepageUrl": r["homepage"],
            "createdAt": r["created_at"], "pushedAt": r["pushed_at"],
            "defaultBranchRef": gql_ref(ctx, row, r["default_branch"]),
            "viewerPermission": level.upper() if level != "none" else None, "hasIssuesEnabled": r["has_issues"],
            "isFork": row["parent_id"] is not None, "hasWikiEnabled": False, "hasProjectsEnabled": False,
            "hasDiscussionsEnabled": False, "isTemplate": False, "isMirror": False, "isEmpty": r["pushed_at"] is None,
            "isInOrganization": owner["kind"] == "org", "stargazerCount": 0, "forkCount": 0,
            "mergeCommitAllowed": True, "squashMergeAllowed": True, "rebaseMergeAllowed": True,
            "_row": row}


def gql_label(app, row):
    return {"__typename": "Label", "id": node_id("Label", row["id"]), "name": row["name"],
            "description": row["description"], "color": row["color"]}


def gql_issue(ctx, repo_row, row):
    i = issue_json(ctx.app, repo_row, row)
    author = account_by_id(ctx.app.store, row["user_id"]) if row["user_id"] else None
    m = i["milestone"]
    return {"__typename": "Issue", "id": i["node_id"], "number": i["number"], "title": i["title"],
            "url": i["html_url"], "state": i["state"].upper(), "closed": i["state"] == "closed",
            "stateReason": i["state_reason"].upper() if i["state_reason"] else None, "body": i["body"] or "",
            "createdAt": i["created_at"], "updatedAt": i["updated_at"], "closedAt": i["closed_at"],
            "author": gql_user(ctx.app, author) if author else None, "_labels": i["labels"], "_row": row,
            "_repo": repo_row, "reactionGroups": [], "issueType": None, "parent": None,
            "subIssuesSummary": {"total": 0, "completed": 0, "percentCompleted": 0}, **gql_lock(row),
            "milestone": {"__typename": "Milestone", "id": m["node_id"], "number": m["number"], "title": m["title"],
                          "description": m["description"], "dueOn": m["due_on"], "state": m["state"].upper(),
                          "url": m["html_url"]} if m else None}


def gql_lock(row):
    """Lockable's fields: REST's lock_reason ("too heated") as GraphQL's LockReason (TOO_HEATED)."""
    reason = row["lock_reason"]
    return {"locked": bool(row["locked"]),
            "activeLockReason": reason.upper().replace(" ", "_").replace("-", "_") if row["locked"] and reason else None}


def mutate_lock(locking):
    """lockLockable / unlockLockable: what PUT and DELETE .../issues/N/lock do."""
    payload_key = "lockedRecord" if locking else "unlockedRecord"

    def mutate(ctx, parent, args):
        data = args["input"]
        repo_row, issue = mutation_issue(ctx, data["lockableId"], "triage_issue")
        reason = (data.get("lockReason") or "").lower().replace("_", " ").replace("off topic", "off-topic") or None
        set_locked(ctx.req, issue, locking, reason)
        row = ctx.app.store.one("SELECT * FROM issues WHERE id = ?", issue["id"])
        node = gql_pull(ctx, repo_row, row) if row["is_pull"] else gql_issue(ctx, repo_row, row)
        return {"clientMutationId": data.get("clientMutationId"), payload_key: node,
                "actor": gql_user(ctx.app, ctx.req.principal.user)}
    return mutate


def resolve_issue_assignees(ctx, parent, args):
    rows = ctx.app.store.all("SELECT a.* FROM accounts a JOIN issue_assignees ia ON ia.user_id = a.id"
                             " WHERE ia.issue_id = ? ORDER BY a.login", parent["_row"]["id"])
    return connection(rows, args, lambda r: gql_user(ctx.app, r))


def resolve_comments(ctx, parent, args):
    repo_row, issue = parent["_repo"], parent["_row"]
    rows = ctx.app.store.all("SELECT * FROM comments WHERE issue_id = ? ORDER BY id", issue["id"])

    def node(row):
        c = comment_json(ctx.app, repo_row, issue["number"], row)
        author = account_by_id(ctx.app.store, row["user_id"]) if row["user_id"] else None
        return {"__typename": "IssueComment", "id": c["node_id"], "url": c["html_url"], "body": c["body"],
                "createdAt": c["created_at"], "author": gql_user(ctx.app, author) if author else None,
                "authorAssociation": c["author_association"], "includesCreatedEdit": False, "isMinimized": False,
                "minimizedReason": None, "reactionGroups": [],
                "viewerDidAuthor": ctx.req.principal.user is not None and row["user_id"] == ctx.req.principal.user["id"]}
    return connection(rows, args, node)


def resolve_assignable_users(ctx, parent, args):
    """People granted access to the repository (those REST lets be assigned)."""
    repo_row = parent["_row"]
    rows = [u for u in people_with_access(ctx.app.store, repo_row)
            if repo_permission(ctx.app.store, u, repo_row)[1] not in ("public repository",)]
    if args.get("query"):
        rows = [u for u in rows if args["query"].lower() in (u["login"] + " " + (u["name"] or "")).lower()]
    return connection(rows, args, lambda u: gql_user(ctx.app, u))


def resolve_releases(ctx, parent, args):
    """Repository.releases: what visible_releases shows REST callers (drafts only to those who may push)."""
    rows = visible_releases(ctx.req, parent["_row"])
    latest = next((r["id"] for r in rows if not r["draft"] and not r["prerelease"]), None)
    order = args.get("orderBy") or {"field": "CREATED_AT", "direction": "DESC"}
    rows.sort(key=lambda r: (r["created_at"], r["id"]) if order["field"] == "CREATED_AT" else r["tag_name"],
              reverse=order["direction"] == "DESC")

    return connection(rows, args, lambda r: gql_release(ctx, parent["_row"], r, r["id"] == latest))


def gql_release(ctx, repo_row, row, is_latest):
    rel = release_json(ctx.app, repo_row, row)
    return {"__typename": "Release", "id": rel["node_id"], "name": rel["name"], "tagName": rel["tag_name"],
            "isDraft": rel["draft"], "isPrerelease": rel["prerelease"], "isLatest": is_latest,
            "createdAt": rel["created_at"], "publishedAt": rel["published_at"], "url": rel["html_url"],
            "description": rel["body"]}


def resolve_sub_issues(ctx, parent, args):
    return connection([], args, lambda n: n)


def resolve_issues(ctx, parent, args):
    """Repository.issues, with GitHub's filters (states, labels, filterBy, orderBy)."""
    repo_row = parent["_row"]
    filters = args.get("filterBy") or {}
    states = args.get("states") or filters.get("states") or ["OPEN", "CLOSED"]
    rows = [r for r in ctx.app.store.all("SELECT * FROM issues WHERE repo_id = ? AND is_pull = 0", repo_row["id"])
            if r["state"].upper() in states]
    wanted_labels = set(args.get("labels") or filters.get("labels") or [])
    by_login = lambda login: (account_by_login(ctx.app.store, login) or {"id": -1})["id"]  # noqa: E731
    if filters.get("createdBy"):
        rows = [r for r in rows if r["user_id"] == by_login(filters["createdBy"])]
    if filters.get("assignee"):
        assignee = by_login(filters["assignee"])
        rows = [r for r in rows if ctx.app.store.one("SELECT 1 FROM issue_assignees WHERE issue_id = ? AND user_id = ?",
                                                      r["id"], assignee)]
    if filters.get("mentioned"):
        rows = [r for r in rows if "@" + filters["mentioned"] in (r["body"] or "")]
    nodes = [gql_issue(ctx, repo_row, r) for r in rows]
    if wanted_labels:
        nodes = [n for n in nodes if wanted_labels <= {l["name"] for l in n["_labels"]}]
    order = args.get("orderBy") or {"field": "CREATED_AT", "direction": "DESC"}
    key = {"CREATED_AT": "createdAt", "UPDATED_AT": "updatedAt"}.get(order["field"], "createdAt")
    nodes.sort(key=lambda n: (n[key], n["number"]), reverse=order["direction"] == "DESC")
    return connection(nodes, args, lambda n: n)


def gql_pull(ctx, repo_row, row):
    pull = ctx.app.store.one("SELECT * FROM pulls WHERE issue_id = ?", row["id"])
    state = "MERGED" if pull["merged_at"] else row["state"].upper()
    head_repo = head_repository(ctx.app.store, repo_row, pull)
    owner = account_by_id(ctx.app.store, head_repo["owner_id"]) if head_repo else None
    author = account_by_id(ctx.app.store, row["user_id"]) if row["user_id"] else None
    return {"__typename": "PullRequest", "id": node_id("PullRequest", row["id"]), "number": row["number"],
            "title": row["title"], "state": state, "closed": row["state"] == "closed",
            "url": "%s/%s/pull/%d" % (ctx.app.url, full_name(repo_row), row["number"]), "body": row["body"] or "",
            "createdAt": row["created_at"], "updatedAt": row["updated_at"], "headRefName": pull["head_ref"],
            "baseRefName": pull["base_ref"], "isDraft": bool(pull["draft"]),
            "isCrossRepository": pull["head_repo_id"] != repo_row["id"],
            "merged": pull["merged_at"] is not None, "mergedAt": pull["merged_at"],
            "headRepositoryOwner": gql_user(ctx.app, owner) if owner else None,
            "author": gql_user(ctx.app, author) if author else None,
            "_row": row, "_repo": repo_row, "autoMergeRequest": None, "maintainerCanModify": False,
            "reactionGroups": [], "headRepository": gql_repository(ctx, head_repo) if head_repo else None,
            "milestone": gql_issue(ctx, repo_row, row)["milestone"], **gql_lock(row),
            "_labels": issue_json(ctx.app, repo_row, row)["labels"]}


def resolve_review_requests(ctx, parent, args):
    rows = ctx.app.store.all("SELECT a.* FROM accounts a JOIN review_requests r ON r.user_id = a.id"
                             " WHERE r.issue_id = ? ORDER BY a.login", parent["_row"]["id"])
    return connection(rows, args, lambda u: {"__typename": "ReviewRequest", "requestedReviewer": gql_user(ctx.app, u)})


def resolve_reviews(ctx, parent, args, latest_only=False):
    """PullRequest.reviews, or latestReviews: each author's latest review."""
    repo_row, issue = parent["_repo"], parent["_row"]
    rows = ctx.app.store.all("SELECT * FROM reviews WHERE issue_id = ? ORDER BY id", issue["id"])
    if latest_only:
        rows = list({row["user_id"]: row for row in rows}.values())

    def node(row):
        r = review_json(ctx.app, repo_row, issue, row)
        author = account_by_id(ctx.app.store, row["user_id"]) if row["user_id"] else None
        return {"__typename": "PullRequestReview", "id": r["node_id"], "state": r["state"], "body": r["body"],
                "url": r["html_url"], "submittedAt": r["submitted_at"], "authorAssociation": r["author_association"],
                "author": gql_user(ctx.app, author) if author else None, "reactionGroups": [],
                "commit": {"__typename": "Commit", "id": node_id("Commit", row["commit_id"]), "oid": row["commit_id"],
                           "_repo": repo_row} if row["commit_id"] else None}
    return connection(rows, args, node)


REQUIRED_CHECK_ARGS = {"pullRequestId": "ID", "pullRequestNumber": "Int"}


def resolve_check_required(ctx, parent, args):
    """Whether the pull request's base branch requires this check or status to pass before a merge."""
    repo_row = parent["_repo"]
    if args.get("pullRequestId"):
        issue = node_row(ctx, args["pullRequestId"], "PullRequest")
    else:
        issue = ctx.app.store.one("SELECT * FROM issues WHERE repo_id = ? AND number = ? AND is_pull = 1",
                                  repo_row["id"], args.get("pullRequestNumber") or 0)
    pull = ctx.app.store.one("SELECT * FROM pulls WHERE issue_id = ?", issue["id"]) if issue else None
    rule = branch_protection(ctx.app.store, repo_row["id"], pull["base_ref"]) if pull else None
    required = json.loads(rule["required_checks"]) if rule is not None and rule["required_checks"] else []
    return (parent.get("context") or parent.get("name")) in required


def resolve_status_rollup(ctx, parent, args):
    """A commit's statuses (the latest per context) and check runs, as one rollup."""
    repo_row, sha = parent.get("_repo"), parent["oid"]
    if repo_row is None:
        return None
    latest = {}
    for row in ctx.app.store.all("SELECT * FROM statuses WHERE repo_id = ? AND sha = ? ORDER BY id", repo_row["id"], sha):
        latest[row["context"]] = row
    nodes = [{"__typename": "StatusContext", "context": s["context"], "state": s["state"].upper(),
              "targetUrl": s["target_url"], "createdAt": s["created_at"], "description": s["description"],
              "_repo": repo_row} for s in latest.values()]
    for run in ctx.app.store.all("SELECT * FROM check_runs WHERE repo_id = ? AND head_sha = ? ORDER BY id",
                                 repo_row["id"], sha):
        nodes.append({"__typename": "CheckRun", "name": run["name"], "status": run["status"].upper(),
                      "conclusion": run["conclusion"].upper() if run["conclusion"] else None,
                      "startedAt": run["started_at"], "completedAt": run["completed_at"],
                      "detailsUrl": run["details_url"], "checkSuite": {"__typename": "CheckSuite", "workflowRun": None},
                      "_repo": repo_row})
    return {"__typename": "StatusCheckRollup", "_nodes": nodes}


def pull_state(ctx, parent):
    """The live PullState behind a PullRequest object, computed once per object."""
    if "_state" not in parent:
        row = parent["_row"]
        parent["_state"] = PullState(ctx.app, parent["_repo"], row, ctx.app.store.one(
            "SELECT * FROM pulls WHERE issue_id = ?", row["id"]))
    return parent["_state"]


def resolve_pull_mergeable(ctx, parent, args):
    mergeable, state = mergeability(ctx.app, pull_state(ctx, parent))
    return {True: "MERGEABLE", False: "CONFLICTING"}.get(mergeable, "UNKNOWN")


def resolve_merge_state(ctx, parent, args):
    return mergeability(ctx.app, pull_state(ctx, parent))[1].upper()


PATCH_STATUSES = {"added": "ADDED", "removed": "DELETED", "modified": "MODIFIED", "renamed": "RENAMED"}


def resolve_pull_files(ctx, parent, args):
    return connection(pull_state(ctx, parent).files, args, lambda f: {
        "__typename": "PullRequestChangedFile", "path": f[0], "changeType": PATCH_STATUSES.get(f[1], "CHANGED"),
        "additions": f[2], "deletions": f[3]})


def resolve_pull_commits(ctx, parent, args):
    def node(commit):
        sha = commit.id.decode()
        message = commit.message.decode("utf-8", "replace").rstrip("\n")
        author = git_person_json(commit.author, commit.author_time, commit.author_timezone)
        account = account_for_email(ctx.app, author["email"])
        git_actor = {"__typename": "GitActor", "name": author["name"], "email": author["email"],
                     "date": author["date"], "user": gql_user(ctx.app, account_by_id(ctx.app.store, account["id"]))
                     if account else None}
        headline, _, body = message.partition("\n")
        return {"__typename": "PullRequestCommit", "id": node_id("PullRequestCommit", sha), "commit": {
            "__typename": "Commit", "id": node_id("Commit", sha), "oid": sha, "message": message,
            "messageHeadline": headline, "messageBody": body.strip("\n"), "authoredDate": author["date"],
            "committedDate": git_person_json(commit.committer, commit.commit_time, commit.commit_timezone)["date"],
            "_authors": [git_actor], "_repo": parent["_repo"]}}
    return connection(pull_state(ctx, parent).commits, args, node)


def resolve_pull(ctx, parent, args):
    row = ctx.app.store.one("SELECT * FROM issues WHERE repo_id = ? AND number = ? AND is_pull = 1",
                            parent["_row"]["id"], args["number"])
    if row is None:
        raise GraphQLError("Could not resolve to a PullRequest with the number of %d." % args["number"],
                           kind="NOT_FOUND")
    return gql_pull(ctx, parent["_row"], row)


def visible_pull(ctx, ident):
    """(repository, issue, pull) behind a pull request's global id, when the viewer can see it."""
    issue = node_row(ctx, ident, "PullRequest")
    repo_row = repo_by_id(ctx.app.store, issue["repo_id"])
    if not ctx.req.can("read_code", Resource.repo(repo_row)):
        raise GraphQLError("Could not resolve to a node with the global id of '%s'" % ident, kind="NOT_FOUND")
    return repo_row, issue, ctx.app.store.one("SELECT * FROM pulls WHERE issue_id = ?", issue["id"])


def mutate_merge_pull(ctx, parent, args):
    data = args["input"]
    repo_row, issue, pull = visible_pull(ctx, data["pullRequestId"])
    merge(ctx.req, repo_row, issue, pull, (data.get("mergeMethod") or "MERGE").lower(), data.get("expectedHeadOid"),
          data.get("commitHeadline"), data.get("commitBody"))
    row = ctx.app.store.one("SELECT * FROM issues WHERE id = ?", issue["id"])
    return {"clientMutationId": data.get("clientMutationId"), "pullRequest": gql_pull(ctx, repo_row, row),
            "actor": gql_user(ctx.app, ctx.req.principal.user)}


def mutate_update_branch(ctx, parent, args):
    data = args["input"]
    if (data.get("updateMethod") or "MERGE") != "MERGE":
        raise GraphQLError("only MERGE updates a pull request branch here", kind="UNPROCESSABLE")
    repo_row, issue, pull = visible_pull(ctx, data["pullRequestId"])
    update_pull_branch(ctx.req, repo_row, issue, pull, data.get("expectedHeadOid"))
    return {"clientMutationId": data.get("clientMutationId"), "pullRequest": gql_pull(ctx, repo_row, issue)}


def resolve_pull_requests(ctx, parent, args):
    """Repository.pullRequests, filtered by states, base and head branch, and labels."""
    repo_row = parent["_row"]
    states = set(args.get("states") or ["OPEN", "CLOSED", "MERGED"])
    nodes = [gql_pull(ctx, repo_row, r) for r in ctx.app.store.all(
        "SELECT * FROM issues WHERE repo_id = ? AND is_pull = 1", repo_row["id"])]
    nodes = [n for n in nodes if n["state"] in states and (not args.get("baseRefName") or n["baseRefName"] ==
                                                             args["baseRefName"]) and (
        not args.get("headRefName") or n["headRefName"] == args["headRefName"])]
    order = args.get("orderBy") or {"field": "CREATED_AT", "direction": "DESC"}
    key = "updatedAt" if order["field"] == "UPDATED_AT" else "createdAt"
    nodes.sort(key=lambda n: (n[key], n["number"]), reverse=order["direction"] == "DESC")
    return connection(nodes, args, lambda n: n)


def resolve_issue_or_pull(ctx, parent, args):
    row = ctx.app.store.one("SELECT * FROM issues WHERE repo_id = ? AND number = ?", parent["_row"]["id"],
                            args["number"])
    if row is None:
        raise GraphQLError("Could not resolve to an issue or pull request with the number of %d." % args["number"],
                           kind="NOT_FOUND")
    return gql_pull(ctx, parent["_row"], row) if row["is_pull"] else gql_issue(ctx, parent["_row"], row)


def node_row(ctx, ident, *kinds):
    """The issues/labels/accounts/repos row a global id of one of ``kinds`` names, or a NOT_FOUND error."""
    try:
        found_kind, _, number = base64.b64decode(ident).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        found_kind, number = "", ""
    table = {"Issue": "issues", "PullRequest": "issues", "Label": "labels", "User": "accounts",
             "Repository": "repos"}.get(found_kind)
    row = None
    if found_kind in kinds and number.isdigit() and table:
        row = repo_by_id(ctx.app.store, int(number)) if table == "repos" else ctx.app.store.one(
            "SELECT * FROM %s WHERE id = ?" % table, int(number))
    if row is None:
        raise GraphQLError("Could not resolve to a node with the global id of '%s'" % ident, kind="NOT_FOUND")
    return row


def mutation_issue(ctx, ident, action, **context):
    """(repository, issue or pull request) behind a global id, once ``action`` is allowed on its repository."""
    issue = node_row(ctx, ident, "Issue", "PullRequest")
    repo_row = repo_by_id(ctx.app.store, issue["repo_id"])
    if not ctx.req.can("read_code", Resource.repo(repo_row)):
        raise GraphQLError("Could not resolve to a node with the global id of '%s'" % ident, kind="NOT_FOUND")
    ctx.req.authorize(action, Resource.repo(repo_row), author_id=issue["user_id"], locked=bool(issue["locked"]),
                      **context)
    return repo_row, issue


def repo_from_node(ctx, ident):
    """The repository a global id names, if the caller may read it; NOT_FOUND otherwise."""
    try:
        kind, _, number = base64.b64decode(ident).decode().partition(":")
        repo_row = repo_by_id(ctx.app.store, int(number)) if kind == "Repository" else None
    except (ValueError, UnicodeDecodeError):
        repo_row = None
    if repo_row is None or not ctx.req.can("read_code", Resource.repo(repo_row)):
        raise GraphQLError("Could not resolve to a node with the global id of '%s'" % ident, kind="NOT_FOUND")
    return repo_row


def unprocessable(error):
    """A REST validation failure as a GraphQL error with its reasons."""
    return GraphQLError("; ".join(e.get("message", e.get("code", "")) for e in error.errors or []) or error.message,
                        kind="UNPROCESSABLE")


def mutate_create_pull(ctx, parent, args):
    data = args["input"]
    repo_row = repo_from_node(ctx, data["repositoryId"])
    ctx.req.authorize("open_pr", Resource.repo(repo_row))
    try:
        issue_id = open_pull(ctx.req, repo_row, data["headRefName"], data["baseRefName"], data["title"],
                             data.get("body"), bool(data.get("draft")))
    except HTTPError as error:
        raise unprocessable(error)
    row = ctx.app.store.one("SELECT * FROM issues WHERE id = ?", issue_id)
    return {"clientMutationId": data.get("clientMutationId"), "pullRequest": gql_pull(ctx, repo_row, row)}


def mutate_create_issue(ctx, parent, args):
    data = args["input"]
    repo_row = repo_from_node(ctx, data["repositoryId"])
    ctx.req.authorize("open_issue", Resource.repo(repo_row))
    relations = {}
    if data.get("labelIds"):
        relations["labels"] = [node_row(ctx, i, "Label")["name"] for i in data["labelIds"]]
    if data.get("assigneeIds"):
        relations["assignees"] = [node_row(ctx, i, "User")["login"] for i in data["assigneeIds"]]
    row = open_issue(ctx.req, repo_row, data["title"], data.get("body"), relations)
    return {"clientMutationId": data.get("clientMutationId"), "issue": gql_issue(ctx, repo_row, row)}


def mutate_issue_state(state, id_key="issueId", payload_key="issue"):
    """closeIssue and reopenIssue, and with PR keys closePullRequest and reopenPullRequest."""
    def mutate(ctx, parent, args):
        data = args["input"]
        repo_row, issue = mutation_issue(ctx, data[id_key], "edit_issue")
        if issue["is_pull"] and ctx.app.store.one("SELECT merged_at FROM pulls WHERE issue_id = ?",
                                                  issue["id"])["merged_at"]:
            raise GraphQLError("A merged pull request cannot be closed or reopened", kind="UNPROCESSABLE")
        if issue["state"] != state:
            with ctx.req.transaction() as db:
                update_row(db, "issues", dict(state_change(ctx.req, state, (data.get("stateReason") or "").lower()
                                                            or None), updated_at=now()), "id", issue["id"])
                ctx.req.effect("%s #%d" % ("closed" if state == "closed" else "reopened", issue["number"]))
        row = ctx.app.store.one("SELECT * FROM issues WHERE id = ?", issue["id"])
        node = gql_pull(ctx, repo_row, row) if row["is_pull"] else gql_issue(ctx, repo_row, row)
        return {"clientMutationId": data.get("clientMutationId"), payload_key: node}
    return mutate


def mutate_draft(draft):
    """markPullRequestReadyForReview, and convertPullRequestToDraft its undoing."""
    def mutate(ctx, parent, args):
        data = args["input"]
        repo_row, issue = mutation_issue(ctx, data["pullRequestId"], "edit_issue")
        with ctx.req.transaction() as db:
            db.execute("UPDATE pulls SET draft = ? WHERE issue_id = ?", (int(draft), issue["id"]))
            ctx.req.effect("#%d is %s" % (issue["number"], "a draft" if draft else "ready for review"))
        return {"clientMutationId": data.get("clientMutationId"), "pullRequest": gql_pull(ctx, repo_row, issue)}
    return mutate


def mutate_request_reviews(ctx, parent, args):
    """requestReviews: the users asked to review (union: added to those asked before; else replacing them)."""
    data = args["input"]
    repo_row, issue = mutation_issue(ctx, data["pullRequestId"], "edit_issue")
    users = [node_row(ctx, i, "User") for i in data.get("userIds") or []]
    if any(user["id"] == issue["user_id"] for user in users):
        raise GraphQLError("Review cannot be requested from pull request author.", kind="UNPROCESSABLE")
    if any(not RANK[repo_permission(ctx.app.store, user, repo_row)[0]] >= RANK["read"] for user in users):
        raise GraphQLError("A reviewer cannot see %s" % full_name(repo_row), kind="UNPROCESSABLE")
    with ctx.req.transaction() as db:
        if not data.get("union"):
            db.execute("DELETE FROM review_requests WHERE issue_id = ?", (issue["id"],))
        for user in users:
            db.execute("INSERT OR IGNORE INTO review_requests (issue_id, user_id) VALUES (?, ?)", (issue["id"], user["id"]))
        ctx.req.effect("review requested on #%d from %s" % (issue["number"], ", ".join(u["login"] for u in users)
                                                            or "nobody"))
    return {"clientMutationId": data.get("clientMutationId"), "pullRequest": gql_pull(ctx, repo_row, issue),
            "actor": gql_user(ctx.app, ctx.req.principal.user)}


def mutate_archived(archived):
    """archiveRepository / unarchiveRepository: what PATCH /repos {"archived": …} does."""
    def resolve(ctx, parent, args):
        data = args["input"]
        row = node_row(ctx, data["repositoryId"], "Repository")
        if not ctx.req.can("read_code", Resource.repo(row)):
            raise GraphQLError("Could not resolve to a node with the global id of '%s'" % data["repositoryId"],
                               kind="NOT_FOUND")
        ctx.req.authorize("admin_repo", Resource.repo(row))
        with ctx.req.transaction() as db:
            db.execute("UPDATE repos SET archived = ?, updated_at = ? WHERE id = ?", (int(archived), now(), row["id"]))
            ctx.req.effect("%s %s" % ("archived" if archived else "unarchived", full_name(row)))
        return {"clientMutationId": data.get("clientMutationId"),
                "repository": gql_repository(ctx, repo_by_id(ctx.app.store, row["id"]))}
    return resolve


def mutate_add_review(ctx, parent, args):
    data = args["input"]
    event = data.get("event") or "COMMENT"
    if event not in REVIEW_EVENTS:
        raise GraphQLError("event must be APPROVE, REQUEST_CHANGES or COMMENT (pending reviews are not served)",
                           kind="UNPROCESSABLE")
    repo_row, issue = mutation_issue(ctx, data["pullRequestId"], "review_pr")
    if event != "APPROVE" and not (data.get("body") or "").strip():
        raise GraphQLError("a %s review needs a body" % event.lower(), kind="UNPROCESSABLE")
    pull = ctx.app.store.one("SELECT * FROM pulls WHERE issue_id = ?", issue["id"])
    try:
        review_id = record_review(ctx.req, repo_row, issue, pull, event, data.get("body") or "", [],
                                  data.get("commitOID"))
    except HTTPError as error:
        raise unprocessable(error)
    review = review_json(ctx.app, repo_row, issue, ctx.app.store.one("SELECT * FROM reviews WHERE id = ?", review_id))
    node = {"__typename": "PullRequestReview", "id": review["node_id"], "state": review["state"],
            "body": review["body"], "url": review["html_url"]}
    return {"clientMutationId": data.get("clientMutationId"), "pullRequestReview": node}


def mutate_update(kind):
    """updateIssue and updatePullRequest: title, body and state as their author or a triager may;
    labels and assignees need triage; a pull request's base moves to another existing branch."""
    id_key, payload_key = ("id", "issue") if kind == "Issue" else ("pullRequestId", "pullRequest")

    def mutate(ctx, parent, args):
        return update_issue_or_pull(ctx, args["input"], id_key, payload_key)
    return mutate


def update_issue_or_pull(ctx, data, id_key, payload_key):
    repo_row, issue = mutation_issue(ctx, data[id_key], "edit_issue")
    relations, pull_fields = {}, {}
    if data.get("labelIds") is not None:
        relations["labels"] = [node_row(ctx, i, "Label")["name"] for i in data["labelIds"]]
    if data.get("assigneeIds") is not None:
        relations["assignees"] = [node_row(ctx, i, "User")["login"] for i in data["assigneeIds"]]
    if relations:
        ctx.req.authorize("triage_issue", Resource.repo(repo_row))
    fields = {k: data[k] for k in ("title", "body") if data.get(k) is not None}
    if fields.get("title", "x").strip() == "" or len(fields.get("title", "")) > 256:
        raise GraphQLError("title must be 1 to 256 characters", kind="UNPROCESSABLE")
    if data.get("state") and data["state"].lower() != issue["state"]:
        fields.update(state_change(ctx.req, data["state"].lower()))
    if data.get("baseRefName") and issue["is_pull"]:
        with open_repo(ctx.app, repo_row["id"]) as git:
            base_sha = branch_sha(git, data["baseRefName"])
        if base_sha is None:
            raise GraphQLError("base branch %s does not exist" % data["baseRefName"], kind="UNPROCESSABLE")
        pull_fields.update(base_ref=data["baseRefName"], base_sha=base_sha)
    with ctx.req.transaction() as db:
        update_row(db, "issues", dict(fields, updated_at=now()), "id", issue["id"])
        update_row(db, "pulls", pull_fields, "issue_id", issue["id"])
        set_issue_relations(ctx.req, db, repo_row, issue["id"], relations)
        ctx.req.effect("updated #%d: %s" % (issue["number"], ", ".join(sorted(set(fields) | set(relations) |
                                                                            set(pull_fields)))))
    row = ctx.app.store.one("SELECT * FROM issues WHERE id = ?", issue["id"])
    node = gql_pull(ctx, repo_row, row) if row["is_pull"] else gql_issue(ctx, repo_row, row)
    return {"clientMutationId": data.get("clientMutationId"), payload_key: node,
            "actor": gql_user(ctx.app, ctx.req.principal.user)}


def mutate_labels(adding):
    def mutate(ctx, parent, args):
        data = args["input"]
        repo_row, issue = mutation_issue(ctx, data["labelableId"], "triage_issue")
        labels = [node_row(ctx, i, "Label") for i in data["labelIds"]]
        if any(label["repo_id"] != repo_row["id"] for label in labels):
            raise GraphQLError("A label belongs to another repository", kind="UNPROCESSABLE")
        with ctx.req.transaction() as db:
            for label in labels:
                db.execute("INSERT OR IGNORE INTO issue_labels (issue_id, label_id) VALUES (?, ?)" if adding else
                           "DELETE FROM issue_labels WHERE issue_id = ? AND label_id = ?", (issue["id"], label["id"]))
            ctx.req.effect("%s labels of #%d: %s" % ("added" if adding else "removed", issue["number"],
                                                      ", ".join(l["name"] for l in labels)))
        row = ctx.app.store.one("SELECT * FROM issues WHERE id = ?", issue["id"])
        labelable = gql_pull(ctx, repo_row, row) if row["is_pull"] else gql_issue(ctx, repo_row, row)
        return {"clientMutationId": data.get("clientMutationId"), "labelable": labelable}
    return mutate


def mutate_add_comment(ctx, parent, args):
    data = args["input"]
    if not data["body"].strip() or len(data["body"]) > MAX_TEXT:
        raise GraphQLError("body must be 1 to %d characters" % MAX_TEXT, kind="INVALID_ARGUMENT")
    repo_row, issue = mutation_issue(ctx, data["subjectId"], "comment")
    comment = add_comment(ctx.req, issue, data["body"])
    c = comment_json(ctx.app, repo_row, issue["number"], comment)
    author = account_by_id(ctx.app.store, comment["user_id"])
    node = {"__typename": "IssueComment", "id": c["node_id"], "url": c["html_url"], "body": c["body"],
            "createdAt": c["created_at"], "author": gql_user(ctx.app, author),
            "authorAssociation": c["author_association"], "includesCreatedEdit": False, "isMinimized": False,
            "minimizedReason": None, "reactionGroups": [], "viewerDidAuthor": True}
    subject = gql_pull(ctx, repo_row, issue) if issue["is_pull"] else gql_issue(ctx, repo_row, issue)
    return {"clientMutationId": data.get("clientMutationId"), "subject": subject,
            "commentEdge": {"cursor": base64.b64encode(b"cursor:0").decode(), "node": node}}


def resolve_issue(ctx, parent, args):
    row = ctx.app.store.one("SELECT * FROM issues WHERE repo_id = ? AND number = ?", parent["_row"]["id"],
                            args["number"])
    if row is None or row["is_pull"]:
        raise GraphQLError("Could not resolve to an Issue with the number of %d." % args["number"], kind="NOT_FOUND")
    return gql_issue(ctx, parent["_row"], row)


def resolve_repo_labels(ctx, parent, args):
    rows = ctx.app.store.all("SELECT * FROM labels WHERE repo_id = ?", parent["_row"]["id"])
    if args.get("query"):
        rows = [r for r in rows if args["query"].lower() in r["name"].lower()]
    order = args.get("orderBy") or {"field": "NAME", "direction": "ASC"}
    rows.sort(key=lambda r: r["name"].lower() if order["field"] == "NAME" else r["id"],
              reverse=order["direction"] == "DESC")
    return connection(rows, args, lambda r: gql_label(ctx.app, r))


def resolve_issue_labels(ctx, parent, args):
    return connection(parent["_labels"], args, lambda l: {"__typename": "Label", "id": l["node_id"], "name": l["name"],
                                                          "description": l["description"], "color": l["color"]})


def gql_ref(ctx, repo_row, branch):
    """A branch as a Ref, with its protection rule when it has one."""
    rule = branch_protection(ctx.app.store, repo_row["id"], branch)
    protection = None
    if rule is not None:
        checks = json.loads(rule["required_checks"]) if rule["required_checks"] else []
        protection = {"__typename": "BranchProtectionRule", "id": node_id("BranchProtectionRule", "%d:%s" % (
            repo_row["id"], branch)), "pattern": branch, "allowsDeletions": bool(rule["allow_deletions"]),
            "allowsForcePushes": bool(rule["allow_force_pushes"]), "dismissesStaleReviews": bool(rule["dismiss_stale"]),
            "isAdminEnforced": bool(rule["enforce_admins"]), "requiredApprovingReviewCount": rule["required_approvals"],
            "requiresApprovingReviews": rule["required_approvals"] is not None, "requiresStatusChecks": bool(checks),
            "requiresStrictStatusChecks": False, "requiredStatusCheckContexts": checks}
    return {"__typename": "Ref", "id": node_id("Ref", "%d:refs/heads/%s" % (repo_row["id"], branch)), "name": branch,
            "prefix": "refs/heads/", "branchProtectionRule": protection, "_repo": repo_row}


def resolve_compare(ctx, parent, args):
    """Ref.compare(headRef:): how far a branch of the same repository is ahead of and behind this one."""
    with open_repo(ctx.app, parent["_repo"]["id"]) as git:
        base_sha, head_sha = branch_sha(git, parent["name"]), branch_sha(git, args["headRef"].rpartition(":")[2])
        if base_sha is None or head_sha is None:
            return None
        common = merge_base(git, base_sha, head_sha) or ""
        ahead, behind = len(commits_between(git, common, head_sha)), len(commits_between(git, common, base_sha))
    status = "IDENTICAL" if not ahead and not behind else "AHEAD" if not behind else "BEHIND" if not ahead else \
        "DIVERGED"
    return {"__typename": "Comparison", "id": node_id("Comparison", "%s...%s" % (base_sha, head_sha)),
            "aheadBy": ahead, "behindBy": behind, "status": status}


def resolve_repo_parent(ctx, parent, args):
    """A fork's parent, when the viewer can see it."""
    row = repo_by_id(ctx.app.store, parent["_row"]["parent_id"]) if parent["_row"]["parent_id"] else None
    return gql_repository(ctx, row) if row is not None and ctx.req.can("read_code", Resource.repo(row)) else None


def resolve_review_decision(ctx, parent, args):
    """GitHub's reviewDecision: null unless the base branch asks for approving reviews; then whether the
    latest review of each reviewer who could push adds up to what it asks."""
    repo_row = parent["_repo"]
    rule = branch_protection(ctx.app.store, repo_row["id"], parent["baseRefName"])
    if rule is None or rule["required_approvals"] is None:
        return None
    head_sha = pull_state(ctx, parent).head_sha
    states = [review["state"] for review in latest_reviews(ctx.app.store, parent["_row"]["id"], repo_row).values()
              if review["state"] != "APPROVED" or not rule["dismiss_stale"] or review["commit_id"] == head_sha]
    if "CHANGES_REQUESTED" in states:
        return "CHANGES_REQUESTED"
    return "APPROVED" if states.count("APPROVED") >= max(rule["required_approvals"], 1) else "REVIEW_REQUIRED"


def resolve_latest_release(ctx, parent, args):
    """What GET /releases/latest answers: the newest release that is neither a draft nor a prerelease."""
    rows = [r for r in visible_releases(ctx.req, parent["_row"]) if not r["draft"] and not r["prerelease"]]
    return gql_release(ctx, parent["_row"], rows[0], True) if rows else None


def resolve_user_organizations(ctx, parent, args):
    """The organizations a user belongs to: all of them for the user, the shared ones for anyone else."""
    store, viewer = ctx.app.store, ctx.req.principal.user
    user = account_by_login(store, parent["login"])
    rows = store.all("SELECT a.* FROM accounts a JOIN org_members m ON m.org_id = a.id WHERE m.user_id = ?"
                     " ORDER BY a.login", user["id"])
    if viewer is None or viewer["id"] != user["id"]:
        mine = {r["org_id"] for r in store.all("SELECT org_id FROM org_members WHERE user_id = ?",
                                               viewer["id"] if viewer else -1)}
        rows = [r for r in rows if r["id"] in mine]
    return connection(rows, args, lambda r: gql_user(ctx.app, r))


def resolve_owner_repositories(ctx, parent, args):
    """RepositoryOwner.repositories: what the viewer may see among the owner's repositories (and, for
    the viewer's own list, those reached as collaborator or org member when asked for)."""
    store, viewer = ctx.app.store, ctx.req.principal.user
    owner = account_by_login(store, parent["login"])
    affiliations = set(args.get("ownerAffiliations") or args.get("affiliations") or ["OWNER"])
    if viewer is not None and owner["id"] == viewer["id"] and affiliations - {"OWNER"}:
        rows = [r for r in repos_reachable_by(store, viewer) if r["owner_id"] == owner["id"] and "OWNER" in affiliations
                or r["owner_id"] != owner["id"] and (r["owner_kind"] == "org") == ("ORGANIZATION_MEMBER" in affiliations)
                or r["owner_id"] != owner["id"] and r["owner_kind"] != "org" and "COLLABORATOR" in affiliations]
    else:
        rows = store.all(REPO_SELECT + " WHERE r.owner_id = ?", owner["id"])
    rows = [r for r in rows if ctx.req.can("read_code", Resource.repo(r))]
    if args.get("privacy") or args.get("visibility"):
        wanted = (args.get("privacy") or args.get("visibility")) == "PRIVATE"
        rows = [r for r in rows if bool(r["private"]) == wanted]
    if args.get("isArchived") is not None:
        rows = [r for r in rows if bool(r["archived"]) == args["isArchived"]]
    if args.get("isFork"):
        rows = []                                          # there are no forks here
    order = args.get("orderBy") or {"field": "NAME", "direction": "ASC"}
    key = {"CREATED_AT": "created_at", "UPDATED_AT": "updated_at", "PUSHED_AT": "pushed_at"}.get(order["field"])
    rows.sort(key=lambda r: (r[key] or "") if key else r["name"].lower(), reverse=order["direction"] == "DESC")
    out = connection(rows, args, lambda r: gql_repository(ctx, r))
    out["totalDiskUsage"] = 0
    return out


def mutate_create_repository(ctx, parent, args):
    data = args["input"]
    owner = node_row(ctx, data["ownerId"], "User") if data.get("ownerId") else signed_in(ctx.req)
    if not valid_repo_name(data["name"]):
        raise GraphQLError("name may use letters, digits, '.', '-' and '_' (up to 100), and may not end in .git",
                           kind="UNPROCESSABLE")
    ctx.req.authorize("create_repo", Resource.account(owner))
    fields = {"name": data["name"], "private": int(data["visibility"] != "PUBLIC"),
              "description": data.get("description"), "homepage": data.get("homepageUrl")}
    try:
        row = new_repository(ctx.req, owner, fields, auto_init=False)
    except HTTPError as error:
        raise unprocessable(error)
    return {"clientMutationId": data.get("clientMutationId"), "repository": gql_repository(ctx, row)}


def resolve_viewer(ctx, parent, args):
    return gql_user(ctx.app, signed_in(ctx.req))


def resolve_user(ctx, parent, args):
    row = account_by_login(ctx.app.store, args["login"])
    if row is None or row["kind"] == "org":
        raise GraphQLError("Could not resolve to a User with the login of '%s'." % args["login"], kind="NOT_FOUND")
    ctx.req.check("read_account", Resource.account(row))
    return gql_user(ctx.app, row)


def resolve_search(ctx, parent, args):
    """Query.search for issues and pull requests (type ISSUE), over the same matching as REST search."""
    if args["type"] != "ISSUE":
        raise GraphQLError("Only ISSUE searches are served", kind="UNPROCESSABLE")
    try:
        found = matching_issues(ctx.req, args["query"])
    except HTTPError as error:
        raise unprocessable(error)
    out = connection(found, args, lambda f: gql_pull(ctx, f[0], f[1]) if f[1]["is_pull"] else gql_issue(ctx, f[0], f[1]))
    out.update(issueCount=len(found), repositoryCount=0, userCount=0, codeCount=0, discussionCount=0, wikiCount=0)
    return out


def resolve_owner(kinds):
    """Query.repositoryOwner and Query.organization: an account by login."""
    def resolve(ctx, parent, args):
        row = account_by_login(ctx.app.store, args["login"])
        if row is None or row["kind"] not in kinds:
            raise GraphQLError("Could not resolve to a %s with the login of '%s'." % (
                "RepositoryOwner" if len(kinds) > 1 else "Organization", args["login"]), kind="NOT_FOUND")
        ctx.req.check("read_account", Resource.account(row))
        return gql_user(ctx.app, row)
    return resolve


def resolve_repository(ctx, parent, args):
    owner = args["owner"] if "owner" in args else parent["login"]
    try:
        row = find_repo(ctx.req, owner, args["name"])
    except HTTPError as error:
        if error.status != 404:
            raise
        raise GraphQLError("Could not resolve to a Repository with the name '%s/%s'." % (owner, args["name"]),
                           kind="NOT_FOUND")
    return gql_repository(ctx, row)


def resolve_node(ctx, parent, args):
    try:
        kind, _, ident = base64.b64decode(args["id"]).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        kind, ident = "", ""
    if kind == "User" and ident.isdigit():
        row = account_by_id(ctx.app.store, int(ident))
        if row is not None:
            ctx.req.check("read_account", Resource.account(row))
            return gql_user(ctx.app, row)
    if kind == "Repository" and ident.isdigit():
        row = repo_by_id(ctx.app.store, int(ident))
        if row is not None and ctx.req.can("read_code", Resource.repo(row)):
            return gql_repository(ctx, row)
    if kind in ("Issue", "PullRequest") and ident.isdigit():
        issue = ctx.app.store.one("SELECT * FROM issues WHERE id = ? AND is_pull = ?", int(ident), int(kind != "Issue"))
        row = repo_by_id(ctx.app.store, issue["repo_id"]) if issue else None
        if row is not None and ctx.req.can("read_code", Resource.repo(row)):
            return gql_pull(ctx, row, issue) if issue["is_pull"] else gql_issue(ctx, row, issue)
    raise GraphQLError("Could not resolve to a node with the global id of '%s'" % args["id"], kind="NOT_FOUND")


OWNER_FIELDS = {
    "id": GField("ID!"), "login": GField("String!"), "url": GField("URI!"), "resourcePath": GField("URI!"),
    "avatarUrl": GField("URI!", args={"size": "Int"}),
    "repository": GField("Repository", resolve_repository, {"name": "String!", "followRenames": "Boolean"}),
    "repositories": GField("RepositoryConnection!", resolve_owner_repositories, dict(
        CONNECTION_ARGS, affiliations="[RepositoryAffiliation]", ownerAffiliations="[RepositoryAffiliation]",
        privacy="RepositoryPrivacy", visibility="RepositoryVisibility", isArchived="Boolean", isFork="Boolean",
        isLocked="Boolean", hasIssuesEnabled="Boolean", orderBy="RepositoryOrder")),
}
GRAPHQL_TYPES = {
    "Query": {"kind": "OBJECT", "fields": {
        "viewer": GField("User!", resolve_viewer),
        "user": GField("User", resolve_user, {"login": "String!"}),
        "repository": GField("Repository", resolve_repository,
                             {"owner": "String!", "name": "String!", "followRenames": "Boolean"}),
        "node": GField("Node", resolve_node, {"id": "ID!"}),
        "repositoryOwner": GField("RepositoryOwner", resolve_owner(("human", "agent", "org")), {"login": "String!"}),
        "search": GField("SearchResultItemConnection!", resolve_search, dict(CONNECTION_ARGS, query="String!",
                                                                             type="SearchType!")),
        "organization": GField("Organization", resolve_owner(("org",)), {"login": "String!"}),
    }},
    "User": {"kind": "OBJECT", "interfaces": ["Node", "Actor", "RepositoryOwner"], "fields": dict(OWNER_FIELDS, **{
        "databaseId": GField("Int"), "name": GField("String"), "email": GField("String!"),
        "isSiteAdmin": GField("Boolean!"), "createdAt": GField("DateTime!"), "company": GField("String"),
        "organizations": GField("OrganizationConnection!", resolve_user_organizations,
                                dict(CONNECTION_ARGS, orderBy="OrganizationOrder"))})},
    "OrganizationConnection": connection_type("Organization"), "OrganizationEdge": edge_type("Organization"),
    "Organization": {"kind": "OBJECT", "interfaces": ["Node", "Actor", "RepositoryOwner"], "fields": dict(
        OWNER_FIELDS, **{"databaseId": GField("Int"), "name": GField("String"), "createdAt": GField("DateTime!")})},
    "Repository": {"kind": "OBJECT", "interfaces": ["Node"], "fields": {
        "id": GField("ID!"), "databaseId": GField("Int"), "name": GField("String!"),
        "nameWithOwner": GField("String!"), "owner": GField("RepositoryOwner!"), "description": GField("String"),
        "url": GField("URI!"), "isPrivate": GField("Boolean!"), "visibility": GField("RepositoryVisibility!"),
        "isArchived": GField("Boolean!"), "sshUrl": GField("GitSSHRemote!"), "homepageUrl": GField("URI"),
        "createdAt": GField("DateTime!"), "pushedAt": GField("DateTime"), "defaultBranchRef": GField("Ref"),
        "viewerPermission": GField("RepositoryPermission"), "hasIssuesEnabled": GField("Boolean!"),
        "isFork": GField("Boolean!"), "parent": GField("Repository", resolve_repo_parent),
        "hasWikiEnabled": GField("Boolean!"),
        "hasProjectsEnabled": GField("Boolean!"), "hasDiscussionsEnabled": GField("Boolean!"),
        "isTemplate": GField("Boolean!"), "isMirror": GField("Boolean!"), "isEmpty": GField("Boolean!"),
        "isInOrganization": GField("Boolean!"), "stargazerCount": GField("Int!"), "forkCount": GField("Int!"),
        "mergeCommitAllowed": GField("Boolean!"), "squashMergeAllowed": GField("Boolean!"),
        "rebaseMergeAllowed": GField("Boolean!"),
        "issues": GField("IssueConnection!", resolve_issues, dict(CONNECTION_ARGS, states="[IssueState!]",
                                                                    labels="[String!]", filterBy="IssueFilters",
                                                                    orderBy="IssueOrder")),
        "issue": GField("Issue", resolve_issue, {"number": "Int!"}),
        "issueOrPullRequest": GField("IssueOrPullRequest", resolve_issue_or_pull, {"number": "Int!"}),
        "labels": GField("LabelConnection", resolve_repo_labels, dict(CONNECTION_ARGS, orderBy="LabelOrder",
                                                                        query="String")),
        "releases": GField("ReleaseConnection!", resolve_releases, dict(CONNECTION_ARGS, orderBy="ReleaseOrder")),
        "latestRelease": GField("Release", resolve_latest_release),
        # GitHub counts bytes per language with linguist; nothing here does, so the list is empty
        "languages": GField("LanguageConnection", lambda ctx, parent, args: dict(
            connection([], args, lambda n: n), totalSize=0), dict(CONNECTION_ARGS, orderBy="LanguageOrder")),
        "assignableUsers": GField("UserConnection!", resolve_assignable_users, dict(CONNECTION_ARGS, query="String")),
        "pullRequest": GField("PullRequest", resolve_pull, {"number": "Int!"}),
        "pullRequests": GField("PullRequestConnection!", resolve_pull_requests, dict(
            CONNECTION_ARGS, states="[PullRequestState!]", baseRefName="String", headRefName="String",
            labels="[String!]", orderBy="IssueOrder"))}},
    "Release": {"kind": "OBJECT", "interfaces": ["Node"], "fields": {
        "id": GField("ID!"), "name": GField("String"), "tagName": GField("String!"), "isDraft": GField("Boolean!"),
        "isLatest": GField("Boolean!"), "isPrerelease": GField("Boolean!"), "createdAt": GField("DateTime!"),
        "publishedAt": GField("DateTime"), "url": GField("URI!"), "description": GField("String")}},
    "ReleaseConnection": connection_type("Release"), "ReleaseEdge": edge_type("Release"),
    "LanguageConnection": {"kind": "OBJECT", "fields": dict(connection_type("Language")["fields"],
                                                            totalSize=GField("Int!"))},
    "LanguageEdge": {"kind": "OBJECT", "fields": {"cursor": GField("String!"), "node": GField("Language!"),
                                                  "size": GField("Int!")}},
    "Language": {"kind": "OBJECT", "interfaces": ["Node"], "fields": {
        "id": GField("ID!"), "name": GField("String!"), "color": GField("String")}},
    "Issue": {"kind": "OBJECT", "interfaces": ["Node"], "fields": {
        "id": GField("ID!"), "number": GField("Int!"), "title": GField("String!"), "url": GField("URI!"),
        "state": GField("IssueState!"), "stateReason": GField("IssueStateReason"), "closed": GField("Boolean!"),
        "body": GField("String!"), "createdAt": GField("DateTime!"), "updatedAt": GField("DateTime!"),
        "closedAt": GField("DateTime"), "author": GField("Actor"), "milestone": GField("Milestone"),
        "labels": GField("LabelConnection", resolve_issue_labels, dict(CONNECTION_ARGS, orderBy="LabelOrder")),
        "assignees": GField("UserConnection!", resolve_issue_assignees, dict(CONNECTION_ARGS)),
        "comments": GField("IssueCommentConnection!", resolve_comments, dict(CONNECTION_ARGS,
                                                                            orderBy="IssueCommentOrder")),
        "reactionGroups": GField("[ReactionGroup!]"), "locked": GField("Boolean!"),
        "activeLockReason": GField("LockReason"),
        # Newer than the schema in ../shared, but gh 2.102 asks for them; nothing here has types or sub-issues.
        "issueType": GField("IssueType"), "parent": GField("Issue"),
        "subIssues": GField("IssueConnection!", resolve_sub_issues, dict(CONNECTION_ARGS)),
        "subIssuesSummary": GField("SubIssuesSummary!")}},
    "Milestone": {"kind": "OBJECT", "interfaces": ["Node"], "fields": {
        "id": GField("ID!"), "number": GField("Int!"), "title": GField("String!"), "description": GField("String"),
        "dueOn": GField("DateTime"), "state": GField("MilestoneState!"), "url": GField("URI!")}},
    "UserConnection": connection_type("User"), "UserEdge": edge_type("User"),
    "IssueCommentConnection": connection_type("IssueComment"),
    "ReactionGroup": {"kind": "OBJECT", "fields": {"content": GField("ReactionContent!"),
                                                   "users": GField("ReactingUserConnection!", args=dict(CONNECTION_ARGS))}},
    "ReactingUserConnection": {"kind": "OBJECT", "fields": {"totalCount": GField("Int!")}},
    "IssueType": {"kind": "OBJECT", "interfaces": ["Node"], "fields": {
        "id": GField("ID!"), "name": GField("String!"), "description": GField("String"), "color": GField("String!")}},
    "SubIssuesSummary": {"kind": "OBJECT", "fields": {
        "total": GField("Int!"), "completed": GField("Int!"), "percentCompleted": GField("Int!")}},
    "PullRequest": {"kind": "OBJECT", "interfaces": ["Node"], "fields": {
        "id": GField("ID!"), "number": GField("Int!"), "title": GField("String!"), "url": GField("URI!"),
        "state": GField("PullRequestState!"), "closed": GField("Boolean!"), "body": GField("String!"),
        "createdAt": GField("DateTime!"), "updatedAt": GField("DateTime!"), "headRefName": GField("String!"),
        "baseRefName": GField("String!"), "isDraft": GField("Boolean!"), "isCrossRepository": GField("Boolean!"),
        "merged": GField("Boolean!"), "mergedAt": GField("DateTime"), "author": GField("Actor"),
        "headRepositoryOwner": GField("RepositoryOwner"),
        "headRefOid": GField("GitObjectID!", lambda ctx, parent, args: pull_state(ctx, parent).head_sha),
        "baseRefOid": GField("GitObjectID!", lambda ctx, parent, args: pull_state(ctx, parent).base_sha),
        "mergeable": GField("MergeableState!", resolve_pull_mergeable),
        "reviewDecision": GField("PullRequestReviewDecision", resolve_review_decision),
        "latestReviews": GField("PullRequestReviewConnection", lambda ctx, parent, args: resolve_reviews(
            ctx, parent, args, latest_only=True), dict(CONNECTION_ARGS)),
        "files": GField("PullRequestChangedFileConnection", resolve_pull_files, dict(CONNECTION_ARGS)),
        "baseRef": GField("Ref", lambda ctx, parent, args: gql_ref(ctx, parent["_repo"], parent["baseRefName"])),
        "headRef": GField("Ref", lambda ctx, parent, args: gql_ref(ctx, parent["_repo"], parent["headRefName"])),
        "mergeStateStatus": GField("MergeStateStatus!", resolve_merge_state),
        "commits": GField("PullRequestCommitConnection!", resolve_pull_commits, dict(CONNECTION_ARGS)),
        "autoMergeRequest": GField("AutoMergeRequest"), "maintainerCanModify": GField("Boolean!"),
        "additions": GField("Int!", lambda ctx, parent, args: sum(f[2] for f in pull_state(ctx, parent).files)),
        "deletions": GField("Int!", lambda ctx, parent, args: sum(f[3] for f in pull_state(ctx, parent).files)),
        "headRepository": GField("Repository"), "milestone": GField("Milestone"),
        "reviewRequests": GField("ReviewRequestConnection", resolve_review_requests, dict(CONNECTION_ARGS)),
        "reviews": GField("PullRequestReviewConnection", resolve_reviews, dict(
            CONNECTION_ARGS, author="String", states="[PullRequestReviewState!]")),
        "assignees": GField("UserConnection!", resolve_issue_assignees, dict(CONNECTION_ARGS)),
        "labels": GField("LabelConnection", resolve_issue_labels, dict(CONNECTION_ARGS, orderBy="LabelOrder")),
        "comments": GField("IssueCommentConnection!", resolve_comments, dict(CONNECTION_ARGS,
                                                                            orderBy="IssueCommentOrder")),
        "reactionGroups": GField("[ReactionGroup!]"), "locked": GField("Boolean!"),
        "activeLockReason": GField("LockReason")}},
    "Lockable": {"kind": "INTERFACE", "possibleTypes": ["Issue", "PullRequest"], "fields": {
        "locked": GField("Boolean!"), "activeLockReason": GField("LockReason")}},
    "UpdatePullRequestBranchPayload": payload(pullRequest="PullRequest"),
    "LockLockablePayload": payload(lockedRecord="Lockable", actor="Actor"),
    "UnlockLockablePayload": payload(unlockedRecord="Lockable", actor="Actor"),
    "PullRequestChangedFileConnection": connection_type("PullRequestChangedFile"),
    "PullRequestChangedFileEdge": edge_type("PullRequestChangedFile"),
    "PullRequestChangedFile": {"kind": "OBJECT", "fields": {
        "path": GField("String!"), "additions": GField("Int!"), "deletions": GField("Int!"),
        "changeType": GField("PatchStatus!")}},
    "AutoMergeRequest": {"kind": "OBJECT", "fields": {
        "authorEmail": GField("String"), "commitBody": GField("String"), "commitHeadline": GField("String"),
        "enabledAt": GField("DateTime"), "enabledBy": GField("Actor"), "mergeMethod": GField("PullRequestMergeMethod!")}},
    "ReviewRequestConnection": {"kind": "OBJECT", "fields": {
        "nodes": GField("[ReviewRequest]"), "totalCount": GField("Int!")}},
    "ReviewRequest": {"kind": "OBJECT", "fields": {"requestedReviewer": GField("RequestedReviewer")}},
    "RequestedReviewer": {"kind": "UNION", "possibleTypes": ["User"], "fields": {}},
    "PullRequestReviewConnection": {"kind": "OBJECT", "fields": {
        "nodes": GField("[PullRequestReview]"), "pageInfo": GField("PageInfo!"), "totalCount": GField("Int!")}},
    "StatusCheckRollup": {"kind": "OBJECT", "fields": {
        "contexts": GField("StatusCheckRollupContextConnection!",
                           lambda ctx, parent, args: connection(parent["_nodes"], args, lambda n: n),
                           dict(CONNECTION_ARGS))}},
    "StatusCheckRollupContextConnection": {"kind": "OBJECT", "fields": {
        "nodes": GField("[StatusCheckRollupContext]"), "pageInfo": GField("PageInfo!"), "totalCount": GField("Int!")}},
    "StatusCheckRollupContext": {"kind": "UNION", "possibleTypes": ["CheckRun", "StatusContext"], "fields": {}},
    "StatusContext": {"kind": "OBJECT", "fields": {
        "context": GField("String!"), "state": GField("StatusState!"), "targetUrl": GField("URI"),
        "createdAt": GField("DateTime!"), "description": GField("String"),
        "isRequired": GField("Boolean!", resolve_check_required, REQUIRED_CHECK_ARGS)}},
    "CheckRun": {"kind": "OBJECT", "fields": {
        "name": GField("String!"), "status": GField("CheckStatusState!"), "conclusion": GField("CheckConclusionState"),
        "startedAt": GField("DateTime"), "completedAt": GField("DateTime"), "detailsUrl": GField("URI"),
        "checkSuite": GField("CheckSuite!"), "isRequired": GField("Boolean!", resolve_check_required,
                                                                  REQUIRED_CHECK_ARGS)}},
    "CheckSuite": {"kind": "OBJECT", "fields": {"workflowRun": GField("WorkflowRun")}},
    "PullRequestCommitConnection": connection_type("PullRequestCommit"),
    "PullRequestCommitEdge": edge_type("PullRequestCommit"),
    "PullRequestCommit": {"kind": "OBJECT", "interfaces": ["Node"], "fields": {
        "id": GField("ID!"), "commit": GField("Commit!")}},
    "Commit": {"kind": "OBJECT", "interfaces": ["Node"], "fields": {
        "id": GField("ID!"), "oid": GField("GitObjectID!"), "message": GField("String!"),
        "messageHeadline": GField("String!"), "committedDate": GField("DateTime!"),
        "messageBody": GField("String!"), "authoredDate": GField("DateTime!"),
        "authors": GField("GitActorConnection!", lambda ctx, parent, args: connection(
            parent.get("_authors", []), args, lambda n: n), dict(CONNECTION_ARGS)),
        "statusCheckRollup": GField("StatusCheckRollup", resolve_status_rollup)}},
    "GitActorConnection": connection_type("GitActor"), "GitActorEdge": edge_type("GitActor"),
    "GitActor": {"kind": "OBJECT", "fields": {
        "name": GField("String"), "email": GField("String"), "date": GField("GitTimestamp"), "user": GField("User")}},
    "ClosePullRequestPayload": payload(pullRequest="PullRequest"),
    "ReopenPullRequestPayload": payload(pullRequest="PullRequest"),
    "MarkPullRequestReadyForReviewPayload": payload(pullRequest="PullRequest"),
    "AddPullRequestReviewPayload": payload(pullRequestReview="PullRequestReview"),
    "PullRequestReview": {"kind": "OBJECT", "interfaces": ["Node"], "fields": {
        "id": GField("ID!"), "state": GField("PullRequestReviewState!"), "body": GField("String!"),
        "url": GField("URI!"), "author": GField("Actor"), "authorAssociation": GField("CommentAuthorAssociation!"),
        "submittedAt": GField("DateTime"), "commit": GField("Commit"), "reactionGroups": GField("[ReactionGroup!]")}},
    "MergePullRequestPayload": payload(pullRequest="PullRequest", actor="Actor"),
    "PullRequestConnection": connection_type("PullRequest"), "PullRequestEdge": edge_type("PullRequest"),
    "SearchResultItemConnection": {"kind": "OBJECT", "fields": dict({
        "nodes": GField("[SearchResultItem]"), "edges": GField("[SearchResultItemEdge]"),
        "pageInfo": GField("PageInfo!")}, **{name: GField("Int!") for name in (
            "issueCount", "repositoryCount", "userCount", "codeCount", "discussionCount", "wikiCount")})},
    "SearchResultItemEdge": edge_type("SearchResultItem"),
    "SearchResultItem": {"kind": "UNION", "possibleTypes": ["Issue", "PullRequest"], "fields": {}},
    "IssueOrPullRequest": {"kind": "UNION", "possibleTypes": ["Issue", "PullRequest"], "fields": {}},
    "IssueComment": {"kind": "OBJECT", "interfaces": ["Node"], "fields": {
        "id": GField("ID!"), "url": GField("URI!"), "body": GField("String!"), "createdAt": GField("DateTime!"),
        "author": GField("Actor"), "authorAssociation": GField("CommentAuthorAssociation!"),
        "includesCreatedEdit": GField("Boolean!"), "isMinimized": GField("Boolean!"),
        "minimizedReason": GField("String"), "reactionGroups": GField("[ReactionGroup!]"),
        "viewerDidAuthor": GField("Boolean!")}},
    "IssueCommentEdge": edge_type("IssueComment"),
    "Mutation": {"kind": "OBJECT", "fields": {
        "createIssue": GField("CreateIssuePayload", mutate_create_issue, {"input": "CreateIssueInput!"}),
        "archiveRepository": GField("ArchiveRepositoryPayload", mutate_archived(True),
                                    {"input": "ArchiveRepositoryInput!"}),
        "unarchiveRepository": GField("UnarchiveRepositoryPayload", mutate_archived(False),
                                      {"input": "UnarchiveRepositoryInput!"}),
        "createRepository": GField("CreateRepositoryPayload", mutate_create_repository,
                                   {"input": "CreateRepositoryInput!"}),
        "closeIssue": GField("CloseIssuePayload", mutate_issue_state("closed"), {"input": "CloseIssueInput!"}),
        "reopenIssue": GField("ReopenIssuePayload", mutate_issue_state("open"), {"input": "ReopenIssueInput!"}),
        "addComment": GField("AddCommentPayload", mutate_add_comment, {"input": "AddCommentInput!"}),
        "updateIssue": GField("UpdateIssuePayload", mutate_update("Issue"), {"input": "UpdateIssueInput!"}),
        "updatePullRequest": GField("UpdatePullRequestPayload", mutate_update("PullRequest"),
                                    {"input": "UpdatePullRequestInput!"}),
        "convertPullRequestToDraft": GField("ConvertPullRequestToDraftPayload", mutate_draft(True),
                                            {"input": "ConvertPullRequestToDraftInput!"}),
        "requestReviews": GField("RequestReviewsPayload", mutate_request_reviews, {"input": "RequestReviewsInput!"}),
        "lockLockable": GField("LockLockablePayload", mutate_lock(True), {"input": "LockLockableInput!"}),
        "updatePullRequestBranch": GField("UpdatePullRequestBranchPayload", mutate_update_branch,
                                          {"input": "UpdatePullRequestBranchInput!"}),
        "unlockLockable": GField("UnlockLockablePayload", mutate_lock(False), {"input": "UnlockLockableInput!"}),
        "createPullRequest": GField("CreatePullRequestPayload", mutate_create_pull, {"input": "CreatePullRequestInput!"}),
        "mergePullRequest": GField("MergePullRequestPayload", mutate_merge_pull, {"input": "MergePullRequestInput!"}),
        "closePullRequest": GField("ClosePullRequestPayload", mutate_issue_state("closed", "pullRequestId",
                                                                                 "pullRequest"),
                                   {"input": "ClosePullRequestInput!"}),
        "reopenPullRequest": GField("ReopenPullRequestPayload", mutate_issue_state("open", "pullRequestId",
                                                                                   "pullRequest"),
                                    {"input": "ReopenPullRequestInput!"}),
        "markPullRequestReadyForReview": GField("MarkPullRequestReadyForReviewPayload", mutate_draft(False),
                                                {"input": "MarkPullRequestReadyForReviewInput!"}),
        "addPullRequestReview": GField("AddPullRequestReviewPayload", mutate_add_review,
                                       {"input": "AddPullRequestReviewInput!"}),
        "addLabelsToLabelable": GField("AddLabelsToLabelablePayload", mutate_labels(True),
                                       {"input": "AddLabelsToLabelableInput!"}),
        "removeLabelsFromLabelable": GField("RemoveLabelsFromLabelablePayload", mutate_labels(False),
                                            {"input": "RemoveLabelsFromLabelableInput!"})}},
    "CreatePullRequestPayload": payload(pullRequest="PullRequest"),
    "UpdateIssuePayload": payload(issue="Issue", actor="Actor"),
    "UpdatePullRequestPayload": payload(pullRequest="PullRequest", actor="Actor"),
    "ConvertPullRequestToDraftPayload": payload(pullRequest="PullRequest"),
    "RequestReviewsPayload": payload(pullRequest="PullRequest", actor="Actor"),
    "AddLabelsToLabelablePayload": payload(labelable="Labelable"),
    "RemoveLabelsFromLabelablePayload": payload(labelable="Labelable"),
    "Labelable": {"kind": "INTERFACE", "possibleTypes": ["Issue", "PullRequest"], "fields": {}},
    "CreateIssuePayload": payload(issue="Issue"),
    "CloseIssuePayload": payload(issue="Issue"),
    "ReopenIssuePayload": payload(issue="Issue"),
    "AddCommentPayload": payload(commentEdge="IssueCommentEdge", subject="Node"),
    "Label": {"kind": "OBJECT", "interfaces": ["Node"], "fields": {
        "id": GField("ID!"), "name": GField("String!"), "description": GField("String"), "color": GField("String!")}},
    "IssueConnection": connection_type("Issue"), "IssueEdge": edge_type("Issue"),
    "RepositoryConnection": dict(connection_type("Repository"), fields=dict(
        connection_type("Repository")["fields"], totalDiskUsage=GField("Int!"))),
    "RepositoryEdge": edge_type("Repository"),
    "ArchiveRepositoryPayload": payload(repository="Repository"),
    "UnarchiveRepositoryPayload": payload(repository="Repository"),
    "CreateRepositoryPayload": payload(repository="Repository"),
    "LabelConnection": connection_type("Label"), "LabelEdge": edge_type("Label"),
    "PageInfo": {"kind": "OBJECT", "fields": {
        "hasNextPage": GField("Boolean!"), "hasPreviousPage": GField("Boolean!"), "startCursor": GField("String"),
        "endCursor": GField("String")}},
    "Ref": {"kind": "OBJECT", "interfaces": ["Node"], "fields": {
        "id": GField("ID!"), "name": GField("String!"), "prefix": GField("String!"),
        "branchProtectionRule": GField("BranchProtectionRule"),
        "compare": GField("Comparison", resolve_compare, {"headRef": "String!"})}},
    "Comparison": {"kind": "OBJECT", "interfaces": ["Node"], "fields": {
        "id": GField("ID!"), "aheadBy": GField("Int!"), "behindBy": GField("Int!"),
        "status": GField("ComparisonStatus!")}},
    "BranchProtectionRule": {"kind": "OBJECT", "interfaces": ["Node"], "fields": {
        "id": GField("ID!"), "pattern": GField("String!"), "allowsDeletions": GField("Boolean!"),
        "allowsForcePushes": GField("Boolean!"), "dismissesStaleReviews": GField("Boolean!"),
        "isAdminEnforced": GField("Boolean!"), "requiredApprovingReviewCount": GField("Int"),
        "requiresApprovingReviews": GField("Boolean!"), "requiresStatusChecks": GField("Boolean!"),
        "requiresStrictStatusChecks": GField("Boolean!"), "requiredStatusCheckContexts": GField("[String]")}},
    "Node": {"kind": "INTERFACE", "possibleTypes": ["User", "Organization", "Repository", "Ref", "Issue", "Label",
                                                    "PullRequest", "IssueComment"],
             "fields": {"id": GField("ID!")}},
    "Actor": {"kind": "INTERFACE", "possibleTypes": ["User", "Organization"], "fields": {
        "login": GField("String!"), "url": GField("URI!"), "resourcePath": GField("URI!"),
        "avatarUrl": GField("URI!", args={"size": "Int"})}},
    "RepositoryOwner": {"kind": "INTERFACE", "possibleTypes": ["User", "Organization"], "fields": OWNER_FIELDS},
}


# -- execution ---------------------------------------------------------------------------------

class NullBubble(Exception):
    """A non-null field came out null: its parent becomes null (GraphQL's null propagation)."""


class GraphQLContext:
    def __init__(self, req, fragments, variables):
        self.req, self.app, self.fragments, self.variables, self.errors = req, req.app, fragments, variables, []


def unwrap(type_str):
    return type_str.strip("[]!")


def coerce_value(ctx, node, type_str, where):
    """An AST value to a Python value of ``type_str``. Variables (already coerced to their declared
    types) stand anywhere, also inside lists and input objects."""
    if node[0] == "var":
        return ctx.variables.get(node[1])
    return coerce_input(literal_value(node, ctx.variables), type_str, where)


def literal_value(node, variables=None):
    kind, payload = node
    if kind == "var":
        return (variables or {}).get(payload)
    if kind == "list":
        return [literal_value(v, variables) for v in payload]
    if kind == "object":
        return {k: literal_value(v, variables) for k, v in payload.items()}
    return payload


def coerce_input(value, type_str, where):
    """JSON or literal input to ``type_str``: non-null checked, a single value taken as a list of one,
    scalars and enums checked for kind."""
    if type_str.endswith("!"):
        if value is None:
            raise GraphQLError("%s: expected a non-null %s" % (where, type_str[:-1]), kind="INVALID_ARGUMENT")
        return coerce_input(value, type_str[:-1], where)
    if value is None:
        return None
    if type_str.startswith("["):
        inner = type_str[1:-1]
        return [coerce_input(v, inner, where) for v in (value if isinstance(value, list) else [value])]
    if type_str in GRAPHQL_INPUTS:
        fields = GRAPHQL_INPUTS[type_str]
        if not isinstance(value, dict) or set(value) - set(fields):
            raise GraphQLError("%s: expected a %s with fields %s" % (where, type_str, ", ".join(fields)),
                               kind="INVALID_ARGUMENT")
        return {k: coerce_input(value.get(k), t, "%s.%s" % (where, k)) for k, t in fields.items()}
    ok = {"Int": lambda v: isinstance(v, int) and not isinstance(v, bool) and -2 ** 31 <= v < 2 ** 31,
          "Float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
          "Boolean": lambda v: isinstance(v, bool)}.get(type_str, lambda v: isinstance(v, str))
    if not ok(value) or (type_str in GRAPHQL_ENUMS and value not in GRAPHQL_ENUMS[type_str]):
        raise GraphQLError("%s: %r is not a valid %s" % (where, value, type_str), kind="INVALID_ARGUMENT")
    return value


def applies(type_condition, typename):
    if type_condition is None or type_condition == typename:
        return True
    spec = GRAPHQL_TYPES.get(type_condition, {})
    return typename in spec.get("possibleTypes", ())


def included(ctx, directives):
    for name, args in directives:
        if name in ("skip", "include"):
            flag = coerce_value(ctx, args.get("if", ("bool", False)), "Boolean!", "@%s(if:)" % name)
            if (name == "skip") == bool(flag):
                return False
    return True


def collect_fields(ctx, typename, selections, out, visited):
    """{response key: [field nodes]} in document order, through fragments that apply to ``typename``."""
    for sel in selections:
        if not included(ctx, sel["directives"]):
            continue
        if sel["kind"] == "field":
            out.setdefault(sel["alias"], []).append(sel)
        elif sel["kind"] == "inline":
            if applies(sel["on"], typename):
                collect_fields(ctx, typename, sel["selections"], out, visited)
        else:
            fragment = ctx.fragments.get(sel["name"])
            if fragment is None:
                raise GraphQLError("Unknown fragment %r" % sel["name"], sel["loc"], kind="PARSE")
            if sel["name"] in visited:
                raise GraphQLError("Fragment %r spreads itself" % sel["name"], sel["loc"], kind="PARSE")
            if applies(fragment["on"], typename):
                collect_fields(ctx, typename, fragment["selections"], out, visited | {sel["name"]})
    return out


def execute_fields(ctx, typename, obj, selections, path):
    result = {}
    for key, nodes in collect_fields(ctx, typename, selections, {}, frozenset()).items():
        node = nodes[0]
        if node["name"] == "__typename":
            result[key] = typename
            continue
        field = GRAPHQL_TYPES[typename]["fields"].get(node["name"]) if node["name"] != "__type" else GField(
            "__Type", resolve_type_introspection, {"name": "String!"})
        if field is None:
            raise GraphQLError("Field '%s' doesn't exist on type '%s'" % (node["name"], typename), node["loc"],
                               path + [key], "undefinedField")
        try:
            unknown = set(node["args"]) - set(field.args)
            if unknown:
                raise GraphQLError("Field '%s' doesn't accept argument '%s'" % (node["name"], sorted(unknown)[0]),
                                   node["loc"], kind="argumentNotAccepted")
            args = {}
            for name, arg_type in field.args.items():
                if name in node["args"]:
                    args[name] = coerce_value(ctx, node["args"][name], arg_type, "argument %s" % name)
                elif arg_type.endswith("!"):
                    raise GraphQLError("Field '%s' is missing required argument '%s'" % (node["name"], name),
                                       node["loc"], kind="missingRequiredArguments")
            value = field.resolve(ctx, obj, args) if field.resolve else obj.get(node["name"])
            result[key] = complete(ctx, field.type, value, [s for n in nodes for s in (n["selections"] or [])],
                                   path + [key], node)
        except HTTPError as error:
            ctx.errors.append(GraphQLError(error.message, node["loc"], path + [key],
                                           {401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND"}.get(
                                               error.status, "UNPROCESSABLE" if error.status < 500 else "INTERNAL")))
            if ctx.req.pending:     # a mutation that failed after it was allowed: record how it ended
                ctx.req.settle("refused: %d %s" % (error.status, error.message), failed=True)
            result[key] = None
        except GraphQLError as error:
            error.location, error.path = error.location or node["loc"], error.path or path + [key]
            ctx.errors.append(error)
            result[key] = None
        except NullBubble:
            result[key] = None
        if result[key] is None and field is not None and field.type.endswith("!"):
            raise NullBubble()
    return result


def complete(ctx, type_str, value, selections, path, node):
    if type_str.endswith("!"):
        out = complete(ctx, type_str[:-1], value, selections, path, node)
        if out is None:
            if not ctx.errors or ctx.errors[-1].path != path:
                ctx.errors.append(GraphQLError("Cannot return null for non-nullable field", node["loc"], path))
            raise NullBubble()
        return out
    if value is None:
        return None
    if type_str.startswith("["):
        try:
            return [complete(ctx, type_str[1:-1], item, selections, path + [i], node) for i, item in enumerate(value)]
        except NullBubble:
            return None
    spec = GRAPHQL_TYPES.get(type_str) or INTROSPECTION_TYPES.get(type_str)
    if spec is None:            # a scalar or an enum
        if selections:
            raise GraphQLError("Selections can't be made on scalars (field '%s' returns %s)" % (
                node["name"], type_str), node["loc"], path, "selectionMismatch")
        return value
    if not selections:
        raise GraphQLError("Field must have selections (field '%s' returns %s)" % (node["name"], type_str),
                           node["loc"], path, "selectionMismatch")
    typename = value.get("__typename", type_str)
    return execute_fields(ctx, typename, value, selections, path)


def estimated_nodes(ctx, selections, visited=frozenset()):
    """How many nodes a selection set may return at most: each field counts once, times the page
    size its first/last asks for, times what is selected inside it (fragments included)."""
    total = 0
    for sel in selections:
        if sel["kind"] == "spread":
            fragment = ctx.fragments.get(sel["name"])
            if fragment is not None and sel["name"] not in visited:
                total += estimated_nodes(ctx, fragment["selections"], visited | {sel["name"]})
            continue
        if sel["kind"] == "inline":
            total += estimated_nodes(ctx, sel["selections"], visited)
            continue
        page = 1
        for key in ("first", "last"):
            if key in sel["args"]:
                value = coerce_value(ctx, sel["args"][key], "Int", key)
                page = max(page, value if isinstance(value, int) else 1)
        total += page * (1 + (estimated_nodes(ctx, sel["selections"], visited) if sel["selections"] else 0))
    return total


def execute_graphql(req, query, variables, operation_name):
    """{"data": ..., "errors": [...]} as GitHub answers: parse and validation errors come with no data."""
    if not isinstance(query, str):
        return {"errors": [{"message": "A query string is required", "type": "PARSE"}]}
    try:
        operations, fragments = GraphQLParser(query).document()
        if operation_name:
            operations = [op for op in operations if op["name"] == operation_name]
            if not operations:
                raise GraphQLError("Unknown operation named %r" % operation_name)
        elif len(operations) > 1:
            raise GraphQLError("An operationName is required when the document holds several operations")
        operation = operations[0]
        if operation["type"] not in ("query", "mutation"):
            raise GraphQLError("Subscriptions are not served", operation["loc"])
        ctx = GraphQLContext(req, fragments, {})
        given = variables if isinstance(variables, dict) else {}
        for name, type_str, default, loc in operation["variables"]:       # undeclared variables are ignored
            if name in given:
                ctx.variables[name] = coerce_input(given[name], type_str, "Variable $%s" % name)
            elif default is not None:
                ctx.variables[name] = coerce_input(literal_value(default), type_str, "Variable $%s" % name)
            elif type_str.endswith("!"):
                raise GraphQLError("Variable $%s of type %s was provided invalid value" % (name, type_str), loc)
        nodes = estimated_nodes(ctx, operation["selections"])
        if nodes > GRAPHQL_MAX_NODES:
            raise GraphQLError("This query requests up to %d nodes, more than the %d allowed; ask for smaller pages"
                               % (nodes, GRAPHQL_MAX_NODES), operation["loc"], kind="MAX_NODE_LIMIT_EXCEEDED")
    except GraphQLError as error:
        return {"errors": [error.json()]}
    try:
        # Mutation fields run one after another in document order, as the spec asks; so do queries here.
        data = execute_fields(ctx, "Mutation" if operation["type"] == "mutation" else "Query", {},
                              operation["selections"], [])
    except NullBubble:
        data = None
    except GraphQLError as error:
        ctx.errors.append(error)
        data = None
    out = {"data": data}
    if ctx.errors:
        out["errors"] = [e.json() for e in ctx.errors]
    return out


# -- introspection: enough for clients that detect features with __type(name:) ----------------------

def resolve_type_introspection(ctx, parent, args):
    spec = GRAPHQL_TYPES.get(args["name"])
    if spec is None:
        return None
    fields = [{"__typename": "__Field", "name": name, "isDeprecated": False, "deprecationReason": None,
               "args": [{"__typename": "__InputValue", "name": a} for a in f.args]}
              for name, f in sorted(spec["fields"].items())]
    return {"__typename": "__Type", "name": args["name"], "kind": spec["kind"], "fields": fields,
            "possibleTypes": [{"__typename": "__Type", "name": t, "kind": "OBJECT", "fields": []}
                              for t in spec.get("possibleTypes", [])]}


INTROSPECTION_TYPES = {
    "__Type": {"kind": "OBJECT", "fields": {
        "name": GField("String"), "kind": GField("__TypeKind!"),
        "fields": GField("[__Field!]", lambda ctx, parent, args: parent["fields"], {"includeDeprecated": "Boolean"}),
        "possibleTypes": GField("[__Type!]")}},
    "__Field": {"kind": "OBJECT", "fields": {
        "name": GField("String!"), "isDeprecated": GField("Boolean!"), "deprecationReason": GField("String"),
        "args": GField("[__InputValue!]!")}},
    "__InputValue": {"kind": "OBJECT", "fields": {"name": GField("String!")}},
}
GRAPHQL_TYPES.update(INTROSPECTION_TYPES)


@route("POST", "/api/graphql")
def graphql_endpoint(req):
    req.surface = "graphql"
    body = req.json()
    signed_in(req)
    req.check("read_meta", SITE)
    return execute_graphql(req, body.get("query"), body.get("variables"), body.get("operationName"))

# ════════════════════════════════════════════════════════════════════════════════════════════════
# 11. Web pages and OAuth
# ════════════════════════════════════════════════════════════════════════════════════════════════
# Server-rendered HTML for humans, no JavaScript. A session cookie (HttpOnly, SameSite=Lax, Secure
# under TLS) authenticates these pages only, never the API, so a cookie can never carry a cross-site
# API call. Every form carries a CSRF token; sign-in attempts are rate-limited per address and login.

SESSION_COOKIE, LOGIN_CSRF_COOKIE = "agentgit_session", "agentgit_login_csrf"
SESSION_HOURS = 12
PAGE_HEADERS = {"Content-Type": "text/html; charset=utf-8", "X-Frame-Options": "DENY", "Cache-Control": "no-store",
                "Content-Security-Policy": "default-src 'none'; form-action 'self'; frame-ancestors 'none'",
                "Referrer-Policy": "no-referrer"}


def page(method, pattern):
    """A web page route: authenticated by session cookie, not by Authorization headers."""
    def register(handler):
        handler.web_page = True
        return route(method, pattern)(handler)
    return register


def cookies(req):
    jar = {}
    for part in (req.headers.get("Cookie") or "").split(";"):
        name, _, value = part.strip().partition("=")
        if name:
            jar[name] = value
    return jar


def session_principal(app, req):
    """The signed-in human behind the session cookie (or anonymous), and the session row."""
    raw = cookies(req).get(SESSION_COOKIE, "")
    row = app.store.one("SELECT * FROM web_sessions WHERE hash = ?", token_hash(raw)) if raw else None
    if row is None or row["expires_at"] <= now():
        return Principal(runtime=req.client), None
    user = account_by_id(app.store, row["user_id"])
    # signing in asked for the TOTP code when the account has one
    return Principal(user=user, scopes=expand_scopes(ALL_SCOPES), stepped_up_at=row["totp_at"],
                     runtime="%s web session" % req.client), row


def cookie_header(req, name, value, max_age):
    secure = "; Secure" if isinstance(req.handler.connection, ssl.SSLSocket) else ""
    return "%s=%s; Path=/; HttpOnly; SameSite=Lax; Max-Age=%d%s" % (name, value, max_age, secure)


def html_page(title, body, status=200, headers=None):
    doc = ("<!doctype html><html><head><meta charset=\"utf-8\"><title>%s · agentgit</title></head><body>"
           "<h1>%s</h1>%s</body></html>" % (html.escape(title), html.escape(title), body))
    return status, doc.encode(), dict(PAGE_HEADERS, **(headers or {}))


def redirect(location, headers=None):
    return 303, b"", dict(PAGE_HEADERS, Location=location, **(headers or {}))


def form_fields(req):
    if "application/x-www-form-urlencoded" not in (req.headers.get("Content-Type") or ""):
        raise HTTPError(415, "Forms must be application/x-www-form-urlencoded")
    raw = req.body(64 * 1024).read_all().decode("utf-8", "replace")
    return {k: v[-1] for k, v in urllib.parse.parse_qs(raw, keep_blank_values=True).items()}


def check_csrf(expected, form):
    if not expected or not hmac.compare_digest(expected, form.get("csrf", "")):
        raise HTTPError(403, "The form has expired or did not come from this site; reload the page and try again")


def session_form(req):
    """A signed-in page's form, its CSRF token checked. A TOTP code sent with it (by the step-up form
    below, which repeats the form) is confirmed first, so the action is decided with a fresh factor."""
    req.form = form = form_fields(req)
    check_csrf(req.session["csrf"], form)
    if form.get("totp"):
        user = req.principal.user
        req.authorize("issue_token", Resource.account(user))
        try:
            confirm_totp(req, user, form["totp"])
        except HTTPError as error:
            error.page = "<p>%s.</p>%s" % (html.escape(error.message), step_up_form(req))
            raise
        with req.transaction() as db:
            db.execute("UPDATE web_sessions SET totp_at = ? WHERE hash = ?", (now(), req.session["hash"]))
            req.effect("stepped up the web session")
        req.principal.stepped_up_at = now()
    return form


def step_up_form(req):
    """Asks for a TOTP code, then sends the refused form again with it."""
    repeated = "".join(hidden(k, v) for k, v in req.form.items() if k not in ("csrf", "totp"))
    return ('<p>This needs your authentication code: for what destroys or changes who may act, agentgit asks '
            'for a code confirmed in the last %d minutes.</p><form method="post" action="%s">%s%s<p><label>'
            'Authentication code <input name="totp" inputmode="numeric" autocomplete="one-time-code" required>'
            '</label></p><p><button>Confirm</button></p></form>') % (
        STEP_UP_SECONDS // 60, html.escape(req.raw_path), hidden("csrf", req.session["csrf"]), repeated)


def safe_next(target):
    """Only local paths, so the sign-in form cannot be turned into an open redirect."""
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else \
        "/settings/agents"


def hidden(name, value):
    return '<input type="hidden" name="%s" value="%s">' % (html.escape(name), html.escape(value))


@page("GET", "/login")
def login_page(req, message=""):
    csrf = secrets.token_urlsafe(24)
    body = ('%s<form method="post" action="/login">%s%s<p><label>Login <input name="login" autocomplete="username">'
            '</label></p><p><label>Password <input type="password" name="password" autocomplete="current-password">'
            '</label></p><p><label>Code from your authenticator (if you set one up) <input name="totp" '
            'autocomplete="one-time-code"></label></p><p><button>Sign in</button></p></form>') % (
        "<p><strong>%s</strong></p>" % html.escape(message) if message else "", hidden("csrf", csrf),
        hidden("next", safe_next(req.query.get("next", "/settings/agents"))))
    return html_page("Sign in", body, 401 if message else 200,
                     {"Set-Cookie": cookie_header(req, LOGIN_CSRF_COOKIE, csrf, 600)})


@page("POST", "/login")
def login_submit(req):
    form = form_fields(req)
    check_csrf(cookies(req).get(LOGIN_CSRF_COOKIE), form)
    login = form.get("login", "")[:64]
    address = req.client
    retry = req.app.sign_ins.hit("addr:" + address) or req.app.sign_ins.hit("login:" + login.lower())
    if retry:
        raise HTTPError(429, "Too many sign-in attempts; try again in %d seconds" % retry,
                        headers={"Retry-After": str(retry)})
    user = account_by_login(req.app.store, login)
    # Check a password even for unknown logins, so timing does not tell which logins exist.
    ok = check_password(user["password_hash"] if user is not None and user["password_hash"] else DUMMY_PASSWORD_HASH,
                        form.get("password", ""))
    second = user is not None and user["totp_secret"]
    if second and ok:
        ok = check_totp(req.app.key, user, form.get("totp"))
    if not ok or user is None or user["kind"] != "human" or user["suspended_at"]:
        req.app.audit(Principal(runtime=address), "web", Decision("deny", "sign_in", "user:" + login,
                                                                  ["wrong login, password or code"]))
        return login_page(req, "Wrong login, password or code.")
    token = secrets.token_urlsafe(32)
    with req.app.store.transaction() as db:
        insert_row(db, "web_sessions", {"hash": token_hash(token), "user_id": user["id"],
                                        "csrf": secrets.token_urlsafe(24), "created_at": now(),
                                        "totp_at": now() if second else None,
                                        "expires_at": later(SESSION_HOURS * 3600)})
        audit_append(db, req.app.key, Principal(user=user, runtime=address), "web",
                     Decision("allow", "sign_in", "user:" + user["login"], ["password and TOTP" if second else
                                                                            "password"]), "signed in")
    return redirect(safe_next(form.get("next", "/settings/agents")),
                    {"Set-Cookie": cookie_header(req, SESSION_COOKIE, token, SESSION_HOURS * 3600)})


@page("POST", "/logout")
def logout(req):
    form = form_fields(req)
    if req.session is not None:
        check_csrf(req.session["csrf"], form)
        with req.app.store.transaction() as db:
            db.execute("DELETE FROM web_sessions WHERE hash = ?", (req.session["hash"],))
    return redirect("/login", {"Set-Cookie": cookie_header(req, SESSION_COOKIE, "", 0)})


def signed_in_page(req):
    if req.principal.user is None:
        raise HTTPError(303, "Sign in first", headers=dict(PAGE_HEADERS, Location="/login?next=" +
                                                           urllib.parse.quote(req.raw_path)))
    return req.principal.user


AGENT_FORM_ACTIONS = ("reset-token", "switch-session", "suspend", "resume", "unbind")


@page("GET", "/settings/agents")
def agents_page(req, shown=""):
    user = signed_in_page(req)
    csrf = hidden("csrf", req.session["csrf"])
    rows = []
    for binding in req.app.store.all("SELECT * FROM agent_bindings WHERE human_id = ? ORDER BY bound_at", user["id"]):
        agent = account_by_id(req.app.store, binding["agent_id"])
        buttons = "".join('<form method="post" action="/settings/agents">%s%s%s<button>%s</button></form>' % (
            csrf, hidden("agent", agent["login"]), hidden("action", action), action)
            for action in AGENT_FORM_ACTIONS if action != ("resume" if not agent["suspended_at"] else "suspend"))
        rows.append("<tr><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td></tr>" % (
            html.escape(agent["login"]), html.escape(binding["display_name"] or ""), html.escape(binding["bound_at"]),
            "retired" if agent["retired_at"] else "suspended" if agent["suspended_at"] else
            token_status(req.app.store, agent["id"]), buttons))
    body = ('%s<p>Signed in as %s.</p><form method="post" action="/logout">%s<button>Sign out</button></form>'
            '<h2>Your agents</h2><table><tr><th>Agent</th><th>Name</th><th>Bound</th><th>Status</th><th></th></tr>%s'
            '</table><h2>Invite an agent</h2><form method="post" action="/settings/agents">%s%s'
            '<p><label>Repository grants, one per line (owner/name:permission)<br><textarea name="repo_grants">'
            '</textarea></label></p><p><button>Create invite</button></p></form>') % (
        shown, html.escape(user["login"]), csrf, "".join(rows) or '<tr><td colspan="5">none yet</td></tr>', csrf,
        hidden("action", "invite"))
    return html_page("Agents", body)


@page("POST", "/settings/agents")
def agents_action(req):
    """Each button goes through the same decide() and the same code as its endpoint; a token made
    here (invite, reset, switch session) is shown once on the page that answers."""
    user = signed_in_page(req)
    form = session_form(req)
    action = form.get("action")
    if action == "invite":
        grants = {"repo_grants": [], "team_grants": []}
        for line in form.get("repo_grants", "").splitlines():
            if line.strip():
                name, _, permission = line.strip().partition(":")
                grants["repo_grants"].append({"repo_full_name": name.strip(), "permission": permission.strip() or "push"})
        if any(g["permission"] not in REPO_GRANT_PERMISSIONS for g in grants["repo_grants"]):
            raise HTTPError(422, "Permissions are pull, triage, push, maintain or admin")
        req.authorize("create_invite", SITE)
        refused = check_grant_authority(req.app.store, user, grants)
        if refused:
            raise HTTPError(403, refused)
        with req.transaction() as db:
            token, expires_at, effect = make_invite(db, req.app.key, user, grants, INVITE_DEFAULT_SECONDS)
            req.effect(effect)
        shown = "<p>Invite token (shown once, valid until %s): <code>%s</code></p>" % (expires_at, token)
        return agents_page(req, shown)
    if action not in AGENT_FORM_ACTIONS:
        raise HTTPError(422, "Unknown action")
    agent, _ = bound_agent(req, form.get("agent", ""))
    shown = ""
    with req.transaction() as db:
        if action == "reset-token":
            token, _, effect = reset_agent_credentials(db, req.app.key, agent)
            shown = "<p>New token for %s (shown once): <code>%s</code></p>" % (html.escape(agent["login"]), token)
        elif action == "switch-session":
            expires_at = later(SWITCH_SESSION_HOURS * 3600)
            token, _ = issue_token(db, req.app.key, agent["id"], "switch-session", name="switch by " + user["login"],
                                   scopes=AGENT_SCOPES, expires_at=expires_at, issued_by=user["id"])
            effect = "switch session %s into %s until %s" % (token_fingerprint(token), agent["login"], expires_at)
            shown = "<p>Switch-session token for %s until %s (shown once): <code>%s</code></p>" % (
                html.escape(agent["login"]), expires_at, token)
        elif action in ("suspend", "resume"):
            effect = suspend_account(db, agent, action == "suspend")
        else:
            effect = unbind_agent(db, agent)
        req.effect(effect)
    return agents_page(req, shown or "<p>%s</p>" % html.escape(effect))

@page("GET", "/approvals")
def approvals_page(req, shown=""):
    """What the delegator's agents wait for: each pending approval names the agent, the task, the
    action and the resource, and one button approves exactly that, once."""
    user = signed_in_page(req)
    csrf = hidden("csrf", req.session["csrf"])
    rows = []
    for a in req.app.store.all("SELECT a.*, g.task, g.public_id AS grant_public, ag.login AS agent_login"
                               " FROM approvals a JOIN task_grants g ON g.id = a.grant_id"
                               " JOIN accounts ag ON ag.id = g.agent_id WHERE g.delegator_id = ? AND"
                               " a.approved_at IS NULL AND a.expires_at > ? AND g.revoked_at IS NULL ORDER BY a.id",
                               user["id"], now()):
        rows.append("<tr>%s<td><form method=\"post\" action=\"/approvals\">%s%s<button>approve</button></form>"
                    "</td></tr>" % ("".join("<td>%s</td>" % html.escape(a[k]) for k in (
                        "agent_login", "task", "action", "resource", "subject", "grant_public", "expires_at")),
                                    csrf, hidden("approval_id", a["public_id"])))
    body = ('%s<table><tr><th>Agent</th><th>Task</th><th>Action</th><th>Resource</th><th>What</th><th>Grant</th>'
            '<th>Expires</th><th></th></tr>%s</table>') % (shown, "".join(rows) or
                                                           '<tr><td colspan="8">nothing waits</td></tr>')
    return html_page("Approvals", body)


@page("POST", "/approvals")
def approvals_action(req):
    user = signed_in_page(req)
    form = session_form(req)
    row = give_approval(req, user, form.get("approval_id", ""))
    return approvals_page(req, "<p>Approved %s on %s for %s.</p>" % (
        html.escape(row["action"]), html.escape(row["resource"]), html.escape(row["grant_public"])))


@page("GET", "/settings/tokens")
def tokens_page(req, shown=""):
    user = signed_in_page(req)
    csrf = hidden("csrf", req.session["csrf"])
    rows = []
    for t in req.app.store.all("SELECT * FROM tokens WHERE user_id = ? ORDER BY id", user["id"]):
        action = "" if t["revoked_at"] else '<form method="post" action="/settings/tokens">%s%s%s<button>revoke' \
            '</button></form>' % (csrf, hidden("action", "revoke"), hidden("token_id", str(t["id"])))
        rows.append("<tr>%s<td>%s</td></tr>" % ("".join("<td>%s</td>" % html.escape(str(t[k] or "")) for k in (
            "name", "kind", "scopes", "fingerprint", "created_at", "expires_at", "last_used_at", "revoked_at")), action))
    boxes = "".join('<label><input type="checkbox" name="scope_%s" value="1"> %s</label> ' % (s, s)
                    for s in ALL_SCOPES if s != "site_admin")
    body = ('%s<table><tr><th>Name</th><th>Kind</th><th>Scopes</th><th>Fingerprint</th><th>Created</th>'
            '<th>Expires</th><th>Last used</th><th>Revoked</th><th></th></tr>%s</table><h2>New token</h2>'
            '<form method="post" action="/settings/tokens">%s%s<p><label>Name <input name="name"></label></p><p>%s</p>'
            '<p><label>Expires in days (empty: never) <input name="days"></label></p><p><button>Create</button></p>'
            '</form>') % (shown, "".join(rows), csrf, hidden("action", "create"), boxes)
    return html_page("Personal tokens", body)


@page("POST", "/settings/tokens")
def tokens_action(req):
    user = signed_in_page(req)
    form = session_form(req)
    if form.get("action") == "revoke":
        row = req.app.store.one("SELECT * FROM tokens WHERE id = ? AND user_id = ?",
                                int(form["token_id"]) if form.get("token_id", "").isdigit() else -1, user["id"])
        if row is None:
            raise HTTPError(404, "No such token")
        revoke_own_token(req, user, row)
        return tokens_page(req, "<p>Revoked %s.</p>" % html.escape(row["fingerprint"]))
    name = form.get("name", "").strip()
    days = form.get("days", "").strip()
    if not name or len(name) > 100 or days and not (days.isdigit() and 1 <= int(days) <= 3650):
        raise HTTPError(422, "A token needs a name, and days from 1 to 3650 or nothing")
    scopes = [s for s in ALL_SCOPES if form.get("scope_" + s) and s != "site_admin"]
    token, _ = mint_personal_token(req, user, name, scopes, later(int(days) * 86400) if days else None)
    return tokens_page(req, "<p>Your new token (shown once): <code>%s</code></p>" % token)


@page("GET", "/login/device")
def device_page(req):
    signed_in_page(req)
    code = html.escape(req.query.get("user_code", ""))
    body = ('<p>Enter the code your device shows.</p><form method="post" action="/login/device">%s'
            '<p><input name="user_code" value="%s" autocomplete="off"></p><p><button>Continue</button></p></form>') % (
        hidden("csrf", req.session["csrf"]), code)
    return html_page("Device activation", body)


@page("POST", "/login/device")
def device_page_submit(req):
    """First the code (shows what is asked), then approve or deny."""
    user = signed_in_page(req)
    form = session_form(req)
    row = pending_device_code(req, form.get("user_code"))
    if form.get("decision") in ("approve", "deny"):
        decide_device_code(req, row, form["decision"] == "approve")
        return html_page("Device activation", "<p>%s. You can close this page.</p>" % (
            "Approved: the device is signed in as %s" % html.escape(user["login"]) if form["decision"] == "approve"
            else "Denied"))
    scopes = [s for s in row["scopes"].split(",") if s]
    buttons = "".join('<form method="post" action="/login/device">%s%s%s<button>%s</button></form>' % (
        hidden("csrf", req.session["csrf"]), hidden("user_code", row["user_code"]), hidden("decision", d), d.title())
        for d in ("approve", "deny"))
    body = "<p><strong>%s</strong> asks to act as <strong>%s</strong> with the scopes: %s.</p>%s" % (
        html.escape(row["client_id"]), html.escape(user["login"]),
        html.escape(", ".join(scopes) or "none (public read-only)"), buttons)
    return html_page("Authorize device", body)

# -- OAuth device flow (RFC 8628) -----------------------------------------------------------------
# What `gh auth login` speaks: the client asks for a device code, shows the human a short user code,
# and polls while the human approves it on /login/device (or headlessly over the API). Errors while
# polling are answered with HTTP 200 and an "error" field, as GitHub does and gh expects.

USER_CODE_LETTERS = "BCDFGHJKLMNPQRSTVWXZ"        # no vowels: no words, no look-alike digits
DEVICE_CODE_SECONDS, DEVICE_POLL_INTERVAL = 900, 5


def oauth_params(req):
    """Form or JSON parameters of an OAuth endpoint."""
    if "application/json" in (req.headers.get("Content-Type") or ""):
        body = req.json()
        return {k: v for k, v in body.items() if isinstance(v, str)}
    raw = req.body(64 * 1024).read_all().decode("utf-8", "replace")
    params = {k: v[-1] for k, v in urllib.parse.parse_qs(raw).items()}
    params.update({k: v for k, v in req.query.items() if k not in params})
    return params


def oauth_answer(req, body, status=200):
    """JSON when the client accepts it, else form encoding (GitHub's default)."""
    if "application/json" in (req.headers.get("Accept") or ""):
        return status, body
    return status, urllib.parse.urlencode(body).encode(), {"Content-Type": "application/x-www-form-urlencoded"}


def requested_scopes(text):
    return [s for s in re.split(r"[\s,]+", text or "") if s in ALL_SCOPES and s != "site_admin"]


@route("POST", "/login/device/code")
def device_code(req):
    req.surface = "oauth"
    params = oauth_params(req)
    client_id = params.get("client_id", "")
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,100}", client_id):
        return oauth_answer(req, {"error": "invalid_client", "error_description": "client_id is required"}, 400)
    code = secrets.token_hex(20)
    for _ in range(10):
        user_code = "".join(secrets.choice(USER_CODE_LETTERS) for _ in range(8))
        if not req.app.store.one("SELECT 1 FROM device_codes WHERE user_code = ?", user_code):
            break
    with req.app.store.transaction() as db:
        insert_row(db, "device_codes", {"hash": token_hash(code), "user_code": user_code, "client_id": client_id,
                                        "scopes": ",".join(requested_scopes(params.get("scope"))),
                                        "created_at": now(), "expires_at": later(DEVICE_CODE_SECONDS),
                                        "interval": DEVICE_POLL_INTERVAL})
    shown = "%s-%s" % (user_code[:4], user_code[4:])
    return oauth_answer(req, {"device_code": code, "user_code": shown, "verification_uri": req.app.url + "/login/device",
                              "verification_uri_complete": req.app.url + "/login/device?user_code=" + shown,
                              "expires_in": DEVICE_CODE_SECONDS, "interval": DEVICE_POLL_INTERVAL})


@route("POST", "/login/oauth/access_token")
def access_token(req):
    """The token endpoint, for the device flow, authorization codes with PKCE, and refresh tokens."""
    req.surface = "oauth"
    params = oauth_params(req)
    grant = {"urn:ietf:params:oauth:grant-type:device_code": device_grant, "authorization_code": code_grant,
             "refresh_token": refresh_grant, TOKEN_EXCHANGE: exchange_grant}.get(params.get("grant_type"))
    if grant is None:
        return oauth_answer(req, {"error": "unsupported_grant_type",
                                  "error_description": "grant_type must be device_code, authorization_code, "
                                                       "refresh_token or token-exchange"}, 400)
    return grant(req, params)


TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"


def exchange_grant(req, params):
    """RFC 8693: the agent trades its own token (subject_token) for a task token on one repository
    (resource: its URL or repo:owner/name), for the actions in scope, under the grant for that
    repository -- the one named by task when the agent holds several."""
    if params.get("subject_token_type", ACCESS_TOKEN_TYPE) != ACCESS_TOKEN_TYPE:
        return oauth_answer(req, {"error": "invalid_request", "error_description": "subject_token_type must be "
                                  + ACCESS_TOKEN_TYPE}, 400)
    try:
        req.principal = authenticate(req.app, {"Authorization": "token " + params.get("subject_token", "")},
                                     req.client)
    except HTTPError:
        req.principal = Principal(runtime=req.client)
    if req.principal.token_kind != "agent":
        return oauth_answer(req, {"error": "invalid_grant",
                                  "error_description": "subject_token must be a live agent's own token"}, 400)
    target = params.get("resource", "")
    if "://" in target and urllib.parse.urlsplit(target).netloc.lower() != urllib.parse.urlsplit(
            req.app.url).netloc.lower():     # RFC 8707: a resource on another server is not ours to grant
        return oauth_answer(req, {"error": "invalid_target", "error_description": "%s is not on %s" % (
            target, req.app.url)}, 400)
    path = urllib.parse.urlsplit(target).path if "://" in target else strip_kind(target, "repo")
    name = "repo:" + "/".join(path.strip("/").removesuffix(".git").split("/")[-2:])
    rows = [r for r in req.app.store.all("SELECT * FROM task_grants WHERE agent_id = ? AND revoked_at IS NULL AND"
                                         " expires_at > ? ORDER BY id", req.principal.user["id"], now())
            if name in json.loads(r["resources"]) and params.get("task") in (None, r["task"])]
    if len(rows) != 1:
        return oauth_answer(req, {"error": "invalid_target" if not rows else "invalid_request", "error_description":
                                  "no live task grant of yours covers %s" % name if not rows else
                                  "several task grants cover %s: name one with task" % name}, 400)
    find_grant(req, rows[0]["public_id"], "mint_task_token")
    minted = issue_task_token(req, rows[0], re.split(r"[\s,]+", params["scope"].strip()) if params.get("scope")
                              else None)
    expires_in = int((parse_time(minted["expires_at"]) - datetime.datetime.now(datetime.timezone.utc)).total_seconds())
    return oauth_answer(req, {"access_token": minted["token"], "issued_token_type": ACCESS_TOKEN_TYPE,
                              "token_type": "bearer", "expires_in": expires_in, "scope": minted["scope"],
                              "decision": minted["decision"], "grant": minted["grant"], "task": minted["task"]})


def device_grant(req, params):
    """Device codes are single use; polling faster than the interval is slow_down."""
    store = req.app.store
    row = store.one("SELECT * FROM device_codes WHERE hash = ?", token_hash(params.get("device_code", "")))
    if row is None or row["client_id"] != params.get("client_id"):
        return oauth_answer(req, {"error": "incorrect_device_code", "error_description": "unknown device code"})
    moment = time.time()
    with store.transaction() as db:
        fresh = db.execute("SELECT * FROM device_codes WHERE id = ?", (row["id"],)).fetchone()
        db.execute("UPDATE device_codes SET last_poll = ? WHERE id = ?", (moment, row["id"]))
        if fresh["consumed_at"] or fresh["expires_at"] <= now():
            return oauth_answer(req, {"error": "expired_token", "error_description": "the device code has expired"})
        if fresh["denied"]:
            return oauth_answer(req, {"error": "access_denied", "error_description": "the request was denied"})
        if fresh["last_poll"] and moment - fresh["last_poll"] < fresh["interval"]:
            db.execute("UPDATE device_codes SET interval = interval + 5 WHERE id = ?", (row["id"],))
            return oauth_answer(req, {"error": "slow_down", "interval": fresh["interval"] + 5,
                                      "error_description": "polling faster than the interval"})
        if not fresh["approved_by"]:
            return oauth_answer(req, {"error": "authorization_pending",
                                      "error_description": "the human has not approved the request yet"})
        scopes = [s for s in fresh["scopes"].split(",") if s]
        token, _ = issue_token(db, req.app.key, fresh["approved_by"], "oauth", name="device flow: " + fresh["client_id"],
                               scopes=scopes)
        db.execute("UPDATE device_codes SET consumed_at = ? WHERE id = ?", (now(), row["id"]))
        human = account_by_id(store, fresh["approved_by"])
        audit_append(db, req.app.key, Principal(user=human, runtime=req.client), "oauth",
                     Decision("allow", "issue_token", "user:" + human["login"], ["device code approved by %s" %
                                                                                  human["login"]]),
                     "oauth token %s for %s, scopes %s" % (token_fingerprint(token), fresh["client_id"],
                                                           ",".join(scopes) or "(none)"))
    return oauth_answer(req, {"access_token": token, "token_type": "bearer", "scope": ",".join(scopes)})


def pending_device_code(req, user_code):
    """The device request a human typed the code of; wrong codes count against the sign-in limiter."""
    code = re.sub(r"[^A-Z]", "", (user_code or "").upper())
    row = req.app.store.one("SELECT * FROM device_codes WHERE user_code = ?", code) if len(code) == 8 else None
    if row is None or row["expires_at"] <= now() or row["consumed_at"] or row["approved_by"] or row["denied"]:
        # counted per address and, on the page, per session too (a session may hop addresses)
        retry = req.app.sign_ins.hit("device:" + req.client)
        if req.session is not None:
            retry = req.app.sign_ins.hit("device-session:" + req.session["hash"]) or retry
        if retry:
            raise HTTPError(429, "Too many wrong codes; try again in %d seconds" % retry,
                            headers={"Retry-After": str(retry)})
        raise HTTPError(404, "That code is unknown, used or expired")
    return row


def decide_device_code(req, row, approve):
    req.authorize("approve_device", SITE)
    with req.transaction() as db:
        if approve:
            db.execute("UPDATE device_codes SET approved_by = ? WHERE id = ? AND approved_by IS NULL AND denied = 0",
                       (req.principal.user["id"], row["id"]))
        else:
            db.execute("UPDATE device_codes SET denied = 1 WHERE id = ?", (row["id"],))
        req.effect("%s device request of %s for scopes %s" % ("approved" if approve else "denied", row["client_id"],
                                                               row["scopes"] or "(none)"))


@route("POST", "/api/ext/v1/oauth/device/approve")
def approve_device_api(req):
    body = req.json()
    signed_in(req)
    row = pending_device_code(req, req.field(body, "user_code", str, "DeviceCode", required=True))
    decide_device_code(req, row, approve=body.get("approve", True) is not False)
    return 200, {"user_code": row["user_code"], "client_id": row["client_id"],
                 "scopes": [s for s in row["scopes"].split(",") if s], "approved": body.get("approve", True) is not False}

# -- authorization code with PKCE (RFC 6749, RFC 7636, RFC 9207) ------------------------------------

AUTH_CODE_SECONDS, OAUTH_ACCESS_HOURS = 60, 8


def redirect_matches(registered, given):
    """Exact match, except that a loopback redirect may use any port (RFC 8252 §7.3)."""
    if registered == given:
        return True
    a, b = urllib.parse.urlsplit(registered), urllib.parse.urlsplit(given)
    return (a.scheme == b.scheme == "http" and a.hostname in ("127.0.0.1", "localhost", "::1") and
            a.hostname == b.hostname and a.path == b.path and a.query == b.query and not b.fragment)


def pkce_s256(verifier):
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


@route("POST", "/api/ext/v1/oauth/apps")
def register_oauth_app(req):
    body = req.json()
    name = text_field(req, body, "name", "OAuthApp", required=True, limit=100)
    uris = req.field(body, "redirect_uris", list, "OAuthApp", required=True)
    for uri in uris:
        parts = urllib.parse.urlsplit(uri) if isinstance(uri, str) else None
        if parts is None or parts.fragment or parts.scheme not in ("https", "http") or not parts.netloc or (
                parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "localhost", "::1")):
            raise invalid("OAuthApp", "redirect_uris", message="redirect URIs are https, or http on loopback, "
                                                                "with no fragment")
    confidential = req.field(body, "confidential", bool, "OAuthApp", default=False)
    user = signed_in(req)
    req.authorize("register_app", Resource.account(user))
    client_id = "agc_" + secrets.token_hex(10)
    secret = "agcs_" + secrets.token_hex(24) if confidential else None
    with req.transaction() as db:
        insert_row(db, "oauth_apps", {"client_id": client_id, "secret_hash": token_hash(secret) if secret else None,
                                      "name": name, "redirect_uris": json.dumps(uris), "owner_id": user["id"],
                                      "created_at": now()})
        req.effect("registered OAuth app %s (%s)" % (client_id, name))
    out = {"client_id": client_id, "name": name, "redirect_uris": uris}
    if secret:
        out["client_secret"] = secret
    return 201, out


def authorize_request(req, params):
    """The app and the checked parameters of an authorization request. Until the client and its
    redirect URI are known good, errors are shown here and never redirected (RFC 6749 §4.1.2.1)."""
    app_row = req.app.store.one("SELECT * FROM oauth_apps WHERE client_id = ?", params.get("client_id", ""))
    if app_row is None:
        raise HTTPError(400, "Unknown client_id")
    redirect_uri = params.get("redirect_uri", "")
    if not any(redirect_matches(r, redirect_uri) for r in json.loads(app_row["redirect_uris"])):
        raise HTTPError(400, "redirect_uri does not match a URI registered for this app")
    problem = None
    if params.get("response_type") != "code":
        problem = ("unsupported_response_type", "response_type must be code")
    elif params.get("code_challenge_method") != "S256" or not re.fullmatch(r"[A-Za-z0-9_-]{43}",
                                                                             params.get("code_challenge", "")):
        problem = ("invalid_request", "PKCE with code_challenge_method S256 is required")
    return app_row, redirect_uri, problem


def redirect_back(req, redirect_uri, fields, state):
    """To the client, with ``state`` echoed and ``iss`` naming this server (RFC 9207)."""
    fields = dict(fields, iss=req.app.url)
    if state is not None:
        fields["state"] = state
    separator = "&" if urllib.parse.urlsplit(redirect_uri).query else "?"
    return 302, b"", dict(PAGE_HEADERS, Location=redirect_uri + separator + urllib.parse.urlencode(fields))


@page("GET", "/login/oauth/authorize")
def authorize_page(req):
    app_row, redirect_uri, problem = authorize_request(req, req.query)
    if problem:
        return redirect_back(req, redirect_uri, {"error": problem[0], "error_description": problem[1]},
                             req.query.get("state"))
    user = signed_in_page(req)
    scopes = requested_scopes(req.query.get("scope"))
    fields = "".join(hidden(k, req.query.get(k, "")) for k in ("client_id", "redirect_uri", "scope", "state",
                                                                  "code_challenge", "code_challenge_method",
                                                                  "response_type"))
    buttons = "".join('<form method="post" action="/login/oauth/authorize">%s%s%s<button>%s</button></form>' % (
        hidden("csrf", req.session["csrf"]), fields, hidden("decision", d), d.title()) for d in ("approve", "deny"))
    body = ("<p><strong>%s</strong> asks to act as <strong>%s</strong> with the scopes: %s.</p>"
            "<p>It will return to %s.</p>%s") % (html.escape(app_row["name"]), html.escape(user["login"]),
                                                 html.escape(", ".join(scopes) or "none (public read-only)"),
                                                 html.escape(redirect_uri), buttons)
    return html_page("Authorize application", body)


@page("POST", "/login/oauth/authorize")
def authorize_submit(req):
    user = signed_in_page(req)
    form = session_form(req)
    state = form.get("state") or None
    app_row, redirect_uri, problem = authorize_request(req, form)
    if problem:
        return redirect_back(req, redirect_uri, {"error": problem[0], "error_description": problem[1]}, state)
    if form.get("decision") != "approve":
        return redirect_back(req, redirect_uri, {"error": "access_denied", "error_description": "the human said no"},
                             state)
    req.authorize("approve_device", SITE)
    code = secrets.token_urlsafe(32)
    scopes = requested_scopes(form.get("scope"))
    with req.transaction() as db:
        insert_row(db, "oauth_codes", {"hash": token_hash(code), "app_id": app_row["id"], "user_id": user["id"],
                                       "redirect_uri": redirect_uri, "scopes": ",".join(scopes),
                                       "challenge": form["code_challenge"], "expires_at": later(AUTH_CODE_SECONDS)})
        req.effect("authorized %s for scopes %s" % (app_row["client_id"], ",".join(scopes) or "(none)"))
    return redirect_back(req, redirect_uri, {"code": code}, state)


def oauth_client(req, params):
    """The app a token request comes from; a confidential one must show its secret."""
    app_row = req.app.store.one("SELECT * FROM oauth_apps WHERE client_id = ?", params.get("client_id", ""))
    if app_row is None:
        return None
    if app_row["secret_hash"] and not hmac.compare_digest(app_row["secret_hash"],
                                                          token_hash(params.get("client_secret", ""))):
        return None
    return app_row


def issue_oauth_pair(db, req, app_row, user_id, scopes, family):
    """An access token (hours) and a refresh token in ``family``; returns the token response."""
    token, token_id = issue_token(db, req.app.key, user_id, "oauth", name="oauth app " + app_row["client_id"],
                                  scopes=scopes, expires_at=later(OAUTH_ACCESS_HOURS * 3600))
    refresh = "agr_" + secrets.token_hex(24)
    insert_row(db, "oauth_refresh_tokens", {"hash": token_hash(refresh), "family": family, "app_id": app_row["id"],
                                            "user_id": user_id, "scopes": ",".join(scopes), "access_id": token_id,
                                            "created_at": now()})
    user = account_by_id(req.app.store, user_id)
    audit_append(db, req.app.key, Principal(user=user, runtime=req.client), "oauth",
                 Decision("allow", "issue_token", "user:" + user["login"], ["authorized app %s" % app_row["client_id"]]),
                 "oauth token %s, refresh family %s" % (token_fingerprint(token), family[:12]))
    return {"access_token": token, "token_type": "bearer", "scope": ",".join(scopes),
            "expires_in": OAUTH_ACCESS_HOURS * 3600, "refresh_token": refresh}


def revoke_family(db, family):
    """Every access token a refresh family produced, and the family itself."""
    db.execute("UPDATE tokens SET revoked_at = ? WHERE revoked_at IS NULL AND id IN (SELECT access_id FROM"
               " oauth_refresh_tokens WHERE family = ?)", (now(), family))
    db.execute("UPDATE oauth_refresh_tokens SET used_at = COALESCE(used_at, ?) WHERE family = ?", (now(), family))


def code_grant(req, params):
    app_row = oauth_client(req, params)
    if app_row is None:
        return oauth_answer(req, {"error": "invalid_client", "error_description": "unknown client or wrong secret"}, 401)
    with req.app.store.transaction() as db:
        row = db.execute("SELECT * FROM oauth_codes WHERE hash = ? AND app_id = ?",
                         (token_hash(params.get("code", "")), app_row["id"])).fetchone()
        if row is None or row["expires_at"] <= now():
            return oauth_answer(req, {"error": "invalid_grant", "error_description": "unknown or expired code"}, 400)
        if row["consumed_at"]:
            # a replayed code: whatever it issued is revoked (RFC 6749 §4.1.2)
            if row["family"]:
                revoke_family(db, row["family"])
            return oauth_answer(req, {"error": "invalid_grant", "error_description": "the code was already used; "
                                                                                      "its tokens are revoked"}, 400)
        if row["redirect_uri"] != params.get("redirect_uri"):
            return oauth_answer(req, {"error": "invalid_grant", "error_description": "redirect_uri differs"}, 400)
        if not hmac.compare_digest(row["challenge"], pkce_s256(params.get("code_verifier", ""))):
            return oauth_answer(req, {"error": "invalid_grant", "error_description": "code_verifier is wrong"}, 400)
        family = secrets.token_hex(16)
        db.execute("UPDATE oauth_codes SET consumed_at = ?, family = ? WHERE id = ?", (now(), family, row["id"]))
        answer = issue_oauth_pair(db, req, app_row, row["user_id"], [s for s in row["scopes"].split(",") if s], family)
    return oauth_answer(req, answer)


def refresh_grant(req, params):
    """Rotation with reuse detection: each refresh token works once; presenting a used one again
    revokes its whole family, since one of the two presenters is not the client."""
    app_row = oauth_client(req, params)
    if app_row is None:
        return oauth_answer(req, {"error": "invalid_client", "error_description": "unknown client or wrong secret"}, 401)
    with req.app.store.transaction() as db:
        row = db.execute("SELECT * FROM oauth_refresh_tokens WHERE hash = ? AND app_id = ?",
                         (token_hash(params.get("refresh_token", "")), app_row["id"])).fetchone()
        if row is None:
            return oauth_answer(req, {"error": "invalid_grant", "error_description": "unknown refresh token"}, 400)
        if row["used_at"]:
            revoke_family(db, row["family"])
            return oauth_answer(req, {"error": "invalid_grant", "error_description": "the refresh token was already "
                                                                                      "used; its family is revoked"}, 400)
        db.execute("UPDATE oauth_refresh_tokens SET used_at = ? WHERE id = ?", (now(), row["id"]))
        db.execute("UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (now(), row["access_id"]))
        answer = issue_oauth_pair(db, req, app_row, row["user_id"], [s for s in row["scopes"].split(",") if s],
                                  row["family"])
    return oauth_answer(req, answer)


@route("GET", "/.well-known/oauth-authorization-server")
def authorization_server_metadata(req):
    """RFC 8414."""
    url = req.app.url
    return {"issuer": url, "authorization_endpoint": url + "/login/oauth/authorize",
            "token_endpoint": url + "/login/oauth/access_token",
            "device_authorization_endpoint": url + "/login/device/code",
            "response_types_supported": ["code"], "code_challenge_methods_supported": ["S256"],
            "grant_types_supported": ["authorization_code", "refresh_token",
                                      "urn:ietf:params:oauth:grant-type:device_code", TOKEN_EXCHANGE],
            "token_endpoint_auth_methods_supported": ["none", "client_secret_post"],
            "scopes_supported": [s for s in ALL_SCOPES if s != "site_admin"],
            "authorization_response_iss_parameter_supported": True}


@route("GET", "/.well-known/oauth-protected-resource")
def protected_resource_metadata(req):
    """RFC 9728: where a client finds the authorization server for this API."""
    return {"resource": req.app.url, "authorization_servers": [req.app.url], "bearer_methods_supported": ["header"],
            "scopes_supported": [s for s in ALL_SCOPES if s != "site_admin"]}

# ════════════════════════════════════════════════════════════════════════════════════════════════
# 12. Git Smart HTTP
# ════════════════════════════════════════════════════════════════════════════════════════════════
# The protocol (gitprotocol-http): GET info/refs?service=... advertises refs; POST git-upload-pack
# sends a pack to the client; POST git-receive-pack takes one. Access is decided before any pack is
# read or written. For pushes we read the command list (the pkt-lines before the pack) ourselves,
# decide every ref with decide(), and hand the denials to the engine, which refuses those refs the
# way GitHub does: the others still land, and git prints our reason. Ref updates are compare-and-swap
# in both engines (git's ref transaction; dulwich's set_if_equals).

GIT_SERVICES = ("git-upload-pack", "git-receive-pack")


def pkt_line(text):
    data = text.encode() if isinstance(text, str) else text
    return b"%04x%s" % (len(data) + 4, data)


def service_header(service):
    return pkt_line("# service=%s\n" % service) + b"0000"


class ChunkedWriter:
    """The response body in HTTP/1.1 chunked coding, so a pack streams without a known length."""

    def __init__(self, wfile):
        self.wfile = wfile

    def write(self, data):
        if data:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        return len(data)

    def close(self):
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


class ReplayReader:
    """A reader that first returns bytes already taken from ``inner`` and then the rest of it."""

    def __init__(self, head, inner):
        self.head, self.inner = bytes(head), inner

    def read(self, size=65536):
        if self.head:
            data, self.head = self.head[:size], self.head[size:]
            return data
        return self.inner.read(size)


def read_exactly(reader, n, into):
    data = b""
    while len(data) < n:
        chunk = reader.read(n - len(data))
        if not chunk:
            raise HTTPError(400, "Truncated git request")
        data += chunk
    into += data
    return data


def read_push_commands(reader):
    """The ref updates at the head of a receive-pack request: ([(old, new, ref)], bytes consumed)."""
    consumed, commands = bytearray(), []
    while True:
        size = read_exactly(reader, 4, consumed)
        if size == b"0000":
            return commands, consumed
        try:
            length = int(size, 16)
        except ValueError:
            raise HTTPError(400, "Malformed pkt-line in push")
        if length < 4 or length > 65520:
            raise HTTPError(400, "Malformed pkt-line in push")
        line = read_exactly(reader, length - 4, consumed).split(b"\0")[0].rstrip(b"\n").decode("utf-8", "replace")
        if line.startswith("shallow "):
            continue
        parts = line.split(" ")
        if len(parts) != 3 or not all(re.fullmatch(r"[0-9a-f]{40}", p) for p in parts[:2]):
            raise HTTPError(400, "Malformed ref update in push: %r" % line[:200])
        commands.append(tuple(parts))


class GitBinaryEngine:
    """Pipes each request through ``git upload-pack/receive-pack --stateless-rpc``: the speed of
    a local clone, with protocol v2, every shallow and filter option, and atomic pushes."""

    name = "git"

    def __init__(self, git):
        self.git = git

    def command(self, service, path, hooks_dir=None, advertise=False):
        if service == "git-upload-pack":
            cmd = [self.git, "-c", "uploadpack.allowFilter=true", "-c", "uploadpack.allowAnySHA1InWant=true",
                   "upload-pack"]
        else:
            # fsckObjects keeps malformed objects out; the quarantine directory (git >= 2.11) keeps a
            # pack that dies mid-way out of the repository.
            cmd = [self.git, "-c", "core.hooksPath=%s" % hooks_dir, "-c", "receive.fsckObjects=true", "receive-pack"]
        return cmd + ["--stateless-rpc"] + (["--advertise-refs"] if advertise else []) + [path]

    def run(self, cmd, protocol, body, out):
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE if body is not None else subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                env=dict(os.environ, GIT_PROTOCOL=protocol))
        feeder = None
        if body is not None:   # git may answer before it has read everything: feed it from a thread
            feeder = threading.Thread(target=self.feed, args=(proc, body), daemon=True)
            feeder.start()
        try:
            while True:
                data = proc.stdout.read1(65536)
                if not data:
                    break
                out.write(data)
        except BaseException:
            proc.kill()        # the client went away: stop git too
            raise
        finally:
            proc.stdout.close()
            if feeder is not None:
                feeder.join(REQUEST_IDLE_TIMEOUT)
                if feeder.is_alive():
                    proc.kill()
            proc.wait()

    @staticmethod
    def feed(proc, body):
        """Copy the request body to git's stdin; on a broken or oversized body, stop git instead."""
        try:
            while True:
                data = body.read(65536)
                if not data:
                    break
                proc.stdin.write(data)
            proc.stdin.close()
        except (OSError, ValueError, HTTPError, ConnectionError):
            proc.kill()

    def advertise(self, path, service, protocol, out):
        if not (service == "git-upload-pack" and "version=2" in protocol):
            out.write(service_header(service))   # protocol v2 answers start with the capability list
        self.run(self.command(service, path, hooks_dir=os.devnull, advertise=True), protocol, None, out)

    def upload_pack(self, path, protocol, body, out):
        self.run(self.command("git-upload-pack", path), protocol, body, out)

    def receive_pack(self, path, protocol, body, out, denied, ff_only):
        """``denied`` = {ref: reason} and ``ff_only`` = {ref: reason}: an ``update`` hook written for this
        push refuses the first outright and the second unless the update is a fast-forward (the hook runs
        once the pack is in, with the new objects readable, before the ref moves)."""
        with tempfile.TemporaryDirectory(prefix="agentgit-hooks-") as hooks:
            if denied or ff_only:
                cases = "".join("%s) echo %s >&2; exit 1;;\n" % (shlex.quote(ref), shlex.quote("agentgit: " + reason))
                                for ref, reason in denied.items())
                cases += "".join('%s) git merge-base --is-ancestor "$2" "$3" || { echo %s >&2; exit 1; };;\n' % (
                    shlex.quote(ref), shlex.quote("agentgit: " + reason)) for ref, reason in ff_only.items())
                hook = os.path.join(hooks, "update")
                with open(hook, "w") as f:
                    f.write('#!/bin/sh\ncase "$1" in\n%sesac\nexit 0\n' % cases)
                os.chmod(hook, 0o700)
            self.run(self.command("git-receive-pack", path, hooks_dir=hooks), protocol, body, out)


class DulwichEngine:
    """dulwich's pure-Python server, for machines without git. Slower (see bench/), protocol v0/v1
    only, and no 'atomic' capability: dulwich does not apply a multi-ref push transactionally."""

    name = "dulwich"

    def __init__(self):
        from dulwich.server import ReceivePackHandler, UploadPackHandler
        from dulwich.protocol import CAPABILITY_ATOMIC, Protocol, ReceivableProtocol, SIDE_BAND_CHANNEL_PROGRESS

        class PolicyReceivePack(ReceivePackHandler):
            denied, ff_only = {}, {}

            def capabilities(self):
                return [c for c in super().capabilities() if c != CAPABILITY_ATOMIC]

            def _on_update(self, ref_name, old_sha, new_sha):
                ref = ref_name.decode()
                reason = self.denied.get(ref)
                if reason is None and ref in self.ff_only and not can_fast_forward(self.repo, old_sha, new_sha):
                    reason = self.ff_only[ref]
                if reason is None:
                    return None
                if self.has_capability(b"side-band-64k"):
                    self.proto.write_sideband(SIDE_BAND_CHANNEL_PROGRESS, ("agentgit: %s\n" % reason).encode())
                return b"hook declined"

        class OneRepoBackend:
            def open_repository(self, path):
                return Repo(path)

        self.handlers = {"git-upload-pack": UploadPackHandler, "git-receive-pack": PolicyReceivePack}
        self.protocol, self.receivable = Protocol, ReceivableProtocol
        self.backend = OneRepoBackend()
        # Each dulwich upload-pack can hold hundreds of MB; more than two at once starve the machine.
        self.upload_slots = threading.BoundedSemaphore(2)
        self.push_locks = collections.defaultdict(threading.Lock)

    def handle(self, service, path, proto, advertise=False, denied=None, ff_only=None):
        handler = self.handlers[service](self.backend, [path], proto, stateless_rpc=True, advertise_refs=advertise)
        if denied is not None:
            handler.denied, handler.ff_only = denied, ff_only
        try:
            handler.handle()
        finally:
            handler.repo.close()

    def advertise(self, path, service, protocol, out):
        out.write(service_header(service))
        self.handle(service, path, self.protocol(lambda n: b"", out.write), advertise=True)

    def upload_pack(self, path, protocol, body, out):
        with self.upload_slots:
            self.handle("git-upload-pack", path, self.receivable(body.read, out.write))

    def receive_pack(self, path, protocol, body, out, denied, ff_only):
        # One push per repository at a time in this process: dulwich raises FileLocked, rather than
        # waiting, when two pushes lock the same ref file.
        with self.push_locks[path]:
            self.handle("git-receive-pack", path, self.receivable(body.read, out.write), denied=denied,
                        ff_only=ff_only)


def make_git_engine(choice):
    git = shutil.which("git")
    if choice == "git" and git is None:
        raise SystemExit("--git-engine git: no git binary on PATH")
    if choice in ("auto", "git") and git:
        return GitBinaryEngine(git)
    return DulwichEngine()


def git_repo(req, owner, name, action):
    """The repository behind a Git URL once ``action`` is allowed. Git clients send credentials only
    after a 401, so an anonymous caller gets 401 for anything it may not see (existing or not, so as
    not to reveal which); a signed-in one gets 404, or 403 with the reason."""
    req.surface = "git"
    name = name[:-4] if name.endswith(".git") else name
    row = lookup_repo(req.app.store, owner, name)
    if row is None:
        raise HTTPError(401 if req.principal.user is None else 404, "Repository not found")
    req.check(action, Resource.repo(row))
    return row


def start_git_response(req, content_type):
    handler = req.handler
    handler.send_response(200)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Cache-Control", "no-cache, max-age=0, must-revalidate")
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
    return ChunkedWriter(handler.wfile)


def git_body(req):
    raw = req.body(MAX_PACK_BODY)
    encoding = (req.headers.get("Content-Encoding") or "").lower()
    if encoding in ("gzip", "x-gzip"):
        return GunzipReader(raw, MAX_PACK_BODY)
    if encoding not in ("", "identity"):
        raise HTTPError(415, "Unsupported Content-Encoding %s" % encoding)
    return raw


def expect_content_type(req, service):
    if req.headers.get("Content-Type") != "application/x-%s-request" % service:
        raise HTTPError(415, "Content-Type must be application/x-%s-request" % service)


@route("GET", "/{owner}/{repo}/info/refs")
def git_info_refs(req, owner, repo):
    service = req.query.get("service")
    if service not in GIT_SERVICES:
        raise HTTPError(403, "Only the smart HTTP protocol is served; ask for ?service=git-upload-pack")
    row = git_repo(req, owner, repo, "read_code" if service == "git-upload-pack" else "push_branch")
    out = start_git_response(req, "application/x-%s-advertisement" % service)
    req.app.git_engine.advertise(repo_dir(req.app, row["id"]), service, req.headers.get("Git-Protocol", ""), out)
    out.close()


@route("POST", "/{owner}/{repo}/git-upload-pack")
def git_upload_pack(req, owner, repo):
    row = git_repo(req, owner, repo, "read_code")
    expect_content_type(req, "git-upload-pack")
    body = git_body(req)
    out = start_git_response(req, "application/x-git-upload-pack-result")
    req.app.git_engine.upload_pack(repo_dir(req.app, row["id"]), req.headers.get("Git-Protocol", ""), body, out)
    out.close()


@route("POST", "/{owner}/{repo}/git-receive-pack")
def git_receive_pack(req, owner, repo):
    row = git_repo(req, owner, repo, "push_branch")
    expect_content_type(req, "git-receive-pack")
    body = git_body(req)
    commands, consumed = read_push_commands(body)
    resource = Resource.repo(row)
    allowed, denied, ff_only = [], {}, {}
    for old, new, ref in commands:
        action = "create_branch" if old == ZERO_SHA else "delete_branch" if new == ZERO_SHA else "push_branch"
        decision = decide(req.app.store, req.principal, action, resource, {"ref": ref})
        if decision.effect == "needs_approval":
            decision = ask_for_approval(req.app, req.principal, decision)[0]
        elif decision.allowed and decision.approval is not None and not spend_approval(req.app.store,
                                                                                         decision.approval):
            decision = dataclasses.replace(decision, effect="deny", reasons=["that approval was just used"])
        if decision.allowed:
            allowed.append((decision, old, new, ref))
            if decision.ff_only:
                ff_only[ref] = "protected branch %s: force pushes are not allowed" % ref[len("refs/heads/"):]
        else:
            denied[ref] = decision.reasons[0]
            req.app.audit(req.principal, "git", decision, "refused %s" % ref)
    path = repo_dir(req.app, row["id"])
    out = start_git_response(req, "application/x-git-receive-pack-result")
    try:
        req.app.git_engine.receive_pack(path, req.headers.get("Git-Protocol", ""), ReplayReader(consumed, body),
                                        out, denied, ff_only)
    finally:
        record_push(req, row, allowed, ff_only)
    out.close()     # only now does the client see the end of the answer: its push is already on record


def record_push(req, row, allowed, ff_only):
    """One audit row per allowed ref update, saying whether the ref really moved (git may still have
    refused it: a stale old value when two pushes race, or a force push to a protected branch)."""
    if not allowed:
        return
    with open_repo(req.app, row["id"]) as git:
        current = {ref: git.refs[ref.encode()].decode() if ref.encode() in git.refs else ZERO_SHA
                   for _, _, _, ref in allowed}
    landed = False
    with req.app.store.transaction() as db:
        for decision, old, new, ref in allowed:
            moved = current[ref] == new
            landed = landed or moved
            effect = "%s %s→%s" % (ref, old[:12], new[:12]) if moved else "%s not moved (now %s)" % (
                ref, current[ref][:12])
            if not moved and decision.approval is not None:
                effect += give_back_approval(db, decision.approval)
            if not moved and ref in ff_only and current[ref] == old:
                # most likely the fast-forward check refused it; say so in the record
                decision = dataclasses.replace(decision, effect="deny", reasons=[ff_only[ref] + " (if not a fast-forward)"])
            audit_append(db, req.app.key, req.principal, "git", decision, effect)
        if landed:
            db.execute("UPDATE repos SET pushed_at = ? WHERE id = ?", (now(), row["id"]))


# ════════════════════════════════════════════════════════════════════════════════════════════════
# 13. Server and embedding
# ════════════════════════════════════════════════════════════════════════════════════════════════

OPERATOR_REASON = "local operator with access to the data directory"


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


class RateLimiter:
    """At most ``limit`` hits per key in any ``window`` seconds."""

    def __init__(self, limit, window):
        self.limit, self.window = limit, window
        self.hits = collections.defaultdict(collections.deque)
        self.lock = threading.Lock()

    def hit(self, key):
        """0 when this hit is allowed (and counted), else the seconds until the next one would be."""
        moment = time.monotonic()
        with self.lock:
            hits = self.hits[key]
            while hits and hits[0] <= moment - self.window:
                hits.popleft()
            if len(hits) >= self.limit:
                return int(hits[0] + self.window - moment) + 1
            hits.append(moment)
            return 0


class App:
    """Everything a request needs: configuration, database, server key, git engine."""

    def __init__(self, config, authenticator=None):
        self.config = config
        os.makedirs(config.data_dir, mode=0o700, exist_ok=True)
        self.repos_dir = os.path.join(config.data_dir, "repos")
        os.makedirs(self.repos_dir, exist_ok=True)
        self.key = load_server_key(os.path.join(config.data_dir, "server.key"))
        self.store = Store(os.path.join(config.data_dir, "agentgit.db"))
        self.git_engine = make_git_engine(config.git_engine)
        self.authenticator = authenticator
        self.registrations = RateLimiter(config.registration_limit, config.registration_window)
        self.sign_ins = RateLimiter(10, 300)
        self.token_seen = {}
        self.set_url(config.url)

    def set_url(self, url):
        self.url = url.rstrip("/")
        self.api = self.url + "/api/v3"

    def audit(self, principal, surface, decision, side_effect=None):
        with self.store.transaction() as db:
            return audit_append(db, self.key, principal, surface, decision, side_effect)

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
        _, token = create_human(self, login, admin=True)
        self.audit(Principal(runtime="first start", operator=True), "cli",
                   Decision("allow", "create_user", "user:" + login, [OPERATOR_REASON]),
                   "created site admin %s, token %s" % (login, token_fingerprint(token)))
        return login, token

    # -- the request pipeline -------------------------------------------------------------------
    def dispatch(self, handler):
        """authenticate → route → (the endpoint authorizes and acts) → audit → respond. Audit rows are
        written before the answer leaves, so a client that reads the log next finds them."""
        req = Request(self, handler)
        req.principal = Principal(runtime=req.client)
        result, error, outcome = None, None, "none"
        try:
            endpoint, params = self.match(req)
            if getattr(endpoint, "web_page", False):
                req.surface = "web"
                req.principal, req.session = session_principal(self, req)
            else:
                if not req.raw_path.startswith("/api/"):
                    req.surface = "git"
                peer = handler.connection.getpeercert() if isinstance(handler.connection, ssl.SSLSocket) else None
                req.principal = authenticate(self, handler.headers, req.client, peer)
            result = endpoint(req, **params)    # git endpoints stream their own answer and return None
            if result is not None and not isinstance(result, tuple):
                result = (200, result)
            outcome = "HTTP %d" % result[0] if result else "streamed"
        except HTTPError as e:
            error, outcome = e, "refused: HTTP %d %s" % (e.status, e.message)
            if e.status == 401 and req.surface == "git":
                e.headers["WWW-Authenticate"] = 'Basic realm="agentgit"'
        except (ConnectionError, TimeoutError):
            handler.close_connection, outcome = True, "client went away"
        except Exception:
            traceback.print_exc(file=sys.stderr)
            error, outcome = HTTPError(500, "Server Error"), "server error"
        if req.pending:
            req.settle(outcome, failed=error is not None)
        if error is not None:
            self.respond_error(req, error)
        elif result is not None:
            self.respond(req, *result)
        if req.body_reader is None or not req.body_reader.done:
            # an unread body would be taken for the next request on this connection
            if handler.headers.get("Content-Length", "0") != "0" or handler.headers.get("Transfer-Encoding"):
                handler.close_connection = True

    def match(self, req):
        method = "GET" if req.method == "HEAD" else req.method
        host = (req.headers.get("Host") or "").split(":")[0].lower()
        if host.startswith("api.") and not req.raw_path.startswith("/api/"):
            # github.com's layout, which gh uses for hosts like github.localhost: the API at the root of
            # api.<host>, GraphQL at /graphql
            req.raw_path = "/api/graphql" if req.raw_path.rstrip("/") == "/graphql" else "/api/v3" + req.raw_path
        path = req.raw_path[:-1] if req.raw_path.endswith("/") else req.raw_path
        parts = path.strip("/").split("/") if path.strip("/") else []
        for segments, endpoint, _ in ROUTES.get(method, ()):
            params = match_segments(segments, parts)
            if params is not None:
                return endpoint, params
        raise HTTPError(404, "Not Found")

    def respond(self, req, status, body, headers=None):
        handler, headers = req.handler, dict(headers or {})
        data = b"" if body is None else body if isinstance(body, bytes) else encode_json(body)
        handler.send_response(status)
        if body is not None:
            handler.send_header("Content-Type", headers.pop("Content-Type", "application/json; charset=utf-8"))
        handler.send_header("Content-Length", str(len(data)))
        handler.send_header("X-GitHub-Api-Version-Selected", API_VERSION)
        handler.send_header("X-GitHub-Media-Type", "github.v3; format=json")
        if req.principal.token_id is not None:
            handler.send_header("X-OAuth-Scopes", req.principal.scopes_header)
        if req.audit_id is not None:
            handler.send_header("X-Agentgit-Audit-Id", str(req.audit_id))
        for name, value in dict(req.response_headers, **headers).items():
            handler.send_header(name, value)
        handler.end_headers()
        if req.method != "HEAD":
            handler.wfile.write(data)

    def respond_error(self, req, error):
        handler = req.handler
        if getattr(handler, "_headers_sent", False):
            handler.close_connection = True     # mid-stream: all we can do is end the connection
            return
        req.response_headers = {}
        try:
            if req.surface == "web":
                status, data, headers = html_page("Error" if error.status != 303 else "Sign in",
                                                  error.page or "<p>%s</p>" % html.escape(error.message),
                                                  error.status, error.headers)
                self.respond(req, status, data, headers)
            elif req.surface == "git":
                # git prints a text/plain error body to the user as "remote: ..."
                data = (error.message + "\n").encode()
                handler.send_response(error.status)
                handler.send_header("Content-Type", "text/plain; charset=utf-8")
                handler.send_header("Content-Length", str(len(data)))
                for name, value in error.headers.items():
                    handler.send_header(name, value)
                handler.end_headers()
                handler.wfile.write(data)
            else:
                self.respond(req, error.status, error.body(), error.headers)
        except OSError:
            handler.close_connection = True


HTTP_DATE = [0, ""]     # the Date header of the current second


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "agentgit/" + __version__
    sys_version = ""
    timeout = REQUEST_IDLE_TIMEOUT

    def setup(self):
        super().setup()
        # Headers and body leave in separate writes; without NODELAY, Nagle's algorithm and the
        # client's delayed ACK hold every keep-alive response back ~40 ms.
        if self.connection.family in (socket.AF_INET, socket.AF_INET6):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.do_handshake()   # here, in the connection's thread, not in accept()

    def date_time_string(self, timestamp=None):
        if timestamp is not None:
            return super().date_time_string(timestamp)
        second = int(time.time())
        if HTTP_DATE[0] != second:
            HTTP_DATE[:] = [second, super().date_time_string(second)]
        return HTTP_DATE[1]

    def end_headers(self):
        self._headers_sent = True
        super().end_headers()

    def handle_one_request(self):
        self._headers_sent = False
        super().handle_one_request()

    def do_GET(self):
        self.server.app.dispatch(self)

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def log_message(self, format, *args):
        if self.server.access_log is not None:
            client = self.client_address[0] if isinstance(self.client_address, tuple) else "unix-socket"
            self.server.access_log.write("%s - [%s] %s\n" % (client, now(), format % args))


class QuietErrors:
    daemon_threads = True

    def handle_error(self, request, client_address):
        # A client that drops the connection or fails the TLS handshake is not the server's error.
        if not isinstance(sys.exc_info()[1], (OSError, ssl.SSLError)):
            super().handle_error(request, client_address)


class HTTPServer(QuietErrors, http.server.ThreadingHTTPServer):
    pass


class UnixHTTPServer(QuietErrors, socketserver.ThreadingUnixStreamServer):
    """The same app on a Unix socket, for gh's http_unix_socket setting (plain HTTP, no port)."""


class Server:
    """A running agentgit: ``url``, ``start()`` (background thread), ``serve_forever()``, ``stop()``.

    ``admin`` is ("admin", token) when this start created the data directory's first account.
    """

    def __init__(self, app, host, port, tls_cert=None, tls_key=None, access_log=None, unix_socket=None):
        self.app = app
        self.unix = None
        if unix_socket:
            if os.path.exists(unix_socket) and stat.S_ISSOCK(os.stat(unix_socket).st_mode):
                os.unlink(unix_socket)          # a socket left by a server that died
            self.unix = UnixHTTPServer(unix_socket, Handler)
            self.unix.app, self.unix.access_log = app, access_log
            os.chmod(unix_socket, 0o600)
        HTTPServer.address_family = socket_family(host)
        self.httpd = HTTPServer((host, port), Handler)
        self.httpd.app, self.httpd.access_log = app, access_log
        scheme = "http"
        if tls_cert:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(tls_cert, tls_key)
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True,
                                                    do_handshake_on_connect=False)
            scheme = "https"
        bound_port = self.httpd.server_address[1]
        shown_host = "[%s]" % host if ":" in host else host
        self.url = app.url or "%s://%s:%d" % (scheme, shown_host, bound_port)
        app.set_url(self.url)
        self.admin = app.first_start_admin()
        self.thread = None

    def start(self):
        # a short poll interval: stop() (shutdown) waits for the loop to notice, and fixtures stop often
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       name="agentgit", daemon=True)
        self.thread.start()
        if self.unix is not None:
            threading.Thread(target=self.unix.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def serve_forever(self):
        if self.unix is not None:
            threading.Thread(target=self.unix.serve_forever, daemon=True).start()
        self.httpd.serve_forever()

    def stop(self):
        for server in (self.httpd, self.unix):
            if server is not None:
                server.shutdown()
                server.server_close()
        if self.unix is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.unix.server_address)

    # Conveniences for fixtures: the same operations as the CLI.
    def add_user(self, login, admin=False, password=None):
        """A human with a personal token holding every scope; returns the token."""
        return cli_add_user(self.app, login, admin, password)

    def add_agent(self, prefix, repo_name="workspace"):
        """Registers an agent as POST /api/ext/v1/agents does; returns (login, token, repo full name)."""
        return cli_add_agent(self.app, prefix, repo_name)


def socket_family(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def make_server(data_dir, host="127.0.0.1", port=0, authenticator=None, url="", tls_cert=None, tls_key=None,
                registration="open", git_engine="auto", registration_limit=20, registration_window=600,
                access_log=None, unix_socket=None):
    """Build (not start) an agentgit server. ``authenticator(request) -> identity or None`` lets an
    embedding program vouch for humans: it is given {"headers", "client_address", "peer_cert"} and
    returns {"provider", "subject", "login", "name", "email"}."""
    config = Config(data_dir=str(data_dir), url=url, registration=registration, git_engine=git_engine,
                    registration_limit=registration_limit, registration_window=registration_window)
    return Server(App(config, authenticator), host, port, tls_cert, tls_key, access_log, unix_socket)


# ════════════════════════════════════════════════════════════════════════════════════════════════
# 14. Command line
# ════════════════════════════════════════════════════════════════════════════════════════════════

def operator():
    return Principal(runtime="cli %s" % getpass.getuser(), operator=True)


def cli_add_user(app, login, admin=False, password=None):
    _, token = create_human(app, login, admin=admin, password=password)
    app.audit(operator(), "cli", Decision("allow", "create_user", "user:" + login, [OPERATOR_REASON]),
              "created %s%s, token %s" % ("site admin " if admin else "human ", login, token_fingerprint(token)))
    return token


def cli_add_agent(app, prefix, repo_name="workspace"):
    login, token, full_name = register_agent(app, prefix, repo_name)
    app.audit(operator(), "cli", Decision("allow", "register_agent", "site", [OPERATOR_REASON]),
              "registered agent %s with repository %s, token %s" % (login, full_name, token_fingerprint(token)))
    return login, token, full_name


def cli_set_suspended(app, login, suspended):
    row = account_by_login(app.store, login)
    if row is None or row["kind"] == "org":
        raise SystemExit("no user %s" % login)
    with app.store.transaction() as db:
        audit_append(db, app.key, operator(), "cli", Decision("allow", "suspend_user", "user:" + login,
                                                              [OPERATOR_REASON]), suspend_account(db, row, suspended))


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
        stored = bytes(a ^ b for a, b in zip(secret, totp_mask(app.key, human["id"]))).hex()
        fields, effect = {"totp_secret": stored}, "turned TOTP on for %s" % human["login"]
        out = "otpauth://totp/agentgit:%s?secret=%s&issuer=agentgit&algorithm=SHA1&digits=6&period=30" % (
            urllib.parse.quote(human["login"]), base64.b32encode(secret).decode().rstrip("="))
    with app.store.transaction() as db:
        update_row(db, "accounts", dict(fields, updated_at=now()), "id", human["id"])
        db.execute("DELETE FROM web_sessions WHERE user_id = ?", (human["id"],))     # sign in again
        audit_append(db, app.key, operator(), "cli", Decision("allow", "manage_user", "user:" + human["login"],
                                                              [OPERATOR_REASON]), effect)
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
        refused = check_grant_authority(store, human, grants)
        if refused:
            raise HTTPError(403, refused)
        with store.transaction() as db:
            token, expires_at, effect = make_invite(db, app.key, human, grants, args.expires_in)
            audit_append(db, app.key, operator(), "cli", Decision("allow", "create_invite", "site", [OPERATOR_REASON]),
                         effect)
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
            audit_append(db, app.key, principal, "cli", Decision("allow", "bind_agent", "user:" + agent["login"],
                                                                 ["the agent's own token"]), effect)
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
        audit_append(db, app.key, operator(), "cli", Decision("allow", "manage_agent", "user:" + agent["login"],
                                                              [OPERATOR_REASON]), effect)
    return effect + ("\n" + out if out else "")


def connect_gh(args):
    """Write a GH_CONFIG_DIR and a git config that point gh and git at this server, and return the
    export lines. https: gh talks HTTPS to the server's host. socket: gh sends its API calls as plain
    HTTP over the server's --unix-socket (as host "localhost"), and git reaches the TCP port.
    localhost: gh's plain-HTTP host github.localhost (API on api.github.localhost), reached by naming
    this server as the HTTP proxy: the server answers proxy-form requests itself, so no name needs to
    resolve and nothing needs root."""
    directory = os.path.abspath(args.dir)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    app = App(Config(data_dir=args.data))
    row = verify_token(app.store, app.key, args.token)
    if row is None:
        raise SystemExit("that token is not live on the server in %s" % args.data)
    login = account_by_id(app.store, row["user_id"])["login"]
    url = args.url.rstrip("/")
    quote = json.dumps
    if args.mode == "socket":
        if not args.socket:
            raise SystemExit("--mode socket needs --socket PATH (the server's --unix-socket)")
        host, extra = "localhost", "http_unix_socket: %s\n" % quote(os.path.abspath(args.socket))
        split = urllib.parse.urlsplit(url)
        git = '[url "%s://x:%s@%s/"]\n\tinsteadOf = https://localhost/\n' % (split.scheme, args.token, split.netloc)
    elif args.mode == "localhost":
        host, extra = "github.localhost", ""
        git = '[url "http://x:%s@github.localhost/"]\n\tinsteadOf = https://github.localhost/\n' \
              '\tinsteadOf = http://github.localhost/\n' % args.token
    else:
        host, extra = urllib.parse.urlsplit(url).hostname, ""
        git = '[credential "https://%s"]\n\thelper =\n\thelper = !gh auth git-credential\n' % host
    files = {"config.yml": "version: 1\ngit_protocol: https\nprompt: disabled\n" + extra,
             "hosts.yml": "%s:\n    oauth_token: %s\n    git_protocol: https\n    user: %s\n" % (
                 quote(host), quote(args.token), quote(login)),
             "gitconfig": git}
    for name, text in files.items():
        path = os.path.join(directory, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)   # holds the token
        with os.fdopen(fd, "w") as f:
            f.write(text)
    exports = [("GH_CONFIG_DIR", directory), ("GH_HOST", host), ("GIT_CONFIG_GLOBAL", os.path.join(directory, "gitconfig"))]
    if args.mode == "localhost":
        exports += [("HTTP_PROXY", url), ("http_proxy", url), ("NO_PROXY", ""), ("no_proxy", "")]
    return "\n".join("export %s=%s" % (k, shlex.quote(v)) for k, v in exports)


def build_parser():
    data_default = os.environ.get("AGENTGIT_DATA", DEFAULT_DATA_DIR)
    parser = argparse.ArgumentParser(prog="agentgit.py", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(parent, name, help_text):
        sub = parent.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--data", default=data_default, metavar="DIR",
                         help="data directory (default: $AGENTGIT_DATA or ./%s)" % DEFAULT_DATA_DIR)
        return sub

    serve = command(commands, "serve", "run the server")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 = pick a free port and print it)")
    serve.add_argument("--url", default="", help="public base URL for clone_url/html_url (default: from host and port)")
    serve.add_argument("--tls-cert", metavar="PEM", help="serve HTTPS with this certificate chain")
    serve.add_argument("--tls-key", metavar="PEM", help="the private key for --tls-cert")
    serve.add_argument("--registration", choices=("open", "closed"), default="open",
                       help="may anyone register an agent with POST /api/ext/v1/agents (default open)")
    serve.add_argument("--git-engine", choices=("auto", "git", "dulwich"), default="auto",
                       help="serve Git through the git binary or dulwich (default auto: git when on PATH)")
    serve.add_argument("--unix-socket", metavar="PATH", help="also serve on this Unix socket (gh's http_unix_socket)")
    serve.add_argument("--quiet", action="store_true", help="no access log on stderr")

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

    connect = commands.add_parser("connect", help="point a client at this server").add_subparsers(
        dest="client", required=True)
    connect_gh_cmd = command(connect, "gh", "write a GH_CONFIG_DIR for gh and a git config; prints the exports")
    connect_gh_cmd.add_argument("--token", required=True, help="the token gh and git will use")
    connect_gh_cmd.add_argument("--mode", choices=("https", "socket", "localhost"), default="https")
    connect_gh_cmd.add_argument("--url", default="http://127.0.0.1:8080",
                                help="the server's URL (https mode: its https URL; socket mode: where git goes)")
    connect_gh_cmd.add_argument("--socket", metavar="PATH", help="socket mode: the server's --unix-socket")
    connect_gh_cmd.add_argument("--dir", default="agentgit-gh", help="where to write the configuration")

    audit = commands.add_parser("audit", help="the audit log").add_subparsers(dest="action", required=True)
    command(audit, "verify", "check the hash chain; exit 0 when intact, 1 naming the first broken row")
    command(audit, "explain", "print one decision's whole chain: who, for whom, under which task, why").add_argument(
        "audit_id", type=int)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        if bool(args.tls_cert) != bool(args.tls_key):
            raise SystemExit("--tls-cert and --tls-key go together")
        server = make_server(args.data, host=args.host, port=args.port, url=args.url, tls_cert=args.tls_cert,
                             tls_key=args.tls_key, registration=args.registration, git_engine=args.git_engine,
                             access_log=None if args.quiet else sys.stderr, unix_socket=args.unix_socket)
        print("agentgit listening on %s" % server.url, flush=True)
        print("git engine: %s; data: %s" % (server.app.git_engine.name, os.path.abspath(args.data)), flush=True)
        if server.admin:
            # Shown once, on the terminal only: the database keeps just its hash.
            print("first start: created site admin %r; its token (shown once): %s" % server.admin, flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            server.stop()
        return 0
    if args.command == "connect":
        print(connect_gh(args))
        return 0
    app = App(Config(data_dir=args.data, git_engine="auto"))
    if args.command == "user" and args.action == "add":
        password = sys.stdin.readline().rstrip("\n") if args.password_stdin else None
        try:
            token = cli_add_user(app, args.login, args.admin, password)
        except (ValueError, sqlite3.IntegrityError) as error:
            raise SystemExit("cannot add %s: %s" % (args.login, "login taken" if isinstance(
                error, sqlite3.IntegrityError) else error))
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
    elif args.command == "audit":
        ok, count, bad_id, why = audit_verify(app.store, app.key)
        if not ok:
            print("audit chain BROKEN at row %d: %s (%d rows read)" % (bad_id, why, count))
            return 1
        print("audit chain intact: %d rows" % count)
    return 0


if __name__ == "__main__":
    sys.exit(main())
