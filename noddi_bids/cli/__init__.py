"""Command-line entry points of noddi-bids."""

import os

# Nipype's online version check (etelemetry) cannot succeed on offline compute nodes.
os.environ.setdefault("NIPYPE_NO_ET", "1")
