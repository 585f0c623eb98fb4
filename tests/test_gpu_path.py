"""The CUDA path's defects, each tested on CPU: dtype per model family, checkpointing that stops at the frozen
layers, device placement, autocast at inference, the process state's timeout, FSDP's end of run, the NaN guard,
and the torch version check. Device properties are mocked where a defect is about GPUs."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from arena import cli, config, data, meta_trace, planner, predict, processes, train, versions
from arena import model as model_mod
from arena.inference import batching
from tests.tiny import BATCH, save_tiny_model, tiny_cfg, tiny_config


class Stop(Exception):
    """Raised by a patched loader once the test has seen what it needs: no weights load."""


@pytest.fixture
def t4(monkeypatch):
    """A machine whose torch sees CUDA GPUs without bf16 (a T4): is_available, no bf16, set_device recorded."""
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.append(("set_device", device)))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    t4_card = types.SimpleNamespace(name="Tesla T4", total_memory=15_835_660_288, major=7, minor=5)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: t4_card)
    monkeypatch.delenv("ARENA_HARDWARE", raising=False)
    return calls


def _config_dir(tmp_path, model_type):
    folder = tmp_path / model_type
    tiny_config(model_type).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("model_type, attention, expected", [
    ("gemma2", "auto", torch.float16),
    ("gemma3_text", "auto", torch.float32),  # activations ~1e5 on real rows: past float16
    ("phi", "eager", torch.float32),  # q @ k in float16 before scaling
    ("phi", "sdpa", torch.float16),
])
def test_auto_compute_dtype_without_bf16_follows_the_model_family(t4, tmp_path, model_type, attention, expected):
    cfg = tiny_cfg(_config_dir(tmp_path, model_type), model={"attn_implementation": attention})
    rt = model_mod.runtime_for(cfg)
    assert rt.device == "cuda" and rt.dtype == expected


def test_float16_asked_for_a_model_that_overflows_is_a_config_error_before_weights_load(tmp_path, monkeypatch):
    from transformers import AutoModel

    folder = save_tiny_model(tmp_path / "gemma3", "gemma3_text")
    cfg = tiny_cfg(folder, model={"compute_dtype": "float16", "quantization": "none", "device": "cpu"})
    monkeypatch.setattr(AutoModel, "from_pretrained", lambda *a, **k: pytest.fail("the weights loaded"))
    with pytest.raises(config.ConfigError, match=r"model.compute_dtype: float16 overflows on gemma3_text"):
        train.check_base_model(cfg)
    with pytest.raises(model_mod.UserError, match="model.compute_dtype"):
        model_mod.load_base(cfg, model_mod.runtime_for(cfg), None, 0)


# ---- gradient checkpointing -------------------------------------------------------------------------------------

def _top_layer_lora(model_dir, checkpointing):
    cfg = tiny_cfg(model_dir, model={"quantization": "none", "length_features": False, "device": "cpu",
                                     "compute_dtype": "float32", "gradient_checkpointing": checkpointing},
                   peft={"layers_to_transform": [1]})
    torch.manual_seed(0)
    model, _, _ = model_mod.build_for_training(cfg)
    return model


def _layers(model):
    return model.base_model.model.model.layers


def test_checkpointing_keeps_the_gradients_and_stops_backward_at_the_first_adapter(tiny_model_dir):
    grads, frozen_output_needs_grad = {}, []
    for checkpointing in ("off", "on"):
        model = _top_layer_lora(tiny_model_dir, checkpointing)
        hook = _layers(model)[0].register_forward_hook(
            lambda m, i, out: frozen_output_needs_grad.append((out[0] if isinstance(out, tuple) else out).requires_grad))
        model.train()
        model(**BATCH).logsumexp(-1).sum().backward()
        hook.remove()
        grads[checkpointing] = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    assert grads["on"].keys() == grads["off"].keys() and len(grads["on"]) > 2
    for name, grad in grads["on"].items():
        assert torch.allclose(grad, grads["off"][name], atol=1e-6), name
    # layer 0 has no adapter: nothing below layer 1 needs a gradient, so backward never runs through it
    assert frozen_output_needs_grad == [False, False]


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


# ---- placement ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sharded", [True, False])
def test_each_process_loads_onto_its_own_gpu(t4, tiny_model_dir, monkeypatch, sharded):
    from transformers import AutoModel

    seen = {}

    def load(path, **kwargs):
        seen["set_before_load"] = list(t4)
        seen["device_map"] = kwargs.get("device_map")
        raise Stop

    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(AutoModel, "from_pretrained", load)
    cfg = tiny_cfg(tiny_model_dir, model={"quantization": "none"})
    rt = model_mod.Runtime(device="cuda", dtype=torch.float16, gradient_checkpointing=True, sharded=sharded)
    with pytest.raises(Stop):
        model_mod.load_base(cfg, rt, None, 0)
    # bitsandbytes quantizes onto torch.cuda.current_device(): rank 1's must be GPU 1 before anything loads
    assert seen["set_before_load"] == [("set_device", 1)]
    assert seen["device_map"] == (None if sharded else {"": 1})


def test_one_process_seeing_two_gpus_trains_on_one_with_the_configured_batch(t4, tmp_path):
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    try:
        args = train.PreferenceTrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4,
                                                 gradient_accumulation_steps=2, report_to="none")
        assert torch.cuda.device_count() == 2
        assert args.n_gpu == 1 and args.train_batch_size == 4 and args.world_size == 1
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)


# ---- inference under autocast, non-finite rows -----------------------------------------------------------------

def test_autocast_on_cuda_uses_the_compute_dtype():
    with pytest.warns(UserWarning) if not torch.cuda.is_available() else _nothing():
        context = model_mod.autocast("cuda", torch.float16)
    assert isinstance(context, torch.autocast) and context.device == "cuda" and context.fast_dtype == torch.float16
    assert not isinstance(model_mod.autocast("cpu", torch.float32), torch.autocast)
    assert not isinstance(model_mod.autocast("cuda", torch.float32), torch.autocast)  # float32: nothing to cast


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_every_inference_forward_runs_in_the_autocast_of_the_compute_dtype(tiny_model_dir, monkeypatch):
    cfg = tiny_cfg(tiny_model_dir, model={"quantization": "none", "length_features": False, "device": "cpu",
                                          "compute_dtype": "bfloat16"})
    model = model_mod.load_base(cfg, model_mod.runtime_for(cfg), None, 0).eval()
    entered, real = [], model_mod.autocast

    def recording(device, dtype):
        entered.append((device, dtype))
        return real(device, dtype)

    monkeypatch.setattr(batching, "autocast", recording)  # where the forward looks it up
    ids = [[5, 6, 7], [8, 9, 10, 11]]
    predict.logits_for_batches(model, ids, 0, "cpu", [[0, 1]])
    assert entered == [("cpu", torch.bfloat16)]


def test_rows_with_non_finite_logits_are_named(tiny_model_dir, capsys):
    cfg = tiny_cfg(tiny_model_dir, model={"quantization": "none", "length_features": False, "device": "cpu"})
    model = model_mod.load_base(cfg, model_mod.runtime_for(cfg), None, 0).eval()
    with torch.no_grad():
        model.model.get_input_embeddings().weight[7].fill_(float("nan"))  # token 7 overflows, as fp16 would
    out = predict.logits_for_batches(model, [[5, 6], [5, 7], [8, 9], [7]], 0, "cpu", [[0], [1], [2], [3]])
    assert np.isfinite(out[[0, 2]]).all() and not np.isfinite(out[[1, 3]]).all()
    err = capsys.readouterr().err
    assert "2 of 4 rows have non-finite logits (rows 1, 3)" in err and "model.compute_dtype=float32" in err


# ---- the process state ------------------------------------------------------------------------------------------

def test_the_process_state_is_created_with_an_explicit_timeout(monkeypatch):
    import accelerate

    made = []
    monkeypatch.setattr(accelerate, "PartialState", lambda **kwargs: made.append(kwargs) or types.SimpleNamespace())
    processes.state(cpu=True)
    assert made == [{"cpu": True, "timeout": processes.COLLECTIVE_TIMEOUT}]
    assert processes.COLLECTIVE_TIMEOUT.total_seconds() > 600  # above NCCL's 10-minute default


def test_train_creates_the_process_state_before_the_model_loads(tiny_model_dir, tmp_path, monkeypatch):
    order = []
    real_state = processes.state
    monkeypatch.setattr(processes, "state", lambda cpu: order.append("state") or real_state(cpu))
    monkeypatch.setattr(train.run, "build", lambda *a, **k: order.append("build") or (_ for _ in ()).throw(Stop()))
    csv = tmp_path / "train.csv"
    data.write_csv(data.generate_sample(30, seed=1), csv)
    cfg = tiny_cfg(tiny_model_dir, data={"train": str(csv), "folds": 3}, train={"runs_dir": str(tmp_path / "runs")})
    with pytest.raises(Stop):
        train.train(cfg)
    assert order[0] == "state" and "build" in order


# ---- FSDP's end of run ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sharded", [True, False])
def test_under_fsdp_every_rank_saves_and_evaluates_and_only_the_main_one_writes(monkeypatch, sharded):
    import torch.distributed._state_dict_utils as state_dict_utils
    import torch.distributed.checkpoint.state_dict as dcp_state_dict

    calls = []
    trainer = types.SimpleNamespace(is_world_process_zero=lambda: False, model="fsdp-model")
    monkeypatch.setattr(dcp_state_dict, "get_model_state_dict", lambda m, options: calls.append("shards") or {"w": 1})
    monkeypatch.setattr(state_dict_utils, "_gather_state_dict", lambda sd, **k: calls.append("gather") or sd)
    built = train.Built(model=None, tokenizer=None, scaler=None,
                        runtime=model_mod.Runtime("cuda", torch.bfloat16, True, sharded=sharded))
    monkeypatch.setattr(model_mod, "save_trained", lambda *a, **k: calls.append("write adapter"))
    monkeypatch.setattr(train.run, "evaluate", lambda *a, write: calls.append(f"evaluate write={write}") or {})
    monkeypatch.setattr(train.run, "write_summary", lambda *a: calls.append("summary"))
    summary = train.finish(None, None, built, None, trainer, None, None)
    assert summary is None
    assert calls == (["shards", "gather", "evaluate write=False"] if sharded else [])


# ---- the NaN guard ----------------------------------------------------------------------------------------------

def test_a_non_finite_loss_stops_training_with_the_cause_and_a_resumable_checkpoint(tiny_model_dir, tmp_path,
                                                                                     monkeypatch):
    real_build = train.run.build

    def poisoned(cfg, split):
        built = real_build(cfg, split)
        with torch.no_grad():
            built.model.get_input_embeddings().weight.fill_(float("nan"))
        return built

    monkeypatch.setattr(train.run, "build", poisoned)
    csv = tmp_path / "train.csv"
    data.write_csv(data.generate_sample(40, seed=3), csv)
    cfg = tiny_cfg(tiny_model_dir, model={"length_features": False}, prompt={"max_length": 96, "min_tokens": 8},
                   data={"train": str(csv), "folds": 3},
                   train={"runs_dir": str(tmp_path / "runs"), "max_steps": 20, "eval_steps": 100,
                          "per_device_batch_size": 2, "grad_accum": 1, "nan_patience": 3})
    with pytest.raises(train.UserError) as caught:
        train.train(cfg)
    message = str(caught.value)
    assert "training stopped at step 3: 3 consecutive steps with non-finite losses (last loss nan" in message
    assert "model.compute_dtype float32" in message and "--resume" in message
    run = train.find_resumable(cfg, "latest")
    assert train.last_complete_checkpoint(run).name == "checkpoint-3" and not run.adapter.exists()


# ---- torch against transformers' minimum ------------------------------------------------------------------------

def test_an_old_torch_is_refused_before_any_command_runs(monkeypatch, capsys):
    assert versions.torch_minimum() == "2.6"  # what transformers 5's metadata declares
    assert versions.torch_problems(installed="2.13.0+cpu") == []
    assert "needs torch >= 2.6" in versions.torch_problems(installed="2.5.1+cu121")[0]
    monkeypatch.setattr(versions, "torch_problems", lambda: ["torch 2.5.1 is installed, but ... needs torch >= 2.6"])
    monkeypatch.setattr(cli, "cmd_plan", lambda args: pytest.fail("the command ran"))
    assert cli.main(["plan"]) == 2
    assert "needs torch >= 2.6" in capsys.readouterr().err


def test_the_plan_uses_the_compute_dtype_a_run_would(tmp_path):
    folder = _config_dir(tmp_path, "gemma3_text")
    cfg = tiny_cfg(folder, model={"quantization": "none", "length_features": False})
    hf_config, _ = planner.architecture(cfg)
    assert planner._compute_dtype(cfg, planner.GPUS["t4"], hf_config) == torch.float32  # no bf16, fp16 overflows
    assert planner._compute_dtype(cfg, planner.GPUS["a100"], hf_config) == torch.bfloat16
    gemma2, _ = planner.architecture(tiny_cfg(_config_dir(tmp_path, "gemma2")))
    assert planner._compute_dtype(cfg, planner.GPUS["t4"], gemma2) == torch.float16
