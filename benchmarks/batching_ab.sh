#!/bin/bash
# A/B of the PSIC trainer's train.batching (mixed vs source) as an 8-minute stage-2 continuation of q1 weights.
#
#   benchmarks/batching_ab.sh INIT_WEIGHTS WORK_DIR [DATA_DIR]
#
# The numbers in docs/training.md ("Tried: batches from one source") came from this with INIT_WEIGHTS = mshp64-q1 as
# of commit e76784d and DATA_DIR = ../shared/data. About 20 minutes on 2 cores.
set -euo pipefail
PSIC_AB_DATA=${3:-../shared/data} PSIC_AB_IMAGES=8 exec "$(dirname "$0")/stage2_ab.sh" "$1" "$2" 8.0 \
  ab-mixed=train.batching=mixed ab-source=train.batching=source
