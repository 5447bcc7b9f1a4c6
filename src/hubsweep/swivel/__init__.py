"""Swivel (Shazeer et al., 2016) embeddings: corpus → co-occurrence shards → training → module."""
