"""The generation pool, owned here once: gen writes through this module; train, search and
analysis read through it (docs/architecture.md, "Generation pool").

```
POOL/manifest.json                    PoolManifest: what defines the generations + statistics
POOL/shard-{i:05d}-of-{n:05d}.jsonl   one PoolRow per line, a document's G rows together
POOL/shard-{i:05d}-of-{n:05d}.done    the shard's statistics, written once its rows are durable
POOL/shard-{i:05d}-of-{n:05d}.progress  ShardProgress per durable chunk: engine time, every run
```

The rules every reader and writer shares:

- **Sharding**: document ``k`` of the source (in :func:`megadocs.corpus.iter_documents` order; a
  token store contributes its train split; a raw corpus's empty or whitespace-only documents are
  left out first, as `data prepare` leaves them out of a store) is document ``k // n`` of shard
  ``k % n`` (:func:`shard_of`, :func:`iter_shard_documents`).
- **Completeness**: a pool is usable once every shard has its ``.done`` marker
  (:func:`require_complete`); a document is complete with exactly the ``gen_index`` values
  0..G-1 (:func:`load_shard` drops a half-written one after a kill).
- **Empty generations** (whitespace only) are recorded and never assembled (:func:`is_empty`).
- **Which generations make up G'** (:func:`pool_generations`): the first G' of a rephrase or sample
  pool; every ((G+1)/(G'+1))-th thought of a thoughts pool.
- **Identity** (:data:`IDENTITY_FIELDS`, :meth:`PoolManifest.identity`): what defines the
  generations, not where anything lies. The generator counts by its content
  (:func:`megadocs.fingerprint.model_fingerprint`), never by its path.
- **Where a sweep's method finds its pool** (:func:`resolve_pool`).

Example:
    >>> shard_of(7, 3), rows_path("pool", 1, 3).as_posix()
    (1, 'pool/shard-00001-of-00003.jsonl')
    >>> pool_generations("rephrase", 4, 2), pool_generations("thoughts", 7, 3)
    ([0, 1], [1, 3, 5])
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from megadocs.config import format_validation_error
from megadocs.corpus import STDLIB, Document, is_empty_document, iter_documents, source_hash
from megadocs.errors import FieldError, UserError
from megadocs.fingerprint import FINGERPRINT_PREFIX, LEGACY_PREFIX, legacy_fingerprint, model_fingerprint
from megadocs.formats import ALGORITHMS, MANIFEST, PoolKind, atomic_file, write_json

__all__ = [
    "POOL_FORMAT", "MANIFEST", "IDENTITY_FIELDS", "PoolManifest", "PoolDiversity", "DiversityMeasures", "PoolRow", "parse_manifest", "read_manifest", "write_manifest",
    "pool_identity", "pool_identity_of", "check_extends", "shard_stem", "rows_path", "done_path", "progress_path",
    "ShardProgress", "read_progress", "shard_of",
    "shard_positions", "iter_shard_documents", "iter_rows", "iter_doc_groups", "iter_pool_documents", "load_shard", "require_complete", "require_source", "pool_source", "is_empty",
    "sample_doc_id", "pool_generations", "select_generations", "served_gs", "pool_entry", "resolve_pool",
]

POOL_FORMAT = "megadocs.gen-pool/1"
IDENTITY_FIELDS = ("format", "kind", "g", "source_hash", "n_docs", "generator_revision",
                   "prompt_template.sha256", "chat_template.sha256", "sampling", "seed", "num_shards",
                   "max_model_len")
"""Manifest fields that define a pool's generations (dotted: inside a record). A run that extends
a pool must agree on them, and they are the pool's part of a training run's identity. The
generator's path (``generator``) is provenance, not identity: ``generator_revision`` is its
content fingerprint."""


# --- the manifest -------------------------------------------------------------------------


class DiversityMeasures(BaseModel):
    """The diversity of a pool's first G' generations per document (``gen.diversity`` measures
    them and says what each means); None where there was nothing to measure (no n-gram, no pair).

    >>> list(DiversityMeasures.model_fields)
    ['distinct_n', 'compression_ratio', 'source_overlap', 'cross_generation_overlap']
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    distinct_n: float | None
    """Unique n-grams / all n-grams over the sample's generations (higher: more varied)."""
    compression_ratio: float | None
    """zlib-compressed / raw bytes of a document's G' generations joined, mean over documents."""
    source_overlap: float | None
    """Share of a generation's n-grams found in its source document (copying)."""
    cross_generation_overlap: float | None
    """Mean Jaccard similarity of the n-gram sets of two generations of a document (0 at G'=1)."""


class PoolDiversity(BaseModel):
    """The manifest's ``diversity`` block: written by ``megadocs gen diversity``
    (``gen.diversity.write_pool_diversity``), read by analysis (``analysis.experiments.diversity_table``).
    Not an identity field: adding it leaves the pool's runs valid."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ngram: int
    """n of the word n-grams."""
    documents: int
    """Documents in the sample measured."""
    by_g: dict[int, DiversityMeasures]
    """G' -> its measures, G' ascending (the JSON keys are the numbers as strings)."""
    created: str
    """When it was measured (ISO 8601, UTC)."""

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class GenerationStatistics(BaseModel):
    """The manifest's ``statistics``: every done shard's counts summed by
    :meth:`megadocs.shards.ShardedStep.finish` (the figures: ``gen.generate.GeneratePool._derived``),
    read by ``search plan`` (``mean_tokens``: a generation's mean length). Fields an older pool did
    not write are left out when the manifest is written again, and figures this code does not know
    (an earlier or later gen's) are kept as they are: statistics describe a pool, they never
    refuse one."""

    model_config = ConfigDict(extra="allow", frozen=True)

    documents: int = 0
    generations: int = 0
    output_tokens: int = 0
    truncated_prompts: int = 0
    length_truncated: int = 0
    empty_outputs: int = 0
    mean_tokens: float = 0.0
    """Mean generated tokens per generation (0 before any)."""
    tokens_per_s: float | None = None
    """Generated tokens per second of engine time, over every run of every shard (None before any)."""
    generation_seconds: float = 0.0
    """Engine time generating, summed over the shards and over every run of a shard resumed after
    a kill (:class:`ShardProgress`)."""
    shards_done: int = 0


class PoolManifest(BaseModel):
    """``POOL/manifest.json``. Fields beyond these (``policies``, ...) are kept as they are."""

    model_config = ConfigDict(extra="allow")

    format: str
    kind: PoolKind
    g: int = Field(ge=1)
    """Generations per document."""
    num_shards: int = Field(ge=1)
    source: str | None = None
    """The document source, absolute path (or ``stdlib``); None for samples."""
    source_split: str | None = None
    source_hash: str | None = None
    """:func:`megadocs.corpus.source_hash` of the source when generation started."""
    n_docs: int | None = None
    empty_documents_skipped: int | None = None
    """The source's empty or whitespace-only documents, not the pool's (:func:`iter_shard_documents`);
    None in a sample pool's manifest and in one written before gen counted them."""
    generator: str | None = None
    """Where the generator was read from (provenance)."""
    generator_revision: str | None = None
    """Its content fingerprint (or the revision the user gave)."""
    prompt_template: dict[str, Any] | None = None
    chat_template: dict[str, Any] | None = None
    sampling: dict[str, Any] | None = None
    seed: int | None = None
    max_model_len: int | None = None
    complete: bool = False
    statistics: GenerationStatistics | None = None
    created: str | None = None
    diversity: PoolDiversity | None = None
    """Added once the pool is complete (``megadocs gen diversity``); None until then."""

    def to_json(self) -> dict[str, Any]:
        """The JSON object as the manifest has always been written: ``diversity`` only when there
        is one, and last (it is added after generation, behind every other field)."""
        data = self.model_dump(mode="json", exclude={"diversity"})
        if self.statistics is not None:  # as read: a figure an older pool did not write stays out
            data["statistics"] = self.statistics.model_dump(mode="json", exclude_unset=True)
        if self.diversity is not None:
            data["diversity"] = self.diversity.to_json()
        return data

    def identity(self) -> dict[str, Any]:
        """The :data:`IDENTITY_FIELDS` that are set (statistics added later do not change it)."""
        return pool_identity_of(self.to_json())

    @property
    def has_sources(self) -> bool:
        """Generated from real documents (rephrases, thoughts), not unconditional samples."""
        return self.kind is not PoolKind.SAMPLE


def pool_identity_of(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The identity fields of a manifest's JSON object (absent or null ones left out).

    >>> pool_identity_of({"format": "megadocs.gen-pool/1", "kind": "rephrase", "g": 2,
    ...                   "prompt_template": {"sha256": "ab", "name": "wrap"}, "created": "today"})
    {'format': 'megadocs.gen-pool/1', 'kind': 'rephrase', 'g': 2, 'prompt_template.sha256': 'ab'}
    """
    out = {}
    for key in IDENTITY_FIELDS:
        value: Any = manifest
        for part in key.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        if value is not None:
            out[key] = value
    return out


def parse_manifest(data: Any, path: Path) -> PoolManifest:
    """A manifest from its JSON object; UserError naming ``path`` and the field."""
    if not isinstance(data, dict) or data.get("format") != POOL_FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise UserError(f"{path}: format: expected {POOL_FORMAT!r} (a pool written by `megadocs gen "
                        f"rephrase|thoughts|sample`), got {found!r}")
    try:
        return PoolManifest.model_validate(data)
    except ValidationError as exc:
        raise UserError(format_validation_error(exc, str(path), model=PoolManifest)) from None


def read_manifest(pool: str | Path, field: str = "--pool") -> PoolManifest:
    """The pool's manifest.

    Raises:
        UserError: naming ``field`` when there is no pool, or the file when it is not a pool manifest.
    """
    path = Path(pool) / MANIFEST
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{field}: {pool}: no {MANIFEST} (expected a directory written by "
                        f"`megadocs gen rephrase|thoughts|sample`)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not a JSON manifest ({exc})") from None
    return parse_manifest(data, path)


def write_manifest(pool: str | Path, manifest: PoolManifest) -> None:
    """Write the manifest atomically (callers that read-modify-write hold the pool's lock,
    :func:`megadocs.shards.manifest_lock`)."""
    write_json(Path(pool) / MANIFEST, manifest.to_json())


@lru_cache(maxsize=256)
def _cached_identity(path: str, mtime_ns: int, size: int, field: str) -> tuple[tuple[str, Any], ...]:
    manifest = read_manifest(Path(path).parent, field)
    return tuple(manifest.identity().items())


def pool_identity(pool: str | Path, field: str = "data.synthetic.pool") -> dict[str, Any]:
    """The identity of the pool at ``pool`` (cached by the manifest's mtime and size: a sweep asks
    for it at every point).

    Raises:
        UserError: naming ``field`` when ``pool`` holds no pool.
    """
    path = Path(pool) / MANIFEST
    try:
        stat = path.stat()
    except OSError:
        raise UserError(f"{field}: {pool}: generation pool not found (no {MANIFEST})") from None
    return dict(_cached_identity(str(path.resolve()), stat.st_mtime_ns, stat.st_size, field))


def check_extends(existing: PoolManifest, intended: PoolManifest, pool: str | Path) -> None:
    """Refuse to extend a pool generated with different settings (names the first field).

    Pools made with earlier fingerprints keep the one they recorded, and are extended only when
    the generator still gives it: a ``dir-sha256:`` one (before content fingerprints: file sizes
    only), or a ``sha256:`` one over every file, model card included (until 2026-12-04); their
    versions are declared in :data:`megadocs.compat.RECORDS` (``pool-fingerprint``).

    Raises:
        UserError: naming the manifest, the field and both values.
    """
    old, new = existing.identity(), intended.identity()
    recorded = str(old.get("generator_revision", ""))
    earlier = {LEGACY_PREFIX: legacy_fingerprint, FINGERPRINT_PREFIX: partial(model_fingerprint, every_file=True)}
    recompute = next((fingerprint for prefix, fingerprint in earlier.items() if recorded.startswith(prefix)), None)
    if recompute is not None and intended.generator is not None and recorded != new.get("generator_revision") \
            and Path(intended.generator).is_dir() and recompute(intended.generator) == recorded:
        new["generator_revision"] = recorded
    for key in IDENTITY_FIELDS:
        if old.get(key) != new.get(key):
            raise UserError(f"{Path(pool) / MANIFEST}: {key}: the pool was generated with {old.get(key)!r}, "
                            f"this run asks for {new.get(key)!r} (use a new --out, or the pool's settings)")


# --- shards -------------------------------------------------------------------------------


def shard_stem(index: int, count: int) -> str:
    """``shard-{index:05d}-of-{count:05d}``: the stem of every per-shard file (pool and tokens)."""
    return f"shard-{index:05d}-of-{count:05d}"


def rows_path(pool: str | Path, index: int, count: int) -> Path:
    return Path(pool) / f"{shard_stem(index, count)}.jsonl"


def done_path(folder: str | Path, index: int, count: int) -> Path:
    """A shard's completion marker in ``folder`` (a pool, or a step's output beside it)."""
    return Path(folder) / f"{shard_stem(index, count)}.done"


def progress_path(pool: str | Path, index: int, count: int) -> Path:
    """A shard's :class:`ShardProgress` log: one line appended after each chunk of its rows is durable."""
    return Path(pool) / f"{shard_stem(index, count)}.progress"


class ShardProgress(BaseModel):
    """What one chunk of a shard's rows cost (a line of ``.progress``, appended and fsynced
    after the chunk's rows): a shard resumed after a kill adds the earlier runs' lines to its own,
    so its ``.done`` counts (and the manifest's ``generation_seconds`` and ``tokens_per_s``) cover
    every run, not the last one. A run killed between a chunk's rows and its line loses that
    chunk's figures (never counts them twice). Appended, not rewritten: a full disk fills the rows
    file first, whose torn tail a re-run cuts (:func:`load_shard`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    run_tokens: int = Field(0, ge=0)
    """Tokens generated (the rows' ``n_tokens``)."""
    run_seconds: float = Field(0.0, ge=0)
    """Engine seconds generating them."""

    def __add__(self, other: ShardProgress) -> ShardProgress:
        return ShardProgress(run_tokens=self.run_tokens + other.run_tokens,
                             run_seconds=self.run_seconds + other.run_seconds)

    def line(self) -> bytes:
        """Its line in the log (with the newline)."""
        return (self.model_dump_json() + "\n").encode()


def read_progress(path: str | Path) -> ShardProgress:
    """The sum of a shard's progress log so far; zero without one (its first run). A torn last
    line (a kill mid-append) is cut off in place, as :func:`load_shard` cuts rows, so the next
    line starts on its own; another line that is not a chunk's progress (a hand edit) is skipped,
    said in one line on stderr: statistics never refuse a pool."""
    total, skipped = ShardProgress(), 0
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return total
    whole = data.rfind(b"\n") + 1
    if whole < len(data):
        with open(path, "r+b") as handle:
            handle.truncate(whole)
            os.fsync(handle.fileno())
    for line in data[:whole].splitlines():
        try:
            total += ShardProgress.model_validate_json(line)
        except ValidationError:
            skipped += 1
    if skipped:
        print(f"{path}: {skipped} line(s) not a chunk's progress, not counted in generation_seconds",
              file=sys.stderr, flush=True)
    return total


def shard_of(doc_index: int, count: int) -> int:
    """The shard that owns the ``doc_index``-th document of the source."""
    return doc_index % count


def shard_positions(index: int, count: int) -> slice:
    """The source positions of shard ``index``'s documents, as a slice of a source-ordered array
    (:func:`shard_of` inverted: its ``j``-th document is the source's ``j * count + index``-th).

    >>> list(range(7))[shard_positions(1, 3)]
    [1, 4]
    """
    return slice(index, None, count)


def sample_doc_id(k: int) -> str:
    """The document id of unconditional sample ``k`` in a ``sample`` pool."""
    return f"sample-{k:07d}"


def iter_shard_documents(manifest: PoolManifest, index: int | None = None, source: str | None = None, *,
                         left_out: list[str] | None = None) -> Iterator[Document]:
    """The pool's source documents (``source`` overrides the manifest's), those of shard ``index``
    only when given, in source order; a sample pool's are its ``sample-{k}`` ids with no text.
    A source's empty or whitespace-only documents (:func:`megadocs.corpus.is_empty_document`: a
    raw corpus's; a store has none) are not the pool's: left out before the sharding, their ids
    appended to ``left_out`` when given."""
    count = manifest.num_shards
    if manifest.kind is PoolKind.SAMPLE:
        documents: Iterator[Document] = (Document(sample_doc_id(k), "") for k in range(manifest.n_docs or 0))
    else:
        documents = _nonempty(iter_documents(source or manifest.source), left_out)
    for k, doc in enumerate(documents):
        if index is None or shard_of(k, count) == index:
            yield doc


def _nonempty(documents: Iterator[Document], left_out: list[str] | None) -> Iterator[Document]:
    for doc in documents:
        if not is_empty_document(doc):
            yield doc
        elif left_out is not None:
            left_out.append(doc.doc_id)


def require_complete(pool: str | Path, manifest: PoolManifest, field: str = "--pool") -> None:
    """Raises UserError (naming ``field``) when a shard has no completion marker."""
    count = manifest.num_shards
    missing = [i for i in range(count) if not done_path(pool, i, count).is_file()]
    if missing:
        raise UserError(f"{field}: {pool}: generation is not finished, shards {missing[:8]} of {count} "
                        f"have no .done marker (re-run the generation command to finish them)")


def require_source(pool: str | Path, manifest: PoolManifest, field: str = "--pool") -> str | None:
    """The source recorded in the pool's manifest, refused in one line when it is no longer
    there (a store or corpus moved or deleted since generation; the pool reads its documents from
    it). ``source`` is not an identity field: the documents are checked by ``source_hash``.

    Raises:
        UserError: naming the pool, the manifest field and the ways out.
    """
    source = manifest.source
    if manifest.has_sources and source != STDLIB and not Path(str(source)).exists():
        raise UserError(f"{field}: {pool}: its source {source} ({MANIFEST} 'source') is not found (moved or "
                        f"deleted?); restore it there, give `gen assemble` or `data tokenize-pool` --corpus "
                        f"NEW_PATH, or set 'source' to NEW_PATH (its content must hash to source_hash "
                        f"{manifest.source_hash})")
    return source


def pool_source(pool: str | Path, manifest: PoolManifest, corpus: str | Path | None = None,
                field: str = "corpus") -> str | None:
    """Where the pool's source documents are read from: the recorded source, or ``corpus`` (the
    same documents moved elsewhere), either one checked by content against the manifest's
    ``source_hash`` (:func:`megadocs.corpus.source_hash`: a token store's documents, a file's bytes)
    before it is used, so real text and split offsets are the ones the generator saw. None for a
    sample pool (no source). Cost: one read of the source (about 2 s per GB).

    Raises:
        UserError: the recorded source is gone (:func:`require_source`), or the recorded one's
            documents changed in place.
        FieldError: of ``field`` (the caller's name for ``corpus``, which a command names by its
            flag): ``corpus`` holds other documents than the pool's.
    """
    if not manifest.has_sources:
        return None
    if corpus is None:
        source = str(require_source(pool, manifest))
        now = source_hash(source)
        if now != manifest.source_hash:
            raise UserError(f"--pool: {pool}: its source {source} has changed since the pool was generated (source "
                            f"hash {manifest.source_hash}, now {now}: re-prepared with other --val-docs, --seed or "
                            f"corpus?); regenerate the pool from the source as it is, or re-prepare the source as "
                            f"it was")
        return source
    now = source_hash(corpus)
    if now != manifest.source_hash:
        raise FieldError(field, f"{corpus} holds other documents than the pool's source {manifest.source} (source "
                                f"hash {now}, the pool's {manifest.source_hash}); give the moved copy of that source")
    return str(corpus) if str(corpus) == STDLIB else str(Path(corpus).resolve())


# --- rows ---------------------------------------------------------------------------------


def is_empty(text: str) -> bool:
    """The empty-generation rule: a generation of only whitespace is recorded in the pool and
    left out of every synthetic document (its split is not cut, for a thought)."""
    return not text.strip()


@dataclass(frozen=True, slots=True)
class PoolRow:
    """One generation (one line of a shard). ``split_*``: a thought's split point (its index, the
    token and the character of the real text where it goes); the provenance fields gen records
    (prompt, generator, engine, sampling, seeds, ...) stay in ``extra``."""

    doc_id: str
    gen_index: int
    text: str
    split_index: int | None = None
    split_token: int | None = None
    split_char: int | None = None
    finish_reason: str | None = None
    n_tokens: int | None = None
    prompt_truncated: bool | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    _TYPED = ("doc_id", "gen_index", "split_index", "split_token", "split_char", "text", "finish_reason",
              "n_tokens", "prompt_truncated")

    @property
    def empty(self) -> bool:
        return is_empty(self.text)

    @classmethod
    def parse(cls, data: Any) -> PoolRow:
        """A row from its JSON object. Raises ValueError saying what is wrong."""
        if not (isinstance(data, dict) and isinstance(data.get("doc_id"), str) and isinstance(data.get("text"), str)
                and isinstance(data.get("gen_index"), int) and not isinstance(data["gen_index"], bool)):
            raise ValueError("expected a row with 'doc_id' (a string), 'gen_index' (an integer) and 'text' "
                             "(a string)")
        split_char = data.get("split_char")
        if split_char is not None and not isinstance(split_char, int):
            raise ValueError(f"split_char: expected an integer, got {split_char!r}")
        return cls(**{key: data.get(key) for key in cls._TYPED},
                   extra={k: v for k, v in data.items() if k not in cls._TYPED})

    def to_json(self) -> dict[str, Any]:
        """The JSON object, typed fields first (those not set, e.g. the split fields of a rephrase,
        left out)."""
        out = {key: value for key in self._TYPED if (value := getattr(self, key)) is not None}
        return {**out, **self.extra}


def _iter_lines(path: Path) -> Iterator[tuple[int, bytes, PoolRow | None, str | None, int]]:
    """(line number, line, row or None, why not, byte offset of the line's end) per non-blank line."""
    end = 0
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            end += len(line)
            if not line.strip():
                continue
            try:
                yield number, line, PoolRow.parse(json.loads(line)), None, end
            except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
                yield number, line, None, str(exc), end


def iter_rows(path: str | Path) -> Iterator[PoolRow]:
    """The rows of a finished shard file, one at a time (a shard is never held in memory).

    Raises:
        UserError: naming the file and line of a row that is not a pool row.
    """
    for number, line, row, why, _end in _iter_lines(Path(path)):
        if row is None:
            raise UserError(f"{path}:{number}: not a pool row ({why}): {line[:80]!r}")
        yield row


def iter_doc_groups(pool: str | Path, index: int, count: int, g: int) -> Iterator[tuple[str, list[PoolRow]]]:
    """(doc_id, its ``g`` rows in gen_index order) of one finished shard, in file order (= source
    order within the shard). Rows are picked by ``gen_index``, never by position in the file.

    Raises:
        UserError: a document without each gen_index 0..g-1 exactly once (naming the file), or the
            shard's file gone (removed since its shard was marked done).
    """
    path = rows_path(pool, index, count)
    if not path.is_file():  # checked when the first group is asked for, as every other refusal here
        raise UserError(f"{path}: not found, though the pool marks its shard done (removed or moved since?); "
                        f"delete {done_path(pool, index, count)} and re-run the same gen command to generate "
                        "the shard again")

    def ordered(rows: list[PoolRow]) -> list[PoolRow]:
        by_index = {row.gen_index: row for row in rows}
        if len(rows) != g or sorted(by_index) != list(range(g)):
            raise UserError(f"{path}: document {rows[0].doc_id!r} has gen_index values "
                            f"{sorted(row.gen_index for row in rows)}; expected each of 0..{g - 1} once "
                            f"(is the pool complete?)")
        return [by_index[i] for i in range(g)]

    rows: list[PoolRow] = []
    for row in iter_rows(path):
        if rows and row.doc_id != rows[0].doc_id:
            yield rows[0].doc_id, ordered(rows)
            rows = []
        rows.append(row)
    if rows:
        yield rows[0].doc_id, ordered(rows)


def iter_pool_documents(pool: str | Path, manifest: PoolManifest, index: int | None = None,
                        source: str | None = None) -> Iterator[tuple[Document, list[PoolRow]]]:
    """Each source document with its G rows (gen_index order): shard ``index``'s, or every shard's
    in source order. ``source`` overrides the manifest's (same documents, e.g. moved).

    Raises:
        UserError: a shard whose documents are not the source's (naming the file and position).
    """
    count = manifest.num_shards
    shards = {i: iter_doc_groups(pool, i, count, manifest.g) for i in (range(count) if index is None else [index])}
    for k, doc in enumerate(iter_shard_documents(manifest, source=source)):
        shard = shard_of(k, count)
        if shard not in shards:
            continue
        doc_id, rows = next(shards[shard], (None, []))
        if doc_id != doc.doc_id:
            raise UserError(f"{rows_path(pool, shard, count)}: expected the rows of source document {doc.doc_id!r} "
                            f"(position {k}) next, found {doc_id!r}: the pool does not match its source "
                            f"{source or manifest.source}")
        yield doc, rows
    for shard, rest in shards.items():
        extra = next(rest, None)
        if extra is not None:
            raise UserError(f"{rows_path(pool, shard, count)}: document {extra[0]!r} is not in the source "
                            f"{source or manifest.source}")


def load_shard(path: str | Path, g: int) -> list[str]:
    """The doc_ids of the complete documents in a shard file being generated, in file order.

    Rows of one document are written together and documents are appended in order, each chunk
    flushed, so a run cut off mid-write (killed, a full disk) leaves a torn tail at most: the rows
    of the last chunk up to where the write stopped (possibly a half-written document and a last
    line without its newline, which counts as torn). A document is complete when it has exactly
    the gen_index values 0..g-1. The tail after the last complete document is cut off in place
    (truncate + fsync): resuming needs no free space, whatever the shard's size. Anything our
    writer does not leave (a bad or duplicate row, an incomplete document, before the end) is
    dropped by rewriting the file atomically without it (room for a copy; duplicates keep the
    first row). One streaming pass (a second for a rewrite): memory is one bit mask per document.

    Raises:
        UserError: a row whose ``gen_index`` is outside 0..g-1 (naming the file, line and
            document; the file is left as it was).
    """
    path = Path(path)
    if not path.is_file():
        return []
    full = (1 << g) - 1
    seen: dict[str, int] = {}  # doc_id -> bit mask of the gen_index values read
    clean = True  # no row to drop so far: the file is still the prefix that is kept
    kept_end, kept_docs, current = 0, 0, None  # the prefix kept: its end, its documents; the last document
    for number, line, row, _why, end in _iter_lines(path):
        if row is None or not line.endswith(b"\n"):
            clean = False
            continue
        if not 0 <= row.gen_index < g:  # never written by gen: a hand edit, kept for its author to fix
            raise UserError(f"{path}:{number}: document {row.doc_id!r}: gen_index {row.gen_index} is outside "
                            f"0..{g - 1} (the pool's G is {g}); fix or remove the row, then re-run")
        mask = seen.get(row.doc_id, 0)
        bit = 1 << row.gen_index
        # a duplicate row, a document resumed after another, or one left incomplete before the next
        clean &= not mask & bit and (row.doc_id == current or (not mask and seen.get(current, full) == full))
        current, seen[row.doc_id] = row.doc_id, mask | bit
        if clean and seen[row.doc_id] == full:
            kept_end, kept_docs = end, kept_docs + 1
    complete = [doc for doc, mask in seen.items() if mask == full]
    if kept_docs == len(complete):  # every complete document lies before kept_end, nothing to drop there
        if kept_end < path.stat().st_size:
            with open(path, "r+b") as handle:
                handle.truncate(kept_end)
                os.fsync(handle.fileno())  # the resumed rows are appended after a durable cut
        return complete
    keep, written = set(complete), set()
    with atomic_file(path, "wb") as out:
        for _number, line, row, _why, _end in _iter_lines(path):
            key = None if row is None or not line.endswith(b"\n") else (row.doc_id, row.gen_index)
            if key is None or key[0] not in keep or key in written:
                continue
            written.add(key)
            out.write(line)
    return complete


# --- which generations make up G' ---------------------------------------------------------


def pool_generations(kind: str, pool_g: int, g: int) -> list[int] | None:
    """The ``gen_index`` values of a ``pool_g`` pool that make up G=``g``, or None when it cannot.

    A rephrase (or sample) pool serves any G' <= G with its first G' generations. A thoughts pool
    with G split points serves G' only when (G'+1) divides (G+1): split point k' of G' is the
    pool's split k'(G+1)/(G'+1) (gen/splits.py), so it takes every ((G+1)/(G'+1))-th thought.

    >>> pool_generations("rephrase", 4, 2), pool_generations("thoughts", 7, 3), pool_generations("thoughts", 7, 2)
    ([0, 1], [1, 3, 5], None)
    """
    if g < 1 or g > pool_g:
        return None
    if kind != PoolKind.THOUGHTS:
        return list(range(g))
    if (pool_g + 1) % (g + 1):
        return None
    step = (pool_g + 1) // (g + 1)
    return [k * step - 1 for k in range(1, g + 1)]


def served_gs(kind: str, pool_g: int) -> list[int]:
    """Every G' a pool of ``kind`` and G=``pool_g`` serves.

    >>> served_gs("thoughts", 32), served_gs("rephrase", 3)
    ([2, 10, 32], [1, 2, 3])
    """
    return [g for g in range(1, pool_g + 1) if pool_generations(kind, pool_g, g) is not None]


def select_generations(kind: str, pool_g: int, g: int, field: str = "--g") -> list[int]:
    """:func:`pool_generations`, refusing (naming ``field``) a G the pool cannot serve.

    Raises:
        UserError: ``g`` < 1, larger than the pool's, or thoughts without those split points.
    """
    chosen = pool_generations(kind, pool_g, g)
    if chosen is not None:
        return chosen
    if g < 1:
        raise UserError(f"{field}: expected a positive number of generations, got {g}")
    if kind == PoolKind.THOUGHTS and g <= pool_g:
        raise UserError(f"{field}: a thoughts pool generated with G={pool_g} has split points only "
                        f"for G in {served_gs(kind, pool_g)} ((G+1) must divide {pool_g + 1}), got {g}; "
                        f"generate a pool with --g {g}")
    raise UserError(f"{field}: the pool holds {pool_g} generations per document, got {g} "
                    f"(expected at most {pool_g})")


# --- where a sweep's method finds its pool ------------------------------------------------

PoolEntry = str | dict[int, str]
"""A sweep's ``pools.<method>``: a directory, a template with ``{g}``, or ``{g: directory}``."""
_FAMILY = {algorithm: algorithm.split("-")[0] for algorithm in ALGORITHMS}
"""``stitched-first`` and ``stitched-none`` use ``stitched``'s pool unless they name their own."""


def pool_entry(pools: Mapping[str, PoolEntry], method: str) -> PoolEntry | None:
    """A method's entry in a sweep's ``pools`` (its own, else its family's), or None."""
    entry = pools.get(method)
    return entry if entry is not None else pools.get(_FAMILY.get(method, method))


def resolve_pool(pools: Mapping[str, PoolEntry], method: str, g: int, field: str = "pools") -> Path:
    """The pool directory (absolute) a sweep's ``pools`` give ``method`` at G=``g``; the one rule
    search's objective, `search plan` and analysis follow. Nothing is read from disk.

    >>> resolve_pool({"stitched": "/p/rephrase", "latent": "/p/thoughts-g{g}"}, "stitched-first", 4).as_posix()
    '/p/rephrase'
    >>> resolve_pool({"latent": {2: "/a", 4: "/b"}}, "latent", 4).as_posix()
    '/b'

    Raises:
        UserError: naming ``{field}.{method}`` when the sweep gives the method no pool at ``g``.
    """
    entry = pool_entry(pools, method)
    if entry is None:
        raise UserError(f"{field}.{method}: no synthetic pool for method {method!r} (have {sorted(pools)})")
    if isinstance(entry, Mapping):
        if g not in entry:
            raise UserError(f"{field}.{method}: no pool for g={g} (have {sorted(entry)})")
        entry = entry[g]
    return Path(os.path.abspath(str(entry).format(g=g)))
