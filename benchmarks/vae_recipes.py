"""The VAE recipe study (issue 24): `stage=vae` recipes x image sets x budgets x seeds, each run a plain
`python -m latent_ndm.train stage=vae` in its own process, then the table of `latent_ndm.comparison.vae_recipes`.

Sets (prepared on first use from what the package registries ship, see `data_tools.real_images`; nothing is
downloaded): `synthetic` (the embedded procedural faces), `textures` (13 photographs, textures included), `faces`
(100 LFW portraits) and `digits`. Recipes: `default` (the config as it stands) and `fixed600` (the previous default:
a KL warm-up of 600 steps whatever the run's length), plus any `--recipe NAME=KEY=VALUE,KEY=VALUE` (Hydra overrides;
`{max_steps}` in a value is replaced by the run's length). Budgets are multiples of the stage's default
`trainer.max_steps`. A run that finished is reused (its export's metrics); one that was cut resumes.

    python -m benchmarks.vae_recipes --sets textures,faces,digits,synthetic --recipes default,fixed600 \\
        --seeds 0,1,2 --budgets 1 --jobs 2 --out runs/benchmark/vae-recipes

Writes <out>/vae_recipes.json and .md (and each run in <out>/runs/<set>-<recipe>-<budget>x-seed<seed>/).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from data_tools.real_images import write_real_images
from data_tools.shard import main as shard_main
from latent_ndm.comparison.concurrent_runs import run_train
from latent_ndm.comparison.vae_recipes import markdown, summarise
from latent_ndm.runs.config import compose_config
from latent_ndm.runs.export import read_run_record
from vae.diagnostics import collapse_verdict

DATA = Path("data")
SETS: dict[str, dict[str, Any]] = {  # train overrides, and how the shards are cut
    "synthetic": {"overrides": []},
    "textures": {"overrides": ["data=shards", f"data.root={DATA / 'textures-32'}"], "shard_size": 128},
    "faces": {"overrides": ["data=shards", f"data.root={DATA / 'faces-32'}"], "shard_size": 64,
              "split": "train=0.8,val=0.2"},
    "digits": {"overrides": ["data=shards", f"data.root={DATA / 'digits-32'}", "data.flip=false"], "shard_size": 128},
}
RECIPES: dict[str, list[str]] = {
    "default": [],
    "fixed600": ["stage.kl_warmup.anneal_portion={600/max_steps}", "stage.kl_warmup.const_portion=0"],
}


def prepare(name: str) -> None:
    """Write and shard the real-image set `name` into data/<name>-32 unless its manifest is there."""
    spec = SETS[name]
    if "shard_size" not in spec or (DATA / f"{name}-32" / "manifest.json").is_file():
        return
    write_real_images(name, DATA / f"{name}-png", size=32)
    args = [str(DATA / f"{name}-png"), str(DATA / f"{name}-32"), "--resolution", "32", "--shard-size",
            str(spec["shard_size"]), "--quiet"]
    if shard_main([*args, *(["--split", spec["split"]] if "split" in spec else [])]) != 0:
        raise SystemExit(f"sharding {name} failed")


def filled(overrides: list[str], max_steps: int) -> list[str]:
    """Overrides with `{max_steps}` and `{a/max_steps}` expressions evaluated (a share of the run)."""
    out = []
    for o in overrides:
        if "{" in o:
            key, _, expr = o.partition("=")
            num, _, _ = expr.strip("{}").partition("/")
            o = f"{key}={round(float(num) / max_steps, 6)}" if "/" in expr else f"{key}={max_steps}"
        out.append(o)
    return out


def run_one(job: dict[str, Any], out: Path, train: bool = True) -> dict[str, Any] | None:
    """Train (or resume, or reuse) one run and return its record for the table; None for a run that has not
    finished when `train` is False."""
    run_dir = out / "runs" / job["name"]
    record = read_run_record(run_dir / "export") if (run_dir / "export").is_dir() else {}
    if record.get("step") != job["max_steps"]:
        if not train:
            return None
        overrides = ["stage=vae", f"name={job['name']}", f"run_dir={run_dir}", f"seed={job['seed']}",
                     f"trainer.max_steps={job['max_steps']}", "logger=[csv]", "data.num_workers=1", *job["overrides"]]
        log = out / "runs" / f"{job['name']}.log"
        code = run_train(overrides, log)
        if code != 0:
            raise SystemExit(f"{job['name']} failed (exit {code}); see {log}")
        record = read_run_record(run_dir / "export")
    metrics = {k: v for k, v in record.items() if isinstance(v, int | float)}
    return {"set": job["set"], "recipe": job["recipe"], "budget": job["budget"], "seed": job["seed"],
            "metrics": metrics, "collapsed": collapse_verdict(metrics) is not None,
            "seconds": record.get("train_seconds"), "run": str(run_dir)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", default="textures,faces,digits,synthetic")
    parser.add_argument("--recipes", default="default,fixed600")
    parser.add_argument("--recipe", action="append", default=[], metavar="NAME=OVERRIDE[,OVERRIDE...]",
                        help="another recipe, as Hydra overrides of stage=vae")
    parser.add_argument("--baseline", default="fixed600", help="the recipe the others are compared with")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--budgets", default="1", help="multiples of the default trainer.max_steps, e.g. 1,2")
    parser.add_argument("--jobs", type=int, default=2, help="runs at once (each on cpu_threads=auto)")
    parser.add_argument("--out", type=Path, default=Path("runs/benchmark/vae-recipes"))
    parser.add_argument("--table-only", action="store_true",
                        help="train nothing: table the runs that finished and list the others as missing")
    args = parser.parse_args(argv)
    recipes = dict(RECIPES)
    for spec in args.recipe:
        name, _, overrides = spec.partition("=")
        recipes[name] = [o for o in overrides.split(",") if o]
    sets, names = args.sets.split(","), args.recipes.split(",")
    unknown = [s for s in sets if s not in SETS] + [r for r in names if r not in recipes]
    if unknown:
        raise SystemExit(f"unknown sets or recipes {unknown}; sets: {sorted(SETS)}, recipes: {sorted(recipes)}")
    base_steps = int(compose_config("train", ["stage=vae"]).trainer.max_steps)
    for s in sets:
        prepare(s)
    jobs = []
    for budget in (float(b) for b in args.budgets.split(",")):
        for s in sets:
            for recipe in names:
                for seed in (int(x) for x in args.seeds.split(",")):
                    steps = round(budget * base_steps)
                    jobs.append({"set": s, "recipe": recipe, "budget": budget, "seed": seed, "max_steps": steps,
                                 "name": f"{s}-{recipe}-{budget:g}x-seed{seed}",
                                 "overrides": [*SETS[s]["overrides"], *filled(recipes[recipe], steps)]})
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        done = list(pool.map(lambda job: run_one(job, args.out, not args.table_only), jobs))
    records = [r for r in done if r is not None]
    missing = [job["name"] for job, r in zip(jobs, done, strict=True) if r is None]
    hardware = f"CPU ({os.cpu_count()} cores, {platform.machine()}), {args.jobs} runs at a time"
    result = {"hardware": hardware, "base_steps": base_steps, "recipes": {n: recipes[n] for n in names},
              "command": "python -m benchmarks.vae_recipes " + " ".join(sys.argv[1:] if argv is None else argv),
              "records": records, "missing": missing,
              **summarise(records, args.baseline if args.baseline in names else None)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "vae_recipes.json").write_text(json.dumps(result, indent=1))
    text = markdown(result, base_steps) + (f"\nNot finished, left out: {', '.join(missing)}\n" if missing else "")
    (args.out / "vae_recipes.md").write_text(f"`{result['command']}` on {result['hardware']}\n\n{text}")
    print(text)
    print(f"{len(records)} runs in {time.monotonic() - start:.0f} s; {args.out / 'vae_recipes.md'}")
    return result


if __name__ == "__main__":
    main()
