"""Stage 3, embeddings: a TF-Hub handle or a BERT-family pair as a strings → vectors layer
(`loading`), the frozen-feature cache (`features`: vectors, or a contextual encoder's
per-token hidden states), the one tokeniser (`text`), export of vectors as a TF-Hub
text-embedding module (`export`), and the BERT-family encoders with their checkpoint
converter (`transformer/`).

May import: `config`, `data`.
"""
