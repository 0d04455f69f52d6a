#!/usr/bin/env bash
# The model card's pictures of known failure cases (models/failure_cases.png): the shipped model on
# the bundled CHAOS MR sample p02 (never trained on), examples from patient p01, one axial plane per
# case: ground truth in green, our mask in red. Cases: liver with 3 example slices (a working
# case, for reference), spleen with 3 example slices (the weakest organ), liver from text only
# (ICL-0: the model's exemplar memory recalls 3 training-pool CT livers; before it, an empty mask). Only CC BY-SA CHAOS data is drawn, so the figure stays under CC BY-SA 4.0.
#   scripts/failure-pictures.sh [BUILD_DIR=build]
# Needs Debian's python3-nibabel and python3-matplotlib (hence /usr/bin/python3; install-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-build}/bin/segicl
model=${SEGICL_MODEL:-models/segicl-crossconv-wise.pt}
samples=data/samples/chaos_mr_t2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
run() {  # run NAME LABEL [segment options...]
  local name=$1 label=$2
  shift 2
  "$bin" --threads 2 segment "$samples/images/chaos_mr_t2_p02.nii.gz" -o "$work/$name.nii.gz" \
    --model "$model" --modality MR --example-label "$label" --force "$@" > /dev/null
}
ex=(--example "$samples/images/chaos_mr_t2_p01.nii.gz" "$samples/labels/chaos_mr_t2_p01.nii.gz")
run liver_k3 1 --text "segment the liver" "${ex[@]}"
run spleen_k3 4 --text "segment the spleen" "${ex[@]}"
run liver_text 1 --text "segment the liver"
/usr/bin/python3 scripts/render-cases.py -o models/failure_cases.png \
  --image "$samples/images/chaos_mr_t2_p02.nii.gz" --labels "$samples/labels/chaos_mr_t2_p02.nii.gz" \
  "liver, 3 example slices:1:$work/liver_k3.nii.gz" \
  "spleen, 3 example slices:4:$work/spleen_k3.nii.gz" \
  "liver, text only (x = 0, 3 CT livers recalled):1:$work/liver_text.nii.gz"
