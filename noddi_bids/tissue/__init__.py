"""Tissue masks (SynthSeg outputs or a built-in classification) and tissue tables."""
