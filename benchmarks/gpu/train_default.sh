#!/usr/bin/env bash
# One-run GPU recipe: continue the default model family (mshp64, quality levels 1-4) end to end on one GPU --
# rate-distortion (psic_core.train.rd --init mshp64-rd-qN), then PSIC stages 1 and 2 (psic train with
# configs/mshp64-qN.toml, model.init = the new rate-distortion weights) -- the four levels side by side, inside a
# 10-minute device call. docs/training.md ("GPU recipe") says how its weights are evaluated and adopted.
#
#   benchmarks/gpu/train_default.sh            # on the GPU machine (device tool), from the repository root
#   benchmarks/gpu/train_default.sh --smoke    # the same script on the CPU with 2-step budgets (CI runs it)
#
# Inputs (must fit in 64 MiB together with the repository): PSIC_PACK (default .device-pack, an ignored copy of
# ../shared/device-pack): data/train/ photos, data/captioned/captions.jsonl, data/labelled/labels.csv, and
# wheels/ for what a bare PyTorch machine lacks (installed only when compressai does not import).
# Outputs: OUT (default $OUT, else gpu-out/): 8 weights files (mshp64-rd-qN and mshp64-qN, float16 outside the
# entropy path, about 6 MB each), nothing else -- the device tool returns at most 8 files, 64 MiB in all. Logs
# and checkpoints go to WORK (default a temporary folder). Prints a summary; exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/../.."

smoke=0
case "${1:-}" in
  --smoke) smoke=1 ;;
  "") ;;
  *) echo "usage: $0 [--smoke]" >&2; exit 2 ;;
esac

PACK=${PSIC_PACK:-.device-pack}
OUT=${OUT:-gpu-out}
WORK=${WORK:-$(mktemp -d)}
LEVELS=${LEVELS:-"1 2 3 4"}
for need in data/train data/captioned/captions.jsonl data/labelled/labels.csv; do
  [[ -e "$PACK/$need" ]] || { echo "error: $PACK/$need missing (copy ../shared/device-pack to $PACK)" >&2; exit 1; }
done
mkdir -p "$OUT" "$WORK"

PY=${PYTHON:-python3}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export OMP_WAIT_POLICY=PASSIVE
if ! "$PY" -c "import compressai, open_clip" 2>/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --target "$WORK/site" "$PACK"/wheels/*.whl
  export PYTHONPATH="$PYTHONPATH:$WORK/site"
fi

if (( smoke )); then
  # CPU, tiny budgets: the same commands end to end in about a minute
  DEVICE=cpu PRECISION=fp32 THREADS=1 PARALLEL=0
  RD=(--minutes 10 --max-steps 2 --batch 2 --crop 64)
  PSIC=(--set "train.minutes=[10.0, 10.0]" --set "train.max_steps=[2, 2]" --set train.batch=2 --set train.crop=64)
else
  # one H200: the four levels as four processes; minutes per level: 4.25 rate-distortion + 0.75 + 2.5 PSIC
  DEVICE=cuda PRECISION=bf16 THREADS=2 PARALLEL=1
  RD=(--minutes 4.25 --batch 16 --crop 256)
  PSIC=(--set "train.minutes=[0.75, 2.5]" --set train.batch=32)
fi

lmbda_of() {  # the level's lambda, from its committed config (one source of truth)
  "$PY" -c "import sys, tomllib; print(tomllib.load(open(sys.argv[1], 'rb'))['train']['lmbda'])" "$1"
}

train_level() {
  local q=$1 config="configs/mshp64-q$1.toml"
  "$PY" -m psic_core.train.rd --data "$PACK/data/train" --init "mshp64-rd-q$q" --lmbda "$(lmbda_of "$config")" \
    --name "mshp64-rd-q$q" --quality "$q" --device "$DEVICE" --precision "$PRECISION" --threads "$THREADS" \
    --half "${RD[@]}" --out "$OUT/mshp64-rd-q$q.safetensors" --log "$WORK/rd-q$q.csv" \
    --checkpoint "$WORK/rd-q$q.ckpt"
  "$PY" -m psic_core.train.privacy --config "$config" \
    --set "model.init=$OUT/mshp64-rd-q$q.safetensors" \
    --set "data.captions=$PACK/data/captioned/captions.jsonl" --set "data.labels=$PACK/data/labelled/labels.csv" \
    --set "train.device=$DEVICE" --set "train.precision=$PRECISION" --set "train.threads=$THREADS" "${PSIC[@]}" \
    --set "output.out=$OUT/mshp64-q$q.safetensors" --set output.half=True \
    --set "output.log=$WORK/psic-q$q.csv" --set "output.checkpoint=$WORK/psic-q$q.ckpt"
}

failed=0
pids=()
for q in $LEVELS; do
  if (( PARALLEL )); then
    train_level "$q" > "$WORK/level-q$q.log" 2>&1 &
    pids+=("$!:$q")
  elif ! train_level "$q" > "$WORK/level-q$q.log" 2>&1; then
    echo "level $q failed:" >&2; tail -5 "$WORK/level-q$q.log" >&2; failed=1
  fi
done
for entry in "${pids[@]}"; do
  if ! wait "${entry%%:*}"; then
    echo "level ${entry##*:} failed:" >&2; tail -5 "$WORK/level-q${entry##*:}.log" >&2; failed=1
  fi
done
(( failed == 0 )) || exit 1

"$PY" - "$OUT" "$WORK" $LEVELS <<'EOF'
import csv, json, sys
from pathlib import Path
from psic_core.weights import describe, training_record

out, work, levels = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
files = sorted(out.glob("*.safetensors"))
total = sum(f.stat().st_size for f in files)
def last_row(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return rows[-1] if rows else {}
for q in levels:
    for name, log in ((f"mshp64-rd-q{q}", f"rd-q{q}.csv"), (f"mshp64-q{q}", f"psic-q{q}.csv")):
        record = training_record(describe(out / f"{name}.safetensors"))
        row = last_row(work / log)
        losses = {k: round(float(row[k]), 4) for k in ("loss", "bpp", "mse_full", "fooled") if k in row}
        print(f"{name:<14} steps {json.dumps(record['steps'])} ({record['compute']['precision']} on "
              f"{record['compute']['device_name']}); final {losses}; cumulative {json.dumps(record['cumulative'])}")
print(f"{len(files)} files, {total / 2**20:.1f} MiB in {out}")
if len(files) > 8 or total > 64 * 2**20:
    sys.exit("error: more than the device tool returns (8 files, 64 MiB)")
EOF
