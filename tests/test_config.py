from pathlib import Path

import pytest

from arena import cli, config
from arena.config import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_default_config_is_used_without_path():
    cfg = config.load()
    assert cfg.name == "default"
    assert cfg.model.path == "embedded:gemma3-270m"
    assert cfg.model.quantization == "nf4" and cfg.peft.method == "lora"


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_recipe_loads(path):
    cfg = config.load(path)
    assert cfg.name == path.stem
    assert cfg.prompt.max_length <= cfg.infer.max_length


def test_set_overrides_nested_keys_with_yaml_types():
    cfg = config.load(None, ["train.epochs=2", "peft.target_modules=[q_proj, v_proj]", "data.max_rows=null",
                             "prompt.show_lengths=false", "train.learning_rate=1e-4"])
    assert cfg.train.epochs == 2.0 and isinstance(cfg.train.epochs, float)
    assert cfg.peft.target_modules == ["q_proj", "v_proj"]
    assert cfg.data.max_rows is None
    assert cfg.prompt.show_lengths is False
    assert cfg.train.learning_rate == 1e-4


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epoch=2", "unknown key 'train.epoch'"),
        ("nope.x=1", "unknown key 'nope'"),
        ("train.per_device_batch_size=two", "train.per_device_batch_size: expected int"),
        ("prompt.show_lengths=1", "prompt.show_lengths: expected true/false"),
        ("model.quantization=fp8", "model.quantization: 'fp8' is not one of"),
        ("peft.target_modules=q_proj", "peft.target_modules: expected a list"),
        ("train.epochs", "expected key=value"),
        ("train.swap_augment=both", "train.swap_augment: 'both' is not one of none, random, paired"),
        ("train.distill_weight=1.5", "train.distill_weight: 1.5 must be at most 1"),
        ("train.distill_temperature=0", "train.distill_temperature: 0.0 must be above 0"),
        ("data.teacher=oof.csv", "data.teacher: expected a list"),
    ],
)
def test_bad_overrides_name_the_full_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        config.load(None, [override])


def test_replace_sets_typed_values_and_checks_the_whole_config_once():
    cfg = config.load()
    path = "/data/runs #2: fold runs"  # as a --set string, YAML would read a comment and a mapping in it
    changed = config.replace(cfg, {"data.fold": 2, "train.runs_dir": path, "name": "fold2"})
    assert (changed.data.fold, changed.train.runs_dir, changed.name) == (2, path, "fold2")
    assert changed.data.folds == cfg.data.folds and cfg.data.fold == 0  # the rest kept; cfg itself untouched
    with pytest.raises(ConfigError, match=r"set by arena: data.fold: 5 is not in 0..4"):
        config.replace(cfg, {"data.fold": 5})
    with pytest.raises(ConfigError) as caught:
        config.replace(cfg, {"train.per_device_batch_size": 0, "data.folds": 1})
    assert len(caught.value.problems) == 2, caught.value.problems  # every problem at once


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["train.swap_augment=paired", "train.per_device_batch_size=3"],
         "--set: train.per_device_batch_size: 3 is odd: train.swap_augment paired puts each row and its swapped twin"),
        (["train.swap_augment=paired", "train.sampling=group_by_length"],
         "--set: train.sampling: group_by_length would split the swapped twins"),
        (["data.teacher=[a.csv]", "train.teacher_weights=[1, 2]"],
         "--set: train.teacher_weights: 2 weight(s) for 1 teacher CSV(s) in data.teacher"),
    ],
)
def test_keys_that_do_not_fit_together_are_named(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        config.load(None, overrides)


@pytest.mark.parametrize("old, new", [(True, "random"), (False, "none")])
def test_older_true_false_swap_augment_still_loads(tmp_path, old, new):
    path = tmp_path / "config.yaml"
    path.write_text(f"train:\n  swap_augment: {str(old).lower()}\n")
    assert config.load(path).train.swap_augment == new


def test_unknown_key_in_yaml_names_file_and_path(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  quantisation: nf4\n")
    with pytest.raises(ConfigError) as err:
        config.load(path)
    assert str(path) in str(err.value) and "model.quantisation" in str(err.value)


def test_a_key_given_twice_is_an_error_naming_it_and_its_lines(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text("train:\n  learning_rate: 1e-4\n  epochs: 1\n  learning_rate: 2e-4\nmodel:\n  family: plain\n"
                    "train:\n  epochs: 2\n")
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    err = str(caught.value)
    assert f"{path}: line 4: train.learning_rate is given twice (first at line 2)" in err
    assert f"{path}: line 7: train is given twice (first at line 1)" in err
    with pytest.raises(ConfigError, match="--set peft={r: 4, r: 8}: line 1: r is given twice"):
        config.load(None, ["peft={r: 4, r: 8}"])
    path.write_text("train: [1\n")
    with pytest.raises(ConfigError, match=f"^{path}: invalid YAML at line 2, column 1: expected ',' or ']'"):
        config.load(path)


def test_dump_round_trips(tmp_path):
    cfg = config.load(None, ["train.epochs=3", "peft.layers_to_transform=[1, 2]"])
    config.dump(cfg, tmp_path / "c.yaml")
    assert config.load(tmp_path / "c.yaml") == cfg


def test_cli_reports_config_errors_with_exit_2(capsys):
    from arena.cli import main

    assert main(["train", "--set", "train.nope=1"]) == 2
    assert "unknown key 'train.nope'" in capsys.readouterr().err


def test_choices_are_the_literal_types_on_the_fields():
    import typing

    hints = typing.get_type_hints(config.ModelConfig)
    assert typing.get_args(hints["quantization"]) == ("nf4", "int8", "none")
    with pytest.raises(ConfigError, match="model.family: 'gpt' is not one of gemma, llama3, mistral, phi2, plain"):
        config.load(None, ["model.family=gpt"])
    assert config.load(None, ["infer.quantization=int8"]).infer.quantization == "int8"
    assert config.load(None, ["infer.quantization=null"]).infer.quantization is None
    with pytest.raises(ConfigError, match="infer.quantization: 'fp8' is not one of nf4, int8, none"):
        config.load(None, ["infer.quantization=fp8"])


def test_offline_flags_are_set_by_main_not_at_import(tmp_path):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in cli.OFFLINE_ENV}
    code = ("import os, arena.cli, arena.config, arena.train, arena.predict\n"
            "print(os.environ.get('HF_HUB_OFFLINE'))\n"
            "arena.cli.main(['score', '--pred', 'missing.csv', '--truth', 'missing.csv'])\n"
            "print(os.environ.get('HF_HUB_OFFLINE'))")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["None", "1"]


def test_every_recipe_passes_the_range_checks():
    for path in sorted(Path(config.CONFIG_DIR).glob("*.yaml")):
        config.load(path)


def test_scheduler_choices_are_transformers_own():
    import typing

    from transformers import SchedulerType

    assert set(typing.get_args(config.Scheduler)) == {s.value for s in SchedulerType}


def test_a_bare_on_or_off_is_the_choice_of_that_name():
    assert config.load(None, ["model.gradient_checkpointing=on"]).model.gradient_checkpointing == "on"
    assert config.load(None, ["model.gradient_checkpointing=off"]).model.gradient_checkpointing == "off"
