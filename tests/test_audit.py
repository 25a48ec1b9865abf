"""The hash-chained audit log: what it records, who may read it, and `audit verify` catching tampering."""
import contextlib
import io
import json
import os
import subprocess

import agentgit
from conftest import CLI, api, call, commit_file, database_of, ext, git, remote


def rows(server, **where):
    sql = "SELECT * FROM audit" + (" WHERE " + " AND ".join("%s = ?" % k for k in where) if where else "")
    return [dict(r) for r in server.app.store.all(sql + " ORDER BY id", *where.values())]


def test_mutations_denials_and_pushes_are_recorded(server, tmp_path):
    alice = server.add_user("alice")
    bob = server.add_user("bob")
    login, agent, full_name = server.add_agent("bot")
    api(server, "POST", "/user/repos", alice, {"name": "demo", "private": True})
    api(server, "PATCH", "/repos/alice/demo", bob, {"description": "x"})             # hidden: 404
    api(server, "PUT", "/repos/alice/demo/collaborators/bob", alice, {"permission": "pull"})
    api(server, "PATCH", "/repos/alice/demo", bob, {"description": "x"})             # visible now: 403
    work = str(tmp_path / "w")
    git(str(tmp_path), "clone", "-q", remote(server, full_name, agent), work)
    sha = commit_file(work, "a.txt", "a")
    git(work, "push", "-q", "origin", "HEAD:main")
    created = rows(server, action="create_repo")[0]
    assert (created["actor"], created["user_kind"], created["decision"], created["side_effect"]) == (
        "alice", "human", "allow", "created alice/demo")
    denials = rows(server, actor="bob", decision="deny")
    assert [d["action"] for d in denials] == ["admin_repo", "admin_repo"]
    assert "bob cannot see repo:alice/demo" in denials[0]["reasons"]
    assert "needs admin on repo:alice/demo; bob has read (collaborator)" in denials[1]["reasons"]
    push = rows(server, action="push_branch", actor=login)[0]
    assert push["surface"] == "git" and push["user_kind"] == "agent" and push["side_effect"].endswith(sha[:12])
    assert push["token_fingerprint"] == agentgit.token_fingerprint(agent)
    assert push["runtime"] == "127.0.0.1"
    # a plain read is not a row; a refused read is
    before = len(rows(server))
    api(server, "GET", "/repos/alice/demo", alice)
    assert len(rows(server)) == before
    # a mutation that fails after being allowed still leaves its row, with how it ended
    api(server, "POST", "/user/repos", alice, {"name": "demo"})
    failed = rows(server, action="create_repo")[-1]
    assert failed["decision"] == "allow" and failed["side_effect"].startswith("refused: HTTP 422")


def test_audit_endpoint_filters_and_scoping(server):
    alice = server.add_user("alice")
    bob = server.add_user("bob")
    api(server, "POST", "/user/repos", alice, {"name": "a1"})
    api(server, "POST", "/user/repos", bob, {"name": "b1"})
    mine = ext(server, "GET", "/audit", bob).json
    assert mine and {r["actor"] for r in mine} == {"bob"}
    assert ext(server, "GET", "/audit?actor=alice", bob).json == []          # a filter narrows; it cannot widen
    admin = server.admin[1]
    every = ext(server, "GET", "/audit?action=create_repo", admin).json
    assert [r["resource"] for r in every] == ["user:alice", "user:bob"]
    page = ext(server, "GET", "/audit?per_page=2", admin)
    assert len(page.json) == 2 and 'rel="next"' in page.headers["link"]
    assert ext(server, "GET", "/audit").status == 401


def test_verify_detects_edits_and_deletions(tmp_path):
    data = str(tmp_path / "d")
    srv = agentgit.make_server(data, port=0).start()
    alice = srv.add_user("alice")
    for i in range(4):
        api(srv, "POST", "/user/repos", alice, {"name": "r%d" % i})
    srv.stop()

    def verify():
        return subprocess.run([*CLI, "audit", "verify", "--data", data],
                              capture_output=True, text=True)
    ok = verify()
    assert ok.returncode == 0 and "intact" in ok.stdout
    db = database_of(data)
    ids = [r[0] for r in db.execute("SELECT id FROM audit ORDER BY id")]
    db.execute("UPDATE audit SET side_effect = 'nothing happened' WHERE id = ?", (ids[3],))
    db.commit()
    broken = verify()
    assert broken.returncode == 1 and "row %d" % ids[3] in broken.stdout
    db.execute("UPDATE audit SET side_effect = 'created alice/r1' WHERE id = ?", (ids[3],))
    db.commit()
    assert verify().returncode == 0                    # restored exactly: intact again
    assert db.execute("SELECT rule FROM audit WHERE id = ?", (ids[3],)).fetchone()[0] == "all"
    db.execute("UPDATE audit SET rule = NULL WHERE id = ?", (ids[3],))       # a field added later, blanked
    db.commit()
    assert verify().returncode == 1
    db.execute("UPDATE audit SET rule = 'all' WHERE id = ?", (ids[3],))
    db.commit()
    assert verify().returncode == 0
    db.execute("DELETE FROM audit WHERE id = ?", (ids[2],))
    db.commit()
    broken = verify()
    assert broken.returncode == 1 and "row %d" % ids[3] in broken.stdout
    # re-hashing the chain without the server key does not help
    rows_ = db.execute("SELECT * FROM audit ORDER BY id").fetchall()
    import hashlib
    prev = agentgit.GENESIS_HASH
    for r in rows_:
        fake = hashlib.sha256((prev + json.dumps(list(r[1:15]))).encode()).hexdigest()
        db.execute("UPDATE audit SET prev_hash = ?, hash = ? WHERE id = ?", (prev, fake, r[0]))
        prev = fake
    db.commit()
    assert verify().returncode == 1


def test_the_newest_rows_cannot_go_unnoticed(tmp_path):
    """The chain alone cannot tell its last rows were deleted; its checkpoint beside the database can,
    and so can a head exported to somewhere else, even once the checkpoint is gone too."""
    data = str(tmp_path / "d")
    srv = agentgit.make_server(data, port=0).start()
    alice = srv.add_user("alice")
    for i in range(3):
        api(srv, "POST", "/user/repos", alice, {"name": "r%d" % i})
    srv.stop()

    def run(*args):
        return subprocess.run([*CLI, "audit", *args, "--data", data], capture_output=True, text=True)
    exported = tmp_path / "head.json"
    exported.write_text(run("head").stdout)
    head = json.loads(exported.read_text())
    assert run("verify").returncode == 0 and run("verify", "--head", str(exported)).returncode == 0
    db = database_of(data)
    last = db.execute("SELECT MAX(id) FROM audit").fetchone()[0]
    assert head["row"] == last
    db.execute("DELETE FROM audit WHERE id >= ?", (last - 1,))              # the newest two rows
    db.commit()
    broken = run("verify")
    assert broken.returncode == 1 and "rows %d to %d are gone" % (last - 1, last) in broken.stdout
    os.unlink(os.path.join(data, "audit-head"))                             # and the checkpoint with them
    gone = run("verify")                                    # a log once checkpointed without its checkpoint
    assert gone.returncode == 1 and "checkpoint beside the database" in gone.stdout and "is gone" in gone.stdout
    assert not os.path.exists(os.path.join(data, "audit-head"))             # and none was made anew at the tail
    forged = dict(head, row=last - 2)
    exported.write_text(json.dumps(forged))
    assert "altered" in run("verify", "--head", str(exported)).stdout       # keyed: not made without the key


def test_a_truncated_log_cannot_outgrow_its_checkpoint(tmp_path):
    """Delete the newest rows, then let the server append more than were deleted (an anonymous client
    can make it): the checkpoint does not move past the break, row ids are not reused, the server says
    so when it starts, and `audit verify` fails however long the log grows."""
    data = str(tmp_path / "d")
    srv = agentgit.make_server(data, port=0).start()
    alice = srv.add_user("alice")
    for i in range(3):
        api(srv, "POST", "/user/repos", alice, {"name": "r%d" % i})
    srv.stop()
    db = database_of(data)
    last = db.execute("SELECT MAX(id) FROM audit").fetchone()[0]
    db.execute("DELETE FROM audit WHERE id >= ?", (last - 2,))
    db.commit()
    log = io.StringIO()
    with contextlib.redirect_stderr(log):
        srv = agentgit.make_server(data, port=0).start()
    try:
        assert "the audit log is broken: row %d" % (last - 2) in log.getvalue()
        for i in range(5):                        # the log grows past where it was cut (anyone can make it grow)
            assert call(srv, "POST", "/api/ext/v1/agents", body={"prefix_login": "bot%d" % i}).status == 201
        assert srv.app.store.one("SELECT MAX(id) FROM audit")[0] > last + 2
        assert srv.app.anchor.read()["row"] == last                  # the checkpoint did not move
        ids = [r[0] for r in srv.app.store.all("SELECT id FROM audit ORDER BY id")]
        assert not set(range(last - 2, last + 1)) & set(ids)        # the deleted ids were not used again
    finally:
        srv.stop()
    broken = subprocess.run([*CLI, "audit", "verify", "--data", data], capture_output=True, text=True)
    assert broken.returncode == 1 and "BROKEN" in broken.stdout
