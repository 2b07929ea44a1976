import pytest
import torch

from lib.activelearning.uncertainty import mutual_information
from lib.configs.scar import parse_settings


def test_defaults_and_casts(monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", "/data")
    s = parse_settings({"epochs": "3", "lr": "0.001"}, "/app")
    assert (s.epochs, s.lr, s.val_split, s.mc_samples) == (3, 0.001, 0.2, 6)
    assert s.model_dir == "/data/scar_lge/models"  # published models never go into the source tree


def test_model_dir_cannot_be_the_shipped_models_folder():
    with pytest.raises(ValueError, match="conf model_dir='/app/model' is not valid"):
        parse_settings({"model_dir": "/app/model"}, "/app")


@pytest.mark.parametrize(
    "flag, value", [("epochs", "0"), ("epochs", "two"), ("lr", "-1"), ("val_split", "1.5"), ("mc_samples", "1")]
)
def test_bad_flag_names_flag_value_and_choices(flag, value):
    with pytest.raises(ValueError, match=rf"conf {flag}='{value}' is not valid; allowed"):
        parse_settings({flag: value}, "/app")


def test_mutual_information_zero_when_samples_agree_positive_when_not():
    p = torch.softmax(torch.randn(1, 5, 4, 4), dim=1)
    assert torch.allclose(mutual_information(p.repeat(6, 1, 1, 1)), torch.zeros(4, 4), atol=1e-6)
    disagree = torch.stack([torch.eye(5)[i % 5].view(5, 1, 1).expand(5, 4, 4) for i in range(5)])
    assert torch.allclose(mutual_information(disagree), torch.full((4, 4), torch.log(torch.tensor(5.0))), atol=1e-4)
