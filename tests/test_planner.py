"""`arena plan`: memory counted on the meta device must be what a real run allocates, and every recipe plans; the
training FLOPs and the compute dtype are those a run would have."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from arena import config, meta_trace, planner
from arena import model as model_mod
from arena.kaggle import preflight
from tests.tiny import tiny_cfg, tiny_config_dir

RECIPES = sorted(Path("configs").glob("*.yaml"))


def _plain_cfg(tiny_model_dir, checkpointing: str, attn: str = "eager"):
    return tiny_cfg(tiny_model_dir, model={"quantization": "none", "length_features": False,
                                          "gradient_checkpointing": checkpointing, "attn_implementation": attn,
                                          "device": "cpu", "compute_dtype": "float32"})


@pytest.mark.parametrize("checkpointing", ["off", "on"])
def test_the_meta_trace_counts_what_a_real_run_allocates(tiny_model_dir, checkpointing):
    cfg = _plain_cfg(tiny_model_dir, checkpointing)
    real, _, _ = model_mod.build_for_training(cfg)
    hf_config, _ = planner.architecture(cfg)
    _, meta = planner._meta_model(cfg, hf_config, torch.float32, checkpointing == "on", sharded=False)
    assert next(meta.parameters()).is_meta
    on_cpu = meta_trace.training_activation_peak(real, 3, 96, 0)
    on_meta = meta_trace.training_activation_peak(meta, 3, 96, 0)
    assert on_cpu > 0 and on_meta == pytest.approx(on_cpu, rel=0.01)
    assert meta_trace.inference_activation_peak(meta, 3, 96, 0) == pytest.approx(
        meta_trace.inference_activation_peak(real, 3, 96, 0), rel=0.01)


def test_checkpointing_and_the_eager_attention_square(tiny_model_dir):
    cfg = _plain_cfg(tiny_model_dir, "off")
    hf_config, _ = planner.architecture(cfg)
    _, plain = planner._meta_model(cfg, hf_config, torch.float32, False, sharded=False)
    _, checkpointed = planner._meta_model(cfg, hf_config, torch.float32, True, sharded=False)
    short, long = (meta_trace.training_activation_peak(plain, 1, n, 0) for n in (256, 512))
    assert long > 3 * short  # heads x L^2 scores dominate: twice the length, ~four times the memory
    assert meta_trace.training_activation_peak(checkpointed, 1, 512, 0) < long


@pytest.mark.parametrize("quantization", ["none", "nf4"])
def test_planned_weights_are_the_loaded_weights(tiny_model_dir, quantization):
    import bitsandbytes as bnb

    cfg = tiny_cfg(tiny_model_dir, model={"quantization": quantization, "length_features": False, "device": "cpu"})
    loaded = model_mod.load_base(cfg, model_mod.runtime_for(cfg), None, 0).model
    hf_config, _ = planner.architecture(cfg)
    planned = planner.weight_bytes(model_mod.meta_backbone(hf_config), quantization, torch.float32)
    if quantization == "none":
        assert planned["linear"] + planned["other"] == sum(p.numel() * p.element_size() for p in loaded.parameters())
        return
    stored = 0
    for m in loaded.modules():
        if isinstance(m, bnb.nn.Linear4bit):
            state = m.weight.quant_state
            stored += m.weight.numel() * m.weight.element_size() + state.absmax.numel() + 4 * state.state2.absmax.numel()
    assert planned["linear"] == stored
    assert planned["dequantize_buffer"] == max(m.in_features * m.out_features for m in loaded.modules()
                                               if isinstance(m, bnb.nn.Linear4bit)) * 4


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_every_recipe_is_planned_without_weights(recipe):
    cfg = config.load(recipe)
    sharded = "fsdp" in recipe.stem
    gpu, gpus = ("h100", 8) if sharded else ("t4", 2)
    plan = planner.memory_plan(cfg, gpu, gpus, sharded=sharded)
    b = plan["bytes"]
    assert b["quantized_weights"] > 0 and b["trainable_parameters"] > 0
    per_sequence = b["activations_per_sequence"]
    assert 0 < per_sequence["with_checkpointing"] < per_sequence["without_checkpointing"]
    assert plan["training_peak"] > b["training_step_activations"] > 0
    assert plan["inference_peak"] > b["inference_activations"] > 0
    assert plan["training_verdict"] == "fits" and plan["inference_verdict"] == "fits", planner.format_memory_plan(plan)
    speed = planner.throughput(cfg, 600, gpu, gpus)
    assert speed["tokens_per_s"] > 0 and "Projected, not measured" in speed["method"]


def test_a_recipe_that_cannot_fit_says_so():
    cfg = config.load("configs/gemma2-9b-qlora-t4x2.yaml", ['model.gradient_checkpointing="off"',
                                                            "train.per_device_batch_size=4"])
    plan = planner.memory_plan(cfg, "t4", 2)
    assert plan["training_verdict"] == "does not fit" and "DOES NOT FIT" in planner.format_memory_plan(plan)


def test_the_throughput_model_reproduces_its_public_anchor():
    cfg = config.load("configs/gemma2-9b-qlora-t4x2.yaml")
    tokens = planner.ANCHOR["tokens_per_row"]
    speed = planner.throughput(cfg, tokens, "t4", planner.ANCHOR["gpus"])
    hours = planner.ANCHOR["rows"] * tokens / speed["tokens_per_s"] / 3600
    assert hours == pytest.approx(planner.ANCHOR["hours"], rel=1e-6)
    assert speed["compute_bound_tokens_per_s"] < speed["read_bound_tokens_per_s"]


def test_a_measured_throughput_in_the_config_wins(tiny_model_dir):
    cfg = tiny_cfg(tiny_model_dir, infer={"t4x2_tokens_per_s": 1234.0})
    assert preflight.tokens_per_s(cfg, 300)["tokens_per_s"] == 1234.0
    assert preflight.tokens_per_s(cfg, 300, "h100", 1)["tokens_per_s"] != 1234.0


def test_plan_cli_prints_memory_and_time_on_real_rows(tiny_model_dir, shared_data, capsys):
    from arena import cli

    test_csv = shared_data / "pandalm_human.csv"
    assert cli.main(["plan", "--set", f"model.path={tiny_model_dir}", "--set", "model.family=plain",
                     "--set", "peft.layers_to_transform=null", "--gpu", "a100", "--test-csv", str(test_csv)]) == 0
    out = capsys.readouterr().out
    assert "training step" in out and "FITS" in out and "1 x A100" in out
    assert f"rows of {test_csv}" in out and "projected wall time:" in out and "unknown" not in out


def test_adapter_layers_the_model_lacks_are_a_clear_error(tiny_model_dir):
    from arena.errors import UserError

    cfg = tiny_cfg(tiny_model_dir, peft={"layers_to_transform": [5]})
    with pytest.raises(UserError, match="peft.layers_to_transform"):
        planner.memory_plan(cfg)


def test_an_unknown_model_without_weights_is_a_clear_error(tmp_path):
    from arena.errors import UserError

    cfg = config.load("configs/gemma2-9b-qlora-t4x2.yaml", [f"model.path={tmp_path / 'my-model'}"])
    with pytest.raises(UserError, match="model.path.*no config.json"):
        planner.memory_plan(cfg)


def test_the_planner_counts_fewer_training_flops_without_the_input_gradient_hook(tiny_model_dir):
    cfg = tiny_cfg(tiny_model_dir, model={"quantization": "none", "length_features": False, "device": "cpu",
                                          "gradient_checkpointing": "on"}, peft={"layers_to_transform": [1]})
    hf_config, _ = planner.architecture(cfg)
    _, meta = planner._meta_model(cfg, hf_config, torch.float16, checkpointing=True, sharded=False)
    fixed = meta_trace.training_flops(meta, 1, 512, 0)
    meta.base_model.model.model.enable_input_require_grads()  # what transformers' checkpointing set-up adds
    assert meta_trace.training_flops(meta, 1, 512, 0) > 1.1 * fixed
    text = planner.format_memory_plan(planner.memory_plan(cfg, "t4"))
    assert "training compute per micro-batch" in text and "TFLOP" in text


def test_the_plan_uses_the_compute_dtype_a_run_would(tmp_path):
    folder = tiny_config_dir(tmp_path, "gemma3_text")
    cfg = tiny_cfg(folder, model={"quantization": "none", "length_features": False})
    hf_config, _ = planner.architecture(cfg)
    assert planner._compute_dtype(cfg, planner.GPUS["t4"], hf_config) == torch.float32  # no bf16, fp16 overflows
    assert planner._compute_dtype(cfg, planner.GPUS["a100"], hf_config) == torch.bfloat16
    gemma2, _ = planner.architecture(tiny_cfg(tiny_config_dir(tmp_path, "gemma2")))
    assert planner._compute_dtype(cfg, planner.GPUS["t4"], gemma2) == torch.float16
