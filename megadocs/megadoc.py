"""The megadoc rule: which pieces make up the synthetic documents of one real document, in which
order (paper.md, "Synthetic data algorithms"). One screen, no I/O.

For one real document and its G selected generations (slot ``s`` = the s-th of them):

==============  ===============================================================================
algorithm       documents (a document's segments are joined with EOS; a segment's parts are
                concatenated as they are)
==============  ===============================================================================
simple          every generation alone, then the real document alone (G+1 documents)
stitched        one: generation 0, ..., generation G-1, then the real document (real LAST)
stitched-first  one: the real document, then the generations
stitched-none   one: the generations only
latent          one, of a single segment: real piece 0, thought 0, real piece 1, ..., thought
                G-1, real piece G, each thought in ``<think>`` ... ``</think>``
self-distill    every generation (an unconditional sample) alone; no real document
==============  ===============================================================================

Real piece ``p`` is the real text from thought ``p-1``'s split point (the start for p = 0) to
thought ``p``'s (the end for p = G), so the pieces of a document concatenate to its text.

The empty rule: an empty generation (whitespace only, :func:`megadocs.pools.is_empty`) is left
out; a segment left without parts, and a document left without segments, disappear. A left-out
thought leaves its neighbouring real pieces adjacent: the text is not cut there.

``gen/assemble.py`` maps this rule over text (:func:`render_segment`) and ``train/pool_tokens.py``
over token ranges; both iterate :data:`megadocs.formats.ALGORITHMS` through :func:`layout`.

Example:
    >>> megadocs("stitched", 2, empty={1})
    (((Generation(slot=0),), (Real(),)),)
    >>> [len(segment) for (segment,) in megadocs("latent", 2)]
    [5]
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

from megadocs.formats import Algorithm

__all__ = ["RULE_VERSION", "THINK_OPEN", "THINK_CLOSE", "Real", "RealPiece", "Generation", "Thought", "Part",
           "Segment", "Document", "layout", "kept_parts", "megadocs", "render_segment"]

RULE_VERSION = "megadoc-rule/2"
"""Part of every synthetic run's identity: change it with the rule (or with how a segment's text
is rendered or tokenized)."""
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


@dataclass(frozen=True)
class Real:
    """The whole real document."""


@dataclass(frozen=True)
class RealPiece:
    """Real text from the split point of thought ``index - 1`` to that of thought ``index``."""

    index: int


@dataclass(frozen=True)
class Generation:
    """The ``slot``-th selected generation (a rephrase or a sample), as written."""

    slot: int


@dataclass(frozen=True)
class Thought:
    """The ``slot``-th selected thought, wrapped in ``<think>`` ... ``</think>``."""

    slot: int


Part = Real | RealPiece | Generation | Thought
Segment = tuple[Part, ...]
Document = tuple[Segment, ...]


def layout(algorithm: Algorithm, g: int) -> tuple[Document, ...]:
    """The documents of one real document and ``g`` generations, before the empty rule."""
    generations = tuple((Generation(s),) for s in range(g))
    if algorithm == "simple":
        return tuple((segment,) for segment in generations) + (((Real(),),),)
    if algorithm == "self-distill":
        return tuple((segment,) for segment in generations)
    if algorithm == "stitched":
        return (generations + ((Real(),),),)
    if algorithm == "stitched-first":
        return (((Real(),),) + generations,)
    if algorithm == "stitched-none":
        return (generations,)
    if algorithm == "latent":
        parts = [part for s in range(g) for part in (RealPiece(s), Thought(s))]
        return ((tuple(parts) + (RealPiece(g),),),)
    raise ValueError(f"algorithm: no megadoc rule for {algorithm!r}")


def kept_parts(segment: Segment, empty: Collection[int]) -> Segment:
    """``segment`` without the generations and thoughts whose slot is in ``empty``."""
    return tuple(p for p in segment if not (isinstance(p, (Generation, Thought)) and p.slot in empty))


def megadocs(algorithm: Algorithm, g: int, empty: Collection[int] = ()) -> tuple[Document, ...]:
    """:func:`layout` with the empty rule applied (``empty``: the slots of empty generations)."""
    documents = []
    for document in layout(algorithm, g):
        segments = tuple(kept for segment in document if (kept := kept_parts(segment, empty)))
        if segments:
            documents.append(segments)
    return tuple(documents)


def render_segment(segment: Segment, real: str, generation: Callable[[int], str],
                   split_char: Callable[[int], int]) -> str:
    """A segment's text: ``real`` is the real document, ``generation(slot)`` a generation's text,
    ``split_char(slot)`` the character of ``real`` where thought ``slot`` goes.

    >>> render_segment(megadocs("latent", 2)[0][0], "abcd", ["x", "y"].__getitem__, [1, 3].__getitem__)
    'a<think>x</think>bc<think>y</think>d'
    """
    pieces = [part.index for part in segment if isinstance(part, RealPiece)]
    last = max(pieces, default=-1)  # the piece that runs to the end of the text

    def cut(index: int) -> int:
        return 0 if index < 0 else len(real) if index == last else split_char(index)

    out = []
    for part in segment:
        if isinstance(part, Real):
            out.append(real)
        elif isinstance(part, Generation):
            out.append(generation(part.slot))
        elif isinstance(part, Thought):
            out += [THINK_OPEN, generation(part.slot), THINK_CLOSE]
        else:
            out.append(real[cut(part.index - 1):cut(part.index)])
    return "".join(out)
