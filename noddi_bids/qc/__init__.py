"""Quality control of estimates and inputs: plain functions on arrays.

- :mod:`noddi_bids.qc.residuals`: how well an estimate predicts the measured signal (RMSE and
  NRMSE maps, out-of-model voxels);
- :mod:`noddi_bids.qc.gradients`: whether the b-vectors agree with the data (flipped or
  permuted axes), checked before estimation.
"""
