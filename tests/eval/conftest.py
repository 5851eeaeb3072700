"""Fixtures for ensemble and benchmark tests: tiny real Llama models on the shared tiny token store.

Members are randomly initialised (training is not what these tests check) with a scaled output
head so that their logits differ clearly; they use the store's real BPE tokenizer.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

DATA_DIR = Path(__file__).parent / "data"
CONTEXT = 64


def make_tiny_model(out: Path, tokenizer, *, seed: int, vocab_size: int | None = None) -> Path:
    """Save the project's tiny-1m model (seeded init) and ``tokenizer`` under ``out``."""
    import torch

    from train.model import build_model

    model = build_model(
        "tiny-1m", vocab_size=vocab_size or len(tokenizer), context=CONTEXT, seed=seed,
        eos_id=tokenizer.eos_token_id,
    )
    with torch.no_grad():  # a fresh init gives near-uniform logits; make members disagree visibly
        model.lm_head.weight.mul_(20.0)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def store_tokenizer(tiny_store):
    from train.store import TokenStore

    return TokenStore.open(tiny_store).tokenizer()


@pytest.fixture(scope="session")
def tiny_members(tmp_path_factory, tiny_store, store_tokenizer) -> list[Path]:
    """Three members: two run directories (RUN/model + RUN/config.yaml), one plain HF directory."""
    root = tmp_path_factory.mktemp("members")
    members = []
    for seed in range(2):
        run = root / f"run{seed}"
        make_tiny_model(run / "model", store_tokenizer, seed=seed)
        config = {"data": {"store": str(tiny_store), "context": CONTEXT}, "eval": {"val_windows": 12}, "seed": seed}
        (run / "config.yaml").write_text(yaml.safe_dump(config))
        members.append(run)
    members.append(make_tiny_model(root / "hf2", store_tokenizer, seed=2))
    return members


@pytest.fixture(scope="session")
def validation_set(tiny_store):
    """12 real validation windows, half of them holding short-document tokens (both halves > 0)."""
    import torch

    from train.data import ValidationSet

    full = ValidationSet.build(tiny_store, split="val", context=CONTEXT)
    has_short = (~full.is_long_token[:, 1:]).any(dim=1)
    picked = torch.cat([torch.nonzero(has_short)[:6, 0], torch.nonzero(~has_short)[:6, 0]])
    assert len(picked) == 12, "the tiny store should have short and long validation documents"
    return ValidationSet(full.input_ids[picked], full.document_ids[picked], full.is_long_document, full.split)
