"""Composition, structured-config validation and the CLI's error reporting."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hydra.errors import HydraException

from hubsweep.config.validation import validate
from hubsweep.errors import ConfigError


def test_defaults_compose_to_the_reference_experiment(make_cfg):
    cfg = make_cfg(small=False)
    assert (cfg.trainer.steps, cfg.trainer.batch_size, cfg.trainer.eval_every) == (8000, 10, 200)
    assert cfg.optimizer.learning_rate == 0.01
    assert cfg.dataset.tfds_name == "scicite"
    assert list(cfg.dataset.label_names) == ["method", "background", "result"]
    assert cfg.embedding.trainable is False
    assert cfg.model.name == "linear" and cfg.optimizer.name == "sgd"
    validate(cfg)


def test_tutorial_preset_pins_the_reference_settings(make_cfg):
    cfg = make_cfg("experiment=tutorial", small=False)
    assert cfg.experiment_name == "tutorial"
    assert (cfg.trainer.steps, cfg.trainer.batch_size, cfg.trainer.eval_every) == (8000, 10, 200)
    assert cfg.optimizer.name == "sgd" and cfg.optimizer.learning_rate == 0.01
    assert cfg.trainer.evaluate_test is True and cfg.embedding.trainable is False


@pytest.mark.parametrize(
    ("group", "option", "field"),
    [
        ("optimizer", "momentum", "momentum"),
        ("optimizer", "adam", "beta_2"),
        ("optimizer", "adagrad", "initial_accumulator_value"),
        ("optimizer", "rmsprop", "rho"),
        ("schedule", "exponential", "decay_rate"),
        ("schedule", "cosine", "alpha"),
        ("schedule", "warmup", "warmup_steps"),
        ("model", "mlp", "hidden_sizes"),
    ],
)
def test_every_group_option_composes_with_its_own_fields(make_cfg, group, option, field):
    extra = ["schedule.warmup_steps=10"] if option == "warmup" else []
    cfg = make_cfg(f"{group}={option}", *extra)
    assert cfg[group].name == option and field in cfg[group]
    validate(cfg)


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("trainer.stepz=5", "trainer.stepz"),
        ("trainer.steps=many", "trainer.steps"),
        ("optimizer.beta_1=0.5", "optimizer.beta_1"),  # sgd has no beta_1
        ("embedding.trainable=maybe", "embedding.trainable"),
    ],
)
def test_typos_and_wrong_types_fail_at_composition_naming_the_key(make_cfg, override, named):
    with pytest.raises(HydraException, match=named.replace(".", r"\.")):
        make_cfg(override)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["trainer.steps=0"], "trainer.steps"),
        (["trainer.eval_every=-1"], "trainer.eval_every"),
        (["trainer.selection_metric=auc"], "trainer.selection_metric"),
        (["optimizer.learning_rate=0"], "optimizer.learning_rate"),
        (["schedule=warmup", "schedule.warmup_steps=60"], "schedule.warmup_steps"),
        (["schedule=warmup", "schedule.decay=step"], "schedule.decay"),
        (["model=mlp", "model.dropout=1.5"], "model.dropout"),
        (["dataset.source=parquet"], "dataset.source"),
        (["dataset.source_dir=/no/such/dir"], "dataset.source_dir"),
        (["dataset.prefix_keys=[label]"], "dataset.prefix_keys"),  # the answer in the text
        (["dataset.prefix_keys=[sectionName,sectionName]"], "dataset.prefix_keys"),
        # A frozen embedding learns nothing from a scaffold; the label is not one.
        (["dataset.scaffold_keys=[sectionName]"], "dataset.scaffold_keys"),
        (["embedding.trainable=true", "dataset.scaffold_keys=[label]"], "dataset.scaffold_keys"),
        (
            ["embedding.trainable=true", "dataset.scaffold_keys=[a,a]"],
            "dataset.scaffold_keys",
        ),
        (
            [
                "embedding.trainable=true",
                "dataset.scaffold_keys=[sectionName]",
                "dataset.prefix_keys=[sectionName]",
            ],
            "dataset.scaffold_keys",
        ),
        (
            [
                "embedding.trainable=true",
                "dataset.scaffold_keys=[sectionName]",
                "trainer.scaffold_weight=0",
            ],
            "trainer.scaffold_weight",
        ),
        (
            [
                "embedding.trainable=true",
                "dataset.scaffold_keys=[sectionName]",
                "dataset.scaffold_min_count=0",
            ],
            "dataset.scaffold_min_count",
        ),
        (
            ["embedding.signature=serving_default", "embedding.trainable=true"],
            "embedding.trainable",
        ),
    ],
)
def test_semantic_validation_names_the_key(make_cfg, overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(make_cfg(*overrides))


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from hubsweep.cli import train; train()", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["trainer.stepz=5"], "stepz"),
        (["optimizer=nadam"], "Available options in 'optimizer'"),
        (["trainer.steps=0"], "trainer.steps: must be a positive integer"),
        (["trainer.eval_batch_tokens=0"], "trainer.eval_batch_tokens: must be a positive integer"),
        # Hydra's own message names neither the override nor the fix
        (["dataset.prefix_keys=[sectionName"], "override 'dataset.prefix_keys=[sectionName'"),
        (["+arms.adam=[optimizer=adam]"], "quote each list item that holds '='"),
    ],
)
def test_cli_reports_bad_input_in_one_message_and_exits_non_zero(args, expected, tmp_path):
    proc = _cli(*args, f"hydra.run.dir={tmp_path}")
    assert proc.returncode != 0
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_trial_composed_on_the_base_equals_hydras_composition():
    from omegaconf import OmegaConf

    from hubsweep.study.compose import ComposeSpec, TrialComposer, compose_config

    from .conftest import REPO

    spec = ComposeSpec(str(REPO / "conf"), (), ("experiment=tutorial", "schedule=cosine"))
    extra = ["trainer.evaluate_test=false", "output_dir=/tmp/run"]
    composer = TrialComposer(spec, extra)
    for values in (
        {"optimizer.learning_rate": 0.25, "trainer.batch_size": 32, "trainer.steps": 3000},
        {"optimizer": "adam", "optimizer.learning_rate": 0.002},  # a group: through Hydra
    ):
        hydra = compose_config(spec, [*extra, *(f"{k}={v}" for k, v in values.items())])
        assert OmegaConf.to_yaml(composer(values), resolve=True) == OmegaConf.to_yaml(
            hydra, resolve=True
        )
    with pytest.raises(HydraException, match="trainer.batch_size"):
        composer({"trainer.batch_size": "lots"})  # refused as Hydra refuses it
