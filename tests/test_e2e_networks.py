"""The address plan and the isolation of sites on the real engine (issue 21).

Two sites on the plan (w21-a, w21-b) and one whose network predates it (w21-old, its network made
from Docker's default pools before its init, as an older sumbg made every site's): each plan site's
networks come from [network] pool, its webs meet the edge on a link no other site shares, and from
inside one site's web no other site's web, Postgres or Redis answers, by name or by address, while
the edge serves every site, with no failed request through an upgrade. Bad [network] settings and a
full pool are refused before anything is created.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest

from sumbg.adapters.caddy import Edge
from sumbg.adapters.docker import Engine
from sumbg.config import load_host

from .conftest import Host, docker, http_get, new_host, wait_until
from .traffic import Traffic

pytestmark = pytest.mark.e2e

A, B, OLD = "w21-a", "w21-b", "w21-old"
POOL = ipaddress.ip_network("10.213.0.0/16")  # the default pool: the suite's sumbg.toml leaves [network] out

# Reach host:port targets from inside a container with Python's sockets, all at once: "open", or why not.
PROBE = """
import concurrent.futures, json, socket, sys

def attempt(target):
    host, port = target.rsplit(":", 1)
    s = socket.socket()
    s.settimeout(3)
    try:
        s.connect((host, int(port)))
        return "open"
    except OSError as exc:
        return type(exc).__name__
    finally:
        s.close()

targets = json.loads(sys.argv[1])
with concurrent.futures.ThreadPoolExecutor(len(targets)) as pool:
    print(json.dumps(dict(zip(targets, pool.map(attempt, targets)))))
"""


def reach(container: str, targets: list[str]) -> dict[str, str]:
    result = docker("exec", container, "python", "-c", PROBE, json.dumps(targets), check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def inspect(container: str) -> dict:
    return json.loads(docker("inspect", container).stdout)[0]


def addresses(container: str) -> dict[str, str]:
    """{network: address} of a container."""
    return {name: n["IPAddress"] for name, n in inspect(container)["NetworkSettings"]["Networks"].items()}


def subnet(network: str) -> ipaddress.IPv4Network:
    configs = json.loads(docker("network", "inspect", network).stdout)[0]["IPAM"]["Config"]
    return ipaddress.ip_network(configs[0]["Subnet"])


def env_of(container: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in inspect(container)["Config"]["Env"])


@pytest.fixture(scope="module")
def sites(host: Host):
    for slug in (A, B, OLD):
        host.teardown_site(slug)  # what a killed session left
    # A site made by an older sumbg: its network from the default pools, there before its init, made by
    # Compose for the data stack as the older data.yml declared it.
    compose_labels = {
        "com.docker.compose.network": "site",
        "com.docker.compose.project": f"sum-{OLD}-data",
        "com.docker.compose.version": "2.40.3",
    }
    docker("network", "create", *(f"--label={k}={v}" for k, v in compose_labels.items()), f"sum-{OLD}")
    host.site_dir(OLD).mkdir()  # so Host.init does not clear "a killed session's" network away
    for slug in (A, B, OLD):
        host.init(slug, "v1.0.0")
    yield host
    for slug in (A, B, OLD):
        host.teardown_site(slug)


def test_each_site_gets_its_own_networks_from_the_pool(sites: Host) -> None:
    host = sites
    record = json.loads((host.root / "networks.json").read_text())["sites"]
    # The older site is not in the plan (the root is shared with other modules' sites, hence no ==).
    assert {A, B} <= set(record) and OLD not in record
    edge = addresses(f"{host.edge_name}-caddy")
    blocks = []
    for slug in (A, B):
        block = ipaddress.ip_network(record[slug]["block"])
        assert block.prefixlen == 27 and block.subnet_of(POOL)
        own, link = subnet(f"sum-{slug}"), subnet(f"sum-{slug}.edge")
        assert list(block.subnets(prefixlen_diff=1)) == [own, link]
        blocks.append(block)
        # The web is on its own network and its link to the edge, nowhere else; the edge is on the
        # link at its reserved address, the one gunicorn trusts for X-Forwarded-Proto.
        web = f"sum-{slug}-blue-web"
        assert sorted(addresses(web)) == [f"sum-{slug}", f"sum-{slug}.edge"]
        assert edge[f"sum-{slug}.edge"] == str(link[2]) == env_of(web)["FORWARDED_ALLOW_IPS"]
        for data in ("postgres", "redis"):
            assert list(addresses(f"sum-{slug}-data-{data}")) == [f"sum-{slug}"]
        status = host.sumbg("status", slug, "--json").json()
        assert status["network"] == {
            "plan": True,
            "block": str(block),
            "site_network": f"sum-{slug}",
            "site_subnet": str(own),
            "edge_network": f"sum-{slug}.edge",
            "edge_subnet": str(link),
            "edge_address": str(link[2]),
            "problems": [],
        }
    assert not blocks[0].overlaps(blocks[1])
    # The edge is on no site's own network: no site's Postgres or Redis is reachable from it.
    assert not {f"sum-{A}", f"sum-{B}"} & set(edge)


def test_a_site_older_than_the_plan_keeps_its_network_and_status_says_so(sites: Host) -> None:
    host = sites
    web = f"sum-{OLD}-blue-web"
    assert sorted(addresses(web)) == sorted([f"sum-{OLD}", host.edge_name])
    assert not subnet(f"sum-{OLD}").subnet_of(POOL)
    assert env_of(web)["FORWARDED_ALLOW_IPS"] == addresses(f"{host.edge_name}-caddy")[host.edge_name]
    status, _, body = http_get(host.http_port, f"{OLD}.example.test", "/health/")
    assert status == 200 and json.loads(body)["version"]["build"] == "v1.0.0"
    document = host.sumbg("status", OLD, "--json").json()
    assert (document["network"]["plan"], document["network"]["edge_network"]) == (False, host.edge_name)
    assert document["network"]["problems"] == [
        f"network sum-{OLD} ({subnet(f'sum-{OLD}')}) is outside the address plan (network.pool {POOL}): it was "
        f"made from Docker's default pools, and the site's webs share the edge network {host.edge_name} with every "
        "other such site (not isolated); see docs/networks.md"
    ]
    text = host.sumbg("status", OLD)
    assert f"  NETWORK: network sum-{OLD} (" in text.stdout


def other_sites_targets(slug: str) -> list[str]:
    """Every way to name another site's web, Postgres and Redis: its names and its addresses."""
    targets = [
        f"{slug}-blue-web:8000",  # the web's alias on its link to the edge
        f"sum-{slug}-blue-web:8000",
        f"sum-{slug}-data-postgres:5432",
        f"sum-{slug}-data-redis:6379",
    ]
    for container, port in (
        (f"sum-{slug}-blue-web", 8000),
        (f"sum-{slug}-data-postgres", 5432),
        (f"sum-{slug}-data-redis", 6379),
    ):
        targets += [f"{address}:{port}" for address in addresses(container).values()]
    return targets


def assert_isolated(web: str, others: list[str]) -> None:
    # What the site's own web does reach, the same way: its Postgres, its Redis, the edge.
    own = reach(web, ["postgres:5432", "redis:6379"])
    assert own == {"postgres:5432": "open", "redis:6379": "open"}, own
    found = reach(web, [target for slug in others for target in other_sites_targets(slug)])
    answered = {target: how for target, how in found.items() if how == "open"}
    assert not answered, f"from {web}, other sites' containers answer: {answered}"
    # Not even refused: names do not resolve (gaierror), and packets to addresses on other networks are
    # dropped by the engine (TimeoutError), never delivered to a host that could answer.
    assert set(found.values()) <= {"gaierror", "TimeoutError"}, found


def test_no_site_reaches_another_sites_web_postgres_or_redis(sites: Host) -> None:
    assert_isolated(f"sum-{A}-blue-web", [B, OLD])
    assert_isolated(f"sum-{B}-blue-web", [A, OLD])
    assert_isolated(f"sum-{OLD}-blue-web", [A, B])


def test_the_edge_serves_every_site_through_an_upgrade_and_the_new_colour_is_isolated(sites: Host) -> None:
    host = sites
    with (
        Traffic(host.http_port, f"{A}.example.test", path="/", keepalive_clients=2, fresh_clients=1) as on_a,
        Traffic(host.http_port, f"{B}.example.test", path="/", keepalive_clients=1, fresh_clients=1) as on_b,
    ):
        upgraded = host.sumbg("upgrade", A, "v1.1.0", "--watch", "0", "--json")
    assert upgraded.returncode == 0, str(upgraded)
    for report in (on_a.report, on_b.report):
        assert report.sent > 20 and not report.failures, report.summary()
    status, _, body = http_get(host.http_port, f"{A}.example.test", "/health/")
    assert status == 200 and json.loads(body)["version"]["build"] == "v1.1.0"
    green = f"sum-{A}-green-web"
    assert sorted(addresses(green)) == [f"sum-{A}", f"sum-{A}.edge"]
    assert env_of(green)["FORWARDED_ALLOW_IPS"] == env_of(f"sum-{A}-blue-web")["FORWARDED_ALLOW_IPS"]
    assert_isolated(green, [B, OLD])


def test_an_edge_off_a_sites_link_is_reported_and_put_back_by_apply(sites: Host) -> None:
    host = sites
    docker("network", "disconnect", "--force", f"sum-{B}.edge", f"{host.edge_name}-caddy")
    broken = host.sumbg("status", B, "--json").json()["network"]["problems"]
    assert broken == [
        f"the edge {host.edge_name}-caddy is not on sum-{B}.edge at {str(subnet(f'sum-{B}.edge')[2])}: run `sumbg apply`"
    ]
    applied = host.sumbg("apply")
    assert applied.returncode == 0, str(applied)
    assert host.sumbg("status", B, "--json").json()["network"]["problems"] == []
    status, _, _ = http_get(host.http_port, f"{B}.example.test", "/")
    assert status == 200


def test_a_recreated_edge_starts_on_every_sites_link(sites: Host) -> None:
    """What `sumbg takeover` does to the edge: a new container, which joins each site's link before it starts."""
    host = sites
    before = inspect(f"{host.edge_name}-caddy")["Id"]
    Edge(load_host(host.root), Engine()).recreate()
    edge = inspect(f"{host.edge_name}-caddy")
    assert edge["Id"] != before
    joined = {name: n["IPAddress"] for name, n in edge["NetworkSettings"]["Networks"].items()}
    for slug in (A, B):
        assert joined[f"sum-{slug}.edge"] == str(subnet(f"sum-{slug}.edge")[2])

    def answers(slug: str) -> bool:
        try:
            return http_get(host.http_port, f"{slug}.example.test", "/", timeout=3)[0] == 200
        except OSError:  # Caddy not listening yet
            return False

    for slug in (A, B, OLD):
        assert wait_until(lambda slug=slug: answers(slug), 30), slug


def second_root(host: Host, tmp_path: Path, network: str) -> Host:
    other = new_host(tmp_path, "sum-edge-w21-refused", host.repo)
    with (tmp_path / "sumbg.toml").open("a") as conf:
        conf.write(f"\n[network]\n{network}\n")
    return other


@pytest.mark.parametrize(
    ("network", "message"),
    [
        ('pool = "10.213.0.0/15"', "sumbg.toml: network.pool: 10.213.0.0/15 has host bits set: the network is "),
        ('pool = "172.25.0.0/16"', "sumbg.toml: network.pool: 172.25.0.0/16 overlaps Docker's default address pools"),
        ('pool = "10.213.0.0"', "sumbg.toml: network.pool: must be an IPv4 network like '10.213.0.0/16'"),
        ("site_prefix = 29", "sumbg.toml: network.site_prefix: /29 is too small for a site's containers"),
    ],
)
def test_bad_network_settings_exit_2_before_anything_is_created(
    sites: Host, tmp_path: Path, network: str, message: str
) -> None:
    other = second_root(sites, tmp_path, network)
    result = other.sumbg("init", "w21-refused", "--repo", str(sites.repo), "--domain", "w21-refused.example.test")
    assert result.returncode == 2, str(result)
    assert result.stderr.startswith(f"sumbg: error: {message}") and result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "w21-refused").exists()
    assert docker("network", "inspect", "sum-w21-refused", check=False).returncode != 0


def test_a_full_pool_exits_2_before_anything_is_created(sites: Host, tmp_path: Path) -> None:
    # A pool that is exactly site A's block: every address in it is taken.
    block = json.loads((sites.root / "networks.json").read_text())["sites"][A]["block"]
    other = second_root(sites, tmp_path, f'pool = "{block}"')
    result = other.sumbg("init", "w21-full", "--repo", str(sites.repo), "--domain", "w21-full.example.test")
    assert result.returncode == 2, str(result)
    assert result.stderr == (
        f"sumbg: error: sumbg.toml: network.pool: {block} has no free /27 left for site w21-full (0 held by this "
        "host's sites, 2 networks of the engine in it); widen the pool or remove sites\n"
    )
    assert not (tmp_path / "w21-full").exists() and not (tmp_path / "networks.json").exists()
    assert docker("network", "inspect", "sum-w21-full", check=False).returncode != 0
