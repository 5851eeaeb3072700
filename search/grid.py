"""Grid arithmetic for local-optimality certification: points, neighbours and bounds.

A grid is an ordered set of axes, each an increasing tuple of values. A point picks one value
per axis. Its *neighbours* move exactly one axis one step up or down; where an axis ends there
is no neighbour, and that missing direction is a *bound* (a compute limit, not evidence that
the point is optimal). Axes with a single value are fixed, not searched: they have no
neighbours and are not reported as bounds.

>>> grid = Grid.from_mapping({"lr": [1e-3, 3e-3, 1e-2], "epochs": [1, 2, 4]})
>>> [(n.axis, n.direction.value, n.point["epochs"]) for n in grid.neighbours({"lr": 3e-3, "epochs": 4})]
[('lr', 'down', 4), ('lr', 'up', 4), ('epochs', 'down', 2)]
>>> [(b.axis, b.side) for b in grid.bounds_hit({"lr": 3e-3, "epochs": 4})]
[('epochs', 'upper')]
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from itertools import product
from typing import Any

__all__ = ["Grid", "Neighbour", "Bound", "Direction", "Key", "values_equal", "check_axis"]

Key = tuple[int, ...]
"""A point as one value index per axis, in the grid's axis order (hashable, cheap to compare)."""


class Direction(str, Enum):
    DOWN = "down"
    UP = "up"


@dataclass(frozen=True)
class Neighbour:
    """The point one step along ``axis`` in ``direction`` from some centre."""

    axis: str
    direction: Direction
    point: dict[str, Any]
    key: Key


@dataclass(frozen=True)
class Bound:
    """A side of an axis where the grid ends at the point: no neighbour exists there."""

    axis: str
    side: str  # "lower" | "upper"
    value: Any

    def to_dict(self) -> dict[str, Any]:
        return {"axis": self.axis, "side": self.side, "value": self.value}


def values_equal(a: Any, b: Any) -> bool:
    """Grid values compare with a relative tolerance so that 3e-3 read from YAML or JSON matches."""
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def check_axis(values: Sequence[Any], where: str) -> tuple[Any, ...]:
    """The one validation of an axis's values (used by :class:`Grid` and the sweep file).

    Values must be non-empty, strictly increasing, and numbers that are finite and not booleans
    (YAML's ``yes``/``true`` read as booleans); neighbouring values must stay distinct under the
    tolerance of :func:`values_equal`, or two grid values would be one key. Raises ValueError
    naming ``where``, the value and what was expected.
    """
    values = tuple(values)
    if not values:
        raise ValueError(f"{where}: empty list (expected at least one value)")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where}: {value!r} is not a number (expected finite numbers, e.g. [1e-3, 3e-3])")
        if not math.isfinite(value):
            raise ValueError(f"{where}: {value!r} is not a finite number")
    for a, b in zip(values, values[1:]):
        if not a < b:
            raise ValueError(f"{where}: values must be strictly increasing, got {list(values)}")
        if values_equal(a, b):
            raise ValueError(f"{where}: {a!r} and {b!r} are the same grid value (they differ by less than "
                             f"the matching tolerance, rel 1e-9); drop one")
    return values


@dataclass(frozen=True)
class Grid:
    """An ordered product of axes. Build with :meth:`from_mapping`; values must increase."""

    axes: tuple[tuple[str, tuple[Any, ...]], ...]

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Sequence[Any]], where: str = "grid") -> Grid:
        """Raises ValueError naming ``{where}.{axis}`` for a bad axis (see :func:`check_axis`)."""
        if not mapping:
            raise ValueError(f"{where}: empty grid (expected at least one axis with values)")
        return cls(tuple((name, check_axis(values, f"{where}.{name}")) for name, values in mapping.items()))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.axes)

    @property
    def size(self) -> int:
        return math.prod(len(values) for _, values in self.axes)

    def as_mapping(self) -> dict[str, list[Any]]:
        return {name: list(values) for name, values in self.axes}

    def key(self, point: Mapping[str, Any]) -> Key:
        """The index key of a point. Raises KeyError/ValueError naming the axis if it is off the grid."""
        if set(point) != set(self.names):
            raise ValueError(f"point axes {sorted(point)} differ from grid axes {sorted(self.names)}")
        key = []
        for name, values in self.axes:
            matches = [i for i, v in enumerate(values) if values_equal(v, point[name])]
            if not matches:
                raise ValueError(f"{name}: {point[name]!r} is not a grid value (expected one of {list(values)})")
            key.append(matches[0])
        return tuple(key)

    def point(self, key: Key) -> dict[str, Any]:
        return {name: values[i] for (name, values), i in zip(self.axes, key)}

    def contains(self, point: Mapping[str, Any]) -> bool:
        try:
            self.key(point)
        except ValueError:
            return False
        return True

    def points(self) -> Iterator[dict[str, Any]]:
        """Every grid point, first axis slowest."""
        for key in product(*(range(len(values)) for _, values in self.axes)):
            yield self.point(key)

    def neighbours(self, point: Mapping[str, Any]) -> list[Neighbour]:
        """The existing one-step neighbours, axis by axis in grid order, down before up."""
        centre = self.key(point)
        found = []
        for axis, (name, values) in enumerate(self.axes):
            for step, direction in ((-1, Direction.DOWN), (1, Direction.UP)):
                index = centre[axis] + step
                if 0 <= index < len(values):
                    key = centre[:axis] + (index,) + centre[axis + 1 :]
                    found.append(Neighbour(name, direction, self.point(key), key))
        return found

    def bounds_hit(self, point: Mapping[str, Any]) -> list[Bound]:
        """Sides where the point sits on the grid's edge (searched axes only)."""
        centre = self.key(point)
        hits = []
        for axis, (name, values) in enumerate(self.axes):
            if len(values) < 2:
                continue
            if centre[axis] == 0:
                hits.append(Bound(name, "lower", values[0]))
            if centre[axis] == len(values) - 1:
                hits.append(Bound(name, "upper", values[-1]))
        return hits

    def nearest(self, point: Mapping[str, Any], fallback: Mapping[str, Any]) -> dict[str, Any]:
        """Project a point (e.g. another certification's optimum) onto this grid.

        Axes the point lacks take ``fallback``'s value; numeric values snap to the nearest grid
        value in log space where all values are positive (lr, wd), linearly otherwise.
        """
        projected = {}
        for name, values in self.axes:
            value = point.get(name, fallback[name])
            numeric = all(isinstance(v, (int, float)) for v in (*values, value))
            if not numeric:
                projected[name] = value if value in values else fallback[name]
                continue
            if all(v > 0 for v in (*values, value)):
                projected[name] = min(values, key=lambda v: abs(math.log(v) - math.log(value)))
            else:
                projected[name] = min(values, key=lambda v: abs(v - value))
        return projected
