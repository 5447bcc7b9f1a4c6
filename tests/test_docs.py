"""The documentation holds together: every relative link in README.md and docs/ resolves
(files, and #anchors to a heading of the page), every docs page is reachable from the
README, and the README's Python example runs as written."""

from __future__ import annotations

import re
import types
from pathlib import Path

from .conftest import REPO

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def _anchor(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    return {
        _anchor(line.lstrip("#"))
        for line in page.read_text().splitlines()
        if re.match(r"#{1,6} ", line)
    }


def _links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return [t for t in LINK.findall(text) if "://" not in t and not t.startswith("mailto:")]


def test_every_relative_link_resolves():
    broken = []
    for page in PAGES:
        for target in _links(page):
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            if not resolved.exists():
                broken.append(f"{page.relative_to(REPO)}: {target} (no such file)")
            elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
                broken.append(f"{page.relative_to(REPO)}: {target} (no such heading)")
    assert broken == []


def test_every_docs_page_is_reachable_from_the_readme():
    readme = {(REPO / t.partition("#")[0]).resolve() for t in _links(REPO / "README.md")}
    unlinked = [p.name for p in PAGES[1:] if p.resolve() not in readme]
    assert unlinked == []


def test_readme_stays_a_front_door():
    assert len((REPO / "README.md").read_text().splitlines()) <= 200


def test_the_readme_python_example_runs(fixture_overrides, tmp_path, monkeypatch):
    """The README's "From Python" block, as written, with the fixture's data and module
    added to each call (this machine has no network) and the study kept small."""
    import hubsweep

    readme = (REPO / "README.md").read_text()
    section = readme.split("## From Python", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)
    assert "import hubsweep" in code
    common = [*fixture_overrides, f"results_dir={tmp_path / 'results'}"]
    small = ["sweep.n_trials=2", "sweep.params.steps.high=2000", "sweep.retrain_best_seeds=1"]
    api = types.SimpleNamespace(
        run=lambda *a: hubsweep.run(*a, *common, "trainer.eval_every=100"),
        sweep=lambda *a: hubsweep.sweep(*a, *common, *small),
        report=hubsweep.report,
    )
    monkeypatch.chdir(tmp_path)
    scope: dict = {"hubsweep": api}
    exec(compile(code.replace("import hubsweep\n", ""), "README.md", "exec"), scope)
    assert scope["run"].status == "completed" and len(scope["run"].history) == 4
    assert {arm for arm in scope["study"].studies} == {"frozen", "finetuned"}
    assert "arms" in scope["report"].tables
