"""Split points for latent thoughts and the prompt-truncation policy (pure functions).

Split points. A document of N generator tokens is cut into G+1 pieces of equal token length:
split point k (k = 1..G) sits before token ``k * N // (G + 1)``; its character offset is that
token's start in the text (the running maximum of the tokenizer's offsets, so it is monotone even
when one character spans several byte-level tokens). Row ``split_index`` is k - 1 (0-based, equal
to ``gen_index``), and rows record ``split_token`` and ``split_char`` so that assembly inserts
each thought at exactly the offset the generator saw. Documents with fewer than G+1 tokens get
some empty pieces (coinciding split points); they are generated and assembled like the others.

Pool reuse. Split point k of a G-pool equals split point k' of a G'-scheme for every N exactly
when k / (G+1) = k' / (G'+1); so a thoughts pool generated with G serves G' iff (G'+1) divides
(G+1), taking pool splits k = k' * (G+1) / (G'+1). Rephrase pools serve any G' <= G (the first
G' generations).

Truncation policy. A prompt may hold at most ``context - max_new_tokens - overhead - margin``
document tokens (``overhead``: the rendered prompt with empty fields). When a document does not
fit, we keep the text nearest the split point: the END of the prefix and the START of the suffix,
giving each side half the budget and handing any share one side does not need to the other.
Rephrase prompts keep the START of the document. Every truncated prompt is flagged in its rows
and counted in the manifest.
"""

from __future__ import annotations

from collections.abc import Sequence

from megadocs.formats import PoolKind
from megadocs.pools import pool_generations

__all__ = [
    "PROMPT_MARGIN_TOKENS", "token_starts", "split_tokens", "reusable_splits",
    "allocate_budget", "thought_window", "rephrase_window",
]

# Re-tokenising a cut-out span can differ from the full document's tokens at the edges.
PROMPT_MARGIN_TOKENS = 16


def token_starts(offsets: Sequence[tuple[int, int]], text_length: int) -> list[int]:
    """Monotone character start of each token, plus ``text_length`` as the end sentinel."""
    starts, last = [], 0
    for start, _end in offsets:
        last = max(last, start)
        starts.append(last)
    starts.append(text_length)
    return starts


def split_tokens(n_tokens: int, g: int) -> list[int]:
    """Token positions of the G split points that cut ``n_tokens`` into G+1 equal pieces."""
    return [k * n_tokens // (g + 1) for k in range(1, g + 1)]


def reusable_splits(pool_g: int, g: int) -> list[int] | None:
    """0-based split indices of a ``pool_g`` thoughts pool that form the split points for ``g``
    (None when (g+1) does not divide (pool_g+1)); the rule is the gen -> train contract's,
    :func:`megadocs.pools.pool_generations`.

    >>> reusable_splits(7, 3), reusable_splits(7, 2)
    ([1, 3, 5], None)
    """
    return pool_generations(PoolKind.THOUGHTS, pool_g, g)


def allocate_budget(prefix_tokens: int, suffix_tokens: int, budget: int) -> tuple[int, int]:
    """How many prefix and suffix tokens to keep within ``budget`` (half each, spare shared).

    >>> allocate_budget(10, 100, 40), allocate_budget(100, 100, 40), allocate_budget(5, 5, 40)
    ((10, 30), (20, 20), (5, 5))
    """
    if prefix_tokens + suffix_tokens <= budget:
        return prefix_tokens, suffix_tokens
    half = budget // 2
    if prefix_tokens <= half:
        return prefix_tokens, budget - prefix_tokens
    if suffix_tokens <= budget - half:
        return budget - suffix_tokens, suffix_tokens
    return half, budget - half


def thought_window(starts: Sequence[int], split_token: int, budget: int) -> tuple[int, int, bool]:
    """Character span ``[begin, end)`` of the document to show around ``split_token``.

    Args:
        starts: :func:`token_starts` of the document (length N + 1).
        split_token: token position of the split point.
        budget: document tokens the prompt may hold.

    Returns:
        (begin, end, truncated): the prompt's prefix is ``text[begin:split_char]`` and its suffix
        ``text[split_char:end]``.
    """
    n_tokens = len(starts) - 1
    keep_prefix, keep_suffix = allocate_budget(split_token, n_tokens - split_token, budget)
    truncated = (keep_prefix, keep_suffix) != (split_token, n_tokens - split_token)
    return starts[split_token - keep_prefix], starts[split_token + keep_suffix], truncated


def rephrase_window(starts: Sequence[int], budget: int) -> tuple[int, bool]:
    """End character of the document kept in a rephrase prompt (its start), and whether cut."""
    n_tokens = len(starts) - 1
    if n_tokens <= budget:
        return starts[-1], False
    return starts[budget], True
