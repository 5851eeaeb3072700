"""Typed configs shared by every package: strict pydantic models, YAML loading, run identities.

Every config in the project is a :class:`StrictModel`: unknown fields are refused, values are
validated on load, and a failure becomes one :class:`~megadocs.errors.UserError` line such as
``sweep.yaml: grid.lr: expected a non-empty list of numbers, got []``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from megadocs.errors import UserError

__all__ = ["StrictModel", "load_yaml", "parse_config", "load_config", "config_hash", "dump_yaml",
           "format_validation_error"]

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base of every config: forbids unknown fields and validates defaults and assignments."""

    model_config = ConfigDict(extra="forbid", validate_default=True, validate_assignment=True)


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


def format_validation_error(exc: ValidationError, source: str) -> str:
    """One line: ``source: field.path: message, got X`` for the first error (and a count of the rest).

    An unknown field goes first: a misspelt key (``strat:``) is also a missing one (``start``), and
    the misspelling is what the user has to see."""
    errors = exc.errors()
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    field = ".".join(str(part) for part in first["loc"]) or "<top level>"
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown field"
    elif first["type"] == "missing":
        message = "required field is missing"
    elif first["type"] == "value_error":
        message = str(first["ctx"]["error"])  # the validator's own words, without pydantic's "Value error, "
    got = first.get("input")
    got_text = "" if first["type"] in ("missing",) else f", got {got!r}"
    if first["type"] == "value_error" and not first["loc"]:
        # a model validator's cross-field check: its message names the field and the value itself
        return f"{source}: {first['ctx']['error']}"
    if len(got_text) > 80:
        got_text = got_text[:77] + "..."
    more = len(errors) - 1
    suffix = f" (and {more} more error{'s' if more > 1 else ''})" if more else ""
    return f"{source}: {field}: {message}{got_text}{suffix}"


def parse_config(data: Any, model: type[M], *, source: str = "config") -> M:
    """Validate already-loaded data against ``model``; errors name ``source`` and the field."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{source}: expected a mapping of fields, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise UserError(format_validation_error(exc, source)) from None


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
