"""The command line's core subcommands: demo, audit (exit codes and JSON)."""
import json

from zkref.cli import main


def test_audit_exit_codes(capsys):
    assert main(["audit", "--circuit", "squares"]) == 0
    assert main(["audit", "--circuit", "squares-broken", "--json"]) == 1
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["unconstrained"][0]["column"] == "y"
