"""Adoption's operations on fakes: adopt, adopt --undo, the recover of a half adoption, takeover.

The old host is a temporary folder with the runbook's files (units, the host Caddy's folder,
/srv/sum/<slug> with app/, .env and media/) and tests/fakes.py's `RunbookHost`: its systemctl,
its Caddy's reader, its PostgreSQL and Celery broker (answered through the engine), the
certificates on its port and the old app's answers. Each test runs the real operation and
asserts its whole outcome: the effects on both hosts in order, the files, state.json and the
history of every site it changed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from sumbg import failpoints
from sumbg.adoption.adopt import AdoptOptions, adopt
from sumbg.adoption.runbook_host import RunbookPaths
from sumbg.adoption.takeover import takeover
from sumbg.adoption.undo import recover_plan, undo
from sumbg.cli import exit_code_of
from sumbg.errors import CheckFailed, UsageError
from sumbg.ops import executor
from sumbg.ops.recover import recover

from .fakes import RunbookContext, RunbookHost, World, make_runbook_host, no_effects

SLUG = "acme"
GUNICORN, CELERY = "sum-acme-gunicorn.service", "sum-acme-celery.service"
QUEUED = (b"reports", b'{"task": "acme.tasks.monthly_report", "id": "9f1c"}')


@pytest.fixture
def world() -> World:
    return World(slug=SLUG, domain="acme.example.test")


@pytest.fixture
def old(tmp_path: Path, world: World) -> RunbookHost:
    return make_runbook_host(tmp_path / "old", world)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """sumbg's root; the edge on other ports than the host Caddy's, which stays in front."""
    root = tmp_path / "root"
    root.mkdir()
    (root / "sumbg.toml").write_text("# the host Caddy has 80 and 443\n[edge]\nhttp_port = 8080\nhttps_port = 8443\n")
    return root


@pytest.fixture
def ctx(root: Path, world: World, old: RunbookHost) -> RunbookContext:
    return RunbookContext(root, world, old)


def options(old: RunbookHost, slug: str = SLUG, **extra: Any) -> AdoptOptions:
    return AdoptOptions(
        source=old.site_dir(slug), paths=RunbookPaths(systemd_dir=old.systemd_dir, caddy_dir=old.caddy_dir), **extra
    )


def state_of(root: Path, slug: str = SLUG) -> dict[str, Any]:
    return json.loads((root / slug / "state.json").read_text())


def history_of(root: Path, slug: str = SLUG) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (root / slug / "history.jsonl").read_text().splitlines()]


class Killed(BaseException):
    """sumbg's process, killed (SIGKILL) at a failpoint."""


@contextmanager
def killed_at(monkeypatch: pytest.MonkeyPatch, point: str) -> Iterator[None]:
    """What a SIGKILL at `point` leaves: the steps before it done, the step journalled in
    state.json, nothing undone and nothing more recorded (a dead process does neither)."""

    def reached(name: str) -> None:
        if name == point:
            raise Killed(point)

    def undo_nothing(run: executor.Run) -> Any:
        raise Killed(point)

    with monkeypatch.context() as patch:
        patch.setattr(failpoints, "reached", reached)
        patch.setattr(executor, "_undo", undo_nothing)
        with pytest.raises(Killed):
            yield


ADOPTED_EFFECTS = [
    # Before the old site is touched: sumbg's colour on an imported copy, checked on the preview listener.
    ("data", "up"),
    ("old-db", "dump", "adopted-first.dump"),
    ("start", "blue", "v1.0.0"),
    ("weights", "blue"),
    ("live", "blue"),
    ("preview", "blue"),
    ("preview", "blue"),
    # The window: the 503 page, the old units stopped, the last writes, sumbg behind the host Caddy.
    ("systemctl", "reload", "caddy"),
    ("host-caddy", "sum-acme.caddy", "maintenance"),
    ("systemctl", "stop", GUNICORN, CELERY),
    ("old-db", "dump", "adopted.dump"),
    ("preview", "blue"),
    ("systemctl", "reload", "caddy"),
    ("host-caddy", "sum-acme.caddy", "proxy"),
    # Settled: the old units disabled (kept), the queued task moved before sumbg's worker starts.
    ("systemctl", "disable", GUNICORN),
    ("systemctl", "disable", CELERY),
    ("broker", "pushed", 1),
    ("old-broker", "drop", "reports"),
    ("worker", "blue", "started"),
]


# ---------------------------------------------------------------- adopt


def test_adopt_runs_its_whole_plan_in_order_and_records_the_adoption(
    ctx: RunbookContext, world: World, old: RunbookHost, root: Path
) -> None:
    old.queued = [QUEUED]
    original = old.site_file(SLUG).read_bytes()
    result = adopt(ctx, SLUG, options(old))
    assert [s["name"] for s in result["steps"]] == [
        "record",
        "data",
        "build",
        "import",
        "media",
        "migrate",
        "static",
        "start",
        "edge",
        "check",
        "maintenance",
        "stop-old",
        "final-import",
        "final-media",
        "recheck",
        "cutover",
        "settle",
        "tasks",
    ]
    assert world.effects == ADOPTED_EFFECTS
    # sumbg's database: the first copy imported and migrated, then the last writes imported over it.
    assert [e[0] for e in world.schema_effects] == ["restore", "swap-in", "migrate", "restore", "swap-in"]
    assert world.schema_effects[0][2].endswith("_adopted-first.dump")
    assert world.schema_effects[3][2].endswith("_adopted.dump")
    # The window is measured from the 503 page to sumbg confirmed through the host Caddy.
    window = result["cutover_window_seconds"]
    assert isinstance(window, float) and window >= 0
    tasks = next(step for step in result["steps"] if step["name"] == "tasks")
    assert tasks["moved"] == {"reports": 1} and old.queued == []
    # The old deployment: stopped and disabled, its files kept; the host Caddy proxies to the edge.
    assert old.active == {"caddy"} and old.enabled == {"caddy"}
    assert (root / SLUG / "adoption" / "sum-acme.caddy").read_bytes() == original
    proxy = old.site_file(SLUG).read_text()
    assert proxy.startswith("# Managed by sumbg since") and "reverse_proxy 127.0.0.1:8080" in proxy
    assert "tls internal" in proxy and "encode gzip" in proxy
    assert (root / "www" / SLUG / "media/uploads/logo.txt").read_text() == "acme's logo"
    state = state_of(root)
    commit = old.sites[SLUG].commit
    assert (state["live"], state["previous"], state["operation"]) == ("blue", None, None)
    assert {k: state["colours"]["blue"][k] for k in ("image", "ref", "commit", "status", "outcome")} == {
        "image": "sum-acme:v1.0.0",
        "ref": "v1.0.0",
        "commit": commit,
        "status": "live",
        "outcome": "healthy",
    }
    adoption = state["adoption"]
    assert {k: v for k, v in adoption.items() if k not in ("adopted_at", "undo_until", "backup")} == {
        "status": "adopted",
        "from": str(old.site_dir(SLUG)),
        "commit": commit,
        "mode": "proxy",
        "caddy_site_file": str(old.site_file(SLUG)),
        "kept": str(root / SLUG / "adoption" / "sum-acme.caddy"),
        "units": [GUNICORN, CELERY],
        "app_address": "unix:/run/sum-acme/gunicorn.sock",
        "database": "acme@localhost:5432/acme",
        "media": str(old.site_dir(SLUG) / "media"),
        "caddy_ports": [80, 443],
        "systemd_dir": str(old.systemd_dir),
        "caddy_dir": str(old.caddy_dir),
        "cutover_window_seconds": window,
        "disabled": [GUNICORN, CELERY],
    }
    assert adoption["backup"].endswith("_adopted.dump") and adoption["undo_until"] > adoption["adopted_at"]
    history = history_of(root)
    assert [(e["event"], e["operation"]) for e in history] == [("started", "adopt"), ("finished", "adopt")]
    assert history[-1]["outcome"] == "done" and history[-1]["cutover_window_seconds"] == window
    secrets = (root / SLUG / ".env").read_text()
    assert "DJANGO_SECRET_KEY='k3y-of-acme-$ign#'" in secrets and (root / SLUG / ".env").stat().st_mode & 0o777 == 0o600
    assert "k3y-of-acme" not in (root / SLUG / "history.jsonl").read_text()
    # Visitors get sumbg's release through the host Caddy.
    assert json.loads(old.host_caddy_answer("acme.example.test").text)["version"]["git_sha"] == commit


def test_a_failure_inside_the_window_puts_the_old_site_back(
    ctx: RunbookContext, world: World, old: RunbookHost, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the final import, a stray file appears in sumbg's media: the exact comparison fails
    inside the window, and the old site serves again as it was."""
    original = old.site_file(SLUG).read_bytes()

    def stray_file(name: str) -> None:
        if name == "adopt:final-media":
            (root / "www" / SLUG / "media" / "stray.txt").write_text("not in the old site")

    monkeypatch.setattr(failpoints, "reached", stray_file)
    with pytest.raises(CheckFailed, match="media differ after the copy") as failed:
        adopt(ctx, SLUG, options(old))
    assert exit_code_of(failed.value) == 1
    undone = world.effects[world.effects.index(("old-db", "dump", "adopted.dump")) + 1 :]
    assert undone == [
        ("systemctl", "start", CELERY),
        ("systemctl", "start", GUNICORN),
        ("systemctl", "reload", "caddy"),
        ("host-caddy", "sum-acme.caddy", "original"),
        ("edge", "removed", SLUG),
        ("remove", "blue"),
        ("down", "sum-acme-data", True),
    ]
    assert old.site_file(SLUG).read_bytes() == original
    assert old.active == {"caddy", GUNICORN, CELERY} and old.enabled == {"caddy", GUNICORN, CELERY}
    assert json.loads(old.host_caddy_answer("acme.example.test").text)["version"] == {"git_sha": "unknown"}
    state = state_of(root)
    assert (state["live"], state["colours"], state["operation"]) == (None, {}, None)
    assert state["adoption"]["status"] == "failed"
    finished = history_of(root)[-1]
    assert (finished["outcome"], finished["failed_step"]) == ("aborted", "final-media")
    assert [u["what"] for u in finished["undo"]] == [
        f"start {CELERY} again",
        f"start {GUNICORN} again",
        f"put back {old.site_file(SLUG)} and reload the host Caddy",
        "remove acme from the edge Caddy",
        "remove sum-acme-blue",
        "remove sum-acme-data and its volumes (an imported copy)",
        "record the adoption as failed (the old site serves as before)",
    ]
    assert "failed step: final-media" in (root / "WHAT-BROKE.md").read_text()


def test_the_dry_run_reads_everything_and_changes_nothing(
    ctx: RunbookContext, world: World, old: RunbookHost, root: Path
) -> None:
    before = {path: path.read_bytes() for path in old.root.rglob("*") if path.is_file() and ".git" not in path.parts}
    with no_effects(world):
        plan = adopt(ctx, SLUG, options(old, dry_run=True))
    assert plan["dry_run"] is True and plan["steps"][-8]["name"] == "maintenance"
    assert plan["deployment"]["commit"] == old.sites[SLUG].commit
    assert plan["deployment"]["units"] == [GUNICORN, CELERY]
    assert plan["deployment"]["domains"] == ["acme.example.test", "www.acme.example.test"]
    assert plan["deployment"]["app_address"] == "unix:/run/sum-acme/gunicorn.sock"
    assert "SENTRY_DSN" in plan["deployment"]["carried_env"]
    assert old.caddy_reads == [("sum-acme.caddy", "original")]
    assert not (root / SLUG).exists() and sorted(p.name for p in root.iterdir()) == ["sumbg.toml"]
    assert {p: p.read_bytes() for p in before} == before
    assert old.active == {"caddy", GUNICORN, CELERY}


def test_a_database_sumbg_cannot_read_is_refused_before_anything_changes(
    ctx: RunbookContext, world: World, old: RunbookHost, root: Path
) -> None:
    old.wrong_password = True
    with no_effects(world), pytest.raises(UsageError, match="cannot read the database acme@localhost:5432/acme") as e:
        adopt(ctx, SLUG, options(old))
    assert "password authentication failed" in e.value.message and exit_code_of(e.value) == 2
    assert not (root / SLUG).exists()


# ---------------------------------------------------------------- undo


def test_undo_puts_the_old_deployment_back_with_sumbgs_data(
    ctx: RunbookContext, world: World, old: RunbookHost, root: Path
) -> None:
    original = old.site_file(SLUG).read_bytes()
    adopt(ctx, SLUG, options(old))
    (root / "www" / SLUG / "media/uploads/after.txt").write_text("uploaded to sumbg")
    old.rows = {"public.sum_core_lead": 0}  # the old database, as it was left: sumbg's rows go back into it
    world.effects.clear()
    result = undo(ctx, SLUG)
    assert [s["name"] for s in result["steps"]] == [
        "maintenance",
        "stop-workers",
        "copy-back",
        "media-back",
        "start-old",
        "caddy-back",
        "retire",
    ]
    assert world.effects == [
        ("systemctl", "reload", "caddy"),
        ("host-caddy", "sum-acme.caddy", "maintenance"),
        ("worker", "blue", "stopped"),
        ("old-db", "load", "acme_20261127T000000Z_undo-adopt.dump"),
        ("systemctl", "enable", GUNICORN),
        ("systemctl", "start", GUNICORN),
        ("systemctl", "enable", CELERY),
        ("systemctl", "start", CELERY),
        ("systemctl", "reload", "caddy"),
        ("host-caddy", "sum-acme.caddy", "original"),
        ("remove", "blue"),
        ("edge", "removed", SLUG),
        ("down", "sum-acme-data", False),
    ]
    assert world.backups_taken == ["acme_20261127T000000Z_undo-adopt.dump"]
    assert old.rows == {"public.sum_core_lead": 1}
    # Read as it was before the adoption: the kept original in place of sumbg's proxy file.
    assert old.caddy_reads[-1] == ("sum-acme.caddy", "original")
    assert old.site_file(SLUG).read_bytes() == original
    assert (old.site_dir(SLUG) / "media/uploads/after.txt").read_text() == "uploaded to sumbg"
    assert old.active == {"caddy", GUNICORN, CELERY} and old.enabled == {"caddy", GUNICORN, CELERY}
    state = state_of(root)
    assert (state["live"], state["colours"], state["operation"]) == (None, {}, None)
    assert state["adoption"]["status"] == "undone" and "undone_at" in state["adoption"]
    assert history_of(root)[-1]["operation"] == "adopt-undo" and history_of(root)[-1]["outcome"] == "done"
    with pytest.raises(UsageError, match="was not adopted by sumbg"):
        undo(ctx, SLUG)


def test_undo_refuses_once_sumbg_runs_another_release(
    ctx: RunbookContext, world: World, old: RunbookHost, root: Path
) -> None:
    adopt(ctx, SLUG, options(old))
    state = state_of(root)
    state["colours"]["blue"]["commit"] = "0" * 40  # upgraded since
    (root / SLUG / "state.json").write_text(json.dumps(state))
    with no_effects(world), pytest.raises(UsageError, match="the old deployment's code may not work"):
        undo(ctx, SLUG)
    assert old.active == {"caddy"}


# ---------------------------------------------------------------- recover of a half adoption


def test_recover_puts_back_an_adoption_killed_in_its_window(
    ctx: RunbookContext, world: World, old: RunbookHost, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = old.site_file(SLUG).read_bytes()
    with killed_at(monkeypatch, "adopt:final-import"):
        adopt(ctx, SLUG, options(old))
    killed = state_of(root)
    assert (killed["operation"]["kind"], killed["operation"]["step"]) == ("adopt", "final-import")
    assert killed["adoption"]["status"] == "cutting-over" and old.active == {"caddy"}
    assert old.host_caddy_answer("acme.example.test").status == 503
    with pytest.raises(UsageError, match=f"run `sumbg recover {SLUG}`"):
        adopt(ctx, SLUG, options(old))
    world.effects.clear()
    result = recover(ctx, SLUG, half_adopted=recover_plan)
    assert [s["name"] for s in result["steps"]] == ["old-site", "ours"]
    assert world.effects == [
        ("systemctl", "start", GUNICORN),
        ("systemctl", "start", CELERY),
        ("systemctl", "reload", "caddy"),
        ("host-caddy", "sum-acme.caddy", "original"),
        ("remove", "blue"),
        ("edge", "removed", SLUG),
        ("down", "sum-acme-data", False),
    ]
    assert old.site_file(SLUG).read_bytes() == original
    assert json.loads(old.host_caddy_answer("acme.example.test").text)["version"] == {"git_sha": "unknown"}
    state = state_of(root)
    assert (state["live"], state["colours"], state["operation"]) == (None, {}, None)
    assert state["adoption"]["status"] == "failed"
    assert history_of(root)[-1]["operation"] == "recover" and history_of(root)[-1]["outcome"] == "done"


def test_recover_of_an_adoption_killed_before_its_window_leaves_the_old_site_alone(
    ctx: RunbookContext, world: World, old: RunbookHost, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with killed_at(monkeypatch, "adopt:check"):
        adopt(ctx, SLUG, options(old))
    assert state_of(root)["adoption"]["status"] == "importing"
    world.effects.clear()
    recover(ctx, SLUG, half_adopted=recover_plan)
    assert world.effects == [("remove", "blue"), ("edge", "removed", SLUG), ("down", "sum-acme-data", False)]
    assert old.active == {"caddy", GUNICORN, CELERY} and state_of(root)["adoption"]["status"] == "failed"


# ---------------------------------------------------------------- takeover


@pytest.fixture
def two_adopted(ctx: RunbookContext, world: World, old: RunbookHost, root: Path) -> list[str]:
    """acme and bravo, both adopted behind the host Caddy (the two sites it serves)."""
    adopt(ctx, SLUG, options(old))
    old.add_site("bravo", ("bravo.example.test",))
    adopt(RunbookContext(root, World(slug="bravo", domain="bravo.example.test"), old), "bravo", options(old, "bravo"))
    world.effects.clear()
    return [SLUG, "bravo"]


def settings_files(root: Path) -> dict[Path, bytes]:
    return {
        path: path.read_bytes() for path in (root / "sumbg.toml", root / SLUG / "site.toml", root / "bravo/site.toml")
    }


def test_takeover_moves_the_ports_keeps_the_certificates_and_records_it_in_each_site(
    ctx: RunbookContext, world: World, old: RunbookHost, root: Path, two_adopted: list[str]
) -> None:
    before = settings_files(root)
    with no_effects(world):
        plan = takeover(ctx, RunbookPaths(caddy_dir=old.caddy_dir), old.caddy_data, dry_run=True)
    assert plan["edge"] == {"http_port": 80, "https_port": 443, "tls": "internal"} and plan["sites"] == two_adopted
    assert settings_files(root) == before
    result = takeover(ctx, RunbookPaths(caddy_dir=old.caddy_dir), old.caddy_data)
    assert [s["name"] for s in result["steps"]] == [
        "certificates",
        "prepare",
        "stop-host-caddy",
        "start-edge",
        "confirm",
        "settle",
    ]
    assert world.effects == [
        ("edge", "imported", "caddy"),
        ("systemctl", "stop", "caddy"),
        ("edge", "recreated"),
        ("systemctl", "disable", "caddy"),
    ]
    names = ["acme.example.test", "www.acme.example.test", "bravo.example.test"]
    assert result["certificates_kept"] == sorted(names) and result["takeover_window_seconds"] >= 0
    # Read with each site's original file in place of sumbg's proxy file.
    assert old.caddy_reads[-4:] == [("sum-acme.caddy", "original"), ("sum-bravo.caddy", "original")] * 2
    assert "caddy" not in old.active and "caddy" not in old.enabled and old.edge_https_port == 443
    toml = (root / "sumbg.toml").read_text()
    assert toml.startswith("# the host Caddy has 80 and 443\n")
    assert "http_port = 80" in toml and "https_port = 443" in toml and 'tls = "internal"' in toml
    for slug in two_adopted:
        assert "behind_proxy = false" in (root / slug / "site.toml").read_text()
        state = state_of(root, slug)
        assert (state["adoption"]["mode"], state["operation"], state["live"]) == ("takeover", None, "blue")
        started, finished = history_of(root, slug)[-2:]
        assert (started["event"], started["operation"], finished["event"], finished["outcome"]) == (
            "started",
            "takeover",
            "finished",
            "done",
        )
        assert started["id"] == finished["id"] == history_of(root)[-1]["id"]
        assert finished["certificates_kept"] == sorted(names)
        assert not [e for e in history_of(root, slug) if e["event"] == "note"]
    assert old.host_caddy_answer("bravo.example.test").status == 200  # the edge, on the host Caddy's port
    with pytest.raises(UsageError, match="took the host Caddy's ports"):
        undo(ctx, SLUG)


def test_a_takeover_that_cannot_confirm_puts_everything_back(
    ctx: RunbookContext, world: World, old: RunbookHost, root: Path, two_adopted: list[str]
) -> None:
    """The edge does not answer on the host Caddy's ports: the settings, the edge on its old
    ports and the host Caddy come back, and every site answers through it again."""
    before = settings_files(root)
    old.edge_refuses = {443}
    with pytest.raises(CheckFailed, match="did not pass") as failed:
        takeover(ctx, RunbookPaths(caddy_dir=old.caddy_dir), old.caddy_data)
    assert exit_code_of(failed.value) == 1 and failed.value.step == "confirm"
    assert world.effects == [
        ("edge", "imported", "caddy"),
        ("systemctl", "stop", "caddy"),
        ("edge", "recreated"),
        ("edge", "recreated"),  # on its old ports again
        ("systemctl", "start", "caddy"),
    ]
    assert settings_files(root) == before
    assert old.edge_https_port == 8443 and "caddy" in old.active and "caddy" in old.enabled
    for slug, domain in zip(two_adopted, ("acme.example.test", "bravo.example.test"), strict=True):
        assert old.host_caddy_answer(domain).status == 200
        state = state_of(root, slug)
        assert (state["adoption"]["mode"], state["operation"]) == ("proxy", None)
        finished = history_of(root, slug)[-1]
        assert (finished["operation"], finished["outcome"], finished["failed_step"]) == (
            "takeover",
            "aborted",
            "confirm",
        )
        assert [u["what"] for u in finished["undo"]] == [
            "start the edge on its old ports again",
            "start the host Caddy again",
            "put sumbg.toml, the sites' site.toml and the edge config back",
            "confirm every site answers through the host Caddy again",
        ]
