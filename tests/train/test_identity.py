"""A run's identity covers what its data is (store and pool manifests, the megadoc rule), not where it lies;
a run directory is reused only by a run of the same identity, finished or not."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from megadocs.errors import UserError
from train.config import TRAINING_REVISION, TRAINING_REVISIONS, RunConfig
from train.store import prepare


def _config(store, **data) -> RunConfig:
    return RunConfig.model_validate({
        "data": {"store": str(store), "context": 64, **data},
        "model": {"preset": "tiny-1m"},
        "optim": {"batch_size": 8, "micro_batch_size": 8, "warmup_fraction": 0.1},
        "eval": {"val_windows": 8},
        "checkpoint_every": 1000,
        "device": "cpu",
    })


def _corpus(tiny_store, path, first: int, count: int = 30, chars: int = 300):
    rows = [json.loads(line) for line in (tiny_store / "train.docs.jsonl").read_text().splitlines()]
    rows = rows[first:first + count]
    path.write_text("".join(json.dumps({"id": r["doc_id"], "text": r["text"][:chars]}) + "\n" for r in rows))
    return rows


def _prepare(tiny_store, corpus, out):
    return prepare(corpus, out, tokenizer=tiny_store / "tokenizer", val_docs=4, seed=0)


def _rewrite_later(path: Path, text: str) -> None:
    """Rewrite ``path`` as a later run would: with a later mtime. Two writes within one tick of a
    file system's coarse clock can share an mtime, and a same-size rewrite would then look unchanged
    to the caches keyed on (path, size, mtime) (megadocs.pools, megadocs.data_identity)."""
    before = path.stat().st_mtime_ns
    path.write_text(text)
    if path.stat().st_mtime_ns <= before:
        os.utime(path, ns=(path.stat().st_atime_ns, before + 1_000_000))


def _write_pool(pool, documents, prompt_sha: str) -> None:
    """A complete one-shard rephrase pool as `megadocs gen rephrase` writes it (G = 1)."""
    from megadocs.corpus import source_hash

    pool.mkdir(parents=True, exist_ok=True)
    rows = [{"doc_id": d["id"], "gen_index": 0, "text": " ".join(reversed(d["text"].split()))} for d in documents]
    (pool / "shard-00000-of-00001.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (pool / "shard-00000-of-00001.done").write_text("{}\n")
    (pool / "manifest.json").write_text(json.dumps({
        "format": "megadocs.gen-pool/1", "kind": "rephrase", "g": 1, "source": str(pool / "docs.jsonl"),
        "source_hash": source_hash(pool / "docs.jsonl"), "n_docs": len(documents), "generator": "hand",
        "prompt_template": {"name": "wrap", "sha256": prompt_sha}, "sampling": {"temperature": 1.0},
        "seed": 0, "num_shards": 1, "complete": True,
    }))


def test_identity_follows_what_is_learned_not_how_it_runs(tiny_store):
    base = _config(tiny_store)
    same = RunConfig.model_validate({**base.model_dump(), "checkpoint_every": 7, "compile": "off", "parallelism": "fsdp",
                                     "attention": "sdpa", "loss": "full", "deterministic": False,
                                     "optim": {**base.optim.model_dump(), "micro_batch_size": 4}})
    assert same.identity() == base.identity()
    dump = base.model_dump()
    for section, field, value in (("optim", "lr", 0.001), ("data", "real_epochs", 16), ("data", "document_mask", True),
                                  ("eval", "val_windows", 4)):
        changed = {**dump, section: {**dump[section], field: value}}
        assert RunConfig.model_validate(changed).identity() != base.identity(), field
    assert RunConfig.model_validate({**dump, "seed": 1}).identity() != base.identity()


def test_synthetic_only_identity_covers_synthetic_epochs_and_not_real_epochs(tiny_store, tmp_path):
    """m = 1 reads no real window: real_epochs does not change the run, synthetic_epochs does.
    An unset synthetic_epochs stays out of the hash, so runs made before the field keep theirs."""
    from megadocs.config import config_hash
    from tests.pools import write_rephrase_pool

    write_rephrase_pool(tmp_path / "pool", tiny_store)
    synthetic = {"synthetic": {"pool": str(tmp_path / "pool"), "algorithm": "stitched", "g": 2},
                 "mixing_fraction": 1.0}
    first = _config(tiny_store, **synthetic, synthetic_epochs=1).identity()
    assert _config(tiny_store, **synthetic, synthetic_epochs=1, real_epochs=3).identity() == first
    assert _config(tiny_store, **synthetic, synthetic_epochs=2).identity() != first
    mixed = {**synthetic, "mixing_fraction": 0.5}
    assert _config(tiny_store, **mixed).identity() != _config(tiny_store, **mixed, real_epochs=3).identity()

    base = _config(tiny_store)
    before_the_field = base.model_dump(mode="json")
    del before_the_field["data"]["synthetic_epochs"]
    from train.config import EXECUTION_FIELDS

    for section, names in EXECUTION_FIELDS.items():
        for name in names:
            (before_the_field[section] if section else before_the_field).pop(name, None)
    before_the_field["data"]["document_mask"] = False
    before_the_field["data"].pop("store")
    before_the_field["eval"].pop("benchmark_data")
    # the fields added since keep identities; the training revision changes them on purpose
    assert base.identity() == config_hash({"config": before_the_field, "data": base.data_identity(),
                                           "training_revision": TRAINING_REVISION})  # fmt: skip


def test_the_training_revision_is_part_of_the_identity(tiny_store, monkeypatch):
    """Runs trained by earlier code (the EOS embedding frozen: revision 1) are not this code's:
    the same config gets another identity, so `search` supersedes their trials."""
    import train.config

    assert TRAINING_REVISION >= 2 and set(TRAINING_REVISIONS) == set(range(1, TRAINING_REVISION + 1))
    today = _config(tiny_store).identity()
    monkeypatch.setattr(train.config, "TRAINING_REVISION", 1)
    assert _config(tiny_store).identity() != today


def test_re_preparing_a_store_at_the_same_path_changes_the_identity_and_moving_it_does_not(tiny_store, tmp_path):
    _corpus(tiny_store, tmp_path / "a.jsonl", first=0)
    _corpus(tiny_store, tmp_path / "b.jsonl", first=40)
    store = tmp_path / "store"
    _prepare(tiny_store, tmp_path / "a.jsonl", store)
    before = _config(store).identity()
    moved = tmp_path / "elsewhere" / "store"
    shutil.copytree(store, moved)
    assert _config(moved).identity() == before  # the same data at another path
    shutil.rmtree(store)
    _prepare(tiny_store, tmp_path / "b.jsonl", store)  # another corpus, same path
    assert _config(store).identity() != before
    shutil.rmtree(store)
    _prepare(tiny_store, tmp_path / "a.jsonl", store)  # the first corpus again: its runs are valid again
    assert _config(store).identity() == before


def test_a_run_has_the_identity_of_the_store_it_opened(tiny_store, tmp_path, monkeypatch, one_thread):
    """A store replaced at its path just before the run opens it: the run's identity, its
    identity.json and its config_hash are of the store it opened and trained on, not of the one
    that lay there a moment earlier (the identity is derived from the opened stores)."""
    from train.data import RunStores
    from train.loop import run
    from train.store import TokenStore

    _corpus(tiny_store, tmp_path / "a.jsonl", first=0, count=20, chars=200)
    _corpus(tiny_store, tmp_path / "b.jsonl", first=40, count=20, chars=200)
    store, replacement = tmp_path / "store", tmp_path / "replacement"
    _prepare(tiny_store, tmp_path / "a.jsonl", store)
    _prepare(tiny_store, tmp_path / "b.jsonl", replacement)
    config = _config(store, real_epochs=1)
    before = config.identity()

    # unchanged stores (data.store and an eval.extra one): the opened stores give the identity by path
    dump = _config(store).model_dump(mode="json")
    dump["eval"]["extra"] = {"other": {"store": str(replacement), "split": "val"}}
    with_extra = RunConfig.model_validate(dump)
    opened = RunStores.open(with_extra)
    assert opened.identity(with_extra) == with_extra.identity()
    assert opened.data_identity(with_extra) == with_extra.data_identity()

    open_by_path = TokenStore.open

    def replaced_then_opened(path):
        if Path(path) == store and replacement.exists():
            store.rename(tmp_path / "earlier")
            replacement.rename(store)
        return open_by_path(path)

    monkeypatch.setattr(TokenStore, "open", replaced_then_opened)
    run(config, tmp_path / "run")
    trained = config.identity()  # of the store that lies there now: the one the run opened
    assert trained != before
    assert (tmp_path / "run" / "config_hash").read_text().strip() == trained
    recorded = json.loads((tmp_path / "run" / "identity.json").read_text())
    assert recorded["identity"] == trained and recorded["data"] == config.data_identity()


def test_a_run_has_the_identity_of_the_pool_whose_tokens_it_opened(tiny_store, tmp_path, monkeypatch, one_thread):
    """The pool's manifest is read once to open its tokens, and that read is the run's pool identity
    (the same value as read by path). A pool replaced at its path between the run hashing its
    identity and opening its tokens is refused before anything is written."""
    from tests.pools import write_rephrase_pool
    from train.data import RunData, RunStores
    from train.loop import run

    _corpus(tiny_store, tmp_path / "docs.jsonl", first=0, count=20, chars=200)
    store = tmp_path / "store"
    _prepare(tiny_store, tmp_path / "docs.jsonl", store)
    pool, replacement, earlier = tmp_path / "pool", tmp_path / "replacement", tmp_path / "earlier"
    write_rephrase_pool(pool, store, prompt_template={"name": "wrap", "sha256": "a" * 64})  # tokenized for store
    write_rephrase_pool(replacement, store, prompt_template={"name": "wrap", "sha256": "b" * 64})
    config = _config(store, synthetic={"pool": str(pool), "algorithm": "stitched", "g": 2}, mixing_fraction=0.5,
                     real_epochs=1)
    before = config.identity()
    opened = RunData.open(config)  # an unchanged pool: the identity as opened is the one by path
    assert opened.identity(config) == before and opened.data_identity(config) == config.data_identity()
    assert opened.streams.synthetic_pool == config.data_identity()["synthetic"]["pool"]

    stores = RunStores.open(config)
    assert stores.identity(config) == before
    pool.rename(earlier)
    replacement.rename(pool)
    assert RunData.open(config, stores).identity(config) == config.identity() != before  # the pool it read

    open_data = RunData.open

    def replaced_then_opened(cls, config, stores=None):  # the earlier pool back, after the identity
        pool.rename(replacement)
        earlier.rename(pool)
        return open_data(config, stores)

    monkeypatch.setattr(RunData, "open", classmethod(replaced_then_opened))
    with pytest.raises(UserError, match=rf"^data\.synthetic\.pool: {pool} changed while the run opened it "):
        run(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_the_default_run_folder_is_named_by_the_identity_it_records(tiny_store, tmp_path, monkeypatch, capsys,
                                                                     one_thread):
    """`megadocs train` opens the stores once: the runs/train/<identity> folder, its "run ID" line and
    the identity recorded inside are one, even when the store is replaced at its path just after
    the folder was named (the run trains on the stores the CLI opened)."""
    import yaml

    import train.loop
    from megadocs.cli import main

    _corpus(tiny_store, tmp_path / "a.jsonl", first=0, count=20, chars=200)
    _corpus(tiny_store, tmp_path / "b.jsonl", first=40, count=20, chars=200)
    store, replacement = tmp_path / "store", tmp_path / "replacement"
    _prepare(tiny_store, tmp_path / "a.jsonl", store)
    _prepare(tiny_store, tmp_path / "b.jsonl", replacement)
    config_path = tmp_path / "run.yaml"
    config_path.write_text(yaml.safe_dump(_config(store, real_epochs=1).model_dump(mode="json")))
    before = _config(store, real_epochs=1).identity()
    real_run = train.loop.run

    def replaced_then_run(*args, **kwargs):
        store.rename(tmp_path / "earlier")
        replacement.rename(store)
        return real_run(*args, **kwargs)

    monkeypatch.setattr(train.loop, "run", replaced_then_run)
    monkeypatch.chdir(tmp_path)  # runs/train/<identity> under it
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)  # restored after the test
    assert main(["train", str(config_path)]) == 0
    assert f"run {before} -> runs/train/{before}" in capsys.readouterr().err
    assert [folder.name for folder in (tmp_path / "runs" / "train").iterdir()] == [before]
    assert (tmp_path / "runs" / "train" / before / "config_hash").read_text().strip() == before


def test_regenerating_a_pool_with_another_prompt_changes_the_identity(tiny_store, tmp_path, monkeypatch):
    """The synthetic part of a run's identity is what training reads: the pool's identity and the
    megadoc rule's version (no assembled file: `search` and `train` need none)."""
    import train.config

    documents = _corpus(tiny_store, tmp_path / "docs.jsonl", first=0, count=12)
    store = tmp_path / "store"
    _prepare(tiny_store, tmp_path / "docs.jsonl", store)
    pool = tmp_path / "pool"
    pool.mkdir()
    shutil.copy(tmp_path / "docs.jsonl", pool / "docs.jsonl")
    _write_pool(pool, [{"id": d["doc_id"], "text": d["text"][:300]} for d in documents], prompt_sha="a" * 64)
    synthetic = {"synthetic": {"pool": str(pool), "algorithm": "simple", "g": 1}, "mixing_fraction": 0.5}
    first = _config(store, **synthetic).identity()
    assert _config(store, **synthetic).identity() == first
    assert not (pool / "assembled").exists()  # nothing but the pool is read
    manifest = json.loads((pool / "manifest.json").read_text())
    manifest["statistics"] = {"diversity": {"1": {"distinct_2": 0.9}}}  # added later: same generations
    (pool / "manifest.json").write_text(json.dumps(manifest))
    assert _config(store, **synthetic).identity() == first

    manifest["prompt_template"]["sha256"] = "b" * 64  # regenerated with another prompt at the same path
    _rewrite_later(pool / "manifest.json", json.dumps(manifest))  # (the same size: told apart by its mtime)
    regenerated = _config(store, **synthetic).identity()
    assert regenerated != first

    moved = tmp_path / "moved-pool"
    shutil.copytree(pool, moved)
    moved_synthetic = {**synthetic, "synthetic": {**synthetic["synthetic"], "pool": str(moved)}}
    assert _config(store, **moved_synthetic).identity() == regenerated

    monkeypatch.setattr(train.config, "RULE_VERSION", "megadoc-rule/next")  # the rule changed
    assert _config(store, **synthetic).identity() != regenerated
    assert _config(store).identity() == _config(store).identity()  # real-only runs do not read it


def test_a_finished_run_is_reused_only_by_its_own_identity(tiny_store, tmp_path, capsys, one_thread):
    import yaml

    from megadocs.cli import main

    _corpus(tiny_store, tmp_path / "docs.jsonl", first=0, count=20, chars=200)
    _prepare(tiny_store, tmp_path / "docs.jsonl", tmp_path / "store")
    config_path = tmp_path / "run.yaml"
    config_path.write_text(yaml.safe_dump(_config(tmp_path / "store", real_epochs=1).model_dump(mode="json")))
    run = tmp_path / "run"
    assert main(["train", str(config_path), "--out", str(run)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    recorded = (run / "config_hash").read_text().strip()
    assert json.loads((run / "identity.json").read_text())["identity"] == recorded
    capsys.readouterr()

    # Another config on the finished run directory: refused in one line naming both identities.
    assert main(["train", str(config_path), "--set", "optim.lr=0.001", "--out", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the "run ID -> RUN" line
    dump = _config(tmp_path / "store", real_epochs=1).model_dump()
    other = RunConfig.model_validate({**dump, "optim": {**dump["optim"], "lr": 0.001}}).identity()
    assert err.startswith("error: ") and "\n" not in err
    assert recorded in err and other in err
    assert json.loads((run / "metrics.json").read_text()) == metrics  # nothing lost

    # The same config is still served from the finished directory.
    assert main(["train", str(config_path), "--out", str(run)]) == 0

    # A stale recorded identity of this training revision: --reidentify adopts it (the user vouches
    # for its data).
    identity_json = json.loads((run / "identity.json").read_text())
    (run / "config_hash").write_text("0123456789abcdef\n")
    assert main(["train", str(config_path), "--out", str(run)]) == 2
    assert "0123456789abcdef" in capsys.readouterr().err
    assert main(["train", "--reidentify", str(run)]) == 0
    assert (run / "config_hash").read_text().strip() == recorded
    assert json.loads((run / "metrics.json").read_text())["val_loss"] == metrics["val_loss"]
    assert main(["train", str(config_path), "--out", str(run)]) == 0

    # A run of an earlier training revision (before it was recorded; or made before identities
    # covered the data, without identity.json): refused by train and by --reidentify, in one line.
    for earlier in ({k: v for k, v in identity_json.items() if k != "training_revision"}, None):
        if earlier is None:
            (run / "identity.json").unlink()
        else:
            (run / "identity.json").write_text(json.dumps({**earlier, "identity": "0123456789abcdef"}))
        (run / "config_hash").write_text("0123456789abcdef\n")
        capsys.readouterr()
        assert main(["train", str(config_path), "--out", str(run)]) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert "training revision 1 (the EOS input embedding was a padding row" in err and recorded in err
        assert main(["train", "--reidentify", str(run)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: --reidentify:") and "\n" not in err and "training revision 1" in err
        assert (run / "config_hash").read_text().strip() == "0123456789abcdef"  # nothing rewritten
        assert json.loads((run / "metrics.json").read_text()) == metrics


@pytest.mark.parametrize("algorithm", ["stitched", "latent"])
def test_a_run_recorded_with_the_earlier_synthetic_identity_is_named_and_adopted_only_when_its_tokens_hold(
        algorithm, tiny_store, tmp_path, capsys):
    """Runs whose identity covered the assembled file and the generator's path (before this
    identity): a stitched one read today's tokens and may be adopted; a latent one read its
    documents tokenized in pieces and is trained again."""
    import yaml

    from megadocs.cli import main
    from tests.pools import write_pool
    from train.run_dir import REVISION_KEY, check_run_identity

    kind = "thoughts" if algorithm == "latent" else "rephrase"
    pool = write_pool(tmp_path / "pool", tiny_store, kind, 1, lambda k, doc_id, text, i: {
        "text": f"about {doc_id}", "split_index": 0, "split_token": 0, "split_char": len(text) // 2})
    config = _config(tiny_store, mixing_fraction=0.5, synthetic={"pool": str(pool), "algorithm": algorithm, "g": 1})
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json")))
    (run / "config_hash").write_text("0123456789abcdef\n")
    earlier = {"algorithm": algorithm, "g": 1, "pool": {"generator": "/models/x"}, "assembled": {"documents": 3},
               **({"tokenization": "pieces/1"} if algorithm == "latent" else {})}
    (run / "identity.json").write_text(json.dumps({"identity": "0123456789abcdef", REVISION_KEY: TRAINING_REVISION,
                                                   "data": {"store": {}, "synthetic": earlier}}))
    with pytest.raises(UserError, match="recorded before a synthetic run's identity hashed its pool") as refused:
        check_run_identity(run, config.identity())
    if algorithm == "latent":
        assert "tokenized in pieces" in str(refused.value) and "train it again" in str(refused.value)
        assert main(["train", "--reidentify", str(run)]) == 2
        assert "tokenized in pieces" in capsys.readouterr().err
    else:
        assert f"megadocs train --reidentify {run}" in str(refused.value)
        assert main(["train", "--reidentify", str(run)]) == 0
        check_run_identity(run, config.identity())  # adopted


def test_a_run_scores_the_benchmark_data_it_hashed_when_it_opened_its_data(small_store, tmp_path, monkeypatch,
                                                                          one_thread):
    """eval.benchmark_data is read once when the run opens its data: its identity hashes those bytes
    and its evaluation, after training, scores those bytes, even when the directory holds other
    files by then. A task's missing file is refused before training."""
    from megadocs.data_identity import directory_identity
    from tests.eval.conftest import DATA_DIR
    from train.downstream import evaluate_benchmarks
    from train.loop import Trainer, run

    bench = tmp_path / "bench"
    shutil.copytree(DATA_DIR, bench)
    dump = _config(small_store, real_epochs=1).model_dump(mode="json")
    dump["eval"].update(benchmarks=["piqa"], benchmark_data=str(bench), benchmark_limit=3)
    config = RunConfig.model_validate(dump)
    before = config.identity()
    fit = Trainer.fit

    def fit_then_replace(self):  # the benchmark file replaced while the run trains
        status = fit(self)
        (bench / "piqa.jsonl").write_text('{"goal": "replaced"}\n')
        return status

    monkeypatch.setattr(Trainer, "fit", fit_then_replace)
    metrics = run(config, tmp_path / "run")
    assert config.identity() != before == metrics.config_hash  # the data by path now is other data
    recorded = json.loads((tmp_path / "run" / "identity.json").read_text())
    assert recorded["data"]["benchmark_data"] == directory_identity(DATA_DIR, "eval.benchmark_data")
    direct = evaluate_benchmarks([tmp_path / "run" / "model"], ["piqa"], data_dir=DATA_DIR, limit=3,
                                 device="cpu", batch_size=8)
    assert metrics.to_json()["benchmarks"] == json.loads(json.dumps(direct))  # the bytes it hashed

    dump["eval"]["benchmarks"] = ["piqa", "sciq"]
    with pytest.raises(UserError, match=rf"^benchmark piqa: {bench / 'piqa.jsonl'}: line 1 lacks field\(s\) sol1, "):
        run(RunConfig.model_validate(dump), tmp_path / "refused")
    shutil.copy(DATA_DIR / "piqa.jsonl", bench / "piqa.jsonl")
    (bench / "sciq.jsonl").unlink()
    with pytest.raises(UserError, match=rf"^benchmark sciq: data file {bench / 'sciq.jsonl'} not found"):
        run(RunConfig.model_validate(dump), tmp_path / "refused")
    assert not (tmp_path / "refused").exists()


@pytest.mark.parametrize("content", [b"{cut sh", b"\xff\xfe", b"[1]"], ids=["cut-short", "not-utf8", "a-list"])
def test_a_damaged_identity_record_is_one_line_naming_it_and_left_as_it_is(tmp_path, capsys, content):
    """`train --reidentify RUN` on a RUN whose identity.json was cut short or overwritten raised
    JSONDecodeError in a traceback (its readers: `recorded_revision`, `earlier_synthetic_identity`)."""
    from megadocs.cli import main
    from train.run_dir import earlier_synthetic_identity, recorded_revision

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("data: {store: nowhere}\n")
    (run / "identity.json").write_bytes(content)
    for read in (recorded_revision, earlier_synthetic_identity):
        with pytest.raises(UserError, match=re.escape(f"{run / 'identity.json'}: not a run's identity record")):
            read(run)
    assert main(["train", "--reidentify", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {run / 'identity.json'}: "), err
    assert (run / "identity.json").read_bytes() == content


def _cut_in_half(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _cut_at_a_line(path: Path) -> None:
    """Cut before the run's top-level ``seed: 3``: what is left is a valid config, of seed 0."""
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[: lines.index("seed: 3\n")]))


@pytest.mark.parametrize(("name", "damage"), [
    ("identity.json", _cut_in_half),
    ("identity.json", lambda path: path.write_bytes(b"\xff\xfe")),
    ("config.yaml", _cut_in_half),
    ("config.yaml", _cut_at_a_line),  # valid YAML: the fields it lost would read as their defaults
    ("config.yaml", lambda path: path.write_text("data: {store: [\n")),
    ("config.yaml", lambda path: path.write_text("[1, 2]\n")),
], ids=["identity-cut-short", "identity-not-utf8", "config-cut-short", "config-cut-at-a-line", "config-not-yaml",
        "config-a-list"])
def test_a_finished_run_with_a_damaged_record_is_one_line_naming_it_and_keeps_every_file(
        tiny_store, tmp_path, capsys, name, damage):
    """`train RUN.yaml --out RUN` on a finished RUN of its identity returned its metrics (exit 0)
    whatever its identity.json and config.yaml held."""
    import yaml

    from megadocs.cli import main
    from megadocs.config import dump_yaml
    from megadocs.formats import RunDir
    from train.run_dir import write_run_identity

    config = RunConfig.model_validate({**_config(tiny_store).model_dump(mode="json"), "seed": 3})
    config_path = tmp_path / "run.yaml"
    config_path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    run = tmp_path / "run"
    run.mkdir()
    (run / RunDir.CONFIG).write_text(dump_yaml(config))
    write_run_identity(run, config.identity(), config.data_identity())
    (run / RunDir.METRICS).write_text(json.dumps({"status": "completed", "val_loss": 3.0}))
    assert main(["train", str(config_path), "--out", str(run)]) == 0  # finished, intact: its metrics
    damage(run / name)
    before = {path.name: path.read_bytes() for path in run.iterdir()}
    capsys.readouterr()

    assert main(["train", str(config_path), "--out", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the "run ID -> RUN" line
    assert err.startswith(f"error: {run / name}: ") and "another --out" in err, err
    assert {path.name: path.read_bytes() for path in run.iterdir()} == before
