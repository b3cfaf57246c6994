"""The README's main job: the end-to-end demo on the tiny locally built model passes every check."""
import io

from rich.console import Console

from zkref.cli.demo import run_demo


def test_demo_runs_end_to_end(tmp_path):
    buf = io.StringIO()
    result = run_demo(tmp_path / "model", tokens=2, rank=4, audit_sample=50, console=Console(file=buf, width=150))
    text = buf.getvalue()
    assert result.ok, text
    assert result.figures["max_abs_error"] <= result.figures["error_bound"]
    assert "demo complete: every check passed" in text and "base-model digest" in text
    # a second run reuses the model and its cached digest: same digest
    again = run_demo(tmp_path / "model", tokens=2, rank=4, audit_sample=10, console=Console(file=io.StringIO()))
    assert again.figures["digest"] == result.figures["digest"]
