"""The speed benchmark measures what it says, on tiny models."""

import importlib.util
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))
spec = importlib.util.spec_from_file_location("speed_bench", Path(__file__).parents[2] / "bench" / "speed.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_multiply_adds_counted_by_hand():
    # conv 1->2, 3x3, 8x8 output: 2*64 outputs x 9 MACs; linear over the flattened 2*8*8 = 128 -> 10
    spec = {"model": "cnn", "args": {"channels": [2], "image_size": 8}}
    assert bench.macs(spec, (1, 8, 8)) == 2 * 64 * 9 + 10 * 128


def test_teachers_are_about_10x_and_50x_the_student():
    student = bench.macs(bench.STUDENT, (1, 28, 28))
    ratios = [bench.macs(t, (1, 28, 28)) / student for t in bench.TEACHERS.values()]
    assert 7 < ratios[0] < 13 and 40 < ratios[1] < 60


def test_one_configuration_times_every_epoch(tmp_path):
    result = bench.measure("cached", bench.QUICK_TEACHERS["tiny CNN"], bench.QUICK_STUDENT, True, 2, 256, 1,
                           str(tmp_path))
    assert len(result["epochs_s"]) == 2 and result["build_s"] > 0 and result["peak_bytes"] > 0
    assert result["epoch_s"] == result["epochs_s"][1]  # the first epoch (warm-up) is left out
    assert any(tmp_path.iterdir())  # the cache was built on disk


def test_table_ratios(tmp_path):
    def cfg(epoch, build=0.0):
        return {"epoch_s": epoch, "build_s": build, "peak_bytes": 2**20}

    rows = [{"teacher": "T", "ratio": 10.0, "alone": cfg(2.0), "live": cfg(8.0), "cached": cfg(2.2, build=4.0)}]
    text = bench.write_table(rows, tmp_path / "s.md", 3, 2, 100, "cpu")
    # (b)/(a) 4.00x, (c)/(a) 1.10x, build 2 epochs of (a), 10 epochs: 80 / (4 + 22) = 3.08x
    assert "| T | 10.0x | 2.00 | 4.00x | 1.10x | 2.00 epochs | 3.08x | 1 / 1 / 1 |" in text


def test_repeated_rounds_keep_the_fastest_epoch_and_build_and_the_largest_memory():
    first = {"epoch_s": 3.0, "build_s": 1.0, "peak_bytes": 5, "epochs_s": [4.0, 3.0]}
    second = {"epoch_s": 2.5, "build_s": 1.5, "peak_bytes": 4, "epochs_s": [3.0, 2.5]}
    kept = bench.best(bench.best(None, first), second)
    assert (kept["epoch_s"], kept["build_s"], kept["peak_bytes"]) == (2.5, 1.0, 5)
    assert kept["epochs_s"] == [4.0, 3.0, 3.0, 2.5]
