"""Wall time and peak memory of a participant run of the BIDS App on the bundled example.

Usage: python benchmarks/bench_participant.py [--example DIR] [--nprocs 2] [--repeats 3]
[--mle-repeats 1] [--voxel-size 3]

Generates the example phantom (``python -m noddi_bids.example make --voxel-size V``; its default
gradient table is the subject's own: the reference protocol rotated and tilted as after motion
correction; 2.5 mm gives 120,000 brain voxels) if DIR does not hold it,
then runs the real command line ``noddi-bids DIR OUT participant`` in a subprocess: NN only
(``--repeats`` times) and with ``--mle`` (``--mle-repeats`` times), each with a fresh work
folder (no cached nodes) and the SynthSeg-style segmentation of the example. Prints, per run:
the wall time of the whole command (Python start, input checks, Nipype graph, derivatives); the
peak resident memory of the process tree (sum over the command and any MultiProc workers,
sampled every 20 ms from /proc) and of the largest single process (getrusage of children); the
NN node time and, with ``--mle``, the fit node time and its share of the wall time (from the
Nipype results); and the load average.
"""

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def _args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--example", default=str(Path(tempfile.gettempdir()) / "noddi-bids-example")
    )
    parser.add_argument("--nprocs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--mle-repeats", type=int, default=1)
    parser.add_argument("--model", default="auto")
    parser.add_argument("--voxel-size", type=float, default=3.0, help="mm, for a new example")
    return parser.parse_args()


def _children(pid):
    """All descendants of ``pid`` (from /proc/*/stat parent links)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
                parents.setdefault(int(fields[1]), []).append(int(entry))
            except OSError:
                continue
    found, stack = [], [pid]
    while stack:
        current = stack.pop()
        found.append(current)
        stack.extend(parents.get(current, []))
    return found


def _tree_rss_kb(pid):
    total = 0
    for member in _children(pid):
        try:
            with open(f"/proc/{member}/statm") as handle:
                total += int(handle.read().split()[1]) * PAGE_KB
        except OSError:
            continue
    return total


def _run(command):
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    while process.poll() is None:
        peak = max(peak, _tree_rss_kb(process.pid))
        time.sleep(0.02)
    wall = time.perf_counter() - start
    stderr = process.stderr.read().decode()
    if process.returncode:
        sys.exit(f"{' '.join(command)} failed ({process.returncode}):\n{stderr[-2000:]}")
    single = max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return wall, peak, single


def _node_seconds(work, node):
    from nipype.utils.filemanip import loadpkl

    (result,) = Path(work).rglob(f"{node}/result_{node}.pklz")
    return float(loadpkl(result).runtime.duration)


def main():
    args = _args()
    example = Path(args.example)
    if not (example / "sub-01" / "dwi" / "sub-01_dwi.nii.gz").is_file():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "noddi_bids.example",
                "make",
                str(example),
                "--voxel-size",
                str(args.voxel_size),
            ],
            check=True,
        )
    executable = shutil.which("noddi-bids") or sys.exit("noddi-bids is not installed")
    print(
        f"example: {example} | nprocs {args.nprocs} | cores {os.cpu_count()} | model {args.model}"
    )
    for label, extra, repeats in (
        ("NN only", [], args.repeats),
        ("NN + MLE", ["--mle"], args.mle_repeats),
    ):
        for repeat in range(repeats):
            with tempfile.TemporaryDirectory() as scratch:
                out, work = Path(scratch) / "out", Path(scratch) / "work"
                command = [
                    executable, str(example), str(out), "participant", "-w", str(work),
                    "--nprocs", str(args.nprocs), "--model", args.model,
                    "--synthseg-dir", str(example / "derivatives" / "synthseg"), *extra,
                ]  # fmt: skip
                wall, tree_kb, single_kb = _run(command)
                tree_gb, single_gb = tree_kb / 1024**2, single_kb / 1024**2
                line = (
                    f"{label:9s} run {repeat + 1}: wall {wall:6.1f} s | peak memory, process "
                    f"tree {tree_gb:5.2f} GB, largest process {single_gb:5.2f} GB"
                )
                if extra:
                    fit = _node_seconds(work, "mle")
                    line += f" | MLE node {fit:5.1f} s ({100 * fit / wall:.0f}% of wall)"
                nn = _node_seconds(work, "nn")
                load = os.getloadavg()[0]
                print(line + f" | NN node {nn:4.1f} s | load {load:.1f}", flush=True)


if __name__ == "__main__":
    main()
