import pytest

from lasnet_tvm.errors import LasnetError
from lasnet_tvm.predictor.accuracy import accuracy


def test_exact_predictions():
    a = accuracy([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert a["mape"] == 0 and a["share_within"] == 1 and a["spearman"] == pytest.approx(1) and a["mean_ratio"] == 1


def test_errors_and_ranks():
    a = accuracy([1.0, 2.0, 4.0, 8.0], [1.2, 1.5, 4.0, 6.0])  # errors 20%, 25%, 0%, 25%
    assert a["mape"] == pytest.approx((0.2 + 0.25 + 0 + 0.25) / 4)
    assert a["share_within"] == pytest.approx(0.25)
    assert a["spearman"] == pytest.approx(1.0)
    b = accuracy([1.0, 2.0, 3.0], [3.0, 2.0, 1.0])
    assert b["spearman"] == pytest.approx(-1.0)


def test_bad_input():
    with pytest.raises(LasnetError):
        accuracy([1.0, 2.0], [1.0])
    with pytest.raises(LasnetError):
        accuracy([0.0], [1.0])
