import gc
import json
import types
import weakref
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import safetensors.torch
import torch
from transformers import TrainerCallback

from arena import config, data, metrics, tracking, train
from arena import model as model_mod
from arena.layout import RunFolder
from arena.task import THREE_WAY
from tests.tiny import StopAfterCheckpoint, tiny_cfg, tiny_train_cfg

LABEL_COLUMNS = THREE_WAY.label_columns


def test_soft_cross_entropy_matches_torch_on_one_hot_and_soft_targets():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]])
    hard = torch.tensor([0, 2])
    one_hot = torch.nn.functional.one_hot(hard, 3).float()
    assert torch.allclose(train.soft_cross_entropy(logits, one_hot), torch.nn.functional.cross_entropy(logits, hard))
    soft = torch.tensor([[0.5, 0.25, 0.25], [1 / 3, 1 / 3, 1 / 3]])
    assert torch.allclose(train.soft_cross_entropy(logits, soft), torch.nn.functional.cross_entropy(logits, soft))


def test_the_collator_pads_on_the_right_to_the_longest_row_only():
    batch = train.RightPadCollator(0)([
        {"input_ids": [5, 6, 7], "labels": np.array([1, 0, 0], dtype=np.float32)},
        {"input_ids": [8], "labels": np.array([0, 0, 1], dtype=np.float32)},
    ])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].dtype == torch.float32


def test_swap_augment_doubles_rows_with_swapped_labels(tiny_model_dir, tiny_tokenizer, sample_csv, tmp_path):
    cfg = tiny_train_cfg(tiny_model_dir, sample_csv, tmp_path)
    df = data.load(sample_csv).head(10)
    scaler = data.fit_feature_scaler(df)
    rows = train.encode_rows(tiny_tokenizer, df, cfg, swap_augment="random", scaler=scaler)
    assert len(rows) == 20 and rows.features.shape == (20, len(scaler["mean"]))
    np.testing.assert_array_equal(rows.labels[10:], rows.labels[:10][:, [1, 0, 2]])
    np.testing.assert_array_equal(rows.features[10:], data.head_features(df, scaler, swap=True))
    assert not np.allclose(rows.features[10:], rows.features[:10])


def batch_indices(trainer) -> list[list[int]]:
    """One epoch of the trainer's micro-batches, as indices into its training dataset (found by tokens)."""
    where = {tuple(ids): i for i, ids in enumerate(trainer.train_dataset.input_ids)}
    return [[where[tuple(ids[mask.bool()].tolist())] for ids, mask in zip(b["input_ids"], b["attention_mask"])]
            for b in trainer.get_train_dataloader()]


def test_paired_swap_batches_hold_each_row_beside_its_twin(tiny_model_dir, sample_csv, tmp_path):
    trainers = {}
    for mode in ("paired", "random"):
        cfg = tiny_train_cfg(tiny_model_dir, sample_csv, tmp_path / "runs", f"train.swap_augment={mode}")
        split = train.prepare_data(cfg)
        trainers[mode] = train.make_trainer(cfg, train.open_run_folder(cfg, cpu=True), train.build(cfg, split), split)
    n = len(trainers["paired"].train_dataset) // 2
    batches = batch_indices(trainers["paired"])
    assert sorted(i for b in batches for i in b) == list(range(2 * n))
    assert all(sorted(i % n for i in b) == sorted(2 * [i for i in b if i < n]) for b in batches)
    assert [b[0] for b in batches] != sorted(b[0] % n for b in batches)  # the pairs are shuffled
    random_batches = batch_indices(trainers["random"])
    assert not all(sorted(i % n for i in b) == sorted(2 * [i for i in b if i < n]) for b in random_batches)
    sampler = trainers["paired"]._get_train_sampler()
    first = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != first and sorted(sampler) == sorted(first)


def test_train_writes_a_complete_run_folder(tiny_model_dir, sample_csv, tmp_path):
    cfg = tiny_train_cfg(tiny_model_dir, sample_csv, tmp_path / "runs")
    run_dir = train.train(cfg)
    assert run_dir.parent == tmp_path / "runs" and run_dir.name.startswith("tiny-")
    for name in ["config.yaml", "metrics.json", "val_predictions.csv", "loss_curve.png", "adapter/head.json",
                 "adapter/adapter_config.json", "adapter/adapter_model.safetensors", "adapter/tokenizer.json"]:
        assert (run_dir / name).is_file(), name
    assert config.load(run_dir / "config.yaml") == cfg
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["global_step"] == 4 and m["global_batch"] == 4
    assert m["val_rows"] + m["train_rows"] == 80
    evals = [h for h in m["history"] if "eval_log_loss" in h]
    assert [h["step"] for h in evals] == [0, 2, 4]  # the start (train.eval_on_start), then every eval_steps
    assert m["best_eval_log_loss"] == min(h["eval_log_loss"] for h in evals)
    assert m["start_eval_log_loss"] == evals[0]["eval_log_loss"]
    assert m["start_kept"] == (m["best_checkpoint"] == str(run_dir / "checkpoints" / "checkpoint-0"))
    val = pd.read_csv(run_dir / "val_predictions.csv", dtype={"id": str})
    assert len(val) == m["val_rows"]
    probs = val[LABEL_COLUMNS].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-6)
    truth = val[[f"true_{c}" for c in LABEL_COLUMNS]].to_numpy()
    assert m["val_log_loss_tta"] == pytest.approx(float(-np.mean(np.log((probs * truth).sum(1)))), abs=1e-6)
    # a second run of the same config never touches the first
    again = train.train(cfg)
    assert again != run_dir and (run_dir / "metrics.json").read_text() == json.dumps(m, indent=2, default=float)


def test_training_on_soft_labels(tiny_model_dir, shared_data, tmp_path):
    soft = data.load(shared_data / "pandalm_human_softvotes.csv")
    is_soft = ((data.label_matrix(soft) > 0) & (data.label_matrix(soft) < 1)).any(axis=1)
    soft = soft[is_soft].head(40)  # only split-vote rows (most rows are unanimous)
    csv = tmp_path / "soft.csv"
    data.write_csv(soft, csv)
    run_dir = train.train(tiny_train_cfg(tiny_model_dir, csv, tmp_path / "runs", "train.max_steps=2"))
    val = pd.read_csv(run_dir / "val_predictions.csv")
    truth = val[[f"true_{c}" for c in LABEL_COLUMNS]].to_numpy()
    assert ((truth > 0) & (truth < 1)).any(), "soft labels were collapsed to one-hot"


def test_resume_continues_from_the_last_checkpoint(tiny_model_dir, sample_csv, tmp_path):
    cfg = tiny_train_cfg(tiny_model_dir, sample_csv, tmp_path / "runs", "train.max_steps=6")
    with pytest.raises(KeyboardInterrupt):
        train.train(cfg, callbacks=[StopAfterCheckpoint(4)])
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert not (run_dir / "adapter").exists()
    assert train.find_resumable(cfg, "latest").root == run_dir
    before = json.loads((run_dir / "checkpoints" / "checkpoint-4" / "wall_clock.json").read_text())["seconds"]
    resumed = train.train(cfg, resume="latest")
    assert resumed == run_dir
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["global_step"] == 6
    steps = [h["step"] for h in m["history"] if "loss" in h]
    assert 5 in steps and 1 in steps  # history carries over the resumed part
    # the wall time counts the killed process up to its checkpoint, as `arena runs` shows it
    assert before > 0 and m["wall_seconds_before_resume"] == before
    assert m["total_wall_seconds"] > before and m["train_wall_seconds"] > before


def test_resume_without_checkpoint_is_a_clear_error(tiny_model_dir, sample_csv, tmp_path):
    cfg = tiny_train_cfg(tiny_model_dir, sample_csv, tmp_path / "runs")
    with pytest.raises(train.UserError, match="no unfinished run"):
        train.find_resumable(cfg, "latest")


def test_cv_writes_oof_predictions_for_selected_folds(tiny_model_dir, sample_csv, tmp_path, capsys):
    cfg = tiny_train_cfg(tiny_model_dir, sample_csv, tmp_path / "runs", "train.max_steps=2")
    cv_dir = train.cross_validate(cfg, folds=4, only=[0, 2])
    result = json.loads((cv_dir / "cv.json").read_text())
    assert result["selected"] == [0, 2] and [r["fold"] for r in result["per_fold"]] == [0, 2]
    oof = pd.read_csv(cv_dir / "oof_predictions.csv", dtype={"id": str})
    assert sorted(oof["fold"].unique()) == [0, 2]
    assert oof["id"].is_unique and len(oof) == sum(r["rows"] for r in result["per_fold"])
    folds = data.make_folds(data.training_data(cfg.data, THREE_WAY), 4, cfg.seed)
    df = data.training_data(cfg.data, THREE_WAY)
    expected = set(df["id"][np.isin(folds, [0, 2])])
    assert set(oof["id"]) == expected
    out = capsys.readouterr().out
    assert "OOF log loss" in out
    with pytest.raises(train.UserError, match="--only"):
        train.cross_validate(cfg, folds=4, only=[7])


def test_head_starts_at_the_length_regression(tiny_model_dir, tiny_tokenizer, sample_csv, tmp_path):
    from arena import model as model_mod
    from arena import predict

    cfg = tiny_train_cfg(tiny_model_dir, sample_csv, tmp_path)
    df = data.load(sample_csv).head(12)
    scaler = data.fit_feature_scaler(df)
    rows = train.encode_rows(tiny_tokenizer, df, cfg, swap_augment="none", scaler=scaler)
    coef, intercept = train.fit_length_head(rows.features, rows.labels, seed=0)
    model, tokenizer, _ = model_mod.build_for_training(cfg, num_features=rows.features.shape[1])
    model_mod.init_feature_head(model, coef, intercept)
    logits = predict.logits_for(model, rows.input_ids, tokenizer.pad_token_id, cfg, "cpu", rows.features)
    np.testing.assert_allclose(predict.softmax(logits), predict.softmax(rows.features @ coef.T + intercept), atol=1e-5)


def test_length_regression_accepts_soft_labels():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 3))
    soft = rng.dirichlet([1, 1, 1], size=50)
    coef, intercept = train.fit_length_head(x, soft, seed=0)
    assert coef.shape == (3, 3) and intercept.shape == (3,)


def test_length_regression_runs_blas_on_one_thread(monkeypatch):
    """The regression is small: BLAS threads would only spin against the other ranks and loaders (several times
    slower on a busy machine), so its fit runs in a one-thread BLAS pool and the pool is restored after."""
    from sklearn.linear_model import LogisticRegressionCV
    from threadpoolctl import threadpool_info

    def blas_threads():
        return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}

    seen = []
    fit = LogisticRegressionCV.fit

    def recording_fit(self, *args, **kwargs):
        seen.append(blas_threads())
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(LogisticRegressionCV, "fit", recording_fit)
    before = blas_threads()
    rng = np.random.default_rng(0)
    train.fit_length_head(rng.normal(size=(30, 3)), np.eye(3)[np.arange(30) % 3], seed=0)
    assert seen == [{1}] and blas_threads() == before


def test_length_regression_of_few_rows_per_class_and_of_two_classes():
    """A class of fewer rows than the 5 folds is cross-validated on fewer folds; a class of one row (or none) leaves
    the features at zero and the bias at the log prior; a two-way task gets softmax logits (0, z)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 2))
    for counts in ([5, 4, 3], [6, 5, 1], [7, 5, 0]):
        labels = np.eye(3)[np.repeat(np.arange(3), counts)]
        coef, intercept = train.fit_length_head(x, labels, seed=0)
        assert coef.shape == (3, 2) and intercept.shape == (3,) and np.isfinite(intercept).all()
    assert not coef.any() and intercept.argmax() == 0
    coef, intercept = train.fit_length_head(x, np.eye(2)[np.arange(12) % 2], seed=0)
    assert coef.shape == (2, 2) and not coef[0].any() and intercept[0] == 0


def test_head_gets_its_own_learning_rate(tiny_model_dir, sample_csv, tmp_path):
    from arena import model as model_mod

    cfg = tiny_train_cfg(tiny_model_dir, sample_csv, tmp_path)
    cfg = config.from_dict(cfg.to_dict(), ["train.head_learning_rate=0.05"])
    model, _, rt = model_mod.build_for_training(cfg, num_features=4)
    rows = train.EncodedRows([[5, 6]], np.eye(3)[:1])
    args = train.training_arguments(cfg, RunFolder(tmp_path), rt)
    assert isinstance(args, train.PreferenceTrainingArguments) and args.head_learning_rate == 0.05
    trainer = train.PreferenceTrainer(model=model, args=args, train_dataset=rows, eval_dataset=rows)
    optimizer = trainer.create_optimizer()
    head_group = optimizer.param_groups[-1]
    assert head_group["lr"] == 0.05
    head_ids = {id(p) for p in head_group["params"]}
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert head_ids == {id(p) for n, p in trainable.items() if ".score." in n}
    others = {id(p) for g in optimizer.param_groups[:-1] for p in g["params"]}
    assert others and not others & head_ids and len(others | head_ids) == len(trainable)


def test_validation_predictions_are_what_the_inference_code_predicts(tiny_model_dir, sample_csv, tmp_path):
    """The final validation reuses the best checkpoint's plain-order logits from the Trainer's evaluation:
    they must equal what `predict` computes from the saved run."""
    from arena import model as model_mod
    from arena import predict

    run = RunFolder(train.train(tiny_train_cfg(tiny_model_dir, sample_csv, tmp_path / "runs")))
    cfg = config.load(run.config)
    split = train.prepare_data(cfg)
    model, tokenizer, rt = model_mod.load_trained(cfg, run)
    fresh = predict.predict_frame(model, tokenizer, split.val, cfg, rt, tta=True, max_length=cfg.prompt.max_length,
                                  feature_scaler=model_mod.read_head(run)["feature_scaler"])
    saved = pd.read_csv(run.val_predictions, dtype={"id": str})
    assert saved["id"].tolist() == split.val["id"].tolist()
    np.testing.assert_allclose(saved[LABEL_COLUMNS].to_numpy(), fresh["probs"], atol=1e-5)


def test_a_run_that_no_checkpoint_improves_ends_at_its_start(tiny_model_dir, sample_csv, tmp_path):
    """The start (step 0) takes part in checkpoint selection: with a learning rate that wrecks the model, no checkpoint
    beats it, and the saved model is the start: it predicts the validation rows with the start's log loss."""
    from arena import model as model_mod
    from arena import predict

    run = RunFolder(train.train(tiny_train_cfg(tiny_model_dir, sample_csv, tmp_path / "runs", "train.learning_rate=1",
                                               "train.head_learning_rate=1")))
    m = json.loads(run.metrics.read_text())
    evals = {h["step"]: h["eval_log_loss"] for h in m["history"] if "eval_log_loss" in h}
    assert list(evals) == [0, 2, 4] and min(evals[2], evals[4]) > evals[0]
    assert m["start_kept"] and m["start_eval_log_loss"] == evals[0] == m["best_eval_log_loss"]
    assert Path(m["best_checkpoint"]).name == "checkpoint-0"
    assert m["val_log_loss"] == pytest.approx(evals[0], abs=1e-6)
    row = tracking.run_row(run, run.root.name)  # `arena runs` says so
    assert row["start kept"] is True and row["start ll"] == evals[0]
    cfg = config.load(run.config)
    val = train.prepare_data(cfg).val
    model, tokenizer, rt = model_mod.load_trained(cfg, run)
    fresh = predict.predict_frame(model, tokenizer, val, cfg, rt, tta=False, max_length=cfg.prompt.max_length,
                                  feature_scaler=model_mod.read_head(run)["feature_scaler"])
    assert metrics.log_loss(data.label_matrix(val), fresh["probs"]) == pytest.approx(evals[0], abs=1e-5)


def test_eval_steps_may_be_a_fraction_of_the_run(tiny_model_dir, sample_csv, tmp_path):
    run = RunFolder(train.train(tiny_train_cfg(tiny_model_dir, sample_csv, tmp_path / "runs", "train.max_steps=6",
                                               "train.eval_steps=0.5")))
    history = json.loads(run.metrics.read_text())["history"]
    assert [h["step"] for h in history if "eval_log_loss" in h] == [0, 3, 6]


class RemembersModel(TrainerCallback):
    """A weak reference to the model the Trainer trains."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.model = weakref.ref(model)


def test_a_finished_run_frees_its_model(tiny_model_dir, sample_csv, tmp_path):
    """The next fold of `arena cv` or point of `arena sweep` must not start with this run's weights resident:
    accelerate keeps the model in reference cycles, which the cyclic collector would free only when it happens to
    run (here it never runs on its own)."""
    seen = RemembersModel()
    gc.disable()
    try:
        train.train(tiny_train_cfg(tiny_model_dir, sample_csv, tmp_path / "runs", "train.max_steps=1"),
                    callbacks=[seen])
        assert seen.model() is None, "the run's model is still alive after train() returned"
    finally:
        gc.enable()


def test_one_process_seeing_two_gpus_trains_on_one_with_the_configured_batch(t4, tmp_path):
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    try:
        args = train.PreferenceTrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4,
                                                 gradient_accumulation_steps=2, report_to="none")
        assert torch.cuda.device_count() == 2
        assert args.n_gpu == 1 and args.train_batch_size == 4 and args.world_size == 1
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)


def test_under_fsdp_every_rank_saves_and_evaluates_and_only_the_main_one_writes(monkeypatch, tmp_path):
    """A rank other than the main one, under FSDP: it takes part in gathering the adapter and predicts every row (each
    forward needs every rank), and writes nothing. (Under DDP each rank predicts its share: test_finish.py.)"""
    import torch.distributed._state_dict_utils as state_dict_utils
    import torch.distributed.checkpoint.state_dict as dcp_state_dict

    from arena import predict

    calls = []
    val = data.generate_sample(6, seed=1)
    trainer = types.SimpleNamespace(is_world_process_zero=lambda: False, model="fsdp-model",
                                    callback_handler=types.SimpleNamespace(callbacks=[]), eval_dataset=None)
    monkeypatch.setattr(dcp_state_dict, "get_model_state_dict", lambda m, options: calls.append("shards") or {"w": 1})
    monkeypatch.setattr(state_dict_utils, "_gather_state_dict", lambda sd, **k: calls.append("gather") or sd)
    built = train.Built(model=None, tokenizer=None, scaler=None,
                        runtime=model_mod.Runtime("cuda", torch.bfloat16, True, sharded=True))
    split = train.Split(train=val, val=val, prior=np.full(3, 1 / 3), prior_log_loss=1.0)
    monkeypatch.setattr(model_mod, "save_trained", lambda *a, **k: calls.append("write adapter"))
    monkeypatch.setattr(train.finish, "shard_folder", lambda cfg, run: tmp_path / "shards")
    monkeypatch.setattr(predict, "predict_frame", lambda m, t, df, *a, **k: calls.append(f"predict {len(df)}") or {
        "probs_plain": np.full((len(df), 3), 1 / 3), "probs": np.full((len(df), 3), 1 / 3)})
    monkeypatch.setattr(train.finish, "write_summary", lambda *a: calls.append("summary"))
    cfg = tiny_cfg("unused", model={"device": "cpu"})
    run = RunFolder(tmp_path / "run")
    assert train.finish.finish(cfg, run, built, split, trainer, None, None) is None
    assert calls == ["shards", "gather", "predict 6"]
    assert not run.root.exists()  # neither the adapter nor the validation predictions are written here


def test_one_step_with_non_finite_gradients_is_skipped_not_written_into_the_weights(tiny_model_dir, tmp_path,
                                                                                    capsys):
    """Without a grad scaler (float32 here, bfloat16 on an A100) one NaN batch would write NaN into every trainable
    weight for good; the step is skipped instead, and training goes on to a finite adapter."""
    class OneNaNForward(TrainerCallback):
        def on_step_begin(self, args, state, control, model=None, **kwargs):
            if state.global_step == 1:
                handle = model.register_forward_hook(lambda m, i, out: (handle.remove(), out * float("nan"))[1])

    csv = tmp_path / "train.csv"
    data.write_csv(data.generate_sample(40, seed=3), csv)
    cfg = tiny_cfg(tiny_model_dir, prompt={"max_length": 96, "min_tokens": 8}, data={"train": str(csv), "folds": 3},
                   train={"runs_dir": str(tmp_path / "runs"), "max_steps": 4, "eval_steps": 100,
                          "per_device_batch_size": 2, "grad_accum": 1})
    run = RunFolder(train.train(cfg, callbacks=[OneNaNForward()]))
    assert "step 2: non-finite gradients, the update is skipped" in capsys.readouterr().out
    weights = safetensors.torch.load_file(run.adapter / "adapter_model.safetensors")
    assert all(bool(torch.isfinite(w).all()) for w in weights.values())
    assert json.loads(run.metrics.read_text())["val_log_loss"] < 5


def test_a_non_finite_loss_stops_training_with_the_cause_and_a_resumable_checkpoint(tiny_model_dir, tmp_path,
                                                                                     monkeypatch):
    real_build = train.run.build

    def poisoned(cfg, split):
        built = real_build(cfg, split)
        with torch.no_grad():
            built.model.get_input_embeddings().weight.fill_(float("nan"))
        return built

    monkeypatch.setattr(train.run, "build", poisoned)
    csv = tmp_path / "train.csv"
    data.write_csv(data.generate_sample(40, seed=3), csv)
    cfg = tiny_cfg(tiny_model_dir, model={"length_features": False}, prompt={"max_length": 96, "min_tokens": 8},
                   data={"train": str(csv), "folds": 3},
                   train={"runs_dir": str(tmp_path / "runs"), "max_steps": 20, "eval_steps": 100,
                          "per_device_batch_size": 2, "grad_accum": 1, "nan_patience": 3})
    with pytest.raises(train.UserError) as caught:
        train.train(cfg)
    message = str(caught.value)
    assert "training stopped at step 3: 3 consecutive steps with non-finite losses (last loss nan" in message
    assert "model.compute_dtype float32" in message and "--resume" in message
    run = train.find_resumable(cfg, "latest")
    assert train.last_complete_checkpoint(run).name == "checkpoint-3" and not run.adapter.exists()
