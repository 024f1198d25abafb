"""The one per-epoch record of every training run."""

import math

import pytest

from bayes_nest.infer import BNNNHistory, History
from bayes_nest.infer.training import History as LoopHistory


def test_every_history_name_is_the_one_class():
    assert History is LoopHistory is BNNNHistory


def test_rows_fill_columns_and_new_columns_start_with_nan():
    h = History(["epoch", "loss"])
    h.append(epoch=1, loss=0.5)
    h.append(epoch=2, loss=0.25, weight_kl=3.0)
    assert h.epoch == [1, 2] and h.loss == [0.5, 0.25] and len(h) == 2
    assert math.isnan(h.weight_kl[0]) and h.weight_kl[1] == 3.0
    h.append(epoch=3)
    assert math.isnan(h.loss[2]) and h.columns == ("epoch", "loss", "weight_kl")
    assert list(h)[1] == {"epoch": 2, "loss": 0.25, "weight_kl": 3.0}


def test_the_older_validation_name_reads_and_writes_the_current_column():
    h = History(["epoch", "val_loss"])
    h.append(epoch=1, val_nll=0.7)
    assert h.val_loss == h.val_nll == [0.7]
    with pytest.raises(ValueError, match="both 'val_loss' and its other name 'val_nll'"):
        h.append(epoch=2, val_loss=1.0, val_nll=1.0)
    old_checkpoint = {"epoch": [1], "loss": [2.0], "val_nll": [0.5]}
    assert History.from_dict(old_checkpoint).val_loss == [0.5]


def test_round_trip_equality_and_errors():
    h = History(["epoch", "loss"])
    h.append(epoch=1, loss=1.5)
    assert History.from_dict(h.as_dict()) == h
    assert History.from_dict({"epoch": [1], "loss": [9.0]}) != h
    with pytest.raises(ValueError, match="differ in length"):
        History(epoch=[1, 2], loss=[1.0])
    with pytest.raises(AttributeError, match="no column 'accuracy'"):
        _ = h.accuracy
