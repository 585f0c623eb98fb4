"""Every recipe in configs/ loads and trains 2 steps with its own architecture at tiny size, so none rots; its
comments say what the file does."""

import json
import re
from pathlib import Path

import pytest

from arena import config, data, task, train

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted(p for p in (REPO / "configs").glob("*.yaml") if p.stem != "default")
ARCHITECTURE = {"gemma2": "gemma2", "llama3": "llama", "mistral": "mistral", "phi-2": "phi"}


def architecture_of(recipe: Path) -> str:
    return next(arch for prefix, arch in ARCHITECTURE.items() if recipe.stem.startswith(prefix))


@pytest.fixture(scope="module")
def small_train_files(tmp_path_factory) -> dict[task.Task, Path]:
    """The generated sample in each task's own form (the WSDM recipe reads a two-way parquet file)."""
    folder = tmp_path_factory.mktemp("recipes")
    files = {}
    for each in (task.THREE_WAY, task.TWO_WAY):
        files[each] = folder / each.train_file
        data.write_csv(data.generate_sample(40, seed=3, task=each), files[each])
    return files


def test_every_recipe_has_an_architecture():
    assert RECIPES and all(architecture_of(r) for r in RECIPES)


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_trains_two_steps_at_tiny_size(recipe, tmp_path, small_train_files):
    from tests.tiny import save_tiny_model, tiny_config

    cfg = config.load(recipe)
    layers = max(cfg.peft.layers_to_transform or [1]) + 1
    model_dir = tmp_path / "base"
    save_tiny_model(model_dir, architecture_of(recipe), num_hidden_layers=layers)
    assert tiny_config(architecture_of(recipe)).model_type == architecture_of(recipe)
    train_file = small_train_files[task.of_config(cfg)]
    cfg = config.load(recipe, [
        f"model.path={model_dir}", f"data.train={train_file}", f"train.runs_dir={tmp_path / 'runs'}",
        "train.max_steps=2", "train.eval_steps=2", "train.per_device_batch_size=2", "train.grad_accum=1",
        "train.max_eval_rows=6", "prompt.max_length=256", "prompt.min_tokens=8", "infer.max_length=256",
    ])
    run_dir = train.train(cfg)
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert summary["global_step"] == 2 and summary["metric"] == task.of_config(cfg).metric
    saved = config.load(run_dir / "config.yaml")
    assert saved.peft == cfg.peft and saved.model.family == cfg.model.family
    adapter = json.loads((run_dir / "adapter" / "adapter_config.json").read_text())
    assert sorted(adapter["target_modules"]) == sorted(cfg.peft.target_modules)
    assert adapter["r"] == cfg.peft.r


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_a_recipes_comments_say_what_the_file_does(recipe):
    """Its launch line trains this recipe, and a "global batch A x B x C = N" is its per-device batch x grad_accum x
    processes."""
    text = recipe.read_text()
    assert all(named == f"configs/{recipe.name}" for named in re.findall(r"--config (configs/\S+\.yaml)", text))
    cfg = config.load(recipe)
    for rows, accum, processes, total in re.findall(r"global batch (\d+) x (\d+) x (\d+) = (\d+)", text):
        assert (int(rows), int(accum)) == (cfg.train.per_device_batch_size, cfg.train.grad_accum), recipe.name
        assert int(rows) * int(accum) * int(processes) == int(total), recipe.name
