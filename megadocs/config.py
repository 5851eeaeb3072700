"""Typed configs shared by every package: strict pydantic models, YAML loading, run identities.

Every config in the project is a :class:`StrictModel`: unknown fields are refused, values are
validated on load, and a failure becomes one :class:`~megadocs.errors.UserError` line such as
``sweep.yaml: grid.lr: expected a non-empty list of numbers, got []``. A YAML boolean is never
read as a number (pydantic's lax mode would make ``seed: true`` the seed 1):
``run.yaml: optim.lr: expected a number, got true``.
"""

from __future__ import annotations

import hashlib
import json
import re
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from megadocs.errors import FieldError, UserError

__all__ = ["StrictModel", "BOOL_AS_NUMBER", "load_yaml", "parse_config", "load_config", "config_hash", "dump_yaml",
           "format_validation_error", "validation_field_error"]

M = TypeVar("M", bound=BaseModel)


BOOL_AS_NUMBER = "bool_as_number"
"""The validation error type of a boolean given where a number is expected."""


class StrictModel(BaseModel):
    """Base of every config: forbids unknown fields, validates defaults and assignments, and
    refuses a boolean for a number anywhere in a field (``seed: true``, ``grid: {lr: [true]}``).

    >>> class Optim(StrictModel):
    ...     lr: float = 1.0
    ...     fused: bool = False
    >>> Optim.model_validate({"lr": 1, "fused": True})  # an int is a float; a bool is a bool
    Optim(lr=1.0, fused=True)
    >>> parse_config({"lr": True}, Optim, source="run.yaml")
    Traceback (most recent call last):
    megadocs.errors.FieldError: run.yaml: lr: expected a number, got true
    """

    model_config = ConfigDict(extra="forbid", validate_default=True, validate_assignment=True)

    @field_validator("*", mode="wrap")
    @classmethod
    def _no_bool_as_number(cls, value: Any, handler, info: ValidationInfo) -> Any:
        """Refuse a boolean where the field takes a number and no boolean, before its constraints
        (``ge=8`` would otherwise be the complaint); then validate it as declared and refuse it where
        a boolean inside it came out a number: pydantic's lax mode reads ``true`` as 1 (1.0) for an
        int (float), silently."""
        field = cls.model_fields.get(info.field_name or "")
        scalars = _scalar_types(field.annotation) if field is not None else set()
        if isinstance(value, bool) and scalars & {int, float} and bool not in scalars:
            raise _bool_as_number(value, (), scalars)
        result = handler(value)
        at = _bool_read_as_number(value, result)
        if at is not None:
            raise _bool_as_number(at[1], at[0], scalars)
        return result


def _bool_as_number(given: bool, at: tuple, scalars: set[type]) -> PydanticCustomError:
    """The error, saying "an integer" where the field's numbers are integers only."""
    expected = "an integer" if int in scalars and float not in scalars else "a number"
    return PydanticCustomError(BOOL_AS_NUMBER, "expected {expected}, got {got}",
                               {"expected": expected, "got": "true" if given else "false", "at": at})


def _scalar_types(annotation: Any) -> set[Any]:
    """The types a field admits at its top (through ``X | Y``, ``Optional`` and ``Annotated``):
    ``int | None`` -> {int, NoneType}; ``list[float]`` -> {list}."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        return set().union(*(_scalar_types(arg) for arg in get_args(annotation)))
    if origin is Annotated:
        return _scalar_types(get_args(annotation)[0])
    return {origin or annotation}


def _bool_read_as_number(given: Any, read: Any, at: tuple = ()) -> tuple[tuple, bool] | None:
    """Where (the path inside the field, and the boolean) a boolean in ``given`` became a number
    in the validated ``read``; None if nowhere. A nested model checks its own fields."""
    if isinstance(given, bool):
        return (at, given) if isinstance(read, (int, float)) and not isinstance(read, bool) else None
    if isinstance(read, BaseModel):
        return None
    if isinstance(given, Mapping) and isinstance(read, Mapping):
        pairs = [(key, value, read[key]) for key, value in given.items() if key in read]
    elif isinstance(given, (list, tuple)) and isinstance(read, (list, tuple)) and len(given) == len(read):
        pairs = [(index, value, item) for index, (value, item) in enumerate(zip(given, read))]
    else:
        return None
    for key, value, item in pairs:
        found = _bool_read_as_number(value, item, (*at, key))
        if found is not None:
            return found
    return None


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a mapping key given twice: PyYAML keeps the last silently, so
    a second ``optim:`` section would drop every field of the first without a word."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # "<<: *anchor", flattened by SafeLoader
                continue
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (each key once per mapping)", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: str | Path) -> Any:
    """Read a YAML file, turning a missing file, non-UTF-8 bytes or a syntax error into one UserError line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found (expected a YAML file)")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise UserError(
            f"{path}: not UTF-8 text: byte 0x{raw[exc.start]:02x} at offset {exc.start} (line {line}); "
            "save the file as UTF-8"
        ) from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{path}:{where}: invalid YAML: {problem}") from None


def format_validation_error(exc: ValidationError, source: str, *, model: type[BaseModel]) -> str:
    """One line: ``source: field.path: message, got X`` for the first error of validating ``model``
    (and a count of the rest); its parts: :func:`validation_field_error`."""
    return str(validation_field_error(exc, source, model=model))


def validation_field_error(exc: ValidationError, source: str, *, model: type[BaseModel]) -> UserError:
    """The one line of :func:`format_validation_error` as an error to raise: a
    :class:`~megadocs.errors.FieldError` (the field's dotted path, what is wrong with it, ``source``)
    where the line names a field, else a UserError."""
    field, problem = _field_and_problem(exc, model)
    return FieldError(field, problem, where=source) if field else UserError(f"{source}: {problem}")


def _field_and_problem(exc: ValidationError, model: type[BaseModel]) -> tuple[str, str]:
    """(``field.path``, ``message, got X``) for the first error of validating ``model`` (and a
    count of the rest); the field is empty for an error of ``model``'s own validator that names none.

    An unknown field goes first: a misspelt key (``strat:``) is also a missing one (``start``), and
    the misspelling is what the user has to see. An error of a model's own validator (a cross-field
    check of ``model`` or of a section inside it, `_names_a_model`) is its message as written, after
    the section's path: it names the fields and values itself, and the whole section as input would
    only repeat them."""
    errors = exc.errors()
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    field = ".".join(str(part) for part in first["loc"])
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown field"
    elif first["type"] == "missing":
        message = "required field is missing"
    elif first["type"] == "value_error":
        message = str(first["ctx"]["error"])  # the validator's own words, without pydantic's "Value error, "
        field, message = _named_in_full(model, first["loc"], message)
    elif first["type"] == BOOL_AS_NUMBER:  # the message says what was given, at the place inside the field
        field = ".".join(str(part) for part in (*first["loc"], *first["ctx"]["at"]))
    got = first.get("input")
    got_text = "" if first["type"] in ("missing", BOOL_AS_NUMBER) else f", got {got!r}"
    if first["type"] == "value_error" and (_names_a_model(model, first["loc"])
                                           or got_text.removeprefix(", ") in message):
        got_text = ""  # the validator's own words say what it got
    if len(got_text) > 80:
        got_text = got_text[:77] + "..."
    more = len(errors) - 1
    suffix = f" (and {more} more error{'s' if more > 1 else ''})" if more else ""
    return field, f"{message}{got_text}{suffix}"


def _named_in_full(model: type[BaseModel], loc: tuple, message: str) -> tuple[str, str]:
    """(the dotted field, the message) of a validator's error at ``loc``, named from the top.

    A validator's message begins with the field it is about, from where it stands: a model's
    (a section's) own validator names one of its fields (``preset: unknown preset 'x'`` at
    ``("model",)``, or a path inside one: ``extra.iid: ...``), which goes after the section's path
    (``model.preset``); a field's validator may repeat the field's own name, which is said once.
    Any other message is the validator's words after ``loc``.

    E.g. for `train.config.RunConfig`: ``("model",)`` and ``"preset: unknown preset 'x'"`` are
    ``model.preset`` and ``unknown preset 'x'``; ``("data", "document_mask")`` and
    ``"document_mask: expected off"`` are ``data.document_mask`` and ``expected off``
    (tests/megadocs/test_config.py).
    """
    path = ".".join(str(part) for part in loc)
    named, sep, rest = message.partition(": ")
    if not sep or " " in named:
        return path, message
    if loc and named == str(loc[-1]):
        return path, rest
    top = re.split(r"[.\[]", named, maxsplit=1)[0]
    if any(top in section.model_fields for section in _models_at(model, loc)):
        return ".".join(part for part in (path, named) if part), rest
    return path, message


def _names_a_model(model: type[BaseModel], loc: tuple) -> bool:
    """Does a validation error's ``loc`` name a model (``model`` itself, a section, an entry of a
    mapping or list of models) rather than a field's value? Its error is then the model's own
    validator's. (A member of ``A | B`` that pydantic names in ``loc`` by its schema is not followed.)
    E.g. for `train.config.RunConfig`: ``()``, ``("optim",)`` and ``("eval", "extra", "arxiv")`` do,
    ``("optim", "lr")`` does not (tests/megadocs/test_config.py).
    """
    return bool(_models_at(model, loc))


def _models_at(model: type[BaseModel], loc: tuple) -> list[type[BaseModel]]:
    """The models a validation error's ``loc`` may name (none: it names a field's value; see
    `_names_a_model`)."""
    candidates: list[Any] = [model]
    for part in loc:
        found: list[Any] = []
        for annotation in candidates:
            if _is_model(annotation):
                field = annotation.model_fields.get(part) if isinstance(part, str) else None
                found += _members(field.annotation) if field is not None else []
            elif get_origin(annotation) in (dict, Mapping) and isinstance(part, str):
                found += _members(get_args(annotation)[-1])
            elif get_origin(annotation) in (list, tuple) and isinstance(part, int):
                found += _members(get_args(annotation)[0])
        candidates = found
    return [annotation for annotation in candidates if _is_model(annotation)]


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _members(annotation: Any) -> list[Any]:
    """The types ``annotation`` admits (through ``X | Y``, ``Optional`` and ``Annotated``), generic
    aliases kept whole: ``list[A] | None`` -> [list[A], NoneType]."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        return [member for arg in get_args(annotation) for member in _members(arg)]
    if origin is Annotated:
        return _members(get_args(annotation)[0])
    return [annotation]


def parse_config(data: Any, model: type[M], *, source: str = "config") -> M:
    """Validate already-loaded data against ``model``; errors name ``source`` and the field."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{source}: expected a mapping of fields, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_field_error(exc, source, model=model) from None


def load_config(path: str | Path, model: type[M]) -> M:
    """Load and validate a YAML config file."""
    return parse_config(load_yaml(path), model, source=str(path))


def config_hash(config: BaseModel | dict, length: int = 16) -> str:
    """A stable identity: sha256 of the canonical JSON of the config (sorted keys)."""
    data = config.model_dump(mode="json") if isinstance(config, BaseModel) else config
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:length]


def dump_yaml(config: BaseModel | dict) -> str:
    data = config.model_dump(mode="json") if isinstance(config, BaseModel) else config
    return yaml.safe_dump(data, sort_keys=False)
