"""Stage 6, `hubsweep-report`: tables and plots over a results directory (runs, grids,
studies): `collect` reads it, `stats` and `diagnostics` compute, `tables`, `plots` and the
comparison sections render, `document` writes report.md.

May import every stage before it (`study` included, to read a study's storage).
"""
