"""The budget's TrainerCallback: projects, at each optimizer step's end, whether the next step and a save still
fit this process's wall-clock budget; when not, saves now and stops every rank at the same step. After the last
step's save it projects the finish (the validation passes and the adapter's save, train/finish.py) the same way:
when that does not fit, the run stops there, with a whole checkpoint of its last step, and the next process (the
next kernel version) runs only the finish."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from transformers import TrainerCallback

from arena import budget as budget_mod
from arena.budget import EXIT_CODE, BudgetStop, record_path, recorded_stops
from arena.writes import write_text

# What a checkpoint's save is assumed to cost until one has been measured, at least: a whole checkpoint (adapter,
# optimizer state, RNG states) on a slow disk. Measured saves replace it.
SAVE_PRIOR_S = 30.0
RECENT_STEPS = 10  # the step time projected is the longest of the last steps (first ones include warm-up)


class WallBudget(TrainerCallback):
    """Stops training before `seconds` of this process's wall time pass. At each optimizer step's end the main
    process projects the time to the end of the next step, its evaluation if one is due (the last step always has
    one), and a save; when that passes the budget it saves now and stops. At least one step is always trained.
    After the last step's save it projects the finish; when that passes the budget, the run stops there.

    The finish predicts the evaluation's validation rows in `finish_passes(state)` orders (the swapped one, and the
    plain one when the best evaluation's logits were not kept), each pass at the measured evaluation's time x
    `finish_spread` (1 where the processes share the rows as the Trainer's evaluation does; the number of processes
    under FSDP, where each runs every row)."""

    def __init__(self, seconds: float, run_root: str | Path, started: float, eval_batches: int = 0,
                 grad_accum: int = 1, finish_passes: Callable[[object], int] = lambda state: 2,
                 finish_spread: int = 1):
        self.seconds, self.run_root, self.started = seconds, Path(run_root), started
        self.eval_batches, self.grad_accum = eval_batches, grad_accum
        self.finish_passes, self.finish_spread = finish_passes, finish_spread
        self.steps: list[float] = []  # durations of the optimizer steps, without their evaluations and saves
        self.eval_seconds: float | None = None
        self.save_seconds: float | None = None
        self.mark = started  # end of the last thing timed
        self.stopping: dict | None = None

    # ---- the projection ---------------------------------------------------------------------------------------

    def step_estimate(self) -> float:
        return max(self.steps[-RECENT_STEPS:])

    def eval_estimate(self) -> float:
        """Measured, else the evaluation batches at the time of a training micro-batch (a forward and backward
        of as many rows as an evaluation batch's forward of twice as many: an overestimate)."""
        if self.eval_seconds is not None:
            return self.eval_seconds
        return self.eval_batches * self.step_estimate() / self.grad_accum

    def save_estimate(self) -> float:
        return self.save_seconds if self.save_seconds is not None else max(SAVE_PRIOR_S, self.step_estimate())

    def finish_estimate(self, state) -> float:
        """The finish: its validation passes, and loading the best checkpoint and saving the adapter (each counted
        as a checkpoint's save)."""
        return self.finish_passes(state) * self.eval_estimate() * self.finish_spread + 2 * self.save_estimate()

    def projection(self, state, evaluating_now: bool, saving_now: bool) -> dict:
        """Seconds of this process at the end of the next step and its save (and its evaluation when due: the
        Trainer evaluates the last step whatever eval_steps says)."""
        elapsed = budget_mod.now() - self.started
        this_step = (self.eval_estimate() if evaluating_now else 0.0) + (self.save_estimate() if saving_now else 0.0)
        following = state.global_step + 1
        next_eval = following >= state.max_steps or bool(state.eval_steps and following % state.eval_steps == 0)
        projected = (elapsed + this_step + self.step_estimate() + (self.eval_estimate() if next_eval else 0.0)
                     + self.save_estimate())
        return {"elapsed_seconds": round(elapsed, 2), "projected_seconds": round(projected, 2), **self._measured()}

    def finish_projection(self, state) -> dict:
        """Seconds of this process at the end of the finish, from now (the last step's save)."""
        elapsed = budget_mod.now() - self.started
        finish = self.finish_estimate(state)
        return {"elapsed_seconds": round(elapsed, 2), "projected_seconds": round(elapsed + finish, 2),
                **self._measured(), "finish_seconds": round(finish, 3), "finish_passes": self.finish_passes(state)}

    def _measured(self) -> dict:
        return {"step_seconds": round(self.step_estimate(), 3), "eval_seconds": round(self.eval_estimate(), 3),
                "save_seconds": round(self.save_estimate(), 3)}

    # ---- the Trainer's events ---------------------------------------------------------------------------------

    def on_train_begin(self, args, state, control, **kwargs):
        self.mark = budget_mod.now()

    def on_step_end(self, args, state, control, **kwargs):
        t = budget_mod.now()
        self.steps.append(t - self.mark)
        self.mark = t
        stop = False
        if state.is_world_process_zero and state.global_step < state.max_steps:
            forecast = self.projection(state, control.should_evaluate, control.should_save)
            stop = forecast["projected_seconds"] > self.seconds
            if stop:
                self.stopping = forecast
        if _agreed(stop, args):
            control.should_save = True
            control.should_training_stop = True
            self.stopping = self.stopping or {}
        return control

    def on_evaluate(self, args, state, control, **kwargs):
        t = budget_mod.now()
        self.eval_seconds = t - self.mark
        self.mark = t

    def on_save(self, args, state, control, **kwargs):
        t = budget_mod.now()
        self.save_seconds = max(self.save_seconds or 0.0, t - self.mark)
        self.mark = t
        if self.stopping is None and state.global_step >= state.max_steps:
            stop = False
            if state.is_world_process_zero:
                forecast = self.finish_projection(state)
                stop = forecast["projected_seconds"] > self.seconds
                if stop:
                    self.stopping = forecast
            if _agreed(stop, args):
                self.stopping = self.stopping or {}
        if self.stopping is None:
            return
        _barrier(args)  # the main process has written the whole checkpoint before any rank leaves
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        resume = f"arena train --resume {self.run_root}"
        if state.is_world_process_zero:
            self._record(state, checkpoint, resume)
        _barrier(args)
        spent = f"{self.stopping.get('elapsed_seconds', 0):.0f} s of this process's {self.seconds:.4g} s budget spent"
        if state.global_step >= state.max_steps:
            why = (f"training is done, but its finish (~{self.stopping.get('finish_seconds', 0):.1f} s: "
                   f"{self.stopping.get('finish_passes', 0)} validation pass(es) and the adapter's save) would pass "
                   f"it; {checkpoint} is whole, and a resume runs only the finish")
        else:
            why = (f"the next step (~{self.stopping.get('step_seconds', 0):.1f} s) with a save "
                   f"(~{self.stopping.get('save_seconds', 0):.1f} s) would pass it; {checkpoint} is whole")
        raise BudgetStop(f"stopped for time after step {state.global_step} of {state.max_steps}: {spent}, and {why}. "
                         f"Continue with: {resume} (exit code {EXIT_CODE})", state.global_step, checkpoint)

    def _record(self, state, checkpoint: Path, resume: str) -> None:
        stops = recorded_stops(self.run_root)
        stops.append({"step": state.global_step, "max_steps": state.max_steps,
                      "checkpoint": str(checkpoint.relative_to(self.run_root)), "budget_seconds": self.seconds,
                      **self.stopping, "stopped_at": datetime.now().isoformat(timespec="seconds"),
                      "resume": resume})
        write_text(record_path(self.run_root), json.dumps({"stops": stops}, indent=2) + "\n", overwrite=True)


def _distributed(args) -> bool:
    import torch.distributed as dist

    return args.world_size > 1 and dist.is_available() and dist.is_initialized()


def _agreed(stop: bool, args) -> bool:
    """The main process's decision, on every rank (one small broadcast per optimizer step under accelerate)."""
    if not _distributed(args):
        return stop
    import torch
    import torch.distributed as dist

    flag = torch.tensor([1 if stop else 0], device=args.device)
    dist.broadcast(flag, src=0)
    return bool(flag.item())


def _barrier(args) -> None:
    if _distributed(args):
        import torch.distributed as dist

        dist.barrier()


def attach(trainer, run_root: str | Path, hours: float | None, started: float, sharded: bool = False,
           kept=None) -> WallBudget | None:
    """Give `trainer` a budget of `hours` of this process's wall time, counted from `started` (None: no budget).
    `sharded`: under FSDP, where every process runs every row of the finish. `kept`: the run's train.EvalLogits,
    whose `best(state)` are the best evaluation's plain-order logits when they were kept."""
    if hours is None:
        return None
    args = trainer.args
    eval_rows = len(trainer.eval_dataset) if trainer.eval_dataset is not None else 0
    eval_batches = math.ceil(eval_rows / max(args.per_device_eval_batch_size * args.world_size, 1))

    def passes(state) -> int:  # the swapped order, and the plain one unless the best evaluation's logits were kept
        return 1 if kept is not None and kept.best(state) is not None else 2

    budget = WallBudget(hours * 3600, run_root, started, eval_batches, args.gradient_accumulation_steps, passes,
                        args.world_size if sharded else 1)
    trainer.add_callback(budget)
    print(f"wall-clock budget: {hours:g} h ({hours * 3600:.0f} s) for this process; training stops after the last "
          f"step that leaves time to save, or after the last step when its finish does not fit (exit code "
          f"{EXIT_CODE}, resume with --resume)")
    return budget
