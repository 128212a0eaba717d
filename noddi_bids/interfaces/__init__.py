"""Thin Nipype interfaces around the functions of noddi-bids (files in, files out)."""
