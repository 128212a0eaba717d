"""Command-line entry points of noddi-bids, one module per command.

* :mod:`.run`: ``noddi-bids``, the BIDS App (argument parser in :mod:`.parser`, set-up of
  MultiProc workers in :mod:`.worker`);
* :mod:`.warmup`: ``noddi-bids-warmup``;
* :mod:`.networks`: ``noddi-bids-train`` and ``noddi-bids-evaluate``;
* :mod:`.reports`: ``python -m noddi_bids.reports``;
* :mod:`.example`: ``python -m noddi_bids.example``.
"""

import os

# Nipype's online version check (etelemetry) cannot succeed on offline compute nodes.
os.environ.setdefault("NIPYPE_NO_ET", "1")
