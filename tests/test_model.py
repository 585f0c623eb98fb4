import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from arena import config
from arena import model as model_mod


def tiny_cfg(model_dir, **sections):
    data = {"model": {"path": str(model_dir), "family": "plain"}}
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    return config.from_dict(data)


BATCH = {
    "input_ids": torch.tensor([[0, 0, 0, 5, 6, 7, 8], [9, 10, 11, 12, 13, 14, 15]]),
    "attention_mask": torch.tensor([[0, 0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1]]),
}


def train_steps(model, steps=4):
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=5e-2)
    model.train()
    for _ in range(steps):
        logits = model(**BATCH).logits
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
        probs = torch.softmax(model(**BATCH).logits, -1).numpy()
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
model, tok, rt = model_mod.load_trained(cfg, sys.argv[2])
batch = {k: torch.tensor(v) for k, v in json.loads(sys.argv[3]).items()}
with torch.no_grad():
    print(json.dumps(model(**batch).logits.tolist()))
"""


@pytest.mark.parametrize("method,quantization", [("lora", "nf4"), ("prompt_tuning", "nf4"), ("lora", "none")])
def test_save_and_reload_in_a_fresh_process_gives_identical_logits(tiny_model_dir, tmp_path, method, quantization):
    cfg = tiny_cfg(tiny_model_dir, model={"quantization": quantization}, peft={"method": method})
    prior = [0.4, 0.4, 0.2]
    model, tokenizer, _ = model_mod.build_for_training(cfg, class_prior=prior)
    train_steps(model)
    with torch.no_grad():
        before = model(**BATCH).logits.numpy()
    assert not np.allclose(before[0], np.log(prior), atol=1e-3), "training did not move the model"
    model_mod.save_trained(model, tokenizer, tmp_path / "adapter", model_mod.head_bias(cfg, prior))

    batch = json.dumps({k: v.tolist() for k, v in BATCH.items()})
    out = subprocess.run([sys.executable, "-c", RELOAD_SCRIPT, json.dumps(cfg.to_dict()), str(tmp_path / "adapter"), batch],
                         capture_output=True, text=True, check=True)
    after = np.array(json.loads(out.stdout.strip().splitlines()[-1]))
    np.testing.assert_allclose(after, before, atol=1e-5, rtol=1e-5)


def test_save_never_overwrites(tiny_model_dir, tmp_path):
    cfg = tiny_cfg(tiny_model_dir)
    model, tokenizer, _ = model_mod.build_for_training(cfg)
    model_mod.save_trained(model, tokenizer, tmp_path / "adapter", None)
    with pytest.raises(FileExistsError):
        model_mod.save_trained(model, tokenizer, tmp_path / "adapter", None)


def test_missing_model_folder_is_a_clear_error(tmp_path):
    cfg = tiny_cfg(tmp_path / "nowhere")
    with pytest.raises(model_mod.UserError, match="not a model folder"):
        model_mod.build_for_training(cfg)


def test_length_feature_head_needs_features_and_uses_them(tiny_model_dir):
    cfg = tiny_cfg(tiny_model_dir)
    model, _, _ = model_mod.build_for_training(cfg, num_features=4)
    with pytest.raises(RuntimeError, match="features_for"):
        model(**BATCH)
    head = next(m for m in model.modules() if isinstance(m, model_mod.PreferenceHead) and m.features is not None
                and m.features.weight.requires_grad)
    with torch.no_grad():
        head.features.weight.copy_(torch.eye(3, 4))
        with model_mod.features_for(model, torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]])):
            probs = torch.softmax(model(**BATCH).logits, -1)
    assert probs[0].argmax() == 0 and probs[1].argmax() == 1
    assert head.pending_features is None  # detached after the forward


def test_head_is_scale_invariant_in_the_hidden_state():
    head = model_mod.PreferenceHead(8, 0, bias=True, dtype=torch.float32)
    torch.nn.init.normal_(head.proj.weight)
    h = torch.randn(2, 5, 8)
    torch.testing.assert_close(head(h), head(h * 300.0), atol=1e-4, rtol=1e-4)
