"""Stage 2, data: datasets as in-memory text/label arrays from TensorFlow Datasets or local
files (`datasets`), the local files' records and how one becomes a text and a label
(`records`), the loaded splits cached on disk (`dataset_cache`), and the fail-fast network
check that downloads go through (`network`).

May import: `config` (and `errors`, `metrics`).
"""
