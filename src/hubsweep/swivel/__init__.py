"""Swivel (Shazeer et al., 2016) embeddings: corpus → co-occurrence shards → training → module.

Beside the main flow: it produces a module the embedding stage loads. May import: `config`,
`data`, `embeddings` (the tokeniser and the module export).
"""
