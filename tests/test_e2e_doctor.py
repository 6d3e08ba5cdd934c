"""`sumbg doctor` on a real host: an edge with TLS `auto` whose certificates come from Pebble
(Let's Encrypt's test CA, as tests/test_e2e_acme.py runs it) set to issue short-lived ones, and
a site whose domain resolves nowhere but in Pebble's own DNS.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import EDGE, Host
from .test_e2e_acme import Acme, remove_everything, start_acme

pytestmark = pytest.mark.e2e

DOCTOR_EDGE = f"{EDGE}-w25doc"
SLUG = "w25-doc"
DOMAIN = f"{SLUG}.example.test"
WEEK = 7 * 86400  # under doctor's 14 days: the certificate "expires soon"


@pytest.fixture(scope="module")
def acme(host: Host, example_repo: Path, tmp_path_factory) -> Iterator[Acme]:
    """`host` holds the session's lock on the test edges; this edge is named after it."""
    if not shutil.which("pebble") or not shutil.which("pebble-challtestsrv"):
        pytest.fail("pebble is not installed: run `make setup`", pytrace=False)
    acme = start_acme(example_repo, tmp_path_factory.mktemp("doctor"), DOCTOR_EDGE, (SLUG,), validity_seconds=WEEK)
    try:
        acme.host.init(SLUG)
        yield acme
    finally:
        remove_everything(acme.host, DOCTOR_EDGE, (SLUG,))


def checks(document: dict, check: str) -> list[dict]:
    return [row for row in document["checks"] if row["check"] == check]


def test_doctor_flags_a_domain_that_does_not_resolve_here_and_a_certificate_that_expires_soon(acme: Acme):
    result = acme.host.sumbg("doctor", "--json")
    assert result.returncode == 1, str(result)
    document = result.json()
    assert document["ok"] is False
    [dns] = checks(document, "dns")
    assert (dns["subject"], dns["level"]) == (f"{SLUG}: {DOMAIN}", "fail")
    assert dns["detail"].startswith("does not resolve (")
    assert dns["fix"] == f"add an A (and AAAA) record for {DOMAIN} pointing at 127.0.0.1"  # [edge] bind
    [certificate] = checks(document, "certificate")
    assert (certificate["subject"], certificate["level"]) == (f"{SLUG}: {DOMAIN}", "warn")
    assert certificate["detail"].startswith("expires in 6.9 days (") or certificate["detail"].startswith(
        "expires in 7.0 days ("
    )
    assert ", issuer Pebble Intermediate CA " in certificate["detail"]
    # The rest of the host is as it should be: the edge holds its ports, the records agree.
    assert [(row["subject"].split()[0], row["level"], row["detail"]) for row in checks(document, "port")] == [
        ("http", "ok", "held by the edge"),
        ("https", "ok", "held by the edge"),
        ("preview", "ok", "held by the edge"),
    ]
    [edge] = checks(document, "edge")
    assert edge["level"] == "ok" and edge["detail"].startswith("Caddy v2.")
    assert [(row["level"], row["detail"]) for row in checks(document, "agreement")] == [
        ("ok", "records, Caddy and containers agree")
    ]
    assert [(row["level"], row["detail"]) for row in checks(document, "backups")] == [("warn", "no backup yet")]
    assert {row["level"] for row in checks(document, "engine") + checks(document, "compose")} == {"ok"}
    assert document["counts"]["fail"] == 1


def test_doctor_prints_one_line_per_check_with_the_fix(acme: Acme):
    result = acme.host.sumbg("doctor")
    assert result.returncode == 1, str(result)
    lines = result.stdout.splitlines()
    [dns] = [line for line in lines if line.startswith("fail ") and DOMAIN in line]
    assert dns.split()[:2] == ["fail", "dns"]
    assert dns.endswith(f"  fix: add an A (and AAAA) record for {DOMAIN} pointing at 127.0.0.1")
    [certificate] = [line for line in lines if line.split()[:2] == ["warn", "certificate"]]
    assert "Caddy renews a certificate when a third of its life is left" in certificate
    assert lines[-1].endswith(" warn, 1 fail")
    # A backup makes that line ok.
    assert acme.host.sumbg("backup", SLUG).returncode == 0
    again = acme.host.sumbg("doctor", "--json").json()
    assert [(row["level"], row["detail"].split(" is ")[0]) for row in checks(again, "backups")] == [
        ("ok", "the newest")
    ]
