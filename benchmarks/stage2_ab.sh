#!/bin/bash
# A/B of PSIC trainer settings as stage-2 continuations of one q1 weights file, one arm after the other, then the
# rate-distortion + VLP sections of the eval on every arm and the starting weights (its Targets table compares them).
#
#   benchmarks/stage2_ab.sh INIT_WEIGHTS WORK_DIR MINUTES ARM [ARM ...]
#
# ARM is NAME or NAME=SECTION.KEY=VALUE[,SECTION.KEY=VALUE...] (config overrides of that arm only), e.g.
# centred=train.confident=centred. Arm NAME trains weights NAME-q1 into WORK_DIR/NAME.safetensors.
# PSIC_AB_DATA: the data folder (default ../shared/data); PSIC_AB_IMAGES: kodak-like images for PSNR (default all).
# One training at a time with 2 threads (about MINUTES + 1 per arm, plus the eval, on 2 cores).
set -euo pipefail
init=$1 work=$2 minutes=$3
shift 3
data=${PSIC_AB_DATA:-../shared/data}
export OMP_WAIT_POLICY=PASSIVE
mkdir -p "$work"
weights=()
for arm in "$@"; do
  name=${arm%%=*}
  overrides=()
  if [[ $arm == *=* ]]; then
    IFS=, read -ra pairs <<< "${arm#*=}"
    for pair in "${pairs[@]}"; do overrides+=(--set "$pair"); done
  fi
  python -m psic_core.train.privacy --config configs/mshp64-q1.toml \
    --set data.captions="$data/captioned/captions.jsonl" --set data.labels="$data/labelled/labels.csv" \
    --set model.init="$init" --set train.stages=[2] --set "train.minutes=[$minutes]" --set train.beta=[1.0] \
    --set train.lr=[2e-4] --set train.threads=2 "${overrides[@]}" \
    --set output.name="$name-q1" --set output.out="$work/$name.safetensors" \
    --set output.checkpoint="$work/$name.ckpt" --set output.log="$work/$name.csv"
  weights+=("$work/$name.safetensors")
done
images=()
[[ -n ${PSIC_AB_IMAGES:-} ]] && images=(--max-images "$PSIC_AB_IMAGES")
python -m psic_core.eval --data "$data" --weights "${weights[@]}" "$init" --baseline-weights none \
  --sections rd vlp --vlp refclip-s "${images[@]}" --out "$work/results.md"
echo "report: $work/results.md"
