"""Segment files: a merge's dense rows copied file to file are the bytes `np.save` writes."""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest

from m3search.store.segments import FileRows, write_rows


@pytest.fixture
def source(tmp_path):
    rows = np.random.default_rng(0).standard_normal((1000, 48)).astype(np.float32)
    np.save(tmp_path / "source.npy", rows)
    return tmp_path / "source.npy", rows


@pytest.mark.parametrize("kernel", [True, False])
def test_rows_copied_from_files_and_memory_are_what_np_save_writes(tmp_path, monkeypatch, source, kernel):
    path, rows = source
    if not kernel:  # a file system without copy_file_range: copied through a buffer

        def refuse(*args):
            raise OSError(errno.EXDEV, "cross-device")

        monkeypatch.setattr(os, "copy_file_range", refuse)
    extra = np.arange(96, dtype=np.float64).reshape(2, 48)  # converted to the array's dtype
    write_rows(tmp_path / "out.npy", [FileRows(path, 0, 1000), extra, FileRows(path, 10, 13)], np.float32)
    np.save(tmp_path / "expected.npy", np.concatenate([rows, extra.astype(np.float32), rows[10:13]]))
    assert (tmp_path / "out.npy").read_bytes() == (tmp_path / "expected.npy").read_bytes()


def test_rows_that_do_not_fit_are_refused(tmp_path, source):
    path, _ = source
    with pytest.raises(ValueError, match="no rows 990:1010"):
        write_rows(tmp_path / "out.npy", [FileRows(path, 990, 1010)], np.float32)
    with pytest.raises(ValueError, match="no rows 0:10 of float16"):
        write_rows(tmp_path / "out.npy", [FileRows(path, 0, 10)], np.float16)
    with pytest.raises(ValueError, match="different widths"):
        write_rows(tmp_path / "out.npy", [FileRows(path, 0, 10), np.zeros((1, 8), np.float32)], np.float32)
