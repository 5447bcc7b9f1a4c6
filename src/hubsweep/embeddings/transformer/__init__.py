"""BERT-family encoders: a converter from BERT-architecture checkpoints to TF-Hub's
preprocessing + encoder SavedModels, the sentence-embedding layer that uses them, and the
reader of what an adapted pair (`hubsweep-adapt`) says about itself (`adapted`)."""
