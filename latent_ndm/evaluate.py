"""`python -m latent_ndm.evaluate ckpt=<run> metrics=[nelbo,nll,fid] [key=value ...]`: the NLL bounds and FID of a run.

    python -m latent_ndm.evaluate ckpt=runs/ndm/default metrics=[nelbo,nll] limit=256
    python -m latent_ndm.evaluate ckpt=runs/ndm/celebahq256_ndm metrics=[nelbo,nll,fid] fid.stats=data/celebahq256-fid
    torchrun --nproc_per_node 8 -m latent_ndm.evaluate ckpt=... devices=8     # or srun under SLURM

NELBO and NLL are in bits/dim over the image's pixels (the VAE's bit depth); NLL takes the prior term from the
probability-flow ODE. Results are merged into `evaluation.json` beside the checkpoint and printed as a table.
Options: configs/evaluate.yaml.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from latent_ndm.cli import quiet_known_warnings, run_or_exit
from latent_ndm.evaluation.results import format_table, write_results
from latent_ndm.evaluation.runner import Evaluation, evaluate
from latent_ndm.runs.config import CONFIG_DIR


def run(cfg: DictConfig) -> Evaluation:
    """Evaluate, then (rank 0) write evaluation.json and print the table."""
    out = evaluate(cfg)
    if out.is_main:
        info = {"ckpt": str(cfg.ckpt), "weights": out.run.weights, "hardware": out.hardware}
        path = write_results(out.run.out_dir, out.results, info)
        title = f"{out.run.kind.upper()} run {cfg.ckpt} ({out.run.weights} weights, {out.hardware})"
        print(format_table(out.results, title))
        print(f"  results: {path}")
    return out


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="evaluate")
def main(cfg: DictConfig) -> None:
    quiet_known_warnings()
    OmegaConf.set_readonly(cfg, True)
    run_or_exit(run, cfg)


if __name__ == "__main__":
    main()
