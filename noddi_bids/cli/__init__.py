"""Command-line entry points of noddi-bids, one module per command.

* :mod:`.run`: ``noddi-bids``, the BIDS App (argument parser in :mod:`.parser`, set-up of
  MultiProc workers in :mod:`.worker`);
* :mod:`.warmup`: ``noddi-bids-warmup``;
* :mod:`.networks`: ``noddi-bids-train`` and ``noddi-bids-evaluate``;
* :mod:`.reports`: ``python -m noddi_bids.reports``;
* :mod:`.example`: ``python -m noddi_bids.example``.
"""

import os

from noddi_bids.caches import writable_cache

# Nipype's online version check (etelemetry) cannot succeed on offline compute nodes, and ONNX
# Runtime's telemetry (on Linux since 1.29) would upload usage events and store a device ID in
# the user's cache folder: both off unless the user sets the variables.
os.environ.setdefault("NIPYPE_NO_ET", "1")
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
# A read-only MPLCONFIGDIR (the container image's, with its font list) is used through a
# writable copy, before anything imports Matplotlib.
writable_cache("MPLCONFIGDIR", "matplotlib")
