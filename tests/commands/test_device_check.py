"""The device script (benchmarks/device_check.py) in its CPU mode: every part but the compile one (torch.compile on a
CPU takes minutes; tests/training/test_switches.py checks what it compiles) at toy sizes, one JSON line, and the
time budget that stops it from starting parts it has no time for."""

import json

from benchmarks import device_check


def test_the_cpu_mode_measures_every_part_and_prints_one_json_line(capsys) -> None:
    result = device_check.main(["--tiny", "--parts", "prior_step", "vae_step", "sampling_256"])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == json.loads(json.dumps(result)) and result["size"] == "tiny" and not result["errors"]
    prior = result["parts"]["prior_step"]
    assert set(prior["time_ratio"]) == set(device_check.VARIANTS) and prior["time_ratio"]["lsgm"] == 1.0
    assert all(v > 0 for v in prior["memory_per_image_mib"].values())
    assert result["parts"]["vae_step"]["per_image_mib"] > 0
    sampling = result["parts"]["sampling_256"]
    assert sampling["rk4_2_steps"]["nfe"] == 8 and sampling["ode_tol_1e-2"]["images_per_s"] > 0


def test_parts_past_the_budget_are_skipped_not_started() -> None:
    result = device_check.main(["--tiny", "--budget-s", "0", "--parts", "vae_step", "compile"])
    assert result["skipped"] == ["vae_step", "compile"] and result["parts"] == {}
