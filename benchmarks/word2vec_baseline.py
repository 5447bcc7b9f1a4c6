"""The baseline a user would reach for: gensim Word2Vec (CBOW) on CORD-19, exported as a module.

Tokens come from hubsweep's own tokeniser (the one the exported module applies at lookup),
so training text and lookup text are split the same way.

    pip install -e ".[baseline]"
    python benchmarks/word2vec_baseline.py --corpus ../shared/data/cord19 \
        --output modules/w2v-cord19-128d
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

FIELDS = ("title", "authors", "abstract", "body_text", "ref_titles")
CHUNK = 1000  # gensim caps sentences at 10,000 tokens; long papers are cut into chunks


def documents(corpus: Path) -> Iterator[str]:
    for path in sorted(corpus.glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for line in f:
                paper = json.loads(line)
                parts = [paper.get(k) or "" for k in FIELDS]
                yield " ".join(" ".join(p) if isinstance(p, list) else p for p in parts)


def sentences(corpus: Path, lowercase: bool) -> list[list[str]]:
    import tensorflow as tf

    from hubsweep.embeddings.text import tokenize

    docs = list(documents(corpus))
    out = []
    for start in range(0, len(docs), 2048):
        batch = tokenize(tf.constant(docs[start : start + 2048]), lowercase).to_list()
        for tokens in batch:
            words = [t.decode("utf-8") for t in tokens]
            out.extend(words[i : i + CHUNK] for i in range(0, len(words), CHUNK))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--min-count", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--cased", action="store_true", help="keep case (default: lower-case)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("gensim").setLevel(logging.WARNING)
    from gensim.models import Word2Vec

    from hubsweep.embeddings.export import export_text_embedding

    started = time.perf_counter()
    text = sentences(args.corpus, lowercase=not args.cased)
    tokens = sum(map(len, text))
    logging.info("%d tokens read in %.1fs", tokens, time.perf_counter() - started)
    model = Word2Vec(
        text,
        vector_size=args.dim,
        window=args.window,
        min_count=args.min_count,
        epochs=args.epochs,
        sg=0,
        workers=os.cpu_count() or 1,
        seed=0,
    )
    vocab = list(model.wv.index_to_key)
    export_text_embedding(vocab, model.wv.vectors, args.output, lowercase=not args.cased)
    logging.info(
        "exported %d x %d Word2Vec vectors to %s in %.1fs",
        len(vocab),
        args.dim,
        args.output,
        time.perf_counter() - started,
    )


if __name__ == "__main__":
    main()
