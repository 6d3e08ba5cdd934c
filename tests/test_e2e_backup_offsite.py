"""Backups that survive the host (issue 23), end to end: a real site, real restic, and three real
repositories: a local folder, an SFTP one through the suite's own OpenSSH server, and an S3 one
on an S3-compatible server (moto) started here on a loopback port. The tests run in order on
one site: back up (twice: the second uploads almost nothing), verify, the restore drill (the
site's database volume and media folder deleted, both back from offsite, every row and file
found), SFTP, S3, an upload that fails half way (a repository on a full filesystem) leaving no
snapshot called good, and the disaster recovery on a new host (`init --from-backup`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from sumbg.config import set_site_settings
from sumbg.site.database import ROW_COUNTS_SQL, parse_row_counts

from .conftest import EDGE, docker, free_port, http_get, new_host, wait_until
from .fleet_hosts import SshServer

pytestmark = pytest.mark.e2e

SLUG = "w23-bk"
PASSWORD = "w23-restic-password-not-in-any-record"
S3_SECRET = "w23-s3-secret-key-not-in-any-record"


def restic(repository: str, password_file: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["restic", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "RESTIC_REPOSITORY": repository, "RESTIC_PASSWORD_FILE": str(password_file), **(env or {})},
    )


def snapshots(repository: str, password_file: Path, env: dict | None = None) -> list[dict]:
    result = restic(repository, password_file, "snapshots", "--json", env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout or "[]")


def row_counts(host, slug: str = SLUG) -> dict[str, int]:
    with psycopg.connect(host.db_url(slug)) as conn:
        return parse_row_counts("\n".join(row[0] for row in conn.execute(ROW_COUNTS_SQL).fetchall()))


def add_leads(host, count: int, slug: str = SLUG) -> None:
    with psycopg.connect(host.db_url(slug)) as conn:
        for number in range(count):
            conn.execute(
                "INSERT INTO sum_core_lead (name, email, message, created_at) VALUES (%s, %s, %s, now())",
                (f"w23 lead {number}", f"lead{number}@example.com", "a backup drill"),
            )


def media_files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def set_backup(host, **values) -> None:
    set_site_settings(host.site_dir(SLUG) / "site.toml", {f"backup.{k}": v for k, v in values.items()})


def secret_file(path: Path, text: str) -> Path:
    path.write_text(text)
    os.chmod(path, 0o600)
    return path


def leaked(host, *secrets: str) -> list[str]:
    """Every record sumbg keeps of the site that names a secret."""
    found = []
    for path in [host.site_dir(SLUG) / "history.jsonl", host.site_dir(SLUG) / "state.json", host.root / "SITES.md"]:
        if path.exists() and any(s in path.read_text() for s in secrets):
            found.append(str(path))
    return found


@pytest.fixture(scope="module")
def site(host, tmp_path_factory):
    host.init(SLUG)
    add_leads(host, 25)
    media = host.root / "www" / SLUG / "media"
    for index in range(6):
        (media / "original_images").mkdir(parents=True, exist_ok=True)
        (media / "original_images" / f"photo-{index}.jpg").write_bytes(os.urandom(150_000 + index))
    (media / "documents").mkdir(exist_ok=True)
    (media / "documents" / "price list.pdf").write_bytes(os.urandom(40_000))
    folder = tmp_path_factory.mktemp("w23")
    password = secret_file(folder / "restic-password", PASSWORD + "\n")
    yield {"folder": folder, "password": password, "media": media}
    host.teardown_site(SLUG)


def test_a_backup_holds_database_and_media_here_and_offsite_and_the_second_uploads_little(host, site):
    repository = str(site["folder"] / "local-repo")
    set_backup(host, repository=repository, password_file=str(site["password"]))
    first = host.sumbg("backup", SLUG, "--json")
    assert first.returncode == 0, str(first)
    doc = first.json()
    steps = {step["name"]: step for step in doc["steps"]}
    assert list(steps) == ["dump", "media", "upload", "prune"]
    assert steps["dump"]["rows"] >= 25 and steps["media"]["media_files"] == 7
    assert steps["upload"]["initialised"] is True and steps["upload"]["repository"] == repository
    # The dump, its checksum, the manifest and a copy of every media file are here...
    name = doc["file"]
    backups = host.site_dir(SLUG) / "backups"
    manifest = json.loads((backups / name.replace(".dump", ".json")).read_text())
    assert manifest["release"]["ref"] == "v1.0.0" and manifest["media"] == {
        "files": 7,
        "bytes": sum(len(b) for b in media_files(site["media"]).values()),
    }
    assert manifest["database"]["rows"]["public.sum_core_lead"] == 25
    assert media_files(backups / name.replace(".dump", ".media")) == media_files(site["media"])
    assert oct((backups / name).stat().st_mode & 0o777) == "0o600"
    # ...and in one snapshot offsite, tagged with the site, the release and the kind.
    [snapshot] = snapshots(repository, site["password"])
    assert snapshot["id"] == manifest["offsite"]["snapshot"] == steps["upload"]["snapshot"]
    assert {"sumbg", f"site={SLUG}", "release=v1.0.0", "kind=manual"} <= set(snapshot["tags"])

    second = host.sumbg("backup", SLUG, "--json")
    assert second.returncode == 0, str(second)
    upload = next(s for s in second.json()["steps"] if s["name"] == "upload")
    # restic's dedup: the media and most of the dump are already there.
    assert upload["data_added"] < steps["upload"]["data_added"] / 4, (upload, steps["upload"])
    assert len(snapshots(repository, site["password"])) == 2

    status = host.sumbg("status", SLUG, "--json")
    assert status.returncode == 0, str(status)
    view = status.json()["backup"]
    assert view["problems"] == [] and view["repository"] == repository
    assert view["local"]["backup"] == second.json()["file"] and view["offsite"]["snapshot"] == upload["snapshot"]
    text = host.sumbg("status", SLUG)
    assert f"backup: here 0.0h ago ({second.json()['file']}); offsite 0.0h ago (snapshot {upload['snapshot'][:8]}" in (
        text.stdout
    )
    listed = host.sumbg("backups", SLUG, "--json").json()["backups"]
    assert [b["offsite"]["snapshot"] for b in listed[:2]] == [upload["snapshot"], steps["upload"]["snapshot"]]
    assert leaked(host, PASSWORD) == [] and PASSWORD not in first.stdout + first.stderr + second.stdout


def test_backup_verify_restores_the_latest_snapshot_beside_the_site_and_compares(host, site):
    result = host.sumbg("backup", "verify", SLUG, "--json")
    assert result.returncode == 0, str(result)
    compare = next(s for s in result.json()["steps"] if s["name"] == "compare")
    assert compare["verdict"] == "every row and file restored" and compare["media_files"] == 7
    assert compare["rows"] == sum(row_counts(host).values())
    # Nothing is left: no scratch database, no scratch folder.
    with psycopg.connect(host.db_url(SLUG)) as conn:
        names = [r[0] for r in conn.execute("SELECT datname FROM pg_database").fetchall()]
    assert not [n for n in names if "__sumbg" in n]
    assert not (host.site_dir(SLUG) / "backups" / ".offsite-restore").exists()


def test_restore_drill_database_volume_and_media_deleted_everything_back_from_offsite(host, site):
    before_rows = row_counts(host)
    before_media = media_files(site["media"])
    # The disaster: the database's volume and the media folder are gone.
    docker("rm", "-f", f"sum-{SLUG}-data-postgres")
    docker("volume", "rm", f"sum-{SLUG}-data-pgdata")
    shutil.rmtree(site["media"])
    site["media"].mkdir()
    recovered = host.sumbg("recover", SLUG)  # starts the data stack again: an empty database
    assert recovered.returncode == 0, str(recovered)
    assert row_counts(host) == {}

    result = host.sumbg("restore", SLUG, "--from-offsite", "--yes", "--json")
    assert result.returncode == 0, str(result)
    steps = [(s["name"], s["outcome"]) for s in result.json()["steps"]]
    assert steps == [
        ("fetch", "ok"),
        ("verify", "ok"),
        ("safety-backup", "skipped"),  # an empty database: nothing to keep
        ("restore", "ok"),
        ("media", "ok"),
        ("reopen", "ok"),
    ]
    assert row_counts(host) == before_rows
    assert media_files(site["media"]) == before_media
    status, _, body = http_get(host.http_port, f"{SLUG}.example.test", "/health/")
    assert status == 200, body
    assert not (host.site_dir(SLUG) / "backups" / ".offsite-restore").exists()


def test_an_sftp_repository_through_the_suites_sshd(host, site, tmp_path):
    sshd = SshServer(tmp_path / "sshd", free_port()).start()
    try:
        folder = tmp_path / "sftp-repo"
        repository = f"sftp://root@127.0.0.1:{sshd.port}/{folder}"
        set_backup(
            host,
            repository=repository,
            ssh_key_file=str(sshd.client_key),
            ssh_known_hosts=str(sshd.known_hosts),
        )
        result = host.sumbg("backup", SLUG, "--json")
        assert result.returncode == 0, str(result)
        upload = next(s for s in result.json()["steps"] if s["name"] == "upload")
        assert upload["initialised"] is True and (folder / "config").is_file()
        [snapshot] = snapshots(str(folder), site["password"])  # the same repository, read as a folder
        assert snapshot["id"] == upload["snapshot"]
        verified = host.sumbg("backup", "verify", SLUG)
        assert verified.returncode == 0, str(verified)
    finally:
        sshd.stop()


@pytest.fixture
def moto(tmp_path):
    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "moto.log", "w"),
    )
    try:
        import urllib.request

        def up() -> bool:
            try:
                return urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).status == 200
            except OSError:
                return False

        assert wait_until(up, timeout=30), (tmp_path / "moto.log").read_text()
        yield port
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_an_s3_repository_on_an_s3_compatible_server(host, site, moto, tmp_path):
    env_file = secret_file(
        tmp_path / "s3.env",
        f"AWS_ACCESS_KEY_ID=w23-access-key\nAWS_SECRET_ACCESS_KEY={S3_SECRET}\nAWS_DEFAULT_REGION=us-east-1\n",
    )
    repository = f"s3:http://127.0.0.1:{moto}/w23-bucket/{SLUG}"
    set_backup(host, repository=repository, env_file=str(env_file), ssh_key_file="", ssh_known_hosts="")
    result = host.sumbg("backup", SLUG, "--json")
    assert result.returncode == 0, str(result)
    upload = next(s for s in result.json()["steps"] if s["name"] == "upload")
    aws = {"AWS_ACCESS_KEY_ID": "w23-access-key", "AWS_SECRET_ACCESS_KEY": S3_SECRET}
    [snapshot] = snapshots(repository, site["password"], env=aws)
    assert snapshot["id"] == upload["snapshot"]
    assert host.sumbg("backup", "verify", SLUG).returncode == 0
    assert leaked(host, S3_SECRET, PASSWORD) == [] and S3_SECRET not in result.stdout + result.stderr


def test_an_upload_that_fails_half_way_leaves_no_snapshot_called_good(host, site, tmp_path):
    full = tmp_path / "small-disk"
    full.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(full)], capture_output=True)
    assert mounted.returncode == 0, mounted.stderr
    big = site["media"] / "videos"
    try:
        big.mkdir()
        for index in range(4):
            (big / f"clip-{index}.mp4").write_bytes(os.urandom(2_000_000))  # 8 MB that restic cannot compress
        repository = str(full / "repo")
        set_backup(host, repository=repository, env_file="")
        result = host.sumbg("backup", SLUG)
        assert result.returncode == 1, str(result)
        error = [line for line in result.stderr.splitlines() if line.startswith("sumbg: error:")]
        assert len(error) == 1 and error[0].endswith(f"[site {SLUG}, step upload]"), result.stderr
        last = host.history(SLUG)[-1]
        assert (last["operation"], last["outcome"], last["failed_step"]) == ("backup", "aborted", "upload")
        assert restic(repository, site["password"], "snapshots", "--json").stdout.strip() in ("[]", "null")
        # Loud in status: the local backup is good, offsite is not.
        status = host.sumbg("status", SLUG, "--json")
        assert status.returncode == 1, str(status)
        view = status.json()["backup"]
        assert view["local"]["backup"] == last["file"]
        assert view["offsite"] is None
        assert view["problems"] == [f"the last backup failed at step upload ({last['at']}): {last['error']['message']}"]
        text = host.sumbg("status", SLUG)
        assert text.returncode == 1 and "  BACKUP: the last backup failed at step upload" in text.stdout
    finally:
        subprocess.run(["umount", str(full)], capture_output=True)
        shutil.rmtree(big, ignore_errors=True)


def test_disaster_recovery_on_a_new_host_from_the_offsite_repository(host, site, tmp_path):
    repository = str(site["folder"] / "local-repo")
    set_backup(host, repository=repository)
    add_leads(host, 5)
    taken = host.sumbg("backup", SLUG, "--json")
    assert taken.returncode == 0, str(taken)
    rows, media = row_counts(host), media_files(site["media"])
    # The host is lost: the site's containers, volumes, network, image and folders.
    host.teardown_site(SLUG)
    docker("image", "rm", f"sum-{SLUG}:v1.0.0")
    shutil.rmtree(host.site_dir(SLUG))
    shutil.rmtree(host.root / "www" / SLUG)
    (host.root / "caddy" / "sites" / f"{SLUG}.caddy").unlink(missing_ok=True)

    new_root = tmp_path / "new-host"
    new_root.mkdir()
    other = new_host(new_root, f"{EDGE}-w23dr", host.repo)
    with (new_root / "sumbg.toml").open("a") as handle:
        handle.write(f'\n[backup]\npassword_file = "{site["password"]}"\n')
    try:
        db_port = free_port()
        result = other.sumbg(
            "init",
            SLUG,
            "--repo",
            str(host.repo),
            "--domain",
            f"{SLUG}.example.test",
            "--db-port",
            str(db_port),
            "--from-backup",
            repository,
            "--json",
        )
        assert result.returncode == 0, str(result)
        doc = result.json()
        assert doc["from_backup"]["release"] == "v1.0.0" and doc["restore"]["outcome"] == "done"
        # The release is rebuilt with the versions its image held, as the backup's manifest recorded them.
        build_step = next(step for step in doc["init"]["steps"] if step["name"] == "build")
        assert build_step["constraints"]["source"] == (
            f"the versions recorded for v1.0.0 in backup {doc['from_backup']['snapshot'][:8]}'s manifest "
            "(a release built before is rebuilt as it was)"
        )
        assert build_step["constraints"]["pins"] > 0, build_step
        assert row_counts(other) == rows
        assert media_files(new_root / "www" / SLUG / "media") == media
        status, _, body = http_get(other.http_port, f"{SLUG}.example.test", "/health/")
        assert status == 200, body
        # It keeps backing up to the repository it came from.
        again = other.sumbg("backup", SLUG, "--json")
        assert again.returncode == 0, str(again)
        assert len(snapshots(repository, site["password"])) >= 4
    finally:
        other.teardown_site(SLUG)
        docker("rm", "-f", f"{EDGE}-w23dr-caddy", check=False)
        docker("volume", "rm", f"{EDGE}-w23dr-caddy-data", f"{EDGE}-w23dr-caddy-config", check=False)
        docker("network", "rm", f"{EDGE}-w23dr", check=False)
