"""Markdown pieces every part of the report uses: paths as a reader types them, tables in
three formats, figures with captions."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd


def shown(path: Path) -> str:
    """A path as a reader should type it: relative to the working directory when inside it."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def _as_formatted(text: pd.DataFrame) -> dict:
    """tabulate's settings that keep columns of text as formatted ("+0.0030", where it
    would print 0.003), numbers among them aligned right as it aligns numbers."""
    columns = list(text.columns)
    texts = [i for i, c in enumerate(columns) if text[c].map(type).eq(str).all()]
    if not texts:
        return {}
    align = []
    for i, c in enumerate(columns):
        numeric = i not in texts or text[c].map(_is_number).all()
        align.append("right" if numeric else "left")
    return {"disable_numparse": texts, "colalign": align}


def write_table(numbers: pd.DataFrame, text: pd.DataFrame, directory: Path, name: str) -> str:
    """CSV holds the numbers; Markdown and LaTeX the formatted text. Returns the Markdown."""
    directory.mkdir(parents=True, exist_ok=True)
    numbers.to_csv(directory / f"{name}.csv", index=False)
    markdown = text.to_markdown(index=False, floatfmt=".4g", **_as_formatted(text))
    (directory / f"{name}.md").write_text(markdown + "\n")
    latex = text.to_latex(index=False, escape=True, float_format="%.4g")
    (directory / f"{name}.tex").write_text(latex.replace("±", r"$\pm$"))
    return markdown


def figures(out: Path, specs: list[tuple[Callable, Any, str, str]]) -> list[str]:
    """Draw (plot function, its data, file stem, caption) each into out/plots; link those
    that had something to draw."""
    lines = []
    for draw, data, stem, caption in specs:
        path = draw(data, out / "plots" / f"{stem}.png")
        if path is not None:
            lines += [f"![{caption}]({path.relative_to(out)})", "", f"*{caption}*", ""]
    return lines
