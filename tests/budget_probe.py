"""A clock driven by optimizer steps for the wall-clock budget, and (run under `accelerate launch` by
tests/test_budget.py) a budgeted run whose ranks see different clocks:
`python -m tests.budget_probe CONFIG_JSON SECONDS_PER_STEP_RANK0`."""

import json
import sys
import time

from transformers import TrainerCallback


class StepClock(TrainerCallback):
    """Replaces arena.budget.now: real time plus `seconds_per_step` for every optimizer step begun, so a budget
    stops at a step the test can predict, whatever the machine's speed."""

    def __init__(self, monkeypatch_setattr, seconds_per_step: float):
        self.seconds_per_step, self.steps = seconds_per_step, 0
        monkeypatch_setattr("arena.budget.now", lambda: time.time() + self.seconds_per_step * self.steps)

    def on_step_begin(self, args, state, control, **kwargs):
        self.steps += 1


def _setattr(target: str, value) -> None:
    import importlib

    module, name = target.rsplit(".", 1)
    setattr(importlib.import_module(module), name, value)


def main() -> None:
    """Each rank's clock runs at its own pace (rank r: (r + 1) x the given seconds per step): were the ranks to
    decide alone, rank 1 would stop first. Prints every rank's step at the stop, gathered on the main process."""
    from arena import config, processes, train
    from arena.budget import BudgetStop

    cfg_json, seconds_per_step = sys.argv[1], float(sys.argv[2])
    cfg = config.from_dict(json.loads(cfg_json))
    rank = processes.state(cpu=True).process_index
    stopped = None
    try:
        train.train(cfg, callbacks=[StepClock(_setattr, seconds_per_step * (rank + 1))])
    except BudgetStop as exc:
        stopped = exc.step
    gathered = processes.gather_to_main(stopped, cpu=True)
    if gathered is not None:
        print("STOPS " + json.dumps(gathered), flush=True)
    if processes.finish():
        processes.leave(0)  # as `arena` ends a rank


if __name__ == "__main__":
    main()
