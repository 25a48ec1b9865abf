"""Proofs of possession: what binds a token to its holder, so that a stolen copy is useless elsewhere.

Two bindings, each written into a token's ``cnf`` when it is minted and checked at every use:

- a TLS client certificate (RFC 8705): ``x5t#S256``, the SHA-256 of the certificate the minting
  connection presented; the token then works over a connection presenting that certificate only;
- a DPoP key (RFC 9449): ``jkt``, the RFC 7638 thumbprint of the public key the client signs DPoP
  proofs with; each request then carries a fresh proof (a JWT over the method, the URL, the time,
  a one-time ``jti`` and the token's hash) signed by that key.

The standard library has no ECDSA, so ES256 (ECDSA over P-256 with SHA-256, FIPS 186-4 §6.4) is
verified here, and only verified: nothing here signs, so no secret scalar or nonce is ever handled
and timing reveals nothing secret. The arithmetic is the textbook one in Jacobian coordinates, with
fixed-window tables (one per 8-bit digit position) for the base point and for each recently seen key,
so a verification is 64 point additions and one inversion. It is checked against RFC 6979's and
FIPS 186-4's published vectors (tests/test_proofs.py).
"""

import base64
import collections
import hashlib
import hmac
import json
import re
import threading
import time

# P-256 (FIPS 186-4 D.1.2.3, SEC 2 secp256r1): y^2 = x^3 - 3x + b over GF(p), base point G of order n
P256_P = 0xffffffff00000001000000000000000000000000ffffffffffffffffffffffff
P256_B = 0x5ac635d8aa3a93e7b3ebbd55769886bc651d06b0cc53b0f63bce3c3e27d2604b
P256_N = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551
P256_G = (0x6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296,
          0x4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5)
WINDOWS = 32                 # 256-bit scalars as 32 base-256 digits
KEY_TABLES_KEPT = 64         # tables of the keys seen last (an agent's runtime keeps its key)


def b64url_decode(text):
    if not isinstance(text, str) or not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# -- ES256 verification ---------------------------------------------------------------------------

def on_curve(x, y):
    return 0 <= x < P256_P and 0 <= y < P256_P and (y * y - x * x * x + 3 * x - P256_B) % P256_P == 0


def jacobian_double(X, Y, Z):
    """2P for P in Jacobian coordinates (dbl-2001-b, a = -3)."""
    p = P256_P
    if Z == 0 or Y == 0:
        return 0, 1, 0
    delta, gamma = Z * Z % p, Y * Y % p
    beta, alpha = X * gamma % p, 3 * (X - delta) * (X + delta) % p
    X3 = (alpha * alpha - 8 * beta) % p
    Z3 = ((Y + Z) * (Y + Z) - gamma - delta) % p
    return X3, (alpha * (4 * beta - X3) - 8 * gamma * gamma) % p, Z3


def jacobian_add_affine(X1, Y1, Z1, x2, y2):
    """P + Q for P in Jacobian and Q in affine coordinates (madd-2004-hmv); Z1 = 0 is the point at infinity."""
    p = P256_P
    if Z1 == 0:
        return x2, y2, 1
    Z1Z1 = Z1 * Z1 % p
    H = (x2 * Z1Z1 - X1) % p
    r = (y2 * Z1 * Z1Z1 - Y1) % p
    if H == 0:
        return jacobian_double(X1, Y1, Z1) if r == 0 else (0, 1, 0)
    HH = H * H % p
    HHH, V = H * HH % p, X1 * HH % p
    X3 = (r * r - HHH - 2 * V) % p
    return X3, (r * (V - X3) - Y1 * HHH) % p, Z1 * H % p


def to_affine(points):
    """Jacobian points (none at infinity) to affine ones, with one inversion for all (Montgomery's trick)."""
    p, running = P256_P, [1]
    for _, _, Z in points:
        running.append(running[-1] * Z % p)
    inverse, out = pow(running[-1], -1, p), [None] * len(points)
    for i in range(len(points) - 1, -1, -1):
        X, Y, Z = points[i]
        z_inv = inverse * running[i] % p
        inverse = inverse * Z % p
        zz = z_inv * z_inv % p
        out[i] = (X * zz % p, Y * zz * z_inv % p)
    return out


def window_table(point):
    """table[i][d] = d * 256^i * point (affine), for d in 1..255: a scalar's multiple is then the sum of
    one entry per base-256 digit."""
    table, base = [], point
    for _ in range(WINDOWS):
        multiples = [(base[0], base[1], 1)]
        for _ in range(254):
            multiples.append(jacobian_add_affine(*multiples[-1], *base))
        row = to_affine(multiples)
        table.append([None] + row)
        base = to_affine([jacobian_add_affine(*multiples[-1], *base)])[0]     # 256^(i+1) * point
    return table


class KeyTables:
    """The window tables of G (made on first use, not at start) and of the keys seen last."""

    def __init__(self):
        self.lock, self.base, self.keys = threading.Lock(), None, collections.OrderedDict()

    def of(self, point):
        with self.lock:
            if point == P256_G:
                if self.base is None:
                    self.base = window_table(P256_G)
                return self.base
            table = self.keys.pop(point, None) or window_table(point)
            self.keys[point] = table
            while len(self.keys) > KEY_TABLES_KEPT:
                self.keys.popitem(last=False)
            return table


TABLES = KeyTables()


def es256_valid(x, y, message, signature):
    """Is ``signature`` (r || s, 64 bytes, as JWS writes ES256) a valid ECDSA P-256 SHA-256 signature of
    ``message`` by the public key (x, y)? (FIPS 186-4 §6.4.2)"""
    if len(signature) != 64 or not on_curve(x, y):
        return False
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    if not (0 < r < P256_N and 0 < s < P256_N):
        return False
    e = int.from_bytes(hashlib.sha256(message).digest(), "big")
    w = pow(s, -1, P256_N)
    X, Y, Z = 0, 1, 0
    for scalar, table in ((e * w % P256_N, TABLES.of(P256_G)), (r * w % P256_N, TABLES.of((x, y)))):
        for i in range(WINDOWS):
            digit = (scalar >> (8 * i)) & 0xff
            if digit:
                X, Y, Z = jacobian_add_affine(X, Y, Z, *table[i][digit])
    if Z == 0:
        return False
    zz = pow(Z, -2, P256_P)
    return X * zz % P256_P % P256_N == r


def ec_public_key(jwk):
    """(x, y) of a P-256 JWK, checked to be a point of the curve; ValueError otherwise. A JWK with a
    private part ("d") is refused: a client that sends one has already given its key away."""
    if not isinstance(jwk, dict) or jwk.get("kty") != "EC" or jwk.get("crv") != "P-256" or "d" in jwk:
        raise ValueError("an EC public JWK on P-256 (kty EC, crv P-256, x, y; no d)")
    x, y = (b64url_decode(jwk.get(c)) for c in ("x", "y"))
    if len(x) != 32 or len(y) != 32 or not on_curve(int.from_bytes(x, "big"), int.from_bytes(y, "big")):
        raise ValueError("the JWK's x and y are not a point of P-256")
    return int.from_bytes(x, "big"), int.from_bytes(y, "big")


def jwk_thumbprint(jwk):
    """RFC 7638: base64url(SHA-256) of the key's required members, sorted, without whitespace."""
    members = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n")}[jwk["kty"]]
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)
    return b64url(hashlib.sha256(canonical.encode()).digest())


def certificate_thumbprint(der):
    """RFC 8705 §3.1: x5t#S256, base64url(SHA-256) of the DER certificate."""
    return b64url(hashlib.sha256(der).digest())


# -- DPoP proofs (RFC 9449) -----------------------------------------------------------------------

DPOP_MAX_AGE = 300           # seconds a proof is accepted after its iat (and its jti remembered)
DPOP_CLOCK_SKEW = 60         # seconds a proof's iat may be ahead of this server's clock
DPOP_MAX_BYTES = 4096
NONCE_WINDOW = 300           # a server nonce is good for this window and the one after


class DPoPError(ValueError):
    """A proof refused: ``error`` is the RFC's code (invalid_dpop_proof, use_dpop_nonce)."""

    def __init__(self, description, error="invalid_dpop_proof"):
        super().__init__(description)
        self.error, self.description = error, description


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


def dpop_nonce(key, window=None):
    """The server's nonce for a time window: an HMAC, so any thread or restart can check it."""
    window = int(time.time() // NONCE_WINDOW) if window is None else window
    return b64url(hmac.new(key, b"dpop nonce %d" % window, hashlib.sha256).digest()[:18])


def nonce_valid(key, nonce):
    window = int(time.time() // NONCE_WINDOW)
    return isinstance(nonce, str) and any(hmac.compare_digest(dpop_nonce(key, w), nonce) for w in (window, window - 1))


def check_dpop_proof(proof, method, url, key, replay, access_token=None, require_nonce=False):
    """The thumbprint of the key that signed ``proof`` for this request (method, URL without query or
    fragment, and when a token is presented its hash), once it is checked: typ, alg ES256, a public
    JWK, a valid signature, fresh iat, a jti not seen before, and the server's nonce where one is
    required. DPoPError with the RFC's error otherwise."""
    if not isinstance(proof, str) or len(proof) > DPOP_MAX_BYTES or proof.count(".") != 2:
        raise DPoPError("the DPoP header is not one compact JWT")
    header_b64, claims_b64, signature_b64 = proof.split(".")
    try:
        header, claims = json.loads(b64url_decode(header_b64)), json.loads(b64url_decode(claims_b64))
        signature = b64url_decode(signature_b64)
        assert isinstance(header, dict) and isinstance(claims, dict)
    except (ValueError, AssertionError, UnicodeDecodeError, RecursionError):
        raise DPoPError("the DPoP proof is not a JWT of JSON objects")
    if header.get("typ") != "dpop+jwt" or header.get("alg") != "ES256":
        raise DPoPError("a DPoP proof has typ dpop+jwt and alg ES256")
    try:
        x, y = ec_public_key(header.get("jwk"))
    except (ValueError, TypeError):
        raise DPoPError("the DPoP proof's jwk must be a P-256 public key")
    if not es256_valid(x, y, ("%s.%s" % (header_b64, claims_b64)).encode(), signature):
        raise DPoPError("the DPoP proof's signature does not verify with its jwk")
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
    thumbprint = jwk_thumbprint(header["jwk"])
    jti = claims.get("jti")
    if not isinstance(jti, str) or not 8 <= len(jti) <= 200:
        raise DPoPError("the DPoP proof needs a unique jti")
    if not replay.first_use("%s %s" % (thumbprint, jti), iat + DPOP_MAX_AGE + DPOP_CLOCK_SKEW):
        raise DPoPError("the DPoP proof was used before (jti %s)" % jti[:40])
    return thumbprint
