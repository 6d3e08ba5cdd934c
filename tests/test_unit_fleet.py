"""The fleet's pure parts (fleet file, selection, plan, schedule, run record) and its driver
over fake host links: whole outcomes, in milliseconds."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sumbg.adapters.ssh import HostLink, HostLinkProtocol, Reply
from sumbg.config import FleetConfig, FleetHost, load_fleet
from sumbg.errors import ConfigError, HostUnreachable, LockHeld, UsageError
from sumbg.fleet.answers import HostStatus, Rollback, SiteReleases, SiteView, Tag, read_releases, read_status
from sumbg.fleet.driver import FleetDriver, upgrade_fleet
from sumbg.fleet.plan import Move, Schedule, choose_release, plan_moves, select
from sumbg.fleet.run import (
    FleetRun,
    Outcome,
    OutcomeState,
    RunOptions,
    RunStore,
    exit_code,
    passed,
    resume_options,
)
from sumbg.fleet.view import HostView, matrix
from sumbg.ops.status import release_key

# ------------------------------------------------------------------ fleet file


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "fleet.toml"
    path.write_text(text)
    return path


def test_a_fleet_file_is_read_with_its_defaults(tmp_path: Path) -> None:
    fleet = load_fleet(
        write(
            tmp_path,
            '[ssh]\nconfig = "ssh_config"\n\n[hosts.vps-a]\nssh = "deploy@vps-a.example.com"\n'
            '\n[hosts.here]\nssh = "local"\nroot = "/srv/other"\nsumbg = "/opt/sumbg/bin/sumbg"\n'
            '\n[groups]\nkitchens = ["acme", "vps-a/bobs"]\n',
        )
    )
    assert fleet == FleetConfig(
        path=tmp_path / "fleet.toml",
        hosts=(
            FleetHost("vps-a", "deploy@vps-a.example.com"),
            FleetHost("here", "local", root="/srv/other", sumbg="/opt/sumbg/bin/sumbg"),
        ),
        groups={"kitchens": ("acme", "vps-a/bobs")},
        parallel=1,
        max_parallel=4,
        ssh_config=tmp_path / "ssh_config",
        connect_timeout=10,
        runs_dir=tmp_path / ".sumbg-fleet",
        matrix=tmp_path / "SITES.md",
    )


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "fleet.toml: hosts: at least one host is needed"),
        ('[hosts.a]\nssh = "-oProxyCommand=evil"\n', "fleet.toml: hosts.a.ssh: must be an SSH destination"),
        ('[hosts.a]\nssh = "root@host:22"\n', "fleet.toml: hosts.a.ssh: must be an SSH destination"),
        ('[hosts.a]\nssh = "a b"\n', "fleet.toml: hosts.a.ssh: must be an SSH destination"),
        ('[hosts.A]\nssh = "a"\n', "fleet.toml: hosts.A: a host name must match"),
        ('[hosts.a]\nssh = "a"\nroot = "srv"\n', "fleet.toml: hosts.a.root: must be an absolute path"),
        ('[hosts.a]\nssh = "a"\nport = 22\n', "fleet.toml: hosts.a.port: unknown setting"),
        ('[fleet]\nparallel = 0\n[hosts.a]\nssh = "a"\n', "fleet.toml: fleet.parallel: must be greater than 0"),
        ('[groups]\nk = []\n[hosts.a]\nssh = "a"\n', "fleet.toml: groups.k: must be NAME = ["),
    ],
)
def test_a_bad_fleet_file_says_where(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_fleet(write(tmp_path, text))
    assert caught.value.message.startswith(message)


def test_ssh_uri_destinations_with_a_port_are_accepted(tmp_path: Path) -> None:
    fleet = load_fleet(write(tmp_path, '[hosts.a]\nssh = "ssh://deploy@10.0.0.5:2222"\n'))
    assert fleet.hosts[0].ssh == "ssh://deploy@10.0.0.5:2222"


# ------------------------------------------------------------------ the link's command line


def test_the_remote_command_is_one_quoted_sumbg_call_that_outlives_a_dropped_link(tmp_path: Path) -> None:
    fleet = FleetConfig(path=tmp_path / "fleet.toml", hosts=(), ssh_config=tmp_path / "ssh_config", connect_timeout=7)
    link = HostLink(fleet, FleetHost("a", "deploy@a", root="/srv/sum", sumbg="sudo -n /opt/sumbg"))
    assert link.argv(["upgrade", "acme", "v1.2.0; rm -rf /", "--json"]) == [
        "ssh",
        "-F",
        str(tmp_path / "ssh_config"),
        "-o",
        "BatchMode=yes",
        "-o",
        "ConnectTimeout=7",
        "-o",
        "ServerAliveInterval=15",
        "-o",
        "ServerAliveCountMax=4",
        "deploy@a",
        "trap '' HUP; exec sudo -n /opt/sumbg --root /srv/sum upgrade acme 'v1.2.0; rm -rf /' --json",
    ]


def test_a_local_host_runs_this_sumbg_without_ssh(tmp_path: Path) -> None:
    import sys

    link = HostLink(FleetConfig(path=tmp_path / "f.toml", hosts=()), FleetHost("here", "local", root="/r"))
    assert link.argv(["status", "--json"]) == [sys.executable, "-m", "sumbg.cli", "--root", "/r", "status", "--json"]


def test_ssh_failures_become_one_line_naming_the_host(tmp_path: Path) -> None:
    fleet = FleetConfig(path=tmp_path / "fleet.toml", hosts=(), connect_timeout=2)
    host = FleetHost("gone", "ssh://nobody@127.0.0.1:1")
    with pytest.raises(HostUnreachable) as caught:
        HostLink(fleet, host).query(["status"], timeout=30)
    assert caught.value.message == (
        "host gone (ssh://nobody@127.0.0.1:1) is unreachable: connect to host 127.0.0.1 port 1: Connection refused"
    )


# ------------------------------------------------------------------ reading the hosts' answers


def test_a_status_answer_is_read_into_typed_sites() -> None:
    answer = {
        "sumbg": "0.1.0",
        "host": "vps-a",
        "sites": [
            site(
                "acme",
                domain="acme.example",
                domains=["acme.example", "www.acme.example"],
                environment="production",
                notes="",
                deployed_at="2026-11-27T10:00:00Z",
                last_deploy_outcome="upgrade done (2026-11-27T10:00:00Z)",
                health={"http_status": 200, "status": "ok", "version": {}, "error": None},
                rollback={"possible": True, "colour": "green", "ref": "v0.9.0", "instant": True},
                caddy={"live": "blue"},
            ),
            site(
                "shop",
                live=None,
                domain="shop.example",
                health={"http_status": 0, "status": None, "error": "ConnectError: refused"},
                operation={"kind": "upgrade", "started_at": "..."},
                interrupted=True,
                agreement={"agree": False, "problems": ["Caddy's live file names green"], "notes": []},
            ),
            {"site": "bare"},
        ],
    }
    assert read_status("vps-a", answer) == HostStatus(
        sumbg="0.1.0",
        sites=(
            SiteView(
                slug="acme",
                domain="acme.example",
                domains=("acme.example", "www.acme.example"),
                environment="production",
                notes="",
                live="blue",
                ref="v1.0.0",
                sum_core="0.6.3",
                deployed_at="2026-11-27T10:00:00Z",
                last_deploy_outcome="upgrade done (2026-11-27T10:00:00Z)",
                health="ok",
                rollback=Rollback(possible=True, instant=True, ref="v0.9.0"),
            ),
            SiteView(
                slug="shop",
                domain="shop.example",
                domains=("shop.example",),
                ref="v1.0.0",
                sum_core="0.6.3",
                health="ConnectError: refused",
                problems=("Caddy's live file names green",),
                operation="upgrade",
                interrupted=True,
            ),
            SiteView(slug="bare"),
        ),
    )
    # The health is the app's own word, which sumbg does not control: shown whatever it is.
    assert read_status("a", {"sites": [{"site": "x", "health": {"status": ["odd"]}}]}).sites[0].health == "['odd']"
    assert read_status("a", {"sites": [{"site": "x", "health": {"http_status": 503}}]}).sites[0].health == 503


@pytest.mark.parametrize(
    "answer, where",
    [
        ({"sites": {"acme": {}}}, "sites: a list was expected, not dict"),
        ({"sites": ["acme"]}, "sites[0]: an object was expected, not str"),
        ({"sites": [{"ref": "v1"}]}, "sites[0].site: missing"),
        ({"sites": [{"site": "acme"}, {"site": "shop", "ref": 7}]}, "sites[1].ref: text was expected, not int"),
        ({"sites": [{"site": "acme", "rollback": {"ref": 1}}]}, "sites[0].rollback.ref: text was expected, not int"),
        ({"sites": [{"site": "acme", "agreement": {"problems": [1]}}]}, "sites[0].agreement.problems: a list of text"),
        ({"sites": [{"site": "acme", "operation": "upgrade"}]}, "sites[0].operation: an object was expected, not str"),
    ],
)
def test_a_status_answer_of_another_shape_is_one_line_naming_the_host_and_the_place(
    answer: dict[str, Any], where: str
) -> None:
    with pytest.raises(HostUnreachable) as caught:
        read_status("vps-a", answer)
    assert caught.value.message.startswith(f"host vps-a: `sumbg status` answered what this sumbg cannot read: {where}")


def test_a_releases_answer_is_read_by_slug_and_one_of_another_shape_names_the_place() -> None:
    answer = {
        "sites": [
            {
                "site": "acme",
                "repo": "https://git.example/acme.git",
                "fetched": True,
                "note": None,
                **tags(("v2", "0.7.0")),
            },
            {"site": "shop", "fetched": False, "note": "not fetched: site busy", "tags": []},
        ]
    }
    assert read_releases("a", answer) == {
        "acme": SiteReleases(tags=(Tag("v2", "v2v2", "0.7.0"),)),
        "shop": SiteReleases(note="not fetched: site busy"),
    }
    with pytest.raises(HostUnreachable) as caught:
        read_releases("a", {"sites": [{"site": "acme", "tags": [{"commit": "abc"}]}]})
    assert caught.value.message == (
        "host a: `sumbg releases` answered what this sumbg cannot read: sites[0].tags[0].tag: missing"
    )


# ------------------------------------------------------------------ selection and plan

FLEET = FleetConfig(
    path=Path("/f/fleet.toml"),
    hosts=(FleetHost("a", "a"), FleetHost("b", "b"), FleetHost("c", "c")),
    groups={"kitchens": ("acme", "b/bobs")},
)


def site(slug: str, ref: str = "v1.0.0", core: str = "0.6.3", **extra: Any) -> dict[str, Any]:
    return {
        "site": slug,
        "ref": ref,
        "sum_core": core,
        "live": "blue",
        "operation": None,
        "agreement": {"problems": []},
        **extra,
    }


VIEWS = [
    HostView.answered(FLEET.hosts[0], {"sites": [site("acme"), site("shop")]}),
    HostView.answered(FLEET.hosts[1], {"sites": [site("acme"), site("bobs")]}),
    HostView(FLEET.hosts[2], error="host c (c) is unreachable: timed out"),
]


def test_selection_takes_slugs_hosts_and_groups_in_fleet_order() -> None:
    assert select(FLEET, VIEWS, ()) == ["a/acme", "a/shop", "b/acme", "b/bobs"]
    assert select(FLEET, VIEWS, ("kitchens",)) == ["a/acme", "b/acme", "b/bobs"]
    assert select(FLEET, VIEWS, ("b/bobs,shop",)) == ["a/shop", "b/bobs"]
    assert select(FLEET, VIEWS, ("c/thing",)) == ["c/thing"]  # on a host that did not answer
    with pytest.raises(UsageError) as caught:
        select(FLEET, VIEWS, ("nosuch",))
    assert caught.value.message == "no site 'nosuch' on any host of fleet.toml (unreachable: c; name it as HOST/nosuch)"
    with pytest.raises(UsageError):
        select(FLEET, VIEWS, ("zz/acme",))


def tags(*pairs: tuple[str, str]) -> dict[str, Any]:
    """A site's entry in `sumbg releases --json` (without its slug)."""
    return {"tags": [{"tag": tag, "commit": tag * 2, "sum_core": core, "date": 0} for tag, core in pairs]}


def read(answers: dict[str, dict[str, Any]]) -> dict[str, SiteReleases]:
    """host/slug -> releases, as the driver reads them from each host's `sumbg releases --json`."""
    return {
        name: read_releases(name.split("/")[0], {"sites": [{"site": name.split("/")[1], **answer}]})[name.split("/")[1]]
        for name, answer in answers.items()
    }


def test_the_release_is_the_newest_tag_pinning_the_core() -> None:
    found = read({"a/acme": tags(("v1.3.0", "0.8.0"), ("v1.2.1", "0.7.0"), ("v1.2.0", "0.7.0"))})["a/acme"].tags
    assert choose_release(found, "0.7.0") == Tag("v1.2.1", "v1.2.1v1.2.1", "0.7.0")
    assert choose_release(found, "v0.8.0") == Tag("v1.3.0", "v1.3.0v1.3.0", "0.8.0")
    assert choose_release(found, "0.9.0") is None
    ordered = sorted(
        [("v1.9.0", 5), ("v1.10.0", 1), ("nightly", 9), ("v1.10.0-hotfix", 3)],
        key=lambda t: release_key(*t),
        reverse=True,
    )
    assert [t[0] for t in ordered] == ["v1.10.0-hotfix", "v1.10.0", "v1.9.0", "nightly"]


def test_the_plan_puts_canaries_first_and_says_why_each_skipped_site_is_skipped() -> None:
    views = [
        HostView.answered(
            FLEET.hosts[0],
            {
                "sites": [
                    site("acme"),
                    site("shop", ref="v1.2.0", core="0.7.0"),
                    site("busy", operation={"kind": "upgrade"}),
                    site("odd", agreement={"problems": ["Caddy's live file names green"]}),
                    site("old"),
                    site("lost"),
                ]
            },
        ),
        HostView.answered(FLEET.hosts[1], {"sites": [site("bobs")]}),
        HostView(FLEET.hosts[2], error="unreachable"),
    ]
    answers = {
        "a/acme": tags(("v1.2.0", "0.7.0")),
        "a/shop": tags(("v1.2.0", "0.7.0")),
        "a/busy": tags(("v1.2.0", "0.7.0")),
        "a/odd": tags(("v1.2.0", "0.7.0")),
        "a/old": {"tags": [], "note": "not fetched: site busy"},
        "a/lost": {"error": "git fetch failed"},
        "b/bobs": tags(("v2.0.0", "0.7.0")),
    }
    releases = read(answers)
    selected = ["a/acme", "a/shop", "a/busy", "a/odd", "a/old", "a/lost", "b/bobs", "c/thing"]
    moves = plan_moves("0.7.0", selected, views, releases, canaries=("b/bobs",))
    assert [(m.site, m.canary, m.to_ref, m.skip) for m in moves] == [
        ("b/bobs", True, "v2.0.0", None),
        ("a/acme", False, "v1.2.0", None),
        ("a/shop", False, None, "already on sum-core 0.7.0 (v1.2.0)"),
        ("a/busy", False, None, "an operation (upgrade) is running or was interrupted on it"),
        (
            "a/odd",
            False,
            None,
            "its records and what serves it disagree (Caddy's live file names green): run `sumbg recover` on its host",
        ),
        ("a/old", False, None, "no tag of its repo pins sum-core 0.7.0 (not fetched: site busy)"),
        ("a/lost", False, None, "its releases could not be read: git fetch failed"),
        ("c/thing", False, None, "host unreachable: unreachable"),
    ]


# ------------------------------------------------------------------ schedule


def moves(*names: str, canary: tuple[str, ...] = ()) -> list[Move]:
    return [Move(name, to_ref="v2", canary=name in canary) for name in names]


def test_canaries_go_alone_one_after_the_other_then_the_rest_within_both_limits() -> None:
    plan = moves("a/c1", "b/c2", "a/x", "a/y", "b/z", "c/w", canary=("a/c1", "b/c2"))
    plan = [plan[0], plan[1], *plan[2:]]
    schedule = Schedule(plan, per_host=1, fleet_limit=2)
    assert [m.site for m in schedule.start_now()] == ["a/c1"]
    assert schedule.start_now() == []
    schedule.done(plan[0], ok=True)
    assert [m.site for m in schedule.start_now()] == ["b/c2"]
    schedule.done(plan[1], ok=True)
    assert [m.site for m in schedule.start_now()] == ["a/x", "b/z"]  # one per host, two in all
    schedule.done(plan[4], ok=True)
    assert [m.site for m in schedule.start_now()] == ["c/w"]  # a/y waits for a/x
    schedule.done(plan[2], ok=True)
    assert [m.site for m in schedule.start_now()] == ["a/y"]
    assert schedule.start_now() == []  # nothing left to start
    schedule.done(plan[5], ok=True)
    schedule.done(plan[3], ok=True)
    assert schedule.finished and not schedule.stopped and schedule.not_tried() == []


def test_the_first_failure_stops_new_upgrades_and_lets_running_ones_finish() -> None:
    plan = moves("a/x", "b/y", "a/z", "b/w")
    schedule = Schedule(plan, per_host=1, fleet_limit=4)
    assert [m.site for m in schedule.start_now()] == ["a/x", "b/y"]
    schedule.done(plan[0], ok=False)
    assert schedule.start_now() == [] and not schedule.finished  # b/y still running
    schedule.done(plan[1], ok=True)
    assert schedule.finished and [m.site for m in schedule.not_tried()] == ["a/z", "b/w"]


def test_a_failed_canary_means_nothing_else_is_tried() -> None:
    plan = moves("a/c", "a/x", "b/y", canary=("a/c",))
    schedule = Schedule(plan, per_host=2, fleet_limit=4)
    schedule.start_now()
    schedule.done(plan[0], ok=False)
    assert schedule.finished and [m.site for m in schedule.not_tried()] == ["a/x", "b/y"]


# ------------------------------------------------------------------ run record and resume


def test_a_run_survives_its_file_and_resume_keeps_its_own_choices(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    run = FleetRun(
        "20261127T120000Z-core-0.7.0",
        "0.7.0",
        RunOptions(sites=("kitchens",), canaries=("a/acme",), watch=3, parallel=1, max_parallel=4),
    )
    run.moves = {
        "a/acme": Outcome("a/acme", "upgraded", "v1", "v2", canary=True),
        "b/bobs": Outcome("b/bobs", "failed", "v1", "v2", reason="step smoke: / answered 500"),
    }
    run.outcome = "stopped"
    store.save(run)
    again = store.last_unfinished()
    assert again is not None
    assert again.document() == run.document()
    assert oct((tmp_path / f"{run.id}.json").stat().st_mode & 0o777) == "0o600"
    assert resume_options(again, parallel=3, max_parallel=None).document() == {
        "sites": ["kitchens"],
        "canaries": ["a/acme"],
        "watch": 3,
        "parallel": 3,
        "max_parallel": 4,
    }
    assert passed(again) == {"a/acme"} and passed(None) == set()
    assert exit_code(again) == 1
    run.outcome = "done"
    store.save(run)
    assert store.last_unfinished() is None


def test_exit_codes_say_how_the_fleet_was_left() -> None:
    def run_with(*states: OutcomeState, unreachable: dict[str, str] | None = None) -> FleetRun:
        options = RunOptions(sites=(), canaries=(), watch=None, parallel=1, max_parallel=4)
        run = FleetRun("r", "1", options, unreachable=unreachable or {})
        run.moves = {str(i): Outcome(str(i), state) for i, state in enumerate(states)}
        return run

    assert exit_code(run_with("upgraded", "skipped")) == 0
    assert exit_code(run_with("upgraded", "failed", "not-tried")) == 1
    assert exit_code(run_with("upgraded", unreachable={"c": "down"})) == 1
    assert exit_code(run_with("failed", "needs-operator")) == 3
    assert exit_code(run_with("lost")) == 3


def test_the_fleet_matrix_has_a_host_column_and_a_row_for_a_host_that_did_not_answer() -> None:
    views = [
        HostView.answered(
            FLEET.hosts[0],
            {
                "sites": [
                    site(
                        "acme",
                        domain="acme.example",
                        environment="production",
                        deployed_at="2026-11-27T10:00:00Z",
                        notes="",
                        last_deploy_outcome="upgrade done (2026-11-27T10:00:00Z)",
                        workers={
                            "blue": {"state": "running", "restart_count": 0, "exit_code": None},
                            "green": {"state": "stopped", "restart_count": 2, "exit_code": 0},
                        },
                    )
                ]
            },
        ),
        HostView(FLEET.hosts[2], error="host c (c) is unreachable: timed out"),
    ]
    assert matrix(views).splitlines()[4:] == [
        "| Host | Site | Environment | Slug | Current Version | Last Deploy Date | Last Upgrade Outcome | Notes | Worker |",
        "|---|---|---|---|---|---|---|---|---|",
        "| a | acme.example | production | acme | v1.0.0 | 2026-11-27T10:00:00Z | upgrade done (2026-11-27T10:00:00Z) "
        "| - | blue (live) running; green stopped (exit 0) |",
        "| c | - | - | - | - | - | - | UNREACHABLE: host c (c) is unreachable: timed out | - |",
    ]


# ------------------------------------------------------------------ the driver, over fake links


class FakeHosts:
    """Every host's answers: its sites, their tags, and how each upgrade ends."""

    def __init__(
        self,
        sites: dict[str, list[dict[str, Any]]],
        tags_of: dict[str, dict[str, Any]],
        upgrades: dict[str, int | Exception],  # host/slug -> sumbg's exit code there, or what breaks the link
        down: tuple[str, ...] = (),
    ) -> None:
        self.sites = sites
        self.tags_of = tags_of
        self.upgrades = upgrades
        self.down = down
        self.calls: list[tuple[str, tuple[str, ...]]] = []
        self.lock = threading.Lock()

    def link(self, host: FleetHost) -> HostLinkProtocol:
        return FakeLink(self, host)  # mypy holds the fake to the Protocol the driver depends on


class FakeLink:
    """A host's sumbg as the driver sees it through HostLinkProtocol: answers from FakeHosts."""

    def __init__(self, hosts: FakeHosts, host: FleetHost) -> None:
        self.hosts = hosts
        self.host = host

    def query(self, args: list[str], *, timeout: float, answered_exits: tuple[int, ...] = (0,)) -> dict[str, Any]:
        if self.host.name in self.hosts.down:
            raise HostUnreachable(f"host {self.host.name} ({self.host.ssh}) is unreachable: Connection refused")
        with self.hosts.lock:
            self.hosts.calls.append((self.host.name, tuple(args)))
        if args[0] == "status":
            return {"sites": self.hosts.sites[self.host.name]}
        return {"sites": [{"site": slug, **self.hosts.tags_of[f"{self.host.name}/{slug}"]} for slug in args[1:]]}

    def call(
        self, args: list[str], *, timeout: float | None = None, on_line: Callable[[str], None] | None = None
    ) -> Reply:
        name = f"{self.host.name}/{args[1]}"
        with self.hosts.lock:
            self.hosts.calls.append((self.host.name, tuple(args)))
        code = self.hosts.upgrades[name]
        if isinstance(code, Exception):
            raise code
        if on_line:
            on_line("  -> build: ...")
        if code == 0:
            for item in self.hosts.sites[self.host.name]:
                if item["site"] == args[1]:
                    item.update(ref=args[2], sum_core="0.7.0")
            return Reply(0, {"outcome": "done"}, "")
        return Reply(code, {"outcome": "failed", "step": "smoke", "message": "/ answered 500"}, "sumbg: error: ...")


def fleet_at(tmp_path: Path, *names: str) -> FleetConfig:
    return FleetConfig(
        path=tmp_path / "fleet.toml",
        hosts=tuple(FleetHost(n, n) for n in names),
        runs_dir=tmp_path / "runs",
        matrix=tmp_path / "SITES.md",
    )


def drive(fleet: FleetConfig, hosts: FakeHosts, **options: Any) -> tuple[dict[str, Any], int, list[str]]:
    said: list[str] = []
    driver = FleetDriver(fleet, said.append, link=hosts.link)
    document, lines, code = upgrade_fleet(
        fleet, options.pop("core", "0.7.0"), say=said.append, driver=driver, **options
    )
    return document, code, said


def upgrade_calls(hosts: FakeHosts) -> list[str]:
    return [f"{host}/{args[1]} {args[2]}" for host, args in hosts.calls if args[0] == "upgrade"]


def test_a_fleet_upgrade_moves_every_site_canary_first(tmp_path: Path) -> None:
    fleet = fleet_at(tmp_path, "a", "b")
    hosts = FakeHosts(
        {"a": [site("acme"), site("shop")], "b": [site("bobs")]},
        {"a/acme": tags(("v2", "0.7.0")), "a/shop": tags(("v3", "0.7.0")), "b/bobs": tags(("v2", "0.7.0"))},
        {"a/acme": 0, "a/shop": 0, "b/bobs": 0},
    )
    document, code, said = drive(fleet, hosts, canaries=("b/bobs",), watch=5.0)
    assert code == 0 and document["outcome"] == "done"
    assert upgrade_calls(hosts)[0] == "b/bobs v2"
    assert sorted(upgrade_calls(hosts)) == ["a/acme v2", "a/shop v3", "b/bobs v2"]
    assert ("b", ("upgrade", "bobs", "v2", "--yes", "--json", "--watch", "5")) in hosts.calls
    assert {m["site"]: m["state"] for m in document["moves"]} == {
        "a/acme": "upgraded",
        "a/shop": "upgraded",
        "b/bobs": "upgraded",
    }
    assert "  [b/bobs]   -> build: ..." in said
    assert "| a | - | - | acme | v2 |" in (tmp_path / "SITES.md").read_text()


def test_a_failure_stops_the_run_and_resume_goes_on_without_redoing_what_was_done(tmp_path: Path) -> None:
    fleet = fleet_at(tmp_path, "a")
    hosts = FakeHosts(
        {"a": [site("acme"), site("bobs"), site("shop")]},
        {"a/acme": tags(("v2", "0.7.0")), "a/bobs": tags(("v2", "0.7.0")), "a/shop": tags(("v2", "0.7.0"))},
        {"a/acme": 0, "a/bobs": 1, "a/shop": 0},
    )
    document, code, _ = drive(fleet, hosts, canaries=("acme",))
    assert code == 1 and document["outcome"] == "stopped"
    assert [(m["site"], m["state"], m["reason"]) for m in document["moves"]] == [
        ("a/acme", "upgraded", None),
        ("a/bobs", "failed", "step smoke: / answered 500"),
        ("a/shop", "not-tried", "the run stopped at the first failure"),
    ]
    hosts.upgrades["a/bobs"] = 0
    hosts.calls.clear()
    resumed, code, said = drive(fleet, hosts, core=None, resume=True)
    assert code == 0 and resumed["id"] == document["id"] and resumed["outcome"] == "done"
    assert upgrade_calls(hosts) == ["a/bobs v2", "a/shop v2"]
    assert [(m["site"], m["state"]) for m in resumed["moves"]] == [
        ("a/acme", "upgraded"),
        ("a/bobs", "upgraded"),
        ("a/shop", "upgraded"),
    ]
    assert said[0].startswith(f"resuming fleet run {document['id']} (sum-core 0.7.0")
    with pytest.raises(UsageError) as caught:
        drive(fleet, hosts, core=None, resume=True)
    assert caught.value.message == f"no stopped fleet run to resume in {tmp_path / 'runs'}"


def test_an_unreachable_host_is_reported_and_the_others_still_move(tmp_path: Path) -> None:
    fleet = fleet_at(tmp_path, "a", "c")
    hosts = FakeHosts({"a": [site("acme")]}, {"a/acme": tags(("v2", "0.7.0"))}, {"a/acme": 0}, down=("c",))
    document, code, _ = drive(fleet, hosts)
    assert code == 1 and document["outcome"] == "stopped"
    assert document["unreachable"] == {"c": "host c (c) is unreachable: Connection refused"}
    assert [(m["site"], m["state"]) for m in document["moves"]] == [("a/acme", "upgraded")]


def test_a_canary_that_cannot_move_refuses_the_run_before_anything_starts(tmp_path: Path) -> None:
    fleet = fleet_at(tmp_path, "a")
    hosts = FakeHosts(
        {"a": [site("acme"), site("shop")]},
        {"a/acme": tags(("v2", "0.6.0")), "a/shop": tags(("v2", "0.7.0"))},
        {"a/shop": 0},
    )
    with pytest.raises(UsageError) as caught:
        drive(fleet, hosts, canaries=("acme",))
    assert caught.value.message == (
        "canary a/acme cannot be upgraded (no tag of its repo pins sum-core 0.7.0); choose another canary or none"
    )
    assert upgrade_calls(hosts) == [] and not list((tmp_path / "runs").glob("*.json"))


def test_the_dry_run_lists_the_plan_and_upgrades_nothing(tmp_path: Path) -> None:
    fleet = fleet_at(tmp_path, "a")
    hosts = FakeHosts(
        {"a": [site("acme"), site("shop", core="0.7.0", ref="v2")]},
        {"a/acme": tags(("v2", "0.7.0")), "a/shop": tags(("v2", "0.7.0"))},
        {},
    )
    document, code, _ = drive(fleet, hosts, dry_run=True)
    assert code == 0 and upgrade_calls(hosts) == []
    assert [(m["site"], m["to_ref"], m["skip"]) for m in document["moves"]] == [
        ("a/acme", "v2", None),
        ("a/shop", None, "already on sum-core 0.7.0 (v2)"),
    ]


def test_two_fleet_upgrades_do_not_run_at_once(tmp_path: Path) -> None:
    fleet = fleet_at(tmp_path, "a")
    holder = RunStore(fleet.runs_dir).lock().acquire(command="sumbg fleet upgrade")
    try:
        with pytest.raises(LockHeld):
            drive(fleet, FakeHosts({"a": []}, {}, {}))
    finally:
        holder.release()
    assert json.loads(json.dumps(drive(fleet, FakeHosts({"a": []}, {}, {}))[0]))["outcome"] == "done"


def test_a_link_lost_mid_upgrade_is_reported_as_lost_and_the_run_stops(tmp_path: Path) -> None:
    fleet = fleet_at(tmp_path, "a")
    hosts = FakeHosts(
        {"a": [site("acme"), site("bobs")]},
        {"a/acme": tags(("v2", "0.7.0")), "a/bobs": tags(("v2", "0.7.0"))},
        {
            "a/acme": HostUnreachable("host a (a) is unreachable: Broken pipe"),
            "a/bobs": BrokenPipeError(32, "Broken pipe"),
        },
    )
    document, code, _ = drive(fleet, hosts, parallel=1, max_parallel=1)
    assert code == 3 and document["outcome"] == "stopped"
    assert [(m["site"], m["state"], m["reason"]) for m in document["moves"]] == [
        (
            "a/acme",
            "lost",
            "host a (a) is unreachable: Broken pipe; the upgrade may have gone on there: "
            "`sumbg fleet status` tells, `sumbg fleet upgrade --resume` goes on",
        ),
        ("a/bobs", "not-tried", "the run stopped at the first failure"),
    ]
    hosts.upgrades["a/acme"] = BrokenPipeError(32, "Broken pipe")
    resumed, code, _ = drive(fleet, hosts, core=None, resume=True)
    assert code == 3 and resumed["moves"][0]["reason"].startswith("BrokenPipeError: [Errno 32] Broken pipe; ")


def test_an_unexpected_error_in_a_link_ends_the_run_as_lost_instead_of_hanging_it(tmp_path: Path) -> None:
    fleet = fleet_at(tmp_path, "a")
    hosts = FakeHosts(
        {"a": [site("acme"), site("bobs")]},
        {"a/acme": tags(("v2", "0.7.0")), "a/bobs": tags(("v2", "0.7.0"))},
        {"a/acme": ValueError("a reply nobody expected"), "a/bobs": 0},
    )
    document, code, _ = drive(fleet, hosts, parallel=1, max_parallel=1)
    assert code == 3 and document["outcome"] == "stopped"
    assert [(m["site"], m["state"], m["reason"]) for m in document["moves"]] == [
        (
            "a/acme",
            "lost",
            "unexpected ValueError: a reply nobody expected; the upgrade may have gone on there: "
            "`sumbg fleet status` tells, `sumbg fleet upgrade --resume` goes on",
        ),
        ("a/bobs", "not-tried", "the run stopped at the first failure"),
    ]


def test_a_host_whose_answer_cannot_be_read_is_reported_like_one_that_did_not_answer(tmp_path: Path) -> None:
    fleet = fleet_at(tmp_path, "a", "b")
    hosts = FakeHosts(
        {"a": [site("acme")], "b": [{**site("bobs"), "ref": 7}]}, {"a/acme": tags(("v2", "0.7.0"))}, {"a/acme": 0}
    )
    document, code, _ = drive(fleet, hosts)
    assert code == 1 and document["outcome"] == "stopped"
    assert document["unreachable"] == {
        "b": "host b: `sumbg status` answered what this sumbg cannot read: sites[0].ref: text was expected, not int"
    }
    assert [(m["site"], m["state"]) for m in document["moves"]] == [("a/acme", "upgraded")]


def test_releases_that_cannot_be_read_skip_that_hosts_sites_with_the_reason(tmp_path: Path) -> None:
    fleet = fleet_at(tmp_path, "a", "b")
    hosts = FakeHosts(
        {"a": [site("acme"), site("shop")], "b": [site("bobs")]},
        {"a/acme": tags(("v2", "0.7.0")), "a/shop": {"tags": "v2"}, "b/bobs": tags(("v3", "0.7.0"))},
        {},
    )
    document, code, _ = drive(fleet, hosts, dry_run=True)
    unreadable = (
        "its releases could not be read: host a: `sumbg releases` answered what this sumbg cannot read: "
        "sites[1].tags: a list was expected, not str"
    )
    assert code == 0 and [(m["site"], m["to_ref"], m["skip"]) for m in document["moves"]] == [
        ("a/acme", None, unreadable),
        ("a/shop", None, unreadable),
        ("b/bobs", "v3", None),
    ]
