# noddi-bids: CPU container image of the BIDS App.
#
#   docker build -t noddi-bids:0.1.0 .
#   docker run --rm -u "$(id -u):$(id -g)" -v /data/bids:/data:ro -v /data/out:/out \
#       -v /scratch/work:/work noddi-bids:0.1.0 /data /out participant -w /work
#
# Apptainer/Singularity and SLURM: docs/hpc.md. Everything the app caches lives in the image
# (/opt/noddi-bids) or in the work directory, never in $HOME (Apptainer mounts the host's $HOME).

# Pinned base: Python 3.11 on Debian 12 (bookworm). For bit-for-bit rebuilds pin the digest too,
# e.g. --build-arg BASE_IMAGE=python:3.11.11-slim-bookworm@sha256:<digest>.
ARG BASE_IMAGE=python:3.11.11-slim-bookworm
FROM ${BASE_IMAGE}

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG NODDI_UID=1000

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
    NODDI_BIDS_CACHE=/opt/noddi-bids/cache \
    NUMBA_CACHE_DIR=/opt/noddi-bids/numba-cache \
    MPLCONFIGDIR=/opt/noddi-bids/matplotlib \
    NIPYPE_CONFIG_DIR=/opt/noddi-bids/nipype \
    NIPYPE_NO_ET=1 \
    XDG_CACHE_HOME=/opt/noddi-bids/xdg-cache \
    HOME=/home/noddi

# Unprivileged user the app runs as (docker run -u UID:GID works too: the caches are writable
# by everyone).
RUN useradd --uid "${NODDI_UID}" --create-home --home-dir /home/noddi --shell /usr/sbin/nologin noddi

# Dependencies first (their layer survives source changes): CPU-only torch from its wheel index,
# then the exact versions of the whole dependency closure.
COPY workflows/docker/constraints.txt /opt/noddi-bids/constraints.txt
RUN pip install --index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}" \
 && pip install --requirement /opt/noddi-bids/constraints.txt

# The package itself, with the shipped networks (package data), without touching the pins.
COPY . /tmp/noddi-bids-src
RUN pip install --no-deps --no-build-isolation /tmp/noddi-bids-src \
 && pip check \
 && python -c "import sys; from noddi_bids.nn.store import shipped_models; \
missing = [f'{k}: {p}' for k, p in shipped_models().items() if not p.is_file()]; \
sys.exit(f'shipped networks missing: {missing}' if missing else 0)" \
 && mkdir -p "${NODDI_BIDS_CACHE}" "${NUMBA_CACHE_DIR}" "${MPLCONFIGDIR}" "${NIPYPE_CONFIG_DIR}" \
             "${XDG_CACHE_HOME}" \
 && printf '[execution]\ncheck_version = false\n' > "${NIPYPE_CONFIG_DIR}/nipype.cfg" \
 && python /tmp/noddi-bids-src/workflows/docker/smoke_test.py \
 && noddi-bids --version \
 && rm -rf /tmp/noddi-bids-src /tmp/noddi-bids-smoke-* \
 && chmod -R a+rwX "${NODDI_BIDS_CACHE}" "${NUMBA_CACHE_DIR}" "${MPLCONFIGDIR}" "${XDG_CACHE_HOME}" \
 && chmod -R a+rX "${NIPYPE_CONFIG_DIR}"

USER noddi
WORKDIR /tmp
ENTRYPOINT ["noddi-bids"]
CMD ["--help"]
