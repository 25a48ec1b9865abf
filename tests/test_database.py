"""The database behind the server: SQLite in the data directory, or PostgreSQL (`--database
postgresql://…`). An operator moves an SQLite installation to PostgreSQL with one command and loses
nothing; two servers sharing one database and data directory give each issue its own number, see each
other's revocations, and keep one audit chain; a wrong database is a clear message, not a traceback."""
import json
import os
import sqlite3
import subprocess
import threading
import urllib.request

import pytest

from conftest import CLI, ROOT, Browser, api, call, ext, postgresql, sweep
import agentgit  # noqa: E402
from test_agent_keys import rsa_key
from test_pagination import build_world

LISTS = ("/user/repos?per_page=100", "/repos/alice/many/issues?state=all&per_page=100",
         "/repos/alice/many/pulls?state=all&per_page=100", "/repos/alice/many/releases", "/orgs/many-org/teams",
         "/repos/alice/many/commits?per_page=100", "/repos/alice/many/actions/workflows")


def answered(srv, token):
    """What alice's lists say, the server's address left out (a restarted server has another port)."""
    return {path: api(srv, "GET", path, token).raw.decode().replace(srv.url.split("//")[1], "HOST") for path in LISTS}


def more_kinds_of_row(srv, token):
    """What the pagination world leaves out: a protected branch, a watch, a review request, a web session,
    an OAuth app and a device code of it, a rate limit's hits, an agent's key, a GitHub App installed on a
    repository."""
    repo = "/repos/alice/many"
    assert api(srv, "PUT", repo + "/branches/main/protection", token, {
        "required_status_checks": None, "enforce_admins": None, "required_pull_request_reviews": None,
        "restrictions": None}).status == 200
    assert api(srv, "PUT", repo + "/subscription", token, {"subscribed": True}).status == 200
    pull = api(srv, "GET", repo + "/pulls", token).json[0]["number"]
    assert api(srv, "POST", repo + "/pulls/%d/requested_reviewers" % pull, token, {"reviewers": ["u1"]}).status == 201
    browser = Browser(srv)
    assert browser.sign_in("alice", "pw")[0].status == 303
    client = ext(srv, "POST", "/oauth/apps", token, {"name": "app", "redirect_uris": ["http://127.0.0.1:9/cb"]})
    assert client.status == 201
    assert call(srv, "POST", "/login/device/code", raw_body=("client_id=%s&scope=repo" % client.json["client_id"])
                .encode(), headers={"Content-Type": "application/x-www-form-urlencoded"}).status == 200
    agent = ext(srv, "POST", "/agents", None, {"prefix_login": "moved"})
    assert agent.status == 201
    assert ext(srv, "POST", "/agent-keys", agent.json["token"], {"jwk": rsa_key()[1]}).status == 201
    assert ext(srv, "POST", "/apps", token, {"name": "mover", "url": "https://example.com/mover", "default_permissions":
                                             {"issues": "write"}, "default_events": ["issues"]}).status == 201
    assert ext(srv, "POST", "/apps/mover/installations", token, {"repository_selection": "selected",
                                                                  "repositories": ["many"]}).status == 201


def sqlite_counts(data):
    db = sqlite3.connect(os.path.join(data, "agentgit.db"))
    tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
    return {table: db.execute("SELECT COUNT(*) FROM %s" % table).fetchone()[0] for table in tables}


def cli(*args):
    """The command line as an operator runs it, whatever database this lane's tests use by default."""
    env = {k: v for k, v in os.environ.items() if k != "AGENTGIT_DATABASE"}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=300)


@sweep                                  # (the same move on either lane: it runs once)
def test_an_sqlite_installation_moves_to_postgresql_with_every_row(tmp_path, postgres_cluster):
    data = str(tmp_path / "data")
    srv = agentgit.make_server(data, port=0, database="", egress_allow_loopback=True).start()   # SQLite, either lane
    token, _ = build_world(srv)
    more_kinds_of_row(srv, token)
    answers = answered(srv, token)
    srv.stop()
    counts = sqlite_counts(data)
    filled = [table for table, count in counts.items() if count]
    assert len(filled) >= 63, sorted(set(counts) - set(filled))    # what is left: rows that live only moments
    url = postgres_cluster.new_database()                                # empty, as db copy wants it

    copied = cli("db", "copy", "--data", data, "--to", url)
    assert copied.returncode == 0, copied.stderr
    assert "copied %d rows of %d tables" % (sum(counts.values()), len(counts)) in copied.stdout
    assert "postgresql://agentgit@/" in copied.stdout
    target = agentgit.open_store(url, data)
    assert {table: target.one("SELECT COUNT(*) FROM %s" % table)[0] for table in counts} == counts
    verified = cli("audit", "verify", "--data", data, "--database", url)
    assert verified.returncode == 0 and "intact: %d rows" % counts["audit"] in verified.stdout, verified.stdout

    srv = agentgit.make_server(data, port=0, database=url).start()          # the same installation, on PostgreSQL
    try:
        assert answered(srv, token) == answers
        issue = api(srv, "POST", "/repos/alice/many/issues", token, {"title": "after the move"})
        assert issue.status == 201 and issue.json["number"] > max(
            i["number"] for i in api(srv, "GET", "/repos/alice/many/issues?state=all&per_page=100", token).json
            if i["id"] != issue.json["id"])
        repo = api(srv, "POST", "/user/repos", token, {"name": "after-the-move"})
        assert repo.status == 201 and repo.json["id"] == counts_next_id(data, "repos")
    finally:
        srv.stop()
    again = cli("db", "copy", "--data", data, "--to", url)                 # never over an installation
    assert again.returncode != 0 and "not empty" in again.stderr


def counts_next_id(data, table):
    """The id SQLite would have given next (AUTOINCREMENT: past every id it ever gave)."""
    db = sqlite3.connect(os.path.join(data, "agentgit.db"))
    return db.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,)).fetchone()[0] + 1


def test_two_servers_on_one_database_number_each_issue_once_and_share_revocations(tmp_path):
    """Two server processes' worth of state (two installations, their own connections and caches) on the
    same data directory and database, as two nodes on a shared volume: racing writers through both."""
    data = tmp_path / "data"
    first = agentgit.make_server(data, port=0).start()
    second = agentgit.make_server(data, port=0).start()
    try:
        alice = first.add_user("alice")
        assert api(first, "POST", "/user/repos", alice, {"name": "busy"}).status == 201
        numbers, failures = [], []

        def open_issues(srv, n):
            for i in range(n):
                made = api(srv, "POST", "/repos/alice/busy/issues", alice, {"title": "issue %d" % i})
                (numbers if made.status == 201 else failures).append(made.json.get("number", made.status))
        writers = [threading.Thread(target=open_issues, args=(srv, 10)) for srv in (first, second) * 3]
        for writer in writers:
            writer.start()
        for writer in writers:
            writer.join()
        assert failures == [] and sorted(numbers) == list(range(1, 61))
        assert len(api(second, "GET", "/repos/alice/busy/issues?per_page=100", alice).json) == 60

        # a token revoked through one server is refused by the other (its cache hears of the commit)
        made = ext(first, "POST", "/user/tokens", alice, {"name": "short", "scopes": ["repo"]}).json
        assert api(second, "GET", "/user", made["token"]).status == 200
        assert ext(first, "DELETE", "/user/tokens/%d" % made["id"], alice).status == 204
        assert api(second, "GET", "/user", made["token"]).status == 401
    finally:
        first.stop()
        second.stop()
    verified = subprocess.run([*CLI, "audit", "verify", "--data", str(data)], capture_output=True, text=True)
    assert verified.returncode == 0 and "intact" in verified.stdout, verified.stdout


def test_two_servers_on_one_database_count_one_rate_limit(tmp_path):
    """A limit of two registrations an address: two through one server, and the other refuses the third."""
    data = tmp_path / "data"
    servers = [agentgit.make_server(data, port=0, registration_limit=2).start() for _ in range(2)]
    try:
        assert [ext(servers[0], "POST", "/agents", None, {"prefix_login": "a"}).status for _ in range(2)] == [201, 201]
        refused = ext(servers[1], "POST", "/agents", None, {"prefix_login": "a"})
        assert refused.status == 429 and int(refused.headers["retry-after"]) > 0
    finally:
        for srv in servers:
            srv.stop()


@sweep
def test_a_postgresql_database_a_version_back_gains_the_tables_it_lacks(tmp_path, postgres_cluster):
    """A version that only adds tables upgrades PostgreSQL by itself, foreign keys and all; one that
    changed columns is refused, by name, with nothing touched."""
    url = postgres_cluster.new_database()
    store = agentgit.open_store(url, str(tmp_path))
    with store.transaction() as db:                  # as version 13 left it: no task_reads
        db.execute("DROP TABLE task_reads")
        db.execute("UPDATE agentgit_schema SET version = 13")
    store.close()
    store = agentgit.open_store(url, str(tmp_path))
    assert store.one("SELECT version FROM agentgit_schema")[0] == agentgit.SCHEMA_VERSION
    with pytest.raises(agentgit.IntegrityError):     # its foreign key came with it
        with store.transaction() as db:
            db.execute("INSERT INTO task_reads (grant_id, kind, resource, what, at) VALUES (1, 'private', 'r', 'w', 'x')")
    with store.transaction() as db:
        db.execute("UPDATE agentgit_schema SET version = 11")
    store.close()
    with pytest.raises(RuntimeError, match="at schema version 11; this agentgit reads %d, and upgrades on PostgreSQL "
                                           "only" % agentgit.SCHEMA_VERSION):
        agentgit.open_store(url, str(tmp_path))


def test_a_database_that_is_wrong_or_absent_is_named_plainly(tmp_path):
    for database, says in (("mysql://root@localhost/agentgit", "a database is postgresql://user@host/name"),
                           ("postgresql://nobody@127.0.0.1:1/agentgit", "cannot reach the PostgreSQL database"),
                           ("postgresql://x@/agentgit?hostaddr=1.2.3.4", "unknown database URL parameters: hostaddr")):
        started = cli("serve", "--port", "0", "--data", str(tmp_path / "data"), "--database", database)
        assert started.returncode != 0 and says in started.stderr and "Traceback" not in started.stderr, started.stderr


def test_each_lane_runs_on_its_own_database(server):
    """(So that a PostgreSQL lane that quietly fell back to SQLite fails.)"""
    assert type(server.app.store).__name__ == ("PostgresStore" if postgresql else "SqliteStore")


def readme_database_lines():
    """The README's commands for moving to PostgreSQL and serving from it, as it gives them."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        block = next(b for b in f.read().split("```") if "db copy --to" in b)
    return [line.split("#")[0].split() for line in block.splitlines() if line.startswith("python agentgit.py ")]


@sweep
def test_the_readmes_commands_move_an_installation_and_serve_it(tmp_path, postgres_cluster):
    data = str(tmp_path / "data")
    srv = agentgit.make_server(data, port=0, database="").start()
    alice = srv.add_user("alice")
    assert api(srv, "POST", "/user/repos", alice, {"name": "moved"}).status == 201
    srv.stop()
    url = postgres_cluster.new_database()                                # empty, as db copy wants it
    lines = [[url if word == README_URL else word for word in line[2:]] + ["--data", data]
             for line in readme_database_lines()]
    assert [line[0] for line in lines] == ["db", "audit", "serve"]
    for line in lines[:2]:
        assert cli(*line).returncode == 0, line
    env = {k: v for k, v in os.environ.items() if k != "AGENTGIT_DATABASE"}
    serving = subprocess.Popen([*CLI, *lines[2], "--port", "0"], stdout=subprocess.PIPE, text=True, env=env)
    try:
        address = serving.stdout.readline().split()[-1]
        banner = serving.stdout.readline()
        assert "database: PostgreSQL postgresql://agentgit@/" in banner, banner
        request = urllib.request.Request(address + "/api/v3/repos/alice/moved", headers={"Authorization": "token " + alice})
        assert json.loads(urllib.request.urlopen(request).read())["full_name"] == "alice/moved"
    finally:
        serving.terminate()
        serving.wait(timeout=30)


README_URL = "postgresql://agentgit@localhost/agentgit"
