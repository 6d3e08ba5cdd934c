"""The one flip, the watch, rollback, failed upgrades and recover, run as real plans on fakes.

Each test asserts the whole outcome: the ordered live/preview file writes and
container effects, the state records, and the exit code of the error raised.
"""

from __future__ import annotations

import json

import pytest

from sumbg.adapters import build
from sumbg.adapters.docker import ContainerState
from sumbg.cli import exit_code_of
from sumbg.config import WatchSettings
from sumbg.errors import CheckFailed, NeedsOperator, UsageError
from sumbg.ops import rollback
from sumbg.ops import upgrade as operations
from sumbg.ops.agreement import compare
from sumbg.ops.executor import Run
from sumbg.ops.recover import recover
from sumbg.ops.rollback import rollback_target
from sumbg.ops.switch import FlipFailed, switch_live
from sumbg.ops.watch import INJECT_PROBE_FAILURES, watch_verdict
from sumbg.site.state import SiteState

from .fakes import FakeContext, Web, World, deployed


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
def ctx(tmp_path, world) -> FakeContext:
    return FakeContext(tmp_path, world)


def state_of(ctx: FakeContext) -> dict:
    return json.loads((ctx.host.root / "acme" / "state.json").read_text())


def strip_times(state: dict) -> dict:
    """state.json without the timestamps that differ on every run."""
    colours = {
        colour: {k: v for k, v in record.items() if k not in ("deployed_at", "failed_at")}
        for colour, record in state["colours"].items()
    }
    return {"live": state["live"], "previous": state["previous"], "colours": colours, "operation": state["operation"]}


def last_finished(ctx: FakeContext) -> dict:
    lines = (ctx.host.root / "acme" / "history.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if json.loads(line).get("event") == "finished"][-1]


def upgrade_to(
    ctx: FakeContext,
    world: World,
    ref: str,
    *,
    watch: float = 0.05,
    migrations: operations.MigrationChoices | None = None,
) -> dict:
    site = ctx.site("acme")
    state = site.records.load_state()
    image_tag = world.release(ref)
    version = world.releases[image_tag]
    image = build.ImageSpec(
        tag=image_tag,
        labels={"sumbg.slug": "acme", "sumbg.ref": ref, "sumbg.commit": version["git_sha"], "sumbg.sum-core": "0.7.0"},
    )
    live = state.live
    assert live is not None and state.live_record is not None
    facts = operations.UpgradeFacts(
        live=live,
        idle="green" if live == "blue" else "blue",
        live_record=state.live_record,
        image=image,
        live_core="0.6.3",
        new_core="0.7.0",
    )
    plan = operations.upgrade_plan(
        ctx, site, facts, allow_same_core=False, watch=watch, migrations=migrations or operations.MigrationChoices()
    )
    return ctx.execute(plan, site, f"upgrade acme {ref}")


# ---------------------------------------------------------------- the one flip


def flip(ctx: FakeContext, to: str):
    site = ctx.site("acme")
    run = Run(site.records, ctx.reporter, "test")
    return run, switch_live(ctx, site, run, to)


def test_flip_moves_traffic_and_the_records(ctx, world, tmp_path):
    deployed(tmp_path, world, live=("blue", "v1.0.0"), idle=("green", "v1.1.0"))
    run, result = flip(ctx, "green")
    assert (result.to, result.came_from) == ("green", "blue")
    assert world.file_writes() == [("preview", "blue"), ("live", "green")]
    assert strip_times(state_of(ctx)) == {
        "live": "green",
        "previous": "blue",
        "operation": None,
        "colours": {
            "blue": {
                "image": "sum-acme:v1.0.0",
                "ref": "v1.0.0",
                "commit": "v1.0.0-sha",
                "status": "idle",
                "outcome": "healthy",
            },
            "green": {
                "image": "sum-acme:v1.1.0",
                "ref": "v1.1.0",
                "commit": "v1.1.0-sha",
                "status": "live",
                "outcome": "healthy",
            },
        },
    }


def test_flip_whose_target_does_not_answer_puts_the_previous_colour_back(ctx, world, tmp_path):
    deployed(tmp_path, world, live=("blue", "v1.0.0"), idle=("green", "v1.1.0"))
    world.webs["green"].running = False  # stopped behind sumbg's back: Caddy falls back to blue
    with pytest.raises(FlipFailed) as failed:
        flip(ctx, "green")
    assert exit_code_of(failed.value) == 1
    assert "traffic is back on blue (v1.0.0), confirmed through Caddy" in failed.value.message
    assert world.file_writes() == [("preview", "blue"), ("live", "green"), ("live", "blue"), ("preview", "green")]
    state = strip_times(state_of(ctx))
    assert (state["live"], state["previous"]) == ("blue", "green")
    assert state["colours"]["green"]["outcome"] == "failed"
    assert state["colours"]["green"]["reason"].startswith("green did not answer as v1.1.0 through Caddy")


def test_flip_whose_way_back_fails_too_needs_an_operator(ctx, world, tmp_path):
    deployed(tmp_path, world, live=("blue", "v1.0.0"), idle=("green", "v1.1.0"))
    world.broken = {"sum-acme:v1.0.0", "sum-acme:v1.1.0"}
    with pytest.raises(NeedsOperator) as failed:
        flip(ctx, "green")
    assert exit_code_of(failed.value) == 3
    assert "putting blue back did not confirm either" in failed.value.message
    assert "run `sumbg recover acme`" in failed.value.message
    assert world.file_writes() == [("preview", "blue"), ("live", "green"), ("live", "blue"), ("preview", "green")]
    assert state_of(ctx)["live"] == "blue"


# ---------------------------------------------------------------- rollback target policy


def test_rollback_target_is_the_other_colour_when_healthy():
    state = {"live": "green", "colours": {"green": {"ref": "v2"}, "blue": {"ref": "v1", "outcome": "healthy"}}}
    assert rollback_target(SiteState.from_json(state), "acme") == "blue"


@pytest.mark.parametrize(
    "state, kwargs, message",
    [
        ({"live": None, "colours": {}}, {}, "site acme was never deployed; nothing to roll back"),
        (
            {"live": "blue", "colours": {"blue": {"ref": "v1"}}},
            {},
            "site acme has nothing to roll back to (green holds no release)",
        ),
        (
            {
                "live": "blue",
                "colours": {
                    "blue": {"ref": "v1"},
                    "green": {"ref": "v2", "outcome": "failed", "reason": "failed its watch: 3 probes"},
                },
            },
            {},
            "site acme has no healthy release to roll back to: green (v2) failed (failed its watch: 3 probes); the live "
            "blue (v1) is the last healthy one. To flip to it anyway: sumbg rollback acme --to green --force",
        ),
        (
            {"live": "blue", "colours": {"blue": {"ref": "v1"}, "green": {"ref": "v2"}}},
            {"force": True},
            "--force needs --to COLOUR: it only flips to a release you name",
        ),
        (
            {"live": "blue", "colours": {"blue": {"ref": "v1"}, "green": {"ref": "v2"}}},
            {"to": "blue"},
            "blue (v1) is already live on site acme",
        ),
    ],
)
def test_rollback_target_refusals(state, kwargs, message):
    with pytest.raises(UsageError) as refused:
        rollback_target(SiteState.from_json(state), "acme", **kwargs)
    assert (refused.value.message, exit_code_of(refused.value)) == (message, 2)


def test_forced_rollback_target_may_be_a_failed_release():
    state = {"live": "blue", "colours": {"blue": {"ref": "v1"}, "green": {"ref": "v2", "outcome": "failed"}}}
    assert rollback_target(SiteState.from_json(state), "acme", to="green", force=True) == "green"


# ---------------------------------------------------------------- watch policy

POLICY = WatchSettings(
    interval=1,
    consecutive_failures=3,
    max_failed_ratio=0.3,
    min_probes=10,
    max_visitor_5xx=10,
    max_visitor_5xx_ratio=0.05,
)


@pytest.mark.parametrize(
    "probes, visitors, verdict",
    [
        ([None, "x", None, None], (100, 0), None),
        (["x"], (1, 0), None),
        ([None, "a", "b"], None, None),
        ([None, "a", "b", "c"], None, "3 probes in a row failed, the last: c"),
        (
            [None, "a", None, "b", None, None, "c", None, "d", None],
            None,
            "4 of 10 probes failed (more than 30%), the last: d",
        ),
        ([None, "a", None, "b", None, None, "c", None, "d"], None, None),  # fewer than min_probes
        ([None] * 5, (100, 9), None),
        ([None] * 5, (1000, 12), None),  # 1.2%: a few unlucky visitors on a busy site
        ([None] * 5, (100, 12), "Caddy answered 12 of 100 requests for the site with 5xx (limit 10 and 5%)"),
    ],
)
def test_watch_verdict(probes, visitors, verdict):
    assert watch_verdict(POLICY, probes, visitors) == verdict


# ---------------------------------------------------------------- upgrade failure paths


def test_upgrade_that_passes_its_watch(ctx, world, tmp_path):
    deployed(tmp_path, world, live=("blue", "v1.0.0"), idle=("green", "v0.9.0"))
    result = upgrade_to(ctx, world, "v1.1.0")
    assert result["outcome"] == "done"
    assert world.effects == [
        ("remove", "green"),
        ("start", "green", "v1.1.0"),
        ("preview", "green"),
        ("preview", "blue"),
        ("live", "green"),
        ("weights", "green"),
    ]
    state = strip_times(state_of(ctx))
    assert (state["live"], state["previous"]) == ("green", "blue")
    assert state["colours"]["green"] == {
        "image": "sum-acme:v1.1.0",
        "ref": "v1.1.0",
        "commit": "v1.1.0-sha",
        "sum_core": "0.7.0",
        "status": "live",
        "outcome": "healthy",
        "backup": "acme_20261127T000000Z_v1.1.0.dump",
    }
    assert result["watch"]["failed_probes"] == 0 and result["watch"]["visitor_5xx"] == 0


def test_watch_revert_then_rollback_goes_to_the_older_healthy_release(ctx, world, tmp_path):
    deployed(tmp_path, world, live=("blue", "v1.0.0"), idle=("green", "v0.9.0"))
    world.release("v1.5.0")
    world.turns_unhealthy = {"sum-acme:v1.5.0": 1}  # passes the switch's confirmation, then fails
    with pytest.raises(CheckFailed) as failed:
        upgrade_to(ctx, world, "v1.5.0")
    assert exit_code_of(failed.value) == 1
    assert failed.value.message.startswith(
        "after the switch the site failed its watch (3 probes in a row failed, the last: /health/ through Caddy: "
        "HTTP 503"
    )
    assert "rolled back to blue (v1.0.0) by itself" in failed.value.message
    assert world.effects == [
        ("remove", "green"),
        ("start", "green", "v1.5.0"),
        ("preview", "green"),
        ("preview", "blue"),
        ("live", "green"),
        ("weights", "green"),  # the switch
        ("preview", "green"),
        ("live", "blue"),
        ("weights", "blue"),  # the watch's revert
        ("remove", "green"),
        ("start", "green", "v0.9.0"),
        ("preview", "green"),  # the rollback target back
    ]
    state = strip_times(state_of(ctx))
    assert (state["live"], state["previous"]) == ("blue", "green")
    assert state["colours"]["green"]["ref"] == "v0.9.0" and state["colours"]["green"]["status"] == "idle"
    entry = last_finished(ctx)
    assert entry["outcome"] == "aborted" and entry["reverted"]["reason"].startswith("3 probes in a row failed")
    assert entry["rollback_target"]["restored"] is True and entry["rollback_target"]["ref"] == "v0.9.0"
    assert [f["outcome"] for f in entry["flips"]] == ["confirmed", "confirmed"]

    world.effects.clear()
    result = rollback.rollback(ctx, "acme")
    assert (result["to"], result["to_colour"]) == ("v0.9.0", "green")
    assert world.file_writes() == [("preview", "blue"), ("live", "green")]


def test_watch_revert_with_no_older_release_leaves_rollback_refusing(ctx, world, tmp_path):
    deployed(tmp_path, world, live=("blue", "v1.0.0"))
    world.release("v1.5.0")
    world.turns_unhealthy = {"sum-acme:v1.5.0": 1}  # passes the switch's confirmation, then fails
    with pytest.raises(CheckFailed):
        upgrade_to(ctx, world, "v1.5.0")
    state = strip_times(state_of(ctx))
    assert (state["live"], state["previous"]) == ("blue", "green")
    assert state["colours"]["green"]["outcome"] == "failed"
    assert state["colours"]["green"]["reason"].startswith("failed its watch: 3 probes in a row failed")

    world.effects.clear()
    with pytest.raises(UsageError) as refused:
        rollback.rollback(ctx, "acme")
    assert exit_code_of(refused.value) == 2
    assert "has no healthy release to roll back to: green (v1.5.0) failed" in refused.value.message
    assert world.effects == []
    forced = rollback.rollback(ctx, "acme", to="green", force=True, dry_run=True)
    assert (forced["to"], forced["forced"], forced["dry_run"]) == ("v1.5.0", True, True)
    assert world.effects == []


def test_one_isolated_failed_probe_does_not_revert(ctx, world, tmp_path, monkeypatch):
    deployed(tmp_path, world, live=("blue", "v1.0.0"))
    monkeypatch.setenv(INJECT_PROBE_FAILURES, "1")
    result = upgrade_to(ctx, world, "v1.1.0")
    assert result["outcome"] == "done"
    assert result["watch"]["failed_probes"] == 1
    assert state_of(ctx)["live"] == "green" and state_of(ctx)["colours"]["green"]["outcome"] == "healthy"


def test_two_failed_probes_in_a_row_do_not_revert_but_three_do(ctx, world, tmp_path, monkeypatch):
    deployed(tmp_path, world, live=("blue", "v1.0.0"))
    monkeypatch.setenv(INJECT_PROBE_FAILURES, "2")
    assert upgrade_to(ctx, world, "v1.1.0")["watch"]["failed_probes"] == 2
    deployed(tmp_path, world, live=("blue", "v1.0.0"))
    monkeypatch.setenv(INJECT_PROBE_FAILURES, "3")
    with pytest.raises(CheckFailed) as failed:
        upgrade_to(ctx, world, "v1.1.0")
    assert "3 probes in a row failed, the last: injected failure" in failed.value.message
    assert state_of(ctx)["live"] == "blue"


def test_visitor_5xx_during_the_watch_reverts(ctx, world, tmp_path):
    deployed(tmp_path, world, live=("blue", "v1.0.0"))
    world.visitors = None  # no metrics endpoint: the probes decide alone
    assert upgrade_to(ctx, world, "v1.1.0")["watch"]["visitor_5xx"] is None

    deployed(tmp_path, world, live=("blue", "v1.0.0"))
    counts = iter([(100, 0)] + [(200, 40)] * 1000)  # Caddy's counters before and during the watch
    world.visitors = lambda: next(counts)
    with pytest.raises(CheckFailed) as failed:
        upgrade_to(ctx, world, "v1.1.0")
    assert "Caddy answered 40 of 100 requests for the site with 5xx" in failed.value.message
    assert last_finished(ctx)["watch"]["visitor_5xx"] == 40


def test_upgrade_failing_at_smoke_starts_the_previous_release_again(ctx, world, tmp_path):
    deployed(tmp_path, world, live=("blue", "v1.0.0"), idle=("green", "v0.9.0"))
    world.release("v1.3.0")
    world.broken = {"sum-acme:v1.3.0"}
    with pytest.raises(CheckFailed) as failed:
        upgrade_to(ctx, world, "v1.3.0")
    assert failed.value.step == "start"
    assert world.effects == [
        ("remove", "green"),
        ("start", "green", "v1.3.0"),
        ("preview", "green"),
        ("remove", "green"),  # the new colour
        ("start", "green", "v0.9.0"),
        ("preview", "green"),
    ]  # the rollback target
    state = strip_times(state_of(ctx))
    assert (state["live"], state["previous"]) == ("blue", "green")
    assert state["colours"]["green"]["ref"] == "v0.9.0"
    assert [u["what"] for u in last_finished(ctx)["undo"]] == [
        "remove the new colour sum-acme-green",
        "start the previous release v0.9.0 again in green",
    ]
    world.effects.clear()
    assert rollback.rollback(ctx, "acme")["steps"][0]["outcome"] == "skipped"  # instant: green is running
    assert world.file_writes() == [("preview", "blue"), ("live", "green")]


def test_upgrade_whose_switch_does_not_confirm(ctx, world, tmp_path):
    deployed(tmp_path, world, live=("blue", "v1.0.0"))
    world.release("v1.1.0")
    world.turns_unhealthy = {"sum-acme:v1.1.0": 0}
    with pytest.raises(FlipFailed) as failed:
        upgrade_to(ctx, world, "v1.1.0", watch=0)
    assert exit_code_of(failed.value) == 1 and failed.value.step == "switch"
    assert world.effects == [
        ("start", "green", "v1.1.0"),
        ("preview", "green"),
        ("preview", "blue"),
        ("live", "green"),
        ("live", "blue"),
        ("preview", "green"),
        ("remove", "green"),
    ]
    assert state_of(ctx)["live"] == "blue"


def test_rollback_refuses_when_caddy_and_records_disagree(ctx, world, tmp_path):
    deployed(tmp_path, world, live=("blue", "v1.0.0"), idle=("green", "v1.1.0"))
    world.files["live"] = "green"  # someone edited Caddy's live file by hand
    with pytest.raises(Exception) as refused:
        rollback.rollback(ctx, "acme")
    assert exit_code_of(refused.value) == 1
    assert refused.value.message == (
        "rollback of acme refused: site acme's records and what serves it disagree: state.json says blue is "
        "live but Caddy's live file names green; Caddy answers with v1.1.0 (v1.1.0-sha) but state.json records "
        "v1.0.0 (v1.0.0-sha) as live; run `sumbg recover acme` first"
    )


# ---------------------------------------------------------------- agreement (pure)


def web(image: str, running: bool = True) -> ContainerState:
    return ContainerState(
        name="w", running=running, status="running" if running else "exited", exit_code=None, image=image
    )


def test_agreement_of_a_consistent_site():
    state = {
        "live": "blue",
        "operation": None,
        "colours": {
            "blue": {"image": "i:1", "ref": "v1", "commit": "c1"},
            "green": {"image": "i:0", "ref": "v0", "status": "idle"},
        },
    }
    agreed = compare(
        SiteState.from_json(state),
        live_file="blue",
        preview_file="green",
        site_file_exists=True,
        containers={"blue": web("i:1"), "green": web("i:0")},
        answering={"build": "v1", "git_sha": "c1"},
        maintenance=False,
    )
    assert agreed.describe() == {"agree": True, "problems": [], "notes": []}


def test_agreement_lists_every_disagreement():
    state = {
        "live": "blue",
        "operation": None,
        "colours": {
            "blue": {"image": "i:1", "ref": "v1", "commit": "c1"},
            "green": {"image": "i:0", "ref": "v0", "status": "idle", "outcome": "failed", "reason": "failed its watch"},
        },
    }
    agreed = compare(
        SiteState.from_json(state),
        live_file="green",
        preview_file="blue",
        site_file_exists=False,
        containers={"blue": web("i:2"), "green": web("i:0", running=False)},
        answering={"build": "v0", "git_sha": "c0"},
        maintenance=True,
    )
    assert agreed.describe() == {
        "agree": False,
        "problems": [
            "state.json says blue is live but Caddy's live file names green",
            "the edge Caddy has no site file for it",
            "the live colour's web runs i:2 but state.json records i:1",
            "Caddy answers with v0 (c0) but state.json records v1 (c1) as live",
        ],
        "notes": [
            "state.json keeps green (v0) as the rollback target but its web container is exited: a rollback "
            "would start it first",
            "green holds v0, recorded as failed: failed its watch",
            "Caddy's preview file names the live colour",
            "the maintenance page is on with no operation running",
        ],
    }


# ---------------------------------------------------------------- recover


def test_recover_repairs_an_interrupted_database_swap_and_routes_to_the_recorded_live(ctx, world, tmp_path):
    deployed(tmp_path, world, live=("blue", "v1.0.0"), idle=("green", "v1.1.0"))
    world.databases = {"acme__sumbg_old", "acme__sumbg_restore"}  # killed between the two renames
    world.maintenance = True
    world.files["live"] = "green"  # and mid-flip
    state = json.loads((tmp_path / "acme" / "state.json").read_text())
    state["operation"] = {"kind": "rollback", "step": "restore", "pid": 1, "started_at": "x"}
    (tmp_path / "acme" / "state.json").write_text(json.dumps(state))

    result = recover(ctx, "acme")
    assert result["outcome"] == "done"
    assert world.databases == {"acme"}
    assert world.maintenance is False
    assert world.effects == [
        ("preview", "blue"),
        ("maintenance", "off"),
        ("preview", "green"),
        ("live", "blue"),
        ("weights", "blue"),
        ("preview", "green"),
    ]
    state = strip_times(state_of(ctx))
    assert (state["live"], state["previous"], state["operation"]) == ("blue", "green", None)
    assert state["colours"]["green"]["status"] == "idle"


def test_recover_with_no_healthy_colour_needs_an_operator(ctx, world, tmp_path):
    deployed(tmp_path, world, live=("blue", "v1.0.0"))
    world.webs["blue"] = Web("sum-acme:v1.0.0", running=False)
    with pytest.raises(NeedsOperator) as failed:
        recover(ctx, "acme")
    assert exit_code_of(failed.value) == 3
    assert failed.value.message.startswith("neither colour of acme is running and healthy")
    assert world.file_writes() == []


def test_recover_after_a_crash_mid_upgrade_puts_the_displaced_rollback_target_back(ctx, world, tmp_path):
    deployed(tmp_path, world, live=("blue", "v1.0.0"), idle=("green", "v0.9.0"))
    world.release("v1.1.0")
    # Killed right after the switch wrote the live file: green runs the candidate v1.1.0,
    # the rollback target v0.9.0 it displaced is only in state.json.
    state = json.loads((tmp_path / "acme" / "state.json").read_text())
    displaced = state["colours"]["green"]
    state["displaced"] = {"colour": "green", "record": displaced}
    state["colours"]["green"] = world.record("sum-acme:v1.1.0", status="candidate")
    state["operation"] = {"kind": "upgrade", "step": "switch", "pid": 1, "started_at": "x"}
    (tmp_path / "acme" / "state.json").write_text(json.dumps(state))
    world.webs["green"] = Web("sum-acme:v1.1.0")
    world.files.update({"live": "green", "preview": "blue"})

    result = recover(ctx, "acme")
    assert result["rollback_target"] == {
        "restored": True,
        "ref": "v0.9.0",
        "colour": "green",
        "seconds": result["rollback_target"]["seconds"],
    }
    assert world.effects == [
        ("preview", "blue"),
        ("preview", "green"),
        ("live", "blue"),
        ("weights", "blue"),
        ("preview", "green"),
        ("remove", "green"),
        ("start", "green", "v0.9.0"),
        ("preview", "green"),
    ]
    state = strip_times(state_of(ctx))
    assert (state["live"], state["previous"], state["operation"]) == ("blue", "green", None)
    assert state["colours"]["green"] == {
        "image": "sum-acme:v0.9.0",
        "ref": "v0.9.0",
        "commit": "v0.9.0-sha",
        "status": "idle",
        "outcome": "healthy",
    }
    assert "displaced" not in state_of(ctx)
