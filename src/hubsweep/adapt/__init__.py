"""Masked-language-model adaptation (`hubsweep-adapt`): a BERT-family checkpoint's pretraining
continued on a dataset's training texts (Gururangan et al. 2020's task-adaptive pretraining),
written as a checkpoint and the TF-Hub pair the embedding stage loads.

Beside the flow, over the training stage: it trains with the recipe's AdamW, schedule and
length-bucketed batches. May import: `config`, `data`, `embeddings` (the BERT encoder, its
converter and preprocessing, and the names of the record it writes beside the pair:
`transformer/adapted`, which runs and reports read), `training` (optimizers, batch order).
"""
