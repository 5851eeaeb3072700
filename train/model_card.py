"""`RUN/model/README.md`: a Hugging Face model card for a finished run.

The card's YAML header is built by `huggingface_hub.ModelCardData` (library, tags and a
`model-index` with one result per validation set), so the Hub and `huggingface_hub.ModelCard.load`
read it; the body says what the model is (preset, parameters), what it was trained on (token
store, synthetic algorithm, G, mixing, epochs), how (hyperparameters), how well (validation
losses) and where it belongs (the certification, from `tracking.group`), with the provenance.

Example:
    >>> write_model_card(Path("runs/x/model"), config, metrics, provenance)  # doctest: +SKIP
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from megadocs.formats import RunMetrics
from megadocs.provenance import SUMMARY_FIELDS
from train.config import RunConfig

__all__ = ["MODEL_CARD_FILE", "render_model_card", "write_model_card"]

MODEL_CARD_FILE = "README.md"


def _header(config: RunConfig, metrics: RunMetrics, name: str) -> str:
    from huggingface_hub import EvalResult, ModelCardData

    results = [
        EvalResult(task_type="text-generation", dataset_type=set_name, dataset_name=f"held-out {set_name}",
                   dataset_split="val", metric_type="loss", metric_name=f"{set_name} loss (nats/token)",
                   metric_value=round(loss, 6))
        for set_name, loss in metrics.val_losses.items()
        if loss is not None and math.isfinite(loss)
    ]  # fmt: skip
    tags = ["megadocs", "synthetic-data", "data-constrained-pretraining"]
    if config.data.synthetic is not None:
        tags.append(f"algorithm-{config.data.synthetic.algorithm}")
    data = ModelCardData(library_name="transformers", pipeline_tag="text-generation", tags=tags,
                         model_name=name, eval_results=results or None)  # fmt: skip
    return data.to_yaml()


def render_model_card(config: RunConfig, metrics: RunMetrics, provenance: dict[str, Any] | None,
                      *, name: str) -> str:  # fmt: skip
    """The README.md text (YAML header + markdown) of a run's model."""
    data, optim = config.data, config.optim
    synthetic = data.synthetic
    if synthetic is None:
        data_rows = [("synthetic data", "none (real data only)")]
    else:
        data_rows = [("synthetic pool", f"`{synthetic.pool}`"), ("synthetic algorithm", synthetic.algorithm),
                     ("G (generations per document)", str(synthetic.g))]  # fmt: skip
    data_rows = [
        ("token store", f"`{data.store}`"),
        *data_rows,
        ("mixing fraction (synthetic share of each batch)", f"{data.mixing_fraction:g}"),
        ("real epochs", str(data.real_epochs)),
        ("context", str(data.context)),
        ("document mask", str(getattr(data.document_mask, "value", data.document_mask)).lower()),
        ("tokens seen", f"{metrics.tokens_seen or 0:,}"),
    ]
    hyper_rows = [("lr (peak)", f"{optim.lr:g}"), ("weight decay", f"{optim.weight_decay:g}"),
                  ("betas", f"{optim.beta1:g}, {optim.beta2:g}"), ("warmup fraction", f"{optim.warmup_fraction:g}"),
                  ("grad clip", f"{optim.grad_clip:g}"), ("batch size (sequences)", str(optim.batch_size)),
                  ("steps", str(metrics.steps)), ("seed (init)", str(config.seed)),
                  ("seed (data order)", str(data.seed))]  # fmt: skip
    loss_rows = [(set_name, "n/a (no scored tokens)" if loss is None else f"{loss:.4f}")
                 for set_name, loss in metrics.val_losses.items()]  # finite or None (RunMetrics)
    prov_rows = [] if not provenance else [(key, f"`{provenance[key]}`") for key in SUMMARY_FIELDS
                                          if provenance[key] is not None]  # fmt: skip
    certification = config.tracking.group
    lines = [
        "---",
        _header(config, metrics, name).rstrip(),
        "---",
        "",
        f"# {name}",
        "",
        f"A `{config.model.preset}` Llama-architecture language model ({metrics.params or 0:,} parameters) "
        "trained from scratch with megadocs under a fixed budget of real documents"
        + (f", mixed with synthetic `{synthetic.algorithm}` documents (G = {synthetic.g})." if synthetic else "."),
        "",
        f"- Run status: **{metrics.status.value}**; config hash `{metrics.config_hash}` "
        "(the run directory's `config.yaml` is the full recipe).",
        f"- Certification: **{certification}** (one run of a local-optimality certification sweep)."
        if certification else "- Certification: none (a single run, not part of a sweep).",
        "",
        "## Data",
        "",
        *_table(("field", "value"), data_rows),
        "",
        "## Hyperparameters",
        "",
        "AdamW with decoupled weight decay on the weight matrices, linear warmup then cosine decay to 0.",
        "",
        *_table(("field", "value"), hyper_rows),
        "",
        "## Validation losses",
        "",
        "Mean next-token cross-entropy (nats per token) on fixed windows of held-out real text.",
        "",
        *_table(("set", "loss"), loss_rows),
        "",
        "## Use",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "model = AutoModelForCausalLM.from_pretrained(PATH_TO_THIS_DIRECTORY)",
        "tokenizer = AutoTokenizer.from_pretrained(PATH_TO_THIS_DIRECTORY)",
        "```",
        "",
        "Zero-shot benchmarks: `megadocs train benchmarks --members THIS_DIR`, or lm-eval's own CLI "
        "`lm_eval --model hf --model_args pretrained=THIS_DIR --tasks piqa`.",
        "",
        "## Provenance",
        "",
        *_table(("field", "value"), prov_rows),
        "",
    ]
    return "\n".join(lines)


def write_model_card(model_dir: Path, config: RunConfig, metrics: RunMetrics,
                     provenance: dict[str, Any] | None) -> Path:  # fmt: skip
    """Write MODEL_DIR/README.md; returns its path."""
    path = Path(model_dir) / MODEL_CARD_FILE
    name = f"megadocs-{config.model.preset}-{metrics.config_hash or 'run'}"
    path.write_text(render_model_card(config, metrics, provenance, name=name))
    return path


def _table(header: tuple[str, str], rows: list[tuple[str, str]]) -> list[str]:
    escape = lambda text: str(text).replace("|", "\\|")  # noqa: E731
    return [f"| {header[0]} | {header[1]} |", "|---|---|", *(f"| {escape(a)} | {escape(b)} |" for a, b in rows)]
