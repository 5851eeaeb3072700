"""Generate a pool of rephrases or latent thoughts for every training document of a source.

Python API (what the CLI and the demo call)::

    from gen.generate import generate_pool
    manifest = generate_pool("rephrase", "runs/demo/data", "runs/demo/generator", g=4,
                             out="runs/demo/pool-rephrase", engine="vllm", max_new_tokens=256)

``docs`` is anything :func:`megadocs.corpus.iter_documents` reads; for a prepared token store
that is its TRAIN split only (validation documents never reach the generator). The call is
idempotent and resumable: finished shards are skipped, a killed shard keeps every document it
flushed and generates only the rest (:func:`megadocs.pools.load_shard`), so re-running always ends
with exactly G generations per document. Returns the pool manifest (provenance + statistics). The
pool's format and rules are :mod:`megadocs.pools`'s; the shards run through
:class:`megadocs.shards.ShardedStep` (:class:`GeneratePool`), in this process or as a job array
(:func:`submit_shards`).

Rephrase: one prompt per document (the WRAP Wikipedia-style prompt), ``n = G`` samples.
Thoughts: G prompts per document, one per split point (:mod:`gen.splits`), ``n = 1`` each.
Either way a document is G sequences (a sample pool's is 1). Documents are sent to the engine
``chunk_docs`` at a time (one ``LLM.chat`` call each), and each chunk's rows are flushed and
fsynced before the next. By default a chunk holds the engine's ``sequences_per_call`` sequences
(:func:`chunk_docs_for`): bigger chunks keep the engine's batch full longer, smaller ones lose
less work to a kill; a Ctrl-C loses the chunk in flight and nothing flushed before it.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from itertools import islice
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from gen.engines import (
    Completion,
    Engine,
    Request,
    Sampling,
    count_prompt_tokens,
    load_tokenizer,
    open_engine,
    planned_context_length,
)
from gen.splits import (
    PROMPT_MARGIN_TOKENS,
    rephrase_window,
    split_tokens,
    thought_window,
    token_starts,
)
from gen.templates import DEFAULT_MAX_NEW_TOKENS, PromptTemplate, chat_template_for, load_template
from megadocs import pools
from megadocs.config import StrictModel, parse_config
from megadocs.corpus import Document, unique_documents
from megadocs.errors import FieldError, UserError, names_file
from megadocs.fingerprint import model_fingerprint
from megadocs.formats import PoolKind
from megadocs.shards import DEFAULT_TIMEOUT_MIN, ShardedStep

__all__ = ["GenerateOptions", "GeneratePool", "generate_pool", "sample_pool", "run_shards",
           "submit_shards", "engine_for", "request_seed", "generator_revision", "DEFAULT_MAX_NEW_TOKENS",
           "parse_shard", "chunk_docs_for", "prompt_budget"]


class GenerateOptions(StrictModel):
    """Everything that defines a pool (the identity fields) plus how to run it."""

    kind: PoolKind
    docs: str | None = Field(None, description="document source (see megadocs.corpus.iter_documents)")
    n_docs: int | None = Field(None, ge=1, description="sample only: how many unconditional samples")
    generator: str = Field(description="Hugging Face model directory")
    g: int = Field(ge=1, description="generations per document")
    out: str = Field(description="pool directory")
    engine: Literal["auto", "vllm", "transformers"] = "auto"
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int | None = Field(None, ge=1, description=f"default per kind: {DEFAULT_MAX_NEW_TOKENS}")
    seed: int = Field(0, ge=0)
    num_shards: int = Field(1, ge=1)
    shard: int | None = Field(None, ge=0, description="run only this shard (default: all)")
    chunk_docs: int | None = Field(None, ge=1, description="documents per engine call/flush (default: "
                                   "chunk_docs_for the engine)")
    max_model_len: int | None = Field(None, ge=16, description="generator context (default: model's)")
    revision: str | None = None
    template: str | None = Field(None, description="prompt template file (default: gen/prompts/)")
    enforce_eager: bool | None = Field(None, description="vLLM: no CUDA graphs/compilation (default: "
                                       "on where vLLM runs on CPU)")
    progress: bool = True

    @model_validator(mode="after")
    def _check(self):
        if self.shard is not None and self.shard >= self.num_shards:
            raise ValueError(f"shard: expected an index below num_shards={self.num_shards}, got {self.shard}")
        if self.kind == PoolKind.SAMPLE:
            if self.n_docs is None or self.docs is not None or self.g != 1:
                raise ValueError("n_docs: sampling needs n_docs (and no docs, g=1)")
        elif self.docs is None:
            raise ValueError(f"docs: {self.kind} needs a document source")
        # Greedy decoding gives one sample per prompt: rephrase asks n = G samples of each document's
        # prompt, and sample asks n_docs of the one empty prompt (every "document" would be the same text).
        repeats = {PoolKind.REPHRASE: (self.g, "G={} of each document's prompt"),
                   PoolKind.SAMPLE: (self.n_docs or 1, "n_docs={} of its one (empty) prompt")}.get(self.kind)
        if self.temperature == 0 and repeats is not None and repeats[0] > 1:
            raise ValueError(f"temperature: 0 (greedy decoding) gives one sample per prompt; {self.kind} asks for "
                             f"{repeats[1].format(repeats[0])} (sample at a temperature above 0; the paper's is 1)")
        if self.max_new_tokens is None:
            self.max_new_tokens = DEFAULT_MAX_NEW_TOKENS[self.kind]
        return self

    @property
    def sampling(self) -> Sampling:
        return Sampling(temperature=self.temperature, top_p=self.top_p, max_new_tokens=self.max_new_tokens)


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> (i, n) with 0 <= i < n."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise UserError(f"--shard: expected i/n (e.g. 0/8), got {text!r}") from None
    if not 0 <= index < count:
        raise UserError(f"--shard: expected 0 <= i < n, got {text!r}")
    return index, count


def chunk_docs_for(kind: PoolKind | str, g: int, sequences_per_call: int) -> int:
    """Documents per engine call so that one call holds ``sequences_per_call`` sequences.

    A rephrase or thoughts document is G sequences, a sample one, so small G gets more documents
    per call and every G keeps the engine equally full (gen/README.md, "Chunks").

    >>> chunk_docs_for("rephrase", 32, 16 * 1024), chunk_docs_for("thoughts", 1, 16 * 1024)
    (512, 16384)
    >>> chunk_docs_for("sample", 1, 64), chunk_docs_for("rephrase", 128, 64)
    (64, 1)
    """
    per_doc = 1 if PoolKind(kind) == PoolKind.SAMPLE else g
    return max(1, sequences_per_call // per_doc)


def request_seed(seed: int, doc_id: str, split_index: int | None = None) -> int:
    """A 62-bit seed for one prompt, from the pool seed, the document and the split point."""
    key = f"{seed}\0{doc_id}\0{'' if split_index is None else split_index}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") >> 2


def generator_revision(generator: str | Path, revision: str | None = None) -> str:
    """``revision`` if given (a name the user vouches for), else the content fingerprint of the
    generator directory (:func:`megadocs.fingerprint.model_fingerprint`: every top-level file
    hashed once, then cached by size and mtime). It is the generator's part of the pool identity:
    the same weights at two paths are the same generator, new weights at one path another."""
    return revision or model_fingerprint(generator)


def _start_token(tokenizer) -> int:
    """Unconditional samples start after EOS: train/ joins documents with EOS, so that is where a
    trained model has seen documents begin (BOS only when the tokenizer has no EOS)."""
    token = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.bos_token_id
    if token is None:
        raise UserError("--generator: its tokenizer has neither an EOS nor a BOS token to start samples from")
    return int(token)


def _resolved_source(docs: str | None) -> str | None:
    """An absolute path for file sources (the manifest must work from any directory)."""
    if docs is None or not Path(docs).exists():
        return docs  # `stdlib`, or None for samples
    return str(Path(docs).resolve())


def _intended_manifest(options: GenerateOptions, template: PromptTemplate | None, tokenizer) -> pools.PoolManifest:
    from megadocs.corpus import source_hash

    if template is None:
        prompt = {"name": "unconditional", "start_token_id": _start_token(tokenizer), "sha256": None}
    else:
        prompt = template.describe()
    return pools.PoolManifest.model_validate({
        "format": pools.POOL_FORMAT,
        "kind": options.kind,
        "g": options.g,
        "source": _resolved_source(options.docs),
        "source_split": "train",
        "source_hash": source_hash(options.docs) if options.docs is not None else None,
        "n_docs": options.n_docs,
        "generator": str(Path(options.generator).resolve()),
        "generator_revision": generator_revision(options.generator, options.revision),
        "prompt_template": prompt,
        "chat_template": chat_template_for(tokenizer).describe(),
        "sampling": options.sampling.describe(),
        "seed": options.seed,
        "num_shards": options.num_shards,
        "max_model_len": options.max_model_len,
        "policies": {
            "shards": "document k of the source belongs to shard k % num_shards",
            "splits": "thoughts: G+1 equal-token pieces, split k before token k*N//(G+1)",
            "truncation": ("thoughts keep the end of the prefix and the start of the suffix (half "
                           "the budget each, spare shared); rephrase keeps the start of the document"),
            "seeds": "per prompt: sha256(seed, doc_id, split_index) >> 2; sample j uses seed + j",
        },
    })


def generate_pool(kind: str, docs: str | Path, generator: str | Path, g: int, out: str | Path, *,
                  engine: str | Engine = "auto", **options) -> dict:
    """Generate (or finish) a pool; see the module docstring. Returns the manifest.

    Args:
        kind: ``rephrase`` or ``thoughts``.
        docs: document source; a token store contributes its train split.
        generator: Hugging Face model directory (its tokenizer splits documents).
        g: generations per document.
        out: pool directory.
        engine: ``auto`` (vLLM when importable), ``vllm``, ``transformers``, or a loaded
            :class:`~gen.engines.Engine` to reuse.
        **options: the other :class:`GenerateOptions` fields (temperature, max_new_tokens, seed,
            num_shards, shard, chunk_docs, max_model_len, template, enforce_eager, progress).
    """
    loaded = engine if isinstance(engine, Engine) else None
    fields = {"kind": kind, "docs": None if docs is None else str(docs), "generator": str(generator),
              "g": g, "out": str(out), "engine": loaded.name if loaded else engine, **options}
    parsed = parse_config(fields, GenerateOptions, source=f"gen {kind}")
    return run_shards(parsed, engine=loaded)


def sample_pool(generator: str | Path, n_docs: int, out: str | Path, *, engine: str | Engine = "auto",
                **options) -> dict:
    """Self-distillation baseline: ``n_docs`` unconditional samples of a trained model (e.g. one
    ``train/`` wrote to ``RUN/model``), each started right after an EOS token, written as a pool
    of kind ``sample`` (same rows, sharding and resume as the other kinds); assemble it with
    algorithm ``self-distill``."""
    return generate_pool("sample", None, generator, 1, out, engine=engine, n_docs=n_docs, **options)


STAT_COUNTS = ("documents", "generations", "output_tokens", "truncated_prompts", "length_truncated",
               "empty_outputs", "run_tokens", "run_seconds")
"""Per-shard counts (the ``.done`` marker) summed into the manifest's statistics (``run_tokens`` and
``run_seconds``: over every run of the shard, :class:`megadocs.pools.ShardProgress`)."""


class GeneratePool(ShardedStep):
    """Generation as a sharded step: the pool is the step's folder, its manifest the pool's.

    The engine is opened once for all the shards one process runs (:meth:`_session`), unless one
    is given; an array task opens its own.
    """

    STAT_KEYS = STAT_COUNTS
    GPU_TASKS = True  # an engine per task, on the GPU it sees (vLLM takes 90% of its memory)

    def __init__(self, options: GenerateOptions, engine: Engine | None = None, tokenizer=None) -> None:
        super().__init__(options.out, options.num_shards, name=f"gen-{options.kind}")
        self.options = options
        self.engine, self._tokenizer = engine, tokenizer if tokenizer is not None else getattr(engine, "tokenizer", None)
        self.manifest: pools.PoolManifest | None = None
        self.template: PromptTemplate | None = None

    def __getstate__(self) -> dict:
        """Pickled into array tasks without the loaded engine and tokenizer (each task loads its own)."""
        return {**self.__dict__, "engine": None, "_tokenizer": None}

    def prepare(self) -> dict:
        options = self.options
        self.template = None if options.kind == PoolKind.SAMPLE else load_template(options.kind, options.template)
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(options.generator, options.revision)
        # Refuse a context too small for the prompts now, before the engine starts (minutes for
        # an 8B model on a GPU) and before the manifest is written.
        context = self.engine.context_length if self.engine is not None else planned_context_length(
            options.engine, options.generator, options.max_model_len, options.revision)
        if context is not None:
            prompt_budget(options, self.template, self._tokenizer, context)
        intended = _intended_manifest(options, self.template, self._tokenizer)
        left_out: list[str] = []
        for _ in _source_documents(options, intended, left_out):  # bad ids refused now, not per shard after its engine start
            pass
        if intended.kind is not PoolKind.SAMPLE:
            intended = intended.model_copy(update={"empty_documents_skipped": len(left_out)})
        if left_out:
            named = ", ".join(repr(doc_id) for doc_id in left_out[:3]) + (", ..." if len(left_out) > 3 else "")
            print(f"{options.docs}: {len(left_out)} empty or whitespace-only document(s) left out ({named}), "
                  f"as `megadocs data prepare` leaves them out of a store", file=sys.stderr, flush=True)

        def same(existing: dict) -> bool:
            if not _holds_generations(self.folder):
                return False  # nothing generated yet (e.g. a run refused at engine start): new settings replace
            pools.check_extends(pools.parse_manifest(existing, self.manifest_path), intended, self.folder)
            return True

        manifest = self.init_manifest(intended.to_json(), same=same)
        self.manifest = pools.parse_manifest(manifest, self.manifest_path)
        return manifest

    @contextlib.contextmanager
    def _session(self) -> Iterator[None]:
        if self.engine is not None:
            yield
            return
        self.engine = engine_for(self.options)
        try:
            yield
        finally:
            self.engine.close()
            self.engine = None

    def settings(self, manifest: dict) -> dict:
        """A pool's settings are its identity (statistics and diversity come later)."""
        return pools.pool_identity_of(manifest)

    def _run_shard(self, index: int) -> dict:
        return _run_shard(self.options, self.manifest, self.template, self.engine, index, self.writing)

    def _derived(self, totals: dict) -> dict:
        generations = totals["generations"]
        return {
            **{k: totals[k] for k in STAT_COUNTS if k not in ("run_tokens", "run_seconds")},
            "mean_tokens": totals["output_tokens"] / generations if generations else 0.0,
            "tokens_per_s": totals["run_tokens"] / totals["run_seconds"] if totals["run_seconds"] else None,
            "generation_seconds": totals["run_seconds"],
        }


def _holds_generations(pool: Path) -> bool:
    """Whether any row or shard marker was written into ``pool`` (of any shard count). A pool
    without either holds only its manifest: a run that stopped before its first flush (killed, or
    a setting refused by the started engine, such as a context vLLM derived smaller than the
    config said) and whose settings a corrected re-run may replace, losing nothing."""
    return any(path.stat().st_size for path in pool.glob("shard-*.jsonl")) or any(pool.glob("shard-*.done"))


def run_shards(options: GenerateOptions, engine: Engine | None = None) -> dict:
    """Run the shards ``options`` selects (one, or all) that are not done; returns the manifest."""
    return GeneratePool(options, engine).run(None if options.shard is None else [options.shard])


def engine_for(options: GenerateOptions) -> Engine:
    """The engine :class:`GeneratePool` loads for ``options`` (gen's engine settings: prefix
    caching on, eager mode automatic; the benchmark measures this one)."""
    return open_engine(options.engine, options.generator, revision=options.revision,
                       max_model_len=options.max_model_len, enforce_eager=options.enforce_eager)


def submit_shards(options: GenerateOptions, executor: str, profile: str | None = None,
                  timeout_min: float = DEFAULT_TIMEOUT_MIN) -> dict:
    """Every not-done shard of the pool as one job array (``local`` or ``slurm``; each task
    resumable, requeued after a timeout or preemption); waits and returns the manifest. A local
    array on a machine with GPUs runs one shard task per GPU, each engine on its own
    (:attr:`GeneratePool.GPU_TASKS`, :func:`megadocs.job_arrays.run_job_array`).

    Raises:
        UserError: a bad executor/profile, or shards that failed (their logs are named).
    """
    step = GeneratePool(options.model_copy(update={"shard": None, "progress": False}))
    return step.submit(executor, profile, timeout_min=timeout_min)


def _source_documents(options: GenerateOptions, manifest: pools.PoolManifest,
                      left_out: list[str] | None = None) -> Iterator[Document]:
    """The pool's source documents in order, refusing (one UserError line) an id seen before or a
    source without documents. Ids are checked across the whole source, not a shard: whether two
    documents share a shard must not decide whether their ids clash (the guard and the tokens key
    documents by id). Empty or whitespace-only documents are not the pool's (their ids appended to
    ``left_out``: :func:`megadocs.pools.iter_shard_documents`). :meth:`GeneratePool.prepare` reads
    it through once, before the manifest is written and the engine starts; each shard reads it
    again for its documents."""
    def refusal(problem: str) -> FieldError:  # of the source's field: `megadocs gen` names the flag typed
        return FieldError("docs", problem, where=f"gen {PoolKind(options.kind).value}")

    empty = True
    documents = pools.iter_shard_documents(manifest, source=options.docs, left_out=left_out)
    for doc in unique_documents(documents, str(options.docs), refusal):
        empty = False
        yield doc
    if empty:
        raise refusal(f"{options.docs}: no documents in the train split")


def _shard_documents(options: GenerateOptions, manifest: pools.PoolManifest, index: int) -> list:
    every = _source_documents(options, manifest)
    return [doc for k, doc in enumerate(every) if pools.shard_of(k, options.num_shards) == index]


def prompt_budget(options: GenerateOptions, template: PromptTemplate | None, tokenizer,
                  context_length: int) -> int | None:
    """Document tokens one prompt may hold in a context of ``context_length`` tokens (None for
    unconditional samples, which hold no document). Needs only the tokenizer, so
    :meth:`GeneratePool.prepare` calls it before the engine starts.

    Raises:
        UserError: the tokenizer is not fast (no character offsets), or ``--max-new-tokens`` and
            the prompt leave no room for the document (or a sample) in the context.
    """
    if options.kind == PoolKind.SAMPLE:
        if options.max_new_tokens >= context_length:
            raise UserError(f"--max-new-tokens: expected less than the generator's context of "
                            f"{context_length} tokens, got {options.max_new_tokens}")
        return None
    if not getattr(tokenizer, "is_fast", False):
        raise UserError(f"--generator: {options.generator}: needs a fast tokenizer (tokenizer.json) "
                        f"to map tokens to character offsets")
    empty = {"text": ""} if options.kind == PoolKind.REPHRASE else {"prefix": "", "suffix": ""}
    overhead = count_prompt_tokens(tokenizer, chat_template_for(tokenizer), template.messages(**empty))
    budget = context_length - options.max_new_tokens - overhead - PROMPT_MARGIN_TOKENS
    if budget < 2:
        raise UserError(f"--max-new-tokens: {options.max_new_tokens} leaves no room for the document "
                        f"in the generator's context of {context_length} tokens (prompt "
                        f"overhead {overhead}); lower it or raise --max-model-len")
    return budget


class _Prompter:
    """Turns a document into its prompts (with the truncation policy applied)."""

    def __init__(self, options: GenerateOptions, template: PromptTemplate | None, engine: Engine):
        self.options, self.template, self.engine = options, template, engine
        if options.kind == PoolKind.SAMPLE:
            self.start = _start_token(engine.tokenizer)
        # Checked again on the started engine's context: without --max-model-len, vLLM derives the
        # context from the config by rules (rope scaling, other length keys) that prepare's
        # estimate (max_position_embeddings) does not repeat, so only now is it certain.
        self.budget = prompt_budget(options, template, engine.tokenizer, engine.context_length)

    def requests(self, doc) -> list[tuple[Request, dict]]:
        """(request, row fields shared by its samples) for each prompt of ``doc``."""
        seed, g = self.options.seed, self.options.g
        if self.options.kind == PoolKind.SAMPLE:
            request = Request(None, n=1, seed=request_seed(seed, doc.doc_id), prompt_ids=[self.start])
            return [(request, {"request_seed": request.seed})]
        text = doc.text
        encoding = self.engine.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        starts = token_starts(encoding["offset_mapping"], len(text))
        if self.options.kind == PoolKind.REPHRASE:
            end, truncated = rephrase_window(starts, self.budget)
            request = Request(self.template.messages(text=text[:end]), n=g, seed=request_seed(seed, doc.doc_id))
            return [(request, {"prompt_truncated": truncated, "request_seed": request.seed})]
        requests = []
        for k, split in enumerate(split_tokens(len(starts) - 1, g)):
            char = starts[split]
            begin, end, truncated = thought_window(starts, split, self.budget)
            messages = self.template.messages(prefix=text[begin:char], suffix=text[char:end])
            request = Request(messages, n=1, seed=request_seed(seed, doc.doc_id, k))
            requests.append((request, {"split_index": k, "split_token": split, "split_char": char,
                                       "prompt_truncated": truncated, "request_seed": request.seed}))
        return requests


def _rows(provenance: dict, doc, requests, completions) -> Iterator[pools.PoolRow]:
    """The pool rows of one document: each completion of each request, numbered ``gen_index`` 0..G-1
    in request order, with its request's split and truncation fields and the shard's ``provenance``."""
    gen_index = 0
    for (_request, fields), samples in zip(requests, completions):
        split = {key: fields.get(key) for key in ("split_index", "split_token", "split_char")}
        for sample in samples:
            yield pools.PoolRow(doc.doc_id, gen_index, sample.text, **split, finish_reason=sample.finish_reason,
                                n_tokens=sample.n_tokens, prompt_truncated=fields.get("prompt_truncated"),
                                extra={"request_seed": fields["request_seed"], **provenance})
            gen_index += 1


def _batched(items: list, size: int) -> Iterator[list]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def _shard_statistics(rows_file: Path, run_tokens: int, run_seconds: float) -> dict:
    """Counts over a shard's rows, streamed (the shard is never held in memory)."""
    stats = dict.fromkeys(("documents", "generations", "output_tokens", "length_truncated", "empty_outputs"), 0)
    prompts, last_doc = set(), None
    for row in pools.iter_rows(rows_file):
        stats["documents"] += row.doc_id != last_doc
        last_doc = row.doc_id
        stats["generations"] += 1
        stats["output_tokens"] += row.n_tokens or 0
        stats["length_truncated"] += row.finish_reason == "length"
        stats["empty_outputs"] += row.empty
        if row.prompt_truncated:
            prompts.add((row.doc_id, row.split_index))
    return {**stats, "truncated_prompts": len(prompts), "run_tokens": run_tokens, "run_seconds": run_seconds}


def _run_shard(options: GenerateOptions, manifest: pools.PoolManifest, template: PromptTemplate | None,
               engine: Engine, index: int, writing: Callable[[], contextlib.AbstractContextManager]) -> dict:
    """Generate the shard's documents that are not done yet; returns its counts (the runner
    writes them as the shard's ``.done`` marker). Each chunk is flushed inside ``writing()``
    (:meth:`megadocs.shards.ShardedStep.writing`: refused once a later run replaced the pool's
    settings, so one pool never holds rows of two settings)."""
    from tqdm import tqdm

    out, count = Path(options.out), options.num_shards
    rows_file = pools.rows_path(out, index, count)
    docs = _shard_documents(options, manifest, index)
    done = set(pools.load_shard(rows_file, options.g))
    strangers = done - {doc.doc_id for doc in docs}
    if strangers:  # e.g. an earlier gen's rows of an empty document, which it prompted with nothing
        raise UserError(f"{rows_file}: holds rows of document {min(strangers)!r}, not one of this shard's documents "
                        f"of {options.docs or manifest.source} (an earlier gen that generated from empty documents "
                        f"too, or a hand-edited shard): use a new --out")
    pending = [doc for doc in docs if doc.doc_id not in done]
    progress_file = pools.progress_path(out, index, count)
    # its earlier runs' chunks (none without rows: a log left beside no rows is started anew below)
    earlier = pools.read_progress(progress_file) if done else pools.ShardProgress()
    prompter = _Prompter(options, template, engine)
    provenance = {
        "prompt_template": template.name if template else "unconditional",
        "prompt_sha256": template.sha256 if template else None,
        "generator": manifest.generator, "generator_revision": manifest.generator_revision,
        "engine": engine.name, "sampling": options.sampling.describe(), "seed": options.seed,
    }
    inner = functools.partial(tqdm, leave=False, position=1, file=sys.stderr) if options.progress else None
    run_tokens, run_seconds = earlier.run_tokens, earlier.run_seconds  # this shard's, over every run of it
    with names_file(rows_file), open(rows_file, "ab") as handle, open(progress_file, "ab" if done else "wb") as log, tqdm(
        total=len(docs), initial=len(docs) - len(pending), unit="doc", file=sys.stderr,
        desc=f"{options.kind} {pools.shard_stem(index, count)}", disable=not options.progress,
    ) as bar:
        chunk_docs = options.chunk_docs or chunk_docs_for(options.kind, options.g, engine.sequences_per_call)
        for chunk in _batched(pending, chunk_docs):
            per_doc = [prompter.requests(doc) for doc in chunk]
            requests = [request for doc_requests in per_doc for request, _ in doc_requests]
            started = time.perf_counter()
            completions: list[list[Completion]] = engine.generate(requests, options.sampling, progress=inner)
            spent = pools.ShardProgress(run_tokens=sum(c.n_tokens for samples in completions for c in samples),
                                        run_seconds=time.perf_counter() - started)
            position = 0
            lines = []
            for doc, doc_requests in zip(chunk, per_doc):
                doc_completions = completions[position:position + len(doc_requests)]
                position += len(doc_requests)
                lines.extend(json.dumps(row.to_json(), ensure_ascii=False)
                             for row in _rows(provenance, doc, doc_requests, doc_completions))
            with writing():
                handle.write(("\n".join(lines) + "\n").encode())
                handle.flush()
                os.fsync(handle.fileno())  # durable before we count it done
                with names_file(progress_file):
                    log.write(spent.line())  # after its rows: a line never counts rows that are not there
                    log.flush()
                    os.fsync(log.fileno())
            run_tokens, run_seconds = run_tokens + spent.run_tokens, run_seconds + spent.run_seconds
            bar.update(len(chunk))
            bar.set_postfix(tok_s=f"{run_tokens / run_seconds:.0f}" if run_seconds else "-")
    pools.load_shard(rows_file, options.g)  # drops a torn tail; every row left is complete
    stats = _shard_statistics(rows_file, run_tokens, run_seconds)
    if stats["documents"] != len(docs):  # internal invariant: every document has all its rows
        raise RuntimeError(f"{rows_file}: {stats['documents']} complete documents, expected {len(docs)}")
    return stats
