"""The wall-clock budget: the projection stops after the last step that leaves time to save (the last step's
evaluation counted), or after the last step when its finish does not fit; a stop saves a whole checkpoint, records
itself and exits 75; --resume then ends exactly as an uninterrupted run; under accelerate every rank stops at the
main process's step."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from safetensors.torch import load_file

from arena import budget, cli, train
from arena.budget.callback import WallBudget
from arena.layout import RunFolder
from tests.budget_probe import StepClock
from tests.launching import cfg_json, launch
from tests.tiny import tiny_train_cfg


def _state(step, max_steps=100, eval_steps=0):
    return SimpleNamespace(global_step=step, max_steps=max_steps, eval_steps=eval_steps, is_world_process_zero=True)


def _control(evaluate=False, save=False):
    return SimpleNamespace(should_evaluate=evaluate, should_save=save, should_training_stop=False)


def test_it_stops_after_the_last_step_that_leaves_time_to_save(tmp_path, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(budget, "now", lambda: clock[0])
    args = SimpleNamespace(world_size=1, output_dir=str(tmp_path / "checkpoints"))
    wall = WallBudget(100, tmp_path, started=1000.0)
    wall.on_train_begin(args, _state(0), _control())
    wall.save_seconds = 5.0  # as measured at an earlier save
    for step in range(1, 20):
        clock[0] += 10  # every step takes 10 s
        control = wall.on_step_end(args, _state(step), _control())
        if control.should_training_stop:
            break
    # after step 8 (80 s) the next step and a save end at 95 s; after step 9 they would end at 105 s
    assert step == 9 and control.should_save
    assert wall.stopping == {"elapsed_seconds": 90.0, "projected_seconds": 105.0, "step_seconds": 10.0,
                             "eval_seconds": 0.0, "save_seconds": 5.0}
    with pytest.raises(budget.BudgetStop) as stop:
        wall.on_save(args, _state(9), control)
    assert stop.value.step == 9 and stop.value.exit_code == budget.EXIT_CODE == 75
    (record,) = budget.recorded_stops(tmp_path)
    assert record["step"] == 9 and record["checkpoint"] == "checkpoints/checkpoint-9"
    assert record["resume"] == f"arena train --resume {tmp_path}"


def test_a_due_evaluation_and_the_unmeasured_save_are_projected(tmp_path, monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(budget, "now", lambda: clock[0])
    args = SimpleNamespace(world_size=1, output_dir=str(tmp_path))
    wall = WallBudget(200, tmp_path, started=0.0, eval_batches=6, grad_accum=2)
    wall.on_train_begin(args, _state(0), _control())
    clock[0] = 20
    # step 2 is an evaluation step: 6 batches at half a 20 s step (2 micro-batches) = 60 s; no save measured: 30 s
    assert not wall.on_step_end(args, _state(1, eval_steps=2), _control()).should_training_stop
    assert wall.projection(_state(1, eval_steps=2), False, False)["projected_seconds"] == 20 + 20 + 60 + 30
    clock[0] = 40
    # now evaluating and saving step 2 (60 + 30 s), then step 3 and its save: 40 + 90 + 20 + 30 = 180 s
    assert not wall.on_step_end(args, _state(2, eval_steps=2), _control(True, True)).should_training_stop
    clock[0] = 140  # the evaluation and save took 100 s; step 3 took 40 s more: the last step fitting 200 s
    wall.on_evaluate(args, _state(2), _control())
    assert wall.eval_seconds == 100
    clock[0] = 180
    assert wall.on_step_end(args, _state(3, eval_steps=2), _control()).should_training_stop


def test_the_last_steps_evaluation_is_projected_whatever_eval_steps_says(tmp_path, monkeypatch):
    monkeypatch.setattr(budget, "now", lambda: 10.0)
    wall = WallBudget(1000, tmp_path, started=0.0)
    wall.steps, wall.eval_seconds, wall.save_seconds = [10.0], 50.0, 5.0
    # step 5 of 5 is evaluated although 5 % 3 != 0 (the Trainer evaluates the last step): 10 + 10 + 50 + 5
    assert wall.projection(_state(4, max_steps=5, eval_steps=3), False, False)["projected_seconds"] == 75
    assert wall.projection(_state(3, max_steps=6, eval_steps=3), False, False)["projected_seconds"] == 25


@pytest.mark.parametrize("spread, stops", [(1, False), (2, True)])
def test_after_the_last_steps_save_a_finish_that_does_not_fit_stops_the_run(tmp_path, monkeypatch, spread, stops):
    monkeypatch.setattr(budget, "now", lambda: 900.0)
    args = SimpleNamespace(world_size=1, output_dir=str(tmp_path / "checkpoints"))
    wall = WallBudget(1000, tmp_path, started=0.0, finish_passes=lambda state: 1, finish_spread=spread)
    wall.steps, wall.eval_seconds, wall.save_seconds, wall.mark = [10.0], 80.0, 5.0, 895.0
    # the last step's save ends at 900 s; the finish: one pass at the evaluation's 80 s (x 2 when every process runs
    # every row, under FSDP) and two saves: 900 + 90 = 990 s fits the 1000 s, 900 + 170 = 1070 s does not
    if not stops:
        assert wall.on_save(args, _state(5, max_steps=5), _control()) is None
        assert budget.recorded_stops(tmp_path) == []
        return
    with pytest.raises(budget.BudgetStop, match="training is done, but its finish .* would pass it") as stop:
        wall.on_save(args, _state(5, max_steps=5), _control())
    assert stop.value.step == 5
    (record,) = budget.recorded_stops(tmp_path)
    assert record["step"] == record["max_steps"] == 5 and record["finish_seconds"] == 170
    assert record["projected_seconds"] == 1070 and record["checkpoint"] == "checkpoints/checkpoint-5"


def test_no_stop_on_the_last_step_and_none_without_a_budget(tmp_path, monkeypatch):
    monkeypatch.setattr(budget, "now", lambda: 1e9)  # long past any budget
    wall = WallBudget(1, tmp_path, started=0.0)
    args = SimpleNamespace(world_size=1, output_dir=str(tmp_path))
    wall.on_train_begin(args, _state(0), _control())
    assert not wall.on_step_end(args, _state(5, max_steps=5), _control()).should_training_stop
    from arena.budget.callback import attach

    assert attach(SimpleNamespace(), tmp_path, None, 0.0) is None


def _adapter(path: Path) -> dict[str, torch.Tensor]:
    return load_file(path / "adapter_model.safetensors")


def test_a_stop_for_time_then_resume_ends_as_one_uninterrupted_run(tiny_model_dir, sample_csv, tmp_path,  # noqa: F811
                                                                    monkeypatch):
    steps = ["train.max_steps=6", "train.eval_steps=3", "train.eval_on_start=false"]  # the clock times steps only
    whole = RunFolder(train.train(tiny_train_cfg(tiny_model_dir, sample_csv, tmp_path / "whole", *steps)))

    cfg = tiny_train_cfg(tiny_model_dir, sample_csv, tmp_path / "runs", *steps, "train.max_wall_hours=0.1")
    with pytest.raises(budget.BudgetStop) as stop:
        # 60 s per step against 360 s: step 3 with its first evaluation (3 batches, projected at a step's time
        # each) and a save would end at 420 s, so it stops after step 2
        train.train(cfg, callbacks=[StepClock(monkeypatch.setattr, 60)])
    (run_dir,) = (tmp_path / "runs").iterdir()
    run = RunFolder(run_dir)
    assert stop.value.step == 2 and not run.adapter.exists() and not run.metrics.exists()
    assert train.last_complete_checkpoint(run) == run.checkpoints / "checkpoint-2"
    (record,) = budget.recorded_stops(run.root)
    assert record["step"] == 2 and record["max_steps"] == 6 and record["elapsed_seconds"] < 360
    assert record["projected_seconds"] > 360

    resumed = RunFolder(train.train(tiny_train_cfg(tiny_model_dir, sample_csv, tmp_path / "runs", *steps),
                                    resume=str(run.root)))
    assert resumed == run
    assert json.loads(run.metrics.read_text())["global_step"] == json.loads(whole.metrics.read_text())["global_step"] == 6
    for a, b in ((whole.checkpoints / "checkpoint-6", run.checkpoints / "checkpoint-6"), (whole.adapter, run.adapter)):
        left, right = _adapter(a), _adapter(b)
        assert left.keys() == right.keys() and len(left) > 4
        for name in left:
            torch.testing.assert_close(left[name], right[name], rtol=1e-5, atol=1e-6, msg=name)


def test_the_cli_flag_stops_with_exit_code_75(tiny_model_dir, sample_csv, tmp_path, capsys):  # noqa: F811
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(tiny_train_cfg(tiny_model_dir, sample_csv, tmp_path / "runs").to_dict()))
    # a budget spent before the first step: the first step is always trained, then it stops
    assert cli.main(["train", "--config", str(recipe), "--max-wall-hours", "1e-7"]) == 75
    (run_dir,) = (tmp_path / "runs").iterdir()
    out = capsys.readouterr().out
    assert "budget: stopped for time after step 1 of 4" in out
    assert f"Continue with: arena train --resume {run_dir}" in out
    assert (run_dir / "checkpoints" / "checkpoint-1" / "trainer_state.json").is_file()
    assert budget.recorded_stops(run_dir)[0]["step"] == 1


def test_every_rank_stops_at_the_main_process_step(tiny_model_dir, tmp_path):
    from arena import data

    csv = tmp_path / "train.csv"
    data.write_csv(data.generate_sample(80, seed=1), csv)
    runs = tmp_path / "runs"
    cfg = cfg_json(tiny_model_dir, csv, runs, train={"max_steps": 6, "eval_steps": 3, "max_wall_hours": 0.1,
                                                             "eval_on_start": False})  # the clock times steps only
    # rank 0's clock: 60 s per step against 360 s; 2 micro-batches per step, so its 3 evaluation batches are
    # projected at 90 s: step 3 with its evaluation and save, then step 4 and a save, would end at 450 s, so it stops
    # after step 3. Rank 1's clock runs twice as fast: alone it would stop after step 2.
    proc = launch("tests.budget_probe", cfg, "60", cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr[-3000:]
    stops = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("STOPS ")).removeprefix("STOPS "))
    assert stops == [3, 3]
    (run_dir,) = runs.iterdir()
    assert budget.recorded_stops(run_dir)[0]["step"] == 3
    assert train.last_complete_checkpoint(RunFolder(run_dir)) == run_dir / "checkpoints" / "checkpoint-3"
