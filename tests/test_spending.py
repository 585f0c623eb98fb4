"""benchmarks/spending.py: swap TTA orders and a gated second model compared at equal budgets, from predictions."""

import numpy as np
from benchmarks import spending


def _rows(n: int = 600, seed: int = 0):
    """Three-way truth; a plain order confident and right on the long rows, unsure (and often wrong) on the rest."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 3, n)
    y = np.eye(3)[truth]
    sure = rng.random(n) < 0.5
    plain = rng.normal(0, 0.3, (n, 3))
    plain[sure, truth[sure]] += 3.0  # confident and right
    lengths = np.where(sure, 50, 500) + rng.integers(0, 40, n)  # the unsure rows are the long ones
    return y, truth, sure, plain, lengths.tolist()


def test_swap_tta_on_the_uncertain_rows_first_beats_the_shortest_where_the_doubt_is_on_long_rows():
    y, truth, sure, plain, lengths = _rows()
    # swapped order (its classes in B/A order: A and B exchanged) is right on every row
    swapped = np.random.default_rng(1).normal(0, 0.3, plain.shape)
    swapped[np.arange(len(truth)), np.array([1, 0, 2])[truth]] += 2.0
    result = spending.tta_orders(y, plain, swapped, lengths, "prob")
    assert [s["share"] for s in result["shares"]] == list(spending.SHARES)
    first = result["shares"][0]
    assert first["rows"] == round(0.33 * len(y))
    assert first["vs_shortest"]["verdict"] == "helps" and first["vs_shortest"]["mean"] < 0
    assert first["shortest_vs_plain"]["se"] > 0 and result["every_row_vs_plain"]["verdict"] == "helps"


def test_the_rows_each_order_covers():
    top = np.array([0.9, 0.4, 0.6, 0.5])
    lengths = [10, 40, 20, 30]
    assert spending.covered("uncertain", 0.5, top, lengths).tolist() == [1, 3]
    assert spending.covered("shortest", 0.5, top, lengths).tolist() == [0, 2]


def test_a_second_model_gated_on_the_doubtful_rows_beats_it_on_as_many_rows_at_random():
    y, truth, sure, plain, _ = _rows()
    first = np.exp(plain) / np.exp(plain).sum(axis=1, keepdims=True)
    second = np.full_like(first, 0.1)
    second[np.arange(len(truth)), truth] = 0.8  # right everywhere, less sure than the first where it is sure
    result = spending.gated_member(y, first, second, seed=0)
    first_share = result["shares"][0]
    assert first_share["rows"] == int(np.ceil(0.33 * len(y)))
    assert first_share["vs_first"]["verdict"] == "helps" and first_share["vs_equal_time"]["verdict"] == "helps"
    assert set(first_share["vs_full_ensemble"]) == {"mean", "se", "verdict"}
    assert result["full_vs_first"]["verdict"] == "helps"


def test_the_tta_order_tool_scores_kept_logits_at_equal_rows_and_equal_tokens(tmp_path):
    from benchmarks import tta_order

    y, truth, sure, plain, lengths = _rows(n=90)
    swapped = plain[:, [1, 0, 2]] + np.random.default_rng(2).normal(0, 0.5, plain.shape)
    path = tmp_path / "tta_logits.npz"
    np.savez(path, plain=plain, swapped=swapped, lengths=np.array(lengths), truth=y, run="runs/r",
             max_batch_tokens=4096, max_batch_size=16)
    out = tta_order.score(path)
    assert out["rows"] == 90 and out["every row"]["rows"] == 90 and out["plain only"]["rows"] == 0
    assert out["uncertain, 33% of the rows"]["rows"] == out["shortest, 33% of the rows"]["rows"] == 30
    assert 0 < out["shortest, 66% of the tokens"]["rows"] <= 90 and "log_loss" in out["uncertain, 66% of the tokens"]


def test_the_gate_reads_the_probabilities_it_is_given():
    y, truth, sure, plain, _ = _rows(n=300)
    first = np.exp(plain) / np.exp(plain).sum(axis=1, keepdims=True)
    second = np.full_like(first, 0.1)
    second[np.arange(len(truth)), truth] = 0.8
    uniform = np.full_like(first, 1 / 3)
    uniform[:99] = [0.34, 0.33, 0.33]  # a signal that calls the first 99 rows the most certain, the rest tied
    by_first = spending.gated_member(y, first, second, seed=0)["shares"][0]
    by_other = spending.gated_member(y, first, second, seed=0, gate_on=uniform)["shares"][0]
    assert by_first["rows"] == by_other["rows"] and by_first["vs_first"]["mean"] != by_other["vs_first"]["mean"]
