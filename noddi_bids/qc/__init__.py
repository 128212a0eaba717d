"""Quality control of estimates and inputs: plain functions on arrays.

- :mod:`noddi_bids.qc.residuals`: how well an estimate predicts the measured signal (RMSE and
  NRMSE maps, out-of-model voxels).
"""
