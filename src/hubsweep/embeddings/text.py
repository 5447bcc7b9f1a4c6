"""The one tokeniser: what exported modules do at lookup time, and what corpus counting uses.

Following the CORD-19 Swivel module card: punctuation (Unicode class P) is deleted, the
text is split on whitespace, and lower-casing is a per-module choice.
"""

from __future__ import annotations

import tensorflow as tf

PUNCTUATION_PATTERN = r"\pP"


def tokenize(sentences: tf.Tensor, lowercase: bool) -> tf.RaggedTensor:
    """1-D string tensor → ragged [batch, None] tokens."""
    text = tf.strings.regex_replace(sentences, PUNCTUATION_PATTERN, "")
    if lowercase:
        text = tf.strings.lower(text, encoding="utf-8")
    return tf.strings.split(text)
