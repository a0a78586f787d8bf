"""A study: the run description (config), checks before compute, the params grid and the
sweep that executes notebooks (grid, sweep, stages, executions, slurm, console), one run inside
the notebook (experiment, features, tracking), records (results), findings, tickets, compare,
and the seed-compatible command line (seed_cli)."""
