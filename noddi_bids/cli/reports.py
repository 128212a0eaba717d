"""Remake the HTML reports from an existing derivatives folder.

Usage::

    python -m noddi_bids.reports participant OUTPUT_DIR [--participant-label 01 ...]
        [--session-label 1] [--work-dir WORK]
    python -m noddi_bids.reports group OUTPUT_DIR

``participant`` writes ``sub-<label>[_ses-<label>].html`` for the listed participants (all
``sub-*`` folders by default); ``--work-dir`` adds the step timings found in a Nipype work
folder. ``group`` writes ``group_report.html`` from ``group_tissue_stats.tsv``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from noddi_bids.reports.group import write_group_report
from noddi_bids.reports.participant import write_participant_reports


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit code (0, or 1 with a one-line error)."""
    parser = argparse.ArgumentParser(
        prog="python -m noddi_bids.reports", description="Remake noddi-bids HTML reports."
    )
    parser.add_argument("level", choices=("participant", "group"), help="which report(s)")
    parser.add_argument("output_dir", type=Path, help="derivatives folder of noddi-bids")
    parser.add_argument(
        "--participant-label", nargs="+", default=[], help="participants (default: all)"
    )
    parser.add_argument("--session-label", help="one report for this session only")
    parser.add_argument("--work-dir", type=Path, help="Nipype work folder (step timings)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    try:
        if args.level == "group":
            write_group_report(args.output_dir)
            return 0
        subjects = [s.removeprefix("sub-") for s in args.participant_label] or sorted(
            path.name.removeprefix("sub-")
            for path in args.output_dir.glob("sub-*")
            if path.is_dir()
        )
        if not subjects:
            raise FileNotFoundError(f"{args.output_dir}: no sub-* folders.")
        written = write_participant_reports(
            args.output_dir, subjects, args.session_label, work_dir=args.work_dir
        )
    except (OSError, ValueError) as err:
        sys.stderr.write(f"noddi_bids.reports: error: {err}\n")
        return 1
    return 0 if len(written) == len(subjects) else 1
