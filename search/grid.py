"""Grid arithmetic for local-optimality certification: points, neighbours, bounds, extensions.

A grid is an ordered set of axes, each an increasing tuple of values. A point picks one value
per axis. Its *neighbours* move exactly one axis one step up or down; where an axis ends there
is no neighbour, and that missing direction is a *bound* (a compute limit, not evidence that
the point is optimal). Axes with a single value are fixed, not searched: they have no
neighbours and are not reported as bounds.

A sweep may list values that can be appended beyond an axis's ends (``extend:``, issue 32):
:meth:`Grid.extended` builds the grid holding them, and remembers which values the user
*listed*. The certifier (``search/certify.py``) reaches an extension value only as the
neighbour of a best point on the edge reached so far, so a search whose best point never sits
on an edge runs none; a bound is hit only where the extension values ran out (``Bound.extended``).

>>> wide = Grid.from_mapping({"epochs": [16, 32, 64]}).extended({"epochs": AxisExtension(above=(128, 256))})
>>> wide.as_mapping(), wide.listed_grid().as_mapping()
({'epochs': [16, 32, 64, 128, 256]}, {'epochs': [16, 32, 64]})
>>> [(b.side.value, b.value, b.extended) for b in wide.bounds_hit({"epochs": 256})]
[('upper', 256, True)]

>>> grid = Grid.from_mapping({"lr": [1e-3, 3e-3, 1e-2], "epochs": [1, 2, 4]})
>>> [(n.axis, n.direction.value, n.point["epochs"]) for n in grid.neighbours({"lr": 3e-3, "epochs": 4})]
[('lr', 'down', 4), ('lr', 'up', 4), ('epochs', 'down', 2)]
>>> [(b.axis, b.side.value) for b in grid.bounds_hit({"lr": 3e-3, "epochs": 4})]
[('epochs', 'upper')]
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from functools import cached_property
from itertools import product
from typing import Any

from megadocs import compat
from megadocs.config import config_hash

__all__ = ["Grid", "Neighbour", "Bound", "Side", "format_bounds", "Direction", "Key", "AxisExtension", "Reach", "values_equal", "points_equal",
           "check_axis", "check_extension"]

Key = tuple[int, ...]
"""A point as one value index per axis, in the grid's axis order (hashable, cheap to compare)."""


class Direction(str, Enum):
    DOWN = "down"
    UP = "up"


class Side(str, Enum):
    """An end of an axis."""

    LOWER = "lower"
    UPPER = "upper"


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
    side: Side
    value: Any
    extended: bool = False
    """The edge is an extension value: the listed grid was extended to it and no value is left."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "side", Side(self.side))  # "upper" from a JSON record reads as Side.UPPER

    def to_dict(self) -> dict[str, Any]:
        return {"axis": self.axis, "side": self.side.value, "value": self.value, "extended": self.extended}

    @classmethod
    def parse(cls, data: Bound | Mapping[str, Any]) -> Bound:
        """A bound, or its JSON record ``{axis, side, value?, extended?}`` (``search status
        --json``, the certificate's ``bounds_hit``/``soft_bounds``) read back as one (older
        records without ``extended``: :data:`megadocs.compat.RECORDS`)."""
        if isinstance(data, Bound):
            return data
        data = compat.upgrade(compat.BOUND, data)
        return cls(data["axis"], Side(data["side"]), data["value"], bool(data["extended"]))

    @property
    def label(self) -> str:
        """``"epochs upper"``: the axis and side, as reports name a bound."""
        return f"{self.axis} {self.side.value}"


def format_bounds(bounds: Iterable[Bound | Mapping[str, Any]]) -> str:
    """The display form of bounds: their labels sorted, comma-separated ("" for none).

    >>> format_bounds([Bound("mix", Side.UPPER, 1.0), {"axis": "epochs", "side": "upper", "value": 64}])
    'epochs upper, mix upper'
    """
    return ", ".join(sorted(Bound.parse(bound).label for bound in bounds))


@dataclass(frozen=True)
class AxisExtension:
    """Values that may be appended beyond the ends of one axis (``extend: {epochs: {above: [...]}}``),
    each list in the order the values are appended, i.e. outward: ``below`` decreasing, ``above``
    increasing. Check one against its axis with :func:`check_extension`."""

    below: tuple[Any, ...] = ()
    above: tuple[Any, ...] = ()


Reach = tuple[tuple[int, int], ...]
"""Per axis, the span [first, last] of value indices a search has reached (see :meth:`Grid.reach`)."""


def values_equal(a: Any, b: Any) -> bool:
    """Grid values compare with a relative tolerance so that 3e-3 read from YAML or JSON matches."""
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def points_equal(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Two grid points are one: the same axes, each value equal by :func:`values_equal`.

    >>> points_equal({"lr": 0.003, "epochs": 8}, {"epochs": 8.0, "lr": 3e-3 * (1 + 1e-12)})
    True
    """
    return set(a) == set(b) and all(values_equal(a[axis], b[axis]) for axis in a)


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


def check_extension(values: Sequence[Any], extension: AxisExtension, where: str) -> tuple[Any, ...]:
    """The axis ``values`` with ``extension`` appended at both ends; the one validation of an
    extension. Raises ValueError naming ``where.below``/``where.above`` when a value does not
    continue the axis outward (not beyond its end, or not in appending order) or is no number."""
    values = tuple(values)
    if len(values) < 2 and (extension.below or extension.above):
        raise ValueError(f"{where}: the axis has the single value {list(values)} (fixed, not searched), so it has "
                         "no bound to extend; give it two or more values or drop the extension")
    for side, listed, edge, beyond in (("below", extension.below, values[0], lambda a, b: a < b),
                                       ("above", extension.above, values[-1], lambda a, b: a > b)):
        previous = edge
        for value in listed:
            check_axis([value], f"{where}.{side}")  # a finite number, not a boolean
            if not beyond(value, previous):
                word = "decrease" if side == "below" else "increase"
                if previous is edge:
                    raise ValueError(f"{where}.{side}: {value!r} is not {side} the grid's "
                                     f"{'first' if side == 'below' else 'last'} value {edge!r} (extension values "
                                     f"continue the axis beyond that end)")
                raise ValueError(f"{where}.{side}: values must {word} outward from the grid's end {edge!r}, in the "
                                 f"order they are appended; got {list(listed)}")
            previous = value
    return check_axis((*reversed(extension.below), *values, *extension.above), where)


@dataclass(frozen=True)
class Grid:
    """An ordered product of axes. Build with :meth:`from_mapping`; values must increase."""

    axes: tuple[tuple[str, tuple[Any, ...]], ...]
    listed: Reach | None = None
    """Per axis, the index span of the values the user listed; those outside it are extension
    values (:meth:`extended`). None: every value is listed."""

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

    @cached_property
    def fingerprint(self) -> str:
        """What identifies the grid's points: a hash of each axis's name and values (as floats, so
        8 and 8.0 are one value; axes by name, so their order in the file does not count). Two grids
        of one size but other values differ here: a recorded stop holds only on its own grid
        (:meth:`search.strategies.Stop.holds_on`).

        >>> a = Grid.from_mapping({"lr": [1e-3, 3e-3], "epochs": [4, 8]})
        >>> a.fingerprint == Grid.from_mapping({"epochs": [4.0, 8.0], "lr": [0.001, 0.003]}).fingerprint
        True
        >>> a.fingerprint == Grid.from_mapping({"lr": [1e-3, 3e-3], "epochs": [4, 16]}).fingerprint
        False
        """
        return config_hash({name: [float(v) for v in values] for name, values in self.axes})  # keys sorted

    # -- extensions ------------------------------------------------------------------------

    def extended(self, extensions: Mapping[str, AxisExtension], where: str = "extend") -> Grid:
        """This grid with the extension values appended (checked by :func:`check_extension`);
        the values listed now stay the *listed* grid. Raises ValueError naming ``{where}.{axis}``."""
        unknown = sorted(set(extensions) - set(self.names))
        if unknown:
            raise ValueError(f"{where}.{unknown[0]}: unknown axis (grid axes: {sorted(self.names)})")
        if not any(e.below or e.above for e in extensions.values()):
            return self
        axes, listed = [], []
        for (name, values), (first, last) in zip(self.axes, self.listed_spans):
            extension = extensions.get(name, AxisExtension())
            listed_values = values[first : last + 1]
            axes.append((name, check_extension(listed_values, extension, f"{where}.{name}")))
            listed.append((len(extension.below), len(extension.below) + len(listed_values) - 1))
        return Grid(tuple(axes), tuple(listed))

    @property
    def listed_spans(self) -> Reach:
        return self.listed or tuple((0, len(values) - 1) for _, values in self.axes)

    def listed_grid(self) -> Grid:
        """The grid the user listed, without extension values (baselines search only this)."""
        return Grid(tuple((name, values[first : last + 1])
                          for (name, values), (first, last) in zip(self.axes, self.listed_spans)))

    def extension_values(self, axis: str) -> tuple[Any, ...]:
        """The values of ``axis`` beyond the listed ones, lowest first."""
        index = self.names.index(axis)
        values = self.axes[index][1]
        first, last = self.listed_spans[index]
        return (*values[:first], *values[last + 1 :])

    def reach(self, keys: Iterable[Key], reached: Reach | None = None) -> Reach:
        """The listed spans (or the part ``reached`` before) widened to every key: the part of the
        grid a search has reached."""
        spans = [list(span) for span in (self.listed_spans if reached is None else reached)]
        for key in keys:
            for span, index in zip(spans, key):
                span[0], span[1] = min(span[0], index), max(span[1], index)
        return tuple((first, last) for first, last in spans)

    def within(self, key: Key, reach: Reach) -> bool:
        return all(first <= index <= last for index, (first, last) in zip(key, reach))

    def beyond(self, key: Key, reach: Reach) -> list[tuple[str, Side, Any, Any]]:
        """Each value of ``key``'s point that ``reach`` does not hold yet, and those between:
        ``(axis, side, value, after)`` in the order they are appended (``after``: the edge it
        extends)."""
        found = []
        for (name, values), index, (first, last) in zip(self.axes, key, reach):
            found += [(name, Side.UPPER, values[i], values[i - 1]) for i in range(last + 1, index + 1)]
            found += [(name, Side.LOWER, values[i], values[i + 1]) for i in range(first - 1, index - 1, -1)]
        return found

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

    def keys(self) -> Iterator[Key]:
        """Every grid point's key, first axis slowest (the order of :meth:`points`)."""
        return product(*(range(len(values)) for _, values in self.axes))

    def points(self) -> Iterator[dict[str, Any]]:
        """Every grid point, first axis slowest."""
        for key in self.keys():
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
        """Sides where the point sits on the grid's edge (searched axes only); ``extended`` where
        that edge is an extension value (the listed values ran out)."""
        centre = self.key(point)
        hits = []
        for axis, ((name, values), (first, last)) in enumerate(zip(self.axes, self.listed_spans)):
            if len(values) < 2:
                continue
            if centre[axis] == 0:
                hits.append(Bound(name, Side.LOWER, values[0], extended=first > 0))
            if centre[axis] == len(values) - 1:
                hits.append(Bound(name, Side.UPPER, values[-1], extended=last < len(values) - 1))
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
