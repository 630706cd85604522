"""Where webhooks may go: never to this server's own network, unless the operator names the host.

A webhook target that resolves to a loopback, link-local (cloud metadata at 169.254.169.254 included),
private, shared (100.64/10), multicast, reserved or unspecified address would let whoever registers a
channel make the worker connect inside the network, and read the delivery error shown on /alerts/ as an
internal port scanner. So a target is checked when the channel is registered (`webhook_target_check`)
and again at every delivery, where the connection is made to the address that was checked
(`guarded_opener`), so a DNS answer that changes between the check and the connection (rebinding) cannot
slip through.

WEBHOOK_ALLOWED_INTERNAL_HOSTS names hosts (exactly as written in the URL) that may resolve inside.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import urllib.request
from urllib.parse import urlsplit

from django.conf import settings


class TargetRefused(ValueError):
    """The target's host resolves to an address webhooks may not reach."""


def _allowed_host(host: str) -> bool:
    return host.lower() in {h.lower().strip("[]") for h in settings.WEBHOOK_ALLOWED_INTERNAL_HOSTS}


def address_is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def resolve_public(host: str, port: int) -> list[tuple]:
    """getaddrinfo answers for host:port, refused unless every address is public (or the host allowed)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    if _allowed_host(host):
        return infos
    for info in infos:
        if not address_is_public(str(info[4][0])):
            raise TargetRefused(f"{host} resolves to a non-public address; webhooks may not reach it.")
    return infos


def webhook_target_check(url: str) -> None:
    """At registration: refuse a target whose host is, or resolves to, a non-public address. A name that does
    not resolve yet is accepted; each delivery checks again before it connects."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if not host or _allowed_host(host):
        return
    try:
        resolve_public(host, parts.port or (443 if parts.scheme == "https" else 80))
    except TargetRefused:
        raise
    except (OSError, UnicodeError):
        return


def _guarded_create_connection(address, timeout=socket._GLOBAL_DEFAULT_TIMEOUT, source_address=None):  # type: ignore[attr-defined]
    host, port = address
    last_error: OSError | None = None
    for family, socktype, proto, _name, sockaddr in resolve_public(host, port):
        sock = socket.socket(family, socktype, proto)
        try:
            if timeout is not socket._GLOBAL_DEFAULT_TIMEOUT:  # type: ignore[attr-defined]
                sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            sock.connect(sockaddr)  # the checked address, not a second lookup
            return sock
        except OSError as exc:
            last_error = exc
            sock.close()
    raise last_error or OSError(f"cannot connect to {host}")


class _GuardedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._create_connection = _guarded_create_connection


class _GuardedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._create_connection = _guarded_create_connection


class _GuardedHTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req):
        return self.do_open(_GuardedHTTPConnection, req)


class _GuardedHTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req):
        return self.do_open(_GuardedHTTPSConnection, req)


def guarded_opener(
    *handlers: urllib.request.BaseHandler | type[urllib.request.BaseHandler],
) -> urllib.request.OpenerDirector:
    """An opener whose http and https connections go only to addresses `resolve_public` accepts. No proxy
    handler: an environment proxy would make the check meaningless (the proxy connects, not we)."""
    return urllib.request.build_opener(
        urllib.request.ProxyHandler({}), _GuardedHTTPHandler, _GuardedHTTPSHandler, *handlers
    )
