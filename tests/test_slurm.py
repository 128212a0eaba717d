"""Nipype's SLURM plugin for real: a local single-node cluster runs the participant level.

Marked ``slurm`` (deselected by default; run with ``pytest -m slurm``). Needs root and Debian's
``slurm-wlm`` and ``munge`` (``apt-get install -y slurm-wlm munge``). Where SLURM cannot start the
tests are skipped and the reason is printed (``-ra``); set ``NODDI_BIDS_REQUIRE_SLURM=1`` (as CI
does) to turn that skip into a failure.
"""

from __future__ import annotations

import os
import pwd
import re
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nb
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from slurm_cluster import LocalSlurmCluster, SlurmUnavailable, why_unavailable

from noddi_bids.example.bids import make_block_dataset

pytestmark = pytest.mark.slurm

SHAPE = (12, 12, 4)  # 8 x 8 "brain" voxels per slice inside a background border
SNR = 30.0


def _fail_or_skip(reason: str) -> None:
    message = f"SLURM cannot start here: {reason}"
    if os.environ.get("NODDI_BIDS_REQUIRE_SLURM") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = why_unavailable()
    if reason:
        _fail_or_skip(reason)
    root = tmp_path_factory.mktemp("slurm")
    slurm = LocalSlurmCluster(root)
    try:
        slurm.start()
    except SlurmUnavailable as err:
        _fail_or_skip(str(err))
    print(f"local SLURM cluster idle after {slurm.start_seconds:.1f} s ({root})")
    yield slurm
    slurm.stop()


def test_cluster_runs_srun_and_sbatch(cluster, tmp_path):
    assert cluster.run("srun", "hostname").stdout.strip()
    out = tmp_path / "job.out"
    submitted = cluster.run("sbatch", "-o", str(out), "--wrap", "echo from-slurm").stdout
    job_id = submitted.split()[-1]
    deadline = time.monotonic() + 60
    while job_id in cluster.run("squeue", "-h", "-o", "%i").stdout.split():
        assert time.monotonic() < deadline, "job still queued after 60 s"
        time.sleep(0.5)
    assert out.read_text().strip() == "from-slurm"


def run_cli(bids: Path, out: Path, work: Path, extra: list[str], env: dict) -> None:
    cmd = [
        sys.executable,
        "-c",
        "import sys; from noddi_bids.cli.run import main; sys.exit(main())",
        str(bids),
        str(out),
        "participant",
        "--participant-label",
        "01",
        "--skip-bids-validation",
        "-w",
        str(work),
        "--omp-nthreads",
        "1",
        "--model",
        "nn-gt",  # shipped network: no training inside the test
        "--mle",  # and the conventional fit: a second estimation node
        *extra,
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1500, check=False)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"


def _outputs(root: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    return {
        str(p.relative_to(root)): p
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name.endswith(suffixes)
    }


def test_participant_level_on_slurm_equals_multiproc(cluster, tmp_path):
    bids = make_block_dataset(tmp_path / "bids", shape=SHAPE, snr=SNR, seed=7)
    env = {**cluster.env, "OMP_NUM_THREADS": "1"}
    # Nipype's SLURM plugin names jobs after $LOGNAME, which a bare CI shell may not set.
    env.setdefault("LOGNAME", pwd.getpwuid(os.getuid()).pw_name)

    run_cli(bids, tmp_path / "out-multiproc", tmp_path / "work-multiproc", ["--nprocs", "2"], env)

    plugin = tmp_path / "slurm.yml"
    plugin.write_text(
        "plugin: SLURM\n"
        "plugin_args:\n"
        f"  sbatch_args: --partition={cluster.partition} --cpus-per-task=1 --mem=2G"
        " --time=00:30:00\n"
        "  max_tries: 2\n"
        "  retry_timeout: 2\n"
    )
    jobs_before = _completed_jobs(cluster)
    assert jobs_before > 0  # the log format this count relies on (jobs of the cluster test)
    run_cli(
        bids, tmp_path / "out-slurm", tmp_path / "work-slurm", ["--use-plugin", str(plugin)], env
    )
    n_jobs = _completed_jobs(cluster) - jobs_before
    batch_logs = list((tmp_path / "work-slurm").rglob("slurm-*.out"))
    print(f"SLURM ran {n_jobs} jobs; {len(batch_logs)} Nipype batch logs")
    assert n_jobs > 0 and batch_logs, "no node of the workflow went through SLURM"

    images = _outputs(tmp_path / "out-multiproc", (".nii.gz", ".nii"))
    tables = _outputs(tmp_path / "out-multiproc", (".tsv",))
    assert any("param-od" in name for name in images), sorted(images)
    assert set(images) == set(_outputs(tmp_path / "out-slurm", (".nii.gz", ".nii")))
    assert set(tables) == set(_outputs(tmp_path / "out-slurm", (".tsv",)))
    largest = 0.0
    for name, path in images.items():
        ref, got = nb.load(path), nb.load(tmp_path / "out-slurm" / name)
        assert_allclose(got.affine, ref.affine, atol=1e-6, err_msg=name)
        assert_allclose(got.get_fdata(), ref.get_fdata(), atol=1e-6, equal_nan=True, err_msg=name)
        largest = max(largest, float(np.nanmax(np.abs(got.get_fdata() - ref.get_fdata()))))
    print(f"{len(images)} images and {len(tables)} tables compared; largest difference {largest:g}")
    for name, path in tables.items():
        ref = path.read_text().splitlines()
        got = (tmp_path / "out-slurm" / name).read_text().splitlines()
        assert ref[0] == got[0], name
        assert_array_equal(_numbers(got[1:]), _numbers(ref[1:]))


def _numbers(lines: list[str]) -> list[list[str | float]]:
    """TSV rows with numeric cells rounded to 1e-6 (tables equal up to float printing)."""
    rows = []
    for line in lines:
        row: list[str | float] = []
        for cell in line.split("\t"):
            try:
                row.append(round(float(cell), 6))
            except ValueError:
                row.append(cell)
        rows.append(row)
    return rows


def _completed_jobs(cluster: LocalSlurmCluster) -> int:
    """Number of distinct jobs slurmctld has logged as complete (accounting is off)."""
    log = cluster.root / "log" / "slurmctld.log"
    text = log.read_text(errors="replace") if log.exists() else ""
    return len(set(re.findall(r"_job_complete: JobId=(\d+) done", text)))
