"""The command line's core subcommands: demo, audit (exit codes and JSON)."""
import json

from zkref.cli.main import main


def test_audit_exit_codes(capsys):
    assert main(["audit", "--circuit", "squares"]) == 0
    assert main(["audit", "--circuit", "squares-broken", "--json"]) == 1
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["unconstrained"][0]["column"] == "y"


def test_audit_covers_the_lora_and_poseidon_circuits(capsys):
    for name in ("lora", "lora-gate", "poseidon-packed"):
        assert main(["audit", "--circuit", name, "--sample", "60", "--json"]) == 0
        report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert report["cells_checked"] == 60 and report["unconstrained"] == []


def test_unknown_circuit_is_a_clear_error(capsys):
    assert main(["audit", "--circuit", "nope"]) == 2
    assert "unknown circuit 'nope'" in capsys.readouterr().err


def test_digest_command(tmp_path, capsys):
    from zkref.models.tiny_model import build_tiny_gpt2

    model = build_tiny_gpt2(tmp_path / "m", n_layer=1, n_embd=16, n_head=2)
    assert main(["digest", str(model), "--quiet", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert main(["digest", str(model), "--quiet", "--json"]) == 0
    second = json.loads(capsys.readouterr().out)
    assert first["digest"] == second["digest"] and second["from_cache"] and not first["from_cache"]
    assert main(["digest", str(tmp_path / "missing")]) == 2
