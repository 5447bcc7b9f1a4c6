"""How each study chose its winner: the finalists' race (study/finalists.py) as a table and
two sentences, whether the search's ranking held on new seeds and how much of the winner's
search score was luck (the winner's curse)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from hubsweep.reports.collect import Study
from hubsweep.reports.markdown import write_table
from hubsweep.reports.tables import LABELS, Spread


def finalists_frames(study: Study) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """(numbers, text) of the race, one row per finalist in search order; None unraced."""
    raced = study.raced
    if not raced.get("raced"):
        return None
    names = study.param_names()
    numbers, text = [], []
    for f in raced.get("finalists", []):
        spread = Spread.of(f.get("values", []))
        params = {names.get(k, k): v for k, v in f.get("params", {}).items()}
        numbers.append(
            {
                "arm": study.label,
                "trial": f["trial"],
                "search_rank": f["search_rank"],
                "search_value": f["search_value"],
                **params,
                "seeds": spread.n,
                **spread.columns("rerun"),
                "winner": bool(f.get("winner")),
            }
        )
        text.append(
            {
                "trial": f["trial"],
                "search rank": f["search_rank"],
                "search val": f"{f['search_value']:.4f}",
                **{k: f"{v:.4g}" if isinstance(v, float) else str(v) for k, v in params.items()},
                "re-run val (mean ± std)": spread.text(),
                "95% CI": f"[{spread.low:.4f}, {spread.high:.4f}]" if spread.n > 1 else "–",
                "winner": "**winner**" if f.get("winner") else "",
            }
        )
    return pd.DataFrame(numbers), pd.DataFrame(text)


def race_sentences(study: Study) -> list[str]:
    raced = study.raced
    rows = raced.get("finalists", [])
    winner = next((f for f in rows if f.get("winner")), None)
    if winner is None or winner.get("mean") is None:
        return []
    metric = LABELS.get(study.metric, study.metric)
    seeds = len(raced.get("seeds", []))
    first = rows[0]
    if raced.get("ranking_held"):
        held = (
            f"The search's ranking held: its best trial, {first['trial']}, also has the best "
            "re-run mean"
        )
    else:
        held = (
            f"The search's ranking did not hold: trial {winner['trial']} (search rank "
            f"{winner['search_rank']}) re-ran at {winner['mean']:.4f}, the search's best "
            f"(trial {first['trial']}) at "
        )
        if first.get("mean") is None:
            held += "no score (its re-runs did not complete)"
        else:
            held += (
                f"{first['mean']:.4f}, {abs(first['search_value'] - first['mean']):.4f} "
                f"{'below' if first['mean'] < first['search_value'] else 'above'} its search "
                f"score {first['search_value']:.4f}"
            )
    curse = raced.get("winners_curse")
    gap = (
        f" Winner's curse: the winner's search score {winner['search_value']:.4f} is "
        f"{curse:+.4f} from its re-run mean {winner['mean']:.4f} (positive: the search's "
        "draw was luckier than the config)."
        if curse is not None
        else ""
    )
    return [
        f"The top {len(rows)} distinct configs of the search, each re-run on {seeds} new seeds "
        f"(validation {metric} only; test never selects); the winner has the best re-run "
        f"mean and is the config re-run with test. {held}.{gap}"
    ]


def finalists_lines(study: Study, tables: Path) -> list[str]:
    frames = finalists_frames(study)
    if frames is None:
        return []
    numbers, text = frames
    name = f"finalists_{study.label}"
    return [
        "",
        f"Finalists of {study.label}: " + " ".join(race_sentences(study)),
        "",
        write_table(numbers, text, tables, name),
    ]
