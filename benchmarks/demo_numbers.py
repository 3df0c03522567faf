"""After `make demo`: every number the README's demo table quotes, compared with what the demo's commands wrote.

    python -m benchmarks.demo_numbers                 # in the folder where `make demo` ran
    python -m benchmarks.demo_numbers --tolerance 0.02  # another CPU: the demo repeats to about +-0.02 bits/dim

The README's table "`make demo` from a fresh clone" has one row per training command (model | val NELBO |
cross-entropy | training | command). Each command's run folder is `runs/<stage>/<name>` (name `default` unless the
command gives `name=`), and its `export/metrics.yaml` holds the last validation's numbers. A quoted number is the same
when the measured one, printed with as many decimals as the README quotes, reads the same (or, with `--tolerance`,
lies within it). One line per number; exit status 1 when any differs or is missing, so the README's claim "the numbers
are the previous round's to the last digit" can be checked rather than trusted. The unit tests cannot check it: they
never train at full size.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

TABLE_TITLE = "**`make demo` from a fresh clone**"
NUMBER = r"([0-9]+\.[0-9]+)"
# (pattern in the "val NELBO" cell, key of metrics.yaml); the first, unlabelled number is the NELBO
NELBO_CELL = ((rf"^{NUMBER}", "nelbo_bpd"), (rf"\brec {NUMBER}", "rec_bpd"), (rf"\bKL {NUMBER}", "kl_bpd"),
              (rf"\bPSNR {NUMBER}", "psnr"))
CROSS_ENTROPY = "cross_entropy_bpd"


@dataclass(frozen=True)
class Quoted:
    """One number of the table: the run it is about, the metric, and the text the README prints."""

    run: Path
    key: str
    text: str

    @property
    def decimals(self) -> int:
        return len(self.text.partition(".")[2])


def run_folder(command: str, runs: Path) -> Path:
    """`runs/<stage>/<name>` of a `python -m latent_ndm.train ...` command."""
    args = dict(a.split("=", 1) for a in shlex.split(command) if "=" in a and not a.startswith(("+", "~")))
    if "stage" not in args:
        raise ValueError(f"the README's demo command `{command}` names no stage=")
    return runs / args["stage"] / args.get("name", "default")


def quoted_numbers(readme: str, runs: Path) -> list[Quoted]:
    """The numbers of the README's demo table, each with the run and the metrics key it quotes."""
    lines = readme.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.startswith(TABLE_TITLE))
    except StopIteration:
        raise ValueError(f"the README has no table titled {TABLE_TITLE}") from None
    rows = []
    for line in lines[start + 1:]:
        if rows and not line.startswith("|"):
            break
        if line.startswith("|") and not set(line) <= set("|-: "):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    found = []
    for cells in rows[1:]:  # the first row is the header
        command = re.search(r"`([^`]+)`", cells[-1])
        if command is None:
            continue
        run = run_folder(command.group(1), runs)
        for pattern, key in NELBO_CELL:
            match = re.search(pattern, cells[1])
            if match:
                found.append(Quoted(run, key, match.group(1)))
        if re.fullmatch(NUMBER, cells[2]):
            found.append(Quoted(run, CROSS_ENTROPY, cells[2]))
    if not found:
        raise ValueError(f"the README's table {TABLE_TITLE} quotes no numbers this check can read")
    return found


def measured(quoted: Quoted) -> float | None:
    """The run's value of the quoted metric (its export's metrics.yaml), or None when the run or the key is missing."""
    path = quoted.run / "export" / "metrics.yaml"
    if not path.is_file():
        return None
    value = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get(quoted.key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def compare(numbers: Sequence[Quoted], tolerance: float = 0.0) -> list[str]:
    """One line per number: "same" (or "within" the tolerance), "DIFFERENT" or "MISSING", the run, the key, the two."""
    lines = []
    for q in numbers:
        value = measured(q)
        where = f"{q.run} {q.key}"
        if value is None:
            lines.append(f"MISSING    {where}: the README quotes {q.text}; run `make demo` first")
            continue
        shown = f"{value:.{q.decimals}f}"
        same = shown == q.text if tolerance == 0 else abs(value - float(q.text)) <= tolerance
        verdict = ("same" if tolerance == 0 else "within") if same else "DIFFERENT"
        lines.append(f"{verdict:10s} {where}: README {q.text}, measured {shown}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readme", type=Path, default=Path("README.md"), help="the README whose demo table to check")
    parser.add_argument("--runs", type=Path, default=Path("runs"), help="the runs folder `make demo` wrote")
    parser.add_argument("--tolerance", type=float, default=0.0,
                        help="accept a difference up to this (0: the same digits as quoted)")
    args = parser.parse_args(argv)
    try:
        lines = compare(quoted_numbers(args.readme.read_text(encoding="utf-8"), args.runs), args.tolerance)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    bad = [line for line in lines if line.startswith(("DIFFERENT", "MISSING"))]
    agree = "are the same" if args.tolerance == 0 else f"are within {args.tolerance:g}"
    print(f"{len(lines) - len(bad)} of {len(lines)} numbers of the README's demo table {agree}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
