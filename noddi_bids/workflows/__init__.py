"""Nipype workflows of noddi-bids, built by ``init_*_wf`` factories."""
