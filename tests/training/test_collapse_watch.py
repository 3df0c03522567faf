"""The collapse watch during `stage=vae`: a run built to collapse (beta = 50 on the KL from the first step) is caught
at the first validation after the warm-up, said in one line with the override to rerun, and then warned about,
stopped (exit 1, its checkpoint kept) or given its warm-up again over a longer run, by `stage.on_collapse`."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from latent_ndm.training.run import train
from tests.support import REPO
from tests.support.tiny_runs import base_overrides, vae_cfg

COLLAPSE = ["stage.kl_warmup.beta_min=50", "stage.kl_warmup.beta_max=50", "trainer.max_steps=4"]
WATCH = "latent_ndm.training.callbacks.collapse"


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == WATCH and r.levelno == logging.WARNING]


def test_warn_says_it_once_per_validation_after_the_warm_up_with_the_override_to_rerun(
        tmp_path: Path, tiny_data: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=WATCH)
    result = train(vae_cfg(tmp_path / "run", tiny_data, *COLLAPSE, "stage.kl_warmup.anneal_portion=0.75",
                           "name=faces"))
    lines = warnings_of(caplog)
    assert result.trainer.global_step == 4 and len(lines) == 1  # step 2 is inside the warm-up (it ends at step 3)
    line = lines[0]
    assert "\n" not in line and line.startswith("at step 4 this VAE has a collapsed latent (")
    assert ("rerun the same command with `trainer.max_steps=8 stage.kl_warmup.anneal_portion=1.0 "
            "name=faces-longer`, or add `stage.on_collapse=extend`") in line
    m = result.report["metrics"]
    assert m["explained"] < 0.2 and result.report["collapse"] and result.report["stopped"] is None
    assert 0 <= m["active_units"] <= m["units_checked"] == m["latent_units"] == 48  # 3 x 4 x 4, all checked
    assert "the decoder uses" in result.report["summary"] and "active latent units" not in result.report["summary"]


def test_stop_ends_the_run_at_the_collapse_keeps_its_checkpoint_and_exits_1(tmp_path: Path, tiny_data: Path) -> None:
    run = tmp_path / "run"
    overrides = ["stage=vae", *base_overrides(run, tiny_data), "trainer.val_check_interval=2", "stage.images.num=2",
                 *COLLAPSE, "stage.kl_warmup.anneal_portion=0", "stage.on_collapse=stop"]
    proc = subprocess.run([sys.executable, "-m", "latent_ndm.train", *overrides], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert ("error: stopped at step 2 on a collapsed latent (stage.on_collapse=stop); rerun the same command with "
            "`trainer.max_steps=8") in proc.stderr
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 2 and (run / "export").is_dir()


def test_extend_runs_the_warm_up_again_over_a_longer_run_once_and_a_resume_keeps_it(
        tmp_path: Path, tiny_data: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=WATCH)
    run = tmp_path / "run"
    args = [*COLLAPSE, "stage.kl_warmup.anneal_portion=0", "stage.on_collapse=extend", "stage.extend_portion=0.5"]
    result = train(vae_cfg(run, tiny_data, *args))
    lines = warnings_of(caplog)
    assert result.trainer.global_step == 6 and result.report["kl_warmup_rerun_at"] == 2
    assert "the KL warm-up runs again over 2 more steps (stage.on_collapse=extend), to step 6" in lines[0]
    assert len(lines) == 3 and all("rerun the same command" in line for line in lines[1:])  # once: then it warns
    warmup = result.module.kl_warmup
    assert (warmup.hold_steps, warmup.warmup_steps) == (2, 2) and warmup(2) == 50 == warmup(4)  # beta_min = beta_max
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 6
    assert any(state.get("extended_at") == 2 for state in ckpt["callbacks"].values())
    again = train(vae_cfg(run, tiny_data, *args))  # resumed: the longer run was finished
    assert again.trainer.global_step == 6 and again.module.kl_warmup.hold_steps == 2


def test_the_rerun_hint_doubles_the_run_and_its_warm_up_up_to_the_whole_run() -> None:
    from latent_ndm.training.callbacks.collapse import rerun_hint

    assert rerun_hint("tex", 1500, 0.4) == ("rerun the same command with `trainer.max_steps=3000 "
                                            "stage.kl_warmup.anneal_portion=0.8 name=tex-longer`, or add "
                                            "`stage.on_collapse=extend`")
    assert "anneal_portion" not in rerun_hint("tex", 1500, 1.0)  # the default already anneals over the whole run


@pytest.mark.parametrize("const", [0.0, 0.1, 0.3, 1e-4, 0.5, 0.6667, 0.95])
@pytest.mark.parametrize("anneal", [0.0, 0.05, 0.25, 0.4, 0.5, 0.7, 1.0])
def test_the_rerun_hint_accounts_for_the_hold_and_suggests_a_warm_up_that_is_accepted(
        const: float, anneal: float) -> None:
    """The suggested share is accepted, never shorter than the one given, and (unless the run given already ended
    inside its warm-up) ends within the longer run after its `const` hold: const 0.3 + anneal 0.5 gives 0.7."""
    import re

    from latent_ndm.training.callbacks.collapse import rerun_hint
    from latent_ndm.training.schedules import KLWarmup

    hint = rerun_hint("faces", 1000, anneal, const)
    found = re.search(r"`trainer\.max_steps=2000( stage\.kl_warmup\.anneal_portion=([0-9.]+))? name=faces-longer`",
                      hint)
    assert found, hint
    longer = float(found.group(2)) if found.group(2) else anneal
    warmup = KLWarmup.from_portions(2000, anneal_portion=longer, const_portion=const)
    assert longer >= anneal and (const + anneal > 1 or warmup.end_step <= 2000)
    if const + anneal < 1 and const <= 0.5:
        assert longer > anneal  # room in the run: the warm-up's share grows
    if (const, anneal) == (0.3, 0.5):
        assert longer == 0.7
    assert "anneal_portion" not in rerun_hint("lsgm", 84_400, 1.0, 1e-4)  # LSGM's shares: already the whole run


def test_a_warm_up_that_ends_after_the_run_is_judged_at_the_last_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """LSGM's shares (hold 1e-4, anneal 1.0) end the warm-up 8 steps after an 84,400-step run: the watch judges at
    the last step instead of never."""
    from types import SimpleNamespace

    from latent_ndm.training.callbacks import collapse
    from latent_ndm.training.schedules import KLWarmup

    verdict = SimpleNamespace(headline=lambda what: f"{what} has a collapsed latent")
    monkeypatch.setattr(collapse, "collapse_verdict", lambda m: verdict)
    module = SimpleNamespace(val_metrics={"explained": 0.0},
                             kl_warmup=KLWarmup.from_portions(84_400, anneal_portion=1.0, const_portion=1e-4))
    watch = collapse.CollapseWatch("stop", hint="rerun")
    for step, stops in ((84_399, False), (84_400, True)):
        trainer = SimpleNamespace(sanity_checking=False, global_step=step, max_steps=84_400, is_global_zero=True,
                                  should_stop=False)
        watch.on_validation_end(trainer, module)
        assert trainer.should_stop is stops and watch.stopped is stops
