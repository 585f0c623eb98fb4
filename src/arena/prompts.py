"""Prompt formats: one example = a fixed per-family scaffold + three content parts (prompt, response A,
response B), each rendered over all its turns, tokenised once and truncated to a per-part token budget.

The scaffold (template text, the families' special tokens, BOS) is never truncated; only content is. Truncation
keeps one end of an over-long part (left: its end, right: its start, marked by prompt.cut_marker) or, with
`truncation_side: middle`, its head and its tail, the cut in between marked MIDDLE_CUT with the number of tokens
left out; the template then states what the marker means (MIDDLE_NOTE), and the marker counts in the part's budget.
Content is tokenised with `split_special_tokens=True`, so text that merely spells a special token
(e.g. a response containing "<end_of_turn>") cannot inject scaffold ids.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Iterable, Sequence

from arena.config import Family, PromptConfig

FAMILIES = typing.get_args(Family)  # the choices of model.family

QUESTION = "Which response is better: A, B, or a tie?"

# (text before the "<prompt>:" label, text after response B). The classifier reads the last token's
# hidden state, so the instruct families end on the question and the assistant turn's opening.
_FRAMES = {
    "plain": ("", ""),
    "gemma": ("<start_of_turn>user\n", f"\n\n{QUESTION}<end_of_turn>\n<start_of_turn>model\n"),
    "llama3": (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n",
        f"\n\n{QUESTION}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
    ),
    "mistral": ("[INST] ", f"\n\n{QUESTION} [/INST]"),
    "phi2": ("Instruct: ", f"\n\n{QUESTION}\nOutput:"),
}

# truncation_side middle: the cut's marker, and the note that tells the model what it means (in the scaffold).
MIDDLE_CUT = " (... {n} tokens cut ...) "
MIDDLE_NOTE = "Long texts are shortened in the middle: (... N tokens cut ...) stands where N tokens were left out.\n\n"

# Pre-clip over-long texts to this many characters per token of max_length before tokenising, so the
# cost per row is O(max_length), not O(text). A clipped part is re-tokenised in full in the rare case
# its clip holds fewer than max_length + _CLIP_MARGIN tokens (then it might not be over budget).
_CLIP_CHARS_PER_TOKEN = 8
_CLIP_MARGIN = 16
# Labels state word counts; the budget check sizes them for counts up to this one (nine digits).
_MOST_WORDS = 10**9 - 1
_BATCH_ROWS = 512


def render_turns(turns) -> str:
    """One part's text over all its turns: the single turn as is, several as "Turn 1: ...\\nTurn 2: ..."."""
    turns = _as_turns(turns)
    if len(turns) == 1:
        return turns[0]
    return "\n".join(f"Turn {i}: {t}" for i, t in enumerate(turns, 1))


def count_words(turns) -> int:
    return sum(len(t.split()) for t in _as_turns(turns))


def allocate(lengths: Sequence[int], budget: int, cfg: PromptConfig) -> list[int]:
    """Token counts kept of (prompt, response A, response B) whose full lengths are `lengths`.

    Unchanged when they fit the budget. Otherwise every part keeps at least min(length, min_tokens);
    the rest is water-filled by the shares (prompt_share, response_share, response_share): part i gets
    min(length_i, max(floor_i, lam * share_i)) with lam chosen so the total is exactly `budget`.
    """
    lengths = [int(n) for n in lengths]
    if sum(lengths) <= budget:
        return lengths
    floors = [min(n, cfg.min_tokens) for n in lengths]
    if sum(floors) > budget:
        raise ValueError(
            f"token budget {budget} cannot hold the minimum {cfg.min_tokens} tokens of each part "
            f"(need {sum(floors)}): raise max_length or lower prompt.min_tokens"
        )
    weights = _shares(cfg)

    def filled(lam: float) -> list[float]:
        return [min(n, max(f, lam * w)) for n, f, w in zip(lengths, floors, weights, strict=True)]

    # g(lam) = sum(filled(lam)) is piecewise linear and non-decreasing; find the segment that reaches
    # the budget and interpolate inside it.
    points = sorted({x / w for n, f, w in zip(lengths, floors, weights, strict=True) if w > 0 for x in (f, n)})
    lam, prev, prev_total = points[-1], 0.0, float(sum(floors))
    for point in points:
        total = sum(filled(point))
        if total >= budget:
            lam = prev + (point - prev) * (budget - prev_total) / (total - prev_total) if total > prev_total else point
            break
        prev, prev_total = point, total
    exact = filled(lam)
    alloc = [max(f, min(n, math.floor(x + 1e-9))) for n, f, x in zip(lengths, floors, exact, strict=True)]
    # Rounding (or a zero share) leaves a few tokens: hand them out, largest remainder first.
    left = budget - sum(alloc)
    while left < 0:  # float error only; never observed
        i = max(range(3), key=lambda j: alloc[j] - floors[j])
        alloc[i] -= 1
        left += 1
    order = sorted(range(3), key=lambda i: (alloc[i] - exact[i], -weights[i]))
    while left > 0:
        progressed = False
        for i in order:
            if left > 0 and alloc[i] < lengths[i]:
                alloc[i] += 1
                left -= 1
                progressed = True
        if not progressed:
            break
    return alloc


def encode(tokenizer, prompt: list[str], response_a: list[str], response_b: list[str], cfg: PromptConfig,
           family: str, swap: bool = False, max_length: int | None = None) -> list[int]:
    """Token ids of one example; never longer than `max_length` (default cfg.max_length)."""
    encoder = _Encoder(tokenizer, cfg, family, max_length)
    return _join(encoder.encode_rows([(prompt, response_a, response_b)], swap)[0])


def encode_parts(tokenizer, prompt: list[str], response_a: list[str], response_b: list[str], cfg: PromptConfig,
                 family: str, swap: bool = False, max_length: int | None = None) -> list[tuple[str, list[int]]]:
    """`encode` split into named pieces: head, prompt, label_a, response_a, label_b, response_b, tail.

    Content pieces ("prompt", "response_a", "response_b": the first, second and third slot, so with
    swap=True "response_a" holds B's text) include the cut marker when truncated.
    """
    encoder = _Encoder(tokenizer, cfg, family, max_length)
    pieces = encoder.encode_rows([(prompt, response_a, response_b)], swap)[0]
    return list(zip(_PIECES, pieces, strict=True))


def encode_frame(tokenizer, df, cfg: PromptConfig, family: str, swap: bool = False,
                 max_length: int | None = None) -> list[list[int]]:
    """`encode` for every row of a DataFrame with list[str] columns prompt, response_a, response_b."""
    encoder = _Encoder(tokenizer, cfg, family, max_length)
    rows = list(zip(df["prompt"], df["response_a"], df["response_b"], strict=True))
    out: list[list[int]] = []
    progress = None
    if len(rows) > 2000:
        from tqdm.auto import tqdm

        progress = tqdm(total=len(rows), desc=f"tokenising ({family}{', swapped' if swap else ''})", unit="row")
    for start in range(0, len(rows), _BATCH_ROWS):
        chunk = rows[start:start + _BATCH_ROWS]
        out.extend(_join(pieces) for pieces in encoder.encode_rows(chunk, swap))
        if progress is not None:
            progress.update(len(chunk))
    if progress is not None:
        progress.close()
    return out


def budget_problem(tokenizer, cfg: PromptConfig, family: str, max_length: int) -> str | None:
    """Why `max_length` cannot hold this format's scaffold plus min_tokens of each part, or None: checked
    with the tokenizer before any model loads."""
    encoder = _Encoder(tokenizer, cfg, family, max_length)
    return encoder.scaffold_problem(encoder.largest_scaffold())


def render_text(tokenizer, prompt: list[str], response_a: list[str], response_b: list[str], cfg: PromptConfig,
                family: str, swap: bool = False, max_length: int | None = None) -> str:
    """The decoded text of `encode` (special tokens kept), for debugging and documentation."""
    ids = encode(tokenizer, prompt, response_a, response_b, cfg, family, swap=swap, max_length=max_length)
    return tokenizer.decode(ids, skip_special_tokens=False)


# ---- internals --------------------------------------------------------------------------------------

_PIECES = ("head", "prompt", "label_a", "response_a", "label_b", "response_b", "tail")


def _as_turns(turns) -> list[str]:
    if turns is None or (isinstance(turns, float) and math.isnan(turns)):
        return []
    if isinstance(turns, str):
        return [turns]
    return ["" if t is None else str(t) for t in turns]


def _shares(cfg: PromptConfig) -> list[float]:
    shares = [cfg.prompt_share, cfg.response_share, cfg.response_share]
    if any(s < 0 or not math.isfinite(s) for s in shares) or sum(shares) <= 0:
        raise ValueError(f"prompt_share and response_share must be >= 0 and not both 0, got {shares[:2]}")
    total = sum(shares)
    return [s / total for s in shares]


def _join(pieces: list[list[int]]) -> list[int]:
    return [i for piece in pieces for i in piece]


class _Encoder:
    """Scaffold ids for one (tokenizer, config, family, max_length), and the row encoder."""

    def __init__(self, tokenizer, cfg: PromptConfig, family: str, max_length: int | None):
        if family not in FAMILIES:
            raise ValueError(f"unknown prompt family {family!r} (known: {', '.join(FAMILIES)})")
        if cfg.truncation_side not in ("left", "right", "middle"):
            raise ValueError(f"truncation_side must be 'left', 'right' or 'middle', got {cfg.truncation_side!r}")
        _shares(cfg)
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.family = family
        self.max_length = int(cfg.max_length if max_length is None else max_length)
        self.left = cfg.truncation_side == "left"
        self.middle = cfg.truncation_side == "middle"
        self.clip_chars = self.max_length * _CLIP_CHARS_PER_TOKEN
        head, tail = _FRAMES[family]
        bos = getattr(tokenizer, "bos_token", None)
        bos_id = getattr(tokenizer, "bos_token_id", None)
        prefix = [bos_id] if bos_id is not None and not (bos and head.startswith(bos)) else []
        self.head_ids = prefix + self._scaffold(head + (MIDDLE_NOTE if self.middle else "") + "<prompt>:")
        self.tail_ids = self._scaffold(tail)
        self.marker_ids = self._scaffold(cfg.cut_marker) if cfg.cut_marker else []
        self._labels: dict[tuple[str, int | None], list[int]] = {}

    def largest_scaffold(self) -> int:
        """Tokens of the format around the content, with the longest word counts a label can show."""
        words = _MOST_WORDS if self.cfg.show_lengths else None
        return (len(self.head_ids) + len(self._label("response_a", words)) + len(self._label("response_b", words))
                + len(self.tail_ids))

    def scaffold_problem(self, fixed: int) -> str | None:
        need = fixed + 3 * self.cfg.min_tokens
        if self.max_length >= need:
            return None
        return (f"{self.max_length} cannot hold the {self.family!r} format with this tokenizer: its scaffold takes "
                f"{fixed} tokens and each of the 3 parts needs prompt.min_tokens={self.cfg.min_tokens} (needs at "
                f"least {need})")

    def _scaffold(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]) if text else []

    def _content(self, texts: list[str]) -> list[list[int]]:
        if not texts:
            return []
        return self.tokenizer(texts, add_special_tokens=False, split_special_tokens=True, verbose=False)["input_ids"]

    def _label(self, slot: str, words: int | None) -> list[int]:
        key = (slot, words)
        if key not in self._labels:
            size = f" ({words} words)" if words is not None else ""
            self._labels[key] = self._scaffold(f"\n\n<{slot}>{size}:")
        return self._labels[key]

    def _tokenize_parts(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text; over-long texts are pre-clipped on the kept side (see _CLIP_*). Middle truncation
        counts the tokens it cuts, so it tokenises every text in full."""
        if self.middle:
            return self._content(texts)
        limit = self.clip_chars
        clipped = [len(t) > limit for t in texts]
        cut = [(t[-limit:] if self.left else t[:limit]) if c else t for t, c in zip(texts, clipped, strict=True)]
        ids = self._content(cut)
        redo = [i for i, c in enumerate(clipped) if c and len(ids[i]) < self.max_length + _CLIP_MARGIN]
        for i, full in zip(redo, self._content([texts[i] for i in redo]), strict=True):
            ids[i] = full
        return ids

    def _truncate(self, ids: list[int], keep: int) -> list[int]:
        if keep >= len(ids):
            return list(ids)
        if self.middle:
            return self._cut_middle(ids, keep)
        marker = self.marker_ids
        if len(marker) >= keep:
            marker = []
        n = keep - len(marker)
        if n <= 0:
            return []
        return marker + ids[-n:] if self.left else ids[:n] + marker

    def _cut_middle(self, ids: list[int], keep: int) -> list[int]:
        """The head and the tail of `ids` (the head takes the odd token), `keep` tokens in all with the marker of
        the tokens cut between them; without the marker when it alone would fill `keep`."""
        size = 0  # tokens the marker takes; its count of cut tokens grows as the marker does, so settle it
        while True:
            kept = keep - size
            marker = self._scaffold(MIDDLE_CUT.format(n=len(ids) - kept))
            if len(marker) <= size or len(marker) >= keep:
                break
            size = len(marker)
        if len(marker) >= keep:
            marker, kept = [], keep
        head = (kept + 1) // 2
        return ids[:head] + marker + ids[len(ids) - (kept - head):]

    def encode_rows(self, rows: Iterable[tuple], swap: bool) -> list[list[list[int]]]:
        """Per row, the id lists of the pieces named in _PIECES."""
        rows = [(p, b, a) if swap else (p, a, b) for p, a, b in rows]
        # A leading space on the content keeps tokenisation natural after "label:" for byte-level BPE.
        texts = [" " + render_turns(part) for row in rows for part in row]
        ids = self._tokenize_parts(texts)
        show = self.cfg.show_lengths
        out = []
        for r, (_, a, b) in enumerate(rows):
            label_a = self._label("response_a", count_words(a) if show else None)
            label_b = self._label("response_b", count_words(b) if show else None)
            fixed = len(self.head_ids) + len(label_a) + len(label_b) + len(self.tail_ids)
            budget = self.max_length - fixed
            if budget < 3 * self.cfg.min_tokens:  # budget_problem passed: only a response over _MOST_WORDS words
                raise ValueError(self.scaffold_problem(fixed))
            parts = ids[3 * r:3 * r + 3]
            keep = allocate([len(p) for p in parts], budget, self.cfg)
            p_ids, a_ids, b_ids = (self._truncate(p, k) for p, k in zip(parts, keep, strict=True))
            out.append([self.head_ids, p_ids, label_a, a_ids, label_b, b_ids, self.tail_ids])
        return out
