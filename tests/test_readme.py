"""The README's Python example runs as written (both backends, EZKL included), with a cache of its own."""
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.mark.ezkl
def test_the_readme_python_example_runs_as_written(ezkl_cache, monkeypatch):
    pytest.importorskip("ezkl")
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) == 1, "the README should hold exactly one Python example"
    monkeypatch.setenv("ZKREF_CACHE", str(ezkl_cache))
    exec(compile(blocks[0], str(README), "exec"), {"__name__": "readme_example"})
