"""The Docker adapter: the only module that imports python_on_whales.

Everything else asks this module for engine facts or hands it a Compose
project description; every python_on_whales exception is translated here into
a DockerError carrying the command, exit code and output tail.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import python_on_whales
from python_on_whales import ClientNotFoundError, Container, DockerClient, Image
from python_on_whales.exceptions import DockerException, NoSuchContainer, NoSuchImage

from sumbg import naming
from sumbg.errors import DockerError, tail
from sumbg.util import atomic_write

COMPOSE_DIR = Path(__file__).resolve().parents[2] / "compose"


REMOVAL_WAIT_SECONDS = 60.0  # how long a removal Docker already started may take


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
    restarting: bool = False  # between two runs, under its restart policy
    restart_count: int = 0  # how often Docker restarted it (it never resets)
    started_at: float = 0.0  # when its current (or last) run started, epoch seconds
    finished_at: float = 0.0  # when its last run ended, epoch seconds (0: never)
    hostname: str = ""  # its hostname (Celery's node name is celery@<hostname>)
    id: str = ""
    oom_killed: bool = False


def _state_of(c: Container) -> ContainerState:
    started, finished = c.state.started_at, c.state.finished_at
    return ContainerState(
        name=c.name,
        running=bool(c.state.running),
        status=str(c.state.status),
        exit_code=c.state.exit_code,
        labels=dict(c.config.labels or {}),
        image=str(c.config.image),
        restarting=bool(c.state.restarting),
        restart_count=int(c.restart_count or 0),
        # A container never started reports year 1.
        started_at=started.timestamp() if started is not None and started.year > 1 else 0.0,
        finished_at=finished.timestamp() if finished is not None and finished.year > 1 else 0.0,
        hostname=str(c.config.hostname or ""),
        id=str(c.id),
        oom_killed=bool(c.state.oom_killed),
    )


@dataclass(frozen=True)
class NetworkFacts:
    """A network as the engine reports it: its IPv4 subnets, labels and the containers running on it."""

    name: str
    subnets: tuple[str, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    containers: tuple[str, ...] = ()

    def label(self, key: str) -> str | None:
        return dict(self.labels).get(key)


def _network_facts(document: Mapping[str, object]) -> NetworkFacts:
    ipam = document.get("IPAM")
    configs = (ipam.get("Config") if isinstance(ipam, dict) else None) or []
    subnets = tuple(
        str(config["Subnet"])
        for config in configs
        if isinstance(config, dict) and config.get("Subnet") and ":" not in str(config["Subnet"])
    )
    labels = document.get("Labels") or {}
    containers = document.get("Containers") or {}
    return NetworkFacts(
        name=str(document.get("Name") or ""),
        subnets=subnets,
        labels=tuple(sorted((str(k), str(v)) for k, v in labels.items())) if isinstance(labels, dict) else (),
        containers=tuple(
            sorted(str(c.get("Name") or "") for c in containers.values() if isinstance(c, dict))
            if isinstance(containers, dict)
            else ()
        ),
    )


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
    def _image(self, tag: str) -> Image | None:
        """A local image, or None if there is no such image."""
        try:
            return self.docker.image.inspect(tag)
        except NoSuchImage:
            return None
        except DockerException as exc:
            raise _wrap(exc, f"cannot inspect image {tag}") from None

    def image_labels(self, tag: str) -> dict[str, str] | None:
        image = self._image(tag)
        return None if image is None else dict(image.config.labels or {})

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

    # ------------------------------------------------------------ networks of the address plan
    def networks(self, *, label: str | None = None) -> list[NetworkFacts]:
        """Every network of the engine (with `label` "key=value": those labelled so), in two commands
        whatever their number."""
        listing = self._capture(
            self._docker_cmd()
            + ["network", "ls", "--quiet", "--no-trunc"]
            + (["--filter", f"label={label}"] if label else [])
        )
        if listing.returncode != 0:
            raise DockerError(
                "cannot list the engine's networks", returncode=listing.returncode, output_tail=tail(listing.output)
            )
        ids = listing.stdout.split()
        if not ids:
            return []
        inspected = self._capture(self._docker_cmd() + ["network", "inspect", *ids])
        try:
            documents = json.loads(inspected.stdout or "[]")
        except ValueError:
            documents = None
        # A network removed between the two commands only drops out of the answer.
        if not isinstance(documents, list) or (inspected.returncode != 0 and not documents):
            raise DockerError(
                "cannot inspect the engine's networks",
                returncode=inspected.returncode,
                output_tail=tail(inspected.output),
            )
        return [_network_facts(document) for document in documents if isinstance(document, dict)]

    def network(self, name: str) -> NetworkFacts | None:
        inspected = self._capture(self._docker_cmd() + ["network", "inspect", name])
        if inspected.returncode != 0:
            if self.docker.network.exists(name):
                raise DockerError(
                    f"cannot inspect network {name}",
                    returncode=inspected.returncode,
                    output_tail=tail(inspected.output),
                )
            return None
        documents = json.loads(inspected.stdout or "[]")
        return _network_facts(documents[0]) if documents else None

    def create_network(
        self,
        name: str,
        subnet: str,
        *,
        gateway: str,
        ip_range: str | None = None,
        labels: Mapping[str, str],
    ) -> bool:
        """A bridge network on an explicit subnet (no default pool involved). False when the engine
        refuses the subnet as overlapping another network (someone else took it first)."""
        # python-on-whales has no --ip-range: the docker CLI itself.
        argv = (
            self._docker_cmd()
            + ["network", "create", "--driver", "bridge", "--subnet", subnet, "--gateway", gateway]
            + (["--ip-range", ip_range] if ip_range else [])
            + [arg for key, value in labels.items() for arg in ("--label", f"{key}={value}")]
            + [name]
        )
        created = self._capture(argv)
        if created.returncode == 0:
            return True
        if "overlap" in created.output.lower():
            return False
        raise DockerError(
            f"cannot create network {name} on {subnet}",
            command=_redact(argv),
            returncode=created.returncode,
            output_tail=tail(created.output),
        )

    def remove_network(self, name: str) -> None:
        """Remove a network (no container may be on it); one that does not exist is fine."""
        if not self.docker.network.exists(name):
            return
        try:
            self.docker.network.remove(name)
        except DockerException as exc:
            if self.docker.network.exists(name):
                raise _wrap(exc, f"cannot remove network {name}") from None

    def container_networks(self, container: str) -> dict[str, str] | None:
        """{network: the container's IPv4 address there ("" while it is stopped)}, or None if there is no
        such container. Counts networks joined with `docker network connect` too."""
        try:
            networks = self.docker.container.inspect(container).network_settings.networks or {}
        except NoSuchContainer:
            return None
        except DockerException as exc:
            raise _wrap(exc, f"cannot inspect container {container}") from None
        return {name: str(endpoint.ip_address or "") for name, endpoint in networks.items()}

    def connect_network(self, network: str, container: str, address: str | None) -> None:
        """Join a container to a network, at `address` if given (stopped or running: it keeps it)."""
        try:
            self.docker.network.connect(network, container, ip=address)
        except DockerException as exc:
            if network not in (self.container_networks(container) or {}):  # joined meanwhile: fine
                raise _wrap(exc, f"cannot connect {container} to network {network}") from None

    def disconnect_network(self, network: str, container: str) -> None:
        if network not in (self.container_networks(container) or {}):
            return
        try:
            self.docker.network.disconnect(network, container, force=True)
        except DockerException as exc:
            raise _wrap(exc, f"cannot disconnect {container} from network {network}") from None

    def join_edge_links(self, edge_name: str, container: str) -> list[str]:
        """Connect the edge container to every site edge link made for this edge that it is not on yet,
        each at the address the link reserves for it. Returns the networks joined."""
        joined = self.container_networks(container)
        if joined is None:
            return []
        added = []
        for link in self.networks(label=f"{naming.EDGE_LINK_LABEL}={edge_name}"):
            if link.name not in joined:
                self.connect_network(link.name, container, link.label(naming.EDGE_ADDRESS_LABEL))
                added.append(link.name)
        return added

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
        return replace(_state_of(c), name=name)

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
        image = self._image(tag)
        return None if image is None else (str(image.id), str(image.architecture or "unknown"))

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
        """Gone when this returns. A container Docker is already removing (a `run --rm` whose client
        died, e.g. an operation killed mid-step) is waited for, not an error."""
        try:
            self.docker.container.remove(name, force=True, volumes=True)
        except NoSuchContainer:
            return
        except DockerException as exc:
            if "already in progress" in str(exc.stderr or ""):
                deadline = time.monotonic() + REMOVAL_WAIT_SECONDS
                while time.monotonic() < deadline:
                    if not self.docker.container.exists(name):
                        return
                    time.sleep(0.2)
            raise _wrap(exc, f"cannot remove container {name}") from None

    def compose_up(
        self,
        project: ComposeProject,
        services: list[str] | None = None,
        *,
        wait: bool = False,
        force_recreate: bool = False,
        cpu_shares: int | None = None,
        before_start: Callable[[], object] | None = None,
    ) -> None:
        """`cpu_shares`: the containers' CPU weight from their first instant (created, weighted,
        then started); kept out of the Compose file, so a later `up` never recreates them for it.
        `before_start`: runs between creating the containers and starting them (the edge joins the
        sites' networks there, so it starts able to reach every site)."""
        project.write_env_file()
        try:
            if cpu_shares is None and before_start is None:
                project.client().compose.up(
                    services, detach=True, wait=wait, force_recreate=force_recreate, quiet=True, pull="never"
                )
                return
            client = project.client()
            client.compose.create(services, force_recreate=force_recreate, pull="never")
            if cpu_shares is not None:
                created = [
                    c.name
                    for c in self.project_containers(project.name)
                    if not services or c.labels.get("com.docker.compose.service") in services
                ]
                self.set_cpu_shares(created, cpu_shares)
            if before_start is not None:
                before_start()
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

    def compose_stop(self, project: ComposeProject, services: list[str], *, timeout: float | None = None) -> None:
        project.write_env_file()
        try:
            project.client().compose.stop(services, timeout=None if timeout is None else max(1, round(timeout)))
        except DockerException as exc:
            raise _wrap(exc, f"stopping {', '.join(services)} of {project.name} failed") from None

    def compose_rm(self, project: ComposeProject, services: list[str]) -> None:
        project.write_env_file()
        try:
            project.client().compose.rm(services, stop=True)
        except DockerException as exc:
            raise _wrap(exc, f"removing {', '.join(services)} of {project.name} failed") from None

    def compose_down(self, project: ComposeProject, *, volumes: bool = False, timeout: float | None = None) -> None:
        """`timeout`: seconds each container has to stop after SIGTERM (default: its stop_grace_period)."""
        project.write_env_file()
        try:
            project.client().compose.down(
                remove_orphans=True,
                volumes=volumes,
                quiet=True,
                timeout=None if timeout is None else max(1, round(timeout)),
            )
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
        return [_state_of(c) for c in found]

    # ------------------------------------------------------------ one container's life
    def compose_run_detached(self, project: ComposeProject, service: str, name: str) -> str:
        """A container of `service` with the service's own command, started in the background under
        `name` (`compose run -d`): unlike `up`, it never reuses or replaces the service's other
        containers, so an old one can go on finishing its work beside it. Returns its id."""
        project.write_env_file()
        compose = [str(part) for part in project.client().client_config.docker_compose_cmd]
        argv = compose + ["run", "--detach", "--no-deps", "--name", name, service]
        result = self._capture(argv)
        if result.returncode != 0:
            raise DockerError(
                f"starting {name} failed (exit {result.returncode})",
                command=_redact(argv),
                returncode=result.returncode,
                output_tail=tail(result.output),
            )
        return result.stdout.strip().splitlines()[-1] if result.stdout.strip() else name

    def update_container(self, name: str, *, restart: str | None = None, cpu_shares: int | None = None) -> None:
        """Its restart policy ("no", "unless-stopped", ...) and CPU weight; a running one keeps running."""
        try:
            self.docker.container.update(name, restart=restart, cpu_shares=cpu_shares)
        except DockerException as exc:
            raise _wrap(exc, f"cannot update container {name}") from None

    def rename_container(self, name: str, new_name: str) -> None:
        try:
            self.docker.container.rename(name, new_name)
        except DockerException as exc:
            raise _wrap(exc, f"cannot rename container {name} to {new_name}") from None

    def signal_container(self, name: str, signal: str) -> None:
        """Send a signal to its first process and return at once (`docker kill --signal`)."""
        try:
            self.docker.container.kill(name, signal=signal)
        except NoSuchContainer:
            return
        except DockerException as exc:
            state = self.container(name)
            if state is None or not state.running:
                return  # it exited (or went) meanwhile: nothing left to signal
            raise _wrap(exc, f"cannot send {signal} to container {name}") from None

    # ------------------------------------------------------------ day-2: logs, one-off commands, versions
    def show_logs(self, name: str, *, follow: bool, since: float | None, tail: int | None) -> int:
        """`docker logs` of a container straight to this process's stdout and stderr (the
        app's two streams stay apart); returns its exit code. Ctrl-C ends a follow."""
        argv = (
            self._docker_cmd()
            + ["logs"]
            + (["--follow"] if follow else [])
            + (["--since", str(int(since))] if since is not None else [])
            + (["--tail", str(tail)] if tail is not None else [])
            + [name]
        )
        return _attached(argv)

    def log_lines(self, name: str) -> Iterator[bytes]:
        """Every line a container logged (stdout and stderr in order), each with the time Docker
        gave it (`--timestamps`), read as a stream: a long log is never held in memory."""
        argv = [*self._docker_cmd(), "logs", "--timestamps", name]
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert process.stdout is not None
        try:
            yield from process.stdout
        except BaseException:  # the reader stopped early (or failed): the stream is not wanted
            process.kill()
            raise
        finally:
            process.stdout.close()
            returncode = process.wait()
        if returncode != 0:
            raise DockerError(f"cannot read the logs of {name} (exit {returncode})", command=_redact(argv))

    def compose_run_attached(
        self, project: ComposeProject, service: str, argv: list[str], *, tty: bool, env_names: Sequence[str] = ()
    ) -> int:
        """A one-off container of a service with this process's stdin, stdout and stderr (a
        terminal when `tty`, plain pipes otherwise), removed afterwards; returns its exit code.
        `env_names`: variables of this process's environment passed by name (values never in argv)."""
        project.write_env_file()
        compose = [str(part) for part in project.client().client_config.docker_compose_cmd]
        return _attached(
            compose
            + ["run", "--rm", "--no-deps"]
            + ([] if tty else ["-T"])
            + [arg for key in env_names for arg in ("--env", key)]
            + [service, *argv]
        )

    def run_attached(
        self,
        image: str,
        argv: list[str],
        *,
        network: str,
        env: Mapping[str, str],
        tty: bool,
        cpu_shares: int,
    ) -> int:
        """`docker run --rm` of an image with this process's stdin, stdout and stderr; `env`
        reaches the container by name only (`--env KEY`), never in argv. Returns its exit code."""
        return _attached(
            self._docker_cmd()
            + ["run", "--rm", "--interactive", "--network", network, "--cpu-shares", str(cpu_shares)]
            + (["--tty"] if tty else [])
            + [arg for key in env for arg in ("--env", key)]
            + [image, *argv],
            env=env,
        )

    def versions(self) -> EngineVersions:
        """The engine's and Compose's versions ("" for one that does not answer)."""
        try:
            server = self.docker.version().server
        except DockerException:
            server = None
        except ClientNotFoundError:
            return EngineVersions("", "")
        try:
            compose = self.docker.compose.version()
        except DockerException:
            compose = ""
        return EngineVersions(str(server.version or "") if server else "", str(compose))

    def published_ports(self, name: str) -> list[int]:
        """The host ports a running container publishes."""
        try:
            ports = self.docker.container.inspect(name).network_settings.ports or {}
        except NoSuchContainer:
            return []
        except DockerException as exc:
            raise _wrap(exc, f"cannot inspect container {name}") from None
        return sorted(
            {int(binding["HostPort"]) for bindings in ports.values() for binding in (bindings or []) if binding}
        )


@dataclass(frozen=True)
class EngineVersions:
    engine: str  # the server's, e.g. 20.10.24+dfsg1
    compose: str  # as `docker compose version` says it, e.g. "Docker Compose version v2.40.3"


def _attached(argv: list[str], env: Mapping[str, str] | None = None) -> int:
    """Run a docker command with this process's stdin, stdout and stderr; its exit code (128 + N
    for one killed by signal N, as a shell reports it)."""
    try:
        code = subprocess.run(argv, env={**os.environ, **(env or {})}, check=False).returncode
    except FileNotFoundError:
        raise DockerError("the docker client is not installed (`make setup` installs it)") from None
    return 128 - code if code < 0 else code
