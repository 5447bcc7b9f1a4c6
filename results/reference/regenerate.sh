#!/usr/bin/env bash
# Rebuild every reference report from nothing: the CORD-19 Swivel and Word2Vec modules, the
# four experiments on the SciCite release files, then their reports into results/reference/.
# About 40 minutes on 2 cores. Usage: bash results/reference/regenerate.sh [OUTPUT_ROOT]
# (OUTPUT_ROOT defaults to results/reference; give another to compare with the committed ones).
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-results/reference}
data=../shared/data
module=modules/cord19-swivel-128d
offline=(dataset.source_dir="$data/scicite" embedding.handle="$module" trainer.progress=false)

[ -f "$module/saved_model.pb" ] || hubsweep-swivel corpus="$data/cord19" output="$module"
w2v=modules/w2v-cord19-128d
[ -f "$w2v/saved_model.pb" ] || python benchmarks/word2vec_baseline.py --corpus "$data/cord19" \
  --output "$w2v"

hubsweep-train -m experiment=tutorial trainer.seed=0,1,2,3,4 "${offline[@]}"
hubsweep-sweep experiment=frozen_vs_finetuned "${offline[@]}"
hubsweep-sweep experiment=heads "${offline[@]}"
# Its factor levels name the modules' directories (the two built above).
hubsweep-sweep experiment=embedding_x_trainable dataset.source_dir="$data/scicite" \
  trainer.progress=false

for experiment in tutorial frozen_vs_finetuned heads embedding_x_trainable; do
  hubsweep-report "results/$experiment" --output "$out/$experiment"
done
