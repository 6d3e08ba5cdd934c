"""The worker as part of a release (issue 18).

Pure: its command line read, when a started worker is ready, how its container reads in
`status`, /health/'s failing checks. The real Stacks verbs (wait until ready, drain, finish a
drain, start) on a scripted engine, asserting every engine call. The operations on fakes:
an upgrade moves the worker after the flip and goes back whole when the new worker is not
ready or does not stay up; a rollback hands its worker move to the background; init fails on
a worker that is not ready; status flags the live colour's worker. And the site lock handed
to a process that outlives the rollback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sumbg.adapters.docker import ContainerState, ExecResult
from sumbg.adapters.probe import Answer, Health
from sumbg.cli import exit_code_of
from sumbg.config import HostConfig, SiteConfig, WorkerSettings
from sumbg.errors import CheckFailed, WorkerNotReady
from sumbg.lock import SiteLock, is_held
from sumbg.ops import rollback, status, workers
from sumbg.ops.init import init
from sumbg.site.site import Site
from sumbg.site.stacks import Drained, Stacks
from sumbg.site.worker import (
    Readiness,
    WorkerCommand,
    WorkerView,
    parse_worker_command,
    readiness,
    worker_problem,
    worker_view,
)

from .fakes import FakeContext, World, deployed
from .test_unit_switch import upgrade_to

CELERY = "celery -A acme worker --loglevel=INFO"


@pytest.fixture
def world() -> World:
    return World(refs={"v1.0.0": "0.6.3", "v1.1.0": "0.7.0"})


@pytest.fixture
def ctx(tmp_path: Path, world: World) -> FakeContext:
    return FakeContext(tmp_path, world)


def history_of(root: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (root / "acme" / "history.jsonl").read_text().splitlines()]


def state_of(root: Path) -> dict[str, Any]:
    return json.loads((root / "acme" / "state.json").read_text())


def worker_effects(world: World) -> list[tuple[Any, ...]]:
    return [e for e in world.effects if e[0] in ("worker", "live")]


# ---------------------------------------------------------------- the command line


def test_sums_own_worker_command_is_a_celery_worker_exec_d_and_pinged_on_its_own_node() -> None:
    command = parse_worker_command("celery -A sum_core.celery worker -l info")
    assert command == WorkerCommand(
        "celery -A sum_core.celery worker -l info",
        celery=("celery",),
        app="sum_core.celery",
        subcommand="worker",
        beat=False,
        nodename=None,
        simple=True,
    )
    assert command.celery_worker
    assert command.shell_line() == "exec celery -A sum_core.celery worker -l info"
    assert command.ping_argv("0f3c2a9b1d4e", 5) == [
        "celery",
        "-A",
        "sum_core.celery",
        "inspect",
        "ping",
        "-d",
        "celery@0f3c2a9b1d4e",
        "--timeout",
        "5",
    ]
    assert command.active_argv("h", 2.5)[-5:] == ["-d", "celery@h", "--timeout", "2.5", "--json"]


@pytest.mark.parametrize(
    ("line", "celery", "app", "subcommand", "beat", "nodename", "shell_line"),
    [
        (
            "/venv/bin/celery --app=acme worker --beat -n w1@%h --loglevel=INFO",
            ("/venv/bin/celery",),
            "acme",
            "worker",
            True,
            "w1@%h",
            "exec /venv/bin/celery --app=acme worker --beat -n w1@%h --loglevel=INFO",
        ),
        (
            "python3 -m celery -A acme worker -B",
            ("python3", "-m", "celery"),
            "acme",
            "worker",
            True,
            None,
            "exec python3 -m celery -A acme worker -B",
        ),
        ("celery -A acme beat", ("celery",), "acme", "beat", True, None, "exec celery -A acme beat"),
        (
            "celery -b redis://redis:6379/1 -A acme worker --hostname=one@%h",
            ("celery",),
            "acme",
            "worker",
            False,
            "one@%h",
            "exec celery -b redis://redis:6379/1 -A acme worker --hostname=one@%h",
        ),
        (
            'DJANGO_SETTINGS_MODULE=acme.settings.worker NAME="a b" celery -A acme worker',
            ("celery",),
            "acme",
            "worker",
            False,
            None,
            'DJANGO_SETTINGS_MODULE=acme.settings.worker NAME="a b" exec celery -A acme worker',
        ),
        # More than one command for the shell: run as it is (Docker's SIGTERM then reaches sh).
        (
            "cd /app && celery -A acme worker",
            ("celery",),
            "acme",
            "worker",
            False,
            None,
            "cd /app && celery -A acme worker",
        ),
        ("exec celery -A acme worker", ("celery",), "acme", "worker", False, None, "exec celery -A acme worker"),
        ("rq worker high", (), None, None, False, None, "exec rq worker high"),
    ],
)
def test_worker_commands_read(
    line: str,
    celery: tuple[str, ...],
    app: str | None,
    subcommand: str | None,
    beat: bool,
    nodename: str | None,
    shell_line: str,
) -> None:
    command = parse_worker_command(line)
    assert (command.celery, command.app, command.subcommand, command.beat, command.nodename) == (
        celery,
        app,
        subcommand,
        beat,
        nodename,
    )
    assert command.shell_line() == shell_line


def test_a_node_name_of_the_command_is_the_one_pinged() -> None:
    assert parse_worker_command("celery -A a worker -n w1@%h").node("abc.lan") == "w1@abc.lan"
    assert parse_worker_command("celery -A a worker -n %n-x").node("abc.lan") == "celery@abc-x"
    assert parse_worker_command("celery -A a worker").node("abc") == "celery@abc"
    assert not parse_worker_command("celery -A a beat").celery_worker


# ---------------------------------------------------------------- readiness


def container(**facts: Any) -> ContainerState:
    base: dict[str, Any] = {"name": "sum-acme-green-worker", "running": True, "status": "running", "exit_code": 0}
    return ContainerState(**{**base, **facts})


def test_a_started_celery_worker_is_ready_once_pinged_and_up_for_ready_after() -> None:
    now = 1000.0

    def look(state: ContainerState | None, pinged_run: float | None, restarts_before: int = 0) -> Readiness:
        return readiness(
            state, now=now, ready_after=10, celery_worker=True, pinged_run=pinged_run, restarts_before=restarts_before
        )

    assert look(None, None) == Readiness(failed="its container does not exist")
    assert look(container(running=False, status="exited", exit_code=1, started_at=990), None) == Readiness(
        waiting="it is exited (exit code 1)"
    )
    assert look(container(started_at=998), None) == Readiness(
        waiting="it has not answered `celery inspect ping` yet", needs_ping=True
    )
    assert look(container(started_at=998), 998) == Readiness(waiting="it has run 2s of the 10s without a restart")
    assert look(container(started_at=990), 990) == Readiness(ready=True)
    # Restarted since the ping: pinged again in its new run.
    assert look(container(started_at=995, restart_count=1), 990).needs_ping
    assert look(container(started_at=999, restart_count=4), 990, restarts_before=1) == Readiness(
        failed="it crashed and was restarted 3 times since it was started"
    )
    # Not Celery: running long enough without a restart is all there is to know.
    assert readiness(
        container(started_at=985), now=now, ready_after=10, celery_worker=False, pinged_run=None, restarts_before=0
    ) == Readiness(ready=True)


def test_how_a_worker_reads_in_status() -> None:
    now = 10_000.0

    def view(state: ContainerState | None, configured: bool = True) -> WorkerView:
        return worker_view(state, configured=configured, now=now, ready_after=10, draining=())

    assert view(None, configured=False).describe() == "none configured"
    assert view(None).describe() == "stopped"
    assert view(container(running=False, status="exited", exit_code=137)).describe() == "stopped (exit code 137)"
    crash = view(container(running=False, restarting=True, status="restarting", exit_code=1, restart_count=7))
    assert crash.describe() == "restarting (7 restarts, last exit code 1)"
    assert view(container(started_at=now - 2, restart_count=7, exit_code=1)).state == "restarting"
    assert view(container(started_at=now - 2)).describe() == "starting (up 2s)"
    assert view(container(started_at=now - 7200, restart_count=1)).describe() == "running (up 2.0h, 1 restarts)"
    draining = worker_view(
        container(started_at=now - 60), configured=True, now=now, ready_after=10, draining=("old",)
    ).describe()
    assert draining == "running (up 1.0m); 1 old worker(s) finishing their tasks"
    assert (
        worker_problem(crash, "green") == "the live colour green's worker is restarting (7 restarts, last exit code 1)"
    )
    assert worker_problem(view(None), "blue") == "the live colour blue's worker is stopped"
    assert worker_problem(view(container(started_at=now - 2)), "blue") is None


# ---------------------------------------------------------------- /health/'s failing checks


def health(body: dict[str, Any], required: tuple[str, ...] = ()) -> Health:
    return Health(Answer(200, "application/json", json.dumps(body)), required)


def test_failing_checks_in_both_shapes_and_required_checks() -> None:
    real = health(
        {
            "status": "degraded",
            "checks": {
                "db": {"status": "ok", "latency_ms": 1.2},
                "celery": {
                    "status": "fail",
                    "detail": "Redis transport requires redis-py versions 6.1.0 or later. You have 5.3.1",
                },
            },
        }
    )
    assert real.passing
    assert real.failing_checks == {
        "celery": "Redis transport requires redis-py versions 6.1.0 or later. You have 5.3.1"
    }
    example = health({"status": "degraded", "checks": {"celery": {"ok": False, "error": "ConnectionError: refused"}}})
    assert example.failing_checks == {"celery": "ConnectionError: refused"}
    required = health(real.answer.json() or {}, ("celery",))
    assert not required.passing
    assert required.describe() == (
        "required check celery fails: Redis transport requires redis-py versions 6.1.0 or later. You have 5.3.1"
    )
    missing = health({"status": "ok", "checks": {"db": {"status": "ok"}}}, ("celery",))
    assert (missing.passing, missing.required_failing) == (False, {"celery": "not reported by /health/"})
    assert health({"status": "ok", "checks": {"celery": {"status": "ok"}}}, ("celery",)).passing


# ---------------------------------------------------------------- the real Stacks verbs, scripted


class ScriptedEngine:
    """The Docker adapter as Stacks uses it for a worker: each container's next states, scripted,
    and every call recorded in order."""

    def __init__(self, states: dict[str, list[ContainerState | None]], pings: list[int] | None = None) -> None:
        self.states = states
        self.pings = list(pings or [])
        self.calls: list[tuple[Any, ...]] = []
        self.active = ""

    def container(self, name: str) -> ContainerState | None:
        script = self.states.get(name) or [None]
        return script.pop(0) if len(script) > 1 else script[0]

    def exec(self, name: str, argv: list[str], **kwargs: Any) -> ExecResult:
        self.calls.append(("exec", name, " ".join(argv)))
        if "ping" in argv:
            code = self.pings.pop(0) if self.pings else 0
            return ExecResult(
                code, "-> celery@h: OK pong" if code == 0 else "", "" if code == 0 else "No nodes replied"
            )
        return ExecResult(0, self.active, "")

    def logs(self, name: str, lines: int = 30) -> str:
        return "celery@h v5.4.0 (opalescent)\n[tasks]\n  . sum_core.notify"

    def log_lines(self, name: str) -> Iterator[bytes]:
        self.calls.append(("log_lines", name))
        yield from (line.encode() + b"\n" for line in self.logs(name).splitlines())

    def image_labels(self, image: str) -> dict[str, str]:
        return {}

    def update_container(self, name: str, *, restart: str | None = None, cpu_shares: int | None = None) -> None:
        self.calls.append(("update", name, restart, cpu_shares))

    def rename_container(self, name: str, new_name: str) -> None:
        self.calls.append(("rename", name, new_name))
        self.states[new_name] = self.states.pop(name)

    def signal_container(self, name: str, signal: str) -> None:
        self.calls.append(("signal", name, signal))

    def remove_container(self, name: str) -> None:
        self.calls.append(("remove", name))

    def project_containers(self, project: str) -> list[ContainerState]:
        return []

    def image_labels(self, tag: str) -> dict[str, str]:
        return {"sumbg.commit": "abc", "sumbg.ref": "v1.1.0"}

    def edge_address(self, name: str) -> str:
        return "172.30.0.2"

    def compose_run_detached(self, project: Any, service: str, name: str) -> str:
        self.calls.append(("run", project.name, service, name, dict(project.variables)["SUMBG_WORKER_COMMAND"]))
        return "id"


def scripted_stacks(tmp_path: Path, engine: ScriptedEngine, **worker: float) -> tuple[Stacks, list[str]]:
    handed: list[str] = []
    config = SiteConfig(
        slug="acme",
        domain="acme.example.test",
        repo="/r",
        project="acme",
        settings_module="acme.settings.production",
        wsgi="acme.wsgi:application",
        worker_command=CELERY,
        worker=WorkerSettings(**worker),
    )
    return Stacks(Site(HostConfig(root=tmp_path), config), engine, on_drain=handed.append), handed  # type: ignore[arg-type]


def test_a_crash_looping_worker_is_not_ready_with_its_exit_code_restarts_and_log_tail(tmp_path: Path) -> None:
    now = time.time()
    name = "sum-acme-green-worker"
    engine = ScriptedEngine(
        {
            name: [
                container(started_at=now, restart_count=0),  # the first look: its restarts so far
                container(started_at=now, restart_count=0),
                container(running=False, restarting=True, status="restarting", exit_code=1, restart_count=1),
                container(started_at=now + 2, restart_count=2, exit_code=1),
                # Running again: Docker's exit code is 0 now, the crash's is kept.
                container(started_at=now + 5, restart_count=3, exit_code=0),
            ]
        },
        pings=[69, 69],
    )
    stacks, _ = scripted_stacks(tmp_path, engine, ready_after=10, ready_timeout=60)
    with pytest.raises(WorkerNotReady) as raised:
        stacks.wait_worker_ready("green")
    error = raised.value
    assert error.message == (
        "the worker of green is not ready: it crashed and was restarted 3 times since it was started "
        "(exit code 1, restarted 3 times)"
    )
    assert (error.colour, error.returncode, exit_code_of(error)) == ("green", 1, 1)
    assert error.output_tail == (
        "--- last worker log lines ---\ncelery@h v5.4.0 (opalescent)\n[tasks]\n  . sum_core.notify\n"
        "--- celery inspect ping ---\nNo nodes replied"
    )
    assert [call[0] for call in engine.calls] == ["exec", "exec"]


def test_a_worker_is_ready_once_its_own_node_answers_and_it_ran_ready_after(tmp_path: Path) -> None:
    started = time.time() - 30
    engine = ScriptedEngine({"sum-acme-blue-worker": [container(started_at=started, hostname="0f3c2a9b1d4e")]})
    stacks, _ = scripted_stacks(tmp_path, engine, ready_after=10)
    ready = stacks.wait_worker_ready("blue")
    assert {k: v for k, v in ready.items() if k != "seconds"} == {
        "container": "sum-acme-blue-worker",
        "restart_count": 0,
        "ping": "celery@0f3c2a9b1d4e",
        "pings": 1,
    }
    assert engine.calls == [
        (
            "exec",
            "sum-acme-blue-worker",
            "celery -A acme inspect ping -d celery@0f3c2a9b1d4e --timeout 5",
        )
    ]


def test_draining_returns_at_once_and_hands_the_old_worker_over(tmp_path: Path) -> None:
    engine = ScriptedEngine({"sum-acme-blue-worker": [container(name="sum-acme-blue-worker", id="4e1d" * 16)]})
    stacks, handed = scripted_stacks(tmp_path, engine)
    draining = "sum-acme-blue-worker-draining-4e1d4e1d4e1d"
    assert stacks.drain_worker("blue") == draining
    assert engine.calls == [
        ("update", "sum-acme-blue-worker", "no", None),  # Docker must not start it again
        ("rename", "sum-acme-blue-worker", draining),  # a new worker of the colour may start beside it
        ("signal", draining, "TERM"),  # Celery's warm shutdown: no new task, the held ones finish
    ]
    assert handed == [draining]
    crashing = ScriptedEngine(
        {"sum-acme-blue-worker": [container(running=False, restarting=True, status="restarting")]}
    )
    stacks, handed = scripted_stacks(tmp_path, crashing)
    assert stacks.drain_worker("blue") is None
    assert (crashing.calls, handed) == ([("remove", "sum-acme-blue-worker")], [])


def test_an_old_worker_past_stop_timeout_is_killed_and_its_tasks_named(tmp_path: Path) -> None:
    name = "sum-acme-blue-worker-draining-4e1d4e1d4e1d"
    engine = ScriptedEngine(
        {
            name: [
                container(name=name, hostname="4e1d4e1d4e1d"),
                container(name=name, hostname="4e1d4e1d4e1d"),
                container(name=name, running=False, status="exited", exit_code=137),
            ]
        }
    )
    engine.active = json.dumps({"celery@4e1d4e1d4e1d": [{"id": "t-1", "name": "sum_core.slow", "args": ["secret"]}]})
    stacks, _ = scripted_stacks(tmp_path, engine, stop_timeout=1)
    drained = stacks.finish_draining(name, since=time.time() - 5)
    assert (drained.outcome, drained.exit_code, drained.held_tasks) == (
        "killed",
        137,
        [{"id": "t-1", "name": "sum_core.slow"}],
    )
    assert engine.calls == [
        ("exec", name, "celery -A acme inspect active -d celery@4e1d4e1d4e1d --timeout 5 --json"),
        ("signal", name, "KILL"),
        ("log_lines", name),  # its logs kept before it goes (with the task it was killed in)
        ("remove", name),
    ]
    assert [kept.split("_")[1:3] for kept in drained.kept_logs] == [["blue", "worker"]]


def test_a_worker_starts_in_the_background_beside_an_old_one_exec_d(tmp_path: Path) -> None:
    engine = ScriptedEngine({"sum-acme-green-worker": [None]})
    stacks, _ = scripted_stacks(tmp_path, engine)
    assert stacks.start_worker("green", "sum-acme:v1.1.0", live=True)
    assert engine.calls == [
        ("run", "sum-acme-green", "worker", "sum-acme-green-worker", "exec " + CELERY),
        ("update", "sum-acme-green-worker", "unless-stopped", 1024),
    ]


# ---------------------------------------------------------------- upgrades


def test_an_upgrade_drains_the_old_worker_after_the_flip_and_waits_for_the_new(
    ctx: FakeContext, world: World, tmp_path: Path
) -> None:
    deployed(tmp_path, world, live=("blue", "v1.0.0"), worker_command=CELERY)
    result = upgrade_to(ctx, world, "v1.1.0")
    assert worker_effects(world) == [
        ("live", "green"),
        ("worker", "drain", "blue"),
        ("worker", "start", "green", "v1.1.0"),
        ("worker", "ready", "green"),
    ]
    step = next(s for s in result["steps"] if s["name"] == "workers")
    assert step == {
        "name": "workers",
        "seconds": step["seconds"],
        "outcome": "ok",
        "stopped": "blue",
        "started": "green",
        "draining": ["sum-acme-blue-worker-draining-1"],
        "ready": {"container": "sum-acme-green-worker", "seconds": 0.0},
    }
    colours = state_of(tmp_path)["colours"]
    assert (colours["blue"]["worker"]["status"], colours["green"]["worker"]["status"]) == ("stopped", "ready")


def test_a_release_whose_worker_crash_loops_goes_back_whole(ctx: FakeContext, world: World, tmp_path: Path) -> None:
    deployed(tmp_path, world, live=("blue", "v1.0.0"), worker_command=CELERY)
    world.crashing_workers.add(world.release("v1.1.0"))
    with pytest.raises(CheckFailed) as raised:
        upgrade_to(ctx, world, "v1.1.0")
    error = raised.value
    assert error.message == (
        "after the switch its worker was not ready (the worker of green is not ready: it crashed and was "
        "restarted 3 times since it was started (exit code 1, restarted 3 times)); rolled back to blue (v1.0.0) "
        "by itself in 0.000s"
    )
    assert error.output_tail == "--- last worker log lines ---\n[tasks]\n  . sum_core.notify"
    assert worker_effects(world) == [
        ("live", "green"),
        ("worker", "drain", "blue"),
        ("worker", "start", "green", "v1.1.0"),
        ("live", "blue"),
        ("worker", "drain", "green"),
        ("worker", "start", "blue", "v1.0.0"),
        ("worker", "ready", "blue"),
    ]
    state = state_of(tmp_path)
    assert state["live"] == "blue" and state["colours"]["green"]["outcome"] == "failed"
    assert state["colours"]["green"]["reason"].startswith("the worker of green is not ready: it crashed")
    assert state["colours"]["green"]["worker"]["status"] == "stopped"  # drained when traffic went back
    finished = history_of(tmp_path)[-1]
    assert (finished["outcome"], finished["failed_step"]) == ("aborted", "workers")
    assert finished["error"]["output_tail"] == error.output_tail


def test_a_worker_that_does_not_stay_up_during_the_watch_reverts_the_release(
    ctx: FakeContext, world: World, tmp_path: Path
) -> None:
    deployed(tmp_path, world, live=("blue", "v1.0.0"), worker_command=CELERY)
    world.workers_crashing_later.add(world.release("v1.1.0"))
    with pytest.raises(CheckFailed, match="after the switch its worker did not stay up") as raised:
        upgrade_to(ctx, world, "v1.1.0", watch=5)
    assert raised.value.output_tail == "--- last worker log lines ---\n[tasks]\n  . sum_core.notify"
    reason = state_of(tmp_path)["colours"]["green"]["reason"]
    assert reason == "the worker of green did not stay up: it is restarting (1 restarts, last exit code 1)"
    assert state_of(tmp_path)["live"] == "blue" and world.files["live"] == "blue"


def test_degraded_checks_are_said_and_kept_at_each_step(ctx: FakeContext, world: World, tmp_path: Path) -> None:
    deployed(tmp_path, world, live=("blue", "v1.0.0"))
    detail = "Redis transport requires redis-py versions 6.1.0 or later. You have 5.3.1"
    world.degraded[world.release("v1.1.0")] = {"celery": detail}
    result = upgrade_to(ctx, world, "v1.1.0")
    steps = {s["name"]: s for s in result["steps"]}
    for name in ("start", "smoke", "switch"):
        assert steps[name]["degraded"] == {"celery": detail}, name
    assert result["watch"]["degraded"] == {"celery": detail}


def test_a_required_check_that_fails_stops_the_upgrade_before_the_switch(
    ctx: FakeContext, world: World, tmp_path: Path
) -> None:
    deployed(tmp_path, world, live=("blue", "v1.0.0"))
    text = (tmp_path / "acme" / "site.toml").read_text()
    (tmp_path / "acme" / "site.toml").write_text(text.replace("required_checks = []", 'required_checks = ["celery"]'))
    world.degraded[world.release("v1.1.0")] = {"celery": "no broker"}
    with pytest.raises(CheckFailed) as raised:
        upgrade_to(ctx, world, "v1.1.0")
    assert raised.value.message.startswith(
        "the new colour green never became healthy: preview /health/ through Caddy did not pass within "
        "120s: required check celery fails: no broker"
    )
    assert world.files["live"] == "blue"


# ---------------------------------------------------------------- rollback


def test_a_rollback_ends_at_the_flip_and_hands_the_worker_move_over(
    ctx: FakeContext, world: World, tmp_path: Path
) -> None:
    deployed(tmp_path, world, live=("green", "v1.1.0"), idle=("blue", "v1.0.0"), worker_command=CELERY)
    result = rollback.rollback(ctx, "acme")
    # Nothing but the flip before the command ends: even the CPU weights follow in the background.
    assert world.effects == [("preview", "green"), ("live", "blue"), ("worker", "handed over")]
    assert result["worker"] == {"in_background": True, "pid": 4242, "log": str(tmp_path / "acme" / "run/workers.log")}
    assert state_of(tmp_path)["colours"]["blue"]["worker"]["status"] == "starting"
    # What the background `sumbg _move-worker` does once the rollback has exited.
    moved = workers.move_to_live(ctx, ctx.site("acme"), after="rollback")
    assert moved is not None and moved["operation"] == "worker" and moved["outcome"] == "done"
    assert world.effects[3:] == [
        ("weights", "blue"),
        ("worker", "drain", "green"),
        ("worker", "start", "blue", "v1.0.0"),
        ("worker", "ready", "blue"),
    ]
    assert [(e.get("operation"), e["event"]) for e in history_of(tmp_path)] == [
        ("rollback", "started"),
        ("rollback", "finished"),
        ("worker", "started"),
        ("worker", "finished"),
    ]


def test_a_rollback_that_waits_for_its_worker_fails_when_it_is_not_ready(
    ctx: FakeContext, world: World, tmp_path: Path
) -> None:
    deployed(tmp_path, world, live=("green", "v1.1.0"), idle=("blue", "v1.0.0"), worker_command=CELERY)
    world.crashing_workers.add(world.release("v1.0.0"))
    with pytest.raises(WorkerNotReady) as raised:
        rollback.rollback(ctx, "acme", wait_worker=True)
    assert raised.value.message.startswith(
        "traffic is on blue (v1.0.0) as asked, but the worker of blue is not ready: it crashed"
    )
    assert exit_code_of(raised.value) == 1
    assert world.files["live"] == "blue" and ("worker", "handed over") not in world.effects


def test_the_background_move_stands_down_after_an_interrupted_rollback(
    ctx: FakeContext, world: World, tmp_path: Path
) -> None:
    deployed(tmp_path, world, live=("green", "v1.1.0"), idle=("blue", "v1.0.0"), worker_command=CELERY)
    state = json.loads((tmp_path / "acme" / "state.json").read_text())
    state["operation"] = {"id": "x", "kind": "rollback", "pid": 1, "started_at": "2026-12-06T00:00:00Z", "step": "flip"}
    (tmp_path / "acme" / "state.json").write_text(json.dumps(state))
    assert workers.move_to_live(ctx, ctx.site("acme"), after="rollback") is None
    assert worker_effects(world) == []


# ---------------------------------------------------------------- init and status


def test_init_fails_on_a_worker_that_is_not_ready(ctx: FakeContext, world: World, tmp_path: Path) -> None:
    world.crashing_workers.add(world.release("v1.0.0"))
    with pytest.raises(WorkerNotReady, match="the worker of blue is not ready"):
        init(ctx, "acme", "/r", ["acme.example.test"], "v1.0.0", worker=True)
    finished = history_of(tmp_path)[-1]
    assert (finished["outcome"], finished["failed_step"]) == ("aborted", "worker")
    assert ("remove", "blue") in world.effects and state_of(tmp_path)["live"] is None


def test_status_flags_the_live_colours_worker_down(ctx: FakeContext, world: World, tmp_path: Path) -> None:
    deployed(tmp_path, world, live=("green", "v1.1.0"), idle=("blue", "v1.0.0"), worker_command=CELERY)
    site = ctx.site("acme")
    ok = status.site_status(ctx, site)
    assert (ok["worker_problem"], ok["problems"]) == (None, [])
    assert ok["workers"]["green"]["state"] == "running" and ok["workers"]["blue"]["state"] == "stopped"
    world.workers_crashing_later.add(world.release("v1.1.0"))
    down = status.site_status(ctx, site)
    problem = "the live colour green's worker is restarting (1 restarts, last exit code 1)"
    assert (down["worker_problem"], down["problems"]) == (problem, [problem])
    # While an operation holds the site (the rollback's worker move in the background), it is not a problem.
    lock = site.lock().acquire()
    try:
        assert status.site_status(ctx, site)["worker_problem"] is None
    finally:
        lock.release()


# ---------------------------------------------------------------- the lock, handed over


def test_the_site_lock_handed_to_a_child_outlives_the_parent(tmp_path: Path) -> None:
    path = tmp_path / ".lock"
    lock = SiteLock(path, "site acme").acquire(command="sumbg rollback acme")
    fd = lock.hand_over()
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from sumbg.lock import SiteLock;"
            "lock = SiteLock(Path(sys.argv[1]), 'site acme').adopt(int(sys.argv[2]), 'moving the worker');"
            "sys.stdin.read(); lock.release()",
            str(path),
            str(fd),
        ],
        stdin=subprocess.PIPE,
        pass_fds=(fd,),
        text=True,
    )
    try:
        assert _wait(lambda: "moving the worker" in path.read_text())
        lock.release()  # the rollback exits: the child still holds the lock
        assert is_held(path)
        assert SiteLock(path, "site acme").holder()["command"] == "moving the worker"  # type: ignore[index]
    finally:
        child.communicate("", timeout=30)
    assert child.returncode == 0 and not is_held(path)


def _wait(predicate: Any, seconds: float = 20) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_the_drainer_records_how_an_old_worker_ended(ctx: FakeContext, world: World, tmp_path: Path) -> None:
    deployed(tmp_path, world, live=("green", "v1.1.0"), worker_command=CELERY)
    name = "sum-acme-blue-worker-draining-4e1d4e1d4e1d"
    assert workers.drain_until_gone(ctx, "acme", name, None) == {
        "event": "worker-drained",
        "operation": "worker-drain",
        "colour": "blue",
        "container": name,
        "outcome": "exited",
        "exit_code": 0,
        "seconds": 4.0,
    }
    world.drain_ends = ("killed", 137, [{"id": "t-1", "name": "sum_core.slow"}])
    killed = workers.drain_until_gone(ctx, "acme", name, None)
    assert killed["reason"] == "still running after [worker] stop_timeout 300s: SIGKILL; it held sum_core.slow t-1"
    world.drain_ends = ("killed", 137, None)
    assert workers.drain_until_gone(ctx, "acme", name, None)["reason"] == (
        "still running after [worker] stop_timeout 300s: SIGKILL; Celery did not say which tasks it held"
    )
    assert [e["outcome"] for e in history_of(tmp_path)] == ["exited", "killed", "killed"]


def test_drained_records_say_what_a_kill_cost() -> None:
    assert Drained("w", "killed", 137, 300.2, [{"id": "t", "name": "n"}]).record() == {
        "container": "w",
        "outcome": "killed",
        "exit_code": 137,
        "seconds": 300.2,
        "held_tasks": [{"id": "t", "name": "n"}],
    }
    assert "held_tasks" not in Drained("w", "exited", 0, 4.0).record()
    assert os.environ.get("SUMBG_BACKGROUND") is None
