import os

import pytest

from lib.errors import InputError
from lib.names import check_name, resolve_inside


@pytest.mark.parametrize("name", ["lge_002", "Case_P021", "lge_dicom_014", "final", "v1.2-b", "a"])
def test_safe_names_pass(name):
    assert check_name("image id", name) == name


@pytest.mark.parametrize(
    "name",
    ["../../pwned", "..", ".", ".hidden", "a/b", "a\\b", "/etc/passwd", "", "a b", "x" * 129, "a..b", "é", None, 3],
)
def test_unsafe_names_answer_422_with_the_allowed_form(name):
    with pytest.raises(InputError, match="is not allowed; use 1-128 characters") as e:
        check_name("label tag", name)
    assert e.value.status_code == 422


def test_resolve_inside_follows_symlinks(tmp_path):
    (tmp_path / "studies").mkdir()
    (tmp_path / "outside.nii.gz").write_text("x")
    os.symlink(tmp_path / "outside.nii.gz", tmp_path / "studies" / "link.nii.gz")
    assert resolve_inside(str(tmp_path / "studies"), "ok.nii.gz") == str(tmp_path / "studies" / "ok.nii.gz")
    with pytest.raises(InputError, match="outside its folder"):
        resolve_inside(str(tmp_path / "studies"), "link.nii.gz")
    with pytest.raises(InputError, match="outside its folder"):
        resolve_inside(str(tmp_path / "studies"), "../outside.nii.gz")
