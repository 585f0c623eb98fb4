import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from arena import config, hardware, train
from arena import model as model_mod
from arena.layout import RunFolder
from tests.tiny import BATCH, Stop, save_tiny_model, tiny_cfg, tiny_config_dir


def train_steps(model, steps=4, logits_of=lambda out: out):
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=5e-2)
    model.train()
    for _ in range(steps):
        logits = logits_of(model(**BATCH))
        loss = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 2]))
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()


def test_runtime_on_cpu_is_float32_without_checkpointing(tiny_model_dir):
    rt = model_mod.runtime_for(tiny_cfg(tiny_model_dir))
    assert rt.device == "cpu" and rt.dtype == torch.float32
    assert not rt.gradient_checkpointing and not rt.fp16 and not rt.bf16


def test_cuda_request_without_gpu_is_a_clear_error(tiny_model_dir):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(model_mod.UserError, match="model.device: cuda"):
        model_mod.runtime_for(tiny_cfg(tiny_model_dir, model={"device": "cuda"}))


def test_attention_is_eager_for_gemma2_only(tiny_model_dir):
    cfg = tiny_cfg(tiny_model_dir)
    assert model_mod.attn_implementation(cfg, "gemma2") == "eager"
    assert model_mod.attn_implementation(cfg, "llama") == "sdpa"


@pytest.mark.parametrize("head_init", ["prior", "zero"])
def test_head_starts_at_the_prior_or_uniform(tiny_model_dir, head_init):
    prior = [0.35, 0.40, 0.25]
    cfg = tiny_cfg(tiny_model_dir, model={"head_init": head_init})
    model, _, _ = model_mod.build_for_training(cfg, class_prior=prior)
    with torch.no_grad():
        probs = torch.softmax(model(**BATCH), -1).numpy()
    expected = prior if head_init == "prior" else [1 / 3] * 3
    np.testing.assert_allclose(probs, [expected, expected], atol=1e-5)


@pytest.mark.parametrize("quantization", ["nf4", "none"])
def test_nf4_model_is_quantized_and_only_adapter_and_head_train(tiny_model_dir, quantization):
    import bitsandbytes as bnb

    model, _, _ = model_mod.build_for_training(tiny_cfg(tiny_model_dir, model={"quantization": quantization}))
    has_4bit = any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    assert has_4bit == (quantization == "nf4")
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or "score" in n for n in trainable)
    assert any("score" in n for n in trainable)
    assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)


RELOAD_SCRIPT = """
import json, sys, torch
from arena import config, model as model_mod
cfg = config.from_dict(json.loads(sys.argv[1]))
from arena.layout import RunFolder
model, tok, rt = model_mod.load_trained(cfg, RunFolder(sys.argv[2]))
batch = {k: torch.tensor(v) for k, v in json.loads(sys.argv[3]).items()}
with torch.no_grad():
    print(json.dumps(model(**batch).tolist()))
"""


@pytest.mark.parametrize("method,quantization", [("lora", "nf4"), ("prompt_tuning", "nf4"), ("lora", "none")])
def test_save_and_reload_in_a_fresh_process_gives_identical_logits(tiny_model_dir, tmp_path, method, quantization):
    cfg = tiny_cfg(tiny_model_dir, model={"quantization": quantization}, peft={"method": method})
    prior = [0.4, 0.4, 0.2]
    model, tokenizer, _ = model_mod.build_for_training(cfg, class_prior=prior)
    train_steps(model)
    with torch.no_grad():
        before = model(**BATCH).numpy()
    assert not np.allclose(before[0], np.log(prior), atol=1e-3), "training did not move the model"
    model_mod.save_trained(model, tokenizer, RunFolder(tmp_path), model_mod.head_bias(cfg, prior))
    assert model_mod.check_trained(RunFolder(tmp_path)) == []

    batch = json.dumps({k: v.tolist() for k, v in BATCH.items()})
    out = subprocess.run([sys.executable, "-c", RELOAD_SCRIPT, json.dumps(cfg.to_dict()), str(tmp_path), batch],
                         capture_output=True, text=True, check=True)
    after = np.array(json.loads(out.stdout.strip().splitlines()[-1]))
    np.testing.assert_allclose(after, before, atol=1e-5, rtol=1e-5)


def test_save_never_overwrites(tiny_model_dir, tmp_path):
    cfg = tiny_cfg(tiny_model_dir)
    model, tokenizer, _ = model_mod.build_for_training(cfg)
    model_mod.save_trained(model, tokenizer, RunFolder(tmp_path), None)
    with pytest.raises(FileExistsError):
        model_mod.save_trained(model, tokenizer, RunFolder(tmp_path), None)


def test_missing_model_folder_is_a_clear_error(tmp_path):
    cfg = tiny_cfg(tmp_path / "nowhere")
    with pytest.raises(model_mod.UserError, match="not a model folder"):
        model_mod.build_for_training(cfg)


def test_length_feature_head_reads_its_features_from_the_forward_call(tiny_model_dir):
    cfg = tiny_cfg(tiny_model_dir)
    model, _, _ = model_mod.build_for_training(cfg, num_features=4)
    with pytest.raises(ValueError, match="reads 4 length features: pass features="):
        model(**BATCH)
    head = next(m for m in model.modules() if isinstance(m, model_mod.PreferenceHead) and m.features is not None
                and m.features.weight.requires_grad)
    with torch.no_grad():
        head.features.weight.copy_(torch.eye(3, 4))
        probs = torch.softmax(model(**BATCH, features=torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]])), -1)
        swapped = torch.softmax(model(**BATCH, features=torch.tensor([[0, 1.0, 0, 0], [1.0, 0, 0, 0]])), -1)
    assert probs[0].argmax() == 0 and probs[1].argmax() == 1
    assert swapped[0].argmax() == 1 and swapped[1].argmax() == 0  # nothing of the first call lingers


def test_the_head_reads_the_last_real_token_whichever_side_is_padded(tiny_model_dir):
    cfg = tiny_cfg(tiny_model_dir, model={"quantization": "none", "head_init": "random"})
    model = model_mod.load_base(cfg, model_mod.runtime_for(cfg), [0.0, 0.0, 0.0], 0)
    rows = [[5, 6, 7, 8], [9, 10]]
    right_ids, right_mask = model_mod.right_pad(rows, 0)
    assert right_ids.tolist() == [[5, 6, 7, 8], [9, 10, 0, 0]] and right_mask.tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    left_ids, left_mask = torch.tensor([[5, 6, 7, 8], [0, 0, 9, 10]]), torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1]])
    with torch.no_grad():
        left = model(input_ids=left_ids, attention_mask=left_mask)
        right = model(input_ids=right_ids, attention_mask=right_mask)
        alone = torch.cat([model(input_ids=torch.tensor([r]), attention_mask=torch.ones(1, len(r))) for r in rows])
    assert alone.abs().max() > 1e-3
    torch.testing.assert_close(left, alone, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(right, alone, atol=1e-4, rtol=1e-4)
    assert model_mod.last_token_index(torch.tensor([[1, 1, 0, 0], [0, 1, 1, 1]]), 4).tolist() == [1, 3]


@pytest.mark.parametrize("model_type, attention", [
    ("gemma2", "eager"),  # (transformers 5.23 refuses sdpa for Gemma-2)
    *[(model_type, attention) for model_type in ("gemma3_text", "llama", "mistral", "phi")
      for attention in ("eager", "sdpa")],
])
def test_right_padded_batches_give_each_row_its_logits_alone(model_type, attention):
    """Each family's causal mask under right padding, as transformers builds it for eager and sdpa attention: a
    row's logits do not depend on the other rows' lengths."""
    from transformers import AutoModel

    from arena.inference.batching import logits_for_batches
    from tests.tiny import tiny_config

    torch.manual_seed(0)
    hf = tiny_config(model_type)
    head = model_mod.PreferenceHead(hf.hidden_size, 0, bias=False, dtype=torch.float32, classes=3)
    torch.nn.init.normal_(head.proj.weight)
    model = model_mod.PreferenceModel(AutoModel.from_config(hf, attn_implementation=attention), head).eval()
    rows = [[5, 6, 7, 8, 9, 10, 11], [12, 13], [14, 15, 16, 17]]
    alone = logits_for_batches(model, rows, 0, "cpu", [[0], [1], [2]])
    assert np.abs(alone).max() > 1e-2
    np.testing.assert_allclose(logits_for_batches(model, rows, 0, "cpu", [[0, 1, 2]]), alone, atol=1e-4)


def _scores_far_below_minus_16(model) -> None:
    """Layer 0's every query-key score near -50 (Gemma-2's soft cap): every token shares one direction of the
    hidden state, which the queries read with one sign and the keys with the other, on the slowest rotary pair (so
    the score barely depends on the distance). In float16, the eager mask's -65504 plus such a score is -inf."""
    hf = model.config
    with torch.no_grad():
        embeddings = model.model.embed_tokens.weight
        embeddings += 10 * embeddings.std()
        attention = model.model.layers[0].self_attn
        for proj, heads, sign in ((attention.q_proj, hf.num_attention_heads, 1),
                                  (attention.k_proj, hf.num_key_value_heads, -1)):
            slow = torch.zeros(heads, hf.head_dim)
            slow[:, hf.head_dim // 2 - 1] = 4.0 * sign
            proj.weight.copy_(torch.outer(slow.flatten(), torch.full((hf.hidden_size,), hf.hidden_size ** -0.5)))


def test_float16_batches_stay_finite_and_give_each_row_its_logits_alone(tiny_model_dir, monkeypatch):
    """The t4x2 profile (float16 under autocast, eager attention) with scores below -16: left padding gave a pad
    query whose every key is masked a row of -inf, NaN after softmax, and the NaN reached the short row's logits
    through the next layer. Padded on the right, as inference batches and the training collator do, every row
    gets the logits it has alone, whatever the other rows' lengths."""
    from arena.inference.batching import logits_for_batches

    monkeypatch.setenv(hardware.PROFILE_ENV, "t4x2")
    cfg = tiny_cfg(tiny_model_dir, model={"quantization": "none", "head_init": "random"})
    model = model_mod.load_base(cfg, model_mod.runtime_for(cfg), [0.0, 0.0, 0.0], 0)
    assert model.model.embed_tokens.weight.dtype == torch.float16 and model.config._attn_implementation == "eager"
    _scores_far_below_minus_16(model)
    rows = [[5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15, 16]]
    alone = logits_for_batches(model, rows, 0, "cpu", [[0], [1], [2]])
    batched = logits_for_batches(model, rows, 0, "cpu", [[0, 1, 2]])
    collated = train.RightPadCollator(0)([{"input_ids": r, "labels": np.zeros(3)} for r in rows])
    with torch.no_grad(), model_mod.autocast("cpu", torch.float16):
        trained_on = model(input_ids=collated["input_ids"], attention_mask=collated["attention_mask"]).float()
    assert np.isfinite(alone).all() and np.abs(alone).max() > 1e-2
    np.testing.assert_allclose(batched, alone, atol=2e-3)
    np.testing.assert_allclose(trained_on.numpy(), alone, atol=2e-3)


def _devices_safetensors_is_asked_for(monkeypatch) -> list[str]:
    """peft made to believe the default device is "cuda" (infer_device, where peft looks it up), and the device
    that safetensors is asked to load adapter weights onto, recorded (they still load onto the CPU here)."""
    import peft.peft_model
    from peft.utils import save_and_load

    asked, load_file = [], save_and_load.safe_load_file

    def recording(filename, device="cpu"):
        asked.append(str(device))
        return load_file(filename, device="cpu")

    monkeypatch.setattr(peft.peft_model, "infer_device", lambda: "cuda")
    monkeypatch.setattr(save_and_load, "infer_device", lambda: "cuda")
    monkeypatch.setattr(save_and_load, "safe_load_file", recording)
    return asked


def test_an_adapter_loads_onto_its_own_models_device_not_gpu_0(tiny_run, tmp_path, monkeypatch):
    """peft loads an adapter onto infer_device() ("cuda", so GPU 0) unless told where: rank 1 opened a CUDA
    context and an allocator cache on GPU 0 beside rank 0's model. Prediction's load and the Trainer's (on resume,
    and of the best checkpoint) name the device of the process's own model."""
    from transformers import TrainingArguments

    asked = _devices_safetensors_is_asked_for(monkeypatch)
    run = RunFolder(tiny_run)
    model, _, _ = model_mod.load_trained(config.load_run(run), run)
    assert asked == [model_mod.model_device(model)] == ["cpu"]
    trainer = train.PreferenceTrainer(model=model, args=TrainingArguments(str(tmp_path), use_cpu=True, report_to=[]))
    trainer._load_from_checkpoint(str(run.adapter))
    trainer.state.best_model_checkpoint = str(run.adapter)
    trainer._load_best_model()
    assert asked == ["cpu"] * 3
    assert "load_adapter" not in vars(model)  # the Trainer's call is bound only while it loads


def test_a_head_from_a_newer_version_is_a_clear_error(tiny_model_dir, tmp_path):
    cfg = tiny_cfg(tiny_model_dir)
    model, tokenizer, _ = model_mod.build_for_training(cfg)
    run = RunFolder(tmp_path / "run")
    model_mod.save_trained(model, tokenizer, run, None)
    assert json.loads(run.head.read_text())["format"] == model_mod.HEAD_FORMAT
    run.head.write_text(json.dumps({**json.loads(run.head.read_text()), "format": model_mod.HEAD_FORMAT + 1}))
    with pytest.raises(model_mod.UserError, match="made by a newer version of arena"):
        model_mod.load_trained(cfg, run)
    with pytest.raises(model_mod.UserError, match="older version"):
        model_mod.load_trained(cfg, RunFolder(tmp_path / "nothing"))


def test_runs_saved_over_the_sequence_classification_class_still_load(tiny_model_dir, tmp_path):
    """Before head format 2, runs were saved from transformers' AutoModelForSequenceClassification with its
    `score` replaced by the head, and no "format" in head.json: they load with the same logits."""
    from peft import get_peft_model
    from transformers import AutoModelForSequenceClassification

    cfg = tiny_cfg(tiny_model_dir, model={"quantization": "none", "length_features": False})
    tokenizer = model_mod.load_tokenizer(tiny_model_dir)
    old = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=3,
                                                             pad_token_id=tokenizer.pad_token_id)
    old.score = model_mod.PreferenceHead(old.config.hidden_size, 0, bias=True, dtype=torch.float32, classes=3)
    old = get_peft_model(old, model_mod.peft_config(cfg))
    train_steps(old, logits_of=lambda out: out.logits)
    run = RunFolder(tmp_path)
    old.save_pretrained(run.adapter)
    tokenizer.save_pretrained(run.adapter)
    run.head.write_text(json.dumps({"bias": True, "num_labels": 3, "feature_scaler": None}))
    new, _, _ = model_mod.load_trained(cfg, run)
    with torch.no_grad():
        torch.testing.assert_close(new(**BATCH), old(**BATCH).logits, atol=1e-5, rtol=1e-5)


def test_a_tokenizer_is_loaded_once_for_the_content_of_its_files(tiny_model_dir, tmp_path):
    import shutil

    folder = shutil.copytree(tiny_model_dir, tmp_path / "model")
    first = model_mod.load_tokenizer(folder)
    assert model_mod.load_tokenizer(str(folder)) is first
    assert first.padding_side == "right" and first.pad_token_id is not None
    copy = shutil.copytree(folder, tmp_path / "a run's copy", ignore=shutil.ignore_patterns("*.safetensors"))
    assert model_mod.load_tokenizer(copy) is first  # the same files elsewhere: a run's adapter, a bundle
    config = folder / "tokenizer_config.json"
    config.write_text(config.read_text().replace('"<pad>"', '"<unk>"', 1))
    changed = model_mod.load_tokenizer(folder)
    assert changed is not first and changed.pad_token != first.pad_token


def test_head_is_scale_invariant_in_the_hidden_state():
    head = model_mod.PreferenceHead(8, 0, bias=True, dtype=torch.float32, classes=3)
    torch.nn.init.normal_(head.proj.weight)
    h = torch.randn(2, 5, 8)
    torch.testing.assert_close(head(h), head(h * 300.0), atol=1e-4, rtol=1e-4)


def test_an_evaluation_forward_does_not_change_training_gradients(tiny_model_dir):
    """bitsandbytes repacks 4-bit CPU weights for inference on the first eval-mode forward; a model in training
    must keep exact gradients through its frozen 4-bit layers afterwards."""
    cfg = tiny_cfg(tiny_model_dir, model={"head_init": "random", "length_features": False}, peft={"dropout": 0.0})
    torch.manual_seed(0)
    model, _, _ = model_mod.build_for_training(cfg)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.1)  # let gradients reach every adapter

    def gradients():
        model.train()
        model.zero_grad()
        model(**BATCH).sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    before = gradients()
    model.eval()
    with torch.no_grad():
        model(**BATCH)
    after = gradients()
    assert any("layers.0" in n and before[n].abs().max() > 0 for n in before)
    for name in before:
        torch.testing.assert_close(after[name], before[name], atol=1e-6, rtol=1e-5, msg=name)


def test_checkpointing_uses_transformers_current_api_without_warnings(tiny_model_dir):
    """transformers 5 renamed gradient_checkpointing_enable/disable to activation_checkpointing_*: training and the
    planner use the current names, so they print no FutureWarning."""
    import warnings

    import torch
    from transformers import AutoConfig

    from arena import model, planner

    cfg = config.from_dict({"model": {"path": str(tiny_model_dir), "family": "plain"},
                            "prompt": {"max_length": 96, "min_tokens": 8}, "infer": {"max_length": 96}})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        base = model.meta_preference_model(cfg, AutoConfig.from_pretrained(tiny_model_dir), torch.float32)
        runtime = model.Runtime(device="cpu", dtype=torch.float32, gradient_checkpointing=True, sharded=False)
        model.prepare_for_training(base, cfg, runtime)
        planner._set_checkpointing(base, False)
        planner._set_checkpointing(base, True)
    assert base.model.is_activation_checkpointing
    assert [str(w.message) for w in caught if "checkpointing" in str(w.message)] == []


@pytest.mark.parametrize("model_type, attention, expected", [
    ("gemma2", "auto", torch.float16),
    ("gemma3_text", "auto", torch.float32),  # activations ~1e5 on real rows: past float16
    ("phi", "eager", torch.float32),  # q @ k in float16 before scaling
    ("phi", "sdpa", torch.float16),
])
def test_auto_compute_dtype_without_bf16_follows_the_model_family(t4, tmp_path, model_type, attention, expected):
    cfg = tiny_cfg(tiny_config_dir(tmp_path, model_type), model={"attn_implementation": attention})
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


def test_a_model_whose_code_ships_with_it_is_refused_by_train_plan_and_predict(tiny_model_dir, tiny_run, sample_csv,
                                                                               test_csv, tmp_path, capsys):
    """A config.json whose model_type transformers does not ship (auto_map: the model's own code, which would need
    trust_remote_code): one line naming the file, exit 2, no code run, nothing written."""
    import shutil

    from arena import cli

    custom = shutil.copytree(tiny_model_dir, tmp_path / "custom")
    hf = json.loads((custom / "config.json").read_text())
    hf |= {"model_type": "my_custom", "auto_map": {"AutoConfig": "configuration_my.MyConfig"}}
    (custom / "config.json").write_text(json.dumps(hf))
    (custom / "configuration_my.py").write_text(f"open({str(tmp_path / 'ran')!r}, 'w')\n")
    recipe = ["--set", f"model.path={custom}", "--set", "model.family=plain", "--set", f"data.train={sample_csv}",
              "--set", f"train.runs_dir={tmp_path / 'runs'}", "--set", "prompt.max_length=96",
              "--set", "prompt.min_tokens=8", "--set", "infer.max_length=96"]
    for args in (["train", *recipe], ["plan", *recipe],
                 ["predict", "--run", str(tiny_run), "--data", str(test_csv), "--base-model", str(custom),
                  "--out", str(tmp_path / "out.csv")]):
        capsys.readouterr()
        assert cli.main(args) == 2, args[0]
        err = capsys.readouterr().err
        assert f"{custom / 'config.json'}: model_type 'my_custom' is not an architecture transformers ships" in err
        assert "arena runs no code shipped with a model" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["custom"]
