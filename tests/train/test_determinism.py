"""`train.device.set_determinism`: the policy's settings (what a CUDA run would switch on).

Only process flags are set here; nothing runs on a GPU. Whether the strict setting makes CUDA runs
bit-identical, and what it costs, is measured by `benchmarks/gpu_check.py --part correct`.
"""

from __future__ import annotations

import pytest
import torch
import torch._inductor.config as inductor_config

from megadocs.errors import UserError
from train.config import EXECUTION_FIELDS, RunConfig
from train.device import ENVIRONMENT_DEFAULTS, set_determinism

CUDA = torch.device("cuda")  # a device value only: set_determinism sets flags, it launches nothing


@pytest.fixture
def restore_flags():
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark, inductor_config.deterministic,
              torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)  # fmt: skip
    yield
    algorithms, warn_only, cudnn_deterministic, benchmark, inductor, tf32, cudnn_tf32 = before
    torch.use_deterministic_algorithms(algorithms, warn_only=warn_only)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn_deterministic, benchmark
    inductor_config.deterministic = inductor
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32, cudnn_tf32


def test_strict_raises_on_nondeterministic_ops_instead_of_warning(monkeypatch, restore_flags):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ENVIRONMENT_DEFAULTS["CUBLAS_WORKSPACE_CONFIG"])
    set_determinism(CUDA, strict=True)
    assert torch.are_deterministic_algorithms_enabled()
    assert not torch.is_deterministic_algorithms_warn_only_enabled()  # warn_only left flash's backward atomic
    assert torch.backends.cudnn.deterministic and inductor_config.deterministic
    set_determinism(CUDA, strict=False)
    assert not torch.are_deterministic_algorithms_enabled() and not inductor_config.deterministic


def test_strict_without_the_cublas_workspace_is_one_error(monkeypatch, restore_flags):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    with pytest.raises(UserError, match="deterministic: true needs CUBLAS_WORKSPACE_CONFIG"):
        set_determinism(CUDA, strict=True)
    set_determinism(torch.device("cpu"), strict=True)  # CPU needs nothing


def test_deterministic_is_an_execution_setting_on_by_default():
    assert "deterministic" in EXECUTION_FIELDS[""]  # never part of a run's identity
    assert RunConfig.model_validate({"data": {"store": "s"}}).deterministic is True
