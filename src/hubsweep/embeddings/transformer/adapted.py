"""What an adapted pair says about itself, where it says it, and the reader of it.

`hubsweep-adapt` writes `OUTPUT/checkpoint/hubsweep_adapt.json` beside the pair
(`OUTPUT/encoder`, `OUTPUT/preprocess`): the source checkpoint, the texts, the settings,
the masked-LM loss every `save_every` steps and the seconds it trained. A run on the pair
copies its summary (`adaptation_summary`) into final.json, so reports count an adapted
arm's one-time cost beside its trials' from the runs alone, whether or not the pair is
still on the machine (no TensorFlow needed here).
"""

from __future__ import annotations

import json
from pathlib import Path

ADAPT_FILE = "hubsweep_adapt.json"
CHECKPOINT_DIR = "checkpoint"


def _record_path(encoder_handle: str | Path) -> Path:
    """Where the record of the pair whose encoder is `encoder_handle` would be (a local
    path, or a file:// handle as TF-Hub takes it)."""
    return Path(str(encoder_handle).removeprefix("file://")).parent / CHECKPOINT_DIR / ADAPT_FILE


def adaptation_record(encoder_handle: str | Path) -> dict | None:
    """The record of the adaptation that produced the pair whose encoder is
    `encoder_handle`, or None (not an adapted pair, or not on this machine)."""
    path = _record_path(encoder_handle)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def adaptation_seconds(record: dict) -> float:
    """The seconds the adaptation trained (its saves' intervals, resumed parts included)."""
    return float(sum(entry["seconds"] for entry in record.get("loss", [])))


def adaptation_summary(encoder_handle: str | Path) -> dict | None:
    """What a run on the pair records of its adaptation: the record's path, the source
    checkpoint, the steps and the training seconds (None: not an adapted pair)."""
    record = adaptation_record(encoder_handle)
    if record is None:
        return None
    return {
        "record": str(_record_path(encoder_handle).resolve()),
        "source": record.get("source"),
        "steps": record.get("settings", {}).get("steps"),
        "seconds": adaptation_seconds(record),
    }
