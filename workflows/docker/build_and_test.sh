#!/usr/bin/env bash
# Build the noddi-bids container image and run it the way Apptainer runs it on a cluster.
#
#   workflows/docker/build_and_test.sh              # build (layer cache), then every check
#   FRESH=1 workflows/docker/build_and_test.sh      # build from scratch (no layer cache)
#
# 1. builds the base image when it must (Podman without a registry: Debian bookworm made with
#    debootstrap, kept as localhost/debian:bookworm-min) and the image, then rebuilds it after a
#    code-only change (a comment added to noddi_bids/cli/run.py) to time the layer cache;
# 2. runs the image's smoke test;
# 3. runs the bundled example (participant --mle --dicom, then group) in the container as
#    Apptainer would: read-only root file system, another non-root UID without a passwd entry,
#    no writable HOME, no network, BIDS input bound read-only, output, work and /tmp bound
#    read-write;
# 4. runs participant --mle --model auto (then group) on a protocol no shipped network covers
#    (b = 1000/2500): the network is trained in the container and cached under $TMPDIR, and no
#    numba kernel may be compiled at run time;
# 5. runs 3 and 4 outside the container too (the noddi-bids of this checkout, on PATH) and
#    compares every map and table (within 1e-6);
# 6. checks --version, --help and the exit codes 16 (not a BIDS dataset, nothing written), 17
#    (unknown analysis level) and 64 (bad usage).
# It ends with the figures: build times, image size, run times inside and outside.
#
# Needs a running Docker engine, or Podman (used when Docker is absent); python3 with this
# checkout installed (pip install -e .) for the runs outside. Settings (environment):
#   IMAGE            tag (default noddi-bids:<version>)
#   ENGINE           docker or podman (default: docker if its engine answers, else podman)
#   BASE_IMAGE       base image (default: the Dockerfile's python slim image with Docker, the
#                    local debootstrap Debian with Podman)
#   TORCH_WHEELS     folder with the CPU torch wheel, mounted into the build (Podman; default:
#                    pip's find-links folder when it holds it); otherwise the PyTorch CPU index
#   PIP_CA_BUNDLE    CA bundle for pip in the build (Podman; default: the system bundle)
#   PODMAN_OPTS      global podman options (default with runc installed:
#                    --runtime runc --cgroup-manager cgroupfs)
#   RUN_UID          UID the container runs as (default 4242)
#   FRESH=1          build without the layer cache; REBUILD_CHECK=0 skips the rebuild timing
#   KEEP=1           keep the scratch folder (datasets, outputs, logs)
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
VERSION="$(sed -n 's/^__version__ = "\(.*\)"/\1/p' noddi_bids/__init__.py)"
IMAGE="${IMAGE:-noddi-bids:$VERSION}"
TORCH_VERSION="$(sed -n 's/^torch==//p' workflows/docker/constraints.txt)"
RUN_UID="${RUN_UID:-4242}"
PYTHON="${PYTHON:-python3}"
SCRATCH="$(mktemp -d "${TMPDIR:-/tmp}/noddi-bids-image-check.XXXXXX")"
chmod 755 "$SCRATCH"
FIGURES=()

say() { printf '\n=== %s\n' "$*"; }
die() { printf 'build_and_test.sh: FAILED: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
seconds() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", b - a }'; }
figure() { FIGURES+=("$(printf '%-52s %s' "$1" "$2")"); echo "${FIGURES[-1]}"; }

cleanup() {
    if [[ "${KEEP:-0}" == 1 ]]; then
        echo "scratch folder kept: $SCRATCH"
    elif ! rm -rf "$SCRATCH" 2>/dev/null && [[ "${ENGINE:-}" == podman ]]; then
        podman unshare rm -rf "$SCRATCH"  # rootless Podman: files of the container's UID
    fi
}
trap cleanup EXIT

# ---------------------------------------------------------------------------------------------
# The engine and its options
if [[ -z "${ENGINE:-}" ]]; then
    if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
        ENGINE=docker
    elif command -v podman >/dev/null; then
        ENGINE=podman
    else
        die "no container engine: neither a running Docker engine nor podman"
    fi
fi
BUILD_OPTS=()
RUN_OPTS=(--read-only --user "$RUN_UID:$RUN_UID" --network none --cap-drop all
          --security-opt no-new-privileges -e HOME=/home/noddi -e TMPDIR=/tmp)
if [[ "$ENGINE" == podman ]]; then
    if [[ -z "${PODMAN_OPTS+set}" ]] && command -v runc >/dev/null; then
        PODMAN_OPTS="--runtime runc --cgroup-manager cgroupfs"
    fi
    read -r -a podman_opts <<< "${PODMAN_OPTS:-}"
    engine() { podman "${podman_opts[@]}" "$@"; }
    limits=(--ulimit nofile=20000:20000 --ulimit nproc=4096:4096)
    BUILD_OPTS+=("${limits[@]}" --network host)
    # no tmpfs on /tmp and no passwd entry for the UID: as Apptainer with a bound /tmp, as Docker
    RUN_OPTS+=("${limits[@]}" --read-only-tmpfs=false --passwd=false)
    BASE_IMAGE="${BASE_IMAGE:-localhost/debian:bookworm-min}"
    PIP_CA_BUNDLE="${PIP_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
    if [[ -z "${TORCH_WHEELS:-}" ]]; then
        links="$(pip config get global.find-links 2>/dev/null || true)"
        if [[ -n "$links" ]] && compgen -G "$links/torch-$TORCH_VERSION+cpu-*.whl" >/dev/null; then
            TORCH_WHEELS="$links"
        fi
    fi
    if [[ -f "$PIP_CA_BUNDLE" ]]; then
        printf '[global]\ncert = /etc/pip-host-ca.crt\n' > "$SCRATCH/pip.conf"
        BUILD_OPTS+=(-v "$PIP_CA_BUNDLE:/etc/pip-host-ca.crt:ro" -v "$SCRATCH/pip.conf:/etc/pip.conf:ro")
    fi
    if [[ -n "${TORCH_WHEELS:-}" ]]; then
        BUILD_OPTS+=(-v "$TORCH_WHEELS:/torch-wheels:ro" --build-arg TORCH_FIND_LINKS=/torch-wheels)
    fi
else
    engine() { docker "$@"; }
fi
[[ -n "${BASE_IMAGE:-}" ]] && BUILD_OPTS+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
BUILD_OPTS+=(--build-arg "TORCH_VERSION=$TORCH_VERSION")
FRESH_OPTS=()
[[ "${FRESH:-0}" == 1 ]] && FRESH_OPTS=(--no-cache)

# The runs outside use this checkout's noddi-bids.
command -v noddi-bids >/dev/null || die "noddi-bids is not on PATH (pip install -e . first)"
native_root="$("$PYTHON" -c 'import noddi_bids, pathlib; print(pathlib.Path(noddi_bids.__file__).parents[1])')"
[[ "$native_root" == "$ROOT" ]] || die "python imports noddi_bids from $native_root, not this checkout ($ROOT)"
echo "engine: $ENGINE; image: $IMAGE; base: ${BASE_IMAGE:-Dockerfile default};" \
     "torch: ${TORCH_WHEELS:-PyTorch CPU index}; scratch: $SCRATCH"

# ---------------------------------------------------------------------------------------------
say "1. base image and build"
if [[ "${BASE_IMAGE:-}" == localhost/debian:bookworm-min ]] && ! engine image exists "$BASE_IMAGE"; then
    command -v debootstrap >/dev/null || die "debootstrap is needed for $BASE_IMAGE (apt-get install debootstrap)"
    start=$(now)
    debootstrap --variant=minbase bookworm "$SCRATCH/rootfs" > "$SCRATCH/debootstrap.log" 2>&1 \
        || die "debootstrap failed (log: $SCRATCH/debootstrap.log)"
    rm -rf "$SCRATCH"/rootfs/var/cache/apt/archives/*.deb "$SCRATCH"/rootfs/var/lib/apt/lists/*
    tar -C "$SCRATCH/rootfs" -c . | engine import - "$BASE_IMAGE" >> "$SCRATCH/debootstrap.log" 2>&1
    rm -rf "$SCRATCH/rootfs"
    figure "base image (debootstrap + import), s" "$(seconds "$start" "$(now)")"
fi
start=$(now)
set +e
engine build "${BUILD_OPTS[@]}" "${FRESH_OPTS[@]}" -t "$IMAGE" . 2>&1 | tee "$SCRATCH/build.log" \
    | grep --line-buffered -E '^(STEP|#[0-9]+ \[)'
status=${PIPESTATUS[0]}
set -e
[[ "$status" == 0 ]] || { tail -40 "$SCRATCH/build.log"; die "image build failed"; }
figure "build$([[ "${FRESH:-0}" == 1 ]] && echo ' from scratch' || echo ' (layer cache)'), s" \
    "$(seconds "$start" "$(now)")"
size=$(engine image inspect --format '{{.Size}}' "$IMAGE")
figure "image size, GB" "$(awk -v s="$size" 'BEGIN { printf "%.2f", s / 1e9 }')"
awk -v s="$size" 'BEGIN { exit !(s <= 2.5e9) }' || die "image larger than 2.5 GB ($size bytes)"

if [[ "${REBUILD_CHECK:-1}" == 1 ]]; then
    # A copy of the build context (times kept) with one comment added to a module of the CLI.
    mkdir "$SCRATCH/context"
    tar -C "$ROOT" --exclude=.git -c . | tar -C "$SCRATCH/context" -x
    echo "# code-only change made by build_and_test.sh" >> "$SCRATCH/context/noddi_bids/cli/run.py"
    start=$(now)
    engine build "${BUILD_OPTS[@]}" -t "$IMAGE-rebuild" "$SCRATCH/context" \
        > "$SCRATCH/rebuild.log" 2>&1 || { tail -40 "$SCRATCH/rebuild.log"; die "rebuild failed"; }
    figure "rebuild after a code-only change, s" "$(seconds "$start" "$(now)")"
    engine rmi "$IMAGE-rebuild" >/dev/null
    rm -rf "$SCRATCH/context"
fi

# ---------------------------------------------------------------------------------------------
# Runs as Apptainer runs the image: every folder the app writes is bound, and writable by the
# container's UID (which owns nothing in the image); /tmp is the host's, as Apptainer binds it.
folder() { mkdir -p "$@"; chmod 1777 "$@"; }
folder "$SCRATCH/tmp"
app() { engine run --rm "${RUN_OPTS[@]}" -v "$SCRATCH/tmp:/tmp" "$@"; }
native() { OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 noddi-bids "$@"; }
# timed NAME LOG COMMAND...: run, log, and keep the wall time in seconds as $NAME
timed() {
    local name=$1 log=$2 start status
    shift 2
    start=$(now)
    set +e
    "$@" > "$log" 2>&1
    status=$?
    set -e
    printf -v "$name" '%s' "$(seconds "$start" "$(now)")"
    [[ "$status" == 0 ]] || { tail -30 "$log"; die "$(basename "$log" .log) exited with $status"; }
}

# What a read-only image with another UID typically gets wrong shows in the log.
clean() {
    local log
    for log in "$@"; do
        if grep -n -E "Traceback|not a writable|temporary cache directory|Permission denied|Read-only file system|telemetry" "$log"; then
            die "$(basename "$log"): the lines above"
        fi
    done
}

say "2. smoke test (read-only, UID $RUN_UID)"
timed smoke "$SCRATCH/smoke.log" app --entrypoint python "$IMAGE" /opt/noddi-bids/smoke_test.py
tail -3 "$SCRATCH/smoke.log"
clean "$SCRATCH/smoke.log"
figure "smoke test in the container, s" "$smoke"

say "3. the bundled example, inside and outside"
"$PYTHON" -m noddi_bids.example make "$SCRATCH/example" > "$SCRATCH/example-make.log" 2>&1
chmod -R a+rX "$SCRATCH/example"
folder "$SCRATCH"/{in,out}/example "$SCRATCH"/{in,out}/example-work
noddi-bids-warmup > "$SCRATCH/warmup.log" 2>&1  # warm outside, as the image is
timed example_out "$SCRATCH/example-out.log" native "$SCRATCH/example" "$SCRATCH/out/example" \
    participant --synthseg-dir "$SCRATCH/example/derivatives/synthseg" --mle --dicom \
    -w "$SCRATCH/out/example-work"
timed example_in "$SCRATCH/example-in.log" app -v "$SCRATCH/example:/data:ro" \
    -v "$SCRATCH/in/example:/out" -v "$SCRATCH/in/example-work:/work" "$IMAGE" \
    /data /out participant --synthseg-dir /data/derivatives/synthseg --mle --dicom -w /work
timed group_out "$SCRATCH/example-group-out.log" native "$SCRATCH/example" "$SCRATCH/out/example" group
timed group_in "$SCRATCH/example-group-in.log" app -v "$SCRATCH/example:/data:ro" \
    -v "$SCRATCH/in/example:/out" "$IMAGE" /data /out group
clean "$SCRATCH"/example-*in.log
"$PYTHON" -m noddi_bids.example compare "$SCRATCH/example" "$SCRATCH/in/example"
figure "example participant (--mle --dicom) outside, s" "$example_out"
figure "example participant (--mle --dicom) in the container, s" "$example_in"
figure "  ratio inside / outside (target <= 1.5)" \
    "$(awk -v a="$example_in" -v b="$example_out" 'BEGIN { printf "%.2f", a / b }')"
figure "example group level outside / inside, s" "$group_out / $group_in"

say "4. --mle --model auto on b = 1000/2500 (network trained and cached under \$TMPDIR)"
"$PYTHON" workflows/docker/container_check.py dataset "$SCRATCH/auto"
chmod -R a+rX "$SCRATCH/auto"
folder "$SCRATCH"/{in,out}/auto "$SCRATCH"/{in,out}/auto-work "$SCRATCH/out/cache"
timed auto_out "$SCRATCH/auto-out.log" env NODDI_BIDS_CACHE="$SCRATCH/out/cache" \
    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 noddi-bids "$SCRATCH/auto" \
    "$SCRATCH/out/auto" participant --mle --model auto -w "$SCRATCH/out/auto-work"
timed auto_in "$SCRATCH/auto-in.log" app -v "$SCRATCH/auto:/data:ro" -v "$SCRATCH/in/auto:/out" \
    -v "$SCRATCH/in/auto-work:/work" "$IMAGE" /data /out participant --mle --model auto -w /work
native "$SCRATCH/auto" "$SCRATCH/out/auto" group > "$SCRATCH/auto-group-out.log" 2>&1
app -v "$SCRATCH/auto:/data:ro" -v "$SCRATCH/in/auto:/out" "$IMAGE" /data /out group \
    > "$SCRATCH/auto-group-in.log" 2>&1 || die "group level in the container failed"
clean "$SCRATCH"/auto-*in.log
figure "auto-trained network + MLE outside, s" "$auto_out"
figure "auto-trained network + MLE in the container, s" "$auto_in"
trained=("$SCRATCH/tmp/noddi-bids-cache-$RUN_UID"/models/nn-mle_*.onnx)
[[ -f "${trained[0]}" ]] || die "no network cached in \$TMPDIR/noddi-bids-cache-$RUN_UID"
grep -q "is not writable; caching in /tmp/noddi-bids-cache-$RUN_UID" "$SCRATCH/auto-in.log" \
    || die "the container did not report the fallback network cache"
echo "network trained in the container: ${trained[0]#"$SCRATCH/tmp/"}"
# No kernel compiled at run time: the numba cache the runs used is the image's, file for file.
app --entrypoint sh "$IMAGE" -c 'cd "$NUMBA_CACHE_DIR" && find . -type f -printf "%p %s\n" | sort' \
    > "$SCRATCH/numba-image.txt"
(cd "$SCRATCH/tmp/noddi-bids-numba-$RUN_UID" && find . -type f -printf "%p %s\n" | sort) \
    > "$SCRATCH/numba-run.txt"
diff "$SCRATCH/numba-image.txt" "$SCRATCH/numba-run.txt" \
    || die "numba compiled kernels at run time (above: image cache < > the run's cache)"
echo "numba: $(wc -l < "$SCRATCH/numba-run.txt") cache files, all from the image"
if compgen -G "$SCRATCH/tmp/matplotlib-*" >/dev/null; then
    die "Matplotlib made its own temporary cache: the image's font cache was not used"
fi

say "5. maps and tables, inside against outside (within 1e-6)"
"$PYTHON" workflows/docker/container_check.py compare "$SCRATCH/in/example" "$SCRATCH/out/example" \
    | tail -3 || die "the example's derivatives differ inside and outside"
"$PYTHON" workflows/docker/container_check.py compare "$SCRATCH/in/auto" "$SCRATCH/out/auto" \
    | tail -3 || die "the --model auto derivatives differ inside and outside"

say "6. --version, --help, exit codes"
version=$(app "$IMAGE" --version)
[[ "$version" == "noddi-bids $VERSION" ]] || die "--version printed '$version'"
[[ "$(app "$IMAGE" --help)" == "usage: noddi-bids "*participant* ]] || die "--help does not show the usage"
app "$IMAGE" > /dev/null || die "the default command (--help) failed"
folder "$SCRATCH/empty" "$SCRATCH/out16"
# expect CODE LOG ARGUMENT...: the app exits with CODE
expect() {
    local code=$1 log=$2 status=0
    shift 2
    app "$IMAGE" "$@" 2> "$log" || status=$?
    [[ "$status" == "$code" ]] || die "noddi-bids $*: exit $status, not $code ($(cat "$log"))"
    echo "exit $code: $(tail -1 "$log")"
}
echo "$version; --help shows the usage"
RUN_OPTS+=(-v "$SCRATCH/empty:/data:ro" -v "$SCRATCH/out16:/out")
expect 16 "$SCRATCH/exit16.log" /data /out/noddi participant
[[ -z "$(ls -A "$SCRATCH/out16")" ]] || die "exit 16 left files in the output folder"
expect 17 "$SCRATCH/exit17.log" /data /out session
expect 64 "$SCRATCH/exit64.log" /data /out participant --nprocs 0

figure "the whole check, min" "$(awk -v s="$SECONDS" 'BEGIN { printf "%.1f", s / 60 }')"
say "figures ($ENGINE, $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg))"
printf '%s\n' "${FIGURES[@]}"
echo "build_and_test.sh: all checks passed"
