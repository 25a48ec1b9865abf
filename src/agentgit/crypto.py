"""Cryptography: every primitive agentgit uses, in one place, checked against Project Wycheproof's vectors.

What is here, and nothing else: base64url; compact JWS decoding with explicit type checks; ES256
(ECDSA over P-256 with SHA-256, the signature as JWS writes it, r || s) and RS256 (RSASSA-PKCS1-v1_5
with SHA-256) verification; public keys from JWKs, bounded before they cost any arithmetic; RFC 7638
JWK thumbprints; X25519 (RFC 7748); NaCl's sealed box, opened (XSalsa20-Poly1305), for the Actions secrets
a workflow run is given; the seal, authenticated encryption for secrets at rest; and the one private key
agentgit ever makes, a GitHub App's RSA key (the App holds it; the server keeps the public half). The protocols built on them (DPoP proofs, client assertions, App JWTs, the vault, Actions
secrets, TOTP) stay where they are and call these.

Two backends, one answer. The standard library's code is the floor the design card promises (no
dependency, air-gapped installs): textbook arithmetic that verifies and derives public keys, so no
secret scalar is ever multiplied and timing reveals nothing secret, with one exception: an App's RSA
key is generated here (random odd numbers tested by Miller-Rabin), once, on an operator's or a
human's request, and handed over; nothing the server does later computes with it. When the ``cryptography`` package is
importable its vetted, constant-time, much faster code verifies instead; ``AGENTGIT_CRYPTO=stdlib`` or
``=cryptography`` forces one, and the server's start banner says which is in use. tests/test_crypto.py
holds both to Wycheproof's ECDSA P-256 (P1363), RSA PKCS #1 v1.5 2048/3072/4096 and X25519 vectors.

The seal is the same in both (the standard library has no AES): encrypt-then-MAC with HMAC-SHA256
alone. Two keys come from the server key and a purpose, one to encrypt and one to authenticate; a
random 128-bit nonce; the keystream is HMAC-SHA256(k_enc, nonce || block counter), XORed with the
plaintext (a PRF in counter mode); the tag is HMAC-SHA256(k_mac, version, associated data, nonce,
ciphertext), checked in constant time before anything is decrypted. HMAC-SHA256 as a PRF is the one
assumption, the same the rest of agentgit's tokens rest on; 2^64 seals under one key before a nonce
would likely repeat.
"""

import base64
import collections
import functools
import hashlib
import hmac
import importlib
import importlib.util
import json
import os
import re
import secrets
import threading

B64URL_RE = re.compile(r"[A-Za-z0-9_-]*")
MIN_RSA_BITS, MAX_RSA_BITS = 2048, 8192     # below is breakable; above costs a verifier more than it protects
MAX_RSA_EXPONENT = 2 ** 32                  # 65537 is what every key uses; a huge e is a slow verification
# DigestInfo for SHA-256 (RFC 8017 §9.2, note 1): what precedes the hash in an RS256 signature
SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")
# P-256 (FIPS 186-4 D.1.2.3, SEC 2 secp256r1): y^2 = x^3 - 3x + b over GF(p), base point G of order n
P256_P = 0xffffffff00000001000000000000000000000000ffffffffffffffffffffffff
P256_B = 0x5ac635d8aa3a93e7b3ebbd55769886bc651d06b0cc53b0f63bce3c3e27d2604b
P256_N = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551
P256_G = (0x6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296,
          0x4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5)
WINDOWS = 32                 # 256-bit scalars as 32 base-256 digits
KEY_TABLES_KEPT = 64         # tables of the keys seen last (an agent's runtime keeps its key)
X25519_P = 2 ** 255 - 19
SEAL_VERSION = b"agentgit-seal-v1"
NONCE_BYTES, TAG_BYTES = 16, 32


# -- encodings ------------------------------------------------------------------------------------

def b64url_decode(text):
    """RFC 7515's base64url without padding; ValueError for anything else (a str of its alphabet only)."""
    if not isinstance(text, str) or not B64URL_RE.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def decode_jws(token, max_bytes):
    """A compact JWS split and decoded: (header, claims, signing input, signature), the header and the
    claims JSON objects. ValueError, saying what is wrong, for anything else; nothing is verified here."""
    if not isinstance(token, str) or len(token) > max_bytes:
        raise ValueError("not a compact JWT of at most %d bytes" % max_bytes)
    parts = token.split(".")
    if len(parts) != 3:
        raise ValueError("not a compact JWT (three base64url parts)")
    try:
        header, claims = (json.loads(b64url_decode(part)) for part in parts[:2])
        signature = b64url_decode(parts[2])
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ValueError("not a JWT of base64url JSON")
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise ValueError("a JWT's header and claims are JSON objects")
    return header, claims, ("%s.%s" % (parts[0], parts[1])).encode(), signature


# -- public keys, bounded before any arithmetic ---------------------------------------------------

def p256_on_curve(x, y):
    return 0 <= x < P256_P and 0 <= y < P256_P and (y * y - x * x * x + 3 * x - P256_B) % P256_P == 0


def ec_public_key(jwk):
    """(x, y) of a P-256 JWK, checked to be a point of the curve; ValueError otherwise. A JWK with a
    private part ("d") is refused: a client that sends one has already given its key away."""
    if not isinstance(jwk, dict) or jwk.get("kty") != "EC" or jwk.get("crv") != "P-256" or "d" in jwk:
        raise ValueError("an EC public JWK on P-256 (kty EC, crv P-256, x, y; no d)")
    x, y = (b64url_decode(jwk.get(c)) for c in ("x", "y"))
    if len(x) != 32 or len(y) != 32 or not p256_on_curve(int.from_bytes(x, "big"), int.from_bytes(y, "big")):
        raise ValueError("the JWK's x and y are not a point of P-256")
    return int.from_bytes(x, "big"), int.from_bytes(y, "big")


def rsa_key_in_bounds(n, e):
    return MIN_RSA_BITS <= n.bit_length() <= MAX_RSA_BITS and 3 <= e < MAX_RSA_EXPONENT and e % 2 == 1 and n % 2 == 1


def rsa_public_key(jwk):
    """(n, e) of an RSA JWK, checked: MIN_RSA_BITS to MAX_RSA_BITS bits, an odd exponent of at most 32
    bits; ValueError otherwise. The lengths are checked before the numbers are made."""
    if not isinstance(jwk, dict) or jwk.get("kty") != "RSA" or "d" in jwk:
        raise ValueError("an RSA public JWK (kty RSA, n, e; no d)")
    if not isinstance(jwk.get("n"), str) or len(jwk["n"]) > MAX_RSA_BITS // 6 + 4 or \
            not isinstance(jwk.get("e"), str) or len(jwk["e"]) > 8:
        raise ValueError("an RSA key of at most %d bits with an exponent of at most 32 bits" % MAX_RSA_BITS)
    n, e = (int.from_bytes(b64url_decode(jwk[c]), "big") for c in ("n", "e"))
    if not rsa_key_in_bounds(n, e):
        raise ValueError("an RSA key of %d to %d bits with an odd exponent of at most 32 bits" % (
            MIN_RSA_BITS, MAX_RSA_BITS))
    return n, e


def jwk_thumbprint(jwk):
    """RFC 7638: base64url(SHA-256) of the key's required members, sorted, without whitespace."""
    members = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n")}[jwk["kty"]]
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)
    return b64url(hashlib.sha256(canonical.encode()).digest())


# -- the standard library's backend ---------------------------------------------------------------
# ES256: the textbook arithmetic in Jacobian coordinates, with fixed-window tables (one per 8-bit digit
# position) for the base point and for each recently seen key, so a verification is 64 point additions
# and one inversion. RS256: a modular power and a comparison of the whole encoded message (RFC 8017
# §8.2.2). X25519: RFC 7748's Montgomery ladder.

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

    def kept(self, point):
        with self.lock:
            return point == P256_G or point in self.keys

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


def window_multiply(point, scalar):
    """scalar * point (Jacobian), by 4-bit windows over its 15 first multiples: 252 doublings and at
    most 64 additions, what a key seen for the first time costs (its table costs 60 times that)."""
    multiples = [(point[0], point[1], 1)]
    for _ in range(14):
        multiples.append(jacobian_add_affine(*multiples[-1], *point))
    multiples = to_affine(multiples)
    X, Y, Z = 0, 1, 0
    for shift in range(252, -1, -4):
        for _ in range(4):
            X, Y, Z = jacobian_double(X, Y, Z)
        digit = (scalar >> shift) & 15
        if digit:
            X, Y, Z = jacobian_add_affine(X, Y, Z, *multiples[digit - 1])
    return X, Y, Z


def rs256_encoded(message, length):
    """EMSA-PKCS1-v1_5 (RFC 8017 §9.2) of ``message``'s SHA-256 in ``length`` bytes."""
    digest = SHA256_DIGEST_INFO + hashlib.sha256(message).digest()
    return b"\x00\x01" + b"\xff" * (length - len(digest) - 3) + b"\x00" + digest


SMALL_PRIMES = tuple(p for p in range(3, 2000, 2) if all(p % d for d in range(3, int(p ** 0.5) + 1, 2)))
MILLER_RABIN_ROUNDS = 64        # a composite passes with probability at most 4^-64 (FIPS 186-5 B.3 asks for fewer)


def probable_prime(bits, e):
    """A random prime of exactly ``bits`` bits (the top two set, so that two make a modulus of twice as
    many) with gcd(p - 1, e) = 1."""
    while True:
        candidate = secrets.randbits(bits) | (3 << (bits - 2)) | 1
        if all(candidate % p for p in SMALL_PRIMES) and (candidate - 1) % e and miller_rabin(candidate):
            return candidate


def miller_rabin(n):
    d, s = n - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    for _ in range(MILLER_RABIN_ROUNDS):
        x = pow(2 + secrets.randbelow(n - 3), d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


class StdlibCrypto:
    """The standard library's verifiers: the floor every installation has."""
    name = "stdlib"

    def __init__(self):
        self.tables = KeyTables()

    def rsa_private_numbers(self, bits, e):
        """(n, e, d, p, q) of a new RSA key (e is 65537 with prime e, so e is coprime to p - 1 unless it divides it)."""
        p = probable_prime(bits // 2, e)
        q = probable_prime(bits // 2, e)
        while q == p:
            q = probable_prime(bits // 2, e)
        return p * q, e, pow(e, -1, (p - 1) * (q - 1)), p, q

    def es256_valid(self, x, y, message, signature, known_key):
        """FIPS 186-4 §6.4.2, the signature r || s (64 bytes). A table is made and kept for a known key
        (one a token is bound to); any other is multiplied without one, so a key never seen before
        costs what one verification does."""
        r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        if not (0 < r < P256_N and 0 < s < P256_N):
            return False
        e = int.from_bytes(hashlib.sha256(message).digest(), "big")
        w = pow(s, -1, P256_N)
        u1, u2 = e * w % P256_N, r * w % P256_N
        tabled = [(u1, self.tables.of(P256_G))]
        if known_key or self.tables.kept((x, y)):
            tabled.append((u2, self.tables.of((x, y))))
            X, Y, Z = 0, 1, 0
        else:
            X, Y, Z = window_multiply((x, y), u2)
            if Z:
                X, Y = to_affine([(X, Y, Z)])[0]
                Z = 1
        for scalar, table in tabled:
            for i in range(WINDOWS):
                digit = (scalar >> (8 * i)) & 0xff
                if digit:
                    X, Y, Z = jacobian_add_affine(X, Y, Z, *table[i][digit])
        if Z == 0:
            return False
        zz = pow(Z, -2, P256_P)
        return X * zz % P256_P % P256_N == r

    def rs256_valid(self, n, e, message, signature):
        """The signature, raised to e mod n, must be exactly the encoding of the message's hash."""
        k = (n.bit_length() + 7) // 8
        s = int.from_bytes(signature, "big")
        if len(signature) != k or s >= n:
            return False
        return hmac.compare_digest(pow(s, e, n).to_bytes(k, "big"), rs256_encoded(message, k))

    def x25519(self, scalar, u):
        """RFC 7748 §5: X25519(k, u), both 32 bytes little-endian. Used on the server's own key only,
        so it need not be constant-time."""
        k = int.from_bytes(scalar, "little") & ~7 & ~(1 << 255) | (1 << 254)
        u = int.from_bytes(u, "little") & ~(1 << 255)
        p, x1 = X25519_P, u % X25519_P
        x2, z2, x3, z3, swap = 1, 0, x1, 1, 0
        for t in reversed(range(255)):      # the Montgomery ladder
            bit = (k >> t) & 1
            if swap ^ bit:
                x2, x3, z2, z3 = x3, x2, z3, z2
            swap = bit
            a, b, c, d = x2 + z2, x2 - z2, x3 + z3, x3 - z3
            aa, bb, da, cb = a * a % p, b * b % p, d * a % p, c * b % p
            e = aa - bb
            x3, z3 = (da + cb) ** 2 % p, x1 * (da - cb) ** 2 % p
            x2, z2 = aa * bb % p, e * (aa + 121665 * e) % p
        if swap:
            x2, z2 = x3, z3
        return (x2 * pow(z2, p - 2, p) % p).to_bytes(32, "little")


class CryptographyCrypto:
    """The ``cryptography`` package's verifiers (OpenSSL's), where it is installed: vetted and fast.
    Public keys are built once per key seen (at most KEY_TABLES_KEPT each kind)."""
    name = "cryptography"

    def __init__(self):
        def load(name):
            return importlib.import_module("cryptography." + name)
        self.ec, self.rsa = load("hazmat.primitives.asymmetric.ec"), load("hazmat.primitives.asymmetric.rsa")
        self.padding, self.utils = load("hazmat.primitives.asymmetric.padding"), load("hazmat.primitives.asymmetric.utils")
        self.x25519_keys, self.hashes = load("hazmat.primitives.asymmetric.x25519"), load("hazmat.primitives.hashes")
        self.failed = (load("exceptions").InvalidSignature, ValueError)
        self.ec_key = functools.lru_cache(maxsize=KEY_TABLES_KEPT)(
            lambda x, y: self.ec.EllipticCurvePublicNumbers(x, y, self.ec.SECP256R1()).public_key())
        self.rsa_key = functools.lru_cache(maxsize=KEY_TABLES_KEPT)(
            lambda n, e: self.rsa.RSAPublicNumbers(e, n).public_key())

    def rsa_private_numbers(self, bits, e):
        numbers = self.rsa.generate_private_key(public_exponent=e, key_size=bits).private_numbers()
        return numbers.public_numbers.n, e, numbers.d, numbers.p, numbers.q

    def es256_valid(self, x, y, message, signature, known_key):
        r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        try:
            self.ec_key(x, y).verify(self.utils.encode_dss_signature(r, s), message, self.ec.ECDSA(self.hashes.SHA256()))
            return True
        except self.failed:
            return False

    def rs256_valid(self, n, e, message, signature):
        if len(signature) != (n.bit_length() + 7) // 8:
            return False
        try:
            self.rsa_key(n, e).verify(signature, message, self.padding.PKCS1v15(), self.hashes.SHA256())
            return True
        except self.failed:
            return False

    def x25519(self, scalar, u):
        """RFC 7748 §5; ValueError where the result is all zeros (u of small order), which OpenSSL refuses."""
        private = self.x25519_keys.X25519PrivateKey.from_private_bytes(scalar)
        return private.exchange(self.x25519_keys.X25519PublicKey.from_public_bytes(u))


def choose_backend(wanted):
    """The backend ``wanted`` names ("stdlib" or "cryptography"), or with none the fastest installed."""
    if wanted not in (None, "", "stdlib", "cryptography"):
        raise ValueError("AGENTGIT_CRYPTO is stdlib or cryptography, not %r" % wanted)
    if wanted == "cryptography" or not wanted and importlib.util.find_spec("cryptography") is not None:
        try:
            return CryptographyCrypto()
        except ImportError as error:
            if wanted:
                raise ValueError("AGENTGIT_CRYPTO=cryptography, but it cannot be imported: %s" % error)
    return StdlibCrypto()


BACKEND = choose_backend(os.environ.get("AGENTGIT_CRYPTO"))


# -- what the protocols call ----------------------------------------------------------------------

def es256_valid(x, y, message, signature, known_key=False):
    """Is ``signature`` (r || s, 64 bytes, as JWS writes ES256) a valid ECDSA P-256 SHA-256 signature of
    ``message`` by the public key (x, y)? ``known_key``: one a token is bound to, worth keeping what
    makes its next verification faster."""
    if not isinstance(signature, bytes) or len(signature) != 64 or not p256_on_curve(x, y):
        return False
    return BACKEND.es256_valid(x, y, message, signature, known_key)


def rs256_valid(n, e, message, signature):
    """Is ``signature`` a valid RSASSA-PKCS1-v1_5 SHA-256 signature of ``message`` by the key (n, e)? A key
    out of bounds (rsa_key_in_bounds) verifies nothing, whoever built it."""
    if not isinstance(signature, bytes) or not rsa_key_in_bounds(n, e):
        return False
    return BACKEND.rs256_valid(n, e, message, signature)


def x25519_public_key(private):
    """RFC 7748 X25519(k, 9): the public key of a 32-byte private key."""
    return BACKEND.x25519(private, (9).to_bytes(32, "little"))


def der_integer(value):
    body = value.to_bytes(value.bit_length() // 8 + 1, "big")     # a leading zero byte keeps it positive
    return b"\x02" + der_length(len(body)) + body


def der_length(length):
    if length < 0x80:
        return bytes([length])
    octets = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(octets)]) + octets


def rsa_private_key(bits=2048):
    """A new RSA key: (its private key as PKCS #1 PEM, as GitHub hands an App's over; its public JWK)."""
    n, e, d, p, q = BACKEND.rsa_private_numbers(bits, 65537)
    fields = (0, n, e, d, p, q, d % (p - 1), d % (q - 1), pow(q, -1, p))        # RFC 8017 A.1.2
    body = b"".join(der_integer(f) for f in fields)
    der = b"\x30" + der_length(len(body)) + body
    lines = [base64.b64encode(der[i:i + 48]).decode() for i in range(0, len(der), 48)]
    pem = "-----BEGIN RSA PRIVATE KEY-----\n%s\n-----END RSA PRIVATE KEY-----\n" % "\n".join(lines)
    return pem, {"kty": "RSA", "n": b64url(n.to_bytes((n.bit_length() + 7) // 8, "big")),
                 "e": b64url(e.to_bytes(3, "big"))}


# -- NaCl's sealed box, opened: what GitHub's clients encrypt an Actions secret with -----------------------
# crypto_box_seal (libsodium): an ephemeral X25519 key, the nonce BLAKE2b(ephemeral || recipient), and
# XSalsa20-Poly1305 under HSalsa20 of the shared point. The standard library has none of it and neither
# does the cryptography package, so it is here, once, checked against PyNaCl (libsodium) and RFC 8439's
# Poly1305 vector in tests/test_crypto.py, and against gh's own `gh secret set` in tests/test_runs.py.

WORD = 0xffffffff
SALSA_CONSTANT = b"expand 32-byte k"
# the quarter rounds of Salsa20's column round, then of its row round (state indices)
SALSA_QUARTERS = ((0, 4, 8, 12), (5, 9, 13, 1), (10, 14, 2, 6), (15, 3, 7, 11),
                  (0, 1, 2, 3), (5, 6, 7, 4), (10, 11, 8, 9), (15, 12, 13, 14))
POLY1305_PRIME = 2 ** 130 - 5


def salsa20_rounds(state):
    x = list(state)
    for _ in range(10):             # 20 rounds: ten double rounds
        for a, b, c, d in SALSA_QUARTERS:
            for target, one, two, shift in ((b, a, d, 7), (c, b, a, 9), (d, c, b, 13), (a, d, c, 18)):
                v = (x[one] + x[two]) & WORD
                x[target] ^= ((v << shift) & WORD) | (v >> (32 - shift))
    return x


def salsa20_state(key, sixteen):
    words = lambda data: list(int.from_bytes(data[i:i + 4], "little") for i in range(0, len(data), 4))  # noqa: E731
    c, k, n = words(SALSA_CONSTANT), words(key), words(sixteen)
    return [c[0]] + k[:4] + [c[1]] + n + [c[2]] + k[4:] + [c[3]]


def hsalsa20(key, sixteen):
    x = salsa20_rounds(salsa20_state(key, sixteen))
    return b"".join(x[i].to_bytes(4, "little") for i in (0, 5, 10, 15, 6, 7, 8, 9))


def xsalsa20_stream(key, nonce, length):
    subkey, blocks = hsalsa20(key, nonce[:16]), []
    for counter in range((length + 63) // 64):
        state = salsa20_state(subkey, nonce[16:24] + counter.to_bytes(8, "little"))
        blocks.append(b"".join(((a + b) & WORD).to_bytes(4, "little") for a, b in zip(salsa20_rounds(state), state)))
    return b"".join(blocks)[:length]


def poly1305(key, message):
    r = int.from_bytes(key[:16], "little") & 0x0ffffffc0ffffffc0ffffffc0fffffff
    accumulator = 0
    for i in range(0, len(message), 16):
        accumulator = (accumulator + int.from_bytes(message[i:i + 16] + b"\x01", "little")) * r % POLY1305_PRIME
    return ((accumulator + int.from_bytes(key[16:], "little")) % 2 ** 128).to_bytes(16, "little")


def secretbox_open(key, nonce, box):
    """crypto_secretbox_open: the 16-byte tag, then the ciphertext; ValueError where the tag is wrong."""
    if len(box) < 16:
        raise ValueError("not a secret box")
    stream = xsalsa20_stream(key, nonce, 32 + len(box) - 16)
    if not hmac.compare_digest(poly1305(stream[:32], box[16:]), box[:16]):
        raise ValueError("the box does not authenticate")
    return bytes(a ^ b for a, b in zip(box[16:], stream[32:]))


def sealed_box_open(private, sealed):
    """crypto_box_seal_open for the X25519 key ``private``: the plaintext, or ValueError for anything
    altered, sealed to another key, or made with a point of small order."""
    if len(sealed) < 48:
        raise ValueError("not a sealed box")
    ephemeral, public = sealed[:32], x25519_public_key(private)
    shared = BACKEND.x25519(private, ephemeral)
    if not any(shared):
        raise ValueError("a sealed box made with a point of small order")
    nonce = hashlib.blake2b(ephemeral + public, digest_size=24).digest()
    return secretbox_open(hsalsa20(shared, bytes(16)), nonce, sealed[32:])


# -- the seal: authenticated encryption for secrets at rest ---------------------------------------

def seal_keys(key, purpose):
    return (hmac.new(key, b"seal encrypt " + purpose, hashlib.sha256).digest(),
            hmac.new(key, b"seal authenticate " + purpose, hashlib.sha256).digest())


def keystream(key, nonce, length):
    blocks = (length + 31) // 32
    return b"".join(hmac.new(key, nonce + i.to_bytes(4, "big"), hashlib.sha256).digest() for i in range(blocks))[:length]


def seal_input(associated, nonce, ciphertext):
    return SEAL_VERSION + len(associated).to_bytes(4, "big") + associated + nonce + ciphertext


def seal(key, purpose, plaintext, associated):
    """``plaintext`` (bytes) sealed for ``purpose`` and bound to ``associated``: an ASCII token."""
    encrypt, authenticate = seal_keys(key, purpose)
    nonce = secrets.token_bytes(NONCE_BYTES)
    ciphertext = bytes(a ^ b for a, b in zip(plaintext, keystream(encrypt, nonce, len(plaintext))))
    tag = hmac.new(authenticate, seal_input(associated, nonce, ciphertext), hashlib.sha256).digest()
    return "v1." + base64.urlsafe_b64encode(nonce + ciphertext + tag).decode()


def unseal(key, purpose, sealed, associated):
    """The plaintext of what ``seal`` made with the same purpose and associated data; ValueError for
    anything altered, truncated, moved to another binding or sealed under another key."""
    if not isinstance(sealed, str) or not sealed.startswith("v1."):
        raise ValueError("not a sealed value")
    raw = base64.urlsafe_b64decode(sealed[3:])       # (binascii.Error is a ValueError)
    if len(raw) < NONCE_BYTES + TAG_BYTES:
        raise ValueError("not a sealed value")
    nonce, ciphertext, tag = raw[:NONCE_BYTES], raw[NONCE_BYTES:-TAG_BYTES], raw[-TAG_BYTES:]
    encrypt, authenticate = seal_keys(key, purpose)
    if not hmac.compare_digest(tag, hmac.new(authenticate, seal_input(associated, nonce, ciphertext),
                                             hashlib.sha256).digest()):
        raise ValueError("the sealed value does not authenticate")
    return bytes(a ^ b for a, b in zip(ciphertext, keystream(encrypt, nonce, len(ciphertext))))
