"""`zkref prove` / `zkref verify` with the zkref backend: bundles, exit codes, tampering, pinned anchors, bad input."""
import json
import shutil

import numpy as np
import pytest

from zkref.cli.main import main

SMALL = ["--d-in", "12", "--d-out", "8", "--rank", "2", "--tokens", "2", "--seed", "3"]


def prove(tmp_path, name="b", extra=()):
    out = tmp_path / name
    assert main(["prove", "--backend", "zkref", *SMALL, *extra, "--out", str(out), "--quiet", "--json"]) == 0
    return out


def test_prove_then_verify_and_the_bundle_files(tmp_path, capsys):
    bundle = prove(tmp_path)
    doc = json.loads(capsys.readouterr().out)
    assert doc["zero_knowledge"] is False and doc["backend"] == "zkref"
    assert sorted(p.name for p in bundle.iterdir()) == sorted(
        ["bundle.json", "statement.json", "public.json", "proof.bin", "vk.bin", "settings.json", "anchor.json"])
    assert main(["verify", str(bundle), "--json"]) == 2                  # nothing pinned: refused, says how
    assert "nothing pinned" in capsys.readouterr().err
    assert main(["verify", str(bundle), "--anchor", str(bundle / "anchor.json"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["valid"] and result["statement_id"] == doc["statement_id"] and result["anchor_pinned"]
    assert main(["verify", str(bundle), "--anchor", str(bundle / "anchor.json"), "--statement-id", "0" * 32]) == 1


def test_prove_refuses_to_overwrite_a_bundle(tmp_path, capsys):
    bundle = prove(tmp_path)
    assert main(["prove", "--backend", "zkref", *SMALL, "--out", str(bundle), "--quiet"]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err


@pytest.mark.parametrize("edit,code", [
    (lambda b: _edit_json(b / "public.json", lambda d: d["y_q"][0].__setitem__(0, d["y_q"][0][0] + 1)), 1),
    (lambda b: _edit_json(b / "public.json", lambda d: d["x_q"][0].__setitem__(0, 200)), 2),
    (lambda b: (b / "proof.bin").write_bytes((b / "proof.bin").read_bytes()[:-5]), 1),   # readable, modified: invalid
    (lambda b: _edit_json(b / "statement.json", lambda d: d.__setitem__("shift", d["shift"] + 1)), 2),
    (lambda b: (b / "bundle.json").write_text("{not json"), 2),
    (lambda b: (b / "vk.bin").unlink(), 2),
])
def test_tampered_bundles_are_invalid_or_bad_input(tmp_path, capsys, edit, code):
    bundle = prove(tmp_path)
    pinned = tmp_path / "anchor.json"                  # what the contributor published, before any tampering
    shutil.copy(bundle / "anchor.json", pinned)
    edit(bundle)
    assert main(["verify", str(bundle), "--anchor", str(pinned)]) == code


def test_a_pinned_anchor_of_another_adapter_is_refused(tmp_path, capsys):
    mine = prove(tmp_path, "mine")
    other = prove(tmp_path, "other", ["--seed", "4"])
    assert main(["verify", str(mine), "--anchor", str(other / "anchor.json")]) == 1
    assert "pinned" in capsys.readouterr().out


def test_a_proof_of_another_call_is_invalid(tmp_path, capsys):
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    save_file({"lora_A": rng.standard_normal((2, 12)) * 0.1, "lora_B": rng.standard_normal((8, 2)) * 0.1},
              str(tmp_path / "w.safetensors"))
    bundles = []
    for i in range(2):  # the same adapter and statement (shift given), other activations
        save_file({"x": rng.standard_normal((2, 12))}, str(tmp_path / f"x{i}.safetensors"))
        out = tmp_path / f"call{i}"
        assert main(["prove", "--backend", "zkref", "--weights", str(tmp_path / "w.safetensors"), "--activations",
                     str(tmp_path / f"x{i}.safetensors"), "--shift", "5", "--out", str(out), "--quiet"]) == 0
        bundles.append(out)
    for name in ("proof.bin", "bundle.json"):  # the first call's proof, presented with the second call's values
        shutil.copy(bundles[0] / name, bundles[1] / name)
    capsys.readouterr()
    assert main(["verify", str(bundles[1]), "--anchor", str(bundles[0] / "anchor.json")]) == 1
    assert "public instances differ" in capsys.readouterr().out


def test_bad_prove_arguments_exit_2(tmp_path, capsys):
    assert main(["prove", "--backend", "zkref", *SMALL, "--x-binding", "polycommit", "--out", str(tmp_path / "p")]) == 2
    assert "polycommit" in capsys.readouterr().err
    assert main(["prove", "--backend", "zkref", *SMALL, "--srs", "x.srs", "--out", str(tmp_path / "q")]) == 2
    assert main(["verify", str(tmp_path / "missing")]) == 2


def _edit_json(path, fn):
    doc = json.loads(path.read_text())
    fn(doc)
    path.write_text(json.dumps(doc))


def test_vk_hash_pins_only_a_fixed_adapter(tmp_path, capsys):
    """A verifying key binds the adapter only when the adapter is in it (fixed); a hashed adapter is bound by its digest,
    so pinning just the key would bind nothing: refused with the way to pin it."""
    fixed = prove(tmp_path, "fixed")
    vk_hash = json.loads((fixed / "anchor.json").read_text())["vk_hash"]
    assert main(["verify", str(fixed), "--vk-hash", vk_hash]) == 0
    hashed = prove(tmp_path, "hashed", ["--adapter-binding", "hashed"])
    capsys.readouterr()
    assert main(["verify", str(hashed), "--vk-hash", vk_hash]) == 2
    assert "binds a fixed adapter only" in capsys.readouterr().err
    assert main(["verify", str(hashed), "--anchor", str(hashed / "anchor.json")]) == 0


def test_an_anchor_without_the_adapter_digest_pins_nothing(tmp_path, capsys):
    hashed = prove(tmp_path, "hashed", ["--adapter-binding", "hashed"])
    anchor = json.loads((hashed / "anchor.json").read_text())
    anchor["digest"] = None
    (tmp_path / "weak.json").write_text(json.dumps(anchor))
    capsys.readouterr()
    assert main(["verify", str(hashed), "--anchor", str(tmp_path / "weak.json")]) == 1
    assert "pins no adapter digest" in capsys.readouterr().out


def test_symlinked_files_in_a_bundle_are_refused(tmp_path, capsys):
    bundle = prove(tmp_path)
    outside = tmp_path / "outside.json"
    shutil.move(bundle / "public.json", outside)
    (bundle / "public.json").symlink_to(outside)
    assert main(["verify", str(bundle)]) == 2
    assert "symbolic link" in capsys.readouterr().err


def test_deeply_nested_json_is_bad_input_even_after_py_ecc_is_imported(tmp_path):
    """py_ecc raises the recursion limit on import; backends.kzg puts it back, so deep JSON raises RecursionError (a
    one-line exit 2) instead of overflowing the C stack (a segfault). In a child process: a crash must not kill pytest."""
    import subprocess
    import sys

    bundle = prove(tmp_path)
    anchor = tmp_path / "deep.json"
    anchor.write_text("[" * 200_000)
    code = ("import sys, backends.ezkl.backend\n"
            "from zkref.cli.main import main\n"
            f"sys.exit(main(['verify', {str(bundle)!r}, '--anchor', {str(anchor)!r}]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, (done.returncode, done.stderr[-500:])
    assert "Traceback" not in done.stderr
