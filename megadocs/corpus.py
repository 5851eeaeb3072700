"""Read raw documents from any supported source, one :class:`Document` at a time.

A SOURCE is one of:

- a ``.jsonl`` or ``.jsonl.gz`` file, one JSON object per line with a ``text`` field and an
  optional ``id`` (the document id defaults to the 1-based line number);
- a ``.parquet`` file with a ``text`` column and an optional ``id`` column (the id defaults to
  the 0-based row number);
- a directory of ``.txt`` files, read recursively in sorted order (id = relative path);
- the word ``stdlib``: a built-in offline corpus made of the Python standard library's module,
  class and function docstrings, one document per module (English prose nobody here wrote);
- a prepared token store (``megadocs data prepare``): its ``{split}.docs.jsonl``.

Undecodable input raises :class:`~megadocs.errors.UserError` naming the file and line. Empty
documents are yielded as they are: skipping and counting them is the token store's job.
This module must stay free of torch: ``gen`` reads documents through it too.
"""

from __future__ import annotations

import ast
import functools
import gzip
import hashlib
import json
import os
import sys
import sysconfig
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from megadocs.errors import UserError

__all__ = ["Document", "is_empty_document", "iter_documents", "unique_documents", "iter_jsonl", "source_hash", "is_token_store",
           "token_store_manifest", "parse_store_manifest", "store_documents", "STDLIB",
           "STORE_FORMAT"]

STDLIB = "stdlib"
STORE_FORMAT = "megadocs.token-store/1"
_HASH_CHUNK = 1 << 20

# Standard-library folders that hold tests, demos, bundled wheels or generated boilerplate.
_STDLIB_SKIP_DIRS = frozenset({
    "test", "tests", "idlelib", "site-packages", "dist-packages", "__pycache__", "lib2to3",
    "turtledemo", "ensurepip", "__phello__", "encodings",
})
# A module becomes a document only with at least this many characters of docstrings.
STDLIB_MIN_CHARS = 100


@dataclass(frozen=True)
class Document:
    """One raw document: a stable id (unique within its source) and its text."""

    doc_id: str
    text: str


def is_empty_document(doc: Document) -> bool:
    """The empty-document rule: a document of only whitespace holds nothing to train on or to
    prompt with; `data prepare` leaves it out of a store (counted: ``skipped_empty``) and `gen`
    out of a pool's documents (counted: ``empty_documents_skipped``)."""
    return not doc.text.strip()


def is_token_store(path: str | Path) -> bool:
    """True when ``path`` is a directory written by ``megadocs data prepare``."""
    return token_store_manifest(path) is not None


def token_store_manifest(path: str | Path) -> dict | None:
    """The manifest of the token store at ``path`` as read (one read), or None when ``path`` is
    not one: no ``manifest.json``, not a JSON object, or another ``format``. What opens a store
    (`train.store.TokenStore.open`) keeps this object, so what it checked is what it uses."""
    manifest = Path(path) / "manifest.json"
    if not manifest.is_file():
        return None
    return parse_store_manifest(manifest.read_bytes())


def parse_store_manifest(raw: bytes) -> dict | None:
    """A token store's ``manifest.json`` from its bytes (read through a store as it was opened:
    `train.store.TokenStore.open`), or None when it is not one."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) and data.get("format") == STORE_FORMAT else None


def iter_documents(source: str | Path, *, split: str = "train") -> Iterator[Document]:
    """Yield the documents of ``source`` in a deterministic order.

    ``split`` selects ``{split}.docs.jsonl`` of a token store; raw corpora have a single split,
    ``train``.

    Example:
        >>> docs = list(iter_documents("stdlib"))
        >>> docs[0].doc_id, len(docs) > 300
        ('__future__', True)

    Raises:
        UserError: the source does not exist, has an unknown kind, or a line cannot be decoded.
    """
    source = str(source)
    if source == STDLIB:
        _require_single_split(source, split)
        yield from _stdlib_documents()
        return
    path = Path(source)
    if is_token_store(path):
        docs = path / f"{split}.docs.jsonl"
        if not docs.is_file():
            raise UserError(f"{path}: token store has no split {split!r} (expected {docs.name})")
        yield from _jsonl_documents(docs, id_field="doc_id")
        return
    if path.is_dir():
        _require_single_split(source, split)
        yield from _txt_documents(path)
        return
    if not path.is_file():
        raise UserError(f"{source}: corpus not found (expected a .jsonl, .jsonl.gz or .parquet file, "
                        f"a directory of .txt files, a token store, or 'stdlib')")
    _require_single_split(source, split)
    if path.name.endswith((".jsonl", ".jsonl.gz")):
        yield from _jsonl_documents(path, id_field="id")
    elif path.name.endswith(".parquet"):
        yield from _parquet_documents(path)
    else:
        raise UserError(f"{source}: unknown corpus file type (expected .jsonl, .jsonl.gz or .parquet)")


def unique_documents(documents: Iterable[Document], where: str,
                     refusal: Callable[[str], UserError] = UserError) -> Iterator[Document]:
    """``documents`` as they are, refusing a document id seen before (every consumer keys
    documents by id: a pool's rows, request seeds, the contamination guard). Holds the ids seen:
    about 100 bytes each, 16 MB for the paper's 164k documents.

    >>> [d.doc_id for d in unique_documents([Document("a", "x"), Document("b", "x")], "c.jsonl")]
    ['a', 'b']

    Raises:
        UserError: naming ``where``, the id and the positions of its two documents, made by
            ``refusal`` from that line (a caller's FieldError of the option that named the source).
    """
    seen: dict[str, int] = {}
    for position, doc in enumerate(documents):
        first = seen.setdefault(doc.doc_id, position)
        if first != position:
            raise refusal(f"{where}: documents {first} and {position} (0-based) share the id "
                          f"{doc.doc_id!r} (expected unique ids; a line without 'id' gets its line "
                          f"number)")
        yield doc


def source_hash(source: str | Path) -> str:
    """A content hash of ``source`` (sha256 hex, 16 characters) recorded in every manifest.

    Files hash their bytes (not their name), directories their ``.txt`` files' relative paths
    and bytes, a token store its ``*.docs.jsonl`` files, and ``stdlib`` the documents it yields (which depend on the
    Python version).
    """
    digest = hashlib.sha256()
    source = str(source)
    if source == STDLIB:
        digest.update(f"stdlib:{sys.version_info[:3]}".encode())
        for doc in _stdlib_documents():
            digest.update(doc.doc_id.encode() + b"\0" + doc.text.encode() + b"\0")
        return digest.hexdigest()[:16]
    path = Path(source)
    if is_token_store(path):
        files = sorted(path.glob("*.docs.jsonl"))
    elif path.is_dir():
        files = _txt_files(path)
    elif path.is_file():
        files = [path]
    else:
        raise UserError(f"{source}: corpus not found")
    for file in files:
        if path.is_dir():  # relative paths are document ids; a single file's name is not content
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with open(file, "rb") as handle:
            while chunk := handle.read(_HASH_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def _require_single_split(source: str, split: str) -> None:
    if split != "train":
        raise UserError(f"{source}: split {split!r} only exists in token stores; a raw corpus has "
                        f"the single split 'train'")


def _decode_line(raw: bytes, path: Path, line_number: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}:{line_number}: invalid UTF-8 at byte {exc.start} "
                        f"(expected UTF-8 text)") from None


def iter_jsonl(path: str | Path, *, handle: BinaryIO | None = None) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, object)`` for each non-blank line of a ``.jsonl`` / ``.jsonl.gz`` file.

    ``handle``: the (uncompressed) file, already opened for reading bytes (closed at the end;
    ``path`` then only names it in messages).

    Raises:
        UserError: naming ``file:line`` for bad UTF-8, bad JSON or a line that is not an object.
    """
    path = Path(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with (opener(path, "rb") if handle is None else handle) as handle:
            for line_number, raw in enumerate(handle, start=1):
                line = _decode_line(raw, path, line_number).strip()
                if not line:
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise UserError(f"{path}:{line_number}: invalid JSON: {exc.msg}") from None
                if not isinstance(record, dict):
                    raise UserError(f"{path}:{line_number}: expected a JSON object, got {type(record).__name__}")
                yield line_number, record
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except (OSError, EOFError) as exc:  # e.g. a truncated or non-gzip .gz file
        raise UserError(f"{path}: cannot read ({exc})") from None


def store_documents(path: Path, handle: BinaryIO) -> Iterator[Document]:
    """The documents of a token store's ``{split}.docs.jsonl`` at ``path``, read from ``handle``
    (that file as a store opened it: `train.store.StoreSplit.documents`)."""
    return _jsonl_documents(path, id_field="doc_id", handle=handle)


def _jsonl_documents(path: Path, *, id_field: str, handle: BinaryIO | None = None) -> Iterator[Document]:
    for line_number, record in iter_jsonl(path, handle=handle):
        text = record.get("text")
        if not isinstance(text, str):
            got = "no 'text' field" if text is None else f"'text' of type {type(text).__name__}"
            raise UserError(f"{path}:{line_number}: expected a string 'text' field, got {got}")
        doc_id = record.get(id_field)
        doc = Document(str(line_number) if doc_id is None else str(doc_id), text)
        for name, value in ((id_field, doc.doc_id), ("text", text)):
            _require_encodable(value, f"{path}:{line_number}: {name!r}")
        yield doc


def _require_encodable(value: str, where: str) -> None:
    """JSON may escape a lone surrogate (``"\\ud800"``): valid JSON, but not Unicode text, so no
    UTF-8 file, tokenizer or generator can take it. Refused where it is read, naming it."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise UserError(f"{where}: lone surrogate {value[exc.start]!r} at character {exc.start} "
                        f"(expected Unicode text; fix or drop the escape)") from None


def _parquet_documents(path: Path) -> Iterator[Document]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several unrelated types for bad files
        raise UserError(f"{path}: not a readable parquet file ({exc})") from None
    names = parquet.schema_arrow.names
    if "text" not in names:
        raise UserError(f"{path}: parquet file has no 'text' column (columns: {', '.join(names)})")
    columns = ["text"] + (["id"] if "id" in names else [])
    row = 0
    for batch in parquet.iter_batches(columns=columns, batch_size=4096):
        texts = batch.column("text").to_pylist()
        ids = batch.column("id").to_pylist() if "id" in columns else [None] * len(texts)
        for text, doc_id in zip(texts, ids):
            if not isinstance(text, str):
                raise UserError(f"{path}: row {row}: expected a string 'text', got {type(text).__name__}")
            yield Document(str(row) if doc_id is None else str(doc_id), text)
            row += 1


def _txt_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.txt") if p.is_file())


def _txt_documents(root: Path) -> Iterator[Document]:
    files = _txt_files(root)
    if not files:
        raise UserError(f"{root}: directory holds no .txt files (expected a directory of .txt "
                        f"documents or a token store)")
    for file in files:
        raw = file.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line_number = raw.count(b"\n", 0, exc.start) + 1
            raise UserError(f"{file}:{line_number}: invalid UTF-8 (expected UTF-8 text)") from None
        yield Document(file.relative_to(root).as_posix(), text)


def _stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _docstrings_in_source_order(node: ast.AST) -> Iterator[str]:
    """The docstrings of a module, then of its classes and functions, depth first in file order."""
    if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
        doc = ast.get_docstring(node)
        if doc:
            yield doc
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            yield from _docstrings_in_source_order(child)


def _stdlib_files(root: Path) -> list[Path]:
    """The stdlib's .py files, sorted, without descending into skipped folders (site-packages
    alone can hold ten times more files than the standard library)."""
    files = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = [name for name in subfolders
                         if name not in _STDLIB_SKIP_DIRS and not name.startswith("config-")]
        files += [Path(folder) / name for name in names
                  if name.endswith(".py") and not name.startswith("test_")]
    return sorted(files)


@functools.lru_cache(maxsize=1)
def _stdlib_corpus() -> tuple[Document, ...]:
    root = _stdlib_root()
    documents = []
    for file in _stdlib_files(root):
        rel = file.relative_to(root)
        try:
            tree = ast.parse(file.read_bytes(), filename=str(file))
        except (SyntaxError, ValueError):
            continue  # a few stdlib files are deliberately invalid (lib2to3 fixtures and the like)
        text = "\n\n".join(_docstrings_in_source_order(tree))
        if len(text) < STDLIB_MIN_CHARS:
            continue
        module = ".".join(rel.with_suffix("").parts)
        documents.append(Document(module.removesuffix(".__init__"), text))
    return tuple(documents)


def _stdlib_documents() -> Iterator[Document]:
    yield from _stdlib_corpus()
