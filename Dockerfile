# noddi-bids: CPU container image of the BIDS App.
#
#   docker build -t noddi-bids:0.1.0 .
#   docker run --rm -u "$(id -u):$(id -g)" -v /data/bids:/data:ro -v /data/out:/out \
#       -v /scratch/work:/work noddi-bids:0.1.0 /data /out participant -w /work
#
# Apptainer/Singularity and SLURM: docs/hpc.md. Everything the app caches lives in the image
# (/opt/noddi-bids) or in the work directory, never in $HOME (Apptainer mounts the host's $HOME);
# in a read-only container the caches are copied once to $TMPDIR (noddi_bids/caches.py).
# workflows/docker/build_and_test.sh builds this image with Docker or Podman and runs it the way
# Apptainer does (read-only, another UID, no writable HOME).
#
# Build arguments:
#   BASE_IMAGE        any Debian-based image: Python 3 is used if it has one (the default, the
#                     official python:3.11 slim image), else Debian's python3 is installed.
#                     For bit-for-bit rebuilds pin the digest: python:3.11.11-slim-bookworm@sha256:...
#   TORCH_VERSION     CPU PyTorch version (matches workflows/docker/constraints.txt).
#   TORCH_INDEX_URL   wheel index of CPU PyTorch (default: the PyTorch CPU index), or
#   TORCH_FIND_LINKS  a folder (mounted into the build) or URL holding the CPU wheel instead of
#                     an index (pip --no-index --find-links); the build fails on a CUDA build.
#   NODDI_UID         UID of the image's user, noddi.

ARG BASE_IMAGE=python:3.11.11-slim-bookworm
FROM ${BASE_IMAGE}

LABEL org.opencontainers.image.title="noddi-bids" \
      org.opencontainers.image.description="NODDI maps (ODI, NDI, FWF) from multi-shell diffusion MRI: a BIDS App" \
      org.opencontainers.image.licenses="Apache-2.0"

# One thread per process (parallelism comes from --nprocs / --omp-nthreads); caches in the image.
ENV OMP_NUM_THREADS=1 \
    MKL_NUM_THREADS=1 \
    OPENBLAS_NUM_THREADS=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/noddi-bids/venv \
    PATH=/opt/noddi-bids/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    NODDI_BIDS_CACHE=/opt/noddi-bids/cache \
    NUMBA_CACHE_DIR=/opt/noddi-bids/numba-cache \
    MPLCONFIGDIR=/opt/noddi-bids/matplotlib \
    NIPYPE_CONFIG_DIR=/opt/noddi-bids/nipype \
    NIPYPE_NO_ET=1 \
    ORT_DISABLE_TELEMETRY=1 \
    XDG_CACHE_HOME=/opt/noddi-bids/xdg-cache \
    HOME=/home/noddi

# Python in a virtual environment (Debian's own python3 refuses system-wide pip installs), the
# unprivileged user, and the cache folders.
ARG NODDI_UID=1000
RUN set -eu; \
    if ! python3 -c "import ensurepip, venv" 2>/dev/null; then \
        apt-get update; \
        apt-get install -y --no-install-recommends python3 python3-venv; \
        rm -rf /var/lib/apt/lists/*; \
    fi; \
    python3 -m venv "${VIRTUAL_ENV}"; \
    useradd --uid "${NODDI_UID}" --create-home --home-dir /home/noddi --shell /usr/sbin/nologin noddi; \
    mkdir -p "${NODDI_BIDS_CACHE}" "${NUMBA_CACHE_DIR}" "${MPLCONFIGDIR}" "${NIPYPE_CONFIG_DIR}" \
             "${XDG_CACHE_HOME}"; \
    printf '[execution]\ncheck_version = false\n' > "${NIPYPE_CONFIG_DIR}/nipype.cfg"

# CPU-only PyTorch, alone in its layer (the largest download), from the CPU wheel index or a
# local wheel folder; its dependencies come with the pins below.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_FIND_LINKS=
RUN if [ -n "${TORCH_FIND_LINKS}" ]; then \
        torch_source="--no-index --find-links ${TORCH_FIND_LINKS}"; \
    else \
        torch_source="--index-url ${TORCH_INDEX_URL}"; \
    fi; \
    pip install --no-deps ${torch_source} "torch==${TORCH_VERSION}"

# The exact versions of the whole run-time dependency closure, without resolving anything else
# (so nothing, in particular no CUDA build of torch, comes along), then Matplotlib's font cache.
COPY workflows/docker/constraints.txt /opt/noddi-bids/constraints.txt
RUN grep -qx "torch==${TORCH_VERSION}" /opt/noddi-bids/constraints.txt \
    || { echo "TORCH_VERSION ${TORCH_VERSION} is not the torch of constraints.txt" >&2; exit 1; } \
 && pip install --no-deps --requirement /opt/noddi-bids/constraints.txt \
 && pip check \
 && python -c "import sys, torch; sys.exit(f'torch {torch.__version__} is a CUDA build' \
if torch.version.cuda else 0)" \
 && python -c "import matplotlib.font_manager"

# The compiled kernels (numba), warmed from their own sources first: this layer and its cache
# survive every change outside fit/, model/, nn/ and the few modules copied with them (the
# package runs from these files in place, so they keep the file times numba's cache checks).
WORKDIR /opt/noddi-bids/src
COPY noddi_bids/__init__.py noddi_bids/progress.py noddi_bids/caches.py noddi_bids/atomic.py \
     noddi_bids/
COPY noddi_bids/cli/__init__.py noddi_bids/cli/warmup.py noddi_bids/cli/
COPY noddi_bids/data/schemes noddi_bids/data/schemes
COPY noddi_bids/model noddi_bids/model
COPY noddi_bids/fit noddi_bids/fit
COPY noddi_bids/nn noddi_bids/nn
RUN PYTHONPATH=/opt/noddi-bids/src python -m noddi_bids.cli.warmup

# The whole package with the shipped networks (package data), installed in place; the warm-up
# then only loads the cache (it recompiles if it must), and the smoke test runs the app.
COPY pyproject.toml README.md ./
COPY noddi_bids noddi_bids
COPY workflows/docker/smoke_test.py /opt/noddi-bids/smoke_test.py
RUN pip install --no-deps --no-build-isolation --editable . \
 && python -m compileall -q noddi_bids \
 && noddi-bids-warmup \
 && python /opt/noddi-bids/smoke_test.py \
 && noddi-bids --version \
 && rm -rf /tmp/* \
 && chmod -R a+rwX "${NODDI_BIDS_CACHE}" "${NUMBA_CACHE_DIR}" "${MPLCONFIGDIR}" "${XDG_CACHE_HOME}" \
 && chmod -R a+rX "${NIPYPE_CONFIG_DIR}" /opt/noddi-bids/src

USER noddi
WORKDIR /tmp
ENTRYPOINT ["noddi-bids"]
CMD ["--help"]
