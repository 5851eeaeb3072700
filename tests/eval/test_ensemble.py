"""Logit-averaged ensemble losses: hand computation, agreement with single-model evaluation,
streaming == cached, vocabulary checks and the `megadocs train ensemble` command."""

from __future__ import annotations

import argparse
import json
import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from megadocs.errors import UserError
from tests.eval.conftest import DATA_DIR, make_tiny_model
from train.ensemble import resident_members_for_budget, resolve_model_dir
from train.ensemble_eval import ensemble_losses
from train.ensemble_report import EnsembleReport
from train.evaluate import evaluate_model


def _logits(member, input_ids):
    model = AutoModelForCausalLM.from_pretrained(resolve_model_dir(member), dtype=torch.float32).eval()
    with torch.no_grad():
        return model(input_ids=input_ids).logits.double()  # [N, C, V]


def test_two_member_loss_is_cross_entropy_of_mean_logits(tiny_members, validation_set):
    ids = validation_set.input_ids
    first, second = _logits(tiny_members[0], ids), _logits(tiny_members[1], ids)
    targets = ids[:, 1:]  # [N, C-1]

    # a target token is in the long half when its document is longer than the split's median
    long_target = validation_set.is_long_document[validation_set.document_ids][:, 1:]

    def hand_loss(logits, select=None):  # -log softmax(logits)[target], averaged over tokens
        logits = logits[:, :-1]
        picked = logits.gather(-1, targets[..., None])[..., 0]
        losses = torch.logsumexp(logits, dim=-1) - picked  # [N, C-1]
        return float(losses.mean() if select is None else losses[select].mean())

    mean_logits = (first + second) / 2
    rows = ensemble_losses(tiny_members[:2], validation_set, device="cpu", batch_size=5)

    assert [row["k"] for row in rows] == [1, 2]
    assert rows[0]["loss"] == pytest.approx(hand_loss(first), rel=1e-5)
    assert rows[1]["loss"] == pytest.approx(hand_loss(mean_logits), rel=1e-5)
    assert rows[1]["loss_long"] == pytest.approx(hand_loss(mean_logits, long_target), rel=1e-5)
    assert rows[1]["loss_short"] == pytest.approx(hand_loss(mean_logits, ~long_target), rel=1e-5)
    expected = hand_loss(mean_logits)
    # averaging probabilities instead of logits gives a measurably different number
    probability_mean = (first.softmax(-1) + second.softmax(-1)) / 2
    probability_loss = float(-probability_mean[:, :-1].gather(-1, targets[..., None]).log().mean())
    assert abs(probability_loss - expected) > 1e-3


def test_k1_equals_the_trainers_single_model_evaluation(tiny_members, validation_set):
    model = AutoModelForCausalLM.from_pretrained(resolve_model_dir(tiny_members[0]), dtype=torch.float32)
    single = evaluate_model(model, validation_set, batch_size=4, device="cpu")
    row = ensemble_losses(tiny_members[:1], validation_set, device="cpu", batch_size=4)[0]

    assert row["loss"] == pytest.approx(single["iid"], rel=1e-12)
    assert row["loss_short"] == pytest.approx(single["iid_short"], rel=1e-12)
    assert row["loss_long"] == pytest.approx(single["iid_long"], rel=1e-12)
    assert row["loss_short"] != pytest.approx(row["loss_long"], rel=1e-6)  # both halves are populated


@pytest.mark.parametrize("resident", [1, 2])
def test_streaming_equals_cached_exactly(tiny_members, validation_set, resident):
    cached = ensemble_losses(tiny_members, validation_set, device="cpu", batch_size=4, max_resident_members=3)
    streamed = ensemble_losses(
        tiny_members, validation_set, device="cpu", batch_size=4, max_resident_members=resident
    )
    assert streamed == cached
    losses = [row["loss"] for row in cached]
    assert len(set(losses)) == 3 and all(math.isfinite(x) for x in losses)


def test_halves_can_be_left_out(tiny_members, validation_set):
    rows = ensemble_losses(tiny_members[:1], validation_set, device="cpu", halves=False)
    assert set(rows[0]) == {"k", "members", "loss"}


def test_member_with_another_vocabulary_is_refused(tmp_path, tiny_members, validation_set, store_tokenizer):
    odd = make_tiny_model(tmp_path / "odd", store_tokenizer, seed=0, vocab_size=len(store_tokenizer) + 8)
    (odd / "tokenizer.json").unlink()  # a bare HF model dir: only its vocab_size can be compared
    (odd / "tokenizer_config.json").unlink()

    with pytest.raises(UserError) as error:
        ensemble_losses([tiny_members[0], odd], validation_set, device="cpu")
    message = str(error.value)
    assert "\n" not in message and str(odd) in message and "vocab_size" in message


def test_member_with_another_tokenizer_is_refused(tmp_path, tiny_members, validation_set):
    """Same vocabulary size, two token ids swapped: the logits no longer mean the same tokens."""
    import shutil

    other = tmp_path / "swapped"
    shutil.copytree(resolve_model_dir(tiny_members[1]), other)
    data = json.loads((other / "tokenizer.json").read_text())
    vocab = data["model"]["vocab"]
    a, b = sorted(vocab, key=vocab.get)[300:302]
    vocab[a], vocab[b] = vocab[b], vocab[a]
    (other / "tokenizer.json").write_text(json.dumps(data))

    with pytest.raises(UserError, match="tokenizer differs"):
        ensemble_losses([tiny_members[0], other], validation_set, device="cpu")


def test_not_a_model_directory_names_the_path(tmp_path, validation_set):
    with pytest.raises(UserError, match=str(tmp_path)):
        ensemble_losses([tmp_path], validation_set, device="cpu")


@pytest.mark.parametrize(("damaged", "content", "says"), [
    ("config.json", b"{cut sh", "not a model config (invalid JSON"),
    ("config.json", b"\xff\xfe", "not a model config (invalid JSON"),
    ("config.json", b"[1]", "not a model config (a JSON list"),
    ("config.json", b'{"vocab_size": "big"}', "vocab_size: expected an integer, got 'big'"),
    ("model.safetensors", b"garbage", "not readable safetensors weights"),
])
def test_a_member_whose_model_files_are_damaged_is_one_line_naming_the_file(tiny_members, tmp_path, capsys, damaged,
                                                                            content, says):
    """`train ensemble` on a member whose config.json or weights were cut short or overwritten raised
    JSONDecodeError or safetensors' SafetensorError in a traceback."""
    import shutil

    from megadocs.cli import main

    member = tmp_path / "hf"
    shutil.copytree(resolve_model_dir(tiny_members[2]), member)
    (member / damaged).write_bytes(content)
    assert main(["train", "ensemble", "--members", str(tiny_members[0]), str(member), "--windows", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {member / damaged}: {says}"), err


def test_resident_members_follow_the_memory_budget(tiny_members, monkeypatch):
    import train.ensemble as ensemble

    dirs = [resolve_model_dir(m) for m in tiny_members]
    member_bytes = max(ensemble._weights_bytes(d) for d in dirs)
    logits_bytes = 2 * 4 * 64 * 100 * 4
    device = torch.device("cpu")

    def budget_for(members: float):
        monkeypatch.setattr(ensemble, "available_memory_bytes", lambda _: (logits_bytes + members * member_bytes) * 2)
        return resident_members_for_budget(dirs, device, batch_size=4, context=64, vocab_size=100)

    assert budget_for(0.2) == 1  # never below one
    assert budget_for(2.5) == 2
    assert budget_for(100) == 3  # never more than the members


def test_cli_prints_saves_and_resumes_the_curve(tiny_members, tiny_store, tmp_path, capsys, monkeypatch):
    from megadocs.cli import main

    out = tmp_path / "ensemble.json"
    command = ["train", "ensemble", "--members", *map(str, tiny_members), "--windows", "4",
               "--max-resident", "1", "--device", "cpu", "--json", str(out)]
    assert main(command) == 0

    report = json.loads(out.read_text())
    rows = report["sets"]["iid"]["by_k"]  # the members' data.store is the iid set
    assert report["sets"]["iid"]["source"] == {"store": str(tiny_store), "split": "val"}
    assert [row["k"] for row in rows] == [1, 2, 3]
    assert {"loss_short", "loss_long"} <= set(rows[0])
    assert f"{rows[2]['loss']:.4f}" in capsys.readouterr().out

    # re-run: the finished set is reused; a new named set and the benchmarks are added
    command += ["--val", str(tiny_store), f"again={tiny_store}", "--benchmarks", "piqa",
                "--benchmark-data", str(DATA_DIR), "--benchmark-limit", "2"]
    assert main(command) == 0
    captured = capsys.readouterr()
    assert "iid: reusing the losses" in captured.err
    report = json.loads(out.read_text())
    assert report["sets"]["iid"]["by_k"] == rows
    again = report["sets"]["again"]["by_k"]
    assert [row["loss"] for row in again] == [row["loss"] for row in rows]
    assert "loss_short" not in again[0]  # halves only for the iid set
    assert report["benchmarks"]["scores"]["piqa"]["items"] == 2
    assert "average" in captured.out

    # the same request again: the stored scores are read back as records and reused, the file unchanged
    written = out.read_bytes()
    monkeypatch.setattr("train.downstream.evaluate_benchmarks", _not_called)
    assert main(command) == 0
    assert out.read_bytes() == written
    parsed = EnsembleReport.parse(json.loads(written), source=out).benchmarks
    assert parsed.request.tasks == ["piqa"] and parsed.request.limit == 2
    assert parsed.scores["piqa"].items == 2 and f"{parsed.scores['average'].acc:.4f}" in capsys.readouterr().out


def _not_called(*args, **kwargs):
    raise AssertionError("benchmarks evaluated again for the same request")


def test_cli_needs_a_validation_store_for_bare_hf_members(tiny_members, capsys):
    from megadocs.cli import main

    status = main(["train", "ensemble", "--members", str(tiny_members[2]), "--context", "64"])
    assert status == 2
    assert "--val" in capsys.readouterr().err


def test_cli_refuses_two_sets_with_one_name(tiny_members, tiny_store, capsys):
    from megadocs.cli import main

    status = main(["train", "ensemble", "--members", str(tiny_members[0]),
                   "--val", f"a={tiny_store}", f"a={tiny_store}"])
    assert status == 2
    assert "--val: two sets are named 'a'" in capsys.readouterr().err


@pytest.mark.parametrize(("field", "value"), [("context", 32), ("document_mask", "document")])
def test_cli_refuses_members_trained_at_another_context_or_mask(tiny_members, tmp_path, capsys, field, value):
    """The ensemble is scored at the first member's context and mask; a member trained otherwise
    would be scored outside its training (e.g. past its context) without a word."""
    import shutil

    import yaml

    from megadocs.cli import main

    other = tmp_path / "other"
    shutil.copytree(tiny_members[1], other)
    config = yaml.safe_load((other / "config.yaml").read_text())
    config["data"][field] = value
    (other / "config.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", "ensemble", "--members", str(tiny_members[0]), str(other)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --members: {other} was trained with data.{field} {value}")
    assert err.count("\n") == 1


def _commands_with_members() -> dict[str, argparse.ArgumentParser]:
    """The `megadocs train` commands that take --members (ensemble, benchmarks), and their parsers."""
    from megadocs.cli import build_parser

    [groups] = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    [commands] = [a for a in groups.choices["train"]._actions if isinstance(a, argparse._SubParsersAction)]
    found = {name: parser for name, parser in commands._name_parser_map.items()  # choices: any word (a CONFIG.yaml)
             if any("--members" in action.option_strings for action in parser._actions)}
    assert len(found) >= 2, found
    return found


@pytest.mark.parametrize("command", _commands_with_members())
def test_cli_refuses_a_member_listed_twice_naming_both_positions(command, tiny_members, capsys):
    from megadocs.cli import main

    run, other = tiny_members[0], tiny_members[2]
    assert main(["train", command, "--members", str(run), str(other), str(run / "model")]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: --members: members 1 and 3 are one model ({run} and {run / 'model'}); an ensemble's "
                   "members are distinct models\n")


@pytest.mark.parametrize("command", _commands_with_members())
@pytest.mark.parametrize(("flag", "value", "problem"), [("--members", "nope", "nope: not a model directory"),
                                                        ("--benchmarks", "bogus", "unknown task 'bogus'")])
def test_a_bad_member_or_task_is_named_by_the_flag_typed(command, flag, value, problem, capsys):
    """`train benchmarks --benchmarks bogus` said '--tasks: unknown task', `--models nope` '--members: ...':
    its fields are named by the flag as typed, each spelling of the option (an old one: --models, --tasks)."""
    from megadocs.cli import main, option_flags

    parser = _commands_with_members()[command]
    assert flag in option_flags(parser).values()
    [spellings] = [action.option_strings for action in parser._actions if flag in action.option_strings]
    for spelling in spellings:
        members = [] if flag == "--members" else ["--members", "nope"]  # the tasks are read first
        assert main(["train", command, *members, spelling, value]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {spelling}: {problem}") and err.count("\n") == 1


@pytest.mark.parametrize("command", _commands_with_members())
def test_benchmarks_without_lm_eval_are_named_by_the_flag_typed(command, tiny_members, monkeypatch, capsys):
    """Without lm-eval, `train benchmarks --tasks piqa` said 'benchmarks: scoring them needs
    lm-evaluation-harness', the field, not the flag typed; `train ensemble --benchmarks` said it after
    scoring every validation set. Each spelling of the option of each command is named, at once."""
    from megadocs.cli import main
    from train import downstream

    # MOCK: lm-eval is installed here; what its import raises where it is not
    monkeypatch.setattr(downstream, "_LM_EVAL_ERROR", ImportError("No module named 'lm_eval'"))
    [spellings] = [action.option_strings for action in _commands_with_members()[command]._actions
                   if action.dest == "benchmarks"]
    for spelling in spellings:
        assert main(["train", command, "--members", str(tiny_members[0]), spelling, "piqa"]) == 2
        assert capsys.readouterr().err == (f"error: {spelling}: scoring them needs lm-evaluation-harness (No module "
                                           "named 'lm_eval'); install it with `pip install 'megadocs[eval]'`\n")


@pytest.mark.parametrize("command", _commands_with_members())
def test_a_count_below_one_is_refused_naming_the_option(command, capsys):
    """`train benchmarks --benchmark-limit -1` (or --batch-size 0) went to lm-eval unchecked: every count
    option of each command, each spelling, is refused in one line naming it, in one form (train
    ensemble's by its record, EnsembleRequest; train benchmarks' as it is read: megadocs.cli.Count),
    where train benchmarks' was argparse's usage and 'argument --benchmark-limit/--limit: ...'."""
    from megadocs.cli import main

    counts = [action for action in _commands_with_members()[command]._actions if action.type is int]
    assert counts
    for spelling in (spelling for action in counts for spelling in action.option_strings):
        for value in ("0", "-1"):
            assert main(["train", command, "--members", "nope", spelling, value]) == 2
            assert capsys.readouterr().err == f"error: {spelling}: expected >= 1, got {value}\n"


@pytest.mark.parametrize("item", ["=data/a", "arxiv=", "="])
def test_val_refuses_a_name_or_store_left_empty(item):
    from train.ensemble_cli import validation_specs

    with pytest.raises(UserError, match=r"^--val: expected NAME=STORE \(or STORE alone\), got "):
        validation_specs(["data/iid", item], None)


def test_val_reads_a_store_whose_path_holds_an_equals_sign(tiny_members, tiny_store, tmp_path):
    """A sweep's run folder (runs/lr=0.01/store) is a STORE, named or not: NAME is before the first '='."""
    from megadocs.cli import main

    store = tmp_path / "lr=0.01" / "store"
    store.parent.mkdir()
    store.symlink_to(tiny_store)
    out = tmp_path / "ensemble.json"
    assert main(["train", "ensemble", "--members", str(tiny_members[0]), "--windows", "2", "--device", "cpu",
                 "--val", str(store), f"arxiv={store}", "--json", str(out)]) == 0
    sets = json.loads(out.read_text())["sets"]
    assert {name: entry["source"]["store"] for name, entry in sets.items()} == {"iid": str(store), "arxiv": str(store)}


@pytest.mark.parametrize("field", ["context", "windows", "batch_size", "max_resident", "benchmark_limit"])
def test_a_bad_count_names_the_flag_on_the_command_line_and_the_field_in_python(field, tiny_members, capsys):
    from megadocs.cli import main, option_flags
    from train.ensemble_cli import EnsembleRequest, add_ensemble_arguments

    with pytest.raises(UserError, match=rf"^{field}: expected >= 1, got 0$"):  # analysis scores studies so
        EnsembleRequest(members=["a"], **{field: 0})
    parser = argparse.ArgumentParser()
    add_ensemble_arguments(parser)
    flag = option_flags(parser)[field]
    assert main(["train", "ensemble", "--members", str(tiny_members[0]), f"{flag}=0"]) == 2
    assert capsys.readouterr().err == f"error: {flag}: expected >= 1, got 0\n"
