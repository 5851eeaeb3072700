"""search: local-optimality certification of hyperparameters over a grid.

Pure core: `search.grid` (neighbours, bounds), `search.certify` (the certification rule,
`decide`), `search.certificate` (the records it reads and gives: outcomes, decision, certificate
and its basis, exit status), `search.strategies` (who asks for runs, and the driver over an abstract
`Evaluator`) and `search.params` (a run's point, fixed params and
seed: the one merge and split). Adapters: `search.ledger` (Optuna studies, the
controller lock), `megadocs.executors` (submitit local/debug/slurm), `search.objective` (what one
run is; the default trains through `train/`), `search.controller` (ties them together).
Reading API for analysis: `search.sweep.load_sweep` (a file -> a `Sweep`, the only such place),
then `search.ledger.read_runs(sweep)`, `search.status.summarize(sweep)`. CLI: `megadocs search certify|status SWEEP.yaml`.
"""
