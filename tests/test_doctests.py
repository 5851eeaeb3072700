"""The ``>>>`` examples in the packages' docstrings run, so the documentation cannot rot.

Every module of the packages whose source holds an example is imported and its examples run with
`doctest` (``# doctest: +SKIP`` marks an example that needs data or a model this test lacks).
"""

from __future__ import annotations

import doctest
import importlib
import io

import pytest

from tests.tree import ROOT, module_files

MODULES = sorted(name for name, path in module_files(ROOT).items() if ">>>" in path.read_text())


def test_examples_are_found():
    assert {"train.streams", "search.grid", "analysis.scaling", "gen.assemble"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    output = io.StringIO()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in doctest.DocTestFinder().find(module, name):
        runner.run(test, out=output.write)
    assert runner.failures == 0, output.getvalue()
