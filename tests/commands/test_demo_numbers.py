"""`python -m benchmarks.demo_numbers` reads the README's demo table and compares each quoted number with the run it
quotes: the same digits pass, one digit off fails, a missing run fails, and the real README's table is readable."""

from __future__ import annotations

from pathlib import Path

import yaml

from benchmarks.demo_numbers import main, quoted_numbers
from tests.support import REPO

README = """# x

**`make demo` from a fresh clone** (words):

| model | val NELBO (bits/dim) | cross-entropy | training | command |
|---|---|---|---|---|
| VAE | 5.0857 (rec 4.2871 + KL 0.7986), PSNR 27.45 dB | | 1500 steps | `python -m latent_ndm.train stage=vae` |
| LSGM | 4.5427 | 0.1392 | 600 steps | `python -m latent_ndm.train stage=ndm ndm/transform=identity name=lsgm` |

After the table.
"""


def write_runs(root: Path, vae_nelbo: float) -> Path:
    runs = root / "runs"
    for run, metrics in {"vae/default": {"nelbo_bpd": vae_nelbo, "rec_bpd": 4.28712, "kl_bpd": 0.79861,
                                         "psnr": 27.4549},
                         "ndm/lsgm": {"nelbo_bpd": 4.54268, "cross_entropy_bpd": 0.13921}}.items():
        (runs / run / "export").mkdir(parents=True)
        (runs / run / "export" / "metrics.yaml").write_text(yaml.safe_dump(metrics))
    (root / "README.md").write_text(README)
    return runs


def check(root: Path, *extra: str) -> int:
    return main(["--readme", str(root / "README.md"), "--runs", str(root / "runs"), *extra])


def test_the_same_digits_pass_and_one_digit_off_fails(tmp_path: Path, capsys) -> None:
    write_runs(tmp_path / "same", vae_nelbo=5.08571)
    assert check(tmp_path / "same") == 0
    assert "6 of 6 numbers" in capsys.readouterr().out
    write_runs(tmp_path / "off", vae_nelbo=5.08581)
    assert check(tmp_path / "off") == 1
    out = capsys.readouterr().out
    assert "DIFFERENT  " in out and "README 5.0857, measured 5.0858" in out and "5 of 6 numbers" in out
    assert check(tmp_path / "off", "--tolerance", "0.02") == 0
    assert "6 of 6 numbers of the README's demo table are within 0.02" in capsys.readouterr().out


def test_a_missing_run_fails(tmp_path: Path, capsys) -> None:
    (tmp_path / "README.md").write_text(README)
    assert check(tmp_path) == 1
    assert "MISSING" in capsys.readouterr().out


def test_the_readmes_demo_table_is_readable() -> None:
    numbers = quoted_numbers((REPO / "README.md").read_text(encoding="utf-8"), Path("runs"))
    runs = {q.run.as_posix() for q in numbers}
    assert runs == {"runs/vae/default", "runs/ndm/default", "runs/ndm/lsgm"}
    assert {"nelbo_bpd", "cross_entropy_bpd", "rec_bpd", "kl_bpd", "psnr"} <= {q.key for q in numbers}
