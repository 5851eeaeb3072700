"""The student's shapes by name: a pure table (no torch), so a config is checked when it is loaded.

`train.model` builds a preset; `train.plan` counts its parameters, FLOPs and memory;
`train.config.ModelConfig` refuses an unknown name at load time.

Presets state their parameter count at a reference vocabulary (128,256, the Llama 3 tokenizer,
for the paper's sizes); a run's real vocabulary comes from its token store, so its count differs
by ``2 * hidden * (vocab - reference_vocab)``.

>>> parameter_count(PRESETS["300m"], LLAMA3_VOCAB) == PRESETS["300m"].params
True
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["LLAMA3_VOCAB", "ModelPreset", "PRESETS", "parameter_count", "by_size"]

LLAMA3_VOCAB = 128_256


@dataclass(frozen=True)
class ModelPreset:
    """A model shape and the parameter count it has at `reference_vocab` (checked by a test)."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    params: int
    reference_vocab: int = LLAMA3_VOCAB

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


PRESETS: dict[str, ModelPreset] = {
    # CPU presets for tests and the demo. head_dim 64: vLLM's CPU attention kernel rejects < 32.
    "tiny-1m": ModelPreset(128, 384, 4, 2, 2, params=984_192, reference_vocab=512),
    "tiny-8m": ModelPreset(256, 768, 8, 4, 4, params=7_082_240, reference_vocab=512),
    # The paper's sizes (marin experiments/data_efficiency); "150m" is the shape the megadocs paper
    # prints under "300M".
    "150m": ModelPreset(512, 1792, 6, 8, 8, params=154_147_328),
    "300m": ModelPreset(768, 2688, 12, 12, 12, params=299_649_792),
    "600m": ModelPreset(1024, 3584, 24, 16, 8, params=602_457_088),
    "1.5b": ModelPreset(1536, 5376, 36, 16, 8, params=1_540_732_416),
}


def parameter_count(preset: ModelPreset, vocab_size: int) -> int:
    """Parameters of the preset at `vocab_size`, computed from the shape (no model is built)."""
    h, head_dim = preset.hidden, preset.head_dim
    attention = h * preset.heads * head_dim * 2 + h * preset.kv_heads * head_dim * 2  # q,o + k,v
    mlp = 3 * h * preset.intermediate
    per_layer = attention + mlp + 2 * h  # two RMSNorms
    return preset.layers * per_layer + 2 * vocab_size * h + h  # untied embeddings + final norm


def by_size(names: Iterable[str]) -> list[str]:
    """``names`` with the presets among them smallest first, by parameter count (each at
    :data:`LLAMA3_VOCAB`: the shapes compared at one vocabulary, as one sweep's runs share one
    tokenizer), each in one of the places presets had; a name no preset has (a callable objective's
    own model, an unnamed base) keeps its place.

    >>> by_size(["1.5b", "custom", "150m", "300m"])
    ['150m', 'custom', '300m', '1.5b']
    """
    names = list(names)
    presets = iter(sorted((name for name in names if name in PRESETS),
                          key=lambda name: parameter_count(PRESETS[name], LLAMA3_VOCAB)))
    return [next(presets) if name in PRESETS else name for name in names]
