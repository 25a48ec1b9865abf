"""Proofs of possession: what binds a token to its holder, so that a stolen copy is useless elsewhere.

Two bindings, each written into a token's ``cnf`` when it is minted and checked at every use:

- a TLS client certificate (RFC 8705): ``x5t#S256``, the SHA-256 of the certificate the minting
  connection presented; the token then works over a connection presenting that certificate only;
- a DPoP key (RFC 9449): ``jkt``, the RFC 7638 thumbprint of the public key the client signs DPoP
  proofs with; each request then carries a fresh proof (a JWT over the method, the URL, the time,
  a one-time ``jti`` and the token's hash) signed by that key.

The signatures are checked by the crypto module (ES256 verification, JWK thumbprints); what is here
is the protocol: what a proof must say, for how long, and once.
"""

import collections
import hashlib
import hmac
import re
import threading
import time

from agentgit.crypto import b64url, decode_jws, ec_public_key, es256_valid, jwk_thumbprint


# -- binding to a client certificate (RFC 8705) ---------------------------------------------------

def certificate_thumbprint(der):
    """RFC 8705 §3.1: x5t#S256, base64url(SHA-256) of the DER certificate."""
    return b64url(hashlib.sha256(der).digest())


# -- runtime identity: a SPIFFE ID in the certificate ----------------------------------------------

SPIFFE_TRUST_DOMAIN_RE = re.compile(r"[a-z0-9._-]{1,255}")
SPIFFE_SEGMENT_RE = re.compile(r"[A-Za-z0-9._-]+")


def spiffe_id(text, pattern=False):
    """A SPIFFE ID as the SPIFFE standard writes it, normalized so that one identity compares equal
    however it is spelled: scheme and trust domain in lower case (they are case-insensitive), the path
    as it is (case-sensitive), no trailing slash. ValueError for anything else (a port, a user, a query,
    a fragment, an empty, . or .. segment). ``pattern``: a revocation's, where * stands for any part."""
    if not isinstance(text, str) or len(text) > 2048 or text[:9].lower() != "spiffe://":
        raise ValueError("a SPIFFE ID is spiffe://trust-domain/path")
    domain, slash, path = text[9:].partition("/")
    domain, path = domain.lower(), path.rstrip("/")
    allowed = (lambda part, regex: regex.fullmatch(part.replace("*", "x"))) if pattern else (
        lambda part, regex: regex.fullmatch(part))
    if not allowed(domain, SPIFFE_TRUST_DOMAIN_RE) or (path and not all(
            allowed(segment, SPIFFE_SEGMENT_RE) and segment not in (".", "..") for segment in path.split("/"))):
        raise ValueError("a SPIFFE ID is spiffe://trust-domain/path: a trust domain of a-z, 0-9, . - _, and path "
                         "segments of letters, digits, . - _ (none empty, . or ..)")
    return "spiffe://%s%s" % (domain, "/" + path if path else "")


def runtime_identity(uri_sans):
    """The runtime a client certificate names: its one URI SAN, a SPIFFE ID, normalized; None for a
    certificate with no URI SAN. ValueError for two or more, or one that is not a SPIFFE ID: an
    identity that could be read two ways would escape a revocation of one of them."""
    if not uri_sans:
        return None
    if len(uri_sans) != 1:
        raise ValueError("the client certificate names %d URI SANs; a runtime is exactly one SPIFFE ID" % len(uri_sans))
    return spiffe_id(uri_sans[0])


# -- DPoP proofs (RFC 9449) -----------------------------------------------------------------------

DPOP_MAX_AGE = 300           # seconds a proof is accepted after its iat (and its jti remembered)
DPOP_CLOCK_SKEW = 60         # seconds a proof's iat may be ahead of this server's clock
DPOP_MAX_BYTES = 4096
NONCE_WINDOW = 300           # a server nonce is good for this window and the one after


class DPoPError(ValueError):
    """A proof refused: ``error`` is the RFC's code (invalid_dpop_proof, use_dpop_nonce);
    ``signature_failed``: every claim held but the signature (the refusal that cost arithmetic)."""

    def __init__(self, description, error="invalid_dpop_proof", signature_failed=False):
        super().__init__(description)
        self.error, self.description, self.signature_failed = error, description, signature_failed


class ReplayCache:
    """Each (key, jti) is accepted once while its proof could still be accepted."""

    def __init__(self):
        self.lock, self.seen = threading.Lock(), collections.OrderedDict()

    def first_use(self, name, expires):
        moment = time.time()
        with self.lock:
            while self.seen and next(iter(self.seen.values())) < moment:
                self.seen.popitem(last=False)
            if name in self.seen:
                return False
            self.seen[name] = expires
            return True


class StoredReplayCache(ReplayCache):
    """The installation's: each proof's jti kept in the database (dpop_proofs) for the proof's lifetime,
    where every server process on the same data sees it and a restart forgets nothing. The process's
    memory answers the replays it saw itself without a write; expired names are swept once a minute."""

    def __init__(self, store):
        super().__init__()
        self.store, self.next_sweep = store, 0

    def first_use(self, name, expires):
        if not super().first_use(name, expires):
            return False
        moment = int(time.time())
        with self.store.transaction(records_only=True) as db:
            if moment >= self.next_sweep:
                db.execute("DELETE FROM dpop_proofs WHERE expires_at < ?", (moment,))
                self.next_sweep = moment + 60
            return db.execute("INSERT INTO dpop_proofs (name, expires_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
                              (name, int(expires) + 1)).rowcount == 1


def dpop_nonce(key, window=None):
    """The server's nonce for a time window: an HMAC, so any thread or restart can check it."""
    window = int(time.time() // NONCE_WINDOW) if window is None else window
    return b64url(hmac.new(key, b"dpop nonce %d" % window, hashlib.sha256).digest()[:18])


def nonce_valid(key, nonce):
    window = int(time.time() // NONCE_WINDOW)
    return isinstance(nonce, str) and any(hmac.compare_digest(dpop_nonce(key, w), nonce) for w in (window, window - 1))


def check_dpop_proof(proof, method, url, key, replay, access_token=None, require_nonce=False, bound_key=None):
    """The thumbprint of the key that signed ``proof`` for this request (method, URL without query or
    fragment, and when a token is presented its hash), once it is checked: typ, alg ES256, a public
    JWK, fresh iat, the server's nonce where one is required, a jti, then (every claim checked first:
    a proof that fails on them costs no arithmetic) a valid signature and a jti not seen before.
    ``bound_key``: the thumbprint the presented token is bound to, a key worth keeping tables for.
    DPoPError with the RFC's error otherwise."""
    try:
        header, claims, signing_input, signature = decode_jws(proof, DPOP_MAX_BYTES)
    except ValueError as error:
        raise DPoPError("the DPoP header is %s" % error)
    if header.get("typ") != "dpop+jwt" or header.get("alg") != "ES256":
        raise DPoPError("a DPoP proof has typ dpop+jwt and alg ES256")
    try:
        x, y = ec_public_key(header.get("jwk"))
    except (ValueError, TypeError):
        raise DPoPError("the DPoP proof's jwk must be a P-256 public key")
    if claims.get("htm") != method or not isinstance(claims.get("htu"), str) or \
            claims["htu"].split("?")[0].split("#")[0].rstrip("/") != url.rstrip("/"):
        raise DPoPError("the DPoP proof is for %s %s, not this request" % (str(claims.get("htm"))[:10],
                                                                           str(claims.get("htu"))[:200]))
    iat, moment = claims.get("iat"), time.time()
    if not isinstance(iat, (int, float)) or isinstance(iat, bool) or not (
            moment - DPOP_MAX_AGE <= iat <= moment + DPOP_CLOCK_SKEW):
        raise DPoPError("the DPoP proof's iat is not within %d seconds of this server's clock" % DPOP_MAX_AGE)
    if access_token is not None and claims.get("ath") != b64url(hashlib.sha256(access_token.encode()).digest()):
        raise DPoPError("the DPoP proof's ath is not the hash of the access token presented")
    if require_nonce and not nonce_valid(key, claims.get("nonce")):
        raise DPoPError("this server requires a DPoP nonce: use the DPoP-Nonce header's", "use_dpop_nonce")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not 8 <= len(jti) <= 200:
        raise DPoPError("the DPoP proof needs a unique jti")
    thumbprint = jwk_thumbprint(header["jwk"])
    if not es256_valid(x, y, signing_input, signature, known_key=thumbprint == bound_key):
        raise DPoPError("the DPoP proof's signature does not verify with its jwk", signature_failed=True)
    if not replay.first_use("%s %s" % (thumbprint, jti), iat + DPOP_MAX_AGE + DPOP_CLOCK_SKEW):
        raise DPoPError("the DPoP proof was used before (jti %s)" % jti[:40])
    return thumbprint
