"""`hubsweep-report`: tables and plots over a results directory (runs, grids, studies)."""
