"""The operations' entry points on fakes: init, upgrade (its opening, dry run and refusals as a
user calls it), restore and retire. Each test runs the real operation over tests/fakes.py and
asserts its whole outcome: the effects on the world, state.json and the history."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sumbg.cli import exit_code_of
from sumbg.errors import CheckFailed, Disagreement, GitError, Interrupted, LockHeld, SumbgError, UsageError
from sumbg.ops import backups, retire
from sumbg.ops.init import init
from sumbg.ops.upgrade import upgrade
from sumbg.site.state import SCHEMA_VERSION

from .fakes import FakeContext, World, deployed, no_effects, write_state_json


@pytest.fixture
def world() -> World:
    return World(refs={"v1.0.0": "0.6.3", "v1.1.0": "0.7.0", "v1.1.1": "0.7.0"})


@pytest.fixture
def ctx(tmp_path: Path, world: World) -> FakeContext:
    return FakeContext(tmp_path, world)


def state_of(root: Path) -> dict[str, Any]:
    return json.loads((root / "acme" / "state.json").read_text())


def history_of(root: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (root / "acme" / "history.jsonl").read_text().splitlines()]


def without_times(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in ("deployed_at", "failed_at")}


# ---------------------------------------------------------------- init


def test_init_deploys_the_first_colour_and_records_it(ctx: FakeContext, world: World, tmp_path: Path) -> None:
    result = init(ctx, "acme", "/srv/repos/acme", ["acme.example.test"], "v1.0.0")
    assert result["outcome"] == "done"
    assert [s["name"] for s in result["steps"]] == [
        "data",
        "build",
        "migrate",
        "static",
        "start",
        "edge",
        "health",
        "record",
    ]
    assert world.effects == [
        ("data", "up"),
        ("start", "blue", "v1.0.0"),
        ("weights", "blue"),
        ("live", "blue"),
        ("preview", "green"),
    ]
    assert world.schema_effects == [("migrate", "live", "v1.0.0", "all")]
    state = state_of(tmp_path)
    assert (state["schema"], state["slug"], state["live"], state["previous"], state["operation"]) == (
        SCHEMA_VERSION,
        "acme",
        "blue",
        None,
        None,
    )
    assert {c: without_times(r) for c, r in state["colours"].items()} == {
        "blue": {
            "image": "sum-acme:v1.0.0",
            "ref": "v1.0.0",
            "commit": "v1.0.0-sha",
            "sum_core": "0.6.3",
            "status": "live",
            "outcome": "healthy",
        }
    }
    site_toml = (tmp_path / "acme" / "site.toml").read_text()
    assert 'domains = ["acme.example.test"]' in site_toml and 'project = "acme"' in site_toml
    assert (tmp_path / "acme" / ".env").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "acme" / "repo.git").is_dir()
    assert [e["event"] for e in history_of(tmp_path)] == ["started", "finished"]


def test_init_of_a_live_site_changes_nothing(ctx: FakeContext, world: World, tmp_path: Path) -> None:
    deployed(tmp_path, world, live=("blue", "v1.0.0"))
    before = (tmp_path / "acme" / "state.json").read_text()
    with no_effects(world):
        result = init(ctx, "acme", "/srv/repos/acme", ["acme.example.test"], "v1.1.0")
    assert (result["outcome"], result["live"]) == ("noop", "blue")
    assert (tmp_path / "acme" / "state.json").read_text() == before
    assert history_of(tmp_path)[-1]["reason"] == "site already initialised; nothing changed"


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "message"),
    [
        (("Acme", "/r", ["a.test"], None), {}, UsageError, "invalid site slug 'Acme'"),
        (("acme", "/r", [], None), {}, UsageError, "give the site's domain with --domain"),
        (("acme", "/r", ["a.test", "a.test"], None), {}, UsageError, "--domain names the same domain twice"),
        (("acme", "/r", ["a.test"], None), {"worker": True, "worker_command": "x"}, UsageError, "not both"),
        (("acme", "/unreachable/repo", ["a.test"], None), {}, GitError, "cannot reach the repository"),
        (("acme", "/r", ["a.test"], "v9.9.9"), {}, GitError, "ref v9.9.9 not found"),
    ],
)
def test_init_refuses_bad_input_before_creating_anything(
    ctx: FakeContext,
    world: World,
    tmp_path: Path,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    error: type[Exception],
    message: str,
) -> None:
    with no_effects(world), pytest.raises(error, match=message):
        init(ctx, *args, **kwargs)
    assert not (tmp_path / "acme").exists()


def test_init_refuses_a_domain_another_site_serves(ctx: FakeContext, world: World, tmp_path: Path) -> None:
    deployed(tmp_path, world, live=("blue", "v1.0.0"))
    other = World(slug="other", refs=world.refs)
    with no_effects(other), pytest.raises(UsageError, match="domain acme.example.test is already served by site acme"):
        init(FakeContext(tmp_path, other), "other", "/r", ["acme.example.test"], None)
    assert not (tmp_path / "other").exists()


def test_init_refuses_a_database_volume_left_by_an_earlier_site(ctx: FakeContext, world: World, tmp_path: Path) -> None:
    world.volumes.add("sum-acme-data-pgdata")
    with no_effects(world), pytest.raises(UsageError, match="a database volume sum-acme-data-pgdata from an earlier"):
        init(ctx, "acme", "/r", ["acme.example.test"], None)
    assert not (tmp_path / "acme").exists()


def test_init_whose_new_site_never_answers_takes_it_off_the_edge(
    ctx: FakeContext, world: World, tmp_path: Path
) -> None:
    world.broken.add(world.release("v1.0.0"))
    with pytest.raises(CheckFailed, match="live /health/ through Caddy did not pass") as failed:
        init(ctx, "acme", "/r", ["acme.example.test"], "v1.0.0")
    assert exit_code_of(failed.value) == 1
    assert world.effects[-2:] == [("edge", "removed", "acme"), ("remove", "blue")]
    state = state_of(tmp_path)
    assert (state["live"], state["colours"], state["operation"]) == (None, {}, None)
    finished = history_of(tmp_path)[-1]
    assert (finished["outcome"], finished["failed_step"]) == ("aborted", "health")


# ---------------------------------------------------------------- upgrade, as called


def test_upgrade_moves_the_site_and_keeps_the_old_colour(ctx: FakeContext, world: World, tmp_path: Path) -> None:
    deployed(tmp_path, world, live=("blue", "v1.0.0"))
    result = upgrade(ctx, "acme", "v1.1.0", watch=0.05)
    assert (result["outcome"], result["from"], result["to"]) == ("done", "v1.0.0", "v1.1.0")
    assert result["sum_core"] == {"from": None, "to": "0.7.0"}
    assert world.effects == [
        ("start", "green", "v1.1.0"),
        ("preview", "green"),
        ("preview", "blue"),
        ("live", "green"),
        ("weights", "green"),
    ]
    state = state_of(tmp_path)
    assert (state["live"], state["previous"]) == ("green", "blue")
    assert without_times(state["colours"]["green"]) == {
        "image": "sum-acme:v1.1.0",
        "ref": "v1.1.0",
        "commit": "v1.1.0-sha",
        "sum_core": "0.7.0",
        "status": "live",
        "outcome": "healthy",
        "backup": "acme_20261127T000000Z_v1.1.0.dump",
    }
    assert state["colours"]["blue"]["status"] == "idle"
    assert world.backups_taken == ["acme_20261127T000000Z_v1.1.0.dump"]


def test_upgrade_dry_run_changes_nothing_and_takes_no_lock(ctx: FakeContext, world: World, tmp_path: Path) -> None:
    deployed(tmp_path, world, live=("blue", "v1.0.0"))
    before = (tmp_path / "acme" / "state.json").read_text()
    held = ctx.site("acme").lock().acquire(command="another sumbg")
    try:
        with no_effects(world):
            report = upgrade(ctx, "acme", "v1.1.0", dry_run=True)
    finally:
        held.release()
    assert report["dry_run"] is True and report["image"] == "sum-acme:v1.1.0"
    assert [s["name"] for s in report["steps"]] == [
        "preflight",
        "build",
        "backup",
        "rehearsal",
        "migrate",
        "start",
        "smoke",
        "switch",
        "workers",
        "watch",
        "after-switch",
    ]
    assert report["migration_hint"] == {"summary": "nothing that looks breaking", "plan": "", "flagged": []}
    assert (tmp_path / "acme" / "state.json").read_text() == before
    assert not (tmp_path / "acme" / "history.jsonl").exists()


def test_upgrade_refuses_while_another_operation_holds_the_site(ctx: FakeContext, world: World, tmp_path: Path) -> None:
    deployed(tmp_path, world, live=("blue", "v1.0.0"))
    held = ctx.site("acme").lock().acquire(command="sumbg rollback acme")
    try:
        with no_effects(world), pytest.raises(LockHeld, match="running `sumbg rollback acme`"):
            upgrade(ctx, "acme", "v1.1.0")
    finally:
        held.release()


def test_upgrade_refuses_an_interrupted_site(ctx: FakeContext, world: World, tmp_path: Path) -> None:
    deployed(tmp_path, world, live=("blue", "v1.0.0"))
    state = state_of(tmp_path)
    state["operation"] = {"id": "x", "kind": "upgrade", "step": "migrate", "pid": 1, "started_at": "then"}
    write_state_json(tmp_path / "acme", state)
    with no_effects(world), pytest.raises(Interrupted, match="interrupted upgrade .* run `sumbg recover acme` first"):
        upgrade(ctx, "acme", "v1.1.0")


def test_upgrade_refuses_a_site_whose_records_disagree(ctx: FakeContext, world: World, tmp_path: Path) -> None:
    deployed(tmp_path, world, live=("blue", "v1.0.0"))
    world.files["live"] = "green"
    with no_effects(world), pytest.raises(Disagreement, match="upgrade of acme refused: .*live file names green"):
        upgrade(ctx, "acme", "v1.1.0")


@pytest.mark.parametrize(
    ("ref", "kwargs", "message"),
    [
        ("bad..ref", {}, "invalid git ref"),
        ("v1.1.0", {"migrations_both": True}, "give --maintenance or --accept-breaking, not both"),
    ],
)
def test_upgrade_refuses_bad_input(
    ctx: FakeContext, world: World, tmp_path: Path, ref: str, kwargs: dict[str, Any], message: str
) -> None:
    from sumbg.ops.upgrade import MigrationChoices

    deployed(tmp_path, world, live=("blue", "v1.0.0"))
    choices = MigrationChoices(maintenance=True, accept_breaking=True) if kwargs else None
    with no_effects(world), pytest.raises(UsageError, match=message):
        upgrade(ctx, "acme", ref, migrations=choices)


def test_upgrade_to_the_same_sum_core_stops_at_preflight(ctx: FakeContext, world: World, tmp_path: Path) -> None:
    deployed(tmp_path, world, live=("blue", "v1.1.0"))
    record = state_of(tmp_path)
    record["colours"]["blue"]["sum_core"] = "0.7.0"
    write_state_json(tmp_path / "acme", record)
    with no_effects(world), pytest.raises(CheckFailed, match=r"sum-core pin is unchanged \(0.7.0\)"):
        upgrade(ctx, "acme", "v1.1.1")
    finished = history_of(tmp_path)[-1]
    assert (finished["outcome"], finished["failed_step"]) == ("aborted", "preflight")


def test_upgrade_cancelled_at_the_question_changes_nothing(ctx: FakeContext, world: World, tmp_path: Path) -> None:
    deployed(tmp_path, world, live=("blue", "v1.0.0"))
    asked = []
    with no_effects(world), pytest.raises(SumbgError, match="cancelled; nothing was changed"):
        upgrade(ctx, "acme", "v1.1.0", confirm=lambda plan: asked.append(plan.facts["to"]) and False)
    assert asked == ["v1.1.0"]
    assert not (tmp_path / "acme" / "history.jsonl").exists()


# ---------------------------------------------------------------- restore


def test_restore_swaps_the_database_under_the_maintenance_page(ctx: FakeContext, world: World, tmp_path: Path) -> None:
    deployed(tmp_path, world, live=("blue", "v1.0.0"))
    dump = tmp_path / "acme" / "backups" / "acme_20261101T000000Z_v1.0.0.dump"
    dump.write_bytes(b"PGDMP")
    result = backups.restore(ctx, "acme", str(dump), yes=True)
    assert [s["name"] for s in result["steps"]] == ["verify", "safety-backup", "restore", "reopen"]
    assert result["safety_backup"] == "acme_20261127T000000Z_safety-before-restore.dump"
    assert world.effects == [("maintenance", "on"), ("maintenance", "off")]
    assert world.schema_effects == [
        ("terminate", "acme"),
        ("restore", "acme__sumbg_restore", dump.name),
        ("swap-in", "acme__sumbg_restore"),
    ]
    assert world.maintenance is False


def test_restore_of_a_backup_that_does_not_match_its_sha256_is_refused(
    ctx: FakeContext, world: World, tmp_path: Path
) -> None:
    deployed(tmp_path, world, live=("blue", "v1.0.0"))
    dump = tmp_path / "acme" / "backups" / "acme_20261101T000000Z_v1.0.0.dump"
    dump.write_bytes(b"PGDMP")
    dump.with_name(dump.name + ".sha256").write_text("0" * 64 + f"  {dump.name}\n")
    with no_effects(world), pytest.raises(SumbgError, match="does not match its recorded sha256"):
        backups.restore(ctx, "acme", str(dump), yes=True)
    assert world.backups_taken == []


def test_restore_without_yes_asks_and_a_no_changes_nothing(ctx: FakeContext, world: World, tmp_path: Path) -> None:
    deployed(tmp_path, world, live=("blue", "v1.0.0"))
    dump = tmp_path / "acme" / "backups" / "acme_20261101T000000Z_v1.0.0.dump"
    dump.write_bytes(b"PGDMP")
    with no_effects(world), pytest.raises(UsageError, match="pass --yes"):
        backups.restore(ctx, "acme", str(dump), yes=False)
    questions: list[str] = []
    with no_effects(world), pytest.raises(UsageError, match="restore cancelled"):
        backups.restore(ctx, "acme", str(dump), yes=False, confirm=lambda q: questions.append(q) is not None)
    assert questions == [f"Replace acme's database with {dump.name}? A safety backup is taken first"]
    with no_effects(world), pytest.raises(UsageError, match="backup file nope.dump does not exist"):
        backups.restore(ctx, "acme", "nope.dump", yes=True)


# ---------------------------------------------------------------- retire


def test_retire_removes_the_idle_colour_and_records_it(ctx: FakeContext, world: World, tmp_path: Path) -> None:
    deployed(tmp_path, world, live=("blue", "v1.0.0"), idle=("green", "v0.9.0"))
    result = retire.retire(ctx, "acme", min_age=0, force=False)
    assert result["outcome"] == "done"
    assert world.effects == [("remove", "green")]
    state = state_of(tmp_path)
    assert (state["live"], state["previous"], state["colours"]["green"]["status"]) == ("blue", "green", "retired")


def test_retire_refuses_a_young_only_rollback_target_and_does_nothing_without_one(
    ctx: FakeContext, world: World, tmp_path: Path
) -> None:
    deployed(tmp_path, world, live=("blue", "v1.0.0"), idle=("green", "v0.9.0"))
    state = state_of(tmp_path)
    state["colours"]["blue"]["deployed_at"] = "2099-01-01T00:00:00Z"  # went live "just now"
    write_state_json(tmp_path / "acme", state)
    with no_effects(world), pytest.raises(UsageError, match="green is acme's only rollback target"):
        retire.retire(ctx, "acme", min_age=3600, force=False)
    retire.retire(ctx, "acme", min_age=3600, force=True)
    assert world.effects == [("remove", "green")]
    with no_effects(world):
        again = retire.retire(ctx, "acme", min_age=0, force=False)
    assert (again["outcome"], again["reason"]) == ("noop", "green is not running")
