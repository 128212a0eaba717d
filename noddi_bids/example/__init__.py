"""A small realistic example dataset, generated offline, and its comparison with the truth.

* :mod:`.phantom`: the phantom (tissue maps, ground-truth parameters, noisy signals);
* :mod:`.bids`: BIDS writers (a dwi run, the tiny block dataset of the tests and CI, the
  phantom example with its truth and SynthSeg-style derivatives);
* :mod:`.compare`: error of the app's maps against the truth;
* ``python -m noddi_bids.example {make,compare}``: the command line (README).
"""
