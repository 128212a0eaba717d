"""noddi-bids: NODDI parameter maps from multi-shell diffusion MRI."""

__version__ = "0.1.0"
