"""REST: deploy keys.

The SSH public keys a repository's admins register for machines. agentgit serves Git over HTTP only, so no key opens anything here: they are kept, checked and listed as
GitHub keeps them, for the tools and the repositories that carry them (gh repo deploy-key). A key is
an OpenSSH public key line; one key is registered once on the whole server, as on GitHub.
"""

import base64
import hashlib
import struct

from agentgit.config import now
from agentgit.storage import insert
from agentgit.errors import HTTPError, invalid
from agentgit.accounts import full_name
from agentgit.routing import route
from agentgit.serializers import user_json_by_id
from agentgit.lookups import find_repo

SSH_KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
                 "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com")
MAX_KEY_BYTES = 16 * 1024


def ssh_public_key(text):
    """'TYPE BASE64' of an OpenSSH public key line (its comment dropped), or 422: the type must be one
    OpenSSH makes and the blob must begin with that same type, as ssh-keygen writes it."""
    words = text.strip().split() if isinstance(text, str) and len(text) <= MAX_KEY_BYTES else []
    try:
        kind, blob = words[0], base64.b64decode(words[1], validate=True)
        (length,) = struct.unpack(">I", blob[:4])
        inner = blob[4:4 + length].decode("ascii")
    except (IndexError, ValueError, struct.error, UnicodeDecodeError):
        kind, inner = None, ""
    if kind not in SSH_KEY_TYPES or inner != kind:
        raise invalid("PublicKey", "key", "custom", "key is invalid. You must supply a key in OpenSSH public key format")
    return "%s %s" % (kind, words[1])


def deploy_key_json(app, repo_row, row):
    return {"id": row["id"], "key": row["key"], "title": row["title"], "verified": True,
            "url": "%s/repos/%s/keys/%d" % (app.api, full_name(repo_row), row["id"]),
            "created_at": row["created_at"], "read_only": bool(row["read_only"]), "last_used": None,
            "added_by": (user_json_by_id(app, row["added_by"]) or {}).get("login"), "enabled": True}


@route("GET", "/api/v3/repos/{owner}/{repo}/keys")
def list_deploy_keys(req, owner, repo):
    row = find_repo(req, owner, repo, "read_deploy_keys")
    rows = req.app.store.all("SELECT * FROM deploy_keys WHERE repo_id = ? ORDER BY id", row["id"])
    return [deploy_key_json(req.app, row, k) for k in req.paginate(rows)]


@route("GET", "/api/v3/repos/{owner}/{repo}/keys/{key_id:int}")
def get_deploy_key(req, owner, repo, key_id):
    row = find_repo(req, owner, repo, "read_deploy_keys")
    key = req.app.store.one("SELECT * FROM deploy_keys WHERE id = ? AND repo_id = ?", int(key_id), row["id"])
    if key is None:
        raise HTTPError(404, "Not Found")
    return deploy_key_json(req.app, row, key)


@route("POST", "/api/v3/repos/{owner}/{repo}/keys")
def add_deploy_key(req, owner, repo):
    row = find_repo(req, owner, repo, "admin_repo")
    body = req.json()
    given = req.field(body, "key", str, "PublicKey", required=True)
    key = ssh_public_key(given)
    # without a title, the key's own comment names it, as GitHub does (`gh repo deploy-key add` sends none)
    title = req.text_field(body, "title", "PublicKey", limit=200) or " ".join(given.split()[2:])[:200]
    read_only = req.field(body, "read_only", bool, "PublicKey", default=True)
    fingerprint = hashlib.sha256(base64.b64decode(key.split()[1])).hexdigest()
    with req.transaction() as db:
        if db.execute("SELECT 1 FROM deploy_keys WHERE fingerprint = ?", (fingerprint,)).fetchone():
            raise invalid("PublicKey", "key", "custom", "key is already in use")
        key_id = insert(db, "INSERT INTO deploy_keys (repo_id, title, key, fingerprint, read_only, added_by, created_at)"
                            " VALUES (?, ?, ?, ?, ?, ?, ?)", (row["id"], title, key, fingerprint, int(read_only),
                                                              req.principal.user_id, now()))
        req.effect("added deploy key %d (%s, SHA256 %s…)" % (key_id, "read-only" if read_only else "read-write",
                                                              fingerprint[:16]))
    return 201, deploy_key_json(req.app, row, req.app.store.one("SELECT * FROM deploy_keys WHERE id = ?", key_id))


@route("DELETE", "/api/v3/repos/{owner}/{repo}/keys/{key_id:int}")
def delete_deploy_key(req, owner, repo, key_id):
    row = find_repo(req, owner, repo, "admin_repo")
    with req.transaction() as db:
        if not db.execute("DELETE FROM deploy_keys WHERE id = ? AND repo_id = ?", (int(key_id), row["id"])).rowcount:
            raise HTTPError(404, "Not Found")
        req.effect("deleted deploy key %d" % int(key_id))
    return 204, None
