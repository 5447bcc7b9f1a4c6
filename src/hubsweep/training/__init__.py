"""Stage 4, training: the head (`head`), optimizers and schedules (`optimizers`), the ways
to compute a classifier (`classifier`; a BERT-family pair's in `encoder_path`) and which
applies (`build`), auxiliary scaffold heads (`scaffold`), the training loop (`loop`), the
average of the trained weights that evaluations see (`averaging`), the decision rule fitted
after it (`decision`), population training of K heads at once
(`population`), what the trials of a process share (`trial_cache`), and
`train_and_evaluate` (`run`), which builds a run and drives the loop while the run's
recorder (`recorder`) writes its files and events.

May import: `config`, `data`, `embeddings`, `results`. Knows nothing of Optuna: a study
passes a reporter for intermediate values.
"""
