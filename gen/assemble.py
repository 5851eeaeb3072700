"""Assemble the synthetic stream's documents for one algorithm and G as readable text: the
megadoc rule (:mod:`megadocs.megadoc`) mapped over a pool's text.

Python API::

    from gen.assemble import assemble
    manifest = assemble("runs/demo/pool-rephrase", "stitched", g=4)
    # -> runs/demo/pool-rephrase/assembled/stitched-g4/documents.jsonl

Each output line is ``{"doc_id", "source_doc_id", "segments": [str, ...]}``: a document's segments
are joined with EOS. The file is the WHOLE synthetic stream (paper.md, "Data streams and mixing"),
for reading and checking: training reads the same documents from the pool's tokens
(``megadocs data tokenize-pool``; the same rule mapped over token ranges), not this file.
Document ids: ``{id}#rephrase-{gen_index}`` (simple's generations), ``{id}`` (simple's real
documents, self-distill's samples), ``{id}#{algorithm}`` (megadocs).

Empty generations (only whitespace) are left out and counted (``excluded_empty``); length-cut
ones are kept. A rephrase pool generated with G serves any G' <= G (its first G' generations);
a thoughts pool serves G' only when (G'+1) divides (G+1) (:func:`megadocs.pools.pool_generations`),
otherwise this refuses with an error naming the G values that would work.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from megadocs import megadoc, pools
from megadocs.errors import UserError, names_file
from megadocs.formats import ALGORITHMS, MANIFEST, POOL_KIND, replace_dir, write_json

__all__ = ["ASSEMBLED_FORMAT", "ASSEMBLED_DIR", "DOCUMENTS_FILE", "assembled_dir", "assembled_documents",
           "assemble", "assemble_document"]

ASSEMBLED_FORMAT = "megadocs.assembled/1"
ASSEMBLED_DIR = "assembled"
DOCUMENTS_FILE = "documents.jsonl"


def assembled_dir(pool: str | Path, algorithm: str, g: int) -> Path:
    """``POOL/assembled/{algorithm}-g{g}``: where ``gen assemble`` writes.

    >>> assembled_dir("pool", "stitched", 4).as_posix()
    'pool/assembled/stitched-g4'
    """
    return Path(pool) / ASSEMBLED_DIR / f"{algorithm}-g{g}"


def assembled_documents(pool: str | Path, algorithm: str, g: int) -> Path:
    """``POOL/assembled/{algorithm}-g{g}/documents.jsonl``."""
    return assembled_dir(pool, algorithm, g) / DOCUMENTS_FILE


def _document_id(algorithm: str, doc_id: str, document: megadoc.Document, rows: list[pools.PoolRow]) -> str:
    (first, *rest) = document
    if algorithm == "self-distill" or (not rest and first == (megadoc.Real(),)):
        return doc_id
    if algorithm == "simple":
        return f"{doc_id}#rephrase-{rows[first[0].slot].gen_index}"
    return f"{doc_id}#{algorithm}"


def assemble_document(algorithm: str, doc_id: str, text: str,
                      rows: list[pools.PoolRow]) -> tuple[list[dict], int]:
    """The output documents for one real document, and how many empty generations were left out.

    ``rows`` are the selected generations in gen_index order (slot ``s`` = ``rows[s]``).
    """
    empty = {slot for slot, row in enumerate(rows) if row.empty}
    source = None if algorithm == "self-distill" else doc_id
    documents = []
    for document in megadoc.megadocs(algorithm, len(rows), empty):
        segments = [megadoc.render_segment(segment, text, lambda s: rows[s].text, lambda s: rows[s].split_char)
                    for segment in document]
        documents.append({"doc_id": _document_id(algorithm, doc_id, document, rows), "source_doc_id": source,
                          "segments": segments})
    return documents, len(empty)


@dataclass
class _Counts:
    documents: int = 0
    real_documents: int = 0
    segments: int = 0
    excluded_empty: int = 0
    dropped_documents: int = 0


@dataclass(frozen=True)
class _Assembly:
    """A validated request: which pool generations make up ``algorithm`` at ``g``, and where it goes."""

    pool: Path
    algorithm: str
    g: int
    manifest: pools.PoolManifest
    chosen: list[int]  # the pool's gen_index values that make up G=g
    pool_hash: str
    out: Path


def _assembly(pool: Path, algorithm: str, g: int) -> _Assembly:
    """Validate the algorithm against the pool (its kind and G)."""
    if algorithm not in ALGORITHMS:
        raise UserError(f"--algorithm: expected one of {', '.join(ALGORITHMS)}, got {algorithm!r}")
    manifest = pools.read_manifest(pool)
    if manifest.kind != POOL_KIND[algorithm]:
        raise UserError(f"--algorithm: {algorithm} needs a {POOL_KIND[algorithm].value} pool, "
                        f"but {pool} holds {manifest.kind.value} generations")
    chosen = pools.select_generations(manifest.kind, manifest.g, g)
    pool_hash = hashlib.sha256((pool / MANIFEST).read_bytes()).hexdigest()
    return _Assembly(pool, algorithm, g, manifest, chosen, pool_hash, assembled_dir(pool, algorithm, g))


def _source(assembly: _Assembly, docs: str | Path | None) -> str | None:
    """The document source (the pool's, or ``docs`` when it holds the same documents:
    :func:`megadocs.pools.pool_source`)."""
    pools.require_complete(assembly.pool, assembly.manifest)
    return pools.pool_source(assembly.pool, assembly.manifest, docs, field="docs")


def _write_documents(assembly: _Assembly, source: str | None, handle) -> _Counts:
    """Assemble every source document from its pool rows and write them as JSON lines."""
    counts = _Counts()
    for doc, rows in pools.iter_pool_documents(assembly.pool, assembly.manifest, source=source):
        selected = [rows[i] for i in assembly.chosen]
        produced, excluded = assemble_document(assembly.algorithm, doc.doc_id, doc.text, selected)
        counts.excluded_empty += excluded
        counts.real_documents += assembly.manifest.has_sources
        counts.dropped_documents += not produced
        for document in produced:
            handle.write(json.dumps(document, ensure_ascii=False) + "\n")
            counts.documents += 1
            counts.segments += len(document["segments"])
    return counts


def _assembled_manifest(assembly: _Assembly, source: str | None, counts: _Counts) -> dict:
    """The assembly's manifest.json: what it was built from and what it holds."""
    return {
        "format": ASSEMBLED_FORMAT,
        "algorithm": assembly.algorithm,
        "g": assembly.g,
        "rule": megadoc.RULE_VERSION,
        "pool": str(assembly.pool.resolve()),
        "pool_kind": assembly.manifest.kind.value,
        "pool_g": assembly.manifest.g,
        "pool_manifest_sha256": assembly.pool_hash,
        "pool_identity": assembly.manifest.identity(),
        "generation_indices": assembly.chosen,
        "source": source,
        "source_hash": assembly.manifest.source_hash,
        **vars(counts),
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
    assembly = _assembly(Path(pool), algorithm, g)
    out = assembly.out
    if (out / MANIFEST).is_file() and not overwrite:
        existing = json.loads((out / MANIFEST).read_text())
        # Up to date when the pool's generations and the rule are the same (statistics may have
        # been added to the pool since).
        if existing.get("pool_identity") == assembly.manifest.identity() and existing.get("rule") == megadoc.RULE_VERSION:
            return existing
    source = _source(assembly, docs)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        with names_file(out / DOCUMENTS_FILE), open(tmp / DOCUMENTS_FILE, "w") as handle:
            counts = _write_documents(assembly, source, handle)
        result = _assembled_manifest(assembly, source, counts)
        write_json(tmp / MANIFEST, result)
        replace_dir(tmp, out)  # fsyncs documents.jsonl too
    except BaseException:  # a full disk or Ctrl-C: give the space back (the output stays as it was)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return result
