"""Backups that survive the host (issue 23), on fakes and as pure logic: the retention rule,
restic's environment and argv (no secret in argv), the complete backup as an operation (dump,
media, upload, prune) and its failures, what status says, the drill, the restore from offsite,
the schedule's units and crontab, and the [backup] settings."""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from sumbg.adapters import build, pydeps
from sumbg.adapters.pydeps import Dependency
from sumbg.adapters.restic import Repository, Restic, read_env_file, sftp_command
from sumbg.cli import exit_code_of
from sumbg.config import HostConfig, Retention, default_backup_time, load_host, set_site_settings
from sumbg.errors import BackupError, ConfigError, SumbgError, UsageError
from sumbg.ops import offsite, schedule
from sumbg.ops.init import init
from sumbg.site.backupset import BackupSet, Manifest, count_tree, link_tree
from sumbg.site.retention import Dated, kept, parse_time, to_delete

from .fakes import FakeContext, World, deployed

UTC = dt.UTC


# ---------------------------------------------------------------- retention


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_retention_keeps_the_newest_then_one_a_day_a_week_a_month_like_restic() -> None:
    backups = [
        Dated("mon-3am", at("2026-11-30T03:00")),
        Dated("mon-noon", at("2026-11-30T12:00")),  # the newest of Monday
        Dated("sun", at("2026-11-29T03:00")),
        Dated("sat", at("2026-11-28T03:00")),
        Dated("week-before", at("2026-11-20T03:00")),
        Dated("october", at("2026-10-15T03:00")),
        Dated("september", at("2026-09-15T03:00")),
    ]
    rules = Retention(last=1, daily=2, weekly=2, monthly=2)
    # last 1: mon-noon; daily 2: mon-noon, sun; weekly 2 (ISO weeks 49, 48): mon-noon, sun;
    # monthly 2 (Nov, Oct): mon-noon, october.
    assert kept(backups, rules) == {"mon-noon", "sun", "october"}
    assert to_delete(backups, rules) == ["september", "week-before", "sat", "mon-3am"]
    # A protected backup (a colour's way back) is kept whatever the rules say.
    assert "september" not in to_delete(backups, rules, protected={"september"})
    assert to_delete(backups, Retention(last=10, daily=0, weekly=0, monthly=0)) == []


def test_times_from_names_and_restic() -> None:
    assert parse_time("20261206T101500Z") == at("2026-12-06T10:15:00")
    assert parse_time("2026-12-06T06:13:02.396865884Z") == at("2026-12-06T06:13:02")
    assert parse_time("2026-12-06T06:13:02.5+01:00") == at("2026-12-06T05:13:02")
    assert parse_time("2026-12-06T05:27:20Z") == at("2026-12-06T05:27:20")
    assert parse_time("not a time") is None


# ---------------------------------------------------------------- restic: environment and argv


def credential(path: Path, text: str) -> str:
    path.write_text(text)
    os.chmod(path, 0o600)
    return str(path)


def test_restic_gets_its_secrets_from_its_environment_never_argv(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("AWS_SESSION_TOKEN", "from-sumbgs-environment")
    monkeypatch.setenv("SECRET_OF_ANOTHER_PROGRAM", "not-passed")
    repo = Repository(
        location="s3:https://s3.example.com/bucket/acme",
        password_file=credential(tmp_path / "pw", "hunter2-password\n"),
        env_file=credential(
            tmp_path / "env", "# S3\nAWS_ACCESS_KEY_ID=AKIA1234\nexport AWS_SECRET_ACCESS_KEY='s3cr3t-key'\n"
        ),
        cache_dir="/srv/sum/.cache/restic",
    )
    runner = Restic(repo)
    env = runner.env()
    assert env["RESTIC_REPOSITORY"] == "s3:https://s3.example.com/bucket/acme"
    assert env["RESTIC_PASSWORD_FILE"] == str(tmp_path / "pw")
    assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == ("AKIA1234", "s3cr3t-key")
    assert env["AWS_SESSION_TOKEN"] == "from-sumbgs-environment" and "SECRET_OF_ANOTHER_PROGRAM" not in env
    assert env["RESTIC_CACHE_DIR"] == "/srv/sum/.cache/restic"
    argv = runner.argv("backup", "--json", "/srv/sum/acme/backups/.offsite")
    assert argv == ["restic", "backup", "--json", "/srv/sum/acme/backups/.offsite"]
    assert not {"hunter2-password", "s3cr3t-key", "AKIA1234"} & set(" ".join(argv).split())


def test_a_failing_restic_is_one_line_with_every_secret_scrubbed(tmp_path: Path, monkeypatch) -> None:
    fake = tmp_path / "bin" / "restic"
    fake.parent.mkdir()
    fake.write_text(
        '#!/bin/sh\necho "Fatal: wrong password $(cat $RESTIC_PASSWORD_FILE) for $AWS_SECRET_ACCESS_KEY" >&2\nexit 1\n'
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    repo = Repository(
        location="rest:https://backup:webpass@vault.example.com/acme",
        password_file=credential(tmp_path / "pw", "hunter2-password\n"),
        env_file=credential(tmp_path / "env", "AWS_SECRET_ACCESS_KEY=s3cr3t-key\n"),
    )
    with pytest.raises(BackupError) as info:
        Restic(repo).snapshots()
    error = info.value
    assert error.message == (
        "restic snapshots on rest:https://backup:***@vault.example.com/acme failed: Fatal: wrong password *** for ***"
    )
    assert "hunter2" not in (error.output_tail or "") and error.command == ["restic", "snapshots"]
    assert exit_code_of(error) == 1


def test_without_a_password_restic_is_not_run(tmp_path: Path, monkeypatch) -> None:
    for name in ("RESTIC_PASSWORD", "RESTIC_PASSWORD_FILE", "RESTIC_PASSWORD_COMMAND"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(BackupError, match=r"needs a password: set \[backup\] password_file"):
        Restic(Repository(location=str(tmp_path / "repo"))).env()


def test_an_env_file_holds_only_restics_variables(tmp_path: Path) -> None:
    path = credential(tmp_path / "env", "AWS_ACCESS_KEY_ID=a\nLD_PRELOAD=/tmp/evil.so\n")
    with pytest.raises(BackupError, match=r"line 2: expected NAME=value with one of restic's variables"):
        read_env_file(path)


def test_the_sftp_command_names_the_key_file_and_pinned_host_keys() -> None:
    assert sftp_command("sftp://backup@10.0.0.5:2222//srv/restic", "/root/.ssh/backup", "/etc/sumbg/known_hosts") == (
        "ssh -o BatchMode=yes -o ServerAliveInterval=15 -o ServerAliveCountMax=4 -p 2222 -l backup "
        "-i /root/.ssh/backup -o IdentitiesOnly=yes -o UserKnownHostsFile=/etc/sumbg/known_hosts "
        "-o StrictHostKeyChecking=yes 10.0.0.5 -s sftp"
    )
    assert sftp_command("sftp:vault:/srv/restic", "", "") == (
        "ssh -o BatchMode=yes -o ServerAliveInterval=15 -o ServerAliveCountMax=4 "
        "-o StrictHostKeyChecking=accept-new vault -s sftp"
    )
    assert sftp_command("/srv/restic", "/k", "") is None
    assert Restic(Repository("sftp:u@h:/r", "/pw")).options()[0] == "-o"


# ---------------------------------------------------------------- the operation on fakes


@pytest.fixture
def world() -> World:
    return World(refs={"v1.0.0": "0.6.3"})


@pytest.fixture
def ctx(tmp_path: Path, world: World) -> FakeContext:
    root = tmp_path / "root"
    root.mkdir()
    return FakeContext(root, world)


def with_media(ctx: FakeContext) -> Path:
    media = ctx.host.root / "www" / "acme" / "media"
    (media / "original_images").mkdir(parents=True)
    (media / "original_images" / "a.jpg").write_bytes(b"a" * 100)
    (media / "documents").mkdir()
    (media / "documents" / "b.pdf").write_bytes(b"b" * 50)
    return media


def offsite_site(ctx: FakeContext, world: World, tmp_path: Path) -> Path:
    root = ctx.host.root
    deployed(root, world, live=("blue", "v1.0.0"))
    password = credential(tmp_path / "pw", "pw\n")
    credential(root / "acme" / ".env", "DJANGO_SECRET_KEY=k\n")
    set_site_settings(
        root / "acme" / "site.toml", {"backup.repository": "/offsite/acme", "backup.password_file": password}
    )
    return with_media(ctx)


def test_a_backup_is_dump_media_manifest_then_one_tagged_snapshot(
    ctx: FakeContext, world: World, tmp_path: Path
) -> None:
    offsite_site(ctx, world, tmp_path)
    result = offsite.backup(ctx, "acme")
    assert [(s["name"], s["outcome"]) for s in result["steps"]] == [
        ("dump", "ok"),
        ("media", "ok"),
        ("upload", "ok"),
        ("prune", "ok"),
    ]
    name = "acme_20261127T000000Z_v1.0.0.dump"
    backups = BackupSet(ctx.host.root / "acme" / "backups")
    manifest = backups.read(name)
    assert manifest is not None
    snapshot = next(iter(world.snapshots))
    assert manifest.to_json() | {"taken_at": "-"} == {
        "backup": name,
        "site": "acme",
        "kind": "manual",
        "taken_at": "-",
        "release": {"colour": "blue", "ref": "v1.0.0", "commit": "v1.0.0-sha"},
        "database": {
            "file": name,
            "sha256": manifest.database["sha256"],
            "size": 13,
            "entries": 1,
            "rows": {"public.sum_core_lead": 3},
        },
        "media": {"files": 2, "bytes": 150},
        "offsite": {
            "repository": "/offsite/acme",
            "snapshot": snapshot,
            "uploaded_at": manifest.offsite["uploaded_at"] if manifest.offsite else None,
            "files": 6,  # dump, its sha256, the manifest, two media files, the site's secrets
            "bytes": manifest.offsite["bytes"] if manifest.offsite else None,
            "data_added": manifest.offsite["data_added"] if manifest.offsite else None,
        },
    }
    assert stat.S_IMODE(backups.manifest_path(name).stat().st_mode) == 0o600
    assert [e for e in world.effects if e[0] == "upload"] == [
        (
            "upload",
            snapshot[:8],
            ("sumbg", "site=acme", "release=v1.0.0", "kind=manual", "backup=acme_20261127T000000Z_v1.0.0"),
        )
    ]
    # The media copy is hard links; the staging folder is gone.
    copied = backups.media_path(name) / "original_images" / "a.jpg"
    assert copied.stat().st_ino == (ctx.host.root / "www/acme/media/original_images/a.jpg").stat().st_ino
    assert not (ctx.host.root / "acme" / "backups" / ".offsite").exists()
    assert result["snapshot"] == snapshot and result["backup"] == name


def test_without_a_repository_the_backup_stays_here_and_says_so(ctx: FakeContext, world: World) -> None:
    deployed(ctx.host.root, world, live=("blue", "v1.0.0"))
    with_media(ctx)
    result = offsite.backup(ctx, "acme")
    upload = next(s for s in result["steps"] if s["name"] == "upload")
    assert (upload["outcome"], upload["reason"]) == (
        "skipped",
        "no [backup] repository: this backup stays on this host",
    )
    assert world.snapshots == {}
    view = offsite.backup_status(ctx, ctx.site("acme"), ctx.site("acme").records.load_state())
    assert view["repository"] is None and view["problems"] == [] and view["offsite"] is None


def test_a_failed_upload_exits_1_naming_the_stage_keeps_the_local_backup_and_shows_in_status(
    ctx: FakeContext, world: World, tmp_path: Path
) -> None:
    offsite_site(ctx, world, tmp_path)
    world.upload_fails = True
    with pytest.raises(SumbgError) as info:
        offsite.backup(ctx, "acme")
    assert exit_code_of(info.value) == 1
    assert info.value.format_message() == (
        "restic backup on /offsite/acme failed: Fatal: unable to save snapshot: no space left on device "
        "[site acme, step upload]"
    )
    site = ctx.site("acme")
    [manifest] = BackupSet(site.backups_dir).manifests()
    assert manifest.offsite is None and world.snapshots == {}
    view = offsite.backup_status(ctx, site, site.records.load_state())
    last = site.records.history()[-1]
    assert view["local"]["backup"] == manifest.backup and view["offsite"] is None
    assert view["problems"] == [
        f"the last backup failed at step upload ({last['at']}): restic backup on /offsite/acme failed: Fatal: "
        "unable to save snapshot: no space left on device"
    ]
    # The next good backup clears it.
    world.upload_fails = False
    offsite.backup(ctx, "acme")
    assert offsite.backup_status(ctx, site, site.records.load_state())["problems"] == []


def test_a_failed_dump_leaves_no_backup_behind(ctx: FakeContext, world: World, tmp_path: Path, monkeypatch) -> None:
    offsite_site(ctx, world, tmp_path)

    def broken(self, name: str) -> dict[str, int]:
        raise BackupError(f"could not count the rows in {name}")

    from . import fakes

    monkeypatch.setattr(fakes.FakeStacks, "dump_row_counts", broken)
    with pytest.raises(BackupError, match=r"could not count the rows in .* \[site acme, step dump\]"):
        offsite.backup(ctx, "acme")
    assert sorted(p.name for p in (ctx.host.root / "acme" / "backups").iterdir()) == []


def test_status_flags_a_last_good_backup_older_than_max_age(ctx: FakeContext, world: World, tmp_path: Path) -> None:
    offsite_site(ctx, world, tmp_path)
    offsite.backup(ctx, "acme")
    site = ctx.site("acme")
    state = site.records.load_state()
    now = dt.datetime.now(UTC)
    assert offsite.backup_status(ctx, site, state, now=now + dt.timedelta(hours=25))["problems"] == []
    later = offsite.backup_status(ctx, site, state, now=now + dt.timedelta(hours=27))
    assert later["problems"] == [
        "last good backup here is 27.0h old (max_age 26.0h)",
        "last good backup offsite is 27.0h old (max_age 26.0h)",
    ]


def test_a_site_younger_than_max_age_with_no_backup_is_no_problem_yet(ctx: FakeContext, world: World) -> None:
    deployed(ctx.host.root, world, live=("blue", "v1.0.0"))
    site = ctx.site("acme")
    site.records.append({"event": "finished", "operation": "init", "outcome": "done"})
    now = dt.datetime.now(UTC)
    assert offsite.backup_status(ctx, site, site.records.load_state(), now=now)["problems"] == []
    assert offsite.backup_status(ctx, site, site.records.load_state(), now=now + dt.timedelta(days=2))["problems"] == [
        "no good backup here in 2.0d (max_age 26.0h)"
    ]


def test_prune_applies_the_rules_offsite_but_keeps_a_colours_backup(
    ctx: FakeContext, world: World, tmp_path: Path, monkeypatch
) -> None:
    from . import fakes

    offsite_site(ctx, world, tmp_path)
    names = iter(f"acme_202611{day:02d}T030000Z_v1.0.0.dump" for day in (1, 2, 3))
    monkeypatch.setattr(fakes.FakeStacks, "backup_name", lambda self, ref: next(names))
    set_site_settings(
        ctx.host.root / "acme" / "site.toml",
        {"upgrade.keep_backups": 1, "backup.keep_daily": 0, "backup.keep_weekly": 0, "backup.keep_monthly": 0},
    )
    offsite.backup(ctx, "acme")
    first = next(iter(world.snapshots))
    # The first backup is the one state.json records for the live colour: a rollback's way back.
    state = json.loads((ctx.host.root / "acme" / "state.json").read_text())
    state["colours"]["blue"]["backup"] = "acme_20261101T030000Z_v1.0.0.dump"
    (ctx.host.root / "acme" / "state.json").write_text(json.dumps(state))
    offsite.backup(ctx, "acme")
    offsite.backup(ctx, "acme")
    # keep_backups 1: the newest; and the protected one, whatever the rules say.
    assert len(world.snapshots) == 2 and first in world.snapshots
    forgets = [e for e in world.effects if e[0] == "forget"]
    assert forgets == [("forget", ("00000002",), True)]  # restic forget --prune of the second, once
    # Here, the fakes' prune was asked to keep the colour's backup and the new one.
    assert ("prune", ("acme_20261101T030000Z_v1.0.0.dump", "acme_20261103T030000Z_v1.0.0.dump")) in world.effects


def test_verify_compares_rows_and_media_and_removes_what_it_made(
    ctx: FakeContext, world: World, tmp_path: Path
) -> None:
    offsite_site(ctx, world, tmp_path)
    offsite.backup(ctx, "acme")
    result = offsite.verify(ctx, "acme")
    compare = next(s for s in result["steps"] if s["name"] == "compare")
    assert compare == {
        "name": "compare",
        "outcome": "ok",
        "seconds": compare["seconds"],
        "tables": 1,
        "rows": 3,
        "media_files": 2,
        "media_bytes": 150,
        "verdict": "every row and file restored",
    }
    assert ("restore", "acme__sumbg_verify", "database.dump") in world.schema_effects
    assert ("drop", "acme__sumbg_verify") in world.schema_effects
    assert not (ctx.host.root / "acme" / "backups" / ".offsite-restore").exists()
    # A restore that gives other rows than the backup recorded fails, naming the table.
    world.restored_rows = {"public.sum_core_lead": 2}
    with pytest.raises(BackupError, match=r"public.sum_core_lead: 2 rows, recorded 3 \[site acme, step compare\]"):
        offsite.verify(ctx, "acme")
    assert not (ctx.host.root / "acme" / "backups" / ".offsite-restore").exists()


def test_restore_from_offsite_brings_database_and_media_back_under_maintenance(
    ctx: FakeContext, world: World, tmp_path: Path
) -> None:
    media = offsite_site(ctx, world, tmp_path)
    offsite.backup(ctx, "acme")
    (media / "original_images" / "a.jpg").unlink()
    (media / "later.txt").write_text("written after the backup")
    world.effects.clear()
    result = offsite.restore_offsite(ctx, "acme", yes=True)
    assert [s["name"] for s in result["steps"]] == ["fetch", "verify", "safety-backup", "restore", "media", "reopen"]
    assert sorted(str(p.relative_to(media)) for p in media.rglob("*") if p.is_file()) == [
        "documents/b.pdf",
        "original_images/a.jpg",
    ]
    safety = "acme_20261127T000000Z_safety-before-restore"
    kept_aside = ctx.host.root / "acme" / "backups" / f"{safety}.media"
    assert (kept_aside / "later.txt").read_text() == "written after the backup"
    assert world.effects == [("fetch", next(iter(world.snapshots))[:8]), ("maintenance", "on"), ("maintenance", "off")]
    assert world.schema_effects[-2:] == [
        ("restore", "acme__sumbg_restore", "database.dump"),
        ("swap-in", "acme__sumbg_restore"),
    ]
    assert BackupSet(ctx.host.root / "acme" / "backups").read(safety + ".dump").kind == "safety"  # type: ignore[union-attr]
    with pytest.raises(UsageError, match="pass --yes"):
        offsite.restore_offsite(ctx, "acme", yes=False)
    with pytest.raises(UsageError, match="holds no backup of site acme whose snapshot id starts with 'zzz'"):
        offsite.restore_offsite(ctx, "acme", "zzz", yes=True)


def test_backup_all_goes_on_after_a_failure_and_names_each(ctx: FakeContext, world: World, tmp_path: Path) -> None:
    offsite_site(ctx, world, tmp_path)
    world.upload_fails = True
    with pytest.raises(BackupError) as info:
        offsite.backup_all(ctx)
    assert info.value.message == "backups of 1 of 1 site(s) failed: acme (step upload)"
    assert info.value.result is not None and info.value.result["sites"][0]["outcome"] == "failed"


# ---------------------------------------------------------------- media copies


def test_a_media_copy_is_hard_links_and_counts_files_and_bytes(tmp_path: Path) -> None:
    source = tmp_path / "media"
    (source / "a" / "b").mkdir(parents=True)
    (source / "a" / "b" / "x.bin").write_bytes(b"x" * 10)
    (source / "y.bin").write_bytes(b"y" * 5)
    copy = link_tree(source, tmp_path / "copy")
    assert (copy.files, copy.bytes) == (2, 15) and count_tree(tmp_path / "copy") == copy
    assert (tmp_path / "copy" / "y.bin").stat().st_nlink == 2
    assert link_tree(tmp_path / "none", tmp_path / "empty").files == 0


# ---------------------------------------------------------------- schedule


def test_the_units_run_this_sumbg_at_the_schedule(tmp_path: Path) -> None:
    host = load_host_with(tmp_path, '[backup]\nschedule = "03:30"\n')
    files = schedule.unit_files(host, "/usr/local/bin/sumbg")
    assert sorted(files) == ["sumbg-backup.service", "sumbg-backup.timer", "sumbg-retire.service", "sumbg-retire.timer"]
    assert f"ExecStart=/usr/local/bin/sumbg --root {tmp_path} backup --all\n" in files["sumbg-backup.service"]
    assert "Type=oneshot\n" in files["sumbg-backup.service"]
    assert (
        "OnCalendar=*-*-* 03:30:00\n" in files["sumbg-backup.timer"]
        and "Persistent=true\n" in files["sumbg-backup.timer"]
    )
    assert "WantedBy=timers.target" in files["sumbg-backup.timer"]
    assert "OnCalendar=hourly\n" in files["sumbg-retire.timer"]
    assert f"ExecStart=/usr/local/bin/sumbg --root {tmp_path} retire --due\n" in files["sumbg-retire.service"]
    assert schedule.crontab(host, "/usr/local/bin/sumbg").splitlines()[1:] == [
        f"30 3 * * * root /usr/local/bin/sumbg --root {tmp_path} backup --all >>/var/log/sumbg-backup.log 2>&1",
        f"7 * * * * root /usr/local/bin/sumbg --root {tmp_path} retire --due >>/var/log/sumbg-retire.log 2>&1",
    ]


def load_host_with(folder: Path, text: str) -> HostConfig:
    (folder / "sumbg.toml").write_text(text)
    return load_host(folder)


def test_the_default_time_is_a_minute_of_2_to_4_am_stable_per_host() -> None:
    times = {default_backup_time(f"host-{n}") for n in range(200)}
    assert all("02:00" <= t <= "03:59" for t in times) and len(times) > 60
    assert default_backup_time("vps-a") == default_backup_time("vps-a")


def test_an_oncalendar_schedule_has_no_crontab_line(tmp_path: Path) -> None:
    host = load_host_with(tmp_path, '[backup]\nschedule = "Mon..Fri *-*-* 03:30:00"\n')
    assert "OnCalendar=Mon..Fri *-*-* 03:30:00\n" in schedule.unit_files(host, "sumbg")["sumbg-backup.timer"]
    with pytest.raises(UsageError, match="runs no systemd: give a daily time"):
        schedule.crontab(host, "sumbg")


def test_a_second_root_gets_its_own_unit_names(tmp_path: Path) -> None:
    host = load_host_with(tmp_path, '[edge]\nname = "sum-edge-staging"\n')
    assert [job.name for job in schedule.jobs(host)] == [
        "sumbg-backup-sum-edge-staging",
        "sumbg-retire-sum-edge-staging",
    ]


def test_install_without_systemd_prints_crontab_and_with_a_unit_dir_writes_units(
    ctx: FakeContext, tmp_path: Path
) -> None:
    result = schedule.install(ctx)
    assert result["mode"] == "cron" and "backup --all" in result["crontab"]
    written = schedule.install(ctx, tmp_path / "units")
    assert [Path(p).name for p in written["units"]] == [
        "sumbg-backup.service",
        "sumbg-backup.timer",
        "sumbg-retire.service",
        "sumbg-retire.timer",
    ]
    assert [t["installed"] for t in schedule.status(ctx, tmp_path / "units")["timers"]] == [True, True]
    (tmp_path / "units" / "other.timer").write_text("[Timer]\n")
    assert len(schedule.remove(ctx, tmp_path / "units")["removed"]) == 4
    assert sorted(p.name for p in (tmp_path / "units").iterdir()) == ["other.timer"]


# ---------------------------------------------------------------- [backup] settings


@pytest.mark.parametrize(
    "text, message",
    [
        (
            '[backup]\nrepository = "backups/here"\n',
            "sumbg.toml: backup.repository: must be an absolute path or a restic",
        ),
        ('[backup]\nschedule = "3am; rm -rf /"\n', 'sumbg.toml: backup.schedule: must be "HH:MM" (daily)'),
        ("[backup]\nkeep_daily = -1\n", "sumbg.toml: backup.keep_daily: must not be negative"),
        ('[backup]\nmax_age = "soon"\n', "sumbg.toml: backup.max_age:"),
        ('[backup]\npassword_file = "/etc/hostname"\n', "sumbg.toml: backup.password_file: /etc/hostname has mode"),
    ],
)
def test_bad_backup_settings_are_refused_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_host_with(tmp_path, text)
    assert info.value.message.startswith(message) and exit_code_of(info.value) == 2


def test_a_sites_backup_settings_override_the_hosts_key_by_key(ctx: FakeContext, world: World, tmp_path: Path) -> None:
    deployed(ctx.host.root, world, live=("blue", "v1.0.0"))
    host = load_host_with(ctx.host.root, '[backup]\nrepository = "/mnt/restic"\nkeep_daily = 3\nmax_age = "2d"\n')
    set_site_settings(ctx.host.root / "acme" / "site.toml", {"backup.keep_daily": 9})
    policy = ctx.site("acme").config.backup_policy(host)
    assert (policy.repository, policy.retention, policy.max_age) == (
        "/mnt/restic",
        Retention(last=10, daily=9, weekly=4, monthly=6),
        172800.0,
    )
    assert policy.repository_source == "sumbg.toml backup.repository"


def test_manifests_round_trip_and_a_backup_without_one_is_not_good(tmp_path: Path) -> None:
    backups = BackupSet(tmp_path)
    (tmp_path / "a_20261101T000000Z_v1.dump").write_bytes(b"x")
    (tmp_path / "b_20261102T000000Z_v1.dump").write_bytes(b"x")
    manifest = Manifest(
        "a_20261101T000000Z_v1.dump", "a", "manual", "2026-11-01T00:00:00Z", media={"files": 1, "bytes": 2}
    )
    backups.write(manifest)
    assert backups.manifests() == [manifest]
    backups.remove("a_20261101T000000Z_v1.dump")
    assert backups.manifests() == [] and sorted(p.name for p in tmp_path.iterdir()) == ["b_20261102T000000Z_v1.dump"]


# ---------------------------------------------------------------- fleet status


def test_the_fleet_reads_each_sites_backups_and_shows_their_ages_and_problems() -> None:
    from sumbg.config import FleetHost
    from sumbg.errors import HostUnreachable
    from sumbg.fleet.answers import BackupView, read_status
    from sumbg.fleet.view import HostView, SiteRow, status_lines

    doc = {
        "sites": [
            {
                "site": "acme",
                "domain": "acme.example.test",
                "backup": {
                    "repository": "sftp:b@vault:/r",
                    "local": {"age_seconds": 3 * 3600},
                    "offsite": None,
                    "problems": ["the last backup failed at step upload (t): restic backup on sftp:b@vault:/r failed"],
                },
            },
            {"site": "older-sumbg"},  # no `backup`: nothing known, no problem claimed
        ]
    }
    status = read_status("vps-a", doc)
    assert status.sites[0].backup == BackupView(
        local_age=10800.0,
        offsite_age=None,
        repository="sftp:b@vault:/r",
        problems=("the last backup failed at step upload (t): restic backup on sftp:b@vault:/r failed",),
    )
    assert status.sites[1].backup == BackupView()
    rows = [SiteRow.of("vps-a", site) for site in status.sites]
    assert [(r.backup, r.problem) for r in rows] == [
        ("3h/-", "backup: the last backup failed at step upload (t): restic backup on sftp:b@vault:/r failed"),
        ("-", ""),
    ]
    host = FleetHost(name="vps-a", ssh="vps-a")
    lines = status_lines([HostView(host, status=status)])
    assert lines[0].split()[-1] == "BACKUP" and lines[1].split()[-1] == "3h/-"
    assert (
        lines[-1]
        == "vps-a/acme: backup: the last backup failed at step upload (t): restic backup on sftp:b@vault:/r failed"
    )
    with pytest.raises(HostUnreachable, match=r"sites\[0\].backup.local.age_seconds: a number was expected, not str"):
        read_status("vps-a", {"sites": [{"site": "acme", "backup": {"local": {"age_seconds": "old"}}}]})


def test_the_schedule_command_prints_crontab_here_and_writes_units_systemd_accepts(tmp_path: Path) -> None:
    import subprocess
    import sys

    sumbg = str(Path(sys.executable).with_name("sumbg"))
    env = {**os.environ, "SUMBG_ROOT": str(tmp_path / "root")}
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "sumbg.toml").write_text('[backup]\nschedule = "02:45"\n')
    cron = subprocess.run([sumbg, "schedule", "install"], capture_output=True, text=True, env=env)
    assert cron.returncode == 0, cron.stderr
    assert cron.stderr == "no systemd on this host: put these lines in /etc/cron.d/sumbg\n"
    assert cron.stdout.splitlines()[1] == (
        f"45 2 * * * root {sumbg} --root {tmp_path / 'root'} backup --all >>/var/log/sumbg-backup.log 2>&1"
    )
    units = tmp_path / "units"
    written = subprocess.run(
        [sumbg, "schedule", "install", "--unit-dir", str(units), "--json"], capture_output=True, text=True, env=env
    )
    assert written.returncode == 0, written.stderr
    assert json.loads(written.stdout)["jobs"][0] == {
        "job": "sumbg-backup",
        "command": "backup --all",
        "on_calendar": "*-*-* 02:45:00",
        "cron": "45 2 * * *",
    }
    # systemd's own checker (it needs no running systemd) accepts every unit as written.
    checked = subprocess.run(
        ["systemd-analyze", "verify", *sorted(str(p) for p in units.iterdir())], capture_output=True, text=True
    )
    assert (checked.returncode, checked.stderr) == (0, ""), checked.stderr


def test_init_from_backup_on_a_new_host_builds_the_release_with_the_versions_its_image_held(
    ctx: FakeContext, world: World, tmp_path: Path
) -> None:
    """The manifest keeps what the live release's image held; a new host rebuilds it with those
    versions (and its git dependency at the recorded commit), not with what resolves today."""
    offsite_site(ctx, world, tmp_path)
    core_commit = "f0ed3a93ed781d6f61193b6c2fa677c69b9428ab"
    held = [Dependency("celery", "5.4.0"), Dependency("sum-core", "0.6.3", commit=core_commit, source=pydeps.GIT)]
    state_file = ctx.host.root / "acme" / "state.json"
    state = json.loads(state_file.read_text())
    state["colours"]["blue"]["dependencies"] = [d.to_json() for d in held]
    state_file.write_text(json.dumps(state))
    offsite.backup(ctx, "acme")
    manifest = BackupSet(ctx.host.root / "acme" / "backups").read("acme_20261127T000000Z_v1.0.0.dump")
    assert manifest is not None and manifest.dependencies == [d.to_json() for d in held]

    new_world = World(refs=world.refs, snapshots=world.snapshots)
    new_host = FakeContext(tmp_path / "newhost", new_world)

    def deploy(ref: str | None, constraints: build.Constraints | None) -> dict[str, Any]:
        return init(new_host, "acme", "/srv/repos/acme", ["acme.example.test"], ref, constraints=constraints)

    result = offsite.recover_site(new_host, "acme", "/offsite/acme", deploy, None)
    assert (result["outcome"], result["from_backup"]["release"]) == ("done", "v1.0.0")
    snapshot = next(iter(world.snapshots))[:8]
    origin = f"the versions recorded for v1.0.0 in backup {snapshot}'s manifest"
    assert new_world.builds == [
        (
            "sum-acme:v1.0.0",
            build.Constraints(
                pins=(pydeps.Constraint("celery", "==5.4.0", origin),),  # sum-core: fetched at its commit
                source=origin + " (a release built before is rebuilt as it was)",
                git_commits=(("sum-core", core_commit),),
            ),
        )
    ]
    assert result["restore"]["outcome"] == "done"
