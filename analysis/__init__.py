"""From a sweep's search ledger to tables, scaling-law fits, data efficiency, figures and a report.

Pure cores (checkable against paper.md in one read each):
``analysis.scaling`` (L(x) = E + A x^(-alpha) fits, bootstrap, identifiability warnings),
``analysis.efficiency`` (reference real-data law, effective data, efficiency ratio),
``analysis.frame`` (the run and certification tables and their columns),
``analysis.generation`` (loss vs G, monotonicity, per-G efficiency),
``analysis.ensembles`` (loss vs K, asymptotes).
Adapters and outputs: ``analysis.ledger`` (reads ``search``), ``analysis.figures``,
``analysis.report`` (``build_report``), ``analysis.cli`` (``megadocs analysis ...``).
"""
