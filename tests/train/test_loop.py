"""End-to-end training runs on a real (small) stdlib token store, on CPU."""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time

import pytest
import torch

from megadocs.config import parse_config
from megadocs.errors import UserError
from megadocs.formats import RunMetrics, RunStatus
from train.config import TRAINING_REVISION, RunConfig
from train.loop import Preempted, lr_factor, param_groups, run, train_step

pytestmark = pytest.mark.usefixtures("one_thread")


def _refuse(constant: str):
    raise AssertionError(f"non-standard JSON constant {constant}")


def mixture_of(config):
    from train.data import RunData

    return RunData.open(config).streams.mixture


def make_config(store, **overrides) -> RunConfig:
    data = {
        "data": {"store": str(store), "real_epochs": 1, "context": 64},
        "model": {"preset": "tiny-1m"},
        "optim": {"batch_size": 32, "micro_batch_size": 16, "lr": 3e-3, "warmup_fraction": 0.1},
        "eval": {"val_windows": 256},
        "checkpoint_every": 1000,
        "device": "cpu",
    }
    for key, value in overrides.items():
        section, _, field = key.partition("__")
        if field:
            data.setdefault(section, {})[field] = value
        else:
            data[key] = value
    return parse_config(data, RunConfig)


def test_lr_schedule_warms_up_linearly_then_decays_by_cosine_to_zero():
    total, warmup = 100, 10
    factors = [lr_factor(s, total_steps=total, warmup_steps=warmup) for s in range(total)]
    assert factors[:warmup] == pytest.approx([(s + 1) / warmup for s in range(warmup)])
    assert factors[warmup] == 1.0
    assert all(a >= b for a, b in zip(factors[warmup:], factors[warmup + 1 :]))
    assert factors[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 89 / 90)))
    assert lr_factor(total, total_steps=total, warmup_steps=warmup) == pytest.approx(0.0)
    assert lr_factor(0, total_steps=5, warmup_steps=0) == 1.0


def test_short_runs_still_warm_up_for_one_step():
    """round(0.01 * 40) = 0 left a 40-step run starting at the peak LR."""
    from train.loop import warmup_steps_for

    assert warmup_steps_for(40, 0.01) == 1
    assert warmup_steps_for(1000, 0.01) == 10
    assert warmup_steps_for(40, 0.0) == 0
    assert warmup_steps_for(1, 0.5) == 1


def test_paper_grid_point_m_09_batch_64_mixes_exactly_and_reports_windows(micro_store, tmp_path):
    """Done-when check of issue 12: m = 0.9 at batch 64 (57.6 synthetic rows per batch) takes
    ceil(real_windows * epochs / ((1 - m) * batch)) steps, and metrics.json reports the windows
    read and a realised share within 1/batch of 0.9."""
    from fractions import Fraction

    from tests.pools import write_rephrase_pool

    write_rephrase_pool(tmp_path / "pool", micro_store)
    config = make_config(micro_store, data__mixing_fraction=0.9,
                         data__synthetic={"pool": str(tmp_path / "pool"), "algorithm": "stitched", "g": 2},
                         optim__batch_size=64, optim__micro_batch_size=64, eval__val_windows=2)
    metrics = run(config, tmp_path / "run")
    mixture = mixture_of(config)
    real_windows = mixture.real_windows
    assert metrics.steps == math.ceil(real_windows * 1 / ((1 - Fraction("0.9")) * 64))
    windows = metrics.windows
    assert windows.real_per_epoch == real_windows and windows.real_seen == real_windows
    assert windows.synthetic_seen == math.ceil(real_windows * 9)
    assert abs(metrics.mixing_fraction_realised - 0.9) <= 1 / 64
    assert metrics.tokens_seen == 64 * (windows.real_seen + windows.synthetic_seen)
    assert metrics.status.value == "completed" and metrics.val_windows == {"iid": 2}
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["windows"] == windows.model_dump() and saved["mixing_fraction_realised"] == metrics.mixing_fraction_realised


def test_synthetic_only_run_takes_its_steps_from_synthetic_epochs(micro_store, tmp_path):
    """m = 1 (Figure 13): no real window is read; ceil(synthetic_windows * synthetic_epochs / B)
    steps, every synthetic window read synthetic_epochs times, realised share 1.0."""
    from tests.pools import write_rephrase_pool

    write_rephrase_pool(tmp_path / "pool", micro_store)
    config = make_config(micro_store, data__mixing_fraction=1.0, data__synthetic_epochs=2, data__real_epochs=5,
                         data__synthetic={"pool": str(tmp_path / "pool"), "algorithm": "stitched", "g": 2},
                         optim__batch_size=16, optim__micro_batch_size=16, eval__val_windows=2)
    metrics = run(config, tmp_path / "run")
    mixture = mixture_of(config)
    assert mixture.synthetic_windows > 16  # the stream holds more than one batch
    assert metrics.steps == mixture.total_steps == math.ceil(mixture.synthetic_windows * 2 / 16)
    assert metrics.windows.model_dump() == {"real_per_epoch": mixture.real_windows, "real_seen": 0,
                                            "synthetic_seen": 2 * mixture.synthetic_windows}
    assert metrics.mixing_fraction_realised == 1.0
    assert metrics.tokens_seen == 64 * 2 * mixture.synthetic_windows
    assert metrics.status.value == "completed" and math.isfinite(metrics.val_loss)


def test_micro_batches_accumulate_to_the_full_batch_gradient():
    from train.loss import MicroBatchLoss
    from train.model import build_model

    ids = torch.randint(0, 384, (6, 16))
    docs = torch.zeros_like(ids)
    results = []
    # 4 leaves a short micro-batch of 2: weighting by rows keeps the mean exact; 4 micro-batches of
    # 4 add two placeholders (a rank in step with one holding more rows) that change nothing
    for micro, count in ((6, None), (4, None), (4, 4)):
        model = build_model("tiny-1m", vocab_size=384, context=16, seed=0)
        optimizer = torch.optim.AdamW(param_groups(model, 0.1), lr=1e-3)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
        loss_module = MicroBatchLoss(model, implementation="chunked", document_mask=False)
        loss, norm = train_step(loss_module, optimizer, scheduler, ids, docs, micro_batch_size=micro, grad_clip=1e9,
                                micro_batches=count)
        results.append((loss, norm, model.lm_head.weight.detach().clone()))
    for loss, norm, weight in results[1:]:
        torch.testing.assert_close(loss, results[0][0])
        torch.testing.assert_close(norm, results[0][1])
        torch.testing.assert_close(weight, results[0][2])
    torch.testing.assert_close(results[2][2], results[1][2], rtol=0, atol=0)  # placeholders: exactly nothing
    with pytest.raises(ValueError, match="micro_batches=1: 6 rows at micro_batch_size=4 need 2"):
        train_step(loss_module, optimizer, scheduler, ids, docs, micro_batch_size=4, grad_clip=1e9,
                   micro_batches=1)  # fmt: skip


def test_weight_decay_follows_levanters_default_mask_and_is_configurable():
    """levanter's default mask decays the projections and the untied head, not the input
    embeddings or the norm scales; `optim.weight_decay_on` changes the set."""
    from train.model import build_model

    model = build_model("tiny-1m", vocab_size=384, context=16)
    decayed, kept = param_groups(model, 0.8)
    assert decayed["weight_decay"] == 0.8 and kept["weight_decay"] == 0.0
    assert "lm_head.weight" in decayed["names"] and "model.layers.0.mlp.down_proj.weight" in decayed["names"]
    assert "model.embed_tokens.weight" in kept["names"]
    assert all("norm" in name for name in kept["names"] if name != "model.embed_tokens.weight")
    assert len(decayed["params"]) + len(kept["params"]) == len(list(model.parameters()))
    everything, nothing = param_groups(model, 0.8, ["linear", "head", "embeddings", "norms"])
    assert not nothing["params"] and len(everything["params"]) == len(list(model.parameters()))
    config = parse_config({"data": {"store": "s"}, "optim": {"weight_decay_on": ["linear", "embeddings"]}}, RunConfig)
    decayed, _ = param_groups(model, 0.8, config.optim.weight_decay_on)
    assert "model.embed_tokens.weight" in decayed["names"] and "lm_head.weight" not in decayed["names"]
    with pytest.raises(UserError, match="weight_decay_on"):
        parse_config({"data": {"store": "s"}, "optim": {"weight_decay_on": ["linear", "linear"]}}, RunConfig)


def test_run_trains_evaluates_and_writes_a_loadable_run_directory(small_store, tmp_path, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = make_config(small_store, eval__extra={"again": {"store": str(small_store)}})
    out = tmp_path / "run"
    metrics = run(config, out)

    assert metrics.status == "completed"
    assert set(metrics.val_losses) == {"iid", "iid_short", "iid_long", "again"}
    assert metrics.val_loss == metrics.val_losses["iid"] == metrics.val_losses["again"]
    assert metrics.val_loss < math.log(384) - 1.0  # it learned something: well below uniform
    short, long_ = metrics.val_losses["iid_short"], metrics.val_losses["iid_long"]
    assert math.isfinite(short) and math.isfinite(long_) and short != long_
    assert metrics.config_hash == config.identity() == (out / "config_hash").read_text().strip()
    mixture = mixture_of(config)
    assert metrics.steps == mixture.total_steps > 10
    assert metrics.tokens_seen == 64 * sum(sum(mixture.batch_counts(s)) for s in range(mixture.total_steps))
    assert metrics.params == sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(out / "model").parameters())
    assert metrics.tokens_per_s > 0 and metrics.wall_time_s > 0
    # the 4 held-out documents hold 220 windows of 64: scored and reported, not silently capped
    assert metrics.val_windows == {"iid": 220, "again": 220} and metrics.val_windows_requested == 256
    assert "eval.val_windows: 256 windows requested" in capsys.readouterr().err
    assert metrics.windows.model_dump() == {"real_per_epoch": mixture.real_windows,
                                            "real_seen": mixture.real_windows, "synthetic_seen": 0}
    assert metrics.mixing_fraction_realised == 0.0
    assert RunMetrics.load(out / "metrics.json") == metrics
    json.loads((out / "metrics.json").read_text(), parse_constant=_refuse)  # standard JSON
    assert parse_config(__import__("yaml").safe_load((out / "config.yaml").read_text()), RunConfig) == config
    assert not (out / "checkpoint").exists()  # the finished run keeps only the model

    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == metrics.steps and log[-1]["lr"] == pytest.approx(0.0, abs=1e-4)
    assert log[0]["loss"] > log[-1]["loss"]

    # The saved model + tokenizer reproduce the validation loss in plain transformers.
    from train.data import ValidationSet
    from train.evaluate import evaluate_model

    model = AutoModelForCausalLM.from_pretrained(out / "model")
    tokenizer = AutoTokenizer.from_pretrained(out / "model")
    assert tokenizer.eos_token_id == model.config.eos_token_id
    validation = ValidationSet.build(small_store, context=64, max_windows=256)
    again = evaluate_model(model, validation, batch_size=16, device="cpu")
    assert again["iid"] == pytest.approx(metrics.val_loss, rel=1e-6)

    # Done means done: a second call returns the metrics without training.
    stamp = (out / "metrics.json").stat().st_mtime_ns
    assert run(config, out) == metrics
    assert (out / "metrics.json").stat().st_mtime_ns == stamp


def test_same_config_gives_bit_identical_metrics_on_cpu(small_store, tmp_path):
    config = make_config(small_store, data__document_mask=True, optim__micro_batch_size=8)
    first = run(config, tmp_path / "a")
    second = run(config, tmp_path / "b")
    assert first.val_losses == second.val_losses
    other_seed = run(config.model_copy(update={"seed": 1}), tmp_path / "c")
    assert other_seed.val_losses["iid"] != first.val_losses["iid"]


def test_absurd_learning_rate_ends_as_diverged_not_an_exception(small_store, tmp_path):
    metrics = run(make_config(small_store, optim__lr=1e30, optim__warmup_fraction=0.0), tmp_path / "run")
    assert metrics.status is RunStatus.DIVERGED and metrics.objective == math.inf
    assert metrics.val_loss is None and all(v is None for v in metrics.val_losses.values())
    assert metrics.steps < 30
    assert not (tmp_path / "run" / "model").exists()
    # standard JSON (no NaN/Infinity): the losses are null and the status says why
    written = json.loads((tmp_path / "run" / "metrics.json").read_text(), parse_constant=_refuse)
    assert written["status"] == "diverged" and written["val_loss"] is None
    log = [json.loads(line, parse_constant=_refuse) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["loss"] is None and log[-1]["diverged"] is True


def test_extra_set_with_another_tokenizer_is_refused(small_store, tiny_store, tmp_path):
    config = make_config(small_store, eval__extra={"other": {"store": str(tiny_store)}})
    with pytest.raises(UserError) as info:
        run(config, tmp_path / "run")
    assert str(info.value).startswith(f"eval.extra.other.store: {tiny_store} has tokenizer_hash")
    assert not (tmp_path / "run" / "log.jsonl").exists()  # refused before any training


def test_run_directory_of_another_config_is_refused(small_store, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config_hash").write_text("0123456789abcdef\n")
    recorded = {"identity": "0123456789abcdef", "training_revision": TRAINING_REVISION}
    (tmp_path / "run" / "identity.json").write_text(json.dumps(recorded))
    with pytest.raises(UserError, match="holds a run of identity 0123456789abcdef, not [0-9a-f]{16}"):
        run(make_config(small_store), tmp_path / "run")


def test_signal_saves_a_checkpoint_calls_the_previous_handler_and_resumes(small_store, tmp_path):
    """A real SIGUSR2 mid-run with a submitit-like handler installed before the run."""
    out = tmp_path / "run"
    calls = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: calls.append(signum))

    def send_when_training():
        while not (out / "log.jsonl").is_file() or not (out / "log.jsonl").read_text():
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGUSR2)

    config = make_config(small_store)
    sender = threading.Thread(target=send_when_training, daemon=True)
    sender.start()
    try:
        with pytest.raises(Preempted) as info:
            run(config, out)
    finally:
        signal.signal(signal.SIGUSR2, previous)
    sender.join(timeout=5)
    assert calls == [signal.SIGUSR2]  # handed on after saving
    assert (out / "checkpoint" / "state.pt").is_file() and not (out / "metrics.json").exists()
    stopped = info.value.step
    assert 10 <= stopped < mixture_of(config).total_steps
    state = torch.load(out / "checkpoint" / "state.pt", weights_only=True)  # no pickled objects
    assert state["step"] == stopped

    resumed = run(config, out)
    uninterrupted = run(config, tmp_path / "uninterrupted")
    assert resumed.val_losses == uninterrupted.val_losses
    assert resumed.steps == uninterrupted.steps and resumed.tokens_seen == uninterrupted.tokens_seen
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))  # no duplicated log lines across the resume


def test_benchmarks_are_scored_on_the_saved_model_when_requested(small_store, tmp_path):
    from tests.eval.conftest import DATA_DIR
    from train.downstream import evaluate_benchmarks

    config = make_config(small_store, eval__benchmarks=["piqa", "sciq"], eval__benchmark_data=str(DATA_DIR),
                         eval__benchmark_limit=3)
    metrics = run(config, tmp_path / "run")
    scores = metrics.benchmarks
    assert set(scores) == {"piqa", "sciq", "average"} and scores["piqa"].items == 3
    assert 0.0 <= scores["average"].acc <= 1.0
    direct = evaluate_benchmarks([tmp_path / "run" / "model"], ["piqa", "sciq"], data_dir=DATA_DIR, limit=3,
                                 device="cpu", batch_size=16)
    assert metrics.to_json()["benchmarks"] == json.loads(json.dumps(direct))


def test_unknown_benchmark_fails_before_training(small_store, tmp_path):
    with pytest.raises(UserError, match="eval.benchmarks: unknown task 'hellaswag'"):
        run(make_config(small_store, eval__benchmarks=["hellaswag"]), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_benchmark_data_that_lm_eval_cannot_load_fails_before_training(small_store, tmp_path):
    """A file whose first example is fine but whose later line is not JSON: lm-eval's loading (the
    final evaluation's) fails, and the run refuses it when it starts, naming the directory."""
    import shutil

    from tests.eval.conftest import DATA_DIR

    data = shutil.copytree(DATA_DIR, tmp_path / "benchmark-data")
    with (data / "piqa.jsonl").open("a") as f:
        f.write('{"goal": "cut off", "sol1"\n')
    config = make_config(small_store, eval__benchmarks=["piqa", "sciq"], eval__benchmark_data=str(data))
    with pytest.raises(UserError) as error:
        run(config, tmp_path / "run")
    message = str(error.value)
    assert message.startswith(f"eval.benchmark_data: {data}: ") and "piqa" in message and "\n" not in message
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("dry_run", [False, True])
def test_benchmarks_without_data_or_hub_are_refused_before_training(small_store, tmp_path, dry_run):
    """No eval.benchmark_data and no Hub (an empty Hugging Face cache): one line naming
    eval.benchmarks and eval.benchmark_data when the run starts (and in --dry-run), not after it
    trained. A subprocess, so that the Hub is off for sure."""
    import subprocess
    import sys

    import yaml

    config = make_config(small_store, eval__benchmarks=["piqa", "arc_easy"])
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    command = [sys.executable, "-m", "megadocs.cli", "train", str(path), "--out", str(tmp_path / "run")]
    result = subprocess.run(command + (["--dry-run"] if dry_run else []), capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("error: eval.benchmark_data: none given")
    assert "piqa.jsonl" in lines[0] and "arc_easy.jsonl" in lines[0]
    assert not (tmp_path / "run").exists()


def test_a_run_opens_each_token_store_once(micro_store, tmp_path, monkeypatch):
    """The training store and every extra held-out store are opened once, when the run starts,
    and that open store is what training, the periodic curve and the final evaluation read (they
    reopened it by path: three opens of each here)."""
    import shutil

    from train.store import TokenStore

    extra = tmp_path / "extra-store"
    shutil.copytree(micro_store, extra)
    opened = []
    real_open = TokenStore.open.__func__
    monkeypatch.setattr(TokenStore, "open", classmethod(lambda cls, path: opened.append(str(path))
                                                        or real_open(cls, path)))
    config = make_config(micro_store, optim__batch_size=16, optim__micro_batch_size=16,
                         eval__val_windows=8, eval__every=1, eval__curve_windows=4, eval__curve_extra=True,
                         eval__extra={"other": {"store": str(extra)}})  # fmt: skip
    metrics = run(config, tmp_path / "run")
    assert metrics.status is RunStatus.COMPLETED and set(metrics.val_windows) == {"iid", "other"}
    assert sorted(opened) == sorted([str(micro_store), str(extra)])


@pytest.mark.parametrize("held_out", [
    pytest.param({"data__context": 256, "eval__every": 0}, id="iid-split-shorter-than-a-window"),
    pytest.param({"eval__extra": {"other": {"split": "nosuch"}}}, id="extra-split-missing"),
    pytest.param({"data__context": 256, "eval__extra": {"other": {"split": "val"}}, "eval__every": 0},
                 id="extra-split-shorter-than-a-window"),
])
def test_a_held_out_set_that_cannot_be_scored_is_refused_before_training(micro_store, small_store, tmp_path,
                                                                        held_out):
    """The final evaluation reads the iid split and every eval.extra split; one that has no full
    window of data.context tokens (a val split of one short document), or is missing, is refused
    when the run starts, not after every step has been trained (nor only when the periodic curve
    reads it)."""
    from train.store import prepare

    store = micro_store  # its val split holds 136 tokens with EOS
    extra = held_out.get("eval__extra")
    if extra:  # the extra store: micro_store's documents, data.store: small_store's (a longer val split)
        store = small_store
        other = prepare("stdlib", tmp_path / "short", tokenizer=small_store / "tokenizer", val_docs=1, max_docs=4)
        held_out = {**held_out, "eval__extra": {"other": {**extra["other"], "store": str(other.path)}}}
    config = make_config(store, optim__batch_size=4, optim__micro_batch_size=4, **held_out)
    with pytest.raises(UserError, match="split 'nosuch' not in the store|split 'val' .* holds no full window of 256"):
        run(config, tmp_path / "run")
    assert not (tmp_path / "run" / "log.jsonl").exists()  # refused before any training
    assert not (tmp_path / "run" / "checkpoint").exists()


def test_a_run_directory_resumed_with_a_changed_config_is_refused_naming_the_field(micro_store, tmp_path):
    """RUN of one config, met again by another (a changed --set, or an edited YAML): refused in one
    line that names what changed and both values, whether RUN is finished or holds a checkpoint; a
    changed execution setting (the micro-batch) is the same run."""
    config = make_config(micro_store, optim__batch_size=16, optim__micro_batch_size=16, eval__val_windows=8,
                         eval__every=0)  # fmt: skip
    out = tmp_path / "run"
    metrics = run(config, out)
    changed_lr = config.model_copy(update={"optim": config.optim.model_copy(update={"lr": 0.001})})
    with pytest.raises(UserError) as finished:
        run(changed_lr, out)
    message = str(finished.value)
    assert "\n" not in message and message.startswith(f"{out}: holds a run of identity {metrics.config_hash}, not ")
    assert "optim.lr" in message and "0.003" in message and "0.001" in message, message
    assert RunMetrics.load(out / "metrics.json") == metrics  # nothing lost

    (out / "metrics.json").unlink()  # as a run stopped between checkpoints leaves RUN
    changed_seed = config.model_copy(update={"data": config.data.model_copy(update={"seed": 3})})
    with pytest.raises(UserError, match=r"data\.seed") as resumed:
        run(changed_seed, out)
    assert "optim" not in str(resumed.value)  # only what changed is named
    micro = config.model_copy(update={"optim": config.optim.model_copy(update={"micro_batch_size": 8})})
    assert run(micro, out).config_hash == metrics.config_hash


@pytest.mark.parametrize("inside", [False, True], ids=["a-file", "under-a-file"])
def test_a_run_directory_that_is_a_file_is_one_line_naming_it(micro_store, tmp_path, inside):
    """``--out`` naming a file (or a folder under one): one line naming the path, not mkdir's traceback."""
    taken = tmp_path / "taken"
    taken.write_text("not a run\n")
    out = taken / "run" if inside else taken
    with pytest.raises(UserError) as refused:
        run(make_config(micro_store, optim__batch_size=16, optim__micro_batch_size=16), out)
    message = str(refused.value)
    assert message.startswith(f"{out}: ") and "not a directory" in message and "\n" not in message, message
    assert taken.read_text() == "not a run\n"
