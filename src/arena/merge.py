"""`arena merge`: the LoRA adapters of one or more runs merged into their base weights and averaged, written as a
standalone model folder with the run layout (config.yaml + adapter/ holding the merged backbone, its tokenizer and
the head) that predict, package and the kernel load like a run, at any infer.quantization.

As the 1st place did with its fold models: the base is loaded unquantized in float32 from its folder (never a
dequantized 4-bit copy); the merged weight change is the average of the runs' LoRA deltas (peft's "cat"
combination: sum_i w_i * scaling_i * B_i A_i, exact for any ranks), and the head the average of the runs' heads,
their length-feature weights first brought onto one shared feature scaling."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from arena import config as config_mod
from arena import model as model_mod
from arena import task
from arena.embedded import resolve_model_path
from arena.errors import UserError
from arena.layout import RunFolder
from arena.model import check_trained, name_in_head, read_head
from arena.versions import peft_without_old_torchao
from arena.writes import atomic_folder, output_problems

MERGED_FORMAT = 1


def check_runs(runs: list[RunFolder], out: Path) -> list:
    """Every problem of the runs and the output, before any model loads; returns the runs' configs."""
    problems = [] if runs else ["--run: give at least one run to merge"]
    problems += output_problems(out, "merged model folder", folder=True)
    cfgs = []
    loaded, unreadable = config_mod.load_runs(runs)
    problems += unreadable
    for run, cfg in loaded:
        found = check_trained(run)
        if run.is_merged():
            found.append(f"--run {run.root}: already a merged model (arena merge takes runs from `arena train`)")
        elif cfg.peft.method != "lora":
            found.append(f"--run {run.root}: peft.method is {cfg.peft.method}; only LoRA adapters merge into the "
                         "base weights")
        problems += found
        cfgs.append((run, cfg, None if found else read_head(run)["bias"]))
    if cfgs:
        first_run, first, first_bias = cfgs[0]
        for run, cfg, bias in cfgs[1:]:
            for key, a, b in (("model.path", first.model.path, cfg.model.path),
                              ("model.family", first.model.family, cfg.model.family),
                              ("model.length_features", first.model.length_features, cfg.model.length_features),
                              ("the task's labels (task.labels)", task.of_config(first).labels, task.of_config(cfg).labels),
                              ("the head's bias (head.json; model.head_init)", first_bias, bias)):
                if a != b and None not in (a, b):
                    problems.append(f"--run {run.root}: {key} is {b!r}, but {a!r} in --run {first_run.root}: "
                                    "merged runs share one base model and head")
    if problems:
        raise UserError(problems=problems)
    return [cfg for _, cfg, _ in cfgs]


def head_tensors(run: RunFolder) -> dict[str, torch.Tensor]:
    """The head's weights saved with a run's adapter (peft modules_to_save `score`), by name inside the head."""
    from safetensors.torch import load_file

    return {inside: tensor.float() for name, tensor in load_file(run.adapter / "adapter_model.safetensors").items()
            if (inside := name_in_head(name)) is not None}


def average_heads(heads: list[dict], scalers: list[dict | None]) -> tuple[dict, dict | None]:
    """The average of the heads' weights. Runs trained on different rows scale the length features differently
    (z = (x - mean) / std): each head's feature weights are rewritten for one shared scaling (the average mean
    and std), which is exact for features inside the clip range; the constant this moves goes into the bias."""
    merged = {name: sum(h[name] for h in heads) / len(heads) for name in heads[0]}
    if scalers[0] is None:
        return merged, None
    mean = np.mean([s["mean"] for s in scalers], axis=0)
    std = np.mean([s["std"] for s in scalers], axis=0)
    weight, shift = torch.zeros_like(heads[0]["features.weight"]), torch.zeros(heads[0]["features.weight"].shape[0])
    for head, scaler in zip(heads, scalers):
        ratio = torch.tensor(std / np.asarray(scaler["std"]), dtype=torch.float32)
        offset = torch.tensor((mean - np.asarray(scaler["mean"])) / np.asarray(scaler["std"]), dtype=torch.float32)
        weight += head["features.weight"] * ratio / len(heads)
        shift += head["features.weight"] @ offset / len(heads)
    merged["features.weight"] = weight
    if shift.abs().max() > 1e-6:
        if "proj.bias" not in merged:
            raise UserError("the runs' length features are scaled differently and their head has no bias to absorb "
                            "the difference: merge runs trained on the same rows, or heads with a bias")
        merged["proj.bias"] = merged["proj.bias"] + shift
    return merged, {**scalers[0], "mean": mean.tolist(), "std": std.tolist()}


def lora_only(run: RunFolder):
    """A run's LoRA settings without its modules_to_save (the head)."""
    from peft import LoraConfig

    lora = LoraConfig.from_pretrained(run.adapter)
    lora.modules_to_save = None
    lora.task_type = None  # a sequence-classification adapter would wrap the head as modules_to_save again
    return lora


def stored_dtype(model_dir: Path) -> torch.dtype:
    """The dtype the base model's weights are stored in (config.json), which the merged weights keep: a 9B base
    in bfloat16 stays 18 GB. float32 when the config does not say."""
    try:
        hf = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return torch.float32
    name = hf.get("dtype") or hf.get("torch_dtype") or "float32"
    return getattr(torch, str(name).removeprefix("torch."), torch.float32)


def merge_runs(run_dirs: list, out_dir) -> Path:
    """`arena merge --run R [--run R2 ...] --out DIR`; returns DIR. Built beside DIR and renamed into place."""
    from peft import PeftModel

    peft_without_old_torchao()  # Kaggle's torchao 0.10.0: see there
    runs, out = [RunFolder(r) for r in run_dirs], Path(out_dir)
    cfgs = check_runs(runs, out)
    # float32 on the CPU, unquantized: the deltas are added to the base's own weights at full precision.
    cpu_cfg = config_mod.load_run(runs[0], ["model.device=cpu", "model.compute_dtype=float32"])
    rt = model_mod.runtime_for(cpu_cfg)
    heads = [model_mod.read_head(run) for run in runs]
    scalers = [h.get("feature_scaler") for h in heads]
    bias = [0.0] * heads[0]["num_labels"] if heads[0]["bias"] else None
    base = model_mod.load_base(cpu_cfg, rt, bias, len(scalers[0]["mean"]) if scalers[0] else 0, quantization="none")
    names = [f"run{i}" for i in range(len(runs))]
    print(f"merging {len(runs)} run(s) into {cfgs[0].model.path} (float32, unquantized)")
    # The LoRA weights only: the heads (peft's modules_to_save, which add_weighted_adapter refuses) are averaged
    # by average_heads.
    model = PeftModel.from_pretrained(base, runs[0].adapter, adapter_name=names[0], config=lora_only(runs[0]))
    for name, run in zip(names[1:], runs[1:]):
        model.load_adapter(run.adapter, adapter_name=name, peft_config=lora_only(run))
    active = names[0]
    if len(runs) > 1:
        active = "average"
        model.add_weighted_adapter(names, [1 / len(runs)] * len(runs), adapter_name=active, combination_type="cat")
        model.set_adapter(active)
    merged = model.merge_and_unload(adapter_names=[active])
    head, scaler = average_heads([head_tensors(run) for run in runs], scalers)

    with atomic_folder(out, "merged model") as staging:
        build = RunFolder(staging)
        build.adapter.mkdir()
        stored = stored_dtype(resolve_model_path(cfgs[0].model.path))
        merged.model.to(stored)
        merged.model.save_pretrained(build.adapter, safe_serialization=True)
        model_mod.load_tokenizer(runs[0].adapter).save_pretrained(build.adapter)
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in head.items()}, build.merged_head)
        model_mod.write_head(build, bias is not None, scaler, heads[0]["num_labels"], merged={"format": MERGED_FORMAT,
                                                                      "runs": [str(r.root) for r in runs],
                                                                      "weights": [1 / len(runs)] * len(runs)})
        merged_cfg = config_mod.load_run(runs[0], ["kaggle.base_model_source=", "kaggle.base_model_dataset=",
                                                   "kaggle.base_model_kernel_path="])
        config_mod.dump(merged_cfg, build.config)
        problems = model_mod.check_trained(build)
        if problems:
            raise UserError(problems=problems)
    print(f"wrote {out}: the merged model ({str(stored).removeprefix('torch.')}) with its tokenizer and the averaged "
          f"head; `arena predict --run {out}` and `arena package --run {out}` load it like a run "
          f"(infer.quantization: nf4 | int8 | none)")
    return out
