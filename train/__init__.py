"""train: one data-constrained pre-training run, from raw documents to a final validation loss.

Public surface: `train.store` (token stores), `train.streams` (pure mixing arithmetic),
`train.data` (batches and validation windows), `train.config.RunConfig`, `train.loop.run`;
ensembles: `train.ensemble_eval.ensemble_losses` and `train.ensemble_cli.score_ensemble` (the
report of `megadocs train ensemble`); benchmarks: `train.downstream.evaluate_benchmarks`.
"""
