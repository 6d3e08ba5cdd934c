"""sumbg.records (state.json, history.jsonl) and sumbg.reports (SITES.md, WHAT-BROKE.md)."""

from __future__ import annotations

import json
import os
import re

import pytest

from sumbg.config import HostConfig, SiteConfig, render_site_toml
from sumbg.errors import UsageError
from sumbg.ops.reports import regenerate
from sumbg.site.records import SiteRecords
from sumbg.site.state import SCHEMA_VERSION, SiteState

from .fakes import write_state_json

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


@pytest.fixture
def records(tmp_path) -> SiteRecords:
    return SiteRecords(tmp_path / "acme")


# ---------------------------------------------------------------- state


def test_state_defaults_when_missing(records):
    loaded = records.load_state()
    assert (loaded.live, loaded.colours, loaded.previous, loaded.operation) == (None, {}, None, None)


def test_state_round_trip(records):
    state = {"live": "blue", "colours": {"blue": {"ref": "v1.0.0"}}, "previous": None, "operation": None}
    records.save_state(SiteState.from_json(state))
    loaded = records.load_state().to_json()
    assert TIMESTAMP.match(loaded.pop("updated_at"))
    assert loaded == {
        "schema": SCHEMA_VERSION,
        "slug": None,
        "live": "blue",
        "colours": {"blue": {"ref": "v1.0.0"}},
        "previous": None,
        "operation": None,
    }
    text = records.state_path.read_text()
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"


def test_an_older_state_json_is_read_and_written_back_in_the_current_schema_keeping_what_it_does_not_know(records):
    """A state.json from before the schema version (version 1), with a key of its own in a colour's
    record and at the top: read as it was, written back as the current schema with both keys kept."""
    old = {
        "slug": "acme",
        "live": "green",
        "previous": "blue",
        "operation": None,
        "colours": {
            "green": {"image": "sum-acme:v1.1.0", "ref": "v1.1.0", "status": "live", "note": "kept"},
            "blue": {"image": "sum-acme:v1.0.0", "ref": "v1.0.0", "status": "idle", "outcome": "healthy"},
        },
        "future": {"a": 1},
    }
    write_state_json(records.site_dir, old)
    state = records.load_state()
    assert (state.live, state.previous, state.record("blue").outcome) == ("green", "blue", "healthy")
    records.save_state(state)
    written = json.loads(records.state_path.read_text())
    assert written.pop("schema") == SCHEMA_VERSION and TIMESTAMP.match(written.pop("updated_at"))
    assert written == old


def test_a_state_json_from_a_newer_sumbg_is_refused_not_overwritten(records):
    write_state_json(records.site_dir, {"schema": SCHEMA_VERSION + 1, "live": "blue", "colours": {}})
    with pytest.raises(UsageError, match="newer than this sumbg understands"):
        records.load_state()


def test_state_is_saved_atomically(records, monkeypatch):
    """A new state.json is written beside the old one and renamed over it; a crash before the
    rename leaves the old file whole."""
    records.save_state(SiteState(live="blue"))
    before = records.state_path.read_text()
    inode = records.state_path.stat().st_ino

    def crash(src, dst):
        raise OSError("simulated crash before rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        records.save_state(SiteState(live="green"))
    assert records.state_path.read_text() == before
    monkeypatch.undo()

    records.save_state(SiteState(live="green"))
    assert records.load_state().live == "green"
    assert records.state_path.stat().st_ino != inode  # replaced, not rewritten in place


# ---------------------------------------------------------------- history


def test_history_of_a_new_site_is_empty(records):
    assert records.history() == []
    assert records.operations() == []


def test_append_and_history(records):
    records.append({"event": "started", "id": "a1", "operation": "init"})
    records.append({"event": "finished", "id": "a1", "operation": "init", "outcome": "done"})
    lines = records.history_path.read_text().splitlines()
    assert len(lines) == 2
    history = records.history()
    assert [{k: v for k, v in e.items() if k != "at"} for e in history] == [
        {"event": "started", "id": "a1", "operation": "init"},
        {"event": "finished", "id": "a1", "operation": "init", "outcome": "done"},
    ]
    assert all(TIMESTAMP.match(e["at"]) for e in history)
    assert json.loads(lines[0]) == history[0]
    assert lines[0] == json.dumps(history[0], sort_keys=True)


def test_an_entry_can_carry_its_own_time(records):
    records.append({"event": "note", "at": "2024-01-01T00:00:00Z"})
    assert records.history() == [{"event": "note", "at": "2024-01-01T00:00:00Z"}]


def test_operations_marks_unfinished_ones_interrupted(records):
    records.append({"event": "started", "id": "op1", "operation": "init", "at": "T1"})
    records.append({"event": "finished", "id": "op1", "operation": "init", "outcome": "done", "at": "T2"})
    records.append({"event": "adopted", "id": "x", "at": "T3"})
    records.append({"event": "started", "id": "op2", "operation": "upgrade", "from": "v1", "to": "v2", "at": "T4"})
    assert records.operations() == [
        {"event": "finished", "id": "op1", "operation": "init", "outcome": "done", "at": "T2"},
        {"event": "adopted", "id": "x", "at": "T3"},
        {
            "event": "started",
            "id": "op2",
            "operation": "upgrade",
            "from": "v1",
            "to": "v2",
            "at": "T4",
            "outcome": "interrupted",
        },
    ]


def test_a_torn_last_line_is_skipped(records):
    records.append({"event": "started", "id": "op1", "operation": "upgrade", "at": "T1"})
    with records.history_path.open("a") as handle:
        handle.write('{"event": "finished", "id": "op1", "outc')  # crash mid-write
    assert records.history() == [{"event": "started", "id": "op1", "operation": "upgrade", "at": "T1"}]
    assert records.operations() == [
        {"event": "started", "id": "op1", "operation": "upgrade", "at": "T1", "outcome": "interrupted"}
    ]


def test_an_append_after_a_torn_line_is_not_lost(records):
    records.append({"event": "started", "id": "op1", "operation": "upgrade", "at": "T1"})
    with records.history_path.open("a") as handle:
        handle.write('{"event": "finished", "id": "op1", "outc')
    records.append({"event": "note", "id": "n", "at": "T2"})
    assert records.history() == [
        {"event": "started", "id": "op1", "operation": "upgrade", "at": "T1"},
        {"event": "note", "id": "n", "at": "T2"},
    ]


# ---------------------------------------------------------------- reports


def add_site(
    root, slug: str, domain: str, *, environment: str = "production", notes: str = "", worker_command: str = ""
) -> SiteRecords:
    (root / slug).mkdir(parents=True)
    (root / slug / "site.toml").write_text(
        render_site_toml(
            SiteConfig(
                slug=slug,
                domain=domain,
                repo=f"/srv/repos/{slug}",
                environment=environment,
                project="proj",
                settings_module="proj.settings.production",
                wsgi="proj.wsgi:application",
                notes=notes,
                worker_command=worker_command,
            )
        )
    )
    return SiteRecords(root / slug)


def test_reports_for_a_host_with_no_sites(tmp_path):
    regenerate(HostConfig(root=tmp_path))
    assert (tmp_path / "SITES.md").read_text() == (
        "# Sites\n\nGenerated by sumbg from each site's history.jsonl; do not edit.\n\n"
        "| Site | Environment | Slug | Current Version | Last Deploy Date | Last Upgrade Outcome | Notes | Worker |\n"
        "|---|---|---|---|---|---|---|---|\n"
    )
    assert (tmp_path / "WHAT-BROKE.md").read_text() == (
        "# What broke\nGenerated by sumbg from each site's history.jsonl; newest first.\n"
    )


def test_reports(tmp_path):
    acme = add_site(
        tmp_path, "acme", "acme.example.com", notes="Acme | main client", worker_command="celery -A proj worker"
    )
    write_state_json(
        acme.site_dir,
        {
            "live": "green",
            "previous": "blue",
            "operation": None,
            "colours": {
                "blue": {"ref": "v1.0.0", "deployed_at": "2024-01-01T10:00:00Z", "worker": {"status": "stopped"}},
                "green": {"ref": "v1.1.0", "deployed_at": "2024-02-01T10:00:00Z", "worker": {"status": "ready"}},
            },
        },
    )
    acme.append({"event": "finished", "id": "i1", "operation": "init", "outcome": "done", "at": "2024-01-01T10:00:00Z"})
    acme.append(
        {
            "event": "finished",
            "id": "u1",
            "operation": "upgrade",
            "outcome": "aborted",
            "from": "v1.0.0",
            "to": "v1.1.0",
            "failed_step": "migrate",
            "at": "2024-01-15T09:00:00Z",
            "error": {
                "error": "MigrationFailed",
                "message": "migrations failed on green",
                "command": ["python", "manage.py", "migrate", "--noinput"],
                "returncode": 1,
                "output_tail": "Applying home.0002...\ndjango.db.utils.ProgrammingError: column x",
            },
        }
    )
    acme.append(
        {
            "event": "finished",
            "id": "u2",
            "operation": "upgrade",
            "outcome": "done",
            "from": "v1.0.0",
            "to": "v1.1.0",
            "at": "2024-02-01T10:00:00Z",
        }
    )

    shop = add_site(tmp_path, "shop", "shop.example.com", environment="staging")
    shop.append(
        {
            "event": "finished",
            "id": "r1",
            "operation": "rollback",
            "outcome": "needs-operator",
            "from": "v2.0.0",
            "to": "v1.0.0",
            "failed_step": "switch",
            "at": "2024-03-01T12:00:00Z",
            "error": {"error": "CaddyError", "message": "caddy reload failed"},
        }
    )

    fresh = add_site(tmp_path, "zeta", "zeta.example.com")  # initialised, never deployed
    assert fresh.history() == []
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "site.toml").write_text("not = [valid")  # skipped, not fatal

    regenerate(HostConfig(root=tmp_path))

    assert (tmp_path / "SITES.md").read_text() == (
        "# Sites\n\nGenerated by sumbg from each site's history.jsonl; do not edit.\n\n"
        "| Site | Environment | Slug | Current Version | Last Deploy Date | Last Upgrade Outcome | Notes | Worker |\n"
        "|---|---|---|---|---|---|---|---|\n"
        "| acme.example.com | production | acme | v1.1.0 | 2024-02-01T10:00:00Z "
        "| upgrade done (2024-02-01T10:00:00Z) | Acme \\| main client | blue stopped; green (live) ready |\n"
        "| shop.example.com | staging | shop | - | - | rollback needs-operator (2024-03-01T12:00:00Z) | - | none |\n"
        "| zeta.example.com | production | zeta | - | - | - | - | none |\n"
    )
    assert (tmp_path / "WHAT-BROKE.md").read_text() == (
        "# What broke\n"
        "Generated by sumbg from each site's history.jsonl; newest first.\n"
        "\n## shop: rollback v2.0.0 -> v1.0.0 (2024-03-01T12:00:00Z)\n"
        "- outcome: needs-operator, failed step: switch\n"
        "- symptoms: caddy reload failed\n"
        "\n## acme: upgrade v1.0.0 -> v1.1.0 (2024-01-15T09:00:00Z)\n"
        "- outcome: aborted, failed step: migrate\n"
        "- symptoms: migrations failed on green\n"
        "- command: `python manage.py migrate --noinput` (exit 1)\n"
        "- evidence:\n\n"
        "    Applying home.0002...\n"
        "    django.db.utils.ProgrammingError: column x\n"
    )


def test_what_broke_from_a_real_aborted_run(tmp_path):
    """An upgrade aborted by the executor ends up in WHAT-BROKE.md with its failing step and evidence."""
    import io

    from sumbg.errors import MigrationFailed
    from sumbg.ops.executor import Plan, Reporter, Step, execute

    acme = add_site(tmp_path, "acme", "acme.example.com")

    def migrate(run):
        raise MigrationFailed(
            "migrations failed on green",
            command=["python", "manage.py", "migrate"],
            returncode=1,
            output_tail="Traceback (most recent call last):\nKeyError: 'x'",
        )

    with pytest.raises(MigrationFailed):
        execute(
            Plan(
                "upgrade",
                "acme",
                (Step("build", "build", lambda run: None), Step("migrate", "migrate", migrate)),
                facts={"from": "v1.0.0", "to": "v1.1.0"},
            ),
            acme,
            Reporter(stream=io.StringIO()),
        )
    regenerate(HostConfig(root=tmp_path))
    at = acme.history()[-1]["at"]
    assert (tmp_path / "WHAT-BROKE.md").read_text() == (
        "# What broke\n"
        "Generated by sumbg from each site's history.jsonl; newest first.\n"
        f"\n## acme: upgrade v1.0.0 -> v1.1.0 ({at})\n"
        "- outcome: aborted, failed step: migrate\n"
        "- symptoms: migrations failed on green\n"
        "- command: `python manage.py migrate` (exit 1)\n"
        "- evidence:\n\n"
        "    Traceback (most recent call last):\n"
        "    KeyError: 'x'\n"
    )
    assert (
        f"| acme.example.com | production | acme | - | - | upgrade aborted ({at}) | - | none |\n"
        in (tmp_path / "SITES.md").read_text()
    )
