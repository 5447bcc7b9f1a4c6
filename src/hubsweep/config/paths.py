"""Where the project's config tree lives, from a checkout or an editable install; that the
directories a run writes can be written; and that a name given for one is a name, not a path."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from hubsweep.errors import ConfigError, SetupError, require

CONFIG_DIR_ENV = "HUBSWEEP_CONFIG_DIR"
# The primary config of hubsweep-train and hubsweep-sweep, in the config root.
MAIN_CONFIG = "config"


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


def ensure_writable(directory: str | Path, key: str) -> Path:
    """Create `directory` and prove a file can be written there, or one error naming `key`."""
    path = Path(directory)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-check-"):
            pass
    except OSError as e:
        raise SetupError(f"{key}: cannot write to {path}: {e.strerror or e}") from None
    return path


def extra_config_dirs(argv: Sequence[str]) -> list[Path]:
    """Directories given with Hydra's --config-dir / -cd."""
    found = []
    for i, arg in enumerate(argv):
        if arg.startswith("--config-dir="):
            found.append(Path(arg.split("=", 1)[1]))
        elif arg in ("--config-dir", "-cd") and i + 1 < len(argv):
            found.append(Path(argv[i + 1]))
    return found


def check_yaml_syntax(directories: Iterable[Path]) -> None:
    """One `file:line: problem` error for a malformed YAML file in the config tree; Hydra
    itself answers one with a long traceback."""
    import yaml

    # libyaml's loader when built in: this runs at every command's start.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    for directory in directories:
        for root, _, files in os.walk(directory, followlinks=True):
            for name in sorted(f for f in files if f.endswith((".yaml", ".yml"))):
                path = Path(root) / name
                try:
                    yaml.load(path.read_text(encoding="utf-8"), Loader=loader)
                except yaml.MarkedYAMLError as e:
                    mark = e.problem_mark or e.context_mark
                    line = f":{mark.line + 1}" if mark else ""
                    raise ConfigError(f"{path}{line}: invalid YAML: {e.problem}") from None


def require_name(value: Any, key: str) -> None:
    """A name becomes one directory under results_dir: a path would write outside it."""
    text = str(value)
    require(
        text.strip() not in ("", ".", "..") and not any(c in text for c in "/\\\0"),
        key,
        f"{text!r} is not a name: give one directory name (no '/', '\\' or '..'); "
        "results_dir says where the results tree is",
    )
