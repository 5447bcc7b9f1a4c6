"""The package's shape: no import cycles (lazy imports included), small modules, stages that
import only the stages before them, one name per module, and the
results tree's file names and statuses spelt in one module."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from .conftest import REPO

PACKAGE = REPO / "src" / "hubsweep"
MAX_LINES = 400


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hubsweep"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("hubsweep"))
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {
        name: {m for m in _imports(path) if m in modules and m != name}
        for name, path in modules.items()
    }


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt) :] + [nxt] if nxt in stack else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    # A package's __init__ importing nothing makes parent→child edges harmless; none exist.
    assert cycles == []


def test_modules_stay_small():
    big = {
        p.name: n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert big == {}


def test_result_file_names_and_statuses_are_spelt_in_the_layout_module_only():
    spelt = re.compile(
        r"""(["'])(final\.json|metrics\.jsonl|study\.json|study\.journal|"""
        r"""completed|diverged|stopped|failed)\1"""
    )
    offenders = [
        f"{p.relative_to(PACKAGE)}: {m.group(0)}"
        for p in PACKAGE.rglob("*.py")
        if p.name != "layout.py"
        for m in spelt.finditer(p.read_text())
    ]
    assert offenders == []


# The stages in import order: a package may import those before it, never one after it.
# `results` (the tree every stage writes or reads) sits right above `config`; `swivel` and
# `analysis` stand beside the flow, over the embedding stage, `adapt` over the training
# stage (it trains with its optimizers). errors and metrics are below all.
LAYERS = {
    "config": 1,
    "results": 2,
    "data": 3,
    "embeddings": 4,
    "swivel": 5,
    "analysis": 5,
    "training": 6,
    "adapt": 7,
    "study": 7,
    "reports": 8,
}
BASE = {"errors", "metrics"}
TOP = {"cli", "api"}  # the entry points over everything (and the package's public face)
OPTUNA_FROM = {"study", "reports"}  # nothing below the study knows about Optuna


def _stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "hubsweep"


def test_top_of_the_package_is_a_handful_of_modules():
    top = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert len(top) <= 6, top
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"} == {
        *LAYERS,
    } - {"analysis"}


def test_every_module_belongs_to_a_stage():
    stages = {_stage(m) for m in _graph()}
    assert stages <= {*LAYERS, *BASE, *TOP, "hubsweep"}, stages - {*LAYERS, *BASE, *TOP}


def test_stages_import_only_stages_before_them():
    upward = []
    for module, deps in sorted(_graph().items()):
        stage = _stage(module)
        if stage in TOP or stage == "hubsweep":
            continue
        rank = LAYERS.get(stage, 0)
        for dep in sorted(deps):
            target = _stage(dep)
            if target == stage or target in BASE:
                continue
            if target not in LAYERS or LAYERS[target] >= rank:
                upward.append(f"{module} -> {dep}")
    assert upward == []


def _third_party_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            roots.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            roots.update(a.name.split(".")[0] for a in node.names)
    return roots


def test_nothing_below_the_study_imports_optuna():
    offenders = sorted(
        str(p.relative_to(PACKAGE))
        for p in PACKAGE.rglob("*.py")
        if "optuna" in _third_party_roots(p) and _stage(_module_name(p)) not in OPTUNA_FROM | TOP
    )
    assert offenders == []


def test_no_two_modules_share_a_file_name():
    names: dict[str, list[str]] = {}
    for p in PACKAGE.rglob("*.py"):
        if p.name != "__init__.py":
            names.setdefault(p.name, []).append(str(p.relative_to(PACKAGE)))
    assert {n: ps for n, ps in names.items() if len(ps) > 1} == {}


def test_every_package_says_what_it_owns_and_may_import():
    silent = []
    for init in PACKAGE.rglob("__init__.py"):
        if init.parent in (PACKAGE,) or init.parent.parent != PACKAGE:
            continue
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        if "May import" not in doc:
            silent.append(str(init.relative_to(PACKAGE)))
    assert silent == []
