"""Whether two locations may hold the same objects: by where they lead, not how they are spelled.

`localhost` and `127.0.0.1`, a host name and its address, or two access keys for one
server all reach the same buckets. The overlap guard compares the addresses an endpoint
resolves to (any address of this machine counts as one: a server listening on all
interfaces answers on each), the port, the bucket and the prefixes; never the credentials.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from urllib.parse import urlsplit

from blocks.settings import StorageSettings
from tasks.storage.locations import AnyLocation, LocalLocation, S3Location

THIS_MACHINE = "this-machine"
AWS = "aws"  # no endpoint: AWS itself, where bucket names are global


def _is_local(family: int, sockaddr: tuple[object, ...]) -> bool:
    """Whether the address is one of this machine's (binding to it succeeds only then)."""
    address = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
    if address.is_loopback or address.is_unspecified:
        return True
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((sockaddr[0], 0, *sockaddr[2:]))
    except OSError:
        return False
    return True


@functools.lru_cache(maxsize=64)
def endpoint_identity(endpoint_url: str | None) -> tuple[frozenset[str], int]:
    """The host's name and addresses (THIS_MACHINE for any of this machine's) and the port
    an endpoint URL reaches; two endpoints sharing any of the hosts, on one port, may be
    one server."""
    if not endpoint_url:
        return frozenset({AWS}), 443
    parts = urlsplit(endpoint_url if "://" in endpoint_url else f"https://{endpoint_url}")
    host = (parts.hostname or "").lower().rstrip(".")
    port = parts.port or (80 if parts.scheme == "http" else 443)
    if host == "amazonaws.com" or host.endswith(".amazonaws.com"):
        return frozenset({AWS}), 443
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return frozenset({host}), port  # unresolvable here: its spelling is all there is
    hosts = {THIS_MACHINE if _is_local(f, a) else str(a[0]) for f, _, _, _, a in found}
    return frozenset({host, *hosts}), port  # the name too: its addresses may rotate


def same_server(a: StorageSettings, b: StorageSettings) -> bool:
    """Whether both settings may reach one S3 server (whatever their keys or spelling)."""
    hosts_a, port_a = endpoint_identity(a.endpoint_url)
    hosts_b, port_b = endpoint_identity(b.endpoint_url)
    return port_a == port_b and bool(hosts_a & hosts_b)


def overlaps(a: AnyLocation, b: AnyLocation) -> bool:
    """Whether one location lies inside the other (a mirror between them would eat itself)."""
    if isinstance(a, S3Location) and isinstance(b, S3Location):
        if a.settings.bucket.lower() != b.settings.bucket.lower():
            return False
        if not same_server(a.settings, b.settings):
            return False
        return a.root.startswith(b.root) or b.root.startswith(a.root)
    if isinstance(a, LocalLocation) and isinstance(b, LocalLocation):
        ra, rb = a.root.resolve(), b.root.resolve()
        return ra.is_relative_to(rb) or rb.is_relative_to(ra)
    return False


def store_inside(src: S3Location, store: StorageSettings) -> bool:
    """Whether a backup store's `buckets/` folder lies inside the source (a snapshot would
    archive its own archives)."""
    return (
        src.settings.bucket.lower() == store.bucket.lower()
        and same_server(src.settings, store)
        and store.key("buckets").startswith(src.root)
    )
