"""A normal install works: the wheel built from pyproject.toml carries the configs and every module, installs into a
fresh virtual environment, and trains from outside the source tree."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.support import REPO


def run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=600, env=env)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    proc = run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", out, REPO,
               cwd=out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = out.glob("latent_ndm-*.whl")
    return path


def test_the_wheel_carries_configs_license_and_entry_points(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert "latent_ndm/configs/train.yaml" in names and "latent_ndm/configs/ndm/transform/separable.yaml" in names
    assert sum(n.endswith(".yaml") for n in names) >= 30
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    for package in ("latent_ndm/diffusion/objectives/continuous.py", "vae/model.py", "data_tools/shard.py"):
        assert package in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "latent-ndm-train = latent_ndm.train:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_it_installs_into_a_fresh_venv_and_trains_outside_the_source_tree(wheel: Path, tmp_path: Path,
                                                                          tiny_data: Path) -> None:
    venv = tmp_path / "venv"
    assert run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path).returncode == 0
    python = venv / "bin" / "python"
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp_path)
                .stdout.strip())
    # the dependencies (torch, lightning, ...) come from this environment: the paths only, not its .pth hooks, so
    # the editable install of the source tree is not visible in the new venv
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    proc = run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel,
               cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = run(python, "-c", "import latent_ndm, vae, data_tools; print(latent_ndm.__file__, vae.__file__)",
                cwd=elsewhere, env=env)
    assert where.returncode == 0 and str(REPO) not in where.stdout and str(site) in where.stdout, where.stderr
    job = run(python, "-m", "latent_ndm.train", "stage=vae", "--cfg", "job", cwd=elsewhere, env=env)
    assert job.returncode == 0 and "stage:" in job.stdout and "run_dir: runs/${stage.name}/${name}" in job.stdout
    train = run(venv / "bin" / "latent-ndm-train", "stage=vae", "vae=tiny", f"data.root={tiny_data}",
                "data.resolution=16", "data.num_images=48", "data.batch_size=8", "trainer.fast_dev_run=true",
                "logger=[csv]", "trainer.enable_progress_bar=false", cwd=elsewhere, env=env)
    assert train.returncode == 0, train.stderr[-3000:]
    assert "stage=vae name=default: finished at step 1" in train.stdout
    assert sorted(p.name for p in elsewhere.iterdir()) == []  # fast_dev_run wrote nothing here
