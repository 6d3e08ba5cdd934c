"""Events, notifications and hooks: the events a history line stands for (pure), delivery with
retries against a deadline, events.jsonl's undelivered view, the [[notify]] and [hooks] settings,
and whole operations on the fakes (what each target receives, what each hook is told, what a
failing hook stops or leaves standing)."""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from sumbg.adapters.notify import DeliveryFailed, Message
from sumbg.cli import exit_code_of
from sumbg.config import HookSettings, NotifyTarget, parse_host, parse_site, render_site_toml
from sumbg.config.notify import FAILURE_EVENTS, selected
from sumbg.errors import CheckFailed, ConfigError, HookFailed, SumbgError, UsageError
from sumbg.ops import offsite, rollback
from sumbg.ops.events import (
    Delivery,
    DeliveryPolicy,
    EventLog,
    deliver,
    events_of,
    fleet_event,
    message_of,
    new_event,
)
from sumbg.ops.notify import send_test

from .fakes import FakeContext, World, deployed, site_config
from .test_unit_switch import last_finished, upgrade_to

# ---------------------------------------------------------------- the events of a history line

STARTED = {
    "event": "started",
    "id": "op1",
    "operation": "upgrade",
    "command": "upgrade acme v1.5.0",
    "plan": ["preflight", "build", "switch", "watch"],
    "from": "v1.1.0",
    "to": "v1.5.0",
    "from_colour": "green",
    "to_colour": "blue",
}
FINISHED = {
    **{key: STARTED[key] for key in ("id", "operation", "from", "to", "from_colour", "to_colour")},
    "event": "finished",
    "outcome": "done",
    "seconds": 41.5,
    "steps": [{"name": "preflight", "seconds": 0.1, "outcome": "ok"}, {"name": "switch", "seconds": 0.2}],
}
REVERTED = {
    **FINISHED,
    "outcome": "aborted",
    "failed_step": "watch",
    "error": {
        "error": "CheckFailed",
        "message": "after the switch the site failed its watch (3 probes in a row failed, the last: /health/ "
        "through Caddy: HTTP 503); rolled back to green (v1.1.0) by itself in 0.012s",
    },
    "reverted": {
        "reason": "3 probes in a row failed, the last: /health/ through Caddy: HTTP 503",
        "flip_seconds": 0.01,
    },
    "watch": {"probes": 25, "failed_probes": 3, "visitor_requests": 80, "visitor_5xx": 2},
}


def names(entry: dict) -> list[tuple[str, str]]:
    return [(e["event"], e["outcome"]) for e in events_of(entry, site="acme", host="h")]


def test_an_upgrade_starts_and_succeeds() -> None:
    [started] = events_of(STARTED, site="acme", host="h")
    assert {k: v for k, v in started.items() if k not in ("id", "at")} == {
        "schema": 1,
        "event": "upgrade.started",
        "outcome": "started",
        "host": "h",
        "site": "acme",
        "operation": "upgrade",
        "history_id": "op1",
        "from": {"ref": "v1.1.0", "colour": "green"},
        "to": {"ref": "v1.5.0", "colour": "blue"},
        "steps": ["preflight", "build", "switch", "watch"],
        "summary": "acme: upgrade v1.1.0 -> v1.5.0 started",
    }
    [done] = events_of(FINISHED, site="acme", host="h")
    assert (done["event"], done["outcome"], done["seconds"], done["steps"]) == (
        "upgrade.succeeded",
        "succeeded",
        41.5,
        {"preflight": 0.1, "switch": 0.2},
    )
    assert (done["reason"], done["step"], done["evidence"]) == (None, None, None)


def test_a_revert_by_the_watch_is_one_reverted_event_with_its_reason() -> None:
    [event] = events_of(REVERTED, site="acme", host="h")
    assert (event["event"], event["outcome"], event["step"]) == ("upgrade.reverted", "reverted", "watch")
    assert event["reason"] == "3 probes in a row failed, the last: /health/ through Caddy: HTTP 503"
    assert event["watch"]["failed_probes"] == 3 and event["flip_seconds"] == 0.01
    assert event["summary"] == (
        "acme: the upgrade v1.1.0 -> v1.5.0 was reverted by the watch after the switch: 3 probes in a row failed, "
        "the last: /health/ through Caddy: HTTP 503; traffic is back on green (v1.1.0)"
    )
    assert message_of(event).text == (
        f"sumbg on h: {event['summary']}. It took 41.5s. The watch made 25 probes, 3 failed; visitors: 2 5xx of 80 "
        "requests. History id op1 (`sumbg history acme`)."
    )


def test_a_watch_that_could_not_flip_back_is_a_failure_for_an_operator() -> None:
    covered = {**REVERTED, "outcome": "needs-operator", "reverted": {"reason": "r", "flipped": False}}
    assert names(covered) == [("upgrade.failed", "needs-operator")]


def test_a_failure_says_its_step_and_an_excerpt_of_the_evidence() -> None:
    tail = "\n".join(f"line {n}" for n in range(40))
    failed = {
        **FINISHED,
        "outcome": "aborted",
        "failed_step": "smoke",
        "error": {"error": "CheckFailed", "message": "smoke check GET / failed", "output_tail": tail},
    }
    [event] = events_of(failed, site="acme", host="h")
    assert (event["event"], event["step"], event["reason"]) == ("upgrade.failed", "smoke", "smoke check GET / failed")
    assert event["evidence"] == "\n".join(f"line {n}" for n in range(20, 40))
    assert event["summary"] == "acme: upgrade v1.1.0 -> v1.5.0 failed at step smoke: smoke check GET / failed"


def test_other_operations_end_in_their_own_events_and_only_an_upgrade_says_it_started() -> None:
    assert names({**STARTED, "operation": "rollback"}) == []
    assert names({**FINISHED, "operation": "rollback"}) == [("rollback.succeeded", "succeeded")]
    assert names({"event": "finished", "id": "x", "operation": "backup", "outcome": "aborted", "error": {}}) == [
        ("backup.failed", "failed")
    ]
    assert names({"event": "noop", "operation": "retire", "reason": "blue is not running"}) == []
    cert = {
        "event": "finished",
        "id": "x",
        "operation": "init",
        "outcome": "aborted",
        "failed_step": "health",
        "error": {"error": "CertificateFailed", "message": "the edge could not get a TLS certificate for a.example"},
    }
    assert names(cert) == [("init.failed", "failed"), ("certificate.failed", "failed")]
    hooked = {**FINISHED, "hooks": [{"hook": "post_switch", "outcome": "failed", "reason": "exited 1"}]}
    assert names(hooked) == [("upgrade.succeeded", "succeeded"), ("hook.failed", "failed")]


def test_a_fleet_run_is_one_event_with_each_site() -> None:
    document = {
        "id": "run1",
        "core": "0.8.0",
        "outcome": "stopped",
        "unreachable": {},
        "moves": [
            {"site": "a", "state": "upgraded", "from_ref": "v1", "to_ref": "v2", "reason": None, "seconds": 40.0},
            {"site": "b", "state": "failed", "from_ref": "v1", "to_ref": "v2", "reason": "smoke", "seconds": 9.0},
            {"site": "c", "state": "not-tried", "from_ref": "v1", "to_ref": "v2", "reason": None, "seconds": None},
        ],
    }
    event = fleet_event(document, 1, host="ctl")
    assert (event["event"], event["site"], event["history_id"]) == ("fleet.failed", None, "run1")
    assert event["summary"] == "fleet upgrade to sum-core 0.8.0: 1 failed, 1 not-tried, 1 upgraded"
    assert [s["state"] for s in event["fleet"]["sites"]] == ["upgraded", "failed", "not-tried"]
    assert fleet_event({**document, "moves": document["moves"][:1]}, 0, host="ctl")["event"] == "fleet.succeeded"


def test_groups_and_names_select_events() -> None:
    assert selected(("failures",), "upgrade.reverted") and selected(("failures",), "backup.failed")
    assert not selected(("failures",), "upgrade.succeeded") and not selected(("failures",), "upgrade.started")
    assert selected(("upgrade.*",), "upgrade.started") and not selected(("upgrade.*",), "rollback.succeeded")
    assert selected(("all",), "retire.succeeded") and selected(("rollback.succeeded",), "rollback.succeeded")
    assert "fleet.failed" in FAILURE_EVENTS and "hook.failed" in FAILURE_EVENTS


# ---------------------------------------------------------------- delivery


class Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class Flaky:
    """Refuses the first `refusals` attempts; each attempt takes `takes` seconds of the clock."""

    def __init__(self, clock: Clock, refusals: int, takes: float = 0.0) -> None:
        self.clock, self.refusals, self.takes = clock, refusals, takes
        self.timeouts: list[float] = []

    def send(self, target: NotifyTarget, message: Message, timeout: float) -> None:
        self.timeouts.append(timeout)
        self.clock.now += min(self.takes, timeout)
        if len(self.timeouts) <= self.refusals:
            raise DeliveryFailed(f"{target.label}: connection refused")


TARGET = NotifyTarget(name="ops", webhook_url="http://127.0.0.1:9/hook")


def attempt(refusals: int, takes: float = 0.0, policy: DeliveryPolicy | None = None) -> tuple[Delivery, Clock, Flaky]:
    clock = Clock()
    courier = Flaky(clock, refusals, takes)
    policy = policy or DeliveryPolicy()
    delivery = Delivery(new_event("test", "test"), TARGET, deadline=clock.now + policy.deadline)
    deliver(courier, delivery, policy, clock=clock, sleep=clock.sleep)
    return delivery, clock, courier


def test_a_delivery_is_retried_with_backoff_until_accepted() -> None:
    delivery, clock, courier = attempt(refusals=2)
    assert (delivery.delivered, delivery.attempts, delivery.error) == (True, 3, None)
    assert clock.slept == [0.5, 1.0]
    assert courier.timeouts == [5.0, 5.0, 5.0]


def test_a_receiver_that_stays_down_costs_the_backoffs_then_is_given_up() -> None:
    delivery, clock, _ = attempt(refusals=99)
    assert (delivery.delivered, delivery.attempts, delivery.error) == (False, 4, "connection refused")
    assert clock.slept == [0.5, 1.0, 2.0] and clock.now - 100.0 == 3.5


def test_a_receiver_that_never_answers_is_given_up_at_the_deadline() -> None:
    delivery, clock, courier = attempt(refusals=99, takes=5.0)
    assert courier.timeouts == [5.0, 5.0, 3.5]  # the last attempt gets what is left of the 15 s
    assert (delivery.delivered, delivery.attempts) == (False, 3)
    assert delivery.error == "connection refused (deadline passed)"
    assert clock.now - 100.0 == 15.0


# ---------------------------------------------------------------- events.jsonl


def test_undelivered_are_those_refused_or_never_recorded_long_after_their_deadline(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "events.jsonl")
    now = dt.datetime(2026, 12, 6, 12, 0, 0, tzinfo=dt.UTC)

    def at(seconds_ago: float) -> str:
        return (now - dt.timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")

    for event_id, site, ago, targets in (
        ("e1", "acme", 60, ["slack ops", "webhook audit"]),
        ("e2", "acme", 5, ["slack ops"]),  # still being tried
        ("e3", "acme", 3600, ["slack ops"]),  # never recorded: the command was killed
        ("e4", "other", 60, ["slack ops"]),
        ("e5", "acme", 8 * 86400, ["slack ops"]),  # older than status shows
        ("e6", None, 60, ["email ops"]),  # the host's own (a fleet run)
    ):
        log.append(
            {"schema": 1, "id": event_id, "event": "upgrade.failed", "at": at(ago), "site": site, "targets": targets}
        )
    log.append({"delivery": "e1", "target": "slack ops", "outcome": "delivered"})
    log.append(
        {"delivery": "e1", "target": "webhook audit", "outcome": "undelivered", "error": "timed out", "attempts": 3}
    )
    for other in ("e4", "e6"):
        target = "email ops" if other == "e6" else "slack ops"
        log.append({"delivery": other, "target": target, "outcome": "undelivered", "error": "refused", "attempts": 4})
    with (tmp_path / "events.jsonl").open("a") as handle:
        handle.write('{"torn": ')  # a crash mid-write
    found = log.undelivered(site="acme", now=now)
    assert [(u["id"], u["target"], u["error"], u["attempts"]) for u in found] == [
        ("e1", "webhook audit", "timed out", 3),
        ("e3", "slack ops", "never recorded (the command was stopped)", None),
    ]
    assert [u["id"] for u in log.undelivered(host_only=True, now=now)] == ["e6"]


# ---------------------------------------------------------------- [[notify]] and [hooks] settings


def secret(path: Path, mode: int = 0o600) -> str:
    path.write_text("s3cret\n")
    os.chmod(path, mode)
    return str(path)


def host_error(tmp_path: Path, text: str) -> str:
    import tomllib

    with pytest.raises(ConfigError) as info:
        parse_host(tomllib.loads(text), tmp_path)
    assert exit_code_of(info.value) == 2
    return info.value.message


def test_notify_targets_of_sumbg_toml(tmp_path: Path) -> None:
    import tomllib

    key = secret(tmp_path / "key")
    host = parse_host(
        tomllib.loads(
            f'[[notify]]\nevents = ["all"]\nwebhook_url = "https://hooks.example.com/x"\nwebhook_secret_file = "{key}"\n'
            f'[[notify]]\nname = "ops"\nslack_url_file = "{key}"\n'
        ),
        tmp_path,
    )
    assert host.notify == (
        NotifyTarget(
            events=("all",),
            webhook_url="https://hooks.example.com/x",
            webhook_secret_file=key,
            source="sumbg.toml notify[0]",
        ),
        NotifyTarget(name="ops", slack_url_file=key, source="sumbg.toml notify[1]"),
    )
    assert [t.label for t in host.notify] == ["webhook (sumbg.toml notify[0])", "slack ops"]
    assert host.notify[1].events == ("failures",)


@pytest.mark.parametrize(
    "table, message",
    [
        ('events = ["all"]', "sumbg.toml: notify[0].webhook_url: must have exactly one target: webhook_url (or "),
        (
            'webhook_url = "https://a.example"\nemail_to = ["a@b.c"]',
            "sumbg.toml: notify[0].email_to: must have exactly",
        ),
        ('email_to = ["a@b.c"]', "sumbg.toml: notify[0].smtp_host: is required for an email target"),
        ('webhook_url = "https://a.example"\nevents = ["upgrade.exploded"]', "sumbg.toml: notify[0].events[0]: "),
        ('webhook_url = "ftp://a.example"', "sumbg.toml: notify[0].webhook_url: must be an http:// or https:// URL"),
        (
            'webhook_url = "https://a.example"\nsmtp_host = "m"',
            "sumbg.toml: notify[0].smtp_host: is for an email target, not a webhook one",
        ),
        ('webhook_url = "https://a.example"\ncolour = "red"', "sumbg.toml: notify[0].colour: unknown setting"),
    ],
)
def test_bad_notify_tables_are_refused_naming_file_and_key(tmp_path: Path, table: str, message: str) -> None:
    assert host_error(tmp_path, f"[[notify]]\n{table}\n").startswith(message)


def test_a_secret_file_others_can_read_is_refused(tmp_path: Path) -> None:
    loose = secret(tmp_path / "slack", 0o644)
    assert host_error(tmp_path, f'[[notify]]\nslack_url_file = "{loose}"\n') == (
        f"sumbg.toml: notify[0].slack_url_file: {loose} has mode 0644; a credential file must be 0600 "
        f"(chmod 600 {loose})"
    )


def test_hooks_of_site_toml(tmp_path: Path) -> None:
    import tomllib

    world = World()
    text = render_site_toml(site_config(world))
    text = text.replace('post_switch = ""', 'post_switch = "manage: wagtail_update_index"')
    assert parse_site(tomllib.loads(text)).hooks == HookSettings(post_switch="manage: wagtail_update_index")
    with pytest.raises(ConfigError) as info:
        parse_site(tomllib.loads(text.replace("manage: wagtail_update_index", "manage:  ")))
    assert info.value.message == (
        'site.toml: hooks.post_switch: must name the management command after "manage:", e.g. '
        '"manage: wagtail_update_index"'
    )


# ---------------------------------------------------------------- operations on the fakes


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
def ctx(tmp_path: Path, world: World) -> FakeContext:
    return FakeContext(tmp_path, world)


WEBHOOK = NotifyTarget(name="audit", events=("all",), webhook_url="http://127.0.0.1:9/hook")
OPS = NotifyTarget(name="ops", webhook_url="http://127.0.0.1:9/ops")  # failures only


def configure(root: Path, world: World, *, notify=(WEBHOOK, OPS), **hooks: str) -> None:
    config = replace(site_config(world), notify=tuple(notify), hooks=HookSettings(**hooks))
    (root / world.slug / "site.toml").write_text(render_site_toml(config))


def sent(world: World) -> list[tuple[str, str]]:
    return [(label, event["event"]) for label, event in world.sent]


def recorded(ctx: FakeContext) -> list[dict]:
    return EventLog(ctx.host.root / "events.jsonl").lines()


def test_a_reverted_upgrade_is_one_reverted_event_for_each_target_and_the_post_rollback_hook(
    ctx: FakeContext, world: World, tmp_path: Path
) -> None:
    deployed(tmp_path, world, live=("blue", "v1.0.0"), idle=("green", "v0.9.0"))
    configure(tmp_path, world, post_rollback="purge-cache")
    world.release("v1.5.0")
    world.turns_unhealthy = {"sum-acme:v1.5.0": 1}
    with pytest.raises(CheckFailed):
        upgrade_to(ctx, world, "v1.5.0")
    ctx.close()
    assert sorted(sent(world)) == [
        ("webhook audit", "upgrade.reverted"),
        ("webhook audit", "upgrade.started"),
        ("webhook ops", "upgrade.reverted"),
    ]
    entry = last_finished(ctx)
    assert world.hooks_run == [
        (
            "purge-cache",
            {
                "SUMBG_SLUG": "acme",
                "SUMBG_OPERATION": "upgrade",
                "SUMBG_OUTCOME": "reverted",
                "SUMBG_FROM_REF": "v1.5.0",
                "SUMBG_TO_REF": "v1.0.0",
                "SUMBG_FROM_COLOUR": "green",
                "SUMBG_TO_COLOUR": "blue",
                "SUMBG_HISTORY_ID": entry["id"],
            },
        )
    ]
    assert [h["outcome"] for h in entry["hooks"]] == ["ok"]
    events = [line for line in recorded(ctx) if "schema" in line]
    assert [(e["event"], e["targets"]) for e in events] == [
        ("upgrade.started", ["webhook audit"]),
        ("upgrade.reverted", ["webhook audit", "webhook ops"]),
    ]
    ends = {(line["delivery"], line["target"]): line["outcome"] for line in recorded(ctx) if "delivery" in line}
    assert set(ends.values()) == {"delivered"} and len(ends) == 3


def test_a_target_that_refuses_changes_no_outcome_and_is_recorded_undelivered(
    ctx: FakeContext, world: World, tmp_path: Path
) -> None:
    deployed(tmp_path, world, live=("blue", "v1.0.0"))
    configure(tmp_path, world)
    world.refusing_targets = {"webhook audit"}
    done = upgrade_to(ctx, world, "v1.1.0", watch=0)
    assert done["outcome"] == "done"
    flushed = ctx.events.flush()
    assert sorted((d.event["event"], d.delivered, d.attempts) for d in flushed) == [
        ("upgrade.started", False, 3),
        ("upgrade.succeeded", False, 3),
    ]
    undelivered = EventLog(tmp_path / "events.jsonl").undelivered(site="acme")
    assert sorted((u["event"], u["target"], u["error"]) for u in undelivered) == [
        ("upgrade.started", "webhook audit", "connection refused"),
        ("upgrade.succeeded", "webhook audit", "connection refused"),
    ]


def test_a_failing_pre_upgrade_hook_stops_the_upgrade_before_anything_changes(
    ctx: FakeContext, world: World, tmp_path: Path
) -> None:
    deployed(tmp_path, world, live=("blue", "v1.0.0"), idle=("green", "v0.9.0"))
    configure(tmp_path, world, pre_upgrade="deploy-window", pre_backup="sync")
    world.hook_exit_codes["deploy-window"] = 3
    state_before = (tmp_path / "acme" / "state.json").read_text()
    with pytest.raises(HookFailed) as failed:
        upgrade_to(ctx, world, "v1.1.0")
    assert exit_code_of(failed.value) == 1
    assert failed.value.message == (
        "the pre_upgrade hook `deploy-window` exited 3; the upgrade was stopped before anything changed"
    )
    assert (failed.value.step, failed.value.output_tail) == ("pre-upgrade", "no deploys on Friday")
    assert world.effects == [] and world.schema_effects == [] and world.backups_taken == []
    assert [command for command, _ in world.hooks_run] == ["deploy-window"]
    assert json.loads((tmp_path / "acme" / "state.json").read_text())["colours"] == json.loads(state_before)["colours"]
    ctx.close()
    assert sorted(sent(world)) == [
        ("webhook audit", "upgrade.failed"),
        ("webhook audit", "upgrade.started"),
        ("webhook ops", "upgrade.failed"),
    ]


def test_a_failing_post_switch_hook_is_reported_and_the_upgrade_stands(
    ctx: FakeContext, world: World, tmp_path: Path
) -> None:
    deployed(tmp_path, world, live=("blue", "v1.0.0"))
    configure(tmp_path, world, post_switch="manage: wagtail_update_index", post_upgrade="notify-crm")
    world.hook_exit_codes["manage: wagtail_update_index"] = 1
    done = upgrade_to(ctx, world, "v1.1.0", watch=0)
    assert done["outcome"] == "done"
    assert [(s["name"], s["outcome"]) for s in done["steps"]][-4:] == [
        ("workers", "skipped"),
        ("post-switch", "hook failed"),
        ("after-switch", "skipped"),
        ("post-upgrade", "ok"),
    ]
    assert world.hooks_run[0] == ("manage: wagtail_update_index", {"colour": "green", "release": "v1.1.0"})
    assert world.hooks_run[1][1]["SUMBG_OUTCOME"] == "succeeded"
    assert json.loads((tmp_path / "acme" / "state.json").read_text())["live"] == "green"
    ctx.close()
    assert ("webhook ops", "hook.failed") in sent(world)


def test_rollback_runs_post_rollback_and_backup_pre_backup(ctx: FakeContext, world: World, tmp_path: Path) -> None:
    deployed(tmp_path, world, live=("green", "v1.1.0"), idle=("blue", "v1.0.0"))
    configure(tmp_path, world, post_rollback="purge-cache", pre_backup="flush-queue")
    done = rollback.rollback(ctx, "acme")
    assert [s["name"] for s in done["steps"]] == ["ready", "flip", "post-rollback"]
    assert world.hooks_run[0][1] | {"SUMBG_HISTORY_ID": ""} == {
        "SUMBG_SLUG": "acme",
        "SUMBG_OPERATION": "rollback",
        "SUMBG_OUTCOME": "succeeded",
        "SUMBG_FROM_REF": "v1.1.0",
        "SUMBG_TO_REF": "v1.0.0",
        "SUMBG_FROM_COLOUR": "green",
        "SUMBG_TO_COLOUR": "blue",
        "SUMBG_HISTORY_ID": "",
    }
    world.hook_exit_codes["flush-queue"] = 1
    with pytest.raises(HookFailed):
        offsite.backup(ctx, "acme")
    assert world.backups_taken == []
    ctx.close()
    assert sorted(sent(world)) == [
        ("webhook audit", "backup.failed"),
        ("webhook audit", "rollback.succeeded"),
        ("webhook ops", "backup.failed"),
    ]


def test_notify_test_sends_to_every_target_and_fails_naming_the_refusing_one(
    ctx: FakeContext, world: World, tmp_path: Path
) -> None:
    deployed(tmp_path, world, live=("blue", "v1.0.0"))
    configure(tmp_path, world)
    document = send_test(ctx, "acme")
    assert [(t["target"], t["outcome"]) for t in document["targets"]] == [
        ("webhook audit", "delivered"),
        ("webhook ops", "delivered"),
    ]
    assert sorted(sent(world)) == [("webhook audit", "test"), ("webhook ops", "test")]  # sent at once
    assert not (tmp_path / "events.jsonl").exists()  # a test is no event of the site
    world.refusing_targets = {"webhook ops"}
    with pytest.raises(SumbgError) as failed:
        send_test(ctx, "acme")
    assert exit_code_of(failed.value) == 1
    assert failed.value.message == (
        "1 of 2 notification target(s) did not accept the test event: webhook ops: connection refused"
    )
    configure(tmp_path, world, notify=())
    with pytest.raises(UsageError) as nothing:
        send_test(ctx, "acme")
    assert (
        nothing.value.message
        == "no [[notify]] target in sumbg.toml or acme/site.toml: nothing to test (see docs/events.md)"
    )


def test_every_event_is_documented() -> None:
    from sumbg.config import EVENTS

    page = (Path(__file__).resolve().parent.parent / "docs" / "events.md").read_text()
    table = page.split("## The events", 1)[1].split("## Hooks", 1)[0]
    assert {name for name in EVENTS if f"`{name}`" not in table} == set()


def test_a_fleet_run_is_announced_to_the_hosts_targets_and_recorded(ctx: FakeContext, world: World) -> None:
    from sumbg.ops.notify import announce_fleet_run

    ctx.host = replace(ctx.host, notify=(WEBHOOK, OPS))
    document = {"id": "run1", "core": "0.8.0", "outcome": "done", "unreachable": {}, "moves": []}
    announce_fleet_run(ctx, document, 0)
    ctx.close()
    assert sent(world) == [("webhook audit", "fleet.succeeded")]  # ops hears failures only
    [event] = [line for line in recorded(ctx) if "schema" in line]
    assert (event["event"], event["site"], event["targets"]) == ("fleet.succeeded", None, ["webhook audit"])
