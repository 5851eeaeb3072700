"""Token stores: round trips, counts, held-out choice, atomic writes, tokenizers and the CLI."""

from __future__ import annotations

import json
import os
import re
import shutil
import unicodedata

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from transformers import AutoTokenizer

import train.store as store_module
from megadocs.cli import main
from megadocs.corpus import iter_documents
from megadocs.data_identity import store_identity_of
from megadocs.errors import UserError
from train.store import EOS_TOKEN, MANIFEST_FIELDS, SPLIT_FIELDS, TokenStore, prepare, train_bpe_tokenizer

VOCAB = 300


@pytest.fixture(scope="module")
def stdlib_texts():
    return [doc.text for doc in iter_documents("stdlib")][:40]


@pytest.fixture
def small_corpus(tmp_path, stdlib_texts):
    """40 real documents with three empty ones in between, as jsonl."""
    rows = [{"id": f"doc{i}", "text": text} for i, text in enumerate(stdlib_texts)]
    for position in (3, 17, 30):
        rows.insert(position, {"id": f"empty{position}", "text": "  \n"})
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def assert_round_trip(store: TokenStore, split: str):
    tokenizer = store.tokenizer()
    documents = list(store.split(split).documents())
    assert len(documents) == store.split(split).num_documents
    for i, doc in enumerate(documents):
        assert tokenizer.decode(store.split(split).document(i).tolist()) == doc.text


def test_tiny_store_round_trips_and_counts(tiny_store):
    store = TokenStore.open(tiny_store)
    for split in ("train", "val"):
        assert_round_trip(store, split)
        data = store.split(split)
        counts = store.manifest["splits"][split]
        assert counts["documents"] == data.num_documents == len(data.doc_ids)
        assert counts["tokens"] == data.num_tokens == len(data.tokens)
        assert data.tokens.dtype == np.uint32 and data.offsets.dtype == np.int64
        assert (np.diff(data.offsets) > 0).all()
        assert data.tokens.max() < store.vocab_size
        assert (data.tokens != store.eos_id).all()  # no EOS stored
    assert store.manifest["splits"]["val"]["documents"] == 24
    assert store.manifest["splits"]["train"]["documents"] == 160 - 24
    first_160 = [doc.doc_id for doc in iter_documents("stdlib")][:160]
    train_ids, val_ids = store.split("train").doc_ids, store.split("val").doc_ids
    assert sorted(train_ids + val_ids) == sorted(first_160)
    assert train_ids == [i for i in first_160 if i in set(train_ids)]  # corpus order kept


def test_tiny_store_tokenizer_loads_with_auto_tokenizer(tiny_store):
    store = TokenStore.open(tiny_store)
    tokenizer = AutoTokenizer.from_pretrained(tiny_store / "tokenizer")
    assert tokenizer.is_fast
    assert len(tokenizer) == store.vocab_size == 512
    assert tokenizer.eos_token == EOS_TOKEN and tokenizer.eos_token_id == store.eos_id
    text = "Return the sum of  two\tnumbers.\n\nÜnïcode ✓"
    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "Hello"}], tokenize=False,
                                         add_generation_prompt=True)
    assert "Hello" in chat and chat.endswith("<|assistant|>\n")
    assert len(store.tokenizer_hash) == 16


def test_empty_documents_are_skipped_and_counted(small_corpus, tmp_path):
    store = prepare(small_corpus, tmp_path / "store", vocab_size=VOCAB, val_docs=5, seed=0)
    splits = store.manifest["splits"]
    assert splits["val"]["documents"] == 5  # exactly val_docs non-empty documents held out
    assert splits["train"]["documents"] == 40 - 5
    assert splits["train"]["skipped_empty"] + splits["val"]["skipped_empty"] == 3
    all_ids = store.split("train").doc_ids + store.split("val").doc_ids
    assert not any(i.startswith("empty") for i in all_ids)
    assert_round_trip(store, "val")


def test_duplicate_texts_are_kept_once_before_the_split(tmp_path, stdlib_texts):
    """The same text under another id (or differing only in whitespace, e.g. CRLF line ends, or in
    Unicode composition) is kept once, first occurrence, before the split: no held-out text is
    trained on. The count is in the manifest and the summary; empty documents are still skipped,
    not deduplicated."""
    texts = stdlib_texts[:20]
    variants = [lambda t: t, lambda t: f"  {t}\n".replace("\n", "\r\n"), lambda t: unicodedata.normalize("NFD", t) + " "]
    rows = [{"id": f"copy{copy}-{i}", "text": variant(text)}
            for copy, variant in enumerate(variants) for i, text in enumerate(texts)]
    rows += [{"id": "empty-a", "text": " "}, {"id": "empty-b", "text": " "}]
    corpus = tmp_path / "dups.jsonl"
    corpus.write_text("".join(json.dumps(row) + "\n" for row in rows))

    store = prepare(corpus, tmp_path / "store", vocab_size=VOCAB, val_docs=6, seed=0)
    kept = {name: list(store.split(name).documents()) for name in ("train", "val")}
    assert sorted(doc.doc_id for doc in kept["train"] + kept["val"]) == sorted(f"copy0-{i}" for i in range(20))
    assert len(kept["val"]) == 6
    assert not {doc.text for doc in kept["train"]} & {doc.text for doc in kept["val"]}
    assert store.manifest["duplicates_removed"] == 40
    assert sum(store.manifest["splits"][name]["skipped_empty"] for name in ("train", "val")) == 2
    assert "40 duplicate texts removed" in store.summary()

    plain = tmp_path / "plain.jsonl"
    plain.write_text("".join(json.dumps(row) + "\n" for row in rows[:20]))
    unchanged = prepare(plain, tmp_path / "plain", vocab_size=VOCAB, val_docs=6).manifest
    assert unchanged["duplicates_removed"] == 0
    earlier = {key: value for key, value in unchanged.items() if key != "duplicates_removed"}  # as written before
    assert store_identity_of(unchanged) == store_identity_of(earlier)  # no duplicates: the identity it had
    assert store_identity_of(store.manifest) != store_identity_of({**store.manifest, "duplicates_removed": 0})


def test_rerun_on_a_store_prepared_before_duplicates_were_removed_warns_when_it_leaks(
        tmp_path, stdlib_texts, monkeypatch, capsys):
    """A store prepared before (every text kept) stays as it is, with its identity; a re-run of
    prepare on it says how many held-out texts its train split also holds."""
    rows = [{"id": f"{copy}-{i}", "text": text} for copy in "ab" for i, text in enumerate(stdlib_texts[:12])]
    corpus = tmp_path / "dups.jsonl"
    corpus.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with monkeypatch.context() as patch:  # as prepared before: no text is a duplicate of another
        patch.setattr(store_module, "text_digest", lambda text: os.urandom(16))
        before = prepare(corpus, tmp_path / "old", vocab_size=VOCAB, val_docs=6, seed=0)
    manifest = json.loads((tmp_path / "old" / "manifest.json").read_text())
    del manifest["duplicates_removed"]  # not written before
    (tmp_path / "old" / "manifest.json").write_text(json.dumps(manifest))
    before = TokenStore.open(tmp_path / "old")
    val = {doc.text for doc in before.split("val").documents()}
    leaked = len(val & {doc.text for doc in before.split("train").documents()})
    assert leaked
    manifest = (tmp_path / "old" / "manifest.json").read_text()
    capsys.readouterr()

    prepare(corpus, tmp_path / "old", vocab_size=VOCAB, val_docs=6, seed=0)
    assert f"warning: {tmp_path / 'old'}: {leaked} of its 6 held-out texts are also in its train split" \
        in capsys.readouterr().err
    assert (tmp_path / "old" / "manifest.json").read_text() == manifest
    prepare(corpus, tmp_path / "new", vocab_size=VOCAB, val_docs=6, seed=0)
    prepare(corpus, tmp_path / "new", vocab_size=VOCAB, val_docs=6, seed=0)
    assert "warning" not in capsys.readouterr().err


def test_held_out_documents_depend_only_on_the_seed(small_corpus, tmp_path):
    a = prepare(small_corpus, tmp_path / "a", vocab_size=VOCAB, val_docs=5, seed=0)
    b = prepare(small_corpus, tmp_path / "b", vocab_size=VOCAB, val_docs=5, seed=0)
    c = prepare(small_corpus, tmp_path / "c", vocab_size=VOCAB, val_docs=5, seed=1)
    assert a.split("val").doc_ids == b.split("val").doc_ids
    assert a.split("val").doc_ids != c.split("val").doc_ids
    assert a.tokenizer_hash == b.tokenizer_hash
    assert np.array_equal(a.split("train").tokens, b.split("train").tokens)


def test_max_docs_limits_documents_before_the_split(small_corpus, tmp_path):
    store = prepare(small_corpus, tmp_path / "s", vocab_size=VOCAB, val_docs=2, max_docs=10)
    splits = store.manifest["splits"]
    # the first 10 lines hold one empty document (line 4)
    assert splits["train"]["documents"] + splits["val"]["documents"] == 9


def test_default_val_docs_is_five_percent():
    assert store_module.default_val_docs(164_000) == 1000
    assert store_module.default_val_docs(376) == 19
    assert store_module.default_val_docs(3) == 1


def test_bad_line_raises_and_leaves_no_store(tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"text": "fine"}\n{"text": "fine too"}\n{"txt": "typo"}\n')
    with pytest.raises(UserError, match=r"c\.jsonl:3: "):
        prepare(corpus, tmp_path / "out", vocab_size=VOCAB, val_docs=1)
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.tmp-*"))


@pytest.mark.parametrize("lines, message", [
    ('{"text": "one", "id": "x"}\n{"text": "two"}\n{"text": "three", "id": "x"}\n', "documents 0 and 2 (0-based) share the id 'x'"),
    ('{"text": "one"}\n{"text": "two \\udfff"}\n{"text": "three"}\n', "c.jsonl:2: 'text': lone surrogate"),
])
def test_a_corpus_no_reader_can_key_or_encode_is_refused_in_one_line(lines, message, tmp_path):
    """Duplicate ids (gen keys rows and seeds by id, training's contamination guard compares ids)
    and escaped lone surrogates (no UTF-8 file holds them) are refused before anything is written."""
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(lines)
    with pytest.raises(UserError, match=re.escape(message)) as info:
        prepare(corpus, tmp_path / "out", vocab_size=VOCAB, val_docs=1)
    assert "\n" not in str(info.value) and not (tmp_path / "out").exists()


@pytest.mark.parametrize("lines, message", [
    ("", "holds 0 non-empty documents"),
    ('{"text": " "}\n{"text": "\\n"}\n{"text": "only one"}\n', "holds 1 non-empty documents (2 empty)"),
    ('{"text": "same"}\n{"text": " same\\n"}\n', "holds 1 non-empty documents (1 duplicate text left out)"),
])
def test_a_corpus_with_fewer_than_two_usable_documents_says_so(lines, message, tmp_path):
    """Whatever makes the corpus too small (no lines, empty texts, duplicates) is named, not an option
    the user did not give."""
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(lines)
    with pytest.raises(UserError, match=rf"^{re.escape(str(corpus))}: {re.escape(message)}; a store needs "
                       r"at least 2"):
        prepare(corpus, tmp_path / "out", vocab_size=VOCAB)
    assert not (tmp_path / "out").exists()


def test_interrupted_prepare_leaves_nothing_that_looks_complete(small_corpus, tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    out = tmp_path / "store"
    with monkeypatch.context() as patch:
        patch.setattr(store_module, "_tokenize_split", interrupted)
        with pytest.raises(KeyboardInterrupt):
            prepare(small_corpus, out, vocab_size=VOCAB, val_docs=5)
    assert not out.exists() and not list(tmp_path.glob(".store.tmp-*"))
    with pytest.raises(UserError, match="not a token store"):
        TokenStore.open(tmp_path)
    store = prepare(small_corpus, out, vocab_size=VOCAB, val_docs=5)  # the re-run completes
    assert_round_trip(store, "val")


@pytest.mark.parametrize("name", ["store", "store[v2]"])
def test_abandoned_attempts_of_dead_processes_are_removed(small_corpus, tmp_path, name):
    import os
    import socket

    host = socket.gethostname()
    dead = tmp_path / f".{name}.tmp-{host}-{2**22 + 12345}-abc"  # above any default pid_max
    alive = tmp_path / f".{name}.tmp-{host}-{os.getpid()}-def"  # e.g. a concurrent prepare
    for attempt in (dead, alive):
        attempt.mkdir()
        (attempt / "train.tokens").write_bytes(b"partial")
    prepare(small_corpus, tmp_path / name, vocab_size=VOCAB, val_docs=5)
    assert not dead.exists() and alive.exists()


def test_rerun_on_a_complete_store_is_a_no_op(small_corpus, tmp_path, capsys):
    out = tmp_path / "store"
    prepare(small_corpus, out, vocab_size=VOCAB, val_docs=5)
    before = (out / "manifest.json").read_text()
    tokens_mtime = (out / "train.tokens").stat().st_mtime_ns
    capsys.readouterr()
    prepare(small_corpus, out, vocab_size=VOCAB, val_docs=5)
    assert "already prepared" in capsys.readouterr().err
    assert (out / "manifest.json").read_text() == before
    assert (out / "train.tokens").stat().st_mtime_ns == tokens_mtime
    with pytest.raises(UserError, match="already holds a token store"):
        prepare(small_corpus, out, vocab_size=VOCAB + 10, val_docs=5)


def test_refuses_to_write_into_a_non_empty_directory(small_corpus, tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="exists and is not a token store"):
        prepare(small_corpus, tmp_path / "busy", vocab_size=VOCAB, val_docs=5)
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "exactly one of --tokenizer"),
        ({"vocab_size": VOCAB, "tokenizer": "x"}, "exactly one of --tokenizer"),
        ({"vocab_size": 100}, "vocab_size: expected >= 257"),
        ({"vocab_size": VOCAB, "val_docs": 0}, "val_docs: expected >= 1"),
        ({"vocab_size": VOCAB, "val_docs": 40}, "val_docs: 40 held-out documents leave none"),
        ({"vocab_size": VOCAB, "seed": -1}, r"^seed: expected >= 0, got -1$"),
        ({"tokenizer": "/nonexistent/tok"}, "tokenizer: /nonexistent/tok is not a directory"),
    ],
)
def test_bad_options_are_refused(small_corpus, tmp_path, options, message):
    with pytest.raises(UserError, match=message):
        prepare(small_corpus, tmp_path / "s", **options)


def test_a_directory_that_holds_no_tokenizer_is_refused_in_one_line_before_the_corpus_is_read(
        small_corpus, tmp_path, monkeypatch):
    not_a_tokenizer = tmp_path / "weights-only"
    not_a_tokenizer.mkdir()
    (not_a_tokenizer / "config.json").write_text("{}")
    read = []
    monkeypatch.setattr(store_module, "iter_documents", lambda *args, **kwargs: read.append(args) or iter(()))
    with pytest.raises(UserError, match=rf"^tokenizer: cannot load an HF tokenizer from "
                       rf"{re.escape(str(not_a_tokenizer))}") as info:
        prepare(small_corpus, tmp_path / "s", tokenizer=not_a_tokenizer, val_docs=5)
    assert "\n" not in str(info.value)
    assert not read  # a 164k-document corpus is not read only to learn that the tokenizer is missing


def test_existing_hf_tokenizer_directory(small_corpus, tmp_path, stdlib_texts):
    tokenizer_dir = tmp_path / "my-tokenizer"
    train_bpe_tokenizer(stdlib_texts[:10], 280).save_pretrained(tokenizer_dir)
    store = prepare(small_corpus, tmp_path / "s", tokenizer=tokenizer_dir, val_docs=5)
    reference = AutoTokenizer.from_pretrained(tokenizer_dir)
    assert store.vocab_size == len(reference) == 280
    assert store.eos_id == reference.eos_token_id
    first = next(iter(store.split("train").documents()))
    assert store.split("train").document(0).tolist() == reference.encode(first.text, add_special_tokens=False)
    assert_round_trip(store, "train")


def test_parquet_and_txt_directory_sources(tmp_path, stdlib_texts):
    parquet = tmp_path / "c.parquet"
    pq.write_table(pa.table({"text": stdlib_texts[:12]}), parquet)
    from_parquet = prepare(parquet, tmp_path / "p", vocab_size=VOCAB, val_docs=2)
    assert from_parquet.manifest["splits"]["train"]["documents"] == 10
    assert_round_trip(from_parquet, "train")

    texts = tmp_path / "texts"
    texts.mkdir()
    for i, text in enumerate(stdlib_texts[:12]):
        (texts / f"{i:02d}.txt").write_text(text)
    from_txt = prepare(texts, tmp_path / "t", vocab_size=VOCAB, val_docs=2)
    assert sorted(from_txt.split("train").doc_ids + from_txt.split("val").doc_ids) == \
        [f"{i:02d}.txt" for i in range(12)]
    assert_round_trip(from_txt, "val")


def test_open_refuses_a_directory_that_is_not_a_store(tmp_path):
    with pytest.raises(UserError, match="token store not found"):
        TokenStore.open(tmp_path / "missing")
    with pytest.raises(UserError, match="not a token store"):
        TokenStore.open(tmp_path)


def _damaged_manifest_cases() -> list:
    """Each field an open store reads (MANIFEST_FIELDS, SPLIT_FIELDS): missing, and of another type."""
    cases = []
    for field in MANIFEST_FIELDS:
        cases += [pytest.param(lambda m, f=field: m.pop(f), field, id=f"{field}-missing"),
                  pytest.param(lambda m, f=field: m.__setitem__(f, [1]), field, id=f"{field}-list")]
    for count in SPLIT_FIELDS:
        cases += [pytest.param(lambda m, c=count: m["splits"]["train"].pop(c), f"splits.train.{count}",
                               id=f"{count}-missing"),
                  pytest.param(lambda m, c=count: m["splits"]["train"].__setitem__(c, "many"), f"splits.train.{count}",
                               id=f"{count}-string")]
    return cases


@pytest.mark.parametrize("damage, field", _damaged_manifest_cases())
def test_a_manifest_with_a_field_missing_or_mistyped_is_one_line_naming_it(tiny_store, tmp_path, capsys, damage,
                                                                           field):
    """A manifest of the store's format whose fields are not what a store writes (edited by hand,
    written by a tool of its own): `data info` and every opener said KeyError/ValueError in a
    traceback; now one line naming the manifest and the field."""
    store = tmp_path / "store"
    shutil.copytree(tiny_store, store)
    manifest = json.loads((store / "manifest.json").read_text())
    damage(manifest)
    (store / "manifest.json").write_text(json.dumps(manifest))
    assert main(["data", "info", str(store)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {store / 'manifest.json'}: {field}: expected "), err


@pytest.mark.parametrize("content", [b"garbage", b"", np.arange(6, dtype=np.float64).tobytes()], ids=["garbage", "empty", "raw-floats"])
def test_an_offsets_file_that_is_no_array_is_one_line_naming_it(tiny_store, tmp_path, content):
    """train.offsets.npy overwritten (another file's bytes, cut to nothing): numpy's ValueError about
    pickled data was a traceback from every command reading the split."""
    store = tmp_path / "store"
    shutil.copytree(tiny_store, store)
    (store / "train.offsets.npy").write_bytes(content)
    with pytest.raises(UserError, match=re.escape(f"{store / 'train.offsets.npy'}: expected a NumPy array")):
        TokenStore.open(store).split("train")


def test_cli_prepare_and_info(small_corpus, tmp_path, capsys):
    out = tmp_path / "cli-store"
    status = main(["data", "prepare", "--corpus", str(small_corpus), "--out", str(out),
                   "--vocab-size", str(VOCAB), "--val-docs", "5"])
    printed = capsys.readouterr().out
    assert status == 0
    assert "train: 35 documents" in printed and "val: 5 documents" in printed
    assert "empty skipped" in printed
    assert main(["data", "info", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["splits"]["val"]["documents"] == 5
    assert main(["data", "info", str(tmp_path)]) == 2
    assert "not a token store" in capsys.readouterr().err


def test_val_tokens_holds_out_enough_text_for_the_requested_windows(small_corpus, tmp_path):
    """--val-tokens N: the fewest permutation-first documents whose tokens (one EOS each) reach N,
    so the val split yields at least N // context windows (the paper's 1024 x 4096 from a recipe)."""
    from train.data import ValidationSet

    first = prepare(small_corpus, tmp_path / "bpe", vocab_size=VOCAB, val_docs=5, seed=0)
    wanted = 4 * 256
    store = prepare(small_corpus, tmp_path / "by-tokens", tokenizer=first.tokenizer_path, val_tokens=wanted, seed=0)
    lengths = store.split("val").lengths + 1
    assert lengths.sum() >= wanted > lengths.sum() - lengths.max()  # no more documents than needed
    assert ValidationSet.build(store.path, context=256, max_windows=4).num_windows == 4
    assert store.manifest["options"]["val_tokens"] == wanted
    with pytest.raises(UserError, match="^val_tokens: .*--tokenizer"):
        prepare(small_corpus, tmp_path / "no-tokenizer", vocab_size=VOCAB, val_tokens=wanted)
    with pytest.raises(UserError, match="^val_tokens: .*leave none for training"):
        prepare(small_corpus, tmp_path / "all", tokenizer=first.tokenizer_path, val_tokens=10**9)


def test_an_open_store_reads_what_it_opened_when_its_path_is_replaced(small_corpus, tmp_path, stdlib_texts):
    """Every file is read through the store as it was opened: a split loaded later (a run's
    evaluation, hours after it opened the store), its documents and its tokenizer are those the
    manifest it read describes, even when another store now lies at its path; a store removed
    meanwhile is refused in one line naming the file."""
    store_path, other = tmp_path / "store", tmp_path / "other"
    prepare(small_corpus, store_path, vocab_size=VOCAB, val_docs=4, seed=0)
    other_corpus = tmp_path / "other.jsonl"
    other_corpus.write_text("".join(json.dumps({"id": f"o{i}", "text": text[::-1]}) + "\n"
                                    for i, text in enumerate(stdlib_texts[:12])))
    prepare(other_corpus, other, vocab_size=VOCAB + 20, val_docs=3, seed=1)
    expected = {name: (TokenStore.open(store_path).split(name).tokens.tolist(),
                       [doc.doc_id for doc in TokenStore.open(store_path).split(name).documents()])
                for name in ("train", "val")}
    tokenizer_files = {p.name: p.read_bytes() for p in (store_path / "tokenizer").iterdir()}

    store = TokenStore.open(store_path)
    store_path.rename(tmp_path / "earlier")
    other.rename(store_path)  # another store at the path, after it was opened
    for name in ("train", "val"):
        split = store.split(name)
        assert (split.tokens.tolist(), [doc.doc_id for doc in split.documents()]) == expected[name]
        assert split.num_documents == store.manifest["splits"][name]["documents"]
    assert len(store.tokenizer()) == store.vocab_size == VOCAB
    store.copy_tokenizer(tmp_path / "copy")
    assert {p.name: p.read_bytes() for p in (tmp_path / "copy").iterdir()} == tokenizer_files

    removed = TokenStore.open(store_path)
    (store_path / "val.offsets.npy").unlink()  # removed while in use
    with pytest.raises(UserError, match=rf"^{re.escape(str(store_path / 'val.offsets.npy'))}: not in the token "
                       rf"store opened at {re.escape(str(store_path))} \(removed while in use"):
        removed.split("val")


def _drop(path):
    path.unlink()


def _cut(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _recount(store):
    manifest = json.loads((store / "manifest.json").read_text())
    manifest["splits"]["val"]["documents"] += 1
    (store / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("damage, named", [
    (lambda store: _drop(store / "val.tokens"), "val.tokens"),
    (lambda store: _cut(store / "train.tokens"), "train.tokens: holds"),
    (lambda store: _drop(store / "train.offsets.npy"), "train.offsets.npy"),
    (_recount, "manifest.json: splits.val.documents: "),
    (lambda store: (store / "tokenizer" / "tokenizer.json").write_text("{"), "tokenizer: the store's tokenizer does not load"),
], ids=["tokens-gone", "tokens-cut", "offsets-gone", "counts", "tokenizer"])
def test_data_info_checks_what_a_run_reads(tiny_store, tmp_path, capsys, damage, named):
    """`data info` read only the manifest: it printed a summary and exited 0 for a store whose token,
    offsets or tokenizer files were gone or damaged, which every run of a sweep then refused. Now it
    reads what a run reads and says the first problem in one line naming the file."""
    store = tmp_path / "store"
    shutil.copytree(tiny_store, store)
    assert main(["data", "info", str(store)]) == 0
    capsys.readouterr()
    damage(store)
    assert main(["data", "info", str(store)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and named in err, err


@pytest.mark.parametrize(("option", "value", "field"), [
    ("--vocab-size", "3", "vocab_size"), ("--val-docs", "0", "val_docs"), ("--val-tokens", "0", "val_tokens"),
    ("--max-docs", "1", "max_docs"), ("--seed", "-1", "seed"),
])
def test_a_bad_prepare_option_names_the_flag_typed_and_the_python_call_its_argument(option, value, field, tmp_path,
                                                                                      capsys):
    """`data prepare --vocab-size 3` said ``vocab_size: ...`` (prepare's argument), not the flag."""
    from megadocs.cli import main

    out = tmp_path / "store"
    assert main(["data", "prepare", "--corpus", "stdlib", "--out", str(out), "--vocab-size", "300",
                 f"{option}={value}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {option}: expected ") and err.count("\n") == 1, err
    assert not out.exists()
    with pytest.raises(UserError, match=rf"^{field}: expected "):
        prepare("stdlib", out, **{"vocab_size": 300, field: int(value)})
