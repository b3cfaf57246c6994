"""Proving on Ray: `zkref serve --ray local` runs every proof as a Ray task; the client verifies them all.

The server runs as a subprocess (the real command line), so a Ray start-up that hangs is killed by the test's own
deadlines rather than hanging the suite; its Ray instance is shut down when the server stops.
"""
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from zkref.models.tiny_model import build_tiny_gpt2, save_random_lora
from zkref.protocol.client import BaseModelClient

START_TIMEOUT = 180
STOP_TIMEOUT = 60


def read_lines(stream, sink: list[str]) -> None:
    for line in iter(stream.readline, ""):
        sink.append(line)


def test_proofs_run_as_ray_tasks(tmp_path):
    base = build_tiny_gpt2(tmp_path / "base", seed=0)
    adapter = save_random_lora(base, tmp_path / "adapter", seed=1, r=4, lora_alpha=8, target_modules=["c_attn"],
                               fan_in_fan_out=True, lora_dropout=0.0)
    cmd = [sys.executable, "-m", "zkref.cli.main", "serve", "--base", str(base), "--adapter", str(adapter),
           "--backend", "zkref", "--ray", "local", "--workers", "1", "--port", "0"]
    env = os.environ | {"RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    out: list[str] = []
    err: list[str] = []
    readers = [threading.Thread(target=read_lines, args=(proc.stdout, out), daemon=True),
               threading.Thread(target=read_lines, args=(proc.stderr, err), daemon=True)]
    for r in readers:
        r.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT
        url = None
        while url is None:
            line = next((l for l in out if "listening on" in l), None)
            if line:
                url = line.split("listening on", 1)[1].strip()
            elif proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"zkref serve --ray local did not start: {''.join(err)[-3000:]}")
            else:
                time.sleep(0.2)
        assert any("Ray at local" in l for l in out), out
        with BaseModelClient(base_dir=base, contributors=[url], proof_timeout=120) as client:
            result = client.run([5, 17, 99])
            manifest = client.sessions[0].manifest
        assert manifest.prover.kind == "ray" and manifest.prover.workers == 1
        assert result.verified, [(c.label, c.reason) for c in result.calls]
        assert len(result.calls) == 2
        for call in result.calls:
            assert call.worker["kind"] == "ray" and call.worker["pid"] not in (proc.pid, os.getpid())
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            pytest.fail("zkref serve --ray local did not stop on SIGTERM")
    assert code == 0, "".join(err)[-3000:]
    assert any("stopped" in l for l in err)
