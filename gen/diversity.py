"""Does generating more add new text? Cheap diversity measures of a pool, per G' <= G.

The model-collapse question (Kang et al. 2025): if the G rephrases of a document repeat each
other, a larger G adds epochs of the same text rather than new data. These measures are computed
on word n-grams (lower-cased, whitespace split) over a deterministic sample of documents and, for
each G' the pool serves, the generations that make up G' (:func:`megadocs.pools.pool_generations`,
the rule assembly and training follow): a rephrase pool's first G' for G' = 1, 2, 4, ... up to
its G; a thoughts pool's thoughts at G''s split points, for every G' with (G'+1) dividing (G+1)
(:func:`megadocs.pools.served_gs`: 2, 10 and 32 for G = 32):

- ``distinct_n``: unique n-grams / all n-grams over the sample's generations (higher = more varied);
- ``compression_ratio``: zlib-compressed / raw bytes of each document's G' generations joined,
  averaged over documents (lower = more repetition across a document's generations);
- ``source_overlap``: share of a generation's n-grams that occur in its source document (copying);
- ``cross_generation_overlap``: mean Jaccard similarity of the n-gram sets of two generations of
  the same document (0 for G' = 1: no pair).

They are stored under ``diversity`` in the pool manifest (not an identity field: adding them leaves
the pool's runs valid) by ``megadocs gen diversity --pool POOL``, as the record
:class:`megadocs.pools.PoolDiversity` (its owner: analysis reads it from there and draws it against G).

Example:
    >>> m = measure([("the cat sat on the mat", ["a cat sat on a mat", "the cat sat on the mat"])], n=2)
    >>> m.distinct_n, m.cross_generation_overlap > 0
    (0.8, True)
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path

from megadocs import pools
from megadocs.errors import UserError
from megadocs.formats import PoolKind
from megadocs.shards import manifest_lock

__all__ = ["NGRAM", "DEFAULT_MAX_DOCS", "measure", "g_values", "measured_gs", "pool_diversity",
           "write_pool_diversity"]

NGRAM = 3
DEFAULT_MAX_DOCS = 1000


def _ngrams(text: str, n: int) -> list[tuple[str, ...]]:
    words = text.lower().split()
    return [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]


def _jaccard(a: set, b: set) -> float:
    union = len(a | b)
    return len(a & b) / union if union else 0.0


def measure(documents: Iterable[tuple[str, Sequence[str]]], *, n: int = NGRAM) -> pools.DiversityMeasures:
    """The four measures over ``(source text, generations)`` pairs (see the module docstring).

    A measure with nothing to measure (no n-grams, no pairs) is None, never NaN.
    """
    total = unique = 0
    seen: set[tuple[str, ...]] = set()
    ratios, copies, pairs = [], [], []
    for source, generations in documents:
        source_grams = set(_ngrams(source, n))
        gram_sets = []
        for text in generations:
            grams = _ngrams(text, n)
            total += len(grams)
            seen.update(grams)
            gram_sets.append(set(grams))
            if grams:
                copies.append(sum(g in source_grams for g in grams) / len(grams))
        joined = "\n".join(generations).encode()
        if joined:
            ratios.append(len(zlib.compress(joined, 6)) / len(joined))
        pairs += [_jaccard(a, b) for a, b in itertools.combinations(gram_sets, 2)]
    unique = len(seen)

    def mean(values: list[float]) -> float | None:
        return sum(values) / len(values) if values else None

    return pools.DiversityMeasures(
        distinct_n=unique / total if total else None,
        compression_ratio=mean(ratios),
        source_overlap=mean(copies),
        cross_generation_overlap=mean(pairs) if pairs else (0.0 if total else None),
    )


def g_values(g: int) -> list[int]:
    """1, 2, 4, ... up to and including ``g``."""
    values = [1 << k for k in range(g.bit_length()) if 1 << k <= g]
    return values if values[-1] == g else [*values, g]


def _sample(pool: Path, manifest: pools.PoolManifest, max_docs: int) -> list[tuple[str, list[str | None]]]:
    """(source text, generation texts by gen_index, None for an empty one) for every k-th document
    of the source."""
    # How many documents the pool holds: its statistics (a rephrase or thoughts pool records no
    # n_docs, only a sample pool does); counted from the source for a pool without them.
    n_docs = manifest.statistics.documents if manifest.statistics is not None else 0
    n_docs = n_docs or manifest.n_docs or sum(1 for _ in pools.iter_shard_documents(manifest))
    stride = max(1, -(-n_docs // max_docs))
    sample = []
    for k, (doc, rows) in enumerate(pools.iter_pool_documents(pool, manifest)):
        if k % stride == 0:
            sample.append((doc.text, [None if row.empty else row.text for row in rows]))
        if len(sample) >= max_docs:
            break
    return sample


def measured_gs(kind: PoolKind | str, pool_g: int) -> list[int]:
    """The G' at which a pool is measured: every G' a thoughts pool serves (few: 2, 10, 32 for
    G = 32); 1, 2, 4, ... and G for a rephrase pool (which serves every G' <= G; doubling is
    enough to draw the curve and keeps the cost at log2 G measures).

    >>> measured_gs("rephrase", 6), measured_gs("thoughts", 7), measured_gs("thoughts", 4)
    ([1, 2, 4, 6], [1, 3, 7], [4])
    """
    return pools.served_gs(kind, pool_g) if PoolKind(kind) == PoolKind.THOUGHTS else g_values(pool_g)


def _selected(generations: list[str | None], indices: list[int]) -> list[str]:
    """The generations at ``indices`` (those that make up one G'), the empty ones left out."""
    return [text for text in (generations[k] for k in indices) if text is not None]


def pool_diversity(pool: str | Path, *, max_docs: int = DEFAULT_MAX_DOCS, n: int = NGRAM) -> pools.PoolDiversity:
    """Measures per G' (:func:`measured_gs`) for a complete rephrase or thoughts pool."""
    pool = Path(pool)
    if max_docs < 1:
        raise UserError(f"--max-docs: expected >= 1, got {max_docs}")
    manifest = pools.read_manifest(pool)
    if not manifest.has_sources:
        raise UserError(f"--pool: {pool} holds unconditional samples; diversity vs G needs a rephrase or thoughts pool")
    pools.require_complete(pool, manifest)
    sample = _sample(pool, manifest, max_docs)
    chosen = {g: pools.select_generations(manifest.kind, manifest.g, g) for g in measured_gs(manifest.kind, manifest.g)}
    return pools.PoolDiversity(
        ngram=n,
        documents=len(sample),
        by_g={g: measure(((src, _selected(gens, indices)) for src, gens in sample), n=n)
              for g, indices in chosen.items()},
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


def write_pool_diversity(pool: str | Path, *, max_docs: int = DEFAULT_MAX_DOCS) -> pools.PoolDiversity:
    """Compute and store ``diversity`` in the pool manifest (under the pool's lock)."""
    pool = Path(pool)
    diversity = pool_diversity(pool, max_docs=max_docs)
    with manifest_lock(pool):
        manifest = pools.read_manifest(pool)
        pools.write_manifest(pool, manifest.model_copy(update={"diversity": diversity}))
    return diversity
