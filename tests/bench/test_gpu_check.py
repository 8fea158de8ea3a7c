"""The GPU check's timing driver (bench/gpu_check.py): its recipes are valid, its table reads its
records, and a tiny run on the CPU goes through the code the GPU run takes."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from kdistill.recipe import load_recipe

sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))
spec = importlib.util.spec_from_file_location("gpu_check", Path(__file__).parents[2] / "bench" / "gpu_check.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


@pytest.mark.parametrize("config", list(bench.CONFIGS))
def test_every_workload_in_every_configuration_is_a_valid_recipe(config):
    for work in bench.workloads(quick=False).values():
        recipe = load_recipe(bench.step_recipe(work, bench.CONFIGS[config], "cuda", 4))
        stage = recipe.stages[0]
        assert (stage.epochs, stage.batch_size, stage.data) == (4, work["batch"], "transfer")
        assert (stage.amp, stage.compile, stage.channels_last) == (
            bench.CONFIGS[config].get("amp", False), bench.CONFIGS[config].get("compile", False),
            bench.CONFIGS[config].get("channels_last", False))


def test_the_table_keeps_the_fastest_run_against_float32_and_shows_failures():
    def rec(config, rate, **extra):
        return {"workload": "w", "config": config, "samples_s": rate, "first_epoch_s": 2.0, "peak_mb": 100.0, **extra}

    records = [rec("fp32", 1000.0), rec("bf16", 1500.0), rec("fp32", 800.0), rec("bf16", 1900.0),
               {"workload": "w", "config": "compile", "error": "BackendCompilerFailed: no compiler"}]
    text = "\n".join(bench.steps_table(records, ["fp32", "bf16", "compile"]))
    assert "| w | fp32 | 1000 | 1.00x | 2.0 | 100 | 2 |" in text
    assert "| w | bf16 | 1900 | 1.90x | 2.0 | 100 | 2 |" in text
    assert "| w | compile | failed: BackendCompilerFailed: no compiler | - | - | - | 1 |" in text


def test_a_quick_run_on_the_cpu_writes_its_table(tmp_path):
    bench.main(["--quick", "--device", "cpu", "--parts", "steps", "--configs", "channels_last", "--out", str(tmp_path)])
    records = json.loads((tmp_path / "gpu_check.json").read_text())
    assert [r["config"] for r in records] == ["fp32", "channels_last"]  # the baseline always runs
    assert all(r["samples_s"] > 0 and r["peak_mb"] is None and "error" not in r for r in records)
    text = (tmp_path / "gpu_check.md").read_text()
    assert "Smoke run" in text and "| tiny (8 px) | fp32 |" in text and "| tiny (8 px) | channels_last |" in text
