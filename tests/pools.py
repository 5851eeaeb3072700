"""Generation pools written by hand in the documented format (what `megadocs gen rephrase` writes,
docs/architecture.md "Generation pool"), tokenized as `megadocs data tokenize-pool` does, and the
reference the tokenized pool is checked against: ``gen assemble``'s text, every segment tokenized
alone and EOS-joined."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from gen.assemble import assemble, assembled_documents
from megadocs.corpus import is_token_store, source_hash
from train.store import TOKEN_DTYPE, TokenizedDocuments, TokenStore


def tokenize_assembled(pool, algorithm: str, g: int, store: TokenStore) -> TokenizedDocuments:
    """Assemble (if needed) and tokenize the assembled text; documents left without tokens are skipped."""
    assemble(pool, algorithm, g)
    tokenizer, eos = store.tokenizer(), store.eos_id
    documents = []
    with open(assembled_documents(pool, algorithm, g)) as handle:
        for line in handle:
            segments = [s for s in json.loads(line)["segments"] if s.strip()]
            pieces = [tokenizer.encode(s, add_special_tokens=False) for s in segments]
            pieces = [piece for piece in pieces if piece]
            if pieces:
                documents.append([t for i, piece in enumerate(pieces) for t in ([eos] if i else []) + piece])
    offsets = np.concatenate([[0], np.cumsum([len(d) for d in documents])]).astype(np.int64)
    tokens = np.array([t for d in documents for t in d], dtype=TOKEN_DTYPE)
    return TokenizedDocuments(tokens=tokens, offsets=offsets)


def made_up_rephrase(doc_id: str, text: str, k: int) -> str:
    """A deterministic stand-in for generator output (tests need no generator)."""
    return f"Rephrase {k} of {doc_id}: {text[k * 50:(k + 1) * 50]}"


def write_pool(out: Path, source: str | Path, kind: str, g: int, row: Callable[[int, str, str, int], dict], *,
               num_shards: int = 1, documents: list[tuple[str, str]] | None = None,
               tokenize: str | Path | bool = True, **manifest_fields) -> Path:
    """A complete pool of ``source`` (a token store: its train split; or a JSONL file whose
    ``documents`` are given) in the documented layout; ``row(k, doc_id, text, i)`` gives the fields
    of document k's generation i besides doc_id and gen_index. ``tokenize``: the store to tokenize
    it for (True: its source, when that is a token store; False: not tokenized)."""
    from train.store import TokenStore

    if documents is None:
        documents = [(doc.doc_id, doc.text) for doc in TokenStore.open(source).split("train").documents()]
    out.mkdir(parents=True)
    manifest = {"format": "megadocs.gen-pool/1", "kind": kind, "g": g, "source": source and str(source),
                "source_hash": source and source_hash(source), "n_docs": len(documents), "num_shards": num_shards,
                "seed": 0, "complete": True, **manifest_fields}
    (out / "manifest.json").write_text(json.dumps(manifest))
    for shard in range(num_shards):
        stem = f"shard-{shard:05d}-of-{num_shards:05d}"
        with open(out / f"{stem}.jsonl", "w") as handle:
            for k in range(shard, len(documents), num_shards):
                doc_id, text = documents[k]
                for i in range(g):
                    handle.write(json.dumps({"doc_id": doc_id, "gen_index": i, **row(k, doc_id, text, i)}) + "\n")
        (out / f"{stem}.done").write_text("{}")
    store = source if tokenize is True and source and is_token_store(source) else tokenize or None
    if store:
        from train.pool_tokens import tokenize_pool

        tokenize_pool(out, store, progress=False)
    return out


def write_rephrase_pool(out: Path, source: str | Path, *, g: int = 2,
                        rephrase: Callable[[str, str, int], str] = made_up_rephrase, **options) -> Path:
    """A rephrase pool with ``rephrase(doc_id, text, k)`` as generation k (options: :func:`write_pool`)."""
    return write_pool(out, source, "rephrase", g, lambda k, doc_id, text, i: {"text": rephrase(doc_id, text, i)},
                      **options)


def write_sample_pool(out: Path, n_docs: int, *, tokenize: str | Path, num_shards: int = 1) -> Path:
    """A ``sample`` pool (what `megadocs gen sample` writes): ``n_docs`` made-up samples, a few empty."""
    from megadocs.pools import sample_doc_id

    documents = [(sample_doc_id(k), "") for k in range(n_docs)]
    return write_pool(out, None, "sample", 1, lambda k, doc_id, text, i: {"text": "" if k % 7 == 3 else
                      f"Sample {k}: a text the model wrote about item {k * 13 % 17}."},
                      documents=documents, num_shards=num_shards, tokenize=tokenize)
