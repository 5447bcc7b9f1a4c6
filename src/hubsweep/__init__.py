"""hubsweep: hyperparameter sweeps for pretrained TF-Hub text embeddings.

The package is laid out by the stages a run flows through, each a package that imports only
the ones before it: `config` → `results` (the tree every stage writes or reads) → `data` →
`embeddings` → `training` → `study` → `report`; `swivel` and `analyze` stand beside them,
`cli` over them all (docs/layout.md).

The public Python API is imported lazily, so `import hubsweep` costs no TensorFlow import:
`train_and_evaluate(cfg, reporter=None)` runs one config as `hubsweep-train` does and
returns its `RunResult`.
"""

from __future__ import annotations

__version__ = "0.1.0"

_PUBLIC = {
    "train_and_evaluate": "hubsweep.training.run",
    "RunResult": "hubsweep.training.recorder",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    if name in _PUBLIC:
        from importlib import import_module

        return getattr(import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'hubsweep' has no attribute {name!r}")
