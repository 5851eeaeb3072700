"""`train.attention` and `data.document_mask`: packed position ids equal the dense reference mask."""

from __future__ import annotations

import pytest
import torch

import train.config
from megadocs.config import config_hash, parse_config
from megadocs.errors import UserError
from train.attention import (
    FLEX,
    attention_backend,
    attention_units,
    dense_unit_mask,
    masked_attention_backend,
    packed_position_ids,
)
from train.config import ATTENTION_SETTINGS, DocumentMask, RunConfig
from train.model import build_model

EOS = 0


def test_units_document_follows_document_ids_and_segment_opens_after_every_eos():
    # one stitched megadoc (two segments joined by EOS), then the next document
    ids = torch.tensor([[5, 6, EOS, 7, 8, EOS, 9, 9]])
    documents = torch.tensor([[3, 3, 3, 3, 3, 3, 4, 4]])
    document = attention_units(ids, documents, DocumentMask.DOCUMENT, eos_id=EOS)
    segment = attention_units(ids, documents, DocumentMask.SEGMENT, eos_id=EOS)
    assert document.tolist() == [[0, 0, 0, 0, 0, 0, 1, 1]]
    assert segment.tolist() == [[0, 0, 0, 1, 1, 1, 2, 2]]  # the EOS ends its segment (levanter)
    assert attention_units(ids, documents, DocumentMask.OFF, eos_id=EOS) is None
    assert packed_position_ids(segment).tolist() == [[0, 1, 2, 0, 1, 2, 0, 1]]


def _random_window(generator, batch: int, length: int, vocab: int):
    ids = torch.randint(1, vocab, (batch, length), generator=generator)
    ids[torch.rand(batch, length, generator=generator) < 0.08] = EOS
    ends = torch.rand(batch, length, generator=generator) < 0.05
    documents = ends.long().cumsum(dim=1) + 10
    return ids, documents


@pytest.mark.parametrize("mode", [DocumentMask.DOCUMENT, DocumentMask.SEGMENT])
def test_packed_position_ids_give_the_dense_reference_mask_logits(mode):
    model = build_model("tiny-1m", vocab_size=128, context=96, seed=0, eos_id=EOS)
    ids, documents = _random_window(torch.Generator().manual_seed(0), 3, 96, 128)
    units = attention_units(ids, documents, mode, eos_id=EOS)
    assert units[:, -1].min() >= 2  # several units per row: the mask matters
    with torch.no_grad():
        dense = model(input_ids=ids, attention_mask=dense_unit_mask(units), use_cache=False).logits
        packed = model(input_ids=ids, position_ids=packed_position_ids(units), use_cache=False).logits
        unmasked = model(input_ids=ids, use_cache=False).logits
    torch.testing.assert_close(packed, dense, rtol=1e-4, atol=1e-4)
    assert (unmasked - dense).abs().max() > 1e-2  # and off is different


def _config(store="s", **data):
    return parse_config({"data": {"store": str(store), **data}}, RunConfig)


def test_old_boolean_configs_load_as_before_and_keep_their_identity(small_store, monkeypatch):
    assert _config(document_mask=True).data.document_mask is DocumentMask.DOCUMENT
    assert _config(document_mask=False).data.document_mask is DocumentMask.OFF
    hashed = []  # what the identity hashes: the old modes keep the bool the field used to be
    monkeypatch.setattr(train.config, "config_hash", lambda data: hashed.append(data) or config_hash(data))
    identities = {mode: _config(small_store, document_mask=mode).identity() for mode in ("off", "document", "segment")}
    assert [data["config"]["data"]["document_mask"] for data in hashed] == [False, True, "segment"]
    assert len(set(identities.values())) == 3
    assert _config(small_store, document_mask=True).identity() == identities["document"]


def test_unknown_document_mask_is_one_error_naming_the_field():
    with pytest.raises(UserError, match=r"data\.document_mask.*off \| document \| segment"):
        _config(document_mask="eos")


@pytest.mark.parametrize("setting", ATTENTION_SETTINGS)
def test_attention_setting_resolves_per_device_mask_and_determinism(setting):
    """`attention:` -> the kernels a run uses: FlexAttention on CUDA (measured faster than SDPA's
    deterministic flash backward), SDPA when not deterministic or off CUDA, flex refused off CUDA.
    A torch.device("cuda") object needs no GPU, so the CUDA choices are checked here too."""
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    for mask in DocumentMask:
        if setting == "flex":
            with pytest.raises(UserError, match="attention: flex needs CUDA"):
                attention_backend(setting, cpu, mask)
        else:
            assert attention_backend(setting, cpu, mask) == "sdpa"
        for deterministic in (True, False):
            got = attention_backend(setting, cuda, mask, deterministic=deterministic)
            if setting != "auto":
                assert got == (FLEX if setting == "flex" else "sdpa")
            elif mask is not DocumentMask.OFF:
                assert got == masked_attention_backend(cuda)  # packed units: never a dense mask
            else:
                assert got == (FLEX if deterministic else "sdpa")
    with pytest.raises(UserError, match="attention: unknown"):
        attention_backend("flash", cuda, DocumentMask.OFF)
