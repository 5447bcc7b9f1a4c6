"""A finished study's best trial: a ready-to-run preset, and re-runs over seeds with test."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import optuna
from omegaconf import DictConfig, OmegaConf

from hubsweep.sweep import WorkerSpec, compose_run, param_overrides, seeded_run

log = logging.getLogger(__name__)

PRESET_GROUPS = ("dataset", "embedding", "model", "optimizer", "schedule")
RETRAIN_FILE = "retrain.json"
RETRAIN_DIR = "retrain"
# retrain/<name>: `seed` is the seed's index (trainer.seed + index); "*" globs them all.
RETRAIN_RUN = "trial{trial:04d}-seed{seed}"
REPORTED = ("accuracy", "macro_f1", "macro_precision", "macro_recall", "loss")


def best_preset_path(study_dir: str | Path) -> Path:
    return Path(study_dir) / "experiment" / "best.yaml"


def write_best_preset(cfg: DictConfig, spec: WorkerSpec, best: optuna.trial.FrozenTrial) -> Path:
    """<study>/experiment/best.yaml: `hubsweep-train --config-dir <study> experiment=best`."""
    composed = compose_run(spec, param_overrides(best.params), with_hydra=True)
    choices = composed.hydra.runtime.choices
    values = OmegaConf.to_container(composed, resolve=False)
    # One run's config: no study settings, and no arms (hubsweep-sweep would run them).
    for key in ("hydra", "sweep", "arms", "output_dir"):
        values.pop(key, None)
    study = Path(spec.study_dir)
    header = [
        "# @package _global_",
        f"# Best trial {best.number} of study {spec.study_name}: "
        f"validation {cfg.sweep.metric} {best.value:.4f}.",
        f"# Run it: hubsweep-train --config-dir {study} experiment=best",
    ]
    defaults = {"defaults": [{f"override /{g}": choices[g]} for g in PRESET_GROUPS]}
    text = "\n".join(header) + "\n" + OmegaConf.to_yaml(OmegaConf.create(defaults))
    text += OmegaConf.to_yaml(OmegaConf.create(values))
    path = best_preset_path(study)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _spread(values: list[float]) -> dict:
    arr = np.array(values, dtype=float)
    std = float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
    return {"mean": float(arr.mean()), "std": std, "values": [float(v) for v in arr]}


def retrain_best(
    cfg: DictConfig, spec: WorkerSpec, best: optuna.trial.FrozenTrial, study: optuna.Study
) -> dict:
    """Re-run the best config with sweep.retrain_best_seeds seeds, test evaluated once each.

    Seeds already done for the same best trial (an interrupted sweep) are not re-run.
    """
    from hubsweep.artifacts import read_final
    from hubsweep.train import train_and_evaluate

    directory = Path(spec.study_dir) / RETRAIN_DIR
    extra = [*param_overrides(best.params), "trainer.evaluate_test=true"]
    finals = []
    for k in range(cfg.sweep.retrain_best_seeds):
        run_dir = directory / RETRAIN_RUN.format(trial=best.number, seed=k)
        done = (run_dir / "final.json").is_file() and read_final(run_dir)["status"] == "completed"
        if not done:
            log.info("retraining best trial %d, seed %d, with test", best.number, k)
            train_and_evaluate(seeded_run(spec, extra, k, run_dir))
        finals.append(read_final(run_dir))
    summary = {
        "best_trial": best.number,
        "params": best.params,
        "seeds": len(finals),
        "run_dirs": [f["run_dir"] for f in finals],
        "statuses": [f["status"] for f in finals],
    }
    for split, key in (("test", "test"), ("validation", "final")):
        ok = [f[key] for f in finals if f.get(key)]
        if ok:
            summary[split] = {m: _spread([f[m] for f in ok]) for m in REPORTED}
    (Path(spec.study_dir) / RETRAIN_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    study.set_user_attr("retrain", summary)
    if "test" in summary:
        t = summary["test"]
        log.info(
            "best config over %d seeds: test accuracy %.4f ± %.4f, macro-F1 %.4f ± %.4f",
            len(finals),
            t["accuracy"]["mean"],
            t["accuracy"]["std"],
            t["macro_f1"]["mean"],
            t["macro_f1"]["std"],
        )
    return summary
