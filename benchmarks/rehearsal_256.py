"""The 256-pixel path, rehearsed on a CPU: real photographs at 256x256 through every command a CelebA-HQ-256 user runs,
with the paper's architectures at a reduced width and a few steps, measuring memory and FLOPs per image.

Stages, each a fresh process (its peak resident memory is its own):

1. `python -m data_tools.real_images photos --size 256 --stride 64`: 48 overlapping 256x256 crops of the two colour
   photographs scikit-learn ships (nothing is downloaded), then `python -m data_tools.shard --resolution 256`;
2. `stage=vae experiment=celebahq256` (5-bit data, the paper VAE: 8x downsampling to 8x32x32 latents, a 10-component
   logistic mixture) at `--width` of its channels, `--steps` steps;
3. `stage=ndm experiment=celebahq256_ndm` (the paper's denoiser and neural F, disjoint) on its 32x32 latents, at
   `--width` of the denoiser's channels;
4. `sample` of 256x256 images (RK4, one step) and `evaluate metrics=[nelbo]`.

While it runs it says which stage of how many has started (each stage's output goes to `<out>/<stage>.log`), and
every 10 s how far the rehearsal is, the time left (from each stage's usual share of the time) and the stage's last
line of output (a bar in a terminal). At the end it prints one line per stage (seconds, peak RSS, and per image
where a stage has a batch), the FLOPs per image of the VAE's forward and of one denoiser forward at the rehearsal
width and at the paper's (counted with `torch.utils.flop_counter` on meta tensors, nothing allocated), beside the
README's estimates, and one JSON line.

How long it takes depends mostly on what else the machine runs. Measured on this round's code on a 2-core AMD EPYC VM
shared with other jobs (load average 6 to 11: three to five busy processes per core): 63 min wall-clock, 22 min of
CPU time (VAE 25 min, NDM 5 min, sample 5 min, evaluate 27 min; the photos and shards 7 s).
Run from the repository root:

    python -m benchmarks.rehearsal_256                  # or `make rehearsal`; see the times above
    python -m benchmarks.rehearsal_256 --width 0.125 --steps 1 --samples 1 --out /tmp/r   # what the test runs
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from latent_ndm.progress import Progress, duration, progress
from latent_ndm.runs.config import scaled_channels

README_ESTIMATES = {"vae_forward_gflop": 690.0, "denoiser_forward_gflop": 145.0}  # README, Paper-scale recipes
# each stage's share (%) of the default rehearsal's time, as measured for the docstring (3 s, 3 s, 25.4 min, 5.1 min,
# 5.2 min, 26.8 min): what the progress' time left is estimated from
SHARE = {"photos": 1, "shard": 1, "vae": 40, "ndm": 8, "sample": 8, "evaluate": 42}
HEARTBEAT_S = 1.0  # how often a running stage is looked at (a progress line only every progress.INTERVAL_S)

PEAK = ("import resource, runpy, sys\n"
        "sys.argv = sys.argv[1:]\n"
        "try:\n"
        "    runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)\n"
        "except SystemExit as e:\n"
        "    code = e.code\n"
        "else:\n"
        "    code = 0\n"
        "print('PEAK_RSS_KIB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, flush=True)\n"
        "sys.exit(code)\n")


def last_output(log: Path, width: int = 100) -> str:
    """The last non-empty line written to `log` so far (after its last carriage return), cut to `width`."""
    try:
        with open(log, "rb") as f:
            f.seek(max(0, log.stat().st_size - 4096))
            tail = f.read().decode(errors="replace")
    except OSError:
        return ""
    lines = [line.rsplit("\r", 1)[-1].strip() for line in tail.splitlines()]
    lines = [line for line in lines if line]
    return lines[-1][:width] if lines else ""


def stage(name: str, module: str, args: list[str], log: Path, bar: Progress | None = None,
          label: str = "") -> dict[str, Any]:
    """Run `python -m module args` in a fresh process, its output (stdout and stderr) written to `log`; its seconds
    and peak RSS (MiB). While it runs, `bar` says every few seconds that `label` has run so long and what it printed
    last. A failure stops the rehearsal with the stage's name and the tail of its output."""
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-c", PEAK, module, *args], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            while True:
                try:
                    code = proc.wait(timeout=HEARTBEAT_S)
                    break
                except subprocess.TimeoutExpired:
                    if bar is not None:
                        last = last_output(log)
                        bar.note(f"{label or name}: {duration(time.perf_counter() - start)} in"
                                 + (f", last output: {last}" if last else ""))
                        bar.beat()
        except BaseException:  # interrupted: the stage goes too
            proc.kill()
            raise
    seconds = time.perf_counter() - start
    text = log.read_text()
    if code != 0:
        tail = "\n".join(text.strip().splitlines()[-15:])
        raise SystemExit(f"rehearsal stage {name} failed (exit {code}; log {log}):\n{tail}")
    peak = [line for line in text.splitlines() if line.startswith("PEAK_RSS_KIB")]
    return {"stage": name, "seconds": seconds, "peak_rss_mib": int(peak[-1].split()[1]) / 1024 if peak else None}


def run_stages(plans: list[tuple[str, str, list[str]]], out: Path) -> list[dict[str, Any]]:
    """Every stage `(name, module, args)` in turn, its output in `<out>/<name>.log`: a line as each starts (stage i
    of n), and the progress of all of them (a bar in a terminal, else a line every few seconds) with the time left
    estimated from each stage's usual share of the time (SHARE)."""
    results = []
    weights = [SHARE.get(name, 100 / len(plans)) for name, _, _ in plans]
    with progress(total=100, desc="rehearsal", unit="%") as bar:
        for i, ((name, module, args), weight) in enumerate(zip(plans, weights, strict=True), 1):
            label = f"stage {i} of {len(plans)} ({name})"
            print(f"{label}: python -m {module} ... (output in {out / f'{name}.log'})", flush=True)
            results.append(stage(name, module, args, out / f"{name}.log", bar, label))
            bar.update(100 * weight / sum(weights))
    return results


def flops_per_image(width: float) -> dict[str, float]:
    """GFLOP of one 256px VAE forward (encode + decode) and one denoiser forward on an 8x32x32 latent, at `width` of
    the paper's channels and at the paper's, on meta tensors."""
    from latent_ndm.networks import UNet
    from vae.model import VAE
    from vae.networks import Decoder, Encoder

    out = {}
    for label, w in (("rehearsal", width), ("paper", 1.0)):
        with torch.device("meta"):
            vc = scaled_channels(128, w, 8)
            enc = dict(in_channels=3, base_channels=vc, channel_mult=(1, 2, 2, 4), num_res_blocks=2,
                       latent_channels=8, num_groups=8, attn_resolutions=(), resolution=256, mid_attention=True)
            vae = VAE(Encoder(**enc), Decoder(out_channels=100, **{k: v for k, v in enc.items() if k != "in_channels"}),
                      likelihood="dml", bits=5, likelihood_kwargs={"num_mix": 10})
            net = UNet(in_channels=8, base_channels=scaled_channels(256, w, 8), channel_mult=(1, 2, 2, 2),
                       num_res_blocks=8, attn_resolutions=(16,), resolution=32, num_groups=8, num_heads=4)
            x, z, t = torch.zeros(1, 3, 256, 256), torch.zeros(1, 8, 32, 32), torch.zeros(1)
            with FlopCounterMode(display=False) as vae_count:
                vae.decoder(vae.encoder(x)[0])
            with FlopCounterMode(display=False) as net_count:
                net(z, t)
        out[f"{label}_vae_forward_gflop"] = vae_count.get_total_flops() / 1e9
        out[f"{label}_denoiser_forward_gflop"] = net_count.get_total_flops() / 1e9
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/rehearsal_256"))
    parser.add_argument("--width", type=float, default=0.25, help="fraction of the paper networks' channels")
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps of each stage")
    parser.add_argument("--batch", type=int, default=2, help="images per step")
    parser.add_argument("--samples", type=int, default=4, help="256x256 images to sample")
    args = parser.parse_args(argv)
    out, w = args.out.resolve(), args.width
    out.mkdir(parents=True, exist_ok=True)
    crops, shards = out / "photos-256", out / "photos-256-shards"
    common = ["trainer.devices=1", "trainer.num_nodes=1", "trainer.strategy=auto", f"trainer.max_steps={args.steps}",
              f"trainer.val_check_interval={args.steps}", "trainer.limit_val_batches=1",
              "trainer.enable_progress_bar=false", f"data.root={shards}", f"data.batch_size={args.batch}",
              "data.num_workers=0", "logger=[]", "optim.scheduler.warmup_steps=1"]
    vae_width = [f"vae.encoder.base_channels={scaled_channels(128, w, 8)}", "vae.encoder.num_groups=8"]
    ndm_width = [f"ndm.denoiser.base_channels={scaled_channels(256, w, 8)}", "ndm.denoiser.num_groups=8",
                 "ndm.denoiser.num_res_blocks=2"]
    stages = run_stages([
        ("photos", "data_tools.real_images", ["photos", str(crops), "--size", "256", "--stride", "64"]),
        ("shard", "data_tools.shard", [str(crops), str(shards), "--resolution", "256", "--shard-size", "16",
                                       "--quiet"]),
        ("vae", "latent_ndm.train", ["stage=vae", "experiment=celebahq256", f"run_dir={out / 'vae'}", *common,
                                     *vae_width, "stage.kl_warmup.const_portion=0", "stage.images.every_n_steps=0"]),
        ("ndm", "latent_ndm.train", ["experiment=celebahq256_ndm", f"run_dir={out / 'ndm'}",
                                     f"vae_export={out / 'vae' / 'export'}", "ndm.mode=disjoint", *common,
                                     *vae_width, *ndm_width, "stage.collapsed_vae=warn", "stage.images.num=2",
                                     "stage.images.steps=2", "stage.images.every_n_steps=0"]),
        ("sample", "latent_ndm.sample", [f"ckpt={out / 'ndm'}", f"num={args.samples}", "sampler=rk4",
                                         "sampler.steps=1", f"batch_size={args.samples}", "progress=false",
                                         f"out={out / 'samples'}", "overwrite=true"]),
        ("evaluate", "latent_ndm.evaluate", [f"ckpt={out / 'ndm'}", "metrics=[nelbo]", "limit=4",
                                             f"batch_size={args.batch}"]),  # its progress lines: in its log
    ], out)
    per_image = {"vae": args.batch, "ndm": args.batch, "sample": args.samples, "evaluate": args.batch}
    for s in stages:
        if s["stage"] in per_image and s["peak_rss_mib"] is not None:
            s["images_per_process_step"] = per_image[s["stage"]]
    from PIL import Image

    size = Image.open(out / "samples" / "grid.png").size
    flops = flops_per_image(w)
    nelbo = json.loads((out / "ndm" / "export" / "evaluation.json").read_text())["metrics"]["nelbo"]["nelbo_bpd"]
    result = {"width": w, "steps": args.steps, "batch": args.batch, "stages": stages, "flops": flops,
              "readme_estimates": README_ESTIMATES, "sample_grid_px": list(size), "nelbo_bpd": nelbo}
    print(f"256px rehearsal at {w:g} of the paper's widths, {args.steps} steps at batch {args.batch} (CPU):")
    for s in stages:
        rss = "" if s["peak_rss_mib"] is None else f", peak RSS {s['peak_rss_mib']:.0f} MiB"
        print(f"  {s['stage']:<9} {s['seconds']:6.1f} s{rss}")
    est = README_ESTIMATES
    print(f"  FLOPs per image, forward: VAE {flops['rehearsal_vae_forward_gflop']:.1f} GFLOP here, "
          f"{flops['paper_vae_forward_gflop']:.0f} at the paper's width (README: ~{est['vae_forward_gflop']:.0f}); "
          f"denoiser {flops['rehearsal_denoiser_forward_gflop']:.1f} here, "
          f"{flops['paper_denoiser_forward_gflop']:.0f} at the paper's (README: ~{est['denoiser_forward_gflop']:.0f})")
    print(f"  samples: {out / 'samples' / 'grid.png'} ({size[0]}x{size[1]}); NELBO {nelbo:.3f} bits/dim")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
