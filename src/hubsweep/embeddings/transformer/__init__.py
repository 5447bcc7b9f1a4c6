"""BERT-family encoders: a converter from BERT-architecture checkpoints to TF-Hub's
preprocessing + encoder SavedModels, and the sentence-embedding layer that uses them."""
