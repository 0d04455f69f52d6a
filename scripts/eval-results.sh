#!/usr/bin/env bash
# Reproduces every number in reports/RESULTS.md from the shipped checkpoints (models/) and the
# corpus (../shared/data or $SEGICL_DATA). Each block is one `segicl eval` run writing its own
# report folder (metrics.json with every per-case row, report.md); RESULTS.md's tables come from
# scripts/results-table.py over those folders and its figures from scripts/plot-results.py.
# Cost on the 2-core machine (two runs side by side, 1 thread each): ~40 min for CHAOS.
# Runs made before the exemplar memory (session 9) carry `--memory none`, and memory runs made
# before the similarity choice became the default (session 10) `--memory-choice spread`: what they ran.
# Reports of 3D datasets made from session 11 on also hold the Dice within each structure's slice
# range and the mean per-slice 2D Dice (scripts/results-table.py --metric); session 11 re-ran
# chaos_universeg, chaos_unet, btcv_crossconv and btcv_unet with their commands below for them
# (the model rows came out bit-identical; the U-Nets' did not: their training is not
# bit-reproducible); session 12 re-ran btcv_universeg (bit-identical). The memory/ablation runs
# predate these scores.
# Usage: scripts/eval-results.sh [BUILD_DIR=build] [table1|gpu|wise|chaos|btcv|medscribble|fundus|ablation|memory-ablation|similar|post|presence|empty-queries|decoder|unet|all]
set -euo pipefail
build=${1:-build}
what=${2:-all}
bin="$build/bin/segicl --threads 1"
ours=models/segicl-crossconv.pt
# Runs its arguments in the background; `finish` waits for all of them and fails if any failed.
pids=()
spawn() { "$@" > /dev/null & pids+=($!); }
finish() { for p in "${pids[@]}"; do wait "$p"; done; pids=(); }
universeg=models/universeg-baseline.pt

if [[ $what == table1 || $what == all ]]; then
  # Session 11: the issue's own command, defaults and all (x = 0 through the exemplar memory's
  # similarity recall, computed once and shared by the 5 draws; ours + atlas), ~80 min on 1 thread.
  $bin eval --model $ours --label segicl-crossconv --dataset chaos_mr_t2 --examples 0,1,3 --draws 5 \
    -o reports/chaos_table1 > /dev/null
fi
if [[ $what == gpu || $what == all ]]; then
  # The session-12 GPU continuation (models/segicl-crossconv-gpu.pt) on the same protocols as the
  # shipped model; it has no memory file of its own, so the shipped one is named. Session 12 ran
  # the first two (MSCMR val, CHAOS draw 0), session 13 the rest, 1 thread each: CHAOS 5 draws
  # (the command with this model) ~75 min, MedScribble + fundus ~25 min, BTCV ~15 min.
  gpu=models/segicl-crossconv-gpu.pt
  $bin eval --model $gpu --dataset mscmr_bssfp --query-split val --examples 1,3 --draws 2 --methods segicl \
    -o reports/gpu_mscmr_val > /dev/null
  $bin eval --model $gpu --memory models/segicl-crossconv.memory --label segicl-crossconv-gpu --dataset chaos_mr_t2 \
    --examples 0,1,3 --draws 1 -o reports/gpu_chaos_draw0 > /dev/null
  $bin eval --model $gpu --memory models/segicl-crossconv.memory --label segicl-crossconv-gpu --dataset chaos_mr_t2 \
    --examples 0,1,3 --draws 5 -o reports/chaos_table1_gpu > /dev/null
  $bin eval --model $gpu --label segicl-crossconv-gpu --dataset medscribble --examples 0,1,2,3 --draws 5 \
    --memory none -o reports/gpu_medscribble > /dev/null
  for d in chase_fundus drive_fundus drions_fundus drishti_fundus; do
    $bin eval --model $gpu --label segicl-crossconv-gpu --dataset $d --examples 0,1,2,3,5,8 --draws 5 \
      --memory none -o reports/gpu_${d%_fundus} > /dev/null
  done
  $bin eval --model $gpu --label segicl-crossconv-gpu --dataset btcv_ct \
    --tasks liver,spleen,"left kidney","right kidney",pancreas --examples 1,3 --draws 2 --cases 3 \
    --memory none -o reports/gpu_btcv > /dev/null
fi
if [[ $what == wise || $what == all ]]; then
  # Session 13: the weight-space mix of the shipped model and its GPU continuation (WiSE-FT),
  # models/segicl-crossconv-wise.pt = `segicl model interpolate models/segicl-crossconv.pt
  # models/segicl-crossconv-gpu.pt -t 0.5` (fp16; sha256 beside it). The MSCMR, MedScribble, DRIVE,
  # DRIONS and CHASE runs were made with a byte-identical copy at /tmp/mix/wise0.5.pt (their
  # metrics.json names that path); 1 thread, ~9 min in all, Drishti + BTCV ~25 min. The CHAOS
  # run is the command with this model (2 threads, ~23 min).
  wise=models/segicl-crossconv-wise.pt
  $bin eval --model $wise --label wise0.5 --dataset mscmr_bssfp --query-split val --examples 1,3 --draws 2 \
    --methods segicl -o reports/wise_mscmr > /dev/null
  $bin eval --model $wise --label wise0.5 --dataset medscribble --examples 1,2,3 --draws 5 --memory none \
    --methods segicl -o reports/wise_medscribble > /dev/null
  for d in drive_fundus drions_fundus chase_fundus drishti_fundus; do
    $bin eval --model $wise --label wise0.5 --dataset $d --examples 1,3,8 --draws 5 --memory none --methods segicl \
      -o reports/wise_${d%_fundus} > /dev/null
  done
  $bin eval --model $wise --label segicl-crossconv-wise --dataset btcv_ct \
    --tasks liver,spleen,"left kidney","right kidney",pancreas --examples 1,3 --draws 2 --cases 3 \
    --memory none --methods segicl -o reports/wise_btcv > /dev/null
  $build/bin/segicl --threads 2 eval --model $wise --label segicl-crossconv-wise --dataset chaos_mr_t2 \
    --examples 0,1,3 --draws 5 -o reports/chaos_table1_wise > /dev/null
fi
if [[ $what == presence || $what == all ]]; then
  # Session 12: the presence check by reverse prediction (infer/presence.h), tried on a train-role
  # dataset's val split (never trained on, not a reported test set), ~6 min on 1 thread.
  $bin eval --model $ours --dataset mscmr_bssfp --query-split val --examples 1,3 --draws 2 --methods segicl \
    --hd95 false --presence-check 0.3,0.5,0.7 -o reports/ablation_mscmr_val_presence > /dev/null
fi
if [[ $what == empty-queries || $what == all ]]; then
  # Session 12: does a larger share of empty-target queries in training cut the masks painted on
  # slices without the structure? 100 fine-tuning steps of the shipped model each (same seed), 5 %
  # (as it was trained) vs 30 %, scored on MSCMR's val split; ~10 + 3 min per share on 1 thread.
  # (The recorded runs used /tmp/abl/ft<share> as the run folder; logs in reports/training/empty-queries.)
  for share in 0.05 0.3; do
    $bin -q train --stage 1 --preset crossconv-cpu --init $ours --pack runs/train128.pack --out runs/abl-empty$share \
      --steps 100 --batch-size 4 --lr 3e-4 --warmup 10 --min-context 0 --max-context 5 --empty-queries $share \
      --checkpoint-every 1000 --val-every 1000 --seed 12
    $bin -q eval --model runs/abl-empty$share/checkpoint.pt --memory none --label ft-empty$share --dataset mscmr_bssfp \
      --query-split val --examples 1,3 --draws 2 --methods segicl --hd95 false \
      -o reports/ablation_mscmr_val_empty$share > /dev/null
  done
fi
if [[ $what == chaos || $what == all ]]; then
  # Table 1: CHAOS MR T2 (OOD: never trained on), all 20 patients, 5 draws, ours + atlas prior.
  # Without the exemplar memory (the model alone, as before session 9; x = 3 is the same with it:
  # 3 examples leave nothing to top up at --memory-examples 3).
  spawn $bin eval --model $ours --label segicl-crossconv --dataset chaos_mr_t2 --examples 0,1,3 --draws 5 \
    --memory none -o reports/chaos_crossconv
  # With the shipped exemplar memory (models/segicl-crossconv.memory, found beside the model): x = 0
  # recalls 3 training-pool pairs; x = 1 with the --memory-top-up option gets 2 recalled pairs
  # beside its example. ~60 min each, side by side. chaos_memory_x0's rows with chaos_crossconv's
  # x = 1 and 3 are the rows of the command (default: no top-up)
  # `segicl eval --model models/segicl-crossconv.pt --dataset chaos_mr_t2 --examples 0,1,3 --draws 5`.
  spawn $bin eval --model $ours --label segicl-crossconv --dataset chaos_mr_t2 --examples 0 --draws 5 \
    --memory-examples 3 --memory-choice spread --methods segicl -o reports/chaos_memory_x0
  spawn $bin eval --model $ours --label segicl-crossconv --dataset chaos_mr_t2 --examples 1 --draws 5 \
    --memory-examples 3 --memory-top-up true --memory-choice spread --methods segicl -o reports/chaos_memory_x1
  # The UniverSeg-architecture baseline costs ~4x more per slice: first 10 patients, 2 draws (the
  # same queries and example draws as ours; compare with results-table.py --same-cases-as).
  spawn $bin eval --model $universeg --label universeg --methods segicl --dataset chaos_mr_t2 --examples 1,3 \
    --draws 2 --cases 10 -o reports/chaos_universeg
  finish
fi
if [[ $what == btcv || $what == all ]]; then
  # Fig. 8: BTCV CT test patients (in-distribution: other BTCV patients were trained on).
  $bin eval --model $ours --label segicl-crossconv --dataset btcv_ct \
    --tasks liver,spleen,"left kidney","right kidney",pancreas --examples 1,3 --draws 2 --cases 3 \
    --memory none -o reports/btcv_crossconv > /dev/null
  # With the exemplar memory: text only (x = 0) and x = 1 topped up to 3 pairs, same 3 patients.
  $bin eval --model $ours --label segicl-crossconv --dataset btcv_ct \
    --tasks liver,spleen,"left kidney","right kidney",pancreas --examples 0,1 --draws 2 --cases 3 \
    --memory-examples 3 --memory-top-up true --memory-choice spread --methods segicl -o reports/btcv_memory > /dev/null
  # The UniverSeg-architecture baseline on the same 3 patients, first draw only (4x the cost).
  $bin eval --model $universeg --label universeg --methods segicl --dataset btcv_ct \
    --tasks liver,spleen,"left kidney","right kidney",pancreas --examples 1,3 --draws 1 --cases 3 \
    -o reports/btcv_universeg > /dev/null
fi
if [[ $what == medscribble || $what == all ]]; then
  # Broad few-shot suite: MedScribble (eval role, never trained on), 12 2D tasks of 3-5 images each;
  # each task draws examples and queries only among its own images, so x <= 2 for its 3-image task
  # (SCD; x = 3 is skipped there) and x <= 3 elsewhere. Its STARE and OCTA500 tasks are the OOD
  # modalities of the paper's Fig. 5. ~1 min + ~3 min.
  spawn $bin eval --model $ours --label segicl-crossconv --dataset medscribble --examples 0,1,2,3 --draws 5 \
    --memory none -o reports/medscribble_crossconv
  spawn $bin eval --model $universeg --label universeg --methods segicl --dataset medscribble --examples 1,2,3 \
    --draws 5 -o reports/medscribble_universeg
  finish
  # With the exemplar memory: x = 0 recalls 3 pairs, x = 1 and 2 are topped up to 3 (the option
  # that RESULTS.md found harmful here), x = 3 is unchanged. ~3 min.
  $bin eval --model $ours --label segicl-crossconv --dataset medscribble --examples 0,1,2,3 --draws 5 \
    --memory-examples 3 --memory-top-up true --memory-choice spread --methods segicl -o reports/medscribble_memory > /dev/null
fi
if [[ $what == fundus || $what == all ]]; then
  # Fig. 5 style, OOD modality (fundus photographs, never trained on): vessels (DRIVE, CHASE_DB1),
  # optic disc (DRIONS-DB), optic disc rim and cup (Drishti-GS); every image a query, 5 draws.
  for d in drive_fundus drions_fundus drishti_fundus chase_fundus; do
    spawn $bin eval --model $ours --label segicl-crossconv --dataset $d --examples 0,1,2,3,5,8 --draws 5 \
      --memory none -o reports/${d%_fundus}_crossconv
    spawn $bin eval --model $universeg --label universeg --methods segicl --dataset $d --examples 1,2,3,5,8 \
      --draws 5 -o reports/${d%_fundus}_universeg
    finish
  done
fi
if [[ $what == ablation || $what == all ]]; then
  # The shipped model without the instruction, and with 4 flipped passes averaged (MedScribble).
  spawn $bin eval --model $ours --label segicl-crossconv-notext --dataset medscribble --examples 1,3 --draws 5 \
    --text false --memory none --methods segicl -o reports/ablation_medscribble_notext
  spawn $bin eval --model $ours --label segicl-crossconv-4flips --dataset medscribble --examples 1,3 --draws 5 \
    --samples 4 --memory none --methods segicl -o reports/ablation_medscribble_4flips
  finish
fi
if [[ $what == memory-ablation || $what == all ]]; then
  # The exemplar memory on CHAOS, first 4 patients x 2 draws: recalled pairs at x = 0 (3, 5, 8),
  # topping x = 1 and 3 up to 5, and a second pass with the query's 2 most confident planes
  # (self-prompting). Compare with results-table.py --same-cases-as one of these folders.
  spawn $bin eval --model $ours --dataset chaos_mr_t2 --examples 0 --draws 2 --cases 4 --memory-choice spread --memory-examples 3 \
    -o reports/ablation_chaos_memory_k3
  spawn $bin eval --model $ours --dataset chaos_mr_t2 --examples 0 --draws 2 --cases 4 --memory-choice spread --memory-examples 5 \
    -o reports/ablation_chaos_memory_k5
  finish
  spawn $bin eval --model $ours --dataset chaos_mr_t2 --examples 0 --draws 2 --cases 4 --memory-choice spread --memory-examples 8 \
    --methods segicl -o reports/ablation_chaos_memory_k8
  spawn $bin eval --model $ours --dataset chaos_mr_t2 --examples 1,3 --draws 2 --cases 4 --memory-choice spread --memory-examples 5 \
    --memory-top-up true --methods segicl -o reports/ablation_chaos_memory_topup5
  finish
  $bin eval --model $ours --dataset chaos_mr_t2 --examples 0,1 --draws 2 --cases 4 --memory-choice spread --memory-examples 3 \
    --refine-examples 2 --methods segicl -o reports/ablation_chaos_memory_k3_own2 > /dev/null
fi
if [[ $what == similar || $what == all ]]; then
  # Session 10: recalled pairs chosen by layout similarity to the query (--memory-choice similar).
  # Its recall does not depend on the draw, so x = 0 needs one draw (5 would repeat it). These
  # runs used 2 threads (`segicl --threads 2`); thread count can move the last digits.
  b2="$build/bin/segicl --threads 2"
  $b2 eval --model $ours --label segicl-crossconv --dataset chaos_mr_t2 --examples 0 --draws 1 --methods segicl \
    --memory-choice similar -o reports/chaos_memory_similar_x0 > /dev/null
  $b2 eval --model $ours --label segicl-crossconv --dataset btcv_ct \
    --tasks liver,spleen,"left kidney","right kidney",pancreas --examples 0 --draws 1 --cases 3 --methods segicl \
    --memory-choice similar -o reports/btcv_memory_similar > /dev/null
  $b2 eval --model $ours --label segicl-crossconv --dataset medscribble --examples 0,1 --draws 5 --methods segicl \
    --memory-choice similar --memory-top-up true -o reports/medscribble_memory_similar > /dev/null
  # 8 similar pairs on the first 4 CHAOS patients (1 thread).
  $bin eval --model $ours --dataset chaos_mr_t2 --examples 0 --draws 1 --cases 4 --memory-examples 8 \
    --memory-choice similar --methods segicl -o reports/ablation_chaos_memory_similar_k8 > /dev/null
fi
if [[ $what == post || $what == all ]]; then
  # Session 10: 3D largest-connected-component post-processing scored beside the raw masks of the
  # same predictions (first 4 CHAOS patients x 2 draws, 2 threads, no HD95).
  $build/bin/segicl --threads 2 eval --model models/segicl-crossconv.pt --dataset chaos_mr_t2 --examples 0,1,3 \
    --draws 2 --cases 4 --methods segicl --memory-choice spread --post largest-cc --hd95 false -o reports/ablation_chaos_largest_cc > /dev/null
fi
if [[ $what == decoder || $what == all ]]; then
  # Session 10: the decoder ablations (DDIM steps, query-image hint) on the paper
  # architecture: true masks of 256 val-pack slices -> condition tokens -> DDIM -> mask. The shipped
  # segicl-cpu.pt, and two matched 500-step stage-1 runs with and without the hint (~6 min each,
  # side by side on 1 thread each). Needs runs/train128.pack and runs/val128.pack (`segicl pack`).
  $build/bin/segicl --threads 2 model decoder models/segicl-cpu.pt --pack runs/val128.pack --slices 256 \
    -o reports/ablation_decoder_shipped > /dev/null
  for hint in hint nohint; do
    preset=cpu; [[ $hint == nohint ]] && preset=configs/model/cpu-nohint.json
    spawn $build/bin/segicl --threads 1 train --stage 1 --preset $preset --pack runs/train128.pack \
      --val-pack runs/val128.pack -o runs/abl-s1-$hint --steps 500 --batch-size 8 --lr 1e-3 --warmup 50 \
      --val-every 250 --checkpoint-every 250 --seed 0
  done
  finish
  $build/bin/segicl --threads 2 model decoder runs/abl-s1-hint/checkpoint.pt --pack runs/val128.pack --slices 256 \
    -o reports/ablation_decoder_s1_hint > /dev/null
  $build/bin/segicl --threads 2 model decoder runs/abl-s1-nohint/checkpoint.pt --pack runs/val128.pack \
    --slices 256 --hints off -o reports/ablation_decoder_s1_nohint > /dev/null
fi
if [[ $what == unet || $what == all ]]; then
  # Baseline 3 (supervised upper bound): a 2D U-Net (4 levels, 16 base features) trained inside
  # `segicl eval` on the evaluated dataset's support pool only, scored once per query case (it takes
  # no examples). CHAOS: 2-fold cross-validation by patient (each fold trains on 10 patients and
  # predicts the other 10), 600 steps x 8 planes per fold, ~15 min per fold on 1 shared thread.
  # BTCV: one U-Net on the 18 train patients predicts all 12 test patients, 900 steps x 8 planes.
  $bin eval --dataset chaos_mr_t2 --methods unet --examples 0 --draws 1 --unet-steps 600 --unet-batch 8 \
    --unet-features 16 -o reports/chaos_unet > /dev/null
  $bin eval --dataset btcv_ct --tasks liver,spleen,"left kidney","right kidney",pancreas --methods unet \
    --examples 0 --draws 1 --unet-steps 900 --unet-batch 8 --unet-features 16 -o reports/btcv_unet > /dev/null
fi
