"""Every ```python block of README.md and examples/README.md runs as written (issue 12,
item 3), in the environment the README's test command builds (which installs the example
plugin package: a snippet registering ``softsign`` would clash with it).

Each block runs in a fresh interpreter, in a temporary directory (blocks may write files).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", ROOT / "examples" / "README.md"]
FENCE = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def python_blocks() -> list[tuple[str, str]]:
    """``(label, code)`` of every python block, labelled with its file and line."""
    blocks = []
    for document in DOCUMENTS:
        text = document.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            blocks.append((f"{document.relative_to(ROOT)}:{line}", match.group(1)))
    return blocks


BLOCKS = python_blocks()


def test_the_readme_has_python_blocks() -> None:
    assert len([label for label, _ in BLOCKS if label.startswith("README.md")]) >= 3


@pytest.mark.parametrize(("label", "code"), BLOCKS, ids=[label for label, _ in BLOCKS])
def test_block_runs_as_written(label: str, code: str, tmp_path: Path) -> None:
    if 'InferenceSession("model.onnx"' in code:  # serving: the file its comment says to make
        import microfw as mf
        from microfw.onnx import export

        spec = {"spec_version": 1, "input_dim": 2, "loss": "bce"}
        export(
            mf.build({**spec, "layers": [{"type": "linear", "units": 1}, "sigmoid"]}),
            tmp_path / "model.onnx",
        )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"{label} failed:\n{result.stderr}"
    assert "Warning" not in result.stderr, result.stderr


def test_the_example_package_is_installed_as_the_readme_builds_it() -> None:
    """The clash this guards against needs the package: the test command installs it."""
    from importlib import metadata

    assert metadata.distribution("microfw-softsign").version
