"""Sender-constrained tokens and runtime identity. A CI runner proves who it is with a client
certificate of the operator's CA (its SPIFFE ID in the URI SAN): the task tokens it mints are bound
to that certificate (RFC 8705), work from that runtime only, are named by it in every audit row, and
are revoked as a class by naming the runtime. Without certificates, DPoP (RFC 9449) binds tokens to a
key the client holds: the proofs come from requests-oauth2client, a client library that speaks it.
"""
import base64
import hashlib
import json
import subprocess
import urllib.parse

import pytest

import agentgit

requests = pytest.importorskip("requests")
from conftest import CLI, alice_and_her_agent, call, commit_file, exchange, ext, git, git_env, issue_cert

RUNTIME = "spiffe://example.org/agent/ci"


@pytest.fixture(scope="module")
def runtime_certs(test_ca, tmp_path_factory):
    """Three runtimes' client certificates of the test CA, each naming its SPIFFE ID."""
    directory = tmp_path_factory.mktemp("runtimes")
    return {name: issue_cert(test_ca, directory, name, uri=uri, client=True) for name, uri in (
        ("ci", RUNTIME), ("laptop", "spiffe://example.org/agent/laptop"), ("stranger", "spiffe://other.org/x"))}


@pytest.fixture
def mtls(tmp_path, test_ca, runtime_certs):
    """agentgit over HTTPS taking client certificates of the test CA."""
    srv = agentgit.make_server(tmp_path / "data", port=0, tls_cert=test_ca["cert"], tls_key=test_ca["key"],
                               tls_client_ca=test_ca["ca"]).start()
    srv.test_ca = test_ca["ca"]
    yield srv, runtime_certs, test_ca["ca"]
    srv.stop()


def curl(srv, ca, path, token=None, cert=None, method="GET", body=None, scheme="Bearer", form=None):
    """curl, as a runtime runs it: (status, JSON body, lower-cased headers)."""
    args = ["curl", "-sS", "--cacert", ca, "-X", method, "-D", "/dev/stderr", srv.url + path,
            "-H", "Accept: application/json"]
    if token:
        args += ["-H", "Authorization: %s %s" % (scheme, token)]
    if cert:
        args += ["--cert", cert[0], "--key", cert[1]]
    if body is not None:
        args += ["-H", "Content-Type: application/json", "-d", json.dumps(body)]
    if form is not None:
        args += ["--data", urllib.parse.urlencode(form)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60, check=True)
    head = done.stderr.strip().split("\n\n")[-1].split("\n")        # (text mode: CRLF reads as LF)
    headers = dict(line.split(": ", 1) for line in head[1:] if ": " in line)
    return (int(head[0].split()[1]), json.loads(done.stdout) if done.stdout.strip() else None,
            {k.lower(): v for k, v in headers.items()})


def thumbprint(cert_path):
    der = subprocess.run(["openssl", "x509", "-in", cert_path, "-outform", "der"], capture_output=True, check=True).stdout
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()


def bound_agent(srv, constraints):
    """alice's agent, with a task grant on alice/payments under ``constraints``."""
    alice, login, agent = alice_and_her_agent(srv)
    grant = ext(srv, "POST", "/task-grants", alice, {
        "agent": "agent:" + login, "task": "task:fix-payment-bug", "resources": ["repo:alice/payments"],
        "actions": ["read_code", "create_branch", "push_branch"], "constraints": constraints})
    assert grant.status == 201, grant
    return alice, login, agent, grant.json


def test_a_runtime_with_a_client_certificate_mints_tokens_only_it_can_use(mtls, tmp_path):
    srv, certs, ca = mtls
    alice, login, agent, grant = bound_agent(srv, {"branch_prefix": "agent/", "sender_constrained": True,
                                                   "runtime": ["spiffe://example.org/agent/*"]})
    mint = "/api/ext/v1/task-grants/%s/tokens" % grant["id"]
    status, body, _ = curl(srv, ca, mint, agent, method="POST", body={})
    assert status == 403 and "no runtime identity" in body["message"]
    status, body, _ = curl(srv, ca, mint, agent, certs["stranger"], "POST", {})
    assert status == 403 and "spiffe://other.org/x" in body["message"]
    status, minted, _ = curl(srv, ca, mint, agent, certs["ci"], "POST", {})
    assert status == 201 and minted["cnf"] == {"x5t#S256": thumbprint(certs["ci"][0])}
    token = minted["token"]

    # from its runtime only: not without a certificate, not from another runtime's
    status, body, _ = curl(srv, ca, "/api/v3/user", token, certs["ci"])
    assert status == 200 and body["login"] == login
    status, body, headers = curl(srv, ca, "/api/v3/user", token)
    assert status == 401 and 'error="invalid_token"' in headers.get("www-authenticate", ""), (body, headers)
    assert curl(srv, ca, "/api/v3/user", token, certs["laptop"])[0] == 401

    # git over HTTPS with the certificate: clone and push a branch under the prefix; without it, refused
    env = dict(git_env(tmp_path), GIT_SSL_CAINFO=ca)
    url = "https://x-access-token:%s@%s/alice/payments.git" % (token, srv.url.split("://")[1])
    cert_options = ["-c", "http.sslCert=" + certs["ci"][0], "-c", "http.sslKey=" + certs["ci"][1]]
    git(str(tmp_path), *cert_options, "clone", "-q", url, "work", env=env)
    commit_file(tmp_path / "work", "fix.txt", "fixed\n")
    git(str(tmp_path / "work"), *cert_options, "push", "-q", "origin", "HEAD:refs/heads/agent/fix", env=env)
    refused = git(str(tmp_path), "clone", "-q", url, "again", env=env, check=False)
    assert refused.returncode != 0 and "certificate" in (refused.stderr + refused.stdout)
    # the runtime's whole story: agentgit's credential helper trades the bootstrap token over the same
    # certificate git presents, so every task token it hands git is bound to the runtime
    token_file = tmp_path / "bootstrap"
    token_file.write_text(agent)
    helper = "!%s credential --token-file %s --task task:fix-payment-bug --cache %s --tls-client-cert %s " \
             "--tls-client-key %s" % (" ".join(CLI), token_file, tmp_path / "cache.json", *certs["ci"])
    helped = dict(env, SSL_CERT_FILE=ca)
    plain_url = "%s/alice/payments.git" % srv.url
    git(str(tmp_path), *cert_options, "-c", "credential.helper=" + helper, "-c", "credential.useHttpPath=true",
        "clone", "-q", plain_url, "helped", env=helped)
    cached = json.loads((tmp_path / "cache.json").read_text())
    helper_token = next(iter(cached.values()))["token"]
    assert curl(srv, ca, "/api/v3/user", helper_token)[0] == 401                 # bound: useless without the cert
    assert curl(srv, ca, "/api/v3/user", helper_token, certs["ci"])[0] == 200

    # the runtime is in every row, in explain, in introspection and in the policy endpoint
    rows = ext(srv, "GET", "/agents/%s/activity" % login, alice).json
    pushed = next(r for r in rows if r["action"] == "create_branch")
    assert RUNTIME in pushed["runtime"] and pushed["decision"] == "allow"
    explained = ext(srv, "GET", "/audit/%d" % pushed["id"], alice).json["explanation"]
    assert RUNTIME in explained
    explain_cli = subprocess.run([*CLI, "audit", "explain", str(pushed["id"]), "--data", srv.app.config.data_dir],
                                 capture_output=True, text=True, check=True).stdout
    assert RUNTIME in explain_cli
    status, facts, _ = curl(srv, ca, "/login/oauth/introspect", alice, method="POST", form={"token": token})
    assert facts["active"] and facts["cnf"] == {"x5t#S256": thumbprint(certs["ci"][0])} and facts["runtime"] == RUNTIME
    status, policy, _ = curl(srv, ca, "/api/ext/v1/policy?resource=repo:alice/payments", token, certs["ci"])
    assert status == 200 and policy["runtime"] == RUNTIME and policy["actions"]["push_branch"]["decision"] == "allow"

    # revocation by runtime: everything the CI runtime minted, at once, and the credential it minted
    # with (the agent's bootstrap token would mint again from anywhere); the pattern is read as an
    # identity is (the trust domain's case and a trailing slash change nothing)
    status, revoked, _ = curl(srv, ca, "/api/ext/v1/revocations", alice, method="POST",
                              body={"runtime": "SPIFFE://Example.ORG/agent/*/"})
    assert status == 200 and revoked["revoked"] == 3 and revoked["revocation"].startswith("rr_")
    assert curl(srv, ca, "/api/v3/user", token, certs["ci"])[0] == 401
    assert curl(srv, ca, "/api/v3/user", agent)[0] == 401
    # and it stays revoked: the runtime mints nothing more, with the agent's new token either, until lifted
    agent = ext(srv, "POST", "/agent-bindings/%s/reset-token" % login, alice).json["token"]
    status, body, _ = curl(srv, ca, mint, agent, certs["ci"], "POST", {})
    assert status == 403 and "runtime %s is revoked (%s" % (RUNTIME, revoked["revocation"]) in body["message"]
    listed = ext(srv, "GET", "/revocations/runtimes", alice).json
    assert [r["runtime"] for r in listed] == ["spiffe://example.org/agent/*"] and "user:alice" in listed[0]["for"]
    assert ext(srv, "DELETE", "/revocations/runtimes/" + revoked["revocation"], agent).status in (403, 404)
    assert ext(srv, "DELETE", "/revocations/runtimes/" + revoked["revocation"], alice).status == 204
    assert curl(srv, ca, mint, agent, certs["ci"], "POST", {})[0] == 201


def test_a_runtime_identity_is_one_spiffe_id_however_spelled_and_an_agent_that_used_one_keeps_using_one(
        tmp_path, test_ca, new_database):
    """A certificate with two URI SANs names no runtime: it is refused, not read as its first. One
    identity is one however its scheme and trust domain are cased, so a revocation of it holds. An
    agent that minted with a certificate mints with one from then on (a stolen bootstrap token gets
    nothing without the certificate's key), and a site can require that of every agent."""
    directory = tmp_path / "certs"
    directory.mkdir()
    two = issue_cert(test_ca, directory, "two", uri=[RUNTIME, "spiffe://other.org/y"], client=True)
    shouting = issue_cert(test_ca, directory, "shouting", uri="SPIFFE://EXAMPLE.ORG/agent/ci/", client=True)
    srv = agentgit.make_server(tmp_path / "data", port=0, tls_cert=test_ca["cert"], tls_key=test_ca["key"],
                               tls_client_ca=test_ca["ca"]).start()
    ca = srv.test_ca = test_ca["ca"]
    try:
        alice, login, agent, grant = bound_agent(srv, {})
        mint = "/api/ext/v1/task-grants/%s/tokens" % grant["id"]
        status, body, headers = curl(srv, ca, mint, agent, two, "POST", {})
        assert status == 401 and "2 URI SANs" in body["message"] and 'error="invalid_token"' in headers["www-authenticate"]
        status, minted, _ = curl(srv, ca, mint, agent, shouting, "POST", {})
        assert status == 201
        facts = curl(srv, ca, "/login/oauth/introspect", alice, method="POST", form={"token": minted["token"]})[1]
        assert facts["runtime"] == RUNTIME                               # read as the one identity it is
        status, body, _ = curl(srv, ca, mint, agent, None, "POST", {})  # the bootstrap token without the certificate
        assert status == 403 and "mints with a client certificate only (it minted with one before)" in body["message"]
        refused = exchange(srv, subject_token=agent, resource=srv.url)
        assert refused.status in (400, 401, 403) and "client certificate" in json.dumps(refused.json), refused
    finally:
        srv.stop()
    srv = agentgit.make_server(tmp_path / "site", port=0, tls_cert=test_ca["cert"], tls_key=test_ca["key"],
                               tls_client_ca=test_ca["ca"], require_runtime_certificates=True,
                               database=new_database()).start()
    srv.test_ca = ca
    try:
        alice, login, agent, grant = bound_agent(srv, {})
        status, body, _ = curl(srv, ca, "/api/ext/v1/task-grants/%s/tokens" % grant["id"], agent, None, "POST", {})
        assert status == 403 and "(this site says so)" in body["message"]
        assert curl(srv, ca, "/api/ext/v1/task-grants/%s/tokens" % grant["id"], agent, shouting, "POST", {})[0] == 201
    finally:
        srv.stop()


def test_a_site_can_require_bound_task_tokens(tmp_path, test_ca, runtime_certs):
    srv = agentgit.make_server(tmp_path / "data", port=0, tls_cert=test_ca["cert"], tls_key=test_ca["key"],
                               tls_client_ca=test_ca["ca"], require_sender_constrained=True).start()
    srv.test_ca = test_ca["ca"]
    try:
        _, _, agent, grant = bound_agent(srv, {})
        ci = runtime_certs["ci"]
        mint = "/api/ext/v1/task-grants/%s/tokens" % grant["id"]
        status, body, _ = curl(srv, test_ca["ca"], mint, agent, method="POST", body={})
        assert status == 403 and "this site's task and tool tokens are sender-constrained" in body["message"]
        assert curl(srv, test_ca["ca"], mint, agent, ci, "POST", {})[0] == 201
    finally:
        srv.stop()


# -- DPoP -------------------------------------------------------------------------------------------

@pytest.fixture
def dpop_client():
    return pytest.importorskip("requests_oauth2client")



def test_dpop_bound_task_tokens_with_a_real_dpop_client(server, dpop_client):
    _, login, agent, grant = bound_agent(server, {"branch_prefix": "agent/"})
    key = dpop_client.DPoPKey.generate(alg="ES256")
    # the agent mints a task token with a proof of its key: the token is bound to that key
    mint = server.url + "/api/ext/v1/task-grants/%s/tokens" % grant["id"]
    r = requests.post(mint, json={}, headers={"Authorization": "Bearer " + agent,
                                              "DPoP": str(key.proof(htm="POST", htu=mint))})
    assert r.status_code == 201, r.text
    minted = r.json()
    assert minted["token_type"] == "DPoP" and minted["cnf"] == {"jkt": key.dpop_jkt}
    token = dpop_client.DPoPToken(minted["token"], _dpop_key=key)
    answer = requests.get(server.url + "/api/v3/user", auth=token)
    assert answer.status_code == 200 and answer.json()["login"] == login
    # refused: as a Bearer token; with a proof by another key; a proof replayed; a proof for another URI
    bearer = requests.get(server.url + "/api/v3/user", headers={"Authorization": "Bearer " + minted["token"]})
    assert bearer.status_code == 401 and 'DPoP error="invalid_token"' in bearer.headers["WWW-Authenticate"]
    user_url = server.url + "/api/v3/user"
    other = dpop_client.DPoPKey.generate(alg="ES256")
    wrong_key = requests.get(user_url, headers={"Authorization": "DPoP " + minted["token"], "DPoP": str(other.proof(
        htm="GET", htu=user_url, ath=ath(minted["token"])))})
    assert wrong_key.status_code == 401 and "signed by another key" in wrong_key.json()["message"]
    proof = str(key.proof(htm="GET", htu=user_url, ath=ath(minted["token"])))
    headers = {"Authorization": "DPoP " + minted["token"], "DPoP": proof}
    assert requests.get(user_url, headers=headers).status_code == 200
    replayed = requests.get(user_url, headers=headers)
    assert replayed.status_code == 401 and 'error="invalid_dpop_proof"' in replayed.headers["WWW-Authenticate"]
    assert "used before" in replayed.json()["message"]
    elsewhere = requests.get(server.url + "/api/v3/user/repos", headers={
        "Authorization": "DPoP " + minted["token"],
        "DPoP": str(key.proof(htm="GET", htu=user_url, ath=ath(minted["token"])))})
    assert elsewhere.status_code == 401 and "not this request" in elsewhere.json()["message"]
    # introspection says what it is bound to
    facts = call(server, "POST", "/login/oauth/introspect", raw_body=urllib.parse.urlencode(
        {"token": minted["token"]}).encode(), headers={"Content-Type": "application/x-www-form-urlencoded",
                                                       "Authorization": "Bearer " + agent}).json
    assert facts["token_type"] == "DPoP" and facts["cnf"] == {"jkt": key.dpop_jkt}


def ath(token):
    return base64.urlsafe_b64encode(hashlib.sha256(token.encode()).digest()).rstrip(b"=").decode()


def test_dpop_token_exchange_and_server_nonces(tmp_path, dpop_client):
    """The library's own token exchange (RFC 8693 with DPoP), against a server that requires its
    nonce: the client is told use_dpop_nonce, with the nonce, and retries with it."""
    srv = agentgit.make_server(tmp_path / "data", port=0, dpop_nonce=True).start()
    try:
        _, login, agent, grant = bound_agent(srv, {})
        client = dpop_client.OAuth2Client(token_endpoint=srv.url + "/login/oauth/access_token", client_id="ci-runtime",
                                          dpop_bound_access_tokens=True, testing=True)   # (testing: http on loopback)
        key = dpop_client.DPoPKey.generate(alg="ES256")
        token = client.token_exchange(subject_token=dpop_client.BearerToken(agent), dpop_key=key,
                                      resource=srv.url + "/alice/payments.git", task="task:fix-payment-bug")
        assert token.token_type == "DPoP" and token.access_token.startswith("agt_")
        answer = requests.get(srv.url + "/api/v3/repos/alice/payments", auth=token)     # the RS nonce, retried
        assert answer.status_code == 200 and answer.json()["full_name"] == "alice/payments"
        key.rs_nonce = None          # the key's next proof without the nonce it learned
        no_nonce = requests.get(srv.url + "/api/v3/user", headers={
            "Authorization": "DPoP " + token.access_token,
            "DPoP": str(key.proof(htm="GET", htu=srv.url + "/api/v3/user", ath=ath(token.access_token)))})
        assert no_nonce.status_code == 401 and 'error="use_dpop_nonce"' in no_nonce.headers["WWW-Authenticate"]
        assert no_nonce.headers["DPoP-Nonce"]
    finally:
        srv.stop()
