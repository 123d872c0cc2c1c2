"""A registry's address as the toolchain takes it (``HOST[:PORT]``), how it is reached, and advice on its errors.

Plain HTTP only for a loopback registry (``localhost``, ``127.0.0.0/8``, ``::1``, judged by :mod:`ipaddress`,
as Docker itself allows), HTTPS otherwise. An engine checks a registry's TLS certificate against
``/etc/docker/certs.d/HOST:PORT/ca.crt`` (:data:`CERTS_D`) on its own machine; Docker skips the check on loopback.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import TYPE_CHECKING

from toolchain.errors import BadInputError
from toolchain.redaction import scrub

if TYPE_CHECKING:
    from toolchain.serve.credentials import RegistryCredential

_REGISTRY_RE = re.compile(r"^[A-Za-z0-9.-]+(:[0-9]{1,5})?$|^\[[0-9a-fA-F:]+\](:[0-9]{1,5})?$")
CERTS_D = Path("/etc/docker/certs.d")
"""Where a Docker engine looks for the CA of a registry (``CERTS_D/HOST:PORT/ca.crt``), read per connection."""


def check_registry(registry: str) -> str:
    """``registry`` as ``HOST[:PORT]``.

    Raises:
        BadInputError: a scheme, a path or credentials in it.
    """
    if not _REGISTRY_RE.match(registry or ""):
        shown = "(not shown: it holds credentials)" if "@" in (registry or "") else repr(scrub(registry))
        raise BadInputError(f"--push {shown}: give the registry as HOST[:PORT] (e.g. 127.0.0.1:5000 or "
                            "registry.example.org), without scheme, path or credentials")
    return registry


def _host(registry: str) -> str:
    """The host part of ``HOST[:PORT]`` (``[v6]:PORT`` included)."""
    if registry.startswith("["):
        return registry[1:registry.index("]")]
    return registry.rsplit(":", 1)[0]


def is_loopback(registry: str) -> bool:
    """Whether ``registry`` is this machine's loopback: ``localhost`` or a loopback address, never a name that starts
    like one (``127.attacker.example``)."""
    host = _host(registry)
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False  # a DNS name: it could point anywhere
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def registry_url(registry: str, *, tls: bool = False) -> str:
    """``http://`` for a loopback registry (unless ``tls``: its CA was given), ``https://`` for every other one."""
    return f"{'http' if is_loopback(registry) and not tls else 'https'}://{registry}"


def registry_hint(registry: str, message: str, *, login: RegistryCredential | None = None,
                  credentials: str = "") -> str:
    """What to do about a registry error the engine reported (its text only picks the advice, never a retry).

    Args:
        login: The login the request carried (None: none from a credentials file).
        credentials: The credentials file's path, to name in the advice.
    """
    text = message.lower()
    table = f'[registries."{registry}"]'
    where = f"{credentials}'s {table}" if credentials else f"a credentials file's {table} (--credentials FILE)"
    if "x509" in text or "certificate" in text or "tls:" in text:
        ca_file = CERTS_D / registry / "ca.crt"
        if "expired" in text or "not yet valid" in text:
            return (f"the registry {registry}'s TLS certificate has expired (or is not valid yet): renew the "
                    "registry's certificate (and check the engine's clock)")
        return (f"the engine does not trust the registry {registry}'s TLS certificate: put the CA that signed it in "
                f"{ca_file} on the engine's machine (no restart needed), or give the registry a certificate from a CA "
                "the engine trusts")
    if "unauthorized" in text or "authentication required" in text or "no basic auth credentials" in text:
        if login is None or not login.username:
            return f"the registry {registry} wants a login: give its username and password in {where}"
        return (f"the registry {registry} refused the login (username/password of {where}): fix them, or check "
                "that the account may push and pull there")
    return ""
