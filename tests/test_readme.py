"""Every ```python block of README.md runs (each in a fresh namespace, from a temp dir)."""
import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.S | re.M)


def test_readme_has_runnable_examples():
    assert len(BLOCKS) >= 1


@pytest.mark.parametrize("k", range(len(BLOCKS)))
def test_readme_block_runs(k, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(BLOCKS[k], f"README.md block {k}", "exec"), {"__name__": "readme"})
