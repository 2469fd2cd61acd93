"""The one atomic write (``nni_hwaware.artifacts``): readers see the old file or the whole new one, never half."""

from __future__ import annotations

import json
import os
import stat

import pytest

from nni_hwaware.artifacts import atomic_path, write_atomically, write_json_atomically, write_text_atomically
from nni_hwaware.errors import HwAwareError


def test_writes_bytes_text_and_json_with_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        raw = write_atomically(tmp_path / "model.onnx", b"\x00onnx")
        text = write_text_atomically(tmp_path / "card.md", "Jetson Nano — card\n")
        data = write_json_atomically(tmp_path / "result.json", {"latency_ms": 1.5}, indent=1)
    finally:
        os.umask(umask)
    assert raw.read_bytes() == b"\x00onnx"
    assert text.read_text(encoding="utf-8") == "Jetson Nano — card\n"
    assert json.loads(data.read_text()) == {"latency_ms": 1.5} and data.read_text().endswith("}\n")
    assert stat.S_IMODE(raw.stat().st_mode) == 0o644  # not mkstemp's private 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["card.md", "model.onnx", "result.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path):
    target = write_text_atomically(tmp_path / "results.json", "old")
    with pytest.raises(RuntimeError, match="plot failed"), atomic_path(target) as tmp:
        tmp.write_text("half a fi")
        raise RuntimeError("plot failed")
    with pytest.raises(TypeError):  # not JSON: nothing is written
        write_json_atomically(target, {"x": object()})
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_the_temporary_file_keeps_the_suffix_for_writers_that_choose_the_format_by_it(tmp_path):
    with atomic_path(tmp_path / "pareto.png") as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".png" and tmp.name.startswith(".pareto.png.")
        tmp.write_bytes(b"png")
    assert (tmp_path / "pareto.png").read_bytes() == b"png"


def test_a_missing_folder_is_a_one_line_error(tmp_path):
    with pytest.raises(HwAwareError, match="folder .*missing.* does not exist"):
        write_atomically(tmp_path / "missing" / "x.json", b"{}")
    assert not (tmp_path / "missing").exists()
