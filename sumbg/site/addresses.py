"""sumbg's address plan: every site's networks on subnets of its own, from `[network] pool`.

A stock Docker engine hands out about 30 networks from its default pools, then refuses the next
one; networks created with an explicit subnet have no such ceiling. So each site gets one block of
`[network] site_prefix` from the pool, cut in two halves:

- `sum-<slug>`: the site's own network (Postgres, Redis, both colours, one-off commands);
- `sum-<slug>.edge`: its link to the edge, which only the site's webs and the edge Caddy join, so no
  site's container can reach another site's (the edge sits at the link's second address, outside
  the range Docker hands out: the address the site's gunicorn trusts for X-Forwarded-Proto).

The allocations are recorded in `$SUMBG_ROOT/networks.json`, written here only, atomically, under
a lock. A block is never one that overlaps an existing network (of any root or program) or another
site's record; a pool the host routes elsewhere (a VPN, a VPC) is refused before anything is
created. A site whose network predates the plan (made by an older sumbg from the default pools)
keeps it, on the shared edge network, and `status` says so.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from sumbg import naming
from sumbg.adapters.docker import NetworkFacts
from sumbg.adapters.routes import Route, host_routes
from sumbg.config import HostConfig
from sumbg.errors import ConfigError, DockerError
from sumbg.lock import SiteLock
from sumbg.util import atomic_write, utc_now

RECORD_NAME = "networks.json"
RECORD_VERSION = 1
LOCK_NAME = ".networks.lock"
LOCK_TIMEOUT = 120.0
# Tries at creating a site's networks when another creator (another root on the same engine) takes
# the chosen subnet between the look and the create.
CREATE_ATTEMPTS = 5
IPv4Network = ipaddress.IPv4Network


@dataclass(frozen=True)
class SiteBlock:
    """One site's block of the pool, and the two networks cut from it."""

    slug: str
    block: IPv4Network
    since: str = ""

    @property
    def site_network(self) -> str:
        return naming.site_network(self.slug)

    @property
    def edge_network(self) -> str:
        return naming.site_edge_network(self.slug)

    @property
    def site_subnet(self) -> IPv4Network:
        return next(self.block.subnets(prefixlen_diff=1))

    @property
    def edge_subnet(self) -> IPv4Network:
        return list(self.block.subnets(prefixlen_diff=1))[1]

    @property
    def site_gateway(self) -> str:
        return str(self.site_subnet[1])

    @property
    def edge_gateway(self) -> str:
        return str(self.edge_subnet[1])

    @property
    def edge_address(self) -> str:
        """The edge Caddy's address on the link: reserved, since Docker hands out only the upper half."""
        return str(self.edge_subnet[2])

    @property
    def edge_ip_range(self) -> IPv4Network:
        return list(self.edge_subnet.subnets(prefixlen_diff=1))[1]

    def to_json(self) -> dict[str, str]:
        return {"block": str(self.block), "since": self.since}


def free_block(pool: IPv4Network, prefix: int, reserved: Iterable[IPv4Network]) -> IPv4Network | None:
    """The lowest block of /`prefix` in `pool` that overlaps none of `reserved`, or None."""
    size = 2 ** (32 - prefix)
    cursor, end = int(pool.network_address), int(pool.broadcast_address)
    for low, high in sorted((int(n.network_address), int(n.broadcast_address)) for n in reserved):
        if high < cursor:
            continue
        if low >= cursor + size:
            break  # the gap before this one holds a block
        cursor = (high + size) // size * size  # the next aligned block after it
    if cursor + size - 1 > end:
        return None
    return IPv4Network((cursor, prefix))


class NetworkEngine(Protocol):
    """What the plan uses of the engine (sumbg.adapters.docker.Engine)."""

    def networks(self, *, label: str | None = None) -> list[NetworkFacts]: ...
    def network(self, name: str) -> NetworkFacts | None: ...
    def create_network(
        self, name: str, subnet: str, *, gateway: str, ip_range: str | None = None, labels: dict[str, str]
    ) -> bool: ...
    def remove_network(self, name: str) -> None: ...
    def container_networks(self, container: str) -> dict[str, str] | None: ...
    def disconnect_network(self, network: str, container: str) -> None: ...
    def join_edge_links(self, edge_name: str, container: str) -> list[str]: ...


DOCKER_BRIDGE = re.compile(r"br-[0-9a-f]{12}|docker0")  # the bridges Docker names for its networks


class AddressPlan:
    def __init__(
        self, host: HostConfig, engine: NetworkEngine, routes: Callable[[], list[Route]] = host_routes
    ) -> None:
        self.host = host
        self.engine = engine
        self.routes = routes
        self._snapshot: tuple[dict[str, NetworkFacts], dict[str, str] | None] | None = None

    @property
    def pool(self) -> IPv4Network:
        return IPv4Network(self.host.network.pool)

    @property
    def record_path(self) -> Path:
        return self.host.root / RECORD_NAME

    def lock(self) -> SiteLock:
        return SiteLock(self.host.root / LOCK_NAME, "the address plan (networks.json)")

    # ------------------------------------------------------------ the record
    def blocks(self) -> dict[str, SiteBlock]:
        """Every allocation recorded under this root, by slug."""
        try:
            document = json.loads(self.record_path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{RECORD_NAME}: cannot be read ({exc}); restore it from a backup of the root") from None
        sites = document.get("sites") if isinstance(document, dict) else None
        if not isinstance(sites, dict):
            raise ConfigError(f"{RECORD_NAME}: has no sites table; restore it from a backup of the root")
        found = {}
        for slug, entry in sites.items():
            try:
                found[slug] = SiteBlock(slug, IPv4Network(entry["block"]), str(entry.get("since") or ""))
            except (KeyError, TypeError, ValueError):
                raise ConfigError(f"{RECORD_NAME}: sites.{slug}.block: must be an IPv4 network") from None
        return found

    def block(self, slug: str) -> SiteBlock | None:
        return self.blocks().get(slug)

    def _save(self, blocks: dict[str, SiteBlock]) -> None:
        document = {
            "version": RECORD_VERSION,
            "sites": {slug: blocks[slug].to_json() for slug in sorted(blocks)},
        }
        atomic_write(self.record_path, json.dumps(document, indent=2) + "\n")

    # ------------------------------------------------------------ choosing a block
    def _foreign_routes(self, networks: list[NetworkFacts]) -> list[Route]:
        """The host's routes that are not a Docker network's own bridge: neither the subnet of a network
        listed, nor on a bridge Docker made (`br-<id>`, `docker0`), which may be a network made since the
        list was read (another root's, on the same engine): the engine refuses an overlap with it anyway."""
        bridges = {subnet for network in networks for subnet in network.subnets}
        return [
            route
            for route in self.routes()
            if str(route.network) not in bridges and not DOCKER_BRIDGE.fullmatch(route.interface)
        ]

    def _refuse_a_routed_pool(self, networks: list[NetworkFacts]) -> None:
        for route in self._foreign_routes(networks):
            if route.network.overlaps(self.pool):
                raise ConfigError(
                    f"sumbg.toml: network.pool: {self.pool} overlaps {route.describe()}: containers there "
                    "would hide those addresses from this host; choose a range the host does not route"
                )

    def _in_use(self, blocks: dict[str, SiteBlock], networks: list[NetworkFacts]) -> dict[str, SiteBlock]:
        """The records that still hold their block: the site is still registered or a network of it
        still exists. A site removed by hand (its folder and networks gone) frees its block."""
        names = {network.name for network in networks}
        return {
            slug: block
            for slug, block in blocks.items()
            if (self.host.site_dir(slug) / "site.toml").exists() or {block.site_network, block.edge_network} & names
        }

    def _choose(self, slug: str, blocks: dict[str, SiteBlock], networks: list[NetworkFacts]) -> SiteBlock:
        self._refuse_a_routed_pool(networks)
        others = [block.block for other, block in blocks.items() if other != slug]
        taken = [IPv4Network(subnet) for network in networks for subnet in network.subnets]
        found = free_block(self.pool, self.host.network.site_prefix, others + taken)
        if found is None:
            in_pool = sum(1 for subnet in taken if subnet.overlaps(self.pool))
            raise ConfigError(
                f"sumbg.toml: network.pool: {self.pool} has no free /{self.host.network.site_prefix} left for "
                f"site {slug} ({len(others)} held by this host's sites, {in_pool} networks of the engine in it); "
                "widen the pool or remove sites"
            )
        return SiteBlock(slug, found, utc_now())

    def _usable(self, block: SiteBlock, networks: list[NetworkFacts]) -> bool:
        """A recorded block whose networks are missing may be made again only where nothing else is now."""
        mine = {block.site_network, block.edge_network}
        others = [IPv4Network(s) for network in networks if network.name not in mine for s in network.subnets]
        routed = [route.network for route in self._foreign_routes(networks)]
        return not any(block.block.overlaps(subnet) for subnet in others + routed)

    def check_room(self, slug: str) -> None:
        """Before a new site creates anything: a ConfigError (exit 2) if it could not get its networks
        (the pool is routed by the host, or has no free block). A site that has its networks passes."""
        if self.block(slug) is not None or self.engine.network(naming.site_network(slug)) is not None:
            return
        networks = self.engine.networks()
        self._choose(slug, self._in_use(self.blocks(), networks), networks)

    # ------------------------------------------------------------ making and removing networks
    def _labels(self, block: SiteBlock) -> dict[str, str]:
        return {"sumbg": "1", naming.NETWORK_ROOT_LABEL: str(self.host.root), naming.NETWORK_SITE_LABEL: block.slug}

    def _create(self, block: SiteBlock, networks: list[NetworkFacts]) -> bool:
        """Both networks of the block (those missing); False, with none of them left, if the engine
        refused a subnet as taken."""
        names = {network.name for network in networks}
        made: list[str] = []
        specs: tuple[tuple[str, IPv4Network, str, str | None, dict[str, str]], ...] = (
            (block.site_network, block.site_subnet, block.site_gateway, None, {}),
            (
                block.edge_network,
                block.edge_subnet,
                block.edge_gateway,
                str(block.edge_ip_range),
                {naming.EDGE_LINK_LABEL: self.host.edge.name, naming.EDGE_ADDRESS_LABEL: block.edge_address},
            ),
        )
        for name, subnet, gateway, ip_range, extra in specs:
            if name in names:
                continue
            try:
                created = self.engine.create_network(
                    name, str(subnet), gateway=gateway, ip_range=ip_range, labels={**self._labels(block), **extra}
                )
            except DockerError:
                self._remove(made)
                raise
            if not created:
                self._remove(made)
                return False
            made.append(name)
        return True

    def _made_by_the_plan(self, slug: str, network: NetworkFacts) -> SiteBlock | None:
        """The block of a site network this root's plan made, when the record lost it (put back)."""
        if (
            network.label(naming.NETWORK_SITE_LABEL) != slug
            or network.label(naming.NETWORK_ROOT_LABEL) != str(self.host.root)
            or len(network.subnets) != 1
        ):
            return None
        return SiteBlock(slug, IPv4Network(network.subnets[0]).supernet(prefixlen_diff=1), utc_now())

    def _remove(self, names: list[str]) -> None:
        for name in names:
            self.engine.remove_network(name)

    def ensure(self, slug: str) -> SiteBlock | None:
        """The site's two networks, made from its recorded block, or from a new one (recorded) for a
        new site; the edge, if it runs, joins the link. None: the site's network predates the plan
        (an older sumbg made it from the default pools) and is kept as it is."""
        with self.lock().acquire(timeout=LOCK_TIMEOUT, command=f"networks of {slug}"):
            blocks = self.blocks()
            recorded = blocks.get(slug)
            if recorded is None:
                existing = self.engine.network(naming.site_network(slug))
                if existing is not None:
                    recorded = self._made_by_the_plan(slug, existing)
                    if recorded is None:
                        return None
            for _ in range(CREATE_ATTEMPTS):
                networks = self.engine.networks()
                in_use = self._in_use(blocks, networks)
                block = (
                    recorded
                    if recorded is not None and self._usable(recorded, networks)
                    else self._choose(slug, in_use, networks)
                )
                if self._create(block, networks):
                    if blocks.get(slug) != block or in_use.keys() != blocks.keys():
                        self._save({**in_use, slug: block})
                    break
                recorded = None  # another creator took the subnet between the look and the create
            else:
                raise ConfigError(
                    f"sumbg.toml: network.pool: every free block of {self.pool} tried for site {slug} was taken by "
                    f"another network as it was created ({CREATE_ATTEMPTS} tries); run the command again"
                )
        self.engine.join_edge_links(self.host.edge.name, self.host.edge.container)
        return block

    def release(self, slug: str) -> bool:
        """The site's networks removed (the edge leaves its link first) and its block freed; False if it
        had none in the plan. Its containers must be gone."""
        with self.lock().acquire(timeout=LOCK_TIMEOUT, command=f"networks of {slug}"):
            blocks = self.blocks()
            block = blocks.pop(slug, None)
            if block is None:
                return False
            self.engine.disconnect_network(block.edge_network, self.host.edge.container)
            self._remove([block.edge_network, block.site_network])
            self._save(blocks)
        return True

    # ------------------------------------------------------------ what status and doctor report
    def _seen(self) -> tuple[dict[str, NetworkFacts], dict[str, str] | None]:
        """The engine's networks by name and the edge's, read once for all the views of one command."""
        if self._snapshot is None:
            networks = {network.name: network for network in self.engine.networks()}
            self._snapshot = (networks, self.engine.container_networks(self.host.edge.container))
        return self._snapshot

    def site_view(self, slug: str) -> dict[str, Any]:
        """The site's networks, whether they follow the plan, and what is wrong with them."""
        block = self.block(slug)
        networks, edge = self._seen()
        site = networks.get(naming.site_network(slug))
        if block is None:
            return self._outside_the_plan(slug, site)
        problems = []
        link = networks.get(block.edge_network)
        for name, network, subnet in (
            (block.site_network, site, block.site_subnet),
            (block.edge_network, link, block.edge_subnet),
        ):
            if network is None:
                problems.append(f"network {name} ({subnet}) is missing: the site's containers cannot start")
            elif str(subnet) not in network.subnets:
                problems.append(
                    f"network {name} is on {', '.join(network.subnets) or 'no subnet'}, not its recorded {subnet}"
                )
        if not block.block.subnet_of(self.pool):
            problems.append(f"its block {block.block} is outside network.pool {self.pool} (the pool changed since)")
        joined = None if edge is None else edge.get(block.edge_network)
        # A stopped edge keeps its networks, with no address until it starts.
        if link is not None and edge is not None and (joined is None or joined not in ("", block.edge_address)):
            problems.append(
                f"the edge {self.host.edge.container} is not on {block.edge_network} at {block.edge_address}: "
                "run `sumbg apply`"
            )
        return {
            "plan": True,
            "block": str(block.block),
            "site_network": block.site_network,
            "site_subnet": str(block.site_subnet),
            "edge_network": block.edge_network,
            "edge_subnet": str(block.edge_subnet),
            "edge_address": block.edge_address,
            "problems": problems,
        }

    def _outside_the_plan(self, slug: str, site: NetworkFacts | None) -> dict[str, Any]:
        name = naming.site_network(slug)
        shared = self.host.edge.name
        if site is None:
            problems = [f"network {name} does not exist (the site's data stack was never started)"]
        else:
            subnets = ", ".join(site.subnets) or "no subnet"
            problems = [
                f"network {name} ({subnets}) is outside the address plan (network.pool {self.pool}): it was made "
                f"from Docker's default pools, and the site's webs share the edge network {shared} with every "
                "other such site (not isolated); see docs/networks.md"
            ]
        return {
            "plan": False,
            "block": None,
            "site_network": name,
            "site_subnet": ", ".join(site.subnets) if site else None,
            "edge_network": shared,
            "edge_subnet": None,
            "edge_address": None,
            "problems": problems,
        }

    def host_problems(self) -> list[str]:
        """What is wrong with the plan itself: a pool the host routes elsewhere."""
        try:
            self._refuse_a_routed_pool(list(self._seen()[0].values()))
        except ConfigError as exc:
            return [exc.message]
        return []
