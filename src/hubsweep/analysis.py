"""Term analysis of any text-embedding module: the reference similarity heatmap, nearest
neighbours over the module's vocabulary, and a cluster score for term groups."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from hubsweep.errors import EmbeddingError

log = logging.getLogger(__name__)

VOCAB_CANDIDATES = ("vocab.txt", "tokens.txt")


@dataclass(frozen=True)
class Analysis:
    terms: list[str]
    similarity: np.ndarray  # inner products normalised by their maximum
    cluster_score: float | None  # mean within-group cosine - mean between-group cosine
    neighbours: pd.DataFrame  # term, rank, neighbour, cosine


def module_vocabulary(handle: str, vocab_file: str | None) -> list[str]:
    """The module's own token list (assets/vocab.txt or tokens.txt), or `vocab_file`."""
    if vocab_file:
        path = Path(vocab_file)
        if not path.is_file():
            raise EmbeddingError(f"vocab_file: {path} does not exist")
    else:
        found = [Path(handle) / "assets" / name for name in VOCAB_CANDIDATES]
        path = next((p for p in found if p.is_file()), None)
        if path is None:
            raise EmbeddingError(
                f"{handle!r} ships no vocabulary (assets/vocab.txt or tokens.txt); "
                "set vocab_file=<one token per line> for nearest neighbours"
            )
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def cluster_score(vectors: np.ndarray, group_of: Sequence[int]) -> float | None:
    """Mean cosine of same-group pairs minus mean cosine of different-group pairs."""
    cos = _unit(vectors) @ _unit(vectors).T
    groups = np.asarray(group_of)
    same = groups[:, None] == groups[None, :]
    off_diagonal = ~np.eye(len(groups), dtype=bool)
    within, between = cos[same & off_diagonal], cos[~same]
    if not within.size or not between.size:
        return None
    return float(within.mean() - between.mean())


def nearest_neighbours(
    query: np.ndarray, terms: Sequence[str], vocab: Sequence[str], table: np.ndarray, k: int
) -> pd.DataFrame:
    cos = _unit(query) @ _unit(table).T
    rows = []
    for i, term in enumerate(terms):
        order = np.argsort(-cos[i])
        picked = [j for j in order if vocab[j].lower() != term.lower()][:k]
        rows += [
            {
                "term": term,
                "rank": r + 1,
                "neighbour": vocab[j],
                "cosine": round(float(cos[i, j]), 4),
            }
            for r, j in enumerate(picked)
        ]
    return pd.DataFrame(rows, columns=["term", "rank", "neighbour", "cosine"])


def analyze(
    embed, groups: Sequence[Sequence[str]], neighbour_terms: Sequence[str], vocab: list[str], k: int
) -> Analysis:
    """`embed` maps a list of strings to float32 [n, dim] (the module itself)."""
    terms = [t for group in groups for t in group]
    group_of = [g for g, group in enumerate(groups) for _ in group]
    vectors = embed(terms)
    inner = vectors @ vectors.T
    similarity = inner / np.abs(inner).max() if np.abs(inner).max() > 0 else inner
    batches = [embed(vocab[i : i + 4096]) for i in range(0, len(vocab), 4096)]
    table = np.concatenate(batches) if batches else np.zeros((0, vectors.shape[1]))
    neighbours = nearest_neighbours(embed(list(neighbour_terms)), neighbour_terms, vocab, table, k)
    return Analysis(terms, similarity, cluster_score(vectors, group_of), neighbours)


def plot_heatmap(analysis: Analysis, title: str, path: Path) -> None:
    heatmap_figure(analysis, title).savefig(path, dpi=100)


def heatmap_figure(analysis: Analysis, title: str):
    """The reference notebook's heatmap: normalised inner products of the term groups."""
    import seaborn as sns
    from matplotlib.figure import Figure

    n = len(analysis.terms)
    fig = Figure(figsize=(1.0 + 0.6 * n, 0.6 + 0.55 * n), layout="constrained")
    ax = fig.subplots()
    sns.heatmap(
        analysis.similarity,
        xticklabels=analysis.terms,
        yticklabels=analysis.terms,
        vmin=min(0.0, float(analysis.similarity.min())),
        vmax=1.0,
        cmap="YlOrRd",
        annot=n <= 12,
        fmt=".2f",
        square=True,
        ax=ax,
    )
    ax.set_title(title)
    ax.tick_params(axis="x", rotation=90)
    return fig


def write_outputs(analysis: Analysis, handle: str, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(analysis.similarity, index=analysis.terms, columns=analysis.terms)
    frame.to_csv(out / "similarity.csv")
    plot_heatmap(analysis, f"normalised inner product: {Path(handle).name}", out / "similarity.png")
    analysis.neighbours.to_csv(out / "neighbours.csv", index=False)
    wide = analysis.neighbours.assign(
        cell=lambda d: d.neighbour + " (" + d.cosine.map("{:.2f}".format) + ")"
    ).pivot(index="rank", columns="term", values="cell")
    wide = wide[list(dict.fromkeys(analysis.neighbours.term))]  # the order the terms were given
    (out / "neighbours.md").write_text(wide.to_markdown() + "\n")
    scores = {"module": handle, "cluster_score": analysis.cluster_score, "terms": analysis.terms}
    (out / "scores.json").write_text(json.dumps(scores, indent=2) + "\n")
    return scores


def run_analysis(cfg: DictConfig) -> Analysis:
    """Analyse cfg.embedding, write the outputs into cfg.output_dir, return the analysis."""
    import tensorflow as tf

    from hubsweep.embeddings.loading import load_embedding_layer

    layer = load_embedding_layer(cfg.embedding)

    def embed(texts: Sequence[str]) -> np.ndarray:
        return layer(tf.constant(list(texts))).numpy()

    groups = [list(g) for g in cfg.groups]
    terms = list(cfg.neighbours) if cfg.neighbours else [t for g in groups for t in g]
    vocab = module_vocabulary(cfg.embedding.handle, cfg.vocab_file)
    result = analyze(embed, groups, terms, vocab, cfg.top_k)
    scores = write_outputs(result, cfg.embedding.handle, Path(cfg.output_dir))
    log.info("cluster score (within - between group cosine): %s", scores["cluster_score"])
    log.info("nearest neighbours:\n%s", (Path(cfg.output_dir) / "neighbours.md").read_text())
    return result
