"""Optuna's own tracking integrations by name: `sweep.callbacks=[mlflow]` attaches
`optuna_integration.MLflowCallback` to every worker's study (one MLflow run per trial:
its parameters, objective and user attributes). Each is imported only when named, so a
study that names none pays nothing.

optuna-integration 4.9 deprecated its callbacks (removal planned for 6.0) because they are
moving to OptunaHub's callbacks category; MLflow's is not there yet. The deprecation
warning is silenced for the one we build (it is about the import path, not the behaviour);
the registry is where the new home will be plugged in. Its TensorBoardCallback is not
offered: each run's own TensorBoard event file already carries its hyperparameters (see
results/events.py).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hubsweep.errors import SetupError
from hubsweep.results.layout import MLFLOW_DB

Callback = Callable[[Any, Any], None]  # (study, frozen trial), as Optuna calls it


def _integration(name: str, needs: str):
    try:
        import optuna_integration

        return optuna_integration
    except ImportError:
        raise SetupError(
            f"sweep.callbacks: {name} needs `pip install {needs}` (or hubsweep[tracking])"
        ) from None


def _mlflow(directory: Path, metric: str) -> Callback:
    integration = _integration("mlflow", "optuna-integration mlflow")
    try:
        import mlflow  # noqa: F401  (the callback imports it late; fail here, clearly)
    except ImportError:
        raise SetupError("sweep.callbacks: mlflow needs `pip install mlflow`") from None
    # MLflow's own variable wins (a tracking server, for workers on several machines);
    # otherwise an SQLite store beside the study (MLflow 3 refuses its old file store).
    uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(directory / MLFLOW_DB).resolve()}"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "MLflowCallback has been deprecated", FutureWarning)
        return integration.MLflowCallback(tracking_uri=uri, metric_name=metric)


CALLBACKS: dict[str, Callable[[Path, str], Callback]] = {
    "mlflow": _mlflow,
}


def make_callbacks(names: tuple[str, ...], directory: str, metric: str) -> list[Callback]:
    return [CALLBACKS[name](Path(directory), metric) for name in names]
