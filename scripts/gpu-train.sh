#!/usr/bin/env bash
# The one prepared command for the lent GPU machine: build segicl against its PyTorch's LibTorch
# (or reuse a carried build), train stage 1 then stage 2 from carried packs within a wall-clock
# budget, and write fp16 checkpoints (split into <= 15 MiB parts), logs and the CUDA binary to $OUT.
# Carry: runs/train128.pack runs/val128.pack .gpu-deps [build-gpu] [an INIT checkpoint].
# Env: ARCH (crossconv: one stage continuing models/segicl-crossconv-gpu.pt, the default; segicl:
#      the paper architecture's two stages), BUDGET (s, default 540), PRESET (crossconv-cpu / cpu), S1_SHARE (0.4), BATCH1 (64), BATCH2 (48),
#      INIT (a stage-2 checkpoint to continue from: skips stage 1, continues stage 2 from its weights),
#      NPROC (GPUs to train on with c10d/NCCL, default: all visible; batches are per GPU),
#      TRAIN_FLAGS (more `segicl train` flags for the training runs, e.g. "--empty-queries 0.3"),
#      COMPARE_SAMPLING (1: a 30-step probe with host-side sampling beside the device one; 0: skip).
set -uo pipefail
: "${OUT:?set OUT to the folder that comes back}"
BUDGET=${BUDGET:-540}
ARCH=${ARCH:-crossconv}
PRESET=${PRESET:-$([ "$ARCH" = crossconv ] && echo crossconv-cpu || echo cpu)}
PACK=${PACK:-runs/train128.pack}
VAL=${VAL:-runs/val128.pack}
S1_SHARE=${S1_SHARE:-0.4}
BATCH1=${BATCH1:-64}
BATCH2=${BATCH2:-48}
INIT=${INIT:-}
TRAIN_FLAGS=${TRAIN_FLAGS:-}
NPROC=${NPROC:-$(nvidia-smi -L 2> /dev/null | wc -l)}
[ "${NPROC:-0}" -ge 1 ] || NPROC=1
t0=$SECONDS
exec > >(tee -a "$OUT/gpu-train.log") 2>&1
left() { echo $((BUDGET - (SECONDS - t0))); }
rate_of() { sed -n 's/.*, \([0-9.]*\) steps\/s.*/\1/p' | tail -n 1; }
loss_of() { sed -n 's/.*, loss \([0-9.]*\),.*/\1/p' | tail -n 1; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
if build-gpu/bin/segicl --help > /dev/null 2>&1; then
  echo "using the carried build"
else
  bash scripts/gpu-build.sh build-gpu > "$OUT/build.log" 2>&1 || { tail -n 60 "$OUT/build.log"; exit 1; }
fi
echo "build ready at $((SECONDS - t0)) s"
bin="build-gpu/bin/segicl --threads $(( $(nproc) / NPROC > 0 ? $(nproc) / NPROC : 1 ))"  # cores split over the ranks
cp build-gpu/bin/segicl "$OUT/segicl-cuda" && strip "$OUT/segicl-cuda" 2> /dev/null

echo "distributed backends: $(grep -o 'distributed training .*' "$OUT/build.log" 2> /dev/null || echo 'carried build')"
common="--pack $PACK --device cuda --log-every 100 --nproc $NPROC"
if [ "$ARCH" = crossconv ]; then
  # One stage: continue the shipped crossconv model's weights (fresh optimizer and schedule) with
  # GPU-sized batches; the whole budget goes to it.
  # Continue the GPU trajectory (session 12's run), not the shipped mix: training accumulates
  # there, and the shipped model is remade from the result afterwards (`segicl model interpolate
  # models/segicl-crossconv.pt NEW.pt -t 0.5`, measured against the result alone; RESULTS.md).
  INIT=${INIT:-models/segicl-crossconv-gpu.pt}
  init_flag=""
  [ -f "$INIT" ] || [ -f "$INIT.00" ] && init_flag="--init $INIT"
  $bin train --stage 1 --preset "$PRESET" $init_flag $common --out /tmp/probe1 --steps 30 --batch-size "$BATCH1" \
    --max-context 8 > /tmp/probe1.log
  rate=$(rate_of < /tmp/probe1.log)
  # Episodes are augmented on the GPU since session 13 (--sample-on auto); session 12 sampled on
  # the host and trained at 1.6 steps/s. One host probe of the same 30 steps measures what the
  # change buys, and checks it: same seed, same episodes, so the mean losses must agree closely.
  if [ "${COMPARE_SAMPLING:-1}" = 1 ]; then
    $bin train --stage 1 --preset "$PRESET" $init_flag $common --out /tmp/probe-host --steps 30 \
      --batch-size "$BATCH1" --max-context 8 --sample-on host > /tmp/probe-host.log
    echo "sampling on the device: $rate steps/s, loss $(loss_of < /tmp/probe1.log); on the host:" \
      "$(rate_of < /tmp/probe-host.log) steps/s, loss $(loss_of < /tmp/probe-host.log) (30 steps of $BATCH1)" |
      tee "$OUT/sampling.txt"
  fi
  seconds=$(($(left) - 45))
  steps=$(python3 -c "print(max(50, int(${rate:-1} * $seconds * 0.9)))")
  echo "crossconv: ${rate} steps/s -> $steps steps in ~$seconds s"
  $bin train --stage 1 --preset "$PRESET" $init_flag $common --val-pack "$VAL" --out runs/gpu-cc --steps "$steps" \
    --batch-size "$BATCH1" --lr 1e-3 --warmup 200 --min-context 0 --max-context 8 --val-every 500 \
    --val-episodes 64 --checkpoint-every 1000000 --max-seconds "$seconds" $TRAIN_FLAGS
  for name in checkpoint best; do
    if [ -f "runs/gpu-cc/$name.pt" ]; then
      $bin model export "runs/gpu-cc/$name.pt" "/tmp/$name-fp16.pt"
      bash scripts/split-checkpoint.sh "/tmp/$name-fp16.pt" "$OUT/gpu-cc-$name.pt"
    fi
  done
  tar czf "$OUT/logs.tar.gz" runs/gpu-cc/*.csv runs/gpu-cc/*.jsonl runs/gpu-cc/*.json 2> /dev/null
  echo "done at $((SECONDS - t0)) s"
  exit 0
fi
if [ -z "$INIT" ]; then
  # Stage 1: measure the step rate on a short probe, then size the run to its share of the budget
  # so the cosine schedule completes.
  rate=$($bin train --stage 1 --preset "$PRESET" $common --out /tmp/probe1 --steps 30 --batch-size "$BATCH1" | rate_of)
  seconds=$(python3 -c "print(int(($(left) - 60) * $S1_SHARE))")
  steps=$(python3 -c "print(max(50, int(${rate:-1} * $seconds * 0.9)))")
  echo "stage 1: ${rate} steps/s -> $steps steps in ~$seconds s"
  $bin train --stage 1 --preset "$PRESET" $common --out runs/gpu-s1 --steps "$steps" --batch-size "$BATCH1" \
    --lr 1e-3 --warmup 200 --checkpoint-every 1000000 --max-seconds "$seconds" $TRAIN_FLAGS
  INIT=runs/gpu-s1/checkpoint.pt
  keep_stage1="yes"
fi
echo "stage 1 done at $((SECONDS - t0)) s"
rate=$($bin train --stage 2 --init "$INIT" $common --out /tmp/probe2 --steps 20 --batch-size "$BATCH2" | rate_of)
seconds=$(($(left) - 45))
steps=$(python3 -c "print(max(50, int(${rate:-1} * $seconds * 0.85)))")
echo "stage 2: ${rate} steps/s -> $steps steps in ~$seconds s"
$bin train --stage 2 --init "$INIT" $common --val-pack "$VAL" --out runs/gpu-s2 --steps "$steps" \
  --batch-size "$BATCH2" --lr 5e-4 --warmup 200 --val-every 500 --val-episodes 64 \
  --checkpoint-every 1000000 --max-seconds "$seconds" $TRAIN_FLAGS
echo "stage 2 done at $((SECONDS - t0)) s"

# CPU/GPU agreement: validation Dice of the final weights on each device (lr 0: one step that does
# not move them). Differences come from fp32 kernels and the devices' noise generators.
if [ -f runs/gpu-s2/checkpoint.pt ]; then
  for device in cuda cpu; do
    $bin train --stage 2 --init runs/gpu-s2/checkpoint.pt --pack "$PACK" --val-pack "$VAL" --device "$device" \
      --out "/tmp/agree-$device" --steps 1 --lr 0 --val-every 1 --val-episodes 16 --batch-size 1 2>&1 |
      sed -n 's/.*validation Dice \([0-9.]*\).*/\1/p' > "/tmp/agree-$device.txt"
  done
  python3 -c "
a, b = (float(open(f'/tmp/agree-{d}.txt').read() or 'nan') for d in ('cuda', 'cpu'))
print(f'agreement: validation Dice cuda {a:.4f} cpu {b:.4f} |diff| {abs(a - b):.4f}', 'OK' if abs(a - b) <= 0.05 else 'MISMATCH')
" | tee "$OUT/agreement.txt"
fi

for name in checkpoint best; do
  if [ -f "runs/gpu-s2/$name.pt" ]; then
    $bin model export "runs/gpu-s2/$name.pt" "/tmp/$name-fp16.pt"
    bash scripts/split-checkpoint.sh "/tmp/$name-fp16.pt" "$OUT/gpu-s2-$name.pt"
  fi
done
tar czf "$OUT/logs.tar.gz" runs/gpu-s1/*.csv runs/gpu-s1/*.jsonl runs/gpu-s1/*.json runs/gpu-s2/*.csv \
  runs/gpu-s2/*.jsonl runs/gpu-s2/*.json 2> /dev/null
echo "all done at $((SECONDS - t0)) s"
