"""Assemble the synthetic stream's documents for one algorithm and G from a generation pool.

Python API::

    from gen.assemble import assemble
    manifest = assemble("runs/demo/pool-rephrase", "stitched", g=4)
    # -> runs/demo/pool-rephrase/assembled/stitched-g4/documents.jsonl

Each output line is ``{"doc_id", "source_doc_id", "segments": [str, ...]}``; ``train/`` tokenizes
every segment and joins a document's segments with EOS (docs/architecture.md). The file is the
WHOLE synthetic stream (paper.md, "Data streams and mixing"):

- ``simple``: every non-empty rephrase is its own document (``{id}#rephrase-{j}``), and each real
  document is included once more (``{id}``): G*D rephrases + D real documents.
- ``stitched``: one megadoc per real document, segments = its rephrases in gen_index order, then
  the real document (real LAST, the paper's best order). ``stitched-first`` puts the real
  document first, ``stitched-none`` leaves it out.
- ``latent``: one document per real document, a single segment: the real text with each thought
  inserted at its split point as ``<think>THOUGHT</think>`` (no other characters added, thoughts
  verbatim, in split order).
- ``self-distill`` (from a ``sample`` pool, G=1): every non-empty unconditional sample is its own
  document; no real documents (the pool has no source).

Empty generations (only whitespace) are left out and counted (``excluded_empty``); length-cut
ones are kept. A rephrase pool generated with G serves any G' <= G (its first G' generations);
a thoughts pool serves G' only when (G'+1) divides (G+1) (:func:`megadocs.formats.pool_generations`),
otherwise this refuses with an error naming the G values that would work.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from gen import pool as pool_format
from megadocs.errors import UserError
from megadocs.formats import (
    ALGORITHMS,
    ASSEMBLED_MANIFEST,
    DOCUMENTS_FILE,
    POOL_KIND,
    THINK_CLOSE,
    THINK_OPEN,
    PoolKind,
    assembled_dir,
    replace_dir,
    select_generations,
    write_json,
)

__all__ = ["ASSEMBLED_FORMAT", "THINK_OPEN", "THINK_CLOSE", "assemble", "select_generations",
           "insert_thoughts", "assemble_document"]

ASSEMBLED_FORMAT = "megadocs.assembled/1"


def insert_thoughts(text: str, thoughts: Iterable[tuple[int, str]]) -> str:
    """``text`` with each ``(split_char, thought)`` inserted as ``<think>thought</think>``.

    >>> insert_thoughts("abcd", [(1, "x"), (3, "y")])
    'a<think>x</think>bc<think>y</think>d'
    """
    pieces, last = [], 0
    for char, thought in thoughts:  # already in split order (split_char is non-decreasing)
        pieces += [text[last:char], THINK_OPEN, thought, THINK_CLOSE]
        last = char
    pieces.append(text[last:])
    return "".join(pieces)


def assemble_document(algorithm: str, doc_id: str, text: str, rows: list[dict]) -> tuple[list[dict], int]:
    """The output documents for one real document, and how many empty generations were left out.

    ``rows`` are the selected generations in gen_index order.
    """
    kept = [row for row in rows if not pool_format.is_empty(row)]
    excluded = len(rows) - len(kept)
    if algorithm == "self-distill":
        return [{"doc_id": doc_id, "source_doc_id": None, "segments": [row["text"]]} for row in kept], excluded
    if algorithm == "simple":
        docs = [{"doc_id": f"{doc_id}#rephrase-{row['gen_index']}", "source_doc_id": doc_id,
                 "segments": [row["text"]]} for row in kept]
        return docs + [{"doc_id": doc_id, "source_doc_id": doc_id, "segments": [text]}], excluded
    if algorithm == "latent":
        segments = [insert_thoughts(text, ((row["split_char"], row["text"]) for row in kept))]
    else:
        rephrases = [row["text"] for row in kept]
        segments = {"stitched": rephrases + [text], "stitched-first": [text] + rephrases,
                    "stitched-none": rephrases}[algorithm]
    if not segments:  # stitched-none with every generation empty
        return [], excluded
    return [{"doc_id": f"{doc_id}#{algorithm}", "source_doc_id": doc_id, "segments": segments}], excluded


@dataclass
class _Counts:
    documents: int = 0
    real_documents: int = 0
    segments: int = 0
    excluded_empty: int = 0
    dropped_documents: int = 0


def _by_gen_index(rows: list[dict], chosen: list[int], doc_id: str, pool: Path) -> list[dict]:
    """The rows whose ``gen_index`` is in ``chosen``, in that order: a shard's rows need not be
    in gen_index order (a resumed or re-sorted shard), so file position is not the index."""
    by_index = {row.get("gen_index"): row for row in rows}
    missing = [index for index in chosen if index not in by_index]
    if missing or len(by_index) != len(rows):
        raise UserError(f"--pool: {pool}: document {doc_id!r} has gen_index values "
                        f"{sorted(by_index, key=str)} for {len(rows)} rows; expected each of 0..{len(rows) - 1} once")
    return [by_index[index] for index in chosen]


@dataclass(frozen=True)
class _Plan:
    """A validated request: which pool generations make up ``algorithm`` at ``g``, and where it goes."""

    pool: Path
    algorithm: str
    g: int
    manifest: dict  # the pool's
    chosen: list[int]  # the pool's gen_index values that make up G=g
    pool_hash: str
    pool_identity: str  # the pool's generations (unchanged when only statistics are added)
    out: Path


def _sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _plan(pool: Path, algorithm: str, g: int) -> _Plan:
    """Validate the algorithm against the pool (its kind and G)."""
    if algorithm not in ALGORITHMS:
        raise UserError(f"--algorithm: expected one of {', '.join(ALGORITHMS)}, got {algorithm!r}")
    manifest = pool_format.read_manifest(pool)
    if manifest["kind"] != POOL_KIND[algorithm]:
        raise UserError(f"--algorithm: {algorithm} needs a {POOL_KIND[algorithm].value} pool, "
                        f"but {pool} holds {manifest['kind']} generations")
    chosen = select_generations(manifest["kind"], manifest["g"], g)
    pool_hash = _sha256_file(pool / pool_format.MANIFEST)
    return _Plan(pool, algorithm, g, manifest, chosen, pool_hash, pool_format.pool_identity_of(manifest),
                 assembled_dir(pool, algorithm, g))


def _source_documents(plan: _Plan, docs: str | Path | None) -> tuple[str, Iterable]:
    """Validate the document source against the pool's (same hash) and the pool's completeness."""
    from megadocs.corpus import Document, iter_documents, source_hash

    manifest = plan.manifest
    source = str(docs) if docs is not None else manifest["source"]
    if manifest["kind"] == PoolKind.SAMPLE:
        documents = (Document(pool_format.sample_doc_id(k), "") for k in range(manifest["n_docs"]))
    elif docs is not None and source_hash(source) != manifest["source_hash"]:
        raise UserError(f"--docs: {source} differs from the pool's source {manifest['source']} "
                        f"(hash {source_hash(source)} != {manifest['source_hash']})")
    else:
        documents = iter_documents(source)
    pool_format.require_complete(plan.pool, manifest)
    return source, documents


def _write_documents(plan: _Plan, documents: Iterable, handle) -> _Counts:
    """Assemble every source document from its pool rows and write them as JSON lines."""
    manifest, count = plan.manifest, plan.manifest["num_shards"]
    shards = [pool_format.iter_doc_groups(plan.pool, i, count) for i in range(count)]
    counts = _Counts()
    for k, doc in enumerate(documents):
        doc_id, rows = next(shards[pool_format.shard_of(k, count)], (None, []))
        if doc_id != doc.doc_id or len(rows) != manifest["g"]:
            raise UserError(f"--pool: {plan.pool}: expected {manifest['g']} generations for document "
                            f"{doc.doc_id!r} (source position {k}), found {len(rows)} for {doc_id!r}")
        selected = _by_gen_index(rows, plan.chosen, doc.doc_id, plan.pool)
        produced, excluded = assemble_document(plan.algorithm, doc.doc_id, doc.text, selected)
        counts.excluded_empty += excluded
        counts.real_documents += manifest["kind"] != PoolKind.SAMPLE
        counts.dropped_documents += not produced
        for document in produced:
            handle.write(json.dumps(document, ensure_ascii=False) + "\n")
            counts.documents += 1
            counts.segments += len(document["segments"])
    return counts


def _assembled_manifest(plan: _Plan, source: str, counts: _Counts) -> dict:
    """The assembly's manifest.json: what it was built from and what it holds."""
    return {
        "format": ASSEMBLED_FORMAT,
        "algorithm": plan.algorithm,
        "g": plan.g,
        "pool": str(plan.pool.resolve()),
        "pool_kind": plan.manifest["kind"],
        "pool_g": plan.manifest["g"],
        "pool_manifest_sha256": plan.pool_hash,
        "pool_identity": plan.pool_identity,
        "generation_indices": plan.chosen,
        "source": source,
        "source_hash": plan.manifest["source_hash"],
        **vars(counts),
        "thought_tags": [THINK_OPEN, THINK_CLOSE] if plan.algorithm == "latent" else None,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def assemble(pool: str | Path, algorithm: str, g: int, *, docs: str | Path | None = None,
             overwrite: bool = False) -> dict:
    """Write ``POOL/assembled/{algorithm}-g{g}/`` and return its manifest (see module docstring).

    Args:
        pool: a complete generation pool.
        algorithm: one of :data:`megadocs.formats.ALGORITHMS`.
        g: generations per real document (<= the pool's G; thoughts: see module docstring).
        docs: the document source; defaults to the one the pool manifest records (must hash the
            same, so real text and split offsets match what the generator saw).
        overwrite: rebuild even if an up-to-date assembly exists.

    Raises:
        UserError: unknown algorithm, a pool of the wrong kind, an incomplete pool, a G it cannot
            serve, or a source that differs from the pool's.
    """
    plan = _plan(Path(pool), algorithm, g)
    out = plan.out
    if (out / ASSEMBLED_MANIFEST).is_file() and not overwrite:
        existing = json.loads((out / ASSEMBLED_MANIFEST).read_text())
        # Up to date when the pool's generations are the same (statistics may have been added since).
        if existing.get("pool_identity") == plan.pool_identity:
            return existing
    source, documents = _source_documents(plan, docs)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with open(tmp / DOCUMENTS_FILE, "w") as handle:
        counts = _write_documents(plan, documents, handle)
    result = _assembled_manifest(plan, source, counts)
    write_json(tmp / ASSEMBLED_MANIFEST, result)
    replace_dir(tmp, out)  # fsyncs documents.jsonl too
    return result
