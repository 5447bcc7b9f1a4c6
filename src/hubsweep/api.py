"""The Python API: what the CLI does, as calls that return DataFrames, figures and studies,
for a notebook or a script. Each can be called any number of times in one process.

- `compose(*overrides, config_dir=None)`: the config `hubsweep-train` composes (the same
  tree, schemas and validation; a bad key or value is the same one-line `ConfigError`).
- `run(cfg_or_overrides)`: one run, as `hubsweep-train`; a `Run` with its curves as
  DataFrames and the trained Keras model. Runs in one process share loaded datasets,
  frozen modules and their embedded splits, so a second run costs what a warm trial costs.
- `sweep(*overrides)`: the study of `hubsweep-sweep` (resumable: the same call again
  finishes it); a `Sweep` with its summary and Optuna study.
- `report(path)`: `hubsweep-report`'s report.md, tables and plots; a `Report` with the
  tables as DataFrames and the plots as paths.
- `analyze(*overrides)`: `hubsweep-analyze`'s heatmap (a figure) and neighbours.

Hydra's global state is set up and cleared inside each call, so they mix freely with a
notebook's own use of Hydra.
"""

from __future__ import annotations

import base64
import html
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig, open_dict

from hubsweep.config.paths import MAIN_CONFIG
from hubsweep.errors import ConfigError

_CACHES: dict[str, Any] = {}  # cache_dir -> TrialCache: what the runs of this process share
# TensorFlow's C++ start-up notices (CUDA probing, oneDNN, XLA) would bury a notebook's
# outputs, as the CLI keeps them out of its log; set before TensorFlow is first imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _composed(
    overrides: Sequence[str], config_dir: str | Path | None, config_name: str
) -> tuple[DictConfig, dict[str, str | None], tuple[str, ...]]:
    """(the config without its hydra node, the config-group choices, the added config dirs)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from hubsweep.config.paths import check_yaml_syntax
    from hubsweep.config.paths import config_dir as project_config_dir
    from hubsweep.config.schema import register_configs

    root = project_config_dir()
    added = [Path(config_dir).resolve()] if config_dir else []
    check_yaml_syntax([root, *added])
    register_configs()
    search = tuple(f"file://{d}" for d in added)
    extra = [f"hydra.searchpath=[{','.join(search)}]"] if search else []
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(root), version_base="1.3"):
            cfg = hydra_compose(
                config_name, overrides=[*extra, *overrides], return_hydra_config=True
            )
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(str(e).strip().splitlines()[0]) from None
    finally:
        GlobalHydra.instance().clear()
    choices = dict(cfg.hydra.runtime.choices)
    run_dir = cfg.hydra.run.dir  # ${now:...} resolves here, as for the CLI
    given = any(o.split("=", 1)[0].lstrip("+~") == "output_dir" for o in overrides)
    with open_dict(cfg):
        if not given and "output_dir" in cfg:
            cfg.output_dir = str(run_dir)
        del cfg["hydra"]
    return cfg, choices, search


def compose(*overrides: str, config_dir: str | Path | None = None) -> DictConfig:
    """The config `hubsweep-train overrides...` runs (`config_dir`: Hydra's -cd)."""
    from hubsweep.config.validation import validate

    cfg, _, _ = _composed(overrides, config_dir, MAIN_CONFIG)
    validate(cfg)
    return cfg


def _config(cfg_or_overrides: DictConfig | str | Sequence[str] | None, overrides, config_dir):
    if isinstance(cfg_or_overrides, DictConfig):
        if overrides:
            raise ConfigError("run: give a composed config or overrides, not both")
        return cfg_or_overrides
    first = [cfg_or_overrides] if isinstance(cfg_or_overrides, str) else [*(cfg_or_overrides or [])]
    return compose(*first, *overrides, config_dir=config_dir)


def _cache(cfg: DictConfig):
    from hubsweep.training.trial_cache import TrialCache

    key = str(cfg.cache_dir)
    if key not in _CACHES:
        _CACHES[key] = TrialCache.for_config(cfg)
    return _CACHES[key]


@dataclass
class Run:
    """One run's outcome: the `RunResult` (`result`), its curves and predictions as
    DataFrames, and the trained Keras model (embedding layer first)."""

    result: Any
    cfg: DictConfig = field(repr=False)

    # The result's own fields, at hand: status, best/final/test scores, the model, the dir.
    status = property(lambda self: self.result.status)
    best = property(lambda self: self.result.best)
    final = property(lambda self: self.result.final)
    test = property(lambda self: self.result.test)
    model = property(lambda self: self.result.model)
    run_dir = property(lambda self: self.result.run_dir)

    @staticmethod
    def _flat(records: Sequence[dict]) -> pd.DataFrame:
        """Scalars only: per-class scores and confusion matrices stay in metrics.jsonl."""
        return pd.DataFrame(
            [{k: v for k, v in r.items() if not isinstance(v, dict | list)} for r in records]
        )

    @property
    def history(self) -> pd.DataFrame:
        """Validation scores at each evaluation: step, loss, accuracy, macro P/R/F1, train loss."""
        return self._flat(self.result.history)

    @property
    def metrics(self) -> pd.DataFrame:
        """Every line of metrics.jsonl (validation evaluations and the test evaluation)."""
        from hubsweep.results.artifacts import read_metrics

        return self._flat(read_metrics(Path(self.result.run_dir)))

    @property
    def predictions(self) -> pd.DataFrame:
        from hubsweep.results.layout import PREDICTIONS_FILE

        path = Path(self.result.run_dir) / PREDICTIONS_FILE
        return pd.read_csv(path) if path.is_file() else pd.DataFrame()

    def _repr_html_(self) -> str:
        r = self.result
        scores = {"validation": r.final or {}, "test": r.test or {}}
        rows = "".join(
            f"<tr><td>{role}</td><td>{s.get('accuracy', float('nan')):.4f}</td>"
            f"<td>{s.get('macro_f1', float('nan')):.4f}</td></tr>"
            for role, s in scores.items()
            if s
        )
        return (
            f"<p><b>run {html.escape(r.status)}</b>: {r.steps_done} of {r.steps_planned} steps "
            f"in {r.wall_time_s:.1f} s ({html.escape(str(r.training_path))} path), "
            f"<code>{html.escape(r.run_dir)}</code></p>"
            f"<table><tr><th>split</th><th>accuracy</th><th>macro-F1</th></tr>{rows}</table>"
        )


def run(
    cfg_or_overrides: DictConfig | str | Sequence[str] | None = None,
    *overrides: str,
    config_dir: str | Path | None = None,
    reporter=None,
) -> Run:
    """One run, as `hubsweep-train`: `run("experiment=tutorial", "trainer.steps=400")`, or
    `run(compose(...))`. Writes the run directory as the CLI does."""
    from hubsweep.training.run import train_and_evaluate

    cfg = _config(cfg_or_overrides, overrides, config_dir)
    return Run(train_and_evaluate(cfg, reporter, cache=_cache(cfg)), cfg)


@dataclass
class Sweep:
    """A study's outcome: `summary` (what `hubsweep-sweep` logs and writes to summary.json),
    `studies` (arm, or None → optuna.Study) and `directory` (the study's, or the
    experiment's with arms)."""

    summary: dict
    studies: dict[str | None, Any]
    directory: Path

    @property
    def study(self):
        """The Optuna study (the only one, or the first arm's)."""
        return next(iter(self.studies.values()))

    @property
    def trials(self) -> pd.DataFrame:
        """Every trial of every arm (Optuna's trials_dataframe, with an `arm` column)."""
        frames = [s.trials_dataframe().assign(arm=arm) for arm, s in self.studies.items()]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def _repr_html_(self) -> str:
        arms = self.summary.get("arms", {None: self.summary})
        rows = "".join(
            f"<tr><td>{html.escape(str(arm or s.get('study')))}</td>"
            f"<td>{html.escape(json.dumps(s.get('trials', {})))}</td>"
            f"<td>{s.get('best', {}).get('value', float('nan')):.4f}</td></tr>"
            for arm, s in arms.items()
        )
        return (
            f"<p><b>sweep</b> in <code>{html.escape(str(self.directory))}</code></p><table>"
            f"<tr><th>study</th><th>trials</th><th>best value</th></tr>{rows}</table>"
        )


def sweep(*overrides: str, config_dir: str | Path | None = None) -> Sweep:
    """The study of `hubsweep-sweep overrides...` (one per arm); calling it again with the
    same overrides resumes it, as the CLI does."""
    import optuna

    from hubsweep.config.paths import config_dir as project_config_dir
    from hubsweep.study.compose import ComposeSpec
    from hubsweep.study.driver import run_plans
    from hubsweep.study.plan import build_plans
    from hubsweep.study.workers import open_study_storage

    # As hubsweep-sweep: each arm's config is validated by build_plans; the base alone is
    # no trial's config.
    cfg, choices, search = _composed(overrides, config_dir, MAIN_CONFIG)
    spec = ComposeSpec(str(project_config_dir()), search, ())
    plans = build_plans(cfg, list(overrides), spec, choices.get("sweep"))
    summary = run_plans(plans)
    studies = {
        p.arm: optuna.load_study(study_name=p.name, storage=open_study_storage(p)) for p in plans
    }
    directory = Path(plans[0].directory)
    return Sweep(summary, studies, directory.parent if plans[0].arm else directory)


@dataclass
class Report:
    """What `hubsweep-report` wrote: report.md (`path`, `markdown`), its tables (CSV, read
    as DataFrames) and its plots (PNG paths)."""

    path: Path

    @property
    def markdown(self) -> str:
        return self.path.read_text()

    @property
    def tables(self) -> dict[str, pd.DataFrame]:
        return {p.stem: pd.read_csv(p) for p in sorted((self.path.parent / "tables").glob("*.csv"))}

    @property
    def plots(self) -> dict[str, Path]:
        return {p.stem: p for p in sorted((self.path.parent / "plots").glob("*.png"))}

    def _repr_html_(self) -> str:
        parts = [f"<p><b>report</b> <code>{html.escape(str(self.path))}</code></p>"]
        for name, frame in self.tables.items():
            if name != "trials":
                parts += [f"<h4>{html.escape(name)}</h4>", frame.to_html(index=False)]
        for name, png in self.plots.items():
            data = base64.b64encode(png.read_bytes()).decode()
            parts += [f"<h4>{html.escape(name)}</h4>", f'<img src="data:image/png;base64,{data}">']
        return "\n".join(parts)


def report(
    path: str | Path, output: str | Path | None = None, top_k: int = 10, storages=()
) -> Report:
    """`hubsweep-report path`: writes <path>/report/ (or `output`)."""
    from hubsweep.reports.document import build_report

    return Report(build_report(Path(path), Path(output) if output else None, top_k, storages))


@dataclass
class TermAnalysis:
    """`hubsweep-analyze`'s outcome: the similarity heatmap (`figure`), nearest neighbours,
    the cluster score, and the directory its files were written to."""

    figure: Any
    similarity: pd.DataFrame
    neighbours: pd.DataFrame
    cluster_score: float | None
    directory: Path

    def _repr_png_(self) -> bytes:
        import io

        png = io.BytesIO()
        self.figure.savefig(png, format="png", dpi=100)
        return png.getvalue()

    def _repr_html_(self) -> str:
        data = base64.b64encode(self._repr_png_()).decode()
        score = "–" if self.cluster_score is None else f"{self.cluster_score:.3f}"
        return (
            f'<img src="data:image/png;base64,{data}"><p>cluster score (mean within-group '
            f"minus between-group cosine): {score}</p>"
        )


def analyze(*overrides: str, config_dir: str | Path | None = None) -> TermAnalysis:
    """`hubsweep-analyze overrides...`: the term-group heatmap and neighbours of a module."""
    from hubsweep.analysis import heatmap_figure, run_analysis
    from hubsweep.config.tools import validate_analyze

    cfg, _, _ = _composed(overrides, config_dir, "analyze")
    validate_analyze(cfg)
    analysis = run_analysis(cfg)
    title = f"normalised inner product: {Path(cfg.embedding.handle).name}"
    return TermAnalysis(
        figure=heatmap_figure(analysis, title),
        similarity=pd.DataFrame(analysis.similarity, index=analysis.terms, columns=analysis.terms),
        neighbours=analysis.neighbours,
        cluster_score=analysis.cluster_score,
        directory=Path(cfg.output_dir),
    )


__all__ = ["Report", "Run", "Sweep", "TermAnalysis", "analyze", "compose", "report", "run", "sweep"]
