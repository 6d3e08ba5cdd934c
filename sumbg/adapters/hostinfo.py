"""The host itself, for `sumbg doctor`: its addresses, what its resolver says a name is, whether
a port is free, free disk space, and whether the kernel's clock is kept in sync.

Only the standard library and the kernel (procfs, libc's adjtimex through ctypes): nothing here
needs systemd, iproute2 or an NTP client's tools, since the hosts sumbg runs on may have none.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import ipaddress
import shutil
import socket
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Resolution:
    addresses: tuple[str, ...]  # A and AAAA, as this host's resolver returns them
    error: str = ""  # why there are none


def resolve(name: str) -> Resolution:
    """A name's addresses through this host's resolver (/etc/hosts included, as the edge's ACME
    client and a visitor on this host would see it)."""
    try:
        found = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        return Resolution((), exc.strerror or str(exc))
    except UnicodeError:
        return Resolution((), "not a valid name")
    return Resolution(tuple(sorted({str(info[4][0]).split("%", 1)[0] for info in found})))


def interface_addresses() -> tuple[str, ...]:
    """Every address of this host's interfaces, IPv4 from /proc/net/fib_trie and IPv6 from
    /proc/net/if_inet6 (Linux); elsewhere, the address the default route leaves from."""
    found: set[str] = set()
    try:
        lines = Path("/proc/net/fib_trie").read_text().splitlines()
    except OSError:
        lines = []
    for previous, line in zip(lines, lines[1:], strict=False):
        # "  |-- 10.0.0.5" followed by "     /32 host LOCAL": an address of this host.
        if line.strip() == "/32 host LOCAL" and "--" in previous:
            found.add(previous.split("--", 1)[1].strip())
    try:
        for line in Path("/proc/net/if_inet6").read_text().splitlines():
            digits = line.split()[0]
            found.add(str(ipaddress.IPv6Address(bytes.fromhex(digits))))
    except (OSError, ValueError, IndexError):
        pass
    if not found:
        found.update(_default_route_address())
    return tuple(sorted(found))


def _default_route_address() -> set[str]:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: no packet is sent by a UDP connect
            return {str(probe.getsockname()[0])}
    except OSError:
        return set()


def port_in_use(address: str, port: int) -> bool | None:
    """Whether something listens on address:port (a bind fails), or None when this process may
    not tell (a port below 1024 without root)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
        except PermissionError:
            return None
        except OSError as exc:
            return True if exc.errno == errno.EADDRINUSE else None
    return False


def free_bytes(path: Path) -> int | None:
    """Free space of the filesystem holding `path` (or its nearest existing parent); None when
    this process may not look."""
    probe = path
    try:
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        return shutil.disk_usage(probe).free
    except OSError:
        return None


@dataclass(frozen=True)
class ClockState:
    synchronised: bool | None  # None: this kernel does not say
    max_error_seconds: float | None = None
    how: str = ""


# adjtimex(2): the kernel keeps STA_UNSYNC set until an NTP daemon (chrony, ntpd,
# systemd-timesyncd, ...) disciplines the clock, and then answers TIME_OK rather than TIME_ERROR.
_TIME_ERROR = 5
_STA_UNSYNC = 0x0040


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _Timex(ctypes.Structure):
    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time", _Timeval),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("padding", ctypes.c_int * 11),
    ]


def clock_state() -> ClockState:
    """Whether the kernel's clock is kept in sync, as adjtimex(2) reports it (read-only: modes 0
    needs no privilege, and works without systemd's timedatectl)."""
    if not sys.platform.startswith("linux"):
        return ClockState(None, how="not Linux: adjtimex is not available")
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        timex = _Timex()
        state = libc.adjtimex(ctypes.byref(timex))
    except (OSError, AttributeError) as exc:
        return ClockState(None, how=f"adjtimex is not available: {exc}")
    if state < 0:
        return ClockState(None, how=f"adjtimex failed: {errno.errorcode.get(ctypes.get_errno(), '?')}")
    synchronised = state != _TIME_ERROR and not timex.status & _STA_UNSYNC
    return ClockState(synchronised, timex.maxerror / 1_000_000, "adjtimex")
