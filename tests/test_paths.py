"""Paths a user gives: refused, in one line naming the field, when no file system could hold them."""

import os
from pathlib import Path

import pytest

from kdistill.errors import KDistillError
from kdistill.paths import NAME_MAX, PATH_MAX, user_path


def test_a_good_path_comes_back_as_a_path(tmp_path):
    assert user_path("runs/a.yaml", "recipe") == Path("runs/a.yaml")
    assert user_path(tmp_path / "x", "recipe") == tmp_path / "x"  # a PathLike
    assert isinstance(user_path("x", "recipe"), Path)


def test_a_nul_byte_is_refused():
    with pytest.raises(KDistillError) as err:
        user_path("data/a\0b.csv", "data.path")
    assert str(err.value) == "data.path: the path 'data/a\\x00b.csv' holds a NUL byte; give a real path."


def test_a_nul_byte_message_is_cut_short():
    with pytest.raises(KDistillError) as err:
        user_path("\0" + "a" * 200, "data.path")
    assert "a" * 60 not in str(err.value) and "a" * 59 in str(err.value) and "\n" not in str(err.value)


def test_names_up_to_255_bytes_pass_and_longer_ones_are_refused():
    assert user_path("d/" + "a" * NAME_MAX, "x").name == "a" * NAME_MAX
    with pytest.raises(KDistillError) as err:
        user_path("d/" + "a" * (NAME_MAX + 1) + "/f", "student.weights")
    message = str(err.value)
    assert message.startswith("student.weights: the path '" + "a" * 40 + "'... is too long for a file system")
    assert "names up to 255 bytes, paths up to 4096" in message and message.endswith("give a shorter path.")
    assert "\n" not in message


def test_name_length_counts_bytes_not_characters():
    try:
        fits = NAME_MAX // len(os.fsencode("é"))  # 127 in a UTF-8 file system encoding (2 bytes each), 255 in latin-1
    except UnicodeEncodeError:
        pytest.skip("the file system encoding (ASCII) holds no 'é'")
    assert user_path("é" * fits, "x")  # 254 bytes in UTF-8
    with pytest.raises(KDistillError, match="too long"):
        user_path("é" * (fits + 1), "x")  # 128 characters, 256 bytes in UTF-8


def test_paths_up_to_4096_bytes_pass_and_longer_ones_are_refused():
    parts = "/".join(["a" * 200] * 20)  # 20 * 200 + 19 = 4019 bytes, each name short
    ok = parts + "/" + "b" * (PATH_MAX - len(parts) - 1)
    assert len(ok) == PATH_MAX and user_path(ok, "x") == Path(ok)
    with pytest.raises(KDistillError, match=r"^x: the path 'a{40}'\.\.\. is too long"):
        user_path(ok + "c", "x")


def test_bytes_paths_are_read_and_unusable_ones_refused_in_one_line():
    assert user_path(b"/tmp/some.yaml", "recipe") == Path("/tmp/some.yaml")
    for bad in ("\ud800", 3):  # a lone surrogate no file name can hold; not a path at all
        with pytest.raises(KDistillError, match="recipe: .* is not a path this system can use"):
            user_path(bad, "recipe")
