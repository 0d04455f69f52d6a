#!/usr/bin/env bash
# Data-parallel scaling on this host: training samples/s with 1 process vs N processes (1 intra-op
# thread each, Gloo over loopback; both episode shardings), plus 1 process with N threads and the
# same global batch for reference. Writes reports/bench/ddp_scaling.json. Not a correctness test (tests/train does that).
# Usage: bench/ddp_scaling.sh [BUILD_DIR=build]
# Env: PRESET (crossconv-tiny), BATCH per process (4), STEPS (40; the rate is taken over the second
#      half, after warm-up), NPROC (2), PACK (default: the trainer tests' toy pack, written here),
#      OUT (reports/bench/ddp_scaling.json), NOTE (a remark stored in the report, e.g. the load).
set -euo pipefail
build=${1:-build}
bin="$build/bin/segicl"
PRESET=${PRESET:-crossconv-tiny}
BATCH=${BATCH:-4}
STEPS=${STEPS:-40}
NPROC=${NPROC:-2}
OUT=${OUT:-reports/bench/ddp_scaling.json}
NOTE=${NOTE:-}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
PACK=${PACK:-}
pack_name=$PACK
if [ -z "$PACK" ]; then
  PACK="$work/toy.pack"
  pack_name="toy pack of tests/train/toy_pack.h (16 slices of 32x32)"
  "$build/tests/train/segicl_toy_pack" "$PACK"
fi

# One run; prints the training rate in samples/s over the second half of the steps.
rate() {  # name threads nproc batch [sharding]
  local name=$1 threads=$2 nproc=$3 batch=$4 sharding=${5:-global} line steps_per_second
  line=$("$bin" --threads "$threads" --quiet train --preset "$PRESET" --pack "$PACK" --out "$work/$name" \
    --device cpu --steps "$STEPS" --log-every $((STEPS / 2)) --checkpoint-every 1000000 --warmup 1 \
    --batch-size "$batch" --nproc "$nproc" --episode-sharding "$sharding")
  steps_per_second=$(sed -n 's/.*, \([0-9.]*\) steps\/s.*/\1/p' <<< "$line")
  python3 -c "print(round($steps_per_second * $batch * $nproc, 3))"
}

load_before=$(cut -d ' ' -f 1-3 /proc/loadavg)
one=$(rate one 1 1 "$BATCH")
many=$(rate many 1 "$NPROC" "$BATCH")
many_rank=$(rate many_rank 1 "$NPROC" "$BATCH" rank)
threads=$(rate threads "$NPROC" 1 $((BATCH * NPROC)))
load_after=$(cut -d ' ' -f 1-3 /proc/loadavg)

mkdir -p "$(dirname "$OUT")"
python3 - "$OUT" <<PY
import json, subprocess, sys, datetime, platform
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "")
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
one, many, many_rank, threads = $one, $many, $many_rank, $threads
report = {
  "benchmark": "ddp_scaling", "date": datetime.datetime.now().isoformat(timespec="seconds"),
  "commit": commit, "build": "$build", "device": "cpu", "cpu": cpu, "cores": $(nproc),
  "preset": "$PRESET", "pack": "$pack_name", "batch_per_process": $BATCH, "steps": $STEPS,
  "samples_per_second": {
    "1_process_1_thread": one,
    "${NPROC}_processes_1_thread_each": many,
    "${NPROC}_processes_1_thread_each_rank_sharding": many_rank,
    "1_process_${NPROC}_threads_batch_x${NPROC}": threads,
  },
  "ratio_${NPROC}_processes_vs_1": round(many / one, 3),
  "ratio_${NPROC}_processes_rank_sharding_vs_1": round(many_rank / one, 3),
  "ratio_${NPROC}_processes_vs_${NPROC}_threads": round(many / threads, 3),
  "load_average_before": "$load_before", "load_average_after": "$load_after",
  "note": "$NOTE",
}
json.dump(report, open(sys.argv[1], "w"), indent=2)
print(json.dumps(report, indent=2))
PY
