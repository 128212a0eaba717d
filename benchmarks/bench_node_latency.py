"""Latency of the inline DICOM node: last instance of a whole-brain series in -> maps in Orthanc.

Builds the example phantom (nilearn's MNI152 tissue maps) on a grid of about 100,000 brain
voxels, writes it as a classic MR diffusion series (one file per slice per volume, reference
scheme, ImagesInAcquisition set so that the expected-count trigger fires), starts a local
Orthanc and a node in this process, sends the series with dcmtk's storescu (TCP_NODELAY) and
prints the time of each stage, from the arrival of the last instance to the last map instance
stored in Orthanc (the C-STORE response of the destination).

    python benchmarks/bench_node_latency.py [--voxel-size 2.65] [--threads 0] [--fsync]

Needs ``apt-get install orthanc dcmtk`` (as the tests).
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from pacs import LocalOrthanc, free_port, storescu, wait_for, why_unavailable  # noqa: E402

from noddi_bids.example.dicom import write_dwi_series  # noqa: E402
from noddi_bids.example.phantom import (  # noqa: E402
    crop_to_brain,
    downsample,
    phantom_parameters,
    simulate_dwi,
    tissue_probabilities,
)
from noddi_bids.model.scheme import reference_scheme  # noqa: E402
from noddi_bids.node.config import Destination, NodeConfig  # noqa: E402
from noddi_bids.node.server import Node  # noqa: E402


class Events(logging.Handler):
    """Keep the node's structured log records by event name."""

    def __init__(self) -> None:
        super().__init__()
        self.records: dict[str, logging.LogRecord] = {}

    def emit(self, record: logging.LogRecord) -> None:
        event = getattr(record, "event", None)
        if event:
            self.records[event] = record


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voxel-size", type=float, default=2.65, help="mm (default 2.65)")
    parser.add_argument("--threads", type=int, default=0, help="network threads (0: all)")
    parser.add_argument("--fsync", action="store_true", help="flush each instance (default off)")
    args = parser.parse_args()
    reason = why_unavailable()
    if reason:
        sys.stderr.write(f"{reason}\n")
        return 1
    logging.basicConfig(level=logging.WARNING)
    events = Events()
    logging.getLogger("noddi_bids.node").addHandler(events)
    logging.getLogger("noddi_bids.node").setLevel(logging.INFO)
    root = Path(tempfile.mkdtemp(prefix="bench-node-"))

    start = time.perf_counter()
    rng = np.random.default_rng(0)
    fractions, affine = downsample(*crop_to_brain(*tissue_probabilities()), args.voxel_size)
    maps = phantom_parameters(fractions, rng)
    scheme = reference_scheme()
    data = simulate_dwi(maps, scheme, 20.0, rng, progress=False)
    files = write_dwi_series(root / "dwi", data, affine, scheme.bvals, scheme.bvecs)
    print(
        f"series: {data.shape} voxels x volumes, {int(maps['brain'].sum())} phantom brain "
        f"voxels, {len(files)} instances, written in {time.perf_counter() - start:.0f} s"
    )

    with LocalOrthanc(root / "orthanc") as orthanc:
        config = NodeConfig(
            host="127.0.0.1",
            port=free_port(),
            spool_dir=root / "spool",
            fsync=args.fsync,
            threads=args.threads,
            idle_timeout_s=5.0,
            destinations=(Destination("pacs", orthanc.ae_title, "127.0.0.1", orthanc.dicom_port),),
        )
        node = Node(config)
        node.start()
        try:
            sent = time.perf_counter()
            result = storescu(files[0].parent, config.port, config.ae_title)
            assert result.returncode == 0, result.stderr
            receive_s = time.perf_counter() - sent
            assert wait_for(lambda: "series_sent" in events.records, 300)
        finally:
            node.stop()
        processed = events.records["series_processed"]
        stored = events.records["series_sent"]
        series = [
            s
            for s in orthanc.series()
            if s["MainDicomTags"].get("SeriesDescription", "").startswith("NODDI")
        ]
        counts = sorted(len(s["Instances"]) for s in series)

    timings = processed.timings
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores; python {platform.python_version()}")
    print(
        f"command: python benchmarks/bench_node_latency.py --voxel-size {args.voxel_size} "
        f"--threads {args.threads}{' --fsync' if args.fsync else ''}"
    )
    print(
        f"receive {len(files)} instances (storescu -> node, fsync {args.fsync}): {receive_s:.1f} s"
    )
    print(
        f"brain-mask voxels estimated: {processed.voxels}; scheme {processed.scheme}; "
        f"model {processed.model}; trigger: {processed.trigger}"
    )
    print(f"stored in Orthanc: {len(series)} series, instances {counts}")
    print("stage                                   seconds")
    print(f"  wait in queue                         {processed.queued_s:7.2f}")
    for step in ("convert", "load", "mask", "model", "estimate", "write", "archive"):
        if step in timings:
            print(f"  {step:<36}  {timings[step]:7.2f}")
    print(f"  send to Orthanc (C-STORE)             {stored.send_s:7.2f}")
    print(f"total: last instance in -> all maps stored in Orthanc: {stored.latency_s:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
