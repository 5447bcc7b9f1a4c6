"""The results tree: every path, file name and status in it (`layout`), the files a run
writes and the one tolerant reader of them (`artifacts`), and TensorBoard event files
(`events`).

Training records through it and the study and the report read through it, so it sits
below them all. May import: `config` only.
"""
