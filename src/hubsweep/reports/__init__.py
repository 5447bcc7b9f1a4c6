"""Stage 6, `hubsweep-report`: tables and plots over a results directory (runs, grids,
studies): `collect` reads it, `stats`, `diagnostics` and `cost` compute, `tables`,
`plots`, `winners` (the finalists' race), the comparison sections and `commands` (the
command lines that made the runs) render, `document` writes report.md.

May import every stage before it (`study` included, to read a study's storage).
"""
