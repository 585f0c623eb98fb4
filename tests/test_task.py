"""The task as data: a config picks it by competition or names it outright; the swap and the submission follow."""

import numpy as np
import pytest

from arena import config, task


def test_a_competition_picks_its_task_and_task_keys_override_it():
    assert task.of_config(config.load(None, [])) == task.THREE_WAY
    wsdm = task.of_config(config.load(None, ["kaggle.competition=wsdm-cup-multilingual-chatbot-arena"]))
    assert (wsdm.labels, wsdm.metric, wsdm.submission, wsdm.data_format) == ("two-way", "accuracy", "winner", "parquet")
    assert wsdm.label_columns == ["winner_model_a", "winner_model_b"]
    scored_by_log_loss = task.of_config(config.load(None, ["kaggle.competition=wsdm-cup-multilingual-chatbot-arena",
                                                           "task.metric=log_loss"]))
    assert scored_by_log_loss.metric == "log_loss" and scored_by_log_loss.labels == "two-way"


def test_an_unknown_competition_must_name_its_task():
    with pytest.raises(config.ConfigError) as err:
        config.load(None, ["kaggle.competition=next-arena-cup"])
    assert "kaggle.competition" in str(err.value) and "task.labels" in str(err.value)
    named = ["kaggle.competition=next-arena-cup", "task.labels=two-way", "task.metric=accuracy",
             "task.submission=winner", "task.data_format=csv"]
    assert task.of_config(config.load(None, named)) == task.Task("two-way", "accuracy", "winner", "csv")


def test_the_swap_exchanges_a_and_b_and_keeps_the_tie_in_either_task():
    three = np.array([[0.6, 0.3, 0.1]])
    two = np.array([[0.7, 0.3]])
    assert task.swap_classes(three).tolist() == [[0.3, 0.6, 0.1]]
    assert task.swap_classes(two).tolist() == [[0.3, 0.7]]
    assert task.swap_classes(np.array([0, 1, 2, 1])).tolist() == [1, 0, 2, 0]
    assert task.swap_classes(task.swap_classes(three)).tolist() == three.tolist()


def test_a_winner_submission_names_the_most_probable_side():
    frame = task.TWO_WAY.submission_frame(["a", "b"], np.array([[0.8, 0.2], [0.4, 0.6]]))
    assert frame.columns.tolist() == ["id", "winner"] and frame["winner"].tolist() == ["model_a", "model_b"]
    frame = task.THREE_WAY.submission_frame(["a"], np.array([[0.2, 0.3, 0.5]]))
    assert frame.columns.tolist() == task.THREE_WAY.submission_columns


def test_the_label_set_of_a_file_is_read_from_its_columns():
    assert task.of_columns(["id", "winner_model_a", "winner_model_b", "winner_tie"]) == task.THREE_WAY
    assert task.of_columns(["id", "winner_model_a", "winner_model_b"]).labels == "two-way"
    assert task.of_columns(["id", "winner"]) is None
