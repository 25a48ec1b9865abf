"""OAuth clients: apps their owners register, Dynamic Client Registration, Client ID Metadata Documents.

Three ways a client becomes known, all kept in oauth_apps:

- an owner registers an app (``POST /api/ext/v1/oauth/apps``): a name, redirect URIs, a secret if it
  is confidential;
- any client registers itself (RFC 7591, ``POST /register``), as MCP clients that predate metadata
  documents do: nobody vouches for it, and the consent page says so;
- a client's id is an HTTPS URL of its own metadata document (the Client ID Metadata Documents draft
  that MCP's authorization specification adopts): agentgit fetches it, with a size and time limit,
  never from a private, loopback or link-local address unless the operator allows loopback (for
  tests), never following a redirect, and keeps it for CIMD_CACHE_SECONDS. The document's
  ``client_id`` must be its own URL, and a redirect URI must be one it lists.
"""

import base64
import hmac
import http.client
import json
import secrets
import threading
import time
import urllib.parse

from agentgit.config import now, visible_ascii
from agentgit.errors import HTTPError, invalid
from agentgit.egress import outbound_connection, public_address, within_deadline
from agentgit.storage import insert_row
from agentgit.tokens import token_hash
from agentgit.policy import Resource
from agentgit.routing import route
from agentgit.lookups import signed_in
from agentgit.web import plain_text

CIMD_MAX_BYTES = 5 * 1024          # the draft's advice for a metadata document
CIMD_TIMEOUT_SECONDS = 5
CIMD_CACHE_SECONDS = 600
AUTH_METHODS = ("none", "client_secret_post", "client_secret_basic")


def valid_redirect_uri(uri):
    """https anywhere, http on loopback only (RFC 8252), a private-use scheme of a native app
    (com.example.app:/cb, RFC 8252 §7.1); never a fragment or anything but visible ASCII."""
    parts = urllib.parse.urlsplit(uri) if visible_ascii(uri) else None
    if parts is None or parts.fragment or not parts.scheme:
        return False
    if parts.scheme == "https":
        return bool(parts.netloc)
    if parts.scheme == "http":
        return parts.hostname in ("127.0.0.1", "localhost", "::1")
    return "." in parts.scheme and parts.scheme not in ("javascript", "data", "file")


def redirect_matches(registered, given):
    """Exact match, except that a loopback redirect may use any port (RFC 8252 §7.3); never a URI with
    anything but visible ASCII in it."""
    if not visible_ascii(given):
        return False
    if registered == given:
        return True
    a, b = urllib.parse.urlsplit(registered), urllib.parse.urlsplit(given)
    return (a.scheme == b.scheme == "http" and a.hostname in ("127.0.0.1", "localhost", "::1") and
            a.hostname == b.hostname and a.path == b.path and a.query == b.query and not b.fragment)


@route("POST", "/api/ext/v1/oauth/apps")
def register_oauth_app(req):
    """Register an OAuth app (client id, optional secret, redirect URIs) owned by the caller."""
    body = req.json()
    name = req.text_field(body, "name", "OAuthApp", required=True, limit=100)
    uris = req.field(body, "redirect_uris", list, "OAuthApp", required=True)
    if not all(isinstance(u, str) and valid_redirect_uri(u) for u in uris):     # none: a device-flow app
        raise invalid("OAuthApp", "redirect_uris", message="redirect URIs are https, or http on loopback, "
                                                            "with no fragment")
    confidential = req.field(body, "confidential", bool, "OAuthApp", default=False)
    user = signed_in(req)
    req.authorize("register_app", Resource.account(user))
    with req.transaction() as db:
        client_id, secret = new_client(db, name, uris, "client_secret_post" if confidential else "none", user["id"],
                                       "owned", {})
        req.effect("registered OAuth app %s (%s)" % (client_id, name))
    out = {"client_id": client_id, "name": name, "redirect_uris": uris}
    if secret:
        out["client_secret"] = secret
    return 201, out


def new_client(db, name, uris, auth_method, owner_id, kind, metadata):
    """(client id, secret or None) of a new row of oauth_apps."""
    client_id = "agc_" + secrets.token_hex(10)
    secret = "agcs_" + secrets.token_hex(24) if auth_method != "none" else None
    insert_row(db, "oauth_apps", {"client_id": client_id, "secret_hash": token_hash(secret) if secret else None,
                                  "name": name, "redirect_uris": json.dumps(uris), "owner_id": owner_id, "kind": kind,
                                  "metadata": json.dumps(metadata), "created_at": now()})
    return client_id, secret


def registration_error(code, text):
    return 400, {"error": code, "error_description": text}


@route("POST", "/register", "oauth", "none")
def dynamic_registration(req):
    """RFC 7591: a client registers itself, anonymously, for the authorization code flow with PKCE
    (and refresh tokens). A confidential client gets a secret, shown once."""
    retry_after = req.app.registrations.hit("client:" + req.client)     # anonymous, so counted per address
    if retry_after:
        return 429, {"error": "temporarily_unavailable", "error_description": "too many client registrations from "
                     "this address; retry later"}, {"Retry-After": str(retry_after)}
    try:
        body = req.json()
    except HTTPError:
        return registration_error("invalid_client_metadata", "the body must be a JSON object")
    uris = body.get("redirect_uris")
    if not isinstance(uris, list) or not uris or len(uris) > 10 or not all(
            isinstance(u, str) and len(u) <= 2000 and valid_redirect_uri(u) for u in uris):
        return registration_error("invalid_redirect_uri", "redirect_uris: 1 to 10 URIs, https or http on loopback "
                                                          "or a native app's own scheme, with no fragment")
    method = body.get("token_endpoint_auth_method", "none")
    grants = body.get("grant_types", ["authorization_code"])
    name = body.get("client_name", "")
    problems = [method not in AUTH_METHODS and "token_endpoint_auth_method must be one of %s" % ", ".join(AUTH_METHODS),
                not (isinstance(grants, list) and set(grants) <= {"authorization_code", "refresh_token"}) and
                "grant_types: authorization_code and refresh_token only",
                body.get("response_types", ["code"]) != ["code"] and "response_types: code only",
                not (isinstance(name, str) and len(name) <= 100) and "client_name: a string of at most 100 characters",
                isinstance(name, str) and plain_text(name) != " ".join(name.split()) and
                "client_name: no control, format (such as bidirectional) or separator characters",
                body.get("application_type", "web") not in ("web", "native") and "application_type: web or native"]
    problems = [p for p in problems if p]
    if problems:
        return registration_error("invalid_client_metadata", "; ".join(problems))
    metadata = {"redirect_uris": uris, "token_endpoint_auth_method": method, "grant_types": grants,
                "response_types": ["code"], "client_name": name or "unnamed client",
                "application_type": body.get("application_type", "web")}
    if isinstance(body.get("scope"), str):
        metadata["scope"] = body["scope"][:500]
    with req.app.store.transaction() as db:
        client_id, secret = new_client(db, metadata["client_name"], uris, method, None, "dynamic", metadata)
    out = dict(metadata, client_id=client_id, client_id_issued_at=int(time.time()))
    if secret:
        out.update(client_secret=secret, client_secret_expires_at=0)
    return 201, out


# -- finding the client of a request ------------------------------------------------------------

def find_client(req, client_id):
    """The oauth_apps row of ``client_id``: registered here, or fetched from its metadata document
    when it is an https URL (kept for CIMD_CACHE_SECONDS). None when there is none; HTTPError 400
    saying why when a metadata document cannot be used."""
    if not isinstance(client_id, str) or not client_id:
        return None
    row = req.app.store.one("SELECT * FROM oauth_apps WHERE client_id = ?", client_id)
    if not client_id.startswith("https://") or fresh_document(row):
        return row
    # one fetch of a document at a time: requests that come together for it wait for the first's answer
    with DOCUMENT_LOCKS[hash(client_id) % len(DOCUMENT_LOCKS)]:
        row = req.app.store.one("SELECT * FROM oauth_apps WHERE client_id = ?", client_id)
        return row if fresh_document(row) else fetch_and_keep_document(req, client_id)


# striped, so the locks are as many whatever the number of documents asked for
DOCUMENT_LOCKS = [threading.Lock() for _ in range(64)]


def fresh_document(row):
    return row is not None and time.time() - int(row["fetched_at"] or 0) < CIMD_CACHE_SECONDS


def fetch_and_keep_document(req, client_id):
    # anyone may make the server fetch a document (before signing in): as many a while as it registers clients
    retry_after = req.app.registrations.hit("document:" + req.client)
    if retry_after:
        raise HTTPError(429, "Too many client metadata documents fetched for this address; retry later",
                        headers={"Retry-After": str(retry_after)})
    document = fetch_client_document(client_id, req.app.config.allow_loopback_client_documents or
                                     req.app.config.egress_allow_loopback)
    uris, name = document["redirect_uris"], document.get("client_name") or urllib.parse.urlsplit(client_id).hostname
    with req.app.store.transaction() as db:
        row = db.execute("SELECT * FROM oauth_apps WHERE client_id = ?", (client_id,)).fetchone()
        if row is None:
            insert_row(db, "oauth_apps", {"client_id": client_id, "name": name[:100], "redirect_uris": json.dumps(uris),
                                          "kind": "metadata_document", "metadata": json.dumps(document),
                                          "fetched_at": int(time.time()), "created_at": now()})
        else:
            db.execute("UPDATE oauth_apps SET name = ?, redirect_uris = ?, metadata = ?, fetched_at = ? WHERE id = ?",
                       (name[:100], json.dumps(uris), json.dumps(document), int(time.time()), row["id"]))
    return req.app.store.one("SELECT * FROM oauth_apps WHERE client_id = ?", client_id)


def fetch_client_document(url, allow_loopback):
    """The metadata document at ``url``, checked: JSON, at most CIMD_MAX_BYTES, in CIMD_TIMEOUT_SECONDS,
    no redirect, its client_id this very URL, its redirect URIs well-formed."""
    parts = urllib.parse.urlsplit(url) if visible_ascii(url) and len(url) <= 2000 else None
    if parts is None or parts.scheme != "https" or not parts.hostname or parts.path in ("", "/") or parts.fragment \
            or parts.username or parts.password:
        raise HTTPError(400, "a client_id URL is https, with a path, and no fragment or user")
    port = parts.port or 443
    conn = outbound_connection("https", parts.hostname, port, public_address(parts.hostname, port, allow_loopback),
                               CIMD_TIMEOUT_SECONDS)
    deadline = time.monotonic() + CIMD_TIMEOUT_SECONDS
    try:
        with within_deadline(conn, CIMD_TIMEOUT_SECONDS):      # the headers too, however slowly they trickle
            conn.request("GET", parts.path + ("?" + parts.query if parts.query else ""), headers={
                "Accept": "application/json", "User-Agent": "agentgit"})
            response = conn.getresponse()
            if response.status != 200:
                raise HTTPError(400, "the client's metadata document answered HTTP %d (redirects are not followed)" %
                                response.status)
            data = b""
            while len(data) <= CIMD_MAX_BYTES and time.monotonic() < deadline:
                chunk = response.read1(CIMD_MAX_BYTES + 1 - len(data))
                if not chunk:
                    break
                data += chunk
    except (OSError, http.client.HTTPException) as error:
        raise HTTPError(400, "the client's metadata document could not be fetched in %d s: %s" % (
            CIMD_TIMEOUT_SECONDS, str(error)[:200]))
    finally:
        conn.close()
    if len(data) > CIMD_MAX_BYTES or time.monotonic() >= deadline:
        raise HTTPError(400, "the client's metadata document is over %d bytes or took over %d s" % (
            CIMD_MAX_BYTES, CIMD_TIMEOUT_SECONDS))
    return checked_client_document(url, data)


def checked_client_document(url, data):
    """The document ``data`` (fetched from ``url``), once it is a JSON object that names ``url`` as its
    client_id, lists valid redirect URIs, names itself with a string if at all, and asks for no secret;
    HTTPError 400 saying what is wrong otherwise."""
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise HTTPError(400, "the client's metadata document is not JSON")
    if not isinstance(document, dict) or document.get("client_id") != url:
        raise HTTPError(400, "the client's metadata document must name its own URL as client_id")
    uris = document.get("redirect_uris")
    if not isinstance(uris, list) or not uris or not all(isinstance(u, str) and valid_redirect_uri(u) for u in uris):
        raise HTTPError(400, "the client's metadata document must list valid redirect_uris")
    if document.get("token_endpoint_auth_method", "none") != "none":
        raise HTTPError(400, "a client identified by a metadata document authenticates with none (PKCE) here")
    if not isinstance(document.get("client_name", ""), str):
        raise HTTPError(400, "the client's metadata document names the client with a string (client_name)")
    return document


def authenticated_client(req, params):
    """The client a token request comes from, authenticated as it registered: a secret in the body or
    in HTTP Basic, or none (a public client, PKCE its proof). None for an unknown or wrong one."""
    client_id, secret = params.get("client_id", ""), params.get("client_secret")
    header = req.headers.get("Authorization") or ""
    if header.lower().startswith("basic "):
        try:
            client_id, _, secret = base64.b64decode(header[6:]).decode().partition(":")
            client_id, secret = urllib.parse.unquote(client_id), urllib.parse.unquote(secret)
        except (ValueError, UnicodeDecodeError):
            return None
    try:
        row = find_client(req, client_id)
    except HTTPError:
        return None
    if row is None:
        return None
    if row["secret_hash"] and not hmac.compare_digest(row["secret_hash"], token_hash(secret or "")):
        return None
    return row
