import random
import re
from dataclasses import replace

import pandas as pd
import pytest

from arena import prompts
from arena.config import PromptConfig

SIDES = ("left", "right")
# The tiny tokenizer spells llama3/mistral/phi2 markers with many byte tokens: give the scaffold room.
MAX_LEN = 384

WORDS = ["the", "quick", "brown", "fox", "Python", "sorted", "qubits", "émojis", "🙂", "日本語", "**bold**",
         "`code`", "\n", "1.", "-", "<start_of_turn>", "[INST]", ""]


def random_text(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.1:
        return ""
    if kind < 0.2:
        return "x" * rng.randint(1, 3000)  # one very long word
    n = rng.choice([1, 3, 20, 200, 900])
    return " ".join(rng.choice(WORDS) for _ in range(n))


def random_turns(rng: random.Random) -> list[str]:
    return [random_text(rng) for _ in range(rng.choice([1, 1, 2, 3]))]


def content_len(tok, turns) -> int:
    return len(tok(" " + prompts.render_turns(turns), add_special_tokens=False, split_special_tokens=True)["input_ids"])


def test_allocate_random():
    rng = random.Random(0)
    for _ in range(3000):
        cfg = PromptConfig(min_tokens=rng.choice([0, 1, 16, 40]), prompt_share=rng.choice([0.0, 0.2, 0.5, 1.0]),
                           response_share=rng.choice([0.0, 0.4, 1.0]))
        if cfg.prompt_share + cfg.response_share == 0:
            continue
        lengths = [rng.choice([0, 5, 16, rng.randint(0, 5000)]) for _ in range(3)]
        budget = rng.randint(3 * cfg.min_tokens, 3000)
        alloc = prompts.allocate(lengths, budget, cfg)
        if sum(lengths) <= budget:
            assert alloc == lengths
            continue
        assert sum(alloc) == budget
        for n, k in zip(lengths, alloc, strict=True):
            assert min(n, cfg.min_tokens) <= k <= n


def test_allocate_water_filling():
    cfg = PromptConfig(prompt_share=0.2, response_share=0.4, min_tokens=16)
    assert prompts.allocate([1000, 1000, 1000], 1000, cfg) == [200, 400, 400]
    # A short part gives its unused share to the others, in proportion to their shares.
    assert prompts.allocate([10, 1000, 1000], 1000, cfg) == [10, 495, 495]
    assert prompts.allocate([1000, 50, 1000], 1000, cfg) == [317, 50, 633]
    # The floor holds even when the share is smaller.
    assert prompts.allocate([1000, 1000, 1000], 100, PromptConfig(prompt_share=0.01, min_tokens=30)) == [30, 35, 35]
    with pytest.raises(ValueError, match="min_tokens"):
        prompts.allocate([100, 100, 100], 40, cfg)


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("family", prompts.FAMILIES)
def test_random_inputs_respect_budget_and_floors(tiny_tokenizer, family, side):
    rng = random.Random(f"{family}-{side}")
    cfg = PromptConfig(max_length=MAX_LEN, truncation_side=side, min_tokens=16)
    marker = tiny_tokenizer(cfg.cut_marker, add_special_tokens=False)["input_ids"]
    for _ in range(25):
        p, a, b = random_turns(rng), random_turns(rng), random_turns(rng)
        swap = rng.random() < 0.5
        pieces = dict(prompts.encode_parts(tiny_tokenizer, p, a, b, cfg, family, swap=swap))
        ids = prompts.encode(tiny_tokenizer, p, a, b, cfg, family, swap=swap)
        assert ids == [i for piece in pieces.values() for i in piece]
        assert len(ids) <= MAX_LEN
        full = [content_len(tiny_tokenizer, t) for t in ((p, b, a) if swap else (p, a, b))]
        kept = [pieces["prompt"], pieces["response_a"], pieces["response_b"]]
        over = sum(full) + len(ids) - sum(map(len, kept)) > MAX_LEN
        for n, k in zip(full, kept, strict=True):
            assert len(k) >= min(n, cfg.min_tokens)
            assert len(k) <= n
            truncated = len(k) < n
            assert truncated <= over
            has_marker = (k[: len(marker)] if side == "left" else k[-len(marker):]) == marker
            assert has_marker == truncated


@pytest.mark.parametrize("family", prompts.FAMILIES)
def test_short_inputs_untouched(tiny_tokenizer, family):
    cfg = PromptConfig(max_length=MAX_LEN)
    p, a, b = ["Write a short poem about the sea."], ["Quantum computers use qubits."], ["I cannot help."]
    text = prompts.render_text(tiny_tokenizer, p, a, b, cfg, family)
    assert cfg.cut_marker.strip() not in text
    for part in (p, a, b):
        assert part[0] in text
    assert text.index(a[0]) < text.index(b[0])


def test_plain_format_matches_public_notebook(tiny_tokenizer):
    cfg = PromptConfig(max_length=MAX_LEN, show_lengths=False)
    text = prompts.render_text(tiny_tokenizer, ["Hi"], ["Hello there"], ["Hey"], cfg, "plain")
    assert text == "<bos><prompt>: Hi\n\n<response_a>: Hello there\n\n<response_b>: Hey"


def test_gemma_format_and_special_tokens(tiny_tokenizer):
    cfg = PromptConfig(max_length=128)
    start = tiny_tokenizer.convert_tokens_to_ids("<start_of_turn>")
    end = tiny_tokenizer.convert_tokens_to_ids("<end_of_turn>")
    # A response that spells the special tokens must not inject them.
    ids = prompts.encode(tiny_tokenizer, ["<start_of_turn>"], ["<end_of_turn> " * 300], ["b"], cfg, "gemma")
    assert len(ids) <= 128
    assert ids[0] == tiny_tokenizer.bos_token_id
    assert ids[1] == start
    assert ids.count(start) == 2 and ids.count(end) == 1
    text = tiny_tokenizer.decode(ids)
    assert text.endswith("<end_of_turn>\n<start_of_turn>model\n")
    assert text.startswith("<bos><start_of_turn>user\n<prompt>:")


def test_bos_not_doubled_when_scaffold_starts_with_it():
    from tests.tiny import tiny_tokenizer

    tok = tiny_tokenizer()  # a private copy: the session fixture must not change
    tok.add_special_tokens({"bos_token": "<|begin_of_text|>"})
    ids = prompts.encode(tok, ["p"], ["a"], ["b"], PromptConfig(max_length=MAX_LEN), "llama3")
    assert ids.count(tok.bos_token_id) == 1 and ids[0] == tok.bos_token_id


@pytest.mark.parametrize("family", prompts.FAMILIES)
def test_left_keeps_last_turn_right_keeps_first(tiny_tokenizer, family):
    first, last = "Bonjour comment", "Quantum qubits"
    prompt = [first + " the lazy dog" * 300, "the fox " * 300 + last]
    left = PromptConfig(max_length=MAX_LEN, truncation_side="left")
    right = replace(left, truncation_side="right")
    text_left = prompts.render_text(tiny_tokenizer, prompt, ["a"], ["b"], left, family)
    text_right = prompts.render_text(tiny_tokenizer, prompt, ["a"], ["b"], right, family)
    assert last in text_left and first not in text_left
    assert first in text_right and last not in text_right
    assert "Turn 1" in text_right and "Turn 1" not in text_left
    for text in (text_left, text_right):
        assert left.cut_marker in text


@pytest.mark.parametrize("family", prompts.FAMILIES)
def test_swap_puts_b_first(tiny_tokenizer, family):
    cfg = PromptConfig(max_length=MAX_LEN)
    a, b = ["Sure here is a function"], ["I am sorry but no"]
    plain = prompts.render_text(tiny_tokenizer, ["q"], a, b, cfg, family)
    swapped = prompts.render_text(tiny_tokenizer, ["q"], a, b, cfg, family, swap=True)
    assert plain.index(a[0]) < plain.index(b[0])
    assert swapped.index(b[0]) < swapped.index(a[0])
    assert re.search(r"<response_a> \(5 words\): I am sorry", swapped)


def test_show_lengths_counts_words_over_all_turns(tiny_tokenizer):
    cfg = PromptConfig(max_length=128, truncation_side="left")
    a = ["one two three", "four  five\nsix " + "seven " * 500]
    b = ["", "   "]
    text = prompts.render_text(tiny_tokenizer, ["p"], a, b, cfg, "gemma")
    assert "<response_a> (506 words):" in text
    assert "<response_b> (0 words):" in text
    assert cfg.cut_marker in text
    off = prompts.render_text(tiny_tokenizer, ["p"], a, b, replace(cfg, show_lengths=False), "gemma")
    assert "words" not in off and "<response_a>:" in off


def test_render_turns_and_messy_values():
    assert prompts.render_turns(["only"]) == "only"
    assert prompts.render_turns(["a", None, "c"]) == "Turn 1: a\nTurn 2: \nTurn 3: c"
    assert prompts.render_turns([]) == ""
    assert prompts.render_turns(None) == ""
    assert prompts.render_turns(float("nan")) == ""
    assert prompts.count_words(["a b", None, True]) == 3


def test_max_length_override_and_too_small(tiny_tokenizer):
    cfg = PromptConfig(max_length=MAX_LEN)
    long = ["word " * 2000]
    assert len(prompts.encode(tiny_tokenizer, long, long, long, cfg, "gemma")) == MAX_LEN
    assert len(prompts.encode(tiny_tokenizer, long, long, long, cfg, "gemma", max_length=200)) == 200
    with pytest.raises(ValueError, match="100 cannot hold the 'gemma' format with this tokenizer: its scaffold takes"):
        prompts.encode(tiny_tokenizer, long, long, long, cfg, "gemma", max_length=100)
    problem = prompts.budget_problem(tiny_tokenizer, cfg, "gemma", 100)
    assert problem and "needs at least" in problem and prompts.budget_problem(tiny_tokenizer, cfg, "gemma", 200) is None
    with pytest.raises(ValueError, match="unknown prompt family"):
        prompts.encode(tiny_tokenizer, long, long, long, cfg, "gpt")


@pytest.mark.parametrize("side", ["left", "middle"])
def test_encode_frame_matches_encode(tiny_tokenizer, side):
    rng = random.Random(1)
    rows = [(random_turns(rng), random_turns(rng), random_turns(rng)) for _ in range(60)]
    df = pd.DataFrame(rows, columns=["prompt", "response_a", "response_b"])
    cfg = PromptConfig(max_length=256, truncation_side=side)
    for swap in (False, True):
        got = prompts.encode_frame(tiny_tokenizer, df, cfg, "gemma", swap=swap)
        want = [prompts.encode(tiny_tokenizer, p, a, b, cfg, "gemma", swap=swap) for p, a, b in rows]
        assert got == want


def test_long_text_preclip_is_exact(tiny_tokenizer):
    # Texts far over max_length are clipped on characters before tokenising: same result as in full.
    cfg = PromptConfig(max_length=200)
    text = " ".join(f"w{i}" for i in range(5000))
    encoder = prompts._Encoder(tiny_tokenizer, cfg, "plain", None)
    full = tiny_tokenizer(" " + text, add_special_tokens=False)["input_ids"]
    for side in SIDES:
        encoder.left = side == "left"
        ids = encoder._tokenize_parts([" " + text])[0]
        assert len(ids) >= 200
        n = 150
        assert (ids[-n:] == full[-n:]) if side == "left" else (ids[:n] == full[:n])
    # When the clipped text holds too few tokens (long tokens), the text is re-tokenised in full.
    encoder._content = lambda texts: [[0] * (len(t) // 20) for t in texts]
    assert len(encoder._tokenize_parts(["y" * 10000])[0]) == 500


def _real_tokenizer():
    """The embedded default's real Gemma-3 tokenizer (262k vocab; converted once into the cache)."""
    from arena.embedded import ensure_gemma3_270m
    from arena.model import load_tokenizer

    return load_tokenizer(ensure_gemma3_270m())


@pytest.mark.e2e
@pytest.mark.parametrize("side", [*SIDES, "middle"])
def test_real_tokenizer(side):
    tok = _real_tokenizer()
    rng = random.Random(2)
    cfg = PromptConfig(max_length=256, truncation_side=side)
    for family in prompts.FAMILIES:
        for _ in range(10):
            ids = prompts.encode(tok, random_turns(rng), random_turns(rng), random_turns(rng), cfg, family)
            assert len(ids) <= 256
            if family == "gemma":
                # scaffold special tokens are single ids and content cannot inject more of them
                assert ids[0] == tok.bos_token_id
                assert ids.count(tok.convert_tokens_to_ids("<start_of_turn>")) == 2


def test_every_family_the_config_accepts_has_a_frame():
    assert set(prompts.FAMILIES) == set(prompts._FRAMES)


CUT = re.compile(r"\(\.\.\. (\d+) tokens cut \.\.\.\)")


@pytest.mark.parametrize("family", prompts.FAMILIES)
def test_middle_keeps_head_and_tail_with_the_count_cut(tiny_tokenizer, family):
    rng = random.Random(f"middle-{family}")
    cfg = PromptConfig(max_length=MAX_LEN, truncation_side="middle", min_tokens=16)
    cuts = 0
    for _ in range(15):
        p, a, b = random_turns(rng), random_turns(rng), random_turns(rng)
        for max_length in (MAX_LEN, 300):  # prompt.max_length, and a shorter infer.max_length
            pieces = dict(prompts.encode_parts(tiny_tokenizer, p, a, b, cfg, family, max_length=max_length))
            ids = [i for piece in pieces.values() for i in piece]
            assert ids == prompts.encode(tiny_tokenizer, p, a, b, cfg, family, max_length=max_length)
            assert len(ids) <= max_length
            for turns, slot in zip((p, a, b), ("prompt", "response_a", "response_b"), strict=True):
                full = tiny_tokenizer(" " + prompts.render_turns(turns), add_special_tokens=False,
                                      split_special_tokens=True)["input_ids"]
                kept = pieces[slot]
                if len(kept) == len(full):
                    assert kept == full  # short texts untouched
                    continue
                cuts += 1
                assert len(kept) >= cfg.min_tokens
                cut = [int(n) for n in CUT.findall(tiny_tokenizer.decode(kept))]
                if not cut:  # a part this short would be all marker: then it is left out
                    n = len(full) - len(kept)
                    assert len(tiny_tokenizer(prompts.MIDDLE_CUT.format(n=n), add_special_tokens=False)["input_ids"]) \
                        >= len(kept)
                    cut = [n]
                assert len(cut) == 1, tiny_tokenizer.decode(kept)  # one marker, stating how many tokens it stands for
                marker = tiny_tokenizer(prompts.MIDDLE_CUT.format(n=cut[0]), add_special_tokens=False)["input_ids"]
                marker = marker if len(marker) < len(kept) else []
                content = len(kept) - len(marker)
                assert content == len(full) - cut[0] and content > 0
                head, tail = (content + 1) // 2, content // 2  # as much of the head as of the tail
                assert kept[:head] == full[:head] and kept[head:head + len(marker)] == marker
                assert kept[head + len(marker):] == full[len(full) - tail:]
    assert cuts > 10


@pytest.mark.parametrize("family", prompts.FAMILIES)
def test_middle_template_states_the_marker_and_short_texts_are_untouched(tiny_tokenizer, family):
    cfg = PromptConfig(max_length=MAX_LEN, truncation_side="middle")
    p, a, b = ["Write a short poem about the sea."], ["Quantum computers use qubits."], ["I cannot help."]
    text = prompts.render_text(tiny_tokenizer, p, a, b, cfg, family)
    assert prompts.MIDDLE_NOTE.strip() in text and not CUT.search(text)
    assert all(part[0] in text for part in (p, a, b))
    long = ["Bonjour comment " + "the lazy dog " * 400 + "Quantum qubits"]
    text = prompts.render_text(tiny_tokenizer, long, a, long, cfg, family)
    assert text.count("Bonjour comment") == 2 and text.count("Quantum qubits") == 2 and len(CUT.findall(text)) == 2
    assert len(prompts.encode(tiny_tokenizer, long, long, long, cfg, family)) == MAX_LEN
    left = prompts.render_text(tiny_tokenizer, long, a, long, replace(cfg, truncation_side="left"), family)
    assert prompts.MIDDLE_NOTE.strip() not in left and "Bonjour" not in left


def test_middle_marker_that_would_fill_the_part_is_left_out(tiny_tokenizer):
    encoder = prompts._Encoder(tiny_tokenizer, PromptConfig(truncation_side="middle"), "plain", None)
    ids = list(range(100, 400))
    marker = len(tiny_tokenizer(prompts.MIDDLE_CUT.format(n=290), add_special_tokens=False)["input_ids"])
    assert encoder._truncate(ids, marker) == ids[:(marker + 1) // 2] + ids[300 - marker // 2:]
    kept = encoder._truncate(ids, 40)
    assert len(kept) <= 40 and kept[:3] == ids[:3] and kept[-3:] == ids[-3:]
