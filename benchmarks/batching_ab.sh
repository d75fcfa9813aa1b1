#!/bin/bash
# A/B of the PSIC trainer's train.batching (mixed vs source) as an 8-minute stage-2 continuation of q1 weights,
# then the rate-distortion + VLP sections of the eval on both arms and the starting weights.
#
#   benchmarks/batching_ab.sh INIT_WEIGHTS WORK_DIR [DATA_DIR]
#
# The numbers in docs/training.md ("Batching by source: tried") came from this with INIT_WEIGHTS = mshp64-q1 as of
# commit e76784d and DATA_DIR = ../shared/data. Runs one training at a time (2 threads); about 20 minutes on 2 cores.
set -euo pipefail
init=$1 work=$2 data=${3:-../shared/data}
export OMP_WAIT_POLICY=PASSIVE
mkdir -p "$work"
for arm in mixed source; do
  python -m psic_core.train.privacy --config configs/mshp64-q1.toml \
    --set data.captions="$data/captioned/captions.jsonl" --set data.labels="$data/labelled/labels.csv" \
    --set model.init="$init" --set train.stages=[2] --set train.minutes=[8.0] --set train.beta=[1.0] \
    --set train.lr=[2e-4] --set train.threads=2 --set train.batching=$arm \
    --set output.name=ab-$arm-q1 --set output.out="$work/ab-$arm.safetensors" \
    --set output.checkpoint="$work/ab-$arm.ckpt" --set output.log="$work/ab-$arm.csv"
done
python -m psic_core.eval --data "$data" --weights "$work/ab-mixed.safetensors" "$work/ab-source.safetensors" "$init" \
  --baseline-weights none --sections rd vlp --vlp refclip-s --max-images 8 --out "$work/results.md"
echo "report: $work/results.md (its Targets section compares the arms)"
