"""Accounts: humans, agents and organizations, passwords and TOTP, and the repository rows they own."""

import hashlib
import hmac
import os
import secrets
import shutil
import tempfile
import time

from agentgit.config import LOGIN_RE, now
from agentgit.crypto import seal, unseal
from agentgit.storage import insert, insert_row
from agentgit.gitstore import init_repository, repo_dir
from agentgit.tokens import AGENT_SCOPES, ALL_SCOPES, issue_token, revoke


# One table holds humans, agents and organizations, so a login is unique across all three (as on
# GitHub) and a repository owner is simply an account.

TOTP_PURPOSE = b"totp secret"


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


def sealed_totp_secret(key, account_id, secret):
    """An account's TOTP secret as stored: sealed, bound to the account, so a database alone reveals
    nothing, a secret copied to another account's row does not open, and enrolling again gives an
    unrelated ciphertext."""
    return seal(key, TOTP_PURPOSE, secret, b"account:%d" % account_id)


def totp_secret(key, account):
    stored = account["totp_secret"]
    if not stored:
        return None
    return unseal(key, TOTP_PURPOSE, stored, b"account:%d" % account["id"])


def reseal_legacy_totp_secrets(store, key):
    """Secrets stored before the seal (XORed with a keystream fixed per account, which enrolling again
    reused, so two of them XORed gave away the XOR of the secrets) are sealed in their place. Run as an
    installation opens its database: the old form is read nowhere else."""
    legacy = store.all("SELECT id, totp_secret FROM accounts WHERE totp_secret IS NOT NULL AND totp_secret NOT LIKE 'v1.%'")
    if not legacy:
        return
    with store.transaction() as db:
        for row in legacy:
            mask = hmac.new(key, b"totp:%d" % row["id"], hashlib.sha256).digest()[:20]
            secret = bytes(a ^ b for a, b in zip(bytes.fromhex(row["totp_secret"]), mask))
            db.execute("UPDATE accounts SET totp_secret = ? WHERE id = ?", (sealed_totp_secret(key, row["id"], secret),
                                                                          row["id"]))


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


# The nine labels GitHub gives every new repository (gh issue create --label bug counts on them)
DEFAULT_LABELS = (("bug", "d73a4a", "Something isn't working"),
                  ("documentation", "0075ca", "Improvements or additions to documentation"),
                  ("duplicate", "cfd3d7", "This issue or pull request already exists"),
                  ("enhancement", "a2eeef", "New feature or request"), ("good first issue", "7057ff", "Good for newcomers"),
                  ("help wanted", "008672", "Extra attention is needed"), ("invalid", "e4e669", "This doesn't seem right"),
                  ("question", "d876e3", "Further information is requested"),
                  ("wontfix", "ffffff", "This will not be worked on"))


def create_repository(app, db, owner, name, private, auto_init, description=None, homepage=None,
                      default_branch="main", parent_id=None, forked_by=None):
    """Inside the caller's transaction: build the bare repository in a scratch directory, insert its
    row, and move the directory into place. If anything raises, the transaction rolls back and the
    scratch directory goes; repository ids are never reused, so nothing stale can collide later."""
    scratch = tempfile.mkdtemp(prefix=".new-", dir=app.repos_dir)
    try:
        init_repository(scratch, default_branch,
                        initial=(owner["login"], noreply_email(owner["login"]), name) if auto_init else None)
        stamp = now()
        repo_id = insert(
            db, "INSERT INTO repos (owner_id, name, description, homepage, private, default_branch, created_at,"
            " updated_at, pushed_at, parent_id, forked_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (owner["id"], name, description, homepage, int(bool(private)), default_branch, stamp, stamp,
             stamp if auto_init else None, parent_id, forked_by))
        db.executemany("INSERT INTO labels (repo_id, name, color, description) VALUES (?, ?, ?, ?)",
                       [(repo_id,) + label for label in DEFAULT_LABELS])
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
    sessions = revoke(db, "kind IN ('switch-session', 'session') AND issued_by = ?", (account["id"],))
    return "suspended %s; revoked %d switch and agent sessions" % (account["login"], sessions)


def permission_of_org_member(store, org_id, user_id):
    """'admin', 'member' or None. An agent's membership that came with an invite's team grant lasts
    while its grantor is a member herself and not suspended."""
    row = store.one("SELECT role, granted_by FROM org_members WHERE org_id = ? AND user_id = ?", org_id, user_id)
    if row is None:
        return None
    if row["granted_by"] is not None:
        grantor = account_by_id(store, row["granted_by"])
        if grantor is None or grantor["suspended_at"] or permission_of_org_member(store, org_id, grantor["id"]) is None:
            return None
    return row["role"]


REPO_SELECT = ("SELECT r.*, a.login AS owner_login, a.kind AS owner_kind, a.site_admin AS owner_site_admin"
               " FROM repos r JOIN accounts a ON a.id = r.owner_id")


def full_name(row):
    return "%s/%s" % (row["owner_login"], row["name"])


def lookup_repo(store, owner, name):
    return store.cached(("repo", owner.lower(), name.lower()),
                        lambda: store.one(REPO_SELECT + " WHERE a.login = ? AND r.name = ?", owner, name))


def signature(user):
    return "%s <%s>" % (user["name"] or user["login"], noreply_email(user["login"]))


def network_root(store, row):
    while row["parent_id"] is not None:
        parent = repo_by_id(store, row["parent_id"])
        if parent is None:
            break
        row = parent
    return row


def repo_by_id(store, repo_id):
    return store.one(REPO_SELECT + " WHERE r.id = ?", repo_id)


def repo_by_full_name(store, full):
    owner, _, name = (full or "").partition("/")
    return lookup_repo(store, owner, name) if owner and name else None


def team_by_slug(store, org_login, slug):
    return store.one("SELECT t.*, a.login AS org_login FROM teams t JOIN accounts a ON a.id = t.org_id"
                     " WHERE a.login = ? AND t.slug = ?", org_login, slug)
