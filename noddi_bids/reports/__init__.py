"""Self-contained HTML reports: one per participant, one for the group.

- :func:`write_participant_report` (``participant.py``): maps, masks, tissue table, estimator
  scatter plots, histograms and provenance of one participant, found in the derivatives folder;
  :func:`write_participant_reports`: those of several participants with the provenance of a run,
  the one route the app and ``python -m noddi_bids.reports`` take.
- :func:`write_group_report` (``group.py``): the tissue means of all participants, linking
  each participant report.
- :func:`node_timings`, :func:`work_dir_timings` (``provenance.py``): seconds per workflow step,
  for the provenance block.
- ``figures.py``: the figures, as plain functions on arrays returning PNG bytes or SVG text.
- ``python -m noddi_bids.reports``: remake the reports of an existing derivatives folder.
"""

from noddi_bids.reports.group import write_group_report
from noddi_bids.reports.participant import write_participant_report, write_participant_reports
from noddi_bids.reports.provenance import node_timings, work_dir_timings

__all__ = [
    "node_timings",
    "work_dir_timings",
    "write_group_report",
    "write_participant_report",
    "write_participant_reports",
]
