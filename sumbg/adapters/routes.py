"""The host's IPv4 routes, read from the kernel (/proc/net/route): the only reader of them.

sumbg's address plan must not hand a site a subnet the host already routes somewhere else (a VPC,
a VPN, a private network): containers there would shadow those addresses.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

ROUTE_TABLE = Path("/proc/net/route")


@dataclass(frozen=True)
class Route:
    interface: str
    network: ipaddress.IPv4Network

    def describe(self) -> str:
        return f"the host's route to {self.network} ({self.interface})"


def host_routes(table: Path = ROUTE_TABLE) -> list[Route]:
    """Every route of the main table but the default one; none when the table cannot be read."""
    try:
        lines = table.read_text().splitlines()
    except OSError:
        return []
    return [route for line in lines[1:] if (route := parse_route(line)) is not None]


def parse_route(line: str) -> Route | None:
    """One line of /proc/net/route (addresses in the kernel's byte order, as hex), or None."""
    fields = line.split()
    if len(fields) < 8:
        return None
    try:
        destination, mask = _address(fields[1]), _address(fields[7])
        network = ipaddress.IPv4Network(f"{destination}/{mask}", strict=False)
    except ValueError:
        return None
    if network.prefixlen == 0:
        return None  # the default route: it overlaps everything and decides nothing here
    return Route(fields[0], network)


def _address(little_endian_hex: str) -> str:
    if len(little_endian_hex) != 8:
        raise ValueError(little_endian_hex)
    return socket.inet_ntoa(struct.pack("<I", int(little_endian_hex, 16)))
