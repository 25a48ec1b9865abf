"""Vault: external credentials humans and organizations keep here for the broker, sealed at rest.

A credential is for one upstream (its ``base_url``): an API key and where it goes (a header or a query
parameter), a username and password, or an OAuth client with a refresh token and its token endpoint.
Its secret parts are sealed with authenticated encryption under a key derived from the server key and
bound to the credential (its owner, name and upstream), so a database alone reveals nothing and a
sealed value moved to another row does not open. No endpoint ever returns a secret, no audit row or
log line carries one, and no agent may hold, list or change a credential: its owner (a human, or an
organization's admins) manages it.

(The seal is the crypto module's: encrypt-then-MAC with HMAC-SHA256, described there.)
"""

import json
import re
import secrets
import urllib.parse

from agentgit.config import now, visible_ascii
from agentgit.errors import HTTPError, invalid
from agentgit.crypto import seal, unseal
from agentgit.storage import insert_row
from agentgit.accounts import account_by_id, account_by_login
from agentgit.policy import Resource, decide, permission_on
from agentgit.routing import route
from agentgit.lookups import signed_in

CREDENTIAL_KINDS = ("api_key", "basic", "oauth_refresh")
HEADER_NAME_RE = re.compile(r"[A-Za-z0-9-]{1,64}")
MAX_SECRET_BYTES = 16 * 1024


# -- credentials --------------------------------------------------------------------------------

def binding(row):
    """What a credential's sealed secrets are bound to: its row, and everything that decides where and
    how a secret is sent (the upstream, the kind, the placement: the header an API key goes in, an OAuth
    credential's token endpoint). They open in their own row, unchanged, only: an edit of the database
    cannot send a secret anywhere else, nor in another way."""
    return json.dumps(["credential-v2", row["public_id"], row["owner_id"], row["name"], row["kind"], row["base_url"],
                       row["placement"]]).encode()


def open_sealed(key, purpose, row, column):
    """A credential's sealed secret, opened; 502 when its record was changed since it was sealed."""
    try:
        return unseal(key, purpose, row[column], binding(row))
    except ValueError:
        raise HTTPError(502, "The credential %s does not open: its record was changed since its secret was sealed; "
                             "its owner sets the secret again" % row["public_id"])


def reseal_v1_credentials(store, key):
    """Once, as the first server of this version starts: secrets sealed before the binding covered the
    kind and placement are sealed anew, to the rows as they are. The settings row says it was done, so
    the old binding is never accepted after. A row that does not open either way is left as it is."""
    if store.one("SELECT 1 FROM settings WHERE name = 'credential_binding' AND value = 'v2'"):
        return
    with store.transaction() as db:
        for row in db.execute("SELECT * FROM broker_credentials").fetchall():
            v1 = ("credential %s %d %s %s" % (row["public_id"], row["owner_id"], row["name"], row["base_url"])).encode()
            for column, purpose in (("sealed", b"broker credential"), ("access_sealed", b"broker access token")):
                try:
                    value = unseal(key, purpose, row[column], v1) if row[column] else None
                except ValueError:
                    continue
                if value is not None:
                    db.execute("UPDATE broker_credentials SET %s = ? WHERE id = ?" % column,
                               (seal(key, purpose, value, binding(row)), row["id"]))
        db.execute("INSERT INTO settings (name, value) VALUES ('credential_binding', 'v2')"
                   " ON CONFLICT (name) DO UPDATE SET value = excluded.value")


def credential_by_name(store, name):
    """(row, owner row) of credential:OWNER/NAME (or its bc_ id), or (None, None)."""
    name = name[len("credential:"):] if isinstance(name, str) and name.startswith("credential:") else name
    if not isinstance(name, str):
        return None, None
    if name.startswith("bc_"):
        row = store.one("SELECT * FROM broker_credentials WHERE public_id = ?", name)
    else:
        owner_login, _, credential_name = name.partition("/")
        owner = account_by_login(store, owner_login)
        row = store.one("SELECT * FROM broker_credentials WHERE owner_id = ? AND name = ?", owner["id"],
                        credential_name) if owner is not None else None
    return (row, account_by_id(store, row["owner_id"])) if row is not None else (None, None)


def held_credential(store, holder, name):
    """(row, Resource) of credential ``name`` when ``holder`` holds it at all (its owner, or a member of
    the organization that owns it), else (None, None)."""
    row, owner = credential_by_name(store, name)
    if row is None or permission_on(store, holder, Resource.credential(row, owner))[0] == "none":
        return None, None
    return row, Resource.credential(row, owner)


def credential_json(app, row):
    """Everything about a credential but its secret."""
    owner = account_by_id(app.store, row["owner_id"])
    return {"id": row["public_id"], "name": row["name"], "kind": row["kind"], "base_url": row["base_url"],
            "owner": ("org:" if owner["kind"] == "org" else "user:") + owner["login"],
            "placement": json.loads(row["placement"]), "created_at": row["created_at"],
            "rotated_at": row["rotated_at"], "secret": "(sealed; never shown)"}


def credential_owner(req, owner):
    """The account a credential belongs to (user:login or org:login, default the caller), once the
    caller may manage its credentials: herself, or an organization she administers. Agents never."""
    user = signed_in(req)
    kind, _, login = (owner or "user:" + user["login"]).partition(":")
    row = account_by_login(req.app.store, login) if kind in ("user", "org") else None
    if row is not None:
        req.authorize("manage_credentials", Resource.account(row))     # an agent is refused here, whoever it names
    if row is None or (kind == "org") != (row["kind"] == "org") or row["kind"] == "agent":
        raise invalid("Credential", "owner", message="owner is user:LOGIN (you) or org:LOGIN (an organization you "
                                                     "administer)")
    return row


def upstream_url(text):
    """An upstream's base URL: https (or http, for loopback upstreams the operator allows), no
    credentials, query or fragment in it."""
    parts = urllib.parse.urlsplit(text) if isinstance(text, str) and visible_ascii(text) and len(text) <= 500 else None
    if parts is None or parts.scheme not in ("https", "http") or not parts.hostname or parts.username or \
            parts.password or parts.query or parts.fragment:
        raise invalid("Credential", "base_url", message="base_url is an http(s) URL with no user, query or fragment")
    return text.rstrip("/")


def credential_secret(req, body, kind):
    """(placement shown to the owner, secret parts to seal) for ``kind``, checked."""
    def text(name, required=True):
        value = req.field(body, name, str, "Credential", required=required)
        if value is not None and len(value.encode()) > MAX_SECRET_BYTES:
            raise invalid("Credential", name, message="%s is at most %d bytes" % (name, MAX_SECRET_BYTES))
        return value
    if kind == "api_key":
        header, query = req.field(body, "header", str, "Credential"), req.field(body, "query_parameter", str,
                                                                                "Credential")
        if (header is None) == (query is None) or not HEADER_NAME_RE.fullmatch(header or query):
            raise invalid("Credential", "header", message="an API key goes in one header or one query parameter "
                                                          "(letters, digits and -)")
        return {"header": header} if header else {"query_parameter": query}, {"value": text("value")}
    if kind == "basic":
        return {"username": text("username")}, {"password": text("password")}
    token_endpoint = upstream_url(req.field(body, "token_endpoint", str, "Credential", required=True))
    return ({"client_id": text("client_id"), "token_endpoint": token_endpoint, "scope": text("scope", False)},
            {"client_secret": text("client_secret", False), "refresh_token": text("refresh_token")})


@route("POST", "/api/ext/v1/broker/credentials")
def create_credential(req):
    """Store a credential for one upstream, for the caller or an organization she administers; its
    secret is sealed at once and never shown again."""
    body = req.json()
    owner = credential_owner(req, req.field(body, "owner", str, "Credential"))
    name = req.field(body, "name", str, "Credential", required=True)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name):
        raise invalid("Credential", "name", message="a name is letters, digits, _ . and -, at most 64")
    kind = req.field(body, "kind", str, "Credential", required=True)
    if kind not in CREDENTIAL_KINDS:
        raise invalid("Credential", "kind", message="kind is api_key, basic or oauth_refresh")
    base_url = upstream_url(req.field(body, "base_url", str, "Credential", required=True))
    placement, secret = credential_secret(req, body, kind)
    with req.transaction() as db:
        if db.execute("SELECT 1 FROM broker_credentials WHERE owner_id = ? AND name = ?", (owner["id"], name)).fetchone():
            raise invalid("Credential", "name", "already_exists", "%s already has a credential %s" % (owner["login"],
                                                                                                     name))
        row = {"public_id": "bc_" + secrets.token_hex(8), "owner_id": owner["id"], "name": name, "kind": kind,
               "base_url": base_url, "placement": json.dumps(placement), "created_at": now()}
        row["sealed"] = seal(req.app.key, b"broker credential", json.dumps(secret).encode(), binding(row))
        insert_row(db, "broker_credentials", row)
        req.effect("stored credential %s (%s for %s), sealed" % (row["public_id"], kind, base_url))
    return 201, credential_json(req.app, req.app.store.one("SELECT * FROM broker_credentials WHERE public_id = ?",
                                                           row["public_id"]))


def find_credential(req, credential_id, action):
    """A credential the caller may manage; 404 for one she may not (or that does not exist)."""
    signed_in(req)
    row = req.app.store.one("SELECT * FROM broker_credentials WHERE public_id = ?", credential_id)
    if row is None:
        raise HTTPError(404, "Not Found")
    owner = account_by_id(req.app.store, row["owner_id"])
    decision = decide(req.app.store, req.principal, action, Resource.account(owner))
    if not decision.allowed:
        req.record_refusal(decision)     # an attempt on a credential is always recorded
        raise HTTPError(404, "Not Found")          # but not even that it exists, to anyone else (an agent too)
    req.authorize(action, Resource.account(owner))
    return row


@route("GET", "/api/ext/v1/broker/credentials")
def list_credentials(req):
    """The credentials of the caller and of the organizations she administers; never a secret."""
    user = signed_in(req)
    req.check("read_credentials", Resource.account(user))
    rows = [r for r in req.app.store.all("SELECT * FROM broker_credentials ORDER BY id")
            if req.can("read_credentials", Resource.account(account_by_id(req.app.store, r["owner_id"])))]
    return [credential_json(req.app, r) for r in req.paginate(rows)]


@route("GET", "/api/ext/v1/broker/credentials/{credential_id}")
def get_credential(req, credential_id):
    """One credential, without its secret, to its owner (or the organization's admins)."""
    return credential_json(req.app, find_credential(req, credential_id, "read_credentials"))


@route("PUT", "/api/ext/v1/broker/credentials/{credential_id}/secret")
def rotate_credential(req, credential_id):
    """A new secret for the same credential (its kind's fields, as at creation), sealed anew."""
    row = find_credential(req, credential_id, "manage_credentials")
    placement, secret = credential_secret(req, req.json(), row["kind"])
    rotated = dict(row, placement=json.dumps(placement))
    with req.transaction() as db:
        db.execute("UPDATE broker_credentials SET placement = ?, sealed = ?, access_sealed = NULL, rotated_at = ?"
                   " WHERE id = ?", (rotated["placement"], seal(req.app.key, b"broker credential",
                                                                json.dumps(secret).encode(), binding(rotated)),
                                     now(), row["id"]))
        req.effect("rotated credential %s" % row["public_id"])
    return credential_json(req.app, req.app.store.one("SELECT * FROM broker_credentials WHERE id = ?", row["id"]))


@route("DELETE", "/api/ext/v1/broker/credentials/{credential_id}")
def delete_credential(req, credential_id):
    """The credential and its sealed secret, gone."""
    row = find_credential(req, credential_id, "manage_credentials")
    with req.transaction() as db:
        db.execute("DELETE FROM broker_credentials WHERE id = ?", (row["id"],))
        req.effect("deleted credential %s" % row["public_id"])
    return 204, None
