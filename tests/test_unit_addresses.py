"""sumbg's address plan without an engine: the blocks it picks, the networks it makes and the record
it keeps (sumbg.site.addresses over a small fake engine), the host's routes as the kernel lists them,
the [network] settings, and what a site's app stack is given for its edge."""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sumbg.adapters.docker import NetworkFacts
from sumbg.adapters.routes import Route, host_routes, parse_route
from sumbg.cli import exit_code_of
from sumbg.config import HostConfig, NetworkSettings, SiteConfig, load_host
from sumbg.errors import ConfigError
from sumbg.ops.init import init
from sumbg.ops.status import network_problems
from sumbg.site.addresses import AddressPlan, SiteBlock, free_block
from sumbg.site.site import Site
from sumbg.site.stacks import Stacks

from .fakes import FakeContext, World, no_effects

net = ipaddress.IPv4Network
EDGE = "sum-edge-caddy"


# ---------------------------------------------------------------- a small engine: networks and the edge


@dataclass
class Network:
    subnet: str
    labels: dict[str, str] = field(default_factory=dict)
    ip_range: str | None = None
    gateway: str = ""


@dataclass
class NetworkWorld:
    networks: dict[str, Network] = field(default_factory=dict)
    edge: dict[str, str] | None = None  # the edge container's {network: address}, None: no edge
    taken_on_create: list[str] = field(default_factory=list)  # subnets another creator takes first
    log: list[tuple[str, ...]] = field(default_factory=list)

    def facts(self, name: str) -> NetworkFacts:
        network = self.networks[name]
        on_it = (EDGE,) if self.edge and name in self.edge else ()
        return NetworkFacts(name, (network.subnet,), tuple(sorted(network.labels.items())), on_it)

    def networks_(self, *, label: str | None = None) -> list[NetworkFacts]:
        key, _, value = (label or "").partition("=")
        return [
            self.facts(name)
            for name, network in sorted(self.networks.items())
            if not label or network.labels.get(key) == value
        ]

    def network(self, name: str) -> NetworkFacts | None:
        return self.facts(name) if name in self.networks else None

    def create_network(
        self, name: str, subnet: str, *, gateway: str, ip_range: str | None = None, labels: dict[str, str]
    ) -> bool:
        if subnet in self.taken_on_create:
            self.taken_on_create.remove(subnet)
            self.networks[f"other-{subnet}"] = Network(subnet)
            return False
        assert name not in self.networks
        assert not any(net(subnet).overlaps(net(n.subnet)) for n in self.networks.values()), subnet
        self.networks[name] = Network(subnet, dict(labels), ip_range, gateway)
        self.log.append(("create", name, subnet))
        return True

    def remove_network(self, name: str) -> None:
        if self.networks.pop(name, None) is not None:
            self.log.append(("remove", name))

    def container_networks(self, container: str) -> dict[str, str] | None:
        return dict(self.edge) if container == EDGE and self.edge is not None else None

    def disconnect_network(self, network: str, container: str) -> None:
        if self.edge is not None and self.edge.pop(network, None) is not None:
            self.log.append(("disconnect", network))

    def join_edge_links(self, edge_name: str, container: str) -> list[str]:
        if self.edge is None:
            return []
        joined = []
        for facts in self.networks_(label=f"sumbg.edge-link={edge_name}"):
            if facts.name not in self.edge:
                self.edge[facts.name] = facts.label("sumbg.edge-address") or ""
                joined.append(facts.name)
                self.log.append(("join", facts.name, self.edge[facts.name]))
        return joined


class FakeNetworkEngine:
    """The engine's network methods (sumbg.site.addresses.NetworkEngine) over a NetworkWorld."""

    def __init__(self, world: NetworkWorld) -> None:
        self.world = world
        self.network = world.network
        self.create_network = world.create_network
        self.remove_network = world.remove_network
        self.container_networks = world.container_networks
        self.disconnect_network = world.disconnect_network
        self.join_edge_links = world.join_edge_links

    def networks(self, *, label: str | None = None) -> list[NetworkFacts]:
        return self.world.networks_(label=label)


def plan(root: Path, world: NetworkWorld, routes: list[Route] | None = None, **settings: object) -> AddressPlan:
    host = HostConfig(root=root, network=NetworkSettings(**settings))  # type: ignore[arg-type]
    return AddressPlan(host, FakeNetworkEngine(world), routes=lambda: list(routes or []))


def register(root: Path, slug: str) -> None:
    """A site folder with its site.toml (what keeps a block held)."""
    (root / slug).mkdir(parents=True, exist_ok=True)
    (root / slug / "site.toml").write_text(f'slug = "{slug}"\n')


def record(root: Path) -> dict[str, str]:
    return {slug: entry["block"] for slug, entry in json.loads((root / "networks.json").read_text())["sites"].items()}


# ---------------------------------------------------------------- picking a block


def test_the_first_block_is_the_lowest_free_one():
    assert free_block(net("10.213.0.0/16"), 27, []) == net("10.213.0.0/27")


def test_blocks_skip_whatever_overlaps_them_and_stay_aligned():
    pool = net("10.213.0.0/16")
    # 10.213.0.0/27 is a site's; a network of another program holds 10.213.0.40/29 (inside the second
    # block); one outside the pool changes nothing.
    reserved = [net("10.213.0.0/27"), net("10.213.0.40/29"), net("172.18.0.0/16")]
    assert free_block(pool, 27, reserved) == net("10.213.0.64/27")
    # A bigger network swallows several blocks: the next is the first after it.
    assert free_block(pool, 27, [net("10.213.0.0/24")]) == net("10.213.1.0/27")


def test_a_full_pool_has_no_block():
    assert free_block(net("10.213.0.0/26"), 27, [net("10.213.0.0/27"), net("10.213.0.32/27")]) is None
    assert free_block(net("10.213.0.0/26"), 27, [net("10.0.0.0/8")]) is None


def test_a_block_is_cut_into_the_site_network_and_its_link_to_the_edge():
    block = SiteBlock("acme", net("10.213.0.32/27"))
    assert (block.site_network, block.edge_network) == ("sum-acme", "sum-acme.edge")
    assert (block.site_subnet, block.site_gateway) == (net("10.213.0.32/28"), "10.213.0.33")
    assert (block.edge_subnet, block.edge_gateway, block.edge_address) == (
        net("10.213.0.48/28"),
        "10.213.0.49",
        "10.213.0.50",
    )
    # Docker hands out only the link's upper half, so the edge's address is never another's.
    assert block.edge_ip_range == net("10.213.0.56/29")
    assert ipaddress.ip_address(block.edge_address) not in block.edge_ip_range


# ---------------------------------------------------------------- making a site's networks


def test_a_new_site_gets_two_networks_recorded_and_the_edge_joins_its_link(tmp_path):
    world = NetworkWorld(edge={"sum-edge": "172.18.0.2"})
    register(tmp_path, "acme")
    block = plan(tmp_path, world).ensure("acme")
    assert block is not None and block.block == net("10.213.0.0/27")
    assert world.log == [
        ("create", "sum-acme", "10.213.0.0/28"),
        ("create", "sum-acme.edge", "10.213.0.16/28"),
        ("join", "sum-acme.edge", "10.213.0.18"),
    ]
    owner = {"sumbg": "1", "sumbg.root": str(tmp_path), "sumbg.site": "acme"}
    assert world.networks["sum-acme"] == Network("10.213.0.0/28", owner, None, "10.213.0.1")
    assert world.networks["sum-acme.edge"] == Network(
        "10.213.0.16/28",
        {**owner, "sumbg.edge-link": "sum-edge", "sumbg.edge-address": "10.213.0.18"},
        "10.213.0.24/29",
        "10.213.0.17",
    )
    assert record(tmp_path) == {"acme": "10.213.0.0/27"}
    # Again: nothing new.
    world.log.clear()
    assert plan(tmp_path, world).ensure("acme") == block
    assert world.log == []


def test_sites_get_blocks_past_other_roots_and_programs_networks(tmp_path):
    world = NetworkWorld(networks={"theirs": Network("10.213.0.0/26"), "bridge": Network("172.17.0.0/16")})
    for slug in ("acme", "bravo"):
        register(tmp_path, slug)
        plan(tmp_path, world).ensure(slug)
    assert record(tmp_path) == {"acme": "10.213.0.64/27", "bravo": "10.213.0.96/27"}


def test_a_site_made_before_the_plan_keeps_its_network(tmp_path):
    world = NetworkWorld(networks={"sum-old": Network("172.19.0.0/16", {"com.docker.compose.network": "site"})})
    register(tmp_path, "old")
    addresses = plan(tmp_path, world)
    assert addresses.ensure("old") is None
    assert world.log == [] and not (tmp_path / "networks.json").exists()
    addresses.check_room("old")  # it has its network: no room needed
    view = addresses.site_view("old")
    assert (view["plan"], view["site_subnet"], view["edge_network"]) == (False, "172.19.0.0/16", "sum-edge")
    assert view["problems"] == [
        "network sum-old (172.19.0.0/16) is outside the address plan (network.pool 10.213.0.0/16): it was made "
        "from Docker's default pools, and the site's webs share the edge network sum-edge with every other such "
        "site (not isolated); see docs/networks.md"
    ]


def test_a_lost_record_is_rebuilt_from_the_networks_the_plan_labelled(tmp_path):
    world = NetworkWorld()
    register(tmp_path, "acme")
    plan(tmp_path, world).ensure("acme")
    (tmp_path / "networks.json").unlink()
    world.log.clear()
    block = plan(tmp_path, world).ensure("acme")
    assert block is not None and block.block == net("10.213.0.0/27")
    assert world.log == [] and record(tmp_path) == {"acme": "10.213.0.0/27"}


def test_a_subnet_taken_between_the_look_and_the_create_moves_to_the_next_block(tmp_path):
    # Another root on the same engine creates 10.213.0.16/28 just before this one would.
    world = NetworkWorld(taken_on_create=["10.213.0.16/28"])
    register(tmp_path, "acme")
    plan(tmp_path, world).ensure("acme")
    assert world.log == [
        ("create", "sum-acme", "10.213.0.0/28"),
        ("remove", "sum-acme"),  # half a site's networks is never left behind
        ("create", "sum-acme", "10.213.0.32/28"),
        ("create", "sum-acme.edge", "10.213.0.48/28"),
    ]
    assert record(tmp_path) == {"acme": "10.213.0.32/27"}


def test_a_recorded_block_taken_while_its_networks_were_gone_is_replaced(tmp_path):
    world = NetworkWorld()
    register(tmp_path, "acme")
    plan(tmp_path, world).ensure("acme")
    world.networks = {"theirs": Network("10.213.0.0/27")}  # the site's networks removed, the block taken
    plan(tmp_path, world).ensure("acme")
    assert record(tmp_path) == {"acme": "10.213.0.32/27"}
    assert world.networks["sum-acme"].subnet == "10.213.0.32/28"


def test_a_site_removed_by_hand_frees_its_block(tmp_path):
    world = NetworkWorld()
    register(tmp_path, "gone")
    plan(tmp_path, world).ensure("gone")
    (tmp_path / "gone" / "site.toml").unlink()
    assert record(tmp_path) == {"gone": "10.213.0.0/27"}
    # Its networks still exist: the block stays held.
    register(tmp_path, "acme")
    plan(tmp_path, world).ensure("acme")
    assert record(tmp_path) == {"gone": "10.213.0.0/27", "acme": "10.213.0.32/27"}
    # Networks gone too: the next site takes its block and the record forgets it.
    world.remove_network("sum-gone")
    world.remove_network("sum-gone.edge")
    register(tmp_path, "bravo")
    plan(tmp_path, world).ensure("bravo")
    assert record(tmp_path) == {"acme": "10.213.0.32/27", "bravo": "10.213.0.0/27"}


def test_release_takes_the_edge_off_the_link_removes_both_networks_and_frees_the_block(tmp_path):
    world = NetworkWorld(edge={})
    register(tmp_path, "acme")
    addresses = plan(tmp_path, world)
    addresses.ensure("acme")
    world.log.clear()
    assert addresses.release("acme") is True
    assert world.log == [("disconnect", "sum-acme.edge"), ("remove", "sum-acme.edge"), ("remove", "sum-acme")]
    assert record(tmp_path) == {} and world.networks == {}
    assert addresses.release("acme") is False


# ---------------------------------------------------------------- refusals: exit 2, nothing created


def test_a_full_pool_is_refused_naming_the_setting(tmp_path):
    world = NetworkWorld(networks={"theirs": Network("10.213.0.0/27")})
    register(tmp_path, "acme")
    addresses = plan(tmp_path, world, pool="10.213.0.0/26")
    addresses.ensure("acme")
    for check in (addresses.check_room, addresses.ensure):
        with pytest.raises(ConfigError) as refused:
            check("bravo")
        assert exit_code_of(refused.value) == 2
        assert refused.value.message == (
            "sumbg.toml: network.pool: 10.213.0.0/26 has no free /27 left for site bravo (1 held by this host's "
            "sites, 3 networks of the engine in it); widen the pool or remove sites"
        )
    assert "sum-bravo" not in world.networks and record(tmp_path) == {"acme": "10.213.0.32/27"}


def test_a_pool_the_host_routes_is_refused_and_a_docker_bridge_route_is_not(tmp_path):
    world = NetworkWorld(networks={"sum-other": Network("10.213.7.0/28")})
    bridge = Route("br-1234", net("10.213.7.0/28"))  # the route of a Docker network's own bridge
    vpn = Route("wg0", net("10.213.200.0/24"))
    plan(tmp_path, world, routes=[bridge]).check_room("acme")
    addresses = plan(tmp_path, world, routes=[bridge, vpn])
    for check in (addresses.check_room, addresses.ensure):
        with pytest.raises(ConfigError) as refused:
            check("acme")
        assert exit_code_of(refused.value) == 2
        assert refused.value.message == (
            "sumbg.toml: network.pool: 10.213.0.0/16 overlaps the host's route to 10.213.200.0/24 (wg0): "
            "containers there would hide those addresses from this host; choose a range the host does not route"
        )
    assert list(world.networks) == ["sum-other"]
    assert addresses.host_problems() == [refused.value.message]


def test_a_bridge_docker_made_after_the_networks_were_listed_is_not_a_routed_pool(tmp_path):
    """Another root on the same engine (a bench beside the sites, parallel test roots) made a network
    between this plan's reading of the networks and of the routes: its bridge is Docker's, not the host's."""
    world = NetworkWorld(networks={})
    just_made = Route("br-70b84c930ab8", net("10.213.0.0/28"))
    default_bridge = Route("docker0", net("172.17.0.0/16"))
    addresses = plan(tmp_path, world, routes=[just_made, default_bridge])
    addresses.check_room("acme")
    assert addresses.host_problems() == []
    lookalike = Route("br-lan", net("10.213.9.0/24"))  # a bridge the host's own admin named
    with pytest.raises(ConfigError, match=r"overlaps the host's route to 10.213.9.0/24 \(br-lan\)"):
        plan(tmp_path, world, routes=[just_made, lookalike]).check_room("acme")


def test_init_refused_by_the_plan_creates_nothing(tmp_path):
    world = World(refs={"v1.0.0": "0.6.3"}, address_refusal="sumbg.toml: network.pool: 10.213.0.0/16 has no free")
    with no_effects(world), pytest.raises(ConfigError, match="network.pool: 10.213.0.0/16 has no free") as refused:
        init(FakeContext(tmp_path, world), "acme", "/r", ["acme.example.test"], "v1.0.0")
    assert exit_code_of(refused.value) == 2
    assert not (tmp_path / "acme").exists()


# ---------------------------------------------------------------- what status reports


def test_a_site_on_the_plan_is_reported_with_its_networks_and_what_strays(tmp_path):
    world = NetworkWorld(edge={})
    register(tmp_path, "acme")
    plan(tmp_path, world).ensure("acme")
    assert plan(tmp_path, world).site_view("acme") == {
        "plan": True,
        "block": "10.213.0.0/27",
        "site_network": "sum-acme",
        "site_subnet": "10.213.0.0/28",
        "edge_network": "sum-acme.edge",
        "edge_subnet": "10.213.0.16/28",
        "edge_address": "10.213.0.18",
        "problems": [],
    }
    world.edge = {}  # an edge recreated by hand, on none of the links
    del world.networks["sum-acme"]
    assert plan(tmp_path, world, pool="10.214.0.0/16").site_view("acme")["problems"] == [
        "network sum-acme (10.213.0.0/28) is missing: the site's containers cannot start",
        "its block 10.213.0.0/27 is outside network.pool 10.214.0.0/16 (the pool changed since)",
        "the edge sum-edge-caddy is not on sum-acme.edge at 10.213.0.18: run `sumbg apply`",
    ]


def test_the_host_check_lists_every_site_outside_the_plan(tmp_path):
    register(tmp_path, "old")
    register(tmp_path, "acme")
    world = NetworkWorld(networks={"sum-old": Network("172.19.0.0/16")}, edge={})
    plan(tmp_path, world).ensure("acme")

    class Host(FakeContext):
        @property
        def networks(self) -> AddressPlan:  # type: ignore[override]
            return plan(tmp_path, world)

    problems = network_problems(Host(tmp_path, World()))
    assert [problem.split(":")[0] for problem in problems] == ["old"]
    assert "outside the address plan" in problems[0]


# ---------------------------------------------------------------- the host's routes


PROC_NET_ROUTE = """\
Iface	Destination	Gateway 	Flags	RefCnt	Use	Metric	Mask		MTU	Window	IRTT
eth0	00000000	010200C0	0003	0	0	0	00000000	0	0	0
docker0	000011AC	00000000	0001	0	0	0	0000FFFF	0	0	0
eth0	000200C0	00000000	0001	0	0	0	00FFFFFF	0	0	0
wg0	00C8D50A	00000000	0001	0	0	0	00FFFFFF	0	0	0
"""


def test_routes_are_read_as_the_kernel_lists_them(tmp_path):
    table = tmp_path / "route"
    table.write_text(PROC_NET_ROUTE)
    assert host_routes(table) == [
        Route("docker0", net("172.17.0.0/16")),
        Route("eth0", net("192.0.2.0/24")),
        Route("wg0", net("10.213.200.0/24")),
    ]
    assert host_routes(tmp_path / "missing") == []
    assert parse_route("eth0 garbage") is None


# ---------------------------------------------------------------- [network] in sumbg.toml


def test_network_defaults_and_settings(tmp_path):
    assert load_host(tmp_path).network == NetworkSettings(pool="10.213.0.0/16", site_prefix=27)
    (tmp_path / "sumbg.toml").write_text('[network]\npool = "10.50.0.0/20"\nsite_prefix = 26\n')
    assert load_host(tmp_path).network == NetworkSettings(pool="10.50.0.0/20", site_prefix=26)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('pool = "10.213.0.0"', "network.pool: must be an IPv4 network like '10.213.0.0/16', not '10.213.0.0'"),
        ('pool = "ten"', "network.pool: must be an IPv4 network like '10.213.0.0/16', not 'ten'"),
        ('pool = "10.213.0.0/33"', "network.pool: must be an IPv4 network like '10.213.0.0/16', not '10.213.0.0/33'"),
        ('pool = "10.213.4.0/16"', "network.pool: 10.213.4.0/16 has host bits set: the network is 10.213.0.0/16"),
        (
            'pool = "8.8.0.0/16"',
            "network.pool: 8.8.0.0/16 is not a private range: use one inside 10.0.0.0/8, 172.16.0.0/12 or "
            "192.168.0.0/16",
        ),
        (
            'pool = "172.20.0.0/16"',
            "network.pool: 172.20.0.0/16 overlaps Docker's default address pools (172.17.0.0-172.31.255.255 and "
            "192.168.0.0/16, where the engine puts every network created without a subnet): choose another range",
        ),
        (
            'pool = "192.168.100.0/24"',
            "network.pool: 192.168.100.0/24 overlaps Docker's default address pools",
        ),
        (
            "site_prefix = 28",
            "network.site_prefix: /28 is too small for a site's containers: each of its two networks would be a "
            "/29 with 6 addresses, and a site's own network needs 10 (Postgres, Redis, each colour's web and "
            "worker, the rehearsal, one-off commands, the gateway); use 27 or less",
        ),
        ("site_prefix = 8", "network.site_prefix: must be from 16 to 27, not 8"),
        (
            'pool = "10.213.0.0/28"',
            "network.pool: 10.213.0.0/28 is smaller than one site's block (site_prefix = 27): widen it",
        ),
        ("pool = 10", "network.pool: must be a string, not 10"),
    ],
)
def test_bad_network_settings_are_refused_naming_file_and_key(tmp_path, table, message):
    (tmp_path / "sumbg.toml").write_text(f"[network]\n{table}\n")
    with pytest.raises(ConfigError) as refused:
        load_host(tmp_path)
    assert exit_code_of(refused.value) == 2
    assert refused.value.message.startswith(f"sumbg.toml: {message}")


# ---------------------------------------------------------------- what a colour's web is given


class StacksEngine(FakeNetworkEngine):
    """What Stacks.app_project asks the engine besides the plan: an image's labels, the edge's address."""

    def image_labels(self, tag: str) -> dict[str, str]:
        return {"sumbg.commit": "c0ffee", "sumbg.ref": "v1.0.0"}

    def container(self, name: str) -> None:
        return None

    def edge_address(self, name: str) -> str:
        return "172.18.0.2"  # the edge's reserved address on the shared edge network


def app_variables(root: Path, world: NetworkWorld, slug: str) -> dict[str, str]:
    config = SiteConfig(slug=slug, domain=f"{slug}.example.test", repo="/r", project="acme")
    stacks = Stacks(Site(HostConfig(root=root), config), StacksEngine(world))  # type: ignore[arg-type]
    return dict(stacks.app_project("blue", "sum-acme:v1.0.0").variables)


def test_a_site_on_the_plan_meets_the_edge_on_its_link_and_trusts_the_edge_there(tmp_path):
    world = NetworkWorld()
    register(tmp_path, "acme")
    plan(tmp_path, world).ensure("acme")
    variables = app_variables(tmp_path, world, "acme")
    assert (variables["SUMBG_SITE_NETWORK"], variables["SUMBG_EDGE_NETWORK"]) == ("sum-acme", "sum-acme.edge")
    assert variables["SUMBG_FORWARDED_ALLOW_IPS"] == "10.213.0.18"


def test_a_site_older_than_the_plan_stays_on_the_shared_edge_network(tmp_path):
    world = NetworkWorld(networks={"sum-old": Network("172.19.0.0/16")})
    variables = app_variables(tmp_path, world, "old")
    assert (variables["SUMBG_SITE_NETWORK"], variables["SUMBG_EDGE_NETWORK"]) == ("sum-old", "sum-edge")
    assert variables["SUMBG_FORWARDED_ALLOW_IPS"] == "172.18.0.2"
