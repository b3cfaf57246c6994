"""The README's main job: `zkref demo` runs contributor server and base-model client end to end on the tiny locally
built model, and ends with every call's proof verified and the accuracy."""
import io
import os

import pytest
from rich.console import Console

from zkref.cli.demo import run_demo
from zkref.cli.main import main


def test_demo_with_the_zkref_backend_and_its_exit_code(tmp_path, capsys):
    buf = io.StringIO()
    result = run_demo(tmp_path / "model", backend="zkref", tokens=2, console=Console(file=buf, width=150))
    text = buf.getvalue()
    assert result.ok, text
    assert len(result.calls) == 6 and all(c.verified for c in result.calls)   # 2 modules × (prompt + 2 steps)
    assert "demo complete: every call's proof verified (6 of 6 calls verified)" in text
    assert "base-model digest" in text and "top-1 agreement" in text and "mock check passed" in text
    assert result.figures["top1_agreement"] == 1.0
    assert all(0 < e < 0.5 for e in result.figures["relative_errors"].values())
    # the command reuses the model and adapter, gets the same digest, and exits 0
    assert main(["demo", "--backend", "zkref", "--tokens", "2", "--model-dir", str(tmp_path / "model")]) == 0
    assert result.figures["digest"] in capsys.readouterr().out


@pytest.mark.ezkl
@pytest.mark.slow
def test_demo_with_real_ezkl_proofs(tmp_path, tmp_path_factory):
    pytest.importorskip("ezkl")
    cache = os.environ.get("ZKREF_CACHE") or str(tmp_path_factory.getbasetemp() / "ezkl-cache")
    buf = io.StringIO()
    result = run_demo(tmp_path / "model", cache_dir=cache, console=Console(file=buf, width=150))
    text = buf.getvalue()
    assert result.ok, text
    assert result.figures["backend"] == "ezkl" and len(result.calls) == 6
    assert text.count("EZKL KZG proof verified against the pinned verifying key") == 6
    assert "demo complete: every call's proof verified" in text and "top-1 agreement" in text
