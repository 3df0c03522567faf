"""`python -m latent_ndm.train stage=vae [key=value ...]`: train one stage of latent NDM (Hydra + Lightning).

Configs live in `configs/` (`train.yaml` and one group per built object); every key can be overridden on the command
line, unknown keys are errors. A run writes into `runs/<stage>/<name>/` (a sweep's job into `.../<job number>/`), once
it really starts: `checkpoints/last.ckpt` (resumed automatically by the same command), `export/` (what the next stage
loads), `images/`, `tensorboard/`, `csv/`, `train.log` and `.hydra/` (the config and overrides it was started with).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict

from latent_ndm.cli import hydra_command
from latent_ndm.errors import TrainingError

if TYPE_CHECKING:  # torch and Lightning are imported by `run`, after the command line was checked
    from latent_ndm.training.run import RunResult


def format_report(cfg: DictConfig, result: RunResult) -> str:
    """The lines printed at the end of a run: metrics, then where everything is."""
    r, m = result.report, result.report.get("metrics", {})
    lines = [f"stage={cfg.stage.name} name={cfg.name}: finished at step {r['step']} in {result.wall_s:.0f} s"]
    if r.get("summary"):  # the stage's own one-line summary of its metrics
        lines.append(f"  {r['summary']}")
    elif m:
        lines.append("  " + ", ".join(f"{k} {v:.4g}" for k, v in m.items() if isinstance(v, int | float)))
    if r.get("collapse"):  # the stage's warning in one plain sentence (a collapsed VAE latent)
        lines.append(f"  WARNING: {r['collapse']}")
    places = {"checkpoint": "checkpoint (resume)", "export": "export (next stage)", "images": "images",
              "curve": "learning curve", "tensorboard": "tensorboard logs", "csv": "csv metrics"}
    lines += [f"  {label + ':':22s}{r[key]}" for key, label in places.items() if r.get(key) is not None]
    return "\n".join(lines)


def run(cfg: DictConfig) -> RunResult:
    """Train, then (rank 0) print where everything went. Each job of a sweep (-m) gets its own folder,
    `<run_dir>/<job number>`; a job that fails before it starts leaves no folder behind."""
    from latent_ndm.runs.folders import remove_if_empty
    from latent_ndm.training.run import train

    hydra = HydraConfig.get()
    if hydra.mode == RunMode.MULTIRUN:
        with open_dict(cfg):
            cfg.run_dir = str(Path(cfg.run_dir) / str(hydra.job.num))
    try:
        result = train(cfg, list(hydra.overrides.task))
    except BaseException:
        remove_if_empty(Path(cfg.run_dir))  # e.g. the folder Hydra made for a sweep job that never started
        raise
    if result.trainer.is_global_zero:
        print(format_report(cfg, result))
    if result.report.get("stopped"):  # stage.on_collapse=stop: the run kept its checkpoint, and failed
        raise TrainingError(result.report["stopped"])
    return result


main = hydra_command("train", run)


if __name__ == "__main__":
    main()

