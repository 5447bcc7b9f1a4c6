"""hubsweep: hyperparameter sweeps for pretrained TF-Hub text embeddings."""

__version__ = "0.1.0"
