"""Downstream benchmarks through the real lm-evaluation-harness on local copies of the tasks' data.

The files under tests/eval/data/ are a few items written for these tests in the official
datasets' formats. Accuracies are checked against an independent computation: the official
prompt templates written out by hand, scored with the members' mean logits.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from megadocs.errors import UserError
from tests.eval.conftest import DATA_DIR
from train.downstream import EnsembleLM, evaluate_benchmarks
from train.ensemble import resolve_model_dir

TASKS = ["piqa", "sciq", "arc_easy"]
ITEMS = {"piqa": 5, "sciq": 4, "arc_easy": 6}


def _docs(task: str) -> list[dict]:
    return [json.loads(line) for line in (DATA_DIR / f"{task}.jsonl").read_text().splitlines()]


def _prompt(task: str, doc: dict) -> tuple[str, list[str], int]:
    """(context, choices, gold) as lm-eval's piqa/sciq/arc_easy YAMLs define them."""
    if task == "piqa":
        return f"Question: {doc['goal']}\nAnswer:", [doc["sol1"], doc["sol2"]], doc["label"]
    if task == "sciq":
        choices = [doc["distractor1"], doc["distractor2"], doc["distractor3"], doc["correct_answer"]]
        return f"{doc['support'].lstrip()}\nQuestion: {doc['question']}\nAnswer:", choices, 3
    gold = doc["choices"]["label"].index(doc["answerKey"])
    return f"Question: {doc['question']}\nAnswer:", doc["choices"]["text"], gold


def _hand_scores(members, task: str) -> dict[str, float]:
    model_dirs = [resolve_model_dir(m) for m in members]
    tokenizer = AutoTokenizer.from_pretrained(model_dirs[0])
    models = [AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval() for d in model_dirs]
    hits = {"acc": 0, "acc_norm": 0}
    docs = _docs(task)
    for doc in docs:
        context, choices, gold = _prompt(task, doc)
        context_ids = tokenizer.encode(context)
        lls = []
        for choice in choices:
            whole = tokenizer.encode(context + " " + choice)
            with torch.no_grad():
                mean = sum(m(input_ids=torch.tensor([whole])).logits[0].double() for m in models) / len(models)
            log_probs = mean.log_softmax(-1)
            lls.append(sum(float(log_probs[i - 1, whole[i]]) for i in range(len(context_ids), len(whole))))
        lls = np.array(lls)
        hits["acc"] += int(np.argmax(lls) == gold)
        hits["acc_norm"] += int(np.argmax(lls / np.array([len(c) for c in choices])) == gold)
    return {metric: count / len(docs) for metric, count in hits.items()}


def test_single_model_scores_all_three_tasks_like_the_official_templates(tiny_members):
    scores = evaluate_benchmarks([tiny_members[0]], TASKS, data_dir=DATA_DIR, device="cpu")

    for task in TASKS:
        assert scores[task]["items"] == ITEMS[task]
        assert 0.0 <= scores[task]["acc"] <= 1.0 and 0.0 <= scores[task]["acc_norm"] <= 1.0
        hand = _hand_scores([tiny_members[0]], task)
        assert scores[task]["acc"] == pytest.approx(hand["acc"])
        assert scores[task]["acc_norm"] == pytest.approx(hand["acc_norm"])
    for metric in ("acc", "acc_norm"):
        assert scores["average"][metric] == pytest.approx(np.mean([scores[t][metric] for t in TASKS]))


def test_two_member_ensemble_averages_logits(tiny_members):
    members = [tiny_members[0], tiny_members[2]]  # a run directory and a plain HF directory
    scores = evaluate_benchmarks(members, TASKS, data_dir=DATA_DIR, device="cpu", max_resident_members=1)

    for task in TASKS:
        assert scores[task]["items"] == ITEMS[task]
        hand = _hand_scores(members, task)
        assert scores[task]["acc"] == pytest.approx(hand["acc"])
        assert scores[task]["acc_norm"] == pytest.approx(hand["acc_norm"])


def test_loglikelihood_requests_are_mean_logit_log_probabilities(tiny_members):
    """Requests of different lengths, batched and padded, each match the hand computation."""
    from lm_eval.api.instance import Instance

    members = [tiny_members[0], tiny_members[1]]
    pairs = [
        ("Question: What is water?\nAnswer:", " a liquid"),
        ("Which planet is closest to the Sun? The answer is", " Mercury, the smallest planet"),
        ("Q:", " no"),
    ]
    lm = EnsembleLM(members, device="cpu", batch_size=2)
    results = lm.loglikelihood([Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)])

    assert len(results) == len(pairs)
    for (context, continuation), (total, greedy) in zip(pairs, results):
        assert total == pytest.approx(_hand_log_likelihood(members, context, continuation), rel=1e-5)
        assert isinstance(greedy, bool)


def _hand_log_likelihood(members, context: str, continuation: str) -> float:
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_dir(members[0]))
    whole, start = tokenizer.encode(context + continuation), len(tokenizer.encode(context))
    logits = []
    for member in members:
        model = AutoModelForCausalLM.from_pretrained(resolve_model_dir(member), dtype=torch.float32).eval()
        with torch.no_grad():
            logits.append(model(input_ids=torch.tensor([whole])).logits[0].double())
    log_probs = (sum(logits) / len(logits)).log_softmax(-1)
    return sum(float(log_probs[i - 1, whole[i]]) for i in range(start, len(whole)))


def test_limit_caps_items_per_task(tiny_members):
    scores = evaluate_benchmarks([tiny_members[0]], ["piqa", "arc_easy"], data_dir=DATA_DIR, limit=2, device="cpu")
    assert scores["piqa"]["items"] == 2 and scores["arc_easy"]["items"] == 2
    assert set(scores) == {"piqa", "arc_easy", "average"}


def test_missing_data_file_names_the_task_and_the_file(tiny_members, tmp_path):
    shutil.copy(DATA_DIR / "piqa.jsonl", tmp_path / "piqa.jsonl")
    with pytest.raises(UserError) as error:
        evaluate_benchmarks([tiny_members[0]], ["piqa", "sciq"], data_dir=tmp_path, device="cpu")
    message = str(error.value)
    assert "\n" not in message
    assert "sciq" in message and str(tmp_path / "sciq.jsonl") in message and "correct_answer" in message


def test_no_local_data_and_no_hub_is_one_line(tiny_members):
    """Offline without --benchmark-data: one line naming the files to give, not lm-eval's 60-line
    traceback from the datasets library (issue 34). A subprocess, so that the Hub is off for sure."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "megadocs.cli", "train", "benchmarks", "--models",
                             str(tiny_members[0]), "--tasks", "piqa", "--device", "cpu"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("error: --benchmark-data: none given") and "piqa.jsonl" in lines[0]


def test_data_that_is_not_json_lines_names_the_data_option_as_typed(tmp_path, capsys):
    """A data file whose later line is not JSON: lm-eval's loading refuses it before any model is
    read (a member holding only config.json is enough), in one line naming the data option by the
    spelling typed (--data-dir is the older one)."""
    from megadocs.cli import main
    from tests.commands import command_parser

    data = shutil.copytree(DATA_DIR, tmp_path / "benchmark-data")
    with (data / "piqa.jsonl").open("a") as f:
        f.write('{"goal": "cut off", "sol1"\n')
    member = tmp_path / "member"
    member.mkdir()
    (member / "config.json").write_text("{}")  # never loaded: the data is read first
    parser = command_parser("train", "benchmarks")
    [spellings] = [action.option_strings for action in parser._actions if action.dest == "benchmark_data"]
    for spelling in spellings:
        assert main(["train", "benchmarks", "--members", str(member), "--benchmarks", "piqa",
                     spelling, str(data), "--device", "cpu"]) == 2
        err = capsys.readouterr().err  # the datasets library's progress and log lines, then ours
        [line] = [line for line in err.splitlines() if line.startswith("error: ")]
        assert line.startswith(f"error: {spelling}: {data}: a file of piqa is not JSON Lines"), err


def test_data_file_without_the_tasks_fields_is_refused(tiny_members, tmp_path):
    (tmp_path / "arc_easy.jsonl").write_text(json.dumps({"question": "q", "answer": "a"}) + "\n")
    with pytest.raises(UserError, match="arc_easy.*choices, answerKey"):
        evaluate_benchmarks([tiny_members[0]], ["arc_easy"], data_dir=tmp_path, device="cpu")


def test_unknown_task_is_refused(tiny_members):
    with pytest.raises(UserError, match="hellaswag"):
        evaluate_benchmarks([tiny_members[0]], ["hellaswag"], data_dir=DATA_DIR, device="cpu")


def test_rolling_and_generation_requests_are_not_supported(tiny_members):
    lm = EnsembleLM([tiny_members[0]], device="cpu")
    with pytest.raises(NotImplementedError, match="multiple-choice"):
        lm.loglikelihood_rolling([])
    with pytest.raises(NotImplementedError, match="multiple-choice"):
        lm.generate_until([])


def test_cli_benchmarks_command(tiny_members, tmp_path, capsys):
    from megadocs.cli import main

    out = tmp_path / "scores.json"
    status = main(["train", "benchmarks", "--models", str(tiny_members[1]), "--tasks", "sciq,piqa",
                   "--data-dir", str(DATA_DIR), "--limit", "3", "--device", "cpu", "--json", str(out)])
    assert status == 0
    scores = json.loads(out.read_text())
    assert scores["sciq"]["items"] == 3 and scores["piqa"]["items"] == 3
    assert "average" in capsys.readouterr().out
