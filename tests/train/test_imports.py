"""A GPU node needs only torch, transformers, pydantic, numpy and pyyaml to train.

A fresh process is given exactly those packages and what they require: every other installed
distribution's modules (optuna, submitit, pandas, scipy, tensorboard, vllm, ...) are made absent
(a ``None`` entry in ``sys.modules``: ``import`` fails and ``importlib.util.find_spec`` answers
None, as for a package that is not installed). It then imports the training modules and trains a
tiny run through `megadocs train`.
"""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TRAINING_NEEDS = ("torch", "transformers", "pydantic", "numpy", "pyyaml")
OWN = "megadocs"  # this project's own modules; its other requirements are what is left out

BLOCKER = """
import sys
for name in {blocked!r}:
    sys.modules[name] = None
"""


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_closure(roots) -> set[str]:
    """The distributions `roots` need, transitively (markers kept: over-inclusive, so never too strict)."""
    seen, todo = set(), [_normal(name) for name in roots]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = importlib.metadata.distribution(name).requires or []
        except importlib.metadata.PackageNotFoundError:
            continue
        todo += [_normal(re.match(r"[A-Za-z0-9_.\-]+", req)[0]) for req in requires if "extra ==" not in req]
    return seen


def _blocked_modules() -> set[str]:
    allowed = _requirement_closure(TRAINING_NEEDS) | {OWN}
    return {module for module, dists in importlib.metadata.packages_distributions().items()
            if not module.startswith("_") and not any(_normal(dist) in allowed for dist in dists)}  # fmt: skip


def test_training_imports_and_runs_without_the_other_dependencies(micro_store, tmp_path):
    blocked = _blocked_modules()
    assert {"submitit", "optuna", "pandas", "scipy", "tensorboard"} <= blocked
    assert not {"torch", "transformers", "pydantic", "numpy", "yaml", "train"} & blocked
    config = tmp_path / "run.yaml"
    config.write_text(f"data: {{store: {micro_store}, context: 64, real_epochs: 1}}\n"
                      "optim: {batch_size: 8, micro_batch_size: 8}\neval: {val_windows: 2}\ndevice: cpu\n")
    script = BLOCKER.format(blocked=sorted(blocked)) + textwrap.dedent(f"""
        import runpy
        import train.data, train.loop, train.loss, train.plan, train.sharding, train.compile
        sys.argv = ["megadocs", "train", {str(config)!r}, "--out", {str(tmp_path / "run")!r}]
        runpy.run_module("megadocs", run_name="__main__")
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "run" / "metrics.json").is_file()
    assert "tensorboard package is not installed" in result.stderr  # the curves stay in log.jsonl
