"""Stage 5, Optuna studies over `train_and_evaluate`.

One concern per module, data flowing one way:
`space` (the search space) and `storage` (where a study lives) feed `plan` (everything
that defines a study, parsed once, frozen, handed to every worker); `trial` runs one
trial; `rounds` asks K trials at once and trains them as one population; `liveness`
keeps the count of trials honest when workers die; `warm_start` queues an earlier study's
best configs; `workers` runs trials until the study has its budget (or `flat` says more
trials stopped paying); `finalists` races the top configs on new seeds and names the
winner; `retrain` re-runs the winner with test; `driver` ties them together for
`hubsweep-sweep`.

May import: `config`, `data`, `embeddings`, `results`, `training`. The only stage below
the report that imports Optuna.
"""
