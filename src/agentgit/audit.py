"""Audit: the hash-chained log and its verifier."""

import fcntl
import hashlib
import hmac
import json
import os
import sys
import threading

from agentgit.config import now
from agentgit.storage import insert_row


# Each row's hash is an HMAC (server key) over the previous row's hash and its own fields, so editing
# or deleting a row, or re-hashing the chain without the key, is caught by ``audit verify``.

AUDIT_FIELDS = ("at", "actor", "user_kind", "delegator", "task", "grant_id", "runtime", "token_fingerprint",
                "surface", "action", "resource", "decision", "reasons", "side_effect")
# Fields added later join the hash only where a row has them, so rows written before still verify, and
# blanking one in a newer row breaks the chain like any other edit.
LATER_AUDIT_FIELDS = ("token_kind", "rule")
GENESIS_HASH = "0" * 64


def audit_hash(key, prev_hash, row):
    fields = [row.get(f) for f in AUDIT_FIELDS] + [[f, row[f]] for f in LATER_AUDIT_FIELDS if row.get(f) is not None]
    payload = prev_hash + json.dumps(fields, separators=(",", ":"))
    return hmac.new(key, payload.encode(), hashlib.sha256).hexdigest()


def audit_row(principal, surface, decision):
    """The fields of an audit row that say who decided what (all but the time, the side effect and the chain)."""
    return {"actor": principal.login, "user_kind": principal.kind, "delegator": principal.delegator,
            "task": principal.grant["task"] if principal.grant else None,
            "grant_id": principal.grant["public_id"] if principal.grant else None, "runtime": principal.runtime,
            "token_fingerprint": principal.fingerprint, "surface": surface, "action": decision.action,
            "resource": decision.resource, "decision": decision.effect, "reasons": json.dumps(decision.reasons),
            "token_kind": "bootstrap" if principal.bootstrap else principal.token_kind, "rule": decision.rule}


def append_audit_row(db, key, fields, side_effect=None):
    """Append one row of ``audit_row()`` fields; call inside a transaction (BEGIN IMMEDIATE keeps the
    chain's tip stable)."""
    row = dict(fields, at=now(), side_effect=side_effect)
    tip = db.execute("SELECT hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
    row["prev_hash"] = tip["hash"] if tip else GENESIS_HASH
    row["hash"] = audit_hash(key, row["prev_hash"], row)
    return insert_row(db, "audit", row)


def audit_append(db, key, principal, surface, decision, side_effect=None):
    return append_audit_row(db, key, audit_row(principal, surface, decision), side_effect)


def heads_broken(store, key, heads):
    """(row, what is wrong) for the first of ``heads`` (checkpoints of the chain's head, {"row", "hash",
    "mac"}) the log no longer holds as it was seen, or None when every one still is there."""
    for head in heads:
        if not isinstance(head, dict) or not hmac.compare_digest(head_mac(key, head.get("row"), head.get("hash")),
                                                                 str(head.get("mac", ""))):
            return (head.get("row") if isinstance(head, dict) else 0) or 0, \
                "a checkpoint of the head was altered (or made without the key)"
        if head["row"] == 0:
            continue
        tip = store.one("SELECT hash FROM audit WHERE id = ?", head["row"])
        if tip is None:
            last = store.one("SELECT MAX(id) AS id FROM audit WHERE id < ?", head["row"])["id"] or 0
            return last + 1, "rows %d to %d are gone: a checkpoint saw them" % (last + 1, head["row"])
        if tip["hash"] != head["hash"]:
            return head["row"], "row %d is not the row a checkpoint saw" % head["row"]
    return None


def audit_verify(store, key, heads=()):
    """(ok, rows checked, first broken row id or None, what is wrong). ``heads`` are checkpoints of the
    chain's head (the anchor's and its history, an exported one): each row they name must be there
    with that hash, so rows deleted from the end are caught as well as rows edited anywhere."""
    broken = heads_broken(store, key, heads)
    if broken:
        return False, 0, broken[0], broken[1]
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


def head_mac(key, row_id, row_hash):
    return hmac.new(key, ("audit-head:%s:%s" % (row_id, row_hash)).encode(), hashlib.sha256).hexdigest()


def audit_head(db, key):
    """The chain's head, keyed with the server key: {"row", "hash", "mac"} (row 0 for an empty log)."""
    tip = db.execute("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
    row_id, row_hash = (tip["id"], tip["hash"]) if tip else (0, GENESIS_HASH)
    return {"row": row_id, "hash": row_hash, "mac": head_mac(key, row_id, row_hash)}


class AuditAnchor:
    """A checkpoint of the chain's head kept beside the database (data dir/audit-head), brought up to
    date after every commit: the chain alone cannot tell that its newest rows were deleted, the
    checkpoint can. Writers in several processes (the server, the CLI) only ever move it forward, and
    each move first proves continuity: the rows the checkpoint and its history saw are still there with
    the hashes they had. So a log whose tail was deleted and then grew again past the checkpoint is
    not vouched for; the checkpoint stays where it was, and ``broken`` says what is wrong (the server
    says it at start, `audit verify` fails on it). The history keeps one checkpoint per ANCHOR_SPACING
    rows. A log once checkpointed (the settings row audit_anchored) that has none beside it lost it.

    The CLI writes it as it commits. A server has it written by a thread of its own (follow()), woken
    by each commit: a request does not wait for the file's writes (a fifth of a small write's time),
    and commits that come together cost one write; stop_following() writes the last one."""

    def __init__(self, path, key):
        self.path, self.key, self.seen, self.broken = path, key, None, None
        self.moved, self.follower = threading.Event(), None

    def attach(self, store):
        """Keep up after each commit of ``store``, in the committing thread (the CLI's way), from now on."""
        self.check_presence(store)
        store.after_commit = lambda: self.keep_up(store)
        self.keep_up(store)

    def check_presence(self, store):
        anchored = store.one("SELECT 1 FROM settings WHERE name = 'audit_anchored'")
        if self.read() is None and anchored and store.one("SELECT MAX(id) AS id FROM audit")["id"]:
            self.broken = "the checkpoint beside the database (%s) is gone; the log had one" % self.path
        elif not anchored:          # (an installation from before checkpoints gets its first now)
            with store.transaction() as db:
                db.execute("INSERT INTO settings (name, value) VALUES ('audit_anchored', '1')"
                           " ON CONFLICT (name) DO UPDATE SET value = excluded.value")

    def follow(self, store):
        def loop():
            while self.follower is not None:
                self.moved.wait()
                self.moved.clear()
                try:
                    self.keep_up(store)
                except OSError as error:         # a full disk: said, and tried again at the next commit
                    print("agentgit: cannot write the audit checkpoint: %s" % error, file=sys.stderr)
        self.follower = threading.Thread(target=loop, daemon=True, name="agentgit-audit-checkpoint")
        self.follower.start()
        store.after_commit = self.moved.set

    def stop_following(self, store):
        follower, self.follower = self.follower, None
        if follower is not None:
            self.moved.set()
            follower.join(10)
        self.attach(store)

    def read(self):
        try:
            with open(self.path, encoding="utf-8") as f:
                kept = json.load(f)
            return kept if isinstance(kept, dict) else None
        except (OSError, ValueError):
            return None

    def checkpoints(self):
        """The checkpoint and its history: what `audit verify` holds the log to."""
        kept = self.read()
        if kept is None:
            return []
        history = kept.get("history") if isinstance(kept.get("history"), list) else []
        return [{k: kept.get(k) for k in ("row", "hash", "mac")}] + history

    def keep_up(self, store):
        head = audit_head(store.db, self.key)
        if head["row"] == self.seen or self.broken:
            return
        with open(self.path + ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            kept = self.read()
            if kept is not None:        # (the latest checkpoint: an older row edited is the chain's to show)
                broken = heads_broken(store, self.key, self.checkpoints()[:1])
                if broken:
                    self.broken = "row %d: %s" % broken
                    print("agentgit: the audit log broke (%s); its checkpoint stays where it was" % self.broken,
                          file=sys.stderr)
                    return
            if kept is None or head["row"] > kept.get("row", -1):
                history = self.checkpoints()[1:]
                if kept is not None and head["row"] // ANCHOR_SPACING > kept["row"] // ANCHOR_SPACING:
                    history.append({k: kept[k] for k in ("row", "hash", "mac")})
                scratch = "%s.%d" % (self.path, os.getpid())
                fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w") as f:
                    json.dump(dict(head, history=history), f)
                os.replace(scratch, self.path)
        self.seen = head["row"]


ANCHOR_SPACING = 1000


def audit_json(row):
    out = {f: row[f] for f in ("id",) + AUDIT_FIELDS + LATER_AUDIT_FIELDS + ("prev_hash", "hash")}
    out["reasons"] = json.loads(row["reasons"])
    return out


AUDIT_EXPLAINED = (("agent or actor", "actor"), ("kind", "user_kind"), ("acting for", "delegator"), ("task", "task"),
                   ("grant", "grant_id"), ("runtime", "runtime"), ("surface", "surface"), ("resource", "resource"),
                   ("action", "action"), ("decision", "decision"), ("rule", "rule"), ("token", "token_fingerprint"),
                   ("token kind", "token_kind"), ("side effect", "side_effect"), ("at", "at"))


def explain(row):
    """The whole chain of one decision, a line each, with the rules that decided it."""
    lines = ["%-15s %s" % (label, row[key] if row[key] is not None else "-") for label, key in AUDIT_EXPLAINED]
    lines += ["%-15s %s" % ("because" if i == 0 else "", reason) for i, reason in enumerate(json.loads(row["reasons"]))]
    return "\n".join(lines)
