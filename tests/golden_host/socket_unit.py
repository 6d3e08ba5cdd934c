"""A golden host's stand-in for a systemd .socket unit and its socket-activated service (the
container has no systemd). Copied into B/.golden/ by tests/golden_host.py, run with the
container's python3:

    socket_unit.py listen PATH CONTROL USER GROUP MODE   the socket unit: creates and listens on
                                                          PATH (SocketUser/Group/Mode), and hands
                                                          the listening socket to whoever asks on
                                                          the unix socket CONTROL
    socket_unit.py receive CONTROL -- COMMAND...          the service: gets the listening socket as
                                                          fd 3 with LISTEN_FDS=1 and LISTEN_PID, and
                                                          as stdin (StandardInput=socket), as systemd
                                                          passes it, then execs COMMAND

As with systemd, the socket keeps listening while the service is stopped (connections queue
until the service takes them), and a service started while it runs gets the very same socket;
unlike systemd, a connection does not start the service.
"""

import grp
import os
import pwd
import socket
import sys
import time

SD_LISTEN_FDS_START = 3


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def listen(path: str, control: str, user: str, group: str, mode: str) -> None:
    _unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    os.chown(path, pwd.getpwnam(user).pw_uid, grp.getgrnam(group).gr_gid)
    os.chmod(path, int(mode, 8))
    listener.listen(128)
    _unlink(control)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(control)
    os.chmod(control, 0o600)
    server.listen(8)
    print(f"socket unit: listening on {path}", flush=True)
    while True:
        connection, _ = server.accept()
        with connection:
            socket.send_fds(connection, [b"fd"], [listener.fileno()])


def receive(control: str, command: list[str]) -> None:
    deadline = time.monotonic() + 10
    while True:
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            connection.connect(control)
            break
        except OSError as exc:
            connection.close()
            if time.monotonic() > deadline:
                sys.exit(f"socket-activated service: its socket unit does not answer on {control}: {exc}")
            time.sleep(0.1)
    with connection:
        _, fds, _, _ = socket.recv_fds(connection, 16, 1)
    if not fds:
        sys.exit("socket-activated service: no socket received")
    # StandardInput=socket: the socket is stdin too (what gunicorn's --bind fd://0 names).
    for fd in (0, SD_LISTEN_FDS_START):
        os.dup2(fds[0], fd)
        os.set_inheritable(fd, True)
    if fds[0] not in (0, SD_LISTEN_FDS_START):
        os.close(fds[0])
    env = {**os.environ, "LISTEN_FDS": "1", "LISTEN_PID": str(os.getpid())}  # exec keeps the pid
    os.execvpe(command[0], command, env)


if __name__ == "__main__":
    if sys.argv[1] == "listen":
        listen(*sys.argv[2:7])
    elif sys.argv[1] == "receive" and sys.argv[3] == "--":
        receive(sys.argv[2], sys.argv[4:])
    else:
        sys.exit(__doc__)
