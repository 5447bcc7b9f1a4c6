#!/usr/bin/env bash
# Rebuild every reference report from nothing: the CORD-19 Swivel module, the three
# experiments on the SciCite release files, then their reports into results/reference/.
# About an hour on 2 cores. Usage: bash results/reference/regenerate.sh [OUTPUT_ROOT]
# (OUTPUT_ROOT defaults to results/reference; give another to compare with the committed ones).
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-results/reference}
data=../shared/data
module=modules/cord19-swivel-128d
offline=(dataset.source_dir="$data/scicite" embedding.handle="$module" trainer.progress=false)

[ -f "$module/saved_model.pb" ] || hubsweep-swivel corpus="$data/cord19" output="$module"

hubsweep-train -m experiment=tutorial trainer.seed=0,1,2,3,4 "${offline[@]}"
hubsweep-sweep experiment=frozen_vs_finetuned "${offline[@]}"
hubsweep-sweep experiment=heads "${offline[@]}"

for experiment in tutorial frozen_vs_finetuned heads; do
  hubsweep-report "results/$experiment" --output "$out/$experiment"
done
