"""Migration safety as real upgrade plans on fakes: the rehearsal on a copy, the policy for a
breaking release, the maintenance window, after-switch migrations, and what a rollback may do.

Each upgrade test asserts the whole sequence of database effects (`schema_effects`: the copy
restored, migrated, its stand-in started and removed, the live database migrated) next to the
traffic effects, so "the live database was never touched" is checked, not assumed.
"""

from __future__ import annotations

import pytest

from sumbg.cli import exit_code_of
from sumbg.errors import BreakingRelease, MigrationFailed, NeedsOperator, UsageError
from sumbg.ops import policy, rollback
from sumbg.ops.rollback import rollback_target
from sumbg.ops.upgrade import MigrationChoices
from sumbg.site.migration_phases_script import pre_switch_targets, waiting_for_switch
from sumbg.site.state import ColourRecord, SiteState

from .fakes import deployed
from .test_unit_switch import ctx, last_finished, state_of, upgrade_to, world  # noqa: F401 (fixtures)

COPY = "acme__sumbg_rehearsal"
BACKUP = "acme_20261127T000000Z_v1.1.0.dump"
REHEARSED = [("restore", COPY, BACKUP), ("rehearsal-web", "v1.0.0", COPY)]
REHEARSAL_GONE = [("rehearsal-web", "removed"), ("drop", COPY)]
SWITCHED = [
    ("remove", "green"),
    ("start", "green", "v1.1.0"),
    ("preview", "green"),
    ("preview", "blue"),
    ("live", "green"),
    ("weights", "green"),
]


# ---------------------------------------------------------------- the policy


def decide(verdict, evidence=(), **flags):
    compat = policy.Compatibility(
        verdict, tuple(evidence), reason="--no-rehearsal" if verdict == "not measured" else ""
    )
    return policy.decide(
        compat,
        maintenance=flags.get("maintenance", False),
        accept_breaking=flags.get("accept_breaking", False),
        slug="acme",
        new_ref="v1.1.0",
        live_ref="v1.0.0",
    )


EVIDENCE = policy.Evidence(
    "GET /", 500, "expected HTTP 200, got 500", "ProgrammingError: column sum_core_lead.message does not exist"
)


def test_a_compatible_release_goes_ahead_plainly():
    decision = decide(policy.COMPATIBLE)
    assert (decision.maintenance, decision.refusal, decision.warnings, decision.breaks_previous) == (False, "", (), "")
    assert decision.record["policy"] == "plain"


def test_a_breaking_release_is_refused_with_the_evidence_and_both_choices():
    decision = decide(policy.BREAKING, [EVIDENCE])
    assert decision.refusal == (
        "v1.1.0's migrations break v1.0.0 (measured on a copy of the database: GET / answered 500 (expected HTTP "
        "200, got 500); the live release logged: ProgrammingError: column sum_core_lead.message does not exist). "
        "Nothing was changed: the live database was never touched. Either `sumbg upgrade acme v1.1.0 "
        "--maintenance` (visitors get the maintenance page, 503 with Retry-After, from migrate until the new "
        "release is confirmed live; the window is measured) or `--accept-breaking` (visitors may get errors from "
        "v1.0.0 until the switch)"
    )
    assert decision.record == {
        "compatibility": {"verdict": "breaking", "evidence": [EVIDENCE.record()]},
        "maintenance": False,
        "accept_breaking": False,
        "policy": "refused",
    }


@pytest.mark.parametrize(
    "flags, maintenance, policy_name",
    [
        ({"maintenance": True}, True, "maintenance"),
        ({"accept_breaking": True}, False, "accept-breaking"),
    ],
)
def test_a_breaking_release_goes_ahead_only_as_the_operator_chose(flags, maintenance, policy_name):
    decision = decide(policy.BREAKING, [EVIDENCE], **flags)
    assert (decision.refusal, decision.maintenance, decision.record["policy"]) == ("", maintenance, policy_name)
    assert decision.breaks_previous.startswith("v1.1.0's migrations break v1.0.0 (measured on a copy")


def test_unmeasured_compatibility_goes_ahead_and_says_so():
    decision = decide(policy.NOT_MEASURED)
    assert decision.refusal == "" and decision.warnings == (
        "compatibility of v1.1.0's migrations with v1.0.0 was not measured (--no-rehearsal)",
    )


def test_rollback_needs_the_database_back_after_a_breaking_release_or_after_switch_migrations():
    assert policy.rollback_needs_restore(ColourRecord.from_json({"ref": "v1.1.0"})) == ""
    assert (
        policy.rollback_needs_restore(
            ColourRecord.from_json({"after_switch_migrations": ["a.0002"], "after_switch": "pending"})
        )
        == ""
    )
    assert (
        policy.rollback_needs_restore(
            ColourRecord.from_json({"after_switch_migrations": ["a.0002"], "after_switch": "ran"})
        )
        == "its after-switch migrations ran (a.0002)"
    )
    assert (
        policy.rollback_needs_restore(ColourRecord.from_json({"breaks_previous": "it drops a column"}))
        == "it drops a column"
    )


def test_error_line_is_the_last_error_the_release_logged():
    log = (
        "2026 INFO gunicorn: Booting\nInternal Server Error: /\nTraceback (most recent call last):\n"
        '  File "x.py", line 1\npsycopg.errors.UndefinedColumn: column "message" does not exist\n'
        "django.db.utils.ProgrammingError: column sum_core_lead.message does not exist\n"
    )
    assert policy.error_line(log) == "django.db.utils.ProgrammingError: column sum_core_lead.message does not exist"
    assert policy.error_line("all fine\n") == ""


# ---------------------------------------------------------------- which migrations wait for the switch


def test_a_marked_migration_and_everything_after_it_wait_for_the_switch():
    pending = [("shop", "0003_add"), ("shop", "0004_drop"), ("blog", "0002_x"), ("shop", "0005_more")]
    children = {
        ("shop", "0003_add"): [("shop", "0004_drop")],
        ("shop", "0004_drop"): [("shop", "0005_more")],
        ("blog", "0002_x"): [],
    }
    waiting = waiting_for_switch(pending, {("shop", "0004_drop")}, children)
    assert waiting == {("shop", "0004_drop"), ("shop", "0005_more")}
    assert pre_switch_targets(pending, waiting) == {"shop": "0003_add", "blog": "0002_x"}
    assert waiting_for_switch(pending, set(), children) == set()


# ---------------------------------------------------------------- upgrades on fakes


def step(result: dict, name: str) -> dict:
    return next(s for s in result["steps"] if s["name"] == name)


def test_a_compatible_release_is_rehearsed_on_a_copy_before_the_live_database(ctx, world, tmp_path):
    deployed(tmp_path, world, live=("blue", "v1.0.0"), idle=("green", "v0.9.0"))
    result = upgrade_to(ctx, world, "v1.1.0")
    assert result["outcome"] == "done"
    assert world.schema_effects == [
        *REHEARSED,
        ("migrate", "copy", "v1.1.0", "all"),
        *REHEARSAL_GONE,
        ("migrate", "live", "v1.1.0", "all"),
    ]
    assert world.effects == SWITCHED
    assert result["rehearsal"]["compatibility"] == {"verdict": "compatible"}
    assert result["rehearsal"]["policy"] == "plain"
    assert "rehearsal" not in state_of(ctx) and world.databases == {"acme"}


def test_a_breaking_release_is_refused_and_nothing_live_is_touched(ctx, world, tmp_path):
    deployed(tmp_path, world, live=("blue", "v1.0.0"), idle=("green", "v0.9.0"))
    world.breaks_live.add(world.release("v1.1.0"))
    with pytest.raises(BreakingRelease) as refused:
        upgrade_to(ctx, world, "v1.1.0")
    assert exit_code_of(refused.value) == 1
    assert "the live release logged: django.db.utils.ProgrammingError" in refused.value.message
    assert world.schema_effects == [*REHEARSED, ("migrate", "copy", "v1.1.0", "all"), *REHEARSAL_GONE]
    assert world.effects == []  # the idle colour (rollback target) is still there
    entry = last_finished(ctx)
    assert (entry["outcome"], entry["failed_step"]) == ("aborted", "rehearsal")
    assert entry["rehearsal"]["policy"] == "refused"
    assert state_of(ctx)["live"] == "blue" and "rehearsal" not in state_of(ctx)


def test_a_breaking_release_with_maintenance_covers_migrate_to_the_confirmed_switch(ctx, world, tmp_path):
    deployed(tmp_path, world, live=("blue", "v1.0.0"), idle=("green", "v0.9.0"))
    world.breaks_live.add(world.release("v1.1.0"))
    result = upgrade_to(ctx, world, "v1.1.0", migrations=MigrationChoices(maintenance=True))
    assert result["outcome"] == "done"
    assert world.effects == [("maintenance", "on"), *SWITCHED[:-1], ("maintenance", "off"), ("weights", "green")]
    assert world.schema_effects[-1] == ("migrate", "live", "v1.1.0", "all")
    assert result["maintenance_seconds"] >= 0 and step(result, "switch")["maintenance_seconds"] >= 0
    record = state_of(ctx)["colours"]["green"]
    assert record["breaks_previous"].startswith("v1.1.0's migrations break v1.0.0")
    with pytest.raises(UsageError) as refused:
        rollback.rollback(ctx, "acme")
    assert refused.value.message.startswith(
        "rolling back from green (v1.1.0) to blue (v1.0.0) needs --restore-db: v1.1.0's migrations break v1.0.0"
    )


def test_a_migration_failing_in_the_rehearsal_never_reaches_the_live_database(ctx, world, tmp_path):
    deployed(tmp_path, world, live=("blue", "v1.0.0"), idle=("green", "v0.9.0"))
    world.failing_migrations.add(world.release("v1.1.0"))
    with pytest.raises(MigrationFailed) as failed:
        upgrade_to(ctx, world, "v1.1.0")
    assert failed.value.message == (
        "the migrations of sum-acme:v1.1.0 failed in the rehearsal on a copy of the database; the live database "
        "was never touched"
    )
    assert world.schema_effects == [*REHEARSED, ("migrate", "copy", "v1.1.0", "all"), *REHEARSAL_GONE]
    assert world.effects == [] and world.databases == {"acme"}


def test_after_switch_migrations_run_once_the_watch_passed(ctx, world, tmp_path):
    deployed(tmp_path, world, live=("blue", "v1.0.0"), idle=("green", "v0.9.0"))
    image = world.release("v1.1.0")
    world.pending[image] = (["sum_core.0003_add", "sum_core.0004_drop"], ["sum_core.0004_drop"])
    result = upgrade_to(ctx, world, "v1.1.0")
    assert world.schema_effects == [
        *REHEARSED,
        ("migrate", "copy", "v1.1.0", "before-switch"),
        ("migrate", "copy", "v1.1.0", "all"),
        *REHEARSAL_GONE,
        ("migrate", "live", "v1.1.0", "before-switch"),
        ("migrate", "live", "v1.1.0", "all"),
    ]
    steps = [step["name"] for step in last_finished(ctx)["steps"]]
    assert steps[-3:] == ["workers", "watch", "after-switch"]
    assert step(result, "after-switch")["migrations"] == ["sum_core.0004_drop"]
    record = state_of(ctx)["colours"]["green"]
    assert (record["after_switch_migrations"], record["after_switch"]) == (["sum_core.0004_drop"], "ran")
    state = state_of(ctx)
    with pytest.raises(UsageError, match="needs --restore-db: its after-switch migrations ran"):
        rollback_target(SiteState.from_json(state), "acme")
    assert rollback_target(SiteState.from_json(state), "acme", restore_db=True) == "blue"


@pytest.mark.parametrize(
    "choices, database_mb, reason",
    [
        (MigrationChoices(rehearsal=False), 5.0, "--no-rehearsal"),
        (MigrationChoices(), 4096.0, "the database is 4096 MB, above [migrations] rehearsal_max_mb = 2048"),
    ],
)
def test_a_skipped_rehearsal_says_why_and_migrates_the_live_database(
    ctx, world, tmp_path, choices, database_mb, reason
):
    deployed(tmp_path, world, live=("blue", "v1.0.0"), idle=("green", "v0.9.0"))
    world.database_mb = database_mb
    result = upgrade_to(ctx, world, "v1.1.0", migrations=choices)
    assert world.schema_effects == [("migrate", "live", "v1.1.0", "all")]
    assert result["rehearsal"]["compatibility"] == {"verdict": "not measured", "reason": reason}
    assert result["rehearsal"]["outcome"] == "skipped"


def test_a_breaking_release_failing_its_watch_is_covered_by_the_maintenance_page_not_flipped_back(ctx, world, tmp_path):
    deployed(tmp_path, world, live=("blue", "v1.0.0"), idle=("green", "v0.9.0"))
    image = world.release("v1.1.0")
    world.breaks_live.add(image)
    world.turns_unhealthy = {image: 1}  # passes the switch's confirmation, then fails
    with pytest.raises(NeedsOperator) as stuck:
        upgrade_to(ctx, world, "v1.1.0", migrations=MigrationChoices(maintenance=True))
    assert exit_code_of(stuck.value) == 3
    assert (
        "blue (v1.0.0) cannot serve the schema green (v1.1.0) migrated to, so traffic was not flipped back"
        in stuck.value.message
    )
    assert "sumbg rollback acme --restore-db" in stuck.value.message
    assert world.effects == [
        ("maintenance", "on"),
        *SWITCHED[:-1],
        ("maintenance", "off"),
        ("weights", "green"),
        ("maintenance", "on"),
    ]
    state = state_of(ctx)
    assert state["live"] == "green" and state["colours"]["green"]["outcome"] == "failed"
    reverted = last_finished(ctx)["reverted"]
    assert (reverted["flipped"], reverted["maintenance"]) == (False, True)
    assert reverted["reason"].startswith("3 probes in a row failed, the last: /health/ through Caddy: HTTP 503")
    with pytest.raises(UsageError, match="needs --restore-db"):
        rollback_target(SiteState.from_json(state), "acme")
