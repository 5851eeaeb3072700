"""The run directory's lifecycle, in the order a run meets it (file names: `megadocs.formats.RunDir`).

1. `RunLifecycle.finished`: RUN holds ``metrics.json``, so the run is done: its identity is
   checked and its metrics are returned untouched.
2. `RunLifecycle.prepare`: create RUN, refuse one that holds another run (another config, the
   same config on other data, or a run of another `TRAINING_REVISION`: `check_run_identity`),
   save ``config.yaml``, ``identity.json``, ``config_hash`` and ``provenance.json``.
3. `RunLifecycle.truncate_log` when resuming: log lines past the checkpoint's step go (a hard
   kill can leave them); then the log and the trackers are opened for the rest of training.
4. `RunLifecycle.save_model`: ``model/`` (``save_pretrained`` and the store's tokenizer files),
   replacing any partial earlier attempt; then its model card, from the run's `RunMetrics`.
5. `RunLifecycle.finish`: ``metrics.json`` last, atomically (its presence means done), and
   ``checkpoint/`` is removed (the model lives in ``model/``).

Several processes run one RUN: rank 0 alone writes (``writes``). On the other ranks every
writing step does nothing, the log is ``os.devnull`` and the tracker tracks nothing; every rank
checks the identity, and what each found in RUN is agreed before any acts on it
(`train.distributed.DistributedContext.agree_on_run_folder`, `train.loop.run`); rank 0's refusal
as it prepares RUN, which it alone creates, is every rank's (`train.loop.run` shares it:
`DistributedContext.share_main_refusal`). Checkpoints are written by `train.checkpoint`, gated the same way by the
trainer.

Example:
    >>> RunLifecycle.finished(Path("runs/never-trained"), "0123456789abcdef") is None
    True
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import IO, Any

import torch

from megadocs import compat
from megadocs.config import dump_yaml, load_config
from megadocs.errors import UserError
from megadocs.formats import RunDir, RunMetrics, read_json_object, replace_dir, write_atomic, write_json
from megadocs.provenance import write as write_provenance
from train.config import TRAINING_REVISION, RunConfig, describe_revision
from train.data import RunStores
from train.model_card import write_model_card
from train.store import TokenStore
from train.tracking import Tracker

__all__ = [
    "REVISION_KEY",
    "RunLifecycle",
    "check_run_identity",
    "earlier_synthetic_identity",
    "recorded_revision",
    "write_run_identity",
]

REVISION_KEY = "training_revision"  # in RUN/identity.json (absent: revision 1, megadocs.compat.RUN_REVISION)
RECORD_ADVICE = "restore it, or train the run again in another --out"  # a damaged record of RUN


class RunLifecycle:
    """One attempt at a run's directory `out`, for the run of `identity` (see the module docstring).

    `writes`: whether this process writes RUN (rank 0 of a data-parallel run, or the only process).
    """

    def __init__(self, out: Path, identity: str, *, writes: bool = True) -> None:
        self.paths = RunDir(out)
        self.identity = identity
        self.writes = writes
        self.provenance: dict[str, Any] | None = None  # recorded by `prepare`, shown in the model card

    @property
    def path(self) -> Path:
        return self.paths.path

    @staticmethod
    def finished(out: Path, identity: str, config: RunConfig | None = None) -> RunMetrics | None:
        """The metrics of a finished RUN of `identity` (of `config`: a refusal names what changed);
        None while it is not finished.

        Raises:
            UserError: RUN holds another run (`check_run_identity`): returning its metrics would
                report the old run's losses as this one's; or its identity.json or config.yaml is
                damaged (`_check_records`), which every later reader of the run would meet.
        """
        run_dir = RunDir(out)
        if not run_dir.is_done():
            return None
        check_run_identity(out, identity, config)
        _check_records(out, config)
        return RunMetrics.load(run_dir.metrics)

    def prepare(self, config: RunConfig, device: torch.device, stores: RunStores | None) -> None:
        """Create RUN, refuse one that holds another run, save the resolved config, the identity
        (of the data in `stores`, as the run opened them) and the provenance. A rank that does not
        write only checks the identity (and reads neither `config` nor `stores`).

        Raises:
            UserError: RUN holds another run (`check_run_identity`), or is (or is under) a file.
        """
        if not self.writes:
            check_run_identity(self.path, self.identity, config)
            return
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):  # it, or a folder above it, is a file
            raise UserError(f"{self.path}: not a directory (it or a folder above it is a file), so it cannot "
                            "hold the run; use another --out") from None
        check_run_identity(self.path, self.identity, config)
        write_atomic(self.paths.config, dump_yaml(config))
        write_run_identity(self.path, self.identity, stores.data_identity(config))
        self.provenance = write_provenance(self.path, str(device))

    def truncate_log(self, step: int) -> None:
        """Drop log lines past the checkpoint we resume from (written before a hard kill), and a
        last line cut short (the disk filled up, or the process died, while it was written)."""
        log_path = self.paths.log
        if not self.writes or not log_path.is_file():
            return
        kept = []
        for line in log_path.read_text().splitlines():
            try:
                record = json.loads(line) if line else None
            except ValueError:
                continue  # torn: the file ends in it
            if record is not None and record["step"] <= step:
                kept.append(line)
        write_atomic(log_path, "".join(line + "\n" for line in kept))

    def open_log(self) -> IO[str]:
        """``log.jsonl``, opened for appending (``os.devnull`` on a rank that does not write)."""
        return open(self.paths.log if self.writes else os.devnull, "a")  # noqa: SIM115 - the caller closes it

    def open_tracker(self, config: RunConfig, *, start_step: int) -> Tracker:
        """The run's experiment trackers from `start_step` on (`train.tracking`); a Tracker of no
        trackers on a rank that does not write."""
        if not self.writes:
            return Tracker()
        return Tracker.open(config, self.path, identity=self.identity, start_step=start_step)

    def save_model(self, model: torch.nn.Module, store: TokenStore, *,
                   state_dict: dict[str, torch.Tensor] | None = None) -> None:  # fmt: skip
        """save_pretrained (of `state_dict` when given: a sharded model's gathered weights) + the
        tokenizer files of `store` as the run opened it (copied: the training process never loads a
        tokenizer), replacing any partial earlier attempt."""
        if not self.writes:
            return
        model_dir = self.paths.model
        tmp = model_dir.with_name(f".{model_dir.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp, state_dict=state_dict)
        store.copy_tokenizer(tmp)
        replace_dir(tmp, model_dir)

    def write_model_card(self, config: RunConfig, metrics: RunMetrics) -> None:
        """``model/README.md`` (`train.model_card`) of the saved model."""
        if self.writes:
            write_model_card(self.paths.model, config, metrics, self.provenance)

    def finish(self, metrics: RunMetrics) -> None:
        """``metrics.json`` last, atomically (the run is done); then the checkpoint is no longer needed."""
        if not self.writes:
            return
        metrics.save(self.paths.metrics)
        shutil.rmtree(self.paths.checkpoint, ignore_errors=True)  # the model lives in RUN/model


# --- identity -----------------------------------------------------------------------------------


def check_run_identity(out: Path, identity: str, config: RunConfig | None = None) -> None:
    """Refuse a RUN that holds another run: another config, the same config on other data, or
    one trained by another `TRAINING_REVISION` of this code.

    A finished RUN is checked too: returning its metrics for another identity would report the
    old run's losses as the new one's. `config`: the config of `identity`; the refusal then names
    the fields in which it differs from RUN's config.yaml (`RunConfig.identity_changes`).
    """
    run_dir = RunDir(out)
    if not run_dir.config_hash.is_file():
        if run_dir.is_done():
            raise UserError(f"{out}: holds {RunDir.METRICS} but no {RunDir.CONFIG_HASH}, so whose run it is "
                            "cannot be checked; use another --out")
        return
    recorded = run_dir.config_hash.read_text().strip()
    if recorded == identity:
        return
    revision = recorded_revision(out)
    if revision != TRAINING_REVISION:
        raise UserError(
            f"{out}: holds a run of identity {recorded} trained by {describe_revision(revision)}; this code "
            f"trains {describe_revision(TRAINING_REVISION)}, identity {identity}; its results are not this "
            "code's: use another --out (the default is runs/train/<identity>)"
        )
    earlier = earlier_synthetic_identity(out)
    if earlier is not None:
        raise UserError(f"{out}: holds a run of identity {recorded}, recorded before a synthetic run's identity "
                        f"hashed its pool and the megadoc rule (today: {identity}); {earlier[1]}")
    raise UserError(f"{out}: holds a run of identity {recorded}, not {identity} ({_what_changed(out, config)}); "
                    "use another --out (the default is runs/train/<identity>)")


def _check_records(out: Path, config: RunConfig | None) -> None:
    """Refuse, in one line naming the file, a RUN whose identity.json is no JSON object or whose
    config.yaml is no valid config (not YAML, not UTF-8) or not the config of `config`'s run (cut
    short: the fields it lost read as their defaults). Nothing in RUN is changed."""
    _identity_record(out)
    try:
        recorded = _config_record(out)
    except UserError as exc:
        raise UserError(f"{exc} (the run's config record is damaged; {RECORD_ADVICE})") from None
    changes = recorded.identity_changes(config) if recorded is not None and config is not None else []
    if changes:
        name, old, new = changes[0]
        raise UserError(f"{RunDir(out).config}: not the config of the run it holds ({name} {json.dumps(old)}, the run's "
                        f"{json.dumps(new)}): the run's config record is damaged; {RECORD_ADVICE}")


def _what_changed(out: Path, config: RunConfig | None, named: int = 3) -> str:
    """Why `config` is not the run in RUN, in words: the first `named` fields in which it differs
    from RUN's config.yaml, or other data under the same config."""
    recorded = _recorded_config(out) if config is not None else None
    if recorded is None:
        return "another config, or the same config on other data"
    changes = recorded.identity_changes(config)
    if not changes:
        return ("the same config on other data: data.store, the synthetic pool, an eval.extra store or "
                "eval.benchmark_data holds other data than it was trained on")
    listed = ", ".join(f"{name} {json.dumps(old)} -> {json.dumps(new)}" for name, old, new in changes[:named])
    more = f" and {len(changes) - named} more field(s)" if len(changes) > named else ""
    return f"another config than its {RunDir.CONFIG}: {listed}{more}"


def _config_record(out: Path) -> RunConfig | None:
    """RUN's config.yaml as a RunConfig; None when it is absent.

    Raises:
        UserError: it is no valid config (not YAML, not UTF-8, a field refused), naming the file.
    """
    path = RunDir(out).config
    return load_config(path, RunConfig) if path.is_file() else None


def _recorded_config(out: Path) -> RunConfig | None:
    """RUN's config.yaml as a RunConfig (:func:`_config_record`); None when it is absent or no longer
    a valid config."""
    try:
        return _config_record(out)
    except (UserError, ValueError):
        return None


def earlier_synthetic_identity(out: Path) -> tuple[bool, str] | None:
    """(adoptable, what to do) for a RUN whose identity.json covers its synthetic stream the earlier
    way (the assembled file's manifest, the generator's path), or None when it does not. A latent
    run read its documents tokenized in pieces, other tokens than today's: not adoptable, it is
    trained again. Any other read today's tokens: adoptable when its pool is unchanged."""
    recorded = _identity_record(out)
    if recorded is None:
        return None
    synthetic = recorded.get("data", {}).get("synthetic")
    earlier = compat.older(compat.SYNTHETIC_IDENTITY, compat.version(compat.SYNTHETIC_IDENTITY, synthetic))
    if earlier is None:
        return None
    # refused (its tokens were others), or kept until --reidentify adopts it (its tokens are today's)
    return earlier.refuse is None, str(earlier.refuse or earlier.how).format(out=out)


def recorded_revision(out: Path) -> int:
    """The `TRAINING_REVISION` that trained RUN, as its identity.json records it; 1 for a RUN made
    before revisions were recorded (with or without identity.json)."""
    recorded = _identity_record(out)
    if recorded is None:
        return 1
    return int(compat.upgrade(compat.RUN_REVISION, recorded)[REVISION_KEY])


def _identity_record(out: Path) -> dict[str, Any] | None:
    """RUN's identity.json as written (None without one); one that is not a JSON object (cut short,
    overwritten) is refused in one line naming it, and left as it is."""
    path = RunDir(out).identity
    if not path.is_file():
        return None
    return read_json_object(path, "a run's identity record", RECORD_ADVICE)


def write_run_identity(out: Path, identity: str, data_identity: dict[str, Any]) -> None:
    """Record the identity and what it covers (`data_identity`: the data's manifest identities it
    hashed, `RunConfig.data_identity`; the training revision) in RUN."""
    run_dir = RunDir(out)
    write_json(run_dir.identity, {"identity": identity, "data": data_identity,
                                  REVISION_KEY: TRAINING_REVISION}, indent=1, sort_keys=True)  # fmt: skip
    write_atomic(run_dir.config_hash, identity + "\n")
