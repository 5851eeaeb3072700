"""A pool's generator counts by its content (issue 34, item 3): byte-identical generators at two
paths give the same pool and run identities, new weights of the same size at the same path a new
one; the weights are hashed once and then served from the cache while size and mtime hold."""

from __future__ import annotations

import json
import os
import shutil

import pytest

import megadocs.fingerprint as fingerprint
from gen.generate import GenerateOptions, GeneratePool
from megadocs.errors import UserError
from megadocs.pools import done_path, pool_identity, read_manifest
from tests.gen.conftest import write_docs
from train.config import RunConfig


def _weights(generator):
    return next(generator.glob("*.safetensors"))


def _init(generator, docs, out) -> dict:
    """The pool's manifest, as a generation run writes it; the pool then counts as generated (a
    shard marker: a pool holding only its manifest takes a re-run's settings, `gen.generate`)."""
    options = GenerateOptions(kind="rephrase", docs=str(docs), generator=str(generator), g=2, out=str(out))
    manifest = GeneratePool(options).prepare()
    done_path(out, 0, manifest["num_shards"]).touch()
    return manifest


def _run_identity(store, pool) -> str:
    return RunConfig.model_validate({"data": {"store": str(store), "mixing_fraction": 0.5,
                                              "synthetic": {"pool": str(pool), "algorithm": "stitched", "g": 2}}
                                     }).identity()


def test_the_generator_counts_by_content_not_path(tiny_generator, tiny_store, tmp_path, monkeypatch):
    docs = write_docs(tmp_path / "docs.jsonl", n_docs=3)
    copy = tmp_path / "elsewhere" / "tiny"
    shutil.copytree(tiny_generator, copy)
    first = _init(tiny_generator, docs, tmp_path / "pool-a")
    second = _init(copy, docs, tmp_path / "pool-b")
    assert first["generator"] != second["generator"]  # where it lay is recorded, as provenance
    assert first["generator_revision"] == second["generator_revision"]
    assert first["generator_revision"].startswith(fingerprint.FINGERPRINT_PREFIX)
    assert pool_identity(tmp_path / "pool-a") == pool_identity(tmp_path / "pool-b")
    assert _run_identity(tiny_store, tmp_path / "pool-a") == _run_identity(tiny_store, tmp_path / "pool-b")

    # new weights of the same size at the same path: another generator, other runs
    weights = _weights(copy)
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 1_000_000))
    third = _init(copy, docs, tmp_path / "pool-c")
    assert third["generator_revision"] != first["generator_revision"]
    assert _run_identity(tiny_store, tmp_path / "pool-c") != _run_identity(tiny_store, tmp_path / "pool-a")
    # and extending the pool made with the old weights is refused
    with pytest.raises(UserError, match=r"generator_revision: the pool was generated with 'sha256:"):
        _init(copy, docs, tmp_path / "pool-b")


def test_weights_are_hashed_once_then_read_from_the_cache(tiny_generator, tmp_path, monkeypatch):
    monkeypatch.setenv("MEGADOCS_CACHE_DIR", str(tmp_path / "cache"))
    reads = []
    digest = fingerprint._digest
    monkeypatch.setattr(fingerprint, "_digest", lambda path: reads.append(path.name) or digest(path))
    first = fingerprint.model_fingerprint(tiny_generator)
    assert _weights(tiny_generator).name in reads
    reads.clear()
    assert fingerprint.model_fingerprint(tiny_generator) == first and reads == []  # nothing read again
    cached = json.loads((tmp_path / "cache" / fingerprint.CACHE_FILE).read_text())
    assert any(key.startswith(str(_weights(tiny_generator).resolve())) for key in cached)


def test_a_pool_made_before_content_fingerprints_is_still_extended(tiny_generator, tmp_path):
    """A pool that recorded the old size-only fingerprint (``dir-sha256:``) keeps resuming with the
    generator it recorded (compat), and refuses another."""
    docs = write_docs(tmp_path / "docs.jsonl", n_docs=3)
    pool = tmp_path / "pool"
    manifest = _init(tiny_generator, docs, pool)
    legacy = fingerprint.legacy_fingerprint(tiny_generator)
    (pool / "manifest.json").write_text(json.dumps({**manifest, "generator_revision": legacy}))
    assert _init(tiny_generator, docs, pool)["generator_revision"] == legacy
    assert read_manifest(pool).generator_revision == legacy
    other = tmp_path / "other"
    shutil.copytree(tiny_generator, other)
    (other / "config.json").write_text((other / "config.json").read_text().replace("}", ', "extra": 1}', 1))
    with pytest.raises(UserError, match="generator_revision: the pool was generated with 'dir-sha256:"):
        _init(other, docs, pool)


def test_a_model_card_is_not_the_generator(tiny_generator, tiny_store, tmp_path):
    """`megadocs train` writes a model card naming its output folder: the same generator trained
    into two folders differs only there, and must give the same pool and run identities; a pool
    that recorded the fingerprint over every file (model card included) is still extended."""
    docs = write_docs(tmp_path / "docs.jsonl", n_docs=3)
    copy = tmp_path / "elsewhere" / "tiny"
    shutil.copytree(tiny_generator, copy)
    (copy / "README.md").write_text("# a model card\n\n| output | `runs/elsewhere/generator` |\n")
    (copy / "LICENSE").write_text("some licence\n")
    first = _init(tiny_generator, docs, tmp_path / "pool-a")
    second = _init(copy, docs, tmp_path / "pool-b")
    assert first["generator_revision"] == second["generator_revision"]
    assert _run_identity(tiny_store, tmp_path / "pool-a") == _run_identity(tiny_store, tmp_path / "pool-b")

    every_file = fingerprint.model_fingerprint(copy, every_file=True)
    assert every_file != second["generator_revision"]
    manifest = json.loads((tmp_path / "pool-b" / "manifest.json").read_text())
    (tmp_path / "pool-b" / "manifest.json").write_text(json.dumps({**manifest, "generator_revision": every_file}))
    assert _init(copy, docs, tmp_path / "pool-b")["generator_revision"] == every_file
    with pytest.raises(UserError, match="generator_revision: the pool was generated with 'sha256:"):
        _init(tiny_generator, docs, tmp_path / "pool-b")  # the recorded card was the copy's
