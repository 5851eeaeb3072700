"""Curves of a run for experiment trackers: TensorBoard (when installed), Weights & Biases when configured.

`Tracker` receives what the loop already computes (training log lines, periodic and final
validation losses, the final metrics) and writes:

- ``RUN/tensorboard/`` event files (``train/loss``, ``train/lr``, ``train/grad_norm``,
  ``train/tokens_per_s``, ``val/<set>``; the config and the final metrics as text; the run's
  hyperparameters, :func:`run_hparams`, for the HParams tab, with ``val/<set>`` and ``train/loss``
  as its metrics). On resume the writer purges events past the checkpoint's step, so the curve has
  no duplicated tail. A sweep links every run under ``{out}/tensorboard/{certification}/{point}``
  (``search.objective``): ``tensorboard --logdir {out}/tensorboard`` names runs by what they are.
- ``RUN/wandb/`` (offline mode, the default; ``wandb sync RUN/wandb/offline-run-*`` uploads it)
  or a live W&B run (online), with the run's config hash as its id (a resumed run continues the
  same W&B run), grouped by ``tracking.group`` (a sweep sets its certification's name).

Trackers only observe: a tracker error never stops training (it is reported once on stderr).

Example:
    >>> tracker = Tracker.open(config, Path("runs/x"), identity="abc", start_step=0)  # doctest: +SKIP
    >>> tracker.log_train(10, {"loss": 5.1, "lr": 3e-3})                             # doctest: +SKIP
    >>> tracker.close(metrics)                                                       # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from megadocs.errors import UserError, WorkFailed
from megadocs.formats import IID_SETS, REAL, RunDir
from train.config import RunConfig

__all__ = ["TENSORBOARD_DIR", "WANDB_DIR", "TRAIN_SCALARS", "Tracker", "run_hparams"]

TENSORBOARD_DIR = RunDir.TENSORBOARD
WANDB_DIR = RunDir.WANDB
# log.jsonl fields that become `train/<name>` scalars
TRAIN_SCALARS = ("loss", "lr", "grad_norm", "tokens_per_s")


class Tracker:
    """Fans curves out to the configured trackers (see the module docstring)."""

    def __init__(self, tensorboard=None, wandb_run=None) -> None:
        self._tensorboard = tensorboard
        self._wandb = wandb_run
        self._warned = False

    @classmethod
    def open(cls, config: RunConfig, out: Path, *, identity: str, start_step: int) -> Tracker:
        """Open the trackers of `config.tracking` for the run in `out`, resuming at `start_step`.

        Raises:
            UserError: W&B is configured but the `wandb` package is not installed, or refused the
                run (no API key).
            WorkFailed: the W&B server could not be reached.
        """
        tracking = config.tracking
        tensorboard = wandb_run = None
        if tracking.wandb is not None:
            wandb_run = _open_wandb(config, out, identity)
        if tracking.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # a GPU node with only what training needs: log.jsonl still has every curve
                print("tracking.tensorboard: the tensorboard package is not installed; no event files "
                      "(the curves are in log.jsonl)", file=sys.stderr)
                return cls(None, wandb_run)
            # purge_step drops events a killed attempt wrote past the checkpoint we resume from
            tensorboard = SummaryWriter(log_dir=str(out / TENSORBOARD_DIR), purge_step=start_step or None)
            if start_step == 0:
                tensorboard.add_text("config", _as_markdown_code(config.model_dump(mode="json")), 0)
                if tracking.group:
                    tensorboard.add_text("group", tracking.group, 0)
                _add_hparams(tensorboard, config)
        return cls(tensorboard, wandb_run)

    def log_train(self, step: int, line: dict[str, Any]) -> None:
        """One training log line (the dict written to log.jsonl)."""
        scalars = {f"train/{name}": line[name] for name in TRAIN_SCALARS if name in line}
        self._log(step, scalars)

    def log_validation(self, step: int, losses: dict[str, float | None]) -> None:
        """Validation losses at `step` ({set name: loss}; None and non-finite values are skipped)."""
        self._log(step, {f"val/{name}": loss for name, loss in losses.items()
                         if loss is not None and math.isfinite(loss)})  # fmt: skip

    def close(self, metrics: dict[str, Any] | None = None) -> None:
        """Record the final metrics (when given) and flush everything."""
        if metrics is not None:
            summary = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}
            self._guard(lambda: self._tensorboard and self._tensorboard.add_text(
                "metrics", _as_markdown_code(metrics), int(metrics.get("steps", 0))))
            self._guard(lambda: self._wandb and self._wandb.summary.update(
                {**summary, **{f"val/{k}": v for k, v in metrics.get("val_losses", {}).items()}}))
        if self._tensorboard is not None:
            self._guard(self._tensorboard.close)
        if self._wandb is not None:
            self._guard(lambda: self._wandb.finish())
        self._tensorboard = self._wandb = None

    # -- internals ---------------------------------------------------------------------------

    def _log(self, step: int, scalars: dict[str, float]) -> None:
        if self._tensorboard is not None:
            def write() -> None:
                for tag, value in scalars.items():
                    self._tensorboard.add_scalar(tag, value, step)
                self._tensorboard.flush()

            self._guard(write)
        if self._wandb is not None:
            self._guard(lambda: self._wandb.log(scalars, step=step))

    def _guard(self, action) -> None:
        try:
            action()
        except Exception as exc:  # noqa: BLE001 - an observer must not stop the experiment
            if not self._warned:
                print(f"warning: experiment tracker failed ({type(exc).__name__}: {exc}); training continues",
                      file=sys.stderr)
                self._warned = True


def run_hparams(config: RunConfig) -> dict[str, float | int | str]:
    """What distinguishes a run in TensorBoard's HParams tab: the axes a sweep searches, the data
    recipe, the model, the seeds and its certification (``tracking.group``). Unset fields are left out.

    >>> from train.config import RunConfig
    >>> hp = run_hparams(RunConfig.model_validate({"data": {"store": "s", "context": 64}}))
    >>> hp["algorithm"], hp["g"], hp["context"], "group" in hp
    ('real', 0, 64, False)
    """
    synthetic = config.data.synthetic
    values = {
        "lr": config.optim.lr, "weight_decay": config.optim.weight_decay, "real_epochs": config.data.real_epochs,
        "synthetic_epochs": config.data.synthetic_epochs, "mixing_fraction": config.data.mixing_fraction,
        "algorithm": synthetic.algorithm if synthetic else REAL, "g": synthetic.g if synthetic else 0,
        "model": config.model.preset, "seed": config.seed, "data_seed": config.data.seed,
        "context": config.data.context, "batch_size": config.optim.batch_size, "group": config.tracking.group,
    }
    return {name: value for name, value in values.items() if value is not None}


def _add_hparams(writer, config: RunConfig) -> None:
    """The HParams plugin's three summaries, written into the run's own event file (torch's
    ``add_hparams`` would start a second run beside it); its metrics are scalars the run logs."""
    from torch.utils.tensorboard.summary import hparams

    sets = [*IID_SETS, *config.eval.extra]
    metrics = {f"val/{name}": None for name in sets} | {"train/loss": None}
    for summary in hparams(run_hparams(config), metrics):
        writer.file_writer.add_summary(summary)


def _as_markdown_code(data: Any) -> str:
    """TensorBoard's text plugin renders markdown: indent JSON four spaces to keep it verbatim."""
    return "\n".join("    " + line for line in json.dumps(data, indent=2, default=str).splitlines())


def _open_wandb(config: RunConfig, out: Path, identity: str):
    try:
        import wandb
    except ModuleNotFoundError:
        raise UserError(
            "tracking.wandb: the wandb package is not installed; pip install 'megadocs[wandb]' or set "
            "tracking.wandb: null"
        ) from None
    settings = config.tracking.wandb
    (out / WANDB_DIR).mkdir(parents=True, exist_ok=True)
    try:
        return wandb.init(
            project=settings.project,
            entity=settings.entity,
            mode=settings.mode,
            dir=str(out),  # wandb writes RUN/wandb/
            id=identity,
            resume="allow",
            name=f"{config.tracking.group}/{identity}" if config.tracking.group else identity,
            group=config.tracking.group,
            config=config.model_dump(mode="json"),
            settings=wandb.Settings(silent=True, console="off"),
        )
    except (wandb.errors.UsageError, wandb.errors.AuthenticationError) as exc:  # no or a wrong API key
        raise UserError(f"tracking.wandb: W&B would not start the run (mode: {settings.mode}): {_first_line(exc)}; run `wandb "
                        "login` (or set WANDB_API_KEY), or set tracking.wandb.mode: offline and `wandb sync` "
                        "RUN/wandb later") from None
    except wandb.errors.Error as exc:  # the W&B server did not answer: nothing wrong with the config
        raise WorkFailed(f"tracking.wandb: W&B could not start the run (mode: {settings.mode}): {_first_line(exc)}; "
                         "re-run the same command to resume, or set tracking.wandb.mode: offline") from exc


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0].rstrip(".")
