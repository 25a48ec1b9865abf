"""Audit: the hash-chained log and its verifier."""

import hashlib
import hmac
import json

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


def audit_append(db, key, principal, surface, decision, side_effect=None):
    """Append one row; call inside a transaction (BEGIN IMMEDIATE keeps the chain's tip stable)."""
    row = {"at": now(), "actor": principal.login, "user_kind": principal.kind, "delegator": principal.delegator,
           "task": principal.grant["task"] if principal.grant else None,
           "grant_id": principal.grant["public_id"] if principal.grant else None, "runtime": principal.runtime,
           "token_fingerprint": principal.fingerprint, "surface": surface, "action": decision.action,
           "resource": decision.resource, "decision": decision.effect,
           "reasons": json.dumps(decision.reasons), "side_effect": side_effect,
           "token_kind": "bootstrap" if principal.bootstrap else principal.token_kind, "rule": decision.rule}
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
    out = {f: row[f] for f in ("id",) + AUDIT_FIELDS + LATER_AUDIT_FIELDS + ("prev_hash", "hash")}
    out["reasons"] = json.loads(row["reasons"])
    return out
