"""What the tests build small: random models and an in-process BPE tokenizer saved like a real checkpoint folder,
the tiny configs (one builder for a model, one for a training run), a batch, a kill after a checkpoint,
a stop once a test has seen what it needs."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import TrainerCallback

from arena import config

SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]

_CORPUS = [
    "The quick brown fox jumps over the lazy dog. Write a short poem about the sea.",
    "Sure! Here is a Python function that sorts a list: def sort(xs): return sorted(xs)",
    "I'm sorry, but I cannot help with that request.",
    "User: explain quantum computing in simple terms. Assistant: Quantum computers use qubits.",
    "1. First step\n2. Second step\n- bullet point\n**bold** `code` # Heading",
    "prompt response_a response_b Response A Response B words tokens length tie winner",
    "Instruct: Output: <|start_header_id|>user<|end_header_id|> [INST] [/INST] <|eot_id|>",
    "Bonjour, comment ça va? 日本語のテキスト. Ünïcödé text with émojis 🙂",
]


def tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(_CORPUS * 20, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>", unk_token="<unk>"
    )
    fast.add_special_tokens({"additional_special_tokens": ["<start_of_turn>", "<end_of_turn>"]})
    return fast


def tiny_config(model_type: str = "gemma2", vocab_size: int = 400, num_hidden_layers: int = 2):
    from transformers import AutoConfig

    kwargs = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
    )
    if model_type in ("gemma2", "gemma3_text", "llama", "mistral"):
        kwargs["head_dim"] = 16
    if model_type == "phi":
        kwargs.pop("num_key_value_heads")
    return AutoConfig.for_model(model_type, **kwargs)



def tiny_config_dir(tmp_path, model_type):
    """A folder holding only the tiny config.json of `model_type` (no weights): what the planner and the dtype
    choice read."""
    folder = tmp_path / model_type
    tiny_config(model_type).save_pretrained(folder)
    return folder


def save_tiny_model(folder: Path, model_type: str = "gemma2", seed: int = 0, num_hidden_layers: int = 2) -> Path:
    """A random CausalLM checkpoint + tokenizer in `folder`, loadable like any local base model."""
    import torch
    from transformers import AutoModelForCausalLM

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(model_type, len(tokenizer), num_hidden_layers))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_cfg(model_dir, **sections):
    """The tests' config of the tiny model (plain format): `sections` (and top-level keys such as name) over the
    schema's defaults."""
    data = {"model": {"path": str(model_dir), "family": "plain"}}
    for section, values in sections.items():
        if isinstance(values, dict):
            data.setdefault(section, {}).update(values)
        else:
            data[section] = values
    return config.from_dict(data)


# Two rows, one left-padded: what a forward of the tiny model takes.
BATCH = {
    "input_ids": torch.tensor([[0, 0, 0, 5, 6, 7, 8], [9, 10, 11, 12, 13, 14, 15]]),
    "attention_mask": torch.tensor([[0, 0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1]]),
}


def tiny_train_cfg(model_dir, csv, runs_dir, *overrides):
    return config.from_dict(
        {
            "name": "tiny",
            "model": {"path": str(model_dir), "family": "plain"},
            "prompt": {"max_length": 96, "min_tokens": 8},
            "infer": {"max_length": 96},
            "data": {"train": str(csv), "folds": 4},
            "train": {"runs_dir": str(runs_dir), "max_steps": 4, "eval_steps": 2, "per_device_batch_size": 4,
                      "grad_accum": 1, "learning_rate": 1e-3, "logging_steps": 1},
        },
        list(overrides),
    )


class StopAfterCheckpoint(TrainerCallback):
    """A kill right after the checkpoint of `step` is saved."""

    def __init__(self, step: int):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt


class Stop(Exception):
    """Raised by a patched loader once the test has seen what it needs: no weights load."""
