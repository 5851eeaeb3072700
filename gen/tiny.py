"""Test/demo utility: build a tiny random-weight Llama generator directory in seconds.

NOT a real generator. It exists so that tests, the benchmark and the demo can run the real
generation pipeline (vLLM or transformers) without downloading weights: a byte-level BPE
tokenizer trained on the stdlib corpus with an EOS token and a chat template, and a
``LlamaForCausalLM`` with head_dim 64 (the vLLM CPU attention kernel rejects head_dim 16),
saved with ``save_pretrained`` so ``AutoTokenizer``/``AutoModelForCausalLM``/``vllm.LLM`` load it.

Example:
    >>> from gen.tiny import make_tiny_generator
    >>> path = make_tiny_generator("/tmp/tiny-gen")   # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["make_tiny_generator", "TINY_CHAT_TEMPLATE"]

EOS = "<|eos|>"
BOS = "<|bos|>"
# A minimal role-tagged chat template (Llama-3-like structure, plain tags).
TINY_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{{ eos_token }}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def make_tiny_generator(
    out: str | Path,
    *,
    vocab_size: int = 512,
    hidden_size: int = 128,
    layers: int = 2,
    heads: int = 2,
    max_position_embeddings: int = 2048,
    chat_template: bool = True,
    max_docs: int = 60,
    seed: int = 0,
) -> Path:
    """Write a tiny random Llama + BPE tokenizer to ``out`` (skipped when it already exists).

    Args:
        out: directory to create (``config.json`` there means it is already built).
        chat_template: False leaves the tokenizer without a chat template, like a model trained
            by ``train/`` on raw text (exercises gen's plain-text fallback).
        max_docs: how many stdlib documents train the tokenizer (more = slower, nicer merges).

    Returns:
        ``out`` as a Path.
    """
    out = Path(out)
    if (out / "config.json").is_file():
        return out
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from megadocs.corpus import iter_documents

    texts = []
    for doc in iter_documents("stdlib"):
        texts.append(doc.text)
        if len(texts) >= max_docs:
            break
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=BOS, eos_token=EOS, pad_token=EOS)
    if chat_template:
        fast.chat_template = TINY_CHAT_TEMPLATE
    out.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out)

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        head_dim=hidden_size // heads,
        max_position_embeddings=max_position_embeddings,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.eos_token_id,
        tie_word_embeddings=False,
        torch_dtype="float32",
    )
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = fast.eos_token_id
    model.generation_config.pad_token_id = fast.eos_token_id
    model.save_pretrained(out)
    return out
