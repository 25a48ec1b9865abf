"""Tokens: typed HMAC-signed tokens, their scopes, minting, verification and revocation."""

import hashlib
import hmac
import json
import re
import secrets

from agentgit.config import now
from agentgit.storage import insert_row


# A token is   <prefix>_<32 hex random><16 hex HMAC-SHA256(server key, prefix_random)>.
# The MAC lets a forged or altered token be refused before the database is asked; the database holds
# only sha256(token) and decides expiry and revocation. The prefix tells a reader (and a secret
# scanner) what kind of token leaked: each kind has its own. Agent invites
# use the same form (prefix agi) but are kept apart: they are consent material, never credentials.

# "session": an agent session token, the short-lived token of an agent's standing access (r: runtime);
# "tool": the broker's token for one credential's upstream, under one task (b: broker)
TOKEN_PREFIXES = {"personal": "agp", "agent": "aga", "session": "agr", "switch-session": "ags", "oauth": "ago",
                  "task": "agt", "tool": "agb"}
SESSION_TOKEN_SECONDS = 3600
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


def issue_token(db, key, user_id, kind, name="", scopes=(), expires_at=None, issued_by=None, grant_id=None,
                audience=None, resource=None, credential_id=None, cnf=None, runtime=None):
    """Mint a token, store its hash, return (token, row id). The token itself is shown once. ``resource``
    (RFC 8707) binds it to this server's API or to its MCP endpoint; None: it works on both. ``cnf``
    binds it to its holder's client certificate or DPoP key (it works for that holder only);
    ``runtime``: the runtime identity that minted it, which a revocation may name."""
    token = mint_token(key, TOKEN_PREFIXES[kind])
    token_id = insert_row(db, "tokens", {
        "user_id": user_id, "kind": kind, "name": name, "scopes": ",".join(scopes), "hash": token_hash(token),
        "fingerprint": token_fingerprint(token), "created_at": now(), "expires_at": expires_at,
        "issued_by": issued_by, "grant_id": grant_id,
        "audience": json.dumps(sorted(audience)) if audience is not None else None, "resource": resource,
        "credential_id": credential_id, "cnf": json.dumps(cnf) if cnf else None, "runtime": runtime})
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


def revoke(db, where, args):
    """Revoke the live tokens matching ``where``; returns how many."""
    return db.execute("UPDATE tokens SET revoked_at = ? WHERE revoked_at IS NULL AND (%s)" % where,
                      (now(),) + tuple(args)).rowcount
