"""Authentication: the Principal, and the request credentials it is built from."""

import base64
import dataclasses
import json
import re
import secrets
import time

from agentgit.config import LOGIN_RE, now
from agentgit.errors import HTTPError
from agentgit.crypto import decode_jws, rs256_valid, rsa_public_key
from agentgit.tokens import AGENT_SCOPES, ALL_SCOPES, expand_scopes, token_fingerprint, verify_token
from agentgit.proofs import DPoPError, check_dpop_proof, dpop_nonce
from agentgit.accounts import account_by_id, account_by_login, check_totp, insert_account
from agentgit.ledger import Ledger


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
    bootstrap: bool = False             # an agent's own long-lived token where agents' are bootstrap credentials
    standing_read: bool = False         # an agent outside a task where the installation caps its standing access:
                                        # read at most on what is not its own
    audience: frozenset = None          # an agent session token: the repositories it is for (None: any)
    operator: bool = False              # the CLI: whoever can read the data directory
    stepped_up_at: str = None           # when the holder last confirmed a TOTP code (step-up, RFC 9470)
    resource: str = None                # RFC 8707: the one resource the token is for (its audience); None: any
    runtime_id: str = None              # the runtime identity its client certificate proves (a SPIFFE ID)
    certificate: str = None             # x5t#S256 of the client certificate this connection presented
    dpop_key: str = None                # the thumbprint of the key of this request's valid DPoP proof
    credential_id: int = None           # a tool token: the one credential it is for
    token_life: tuple = None            # (issued at, expires at) of its token, as the tokens row says

    def confirmation(self):
        """What a token minted for this principal now is bound to (RFC 8705 / RFC 9449 cnf), or None."""
        cnf = {"x5t#S256": self.certificate, "jkt": self.dpop_key}
        return {k: v for k, v in cnf.items() if v} or None

    @property
    def login(self):
        return self.user["login"] if self.user is not None else None

    @property
    def user_id(self):
        return self.user["id"] if self.user is not None else None

    @property
    def kind(self):
        if self.user is not None:
            return self.user["kind"]
        return "operator" if self.operator else "anonymous"


def credentials_from_header(value):
    """The token in an Authorization header: 'token X', 'Bearer X', 'DPoP X' (RFC 9449), or Basic with the token as password
    (or as username, as some clients send it with an empty or 'x-oauth-basic' password)."""
    scheme, _, rest = (value or "").strip().partition(" ")
    scheme, rest = scheme.lower(), rest.strip()
    if scheme in ("token", "bearer", "dpop"):
        return rest
    if scheme == "basic":
        try:
            user, _, password = base64.b64decode(rest, validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return ""
        return password if password not in ("", "x-oauth-basic") else user
    return ""


@dataclasses.dataclass
class Presented:
    """What a request presents besides its token: the connection's client certificate (verified
    against the operator's client CA), and a DPoP proof, with the method and URL it must be for."""
    method: str = ""
    url: str = ""                       # the request's URL without its query: a DPoP proof's htu
    certificate: str = None             # x5t#S256 of the client certificate
    runtime_id: str = None              # the certificate's URI SAN: the runtime's identity
    dpop: str = None                    # the DPoP header
    address: str = ""                   # the peer's address: where failed proofs are counted
    identity_problem: str = None        # why the certificate's runtime identity cannot be read (two URI SANs ...)


def dpop_refusal(app, description, error="invalid_dpop_proof"):
    """RFC 9449 §7.1: 401 with a DPoP challenge (and, for use_dpop_nonce, the nonce to use)."""
    headers = {"WWW-Authenticate": 'DPoP error="%s", error_description="%s", algs="ES256"' % (
        error, description.replace('"', "'"))}
    if error == "use_dpop_nonce":
        headers["DPoP-Nonce"] = dpop_nonce(app.key)
    return HTTPError(401, "Bad credentials: %s" % description, headers=headers)


def check_presented(app, principal, presented, scheme, token, cnf):
    """The sender constraints of a request: a DPoP proof (when sent) verified, and a bound token
    presented by its holder only: over a connection with its certificate, with a proof by its key.
    ``scheme`` is the Authorization header's; "subject" for an RFC 8693 subject token, whose holder
    proves itself with the token request's own proof (which has no ath, RFC 9449 §5)."""
    if presented.identity_problem:
        raise HTTPError(401, "Bad credentials: %s" % presented.identity_problem, headers={
            "WWW-Authenticate": 'Bearer error="invalid_token", error_description="the client certificate\'s runtime '
                                'identity is not one SPIFFE ID"'})
    principal.certificate, principal.runtime_id = presented.certificate, presented.runtime_id
    if presented.runtime_id:
        principal.runtime = "%s %s" % (principal.runtime, presented.runtime_id)
    if presented.dpop is not None:
        failures = "address:" + presented.address
        retry = app.failed_proofs.wait(failures)
        if retry:
            raise dpop_refusal(app, "too many DPoP proofs with bad signatures from this address; retry in %d s" % retry)
        try:
            principal.dpop_key = check_dpop_proof(presented.dpop, presented.method, presented.url, app.key,
                                                  app.dpop_replay, token if scheme == "dpop" else None,
                                                  app.config.dpop_nonce, (cnf or {}).get("jkt"))
        except DPoPError as error:
            if error.signature_failed:
                app.failed_proofs.hit(failures)
            raise dpop_refusal(app, error.description, error.error)
    if cnf is None:
        if scheme == "dpop":
            raise dpop_refusal(app, "this token is not DPoP-bound; send it as a Bearer token", "invalid_token")
        return
    if cnf.get("x5t#S256") and cnf["x5t#S256"] != presented.certificate:
        raise HTTPError(401, "Bad credentials: this token is bound to a client certificate this connection did not "
                             "present", headers={"WWW-Authenticate": 'Bearer error="invalid_token", '
                                                 'error_description="certificate-bound token (RFC 8705)"'})
    if cnf.get("jkt") and (scheme not in ("dpop", "subject") or principal.dpop_key != cnf["jkt"]):
        raise dpop_refusal(app, "this token is DPoP-bound: send it as Authorization: DPoP with a proof by its key"
                           if scheme not in ("dpop", "subject") or principal.dpop_key is None else
                           "the DPoP proof is signed by another key than the token is bound to", "invalid_token")


def authenticate(app, headers, client_address, peer_cert=None, presented=None, subject=False):
    """Build the Principal for a request; raise 401 'Bad credentials' for any token that is not live.
    ``subject``: the token is an exchange's subject_token, not the request's own credential.

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
        principal = Principal(runtime=runtime)
        check_presented(app, principal, presented or Presented(), "", None, None)
        return principal
    token = credentials_from_header(header)
    if token.count(".") == 2:        # a JWT: a GitHub App proving itself (agentgit's own tokens have no dots)
        principal = app_principal(app, token, runtime)
        check_presented(app, principal, presented or Presented(), header.strip().partition(" ")[0].lower(), token, None)
        return principal
    row = verify_token(app.store, app.key, token) if token else None
    if row is None:
        raise HTTPError(401, "Bad credentials")
    app.touch_token(row["id"])
    granted, scopes, scopes_header = app.store.cached(("scopes", row["id"]), lambda: token_scopes(row))
    user = app.store.cached(("account", row["user_id"]), lambda: account_by_id(app.store, row["user_id"]))
    principal = Principal(user=user, token_id=row["id"], token_kind=row["kind"], fingerprint=row["fingerprint"],
                          scopes=scopes, scopes_header=scopes_header, runtime=runtime, credential_id=row["credential_id"],
                          token_life=(row["created_at"], row["expires_at"]))
    check_presented(app, principal, presented or Presented(), "subject" if subject else header.strip().partition(
        " ")[0].lower(), token, json.loads(row["cnf"]) if row["cnf"] else None)
    if user["totp_secret"] or row["kind"] == "switch-session":      # a switch session steps up with its human's
        principal.stepped_up_at = app.store.cached(("step-up", row["id"]), lambda: (app.store.one(
            "SELECT at FROM step_ups WHERE token_id = ?", row["id"]) or {"at": None})["at"])
    if user["kind"] == "agent":
        name_delegator(app.store, principal)
    principal.bootstrap = row["kind"] == "agent" and app.agent_credentials == "bootstrap"
    principal.standing_read = user["kind"] == "agent" and row["kind"] not in ("task", "tool") and \
        app.agent_standing_access == "read"
    if row["audience"] is not None:
        principal.audience = frozenset(json.loads(row["audience"]))
    principal.resource = row["resource"]
    if row["kind"] in ("task", "tool"):
        grant = app.store.cached(("grant", row["grant_id"]), lambda: load_grant(app.store, row["grant_id"]))
        if grant is None:
            raise HTTPError(401, "Bad credentials")
        if grant["revoked_at"] or grant["expires_at"] <= now():
            # a genuine token (its tag checks out) of a dead grant: a replay worth a row in the audit log
            principal.grant, principal.delegator = grant, grant["delegator_login"]
            Ledger(app, principal, "auth").refuse("use_task_token", "user:" + user["login"], [
                "task grant %s is %s" % (grant["public_id"], "revoked" if grant["revoked_at"] else "expired")])
            raise HTTPError(401, "Bad credentials")
        # a task token's scopes are the actions it was minted for (never more than its grant gives)
        hold_task_grant(principal, grant, granted)
    if row["kind"] == "switch-session":
        switched = account_by_id(app.store, row["issued_by"]) if row["issued_by"] else None
        principal.switched_by = switched["login"] if switched else "?"
        principal.runtime = "%s switch-session:%s" % (runtime, principal.switched_by)
    return principal


APP_JWT_MAX_BYTES = 8192
APP_JWT_MAX_SECONDS = 600           # GitHub's rule: a JWT expires at most ten minutes after it was issued
APP_JWT_SKEW = 60                   # seconds a client's clock may run ahead of the server's


def app_principal(app, token, runtime):
    """A GitHub App proving itself with a JWT, by GitHub's rules: RS256, signed by one of the App's keys,
    ``iss`` its App ID (or client ID), ``iat`` in the past and ``exp`` at most ten minutes after it and in
    the future. The principal is the App's agent account holding an "app" token, which reaches the App's
    own endpoints only (policy's rule_standing); 401 with GitHub's words for anything else."""
    try:
        header, claims, signed, signature = decode_jws(token, APP_JWT_MAX_BYTES)
    except ValueError:
        raise HTTPError(401, "A JSON web token could not be decoded")
    issuer, issued, expires = claims.get("iss"), claims.get("iat"), claims.get("exp")
    if header.get("alg") != "RS256" or not isinstance(issuer, (int, str)) or isinstance(issuer, bool):
        raise HTTPError(401, "A JSON web token could not be decoded")
    row = app.store.one("SELECT id, agent_id, public_keys FROM apps WHERE CAST(id AS TEXT) = ? OR client_id = ?",
                        str(issuer), str(issuer))
    keys = [rsa_public_key(jwk) for jwk in json.loads(row["public_keys"])] if row is not None else []
    if not any(rs256_valid(n, e, signed, signature) for n, e in keys):
        raise HTTPError(401, "A JSON web token could not be decoded")
    moment = time.time()
    if not isinstance(issued, int) or isinstance(issued, bool) or issued > moment + APP_JWT_SKEW:
        raise HTTPError(401, "'Issued at' claim ('iat') must be an Integer representing a time in the past")
    if not isinstance(expires, int) or isinstance(expires, bool) or expires <= moment:
        raise HTTPError(401, "'Expiration time' claim ('exp') must be a numeric value representing the future "
                             "time at which the assertion expires")
    if expires - issued > APP_JWT_MAX_SECONDS or expires > moment + APP_JWT_MAX_SECONDS + APP_JWT_SKEW:
        raise HTTPError(401, "'Expiration time' claim ('exp') is too far in the future")
    user = app.store.cached(("account", row["agent_id"]), lambda: account_by_id(app.store, row["agent_id"]))
    return Principal(user=user, token_kind="app", fingerprint=token_fingerprint(token), runtime=runtime)


def token_scopes(row):
    """A token's scopes: as granted, with what each implies, and as X-OAuth-Scopes says them."""
    granted = [s for s in row["scopes"].split(",") if s]
    return granted, expand_scopes(granted), ", ".join(sorted(granted))


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


def grant_holder(store, grant):
    """A task token of ``grant`` (load_grant's) as authenticate() would build its principal, for asking
    decide() what it could do: the policy endpoint's what-if, the access review, the simulator."""
    principal = Principal(user=account_by_id(store, grant["agent_id"]), token_id=0, token_kind="task")
    name_delegator(store, principal)
    hold_task_grant(principal, grant, grant["actions"])
    return principal


def load_grant(store, grant_id):
    """A grant, its names and sets read, its chain: [(agent login, grant public id)] from its own agent
    up through each grant it was made from, to the delegator, and its task_id: the id of the grant at
    the top of the chain, under which the task's reads are kept. One made from a parent (a sub-agent's,
    a run's job grant) is revoked or expired with it, and with its agent's suspension or retirement."""
    row = store.one("SELECT g.*, a.login AS delegator_login, ag.login AS agent_login, ag.suspended_at AS agent_suspended_at,"
                    " ag.retired_at AS agent_retired_at FROM task_grants g JOIN accounts a ON a.id = g.delegator_id"
                    " JOIN accounts ag ON ag.id = g.agent_id WHERE g.id = ?", grant_id)
    if row is None:
        return None
    grant = dict(row, resources=set(json.loads(row["resources"])), actions=set(json.loads(row["actions"])),
                 constraints=json.loads(row["constraints"]), chain=[(row["agent_login"], row["public_id"])],
                 task_id=row["id"])
    parent = load_grant(store, row["parent_id"]) if row["parent_id"] else None
    if parent is not None:
        cut = parent["revoked_at"] or parent["agent_suspended_at"] or parent["agent_retired_at"]
        grant.update(revoked_at=grant["revoked_at"] or cut, expires_at=min(grant["expires_at"], parent["expires_at"]),
                     chain=grant["chain"] + parent["chain"], task_id=parent["task_id"])
    return grant


def act_claim(grant):
    """RFC 8693's act claim of a task token: its agent, acting for whoever it acts for, nested up to the
    human delegator ({"sub": "agent:sub", "act": {"sub": "agent:orchestrator", "act": {"sub": "user:alice"}}})."""
    claim = {"sub": "user:" + grant["delegator_login"]}
    for login, _ in reversed(grant["chain"]):
        claim = {"sub": "agent:" + login, "act": claim}
    return claim


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


def confirm_totp(req, user, code):
    """A step-up's code: rate-limited per human, 401 when wrong."""
    retry = req.app.sign_ins.hit("step-up:%d" % user["id"])
    if retry:
        raise HTTPError(429, "Too many codes; try again later", headers={"Retry-After": str(retry)})
    if not check_totp(req.app.key, user, code):
        raise HTTPError(401, "Wrong TOTP code")


def remember_runtime_certificate(db, principal):
    """An agent that minted with a client certificate mints with one from then on (policy's
    rule_standing): a runtime that stole its token cannot go on without the certificate's key."""
    user = principal.user
    if principal.certificate and user is not None and user["kind"] == "agent" and not user["runtime_certificate_at"]:
        db.execute("UPDATE accounts SET runtime_certificate_at = ? WHERE id = ?", (now(), user["id"]))
