"""The registry of a run's stateful objects that checkpoints save and resumed runs restore."""

from pathlib import Path

import pytest
import torch
from torch import nn

from kdistill.errors import KDistillError
from kdistill.train.state import VERSION, Modules, RunState, readable


class Counter:
    def __init__(self):
        self.n = 0

    def state_dict(self):
        return {"n": self.n}

    def load_state_dict(self, state):
        self.n = state["n"]


def test_a_checkpoint_holds_every_registered_object_and_gives_each_its_state_back():
    run, counter, linear = RunState(), Counter(), nn.Linear(2, 3)
    run.register("counter", counter)
    run.register("models", Modules({"student": linear}, strict=True))
    counter.n = 7
    saved = run.checkpoint(metrics_lines=4)
    assert saved["version"] == VERSION and saved["metrics_lines"] == 4
    assert set(saved["state"]) == {"counter", "models"} and saved["state"]["counter"] == {"n": 7}
    resumed, fresh, other = RunState(saved["state"]), Counter(), nn.Linear(2, 3)
    resumed.register("counter", fresh)  # given its state as it joins
    resumed.register("models", Modules({"student": other}, strict=True))
    assert fresh.n == 7 and torch.equal(other.weight, linear.weight)


def test_an_object_joining_later_gets_its_state_once_and_leaves_the_checkpoint_when_unregistered():
    resumed = RunState({"loop": {"n": 3}})
    first, second = Counter(), Counter()
    resumed.register("loop", first)  # the loop of the stage resumed
    resumed.unregister("loop")
    resumed.register("loop", second)  # the next stage's loop starts afresh
    assert (first.n, second.n) == (3, 0)
    resumed.unregister("loop")
    assert resumed.state_dict() == {}
    first.n = 9
    resumed.register("loop", first)
    resumed.reload("loop")  # given its saved state again (after a stage's prepare reset it)
    assert first.n == 3


def test_a_version_2_checkpoint_is_read_in_this_layout_and_others_are_refused():
    where = Path("ckpt-s00-e00000-b0000001.pt")
    v2 = {"version": 2, "stage": 1, "loop": None, "ends": {}, "starts": {}, "stage_times": {"a": 1.0},
          "teacher_changed": False, "metrics_lines": 2, "models": {}, "objectives": {}, "features": []}
    now = readable(v2, where)
    assert now["version"] == VERSION and now["metrics_lines"] == 2 and "recipe" not in now
    assert set(now["state"]) == {"fit", "models", "objectives", "features"}  # no loop: written between stages
    assert now["state"]["fit"]["stage"] == 1 and now["state"]["fit"]["best"] == {}  # before keep_best
    assert readable(now, where) is now
    with pytest.raises(KDistillError, match=r"another version of kdistill \(checkpoint version 1, this one reads 3\)"):
        readable({**v2, "version": 1}, where)
    with pytest.raises(KDistillError, match=r"is not a checkpoint kdistill wrote \(no models\)"):
        readable({**now, "state": {k: v for k, v in now["state"].items() if k != "models"}}, where)
    with pytest.raises(KDistillError, match=r"is not a checkpoint kdistill wrote \(no metrics_lines, state, version\)"):
        readable({"step": 3}, where)
