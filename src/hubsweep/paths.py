"""Where the project's config tree lives, from a checkout or an editable install."""

from __future__ import annotations

import os
from pathlib import Path

from hubsweep.errors import ConfigError

CONFIG_DIR_ENV = "HUBSWEEP_CONFIG_DIR"


def config_dir() -> Path:
    """The Hydra config root: $HUBSWEEP_CONFIG_DIR, else conf/ of the checkout holding us."""
    if env := os.environ.get(CONFIG_DIR_ENV):
        candidates = [Path(env)]
    else:
        candidates = [p / "conf" for p in Path(__file__).resolve().parents]
    for candidate in candidates:
        if (candidate / "config.yaml").is_file():
            return candidate
    raise ConfigError(
        f"hubsweep's config tree (conf/config.yaml) was not found in {candidates[0]} or above; "
        f"install from a checkout with `pip install -e .` or set {CONFIG_DIR_ENV}"
    )
