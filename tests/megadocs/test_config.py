"""Every config a user writes (each `StrictModel` in the project) refuses a YAML boolean for a
number in one line naming the field, and still reads an integer for a float."""

from __future__ import annotations

import importlib

import pytest
import yaml
from pydantic import TypeAdapter, ValidationError

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


PLACES = [True, [True], {"x": True}, {"x": [True]}]
"""Where a boolean may stand in a field: itself, in a list, in a mapping, in a mapping of lists."""


def _read_as_number(annotation, value) -> object | None:
    """What plain pydantic (lax mode, the annotation without the model) makes of the True in
    ``value``: a number there is the silent reading the models refuse; None if it refuses it or
    keeps a boolean."""
    try:
        read = TypeAdapter(annotation).validate_python(value)
    except ValidationError:
        return None
    while isinstance(value, (list, dict)):
        if not isinstance(read, type(value)):  # e.g. a mapping read as a nested model
            return None
        key = 0 if isinstance(value, list) else "x"
        value, read = value[key], read[key]
    return read if isinstance(read, (int, float)) and not isinstance(read, bool) else None


def _fields_reading_true_as_a_number() -> list[tuple[type[StrictModel], str, object, str]]:
    """(model, field, the value with True in it, the number expected) for every field of every
    config where pydantic alone would read a given boolean as a number."""
    fields = []
    for model in _models():
        for name, info in model.model_fields.items():
            for value in PLACES:
                if _read_as_number(info.annotation, value) is not None:
                    integer = _read_as_number(info.annotation, _replace_true(value, 0.5)) is None
                    fields.append((model, info.alias or name, value, "an integer" if integer else "a number"))
                    break
    return fields


def _replace_true(value, by):
    if isinstance(value, list):
        return [_replace_true(v, by) for v in value]
    if isinstance(value, dict):
        return {k: _replace_true(v, by) for k, v in value.items()}
    return by


FIELDS = _fields_reading_true_as_a_number()
IDS = [f"{model.__qualname__}.{field}" for model, field, _, _ in FIELDS]


def _errors_at(model, field: str, value) -> list[dict]:
    try:
        model.model_validate({field: value})
    except ValidationError as exc:
        return [e for e in exc.errors() if e["loc"][:1] == (field,)]
    return []


def test_the_configs_are_found():
    assert {"OptimConfig", "RunConfig", "GenerateOptions", "ExecutorConfig", "SlurmProfile", "ReferenceLaw", "Sweep",
            "ExtendConfig", "BaseTrainData"} <= {model.__qualname__ for model, _, _, _ in FIELDS}
    assert {type(value) for _, _, value, _ in FIELDS} == {bool, list, dict}  # fields of numbers, lists, mappings


@pytest.mark.parametrize(("model", "field", "value", "expected"), FIELDS, ids=IDS)
@pytest.mark.parametrize("given", [True, False])
def test_a_boolean_for_a_number_is_refused_naming_the_field_and_the_place_in_it(model, field, value, expected, given):
    [error] = _errors_at(model, field, _replace_true(value, given))
    assert error["type"] == BOOL_AS_NUMBER and error["loc"] == (field,), error
    assert error["msg"] == f"expected {expected}, got {str(given).lower()}"
    place, inner = [], value
    while isinstance(inner, (list, dict)):
        place.append(0 if isinstance(inner, list) else "x")
        inner = inner[place[-1]]
    assert error["ctx"]["at"] == tuple(place)


@pytest.mark.parametrize(("model", "field", "value", "expected"), FIELDS, ids=IDS)
def test_an_integer_for_a_number_is_still_read(model, field, value, expected):
    """YAML ``lr: 1`` is the float 1.0 (a field's bounds may still refuse the value 1)."""
    errors = _errors_at(model, field, _replace_true(value, 1))
    assert not [e for e in errors if e["type"] in (BOOL_AS_NUMBER, "float_type", "int_type")], errors


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
    assert format_validation_error(assigned.value, "x", model=RunConfig) == "x: seed: expected an integer, got true"


def test_a_models_own_validator_is_its_message_wherever_the_model_sits_and_a_fields_keeps_its_got():
    """A cross-field check of a section (nested, optional, a mapping's or a list's entry) names
    what it refuses: no ``, got {...the section...}`` after it; a field validator's
    error keeps the value it got."""
    from typing import Annotated

    from pydantic import AfterValidator, model_validator

    def no_x(value: str) -> str:
        if value == "x":
            raise ValueError("name: not x")
        return value

    class Pair(StrictModel):
        low: int = 0
        high: int = 1
        name: Annotated[str, AfterValidator(no_x)] = "a"

        @model_validator(mode="after")
        def _ordered(self):
            if self.low >= self.high:
                raise ValueError(f"low={self.low} must be below high={self.high}")
            return self

    class Top(StrictModel):
        pair: Pair = Pair()
        maybe: Pair | None = None
        named: dict[str, Pair] = {}
        listed: list[Pair] = []

    bad = {"low": 2, "high": 1}
    for data, where in [({"pair": bad}, "pair"), ({"maybe": bad}, "maybe"), ({"named": {"a": bad}}, "named.a"),
                        ({"listed": [{}, bad]}, "listed.1")]:
        with pytest.raises(UserError) as info:
            parse_config(data, Top, source="t.yaml")
        assert str(info.value) == f"t.yaml: {where}: low=2 must be below high=1"
    with pytest.raises(UserError) as info:
        parse_config({"pair": {"name": "x"}}, Top, source="t.yaml")
    assert str(info.value) == "t.yaml: pair.name: not x, got 'x'"  # the field named once


def test_a_sections_own_check_that_names_its_field_is_named_by_the_full_dotted_path_at_any_depth():
    """A section's validator that begins with one of its fields (``high: ...``) is named from the
    top (``deep.a.1.high: ...``), wherever the section sits; a name that is no field of it is
    left in its words."""
    from pydantic import model_validator

    class Pair(StrictModel):
        low: int = 0
        high: int = 1

        @model_validator(mode="after")
        def _ordered(self):
            if self.low >= self.high:
                raise ValueError(f"high: {self.high} is not above low {self.low}")
            if self.low < 0:
                raise ValueError("width: below 0")
            return self

    class Middle(StrictModel):
        pair: Pair = Pair()

    class Top(StrictModel):
        middle: Middle = Middle()
        deep: dict[str, list[Pair]] = {}

    bad = {"low": 2, "high": 1}
    for data, where in [({"middle": {"pair": bad}}, "middle.pair"), ({"deep": {"a": [{}, bad]}}, "deep.a.1")]:
        with pytest.raises(UserError) as info:
            parse_config(data, Top, source="t.yaml")
        assert str(info.value) == f"t.yaml: {where}.high: 1 is not above low 2"
    with pytest.raises(UserError) as info:
        parse_config({"middle": {"pair": {"low": -1}}}, Top, source="t.yaml")
    assert str(info.value) == "t.yaml: middle.pair: width: below 0"


def _result_parsers():
    """(parser(data, source), a record it reads, a field to spoil) for each reader of a result file
    (metrics.json, a pool's manifest.json, an ensemble report), taken from its owning module."""
    from pathlib import Path

    from megadocs.formats import PoolKind, RunMetrics
    from megadocs.pools import POOL_FORMAT, parse_manifest
    from train.ensemble_report import EnsembleReport

    return [
        (lambda data, source: RunMetrics.parse(data, source=source), {"status": "completed", "val_loss": 3.0},
         "val_loss"),
        (lambda data, source: parse_manifest(data, Path(source)),
         {"format": POOL_FORMAT, "kind": next(iter(PoolKind)).value, "g": 1, "num_shards": 1}, "g"),
        (lambda data, source: EnsembleReport.parse(data, source=source),
         {"members": ["a", "b"], "sets": {"iid": [{"k": 1, "loss": 3.4}]}}, "members"),
    ]  # fmt: skip


@pytest.mark.parametrize(("parse", "record", "field"), _result_parsers())
def test_a_result_files_bad_field_is_one_line_naming_the_file_the_field_and_the_value(parse, record, field):
    """Every result parser says its first error as `format_validation_error` does: the file, the
    field, what was expected and the value given (each once had a wording of its own, without the value)."""
    parse(record, "run/result.json")  # the record reads: the spoilt field is its only error
    bad = {"spoilt": [1]}
    with pytest.raises(UserError) as caught:
        parse({**record, field: bad}, "run/result.json")
    line = str(caught.value)
    assert "\n" not in line and line.startswith(f"run/result.json: {field}: "), line
    assert f", got {bad!r}" in line, line
