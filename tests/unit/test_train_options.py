import math

import pytest

from lib.errors import InputError
from lib.train_options import MAX_EPOCHS, parse_train_options

DEFAULTS = {"max_epochs": 5, "lr": 1e-4}


def test_defaults_fill_what_the_request_leaves_out():
    opts = parse_train_options({"model": "scar", "max_epochs": 2, "bundle_path": "/app"}, DEFAULTS)
    assert (opts.max_epochs, opts.lr, opts.publish) == (2, 1e-4, "auto")


def test_a_client_may_send_its_client_id_but_not_the_keys_the_server_sets():
    assert parse_train_options({"client_id": "slicer-1", "max_epochs": 2}, DEFAULTS, from_client=True).max_epochs == 2
    for key in ("bundle_path", "gpus", "model", "local_rank"):
        with pytest.raises(InputError, match=rf"unknown train option\(s\) \['{key}'\]"):
            parse_train_options({key: "x"}, DEFAULTS, from_client=True)


@pytest.mark.parametrize(
    "request_, message",
    [
        ({"lr": -1}, r"lr=-1 is out of range; allowed: a number in \[1e-08, 1\]"),
        ({"lr": math.nan}, "lr=nan is out of range"),
        ({"lr": "fast"}, "lr='fast' is not a number"),
        ({"max_epochs": "five"}, "max_epochs='five' is not a number"),
        ({"max_epochs": 0}, f"max_epochs=0 is out of range; allowed: a whole number 1-{MAX_EPOCHS}"),
        ({"max_epochs": 1e9}, "max_epochs=1000000000.0 is out of range"),
        ({"max_epochs": 2.5}, "max_epochs=2.5 is not a whole number"),
        ({"max_epochs": True}, "max_epochs=True is not a number"),
        ({"max_epoch": 5}, r"unknown train option\(s\) \['max_epoch'\]; known options: \['batch_size', 'device'"),
        ({"publish": "yes"}, r"publish='yes' is not valid; allowed: \['auto', 'force', 'never'\]"),
        ({"val_split": 0.05}, r"unknown train option\(s\) \['val_split'\]"),
        ({"device": "tpu"}, "device='tpu' is not valid"),
    ],
)
def test_bad_options_name_the_option_the_value_and_what_is_allowed(request_, message):
    with pytest.raises(InputError, match=message) as e:
        parse_train_options(request_, DEFAULTS)
    assert e.value.status_code == 422
