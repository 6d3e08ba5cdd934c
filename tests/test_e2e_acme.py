"""TLS `auto` for real: the edge gets its certificates from an ACME CA over HTTP-01.

The CA is Pebble (Let's Encrypt's test CA, Debian's `pebble` package, installed by `make
setup`) in a container on the edge's network, with `pebble-challtestsrv` as its DNS: every
name resolves to the edge there, as a real domain resolves to its host. sumbg.toml points
the edge at it with `[edge] acme_ca` and `acme_ca_root` (the root of Pebble's own API
certificate, made here); nothing else differs from a production host.
"""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from .conftest import EDGE, LOCAL_HOST_CONF, Host, docker, free_port, http_get, wait_until

pytestmark = pytest.mark.e2e

ACME_EDGE = f"{EDGE}-acme"
PEBBLE = f"{ACME_EDGE}-pebble"
SITES = ("ac-one", "ac-two", "ac-bad")


def remove_everything(the_host: Host | None = None, edge: str = ACME_EDGE, sites: tuple[str, ...] = SITES) -> None:
    docker("rm", "-f", f"{edge}-pebble", f"{edge}-caddy", check=False)
    if the_host:
        for slug in sites:
            the_host.teardown_site(slug)
    docker("volume", "rm", f"{edge}-caddy-data", f"{edge}-caddy-config", check=False)
    docker("network", "rm", edge, check=False)


def make_api_certificate(folder: Path, pebble: str = PEBBLE) -> Path:
    """A CA and, signed by it, the certificate Pebble's ACME API serves under its container name."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=folder)

    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=sumbg tests: Pebble API CA",
    )
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "api.key", "-out", "api.csr", "-subj", f"/CN={pebble}")
    (folder / "san.cnf").write_text(f"subjectAltName=DNS:{pebble}\n")
    openssl(
        "x509",
        "-req",
        "-in",
        "api.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "api.pem",
        "-days",
        "2",
        "-extfile",
        "san.cnf",
    )
    for name in ("api.key", "api.pem"):
        (folder / name).chmod(0o644)
    return folder / "ca.pem"


def base_image() -> str:
    """Any Debian-based image on this machine runs Debian's pebble binaries: the Python image sumbg builds on."""
    local = LOCAL_HOST_CONF.read_text() if LOCAL_HOST_CONF.exists() else ""
    for line in local.splitlines():
        if line.startswith("python ="):
            return line.split("=", 1)[1].strip().strip('"')
    return "python:3.12-slim"


@dataclass
class Acme:
    host: Host
    https_port: int
    management_port: int
    challtest_port: int

    def root(self) -> str:
        """The root Pebble issues under (made afresh at each Pebble start)."""
        return httpx.get(f"https://127.0.0.1:{self.management_port}/roots/0", verify=False).text

    def served(self, domain: str) -> tuple[bytes, dict]:
        """The certificate the edge serves for `domain`, verified against Pebble's root."""
        context = ssl.create_default_context(cadata=self.root())
        with socket.create_connection(("127.0.0.1", self.https_port), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname=domain) as tls:
                return tls.getpeercert(binary_form=True), tls.getpeercert()

    def https_health(self, domain: str) -> int:
        """/health/ over verified HTTPS; 0 while the edge does not answer yet."""
        try:
            with httpx.Client(verify=ssl.create_default_context(cadata=self.root())) as client:
                return client.get(
                    f"https://127.0.0.1:{self.https_port}/health/",
                    headers={"Host": domain},
                    extensions={"sni_hostname": domain},
                ).status_code
        except httpx.TransportError:
            return 0


def start_acme(
    example_repo: Path, folder: Path, edge: str, sites: tuple[str, ...], *, validity_seconds: int | None = None
) -> Acme:
    """A root of its own whose edge (named `edge`) gets certificates from a Pebble beside it;
    `validity_seconds`: how long Pebble's certificates last (its default: five years)."""
    pebble = f"{edge}-pebble"
    root = folder / "root"
    root.mkdir()
    the_host = Host(root, free_port(), free_port(), example_repo)
    remove_everything(the_host, edge, sites)
    https_port = free_port()
    ca = make_api_certificate(folder, pebble)
    local = LOCAL_HOST_CONF.read_text() if LOCAL_HOST_CONF.exists() else ""
    (root / "sumbg.toml").write_text(
        local + "\n[edge]\n"
        f"http_port = {the_host.http_port}\nhttps_port = {https_port}\npreview_port = {the_host.preview_port}\n"
        f'bind = "127.0.0.1"\ntls = "auto"\nname = "{edge}"\nacme_email = "ops@example.test"\n'
        f'acme_ca = "https://{pebble}:14000/dir"\nacme_ca_root = "{ca}"\n'
    )
    started = the_host.sumbg("apply")  # the edge, with no site yet: the CA needs its network and address
    assert started.returncode == 0, str(started)
    edge_ip = docker(
        "inspect",
        "--format",
        f'{{{{(index .NetworkSettings.Networks "{edge}").IPAddress}}}}',
        f"{edge}-caddy",
    ).stdout.strip()
    (folder / "pebble.json").write_text(
        json.dumps(
            {
                "pebble": {
                    "listenAddress": "0.0.0.0:14000",
                    "managementListenAddress": "0.0.0.0:15000",
                    "certificate": "/pebble/api.pem",
                    "privateKey": "/pebble/api.key",
                    "httpPort": 80,
                    "tlsPort": 443,
                    "ocspResponderURL": "",
                    "externalAccountBindingRequired": False,
                    **({"certificateValidityPeriod": validity_seconds} if validity_seconds else {}),
                }
            }
        )
    )
    management_port, challtest_port = free_port(), free_port()
    run = docker(
        "run",
        "-d",
        "--name",
        pebble,
        "--network",
        edge,
        "-p",
        f"127.0.0.1:{management_port}:15000",
        "-p",
        f"127.0.0.1:{challtest_port}:8055",
        "-v",
        f"{shutil.which('pebble')}:/usr/local/bin/pebble:ro",
        "-v",
        f"{shutil.which('pebble-challtestsrv')}:/usr/local/bin/pebble-challtestsrv:ro",
        "-v",
        f"{folder}:/pebble:ro",
        "-e",
        "PEBBLE_VA_NOSLEEP=1",
        "-e",
        "PEBBLE_WFE_NONCEREJECT=0",
        "--entrypoint",
        "sh",
        base_image(),
        "-c",
        f"pebble-challtestsrv -defaultIPv4 {edge_ip} -defaultIPv6 '' -http01 '' -https01 '' -tlsalpn01 '' "
        "-dns01 :8053 -management :8055 & exec pebble -config /pebble/pebble.json -dnsserver 127.0.0.1:8053",
        check=False,
    )
    assert run.returncode == 0, run.stderr
    acme = Acme(the_host, https_port, management_port, challtest_port)
    assert wait_until(lambda: _answers(acme), 30), docker("logs", pebble, check=False).stderr[-2000:]
    return acme


@pytest.fixture(scope="module")
def acme(host: Host, example_repo: Path, tmp_path_factory) -> Acme:
    """`host` holds the session's lock on the test edges; this is one more, named after it."""
    if not shutil.which("pebble") or not shutil.which("pebble-challtestsrv"):
        pytest.fail("pebble is not installed: run `make setup`", pytrace=False)
    acme = start_acme(example_repo, tmp_path_factory.mktemp("acme"), ACME_EDGE, SITES)
    try:
        yield acme
    finally:
        remove_everything(acme.host)


def pebble_log() -> str:
    logs = docker("logs", PEBBLE, check=False)
    return logs.stdout + logs.stderr


def _answers(acme: Acme) -> bool:
    try:
        return "BEGIN CERTIFICATE" in acme.root()
    except httpx.HTTPError:
        return False


def test_a_new_site_gets_its_certificate_over_http01_and_http_redirects_to_https(acme: Acme):
    acme.host.init("ac-one")
    _, cert = acme.served("ac-one.example.test")  # verified against the CA's root
    assert cert["subjectAltName"] == (("DNS", "ac-one.example.test"),)
    assert acme.https_health("ac-one.example.test") == 200
    status, headers, _ = http_get(acme.host.http_port, "ac-one.example.test", "/contact/")
    assert (status, headers["location"]) == (308, "https://ac-one.example.test/contact/")


def test_a_second_site_gets_its_own_certificate_and_both_survive_an_edge_restart(acme: Acme):
    acme.host.init("ac-two")
    first, _ = acme.served("ac-one.example.test")
    second, cert = acme.served("ac-two.example.test")
    assert first != second and cert["subjectAltName"] == (("DNS", "ac-two.example.test"),)
    issued = pebble_log().count("Issued certificate serial")
    assert issued == 2, pebble_log()[-3000:]
    assert docker("restart", f"{ACME_EDGE}-caddy", check=False).returncode == 0
    assert wait_until(lambda: acme.https_health("ac-one.example.test") == 200, 30)
    assert (acme.served("ac-one.example.test")[0], acme.served("ac-two.example.test")[0]) == (first, second)
    assert pebble_log().count("Issued certificate serial") == issued  # nothing was issued again


def test_a_domain_that_cannot_validate_fails_init_clearly_and_the_host_keeps_serving(acme: Acme):
    # The CA's DNS sends this name where nothing answers: HTTP-01 cannot succeed.
    added = httpx.post(
        f"http://127.0.0.1:{acme.challtest_port}/add-a",
        json={"host": "ac-bad.example.test.", "addresses": ["127.0.0.1"]},
    )
    assert added.status_code == 200
    result = acme.host.sumbg(
        "init", "ac-bad", "--repo", str(acme.host.repo), "--domain", "ac-bad.example.test", "--ref", "v1.0.0"
    )
    assert result.returncode == 1, str(result)
    assert "the edge could not get a TLS certificate for ac-bad.example.test" in result.stderr, result.stderr
    assert not (acme.host.root / "caddy" / "sites" / "ac-bad.caddy").exists()
    assert acme.https_health("ac-one.example.test") == 200 and acme.https_health("ac-two.example.test") == 200
