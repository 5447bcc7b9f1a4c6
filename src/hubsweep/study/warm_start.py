"""Warm start: a new study begins with the best configs of an earlier one.

`sweep.warm_start` names the earlier study: its directory (the one holding study.json; for
an experiment with arms, the directory above its arms, each arm then starting from the arm
of the same name), or `<storage URL>#<study name>`. Its top `sweep.warm_start_trials`
distinct completed configs are queued (`study.enqueue_trial`) before the first sampled
trial, each checked against this study's search space first: a value outside it, or a
parameter this space lacks, skips that config with the reason in one line, never clipped
into range (Optuna once ran out-of-range enqueued values as given, optuna/optuna#2955). A
parameter of this space the earlier study lacks is left to the sampler.

Queued trials carry the `warm_start` user attribute (their source), so the report marks
them and says the budget curves do not treat them as random draws. They are queued once
per source (a config already in the study is never queued twice, `skip_if_exists`): a
resume does not queue them again, a larger `warm_start_trials` queues the next ones.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import optuna

from hubsweep.errors import ConfigError
from hubsweep.results.layout import STUDY_INFO_FILE, STUDY_JOURNAL_FILE
from hubsweep.study import storage
from hubsweep.study.finalists import top_distinct
from hubsweep.study.liveness import WARM_START
from hubsweep.study.plan import StudyPlan

log = logging.getLogger(__name__)

WARM_START_ATTR = "hubsweep:warm_start"  # the study's record: source, queued, skipped


def _study_dir(path: Path, arm: str | None) -> Path | None:
    if (path / STUDY_INFO_FILE).is_file():
        return path
    if arm and (path / arm / STUDY_INFO_FILE).is_file():
        return path / arm
    return None


def _source(plan: StudyPlan) -> tuple[str, str]:
    """(storage URL, study name) of `sweep.warm_start`."""
    value = str(plan.settings.warm_start)
    where = f"sweep.warm_start={storage.mask(value)}"
    if "#" in value and "://" in value.split("#", 1)[0]:
        url, name = value.rsplit("#", 1)
        return storage.resolve(url, Path(plan.directory)), name
    path = Path(value)
    directory = _study_dir(path, plan.arm)
    if directory is None:
        arm = f" (or {path / plan.arm}/{STUDY_INFO_FILE})" if plan.arm else ""
        raise ConfigError(
            f"{where}: no {path / STUDY_INFO_FILE}{arm}; give a study directory or "
            "<storage URL>#<study name>"
        )
    try:
        info = json.loads((directory / STUDY_INFO_FILE).read_text(encoding="utf-8"))
        name, named = info["study_name"], info.get("storage")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{where}: {directory / STUDY_INFO_FILE} unreadable ({e})") from None
    if not named or storage.is_journal(named):
        return f"{storage.JOURNAL}{directory / STUDY_JOURNAL_FILE}", name
    return named.replace(":***@", "@"), name


def load_source(plan: StudyPlan) -> optuna.Study:
    """The earlier study, read only; one ConfigError naming the setting if it cannot be."""
    url, name = _source(plan)
    try:
        return optuna.load_study(study_name=name, storage=storage.open_storage(url, create=False))
    except Exception as e:
        problem = storage.mask(str(e).splitlines()[0] if str(e) else type(e).__name__)
        raise ConfigError(
            f"sweep.warm_start: cannot read study {name!r} in {storage.mask(url)}: {problem}"
        ) from None


def checked(plan: StudyPlan, params: dict) -> str | None:
    """Why a config of the earlier study is not a point of this study's space (None: it is)."""
    space = {p.key: p for p in plan.params}
    for key, value in params.items():
        if key not in space:
            return f"{key} is not searched here"
        why = space[key].refuses(value)
        if why:
            return f"{key}: {why}"
    return None


def warm_start(plan: StudyPlan, study: optuna.Study) -> dict | None:
    """Queue the earlier study's top configs into `study` (once per source); the record."""
    source_text = plan.settings.warm_start
    if not source_text:
        return None
    stored = study.user_attrs.get(WARM_START_ATTR)
    k = plan.settings.warm_start_trials
    if (
        isinstance(stored, dict)
        and stored.get("source") == storage.mask(source_text)
        and stored.get("trials", 0) >= k
    ):
        return stored
    source = load_source(plan)
    minimize = source.direction == optuna.study.StudyDirection.MINIMIZE
    top = top_distinct(source.get_trials(deepcopy=False), k, minimize)
    if not top:
        raise ConfigError(
            f"sweep.warm_start: study {source.study_name!r} has no completed trial to start from"
        )
    queued, skipped = [], []
    for t in top:
        why = checked(plan, t.params)
        label = f"{source.study_name}#{t.number}"
        if why:
            log.warning("warm start: trial %s skipped: %s", label, why)
            skipped.append({"trial": t.number, "reason": why})
            continue
        study.enqueue_trial(t.params, user_attrs={WARM_START: label}, skip_if_exists=True)
        queued.append({"trial": t.number, "value": t.value, "params": t.params})
    record = {
        "source": storage.mask(source_text),
        "study": source.study_name,
        "trials": k,
        "queued": queued,
        "skipped": skipped,
    }
    log.info(
        "warm start from %s: %d config(s) queued, %d skipped",
        source.study_name,
        len(queued),
        len(skipped),
    )
    study.set_user_attr(WARM_START_ATTR, record)
    return record
