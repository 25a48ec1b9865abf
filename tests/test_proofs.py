"""The proof-of-possession code agentgit carries because the standard library has none: ES256
verification checked against published vectors (RFC 6979, FIPS 186-4 SigVer, RFC 7515's JWS example)
and against the `cryptography` package's signatures; RFC 7638 thumbprints; and DPoP proofs refused
for each way a proof can be wrong."""
import base64
import hashlib
import json
import time

import pytest

import agentgit
from conftest import call, patch_everywhere

# RFC 6979 A.2.5: P-256, private key x; its public key (Ux, Uy); signatures with SHA-256
RFC6979_UX = 0x60FED4BA255A9D31C961EB74C6356D68C049B8923B61FA6CE669622E60F29FB6
RFC6979_UY = 0x7903FE1008B8BC99A41AE9E95628BC64F2F1B20C2D7E9F5177A3C294D4462299
RFC6979_SIGNATURES = [
    (b"sample", 0xEFD48B2AACB6A8FD1140DD9CD45E81D69D2C877B56AAF991C34D0EA84EAF3716,
     0xF7CB1C942D657C41D436C7A1B6E29F65F3E900DBB9AFF4064DC4AB2F843ACDA8),
    (b"test", 0xF1ABB023518351CD71D881567B1EA663ED3EFCF6C5132B354F28D3B0B7D38367,
     0x019F4113742A2B14BD25926B49C649155F267E60D3814B4C0CC84250E46F0083),
]
# RFC 7515 A.3: the ES256 JWS example and its key
RFC7515_JWK = {"kty": "EC", "crv": "P-256", "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
               "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}
RFC7515_JWS = ("eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19"
               "yb290Ijp0cnVlfQ.DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q")


def signature(r, s):
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def test_es256_against_published_vectors():
    for message, r, s in RFC6979_SIGNATURES:
        assert agentgit.es256_valid(RFC6979_UX, RFC6979_UY, message, signature(r, s))
        assert not agentgit.es256_valid(RFC6979_UX, RFC6979_UY, message + b"!", signature(r, s))
        assert not agentgit.es256_valid(RFC6979_UX, RFC6979_UY, message, signature(r, s ^ 1))
        assert not agentgit.es256_valid(RFC6979_UX, RFC6979_UY, message, signature(s, r))
        # r and s out of range, the point off the curve, a wrong length
        assert not agentgit.es256_valid(RFC6979_UX, RFC6979_UY, message, signature(0, s))
        assert not agentgit.es256_valid(RFC6979_UX, RFC6979_UY, message, signature(agentgit.P256_N, s))
        assert not agentgit.es256_valid(RFC6979_UX, RFC6979_UY + 1, message, signature(r, s))
        assert not agentgit.es256_valid(RFC6979_UX, RFC6979_UY, message, signature(r, s)[:63])
    x, y = agentgit.ec_public_key(RFC7515_JWK)
    header, claims, sig = RFC7515_JWS.split(".")
    assert agentgit.es256_valid(x, y, ("%s.%s" % (header, claims)).encode(), agentgit.b64url_decode(sig))
    assert not agentgit.es256_valid(x, y, ("%s.%s" % (header, claims + "A")).encode(), agentgit.b64url_decode(sig))


def test_es256_agrees_with_the_cryptography_package():
    ec = pytest.importorskip("cryptography.hazmat.primitives.asymmetric.ec")
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
    for i in range(5):            # (each new key costs its window tables; each signature is fresh)
        key = ec.generate_private_key(ec.SECP256R1())
        public = key.public_key().public_numbers()
        for message in (b"message %d" % i, b"", b"x" * 1000):
            r, s = decode_dss_signature(key.sign(message, ec.ECDSA(hashes.SHA256())))
            assert agentgit.es256_valid(public.x, public.y, message, signature(r, s))
            assert not agentgit.es256_valid(public.x, public.y, message + b".", signature(r, s))
    # and RFC 6979's key, derived by cryptography, is the one the RFC prints
    derived = ec.derive_private_key(0xC9AFA9D845BA75166B5C215767B1D6934E50C3DB36E89B127B8A622B120F6721,
                                    ec.SECP256R1()).public_key().public_numbers()
    assert (derived.x, derived.y) == (RFC6979_UX, RFC6979_UY)


def test_jwk_checks_and_thumbprints():
    # RFC 7638 §3.1's example (an RSA key) and an EC key's canonical members
    rsa = {"kty": "RSA", "e": "AQAB", "alg": "RS256", "kid": "2011-04-29", "n": (
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknj"
        "hMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6"
        "qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8aw"
        "apJzKnqDKgw")}
    assert agentgit.jwk_thumbprint(rsa) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    assert agentgit.jwk_thumbprint(dict(RFC7515_JWK, kid="x", use="sig")) == agentgit.jwk_thumbprint(RFC7515_JWK)
    for bad in (dict(RFC7515_JWK, crv="P-384"), dict(RFC7515_JWK, d="jpsQnnGQmL-YBIffH1136cLV4X3LPW9S2Cae4Pg0S-8"),
                dict(RFC7515_JWK, y=RFC7515_JWK["x"]), dict(RFC7515_JWK, x="!!"), {"kty": "RSA"}, "EC"):
        with pytest.raises(ValueError):
            agentgit.ec_public_key(bad)


@pytest.fixture
def dpop_key():
    ec = pytest.importorskip("cryptography.hazmat.primitives.asymmetric.ec")
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
    key = ec.generate_private_key(ec.SECP256R1())
    numbers = key.public_key().public_numbers()
    jwk = {"kty": "EC", "crv": "P-256", "x": agentgit.b64url(numbers.x.to_bytes(32, "big")),
           "y": agentgit.b64url(numbers.y.to_bytes(32, "big"))}

    def proof(claims, header=None):
        head = dict({"typ": "dpop+jwt", "alg": "ES256", "jwk": jwk}, **(header or {}))
        signing_input = "%s.%s" % (agentgit.b64url(json.dumps(head).encode()), agentgit.b64url(json.dumps(claims).encode()))
        r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        return signing_input + "." + agentgit.b64url(signature(r, s))
    return jwk, proof


def test_dpop_proofs_are_refused_for_each_fault(dpop_key):
    jwk, proof = dpop_key
    key, replay, url = b"k" * 32, agentgit.ReplayCache(), "https://agentgit.test/api/v3/user"
    ath = agentgit.b64url(hashlib.sha256(b"agt_token").digest())

    def claims(**changes):
        return dict({"htm": "GET", "htu": url, "iat": int(time.time()), "jti": "jti-%f" % time.time(), "ath": ath},
                    **changes)

    good = proof(claims())
    assert agentgit.check_dpop_proof(good, "GET", url, key, replay, "agt_token") == agentgit.jwk_thumbprint(jwk)
    faults = [
        (good, {}, "used before"),                                               # replayed
        (proof(claims(htm="POST")), {}, "not this request"),                     # another method
        (proof(claims(htu="https://agentgit.test/api/v3/repos")), {}, "not this request"),   # another URI
        (proof(claims(iat=int(time.time()) - 900)), {}, "iat"),                  # a skewed clock, old
        (proof(claims(iat=int(time.time()) + 900)), {}, "iat"),                  # ... and ahead
        (proof(claims(ath="x")), {}, "ath"),                                     # for another token
        (proof(claims(jti=None)), {}, "jti"),
        (proof(claims(), {"typ": "JWT"}), {}, "typ"),
        (proof(claims(), {"alg": "HS256"}), {}, "alg ES256"),
        (proof(claims(), {"jwk": dict(jwk, x=RFC7515_JWK["x"], y=RFC7515_JWK["y"])}), {}, "does not verify"),  # wrong key
        (good[:-4] + "AAAA", {}, "does not verify"),
        ("not.a.jwt", {}, "JSON"), ("x" * 5000, {}, "compact"),
        (proof(claims()), {"require_nonce": True}, "nonce"),
    ]
    for text, options, words in faults:
        with pytest.raises(agentgit.DPoPError) as raised:
            agentgit.check_dpop_proof(text, "GET", url, key, replay, "agt_token", **options)
        assert words in raised.value.description, (words, raised.value.description)
    assert raised.value.error == "use_dpop_nonce"
    nonce = agentgit.dpop_nonce(key)
    assert agentgit.check_dpop_proof(proof(claims(nonce=nonce)), "GET", url, key, replay, "agt_token", require_nonce=True)
    with pytest.raises(agentgit.DPoPError):
        agentgit.check_dpop_proof(proof(claims(nonce=agentgit.dpop_nonce(b"o" * 32))), "GET", url, key, replay,
                                  "agt_token", require_nonce=True)


def test_a_proof_wrong_in_any_claim_costs_no_signature_check(dpop_key, monkeypatch):
    """Every claim is checked before the signature: an anonymous client's proof that is wrong in its
    method, URL, time, token hash, jti or type costs no elliptic-curve arithmetic."""
    jwk, proof = dpop_key
    key, url = b"k" * 32, "https://agentgit.test/api/v3/user"
    verified = []
    real = agentgit.es256_valid
    patch_everywhere(monkeypatch, "es256_valid", lambda *args, **kw: verified.append(1) or real(*args, **kw))
    now = int(time.time())
    base = {"htm": "GET", "htu": url, "iat": now, "jti": "jti-of-a-proof", "ath": agentgit.b64url(
        hashlib.sha256(b"agt_token").digest())}
    for claims, header in ((dict(base, htm="POST"), {}), (dict(base, htu=url + "/x"), {}), (dict(base, iat=now - 900), {}),
                           (dict(base, ath="x"), {}), (dict(base, jti="short"), {}), (base, {"typ": "JWT"})):
        with pytest.raises(agentgit.DPoPError):
            agentgit.check_dpop_proof(proof(claims, header), "GET", url, key, agentgit.ReplayCache(), "agt_token")
    assert verified == []
    assert agentgit.check_dpop_proof(proof(base), "GET", url, key, agentgit.ReplayCache(), "agt_token")
    assert verified == [1]


def test_a_key_seen_for_the_first_time_costs_one_verification_not_a_table(dpop_key):
    """The standard library's verifier keeps tables (60 verifications' worth of work each) for the keys a
    token is bound to only: a proof by any other key is one plain verification, so a stream of fresh
    keys cannot make every request build one."""
    jwk, proof = dpop_key
    stdlib = agentgit.choose_backend("stdlib")
    x, y = agentgit.ec_public_key(jwk)
    header, claims, signing_input, signature = agentgit.decode_jws(proof({"n": 1}), 4096)
    assert stdlib.es256_valid(x, y, signing_input, signature, known_key=False)
    assert (x, y) not in stdlib.tables.keys
    assert stdlib.es256_valid(x, y, signing_input, signature, known_key=True)
    assert (x, y) in stdlib.tables.keys
    assert stdlib.es256_valid(x, y, signing_input, signature, known_key=False)      # kept, so used
    assert not stdlib.es256_valid(x, y, signing_input + b"!", signature, known_key=False)


def test_failed_proofs_from_an_address_are_refused_unverified_past_the_limit(server, dpop_key, monkeypatch):
    jwk, proof = dpop_key
    token = server.add_user("alice")
    url = server.url + "/api/v3/user"
    verified = []
    real = agentgit.es256_valid
    patch_everywhere(monkeypatch, "es256_valid", lambda *args, **kw: verified.append(1) or real(*args, **kw))

    def request(signed):
        return call(server, "GET", "/api/v3/user", token, headers={"DPoP": signed})

    def claims():
        return {"htm": "GET", "htu": url, "iat": int(time.time()), "jti": "jti-%f" % time.time()}
    for _ in range(agentgit.FAILED_PROOFS_PER_MINUTE):
        forged = proof(claims())
        refused = request(forged[:-4] + ("AAAA" if not forged.endswith("AAAA") else "BBBB"))
        assert refused.status == 401 and "does not verify" in refused.headers["www-authenticate"]
    assert len(verified) == agentgit.FAILED_PROOFS_PER_MINUTE
    refused = request(proof(claims()))                                  # a good one, from the same address
    assert refused.status == 401 and "too many DPoP proofs" in refused.headers["www-authenticate"]
    assert len(verified) == agentgit.FAILED_PROOFS_PER_MINUTE


def test_certificate_thumbprint_is_rfc_8705s():
    der = b"\x30\x03\x02\x01\x01"
    assert agentgit.certificate_thumbprint(der) == base64.urlsafe_b64encode(
        hashlib.sha256(der).digest()).rstrip(b"=").decode()


def test_a_used_proof_stays_used_after_a_restart_and_on_a_second_server(server, dpop_key):
    """Each proof's jti is kept in the database for the proof's lifetime: a server that restarts (its
    memory gone) or a second server on the same data refuses a proof the first one took."""
    jwk, proof = dpop_key
    token = server.add_user("alice")
    url = server.url + "/api/v3/user"
    once = proof({"htm": "GET", "htu": url, "iat": int(time.time()), "jti": "jti-used-once"})
    assert call(server, "GET", "/api/v3/user", token, headers={"DPoP": once}).status == 200
    server.app.dpop_replay = agentgit.StoredReplayCache(server.app.store)        # as after a restart
    replayed = call(server, "GET", "/api/v3/user", token, headers={"DPoP": once})
    assert replayed.status == 401 and "used before" in replayed.headers["www-authenticate"]
    second = agentgit.Installation(server.app.config)                            # another process on the data
    name = "%s %s" % (agentgit.jwk_thumbprint(jwk), "jti-used-once")
    assert not second.dpop_replay.first_use(name, time.time() + 300)
    assert second.dpop_replay.first_use(name + "-other", time.time() + 300)
