"""Diversity vs G: a pool whose generations repeat each other scores as repetitive, one whose
generations differ scores as diverse; the figures land in the pool manifest without changing the
pool's identity (its assemblies and runs stay valid)."""

from __future__ import annotations

import json

import pytest

from gen.diversity import g_values, measure, measured_gs, write_pool_diversity
from megadocs.cli import main
from megadocs.pools import pool_generations, pool_identity, read_manifest, served_gs, write_manifest


def _write_pool(pool, docs, generations_of, g: int, kind: str = "rephrase") -> None:
    from megadocs.corpus import source_hash

    pool.mkdir(parents=True)
    source = pool.parent / f"{pool.name}-docs.jsonl"
    source.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in docs))
    rows = [{"doc_id": i, "gen_index": k, "text": text}
            for i, t in docs for k, text in enumerate(generations_of(t, g))]
    (pool / "shard-00000-of-00001.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (pool / "shard-00000-of-00001.done").write_text("{}\n")
    (pool / "manifest.json").write_text(json.dumps({
        "format": "megadocs.gen-pool/1", "kind": kind, "g": g, "source": str(source),
        "source_hash": source_hash(source), "n_docs": None, "generator": "hand",  # as gen writes it
        "statistics": {"documents": len(docs), "generations": len(rows)},
        "prompt_template": {"name": "wrap", "sha256": "0" * 64}, "seed": 0, "num_shards": 1,
    }))


WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho "
         "sigma tau upsilon phi chi psi omega").split()


def _docs(count=6):
    return [(f"d{i}", " ".join(WORDS[(i + j) % len(WORDS)] for j in range(40))) for i in range(count)]


def _copies(text, g):
    return [text] * g  # every generation is the source verbatim


def _varied(text, g):
    words = text.split()
    return [" ".join(words[k::3] + [f"{words[0]}{k}x{j}" for j in range(30)]) for k in range(g)]


def test_measures_separate_repetition_from_new_text(tmp_path):
    copies, varied = tmp_path / "copies", tmp_path / "varied"
    _write_pool(copies, _docs(), _copies, g=4)
    _write_pool(varied, _docs(), _varied, g=4)
    identity = pool_identity(copies)
    same = write_pool_diversity(copies)
    new = write_pool_diversity(varied)
    assert list(same.by_g) == list(new.by_g) == [1, 2, 4]
    assert same.documents == 6
    for g in (2, 4):
        assert same.by_g[g].cross_generation_overlap == pytest.approx(1.0)
        assert new.by_g[g].cross_generation_overlap < 0.2
        assert same.by_g[g].source_overlap == pytest.approx(1.0)
        assert new.by_g[g].distinct_n > same.by_g[g].distinct_n
        assert new.by_g[g].compression_ratio > same.by_g[g].compression_ratio
    # repeats: distinct n-grams halve when G doubles; new text keeps them up
    assert same.by_g[4].distinct_n < 0.6 * same.by_g[1].distinct_n
    assert new.by_g[4].distinct_n > 0.8 * new.by_g[1].distinct_n
    stored = json.loads((copies / "manifest.json").read_text())["diversity"]
    assert stored["by_g"] == same.to_json()["by_g"]
    assert read_manifest(copies).diversity == same  # read back as the record it was written as
    assert pool_identity(copies) == identity  # statistics, not an identity field


def test_manifest_with_diversity_is_rewritten_byte_for_byte(tmp_path):
    """Reading a manifest and writing it back (what every read-modify-write of the pool does)
    leaves the file as it was: ``diversity`` last, a manifest without one gets no ``null``."""
    pool = tmp_path / "pool"
    _write_pool(pool, _docs(), _varied, g=2)
    path = pool / "manifest.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "policies": {"shards": "k % n"}}))  # as gen writes
    write_manifest(pool, read_manifest(pool))
    assert "diversity" not in json.loads(path.read_bytes())
    write_pool_diversity(pool)
    written = path.read_bytes()
    assert list(json.loads(written))[-2:] == ["policies", "diversity"]
    write_manifest(pool, read_manifest(pool))
    assert path.read_bytes() == written


def test_cli_samples_documents_and_refuses_bad_input(tmp_path, capsys):
    pool = tmp_path / "pool"
    _write_pool(pool, _docs(10), _varied, g=2)
    assert main(["gen", "diversity", "--pool", str(pool), "--max-docs", "3"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["documents"] == 3 and list(out["by_g"]) == ["1", "2"]
    assert main(["gen", "diversity", "--pool", str(pool), "--max-docs", "0"]) == 2
    assert "--max-docs: expected >= 1" in capsys.readouterr().err
    assert main(["gen", "diversity", "--pool", str(tmp_path / "nowhere")]) == 2


@pytest.mark.parametrize("command", [["diversity"], ["assemble", "--algorithm", "simple", "--g", "1"]])
def test_a_shard_file_gone_from_a_finished_pool_is_one_line_naming_it_and_its_marker(tmp_path, capsys, command):
    """A pool whose shard .jsonl was removed (its .done kept): FileNotFoundError's traceback, now one line
    naming the file and the marker to delete so that the same gen command generates the shard again."""
    pool = tmp_path / "pool"
    _write_pool(pool, _docs(), _varied, g=2)
    (pool / "shard-00000-of-00001.jsonl").unlink()
    assert main(["gen", command[0], "--pool", str(pool), *command[1:]]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(f"error: {pool / 'shard-00000-of-00001.jsonl'}: not found") and \
        str(pool / "shard-00000-of-00001.done") in err, err


def test_documents_are_sampled_across_the_whole_pool_not_its_first_ones(tmp_path):
    """--max-docs samples every k-th document of the pool (a corpus in its own order, e.g. by date
    or topic, is not measured by its head): 10 documents, 2 sampled are documents 0 and 5."""
    pool, docs = tmp_path / "pool", _docs(10)
    late = {text for _, text in docs[5:]}
    _write_pool(pool, docs, lambda text, g: (_varied if text in late else _copies)(text, g), g=2)
    diversity = write_pool_diversity(pool, max_docs=2)
    assert diversity.documents == 2
    assert diversity.by_g[2].cross_generation_overlap == pytest.approx(0.5, abs=0.1)  # one copied, one varied


def test_measure_is_null_not_nan_without_ngrams():
    assert measure([("a b", ["x"])]).model_dump() == {"distinct_n": None, "compression_ratio": pytest.approx(
        measure([("a b", ["x"])]).compression_ratio), "source_overlap": None, "cross_generation_overlap": None}
    assert g_values(1) == [1] and g_values(6) == [1, 2, 4, 6] and g_values(32)[-1] == 32


def test_a_thoughts_pool_is_measured_at_every_g_it_serves(tmp_path):
    """A G=3 thoughts pool also serves G'=1 (its middle thought: (1+1) divides (3+1)); G'=1 is
    measured on that thought, not on the first one. Here the middle thought copies the source and
    the others do not, so G'=1 copies all and G=3 a third."""
    pool = tmp_path / "thoughts"
    middle = pool_generations("thoughts", 3, 1)
    _write_pool(pool, _docs(), lambda text, g: [text if k in middle else row for k, row in enumerate(_varied(text, g))],
                g=3, kind="thoughts")
    diversity = write_pool_diversity(pool)
    assert list(diversity.by_g) == measured_gs("thoughts", 3) == served_gs("thoughts", 3) == [1, 3]
    assert diversity.by_g[1].source_overlap == pytest.approx(1.0)
    assert diversity.by_g[3].source_overlap < 0.6
    assert diversity.by_g[1].cross_generation_overlap == 0.0  # one thought: no pair
