"""What a researcher finds around one tiny run: a validation curve, TensorBoard events, a W&B
offline run, provenance, a Hugging Face model card, and a model lm-eval's own CLI can score."""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from megadocs.config import parse_config
from train.config import RunConfig

CURVE_EVERY = 5
CERTIFICATION = "stitched-g4"


def _config(store, **tracking) -> RunConfig:
    return parse_config({
        "data": {"store": str(store), "real_epochs": 1, "context": 64},
        "optim": {"batch_size": 32, "micro_batch_size": 16, "warmup_fraction": 0.1},
        "eval": {"val_windows": 128, "every": CURVE_EVERY, "curve_windows": 32},
        "checkpoint_every": 1000,
        "device": "cpu",
        "tracking": tracking,
    }, RunConfig)  # fmt: skip


@pytest.fixture(scope="module")
def tracked_run(small_store, tmp_path_factory):
    """One finished run with W&B offline, as SLURM job 4242 would run it."""
    from train.loop import run

    pytest.importorskip("wandb")
    out = tmp_path_factory.mktemp("tracked") / "run"
    config = _config(small_store, wandb={"mode": "offline", "project": "megadocs-test"}, group=CERTIFICATION)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    os.environ["SLURM_JOB_ID"] = "4242"
    try:
        metrics = run(config, out).to_json()
    finally:
        del os.environ["SLURM_JOB_ID"]
        torch.set_num_threads(threads)
    return out, config, metrics


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_trackers_and_curve_settings_do_not_change_the_run_identity(small_store):
    plain = _config(small_store)
    tracked = _config(small_store, wandb={"mode": "offline"}, group="x", tensorboard=False)
    assert tracked.identity() == plain.identity()
    assert plain.model_copy(update={"eval": plain.eval.model_copy(update={"every": 0})}).identity() == plain.identity()


@pytest.mark.parametrize(("every", "total", "expected"), [("10/run", 1000, 100), ("10/run", 95, 10),
                                                          ("3/run", 95, 40), (7, 95, 7), (0, 95, 0), ("0/run", 95, 0)])
def test_eval_every_takes_steps_or_a_count_per_run_aligned_to_log_lines(every, total, expected):
    from train.config import EvalConfig

    assert EvalConfig(every=every).every_steps(total, align=10) == expected


@pytest.mark.parametrize("every", ["10", "ten/run", "5/epoch", -3])
def test_eval_every_refuses_other_forms_naming_the_field(small_store, every):
    from megadocs.errors import UserError

    with pytest.raises(UserError, match=rf"^run\.yaml: eval\.every: expected .*, got {re.escape(repr(every))}$"):
        parse_config({"data": {"store": str(small_store)}, "eval": {"every": every}}, RunConfig, source="run.yaml")


def test_a_run_logs_a_periodic_validation_curve_on_the_fixed_windows(tracked_run):
    from train.data import ValidationSet
    from train.evaluate import evaluate_model

    out, config, metrics = tracked_run
    log = _log(out)
    curve = [line for line in log if "val_losses" in line]
    assert [line["step"] for line in curve] == list(range(CURVE_EVERY, metrics["steps"], CURVE_EVERY))
    assert all(line["eval_s"] > 0 and set(line["val_losses"]) == {"iid"} for line in curve)
    assert curve[0]["val_losses"]["iid"] > curve[-1]["val_losses"]["iid"]  # it learns
    steps = [line["step"] for line in log]
    assert steps == sorted(set(steps))  # one line per step: curve points share the training line
    # The curve's windows are the first curve_windows of the final windows: the final model on
    # those windows is the curve's would-be next point (and differs from the mid-run ones).
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out / "model")
    windows = ValidationSet.build(config.data.store, context=64, max_windows=32)
    final_on_curve_windows = evaluate_model(model, windows, batch_size=16, device="cpu", halves=False)["iid"]
    assert final_on_curve_windows < curve[0]["val_losses"]["iid"]


def test_tensorboard_events_hold_the_training_and_validation_curves(tracked_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, _, metrics = tracked_run
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    log = _log(out)
    train = [(e.step, e.value) for e in events.Scalars("train/loss")]
    assert train == [(line["step"], pytest.approx(line["loss"], rel=1e-6)) for line in log]
    val = [(e.step, e.value) for e in events.Scalars("val/iid")]
    expected = [(line["step"], line["val_losses"]["iid"]) for line in log if "val_losses" in line]
    expected.append((metrics["steps"], metrics["val_loss"]))  # the final evaluation closes the curve
    assert val == [(step, pytest.approx(loss, rel=1e-6)) for step, loss in expected]
    assert "iid_long" in "".join(events.Tags()["scalars"])
    assert CERTIFICATION in events.Tensors("group/text_summary")[0].tensor_proto.string_val[0].decode()


def test_tensorboard_hparams_name_what_the_run_is(tracked_run):
    """TensorBoard's HParams tab lists each run by its hyperparameters and certification, not only
    by its hash directory (issue 34)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import metadata

    out, config, _ = tracked_run
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    content = events.PluginTagToContent(metadata.PLUGIN_NAME)
    start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    hparams = {name: value.WhichOneof("kind") and getattr(value, value.WhichOneof("kind"))
               for name, value in start.hparams.items()}
    assert hparams["lr"] == pytest.approx(config.optim.lr) and hparams["real_epochs"] == 1
    assert hparams["group"] == CERTIFICATION and hparams["algorithm"] == "real" and hparams["context"] == 64
    experiment = metadata.parse_experiment_plugin_data(content[metadata.EXPERIMENT_TAG])
    assert "val/iid" in {m.name.tag for m in experiment.metric_infos}


def test_wandb_offline_run_directory_is_written_and_grouped(tracked_run):
    out, config, _ = tracked_run
    identity = config.identity()
    runs = list((out / "wandb").glob(f"offline-run-*-{identity}"))
    assert len(runs) == 1, sorted(p.name for p in (out / "wandb").iterdir())
    records = (runs[0] / f"run-{identity}.wandb").read_bytes()
    assert b"val/iid" in records and b"train/loss" in records and CERTIFICATION.encode() in records


def test_provenance_is_recorded_in_the_run_directory(tracked_run):
    import transformers

    out, _, _ = tracked_run
    record = json.loads((out / "provenance.json").read_text())
    repo = Path(__file__).resolve().parents[2]
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True)
    assert record["git_commit"] == head.stdout.strip() and isinstance(record["git_dirty"], bool)
    assert record["torch_version"] == torch.__version__
    assert record["transformers_version"] == transformers.__version__
    assert "vllm_version" in record
    assert record["host"] == socket.gethostname() and record["device"].startswith("cpu")
    assert record["command"] == shlex.join(sys.argv) and record["slurm_job_id"] == "4242"


def test_provenance_keeps_earlier_attempts_and_never_imports_vllm(tmp_path):
    code = ("import sys; from megadocs.provenance import write; write(sys.argv[1]); write(sys.argv[1]); "
            "import json; r = json.load(open(sys.argv[1] + '/provenance.json')); "
            "assert 'vllm' not in sys.modules; print(len(r['previous_attempts']))")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                          env={**os.environ, "SLURM_ARRAY_JOB_ID": "7", "SLURM_ARRAY_TASK_ID": "3"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1"
    assert json.loads((tmp_path / "provenance.json").read_text())["slurm_job_id"] == "7_3"


def test_the_model_directory_has_a_hugging_face_model_card(tracked_run):
    from huggingface_hub import ModelCard

    out, config, metrics = tracked_run
    card = ModelCard.load(out / "model" / "README.md")
    assert card.data.library_name == "transformers"
    results = {r.dataset_type: r.metric_value for r in card.data.eval_results}
    assert results == {name: pytest.approx(loss, abs=1e-6) for name, loss in metrics["val_losses"].items()}
    text = card.text
    assert f"{metrics['params']:,} parameters" in text and "`tiny-1m`" in text
    assert f"| lr (peak) | {config.optim.lr:g} |" in text and "| real epochs | 1 |" in text
    assert "none (real data only)" in text and f"**{CERTIFICATION}**" in text
    assert json.loads((out / "provenance.json").read_text())["git_commit"] in text


def test_lm_eval_cli_scores_the_run_model_on_a_local_task(tracked_run, tmp_path):
    """The standard `lm_eval --model hf --model_args pretrained=RUN/model` (needs accelerate)."""
    lm_eval = Path(sys.executable).with_name("lm_eval")
    if not lm_eval.exists():
        pytest.skip("lm-eval is not installed (pip install 'megadocs[eval]')")
    out, _, _ = tracked_run
    data = Path(__file__).parents[1] / "eval" / "data" / "sciq.jsonl"
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "local_sciq.yaml").write_text(
        "task: local_sciq\n"
        "dataset_path: json\n"
        f"dataset_kwargs: {{data_files: {{test: {data}}}}}\n"
        "output_type: multiple_choice\n"
        "test_split: test\n"
        'doc_to_text: "{{support}}\\nQuestion: {{question}}\\nAnswer:"\n'
        "doc_to_target: 3\n"
        'doc_to_choice: "{{[distractor1, distractor2, distractor3, correct_answer]}}"\n'
        "metric_list:\n  - metric: acc\n"
    )
    results = tmp_path / "results"
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(
        [str(lm_eval), "--model", "hf", "--model_args", f"pretrained={out / 'model'},dtype=float32",
         "--tasks", "local_sciq", "--include_path", str(tasks), "--device", "cpu", "--batch_size", "4",
         "--output_path", str(results)],
        capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    [result_file] = results.rglob("results_*.json")
    scores = json.loads(result_file.read_text())["results"]["local_sciq"]
    assert 0.0 <= scores["acc,none"] <= 1.0
    assert json.loads(result_file.read_text())["n-samples"]["local_sciq"]["effective"] == 4


def test_wandb_online_without_credentials_is_one_line_naming_the_field(small_store, tmp_path, monkeypatch):
    """W&B online with no API key (a node never `wandb login`-ed): the field and what to do, in one
    line, instead of wandb's traceback; a W&B server that cannot be reached is a failure to retry."""
    wandb = pytest.importorskip("wandb")
    from megadocs.errors import UserError, WorkFailed
    from train.tracking import Tracker

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))  # no key stored for this user either
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    config = _config(small_store, wandb={"mode": "online"}, tensorboard=False)
    with pytest.raises(UserError) as refused:
        Tracker.open(config, tmp_path / "run", identity="0123456789abcdef", start_step=0)
    message = str(refused.value)
    assert message.startswith("tracking.wandb: ") and "\n" not in message
    assert "wandb login" in message and "mode: offline" in message

    def unreachable(**kwargs):  # MOCK: a W&B server that does not answer (this machine has no internet)
        raise wandb.errors.CommError("Network error (ConnectionError), entering retry loop")

    monkeypatch.setattr(wandb, "init", unreachable)
    with pytest.raises(WorkFailed, match=r"^tracking\.wandb: .*Network error.*re-run"):
        Tracker.open(config, tmp_path / "run", identity="0123456789abcdef", start_step=0)
