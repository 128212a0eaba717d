"""Provenance the reports cannot read from the derivatives: how long each workflow step took.

Two sources give the same step names: the graph returned by ``Workflow.run()``
(:func:`node_timings`) and the result files left in the Nipype work folder
(:func:`work_dir_timings`), which also exist after a failed run.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

LOGGER = logging.getLogger("noddi_bids.reports")
_UNREADABLE = (OSError, EOFError, AttributeError, ImportError, pickle.UnpicklingError)


def node_timings(graph: Any, subject: str | None = None) -> dict[str, float]:
    """Seconds each node of an executed Nipype graph ran.

    Parameters
    ----------
    graph : networkx.DiGraph
        The graph returned by ``Workflow.run()`` (its nodes are executed Nipype nodes).
    subject : str, optional
        Keep only the nodes of this participant (below ``sub_<label>_wf``).

    Returns
    -------
    dict
        Step name -> seconds. The name is the node's full name below the top workflow
        (``sub_01_wf.sub_01_dwi_wf.nn``), or below ``sub_<label>_wf`` with ``subject``
        (``sub_01_dwi_wf.nn``). Nodes without a readable result (not run, crashed) are left out.
    """
    timings: dict[str, float] = {}
    for node in graph.nodes():
        name = _step_name(node.fullname.split("."), subject)
        if name is None:
            continue
        try:
            duration = _duration(node.result)
        except _UNREADABLE as err:
            LOGGER.debug("%s: no runtime (%s).", node.fullname, err)
            continue
        if duration is not None:
            timings[name] = duration
    return timings


def work_dir_timings(work_dir: Path, subject: str | None = None) -> dict[str, float]:
    """Seconds each node ran, from the result files in a Nipype work folder.

    Works after a failed run too (nodes that finished left their result file). A node reused
    from the cache reports the time of the run that computed it.

    Parameters
    ----------
    work_dir : Path
        Folder holding the top workflow's folder (``<work_dir>/noddi_bids_wf/...``).
    subject : str, optional
        Keep only the nodes of this participant (below ``sub_<label>_wf``).

    Returns
    -------
    dict
        Step name (as in :func:`node_timings`) -> seconds, in order of start time.
    """
    from nipype.pipeline.engine.utils import load_resultfile

    found = []
    for path in Path(work_dir).glob("*/**/result_*.pklz"):
        parts = path.parent.relative_to(work_dir).parts
        if "mapflow" in parts:  # map-node iterations; their parent node has the total
            continue
        name = _step_name(parts, subject)
        if name is None:
            continue
        try:
            result = load_resultfile(path, resolve=False)
            duration = _duration(result)
        except _UNREADABLE as err:
            LOGGER.debug("%s: no runtime (%s).", path, err)
            continue
        if duration is not None:
            start = getattr(_runtimes(result)[0], "startTime", None) or ""
            found.append((str(start), name, duration))
    return {name: duration for _, name, duration in sorted(found)}


def _step_name(parts: Sequence[str], subject: str | None) -> str | None:
    """Name of a node below the top workflow, or below ``sub_<label>_wf`` (None: not in it)."""
    if subject is None:
        return ".".join(parts[1:]) or parts[0]
    workflow = f"sub_{subject.removeprefix('sub-')}_wf"
    if workflow not in parts[:-1]:
        return None
    return ".".join(parts[list(parts).index(workflow) + 1 :])


def _runtimes(result: Any) -> list[Any]:
    runtime = result.runtime
    return list(runtime) if isinstance(runtime, list) else [runtime]


def _duration(result: Any) -> float | None:
    durations = [getattr(r, "duration", None) for r in _runtimes(result)]
    if not durations or any(d is None for d in durations):
        return None
    return float(sum(durations))
