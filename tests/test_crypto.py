"""Cryptography, one module with two backends: each backend, through the functions the protocols call,
agrees with Project Wycheproof's vectors (ECDSA P-256 SHA-256 in JWS's r || s form, RSASSA-PKCS1-v1_5
SHA-256 with 2048-, 3072- and 4096-bit keys, X25519); keys out of bounds cost nothing and verify
nothing; JWS decoding refuses what is not a JWT of JSON objects; NaCl's sealed box opens as libsodium
seals it; the seal opens only where it was made; and TOTP secrets are sealed at rest, those stored
before the seal too.

The vectors are copied from C2SP/wycheproof (tests/vectors/wycheproof: LICENSE, SOURCE names the commit)."""
import base64
import hashlib
import hmac
import json
import os
import time

import pytest

import agentgit
from conftest import Browser, patch_everywhere, turn_on_totp

VECTORS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vectors", "wycheproof")
BACKENDS = ["stdlib", "cryptography"]


def vectors(name):
    with open(os.path.join(VECTORS, name)) as f:
        return json.load(f)


@pytest.fixture(params=BACKENDS)
def backend(request, monkeypatch):
    """The protocols' functions (es256_valid, rs256_valid, x25519_public_key) on one backend."""
    chosen = agentgit.choose_backend(request.param)
    assert chosen.name == request.param
    patch_everywhere(monkeypatch, "BACKEND", chosen)
    return chosen


def tally(counts, result, accepted):
    counts[result, accepted] = counts.get((result, accepted), 0) + 1


def test_ecdsa_p256_sha256_in_jws_form_agrees_with_wycheproof(backend):
    counts = {}
    for group in vectors("ecdsa_secp256r1_sha256_p1363_test.json")["testGroups"]:
        x, y = int(group["publicKey"]["wx"], 16), int(group["publicKey"]["wy"], 16)
        for case in group["tests"]:
            accepted = agentgit.es256_valid(x, y, bytes.fromhex(case["msg"]), bytes.fromhex(case["sig"]))
            assert accepted == (case["result"] == "valid"), (backend.name, case["tcId"], case["comment"])
            tally(counts, case["result"], accepted)
    print("Wycheproof ECDSA P-256 (P1363), %s: %s" % (backend.name, counts))
    assert counts == {("valid", True): 173, ("invalid", False): 89}


@pytest.mark.parametrize("bits", [2048, 3072, 4096])
def test_rsassa_pkcs1_v1_5_sha256_agrees_with_wycheproof(backend, bits):
    counts = {}
    for group in vectors("rsa_signature_%d_sha256_test.json" % bits)["testGroups"]:
        n, e = (int(group["publicKey"][k], 16) for k in ("modulus", "publicExponent"))
        assert agentgit.rsa_public_key(group["keyJwk"]) == (n, e)        # as a client registers it
        for case in group["tests"]:
            accepted = agentgit.rs256_valid(n, e, bytes.fromhex(case["msg"]), bytes.fromhex(case["sig"]))
            if case["result"] != "acceptable":
                assert accepted == (case["result"] == "valid"), (backend.name, bits, case["tcId"], case["comment"])
            tally(counts, case["result"], accepted)
    print("Wycheproof RSA PKCS#1 v1.5 %d, %s: %s" % (bits, backend.name, counts))
    assert counts[("valid", True)] >= 7 and counts[("invalid", False)] >= 249 and len(counts) <= 3


def test_x25519_agrees_with_wycheproof(backend):
    """Every valid case gives the shared secret; an acceptable one (a public key on the twist, of small
    order, not canonical) gives it or is refused (OpenSSL refuses an all-zero result)."""
    counts = {}
    for group in vectors("x25519_test.json")["testGroups"]:
        for case in group["tests"]:
            try:
                shared = backend.x25519(bytes.fromhex(case["private"]), bytes.fromhex(case["public"]))
            except ValueError:
                shared = None
            if case["result"] == "valid" or shared is not None:
                assert shared == bytes.fromhex(case["shared"]), (backend.name, case["tcId"], case["comment"])
            tally(counts, case["result"], shared is not None)
    print("Wycheproof X25519, %s: %s" % (backend.name, counts))
    assert counts[("valid", True)] == 264
    # RFC 7748 §6.1's keys: the public key of Alice's private key, as Actions secrets' public key is made
    alice = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
    assert agentgit.x25519_public_key(alice).hex() == "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"


def test_both_backends_are_the_same_answer():
    """What decides is which backend runs, never what it answers (the banner names the one in use)."""
    assert agentgit.BACKEND.name in BACKENDS
    assert agentgit.choose_backend("stdlib").name == "stdlib"
    with pytest.raises(ValueError, match="stdlib or cryptography"):
        agentgit.choose_backend("openssl")


def jwk_of(n, e):
    return {"kty": "RSA", "n": agentgit.b64url(n.to_bytes((n.bit_length() + 7) // 8, "big")),
            "e": agentgit.b64url(e.to_bytes((e.bit_length() + 7) // 8, "big"))}


def test_keys_out_of_bounds_are_refused_before_any_arithmetic(backend, monkeypatch):
    """A client chooses its key: one that would make a verification slow (a modulus of 16,384 bits, an
    exponent of 4,096) or weak (1,024 bits, an even exponent) is refused when registered, and verifies
    nothing if it reached a verifier anyway, which then never runs."""
    group = vectors("rsa_signature_2048_sha256_test.json")["testGroups"][0]
    n, e = (int(group["publicKey"][k], 16) for k in ("modulus", "publicExponent"))
    for bad_n, bad_e in ((n << 14000 | 1, e), (n, (1 << 4096) + 1), (n >> 1100 | 1, e), (n, 4), (n + 1, e)):
        with pytest.raises(ValueError, match="RSA key of"):
            agentgit.rsa_public_key(jwk_of(bad_n, bad_e))
    monkeypatch.setattr(backend, "rs256_valid", lambda *args: pytest.fail("a verifier ran on a key out of bounds"))
    assert not agentgit.rs256_valid(n << 14000 | 1, e, b"m", b"\x01" * 2000)
    assert not agentgit.rs256_valid(n, (1 << 4096) + 1, b"m", b"\x01" * 256)
    with pytest.raises(ValueError):
        agentgit.rsa_public_key({"kty": "RSA", "n": "A" * 100000, "e": "AQAB"})         # too long to decode
    with pytest.raises(ValueError):
        agentgit.rsa_public_key(dict(group["keyJwk"], d="c2VjcmV0"))                   # a private key given away
    with pytest.raises(ValueError):
        agentgit.ec_public_key({"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"})


def test_a_jws_that_is_not_a_jwt_of_json_objects_is_refused_by_type():
    """decode_jws checks what it decodes with if, not assert, so python -O refuses the same."""
    def part(value):
        return agentgit.b64url(json.dumps(value).encode())
    good = "%s.%s.%s" % (part({"alg": "ES256"}), part({"iat": 1}), agentgit.b64url(b"sig"))
    header, claims, signing_input, signature = agentgit.decode_jws(good, 4096)
    assert (header, claims, signature) == ({"alg": "ES256"}, {"iat": 1}, b"sig")
    assert signing_input == good.rsplit(".", 1)[0].encode()
    for bad in (None, 7, "a.b", "a.b.c.d", good + "x" * 5000, "%s.%s.sig" % (part([1]), part({})),
                "%s.%s.sig" % (part({}), part("text")), "%s.%s.s+g" % (part({}), part({})), "e30.e30.a",
                "%s.%s.sig" % (agentgit.b64url(b"\xff\xfe"), part({})), "%s.%s.sig" % (part({}), "W" * 3)):
        with pytest.raises(ValueError):
            agentgit.decode_jws(bad, 4096)


def test_a_sealed_box_opens_as_libsodium_seals_it(backend):
    """NaCl's sealed box (what gh, PyGithub and octokit encrypt an Actions secret with), opened here: every
    length libsodium (PyNaCl) seals, nothing altered or sealed to another key, no point of small order; its
    Poly1305 agrees with RFC 8439's vector."""
    public_key = pytest.importorskip("nacl.public")
    key = bytes.fromhex("85d6be7857556d337f4452fe42d506a80103808afb0db2fd4abff6af4149f51b")
    assert agentgit.poly1305(key, b"Cryptographic Forum Research Group").hex() == "a8061dc1305136c6c22b8baf0c0127a9"
    private, other = os.urandom(32), os.urandom(32)
    box = public_key.SealedBox(public_key.PublicKey(agentgit.x25519_public_key(private)))
    for length in (0, 1, 15, 16, 17, 63, 64, 65, 1000):
        message = os.urandom(length)
        sealed = box.encrypt(message)
        assert agentgit.sealed_box_open(private, sealed) == message
        for broken in (sealed[:-1] + bytes([sealed[-1] ^ 1]), sealed[:40] + bytes([sealed[40] ^ 1]) + sealed[41:]):
            with pytest.raises(ValueError):
                agentgit.sealed_box_open(private, broken)
        with pytest.raises(ValueError):
            agentgit.sealed_box_open(other, sealed)
    with pytest.raises(ValueError):
        agentgit.sealed_box_open(private, bytes(32) + os.urandom(40))      # the ephemeral key of small order 0
    with pytest.raises(ValueError):
        agentgit.sealed_box_open(private, os.urandom(47))


def test_a_seal_opens_only_where_it_was_made():
    key = b"k" * 32
    sealed = agentgit.seal(key, b"vault", b"the secret", b"credential:1")
    assert agentgit.unseal(key, b"vault", sealed, b"credential:1") == b"the secret"
    assert sealed != agentgit.seal(key, b"vault", b"the secret", b"credential:1")          # a fresh nonce each time
    tampered = sealed[:-4] + ("AAAA" if not sealed.endswith("AAAA") else "BBBB")
    for args in ((b"o" * 32, b"vault", sealed, b"credential:1"), (key, b"totp secret", sealed, b"credential:1"),
                 (key, b"vault", sealed, b"credential:2"), (key, b"vault", tampered, b"credential:1"),
                 (key, b"vault", sealed[:20], b"credential:1"), (key, b"vault", "v2." + sealed[3:], b"credential:1"),
                 (key, b"vault", None, b"credential:1"), (key, b"vault", "v1.é", b"credential:1")):
        with pytest.raises(ValueError):
            agentgit.unseal(*args)


def test_totp_secrets_are_sealed_at_rest_and_old_ones_are_resealed(server):
    """A TOTP secret is sealed to its account: enrolling twice gives unrelated ciphertexts (the old
    scheme XORed every secret of an account with one keystream, so two enrolments XORed gave away the
    XOR of the secrets). A secret stored the old way is sealed in its place when the installation
    opens, and the code from the same authenticator app still signs in."""
    server.add_user("alice", password="long enough")
    first = turn_on_totp(server, "alice")
    stored_first = server.app.store.one("SELECT totp_secret FROM accounts WHERE login = 'alice'")["totp_secret"]
    second = turn_on_totp(server, "alice")
    stored_second = server.app.store.one("SELECT totp_secret FROM accounts WHERE login = 'alice'")["totp_secret"]
    assert stored_first.startswith("v1.") and stored_second.startswith("v1.") and first != second
    raw = [base64.urlsafe_b64decode(s[3:])[16:-32] for s in (stored_first, stored_second)]
    assert bytes(a ^ b for a, b in zip(*raw)) != bytes(a ^ b for a, b in zip(first, second))

    # as an older agentgit stored it: the secret XORed with a keystream fixed for the account
    alice = agentgit.account_by_login(server.app.store, "alice")
    mask = hmac.new(server.app.key, b"totp:%d" % alice["id"], hashlib.sha256).digest()[:20]
    with server.app.store.transaction() as db:
        db.execute("UPDATE accounts SET totp_secret = ? WHERE id = ?",
                   (bytes(a ^ b for a, b in zip(second, mask)).hex(), alice["id"]))
    reopened = agentgit.Installation(server.app.config)
    resealed = agentgit.account_by_login(reopened.store, "alice")["totp_secret"]
    assert resealed.startswith("v1.") and agentgit.totp_secret(server.app.key, agentgit.account_by_login(
        reopened.store, "alice")) == second
    browser = Browser(server)
    _, page = browser.request("GET", "/login")
    resp, _ = browser.request("POST", "/login", {"csrf": browser.csrf(page), "login": "alice", "password": "long enough",
                                                 "totp": agentgit.totp_code(second, time.time()), "next": "/"})
    assert resp.status == 303
