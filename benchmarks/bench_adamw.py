"""AdamW's update of a fine-tuned MiniLM's weights: TensorFlow's fused Adam kernel against
the same step as separate TensorFlow ops (hubsweep's AdamW before it took the kernel); and
Adam (no decay, what bench_finetune.py steps): Keras's, whose sparse update the plain
script takes, and hubsweep's, which applies the table's sparse gradient densely through the
kernel; side by side in one run.

The variables have all-MiniLM-L6-v2's shapes (a 30,522 × 384 word table, 6 layers of 384
hidden and 1,536 feed-forward: 22.6 M weights, the pooler and embedding norm left out);
every gradient is dense but the word table's, which is the rows of one batch (16
sentences × 56 tokens), as a fine-tuning step's is. Each way is timed over the same
gradients (median of repeats, after a warm-up step), and after the timing both AdamW ways,
and both Adam ways, must hold the same weights.

    python benchmarks/bench_adamw.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def minilm_shapes(vocab: int, hidden: int, layers: int, ffn: int) -> dict[str, tuple]:
    shapes = {"word": (vocab, hidden), "position": (512, hidden), "type": (2, hidden)}
    for i in range(layers):
        for name in ("query", "key", "value", "attention_output"):
            shapes[f"layer_{i}/{name}/kernel"] = (hidden, hidden)
            shapes[f"layer_{i}/{name}/bias"] = (hidden,)
        shapes[f"layer_{i}/intermediate/kernel"] = (hidden, ffn)
        shapes[f"layer_{i}/intermediate/bias"] = (ffn,)
        shapes[f"layer_{i}/output/kernel"] = (ffn, hidden)
        shapes[f"layer_{i}/output/bias"] = (hidden,)
        for norm in ("attention_norm", "output_norm"):
            shapes[f"layer_{i}/{norm}/gamma"] = (hidden,)
            shapes[f"layer_{i}/{norm}/beta"] = (hidden,)
    return shapes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--tokens", type=int, default=16 * 56, help="word-table rows a step")
    args = parser.parse_args()

    import numpy as np
    import tensorflow as tf
    import tf_keras as keras

    from hubsweep.training.optimizers import Adam, AdamW

    class SeparateOpsAdamW(AdamW):
        """The same step as separate ops: a pass over the weights per operation."""

        def _resource_apply_dense(self, grad, var, apply_state=None):
            dtype = var.dtype.base_dtype
            lr = self._decayed_lr(dtype) * self.multipliers.get(var.ref(), 1.0)
            t = tf.cast(self.iterations + 1, dtype)
            if self.decays(var):
                var.assign_sub(lr * self.weight_decay * var)
            m, v = self.get_slot(var, "m"), self.get_slot(var, "v")
            m.assign(self.beta_1 * m + (1.0 - self.beta_1) * grad)
            v.assign(self.beta_2 * v + (1.0 - self.beta_2) * tf.square(grad))
            m_hat = m / (1.0 - tf.pow(self.beta_1, t))
            v_hat = v / (1.0 - tf.pow(self.beta_2, t))
            return var.assign_sub(lr * m_hat / (tf.sqrt(v_hat) + self.epsilon))

    rng = np.random.default_rng(0)
    shapes = minilm_shapes(30522, 384, 6, 1536)
    init = {k: rng.normal(scale=0.05, size=s).astype(np.float32) for k, s in shapes.items()}
    rows = rng.integers(0, shapes["word"][0], args.tokens)
    grads = {k: rng.normal(scale=1e-3, size=s).astype(np.float32) for k, s in shapes.items()}
    word_grad = tf.IndexedSlices(
        tf.constant(rng.normal(scale=1e-3, size=(args.tokens, 384)).astype(np.float32)),
        tf.constant(rows, tf.int32),
        tf.constant(shapes["word"], tf.int32),
    )
    n_weights = sum(int(np.prod(s)) for s in shapes.values())
    no_decay = ("bias", "gamma", "beta")
    ways = {
        "AdamW, separate ops (before)": lambda: SeparateOpsAdamW(
            1e-4, 0.01, 0.9, 0.999, 1e-6, no_decay, global_clipnorm=1.0
        ),
        "AdamW, fused kernel (now)": lambda: AdamW(
            1e-4, 0.01, 0.9, 0.999, 1e-6, no_decay, global_clipnorm=1.0
        ),
        "Adam, Keras's sparse update": lambda: keras.optimizers.legacy.Adam(
            1e-4, epsilon=1e-6, global_clipnorm=1.0
        ),
        "Adam, hubsweep's (dense, fused)": lambda: Adam(1e-4, epsilon=1e-6, global_clipnorm=1.0),
    }
    print(
        f"{n_weights / 1e6:.1f} M weights, {args.tokens} word-table rows a step, "
        f"median of {args.repeats} updates"
    )
    results, weights = {}, {}
    for name, make in ways.items():
        variables = [tf.Variable(init[k], name=k) for k in shapes]
        grad_list = [word_grad if k == "word" else tf.constant(grads[k]) for k in shapes]
        opt = make()

        @tf.function
        def update(opt=opt, variables=variables, grad_list=grad_list):
            opt.apply_gradients(zip(grad_list, variables, strict=True))

        update()  # warm-up: traces, creates the slots
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            update()
            variables[0].numpy()[0, 0]  # the update has run
            times.append(time.perf_counter() - start)
        results[name] = statistics.median(times)
        weights[name] = [v.numpy() for v in variables]
        print(f"  {name:42s} {results[name] * 1e3:7.1f} ms")
    names = list(ways)
    for old, new, what in ((0, 1, "AdamW"), (2, 3, "Adam")):
        pairs = zip(weights[names[old]], weights[names[new]], strict=True)
        diff = max(float(np.abs(a - b).max()) for a, b in pairs)
        print(
            f"{what}: {results[names[old]] / results[names[new]]:.2f}x faster now; largest "
            f"weight difference after {args.repeats + 1} steps: {diff:.1e}"
        )
        assert diff < 1e-6, f"the two {what} ways disagree"


if __name__ == "__main__":
    main()
