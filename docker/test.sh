#!/usr/bin/env bash
# Build the RoboVLM image and exercise it: the closed-loop sim demo and a replay of a generated bag, each in its own
# container, started from docker/compose.yaml. Prints the image size and build time last.
#
#   bash docker/test.sh                 (from anywhere; needs root or the docker group)
#
# On a machine without a reachable image registry the default base (BASE_IMAGE, python:3.11-slim-bookworm) cannot
# be pulled: a stand-in of the same distribution (Debian bookworm with python3 and venv) is built with debootstrap
# and tagged robovlm/base:bookworm. The host's CA bundle goes to the build as a secret and the host's local wheels
# (/opt/wheels, e.g. a CPU build of torch) through the bind-mounted docker/wheels/; neither is in the image.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
IMAGE="${ROBOVLM_IMAGE:-robovlm:test}"
BASE_IMAGE="${BASE_IMAGE:-python:3.11-slim-bookworm}"
STANDIN=robovlm/base:bookworm
CA_BUNDLE="${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
LOCAL_WHEELS="${LOCAL_WHEELS:-/opt/wheels}"
WORK="$ROOT/out/docker_test"
PROJECT="robovlm_test_$$"
log() { printf '\n[docker/test.sh] %s\n' "$*"; }
mkdir -p out docker/wheels

# ------------------------------------------------------------------------------------------------ the engine
if ! command -v dockerd >/dev/null 2>&1 || ! command -v debootstrap >/dev/null 2>&1; then
    log "installing docker.io and debootstrap"
    apt-get update && apt-get install -y docker.io debootstrap
fi
STARTED_DOCKERD=""
if ! docker info >/dev/null 2>&1; then
    log "starting dockerd"
    dockerd >"$ROOT/out/dockerd.log" 2>&1 &
    STARTED_DOCKERD=$!
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    docker info >/dev/null 2>&1 || { echo "dockerd did not start; see out/dockerd.log" >&2; exit 1; }
fi

# A docker CLI that builds with BuildKit (needed for RUN --mount and --secret): buildx where it is installed, else a
# client with BuildKit built in (Debian's docker.io).
BUILD=()
if docker buildx version >/dev/null 2>&1; then
    BUILD=(docker buildx build --load)
else
    for cli in $(type -ap docker) /usr/bin/docker; do
        if DOCKER_BUILDKIT=1 "$cli" build --help 2>/dev/null | grep -q -- "--secret"; then
            BUILD=(env DOCKER_BUILDKIT=1 "$cli" build); break
        fi
    done
fi
[ ${#BUILD[@]} -gt 0 ] || { echo "no docker CLI here builds with BuildKit (install docker-buildx)" >&2; exit 1; }

COMPOSE=()
if docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose)
else
    command -v docker-compose >/dev/null 2>&1 || { log "installing docker-compose"; apt-get install -y docker-compose; }
    COMPOSE=(docker-compose)
fi

cleanup() {
    set +e
    ROBOVLM_IMAGE="$IMAGE" "${COMPOSE[@]}" -p "$PROJECT" -f docker/compose.yaml down --remove-orphans >/dev/null 2>&1
    docker ps -aq --filter "label=com.docker.compose.project=$PROJECT" | xargs -r docker rm -f >/dev/null 2>&1
    rm -f docker/wheels/*.whl
    [ -n "$STARTED_DOCKERD" ] && kill "$STARTED_DOCKERD" 2>/dev/null
}
trap cleanup EXIT

# ------------------------------------------------------------------------------------------------ the base
if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1 || docker pull "$BASE_IMAGE" >/dev/null 2>&1; then
    log "base image $BASE_IMAGE"
else
    if ! docker image inspect "$STANDIN" >/dev/null 2>&1; then
        log "$BASE_IMAGE cannot be pulled (no registry): building a Debian bookworm stand-in with debootstrap"
        rootfs="$(mktemp -d)"
        debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$rootfs" \
            http://deb.debian.org/debian >"$ROOT/out/debootstrap.log" 2>&1 \
            || { echo "debootstrap failed; see out/debootstrap.log" >&2; exit 1; }
        rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
        tar -C "$rootfs" -c . | docker import - "$STANDIN" >/dev/null
        rm -rf "$rootfs"
    fi
    BASE_IMAGE="$STANDIN"
    log "base image $BASE_IMAGE (stand-in)"
fi

# ------------------------------------------------------------------------------------------------ the build
[ -d "$LOCAL_WHEELS" ] && cp "$LOCAL_WHEELS"/torch-*.whl docker/wheels/ 2>/dev/null || true
SECRET=()
[ -s "$CA_BUNDLE" ] && SECRET=(--secret "id=pip_ca,src=$CA_BUNDLE")
log "building $IMAGE"
t0=$(date +%s)
"${BUILD[@]}" -f docker/Dockerfile --build-arg "BASE_IMAGE=$BASE_IMAGE" "${SECRET[@]}" -t "$IMAGE" .
build_s=$(( $(date +%s) - t0 ))
rm -f docker/wheels/*.whl

# Nothing from the build inputs may be in the image.
if docker run --rm --entrypoint sh "$IMAGE" -c 'ls /wheels /run/secrets 2>/dev/null; find / -xdev -name "torch-*.whl" 2>/dev/null' | grep -q .; then
    echo "the image holds build inputs (wheels or secrets)" >&2; exit 1
fi
[ "$(docker run --rm --entrypoint id "$IMAGE" -u)" != "0" ] || { echo "the image runs as root" >&2; exit 1; }

# ------------------------------------------------------------------------------------------------ in containers
rm -rf "$WORK" && mkdir -p "$WORK" && chmod a+rwx "$WORK"   # the container user (uid 1000) writes here
export ROBOVLM_IMAGE="$IMAGE" OUT_DIR="$WORK" BAG_DIR="$WORK/bag" MODEL_DIR="$ROOT/models/demo"
COMPOSE+=(-p "$PROJECT" -f docker/compose.yaml)

log "node entrypoint: parameters from the installed file, --ros-args overrides"
timeout 120 docker run --rm "$IMAGE" --ros-args -p autostart:=true -p model_path:=/model -p engine:=tensorrt \
    >"$WORK/entrypoint.log" 2>&1 && exit 1
grep -q "parameter 'engine'" "$WORK/entrypoint.log" || { cat "$WORK/entrypoint.log"; exit 1; }

log "demo (closed loop, the node driving the simulated robot)"
"${COMPOSE[@]}" run --rm demo | tee "$WORK/demo.log"
grep -Eq "^[1-9][0-9]*/[0-9]+ episodes reached the cup" "$WORK/demo.log" \
    && [ -s "$WORK/demo/commanded_velocities.png" ] \
    || { echo "the demo did not finish" >&2; exit 1; }

log "replay of a generated bag"
docker run --rm -v "$WORK:/work/out" "$IMAGE" sh -c \
    "robovlm collect-sim /tmp/ex --episodes-per-scenario 1 >/dev/null \
     && robovlm make-bag /tmp/ex/sim_1box_vert_left_00000.h5 /work/out/bag --storage mcap"
"${COMPOSE[@]}" run --rm replay
grep -q "MAE vs recorded cmd_vel" "$WORK/replay/report.txt" && [ -f "$WORK/replay/bag/metadata.yaml" ] \
    || { echo "the replay did not report" >&2; exit 1; }

size=$(docker image inspect "$IMAGE" --format '{{.Size}}')
log "passed"
echo "image: $IMAGE, $(( size / 1024 / 1024 )) MB; build time ${build_s} s (base $BASE_IMAGE)"
