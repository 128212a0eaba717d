"""Provenance the reports cannot read from the derivatives: how long each workflow step took."""

from __future__ import annotations

import logging
import pickle
from typing import Any

LOGGER = logging.getLogger("noddi_bids.reports")


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
    workflow = f"sub_{subject.removeprefix('sub-')}_wf" if subject else None
    timings: dict[str, float] = {}
    for node in graph.nodes():
        parts = node.fullname.split(".")
        if workflow is None:
            name = ".".join(parts[1:]) or parts[0]
        elif workflow in parts[:-1]:
            name = ".".join(parts[parts.index(workflow) + 1 :])
        else:
            continue
        try:
            runtime = node.result.runtime
        except (OSError, EOFError, AttributeError, pickle.UnpicklingError) as err:
            LOGGER.debug("%s: no runtime (%s).", node.fullname, err)
            continue
        runtimes = runtime if isinstance(runtime, list) else [runtime]
        durations = [getattr(r, "duration", None) for r in runtimes]
        if any(d is None for d in durations):
            continue
        timings[name] = float(sum(durations))
    return timings
