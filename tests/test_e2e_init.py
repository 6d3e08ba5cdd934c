"""`sumbg init` and `sumbg status` on the real engine: the example site behind Caddy."""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess
import urllib.parse

import psycopg
import pytest

from .conftest import Host, docker, http_get, snapshot_tree

pytestmark = pytest.mark.e2e
SLUG = "t-init"
DOMAIN = f"{SLUG}.example.test"


@pytest.fixture(scope="module")
def site(host: Host) -> str:
    host.init(SLUG, "v1.0.0")
    return SLUG


def tag_commit(host: Host, ref: str) -> str:
    return subprocess.run(
        ["git", "-C", str(host.repo), "rev-parse", f"{ref}^{{commit}}"], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_site_answers_through_caddy(host: Host, site: str) -> None:
    status, _, body = http_get(host.http_port, DOMAIN, "/")
    assert status == 200
    assert b"sum-core" in body

    status, _, body = http_get(host.http_port, DOMAIN, "/health/")
    health = json.loads(body)
    assert status == 200
    assert health["status"] == "ok"
    assert health["version"] == {"build": "v1.0.0", "git_sha": tag_commit(host, "v1.0.0")}
    assert set(health["checks"]) == {"db", "cache", "celery"}

    status, headers, body = http_get(host.http_port, DOMAIN, "/static/sum_core/css/main.css")
    assert status == 200
    assert headers["content-type"].startswith("text/css")
    assert b"#1a1a1a" in body

    status, _, _ = http_get(host.http_port, DOMAIN, "/admin/login/")
    assert status == 200


def post_lead(host: Host, domain: str, **fields: str) -> int:
    status, headers, body = http_get(host.http_port, domain, "/contact/")
    assert status == 200
    token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', body).group(1).decode()
    cookie = re.search(r"csrftoken=([^;]+)", headers["set-cookie"]).group(1)
    form = urllib.parse.urlencode({"csrfmiddlewaretoken": token, **fields}).encode()
    status, headers, _ = http_get(
        host.http_port,
        domain,
        "/contact/",
        method="POST",
        body=form,
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Cookie": f"csrftoken={cookie}",
            "Origin": f"https://{domain}",
            "Referer": f"https://{domain}/contact/",
        },
    )
    return status


def test_contact_form_stores_a_lead(host: Host, site: str) -> None:
    assert post_lead(host, DOMAIN, name="Ada Lovelace", email="ada@example.test", message="kitchen please") == 302
    with psycopg.connect(host.db_url(SLUG)) as conn:
        rows = conn.execute("SELECT name, email, message FROM sum_core_lead ORDER BY id").fetchall()
    assert ("Ada Lovelace", "ada@example.test", "kitchen please") in rows


def test_status_json_matches_the_site(host: Host, site: str) -> None:
    result = host.sumbg("status", SLUG, "--json")
    assert result.returncode == 0, str(result)
    status = result.json()
    assert status["site"] == SLUG
    assert status["domain"] == DOMAIN
    assert status["live"] == "blue"
    assert status["image"] == f"sum-{SLUG}:v1.0.0"
    assert status["ref"] == "v1.0.0"
    assert status["sum_core"] == "0.6.3"
    assert status["commit"] == tag_commit(host, "v1.0.0")
    assert status["health"]["status"] == "ok"
    assert status["health"]["http_status"] == 200
    assert status["interrupted"] is False
    everything = host.sumbg("status", "--json").json()
    assert SLUG in [s["site"] for s in everything["sites"]]


def test_files_and_containers_follow_the_contract(host: Host, site: str) -> None:
    site_dir = host.site_dir(SLUG)
    assert (site_dir / ".env").stat().st_mode & 0o777 == 0o600
    assert {"site.toml", "state.json", "history.jsonl", "backups", ".env"} <= {p.name for p in site_dir.iterdir()}
    assert (host.root / "caddy" / "Caddyfile").exists()
    assert (host.root / "caddy" / "sites" / f"{SLUG}.caddy").exists()
    assert host.containers(f"sum-{SLUG}-") == [
        f"sum-{SLUG}-blue-web",
        f"sum-{SLUG}-data-postgres",
        f"sum-{SLUG}-data-redis",
    ]
    labels = json.loads(docker("image", "inspect", f"sum-{SLUG}:v1.0.0").stdout)[0]["Config"]["Labels"]
    assert labels["sumbg.slug"] == SLUG
    assert labels["sumbg.ref"] == "v1.0.0"
    assert labels["sumbg.sum-core"] == "0.6.3"
    assert labels["sumbg.commit"] == tag_commit(host, "v1.0.0")
    secrets = host.secrets(SLUG)
    history = (site_dir / "history.jsonl").read_text()
    assert secrets["POSTGRES_PASSWORD"] not in history
    assert secrets["DJANGO_SECRET_KEY"] not in history


def test_proxy_trust_comes_from_the_edge_network_only(host: Host, site: str) -> None:
    # Like a real SUM client: SECURE_SSL_REDIRECT on and no SECURE_PROXY_SSL_HEADER.
    settings = subprocess.run(
        ["git", "-C", str(host.repo), "show", "v1.0.0:acme/settings/production.py"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert re.search(r"^SECURE_SSL_REDIRECT = True$", settings, re.M)
    assert not re.search(r"^SECURE_PROXY_SSL_HEADER", settings, re.M)
    # Through the edge the site answers (test_site_answers_through_caddy); the same header
    # sent from anywhere else (here: inside the container) is not trusted.
    probe = (
        "import http.client; c = http.client.HTTPConnection('127.0.0.1', 8000); "
        f"c.request('GET', '/health/', headers={{'Host': '{DOMAIN}', 'X-Forwarded-Proto': 'https'}}); "
        "r = c.getresponse(); print(r.status, r.getheader('Location'))"
    )
    direct = docker("exec", f"sum-{SLUG}-blue-web", "python", "-c", probe)
    assert direct.stdout.strip() == f"301 https://{DOMAIN}/health/"
    env = dict(
        item.split("=", 1) for item in json.loads(docker("inspect", f"sum-{SLUG}-blue-web").stdout)[0]["Config"]["Env"]
    )
    # Trusted: the edge Caddy's address alone on the site's own link to it, reserved for it outside
    # the range Docker hands out.
    link = f"sum-{SLUG}.edge"
    ipam = json.loads(docker("network", "inspect", link).stdout)[0]["IPAM"]["Config"][0]
    edge = json.loads(docker("inspect", f"{host.edge_name}-caddy").stdout)[0]
    edge_ip = edge["NetworkSettings"]["Networks"][link]["IPAddress"]
    assert env["FORWARDED_ALLOW_IPS"] == edge_ip == str(ipaddress.ip_network(ipam["Subnet"])[2])
    assert ipaddress.ip_address(edge_ip) not in ipaddress.ip_network(ipam["IPRange"])
    # sumbg sets the version variables itself: an image need not declare them.
    assert (env["GIT_SHA"], env["BUILD_ID"]) == (tag_commit(host, "v1.0.0"), "v1.0.0")


def test_init_twice_changes_nothing(host: Host, site: str) -> None:
    before = snapshot_tree(host.site_dir(SLUG), exclude=("history.jsonl", "repo.git"))
    containers = docker("ps", "-a", "--filter", f"name=sum-{SLUG}-", "--format", "{{.ID}} {{.Names}}").stdout
    result = host.sumbg("init", SLUG, "--repo", str(host.repo), "--domain", DOMAIN, "--ref", "v1.1.0")
    assert result.returncode == 0, str(result)
    assert "already initialised" in result.stderr
    assert snapshot_tree(host.site_dir(SLUG), exclude=("history.jsonl", "repo.git")) == before
    assert docker("ps", "-a", "--filter", f"name=sum-{SLUG}-", "--format", "{{.ID}} {{.Names}}").stdout == containers
    last = host.history(SLUG)[-1]
    assert (last["event"], last["operation"], last["reason"]) == (
        "noop",
        "init",
        "site already initialised; nothing changed",
    )


def test_two_sites_share_one_edge(host: Host, site: str) -> None:
    host.init("t-second", "v1.1.0")
    status, _, body = http_get(host.http_port, "t-second.example.test", "/health/")
    assert status == 200 and json.loads(body)["version"]["build"] == "v1.1.0"
    status, _, body = http_get(host.http_port, DOMAIN, "/health/")
    assert status == 200 and json.loads(body)["version"]["build"] == "v1.0.0"
    # Every edge serving this root (other sessions' edges on the engine serve other roots).
    edges = docker("ps", "--filter", f"label=sumbg.root={host.root}", "--format", "{{.Names}}").stdout.split()
    assert edges == [f"{host.edge_name}-caddy"]
    host.teardown_site("t-second")


BAD_INPUTS = {
    "slug with uppercase": (
        ["init", "Bad_Slug", "--repo", "{repo}", "--domain", "x.example.test"],
        "invalid site slug 'Bad_Slug'",
    ),
    "domain injecting caddy directives": (
        ["init", "t-bad", "--repo", "{repo}", "--domain", "x.test {\nrespond 1\n}"],
        "invalid domain",
    ),
    "domain with a space": (["init", "t-bad", "--repo", "{repo}", "--domain", "a b.test"], "invalid domain"),
    "missing repo": (
        ["init", "t-bad", "--repo", "/nonexistent/repo", "--domain", "x.example.test"],
        "repository /nonexistent/repo does not exist",
    ),
    "unknown ref": (
        ["init", "t-bad", "--repo", "{repo}", "--domain", "x.example.test", "--ref", "v9.9.9"],
        "ref 'v9.9.9' does not exist",
    ),
    "upgrade of an unknown site": (["upgrade", "t-nosuch", "v1.1.0"], "no site 't-nosuch'"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_exits_2_with_one_line_and_creates_nothing(host: Host, case: str) -> None:
    argv, expected = BAD_INPUTS[case]
    argv = [arg.replace("{repo}", str(host.repo)) for arg in argv]
    entries = sorted(p.name for p in host.root.iterdir())
    containers = host.own_containers(argv[1])
    result = host.sumbg(*argv)
    assert result.returncode == 2, str(result)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("sumbg: error: ") and expected in lines[0], lines[0]
    assert sorted(p.name for p in host.root.iterdir()) == entries
    assert host.own_containers(argv[1]) == containers


def test_a_database_volume_left_by_an_earlier_site_of_the_slug_is_refused(host: Host) -> None:
    volume = "sum-t-foreign-data-pgdata"
    docker("volume", "create", volume)
    try:
        entries = sorted(p.name for p in host.root.iterdir())
        result = host.sumbg("init", "t-foreign", "--repo", str(host.repo), "--domain", "t-foreign.example.test")
        assert result.returncode == 2, str(result)
        assert result.stderr.strip().splitlines() == [
            f"sumbg: error: a database volume {volume} from an earlier site t-foreign exists and this site has no "
            f"secrets for it: put back that site's .env in {host.root / 't-foreign'}, or remove the volume "
            f"(`docker volume rm {volume}`, its data is lost) and init again"
        ]
        assert sorted(p.name for p in host.root.iterdir()) == entries
        assert host.containers("sum-t-foreign") == []
    finally:
        docker("volume", "rm", volume, check=False)


def test_malformed_site_toml_is_one_line_exit_2(host: Host, tmp_path) -> None:
    root = tmp_path / "root"
    (root / "broken").mkdir(parents=True)
    (root / "broken" / "site.toml").write_text(
        'slug = "broken"\ndomain = "x.test"\nrepo = "/r"\n[app]\nproject = "acme"\nweb_workers = "two"\n'
    )
    proc = subprocess.run(
        [str(host_sumbg()), "--root", str(root), "upgrade", "broken", "v1.1.0"], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "sumbg: error: site.toml: app.web_workers: must be an integer, not 'two'"
    ]


def test_malformed_sumbg_toml_is_one_line_exit_2(host: Host, tmp_path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "sumbg.toml").write_text('[edge]\ntls = "bogus"\n')
    proc = subprocess.run(
        [str(host_sumbg()), "--root", str(root), "init", "t-x", "--repo", str(host.repo), "--domain", "x.example.test"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "sumbg: error: sumbg.toml: edge.tls: must be one of auto, internal, off, not 'bogus'"
    ]
    assert sorted(p.name for p in root.iterdir()) == ["sumbg.toml"]


def host_sumbg():
    from .conftest import SUMBG

    return SUMBG
