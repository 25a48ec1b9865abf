-- agentgit schema: its only source; `make dist` embeds it in agentgit.py as SCHEMA. Written for SQLite in
-- what PostgreSQL also reads; storage.postgres_schema changes the types' names for PostgreSQL.
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
    totp_secret      TEXT,              -- a TOTP secret sealed with the server key; NULL: no second factor
    -- agents: when one first minted with a client certificate (it mints with one from then on)
    runtime_certificate_at TEXT,
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
    granted_by INTEGER REFERENCES accounts(id) ON DELETE CASCADE,   -- an agent's invite-derived access: its grantor
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
    granted_by INTEGER REFERENCES accounts(id) ON DELETE CASCADE,   -- an agent's invite-derived access: its grantor
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
    forked_by       INTEGER REFERENCES accounts(id) ON DELETE SET NULL, -- a fork: who made it (its access counts)
    topics          TEXT NOT NULL DEFAULT '[]',                        -- JSON: its topics (version 10)
    workflow_permissions TEXT NOT NULL DEFAULT 'read',   -- (version 12) what a job token holds where a workflow
                                                          -- says nothing: read (restricted) or write
    actions_can_approve  INTEGER NOT NULL DEFAULT 0,     -- may a job token approve a pull request
    deleted_issue_number INTEGER NOT NULL DEFAULT 0,                   -- the highest deleted: never numbered again
    UNIQUE (owner_id, name)
);
CREATE INDEX IF NOT EXISTS repos_by_parent ON repos(parent_id);

CREATE TABLE IF NOT EXISTS collaborators (
    repo_id     INTEGER NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    user_id     INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    permission  TEXT NOT NULL CHECK (permission IN ('read', 'triage', 'write', 'maintain', 'admin')),
    granted_by INTEGER REFERENCES accounts(id) ON DELETE CASCADE,   -- an agent's invite-derived access: its grantor
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
    kind          TEXT NOT NULL CHECK (kind IN ('personal', 'agent', 'session', 'switch-session', 'oauth', 'task', 'tool')),
    issued_by     INTEGER REFERENCES accounts(id) ON DELETE SET NULL,
    grant_id      INTEGER REFERENCES task_grants(id) ON DELETE CASCADE,   -- task tokens: their grant
    audience      TEXT,              -- agent session tokens: JSON list of the repositories they are for, or NULL: any
    resource      TEXT,              -- RFC 8707: the server URL (REST, GraphQL, Git) or its /mcp URL it is for; NULL: both
    credential_id INTEGER REFERENCES broker_credentials(id) ON DELETE CASCADE,  -- tool tokens: the one credential
    cnf           TEXT,              -- sender-constrained (version 9): JSON {"x5t#S256": ...} (RFC 8705) or {"jkt": ...} (RFC 9449)
    runtime       TEXT,              -- the runtime identity (a SPIFFE ID) of the connection that minted it
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
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,       -- never reused: a deleted tail leaves a gap
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
    token_kind         TEXT,              -- from version 6: bootstrap (agent), session, task, personal ...
    rule               TEXT,              -- from version 6: the policy rule that decided (POLICY_RULES)
    prev_hash          TEXT NOT NULL,
    hash               TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_by_actor ON audit(actor);

-- Side effects outside the database (schema version 7): a ref about to move, written down before it
-- moves and deleted by the transaction that writes its audit rows. What a crash leaves here is settled
-- at the next start from the ref itself (intents.py), so no row claims a move that never happened and
-- no move goes unrecorded.
CREATE TABLE IF NOT EXISTS intents (
    id          INTEGER PRIMARY KEY,
    repo_id     INTEGER NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    ref         TEXT NOT NULL,
    old         TEXT NOT NULL,        -- 40 zeros: the ref is created
    new         TEXT NOT NULL,        -- 40 zeros: the ref is deleted
    rows        TEXT NOT NULL,        -- JSON [[audit_row() fields, approval id or null], ...]: the rows it is for
    follow_up   TEXT,                 -- JSON {"kind": ..., ...}: what finishes the database's part once it moved
    created_at  TEXT NOT NULL
);

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
    acting_for    TEXT,              -- opened by an agent: the human it acted for, and under which task (version 10)
    task          TEXT,
    pinned_at     TEXT,              -- pinned to the repository's issues (at most three)
    UNIQUE (repo_id, number)
);

CREATE TABLE IF NOT EXISTS issue_assignees (
    issue_id  INTEGER NOT NULL REFERENCES issues(id) ON DELETE CASCADE,
    user_id   INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    PRIMARY KEY (issue_id, user_id)
);

-- github.com's sub-issues: each issue has at most one parent, its children in the order of position
CREATE TABLE IF NOT EXISTS sub_issues (
    parent_id  INTEGER NOT NULL REFERENCES issues(id) ON DELETE CASCADE,
    child_id   INTEGER NOT NULL UNIQUE REFERENCES issues(id) ON DELETE CASCADE,
    position   INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS sub_issues_by_parent ON sub_issues(parent_id);

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
    updated_at  TEXT NOT NULL,
    acting_for  TEXT,                -- an agent's: the human it acted for, and under which task (version 10)
    task        TEXT
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
    state         TEXT NOT NULL CHECK (state IN ('PENDING', 'APPROVED', 'CHANGES_REQUESTED', 'COMMENTED', 'DISMISSED')),
    body          TEXT NOT NULL DEFAULT '',
    commit_id     TEXT,
    submitted_at  TEXT                -- NULL while pending
);
-- a reviewer has at most one pending review of a pull request
CREATE UNIQUE INDEX IF NOT EXISTS one_pending_review ON reviews(issue_id, user_id) WHERE state = 'PENDING';

CREATE TABLE IF NOT EXISTS review_comments (
    id          INTEGER PRIMARY KEY,
    review_id   INTEGER NOT NULL REFERENCES reviews(id) ON DELETE CASCADE,
    issue_id    INTEGER NOT NULL REFERENCES issues(id) ON DELETE CASCADE,
    user_id     INTEGER REFERENCES accounts(id) ON DELETE SET NULL,
    path        TEXT NOT NULL,
    line        INTEGER,
    side        TEXT NOT NULL DEFAULT 'RIGHT',
    start_line  INTEGER,              -- a comment on lines start_line..line
    start_side  TEXT NOT NULL DEFAULT 'RIGHT',
    subject_type TEXT NOT NULL DEFAULT 'LINE',
    body        TEXT NOT NULL,
    commit_id   TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

-- issue events: what changed an issue or pull request (closed, labeled, renamed, merged, ...), by whom,
-- written in the transaction that changed it; detail holds the event's own fields (label, rename, ...)
CREATE TABLE IF NOT EXISTS issue_events (
    id          INTEGER PRIMARY KEY,
    issue_id    INTEGER NOT NULL REFERENCES issues(id) ON DELETE CASCADE,
    actor_id    INTEGER REFERENCES accounts(id) ON DELETE SET NULL,
    event       TEXT NOT NULL,
    detail      TEXT NOT NULL DEFAULT '{}',
    commit_id   TEXT,
    created_at  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS issue_events_by_issue ON issue_events(issue_id, id);

-- reactions: one account's emoji on exactly one issue (or pull request), issue comment or review comment
CREATE TABLE IF NOT EXISTS reactions (
    id                 INTEGER PRIMARY KEY,
    issue_id           INTEGER REFERENCES issues(id) ON DELETE CASCADE,
    comment_id         INTEGER REFERENCES comments(id) ON DELETE CASCADE,
    review_comment_id  INTEGER REFERENCES review_comments(id) ON DELETE CASCADE,
    user_id            INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    content            TEXT NOT NULL CHECK (content IN ('+1', '-1', 'laugh', 'confused', 'heart', 'hooray', 'rocket',
                                                        'eyes')),
    created_at         TEXT NOT NULL,
    CHECK (CAST(issue_id IS NOT NULL AS INTEGER) + CAST(comment_id IS NOT NULL AS INTEGER)
           + CAST(review_comment_id IS NOT NULL AS INTEGER) = 1)
);
-- each account reacts with each emoji once
CREATE UNIQUE INDEX IF NOT EXISTS one_reaction_each ON reactions(
    coalesce(issue_id, 0), coalesce(comment_id, 0), coalesce(review_comment_id, 0), user_id, content);

-- deployments: a request to deploy a commit to an environment, and the statuses its deployer reports
CREATE TABLE IF NOT EXISTS deployments (
    id                      INTEGER PRIMARY KEY,
    repo_id                 INTEGER NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    sha                     TEXT NOT NULL,
    ref                     TEXT NOT NULL,
    task                    TEXT NOT NULL,
    payload                 TEXT NOT NULL,          -- JSON, as given
    environment             TEXT NOT NULL,
    description             TEXT,
    transient_environment   INTEGER NOT NULL DEFAULT 0,
    production_environment  INTEGER NOT NULL DEFAULT 0,
    creator_id              INTEGER REFERENCES accounts(id) ON DELETE SET NULL,
    created_at              TEXT NOT NULL,
    updated_at              TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS deployments_by_repo ON deployments(repo_id, id);

CREATE TABLE IF NOT EXISTS deployment_statuses (
    id               INTEGER PRIMARY KEY,
    deployment_id    INTEGER NOT NULL REFERENCES deployments(id) ON DELETE CASCADE,
    state            TEXT NOT NULL CHECK (state IN ('error', 'failure', 'inactive', 'in_progress', 'queued',
                                                    'pending', 'success')),
    description      TEXT NOT NULL DEFAULT '',
    environment      TEXT NOT NULL,
    target_url       TEXT NOT NULL DEFAULT '',
    log_url          TEXT NOT NULL DEFAULT '',
    environment_url  TEXT NOT NULL DEFAULT '',
    creator_id       INTEGER REFERENCES accounts(id) ON DELETE SET NULL,
    created_at       TEXT NOT NULL
);

-- webhooks: a repository's or organization's hooks, and their deliveries (the outbox: written with the
-- change that causes them, sent by the delivery worker, kept with what the receiver answered)
CREATE TABLE IF NOT EXISTS hooks (
    id             INTEGER PRIMARY KEY,
    repo_id        INTEGER REFERENCES repos(id) ON DELETE CASCADE,
    org_id         INTEGER REFERENCES accounts(id) ON DELETE CASCADE,
    app_id         INTEGER REFERENCES apps(id) ON DELETE CASCADE,     -- a GitHub App's one webhook (version 11)
    url            TEXT NOT NULL,
    content_type   TEXT NOT NULL DEFAULT 'form' CHECK (content_type IN ('json', 'form')),
    secret_sealed  TEXT,                          -- sealed like the vault's values; never shown
    insecure_ssl   TEXT NOT NULL DEFAULT '0',
    events         TEXT NOT NULL DEFAULT '["push"]',
    active         INTEGER NOT NULL DEFAULT 1,
    creator_id     INTEGER REFERENCES accounts(id) ON DELETE SET NULL,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL,
    CHECK (CAST(repo_id IS NOT NULL AS INTEGER) + CAST(org_id IS NOT NULL AS INTEGER) + CAST(app_id IS NOT NULL AS INTEGER) = 1)
);

CREATE TABLE IF NOT EXISTS hook_deliveries (
    id                INTEGER PRIMARY KEY,
    hook_id           INTEGER NOT NULL REFERENCES hooks(id) ON DELETE CASCADE,
    guid              TEXT NOT NULL UNIQUE,
    event             TEXT NOT NULL,
    action            TEXT,
    repo_id           INTEGER REFERENCES repos(id) ON DELETE CASCADE,
    subject           TEXT NOT NULL DEFAULT '{}',  -- what happened: the ids and refs the payload is made from
    chain             TEXT NOT NULL DEFAULT '{}',  -- who acted, for whom, under which task, grant and audit row
    payload           TEXT,                        -- rendered at the first attempt, kept for redeliveries
    redelivery        INTEGER NOT NULL DEFAULT 0,
    attempt           INTEGER NOT NULL DEFAULT 1,  -- with serve --webhook-retries: which try this is
    not_before        REAL,                        -- a retry waits until then (epoch seconds)
    state             TEXT NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'delivering', 'delivered', 'failed')),
    leased_until      REAL,                        -- a worker's claim (epoch seconds); a dead worker's lapses
    status_code       INTEGER,
    status            TEXT,
    duration          REAL,
    request_headers   TEXT,
    response_headers  TEXT,
    response_body     TEXT,
    delivered_at      TEXT,
    created_at        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS hook_deliveries_waiting ON hook_deliveries(state, id);
CREATE INDEX IF NOT EXISTS hook_deliveries_by_hook ON hook_deliveries(hook_id, id);

-- notifications: one account's thread of one issue or pull request, and who watches which repository
CREATE TABLE IF NOT EXISTS notification_threads (
    id            INTEGER PRIMARY KEY,
    user_id       INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    issue_id      INTEGER NOT NULL REFERENCES issues(id) ON DELETE CASCADE,
    reason        TEXT NOT NULL,
    unread        INTEGER NOT NULL DEFAULT 1,
    done          INTEGER NOT NULL DEFAULT 0,    -- out of the inbox until something new happens
    subscribed    INTEGER NOT NULL DEFAULT 0,    -- subscribed to by hand (reason manual)
    ignored       INTEGER NOT NULL DEFAULT 0,    -- nothing more from this thread
    updated_at    TEXT NOT NULL,
    last_read_at  TEXT,
    UNIQUE (user_id, issue_id)
);
CREATE INDEX IF NOT EXISTS threads_by_issue ON notification_threads(issue_id);

CREATE TABLE IF NOT EXISTS repo_subscriptions (
    user_id     INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    repo_id     INTEGER NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    subscribed  INTEGER NOT NULL,
    ignored     INTEGER NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (user_id, repo_id)
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
    disabled_at TEXT,                 -- disabled by hand (gh workflow disable): not dispatched
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
    run_started_at TEXT,             -- (version 11) when the executor took it
    leased_until REAL,               -- the executor's claim while it runs (epoch seconds)
    grant_id     INTEGER REFERENCES task_grants(id) ON DELETE SET NULL,   -- the task its actor dispatched it under
    job_grant_id INTEGER REFERENCES task_grants(id) ON DELETE SET NULL,   -- its job token's grant while it runs
    event_fields TEXT,                -- JSON: what the event that started it carried (a push's ref, before and
                                      -- after; a pull request's action and issue; a dispatch's type and payload)
    rerun_jobs   TEXT,                -- JSON: the jobs (keys) its latest attempt reruns; NULL: all of them
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);

-- What the executor (serve --run-workflows) made of a run attempt: its jobs, steps and logs (version 11)
CREATE TABLE IF NOT EXISTS workflow_jobs (
    id            INTEGER PRIMARY KEY,
    run_id        INTEGER NOT NULL REFERENCES workflow_runs(id) ON DELETE CASCADE,
    run_attempt   INTEGER NOT NULL,
    job_key       TEXT NOT NULL,                 -- the job's id in the workflow file
    name          TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('queued', 'in_progress', 'completed')),
    conclusion    TEXT,
    steps         TEXT NOT NULL DEFAULT '[]',    -- JSON: GitHub's steps (number, name, status, conclusion, times)
    log           TEXT NOT NULL DEFAULT '',      -- its lines with their times, at most runner.LOG_LIMIT characters
    step_lines    TEXT NOT NULL DEFAULT '[]',    -- JSON: the log's line number where each step's lines begin
    check_run_id  INTEGER REFERENCES check_runs(id) ON DELETE SET NULL,  -- the job's check run on the commit
    started_at    TEXT NOT NULL,
    completed_at  TEXT,
    created_at    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS workflow_jobs_by_run ON workflow_jobs(run_id, run_attempt);

-- What a run's jobs uploaded (version 12): a zip each, held here as release assets are, named by the job
-- and never used as a path; unique in a run attempt. Past expires_at it is listed expired and its
-- archive is gone.
CREATE TABLE IF NOT EXISTS artifacts (
    id            INTEGER PRIMARY KEY,
    repo_id       INTEGER NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    run_id        INTEGER NOT NULL REFERENCES workflow_runs(id) ON DELETE CASCADE,
    run_attempt   INTEGER NOT NULL,
    name          TEXT NOT NULL,
    size_in_bytes INTEGER NOT NULL,
    digest        TEXT NOT NULL,           -- sha256:<hex> of the zip, as GitHub reports it
    archive       BLOB,                    -- the zip; NULL once expired
    created_at    TEXT NOT NULL,
    expires_at    TEXT NOT NULL,
    UNIQUE (run_id, run_attempt, name)
);
CREATE INDEX IF NOT EXISTS artifacts_by_repo ON artifacts(repo_id, id);

-- What a run's jobs saved for later runs of their ref (actions/cache, version 12): a zip a key, never
-- replaced; a run restores from its own ref's, then the default branch's.
CREATE TABLE IF NOT EXISTS caches (
    id               INTEGER PRIMARY KEY,
    repo_id          INTEGER NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    key              TEXT NOT NULL,
    ref              TEXT NOT NULL,            -- refs/heads/..., refs/tags/..., refs/pull/N/merge
    size_in_bytes    INTEGER NOT NULL,
    archive          BLOB NOT NULL,
    created_at       TEXT NOT NULL,
    last_accessed_at TEXT NOT NULL,
    UNIQUE (repo_id, ref, key)
);

-- An event that may start workflows, written with the change that is it (outbox.queue_run_trigger): a
-- push, a pull request's, a repository_dispatch (version 11; the last two, version 12). The runner reads
-- the workflows at ``after`` and starts those whose `on:` the event and ``ref`` match. Never a job token's.
CREATE TABLE IF NOT EXISTS run_triggers (
    id          INTEGER PRIMARY KEY,
    repo_id     INTEGER NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    event       TEXT NOT NULL DEFAULT 'push',
    ref         TEXT NOT NULL,         -- what branch filters match: the pushed ref, a pull request's base, ...
    before      TEXT NOT NULL,
    after       TEXT NOT NULL,         -- the commit whose workflows run
    fields      TEXT NOT NULL DEFAULT '{}',    -- JSON: the event's own (a pull request's action and issue, ...)
    actor       TEXT,                  -- who caused it (login), and under which task grant (public id)
    grant_id    TEXT,
    created_at  TEXT NOT NULL
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
    client_id      TEXT NOT NULL UNIQUE,  -- agc_…, or a metadata document's https URL
    secret_hash    TEXT,                  -- NULL: a public client (PKCE alone)
    name           TEXT NOT NULL,
    redirect_uris  TEXT NOT NULL,         -- JSON list
    owner_id       INTEGER REFERENCES accounts(id) ON DELETE CASCADE,   -- NULL: nobody vouches for it
    kind           TEXT NOT NULL DEFAULT 'owned' CHECK (kind IN ('owned', 'dynamic', 'metadata_document')),
    metadata       TEXT NOT NULL DEFAULT '{}',   -- what it registered, or its metadata document
    fetched_at     INTEGER,               -- a metadata document: when it was last fetched (epoch seconds)
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
    family        TEXT,                   -- the refresh family it started, to revoke on replay
    resource      TEXT                    -- RFC 8707: the resource the client asked for, its tokens' audience
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
    used_at      TEXT,
    resource     TEXT
);

-- The broker's vault: external credentials for one upstream each, their secret parts sealed (vault.py)
-- and bound to the row; placement holds what is not secret (the header an API key goes in, a username).
CREATE TABLE IF NOT EXISTS broker_credentials (
    id          INTEGER PRIMARY KEY,
    public_id   TEXT NOT NULL UNIQUE,
    owner_id    INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('api_key', 'basic', 'oauth_refresh')),
    base_url    TEXT NOT NULL,
    placement   TEXT NOT NULL,
    sealed      TEXT NOT NULL,
    access_sealed      TEXT,          -- oauth_refresh: the upstream's current access token, sealed (version 9)
    access_expires_at  TEXT,
    created_at  TEXT NOT NULL,
    rotated_at  TEXT,
    UNIQUE (owner_id, name)
);

-- Public keys an agent signs OAuth client assertions with (RFC 7523), and the assertions' jti, each
-- accepted once until it expires.
-- Runtime identities revoked by security policy (schema version 9): a runtime whose certificate names a
-- SPIFFE ID matching ``pattern`` (GLOB) is refused everything, as the agents of ``human_id`` (NULL: a
-- site admin's revocation, for everyone), until the revocation is lifted.
CREATE TABLE IF NOT EXISTS revoked_runtimes (
    id          INTEGER PRIMARY KEY,
    public_id   TEXT NOT NULL UNIQUE,
    pattern     TEXT NOT NULL,
    human_id    INTEGER REFERENCES accounts(id) ON DELETE CASCADE,
    revoked_by  INTEGER REFERENCES accounts(id) ON DELETE SET NULL,
    created_at  TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS agent_keys (
    id          INTEGER PRIMARY KEY,
    agent_id    INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    kid         TEXT NOT NULL,
    jwk         TEXT NOT NULL,           -- the public JWK: kty RSA, n, e
    created_at  TEXT NOT NULL,
    -- a bound agent's key signs nothing until its human approves it (an unbound agent's at once)
    approved_at TEXT,
    approved_by INTEGER REFERENCES accounts(id) ON DELETE SET NULL,
    UNIQUE (agent_id, kid)
);

-- DPoP proofs' jti, each accepted once while its proof could be (version 10): kept here, not in one
-- process's memory, so a restart or a second server on the same data does not accept a proof again
CREATE TABLE IF NOT EXISTS dpop_proofs (
    name        TEXT PRIMARY KEY,        -- the signing key's thumbprint and the proof's jti
    expires_at  INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS assertion_ids (
    agent_id    INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    jti         TEXT NOT NULL,
    expires_at  INTEGER NOT NULL,
    PRIMARY KEY (agent_id, jti)
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
    constraints   TEXT NOT NULL,          -- JSON: branch_prefix, expires_at, network_allowlist, paths, requires_approval, …
    created_at    TEXT NOT NULL,
    expires_at    TEXT NOT NULL,
    revoked_at    TEXT,
    -- (version 11) a grant made from another: a run's job grant from the task grant its run was dispatched
    -- under; revoking or outliving the parent ends it too
    parent_id     INTEGER REFERENCES task_grants(id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS task_grants_by_agent ON task_grants(agent_id);

-- What a task has read that decides where it may write (version 14): private content (a private
-- repository's code or issues, a secret, a broker's answer) and untrusted input (issues, comments and
-- pull requests by accounts without write access). Kept per task, under the grant at the top of its
-- chain (a sub-agent's reads are its orchestrator's too), once per thing read.
CREATE TABLE IF NOT EXISTS task_reads (
    id        INTEGER PRIMARY KEY,
    grant_id  INTEGER NOT NULL REFERENCES task_grants(id) ON DELETE CASCADE,
    kind      TEXT NOT NULL CHECK (kind IN ('private', 'untrusted')),
    resource  TEXT NOT NULL,             -- repo:alice/payments, credential:alice/ci
    what      TEXT NOT NULL,             -- "its code and issues", "issue #3 by mallory", "secret DEPLOY_KEY"
    at        TEXT NOT NULL,
    UNIQUE (grant_id, kind, resource, what)
);

-- GitHub Apps (version 11). An App is an agent account (login NAME[bot]) that proves itself with a JWT
-- signed by its private key; the server keeps the public half only. An installation is a delegation:
-- the installing human puts the App to work on an account's repositories with the App's permissions,
-- as a task grant (grant_id) whose tokens are the installation's tokens, bounded by her authority, live.
CREATE TABLE IF NOT EXISTS apps (
    id             INTEGER PRIMARY KEY,
    agent_id       INTEGER NOT NULL UNIQUE REFERENCES accounts(id) ON DELETE CASCADE,
    owner_id       INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,   -- a human or an organization
    creator_id     INTEGER REFERENCES accounts(id) ON DELETE SET NULL,          -- the human who registered it
    slug           TEXT NOT NULL UNIQUE COLLATE NOCASE,
    name           TEXT NOT NULL UNIQUE COLLATE NOCASE,
    description    TEXT NOT NULL DEFAULT '',
    url            TEXT NOT NULL DEFAULT '',
    client_id      TEXT NOT NULL UNIQUE,
    client_secret_hash TEXT NOT NULL,
    public_keys    TEXT NOT NULL,                 -- JSON list of RSA public JWKs its JWTs may be signed by
    permissions    TEXT NOT NULL DEFAULT '{}',    -- JSON {"issues": "write", ...}, GitHub's names
    events         TEXT NOT NULL DEFAULT '[]',    -- JSON list of the events its webhook receives
    public         INTEGER NOT NULL DEFAULT 0,    -- installable by anyone; else on its owner's account only
    setup_url      TEXT,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS app_installations (
    id                    INTEGER PRIMARY KEY,
    app_id                INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    account_id            INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,  -- where it is installed
    installer_id          INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,  -- the delegator
    grant_id              INTEGER NOT NULL REFERENCES task_grants(id) ON DELETE CASCADE,
    repository_selection  TEXT NOT NULL CHECK (repository_selection IN ('all', 'selected')),
    permissions           TEXT NOT NULL,          -- what the installer accepted: the App's, at install time
    suspended_at          TEXT,
    created_at            TEXT NOT NULL,
    updated_at            TEXT NOT NULL,
    UNIQUE (app_id, account_id)
);

CREATE TABLE IF NOT EXISTS app_installation_repos (
    installation_id  INTEGER NOT NULL REFERENCES app_installations(id) ON DELETE CASCADE,
    repo_id          INTEGER NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    PRIMARY KEY (installation_id, repo_id)
);

-- GitHub's manifest flow: a human confirms a manifest, the App's server trades the code (once, within an
-- hour) for the App's credentials; the private key and secrets wait here sealed until then.
CREATE TABLE IF NOT EXISTS app_manifest_codes (
    hash          TEXT PRIMARY KEY,
    app_id        INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    sealed        TEXT NOT NULL,
    expires_at    TEXT NOT NULL
);

-- Approvals: a human's yes to one action on one resource under one grant; single use, short-lived.
CREATE TABLE IF NOT EXISTS approvals (
    id            INTEGER PRIMARY KEY,
    public_id     TEXT NOT NULL UNIQUE,
    grant_id      INTEGER NOT NULL REFERENCES task_grants(id) ON DELETE CASCADE,
    action        TEXT NOT NULL,
    resource      TEXT NOT NULL,
    subject       TEXT NOT NULL DEFAULT '',  -- exactly what: "pull request #3 at 1a2b3c4d5e6f", a ref at a commit
    context       TEXT,                      -- JSON: what the human needs to judge it (pull number, ref and sha ...)
    created_at    TEXT NOT NULL,
    expires_at    TEXT NOT NULL,
    approved_by   INTEGER REFERENCES accounts(id) ON DELETE SET NULL,
    approved_at   TEXT,
    denied_by     INTEGER REFERENCES accounts(id) ON DELETE SET NULL,
    denied_at     TEXT,
    denial_reason TEXT,
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

-- Deploy keys: OpenSSH public keys (TYPE BASE64), each registered once on the server (fingerprint:
-- SHA-256 of the key blob). Nothing here speaks SSH: they are kept for the tools that manage them.
CREATE TABLE IF NOT EXISTS deploy_keys (
    id           INTEGER PRIMARY KEY,
    repo_id      INTEGER NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    title        TEXT NOT NULL,
    key          TEXT NOT NULL,
    fingerprint  TEXT NOT NULL UNIQUE,
    read_only    INTEGER NOT NULL DEFAULT 1,
    added_by     INTEGER REFERENCES accounts(id) ON DELETE SET NULL,
    created_at   TEXT NOT NULL
);

-- Environments (nothing deploys here: a name, its protection settings as JSON, its secrets and
-- variables), and the secrets and variables of environments and of organizations. An organization's
-- are for all its repositories, its private ones, or those selected in org_selected_repos.
CREATE TABLE IF NOT EXISTS environments (
    id          INTEGER PRIMARY KEY,
    repo_id     INTEGER NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    name        TEXT NOT NULL COLLATE NOCASE,
    settings    TEXT NOT NULL DEFAULT '{}',
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    UNIQUE (repo_id, name)
);

CREATE TABLE IF NOT EXISTS environment_secrets (
    environment_id   INTEGER NOT NULL REFERENCES environments(id) ON DELETE CASCADE,
    name             TEXT NOT NULL,
    encrypted_value  TEXT NOT NULL,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    PRIMARY KEY (environment_id, name)
);

CREATE TABLE IF NOT EXISTS environment_variables (
    environment_id   INTEGER NOT NULL REFERENCES environments(id) ON DELETE CASCADE,
    name             TEXT NOT NULL,
    value            TEXT NOT NULL,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    PRIMARY KEY (environment_id, name)
);

CREATE TABLE IF NOT EXISTS org_secrets (
    org_id           INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name             TEXT NOT NULL,
    encrypted_value  TEXT NOT NULL,
    visibility       TEXT NOT NULL CHECK (visibility IN ('all', 'private', 'selected')),
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    PRIMARY KEY (org_id, name)
);

CREATE TABLE IF NOT EXISTS org_variables (
    org_id           INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name             TEXT NOT NULL,
    value            TEXT NOT NULL,
    visibility       TEXT NOT NULL CHECK (visibility IN ('all', 'private', 'selected')),
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    PRIMARY KEY (org_id, name)
);

CREATE TABLE IF NOT EXISTS org_selected_repos (
    org_id   INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    kind     TEXT NOT NULL CHECK (kind IN ('secrets', 'variables')),
    name     TEXT NOT NULL,
    repo_id  INTEGER NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    PRIMARY KEY (org_id, kind, name, repo_id)
);

-- The rate limits' recent hits (registrations, sign-ins, failed proofs per address or account), shared
-- by every server process on the database; a hit past its limiter's window is deleted at its next hit.
CREATE TABLE IF NOT EXISTS rate_hits (
    limiter  TEXT NOT NULL,
    key      TEXT NOT NULL,
    at       REAL NOT NULL              -- epoch seconds
);
CREATE INDEX IF NOT EXISTS rate_hits_by_key ON rate_hits(limiter, key, at);

-- Settings an operator chooses once for the installation (e.g. agent_credentials: bootstrap or direct).
CREATE TABLE IF NOT EXISTS settings (
    name   TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);
