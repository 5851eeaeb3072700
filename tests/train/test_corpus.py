"""Corpus readers: every source kind, deterministic order, and one-line errors naming file:line."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from megadocs.corpus import Document, iter_documents, source_hash, unique_documents
from megadocs.errors import UserError


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_stdlib_corpus_is_one_document_per_module_and_deterministic():
    docs = list(iter_documents("stdlib"))
    assert 300 <= len(docs) <= 600
    assert sum(len(d.text) for d in docs) > 1_000_000
    ids = [d.doc_id for d in docs]
    assert len(set(ids)) == len(ids)
    assert "json" in ids and "json.decoder" in ids
    assert not any(part in ("test", "idlelib", "encodings") for i in ids for part in i.split("."))
    json_doc = docs[ids.index("json")].text
    assert json_doc.startswith("JSON (JavaScript Object Notation)")
    assert all(len(d.text) >= 100 for d in docs)


def test_stdlib_corpus_is_identical_in_a_fresh_process_without_torch():
    code = ("import sys; from megadocs.corpus import source_hash; print(source_hash('stdlib')); "
            "print('torch' in sys.modules)")
    fresh = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert fresh.stdout.split() == [source_hash("stdlib"), "False"]  # gen reads corpora without torch


def test_jsonl_ids_default_to_line_numbers_and_blank_lines_are_skipped(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "a"}\n\n{"text": "b", "id": 7}\n{"text": ""}\n')
    assert list(iter_documents(path)) == [Document("1", "a"), Document("7", "b"), Document("4", "")]


def test_jsonl_gz(tmp_path):
    path = tmp_path / "c.jsonl.gz"
    with gzip.open(path, "wt") as handle:
        handle.write('{"text": "héllo", "id": "x"}\n')
    assert list(iter_documents(path)) == [Document("x", "héllo")]


@pytest.mark.parametrize(
    ("content", "line", "what"),
    [
        (b'{"text": "ok"}\n{"text": "\xff\xfe"}\n', 2, "invalid UTF-8"),
        (b'{"text": "ok"}\n{"text": "ok"}\n{"text": \n', 3, "invalid JSON"),
        (b'{"body": "no text"}\n', 1, "'text'"),
        (b'{"text": 5}\n', 1, "'text'"),
        (b'["text"]\n', 1, "JSON object"),
        (b'{"text": "ok"}\n{"text": "a \\ud800 b"}\n', 2, "'text': lone surrogate '\\\\ud800' at character 2"),
        (b'{"text": "ok", "id": "\\udc00"}\n', 1, "'id': lone surrogate"),
    ],
)
def test_bad_jsonl_names_file_and_line(tmp_path, content, line, what):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    with pytest.raises(UserError, match=rf"bad\.jsonl:{line}: .*{what}") as info:
        list(iter_documents(path))
    assert "\n" not in str(info.value)


def test_duplicate_ids_are_refused_naming_both_positions(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "a", "id": "2"}\n{"text": "b"}\n')  # line 2 has no id: it gets "2"
    with pytest.raises(UserError, match=r"c\.jsonl: documents 0 and 1 \(0-based\) share the id '2'"):
        list(unique_documents(iter_documents(path), str(path)))


def test_parquet_with_and_without_ids(tmp_path):
    with_ids = tmp_path / "a.parquet"
    pq.write_table(pa.table({"text": ["one", "two"], "id": ["d1", "d2"]}), with_ids)
    assert list(iter_documents(with_ids)) == [Document("d1", "one"), Document("d2", "two")]
    without_ids = tmp_path / "b.parquet"
    pq.write_table(pa.table({"text": ["one", "two"], "other": [1, 2]}), without_ids)
    assert [d.doc_id for d in iter_documents(without_ids)] == ["0", "1"]
    no_text = tmp_path / "c.parquet"
    pq.write_table(pa.table({"body": ["x"]}), no_text)
    with pytest.raises(UserError, match="no 'text' column"):
        list(iter_documents(no_text))


def test_txt_directory_sorted_recursive_with_relative_ids(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "b.txt").write_text("bee")
    (tmp_path / "a.txt").write_text("ay")
    (tmp_path / "sub" / "c.txt").write_text("sea")
    (tmp_path / "ignored.md").write_text("not a txt")
    assert list(iter_documents(tmp_path)) == [Document("a.txt", "ay"), Document("b.txt", "bee"),
                                              Document("sub/c.txt", "sea")]
    (tmp_path / "z.txt").write_bytes(b"line one\nline two \xff\n")
    with pytest.raises(UserError, match=r"z\.txt:2: invalid UTF-8"):
        list(iter_documents(tmp_path))


def test_token_store_source_reads_its_split_documents(tiny_store):
    train = list(iter_documents(tiny_store))
    val = list(iter_documents(tiny_store, split="val"))
    assert len(val) == 24 and len(train) == 160 - 24
    stdlib = {d.doc_id: d.text for d in iter_documents("stdlib")}
    assert all(stdlib[d.doc_id] == d.text for d in train + val)
    with pytest.raises(UserError, match="no split 'test'"):
        list(iter_documents(tiny_store, split="test"))


def test_unknown_sources_are_refused(tmp_path):
    with pytest.raises(UserError, match="corpus not found"):
        list(iter_documents(tmp_path / "missing.jsonl"))
    (tmp_path / "c.csv").write_text("text\nx\n")
    with pytest.raises(UserError, match="unknown corpus file type"):
        list(iter_documents(tmp_path / "c.csv"))
    with pytest.raises(UserError, match="only exists in token stores"):
        list(iter_documents("stdlib", split="val"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no .txt files"):
        list(iter_documents(tmp_path / "empty"))


def test_source_hash_follows_content(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [{"text": "a"}])
    first = source_hash(path)
    assert source_hash(path) == first
    write_jsonl(path, [{"text": "b"}])
    assert source_hash(path) != first
    copy = tmp_path / "renamed.jsonl"
    copy.write_bytes(path.read_bytes())
    assert source_hash(copy) == source_hash(path)  # content, not name
