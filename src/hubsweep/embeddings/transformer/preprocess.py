"""A BERT preprocessing SavedModel in TF-Hub's format: WordPiece tokenisation inside the
graph (tensorflow-text's BertTokenizer: lower-casing and accent stripping as the uncased
reference tokenizer does, punctuation and CJK splitting, greedy longest-match wordpieces).

Like TF-Hub's preprocessors it has three entry points: calling it maps a string batch to
the encoder's inputs at its default `seq_length`; `tokenize` gives the ragged
[batch, words, wordpieces] ids; `bert_pack_inputs(segments, seq_length=N)` trims,
adds [CLS]/[SEP] and pads them (saved for the lengths in `PACK_LENGTHS`, so
`embedding.seq_length` may be any of them; a caller cuts each batch to what it needs).
"""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf
import tensorflow_text as text

PACK_LENGTHS = (16, 32, 64, 128, 256, 512)


def _special_ids(vocab: list[str]) -> dict[str, int]:
    wanted = ("[CLS]", "[SEP]", "[PAD]", "[UNK]")
    missing = [t for t in wanted if t not in vocab]
    if missing:
        raise ValueError(f"vocab.txt lacks {missing}: not a BERT WordPiece vocabulary")
    return {t: vocab.index(t) for t in wanted}


class BertPreprocess(tf.Module):
    def __init__(self, vocab_file: Path, lower_case: bool, seq_length: int) -> None:
        super().__init__(name="bert_preprocess")
        vocab = Path(vocab_file).read_text(encoding="utf-8").splitlines()
        ids = _special_ids(vocab)
        self.cls_id, self.sep_id, self.pad_id = ids["[CLS]"], ids["[SEP]"], ids["[PAD]"]
        self.seq_length = seq_length
        self.vocab_file = tf.saved_model.Asset(str(vocab_file))
        initializer = tf.lookup.TextFileInitializer(
            self.vocab_file,
            tf.string,
            tf.lookup.TextFileIndex.WHOLE_LINE,
            tf.int64,
            tf.lookup.TextFileIndex.LINE_NUMBER,
        )
        self.table = tf.lookup.StaticHashTable(initializer, default_value=ids["[UNK]"])
        self.tokenizer = text.BertTokenizer(
            self.table, token_out_type=tf.int64, lower_case=lower_case, unknown_token="[UNK]"
        )

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def tokenize(self, sentences: tf.Tensor) -> tf.RaggedTensor:
        return tf.cast(self.tokenizer.tokenize(sentences), tf.int32)

    @tf.function
    def bert_pack_inputs(self, segments, seq_length: int = 128) -> dict[str, tf.Tensor]:
        pieces = [tf.cast(s.merge_dims(-2, -1), tf.int64) for s in segments]
        # Room for [CLS] and one [SEP] per segment.
        trimmer = text.RoundRobinTrimmer(max_seq_length=seq_length - len(pieces) - 1)
        ids, types = text.combine_segments(
            trimmer.trim(pieces), start_of_sequence_id=self.cls_id, end_of_segment_id=self.sep_id
        )
        word_ids, mask = text.pad_model_inputs(ids, seq_length, pad_value=self.pad_id)
        type_ids, _ = text.pad_model_inputs(types, seq_length, pad_value=0)
        return {
            "input_word_ids": tf.cast(word_ids, tf.int32),
            "input_mask": tf.cast(mask, tf.int32),
            "input_type_ids": tf.cast(type_ids, tf.int32),
        }

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def __call__(self, sentences: tf.Tensor) -> dict[str, tf.Tensor]:
        return self.bert_pack_inputs([self.tokenize(sentences)], seq_length=self.seq_length)

    def traced_for_saving(self) -> None:
        """Trace `bert_pack_inputs` for one segment at every length in PACK_LENGTHS."""
        spec = tf.RaggedTensorSpec([None, None, None], tf.int32, ragged_rank=2)
        for length in PACK_LENGTHS:
            self.bert_pack_inputs.get_concrete_function([spec], seq_length=length)
