"""A site on this host: its folders, secrets, Compose projects and records."""

from __future__ import annotations

import os
import secrets
import shutil
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from sumbg import naming
from sumbg.adapters.docker import ComposeProject
from sumbg.config import HostConfig, SiteConfig
from sumbg.lock import SiteLock
from sumbg.site.logs import KeptLogs
from sumbg.site.records import SiteRecords
from sumbg.site.worker import parse_worker_command
from sumbg.util import atomic_write

APP_UID = 1000  # the user the default SUM Dockerfile runs gunicorn as
# Docker kills a stopping web this long after gunicorn's graceful timeout ([app] stop_timeout).
WEB_KILL_MARGIN = 5.0
SECRET_KEYS = ("DJANGO_SECRET_KEY", "DJANGO_DB_PASSWORD", "POSTGRES_PASSWORD")


@dataclass(frozen=True)
class Site:
    host: HostConfig
    config: SiteConfig

    @property
    def slug(self) -> str:
        return self.config.slug

    # ------------------------------------------------------------ folders
    @property
    def dir(self) -> Path:
        return self.host.site_dir(self.slug)

    @property
    def secrets_file(self) -> Path:
        return self.dir / ".env"

    @property
    def backups_dir(self) -> Path:
        return self.dir / "backups"

    @property
    def run_dir(self) -> Path:
        return self.dir / "run"

    @property
    def mirror_dir(self) -> Path:
        return self.dir / "repo.git"

    def replace_mirror(self, synced: Path) -> None:
        """Put a mirror synced in a scratch folder in place of the site's (init, adopt)."""
        if self.mirror_dir.exists():
            shutil.rmtree(self.mirror_dir)
        shutil.move(str(synced), self.mirror_dir)

    @property
    def www_dir(self) -> Path:
        return self.host.www_dir / self.slug

    def static_dir(self, colour: str) -> Path:
        return self.www_dir / "static" / colour

    @property
    def media_dir(self) -> Path:
        return self.www_dir / "media"

    @property
    def kept_logs(self) -> KeptLogs:
        """The logs of the colours sumbg removed (`<slug>/logs/`)."""
        return KeptLogs(self.dir / "logs")

    @property
    def logs_keep_bytes(self) -> int:
        keep_mb = self.config.logs_keep_mb if self.config.logs_keep_mb is not None else self.host.logs_keep_mb
        return int(keep_mb * 1024 * 1024)

    @cached_property
    def records(self) -> SiteRecords:
        return SiteRecords(self.dir)

    def lock(self) -> SiteLock:
        return SiteLock(self.dir / ".lock", f"site {self.slug}")

    def prepare_dirs(self) -> None:
        for path in (self.dir, self.run_dir, self.media_dir, *(self.static_dir(c) for c in naming.COLOURS)):
            path.mkdir(parents=True, exist_ok=True)
        self.backups_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.backups_dir, 0o700)
        if os.geteuid() == 0:
            # The app runs unprivileged in its container and writes media and static files here.
            for path in (self.media_dir, *(self.static_dir(c) for c in naming.COLOURS)):
                os.chown(path, APP_UID, APP_UID)

    # ------------------------------------------------------------ secrets
    def write_new_secrets(self) -> None:
        password = secrets.token_urlsafe(24)
        values = {
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(48),
            "DJANGO_DB_PASSWORD": password,
            "POSTGRES_PASSWORD": password,
        }
        body = "# Secrets for this site's containers. Never printed by sumbg.\n" + "".join(
            f"{key}={value}\n" for key, value in values.items()
        )
        atomic_write(self.secrets_file, body, mode=0o600)

    def read_secrets(self) -> dict[str, str]:
        values = {}
        for line in self.secrets_file.read_text().splitlines():
            if line.strip() and not line.lstrip().startswith("#") and "=" in line:
                key, _, value = line.partition("=")
                values[key.strip()] = value.strip()
        return values

    # ------------------------------------------------------------ compose projects
    def data_project(self) -> ComposeProject:
        files = ("data.yml",) + (("data.publish.yml",) if self.config.db_publish_port else ())
        name = naming.data_project(self.slug)
        return ComposeProject(
            name=name,
            files=files,
            env_file=self.run_dir / f"{name}.env",
            variables=(
                ("SUMBG_PROJECT", name),
                ("SUMBG_POSTGRES_IMAGE", self.host.images.postgres),
                ("SUMBG_REDIS_IMAGE", self.host.images.redis),
                ("SUMBG_SECRETS_FILE", str(self.secrets_file)),
                ("SUMBG_DB_NAME", self.config.db_name),
                ("SUMBG_DB_USER", self.config.db_user),
                ("SUMBG_BACKUPS_DIR", str(self.backups_dir)),
                ("SUMBG_SITE_NETWORK", naming.site_network(self.slug)),
                ("SUMBG_DB_PUBLISH_PORT", str(self.config.db_publish_port)),
            ),
        )

    def app_env_file(self) -> Path:
        return self.run_dir / "app.env"

    def write_app_env(self) -> None:
        """The app's non-secret environment, the same for both colours."""
        atomic_write(self.app_env_file(), _env_file(self._app_env()), mode=0o644)

    def _app_env(self) -> dict[str, str]:
        return {
            "DJANGO_SETTINGS_MODULE": self.config.settings_module,
            "ALLOWED_HOSTS": ",".join(self.config.domains),
            "CSRF_TRUSTED_ORIGINS": ",".join(f"https://{name}" for name in self.config.domains),
            "DJANGO_DB_NAME": self.config.db_name,
            "DJANGO_DB_USER": self.config.db_user,
            "DJANGO_DB_HOST": "postgres",
            "DJANGO_DB_PORT": "5432",
            "REDIS_URL": "redis://redis:6379/0",
            "CELERY_BROKER_URL": "redis://redis:6379/1",
            "DJANGO_STATIC_ROOT": "/srv/static",
            "DJANGO_MEDIA_ROOT": "/srv/media",
            **dict(self.config.extra_env),
        }

    def rehearsal_env_file(self) -> Path:
        return self.run_dir / "rehearsal.env"

    def write_rehearsal_env(self, database: str) -> None:
        """The app's environment pointed at a scratch copy of its database, with its own Redis
        databases, so nothing a rehearsal does reaches the live site's cache, broker or data."""
        values = self._app_env()
        values.update(
            {
                "DJANGO_DB_NAME": database,
                "REDIS_URL": "redis://redis:6379/14",
                "CELERY_BROKER_URL": "redis://redis:6379/15",
            }
        )
        for key, value in values.items():
            # A URL-style setting from [env] (DATABASE_URL) that names the live database.
            if "://" in value and value.rstrip("/").endswith(f"/{self.config.db_name}"):
                values[key] = value.rstrip("/")[: -len(self.config.db_name)] + database
        atomic_write(self.rehearsal_env_file(), _env_file(values), mode=0o644)

    def app_project(
        self,
        colour: str,
        image: str,
        *,
        worker: bool | None = None,
        forwarded_allow_ips: str = "127.0.0.1",
        edge_network: str | None = None,
        version: tuple[str, str] = ("unknown", "unknown"),
        app_env_file: Path | None = None,
        static_dir: Path | None = None,
    ) -> ComposeProject:
        """`version`: (GIT_SHA, BUILD_ID) for the app's environment, so /health/ reports them
        even when a repo's own Dockerfile does not declare them. `edge_network`: where web meets the
        edge (the site's own link; the shared edge network for a site older than the address plan)."""
        name = naming.app_project(self.slug, colour)
        with_worker = bool(self.config.worker_command) if worker is None else worker
        return ComposeProject(
            name=name,
            files=("app.yml",),
            env_file=self.run_dir / f"{name}.env",
            profiles=("worker",) if with_worker else (),
            variables=(
                ("SUMBG_PROJECT", name),
                ("SUMBG_IMAGE", image),
                ("SUMBG_SECRETS_FILE", str(self.secrets_file)),
                ("SUMBG_APP_ENV_FILE", str(app_env_file or self.app_env_file())),
                ("SUMBG_STATIC_DIR", str(static_dir or self.static_dir(colour))),
                ("SUMBG_MEDIA_DIR", str(self.media_dir)),
                ("SUMBG_WSGI", self.config.wsgi),
                ("SUMBG_WEB_WORKERS", str(self.config.web_workers)),
                ("SUMBG_WORKER_COMMAND", parse_worker_command(self.config.worker_command or "true").shell_line()),
                ("SUMBG_WEB_STOP_TIMEOUT", f"{self.config.web_stop_timeout:g}"),
                ("SUMBG_WEB_STOP_GRACE", str(round(self.config.web_stop_timeout + WEB_KILL_MARGIN))),
                ("SUMBG_WORKER_STOP_GRACE", str(round(self.config.worker.stop_timeout))),
                ("SUMBG_WEB_ALIAS", naming.web_alias(self.slug, colour)),
                ("SUMBG_SITE_NETWORK", naming.site_network(self.slug)),
                ("SUMBG_EDGE_NETWORK", edge_network or self.host.edge.name),
                ("SUMBG_FORWARDED_ALLOW_IPS", forwarded_allow_ips),
                ("SUMBG_GIT_SHA", version[0]),
                ("SUMBG_BUILD_ID", version[1]),
                ("SUMBG_BACKGROUND_CPU_SHARES", str(self.host.background_cpu_shares)),
            ),
        )

    def web_container(self, colour: str) -> str:
        return f"{naming.app_project(self.slug, colour)}-web"

    def worker_container(self, colour: str) -> str:
        """The colour's worker that consumes tasks (its old ones finishing their tasks are renamed)."""
        return f"{naming.app_project(self.slug, colour)}-worker"

    def colour_of_worker(self, container: str) -> str | None:
        """The colour a worker container (its current one, or an old one draining) belongs to."""
        return next((c for c in naming.COLOURS if container.startswith(self.worker_container(c))), None)

    def draining_worker_container(self, colour: str, container_id: str) -> str:
        """An old worker of the colour, renamed while it finishes its tasks."""
        return f"{self.worker_container(colour)}-draining-{container_id[:12]}"

    @property
    def web_stop_seconds(self) -> float:
        """How long stopping a web may take: gunicorn's graceful timeout, then Docker's kill."""
        return self.config.web_stop_timeout + WEB_KILL_MARGIN

    @property
    def postgres_container(self) -> str:
        return f"{naming.data_project(self.slug)}-postgres"

    @property
    def redis_container(self) -> str:
        return f"{naming.data_project(self.slug)}-redis"


def _env_file(values: dict[str, str]) -> str:
    return "".join(f"{k}={v}\n" for k, v in values.items())
