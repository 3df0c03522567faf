"""The benchmark's `jobs=N`: its runs trained N at a time, each as `python -m latent_ndm.train` in a process of its own.

The runs are exactly the ones the sequential benchmark would train (the same override lists); it then finds them
finished and reuses them. A run that finished earlier is skipped, one that was cut resumes. Each process writes its
output to `<logs>/<run name>.log`; the command line is a list (no shell), so no run name or override is ever parsed
by one. Each run's wall-clock is measured beside the others that run at the same time, which the report says.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from latent_ndm.comparison import measure
from latent_ndm.errors import EvaluationError
from latent_ndm.progress import progress
from latent_ndm.runs.config import compose_config

LOGS = "logs"  # <out>/logs/: the runs' output
QUIET = ["trainer.enable_progress_bar=false"]  # many processes, one terminal: no progress bars (not a shaping key)
BEAT_S = 1.0  # how often the wait for the runs looks up (a line only every progress.INTERVAL_S)


@dataclass(frozen=True)
class Job:
    """One run to train: its train overrides, its folder and the file its output goes to."""

    overrides: tuple[str, ...]
    run_dir: Path
    log: Path


def pending(overrides: Sequence[Sequence[str]], logs: Path) -> list[Job]:
    """The runs among `overrides` that have not finished this budget with this configuration, in order, each once.
    Configs are composed here, one after the other (Hydra's global state is not thread-safe)."""
    jobs: dict[Path, Job] = {}
    for ov in overrides:
        cfg = compose_config("train", list(ov))
        run_dir = Path(cfg.run_dir)
        if run_dir not in jobs and measure.finished_run(cfg) is None:
            jobs[run_dir] = Job(tuple(ov), run_dir, logs / f"{run_dir.name}.log")
    return list(jobs.values())


def train_all(overrides: Sequence[Sequence[str]], jobs: int, logs: Path) -> list[Path]:
    """Train every unfinished run of `overrides`, `jobs` at a time; the folders of those trained here. While they
    train, how many are done of how many and the time left (a bar in a terminal, else a line every few seconds).
    Raises one sentence naming every run that failed and its log, after the others have finished."""
    todo = pending(overrides, logs)
    if not todo:
        return []
    print(f"training {len(todo)} runs, {jobs} at a time (output in {logs}/)", flush=True)
    with ThreadPoolExecutor(max(1, jobs)) as pool, progress(total=len(todo), desc="runs trained", unit="runs") as bar:
        futures = [pool.submit(_train, job) for job in todo]
        waiting = set(futures)
        while waiting:
            done, waiting = wait(waiting, timeout=BEAT_S, return_when=FIRST_COMPLETED)
            if done:
                bar.update(len(done))
            else:
                bar.beat()
        codes = [future.result() for future in futures]
    failed = [(job, code) for job, code in zip(todo, codes, strict=True) if code != 0]
    if failed:
        listed = "; ".join(f"{job.run_dir} (exit {code}, output in {job.log})" for job, code in failed)
        raise EvaluationError(f"{len(failed)} of {len(todo)} runs failed to train: {listed}; fix the cause the log "
                              "names and rerun the same command (finished runs are reused, cut ones resume)")
    return [job.run_dir for job in todo]


def _train(job: Job) -> int:
    start = time.perf_counter()
    print(f"  start {job.run_dir}", flush=True)
    code = run_train(job.overrides, job.log)
    print(f"  {'done' if code == 0 else f'FAILED (exit {code})'} {job.run_dir} after "
          f"{time.perf_counter() - start:.0f} s", flush=True)
    return code


def run_train(overrides: Sequence[str], log: Path) -> int:
    """`python -m latent_ndm.train <overrides>` (no progress bar) in a process of its own, without a shell, its
    output appended to `log` after the command line; its exit status."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as out:
        out.write(f"$ python -m latent_ndm.train {' '.join(overrides)}\n")
        out.flush()
        return subprocess.call([sys.executable, "-m", "latent_ndm.train", *overrides, *QUIET], stdout=out,
                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
