"""Egress: every connection the server opens to another host (a client's metadata document, the
broker's upstreams) goes to an address checked public when the name was resolved, and pinned to it.

An attacker who names a URL (a client_id that is a metadata document's URL, a credential's upstream)
must not reach the server's own network through it: every address the name resolves to must be public
(loopback only where the operator allows it, for tests), and the connection goes to the address that
was checked, so a name that resolves elsewhere a moment later (DNS rebinding) gains nothing. TLS still
checks the certificate against the name.
"""

import http.client
import ipaddress
import socket
import ssl

from agentgit.errors import HTTPError


class PinnedHTTPConnection(http.client.HTTPConnection):
    """Plain HTTP to ``address`` (already checked), the name resolved once, as PinnedHTTPSConnection."""

    def __init__(self, host, port, address, **kwargs):
        super().__init__(host, port, **kwargs)
        self.address = address

    def connect(self):
        self.sock = socket.create_connection((self.address, self.port), self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)     # kept alive: no Nagle wait


class PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to ``address`` (already checked) with the certificate checked for ``host``: the name is
    resolved once, so it cannot point somewhere else between the check and the connection."""

    def __init__(self, host, port, address, **kwargs):
        super().__init__(host, port, **kwargs)
        self.address = address

    def connect(self):
        sock = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def public_address(host, port, allow_loopback, what="the client's metadata host", status=400):
    """The address ``host`` resolves to, if every address it resolves to is a public one (loopback
    too when allowed); HTTPError ``status`` naming the reason otherwise."""
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except OSError:
        raise HTTPError(status, "%s %s does not resolve" % (what, host))
    addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    for address in addresses:
        loopback_ok = allow_loopback and address.is_loopback
        if not loopback_ok and (address.is_private or address.is_loopback or address.is_link_local or
                                address.is_multicast or address.is_reserved or address.is_unspecified):
            raise HTTPError(status, "%s %s is at a non-public address (%s)" % (what, host, address))
    return str(addresses[0])


def outbound_connection(scheme, host, port, address, timeout):
    """An HTTP(S) connection to ``host`` at ``address`` (from public_address()), not yet opened."""
    if scheme == "https":
        return PinnedHTTPSConnection(host, port, address, timeout=timeout, context=ssl.create_default_context())
    return PinnedHTTPConnection(host, port, address, timeout=timeout)
