"""`python -m latent_ndm.evaluate ckpt=<run> metrics=[nelbo,nll,fid] [key=value ...]`: the NLL bounds and FID of a run.

    python -m latent_ndm.evaluate ckpt=runs/ndm/default metrics=[nelbo,nll] limit=256
    python -m latent_ndm.evaluate ckpt=runs/ndm/celebahq256_ndm metrics=[nelbo,nll,fid] fid.stats=data/celebahq256-fid
    torchrun --nproc_per_node 8 -m latent_ndm.evaluate ckpt=... devices=8     # or srun under SLURM

NELBO and NLL are in bits/dim over the image's pixels (the VAE's bit depth); NLL takes the prior term from the
probability-flow ODE. Results are merged into `evaluation.json` beside the checkpoint and printed as a table.
Options: configs/evaluate.yaml.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from omegaconf import DictConfig

from latent_ndm.cli import hydra_command

if TYPE_CHECKING:  # torch and Lightning are imported by `run`, after the command line was checked
    from latent_ndm.evaluation.runner import Evaluation


def run(cfg: DictConfig) -> Evaluation:
    """Evaluate, then (rank 0) write evaluation.json and print the table."""
    from latent_ndm.evaluation.results import format_table, write_results
    from latent_ndm.evaluation.runner import evaluate

    out = evaluate(cfg)
    if out.is_main:
        info = {"ckpt": str(cfg.ckpt), "weights": out.run.weights, "hardware": out.hardware}
        path = write_results(out.run.out_dir, out.results, info)
        title = f"{out.run.kind.upper()} run {cfg.ckpt} ({out.run.weights} weights, {out.hardware})"
        print(format_table(out.results, title))
        collapse = out.results.get("nelbo", {}).get("collapse")
        if collapse:
            print(f"  WARNING: {collapse}")
        print(f"  results: {path}")
    return out


main = hydra_command("evaluate", run, readonly=True)


if __name__ == "__main__":
    main()
