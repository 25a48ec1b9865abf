"""Egress: every connection the server opens to another host (a client's metadata document, the
broker's upstreams, a job's way out) goes to an address checked public when the name was resolved, and pinned to it.

An attacker who names a URL (a client_id that is a metadata document's URL, a credential's upstream)
must not reach the server's own network through it: every address the name resolves to must be public
(loopback only where the operator allows it, for tests), and the connection goes to the address that
was checked, so a name that resolves elsewhere a moment later (DNS rebinding) gains nothing. TLS still
checks the certificate against the name.
"""

import contextlib
import http.client
import ipaddress
import socket
import ssl
import threading

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


# Ranges ipaddress calls global that no upstream of ours lives in: IPv6 site-local (deprecated, but
# routed inside some networks) and the 6to4 relay anycast
NOT_UPSTREAMS = [ipaddress.ip_network(network) for network in ("fec0::/10", "192.88.99.0/24")]
NAT64 = [ipaddress.ip_network(network) for network in ("64:ff9b::/96", "64:ff9b:1::/48")]


def embedded_ipv4(address):
    """The IPv4 address an IPv6 one carries, where a translator or tunnel would deliver it there
    (IPv4-mapped, NAT64, 6to4, Teredo's client): that is the address to judge. None for the rest."""
    if address.version != 6:
        return None
    if address.ipv4_mapped or address.sixtofour:
        return address.ipv4_mapped or address.sixtofour
    if any(address in network for network in NAT64):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.teredo[1] if address.teredo else None


def routable(address, allow_loopback):
    """An allowlist, not a denylist: globally routable unicast only (ipaddress's is_global, which leaves
    out private, shared (100.64.0.0/10, where cloud metadata services live), link-local, documentation,
    benchmarking and reserved space), minus NOT_UPSTREAMS; loopback where the operator allows it."""
    inner = embedded_ipv4(address)
    if inner is not None:
        return routable(inner, allow_loopback)
    if allow_loopback and address.is_loopback:
        return True
    return address.is_global and not address.is_multicast and not any(address in n for n in NOT_UPSTREAMS)


def public_address(host, port, allow_loopback, what="the client's metadata host", status=400):
    """The address ``host`` resolves to, if every address it resolves to is routable (routable());
    HTTPError ``status`` naming the reason otherwise."""
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        raise HTTPError(status, "%s %s does not resolve" % (what, host))
    addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    for address in addresses:
        if not routable(address, allow_loopback):
            raise HTTPError(status, "%s %s is at a non-public address (%s)" % (what, host, address))
    return str(addresses[0])


def tunnel(host, port, allow_loopback, timeout=30):
    """A TCP connection to ``host``:``port``, at the address public_address() checked, for a run's job
    going out through its gateway (server.JobGatewayHandler); HTTPError 403 where the address is not public."""
    return socket.create_connection((public_address(host, port, allow_loopback, "the job's destination", 403), port),
                                    timeout=timeout)


def outbound_connection(scheme, host, port, address, timeout, verify=True):
    """An HTTP(S) connection to ``host`` at ``address`` (from public_address()), not yet opened.
    ``verify``: check the certificate (off only where its owner asked, a webhook's insecure_ssl)."""
    if scheme == "https":
        context = ssl.create_default_context()
        if not verify:
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        return PinnedHTTPSConnection(host, port, address, timeout=timeout, context=context)
    return PinnedHTTPConnection(host, port, address, timeout=timeout)


@contextlib.contextmanager
def within_deadline(conn, seconds):
    """The whole exchange on ``conn`` within ``seconds``: at the deadline its socket is shut down, which
    ends a read however slowly the other side trickles bytes (a timeout per read never fires then)."""
    def cut():
        try:
            if conn.sock is not None:
                conn.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    timer = threading.Timer(seconds, cut)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
