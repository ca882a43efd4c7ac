"""Facts about network addresses that policies depend on."""

from __future__ import annotations

import ipaddress


def is_loopback_host(host: str) -> bool:
    """Is ``host`` (an address literal, bracketed IPv6, or ``localhost``) this machine only?

    Any other host name is *not* loopback: it may resolve anywhere.
    """
    name = host.strip().removeprefix("[").removesuffix("]").lower()
    if name == "localhost":
        return True
    name = name.split("%", 1)[0]  # an IPv6 zone id does not change what the address is
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback
