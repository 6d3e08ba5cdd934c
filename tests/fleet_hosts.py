"""Fleet hosts for the end-to-end tests: sumbg roots reached through a real sshd.

Each "host" is a sumbg root with its own edge on this machine. The fleet code reaches
them only as SSH destinations (aliases in an ssh_config made here, a key made here, a
real OpenSSH server on a loopback port), so it cannot tell they are local.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

SSHD = Path("/usr/sbin/sshd")


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class SshServer:
    """An OpenSSH server on 127.0.0.1:PORT that lets in one key made for the tests (as root,
    which owns the Docker engine here, like the deploy user of a VPS)."""

    def __init__(self, folder: Path, port: int) -> None:
        self.folder = folder
        self.port = port
        self.client_key = folder / "id_ed25519"
        self.known_hosts = folder / "known_hosts"
        self.proc: subprocess.Popen | None = None

    def start(self) -> SshServer:
        if not SSHD.exists():
            raise RuntimeError("no sshd: run `make setup` (it installs openssh-server for these tests)")
        self.folder.mkdir(parents=True, exist_ok=True)
        host_key = self.folder / "host_ed25519"
        for key in (host_key, self.client_key):
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "sumbg-tests", "-f", str(key)],
                check=True,
                capture_output=True,
            )
        shutil.copyfile(self.client_key.with_suffix(".pub"), self.folder / "authorized_keys")
        host_pub = host_key.with_suffix(".pub").read_text().split()
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {host_pub[0]} {host_pub[1]}\n")
        config = self.folder / "sshd_config"
        config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {host_key}\n"
            f"AuthorizedKeysFile {self.folder / 'authorized_keys'}\nPidFile {self.folder / 'sshd.pid'}\n"
            "PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "UsePAM no\nStrictModes no\nPrintMotd no\nPrintLastLog no\nMaxStartups 50\nMaxSessions 50\n"
            # restic's sftp: repositories (the backup tests) need the server's own sftp.
            "Subsystem sftp internal-sftp\n"
        )
        Path("/run/sshd").mkdir(exist_ok=True)  # its privilege separation folder
        self.proc = subprocess.Popen(
            [str(SSHD), "-D", "-e", "-f", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(self.folder / "sshd.log", "w"),
        )
        deadline = time.monotonic() + 15
        while not _port_open(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sshd did not start: {(self.folder / 'sshd.log').read_text()[-2000:]}")
            time.sleep(0.1)
        return self

    def client_config(self, aliases: list[str], closed_port: int) -> Path:
        """An ssh_config naming each alias as this server, and `vps-down` as a port nobody answers."""
        lines = []
        for alias in aliases:
            lines += [f"Host {alias}", "  HostName 127.0.0.1", f"  Port {self.port}", "  User root"]
        lines += [
            "Host vps-down",
            "  HostName 127.0.0.1",
            f"  Port {closed_port}",
            "  User root",
            "Host *",
            f"  IdentityFile {self.client_key}",
            "  IdentitiesOnly yes",
            f"  UserKnownHostsFile {self.known_hosts}",
            "  StrictHostKeyChecking yes",
            "  LogLevel ERROR",
        ]
        path = self.folder / "ssh_config"
        path.write_text("\n".join(lines) + "\n")
        os.chmod(path, 0o600)
        return path

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
