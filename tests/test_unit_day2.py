"""Day-2 commands on fakes: the kept logs of removed colours (and WHAT-BROKE.md's links to them),
which logs `sumbg logs` reads, one-off commands (manage, shell, psql), doctor's decisions, the
Docker adapter's attached commands, and the command line's groups, examples and completion."""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
import os
import ssl
import subprocess
from pathlib import Path

import click
import pytest
from click.shell_completion import ShellComplete
from click.testing import CliRunner

from sumbg.adapters import docker as docker_adapter
from sumbg.adapters.docker import ComposeProject, ContainerState, EngineVersions
from sumbg.adapters.hostinfo import ClockState, Resolution
from sumbg.adapters.probe import ServedCertificate, certificate_facts
from sumbg.cli import COMMAND_GROUPS, EXAMPLES, cli, exit_code_of, parse_since
from sumbg.config import HostConfig, load_host, parse_host
from sumbg.errors import CheckFailed, ConfigError, NotFound, SumbgError, UsageError
from sumbg.ops import doctor, logs, oneoff, retire
from sumbg.ops.doctor import FAIL, OK, WARN, DiskFacts, Finding, HostFacts, PortFacts, SiteFacts
from sumbg.ops.executor import Run
from sumbg.ops.logs import FromContainer, FromKept, LogsRequest, choose_source, kept_lines
from sumbg.ops.reports import regenerate
from sumbg.site import logs as kept_logs_module
from sumbg.site.backupset import BackupSet, Manifest
from sumbg.site.logs import KeptLogs, file_ref, newest_members
from sumbg.site.stacks import Stacks
from sumbg.site.state import SiteState

from .fakes import FakeContext, FakeStacks, World, deployed
from .receivers import self_signed_cert
from .test_unit_switch import last_finished, upgrade_to


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
def ctx(tmp_path: Path, world: World) -> FakeContext:
    return FakeContext(tmp_path, world)


NOW = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)


def stamped(text: str, at: str = "2026-12-06T10:00:00.000000001Z") -> bytes:
    return f"{at} {text}\n".encode()


# ---------------------------------------------------------------- kept logs: the folder


def test_kept_log_names_parse_back_oldest_first(tmp_path: Path):
    kept = KeptLogs(tmp_path / "logs")
    later = kept.new_path("green", "worker", "release/2.0", dt.datetime(2026, 12, 6, 11, 0, 0, 5000, tzinfo=dt.UTC))
    first = kept.new_path("blue", "web", "v1.0.0", dt.datetime(2026, 12, 6, 10, 0, tzinfo=dt.UTC))
    assert (first.name, later.name) == (
        "20261206T100000.000Z_blue_web_v1.0.0.log.gz",
        "20261206T110000.005Z_green_worker_release~2.0.log.gz",
    )
    for path in (later, first):
        kept.write(path, [stamped("a line")], 1024 * 1024)
    (tmp_path / "logs" / "notes.txt").write_text("not a kept log")
    assert [(e.colour, e.service, e.ref, e.removed_at.isoformat()) for e in kept.entries()] == [
        ("blue", "web", "v1.0.0", "2026-12-06T10:00:00+00:00"),
        ("green", "worker", "release~2.0", "2026-12-06T11:00:00.005000+00:00"),
    ]
    assert [e.path for e in kept.of_release("release/2.0", "worker")] == [later]
    assert kept.of_release("release/2.0", "web") == []
    assert (file_ref("v1.0.0"), file_ref("feature/x+y"), file_ref("a b:c"), file_ref("")) == (
        "v1.0.0",
        "feature~x+y",
        "a-b-c",
        "unknown",
    )


def test_a_kept_log_is_private_and_reads_back_line_by_line(tmp_path: Path):
    kept = KeptLogs(tmp_path / "logs")
    path = kept.new_path("blue", "web", "v1.0.0")
    result = kept.write(path, [stamped("one"), stamped("two")[:-1]], 1024 * 1024)  # the last without a newline
    assert (result.lines, result.dropped) == (2, 0)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert oct((tmp_path / "logs").stat().st_mode & 0o777) == "0o700"
    [entry] = kept.entries()
    assert list(entry.lines()) == [
        "2026-12-06T10:00:00.000000001Z one",
        "2026-12-06T10:00:00.000000001Z two",
    ]
    assert not list((tmp_path / "logs").glob(".*"))  # no partial file left


def test_a_long_log_keeps_its_newest_lines_within_the_cap(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(kept_logs_module, "CHUNK_BYTES", 1000)
    # Incompressible lines, so the cap bites after a few chunks.
    lines = [f"{i:06d} {os.urandom(40).hex()}\n".encode() for i in range(400)]
    members, kept, dropped = newest_members(lines, cap_bytes=3000)
    assert sum(len(m) for m in members) <= 3000 and kept + dropped == 400 and dropped > 0
    text = b"".join(gzip.decompress(m) for m in members).decode().splitlines()
    assert [line[:6] for line in text] == [f"{i:06d}" for i in range(dropped, 400)]  # the newest, in order
    store = KeptLogs(tmp_path / "logs")
    path = store.new_path("blue", "web", "v1.0.0")
    result = store.write(path, lines, 3000 + 200)
    [entry] = store.entries()
    read = list(entry.lines())
    assert read[0] == f"[sumbg: the {result.dropped} oldest lines were dropped to keep within [logs] keep_mb]"
    assert read[-1].startswith("000399 ") and len(read) == result.lines + 1


def test_prune_removes_the_oldest_files_first(tmp_path: Path):
    store = KeptLogs(tmp_path / "logs")
    paths = []
    for hour in (9, 10, 11):
        path = store.new_path("blue", "web", f"v1.{hour}.0", dt.datetime(2026, 12, 6, hour, tzinfo=dt.UTC))
        store.write(path, [os.urandom(2000).hex().encode()], 1 << 20)
        paths.append(path)
    sizes = [p.stat().st_size for p in paths]
    assert store.prune(sizes[1] + sizes[2]) == [paths[0].name]
    assert store.prune(0) == [paths[1].name, paths[2].name]
    assert store.entries() == []


# ---------------------------------------------------------------- kept logs: where colours are removed


def test_retire_keeps_the_idle_colours_logs_before_removing_it(ctx: FakeContext, world: World, tmp_path: Path):
    deployed(tmp_path, world, live=("blue", "v1.1.0"), idle=("green", "v1.0.0"))
    world.logged["green"] = [stamped("GET / 200 served by v1.0.0")]
    retire.retire(ctx, "acme", min_age=0, force=False)
    assert world.kept_logs == [("green", "web", "v1.0.0")]  # kept while its web still existed
    assert world.effects == [("remove", "green")]
    [entry] = ctx.site("acme").kept_logs.entries()
    assert list(entry.lines()) == ["2026-12-06T10:00:00.000000001Z GET / 200 served by v1.0.0"]
    assert last_finished(ctx)["kept_logs"] == [entry.path.name]


def test_an_upgrade_keeps_the_logs_of_the_idle_colour_it_replaces(ctx: FakeContext, world: World, tmp_path: Path):
    deployed(tmp_path, world, live=("blue", "v1.0.0"), idle=("green", "v0.9.0"))
    upgrade_to(ctx, world, "v1.1.0", watch=0)
    assert world.kept_logs == [("green", "web", "v0.9.0")]
    assert [e.ref for e in ctx.site("acme").kept_logs.entries()] == ["v0.9.0"]


def test_a_failed_upgrade_keeps_the_new_colours_logs_and_what_broke_links_them(
    ctx: FakeContext, world: World, tmp_path: Path
):
    deployed(tmp_path, world, live=("blue", "v1.0.0"), idle=("green", "v0.9.0"))
    world.release("v1.3.0")
    world.broken = {"sum-acme:v1.3.0"}
    with pytest.raises(CheckFailed):
        upgrade_to(ctx, world, "v1.3.0")
    # The displaced rollback target first, then the new colour by the undo (its web still there).
    assert world.kept_logs == [("green", "web", "v0.9.0"), ("green", "web", "v1.3.0")]
    kept = [e.path.name for e in ctx.site("acme").kept_logs.entries()]
    assert last_finished(ctx)["kept_logs"] == kept
    what_broke = (tmp_path / "WHAT-BROKE.md").read_text()
    links = ", ".join(f"[{name}](acme/logs/{name})" for name in kept)
    assert f"- logs of the removed colours (`sumbg logs acme --release REF`): {links}\n" in what_broke
    # A pruned file is not linked.
    (tmp_path / "acme" / "logs" / kept[0]).unlink()
    regenerate(ctx.host)
    assert f": [{kept[1]}](acme/logs/{kept[1]})\n" in (tmp_path / "WHAT-BROKE.md").read_text()


def test_a_log_that_cannot_be_kept_never_fails_the_removal(ctx: FakeContext, world: World, tmp_path: Path):
    deployed(tmp_path, world, live=("blue", "v1.1.0"), idle=("green", "v1.0.0"))
    site = ctx.site("acme")

    class NoRoom(FakeStacks):
        def keep_logs(self, colour: str, services: tuple[str, ...] = ("web", "worker")) -> list[str]:
            raise OSError(28, "No space left on device")

    run = Run(site.records, ctx.reporter, "test")
    assert logs.keep_colour_logs(NoRoom(world, site), run, "green") == []
    assert run.notes == {"kept_logs_failed": [{"colour": "green", "error": "[Errno 28] No space left on device"}]}


def test_keep_mb_zero_keeps_nothing_and_a_sites_own_cap_wins(tmp_path: Path, world: World):
    deployed(tmp_path, world, live=("blue", "v1.1.0"), idle=("green", "v1.0.0"))
    (tmp_path / "sumbg.toml").write_text("[logs]\nkeep_mb = 0\n")
    ctx = FakeContext(tmp_path, world)
    ctx.host = load_host(tmp_path)
    site = ctx.site("acme")
    assert site.logs_keep_bytes == 0
    world.logged["green"] = [stamped("a line")]
    retire.retire(ctx, "acme", min_age=0, force=False)
    assert site.kept_logs.entries() == [] and world.effects == [("remove", "green")]
    site_toml = tmp_path / "acme" / "site.toml"
    site_toml.write_text(site_toml.read_text().replace("# keep_mb = 200", "keep_mb = 2.5"))
    assert ctx.site("acme").logs_keep_bytes == int(2.5 * 1024 * 1024)


class LoggingEngine:
    """The part of the Docker engine Stacks.keep_logs uses: two containers and what they logged."""

    def __init__(self, logged: dict[str, list[bytes]]) -> None:
        self.logged = logged

    def container(self, name: str) -> ContainerState | None:
        return ContainerState(name, True, "running", None, image="sum-acme:v1.0.0") if name in self.logged else None

    def image_labels(self, tag: str) -> dict[str, str]:
        return {"sumbg.ref": "release/1.0"}

    def log_lines(self, name: str):
        yield from self.logged[name]


def test_stacks_keep_each_containers_logs_within_half_the_cap_and_prune_the_oldest(tmp_path: Path, world: World):
    deployed(tmp_path, world, live=("blue", "v1.1.0"))
    site_toml = tmp_path / "acme" / "site.toml"
    site_toml.write_text(site_toml.read_text().replace("# keep_mb = 200", "keep_mb = 0.01"))  # 10485 bytes
    site = FakeContext(tmp_path, world).site("acme")
    old = site.kept_logs.new_path("blue", "web", "v0.1.0", dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
    site.kept_logs.write(old, [os.urandom(8000).hex().encode()], 1 << 20)
    noisy = [f"{i:05d} {os.urandom(30).hex()}".encode() for i in range(3000)]
    engine = LoggingEngine({"sum-acme-green-web": noisy, "sum-acme-green-worker": [b"worker started"]})
    written = Stacks(site, engine).keep_logs("green")  # type: ignore[arg-type]
    assert [name.split("_", 1)[1] for name in written] == [
        "green_web_release~1.0.log.gz",
        "green_worker_release~1.0.log.gz",
    ]
    entries = site.kept_logs.entries()
    assert [e.path.name for e in entries] == written  # the old file was pruned to make room
    assert all(e.size <= 10485 // 2 for e in entries)
    assert list(entries[0].lines())[-1].startswith("02999 ")
    assert list(entries[1].lines()) == ["worker started"]
    assert Stacks(site, LoggingEngine({})).keep_logs("blue") == []  # type: ignore[arg-type]


def test_the_logs_and_doctor_settings_are_checked(tmp_path: Path):
    with pytest.raises(ConfigError) as bad_cap:
        parse_host({"logs": {"keep_mb": -1}}, tmp_path)
    assert bad_cap.value.message == "sumbg.toml: logs.keep_mb: must not be negative"
    with pytest.raises(ConfigError) as bad_address:
        parse_host({"doctor": {"addresses": ["203.0.113.7", "example.com"]}}, tmp_path)
    assert bad_address.value.message == "sumbg.toml: doctor.addresses[1]: must be an IP address, not 'example.com'"
    host = parse_host({"doctor": {"addresses": ["203.0.113.7"]}}, tmp_path)
    assert host.doctor_addresses == ("203.0.113.7",)


# ---------------------------------------------------------------- which logs `sumbg logs` reads


def state(**colours: tuple[str, str]) -> SiteState:
    """A state whose live colour is the one given first: colour=(ref, status)."""
    data = {
        "live": next(iter(colours)),
        "colours": {
            colour: {"image": f"sum-acme:{ref}", "ref": ref, "status": status}
            for colour, (ref, status) in colours.items()
        },
    }
    return SiteState.from_json(data)


def kept_files(tmp_path: Path, *specs: tuple[str, str, str]) -> list:
    store = KeptLogs(tmp_path / "logs")
    for hour, (colour, service, ref) in enumerate(specs):
        store.write(store.new_path(colour, service, ref, dt.datetime(2026, 12, 6, hour, tzinfo=dt.UTC)), [], 1 << 20)
    return store.entries()


def test_the_live_colours_web_by_default_and_the_idle_or_a_named_colour(tmp_path: Path):
    st = state(green=("v1.1.0", "live"), blue=("v1.0.0", "idle"))
    both = {"blue": {"web"}, "green": {"web", "worker"}}

    def source(**request: object) -> object:
        return choose_source("acme", st, LogsRequest(**request), running=both, kept=[], has_worker=True)

    assert source() == FromContainer("sum-acme-green-web", "green", "v1.1.0")
    assert source(worker=True) == FromContainer("sum-acme-green-worker", "green", "v1.1.0")
    assert source(colour="idle") == FromContainer("sum-acme-blue-web", "blue", "v1.0.0")
    assert source(colour="blue", follow=True) == FromContainer("sum-acme-blue-web", "blue", "v1.0.0")
    assert source(release="v1.0.0") == FromContainer("sum-acme-blue-web", "blue", "v1.0.0")


def test_a_release_no_colour_runs_is_read_from_the_kept_logs(tmp_path: Path):
    st = state(green=("v1.1.0", "live"), blue=("v1.0.0", "retired"))
    kept = kept_files(tmp_path, ("blue", "web", "v1.0.0"), ("blue", "worker", "v1.0.0"), ("green", "web", "v0.9.0"))
    running = {"green": {"web"}}

    def source(**request: object) -> object:
        return choose_source("acme", st, LogsRequest(**request), running=running, kept=kept, has_worker=False)

    assert source(release="v1.0.0") == FromKept((kept[0],))
    assert source(release="v1.0.0", worker=True) == FromKept((kept[1],))  # kept from when it had a worker
    with pytest.raises(UsageError) as follow:
        source(release="v1.0.0", follow=True)
    assert follow.value.message == "release v1.0.0 of acme no longer runs: --follow reads a running colour"
    with pytest.raises(NotFound) as unknown:
        source(release="v2.0.0")
    assert unknown.value.message == (
        "no web logs of release v2.0.0 of acme: no colour runs it and none were kept (kept: v0.9.0, v1.0.0)"
    )
    with pytest.raises(NotFound) as gone:
        source(colour="blue")
    assert gone.value.message == (
        "the blue colour of acme has no web container: it no longer exists; its logs were kept when it "
        "was removed: `sumbg logs acme --release v1.0.0`"
    )
    with pytest.raises(NotFound) as no_worker:
        source(worker=True)
    assert no_worker.value.message == "site acme runs no background worker (site.toml: app.worker_command is empty)"
    with pytest.raises(UsageError) as both:
        source(release="v1.0.0", colour="live")
    assert (both.value.message, exit_code_of(both.value)) == ("give --colour or --release, not both", 2)


def test_a_colour_gone_with_nothing_kept_says_what_it_held(tmp_path: Path):
    st = state(green=("v1.1.0", "live"), blue=("v1.0.0", "retired"))
    with pytest.raises(NotFound) as gone:
        choose_source("acme", st, LogsRequest(colour="idle"), running={"green": {"web"}}, kept=[], has_worker=False)
    assert gone.value.message == (
        "the blue colour of acme has no web container: it no longer exists (it last held v1.0.0)"
    )
    with pytest.raises(NotFound) as never:
        choose_source("acme", SiteState(), LogsRequest(), running={}, kept=[], has_worker=False)
    assert never.value.message == "site acme has no live colour yet"


def test_kept_lines_since_and_tail(tmp_path: Path):
    store = KeptLogs(tmp_path / "logs")
    for hour, colour in ((9, "blue"), (10, "green")):
        store.write(
            store.new_path(colour, "web", "v1.0.0", dt.datetime(2026, 12, 6, hour, tzinfo=dt.UTC)),
            [stamped(f"{colour} {n}", f"2026-12-06T{hour:02d}:{n:02d}:00.5Z") for n in range(3)],
            1 << 20,
        )
    files = tuple(store.entries())
    every = list(kept_lines(files, since=None, tail=None))
    assert [line.split(" ", 1)[1] for line in every] == ["blue 0", "blue 1", "blue 2", "green 0", "green 1", "green 2"]
    since = dt.datetime(2026, 12, 6, 9, 1, tzinfo=dt.UTC).timestamp()
    assert [line.split(" ", 1)[1] for line in kept_lines(files, since=since, tail=None)] == [
        "blue 1",
        "blue 2",
        "green 0",
        "green 1",
        "green 2",
    ]
    assert [line.split(" ", 1)[1] for line in kept_lines(files, since=since, tail=2)] == ["green 1", "green 2"]
    assert list(kept_lines(files, since=None, tail=0)) == []


def test_show_logs_reads_a_running_colour_through_the_engine_and_a_kept_one_from_its_file(
    ctx: FakeContext, world: World, tmp_path: Path
):
    deployed(tmp_path, world, live=("blue", "v1.1.0"), idle=("green", "v1.0.0"))
    out = io.StringIO()
    request = LogsRequest(follow=True, since=1700000000.0, tail=5)
    assert logs.show_logs(ctx, "acme", request, out) == 0
    assert world.shown_logs == [("sum-acme-blue-web", True, 1700000000.0, 5)]
    world.logged["green"] = [stamped("kept line")]
    retire.retire(ctx, "acme", min_age=0, force=False)
    assert logs.show_logs(ctx, "acme", LogsRequest(release="v1.0.0"), out) == 0
    assert out.getvalue() == "2026-12-06T10:00:00.000000001Z kept line\n"


def test_since_takes_a_duration_or_a_utc_time():
    assert parse_since("2026-12-06T05:00:00Z") == dt.datetime(2026, 12, 6, 5, tzinfo=dt.UTC).timestamp()
    assert parse_since("2026-12-06T05:00:00") == dt.datetime(2026, 12, 6, 5, tzinfo=dt.UTC).timestamp()
    now = dt.datetime.now(dt.UTC).timestamp()
    assert abs(parse_since("10m") - (now - 600)) < 5
    with pytest.raises(click.BadParameter) as bad:
        parse_since("yesterday")
    assert "is neither a duration (90, 30m, 2h, 1d) nor a time like 2026-12-06T05:00:00Z" in bad.value.message


# ---------------------------------------------------------------- manage, shell, psql


def test_one_off_commands_run_in_the_chosen_release_and_are_recorded_by_name(
    ctx: FakeContext, world: World, tmp_path: Path
):
    deployed(tmp_path, world, live=("blue", "v1.1.0"), idle=("green", "v1.0.0"))
    environ = {"DJANGO_SUPERUSER_PASSWORD": "s3cret"}
    args = ["createsuperuser", "--noinput", "--username", "admin"]
    assert oneoff.manage(ctx, "acme", args, tty=False, env_names=("DJANGO_SUPERUSER_PASSWORD",), environ=environ) == 0
    world.oneoff_exit = 7
    assert oneoff.manage(ctx, "acme", ["shell", "-c", "raise SystemExit(7)"], colour="idle", tty=True) == 7
    world.oneoff_exit = 0
    assert oneoff.shell(ctx, "acme", [], tty=True) == 0
    assert oneoff.psql(ctx, "acme", ["-c", "SELECT 1"], tty=False) == 0
    bash_or_sh = ["sh", "-c", "command -v bash >/dev/null 2>&1 && exec bash || exec sh"]
    assert world.oneoffs == [
        ("run", "blue", "sum-acme:v1.1.0", ["python", "manage.py", *args], False, ("DJANGO_SUPERUSER_PASSWORD",)),
        ("run", "green", "sum-acme:v1.0.0", ["python", "manage.py", "shell", "-c", "raise SystemExit(7)"], True, ()),
        ("run", "blue", "sum-acme:v1.1.0", bash_or_sh, True, ()),
        ("psql", None, None, ["-c", "SELECT 1"], False, ()),
    ]
    entries = [json.loads(line) for line in (tmp_path / "acme" / "history.jsonl").read_text().splitlines()]
    assert [{k: v for k, v in e.items() if k not in ("at", "seconds")} for e in entries] == [
        {
            "event": "ran",
            "operation": "manage",
            "command": "createsuperuser",
            "colour": "blue",
            "ref": "v1.1.0",
            "exit_code": 0,
            "outcome": "exit 0",
            "reason": "createsuperuser in blue (v1.1.0)",
        },
        {
            "event": "ran",
            "operation": "manage",
            "command": "shell",
            "colour": "green",
            "ref": "v1.0.0",
            "exit_code": 7,
            "outcome": "exit 7",
            "reason": "shell in green (v1.0.0)",
        },
        {
            "event": "ran",
            "operation": "shell",
            "command": "shell",
            "colour": "blue",
            "ref": "v1.1.0",
            "exit_code": 0,
            "outcome": "exit 0",
            "reason": "shell in blue (v1.1.0)",
        },
        {"event": "ran", "operation": "psql", "command": "psql", "exit_code": 0, "outcome": "exit 0", "reason": "psql"},
    ]
    assert "admin" not in (tmp_path / "acme" / "history.jsonl").read_text()


def test_one_off_commands_refuse_bad_input_before_running_anything(ctx: FakeContext, world: World, tmp_path: Path):
    deployed(tmp_path, world, live=("blue", "v1.1.0"))
    cases = [
        (lambda: oneoff.manage(ctx, "acme", [], tty=False), UsageError, "give the manage.py command after --"),
        (
            lambda: oneoff.manage(ctx, "acme", ["check"], tty=False, env_names=("TOKEN=abc",), environ={}),
            UsageError,
            "--env TOKEN=...: give only the NAME of a variable you exported (its value would show in the process list)",
        ),
        (
            lambda: oneoff.manage(ctx, "acme", ["check"], tty=False, env_names=("TOKEN",), environ={}),
            UsageError,
            "--env TOKEN: no such variable in sumbg's environment (export it first)",
        ),
        (
            lambda: oneoff.manage(ctx, "acme", ["check"], colour="idle", tty=False),
            NotFound,
            "the green colour of acme holds no release (it was never deployed, or was forgotten)",
        ),
        (lambda: oneoff.shell(ctx, "nope", [], tty=False), UsageError, "no site 'nope' under"),
    ]
    for call, kind, message in cases:
        with pytest.raises(kind) as refused:
            call()
        assert refused.value.message.startswith(message)
    world.releases.pop("sum-acme:v1.1.0")  # the image was pruned
    with pytest.raises(NotFound) as pruned:
        oneoff.manage(ctx, "acme", ["check"], tty=False)
    assert pruned.value.message == "the image sum-acme:v1.1.0 of blue (v1.1.0) is no longer on this host"
    assert world.oneoffs == [] and not (tmp_path / "acme" / "history.jsonl").exists()


def test_the_history_keeps_a_commands_name_never_its_arguments():
    assert oneoff.command_name(["createsuperuser", "--username", "x"]) == "createsuperuser"
    assert oneoff.command_name(["--help"]) == "--help"
    assert oneoff.command_name(["--settings=acme.secret", "migrate"]) == "(unnamed)"
    assert oneoff.command_name(["shell", "-c", "print(1)"]) == "shell"
    assert oneoff.command_name(["a b"]) == "(unnamed)"


# ---------------------------------------------------------------- the Docker adapter's attached commands


def test_attached_commands_pass_secrets_by_name_and_the_terminal_only_when_asked(tmp_path: Path, monkeypatch):
    calls = []

    def fake_run(argv, env, check):
        calls.append((argv, env))
        return subprocess.CompletedProcess(argv, 3 if len(calls) < 4 else -2)  # the last one killed by SIGINT

    monkeypatch.setattr(docker_adapter.subprocess, "run", fake_run)
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "s3cret")
    engine = docker_adapter.Engine()
    project = ComposeProject("sum-acme-blue", ("app.yml",), (("SUMBG_PROJECT", "sum-acme-blue"),), tmp_path / "p.env")
    assert (
        engine.compose_run_attached(
            project, "manage", ["python", "manage.py", "check"], tty=False, env_names=("DJANGO_SUPERUSER_PASSWORD",)
        )
        == 3
    )
    assert engine.compose_run_attached(project, "manage", ["sh"], tty=True) == 3
    assert (
        engine.run_attached(
            "postgres:16",
            ["psql"],
            network="sum-acme",
            env={"PGPASSWORD": "pw", "PGUSER": "acme"},
            tty=False,
            cpu_shares=128,
        )
        == 3
    )
    assert engine.show_logs("sum-acme-blue-web", follow=True, since=1700000000.9, tail=10) == 130
    compose_prefix = calls[0][0][: calls[0][0].index("run")]
    assert [
        argv[len(compose_prefix) :] if argv[: len(compose_prefix)] == compose_prefix else argv[1:] for argv, _ in calls
    ] == [
        [
            "run",
            "--rm",
            "--no-deps",
            "-T",
            "--env",
            "DJANGO_SUPERUSER_PASSWORD",
            "manage",
            "python",
            "manage.py",
            "check",
        ],
        ["run", "--rm", "--no-deps", "manage", "sh"],
        [
            "run",
            "--rm",
            "--interactive",
            "--network",
            "sum-acme",
            "--cpu-shares",
            "128",
            "--env",
            "PGPASSWORD",
            "--env",
            "PGUSER",
            "postgres:16",
            "psql",
        ],
        ["logs", "--follow", "--since", "1700000000", "--tail", "10", "sum-acme-blue-web"],
    ]
    assert all("s3cret" not in arg and "pw" != arg for argv, _ in calls for arg in argv)
    assert (calls[2][1]["PGPASSWORD"], calls[0][1]["DJANGO_SUPERUSER_PASSWORD"]) == ("pw", "s3cret")
    assert oct(project.env_file.stat().st_mode & 0o777) == "0o600"


# ---------------------------------------------------------------- doctor: each decision on facts


def test_certificate_facts_read_issuer_and_expiry_of_both_time_encodings(tmp_path: Path):
    for days, subject in ((3, "/O=Acme Org/CN=Short CA"), (12000, "/O=Only Org")):
        cert, _ = self_signed_cert(tmp_path, subject, days)
        der = ssl.PEM_cert_to_DER_cert(cert.read_text())
        issuer, not_after = certificate_facts(der)
        expected = dt.datetime.now(dt.UTC) + dt.timedelta(days=days)
        assert issuer == ("Short CA" if days == 3 else "Only Org")
        assert abs((not_after - expected).total_seconds()) < 120  # 12000 days: GeneralizedTime (after 2049)
    with pytest.raises((ValueError, IndexError)):
        certificate_facts(b"\x30\x82\x05\x00\x30")


def host_facts(**changes: object) -> HostFacts:
    base: dict[str, object] = {
        "versions": EngineVersions("20.10.24+dfsg1", "Docker Compose version v2.40.3"),
        "edge_container": "sum-edge-caddy",
        "edge_running": True,
        "edge_version": "v2.11.7",
        "ports": (PortFacts("http", "0.0.0.0", 80, True, None), PortFacts("https", "0.0.0.0", 443, True, None)),
        "disks": (DiskFacts("root", "/srv/sum", 50 * 1024**3),),
        "clock": ClockState(True, 0.012, "adjtimex"),
        "addresses": ("203.0.113.7", "2001:db8::7"),
        "addresses_from": "this host's interfaces",
        "tls": "auto",
        "network_problems": (),
    }
    base.update(changes)
    return HostFacts(**base)  # type: ignore[arg-type]


def site_facts(**changes: object) -> SiteFacts:
    base: dict[str, object] = {
        "slug": "acme",
        "live": True,
        "domains": {"acme.example": Resolution(("203.0.113.7",))},
        "certificates": {"acme.example": (ServedCertificate("R11", NOW + dt.timedelta(days=60)), "")},
        "newest_backup": (NOW - dt.timedelta(hours=3)).timestamp(),
    }
    base.update(changes)
    return SiteFacts(**base)  # type: ignore[arg-type]


def test_a_healthy_host_is_all_ok(tmp_path: Path):
    findings = doctor.decide(host_facts(sites=(site_facts(),)), NOW)
    assert findings == [
        Finding("engine", "host", OK, "Docker Engine 20.10.24+dfsg1"),
        Finding("compose", "host", OK, "Docker Compose version v2.40.3"),
        Finding("edge", "edge sum-edge-caddy", OK, "Caddy v2.11.7 (2.9 or newer)"),
        Finding("port", "http 0.0.0.0:80", OK, "held by the edge"),
        Finding("port", "https 0.0.0.0:443", OK, "held by the edge"),
        Finding("disk", "root /srv/sum", OK, "50.0 GB free"),
        Finding("clock", "host", OK, "kept in sync by an NTP client (adjtimex; maximum error 12 ms)"),
        Finding("network", "host", OK, "every site's networks follow the address plan"),
        Finding("dns", "acme: acme.example", OK, "resolves to this host (203.0.113.7)"),
        Finding("certificate", "acme: acme.example", OK, "issuer R11, expires 2027-02-04 12:00Z (60 days)"),
        Finding("backups", "acme", OK, "the newest is 3.0h old"),
        Finding("agreement", "acme", OK, "records, Caddy and containers agree"),
    ]
    assert doctor.report(findings)["ok"] is True


def test_dns_decisions():
    def dns(*addresses: str, error: str = "") -> list[tuple[str, str, str]]:
        site = site_facts(domains={"acme.example": Resolution(addresses, error)})
        return [
            (f.level, f.detail, f.fix)
            for f in doctor.check_dns(site, ("203.0.113.7", "2001:db8::7"), "this host's interfaces")
        ]

    assert dns(error="Name or service not known") == [
        (
            FAIL,
            "does not resolve (Name or service not known)",
            "add an A (and AAAA) record for acme.example pointing at 203.0.113.7, 2001:db8::7",
        )
    ]
    assert dns("198.51.100.1") == [
        (
            FAIL,
            "resolves to 198.51.100.1, not to this host (203.0.113.7, 2001:db8::7, from this host's interfaces)",
            "point acme.example's A/AAAA records at 203.0.113.7, 2001:db8::7; behind NAT, list the public address "
            "in sumbg.toml [doctor] addresses",
        )
    ]
    assert dns("203.0.113.7", "198.51.100.1") == [
        (
            WARN,
            "resolves to this host (203.0.113.7) and also to 198.51.100.1",
            "remove the records that point elsewhere: some visitors reach another host",
        )
    ]
    assert dns("2001:db8:0:0::7", "203.0.113.7")[0][:2] == (OK, "resolves to this host (2001:db8:0:0::7, 203.0.113.7)")
    unknown = doctor.check_dns(site_facts(), (), "this host's interfaces")
    assert [(f.level, f.fix) for f in unknown] == [(WARN, "list them in sumbg.toml [doctor] addresses")]


def test_certificate_decisions():
    def cert(days: float | None, tls: str = "auto", error: str = "") -> tuple[str, str]:
        served = (
            (ServedCertificate("Pebble Intermediate CA 1a2b", NOW + dt.timedelta(days=days)), "")
            if days is not None
            else (None, error)
        )
        [finding] = doctor.check_certificates(
            site_facts(certificates={"acme.example": served}), NOW, tls, "sum-edge-caddy"
        )
        return finding.level, finding.detail

    assert cert(6.5) == (
        WARN,
        "expires in 6.5 days (2026-12-13 00:00Z, issuer Pebble Intermediate CA 1a2b)",
    )
    assert cert(14.5)[0] == OK
    assert cert(-1) == (FAIL, "expired on 2026-12-05 12:00Z (issuer Pebble Intermediate CA 1a2b)")
    assert cert(0.4, tls="internal")[0] == OK  # Caddy's own CA issues 12-hour certificates and renews them
    assert cert(None, error="TLS handshake failed: TLSV1_ALERT_INTERNAL_ERROR") == (
        FAIL,
        "the edge serves no certificate for it: TLS handshake failed: TLSV1_ALERT_INTERNAL_ERROR",
    )
    not_live = doctor.check_certificates(site_facts(tls_note="the site is not live", certificates={}), NOW, "auto", "x")
    assert [(f.level, f.detail) for f in not_live] == [(OK, "not checked: the site is not live")]


def test_backup_and_records_decisions():
    def backups(hours: float | None, live: bool = True, problems: tuple[str, ...] = ()) -> list[tuple[str, str]]:
        newest = (NOW - dt.timedelta(hours=hours)).timestamp() if hours is not None else None
        facts = site_facts(newest_backup=newest, live=live, backup_problems=problems)
        return [(f.level, f.detail) for f in doctor.check_backups(facts, NOW)]

    assert backups(2) == [(OK, "the newest is 2.0h old")]
    old = "last good backup here is 30.0h old (max_age 26.0h)"
    failed = "the last backup failed at step upload (2026-12-06T10:00:00Z): restic said no"
    assert backups(30, problems=(old, failed)) == [(WARN, old), (WARN, failed)]
    assert backups(None) == [(WARN, "no backup yet")]
    assert backups(None, live=False, problems=(old,)) == []
    [finding] = doctor.check_backups(site_facts(backup_problems=(old,)), NOW)
    assert finding.fix == (
        "`sumbg backup acme` (`sumbg history acme` says why one failed); "
        "`sumbg schedule install` runs `sumbg backup --all` daily"
    )
    interrupted = site_facts(
        interrupted="an interrupted upgrade (stopped during step migrate, started x)",
        problems=("state.json says blue is live but Caddy's live file names green",),
    )
    assert [(f.check, f.level, f.fix) for f in doctor.check_records(interrupted)] == [
        ("operation", FAIL, "`sumbg recover acme`"),
        ("agreement", FAIL, "`sumbg recover acme`"),
    ]
    assert [f.level for f in doctor.check_records(site_facts(live=False))] == [WARN]
    assert [f.detail for f in doctor.check_records(site_facts(records_checked=False))] == [
        "not checked: the Docker engine does not answer"
    ]


def test_host_decisions():
    def levels(check, **changes: object) -> list[tuple[str, str]]:
        return [(f.level, f.detail) for f in check(host_facts(**changes))]

    assert levels(doctor.check_engine, engine_error="Cannot connect") == [
        (FAIL, "the Docker engine does not answer: Cannot connect")
    ]
    assert levels(doctor.check_compose, engine_error="x") == []
    assert levels(doctor.check_engine, versions=EngineVersions("19.03.2", "v2.40.3"))[0][0] == WARN
    assert levels(doctor.check_compose, versions=EngineVersions("28.0", "")) == [
        (FAIL, "Docker Compose v2 does not answer (`docker compose version`)")
    ]
    assert levels(doctor.check_compose, versions=EngineVersions("28.0", "docker-compose version 1.29.2"))[0][0] == FAIL
    assert levels(doctor.check_compose, versions=EngineVersions("28.0", "Docker Compose version v2.12.0"))[0][0] == WARN
    assert levels(doctor.check_edge, edge_running=False) == [(WARN, "not running yet (no site is live)")]
    assert levels(doctor.check_edge, edge_running=False, sites=(site_facts(),)) == [
        (FAIL, "not running: no site is served")
    ]
    old = "the edge runs Caddy v2.6.2; sumbg needs 2.9.0 or newer"
    assert levels(doctor.check_edge, edge_error=old) == [(FAIL, old)]
    ports = (
        PortFacts("http", "0.0.0.0", 80, False, True),
        PortFacts("https", "0.0.0.0", 443, False, None),
        PortFacts("preview", "127.0.0.1", 8081, False, False),
    )
    assert levels(doctor.check_ports, ports=ports, edge_running=False) == [
        (FAIL, "held by another program: the edge cannot publish it"),
        (WARN, "cannot tell whether it is free"),
        (OK, "free (the edge publishes it when it starts)"),
    ]
    assert levels(doctor.check_ports, ports=ports[2:])[0][0] == WARN  # the running edge does not publish it
    disks = (DiskFacts("root", "/srv/sum", 1 * 1024**3), DiskFacts("Docker data root", "/var/lib/docker", 3 * 1024**3))
    assert levels(doctor.check_disk, disks=disks) == [
        (FAIL, "1.0 GB free: an upgrade refuses under 2 GB (preflight.min_free_gb)"),
        (WARN, "3.0 GB free: close to the 2 GB an upgrade needs"),
    ]
    assert levels(doctor.check_clock, clock=ClockState(False, 16.0, "adjtimex")) == [
        (WARN, "the kernel says no NTP client keeps the clock in sync (adjtimex: unsynchronised)")
    ]
    assert levels(doctor.check_clock, clock=ClockState(None, how="not Linux"))[0] == (
        WARN,
        "cannot tell whether the clock is in sync (not Linux)",
    )


def test_one_fail_anywhere_makes_the_report_not_ok_and_tls_off_skips_certificates():
    facts = host_facts(
        tls="off",
        sites=(site_facts(domains={"acme.example": Resolution((), "Name or service not known")}, certificates={}),),
        invalid_sites=(("broken", "broken/site.toml: domains: must name at least one domain"),),
    )
    findings = doctor.decide(facts, NOW)
    assert [
        (f.check, f.subject, f.level) for f in findings if f.level != OK or f.check in ("certificate", "config")
    ] == [
        ("config", "broken", FAIL),
        ("certificate", "host", OK),
        ("dns", "acme: acme.example", FAIL),
    ]
    document = doctor.report(findings)
    assert (document["ok"], document["counts"]) == (False, {"ok": 11, "warn": 0, "fail": 2})


def test_expected_addresses_come_from_the_config_then_the_bind_address(tmp_path: Path, world: World):
    ctx = FakeContext(tmp_path, world)
    ctx.host = parse_host({"doctor": {"addresses": ["203.0.113.7"]}}, tmp_path)
    assert doctor.expected_addresses(ctx) == (("203.0.113.7",), "sumbg.toml [doctor] addresses")
    ctx.host = parse_host({"edge": {"bind": "198.51.100.4"}}, tmp_path)
    assert doctor.expected_addresses(ctx) == (("198.51.100.4",), "[edge] bind")
    ctx.host = HostConfig(root=tmp_path)
    found, where = doctor.expected_addresses(ctx)
    assert where == "this host's interfaces" and "127.0.0.1" not in found and "::1" not in found


# ---------------------------------------------------------------- the command line


def test_sumbg_alone_lists_every_command_in_its_group():
    result = CliRunner().invoke(cli, [])
    assert result.exit_code == 0
    headings = [line for line in result.output.splitlines() if line.endswith("commands:")]
    assert headings == [f"{title} commands:" for title, _ in COMMAND_GROUPS]
    listed = [name for _, names in COMMAND_GROUPS for name in names]
    visible = [name for name, command in cli.commands.items() if not command.hidden]  # sumbg's own helpers are not
    assert sorted(listed) == sorted(visible) and len(listed) == len(set(listed))
    commands_part = result.output.split("Deploy commands:", 1)[1]
    order = [line.split()[0] for line in commands_part.splitlines() if line.startswith("  ") and line[2] != " "]
    assert order == listed


def every_command(group: click.Group = cli, prefix: str = "") -> dict[str, click.Command]:
    found: dict[str, click.Command] = {}
    for name, command in group.commands.items():
        if command.hidden:  # started by sumbg itself (the worker's drainer), not by an operator
            continue
        found[f"{prefix}{name}"] = command
        if isinstance(command, click.Group):
            found.update(every_command(command, f"{prefix}{name} "))
    return found


@pytest.mark.parametrize("path", sorted(every_command()))
def test_every_commands_help_shows_one_example(path: str):
    result = CliRunner().invoke(cli, [*path.split(), "--help"])
    assert result.exit_code == 0, result.output
    assert result.output.endswith(f"\n  Example:\n    {EXAMPLES[path]}\n")
    assert EXAMPLES[path].startswith(f"sumbg {path}")


def test_completion_prints_clicks_script_for_each_shell():
    for shell, marker in (
        ("bash", "_SUMBG_COMPLETE=bash_complete"),
        ("zsh", "#compdef sumbg"),
        ("fish", "_SUMBG_COMPLETE=fish_complete"),
    ):
        result = CliRunner().invoke(cli, ["completion", shell])
        assert result.exit_code == 0 and marker in result.output, result.output
    assert CliRunner().invoke(cli, ["completion", "tcsh"]).exit_code == 2


def test_completion_offers_the_roots_slugs_and_the_sites_tags(tmp_path: Path, monkeypatch):
    for slug in ("acme", "acme-shop", "beta"):
        (tmp_path / slug).mkdir()
        (tmp_path / slug / "site.toml").write_text("")
    (tmp_path / "not-a-site").mkdir()
    repo = tmp_path / "work"
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.test", "-C", str(repo)]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "one"], check=True)
    for tag in ("v1.0.0", "v1.9.0", "v1.10.0", "other"):
        subprocess.run([*git, "tag", tag], check=True)
    subprocess.run(["git", "clone", "-q", "--mirror", str(repo), str(tmp_path / "acme" / "repo.git")], check=True)
    monkeypatch.setenv("SUMBG_ROOT", str(tmp_path))

    def complete(*words: str) -> list[str]:
        return [
            item.value
            for item in ShellComplete(cli, {}, "sumbg", "_SUMBG_COMPLETE").get_completions(list(words[:-1]), words[-1])
        ]

    assert complete("upgrade", "ac") == ["acme", "acme-shop"]
    assert complete("logs", "") == ["acme", "acme-shop", "beta"]
    assert complete("upgrade", "acme", "v1") == ["v1.10.0", "v1.9.0", "v1.0.0"]
    monkeypatch.setenv("COMP_WORDS", "sumbg logs acme --release ")  # as the shell's script passes them
    assert complete("logs", "acme", "--release", "") == ["v1.10.0", "v1.9.0", "v1.0.0", "other"]
    monkeypatch.delenv("COMP_WORDS")
    assert complete("upgrade", "beta", "") == []  # no mirror: nothing, and no error
    monkeypatch.delenv("SUMBG_ROOT")
    assert complete("--root", str(tmp_path), "status", "b") == ["beta"]


def test_manage_without_a_site_or_with_a_bad_option_is_a_usage_error(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("SUMBG_ROOT", str(tmp_path))
    runner = CliRunner()
    assert runner.invoke(cli, ["manage"]).exit_code == 2
    result = runner.invoke(cli, ["manage", "acme", "--colour", "purple", "--", "check"])
    assert result.exit_code == 2 and "'purple' is not one of 'live', 'idle', 'blue', 'green'" in result.output
    missing = runner.invoke(cli, ["manage", "nope", "--", "check"])
    assert isinstance(missing.exception, SumbgError) and exit_code_of(missing.exception) == 2


def test_gather_reads_the_facts_through_the_seams(tmp_path: Path, world: World, ctx: FakeContext, monkeypatch):
    deployed(tmp_path, world, live=("blue", "v1.1.0"), idle=("green", "v1.0.0"))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "site.toml").write_text('slug = "broken"\n')
    world.published["sum-edge-caddy"] = [80, 443, 8081]
    # A complete backup an hour ago (dump and manifest), and a later dump without a manifest (not a good one).
    taken = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=1)
    backups = tmp_path / "acme" / "backups"
    world.backups_taken = ["acme_a.dump", "acme_b.dump"]
    (backups / "acme_a.dump").write_text("x")
    (backups / "acme_b.dump").write_text("x")
    BackupSet(backups).write(Manifest("acme_a.dump", "acme", "manual", taken.strftime("%Y-%m-%dT%H:%M:%SZ")))
    asked: list[tuple[str, int, str]] = []
    monkeypatch.setattr(doctor.hostinfo, "resolve", lambda name: Resolution(("203.0.113.7",)))
    monkeypatch.setattr(
        doctor.probe,
        "certificate_served",
        lambda address, port, name: asked.append((address, port, name)) or (ServedCertificate("R11", NOW), ""),
    )
    facts = doctor.gather(ctx)
    assert (facts.engine_error, facts.edge_running, facts.edge_version, facts.tls) == ("", True, "v2.11.7", "auto")
    assert [(p.role, p.port, p.held_by_edge) for p in facts.ports] == [
        ("http", 80, True),
        ("https", 443, True),
        ("preview", 8081, True),
    ]
    assert [d.label for d in facts.disks] == ["root", "Docker data root"]
    assert facts.invalid_sites == (("broken", "site.toml: domains: is required"),)
    assert facts.sites == (
        SiteFacts(
            slug="acme",
            live=True,
            domains={"acme.example.test": Resolution(("203.0.113.7",))},
            certificates={"acme.example.test": (ServedCertificate("R11", NOW), "")},
            newest_backup=taken.timestamp(),
        ),
    )
    assert asked == [("127.0.0.1", 443, "acme.example.test")]
    world.files["live"] = "green"  # Caddy's live file edited by hand
    world.edge_running = False
    again = doctor.gather(ctx)
    assert again.sites[0].problems == (
        "state.json says blue is live but Caddy's live file names green",
        "Caddy answers with v1.0.0 (v1.0.0-sha) but state.json records v1.1.0 (v1.1.0-sha) as live",
    )
    assert again.sites[0].tls_note == "the edge is not running" and again.sites[0].certificates == {}


def test_network_and_worker_decisions():
    stray = "acme: its network sum-acme is outside the address plan (made by an older sumbg)"
    assert [(f.check, f.level, f.detail) for f in doctor.check_network(host_facts(network_problems=(stray,)))] == [
        ("network", WARN, stray)
    ]
    assert doctor.check_network(host_facts(network_problems=None)) == []  # the engine did not answer
    down = "the live colour green's worker is restarting (12 restarts, last exit code 1)"
    assert doctor.check_worker(site_facts(worker_problem=down)) == [
        Finding("worker", "acme", FAIL, down, "`sumbg logs acme --worker` says why")
    ]
    findings = doctor.decide(host_facts(sites=(site_facts(worker_problem=down),)), NOW)
    assert doctor.report(findings)["ok"] is False
    assert doctor.check_worker(site_facts()) == []
