"""A trained run's model on disk: saved (adapter + head + tokenizer + head.json), checked without loading (every
problem named) and loaded for inference."""

from __future__ import annotations

from pathlib import Path

from arena.config import Config
from arena.embedded import resolve_model_path
from arena.layout import RunFolder
from arena.model.backbone import load_base, load_tokenizer, model_config
from arena.model.head import head_weight_problems, load_head, model_classes, name_in_head, read_head, write_head
from arena.model.runtime import model_device, runtime_for
from arena.records import record_or_none
from arena.versions import peft_without_old_torchao


def save_trained(model, tokenizer, run: RunFolder, bias: list[float] | None, feature_scaler: dict | None = None,
                 state_dict: dict | None = None, class_prior=None) -> None:
    """Adapter + head (peft modules_to_save) + tokenizer, and head.json: the head's shape, feature scaling and the
    training rows' class prior (what predict gives a row without finite logits). `state_dict`: the model's full
    weights where the model itself holds only a shard (FSDP)."""
    run.adapter.mkdir(parents=True, exist_ok=False)
    model.save_pretrained(run.adapter, **({} if state_dict is None else {"state_dict": state_dict}))
    tokenizer.save_pretrained(run.adapter)
    write_head(run, bias is not None, feature_scaler, model_classes(model), class_prior)


def check_trained(run: RunFolder) -> list[str]:
    """Every problem of a trained run's adapter folder, found without loading a model: head.json and
    adapter_config.json parse and agree with the weight file's tensor names and shapes, the weights are whole,
    and the tokenizer loads. An empty list when the run can load."""
    if not run.adapter.is_dir() or not any(run.adapter.iterdir()):
        return [f"{run.adapter}: no trained adapter here (missing or empty): an unfinished run, or not a run folder"]
    problems: list[str] = []
    head = load_head(run, problems)
    if run.is_merged():
        problems += _merged_problems(run, head)
    else:
        adapter_config = record_or_none(run.adapter / "adapter_config.json", problems, "peft's adapter settings")
        weights = run.adapter / "adapter_model.safetensors"
        shapes = tensor_shapes(weights, problems)
        if head is not None and adapter_config is not None and shapes is not None and not problems:
            problems += [f"{weights}: {p}" for p in _weight_problems(adapter_config, head, shapes)]
    tokenizer_file = run.adapter / "tokenizer.json"
    if not tokenizer_file.is_file():
        record_or_none(tokenizer_file, problems, "the tokenizer")  # names it missing
        return problems
    try:
        load_tokenizer(run.adapter)  # the tokenizer a prediction then uses (loaded once per process)
    except Exception as exc:  # noqa: BLE001 - any failure here means the kernel could not tokenise
        # tokenizer.json is parsed on its own only now: damaged JSON is named as such, else the load's own error
        if record_or_none(tokenizer_file, problems, "the tokenizer") is not None:
            problems.append(f"{tokenizer_file}: the tokenizer does not load ({type(exc).__name__}: {exc})")
    return problems


def _merged_problems(run: RunFolder, head: dict | None) -> list[str]:
    """A merged model folder (`arena merge`): its config.json parses, every weight file is whole, and the head's
    weights match head.json."""
    problems: list[str] = []
    record_or_none(run.merged_model_config, problems, "the merged model's architecture")
    files = sorted(run.adapter.glob("model*.safetensors"))
    if not files:
        problems.append(f"{run.adapter}: no model*.safetensors (the merged weights)")
    for path in files:
        tensor_shapes(path, problems)
    shapes = tensor_shapes(run.merged_head, problems)
    if head is not None and shapes is not None:
        problems += [f"{run.merged_head}: {p}" for p in head_weight_problems(head, shapes)]
    return problems




def tensor_shapes(path: Path, problems: list[str]) -> dict[str, list[int]] | None:
    """Tensor name -> shape from a safetensors header; the library also checks the file covers every tensor."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        problems.append(f"{path}: missing (the adapter's weights)")
        return None
    try:
        with safe_open(path, "pt") as f:
            return {name: list(f.get_slice(name).get_shape()) for name in f.keys()}
    except (SafetensorError, OSError) as exc:
        problems.append(f"{path}: not a whole safetensors file ({exc}); the file is damaged or truncated")
        return None


def _weight_problems(adapter_config: dict, head: dict, shapes: dict[str, list[int]]) -> list[str]:
    """Tensor names and shapes against adapter_config.json (the adapter) and head.json (the head)."""
    score = {inside: shape for name, shape in shapes.items() if (inside := name_in_head(name)) is not None}
    return head_weight_problems(head, score) + _adapter_weight_problems(adapter_config, shapes)


def _adapter_weight_problems(adapter_config: dict, shapes: dict[str, list[int]]) -> list[str]:
    problems = []
    peft_type = adapter_config.get("peft_type")
    if peft_type == "LORA":
        targets = adapter_config.get("target_modules") or []
        lora = [name for name in shapes if ".lora_A." in name or ".lora_B." in name]
        if not lora:
            problems.append("no LoRA tensors, though adapter_config.json says LORA")
        # (a regular expression in target_modules, which arena never writes, is not checked here)
        stray = [name for name in lora if isinstance(targets, list) and not any(f".{t}.lora_" in name for t in targets)]
        if stray:
            problems.append(f"LoRA tensors for modules adapter_config.json does not target, e.g. {stray[0]}")
        rank = adapter_config.get("r")
        odd = [name for name in lora if ".lora_A." in name and shapes[name][0] != rank]
        if odd:
            problems.append(f"{odd[0]} has rank {shapes[odd[0]][0]}, adapter_config.json says r={rank}")
    elif peft_type == "PROMPT_TUNING":
        if not any("prompt_embeddings" in name for name in shapes):
            problems.append("no prompt embeddings, though adapter_config.json says PROMPT_TUNING")
    else:
        problems.append(f"adapter_config.json: peft_type {peft_type!r} is not LORA or PROMPT_TUNING")
    return problems


def load_trained(cfg: Config, run: RunFolder, base_model: str | Path | None = None, quantization: str | None = None):
    """A trained run's model for inference: (PeftModel over a PreferenceModel, or the PreferenceModel of a merged
    folder, tokenizer, runtime)."""
    from peft import PeftModel

    peft_without_old_torchao()  # Kaggle's torchao 0.10.0: see there
    head = read_head(run)
    # the model that loads decides float16 or float32 on a GPU without bf16: never the training machine's folder
    weights = run.adapter if run.is_merged() else (base_model or cfg.model.path)
    rt = runtime_for(cfg, model_config(resolve_model_path(str(weights))))
    # The real values come from the adapter's saved head; this only sizes the module.
    bias = [0.0] * head["num_labels"] if head["bias"] else None
    scaler = head.get("feature_scaler")
    num_features = len(scaler["mean"]) if scaler else 0
    if run.is_merged():  # `arena merge`: the backbone in the folder, quantized as asked when it loads
        from safetensors.torch import load_file

        if base_model is not None:
            print(f"note: {run.root} is a merged model with its own weights; the base model {base_model} is not used")
        model = load_base(cfg, rt, bias, num_features, model_path=run.adapter, quantization=quantization)
        weights = load_file(run.merged_head)
        model.score.load_state_dict({k: v.to(model.score.proj.weight.dtype) for k, v in weights.items()})
    else:
        model = load_base(cfg, rt, bias, num_features, model_path=base_model, quantization=quantization)
        model = PeftModel.from_pretrained(model, run.adapter, torch_device=model_device(model))
    model.eval()
    return model, load_tokenizer(run.adapter), rt
