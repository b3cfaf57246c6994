"""The cost report (dataclasses, JSON, presets, module lists) and the `zkref report` / `zkref mock` command lines."""
import json

import numpy as np
import pytest

from zkref.plonkish.accounting import account
from zkref.cli.main import main
from zkref.lora.circuit import DenseCircuit, LoRACircuit, LoRALayout
from zkref.lora.cost import formula_cost
from zkref.lora.presets import PRESETS, ModuleShape
from zkref.lora.report import STRATEGY_SPECS, build_report, strategy_cost
from zkref.lora.statement import LoRAShape, LoRAStatement


def lora(d_in, d_out, rank, tokens=1, lanes=8, products="table", adapter="fixed"):
    statement = LoRAStatement(shape=LoRAShape(d_in=d_in, d_out=d_out, rank=rank, tokens=tokens), shift=0,
                              adapter_binding=adapter)
    return LoRACircuit(statement=statement, layout=LoRALayout(lanes=lanes, products=products))


def dense(d_in, d_out, tokens=1, lanes=8, products="table", fixed_weights=True):
    return DenseCircuit(d_in=d_in, d_out=d_out, tokens=tokens, layout=LoRALayout(lanes=lanes, products=products),
                        fixed_weights=fixed_weights)

KEYS = {"dense", "lowrank-gate", "lowrank-table-1", "lowrank-table"}


def test_report_for_a_shape_has_every_strategy_and_consistent_ratios():
    r = build_report(d_in=64, d_out=48, rank=8, tokens=2, lanes=8)
    assert set(r.strategies) == KEYS and r.module_count == 1
    dense, table, table1, gate = (r.strategies[k] for k in ("dense", "lowrank-table", "lowrank-table-1", "lowrank-gate"))
    assert dense.macs == 2 * 64 * 48 and table.macs == 2 * 8 * (64 + 48) == gate.macs == table1.macs
    assert table.lookups * 1 < gate.lookups  # MulGate: two lookups per lane
    assert table1.lanes == 1 and table.lanes == 8
    assert r.ratios["lowrank-table"]["macs"] == pytest.approx(dense.macs / table.macs)
    assert all(c.method == "analytic" for c in r.strategies.values())
    idea = {e["idea"]: e for e in r.effects}
    assert idea["L lanes per row instead of 1"]["macs"] == 1.0


def test_report_figures_equal_the_accounting_of_the_circuits():
    r = build_report(d_in=40, d_out=24, rank=4, tokens=1, lanes=4)
    low = account(lora(40, 24, 4, 1, 4))
    base = account(dense(40, 24, 1, 4))
    t, d = r.strategies["lowrank-table"], r.strategies["dense"]
    assert (t.rows, t.lookups, t.k, t.proof_bytes, t.copies) == (low.rows_used, low.lookup_queries, low.k,
                                                                 low.proof.bytes, low.copy_constraints)
    assert (d.rows, d.lookups, d.k, d.proof_bytes) == (base.rows_used, base.lookup_queries, base.k, base.proof.bytes)


def test_formula_and_analytic_methods_agree_on_a_preset():
    for spec in STRATEGY_SPECS:
        a = strategy_cost(spec, 768, 2304, 8, 1, 8, "analytic") if spec.key != "dense" else None
        f = strategy_cost(spec, 768, 2304, 8, 1, 8, "formula")
        if a is not None:
            assert (a.rows, a.lookups, a.k, a.proof_bytes, a.copies) == (f.rows, f.lookups, f.k, f.proof_bytes, f.copies)


def test_whole_model_sums_distinct_shapes_times_their_count():
    r = build_report(preset="llama3-70b", rank=16)
    assert r.module_count == 320 and len(r.modules) == 2
    assert sorted((m.d_in, m.d_out, m.count) for m in r.modules) == [(8192, 1024, 160), (8192, 8192, 160)]
    q = build_report(d_in=8192, d_out=8192, rank=16).strategies
    kv = build_report(d_in=8192, d_out=1024, rank=16).strategies
    for key in KEYS:
        assert r.strategies[key].macs == 160 * (q[key].macs + kv[key].macs)
        assert r.strategies[key].rows == 160 * (q[key].rows + kv[key].rows)
        assert r.strategies[key].k == max(q[key].k, kv[key].k)
    assert any("accounted once" in n for n in r.notes)
    # the dense baseline is large: 80 layers of 2·8192² + 2·8192·1024 MACs
    assert r.strategies["dense"].macs == 80 * (2 * 8192 * 8192 + 2 * 8192 * 1024)


def test_presets_and_module_lists():
    assert {"gpt2-small-c_attn", "llama3-8b-q_proj", "llama3-8b-v_proj", "llama3-70b"} <= set(PRESETS)
    r = build_report(preset="llama3-8b-v_proj", rank=32)
    assert (r.modules[0].d_in, r.modules[0].d_out, r.rank) == (4096, 1024, 32)
    r = build_report(modules=[ModuleShape("a", 32, 16, 3), ModuleShape("b", 32, 16, 2)], rank=4)
    assert r.module_count == 5 and len(r.modules) == 1 and r.modules[0].count == 5
    assert "| dense |" in r.markdown()


@pytest.mark.parametrize("kwargs,match", [
    (dict(d_in=8, d_out=8, lanes=0), "lanes"), (dict(d_in=8, d_out=8, lanes=17), "lanes"),
    (dict(d_in=8), "--d-in"), (dict(preset="nope"), "preset"), (dict(d_in=0, d_out=8), "d_in"),
    (dict(d_in=8, d_out=8, rank=0), "rank"), (dict(d_in=8, d_out=8, method="guess"), "method"),
])
def test_bad_report_requests_raise_value_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_report(**kwargs)


def test_formula_cost_matches_the_analytic_pass_for_big_low_rank_shapes():
    for circuit in (lora(4096, 1024, 16, 1, 8, "table"), lora(768, 2304, 8, 2, 3, "gate"),
                    lora(768, 640, 8, 3, 5, "table", adapter="unbound"), dense(300, 40, 2, 7, products="gate"),
                    dense(300, 40, 2, 7, fixed_weights=False)):
        assert formula_cost(circuit).to_dict() == account(circuit).to_dict()


# ------------------------------------------------------------------------------------------------ command line
def test_cli_report_json(capsys):
    assert main(["report", "--d-in", "64", "--d-out", "32", "--rank", "8", "--tokens", "1", "--lanes", "8",
                 "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc["strategies"]) == KEYS
    for c in doc["strategies"].values():
        assert {"macs", "lookups", "rows", "k", "proof_bytes", "method"} <= set(c)
    assert doc["strategies"]["dense"]["macs"] == 64 * 32


def test_cli_report_preset_renders(capsys):
    assert main(["report", "--preset", "llama3-8b-q_proj", "--rank", "16"]) == 0
    assert "llama3-8b-q_proj" in capsys.readouterr().out


def test_cli_report_errors_exit_2(capsys):
    assert main(["report", "--d-in", "64", "--d-out", "32", "--lanes", "0"]) == 2
    assert main(["report", "--d-in", "64"]) == 2


@pytest.mark.parametrize("strategy", ["table", "gate"])
def test_cli_mock_satisfied(capsys, strategy):
    assert main(["mock", "--d-in", "20", "--d-out", "12", "--rank", "4", "--tokens", "2", "--lanes", "3",
                 "--strategy", strategy, "--seed", "5", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["satisfied"] and doc["cost"]["k"] == doc["k"] and doc["check"]["within_bound"]
    assert doc["statement"]["d_in"] == 20 and doc["statement"]["adapter_binding"] == "fixed"


def test_cli_mock_plain_output(capsys):
    assert main(["mock", "--d-in", "8", "--d-out", "8", "--rank", "2"]) == 0
    assert "satisfied" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [
    ["mock", "--d-in", "8", "--d-out", "8", "--rank", "2", "--lanes", "17"],
    ["mock", "--d-in", "8", "--d-out", "8"],
    ["mock", "--d-in", "0", "--d-out", "8", "--rank", "2"],
    ["mock", "--d-in", "8", "--d-out", "8", "--rank", "2", "--shift", "99"],
])
def test_cli_mock_bad_arguments_exit_2(capsys, argv):
    assert main(argv) == 2


def _save(path, tensors):
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path))
    return str(path)


def test_cli_mock_reads_safetensors(tmp_path, capsys):
    rng = np.random.default_rng(0)
    w = _save(tmp_path / "w.safetensors", {"lora_A": rng.standard_normal((4, 24)).astype(np.float32) * 0.1,
                                           "lora_B": rng.standard_normal((16, 4)).astype(np.float32) * 0.1})
    x = _save(tmp_path / "x.safetensors", {"x": rng.standard_normal((2, 24)).astype(np.float32)})
    assert main(["mock", "--weights", w, "--activations", x, "--lanes", "8", "--alpha", "8", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    s = doc["statement"]
    assert doc["satisfied"] and (s["d_in"], s["d_out"], s["rank"], s["tokens"]) == (24, 16, 4, 2)
    assert doc["check"]["max_abs_error"] <= doc["check"]["error_bound"]
    assert doc["inputs"]["dequantisation"]["scaling"] == 8 / 4
    assert main(["mock", "--weights", w, "--activations", x, "--alpha", "8", "--rslora", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["inputs"]["dequantisation"]["scaling"] == 8 / 2


def test_cli_mock_file_errors_exit_2(tmp_path, capsys):
    rng = np.random.default_rng(0)
    good_b = rng.standard_normal((16, 4)).astype(np.float32)
    missing = _save(tmp_path / "m.safetensors", {"lora_A": rng.standard_normal((4, 24)).astype(np.float32)})
    nan_a = rng.standard_normal((4, 24)).astype(np.float32)
    nan_a[1, 2] = np.nan
    with_nan = _save(tmp_path / "n.safetensors", {"lora_A": nan_a, "lora_B": good_b})
    bad_shape = _save(tmp_path / "s.safetensors", {"lora_A": rng.standard_normal((4, 24)).astype(np.float32),
                                                   "lora_B": rng.standard_normal((16, 5)).astype(np.float32)})
    pickle_file = tmp_path / "w.pt"
    import pickle

    pickle_file.write_bytes(pickle.dumps({"lora_A": [1.0]}))
    x_wrong = _save(tmp_path / "x.safetensors", {"x": rng.standard_normal((2, 23)).astype(np.float32)})
    ok = _save(tmp_path / "ok.safetensors", {"lora_A": rng.standard_normal((4, 24)).astype(np.float32),
                                             "lora_B": good_b})
    cases = [
        (["mock", "--weights", missing], "lora_B"),
        (["mock", "--weights", with_nan], "NaN"),
        (["mock", "--weights", bad_shape], "lora_B"),
        (["mock", "--weights", str(pickle_file)], "safetensors"),
        (["mock", "--weights", str(tmp_path / "absent.safetensors")], "no such file"),
        (["mock", "--weights", ok, "--activations", x_wrong], "features"),
        (["mock", "--weights", ok, "--d-in", "25"], "does not match"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        assert message in capsys.readouterr().err.replace("\n", " ")


def test_cli_mock_writes_what_it_proved(tmp_path, capsys):
    out = tmp_path / "result.json"                  # in an existing directory: parents are never created
    assert main(["mock", "--d-in", "10", "--d-out", "6", "--rank", "2", "--tokens", "3", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["verdict"]["ok"] and len(doc["delta"]) == 3 and len(doc["delta"][0]) == 6
    assert doc["statement"]["tokens"] == 3 and len(doc["public"]["y_q"]) == 3
    scale = doc["dequantisation"]
    factor = scale["scaling"] * scale["scale_A"] * scale["scale_x"] * 2 ** scale["shift"]
    expected = factor * np.asarray(scale["scale_B"])[None, :] * np.asarray(doc["public"]["y_q"])
    np.testing.assert_allclose(doc["delta"], expected)


def test_cli_mock_checks_every_module_of_a_preset(capsys):
    assert main(["mock", "--preset", "gpt2-small-c_attn", "--rank", "4", "--workers", "1", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["satisfied"] and doc["modules"] == 1 and doc["per_module"][0]["d_out"] == 2304
    assert main(["mock", "--preset", "nope"]) == 2
    assert main(["mock", "--preset", "gpt2-small-c_attn", "--d-in", "8"]) == 2


def test_whole_model_presets_list_every_module():
    from zkref.lora.presets import PRESETS

    llama = PRESETS["llama3-8b"].modules
    assert len(llama) == 224 and len({m.name for m in llama}) == 224
    assert sum(1 for m in llama if (m.d_in, m.d_out) == (14336, 4096)) == 32
