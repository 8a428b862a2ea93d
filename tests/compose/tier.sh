#!/usr/bin/env bash
# The compose tier (`./dev test-compose [pytest args]`; CI runs it after the others): the real
# compose.yaml as containers on this machine under docker-compose 1.29, tested through nginx as
# a user reaches it (tests/compose/). In order, it
#   1. installs Debian's docker.io, docker-compose, debootstrap and openssl where missing (root,
#      apt), or says SKIPPED where Docker cannot run here (not root, no apt, dockerd fails);
#   2. uses the Docker daemon that runs here, or starts one of its own that leaves the host's
#      network alone (no default bridge, no iptables rules, no IP forwarding; builds use the
#      host's network) under /var/lib/tiller-compose and /run/tiller-compose;
#   3. builds the images: a Debian base (standins/base.sh, cached under ~/.cache), the
#      stand-ins that tests/compose/standins.yaml names, and Tiller's from the repo's Dockerfile
#      on that base;
#   4. runs tests/compose with an admin key, a payload key and a TLS certificate made for it;
#   5. on any exit removes what it started: the project's containers, networks and volumes, and
#      its own daemon with everything in it. If the tier is killed outright its daemon gets a
#      SIGTERM (and stops its containers); the next run clears whatever is left first.
set -euo pipefail
cd "$(dirname "$0")/../.."

PYTHON=${TILLER_TIER_PYTHON:-.venv/bin/python}
STATE=/var/lib/tiller-compose  # the own daemon's images, containers and volumes; removed at exit
RUN=/run/tiller-compose         # its sockets and pid files
CACHE=${TILLER_COMPOSE_CACHE:-$HOME/.cache/tiller-compose}  # the base image's tarball (base.sh)
BASE_IMAGE=tiller-standin/python:3.11-bookworm
# Every docker-compose here and in the tests reads these: the real file, then the stand-ins.
export COMPOSE_PROJECT_NAME=tiller-tier
export COMPOSE_FILE=compose.yaml:tests/compose/standins.yaml
started=$SECONDS

say() { echo "compose tier: $*" >&2; }
skip() {
  say "SKIPPED: $*"
  exit 0
}

apt_install() {
  apt-get install -y --no-install-recommends "$@" >/dev/null 2>&1 \
    || { apt-get update >/dev/null 2>&1 \
      && apt-get install -y --no-install-recommends "$@" >/dev/null 2>&1; }
}

preflight() {
  [ "$(uname -s)" = Linux ] || skip "containers need Linux"
  [ "$(id -u)" = 0 ] || skip "it runs dockerd and builds a root filesystem: run it as root"
  local missing=()
  command -v dockerd >/dev/null || missing+=(docker.io)
  command -v docker-compose >/dev/null || missing+=(docker-compose)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  command -v openssl >/dev/null || missing+=(openssl)
  command -v setpriv >/dev/null || missing+=(util-linux)
  if [ ${#missing[@]} -gt 0 ]; then
    command -v apt-get >/dev/null || skip "no apt-get to install ${missing[*]}"
    say "installing ${missing[*]} (apt)"
    apt_install "${missing[@]}" || skip "apt could not install ${missing[*]}"
  fi
}

own_pid() {  # the pid in a pid file of ours, if that process still runs
  local pid
  pid=$(cat "$1" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

stop_pid() {  # SIGTERM, up to $2 seconds, then SIGKILL
  local pid=$1 deadline=$((SECONDS + $2))
  kill -TERM "$pid" 2>/dev/null || return 0
  while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.5; done
  kill -KILL "$pid" 2>/dev/null || true
}

clear_leftovers() {
  # A run killed outright may have left its daemon, or the containerd it ran, behind.
  local pid pidfile
  for pidfile in "$RUN/dockerd.pid" "$RUN/containerd/containerd.pid"; do
    if pid=$(own_pid "$pidfile"); then
      say "stopping what a killed run left: $(tr '\0' ' ' <"/proc/$pid/cmdline" | cut -c1-60)"
      stop_pid "$pid" 60
    fi
  done
}

unmount_under() {
  local target
  for target in $(awk -v a="$1/" 'index($2, a) == 1 {print $2}' /proc/self/mounts | sort -r); do
    umount -l "$target" 2>/dev/null || true
  done
}

start_daemon() {
  clear_leftovers
  mkdir -p "$STATE" "$RUN"
  say "starting a Docker daemon of its own (no bridge, no iptables)"
  # --pdeathsig: if this script is killed outright, the daemon still gets its SIGTERM.
  setpriv --pdeathsig TERM -- dockerd \
    --data-root "$STATE/docker" --exec-root "$RUN" --pidfile "$RUN/dockerd.pid" \
    --host "unix://$RUN/docker.sock" \
    --bridge none --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false \
    >"$STATE/dockerd.log" 2>&1 &
  DAEMON_PID=$!
  export DOCKER_HOST=unix://$RUN/docker.sock
  local deadline=$((SECONDS + 60))
  until docker info >/dev/null 2>&1; do
    if ! kill -0 "$DAEMON_PID" 2>/dev/null || [ $SECONDS -ge $deadline ]; then
      tail -5 "$STATE/dockerd.log" >&2
      skip "dockerd cannot run here (its log's last lines are above)"
    fi
    sleep 0.5
  done
  empty_daemon  # everything in it is the tier's: whatever a killed run left goes now
}

empty_daemon() {
  docker ps -aq | xargs -r docker rm -f >/dev/null
  docker volume ls -q | xargs -r docker volume rm >/dev/null
  docker network prune -f >/dev/null
}

cleanup() {
  local status=$?
  set +e
  trap - EXIT INT TERM
  local reachable=0
  docker info >/dev/null 2>&1 && reachable=1
  [ $reachable = 1 ] && docker-compose down --volumes --remove-orphans --timeout 5 >/dev/null 2>&1
  if [ -n "${DAEMON_PID:-}" ]; then
    [ $reachable = 1 ] && empty_daemon  # its networks' bridges would outlive it
    stop_pid "$DAEMON_PID" 60
    wait "$DAEMON_PID" 2>/dev/null
    clear_leftovers
    unmount_under "$RUN"
    unmount_under "$STATE"
    rm -rf "$STATE" "$RUN"
    say "its Docker daemon is stopped, and its images, containers and volumes are removed"
  elif [ $reachable = 1 ]; then
    say "the project's containers, networks and volumes are removed; the images it built stay"
  fi
  [ -n "${WORK:-}" ] && rm -rf "$WORK"
  say "took $((SECONDS - started)) s"
  exit "$status"
}

build_images() {
  say "building the images (a Debian base, the stand-ins, Tiller's)"
  tests/compose/standins/base.sh "$BASE_IMAGE"
  local image name
  # The stand-ins are the images standins.yaml names; each has its Dockerfile in standins/.
  for image in $(grep -o 'tiller-standin/[^ ]*' tests/compose/standins.yaml); do
    name=${image#tiller-standin/}
    build "$image" -f "tests/compose/standins/${name%%:*}.Dockerfile" tests/compose/standins
  done
  build tiller:local .
}

build() {  # TAG [docker build arguments]: quiet unless it fails
  local tag=$1
  shift
  docker build --network host --build-arg BASE_IMAGE="$BASE_IMAGE" -t "$tag" "$@" \
    >"$WORK/build.log" 2>&1 || { tail -30 "$WORK/build.log" >&2; say "building $tag failed"; exit 1; }
}

secrets_for_the_run() {
  # Made for this run and given to the containers at run time, as compose.yaml asks: none of
  # them is in an image (tests/compose/test_image.py looks).
  WORK=/tmp/tiller-compose-tier  # one path, so that a killed run's keys go at the next start
  rm -rf "$WORK"
  mkdir -m 700 "$WORK"
  export TILLER_ADMIN_KEY="tk-tier-$(openssl rand -hex 16)"
  export TILLER_PAYLOAD_KEYS="tier:$(openssl rand -base64 32)"
  export TILLER_COMPOSE_CERTS=$WORK/certs
  mkdir "$TILLER_COMPOSE_CERTS"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost \
    -keyout "$TILLER_COMPOSE_CERTS/tls.key" -out "$TILLER_COMPOSE_CERTS/tls.crt" 2>/dev/null
}

ports_free() {  # compose.yaml's nginx and Temporal UI publish these on the host
  local port
  for port in 8080 8443 50051 50443 8233; do
    if ss -Htln "sport = :$port" | grep -q .; then
      say "FAILED: port $port is in use here, and compose.yaml publishes it"
      ss -Htlnp "sport = :$port" >&2
      exit 1
    fi
  done
}

preflight
mkdir -p "$CACHE"
exec 8>"$CACHE/.tier.lock"
flock 8  # one tier at a time: it publishes compose.yaml's fixed host ports
ports_free
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
secrets_for_the_run  # first: compose.yaml refuses every command without the keys
if docker info >/dev/null 2>&1; then
  say "using the Docker daemon at ${DOCKER_HOST:-its default socket}"
  docker-compose down --volumes --remove-orphans --timeout 5 >/dev/null 2>&1 || true
else
  start_daemon
fi
build_images
say "images built at $((SECONDS - started)) s; running tests/compose"
# --pdeathsig: a killed tier takes its tests with it (they would act on a daemon going away).
TILLER_COMPOSE_TIER=1 setpriv --pdeathsig TERM -- "$PYTHON" -m pytest tests/compose "$@"
