"""Every config a user writes (each `StrictModel` in the project) refuses a YAML boolean for a
number in one line naming the field, and still reads an integer for a float."""

from __future__ import annotations

import importlib
import types
from typing import Annotated, Union, get_args, get_origin

import pytest
import yaml
from pydantic import ValidationError

from megadocs.config import BOOL_AS_NUMBER, StrictModel, format_validation_error, parse_config
from megadocs.errors import UserError
from tests.tree import ROOT, module_files


def _models() -> list[type[StrictModel]]:
    """Every StrictModel the packages define (the modules that name it, imported), base excluded."""
    for module, path in module_files(ROOT).items():
        if "StrictModel" in path.read_text():
            importlib.import_module(module)
    found, todo = [], [StrictModel]
    while todo:
        for sub in todo.pop().__subclasses__():
            found.append(sub)
            todo.append(sub)
    return sorted({m for m in found if m.__module__.split(".")[0] != "tests"}, key=lambda m: m.__qualname__)


def _numeric_fields() -> list[tuple[type[StrictModel], str, type]]:
    """(model, field, the number type it takes) for every field that takes a number and no boolean."""
    from megadocs.config import _scalar_types

    fields = []
    for model in _models():
        for name, info in model.model_fields.items():
            scalars = _scalar_types(info.annotation)
            if bool not in scalars and scalars & {int, float}:
                fields.append((model, info.alias or name, float if float in scalars else int))
    return fields


def _boolean_inside(annotation):
    """A value of ``annotation`` (a list or mapping, maybe in a union) holding ``True`` where it
    takes a number, or None."""
    from megadocs.config import _scalar_types

    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (Union, types.UnionType):
        return next((v for v in map(_boolean_inside, args) if v is not None), None)
    if origin is Annotated:
        return _boolean_inside(args[0])
    if origin in (list, dict):
        scalars = _scalar_types(args[-1])
        value = True if bool not in scalars and scalars & {int, float} else _boolean_inside(args[-1])
        if value is not None:
            return [value] if origin is list else {"x": value}
    return None


def _container_fields() -> list[tuple[type[StrictModel], str, object]]:
    """(model, field, a value with True inside) for every field holding numbers in a list or mapping."""
    fields = []
    for model in _models():
        for name, info in model.model_fields.items():
            value = _boolean_inside(info.annotation)
            if value is not None:
                fields.append((model, info.alias or name, value))
    return fields


NUMERIC_FIELDS = _numeric_fields()
CONTAINER_FIELDS = _container_fields()


def _errors_at(model, field: str, value) -> list[dict]:
    try:
        model.model_validate({field: value})
    except ValidationError as exc:
        return [e for e in exc.errors() if e["loc"][:1] == (field,)]
    return []


def test_the_configs_are_found():
    names = {model.__qualname__ for model, _, _ in NUMERIC_FIELDS}
    assert {"OptimConfig", "RunConfig", "GenerateOptions", "ExecutorConfig", "SlurmProfile", "ReferenceLaw"} <= names
    assert {"Sweep", "ExtendConfig"} <= {model.__qualname__ for model, _, _ in CONTAINER_FIELDS}


@pytest.mark.parametrize(("model", "field", "number"), NUMERIC_FIELDS,
                         ids=[f"{m.__qualname__}.{f}" for m, f, _ in NUMERIC_FIELDS])
@pytest.mark.parametrize("given", [True, False])
def test_a_boolean_for_a_number_is_refused_naming_the_field(model, field, number, given):
    [error] = _errors_at(model, field, given)
    assert error["type"] == BOOL_AS_NUMBER and error["loc"] == (field,)
    expected = "an integer" if number is int else "a number"
    assert error["msg"] == f"expected {expected}, got {str(given).lower()}"


@pytest.mark.parametrize(("model", "field"), [(m, f) for m, f, number in NUMERIC_FIELDS if number is float],
                         ids=[f"{m.__qualname__}.{f}" for m, f, number in NUMERIC_FIELDS if number is float])
def test_an_integer_for_a_float_is_still_a_number(model, field):
    """YAML ``lr: 1`` is the float 1.0 (a field's bounds may still refuse the value 1)."""
    assert not [e for e in _errors_at(model, field, 1) if e["type"] in (BOOL_AS_NUMBER, "float_type")]


@pytest.mark.parametrize(("model", "field", "value"), CONTAINER_FIELDS,
                         ids=[f"{m.__qualname__}.{f}" for m, f, _ in CONTAINER_FIELDS])
def test_a_boolean_for_a_number_inside_a_list_or_mapping_is_refused_where_it_is(model, field, value):
    [error] = _errors_at(model, field, value)
    assert error["type"] == BOOL_AS_NUMBER and error["msg"].endswith(", got true"), error
    place, inner = [], value
    while not isinstance(inner, bool):
        key = 0 if isinstance(inner, list) else "x"
        place.append(key)
        inner = inner[key]
    assert error["ctx"]["at"] == tuple(place)


def test_the_line_names_the_place_inside_a_field(tmp_path):
    """A boolean inside a list or mapping is named where it is, in a real YAML file."""
    from search.sweep import load_sweep

    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "grid": {"lr": [0.001, True]}, "start": {"lr": 0.001},
                                    "certifications": [{"name": "a", "fixed": {"method": "real"}}]}))
    with pytest.raises(UserError) as refused:
        load_sweep(path)
    assert str(refused.value) == f"{path}: grid.lr.1: expected a number, got true"


def test_a_train_config_reads_true_as_no_seed_and_1_as_a_learning_rate(tmp_path):
    from train.config import RunConfig
    from train.train_cli import load_run_config

    path = tmp_path / "run.yaml"
    path.write_text("data: {store: s}\noptim: {lr: 1}\nseed: yes\n")  # YAML 1.1: yes is true
    with pytest.raises(UserError, match=rf"^{path}: seed: expected an integer, got true$"):
        load_run_config(path)
    path.write_text("data: {store: s}\noptim: {lr: 1}\n")
    assert load_run_config(path).optim.lr == 1.0
    with pytest.raises(UserError, match=r"optim\.lr: expected a number, got true$"):
        load_run_config(path, ["optim.lr=true"])
    config = parse_config({"data": {"store": "s"}}, RunConfig)
    with pytest.raises(ValidationError) as assigned:  # in code too (validate_assignment)
        config.seed = True
    assert format_validation_error(assigned.value, "x") == "x: seed: expected an integer, got true"
