"""Outputs are written atomically: a failure leaves neither a partial file nor temp debris."""
import os

import pytest

from analyzer.atomic import atomic_dir, atomic_file


def test_atomic_file_failure_keeps_old_content(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_file(str(target), "w") as f:
            f.write("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["out.json"]


def test_atomic_file_success_replaces_and_honours_umask(tmp_path):
    target = tmp_path / "out.txt"
    old = os.umask(0o022)
    try:
        with atomic_file(str(target), "w") as f:
            f.write("new")
    finally:
        os.umask(old)
    assert target.read_text() == "new"
    assert (os.stat(target).st_mode & 0o777) == 0o644


def test_atomic_dir_failure_leaves_previous_dir(tmp_path):
    target = tmp_path / "bundle"
    target.mkdir()
    (target / "a").write_text("keep")
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(str(target)) as d:
            open(os.path.join(d, "b"), "w").write("partial")
            raise KeyboardInterrupt
    assert sorted(os.listdir(target)) == ["a"]
    assert sorted(os.listdir(tmp_path)) == ["bundle"]


def test_atomic_dir_success_replaces(tmp_path):
    target = tmp_path / "bundle"
    target.mkdir()
    (target / "a").write_text("old")
    with atomic_dir(str(target)) as d:
        open(os.path.join(d, "b"), "w").write("new")
    assert sorted(os.listdir(target)) == ["b"]
    assert sorted(os.listdir(tmp_path)) == ["bundle"]
