"""hubsweep: hyperparameter sweeps for pretrained TF-Hub text embeddings.

The package is laid out by the stages a run flows through, each a package that imports only
the ones before it: `config` → `results` (the tree every stage writes or reads) → `data` →
`embeddings` → `training` → `study` → `reports`; `swivel` and `analysis` stand beside them,
`cli` over them all (docs/layout.md).

The public Python API (`api.py`) is imported lazily, so `import hubsweep` costs no
TensorFlow import: `compose`, `run`, `sweep`, `report` and `analyze` do what the CLI does
and return DataFrames, figures and studies; `train_and_evaluate(cfg, reporter=None)` is the
one entry point every run goes through, returning its `RunResult`.
"""

from __future__ import annotations

__version__ = "0.1.0"

_PUBLIC = {
    **{name: "hubsweep.api" for name in ("compose", "run", "sweep", "report", "analyze")},
    "train_and_evaluate": "hubsweep.training.run",
    "RunResult": "hubsweep.training.recorder",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    if name in _PUBLIC:
        from importlib import import_module

        return getattr(import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'hubsweep' has no attribute {name!r}")
