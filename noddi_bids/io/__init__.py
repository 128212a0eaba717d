"""Input (BIDS queries) and output (derivative names, sidecars, atomic writes) of noddi-bids."""
