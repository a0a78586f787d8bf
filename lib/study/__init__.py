"""A study: the run description (config) and its checks before compute; the params grid and
the sweep that executes notebooks (grid, sweep, stages, executions, slurm, console); one run
inside the notebook (experiment, run, features, tracking); records (results); findings;
the shipped tickets (tickets); two studies compared (compare); the seed's command line
(seed_cli)."""
