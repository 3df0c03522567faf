"""Evaluation results: merged into `evaluation.json` beside the checkpoint (atomically), and printed as a table."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from data_tools.files import atomic_write_text

RESULTS_NAME = "evaluation.json"


def write_results(out_dir: Path, results: dict[str, dict[str, Any]], info: dict[str, Any]) -> Path:
    """Merge `results` (by metric) into `<out_dir>/evaluation.json`; other metrics already there are kept."""
    path = Path(out_dir) / RESULTS_NAME
    existing: dict[str, Any] = {}
    if path.is_file():
        try:
            existing = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            existing = {}  # a corrupt file is replaced, not merged
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    metrics = dict(existing.get("metrics", {}))
    for name, value in results.items():
        metrics[name] = {**value, **info, "time": stamp}
    atomic_write_text(path, json.dumps({"metrics": metrics}, indent=2, sort_keys=True) + "\n")
    return path


def read_results(out_dir: Path) -> dict[str, dict[str, Any]]:
    """The metrics of `<out_dir>/evaluation.json` ({} when there is none)."""
    path = Path(out_dir) / RESULTS_NAME
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8")).get("metrics", {})


def _parts(r: dict[str, Any], name: str) -> str:
    parts = [f"rec {r['rec_bpd']:.4f}", f"neg. entropy {r['neg_entropy_bpd']:.4f}",
             f"cross-entropy {r['cross_entropy_bpd']:.4f}"]
    if f"{name}_iw_bpd" in r:  # with a stochastic prior bound inside (the NELBO of an NDM) it is an estimate only
        label = "IW" if name == "nll" else "IW estimate"
        parts.append(f"k={r['settings']['k']} {label} {r[f'{name}_iw_bpd']:.4f}")
    if "nfe" in r:
        parts.append(f"NFE {r['nfe']:.0f}")
    return ", ".join(parts)


def format_table(results: dict[str, dict[str, Any]], title: str) -> str:
    """A plain-text table: metric, value, unit, details."""
    rows = []
    if "nelbo" in results:
        r = results["nelbo"]
        rows.append(("NELBO", f"{r['nelbo_bpd']:.4f}", "bits/dim", f"{_parts(r, 'nelbo')}; {int(r['count'])} images"))
        if r.get("latent"):
            u = r["latent"]
            checked = u.get("units_checked", u["latent_units"])
            rows.append(("VAE latent", f"{u.get('active_units', float('nan')):.0f}/{checked:.0f}", "used",
                         f"units the decoder uses (of {checked:.0f} checked, {u['latent_units']:.0f} in all; "
                         f"{u['varying_units']:.0f} vary); KL {u['kl_unit_nats']:.3f} nats/unit; decoder-mean PSNR "
                         f"{u['psnr']:.2f} dB; explains {100 * u['explained']:.0f}% of the variation within the "
                         "images"))
    if "nll" in results:
        r = results["nll"]
        for label, entry in (("NLL (ODE)", r), ("NLL (ODE), other t_eps", r.get("at_other_t_eps"))):
            if entry is None:
                continue
            s = entry["settings"]
            cut = f", t_eps {s['t_eps']:g}" if s.get("t_eps") is not None else ""
            rows.append((label, f"{entry['nll_bpd']:.4f}", "bits/dim",
                         f"{_parts(entry, 'nll')}; {s['method']} tol {s['rtol']:g}{cut}; {int(entry['count'])} images"))
    if "fid" in results:
        r = results["fid"]
        rows.append(("FID", f"{r['fid']:.2f}", "", f"{r['num']} samples, {r['settings']['sampler']}, NFE "
                     f"{r['nfe']:.0f}, {r['images_per_s']:.2f} images/s, {r['settings']['extractor']}"))
    if "distance" in results:
        r = results["distance"]
        for e in r["by_sampler"].values():
            se = f" ± {e['se']:.4f}" if e.get("se") is not None else ""
            rows.append((f"energy distance, {e['sampler']}", f"{e['energy_distance']:.4f}", "",
                         f"{se.strip()} over {r['settings']['groups']} groups; {r['num']} samples vs held-out images; "
                         f"NFE {e['nfe']:.0f}, {e['images_per_s']:.2f} images/s"))
    width = max(len(row[0]) for row in rows)
    lines = [title] + [f"  {m:<{width}}  {v:>8} {u:<8}  {d}" for m, v, u, d in rows]
    return "\n".join(lines)
