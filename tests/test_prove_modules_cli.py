"""`zkref prove --base DIR --adapter DIR`: a peft adapter's modules on one prompt, proven through
`zkref.pipeline.prove_modules` (one batch proof by default where measured to win, or one proof per module), written as a
batch or per-module bundle, and `zkref verify` of both kinds: valid, a tampered member, garbled bundles, one real EZKL
batch. Everything is built locally (a tiny GPT-2 and a peft adapter); nothing is downloaded."""
import json
import shutil

import pytest

from backends.bundle import BATCH_FILES, FILES, read_any_bundle, read_bundle
from zkref.cli.main import main
from zkref.models.tiny_model import build_tiny_gpt2, save_random_lora

ATTN = ("transformer.h.0.attn.c_attn", "transformer.h.0.attn.c_proj")
MLP = "transformer.h.0.mlp.c_proj"


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> list[str]:
    """The base and adapter arguments: n_embd 16, LoRA r=2 on c_attn and both c_proj (three modules), 3 tokens."""
    tmp = tmp_path_factory.mktemp("modules")
    base = build_tiny_gpt2(tmp / "base", n_layer=1, n_embd=16, n_head=2, vocab_size=64, n_positions=32)
    adapter = save_random_lora(base, tmp / "lora", r=2, lora_alpha=4, target_modules=["c_attn", "c_proj"],
                               fan_in_fan_out=True)
    return ["--base", str(base), "--adapter", str(adapter), "--prompt-ids", "1,5,9"]


def prove(model, out, *extra, backend="zkref") -> int:
    return main(["prove", "--backend", backend, *model, *extra, "--out", str(out), "--quiet", "--json"])


@pytest.fixture(scope="module")
def batch_bundle(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("batch") / "b"
    assert prove(model, out) == 0
    return out


@pytest.fixture(scope="module")
def modules_bundle(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("per-module") / "b"
    assert prove(model, out, "--proving", "per-module") == 0
    return out


def verify(bundle, *extra) -> int:
    return main(["verify", str(bundle), *extra])


def verified(capsys, bundle, *extra) -> tuple[int, dict]:
    """verify --json: the exit code and the document (output printed before is dropped)."""
    capsys.readouterr()
    code = verify(bundle, *extra, "--json")
    return code, json.loads(capsys.readouterr().out)


def anchors_of(modules_bundle, tmp_path) -> str:
    """The per-module anchors a contributor publishes ({module name: anchor}), as a file for --anchor."""
    anchors = {name: json.loads((modules_bundle / "modules" / f"{i}-{name}" / "anchor.json").read_text())
               for i, name in enumerate((*ATTN, MLP))}
    path = tmp_path / "published-anchors.json"
    path.write_text(json.dumps(anchors))
    return str(path)


def copy(bundle, tmp_path):
    return shutil.copytree(bundle, tmp_path / "copy")


def edit_json(path, fn) -> None:
    doc = json.loads(path.read_text())
    fn(doc)
    path.write_text(json.dumps(doc))


# ----------------------------------------------------------------------------------------------------------------------
# (a) auto: one batch proof; (b) per-module forced
# ----------------------------------------------------------------------------------------------------------------------

def test_auto_writes_a_batch_bundle_that_verifies(model, tmp_path, capsys):
    out = tmp_path / "b"
    assert prove(model, out) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["proving"] == {"batch": True, "reason": "one batch proof: the backend checks the same statements "
                                                       "under one proof"}
    assert doc["verified"] and [m["name"] for m in doc["modules"]] == [*ATTN, MLP]
    assert [m["y_shape"] for m in doc["modules"]] == [[3, 48], [3, 16], [3, 16]]
    assert all(m["check"]["within_bound"] for m in doc["modules"])
    assert {"prove", "verify", "total"} <= set(doc["timings"]) and doc["anchor"]["statement_id"] == doc["batch_id"]
    assert sorted(p.name for p in out.iterdir()) == sorted(BATCH_FILES)
    assert verify(out) == 2                                           # nothing pinned
    pin = ("--anchor", str(out / "anchor.json"))
    code, result = verified(capsys, out, *pin)
    assert code == 0 and result["valid"] and result["kind"] == "batch" and result["anchor_pinned"]
    assert result["statement_id"] == doc["batch_id"] and result["members"] == [*ATTN, MLP]
    assert result["proving"] == doc["proving"]
    code, result = verified(capsys, out, *pin, "--statement-id", doc["batch_id"])
    assert code == 0 and result["anchor_pinned"]
    assert verify(out, *pin, "--statement-id", "0" * 32) == 1
    assert verify(out, "--vk-hash", doc["anchor"]["vk_hash"]) == 0
    assert verify(out, *pin, "--vk-hash", "0" * 64) == 2                # conflicting pins
    capsys.readouterr()
    assert verify(out, *pin) == 0
    text = capsys.readouterr().out
    assert "proving: one batch proof" in text and "valid" in text


def test_text_output_shows_the_choice_shapes_and_timings(model, tmp_path, capsys):
    assert main(["prove", "--backend", "zkref", *model, "--module", ATTN[1], "--out", str(tmp_path / "b"),
                 "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "proving: one batch proof" in text and f"{ATTN[1]}: y 3×16" in text and "timings: " in text


def test_per_module_writes_one_bundle_per_module(modules_bundle, tmp_path, capsys):
    bundle = read_any_bundle(modules_bundle)
    assert bundle.reason == "one proof per module (forced)" and bundle.batch.names == (*ATTN, MLP)
    subdirs = sorted(p.name for p in (modules_bundle / "modules").iterdir())
    assert subdirs == [f"0-{ATTN[0]}", f"1-{ATTN[1]}", f"2-{MLP}"]
    for name in subdirs:
        sub = modules_bundle / "modules" / name
        assert sorted(p.name for p in sub.iterdir()) == sorted(FILES)
        assert verify(sub, "--anchor", str(sub / "anchor.json")) == 0     # an ordinary single-statement bundle
        assert read_bundle(sub).statement.id == bundle.modules[int(name[0])].statement.id
    assert verify(modules_bundle) == 2                                 # nothing pinned
    pin = ("--anchor", anchors_of(modules_bundle, tmp_path))
    code, result = verified(capsys, modules_bundle, *pin)
    assert code == 0 and result["kind"] == "per-module" and result["proving"]["batch"] is False
    assert [m["module"] for m in result["modules"]] == [*ATTN, MLP] and all(m["valid"] for m in result["modules"])
    code, result = verified(capsys, modules_bundle, *pin, "--statement-id", "0" * 32)
    assert code == 1 and not any(m["valid"] for m in result["modules"])
    assert all("not the expected" in m["reason"] for m in result["modules"])


def test_per_module_anchors_are_pinned_by_module_name(modules_bundle, tmp_path, capsys):
    anchors = {name: json.loads((modules_bundle / "modules" / f"{i}-{name}" / "anchor.json").read_text())
               for i, name in enumerate((*ATTN, MLP))}
    pinned = tmp_path / "anchors.json"
    pinned.write_text(json.dumps(anchors))
    code, result = verified(capsys, modules_bundle, "--anchor", str(pinned))
    assert code == 0 and result["anchor_pinned"]
    swapped = dict(anchors, **{ATTN[1]: anchors[MLP], MLP: anchors[ATTN[1]]})      # each other's anchors
    pinned.write_text(json.dumps(swapped))
    code, result = verified(capsys, modules_bundle, "--anchor", str(pinned))
    assert code == 1 and [m["module"] for m in result["modules"] if not m["valid"]] == [ATTN[1], MLP]
    assert f"module {ATTN[1]}: " in result["reason"]
    pinned.write_text(json.dumps(anchors[MLP]))                                     # one anchor for three modules
    assert verify(modules_bundle, "--anchor", str(pinned)) == 2
    assert verify(modules_bundle, "--vk-hash", "0" * 64) == 2


def test_proving_modes_are_for_adapters_only(model, tmp_path, capsys):
    assert main(["prove", "--backend", "zkref", "--d-in", "4", "--d-out", "4", "--rank", "1", "--proving", "batch",
                 "--out", str(tmp_path / "x")]) == 2
    assert "--proving" in capsys.readouterr().err
    assert prove(model, tmp_path / "y", "--module", "nope") == 2
    assert prove(model, tmp_path / "z", "--x-binding", "polycommit") == 2      # zkref has no layout for polycommit


# ----------------------------------------------------------------------------------------------------------------------
# (c) a tampered member; (d) garbled bundles
# ----------------------------------------------------------------------------------------------------------------------

def _bump_member_y(index):
    def edit(doc):
        doc[index]["public"]["y_q"][0][0] += 1
    return edit


def test_a_tampered_members_y_is_invalid_naming_the_member(batch_bundle, tmp_path, capsys):
    bundle = copy(batch_bundle, tmp_path)
    edit_json(bundle / "public.json", _bump_member_y(1))
    pin = ("--anchor", str(batch_bundle / "anchor.json"))
    code, result = verified(capsys, bundle, *pin)
    assert code == 1 and not result["valid"] and f"in member {ATTN[1]}" in result["reason"]
    assert verify(bundle, *pin) == 1
    assert f"in member {ATTN[1]}" in capsys.readouterr().out


def test_a_tampered_module_of_a_per_module_bundle_is_invalid_naming_it(modules_bundle, tmp_path, capsys):
    bundle = copy(modules_bundle, tmp_path)
    edit_json(bundle / "modules" / f"2-{MLP}" / "public.json", lambda d: d["y_q"][0].__setitem__(0, d["y_q"][0][0] + 1))
    code, result = verified(capsys, bundle, "--anchor", anchors_of(modules_bundle, tmp_path))
    assert code == 1 and [m["valid"] for m in result["modules"]] == [True, True, False]
    assert result["reason"].startswith(f"module {MLP}: ")


def test_a_modified_proof_bin_is_invalid_not_bad_input(batch_bundle, modules_bundle, tmp_path, capsys):
    """A readable bundle whose proof.bin is not the one bundle.json recorded: invalid (exit 1), saying so."""
    batch = shutil.copytree(batch_bundle, tmp_path / "batch")
    (batch / "proof.bin").write_bytes((batch / "proof.bin").read_bytes()[:-7])
    code, result = verified(capsys, batch, "--anchor", str(batch_bundle / "anchor.json"))
    assert code == 1 and "proof.bin was modified" in result["reason"]
    modules = shutil.copytree(modules_bundle, tmp_path / "modules")
    proof = modules / "modules" / f"1-{ATTN[1]}" / "proof.bin"
    proof.write_bytes(proof.read_bytes()[:-7])
    code, result = verified(capsys, modules, "--anchor", anchors_of(modules_bundle, tmp_path))
    assert code == 1 and [m["valid"] for m in result["modules"]] == [True, False, True]
    assert result["reason"].startswith(f"module {ATTN[1]}: ") and "proof.bin was modified" in result["reason"]


GARBLED = {
    "truncated bundle.json": lambda b: (b / "bundle.json").write_bytes((b / "bundle.json").read_bytes()[:40]),
    "garbled batch.json": lambda b: (b / "batch.json").write_text("{\"members\": 3"),
    "members renamed": lambda b: edit_json(b / "public.json", lambda d: d[0].__setitem__("name", "other")),
    "a member's publics missing": lambda b: edit_json(b / "public.json", lambda d: d.pop()),
    "batch id": lambda b: edit_json(b / "batch.json", lambda d: d.__setitem__("id", "0" * 32)),
    "proving says per-module": lambda b: edit_json(b / "bundle.json",
                                                   lambda d: d["proving"].__setitem__("batch", False)),
    "unknown format": lambda b: edit_json(b / "bundle.json", lambda d: d.__setitem__("format", "zkref-x/9")),
    "y out of range": lambda b: edit_json(b / "public.json",
                                          lambda d: d[2]["public"]["y_q"][0].__setitem__(0, 1 << 40)),
}
MODULES_GARBLED = {
    "a module's path outside": lambda b: edit_json(b / "bundle.json",
                                                   lambda d: d["modules"][0].__setitem__("path", "../elsewhere")),
    "a module missing": lambda b: shutil.rmtree(b / "modules" / f"1-{ATTN[1]}"),
    "modules reordered": lambda b: edit_json(b / "bundle.json", lambda d: d["modules"].reverse()),
    "batch id": lambda b: edit_json(b / "bundle.json", lambda d: d.__setitem__("batch_id", "0" * 32)),
    "a module's statement": lambda b: edit_json(b / "modules" / f"0-{ATTN[0]}" / "statement.json",
                                                lambda d: d.__setitem__("shift", d["shift"] + 1)),
    "garbled manifest": lambda b: (b / "bundle.json").write_bytes(b"\xff\xfe{"),
    "no modules": lambda b: edit_json(b / "bundle.json", lambda d: d.__setitem__("modules", [])),
}


def _bad_input(capsys, bundle, *pin) -> None:
    capsys.readouterr()
    assert verify(bundle, *pin) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1
    assert captured.err.startswith("zkref verify: ") and "Traceback" not in captured.err


@pytest.mark.parametrize("edit", list(GARBLED.values()), ids=list(GARBLED))
def test_a_garbled_batch_bundle_is_bad_input(batch_bundle, tmp_path, capsys, edit):
    bundle = copy(batch_bundle, tmp_path)
    edit(bundle)
    _bad_input(capsys, bundle, "--anchor", str(batch_bundle / "anchor.json"))


@pytest.mark.parametrize("edit", list(MODULES_GARBLED.values()), ids=list(MODULES_GARBLED))
def test_a_garbled_per_module_bundle_is_bad_input(modules_bundle, tmp_path, capsys, edit):
    bundle = copy(modules_bundle, tmp_path)
    pin = ("--anchor", anchors_of(modules_bundle, tmp_path))
    edit(bundle)
    _bad_input(capsys, bundle, *pin)


def test_a_single_statement_reader_refuses_a_batch_bundle(batch_bundle):
    with pytest.raises(ValueError, match="expected keys"):
        read_bundle(batch_bundle)


# ----------------------------------------------------------------------------------------------------------------------
# (e) one real EZKL batch
# ----------------------------------------------------------------------------------------------------------------------

@pytest.mark.ezkl
def test_a_real_ezkl_batch_of_two_modules(model, tmp_path, ezkl_cache, monkeypatch, capsys):
    """Two attention modules (16→48 and 16→16, r=2, T=3) proven by auto as one EZKL batch, then verified pinned."""
    pytest.importorskip("ezkl")
    monkeypatch.setenv("ZKREF_CACHE", str(ezkl_cache))
    out = tmp_path / "ezkl"
    assert prove(model, out, "--module", ATTN[0], "--module", ATTN[1], backend="ezkl") == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["proving"]["batch"] and "predicted rows" in doc["proving"]["reason"]
    assert doc["zero_knowledge"] and doc["verified"] and [m["name"] for m in doc["modules"]] == list(ATTN)
    code, result = verified(capsys, out, "--anchor", str(out / "anchor.json"))
    assert code == 0 and result["valid"] and result["backend"] == "ezkl" and result["anchor_pinned"]
    tampered = copy(out, tmp_path)
    edit_json(tampered / "public.json", _bump_member_y(0))
    code, result = verified(capsys, tampered, "--anchor", str(out / "anchor.json"))
    assert code == 1 and f"in member {ATTN[0]}" in result["reason"]
