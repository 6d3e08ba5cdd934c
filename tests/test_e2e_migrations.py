"""Migration safety end to end: rehearsal on a copy, breaking releases, maintenance, after-switch.

One site (t-mig) on the real engine walks the example's migration releases in
order, under a background client reading the homepage (which reads the Lead
table, as a real homepage showing the latest enquiry would):

  v1.6.0 live
  -> v1.13.0-half-failing    fails in the rehearsal; the live database is exactly as it was
  -> v1.11.0-drop-message    refused: measured breaking for v1.6.0, 0 failed requests
  -> v1.12.0-rename-email    refused the same way
  -> v1.11.0-drop-message --maintenance: goes through; visitors get only 503 + Retry-After
  -> v1.14.0-post-switch     its contract migration (drop phone) runs after the watch;
                             a rollback then needs --restore-db, and with it works
"""

from __future__ import annotations

import hashlib
import json

import psycopg
import pytest

from .conftest import Host, docker, http_get
from .test_e2e_init import post_lead
from .test_e2e_upgrade import finished
from .traffic import TEST_PAUSE, Traffic

pytestmark = pytest.mark.e2e

SLUG = "t-mig"
DOMAIN = f"{SLUG}.example.test"


@pytest.fixture(scope="module")
def site(host: Host) -> str:
    host.init(SLUG, "v1.6.0")
    assert post_lead(host, DOMAIN, name="Before", email="b@example.test", message="hello", phone="1") == 302
    return SLUG


def fingerprint(host: Host) -> str:
    """The live database's schema, applied migrations and rows, as one digest."""
    with psycopg.connect(host.db_url(SLUG)) as conn:
        facts = [
            conn.execute(query).fetchall()
            for query in (
                "SELECT table_name, column_name, data_type, is_nullable, column_default FROM information_schema.columns "
                "WHERE table_schema = 'public' ORDER BY 1, 2",
                "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1",
                "SELECT app, name FROM django_migrations ORDER BY id",
                "SELECT * FROM sum_core_lead ORDER BY id",
            )
        ]
    return hashlib.sha256(repr(facts).encode()).hexdigest()


def lead_columns(host: Host) -> list[str]:
    with psycopg.connect(host.db_url(SLUG)) as conn:
        return [
            row[0]
            for row in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'sum_core_lead' ORDER BY 1"
            )
        ]


def databases(host: Host) -> list[str]:
    with psycopg.connect(host.db_url(SLUG)) as conn:
        return sorted(row[0] for row in conn.execute("SELECT datname FROM pg_database WHERE NOT datistemplate"))


def assert_no_rehearsal_left(host: Host) -> None:
    assert host.containers(f"sum-{SLUG}-rehearsal") == []
    assert databases(host) == ["postgres", SLUG.replace("-", "_")]
    assert "rehearsal" not in host.state(SLUG)


def step_of(entry: dict, name: str) -> dict:
    return next(step for step in entry["steps"] if step["name"] == name)


def test_a_migration_failing_half_way_never_touches_the_live_database(host: Host, site: str) -> None:
    before = fingerprint(host)
    with Traffic(host.http_port, DOMAIN, path="/", pause=TEST_PAUSE) as traffic:
        traffic.settle()
        result = host.sumbg("upgrade", site, "v1.13.0-half-failing", "--json", "--watch", "0")
    report = traffic.stop()
    assert result.returncode == 1, str(result)
    failure = result.json()
    assert failure["step"] == "rehearsal"
    assert failure["message"].startswith(
        f"the migrations of sum-{SLUG}:v1.13.0-half-failing failed in the "
        "rehearsal on a copy of the database; the live database was never touched"
    )
    assert "deliberately failing half way" in failure["output_tail"]
    assert report.failures == [] and report.sent > 20, report.summary()
    assert fingerprint(host) == before  # not even the column the copy kept
    assert_no_rehearsal_left(host)
    assert host.state(site)["live"] == "blue"


@pytest.mark.parametrize("ref, column", [("v1.11.0-drop-message", "message"), ("v1.12.0-rename-email", "email")])
def test_a_breaking_release_is_refused_with_the_evidence_and_no_request_fails(
    host: Host, site: str, ref: str, column: str
) -> None:
    before = fingerprint(host)
    with Traffic(host.http_port, DOMAIN, path="/", keepalive_clients=2, fresh_clients=1, pause=TEST_PAUSE) as traffic:
        traffic.settle()
        result = host.sumbg("upgrade", site, ref, "--json", "--watch", "0")
    report = traffic.stop()
    assert result.returncode == 1, str(result)
    failure = result.json()
    assert failure["step"] == "rehearsal" and failure["error"] == "BreakingRelease"
    message = failure["message"]
    assert message.startswith(
        f"{ref}'s migrations break v1.6.0 (measured on a copy of the database: "
        "GET / answered 500 (expected HTTP 200, got 500); the live release logged: "
    ), message
    assert f"column sum_core_lead.{column} does not exist" in message
    assert f"`sumbg upgrade {SLUG} {ref} --maintenance`" in message and "`--accept-breaking`" in message
    assert report.failures == [] and report.sent > 20, report.summary()
    assert fingerprint(host) == before
    assert_no_rehearsal_left(host)
    rehearsal = finished(host, site)["rehearsal"]
    assert rehearsal["policy"] == "refused"
    assert rehearsal["compatibility"]["verdict"] == "breaking"
    assert {e["check"] for e in rehearsal["compatibility"]["evidence"]} == {"GET /"}
    assert rehearsal["restore_seconds"] > 0 and rehearsal["migrate_seconds"] > 0


def test_a_breaking_release_with_maintenance_shows_visitors_only_the_maintenance_page(host: Host, site: str) -> None:
    with Traffic(host.http_port, DOMAIN, path="/", keepalive_clients=2, fresh_clients=1, pause=TEST_PAUSE) as traffic:
        traffic.settle()
        result = host.sumbg("upgrade", site, "v1.11.0-drop-message", "--maintenance", "--json", "--watch", "2")
        traffic.settle()
    report = traffic.stop()
    assert result.returncode == 0, str(result)
    outcome = result.json()
    errors = [s for s in report.samples if s.status >= 500 or s.error]
    assert errors, report.summary()  # the window was real and visitors saw it
    assert {(s.status, s.retry_after) for s in errors} == {(503, "120")}, report.summary()
    assert outcome["maintenance_seconds"] > 0
    assert step_of(outcome, "switch")["maintenance_seconds"] == outcome["maintenance_seconds"]
    assert outcome["rehearsal"]["policy"] == "maintenance"
    assert "message" not in lead_columns(host)
    status, _, body = http_get(host.http_port, DOMAIN, "/")
    assert status == 200 and b"Latest enquiry" in body
    assert not (host.root / "caddy" / "state" / SLUG / "maintenance").exists()
    assert host.state(site)["colours"]["green"]["breaks_previous"].startswith(
        "v1.11.0-drop-message's migrations break v1.6.0"
    )

    refused = host.sumbg("rollback", site)
    assert refused.returncode == 2, str(refused)
    assert (
        refused.stderr.strip()
        .splitlines()[-1]
        .startswith(
            "sumbg: error: rolling back from green (v1.11.0-drop-message) to blue (v1.6.0) needs --restore-db: "
        )
    )
    assert host.state(site)["live"] == "green"


def test_an_after_switch_migration_runs_after_the_watch_and_rollback_restores_the_database(
    host: Host, site: str
) -> None:
    with Traffic(host.http_port, DOMAIN, path="/", keepalive_clients=2, fresh_clients=1, pause=TEST_PAUSE) as traffic:
        traffic.settle()
        result = host.sumbg("upgrade", site, "v1.14.0-post-switch", "--json", "--watch", "3")
        traffic.settle()
    report = traffic.stop()
    assert result.returncode == 0, str(result)
    assert report.failures == [], report.summary()
    outcome = result.json()
    assert [s["name"] for s in outcome["steps"]][-3:] == ["workers", "watch", "after-switch"]
    assert outcome["rehearsal"]["compatibility"] == {"verdict": "compatible"}
    assert outcome["rehearsal"]["after_switch"] == ["sum_core.0004_remove_lead_phone"]
    assert step_of(outcome, "migrate")["after_switch"] == ["sum_core.0004_remove_lead_phone"]
    assert step_of(outcome, "after-switch")["migrations"] == ["sum_core.0004_remove_lead_phone"]
    assert "phone" not in lead_columns(host)
    record = host.state(site)["colours"]["blue"]
    assert (record["after_switch_migrations"], record["after_switch"]) == (["sum_core.0004_remove_lead_phone"], "ran")

    refused = host.sumbg("rollback", site)
    assert (
        refused.returncode == 2
        and "its after-switch migrations ran (sum_core.0004_remove_lead_phone)" in refused.stderr
    ), str(refused)
    rolled = host.sumbg("rollback", site, "--restore-db", "--json")
    assert rolled.returncode == 0, str(rolled)
    assert host.state(site)["live"] == "green"
    assert "phone" in lead_columns(host)
    status, _, body = http_get(host.http_port, DOMAIN, "/health/")
    assert json.loads(body)["version"]["build"] == "v1.11.0-drop-message"
    assert docker("ps", "--format", "{{.Names}}").stdout.count(f"sum-{SLUG}-rehearsal") == 0
