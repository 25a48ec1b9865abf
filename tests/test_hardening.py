"""Hardening: what a hostile client sends is refused in the surface's own shape, and never reaches a
header, a ref, the filesystem or the server's time unbounded."""
import http.client
import urllib.parse

from conftest import Browser, api, call, ext, patch_everywhere


def raw_request(server, text):
    """Bytes on a socket as a hostile client writes them; the status line and headers of the answer."""
    import socket
    host, port = server.httpd.server_address[:2]
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(text if isinstance(text, bytes) else text.encode("latin-1"))
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head = data.split(b"\r\n\r\n")[0].decode("latin-1")
    return head.split("\r\n")


def test_a_redirect_uri_or_next_with_cr_lf_never_reaches_a_header(server):
    alice = server.add_user("alice", password="pw")
    client = ext(server, "POST", "/oauth/apps", alice, {"name": "Tool", "redirect_uris": [
        "http://127.0.0.1/cb"]}).json["client_id"]
    # an app cannot register one either
    for uri in ("http://127.0.0.1/cb\r\nSet-Cookie: x=1", "http://127.0.0.1/c b", "http://127.0.0.1/\tcb"):
        assert ext(server, "POST", "/oauth/apps", alice, {"name": "Bad", "redirect_uris": [uri]}).status == 422
    injected = "http://127.0.0.1:9/cb\r\nSet-Cookie: agentgit_session=fixed"
    lines = raw_request(server, "GET /login/oauth/authorize?%s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" %
                        urllib.parse.urlencode({"client_id": client, "redirect_uri": injected,
                                                "response_type": "token"}))
    assert lines[0].startswith("HTTP/1.1 400") and not any(line.lower().startswith(("set-cookie: agentgit_session",
                                                                                     "location")) for line in lines)
    # the sign-in form's next: a local path of visible ASCII, or the default
    browser = Browser(server)
    for target in ("/\t/evil.example", "/x\r\nSet-Cookie: agentgit_session=fixed", "//evil.example", "/\\evil"):
        _, page = browser.request("GET", "/login?next=" + urllib.parse.quote(target))
        assert 'name="next" value="/settings/agents"' in page, target
        resp, _ = browser.request("POST", "/login", {"csrf": browser.csrf(page), "login": "alice", "password": "pw",
                                                     "next": target})
        assert resp.status == 303 and resp.getheader("Location") == "/settings/agents", target


def test_one_header_writer_refuses_cr_lf_whatever_the_handler_does(server, monkeypatch):
    """The class, not the instance: were a handler ever to put CR or LF in a header, the writer refuses
    it and the client gets a clean 500 with no header of the attacker's."""
    server.add_user("alice", password="pw")
    patch_everywhere(monkeypatch, "safe_next", lambda target: target)        # as if the check were forgotten
    browser = Browser(server)
    _, page = browser.request("GET", "/login")
    resp, _ = browser.request("POST", "/login", {"csrf": browser.csrf(page), "login": "alice", "password": "pw",
                                                 "next": "/x\r\nSet-Cookie: agentgit_session=fixed"})
    assert resp.status == 500 and resp.getheader("Location") is None
    assert "fixed" not in str(resp.getheaders())
