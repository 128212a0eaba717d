#!/usr/bin/env bash
# Train the reference-protocol networks shipped in noddi_bids/data/models/ (NN_MLE and NN_GT).
#
# The study's recipe: 2^18 samples drawn with one seed (both networks see the same signals; only
# the labels differ), SNR 15, batch 1000, 500 epochs, Adam lr 5e-4, weight decay 1e-6,
# validation fraction 0.1, best validation weights kept.
#
# Step 1 computes the MLE labels (the batched fitter started from the ground truth; CPU, numba)
# and saves them; step 2 trains both networks (CUDA when present). The steps may run on
# different machines: copy $LABELS along (the file is checked against the regenerated data).
# Usage: DEVICE=cuda tools/train_shipped_models.sh [labels|train|all]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=noddi_bids/data/models
SEED=2026
SAMPLES=262144
LABELS=${LABELS:-build/mle_labels_seed${SEED}.npz}
DEVICE=${DEVICE:-auto}
STEP=${1:-all}
COMMON=(--samples "$SAMPLES" --snr 15 --seed "$SEED")

if [[ $STEP == labels || $STEP == all ]]; then
  mkdir -p "$(dirname "$LABELS")"
  noddi-bids-train --labels mle "${COMMON[@]}" --labels-only --save-mle-labels "$LABELS"
fi
if [[ $STEP == train || $STEP == all ]]; then
  noddi-bids-train --labels mle "${COMMON[@]}" --mle-labels "$LABELS" --epochs 500 \
    --device "$DEVICE" --out "$OUT/nn-mle_reference.onnx"
  noddi-bids-train --labels gt "${COMMON[@]}" --epochs 500 \
    --device "$DEVICE" --out "$OUT/nn-gt_reference.onnx"
  sha256sum "$OUT"/nn-*_reference.onnx
fi
