"""Token stores: a corpus tokenized once into flat memory-mapped arrays (docs/architecture.md).

Layout of a store directory::

    manifest.json          format, source + hash, tokenizer hash, vocab size, eos id, counts
    tokenizer/             HF tokenizer directory (AutoTokenizer.from_pretrained works on it)
    {split}.tokens         flat uint32 memmap of all documents' tokens (no EOS stored)
    {split}.offsets.npy    int64, documents + 1 entries; document i = tokens[off[i]:off[i+1]]
    {split}.docs.jsonl     {"doc_id", "text"} per document, same order (what gen reads)

:func:`prepare` writes into a temporary sibling directory and renames it into place only when
everything is on disk, so a store that has a manifest is complete. Re-running it on a complete
store with the same inputs does nothing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import glob
import hashlib
import json
import os
import shutil
import socket
import sys
import tempfile
import unicodedata
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from megadocs.corpus import (
    STORE_FORMAT,
    Document,
    is_empty_document,
    is_token_store,
    iter_documents,
    parse_store_manifest,
    source_hash,
    store_documents,
    unique_documents,
)
from megadocs.data_identity import STORE_DUPLICATES_REMOVED
from megadocs.errors import FieldError, UserError, names_file
from megadocs.formats import replace_dir, write_json
from megadocs.procs import pid_alive

__all__ = ["prepare", "TokenStore", "StoreSplit", "TokenizedDocuments", "EOS_TOKEN", "default_val_docs",
           "text_digest", "tokenizer_hash", "train_bpe_tokenizer", "write_array"]

EOS_TOKEN = "<|endoftext|>"
MANIFEST = "manifest.json"
TOKENIZER_DIR = "tokenizer"
TOKEN_DTYPE = np.uint32
_ENCODE_BATCH = 512
MANIFEST_FIELDS: dict[str, tuple[type, str]] = {
    "vocab_size": (int, "an integer"), "eos_id": (int, "an integer"), "tokenizer_hash": (str, "a string"),
    "source": (str, "a string"), "source_hash": (str, "a string"), "splits": (dict, "a mapping of splits"),
}
"""The fields of a store's manifest that an open store reads (besides ``format``), with the type each holds."""
SPLIT_FIELDS = ("documents", "tokens", "skipped_empty")
"""The counts each split of a manifest holds (integers)."""
# A plain chat format so a model trained on a store's own tokenizer can serve as a vLLM chat
# generator in tests and demos.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}"
    + EOS_TOKEN
    + "\n{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def default_val_docs(num_docs: int) -> int:
    """Held-out documents when ``--val-docs`` is not given: 5% of the corpus, at most 1000."""
    return max(1, min(1000, round(0.05 * num_docs)))


def tokenizer_hash(tokenizer_dir: Path) -> str:
    """Identity of a saved fast tokenizer: sha256 of its ``tokenizer.json`` (16 hex chars)."""
    return hashlib.sha256((Path(tokenizer_dir) / "tokenizer.json").read_bytes()).hexdigest()[:16]


# ----------------------------------------------------------------------------------------------
# Reading


@dataclass(frozen=True, eq=False)
class TokenizedDocuments:
    """Documents as one flat token array and their boundaries (document i = tokens[off[i]:off[i+1]])."""

    tokens: np.ndarray
    """Flat uint32 tokens of all documents, memory-mapped."""
    offsets: np.ndarray
    """int64, ``num_documents + 1`` entries."""

    @property
    def num_documents(self) -> int:
        return len(self.offsets) - 1

    @property
    def num_tokens(self) -> int:
        return int(self.offsets[-1])

    @property
    def lengths(self) -> np.ndarray:
        """Tokens per document (int64)."""
        return np.diff(self.offsets)

    def gather(self, documents: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """Tokens at ``offsets`` (< the document's length) of ``documents`` (same shapes)."""
        index = self.offsets[documents] + offsets
        return self.tokens[index.ravel()].reshape(index.shape)


@dataclass(frozen=True, eq=False)
class StoreSplit(TokenizedDocuments):
    """One split of a token store (no EOS stored between documents), read from the store as it was
    opened (:meth:`TokenStore.split`)."""

    name: str
    store: TokenStore

    @property
    def path(self) -> Path:
        """The store's directory (for messages: files are read through `store`)."""
        return self.store.path

    def document(self, index: int) -> np.ndarray:
        """The tokens of document ``index`` (a memmap view)."""
        if not -self.num_documents <= index < self.num_documents:
            raise IndexError(f"document {index} outside [0, {self.num_documents}) of split {self.name!r}")
        index %= self.num_documents
        return self.tokens[self.offsets[index]:self.offsets[index + 1]]

    def documents(self) -> Iterator[Document]:
        """The raw documents of this split, in store order (of the store as it was opened)."""
        name = f"{self.name}.docs.jsonl"
        return store_documents(self.path / name, self.store.open_file(name))

    @functools.cached_property
    def doc_ids(self) -> list[str]:
        return [doc.doc_id for doc in self.documents()]


def _manifest_problem(manifest: dict[str, Any]) -> str:
    """What is wrong with a token store's manifest (a field an open store reads missing or of another
    type), or "" when nothing is.

    >>> _manifest_problem({"vocab_size": "512"})
    "vocab_size: expected an integer, got '512'"
    """
    for field, (kind, expected) in MANIFEST_FIELDS.items():
        value = manifest.get(field)
        if not isinstance(value, kind) or isinstance(value, bool):
            return f"{field}: expected {expected}, got {'nothing' if field not in manifest else repr(value)}"
    for name, counts in manifest["splits"].items():
        for count in SPLIT_FIELDS:
            value = counts.get(count) if isinstance(counts, dict) else None
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                return f"splits.{name}.{count}: expected a count (an integer >= 0), got " + (
                    repr(value) if isinstance(counts, dict) and count in counts else "nothing")
    return ""


class TokenStore:
    """A prepared token store, as it was opened. Open with :meth:`open`.

    Opening holds the store's directory (a file descriptor, closed with the object), and every file
    of it is read through that: its manifest at once, a split's arrays and documents
    (:meth:`split`) and the tokenizer's files (:meth:`copy_tokenizer`) whenever asked, hours later
    for a run's evaluation. A store replaced at its path in the meantime (prepared again, moved)
    changes nothing that is read: what is read is what the manifest, and so the identity of a run
    (`megadocs.data_identity.store_identity_of`), describes. One removed in the meantime is
    refused in one line naming the file.
    """

    def __init__(self, path: Path, manifest: dict[str, Any], directory: int):
        self.path = path
        self.manifest = manifest
        self._directory = directory
        self._splits: dict[str, StoreSplit] = {}  # per open store, not a functools.cache: that would keep
        self._tokenizer = None  # every store ever opened (and its directory) alive
        weakref.finalize(self, os.close, directory)

    @classmethod
    def open(cls, path: str | Path) -> TokenStore:
        """Open a complete store; a directory that is not one raises :class:`UserError`."""
        path = Path(path)
        try:
            directory = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except OSError:
            raise UserError(f"{path}: token store not found (run `megadocs data prepare --corpus SRC "
                            f"--out {path}`)") from None
        try:  # read once, through the directory held: what is checked is what is kept
            with open(MANIFEST, "rb", opener=functools.partial(os.open, dir_fd=directory)) as handle:
                manifest = parse_store_manifest(handle.read())
        except OSError:
            manifest = None
        problem = "" if manifest is None else _manifest_problem(manifest)
        if manifest is None or problem:
            os.close(directory)
        if manifest is None:
            raise UserError(f"{path}: not a token store (no {MANIFEST} with format {STORE_FORMAT!r}; "
                            f"run `megadocs data prepare --corpus SRC --out {path}`)")
        if problem:
            raise UserError(f"{path / MANIFEST}: {problem} (the store is damaged; prepare it again)")
        return cls(path, manifest, directory)

    def __reduce__(self):
        raise TypeError(f"a TokenStore ({self.path}) holds its open directory and is not pickled; open it "
                        "where it is used")

    def open_file(self, name: str, *, directory: int | None = None) -> BinaryIO:
        """The store's file ``name`` as the store was opened, for reading bytes (``directory``: a
        folder of it opened through the store's; default the store's own).

        Raises:
            UserError: no such file there (removed since the store was opened, or never written).
        """
        try:
            return open(name, "rb", opener=functools.partial(os.open, dir_fd=self._directory
                                                             if directory is None else directory))
        except FileNotFoundError:
            raise UserError(f"{self.path / name}: not in the token store opened at {self.path} (removed "
                            f"while in use, or the store is damaged; prepare it again)") from None

    @property
    def eos_id(self) -> int:
        return int(self.manifest["eos_id"])

    @property
    def vocab_size(self) -> int:
        return int(self.manifest["vocab_size"])

    @property
    def tokenizer_hash(self) -> str:
        return str(self.manifest["tokenizer_hash"])

    @property
    def tokenizer_path(self) -> Path:
        return self.path / TOKENIZER_DIR

    def tokenizer(self):
        """The store's HF fast tokenizer (loaded once per open store, from its files as the store
        was opened: copied to a temporary folder, which the loaded tokenizer no longer needs)."""
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            with tempfile.TemporaryDirectory() as folder:
                self.copy_tokenizer(Path(folder))
                self._tokenizer = AutoTokenizer.from_pretrained(folder)
        return self._tokenizer

    def split(self, name: str) -> StoreSplit:
        """Split ``name`` of the store as it was opened (loaded once per open store): its offsets
        read into memory (8 bytes a document), its tokens memory-mapped.

        Raises:
            UserError: no such split, a file of it gone (`open_file`), an offsets file that is no
                array of offsets, or a tokens file whose size disagrees with the offsets.
        """
        if name in self._splits:
            return self._splits[name]
        if name not in self.manifest["splits"]:
            raise UserError(f"{self.path}: split {name!r} not in the store (has: "
                            f"{', '.join(self.manifest['splits'])})")
        offsets_path = self.path / f"{name}.offsets.npy"
        with self.open_file(offsets_path.name) as handle:
            try:
                offsets = np.load(handle)  # allow_pickle=False: another file's bytes raise, none is run
            except (ValueError, EOFError, OSError):
                offsets = None
        if offsets is None or offsets.ndim != 1 or offsets.dtype.kind not in "iu" or len(offsets) == 0:
            raise UserError(f"{offsets_path}: expected a NumPy array of document offsets (the store is damaged; "
                            "prepare it again)")
        tokens_path = self.path / f"{name}.tokens"
        width = np.dtype(TOKEN_DTYPE).itemsize
        with self.open_file(tokens_path.name) as handle:  # the map keeps the file, whatever its path holds later
            size = os.fstat(handle.fileno()).st_size
            if size != int(offsets[-1]) * width:  # checked first: a size no multiple of a token cannot be mapped
                held = f"{size // width:,} tokens" if size % width == 0 else \
                    f"{size:,} bytes (no whole number of {width}-byte tokens)"
                raise UserError(f"{tokens_path}: holds {held} but the offsets say {int(offsets[-1]):,} tokens "
                                "(the store is damaged; prepare it again)")
            tokens = np.zeros(0, dtype=TOKEN_DTYPE) if offsets[-1] == 0 else \
                np.memmap(handle, dtype=TOKEN_DTYPE, mode="r")
        split = self._splits[name] = StoreSplit(tokens=tokens, offsets=offsets, name=name, store=self)
        return split

    def copy_tokenizer(self, destination: Path) -> None:
        """Copy the files of the store's ``tokenizer/`` (as the store was opened) into ``destination``
        (created if needed; files there of the same name are replaced).

        Raises:
            UserError: the store's tokenizer/ is gone (`open_file`).
        """
        with self._tokenizer_folder() as folder:
            destination.mkdir(parents=True, exist_ok=True)
            for name in sorted(os.listdir(folder)):  # flat: what save_pretrained writes
                with self.open_file(name, directory=folder) as source, open(destination / name, "wb") as target:
                    shutil.copyfileobj(source, target)

    def check_tokenizer(self) -> None:
        """Refuse a store whose ``tokenizer/`` is gone, as :meth:`copy_tokenizer` would: a run
        (and its ``--dry-run``) checks at its start what it ends by copying into ``RUN/model``.

        Raises:
            UserError: the store's tokenizer/ is gone, naming it.
        """
        with self._tokenizer_folder():
            pass

    @contextlib.contextmanager
    def _tokenizer_folder(self) -> Iterator[int]:
        """The store's ``tokenizer/`` as the store was opened (a directory descriptor, closed on leaving)."""
        try:
            folder = os.open(TOKENIZER_DIR, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0), dir_fd=self._directory)
        except FileNotFoundError:
            raise UserError(f"{self.tokenizer_path}: not in the token store opened at {self.path} (removed while "
                            "in use, or the store is damaged; prepare it again)") from None
        try:
            yield folder
        finally:
            os.close(folder)

    def check(self) -> None:
        """Read what a run reads of the store, as ``megadocs data info`` does before a sweep: every
        split's offsets and token file (:meth:`split`: at the paper's 164k documents 1.3 MB of
        offsets read, the tokens memory-mapped, not read) against the manifest's counts, and the
        tokenizer (loaded once, as a run loads it).

        Raises:
            UserError: a file of a split gone or damaged, counts that disagree with the manifest, or
                a tokenizer that does not load, naming the file.
        """
        for name, counts in self.manifest["splits"].items():
            split = self.split(name)
            found = {"documents": split.num_documents, "tokens": split.num_tokens}
            for count, value in found.items():
                if value != counts[count]:
                    raise UserError(f"{self.path / MANIFEST}: splits.{name}.{count}: {counts[count]:,}, but "
                                    f"{name}.offsets.npy holds {value:,} (the store is damaged; prepare it again)")
        try:
            self.tokenizer()
        except UserError:
            raise
        except Exception as exc:  # transformers' and tokenizers' own errors on damaged files
            first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
            raise UserError(f"{self.tokenizer_path}: the store's tokenizer does not load ({first}); the store is "
                            "damaged: prepare it again") from None

    def summary(self) -> str:
        """One paragraph: where it came from and what it holds."""
        parts = []
        for name, counts in self.manifest["splits"].items():
            parts.append(f"{name}: {counts['documents']:,} documents, {counts['tokens']:,} tokens"
                         f" ({counts['skipped_empty']:,} empty skipped)")
        if self.manifest.get(STORE_DUPLICATES_REMOVED):
            parts.append(f"{self.manifest[STORE_DUPLICATES_REMOVED]:,} duplicate texts removed before the split")
        return (f"token store {self.path} from {self.manifest['source']} "
                f"(source {self.manifest['source_hash']}, tokenizer {self.tokenizer_hash}, "
                f"vocab {self.vocab_size:,}, eos {self.eos_id}): " + "; ".join(parts) + ".")


# ----------------------------------------------------------------------------------------------
# Writing


def prepare(
    corpus: str | Path,
    out: str | Path,
    *,
    tokenizer: str | Path | None = None,
    vocab_size: int | None = None,
    val_docs: int | None = None,
    val_tokens: int | None = None,
    seed: int = 0,
    max_docs: int | None = None,
) -> TokenStore:
    """Tokenize ``corpus`` into a token store at ``out`` and return it opened.

    Args:
        corpus: any source :func:`megadocs.corpus.iter_documents` reads.
        out: the store directory (created; must be absent, empty, or this same store).
        tokenizer: an HF tokenizer directory to use as is (e.g. Llama 3's).
        vocab_size: instead, train a byte-level BPE of this size on the train split, with
            ``<|endoftext|>`` as EOS.
        val_docs: documents held out as ``val`` (default :func:`default_val_docs`): the first
            ``val_docs`` non-empty documents of a permutation seeded by ``seed``.
        val_tokens: instead of ``val_docs``, hold out documents of that permutation until they
            hold at least this many tokens counting one EOS per document, so the val split
            yields at least ``val_tokens // context`` validation windows (the paper's 1024
            windows of 4096: ``val_tokens=4194304``). Needs ``tokenizer`` (a BPE trained on the
            train split cannot count tokens before the split exists).
        seed: seeds the held-out choice.
        max_docs: read only the first ``max_docs`` documents of the corpus (before the split).

    Empty (whitespace-only) documents are skipped and counted in the manifest, under the split
    in whose part of the permutation they fall. A text seen before (:func:`text_digest`: under
    another id, or differing only in whitespace or Unicode composition) is left out
    before the split, so no held-out text is also trained on; the manifest's
    ``duplicates_removed`` counts them.

    Raises:
        UserError: bad options, an unreadable corpus, or ``out`` holding something else.
    """
    out = Path(out)
    if (tokenizer is None) == (vocab_size is None):
        raise UserError("data prepare: give exactly one of --tokenizer HF_DIR or --vocab-size N")
    if vocab_size is not None and vocab_size < 257:
        raise FieldError("vocab_size", f"expected >= 257 (256 bytes + EOS), got {vocab_size}")
    if tokenizer is not None and not Path(tokenizer).is_dir():
        raise FieldError("tokenizer", f"{tokenizer} is not a directory (expected an HF tokenizer directory)")
    if val_docs is not None and val_docs < 1:
        raise FieldError("val_docs", f"expected >= 1, got {val_docs}")
    if val_tokens is not None:
        if val_docs is not None:
            raise UserError("data prepare: give at most one of --val-docs N and --val-tokens N")
        if val_tokens < 1:
            raise FieldError("val_tokens", f"expected >= 1, got {val_tokens}")
        if tokenizer is None:
            raise FieldError("val_tokens", "counts tokens of a fixed tokenizer; give --tokenizer HF_DIR (e.g. a "
                             "store's DIR/tokenizer) or hold out by --val-docs")
    if max_docs is not None and max_docs < 2:
        raise FieldError("max_docs", f"expected >= 2, got {max_docs}")
    if seed < 0:
        raise FieldError("seed", f"expected >= 0, got {seed}")
    options = {"tokenizer": None if tokenizer is None else str(Path(tokenizer).resolve()),
               "vocab_size": vocab_size, "val_docs": val_docs, "seed": seed, "max_docs": max_docs}
    if val_tokens is not None:  # only when used, so stores prepared before it keep their options
        options["val_tokens"] = val_tokens
    corpus_hash = source_hash(corpus)

    if is_token_store(out):
        return _existing_store(out, corpus_hash, options)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out}: exists and is not a token store (choose an empty --out directory)")

    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_attempts(out)
    tmp = Path(tempfile.mkdtemp(prefix=_attempt_prefix(out) + f"{os.getpid()}-", dir=out.parent))
    try:
        with names_file(out):  # a failed write in the private attempt names the store being made
            manifest = _write_store(corpus, tmp, tokenizer=tokenizer, vocab_size=vocab_size,
                                    val_docs=val_docs, val_tokens=val_tokens, seed=seed, max_docs=max_docs)
        manifest.update(source=str(corpus), source_hash=corpus_hash, options=options)
        write_json(tmp / MANIFEST, manifest)  # written last: its presence marks completeness
        tmp.chmod(0o755)  # mkdtemp creates it private
        try:
            replace_dir(tmp, out, remove_existing=False)  # replaces an empty `out` atomically
        except OSError:
            if is_token_store(out):  # a concurrent prepare finished first
                return _existing_store(out, corpus_hash, options)
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return TokenStore.open(out)


def _attempt_prefix(out: Path) -> str:
    return f".{out.name}.tmp-{socket.gethostname()}-"


def _remove_abandoned_attempts(out: Path) -> None:
    """Delete temporary directories of earlier prepares on this host whose process is gone."""
    prefix = _attempt_prefix(out)
    for attempt in out.parent.glob(f"{glob.escape(prefix)}*"):  # a name may hold [ ] * ?
        pid = attempt.name[len(prefix):].split("-", 1)[0]
        if not pid.isdigit() or pid_alive(int(pid)):
            continue
        shutil.rmtree(attempt, ignore_errors=True)


def _existing_store(out: Path, corpus_hash: str, options: dict[str, Any]) -> TokenStore:
    store = TokenStore.open(out)
    had = store.manifest.get("options", {})
    if store.manifest["source_hash"] != corpus_hash or had != options:
        raise UserError(f"{out}: already holds a token store prepared from {store.manifest['source']} "
                        f"with {had}; choose another --out or delete it")
    print(f"{out}: already prepared, nothing to do", file=sys.stderr)
    if STORE_DUPLICATES_REMOVED not in store.manifest and (leaked := _held_out_texts_in_train(store)):
        print(f"warning: {out}: {leaked} of its {store.manifest['splits']['val']['documents']} held-out texts "
              f"are also in its train split (prepared before duplicate texts were removed: its val loss is "
              f"biased down); prepare it again into a new --out", file=sys.stderr)
    return store


def _held_out_texts_in_train(store: TokenStore) -> int:
    """How many of ``store``'s val texts (:func:`text_digest`) its train split also holds: none in
    a store that records ``duplicates_removed``. Reads the train split's documents once."""
    val = {text_digest(doc.text) for doc in store.split("val").documents()}
    return len(val & {digest for doc in store.split("train").documents() if (digest := text_digest(doc.text)) in val})


def _split_plan(documents: list[Document], val_docs: int | None, seed: int,
                val_lengths=None, val_tokens: int | None = None) -> tuple[np.ndarray, dict]:
    """Mark val documents: the first non-empty ones of a seeded permutation, ``val_docs`` of them
    or, with ``val_tokens``, as many as hold that many tokens (``val_lengths(docs)`` gives each
    document's token count; one EOS is added per document)."""
    empty = np.array([is_empty_document(doc) for doc in documents], dtype=bool)
    usable = int((~empty).sum())
    permutation = np.random.default_rng(seed).permutation(len(documents))
    if val_tokens is not None:
        wanted = _docs_for_tokens([documents[i] for i in permutation if not empty[i]], val_lengths, val_tokens)
    else:
        wanted = default_val_docs(usable) if val_docs is None else val_docs
    if wanted >= usable:
        asked = f"{val_tokens} held-out tokens take {wanted}" if val_tokens is not None else f"{wanted}"
        raise FieldError("val_tokens" if val_tokens is not None else "val_docs", f"{asked} held-out documents "
                         f"leave none for training (the corpus has {usable} non-empty documents)")
    taken = np.cumsum(~empty[permutation])
    cut = int(np.searchsorted(taken, wanted)) + 1  # permutation[:cut] holds `wanted` usable docs
    is_val = np.zeros(len(documents), dtype=bool)
    is_val[permutation[:cut]] = True
    skipped = {"train": int((empty & ~is_val).sum()), "val": int((empty & is_val).sum())}
    return is_val, skipped


def _docs_for_tokens(candidates: list[Document], val_lengths, val_tokens: int) -> int:
    """How many of ``candidates`` (in order) it takes to hold ``val_tokens`` tokens with EOS;
    ``len(candidates)`` when all of them do not."""
    held = 0
    for start in range(0, len(candidates), _ENCODE_BATCH):
        lengths = val_lengths(candidates[start:start + _ENCODE_BATCH])
        totals = held + np.cumsum(np.asarray(lengths, dtype=np.int64) + 1)
        reached = int(np.searchsorted(totals, val_tokens))  # first index with totals >= val_tokens
        if reached < len(totals):
            return start + reached + 1
        held = int(totals[-1])
    return len(candidates)


def text_digest(text: str) -> bytes:
    """What makes two documents' texts the same (16 bytes): the text in Unicode NFC with every run
    of whitespace one space (CRLF and LF line ends, trailing spaces and the like do not make another
    text); any other character that differs does."""
    normalised = " ".join(unicodedata.normalize("NFC", text).split())
    return hashlib.blake2b(normalised.encode(), digest_size=16).digest()


def _read_corpus(corpus: str | Path, max_docs: int | None) -> tuple[list[Document], int]:
    """The first ``max_docs`` documents of ``corpus`` with every non-empty text seen before
    (:func:`text_digest`) left out, and how many were left out. Holds a 16-byte digest per text
    (about 100 bytes with the set's own, 16 MB for the paper's 164k documents)."""
    from tqdm import tqdm

    documents, seen, duplicates = [], set(), 0
    for read, doc in enumerate(tqdm(unique_documents(iter_documents(corpus), f"{corpus}"), desc="reading corpus",
                                    unit=" docs", file=sys.stderr)):
        if max_docs is not None and read >= max_docs:
            break
        if not is_empty_document(doc):  # empty documents are skipped and counted by the split, not here
            digest = text_digest(doc.text)
            if digest in seen:
                duplicates += 1
                continue
            seen.add(digest)
        documents.append(doc)
    usable = sum(1 for doc in documents if not is_empty_document(doc))
    if usable < 2:
        left_out = [f"{len(documents) - usable} empty"] if len(documents) > usable else []
        left_out += [f"{duplicates} duplicate text{'s' * (duplicates > 1)} left out"] if duplicates else []
        raise UserError(f"{corpus}: holds {usable} non-empty documents"
                        + (f" ({', '.join(left_out)})" if left_out else "")
                        + "; a store needs at least 2 (one to train on, one to validate)")
    return documents, duplicates


def _write_store(corpus, tmp: Path, *, tokenizer, vocab_size, val_docs, val_tokens=None, seed,
                 max_docs) -> dict[str, Any]:
    hf_tokenizer = _load_tokenizer(Path(tokenizer)) if tokenizer is not None else None  # before reading the corpus
    documents, duplicates = _read_corpus(corpus, max_docs)

    def val_lengths(docs: list[Document]) -> list[int]:
        return [len(ids) for ids in encode_texts(hf_tokenizer, [doc.text for doc in docs])]

    is_val, skipped = _split_plan(documents, val_docs, seed, val_lengths, val_tokens)
    splits = {
        "train": [doc for doc, val in zip(documents, is_val) if not val and not is_empty_document(doc)],
        "val": [doc for doc, val in zip(documents, is_val) if val and not is_empty_document(doc)],
    }
    for name, docs in splits.items():
        with open(tmp / f"{name}.docs.jsonl", "w", encoding="utf-8") as handle:
            for doc in docs:
                handle.write(json.dumps({"doc_id": doc.doc_id, "text": doc.text}, ensure_ascii=False) + "\n")

    if hf_tokenizer is None:
        hf_tokenizer = train_bpe_tokenizer((doc.text for doc in splits["train"]), vocab_size)
    hf_tokenizer.save_pretrained(tmp / TOKENIZER_DIR)
    eos_id = hf_tokenizer.eos_token_id

    counts = {}
    for name, docs in splits.items():
        tokens = _tokenize_split(hf_tokenizer, docs, tmp / f"{name}.tokens", tmp / f"{name}.offsets.npy",
                                 desc=f"tokenizing {name}")
        counts[name] = {"documents": len(docs), "tokens": tokens, "skipped_empty": skipped[name]}
    return {
        "format": STORE_FORMAT,
        "tokenizer_hash": tokenizer_hash(tmp / TOKENIZER_DIR),
        "vocab_size": len(hf_tokenizer),
        "eos_id": int(eos_id),
        "eos_token": hf_tokenizer.eos_token,
        "seed": seed,
        "splits": counts,
        STORE_DUPLICATES_REMOVED: duplicates,  # 0: the identity a store had before it was recorded
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    try:
        loaded = AutoTokenizer.from_pretrained(path)
    except Exception as exc:  # transformers raises many types for a bad directory
        raise UserError(f"tokenizer: cannot load an HF tokenizer from {path} ({' '.join(str(exc).split())})") \
            from None
    if not loaded.is_fast:
        raise UserError(f"tokenizer: {path} has no fast tokenizer (expected a tokenizer.json)")
    if loaded.eos_token_id is None:
        raise UserError(f"tokenizer: {path} defines no eos_token (needed to join documents)")
    return loaded


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int):
    """Train a byte-level BPE (``<|endoftext|>`` = EOS) and wrap it as a PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS_TOKEN],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    backend.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token=EOS_TOKEN, bos_token=EOS_TOKEN, pad_token=EOS_TOKEN,
        unk_token=None, clean_up_tokenization_spaces=False, chat_template=CHAT_TEMPLATE,
        model_max_length=1 << 30,
    )


def encode_texts(hf_tokenizer, texts: list[str]) -> list[list[int]]:
    """Token ids of each text, without special tokens, batch-encoded by the Rust backend."""
    encodings = hf_tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=False)
    return [encoding.ids for encoding in encodings]


def _tokenize_split(hf_tokenizer, docs: list[Document], tokens_path: Path, offsets_path: Path,
                    *, desc: str) -> int:
    from tqdm import tqdm

    offsets = np.zeros(len(docs) + 1, dtype=np.int64)
    written = 0
    with open(tokens_path, "wb") as handle, tqdm(total=len(docs), desc=desc, unit=" docs",
                                                  file=sys.stderr) as progress:
        for start in range(0, len(docs), _ENCODE_BATCH):
            batch = docs[start:start + _ENCODE_BATCH]
            for i, ids in enumerate(encode_texts(hf_tokenizer, [doc.text for doc in batch])):
                write_array(handle, np.asarray(ids, dtype=TOKEN_DTYPE))
                written += len(ids)
                offsets[start + i + 1] = written
            progress.update(len(batch))
    with open(offsets_path, "wb") as handle:
        write_array(handle, offsets, npy=True)
    return written


def write_array(handle, array: np.ndarray, *, npy: bool = False) -> None:
    """Append ``array``'s bytes (after a ``.npy`` header: ``npy``) through ``handle.write``.

    Not ``ndarray.tofile``/``np.save`` on a file: numpy reports a failed write as "N requested and
    0 written" without its errno, so a full disk would not read as one (`megadocs.errors`).
    """
    array = np.ascontiguousarray(array)
    if npy:  # the header np.save writes for an array this small in rank (format 1.0)
        np.lib.format.write_array_header_1_0(handle, np.lib.format.header_data_from_array_1_0(array))
    handle.write(array)

