"""From a sweep's search ledger to tables, scaling-law fits, data efficiency, figures and a report.

Pure cores (checkable against paper.md in one read each):
``analysis.scaling`` (L(x) = E + A x^(-alpha) fits, bootstrap, identifiability warnings; the maths),
``analysis.efficiency`` (reference real-data law, effective data, the efficiency ratio and how each
one was read; ``load_reference_law`` is its one file read),
``analysis.noise`` (the seed-noise rule every "clear of noise" judgement uses),
``analysis.frame`` (the run and certification tables and their columns),
``analysis.generation`` (loss vs G, monotonicity, per-G efficiency),
``analysis.findings`` (the report's first section, in words).
Tables over those: ``analysis.fits`` (one law per group of a table; a fit in words and its JSON records),
``analysis.experiments`` (the paper's other experiments; ``diversity_table``
reads pool manifests), ``analysis.ensembles`` (loss vs K, asymptotes; ``load_ensemble_table`` and
``score_ensemble_studies`` are its adapters).
Adapters and outputs: ``analysis.ledger`` (reads ``search``), ``analysis.figures``,
``analysis.report`` (``build_report``), ``analysis.cli`` (``megadocs analysis ...``).
"""
