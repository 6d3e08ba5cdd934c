"""The Docker adapter: the only module that imports python_on_whales.

Everything else asks this module for engine facts or hands it a Compose
project description; every python_on_whales exception is translated here into
a DockerError carrying the command, exit code and output tail.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import python_on_whales
from python_on_whales import ClientNotFoundError, DockerClient
from python_on_whales.exceptions import DockerException, NoSuchContainer, NoSuchImage

from sumbg.errors import DockerError, tail
from sumbg.util import atomic_write

COMPOSE_DIR = Path(__file__).resolve().parents[2] / "compose"


@dataclass(frozen=True)
class ComposeProject:
    """A Compose project as data: files, project name and its interpolation variables."""

    name: str
    files: tuple[str, ...]
    variables: tuple[tuple[str, str], ...]
    env_file: Path
    profiles: tuple[str, ...] = ()

    def write_env_file(self) -> None:
        self.env_file.parent.mkdir(parents=True, exist_ok=True)
        body = "".join(f"{key}={_quote_env(value)}\n" for key, value in self.variables)
        atomic_write(self.env_file, body, mode=0o600)

    def client(self) -> DockerClient:
        return DockerClient(
            compose_files=[COMPOSE_DIR / name for name in self.files],
            compose_project_name=self.name,
            compose_env_files=[self.env_file],
            compose_profiles=list(self.profiles),
        )


def _quote_env(value: str) -> str:
    # Compose env files take single-quoted literals; none of our values contain quotes.
    if "'" in value or "\n" in value:
        raise ValueError(f"compose variable value must be one line without quotes: {value!r}")
    return f"'{value}'"


@dataclass
class ExecResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return (self.stdout + ("\n" if self.stdout and self.stderr else "") + self.stderr).strip()


@dataclass
class ContainerState:
    name: str
    running: bool
    status: str
    exit_code: int | None
    labels: dict[str, str] = field(default_factory=dict)
    image: str = ""


def io_weight_supported(cgroup_root: Path = Path("/sys/fs/cgroup")) -> bool:
    """Whether `--blkio-weight` does anything here: a proportional I/O scheduler (CFQ or BFQ) behind
    the cgroup v1 blkio controller (blkio.weight, blkio.bfq.weight), or a cgroup v2 io controller with
    io.bfq.weight. The engine runs on this host (sumbg publishes and bind-mounts locally), so its
    cgroup files are these. Elsewhere (e.g. mq-deadline or none) Docker discards the weight."""
    if (cgroup_root / "blkio").is_dir():
        return any((cgroup_root / "blkio" / name).exists() for name in ("blkio.weight", "blkio.bfq.weight"))
    controllers = cgroup_root / "cgroup.controllers"
    try:
        return "io" in controllers.read_text().split() and any(cgroup_root.glob("*/io.bfq.weight"))
    except OSError:
        return False


@dataclass(frozen=True)
class _AddressPool:
    """One IPAM pool of a network, as Docker reports it ("" where it says nothing)."""

    subnet: str
    ip_range: str


def _wrap(exc: DockerException, message: str) -> DockerError:
    output = "\n".join(part for part in (exc.stdout, exc.stderr) if part)
    return DockerError(
        f"{message} (exit {exc.return_code})",
        command=_redact(exc.docker_command),
        returncode=exc.return_code,
        output_tail=tail(output),
    )


def _redact(argv: Sequence[object]) -> list[str]:
    return [str(arg) for arg in argv]


class Engine:
    """The Docker engine on this host, plus Compose v2."""

    def __init__(self) -> None:
        self.docker = DockerClient()

    def _docker_cmd(self) -> list[str]:
        """The docker client's argv prefix (binary and global options), as strings."""
        return [str(part) for part in self.docker.client_config.docker_cmd]

    # ------------------------------------------------------------ engine
    def ping(self) -> None:
        try:
            self.docker.system.info()
        except DockerException as exc:
            raise DockerError(
                "the Docker engine does not answer; is dockerd running? (`make setup` starts one)",
                output_tail=tail(exc.stderr, 3),
            ) from None
        except ClientNotFoundError:
            raise DockerError("the docker client is not installed (`make setup` installs it)") from None

    def data_root(self) -> Path:
        try:
            root = self.docker.system.info().docker_root_dir
        except DockerException as exc:
            raise _wrap(exc, "cannot read the Docker data root") from None
        if root is None:
            raise DockerError("the Docker engine does not report its data root (docker info: DockerRootDir)")
        return Path(root)

    def volume_exists(self, name: str) -> bool:
        try:
            return self.docker.volume.exists(name)
        except DockerException as exc:
            raise _wrap(exc, f"cannot inspect volume {name}") from None

    # ------------------------------------------------------------ images
    def image_labels(self, tag: str) -> dict[str, str] | None:
        try:
            image = self.docker.image.inspect(tag)
        except NoSuchImage:
            return None
        except DockerException as exc:
            raise _wrap(exc, f"cannot inspect image {tag}") from None
        return dict(image.config.labels or {})

    def build(
        self,
        context: Path,
        dockerfile: Path,
        tag: str,
        labels: Mapping[str, str],
        build_args: Mapping[str, str],
        *,
        cpu_shares: int | None = None,
    ) -> None:
        # The legacy builder needs no buildx plugin; the layer cache still applies, and its step
        # containers take --cpu-shares. --force-rm: a failed step's container is removed too
        # (without it every failed build leaves one behind).
        argv = (
            self._docker_cmd()
            + ["image", "build", "--quiet", "--force-rm", "--file", str(dockerfile), "--tag", tag]
            + (["--cpu-shares", str(cpu_shares)] if cpu_shares else [])
            + [arg for key, value in labels.items() for arg in ("--label", f"{key}={value}")]
            + [arg for key, value in build_args.items() for arg in ("--build-arg", f"{key}={value}")]
            + [str(context)]
        )
        result = self._capture(argv, env={"DOCKER_BUILDKIT": "0"})
        if result.returncode != 0:
            raise DockerError(
                f"building image {tag} failed (exit {result.returncode})",
                command=_redact(argv),
                returncode=result.returncode,
                output_tail=tail(result.output),
            )

    # ------------------------------------------------------------ networks and volumes
    def ensure_edge_network(self, name: str) -> str | None:
        """The shared edge network, created with an address reserved for the edge Caddy: its
        subnet is the one Docker would pick, and Docker hands out only the upper half, so the
        subnet's first host after the gateway stays the edge's. Returns that address, or None
        for an edge network made without the reservation (by an older sumbg)."""
        # Another network made between our probe and our create (another root's edge, made at
        # the same moment) may take the probed subnet: then probe again.
        attempts = 5
        while not self.docker.network.exists(name):
            attempts -= 1
            probe = f"{name}-subnet-probe"
            try:
                self.docker.network.create(probe, labels={"sumbg": "1"})
                try:
                    subnet = ipaddress.ip_network(self._ipam(probe)[0].subnet)
                finally:
                    self.docker.network.remove(probe)
                upper = list(subnet.subnets(new_prefix=subnet.prefixlen + 1))[1]
                # python-on-whales has no --ip-range: the docker CLI itself.
                created = self._capture(
                    [
                        *self._docker_cmd(),
                        "network",
                        "create",
                        "--subnet",
                        str(subnet),
                        "--ip-range",
                        str(upper),
                        "--gateway",
                        str(subnet[1]),
                        "--label",
                        "sumbg=1",
                        name,
                    ]
                )
                if created.returncode != 0 and not self.docker.network.exists(name):
                    if attempts and "overlap" in created.output:
                        continue
                    raise DockerError(
                        f"cannot create network {name}", returncode=created.returncode, output_tail=tail(created.output)
                    )
            except DockerException as exc:
                if not self.docker.network.exists(name):  # lost a race with another creator: fine
                    raise _wrap(exc, f"cannot create network {name}") from None
        return self.edge_address(name)

    def edge_address(self, name: str) -> str | None:
        for pool in self._ipam(name):
            if pool.subnet and pool.ip_range:
                return str(ipaddress.ip_network(pool.subnet)[2])
        return None

    def _ipam(self, network: str) -> list[_AddressPool]:
        try:
            configs = self.docker.network.inspect(network).ipam.config or []  # plain dicts
        except DockerException as exc:
            raise _wrap(exc, f"cannot inspect network {network}") from None
        return [
            _AddressPool(subnet=str(config.get("Subnet") or ""), ip_range=str(config.get("IPRange") or ""))
            for config in configs
        ]

    def container_address(self, container: str, network: str) -> str | None:
        try:
            networks = self.docker.container.inspect(container).network_settings.networks or {}
        except NoSuchContainer:
            return None
        except DockerException as exc:
            raise _wrap(exc, f"cannot inspect container {container}") from None
        endpoint = networks.get(network)
        return str(endpoint.ip_address) if endpoint and endpoint.ip_address else None

    def container(self, name: str) -> ContainerState | None:
        try:
            c = self.docker.container.inspect(name)
        except NoSuchContainer:
            return None
        except DockerException as exc:
            raise _wrap(exc, f"cannot inspect container {name}") from None
        return ContainerState(
            name=name,
            running=bool(c.state.running),
            status=str(c.state.status),
            exit_code=c.state.exit_code,
            labels=dict(c.config.labels or {}),
            image=str(c.config.image),
        )

    def logs(self, name: str, lines: int = 30) -> str:
        try:
            logs = self.docker.container.logs(name, tail=lines)
        except DockerException:
            return ""
        # Without stream=True python-on-whales returns the text; its annotation names both.
        return logs if isinstance(logs, str) else ""

    def exec(
        self,
        name: str,
        argv: list[str],
        *,
        user: str | None = None,
        env: dict[str, str] | None = None,
        input: bytes | None = None,
    ) -> ExecResult:
        """Run a command in a running container; never raises on a non-zero exit.

        Environment values reach the container by name only (`--env KEY`), never in argv.
        """
        return self._capture(
            self._docker_cmd()
            + ["exec"]
            + (["--interactive"] if input is not None else [])
            + (["--user", user] if user else [])
            + [arg for key in (env or {}) for arg in ("--env", key)]
            + [name, *argv],
            env=env,
            input=input,
        )

    def run_oneoff(
        self,
        image: str,
        argv: list[str],
        *,
        volumes: list[tuple[str, str, str]],
        network: str | None = None,
        env: dict[str, str] | None = None,
        user: str | None = None,
        workdir: str | None = None,
        cpu_shares: int | None = None,
        io_weight: int | None = None,
        entrypoint: str | None = None,
    ) -> ExecResult:
        """docker run --rm IMAGE ARGV with bind mounts; never raises on a non-zero exit.

        Environment values reach the container by name only (`--env KEY`), never in argv.
        `io_weight` (blkio weight, 10-1000) is passed only where the kernel honours it
        (`io_weight_supported`); elsewhere Docker would discard it with a warning on stderr.
        """
        mounts = [arg for source, target, mode in volumes for arg in ("--volume", f"{source}:{target}:{mode}")]
        return self._capture(
            self._docker_cmd()
            + ["run", "--rm", *mounts]
            + (["--network", network] if network else [])
            + (["--user", user] if user else [])
            + (["--workdir", workdir] if workdir else [])
            + (["--cpu-shares", str(cpu_shares)] if cpu_shares else [])
            + (["--blkio-weight", str(io_weight)] if io_weight and io_weight_supported() else [])
            + (["--entrypoint", entrypoint] if entrypoint else [])
            + [arg for key in (env or {}) for arg in ("--env", key)]
            + [image, *argv],
            env=env,
        )

    def image_identity(self, tag: str) -> tuple[str, str] | None:
        """(image id, architecture) of a local image, or None if there is no such image."""
        try:
            image = self.docker.image.inspect(tag)
        except NoSuchImage:
            return None
        except DockerException as exc:
            raise _wrap(exc, f"cannot inspect image {tag}") from None
        return str(image.id), str(image.architecture or "unknown")

    def add_labels(self, tag: str, labels: Mapping[str, str]) -> None:
        """Give an image more labels: `FROM tag` + the labels, built (legacy builder, no context) under
        the same tag. Its layers are the same; only its config, and so its id, changes."""
        argv = (
            self._docker_cmd()
            + ["image", "build", "--quiet", "--tag", tag]
            + [arg for key, value in labels.items() for arg in ("--label", f"{key}={value}")]
            + ["-"]
        )
        result = self._capture(argv, env={"DOCKER_BUILDKIT": "0"}, input=f"FROM {tag}\n".encode())
        if result.returncode != 0:
            raise DockerError(
                f"labelling image {tag} failed (exit {result.returncode})",
                command=argv[: argv.index("--tag") + 2],
                returncode=result.returncode,
                output_tail=tail(result.output),
            )

    @staticmethod
    def _capture(argv: list[str], env: dict[str, str] | None = None, input: bytes | None = None) -> ExecResult:
        try:
            # run()'s annotation wants bytes for `input`, though None (its default: no stdin) is what it takes.
            if input is None:
                stdout, stderr = python_on_whales.utils.run(argv, env=env or {}, return_stderr=True)
            else:
                stdout, stderr = python_on_whales.utils.run(argv, env=env or {}, return_stderr=True, input=input)
            return ExecResult(0, stdout, stderr)
        except DockerException as exc:
            return ExecResult(exc.return_code, exc.stdout or "", exc.stderr or "")

    def remove_container(self, name: str) -> None:
        try:
            self.docker.container.remove(name, force=True, volumes=True)
        except NoSuchContainer:
            return
        except DockerException as exc:
            raise _wrap(exc, f"cannot remove container {name}") from None

    def compose_up(
        self,
        project: ComposeProject,
        services: list[str] | None = None,
        *,
        wait: bool = False,
        force_recreate: bool = False,
        cpu_shares: int | None = None,
    ) -> None:
        """`cpu_shares`: the containers' CPU weight from their first instant (created, weighted,
        then started); kept out of the Compose file, so a later `up` never recreates them for it."""
        project.write_env_file()
        try:
            if cpu_shares is None:
                project.client().compose.up(
                    services, detach=True, wait=wait, force_recreate=force_recreate, quiet=True, pull="never"
                )
                return
            client = project.client()
            client.compose.create(services, force_recreate=force_recreate, pull="never")
            created = [
                c.name
                for c in self.project_containers(project.name)
                if not services or c.labels.get("com.docker.compose.service") in services
            ]
            self.set_cpu_shares(created, cpu_shares)
            client.compose.start(services)
        except DockerException as exc:
            raise _wrap(exc, f"starting {project.name} failed") from None

    def set_cpu_shares(self, names: list[str], shares: int) -> None:
        """Give these containers a CPU weight; a running one keeps running."""
        if names:
            try:
                self.docker.container.update(names, cpu_shares=shares)
            except DockerException as exc:
                raise _wrap(exc, f"cannot set the CPU weight of {', '.join(names)}") from None

    def compose_stop(self, project: ComposeProject, services: list[str]) -> None:
        project.write_env_file()
        try:
            project.client().compose.stop(services)
        except DockerException as exc:
            raise _wrap(exc, f"stopping {', '.join(services)} of {project.name} failed") from None

    def compose_rm(self, project: ComposeProject, services: list[str]) -> None:
        project.write_env_file()
        try:
            project.client().compose.rm(services, stop=True)
        except DockerException as exc:
            raise _wrap(exc, f"removing {', '.join(services)} of {project.name} failed") from None

    def compose_down(self, project: ComposeProject, *, volumes: bool = False) -> None:
        project.write_env_file()
        try:
            project.client().compose.down(remove_orphans=True, volumes=volumes, quiet=True)
        except DockerException as exc:
            raise _wrap(exc, f"removing {project.name} failed") from None

    def compose_run(self, project: ComposeProject, service: str, argv: list[str]) -> ExecResult:
        """A one-off container of a service (no aliases, no dependencies), removed afterwards."""
        project.write_env_file()
        compose = [str(part) for part in project.client().client_config.docker_compose_cmd]
        return self._capture(compose + ["run", "--rm", "--no-deps", "-T", service, *argv])

    def project_containers(self, project_name: str) -> list[ContainerState]:
        try:
            found = self.docker.container.list(
                all=True, filters={"label": f"com.docker.compose.project={project_name}"}
            )
        except DockerException as exc:
            raise _wrap(exc, f"cannot list containers of {project_name}") from None
        return [
            ContainerState(
                name=c.name,
                running=bool(c.state.running),
                status=str(c.state.status),
                exit_code=c.state.exit_code,
                labels=dict(c.config.labels or {}),
                image=str(c.config.image),
            )
            for c in found
        ]
