"""`RunConfig`: everything that defines one training run, as a strict, hashed, YAML-loadable model.

The run's identity (`RunConfig.identity()`) is the hash of the fields that define the experiment
and of what its data *is*: the token store's and the pool's manifest identities
(`megadocs.data_identity`, `megadocs.pools`) and the megadoc rule's version replace their paths,
so re-preparing a store or regenerating a pool at the same path gives new runs, and moving them
keeps the old ones. Execution details (where it
runs, how a batch is split into micro-batches, how often it is checkpointed, whether it is
compiled) are left out, so moving a run to another machine or resuming it with a smaller
micro-batch keeps its identity and its run directory. A change of the code that changes what a
config learns bumps `TRAINING_REVISION`, which the identity also covers.

Loading checks what can be checked without torch or data: the preset's name (`train.presets`), the
benchmark tasks (`train.benchmarks`), and every cross-field rule below.

Example:
    >>> from train.config import RunConfig
    >>> config = RunConfig.model_validate({"data": {"store": "runs/demo/data"}})
    >>> config.optim.lr, config.model.preset
    (0.003, 'tiny-1m')
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

from pydantic import BeforeValidator, Field, model_validator

from megadocs.config import StrictModel, config_hash
from megadocs.data_identity import directory_identity, store_identity, store_identity_of
from megadocs.errors import UserError
from megadocs.formats import ALGORITHMS, IID_SETS, Algorithm
from megadocs.megadoc import RULE_VERSION
from megadocs.pools import pool_identity
from train.benchmarks import check_tasks
from train.presets import PRESETS

if TYPE_CHECKING:
    from train.store import TokenStore

__all__ = [
    "DocumentMask",
    "SyntheticData",
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "ExtraValidation",
    "EvalConfig",
    "WandbConfig",
    "TrackingConfig",
    "RunConfig",
    "ALGORITHMS",
    "DECAY_GROUPS",
    "DEFAULT_DECAY_GROUPS",
    "EXECUTION_FIELDS",
    "ATTENTION_SETTINGS",
    "TRAINING_REVISION",
    "TRAINING_REVISIONS",
    "describe_revision",
    "template",
]

class DocumentMask(str, Enum):
    """Attention units of a window (`train.attention` builds them)."""

    OFF = "off"
    DOCUMENT = "document"
    SEGMENT = "segment"

    @classmethod
    def parse(cls, value: object) -> DocumentMask:
        """A config value; the booleans of older configs mean ``off`` (false) and ``document`` (true)."""
        if isinstance(value, cls):
            return value
        if isinstance(value, bool):
            return cls.DOCUMENT if value else cls.OFF
        try:
            return cls(value)
        except ValueError:
            names = " | ".join(mode.value for mode in cls)
            raise ValueError(f"document_mask: expected {names} (or true/false), got {value!r}") from None


# Top-level / nested fields that do not change what is learned, only how the run executes.
EXECUTION_FIELDS: dict[str, tuple[str, ...]] = {
    "": ("checkpoint_every", "device", "compile", "loss", "attention", "tracking", "parallelism", "deterministic"),
    "optim": ("micro_batch_size",),
    "eval": ("every", "curve_windows", "curve_extra"),
}
TRAINING_REVISIONS: dict[int, str] = {
    1: "the EOS input embedding was a padding row and never learned",
    2: "the EOS input embedding learns like every token (no padding row)",
}
"""What the trainer's code learns from a config, by revision. A new revision is added when the same
config and data train a different model (a change of the code, not of the config); runs of an
earlier revision are not this code's results, so the revision is part of the identity: `search`
supersedes their trials and runs their points again, and a RUN of another revision is refused."""
TRAINING_REVISION = max(TRAINING_REVISIONS)


def describe_revision(revision: int) -> str:
    """``training revision N (what it learns)``, for messages.

    >>> describe_revision(1)
    'training revision 1 (the EOS input embedding was a padding row and never learned)'
    """
    return f"training revision {revision} ({TRAINING_REVISIONS.get(revision, 'unknown to this code')})"


AUTO = "auto"
# `document_mask` was a bool; hashing the old spelling of the old modes keeps those runs' identities.
_LEGACY_DOCUMENT_MASK = {DocumentMask.OFF.value: False, DocumentMask.DOCUMENT.value: True}


class SyntheticData(StrictModel):
    """The synthetic stream: a generation pool's documents under one algorithm's megadoc rule."""

    pool: str = Field(description="generation pool directory (written by `megadocs gen`, tokenized by "
                      "`megadocs data tokenize-pool`)")
    algorithm: Algorithm = Field(description="how the pool's generations make documents (megadocs.megadoc)")
    g: int = Field(ge=1, description="generations per real document")


class DataConfig(StrictModel):
    """``data:``: the real token store, the synthetic stream and how the two are mixed into windows."""

    store: str = Field(description="token store directory (`megadocs data prepare`)")
    synthetic: SyntheticData | None = Field(default=None, description="synthetic stream; null = real only")
    mixing_fraction: float = Field(
        default=0.0, ge=0.0, le=1.0,
        description="share of the training windows drawn from the synthetic stream (a weighted mixture: "
        "floor or ceil of m * batch_size per step, exactly m over the run); 1 = synthetic only"
    )
    real_epochs: int = Field(default=8, ge=1, description="passes over the real stream (ignored when "
                             "mixing_fraction is 1: no real window is read)")
    synthetic_epochs: int | None = Field(
        default=None, ge=1,
        description="passes over the synthetic stream; required when mixing_fraction is 1 (they set the "
        "run's length there), refused otherwise (real_epochs does)",
    )
    context: int = Field(default=256, ge=8, description="tokens per training window")
    document_mask: Annotated[DocumentMask, BeforeValidator(DocumentMask.parse)] = Field(
        default=DocumentMask.OFF,
        description="off: attend across documents; document: only within a stream document; "
        "segment: only within an EOS-delimited segment (levanter); true/false = document/off",
    )
    seed: int = Field(default=0, ge=0, description="document and window order")

    @model_validator(mode="after")
    def _synthetic_matches_mixing(self) -> DataConfig:
        if self.mixing_fraction > 0 and self.synthetic is None:
            raise ValueError(
                f"mixing_fraction: {self.mixing_fraction} draws from a synthetic stream but "
                "data.synthetic is null; set data.synthetic: {pool: DIR, algorithm: A, g: G} "
                "or mixing_fraction: 0"
            )
        if self.synthetic is not None and self.mixing_fraction == 0:
            raise ValueError(
                "synthetic: set but mixing_fraction is 0 so it would never be read; "
                "set mixing_fraction > 0 (e.g. 0.75) or synthetic: null"
            )
        if self.mixing_fraction == 1.0 and self.synthetic_epochs is None:
            raise ValueError("synthetic_epochs: mixing_fraction 1 (synthetic only) reads no real window, "
                             "so passes over the synthetic stream set the run's length; set synthetic_epochs: N")
        if self.mixing_fraction < 1.0 and self.synthetic_epochs is not None:
            raise ValueError(f"synthetic_epochs: only for mixing_fraction 1 (synthetic only); with "
                             f"mixing_fraction {self.mixing_fraction} real_epochs sets the run's length")
        return self


class ModelConfig(StrictModel):
    """``model:``: the architecture, by preset name (its vocabulary is the store's)."""

    preset: str = Field(default="tiny-1m", description="a preset name from train.presets.PRESETS")

    @model_validator(mode="after")
    def _known_preset(self) -> ModelConfig:
        if self.preset not in PRESETS:
            raise ValueError(f"preset: unknown preset {self.preset!r}; expected one of {', '.join(PRESETS)}")
        return self


AttentionSetting = Literal["auto", "sdpa", "flex"]
ATTENTION_SETTINGS: tuple[AttentionSetting, ...] = get_args(AttentionSetting)
"""``attention:`` (`train.attention.attention_backend` resolves it)."""

# Parameter kinds weight decay can apply to (train.step.param_groups sorts every parameter into one).
DecayGroup = Literal["linear", "head", "embeddings", "norms"]
DECAY_GROUPS: tuple[DecayGroup, ...] = get_args(DecayGroup)
# levanter's default mask (OptimizerConfig.build_weight_decay_mask, "reasonable_default"): every
# array decays except paths containing Embedding, LayerNorm/RMSNorm, and biases; its Llama keeps
# the token embedding in LlamaEmbedding and the untied head as a Linear, so the head decays.
DEFAULT_DECAY_GROUPS: tuple[str, ...] = ("linear", "head")


class OptimConfig(StrictModel):
    """``optim:``: AdamW, its schedule and the batch (`train.step`)."""

    lr: float = Field(default=3e-3, gt=0, allow_inf_nan=False, description="peak learning rate (AdamW)")
    weight_decay: float = Field(default=0.8, ge=0, allow_inf_nan=False, description="decoupled AdamW weight decay")
    weight_decay_on: list[DecayGroup] = Field(
        default_factory=lambda: list(DEFAULT_DECAY_GROUPS),
        description="parameter kinds that decay: linear (attention and MLP projections), head "
        "(output projection), embeddings (input token embeddings), norms (RMSNorm scales); "
        "default = levanter's mask: linear + head",
    )
    beta1: float = Field(default=0.9, ge=0, lt=1)
    beta2: float = Field(default=0.95, ge=0, lt=1)
    warmup_fraction: float = Field(
        default=0.01, ge=0, lt=1, description="linear warmup share of all steps; cosine to 0 after"
    )
    grad_clip: float = Field(default=1.0, gt=0, allow_inf_nan=False, description="global gradient-norm clip")
    batch_size: int = Field(default=64, ge=1, description="sequences per optimizer step")
    micro_batch_size: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        default=16,
        description="sequences per forward/backward (gradient accumulation); auto = the largest "
        "divisor of batch_size that fits the device's memory (train.plan)",
    )

    @model_validator(mode="after")
    def _decay_groups_once(self) -> OptimConfig:
        repeated = sorted({name for name in self.weight_decay_on if self.weight_decay_on.count(name) > 1})
        if repeated:
            raise ValueError(f"weight_decay_on: {repeated[0]!r} is listed twice; list each of "
                             f"{', '.join(DECAY_GROUPS)} at most once")
        return self

    @model_validator(mode="after")
    def _micro_divides_batch(self) -> OptimConfig:
        if self.micro_batch_size != AUTO and self.batch_size % self.micro_batch_size:
            raise ValueError(
                f"micro_batch_size: {self.micro_batch_size} must divide batch_size {self.batch_size}"
            )
        return self


class ExtraValidation(StrictModel):
    """Another held-out set: a token store prepared with the same tokenizer as data.store."""

    store: str
    split: str = "val"


class EvalConfig(StrictModel):
    """``eval:``: the held-out sets scored at the end (and periodically: `train.curves`) and the benchmarks."""

    val_windows: int = Field(default=1024, ge=1, description="fixed held-out windows of the iid loss")
    every: int | str = Field(
        default="10/run",
        description="periodic validation: N (every N steps), 'K/run' (K evaluations spread over the "
        "run), or 0 (only the final evaluation)",
    )
    curve_windows: int = Field(
        default=128, ge=1, description="windows of the periodic evaluation: the first N of the iid windows"
    )
    curve_extra: bool = Field(default=False, description="also evaluate the eval.extra sets periodically")
    extra: dict[str, ExtraValidation] = Field(default_factory=dict, description="name -> held-out store")
    benchmarks: list[str] = Field(default_factory=list, description="lm-eval tasks, e.g. piqa, sciq")
    benchmark_data: str | None = Field(default=None, description="local lm-eval dataset directory")
    benchmark_limit: int | None = Field(default=None, ge=1, description="examples per task (None = all)")

    @model_validator(mode="after")
    def _names(self) -> EvalConfig:
        clash = sorted(set(IID_SETS) & set(self.extra))
        if clash:
            raise ValueError(f"extra.{clash[0]}: the name is reserved for the iid split; rename the set")
        self.every_steps(1)  # validates the form of `every`
        return self

    def every_steps(self, total_steps: int, align: int = 1) -> int:
        """Steps between periodic evaluations in a run of `total_steps` (0 = none).

        ``'K/run'`` spaces the evaluations by ``total_steps // K`` rounded up to a multiple of
        `align` (the loop's logging interval, so a validation loss shares its step's log line);
        a number of steps is used as given.
        """
        every = self.every
        if isinstance(every, int):
            if every < 0:
                raise ValueError(f"every: expected a number of steps >= 0, 'K/run' or 0, got {every}")
            return every
        count, sep, unit = every.partition("/")
        if not (sep and unit.strip() == "run" and count.strip().isdigit()):
            raise ValueError(f"every: expected a number of steps (e.g. 200) or 'K/run' (e.g. '10/run'), got {every!r}")
        count_value = int(count)
        if count_value == 0:
            return 0
        spacing = max(1, total_steps // count_value)
        return -(-spacing // align) * align


class WandbConfig(StrictModel):
    """Weights & Biases logging (the `wandb` extra). Offline mode needs no network or account."""

    project: str = Field(default="megadocs", description="W&B project")
    entity: str | None = Field(default=None, description="W&B entity (team or user); null = your default")
    mode: Literal["offline", "online"] = Field(
        default="offline", description="offline writes RUN/wandb/ (`wandb sync` uploads it later)"
    )


class TrackingConfig(StrictModel):
    """Experiment trackers. They record curves; they never change what is learned."""

    tensorboard: bool = Field(default=True, description="TensorBoard event files in RUN/tensorboard/")
    wandb: WandbConfig | None = Field(default=None, description="log to Weights & Biases; null = off")
    group: str | None = Field(
        default=None, description="runs that belong together (a sweep sets its certification)"
    )


class RunConfig(StrictModel):
    """One training run (`train.loop.run`); the module docstring says what its identity covers."""

    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    seed: int = Field(default=0, ge=0, description="model initialisation")
    checkpoint_every: int = Field(default=200, ge=1, description="optimizer steps between checkpoints")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compile: Literal["auto", "on", "off"] = Field(
        default="auto", description="torch.compile of each decoder layer and of the loss chunk (train.compile): "
        "auto = on CUDA only"
    )
    deterministic: bool = Field(
        default=True, description="CUDA: deterministic kernels (train.device), so a resumed run repeats an "
        "uninterrupted one bit for bit; false = the fastest kernels (equal to rounding). CPU runs are deterministic "
        "either way"
    )
    loss: Literal["auto", "chunked", "liger", "full"] = Field(
        default="auto", description="head + cross-entropy: auto = chunked (compiled where the run compiles; "
        "measured faster than liger on an H100)"
    )
    attention: AttentionSetting = Field(
        default="auto", description="the attention kernels (train.attention.attention_backend): sdpa (PyTorch's "
        "fused attention; a dense mask when documents are masked), flex (FlexAttention, CUDA only); auto = flex on CUDA "
        "(flash-attn for masked documents when installed; sdpa for unmasked runs with deterministic: false), sdpa "
        "elsewhere"
    )
    parallelism: Literal["auto", "ddp", "fsdp"] = Field(
        default="auto", description="several processes: ddp (replicated) or fsdp (sharded weights, "
        "gradients and AdamW state); auto = fsdp from 1B parameters or when that state does not fit "
        "the device, else ddp (train.sharding)"
    )

    @model_validator(mode="after")
    def _known_benchmarks(self) -> RunConfig:
        """Unknown benchmark tasks fail when the config is read, not after training."""
        try:
            check_tasks(self.eval.benchmarks, field="eval.benchmarks")
        except UserError as exc:
            raise ValueError(str(exc)) from None
        return self

    def data_identity(self, *, store: TokenStore | None = None, extra: Mapping[str, TokenStore] | None = None,
                      pool: Mapping[str, Any] | None = None, benchmark_data: str | None = None) -> dict[str, Any]:  # fmt: skip
        """What the run's data is (manifest identities), independent of where it lies.

        The synthetic stream is what training reads: the pool's generations (its identity), cut
        into documents by the megadoc rule (its version) for this algorithm and G; the tokenized
        pool is a function of these and of the store's tokenizer, so it adds nothing.

        Args:
            store, extra: data.store and eval.extra stores (by name) as a run opened them
                (`train.data.RunStores`): their identity is of the manifests they read, so a
                store replaced at its path after it was opened cannot give the run another's
                identity. A store not given is read from its path.
            pool: the synthetic pool's identity as a run read it to open its tokens
                (`train.pool_tokens.PieceDocuments.pool_identity`); None: read from its path.
            benchmark_data: eval.benchmark_data's identity as a run read it
                (`train.benchmarks.BenchmarkData.identity`, what its evaluation scores); None:
                read from its path.

        Raises:
            UserError: a store or pool is missing.
        """
        extra = extra or {}
        identity: dict[str, Any] = {"store": _store_identity(self.data.store, "data.store", store)}
        synthetic = self.data.synthetic
        if synthetic is not None:
            identity["synthetic"] = {
                "algorithm": synthetic.algorithm,
                "g": synthetic.g,
                "pool": dict(pool) if pool is not None else pool_identity(synthetic.pool, "data.synthetic.pool"),
                "rule": RULE_VERSION,
            }
        if self.eval.extra:
            identity["extra"] = {
                name: {**_store_identity(spec.store, f"eval.extra.{name}.store", extra.get(name)), "split": spec.split}
                for name, spec in sorted(self.eval.extra.items())
            }
        if self.eval.benchmark_data:
            identity["benchmark_data"] = benchmark_data if benchmark_data is not None else \
                directory_identity(self.eval.benchmark_data, "eval.benchmark_data")
        return identity

    def identity(self, *, store: TokenStore | None = None, extra: Mapping[str, TokenStore] | None = None,
                 pool: Mapping[str, Any] | None = None, benchmark_data: str | None = None) -> str:  # fmt: skip
        """Hash of what changes what is learned: the config without the EXECUTION_FIELDS, with
        its data paths replaced by `data_identity()` (of the opened `store` and `extra` stores
        and the `pool` and `benchmark_data` identities as read when given, else read from the
        manifests and files; UserError if missing), and the `TRAINING_REVISION` of the code that
        trains it."""
        data = self.identity_config()
        data_identity = self.data_identity(store=store, extra=extra, pool=pool, benchmark_data=benchmark_data)
        return config_hash({"config": data, "data": data_identity, "training_revision": TRAINING_REVISION})

    def identity_config(self) -> dict[str, Any]:
        """The config part of `identity` (a JSON object): the config without the EXECUTION_FIELDS
        and without its data paths (`data_identity` stands for them)."""
        data = self.model_dump(mode="json")
        for section, names in EXECUTION_FIELDS.items():
            target = data[section] if section else data
            for name in names:
                target.pop(name, None)
        legacy = _LEGACY_DOCUMENT_MASK.get(data["data"]["document_mask"])
        if legacy is not None:
            data["data"]["document_mask"] = legacy
        # Paths say where the data lies; data_identity() says what it is.
        data["data"].pop("store")
        # Earlier runs had no synthetic_epochs: unset, it is left out so their identity holds. A
        # synthetic-only run reads no real window, so real_epochs does not change what it learns.
        if data["data"]["synthetic_epochs"] is None:
            data["data"].pop("synthetic_epochs")
        if data["data"]["mixing_fraction"] == 1.0:
            data["data"].pop("real_epochs")
        if data["data"]["synthetic"] is not None:
            data["data"]["synthetic"].pop("pool")
        for extra in data["eval"]["extra"].values():
            extra.pop("store")
        data["eval"].pop("benchmark_data")
        return data

    def identity_changes(self, other: RunConfig) -> list[tuple[str, Any, Any]]:
        """``(field, value here, value in other)`` for each field of `identity_config` that differs,
        dotted (``optim.lr``), in config order: what makes two configs other runs (their data
        aside).

        >>> base = RunConfig.model_validate({"data": {"store": "a"}})
        >>> base.identity_changes(RunConfig.model_validate({"data": {"store": "b", "seed": 2}}))
        [('data.seed', 0, 2)]
        """
        mine, theirs = _flatten(self.identity_config()), _flatten(other.identity_config())
        # a section null on one side and set on the other differs in the fields it holds
        return [(name, mine.get(name), theirs.get(name)) for name in {**mine, **theirs}
                if mine.get(name) != theirs.get(name)]


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as ``{"a.b": value}`` (lists and scalars are values; an empty mapping adds none)."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _store_identity(path: str, field: str, opened: TokenStore | None) -> dict[str, Any]:
    """The identity of the store of config `field` at `path`: of `opened`'s manifest (that store as
    a run opened it) when given, else of the manifest at `path`."""
    if opened is None:
        return store_identity(path, field)
    assert opened.path == Path(path), (opened.path, path)  # internal: opened from this config's path
    return store_identity_of(opened.manifest)


TEMPLATE = """\
# A megadocs training run: `megadocs train THIS.yaml [--out RUN] [--set optim.lr=0.001]`.
# Every field is shown with its default unless marked "required".
data:
  store: runs/demo/data        # required: token store from `megadocs data prepare`
  synthetic: null              # or {pool: POOL, algorithm: stitched, g: 4}
                               #   algorithm: ALGORITHMS_HERE
  mixing_fraction: 0.0         # synthetic share of the windows, in [0, 1]: exact over the run
                               #   (floor or ceil of m * batch_size per step, a weighted mixture)
  real_epochs: 8               # passes over the real stream (total steps follow from this and m);
                               #   ignored at mixing_fraction 1 (synthetic only)
  synthetic_epochs: null       # mixing_fraction 1 only (required there): passes over the
                               #   synthetic stream, steps = ceil(windows * epochs / batch_size)
  context: 256                 # tokens per window (the paper: 4096)
  document_mask: off           # off | document (within a stream document) | segment (new unit
                               #   after every EOS, as levanter; splits stitched megadocs)
  seed: 0                      # document and window order
model:
  preset: tiny-1m              # tiny-1m, tiny-8m (CPU); 150m, 300m, 600m, 1.5b (see train/presets.py)
optim:
  lr: 0.003
  weight_decay: 0.8
  weight_decay_on: [linear, head]  # what decays: linear | head | embeddings | norms; the default is
                               #   levanter's mask (input embeddings and norm scales do not decay)
  beta1: 0.9
  beta2: 0.95
  warmup_fraction: 0.01        # linear warmup, then cosine decay to 0 at the last step
  grad_clip: 1.0
  batch_size: 64               # sequences per optimizer step
  micro_batch_size: 16         # must divide batch_size; lower it to save memory; or auto
                               #   (largest divisor that fits the device; `--dry-run` shows it)
eval:
  val_windows: 1024            # fixed held-out windows of real text (the iid loss)
  extra: {}                    # e.g. {arxiv: {store: runs/arxiv-store, split: val}}
  benchmarks: []               # lm-eval tasks, e.g. [piqa, sciq, arc_easy]
  benchmark_data: null         # local directory with the benchmarks' datasets (null: the Hub or its cache; loaded at start)
  benchmark_limit: null        # examples per task (null = all)
  every: 10/run                # periodic validation: N steps, 'K/run', or 0 (final only)
  curve_windows: 128           # the periodic evaluation reads the first N iid windows
  curve_extra: false           # true = the extra sets are evaluated periodically too
tracking:
  tensorboard: true            # RUN/tensorboard/ (`tensorboard --logdir runs/`)
  wandb: null                  # e.g. {project: megadocs, mode: offline} (pip install 'megadocs[wandb]')
  group: null                  # runs that belong together (a sweep sets the certification)
seed: 0                        # model initialisation
checkpoint_every: 200          # steps between checkpoints (also saved on SIGTERM/SIGUSR2)
device: auto                   # auto | cpu | cuda
compile: auto                  # auto (= CUDA only) | on | off: each decoder layer and the loss chunk
deterministic: true            # CUDA: deterministic kernels, so a resumed run is bit-identical
                               #   (false = fastest kernels; never changes the run identity)
loss: auto                     # auto | chunked | liger | full (head + cross-entropy; never changes
                               #   the run identity: auto = chunked, compiled where the run compiles)
attention: auto                # auto | sdpa | flex (the kernels; never changes the run identity:
                               #   auto = flex on CUDA, sdpa on CPU or unmasked with deterministic: false)
parallelism: auto              # auto | ddp | fsdp, for several processes (torchrun, SLURM tasks; never
                               #   changes the run identity: auto = fsdp from 1B parameters, else ddp)
"""


def template() -> str:
    """A commented, valid config (`megadocs train --template`)."""
    return TEMPLATE.replace("ALGORITHMS_HERE", " | ".join(ALGORITHMS))
