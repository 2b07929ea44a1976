import pytest
import torch

from lib.activelearning.uncertainty import mutual_information
from lib.configs.scar import parse_settings
from lib.trainers.scar import split_validation


def test_defaults_and_casts():
    s = parse_settings({"epochs": "3", "lr": "0.001"}, "/app")
    assert (s.epochs, s.lr, s.val_split, s.mc_samples, s.model_dir) == (3, 0.001, 0.2, 8, "/app/model")


@pytest.mark.parametrize(
    "flag, value", [("epochs", "0"), ("epochs", "two"), ("lr", "-1"), ("val_split", "1.5"), ("mc_samples", "1")]
)
def test_bad_flag_names_flag_value_and_choices(flag, value):
    with pytest.raises(ValueError, match=rf"conf {flag}='{value}' is not valid; allowed"):
        parse_settings({flag: value}, "/app")


def test_validation_split_is_stable_and_never_empty():
    ids = [f"lge_{i:03d}" for i in range(10)]
    train, val = split_validation(ids, 0.2)
    assert len(val) == 2 and not set(train) & set(val) and set(train) | set(val) == set(ids)
    assert split_validation(list(reversed(ids)), 0.2) == (train, val)  # order of listing does not matter
    assert split_validation(["only"], 0.2) == (["only"], ["only"])


def test_mutual_information_zero_when_samples_agree_positive_when_not():
    p = torch.softmax(torch.randn(1, 5, 4, 4), dim=1)
    assert torch.allclose(mutual_information(p.repeat(6, 1, 1, 1)), torch.zeros(4, 4), atol=1e-6)
    disagree = torch.stack([torch.eye(5)[i % 5].view(5, 1, 1).expand(5, 4, 4) for i in range(5)])
    assert torch.allclose(mutual_information(disagree), torch.full((4, 4), torch.log(torch.tensor(5.0))), atol=1e-4)
