# Shared shell helpers for scripts/test.sh, scripts/demo.sh and scripts/dockerd.sh. Source it; do not run it.
# Everything here is idempotent: a second run installs nothing and starts nothing that already runs.

KAT_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KAT_DOCKER=/usr/bin/docker        # Debian's 20.10 client (BuildKit built in); a newer client may be first on PATH
KAT_DOCKERD_LOG=/var/log/kat-dockerd.log
KAT_DOCKERD_PID=/var/run/docker.pid
KAT_APT_UPDATED=

kat_say() { printf '%s\n' "$*" >&2; }

# Root on Debian (apt-get) or a clear list of what is missing.
kat_need_root_debian() {
    local missing=()
    [ "$(id -u)" -eq 0 ] || missing+=("root (run as root, or prefix the command with sudo)")
    command -v apt-get >/dev/null 2>&1 || missing+=("apt-get (a Debian or Ubuntu machine)")
    command -v python3 >/dev/null 2>&1 || missing+=("python3 (3.11 or newer)")
    if [ ${#missing[@]} -gt 0 ]; then
        kat_say "cannot set up this machine by itself; missing: ${missing[*]}"
        kat_say "needed: python3 >= 3.11 with venv, keepalived, iproute2, iptables, docker.io (dockerd), docker-compose,"
        kat_say "        busybox-static, debootstrap, procps, psmisc; root for network namespaces."
        exit 1
    fi
}

# Install the Debian packages that are missing (apt-get update once, only when something is missing).
kat_ensure_apt() {
    local missing=() pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    kat_say "installing Debian packages: ${missing[*]}"
    if [ -z "$KAT_APT_UPDATED" ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null >/dev/null
        KAT_APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null >/dev/null
}

# The project's virtual environment in .venv, reinstalled only when pyproject.toml changed.
kat_ensure_venv() {
    local venv="$KAT_ROOT/.venv" stamp want
    want=$(sha256sum "$KAT_ROOT/pyproject.toml" | cut -d' ' -f1)
    stamp="$venv/.kat-pyproject.sha256"
    if [ ! -x "$venv/bin/python" ]; then
        kat_say "creating the Python environment in .venv"
        python3 -m venv "$venv"
    fi
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        kat_say "installing the project and its test tools into .venv"
        "$venv/bin/pip" install -q --disable-pip-version-check -e "$KAT_ROOT[test]" </dev/null
        echo "$want" >"$stamp"
    fi
}

# `docker info` with a bound: a deadlocked dockerd answers /_ping but never /info, and must not hang the caller.
kat_dockerd_up() { timeout 30 "$KAT_DOCKER" info >/dev/null 2>&1; }

# A running Docker engine: started in the background (and said so) when none answers.
kat_ensure_dockerd() {
    kat_dockerd_up && return 0
    command -v dockerd >/dev/null 2>&1 || kat_ensure_apt docker.io
    if [ -f "$KAT_DOCKERD_PID" ] && ! kill -0 "$(cat "$KAT_DOCKERD_PID")" 2>/dev/null; then
        rm -f "$KAT_DOCKERD_PID"
    elif [ -f "$KAT_DOCKERD_PID" ]; then
        kat_say "dockerd runs but does not answer /info (deadlocked?): restarting it"
        kat_stop_dockerd || true
    fi
    kat_say "no Docker engine answers: starting dockerd (log: $KAT_DOCKERD_LOG)"
    setsid nohup dockerd --pidfile "$KAT_DOCKERD_PID" >>"$KAT_DOCKERD_LOG" 2>&1 </dev/null &
    local waited=0
    until kat_dockerd_up; do
        sleep 0.5
        waited=$((waited + 1))
        if [ "$waited" -ge 120 ]; then
            kat_say "dockerd did not answer within 60 s; last lines of $KAT_DOCKERD_LOG:"
            tail -n 20 "$KAT_DOCKERD_LOG" >&2
            return 1
        fi
    done
}

kat_stop_dockerd() {
    local pid waited=0
    pid=$(cat "$KAT_DOCKERD_PID" 2>/dev/null || true)
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid"
    while kill -0 "$pid" 2>/dev/null; do
        sleep 0.2
        waited=$((waited + 1))
        if [ "$waited" -eq 150 ]; then
            kat_say "dockerd did not stop within 30 s: killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        if [ "$waited" -ge 200 ]; then
            kat_say "dockerd did not go even after SIGKILL"
            return 1
        fi
    done
    return 0
}

# The apt mirror this machine uses (from its own sources), for debootstrap.
kat_apt_mirror() {
    local mirror
    mirror=$(grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -n 1)
    [ -n "$mirror" ] || mirror=$(grep -hE '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | grep -v security | head -n 1)
    printf '%s\n' "$mirror"
}

# Local images the tests and the demo need; nothing is pulled from a registry.
kat_ensure_images() {
    if ! "$KAT_DOCKER" image inspect kat-busybox:latest >/dev/null 2>&1; then
        kat_say "building kat-busybox:latest (busybox-static, 2 MB)"
        local ctx
        ctx=$(mktemp -d)
        cp /bin/busybox "$ctx/busybox"
        printf 'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox","--install","-s","/bin"]\n' >"$ctx/Dockerfile"
        "$KAT_DOCKER" build -q -t kat-busybox:latest "$ctx" >/dev/null
        rm -rf "$ctx"
    fi
    if ! "$KAT_DOCKER" image inspect debian:bookworm-slim >/dev/null 2>&1; then
        local root mirror
        mirror=$(kat_apt_mirror)
        [ -n "$mirror" ] || { kat_say "no apt mirror found in /etc/apt sources"; return 1; }
        root=$(mktemp -d)
        kat_say "creating debian:bookworm-slim locally with debootstrap (about a minute)"
        if ! debootstrap --variant=minbase bookworm "$root" "$mirror" >"$root.log" 2>&1; then
            kat_say "debootstrap failed; last lines of its log:"
            tail -n 20 "$root.log" >&2
            rm -rf "$root" "$root.log"
            return 1
        fi
        rm -f "$root.log"
        if [ ! -x "$root/bin/sh" ]; then
            kat_say "debootstrap left no usable system in $root"
            rm -rf "$root"
            return 1
        fi
        printf 'deb %s bookworm main\n' "$mirror" >"$root/etc/apt/sources.list"
        rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*
        tar -C "$root" -c . | "$KAT_DOCKER" import - debian:bookworm-slim >/dev/null
        rm -rf "$root"
    fi
}

# The image built from the Dockerfile as it is (rebuilt when the sources changed; docker's cache makes that cheap).
kat_build_image() {
    local version
    version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$KAT_ROOT/supervisor/__init__.py")
    local args=(build -q -t docker-keepalived:latest --network host --build-arg "VERSION=$version")
    [ -f /etc/ssl/certs/ca-certificates.crt ] && args+=(--secret id=ca,src=/etc/ssl/certs/ca-certificates.crt)
    DOCKER_BUILDKIT=1 "$KAT_DOCKER" "${args[@]}" "$KAT_ROOT" >/dev/null
}

# Everything the test suite and the demo need on this machine.
kat_ensure_machine() {
    kat_need_root_debian
    kat_ensure_apt keepalived iproute2 iptables docker.io docker-compose busybox-static debootstrap procps psmisc \
        ca-certificates python3-venv util-linux
    kat_ensure_venv
    kat_ensure_dockerd
    kat_ensure_images
}
