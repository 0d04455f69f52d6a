#!/usr/bin/env bash
# The README's `make demo`: segments bundled samples with the shipped model and prints Dice against
# the bundled ground truth and the time taken. Outputs (masks on the input grids, overlays,
# uncertainty) go to out/demo/. Usage: scripts/demo.sh [BUILD_DIR=build]
set -euo pipefail
build=${1:-build}
bin="$build/bin/segicl --threads 0"
model=${SEGICL_MODEL:-models/segicl-crossconv-wise.pt}
out=out/demo
mkdir -p "$out"
chaos=data/samples/chaos_mr_t2
hc18=data/samples/hc18_us

echo "== segicl demo: shipped model $model"
$bin model info --checkpoint "$model" | tail -n 1

echo
echo "== 1. CHAOS MR (never trained on): liver of patient p02, from 3 example slices of patient p01 + text"
/usr/bin/time -f "   wall %e s, peak memory %M KiB" $bin segment "$chaos/images/chaos_mr_t2_p02.nii.gz" \
  -o "$out/p02_liver_k3.nii.gz" --example "$chaos/images/chaos_mr_t2_p01.nii.gz" "$chaos/labels/chaos_mr_t2_p01.nii.gz" \
  --example-label 1 --slices-per-example 3 --text "segment the liver" --samples 3 \
  --uncertainty "$out/p02_liver_k3_uncertainty.nii.gz" --overlay "$out/p02_liver_k3.png" --model "$model" --force
$bin compare "$out/p02_liver_k3.nii.gz" "$chaos/labels/chaos_mr_t2_p02.nii.gz" --reference-label 1

echo
echo "== 2. same volume, spleen, 3 example slices from p01"
$bin segment "$chaos/images/chaos_mr_t2_p02.nii.gz" -o "$out/p02_spleen_k3.nii.gz" \
  --example "$chaos/images/chaos_mr_t2_p01.nii.gz" "$chaos/labels/chaos_mr_t2_p01.nii.gz" --example-label 4 \
  --text "segment the spleen" --overlay "$out/p02_spleen_k3.png" --model "$model" --force
$bin compare "$out/p02_spleen_k3.nii.gz" "$chaos/labels/chaos_mr_t2_p02.nii.gz" --reference-label 4

echo
echo "== 3. text only (the paper's SegICL-0): \"segment the liver\" (3 training-pool CT livers recalled from"
echo "   the model's exemplar memory, $(basename "${model%.pt}").memory: no MR example is given)"
$bin segment "$chaos/images/chaos_mr_t2_p02.nii.gz" -o "$out/p02_liver_text.nii.gz" --text "segment the liver" \
  --overlay "$out/p02_liver_text.png" --model "$model" --force
$bin compare "$out/p02_liver_text.nii.gz" "$chaos/labels/chaos_mr_t2_p02.nii.gz" --reference-label 1

echo
echo "== 4. 2D ultrasound: fetal head from 2 examples (memory off: HC18's training images, this one"
echo "   included, are in the memory and must not be recalled as its own example)"
$bin segment "$hc18/images/hc18_us_1044.png" -o "$out/hc18_1044.png" \
  --example "$hc18/images/hc18_us_1014.png" "$hc18/labels/hc18_us_1014.png" \
  --example "$hc18/images/hc18_us_1037.png" "$hc18/labels/hc18_us_1037.png" \
  --text "segment the fetal head" --memory none --overlay "$out/hc18_1044_overlay.png" --model "$model" --force
$bin compare "$out/hc18_1044.png" "$hc18/labels/hc18_us_1044.png"

echo
echo "outputs in $out/ (masks are on the input grids: open them over the images in ITK-SNAP or 3D Slicer)"
