"""The decoder backbone read by the PreferenceHead: PreferenceModel, its padding, tokenizer, loading (quantized and
placed per the runtime) and its meta-device skeleton (shapes only, for the planner and the room check)."""

from __future__ import annotations

import collections
import functools
import json
import re
from pathlib import Path

import torch

from arena import quiet
from arena.config import Config
from arena.embedded import resolve_model_path
from arena.errors import UserError
from arena.model.head import PreferenceHead, new_head, num_labels
from arena.model.quantize import quantization_config, use_one_4bit_kernel
from arena.model.runtime import Runtime, attn_implementation, compute_dtype_problems, cuda_device_index
from arena.writes import sha256_of


class PreferenceModel(torch.nn.Module):
    """A decoder backbone read by a PreferenceHead at each row's last real token:
    `forward(input_ids, attention_mask, features) -> logits (n, classes)`.

    The attributes are named `model` and `score` as in transformers' sequence-classification classes, so peft
    (task SEQ_CLS, which keeps `score` trainable and saved) and adapters saved by either class fit both.
    """

    # What the Trainer and peft ask of a quantized or device-mapped model: the backbone answers.
    # (_no_split_modules: the decoder layer class, which FSDP's transformer-based wrapping shards by.)
    _FROM_BACKBONE = frozenset({"device", "dtype", "_no_split_modules", "hf_device_map", "hf_quantizer",
                                "is_quantized", "quantization_method", "is_loaded_in_4bit", "is_loaded_in_8bit",
                                "name_or_path"})

    def __init__(self, backbone, head: PreferenceHead):
        super().__init__()
        self.model = backbone
        self.score = head
        self.config = backbone.config

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name in PreferenceModel._FROM_BACKBONE:
                return getattr(self._modules["model"], name)
            raise

    def get_input_embeddings(self):
        return self.model.get_input_embeddings()

    def enable_input_require_grads(self):
        """Deliberately nothing. peft calls this on an unquantized model (else it hooks the embeddings itself) so
        that reentrant checkpointing sees inputs that need gradients. arena checkpoints non-reentrant, which needs
        none (model.enable_checkpointing); with them, backward would run through the frozen layers too."""

    def forward(self, input_ids=None, attention_mask=None, features=None, inputs_embeds=None,
                labels=None, output_attentions=None, output_hidden_states=None, return_dict=None) -> torch.Tensor:
        """Logits (n, classes). `features`: the head's (n, num_features) standardised length features, when it reads
        them. peft's sequence-classification wrapper passes `inputs_embeds` (prompt tuning) and the last four
        arguments, which are unused: the caller computes the loss."""
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
                            use_cache=False).last_hidden_state
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        return self.score(hidden[rows, last_token_index(attention_mask, hidden.shape[1])], features)


def last_token_index(attention_mask: torch.Tensor | None, length: int) -> torch.Tensor | int:
    """Position of each row's last real token, found from the mask (on either padding side); -1 without one."""
    if attention_mask is None:
        return -1
    from_end = attention_mask.flip(-1).to(torch.int64).argmax(-1)
    return (length - 1 - from_end).to(attention_mask.device)


def right_pad(rows: list[list[int]], pad_token_id: int, length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) long tensors (len(rows), length), every row right-padded to `length` (default:
    the longest row). Right padding, since under a causal mask it leaves every query a real key to attend to. With
    left padding a pad query before the first real token has none: its eager mask row is finfo(dtype).min
    throughout, which in float16 (-65504) plus a score below -16 is -inf, and a row of -inf is NaN after softmax;
    the NaN hidden state then reaches every row's tokens through 0 * NaN in the next layer's attention. Right
    padding also gives real tokens the positions they have alone, so a row's logits do not depend on its batch."""
    longest = max((len(r) for r in rows), default=0)
    length = longest if length is None else length
    if longest > length:
        too_long = [len(r) for r in rows if len(r) > length]
        raise ValueError(f"right_pad: {len(too_long)} row(s) longer than {length} tokens (max {longest})")
    ids = torch.full((len(rows), length), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, :len(r)] = 1
    return ids, mask


# The files a tokenizer is built from (the names transformers reads; config.json names the class where
# tokenizer_config.json does not): folders holding the same ones give the same tokenizer.
_TOKENIZER_FILE = re.compile(r".*token.*|.*vocab.*|merges\.txt|.*\.model|chat_template.*|config\.json")
_TOKENIZERS: collections.OrderedDict = collections.OrderedDict()  # content of those files -> tokenizer, newest last


def load_tokenizer(path: str | Path):
    """The tokenizer of a model or adapter folder, padding on the right (see right_pad). Loaded once per process for
    the content of its files: a Gemma tokenizer.json is 33 MB of JSON (seconds to parse), a prediction reads the
    run's tokenizer three times (its check, the rows, the model) and `arena merge` every run's copy of the same
    one. Callers only read it."""
    folder = Path(path)
    if not folder.is_dir():
        return _from_pretrained(path)  # transformers says what is wrong
    files = [p for p in sorted(folder.iterdir()) if p.is_file() and _TOKENIZER_FILE.fullmatch(p.name)]
    key = tuple((p.name, _digest(p.resolve(), (stat := p.stat()).st_size, stat.st_mtime_ns)) for p in files)
    if key not in _TOKENIZERS:
        _TOKENIZERS[key] = _from_pretrained(folder)
        while len(_TOKENIZERS) > 4:
            _TOKENIZERS.popitem(last=False)
    _TOKENIZERS.move_to_end(key)
    return _TOKENIZERS[key]


@functools.lru_cache(maxsize=64)
def _digest(path: Path, size: int, mtime_ns: int) -> str:
    return sha256_of(path)


def _from_pretrained(path: str | Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"  # see right_pad
    return tokenizer


def model_config(path: str | Path):
    """transformers' config of a model folder, its config.json first read as plain JSON: a model_type transformers
    does not ship is a model whose code comes with it (auto_map, trust_remote_code), refused by name before any of
    it could run. Every command reads a base model's config through here."""
    from transformers import AutoConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    file = Path(path) / "config.json"
    try:
        record = json.loads(file.read_text(encoding="utf-8"))
        model_type, custom = record.get("model_type"), "auto_map" in record
    except (OSError, ValueError, AttributeError):
        model_type, custom = None, False  # transformers says what is wrong
    if (isinstance(model_type, str) and model_type not in CONFIG_MAPPING) or (model_type is None and custom):
        raise UserError(f"{file}: model_type {model_type!r} is not an architecture transformers ships: its code "
                        f"comes with the model{' (auto_map)' if custom else ''}, and arena runs no code shipped with "
                        f"a model; use a model transformers supports")
    return AutoConfig.from_pretrained(path)


def load_base(cfg: Config, rt: Runtime, bias: list[float] | None, num_features: int,
              model_path: str | Path | None = None, quantization: str | None = None):
    """The base model with a fresh head, quantized and placed per the runtime (a PreferenceModel)."""
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    path = resolve_model_path(str(model_path or cfg.model.path))
    hf_config = model_config(path)
    kwargs = dict(
        config=hf_config,
        dtype=rt.dtype,
        attn_implementation=attn_implementation(cfg, hf_config.model_type),
        quantization_config=quantization_config(quantization or cfg.model.quantization, rt.dtype, rt.sharded),
    )
    problems = compute_dtype_problems(cfg, hf_config, rt.hardware)
    if problems:
        raise UserError(problems=problems)
    quiet.quiet_libraries()
    if rt.device == "cuda":
        index = cuda_device_index()
        if not rt.sharded:
            # One full copy per process (DDP under `accelerate launch`); never device_map="auto" across GPUs, which
            # is model-parallel. FSDP shards the weights itself, from this process's GPU.
            kwargs["device_map"] = {"": index}
    # Silence the load report: a causal-LM checkpoint's output layer is not part of the backbone, by design.
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        backbone = AutoModel.from_pretrained(path, **kwargs)
    finally:
        hf_logging.set_verbosity(verbosity)
    device = backbone.get_input_embeddings().weight.device
    head = new_head(backbone, cfg, bias, rt.dtype, num_features).to(device)
    if rt.device == "cpu" and kwargs["quantization_config"] is not None:
        use_one_4bit_kernel(backbone)
    return PreferenceModel(backbone, head)


def meta_backbone(hf_config, dtype: torch.dtype | None = None, attn_implementation: str | None = None):
    """The backbone's architecture on the meta device: shapes and dtypes, no weights, no memory."""
    from transformers import AutoModel

    kwargs = {"dtype": dtype} if dtype is not None else {}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    with torch.device("meta"):
        return AutoModel.from_config(hf_config, **kwargs)


def meta_preference_model(cfg: Config, hf_config, dtype: torch.dtype, num_features: int = 0) -> PreferenceModel:
    """A PreferenceModel on the meta device with the base frozen as after loading, and a head as `load_base`
    builds it."""
    backbone = meta_backbone(hf_config, dtype, attn_implementation(cfg, hf_config.model_type))
    backbone.requires_grad_(False)
    with torch.device("meta"):
        head = PreferenceHead(hf_config.hidden_size, num_features, cfg.model.head_init == "prior", dtype,
                              num_labels(cfg))
    return PreferenceModel(backbone, head)
