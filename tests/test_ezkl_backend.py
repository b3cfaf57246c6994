"""The EZKL backend (specs/ezkl-backend.md): the graph's witness equals evaluate(), what EZKL hashes, real prove and
verify per binding mode, the verify tamper matrix, what EZKL's own constraints reject, the cache, SRS handling.

Every test here runs EZKL (marked ``ezkl``). Circuits are tiny (k ≤ 12); one cache directory is shared by the session.
"""
from __future__ import annotations

import dataclasses
import json
import multiprocessing
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

ezkl = pytest.importorskip("ezkl")

from backends import get_backend  # noqa: E402
from backends.base import Proof, sha256_hex  # noqa: E402
from backends.ezkl import graph, instances  # noqa: E402
from backends.ezkl.backend import EzklBackend, decode_vk, encode_vk, settings_mismatch  # noqa: E402
from backends.ezkl.cache import CacheError, srs_header_k  # noqa: E402
from backends.ezkl.settings import (canonicalise, choose_layout, committed_input_cells, fit_main_region,  # noqa: E402
                                    freivalds_equation, k_floor, run_args_for,
                                    trim_einsum_equations)
from zkref.lora.commitments import activations_digest, adapter_digest, requant_constants  # noqa: E402
from zkref.lora.statement import (LoRAPublic, LoRAShape, LoRAStatement, LoRAWitness, encode_instances,  # noqa: E402
                                  evaluate, public_values)
from zkref.primitives.field import P, felt_from_str, felt_to_str, signed  # noqa: E402
from zkref.primitives.poseidon import poseidon_hash_fast  # noqa: E402
from zkref.primitives.ranges import IntRange  # noqa: E402

pytestmark = pytest.mark.ezkl


# ----------------------------------------------------------------------------------------------------------------------
# Fixtures and helpers
# ----------------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def backend(ezkl_cache) -> EzklBackend:
    return get_backend("ezkl", cache_dir=ezkl_cache)


@pytest.fixture(scope="session")
def srs_dir(backend) -> Path:
    """The session's development SRS files (made by preparing one small circuit), to copy into fresh caches."""
    backend.prepare(statement(), random_witness(1))
    return backend.cache / "srs"


def fresh_cache(srs_dir: Path, root: Path) -> Path:
    """A new cache root holding only copies of the session's SRS files (no gen_srs again)."""
    shutil.copytree(srs_dir, root / "ezkl" / "srs")
    return root


def statement(d_in=8, d_out=6, rank=3, tokens=2, shift=3, x="public", adapter="fixed", y="public"):
    return LoRAStatement(shape=LoRAShape(d_in=d_in, d_out=d_out, rank=rank, tokens=tokens), shift=shift,
                         x_binding=x, adapter_binding=adapter, y_binding=y)


def random_witness(seed: int, d_in=8, d_out=6, rank=3, tokens=2) -> LoRAWitness:
    rng = np.random.default_rng(seed)
    return LoRAWitness(A_q=rng.integers(-8, 8, (rank, d_in)), B_q=rng.integers(-8, 8, (d_out, rank)),
                       x_q=rng.integers(-128, 128, (tokens, d_in)))


def tie_witness(shift: int = 3) -> LoRAWitness:
    """z has exact ties (±2^(shift-1)), a negative tie, and a token whose z clamps."""
    w = random_witness(7)
    A, x = w.A_q.copy(), w.x_q.copy()
    x[0, :] = 0
    x[0, 0] = 1 << (shift - 1)
    A[:, 0] = [1, -1, 3]
    x[1, :] = 127
    A[2, :] = 7
    return LoRAWitness(A_q=A, B_q=w.B_q, x_q=x)


def circuit_only(st_: LoRAStatement, w: LoRAWitness, work: Path, *, logrows: int = 12) -> tuple[dict, dict]:
    """Settings, compiled circuit and EZKL witness for (statement, witness), without keys: (settings, witness JSON)."""
    work.mkdir(parents=True, exist_ok=True)
    graph.export_onnx(st_, w, work / "m.onnx")
    run = run_args_for(st_, logrows=max(logrows, k_floor(len(encode_instances(st_, public_values(st_, w))))))
    assert ezkl.gen_settings(str(work / "m.onnx"), str(work / "s.json"), py_run_args=run.py_run_args())
    assert ezkl.compile_circuit(str(work / "m.onnx"), str(work / "m.compiled"), str(work / "s.json"))
    (work / "in.json").write_text(json.dumps(graph.input_data(w.x_q, st_.shift)))
    ezkl.gen_witness(str(work / "in.json"), str(work / "m.compiled"), str(work / "w.json"))
    return json.loads((work / "s.json").read_text()), json.loads((work / "w.json").read_text())


def ints(felts) -> list[int]:
    return [signed(felt_from_str(v)) for v in felts]


# ----------------------------------------------------------------------------------------------------------------------
# The graph: EZKL's witness is evaluate(), what EZKL hashes
# ----------------------------------------------------------------------------------------------------------------------

@settings(max_examples=12, deadline=None)
@given(shape=st.tuples(st.integers(1, 8), st.integers(1, 6), st.integers(1, 3), st.integers(1, 2)),
       shift=st.integers(0, 10), seed=st.integers(0, 2**32 - 1), ties=st.booleans())
def test_witness_equals_evaluate(tmp_path_factory, shape, shift, seed, ties):
    """y cells = y_q·2^shift and x cells = x_q for random statements, with exact ties forced half the time."""
    d_in, d_out, r, T = shape
    w = random_witness(seed, d_in, d_out, r, T)
    if ties and shift and shift <= 7:
        A, x = w.A_q.copy(), w.x_q.copy()
        x[:, :] = 0
        x[:, 0] = [(1 << (shift - 1)) * (-1) ** t for t in range(T)]
        A[:, 0] = [(-1) ** o * (1 + o % 7) for o in range(r)]
        w = LoRAWitness(A_q=A, B_q=w.B_q, x_q=x)
    st_ = statement(d_in, d_out, r, T, shift)
    trace = evaluate(st_, w)
    _, wit = circuit_only(st_, w, tmp_path_factory.mktemp("wit"))
    assert ints(wit["inputs"][0]) == w.x_q.reshape(-1).tolist()
    assert ints(wit["outputs"][0]) == (trace.y_q * (1 << shift)).reshape(-1).tolist()


@pytest.mark.parametrize("shape,shift", [((8, 6, 3, 2), 0), ((5, 4, 2, 1), 1), ((8, 6, 3, 2), 3),
                                         ((3, 7, 1, 2), 6), ((6, 2, 2, 1), 11)])
def test_params_hash_is_poseidon_of_the_graph_message(tmp_path, shape, shift):
    """EZKL's hashed params = Poseidon(A_qᵀ ‖ requant_constants(shift) ‖ B_qᵀ): `graph.params_message`."""
    d_in, d_out, r, T = shape
    w = random_witness(shift + 100, d_in, d_out, r, T)
    st_ = statement(d_in, d_out, r, T, shift, adapter="hashed")
    _, wit = circuit_only(st_, w, tmp_path)
    ezkl_hash = felt_from_str(wit["processed_params"]["poseidon_hash"][0])
    assert ezkl_hash == poseidon_hash_fast(graph.params_message(w.A_q, w.B_q, shift))
    assert graph.params_message(w.A_q, w.B_q, shift)[r * d_in:r * d_in + len(requant_constants(shift))] == \
        [v % P for v in requant_constants(shift)]


@pytest.mark.parametrize("shift", [0, 1, 4])
def test_params_hash_equals_zkref_adapter_digest(tmp_path, shift):
    """zkref's adapter_digest (zkref.lora.commitments, one definition) is EZKL's hashed params instance."""
    w = random_witness(shift + 200)
    st_ = statement(shift=shift, adapter="hashed")
    _, wit = circuit_only(st_, w, tmp_path)
    assert felt_from_str(wit["processed_params"]["poseidon_hash"][0]) == \
        adapter_digest(w.A_q, w.B_q, shift=shift, packed=False)


@pytest.mark.parametrize("shape", [(8, 6, 3, 2), (5, 3, 1, 1)])
def test_input_hash_equals_activations_digest(tmp_path, shape):
    d_in, d_out, r, T = shape
    w = random_witness(300, d_in, d_out, r, T)
    _, wit = circuit_only(statement(d_in, d_out, r, T, 2, x="hashed"), w, tmp_path)
    assert felt_from_str(wit["processed_inputs"]["poseidon_hash"][0]) == activations_digest(w.x_q, packed=False)


def test_settings_are_pinned_and_canonical(tmp_path):
    """Every run argument is the statement's; set-like lists are sorted. (EZKL's num_rows itself varies now and then
    between gen_settings runs, 549/550/551 for this circuit: the cache keeps one settings file per circuit.)"""
    st_, w = statement(), random_witness(1)
    first, _ = circuit_only(st_, w, tmp_path / "a")
    second, _ = circuit_only(st_, w, tmp_path / "b")
    stable = lambda s: {k: v for k, v in canonicalise(s).items() if k not in ("num_rows", "total_assignments")}  # noqa: E731
    assert stable(first) == stable(second)
    assert canonicalise(first)["required_range_checks"] == sorted(first["required_range_checks"], key=repr)
    assert settings_mismatch(st_, canonicalise(first)) is None
    assert first["run_args"] == run_args_for(st_, logrows=12).settings_json()
    assert first["required_lookups"] == []                       # no lookup table: decompositions only
    tampered = json.loads(json.dumps(first))
    tampered["run_args"]["ignore_range_check_inputs_outputs"] = False
    assert "run arguments" in settings_mismatch(st_, tampered)
    tampered = json.loads(json.dumps(first))
    tampered["model_output_scales"] = [0]
    assert "model_output_scales" in settings_mismatch(st_, tampered)


@pytest.mark.parametrize("shift", [0, 1, 3, 8, 11])
def test_decompositions_use_one_digit_table(tmp_path, shift):
    """Every decomposition has one base and enough digits for every value the requantisation decomposes, so the
    circuit's range tables are the signs' and ONE digit table, plus the booleans' in the Floor graph (an unbound
    adapter's, in base 2^shift: Floor's own digits, 256 at shift 0); the boolean-free graph of a fixed adapter takes
    two digits in the smallest power-of-two base that holds its values. The witness is still evaluate()'s, ties and
    clamping included."""
    for adapter in ("fixed", "unbound"):
        _decompositions_use_one_digit_table(tmp_path / adapter, shift, adapter)


def _decompositions_use_one_digit_table(tmp_path, shift, adapter):
    tmp_path.mkdir()
    st_ = statement(shift=shift, adapter=adapter)
    w = tie_witness(shift) if 1 <= shift <= 7 else random_witness(3)
    settings_, wit = circuit_only(st_, w, tmp_path)
    base, legs = graph.decomposition(st_, logrows=settings_["run_args"]["logrows"])
    assert (base, legs) == (settings_["run_args"]["decomp_base"], settings_["run_args"]["decomp_legs"])
    assert base ** legs > graph.value_bound(st_)
    booleans = not graph.boolean_free_requant(st_)
    assert booleans == (adapter == "unbound")
    if booleans:
        assert base == ((1 << shift) if shift else 256) and legs == graph.decomp_legs(st_)
    else:
        bits = graph.value_bound(st_).bit_length()
        assert legs == 2 and base == 1 << -(-bits // 2)
    digits = [r for r in settings_["required_range_checks"] if r[0] == 0 and r[1] > 1]
    assert digits == ([[0, base - 1]] if base > 2 else [])
    assert len(settings_["required_range_checks"]) == (2 if base == 2 or not booleans else 3)
    assert ([0, 1] in settings_["required_range_checks"]) == (booleans or base == 2)
    assert ints(wit["outputs"][0]) == (evaluate(st_, w).y_q * (1 << shift)).reshape(-1).tolist()


def test_freivalds_dispatch_restates_ezkls():
    """`freivalds_equation` on the equations EZKL records for GPT-2 c_attn T=15 and for T=1: the two matrix products
    go to the Freivalds chip; a decomposition's recomposition (digits · powers, per value) and a matrix-vector product
    are base ops. Trimming keeps the Freivalds ones in order and leaves settings with nothing to drop as they are."""
    xa, bz = ["mk,kn->mn", {"k": 768, "m": 15, "n": 8}], ["mak,kn->mn", {"a": 1, "k": 8, "m": 3, "n": 1152}]
    recompose, scalar = ["abc,abc->ab", {"a": 15, "b": 8, "c": 3}], ["abc,abc->ab", {"a": 1, "b": 1, "c": 3}]
    assert freivalds_equation(*xa) and freivalds_equation(*bz)
    assert not freivalds_equation(*recompose) and not freivalds_equation(*scalar)
    assert not freivalds_equation("mk,kn->mn", {"k": 4096, "m": 1, "n": 16})              # T = 1: a matrix-vector
    settings_ = {"einsum_params": {"equations": [xa, recompose, scalar, bz], "total_einsum_col_size": 32060}}
    trimmed = trim_einsum_equations(settings_)
    assert trimmed["einsum_params"] == {"equations": [xa, bz], "total_einsum_col_size": 32060}
    assert len(settings_["einsum_params"]["equations"]) == 4                              # the input is not mutated
    untouched = {"einsum_params": {"equations": [recompose], "total_einsum_col_size": 0}}
    assert trim_einsum_equations(untouched) is untouched


def test_einsum_chip_is_sized_to_its_freivalds_products(backend, proven, tmp_path):
    """The backend's circuit lists only the Freivalds products (EZKL sizes the chip's columns from the list), lays out
    the same einsum cells as EZKL's untrimmed settings, and its proofs verify (the binding-mode tests)."""
    case = proven["public-fixed-public"]
    prepared = backend.prepare(case["statement"], case["witness"])
    raw, _ = circuit_only(case["statement"], case["witness"], tmp_path, logrows=prepared.layout.logrows)
    kept = prepared.settings["einsum_params"]["equations"]
    assert kept and all(freivalds_equation(*e) for e in kept)
    assert kept == [e for e in raw["einsum_params"]["equations"] if freivalds_equation(*e)]
    assert len(raw["einsum_params"]["equations"]) > len(kept)                            # recompositions dropped
    assert prepared.settings["einsum_params"]["total_einsum_col_size"] == raw["einsum_params"]["total_einsum_col_size"]
    assert backend.verify(case["statement"], case["result"].public, case["result"].proof, anchor=case["anchor"])


@settings(max_examples=80, deadline=None)
@given(z=st.integers(-(1 << 24), 1 << 24), shift=st.integers(1, 16), z_bits=st.integers(8, 16))
def test_rounding_constant_folds_the_clamps_lower_bound(z, shift, z_bits):
    """The boolean-free graph floors v = z + c − [z < 0] (c = `rounding_constant`): ⌊v / 2^shift⌋ is the statement's
    rounding minus the clamp's lower bound, ties and negatives included; and the folded clamp (`clamp_by_relu`) of that
    is the statement's z_q (torch evaluates the relus exactly on these integers)."""
    import torch

    from zkref.chips.requant import requant_reference, round_half_away_shift

    lo, hi = IntRange(z_bits).lo, IntRange(z_bits).hi
    a = (z + graph.rounding_constant(shift, lo=lo) - (z < 0)) >> shift
    assert a == int(round_half_away_shift(z, shift)) - lo
    z_q = graph.clamp_by_relu(torch.tensor([float(a)], dtype=torch.float64), lo, hi)
    assert int(z_q.item()) == int(requant_reference(z, shift, z_bits))


def test_boolean_free_decomposition_takes_two_digits_within_one_table_column():
    """Two digits in the smallest power-of-two base holding `value_bound` while that digit table fits one column
    (2^(k−1) rows) and 2^16 rows, more digits beyond; the Floor graph keeps base 2^shift."""
    for kw in (dict(), dict(d_in=4096, shift=10), dict(shift=0), dict(shift=16)):
        st_ = statement(**kw)
        bits = graph.value_bound(st_).bit_length()
        for k in (9, 13, 20):
            base, legs = graph.decomposition(st_, logrows=k)
            assert base ** legs > graph.value_bound(st_) and base <= 1 << min(graph.MAX_BASE_BITS, k - 1)
            if bits <= 2 * min(graph.MAX_BASE_BITS, k - 1):
                assert (legs, base) == (2, 1 << -(-bits // 2))
            else:
                assert legs > 2
    widest = dataclasses.replace(statement(d_in=4096, shift=16), z_bits=16, weight_bits=8)
    assert graph.decomposition(widest, logrows=17) == (1 << 16, 2)         # 32-bit values: still two digits
    c_attn = statement(d_in=768, d_out=2304, rank=8, tokens=15, shift=9, x="polycommit", y="polycommit")
    assert graph.decomposition(c_attn, logrows=13) == (1024, 2) and graph.decomposition(c_attn, logrows=9) == (128, 3)
    floor_graph = statement(adapter="unbound", shift=5)
    assert graph.decomposition(floor_graph, logrows=13) == (32, graph.decomp_legs(floor_graph))


def test_fit_main_region_leaves_out_only_committed_x():
    """Only a polycommit x is assigned before the model's layout: its T·d_in cells leave the capacity; public or
    hashed x keep theirs; the settings given are not mutated."""
    committed, public = statement(x="polycommit", tokens=4), statement(x="public", tokens=4)
    assert committed_input_cells([committed]) == 4 * 8 and committed_input_cells([public]) == 0
    assert committed_input_cells([committed, committed, statement(x="hashed")]) == 2 * 4 * 8
    raw = {"total_assignments": 1000, "num_rows": 500}
    assert fit_main_region(raw, [committed]) == {"total_assignments": 1000 - 32, "num_rows": 500}
    assert raw["total_assignments"] == 1000
    assert fit_main_region(raw, [public]) is raw
    assert fit_main_region({"total_assignments": 20}, [committed]) == {"total_assignments": 20}   # nothing to cut


def test_main_region_capacity_fits_the_real_layout_and_a_short_one_fails_setup(ezkl_cache, tmp_path):
    """At k = 9 the statement's main region needs several blocks of columns: with the committed x left out
    (`fit_main_region`) EZKL's real layout fits, and the proof verifies; with one block too few setup fails loudly
    (EZKL panics "index out of bounds"): a wrong capacity can never yield a proof."""
    from backends.ezkl.cache import dev_srs

    st_ = statement(d_in=64, d_out=8, rank=4, tokens=4, shift=6, x="polycommit", y="polycommit")
    w = random_witness(21, 64, 8, 4, 4)
    raw, _ = circuit_only(st_, w, tmp_path, logrows=9)
    raw = canonicalise(raw)
    fitted = fit_main_region(raw, [st_])
    block = 2 * ((1 << 9) - 6)                            # num_inner_cols × usable rows (VarTensor::max_rows)
    assert fitted["total_assignments"] == raw["total_assignments"] - 4 * 64 > 2 * block
    srs = str(dev_srs(ezkl_cache / "ezkl", 9))
    for name, capacity in (("fitted", fitted["total_assignments"]), ("short", fitted["total_assignments"] - block)):
        work = tmp_path / name
        work.mkdir()
        (work / "s.json").write_text(json.dumps({**fitted, "total_assignments": capacity}))
        assert ezkl.compile_circuit(str(tmp_path / "m.onnx"), str(work / "m.compiled"), str(work / "s.json"))
        if name == "short":
            with pytest.raises(BaseException, match="index out of bounds"):   # pyo3's PanicException
                ezkl.setup(str(work / "m.compiled"), str(work / "vk.key"), str(work / "pk.key"), srs_path=srs)
            continue
        assert ezkl.setup(str(work / "m.compiled"), str(work / "vk.key"), str(work / "pk.key"), srs_path=srs)
        ezkl.gen_witness(str(tmp_path / "in.json"), str(work / "m.compiled"), str(work / "w.json"),
                         vk_path=str(work / "vk.key"), srs_path=srs)
        ezkl.prove(str(work / "w.json"), str(work / "m.compiled"), str(work / "pk.key"),
                   proof_path=str(work / "p.json"), srs_path=srs)
        assert ezkl.verify(str(work / "p.json"), str(work / "s.json"), str(work / "vk.key"), srs_path=srs)


def test_layout_rule():
    """Fit the rows in one column set up to K_SPREAD, spread beyond it, never below the instance floor."""
    assert choose_layout(500, 28).logrows == 9
    assert choose_layout(3000, 28).logrows == 12
    assert choose_layout(68785, 0).logrows == 13 and "spread" in choose_layout(68785, 0).reason
    assert choose_layout(14761, 0).logrows == 13
    assert choose_layout(14761, 46080).logrows == 16 and "instances" in choose_layout(14761, 46080).reason
    assert choose_layout(22390, 1, 22390).logrows == 15 and "Poseidon" in choose_layout(22390, 1, 22390).reason


def test_instance_mapping_round_trip():
    st_ = statement(shift=5, x="hashed", adapter="fixed")
    w = random_witness(3)
    canonical = encode_instances(st_, public_values(st_, w))
    column = instances.to_ezkl(st_, canonical)
    assert len(column) == 1 and len(column[0]) == len(canonical)
    ys = [signed(felt_from_str(v)) for v in column[0][1:]]
    assert ys == (evaluate(st_, w).y_q * 32).reshape(-1).tolist()      # EZKL's y cells are y_q·2^shift
    assert instances.from_ezkl(st_, column) == canonical
    with pytest.raises(ValueError):
        instances.from_ezkl(st_, [column[0], column[0]])


# ----------------------------------------------------------------------------------------------------------------------
# Real prove + verify, one circuit per binding mode; the verify tamper matrix
# ----------------------------------------------------------------------------------------------------------------------

MODES = {
    "public-fixed-public": dict(x="public", adapter="fixed", y="public"),
    "polycommit-polycommit-polycommit": dict(x="polycommit", adapter="polycommit", y="polycommit"),
    "hashed-hashed-public": dict(x="hashed", adapter="hashed", y="public", shift=0),
    "public-unbound-polycommit": dict(x="public", adapter="unbound", y="polycommit"),
}


@pytest.fixture(scope="session")
def proven(backend):
    """Per mode: statement, witness, a proof, the anchor, a second call's proof, another adapter's anchor."""
    out = {}
    for name, kw in MODES.items():
        st_ = statement(**kw)
        w = random_witness(11)
        other_call = w.with_activations(random_witness(12).x_q)
        other_adapter = random_witness(13)
        progress: list[str] = []
        result = backend.prove(st_, w, progress=progress.append)
        out[name] = dict(statement=st_, witness=w, result=result, progress=progress, anchor=backend.anchor(st_, w),
                         other_call=backend.prove(st_, other_call),
                         other_anchor=backend.anchor(st_, other_adapter),
                         other_vk=backend.prepare(st_, other_adapter).vk_bytes)
    return out


@pytest.mark.parametrize("mode", list(MODES))
def test_prove_and_verify_each_binding_mode(backend, proven, mode):
    case = proven[mode]
    st_, w, result = case["statement"], case["witness"], case["result"]
    proof = result.proof
    assert result.public.equals(public_values(st_, w))
    assert list(proof.instances) == encode_instances(st_, result.public)
    assert proof.backend == "ezkl" and proof.zero_knowledge and proof.statement_id == st_.id
    assert case["progress"][-2:] == ["witness", "prove"] and set(result.timings) >= {"witness", "prove"}
    assert proof.meta["logrows"] == proof.settings["run_args"]["logrows"] <= 12
    assert proof.meta["num_inner_cols"] == 2 and proof.meta["proof_bytes"] > 0
    settings_in_vk, _ = decode_vk(proof.vk)
    assert settings_in_vk == proof.settings
    ok = backend.verify(st_, result.public, proof, anchor=case["anchor"])
    assert ok, ok.reason
    assert "pinned" in ok.reason
    assert ("UNBOUND" in ok.reason) == (mode == "public-unbound-polycommit")
    for hollow in (None, dataclasses.replace(case["anchor"], vk_hash=None)):    # the key it carries, not pinned
        verdict = backend.verify(st_, result.public, proof, anchor=hollow)
        assert not verdict and ("no adapter anchor" in verdict.reason or "pins no verifying key" in verdict.reason)


def _replace(proof: Proof, **changes) -> Proof:
    return dataclasses.replace(proof, **changes)


def _flip_proof_byte(proof: Proof) -> Proof:
    data = json.loads(proof.data)
    data["proof"][len(data["proof"]) // 2] ^= 1
    return _replace(proof, data=json.dumps(data).encode())


def _public_with(public: LoRAPublic, **changes) -> LoRAPublic:
    return dataclasses.replace(public, **changes)


def _bumped(a: np.ndarray, index=(0, 0), by=1) -> np.ndarray:
    out = a.copy()
    out[index] += by
    return out


@pytest.mark.parametrize("mode", list(MODES))
def test_verify_tamper_matrix(backend, proven, mode):
    """Each tampering is a falsy Verdict with its reason; nothing raises."""
    case = proven[mode]
    st_, result, anchor = case["statement"], case["result"], case["anchor"]
    public, proof = result.public, result.proof
    other_shape = statement(**{**MODES[mode], "d_out": 5})
    other_shift = dataclasses.replace(st_, shift=st_.shift + 1)
    garbage_vk = encode_vk(proof.settings, b"\x01" * 64)
    rows = {
        "proof bytes": (st_, public, _flip_proof_byte(proof), anchor, "EZKL rejected"),
        "proof not JSON": (st_, public, _replace(proof, data=b"\x00garbage"), anchor, "not EZKL proof JSON"),
        "y": (st_, _public_with(public, y_q=_bumped(public.y_q)), proof, anchor,
              "EZKL rejected" if st_.y_binding.value == "polycommit" else "instances differ"),
        "shift": (other_shift, public, proof, anchor, "proof is for statement"),
        "no anchor": (st_, public, proof, None, "no adapter anchor pinned"),
        "anchor without a vk hash": (st_, public, proof, dataclasses.replace(anchor, vk_hash=None),
                                     "pins no verifying key"),
        "proof nested deeply": (st_, public, _replace(proof, data=b"[" * 100_000 + b"]" * 100_000), anchor,
                                "nested 100000 levels deep"),
        "shape": (other_shape, LoRAPublic(y_q=np.zeros((2, 5), dtype=np.int64), x_q=public.x_q,
                                          x_digest=public.x_digest, adapter_digest=public.adapter_digest),
                  proof, anchor, "proof is for statement"),
        "another call's proof": (st_, public, case["other_call"].proof, anchor, None),
        "settings edited": (st_, public, _replace(proof, settings={**proof.settings, "num_rows": 1}), anchor,
                            "settings differ"),
        "vk hash": (st_, public, _replace(proof, vk_hash="0" * 64), anchor, "does not match its recorded hash"),
        "vk garbage with its hash": (st_, public, _replace(proof, vk=garbage_vk,
                                                           vk_hash=None),
                                     dataclasses.replace(anchor, vk_hash=sha256_hex(garbage_vk)), "EZKL rejected"),
    }
    if st_.adapter_binding.bound:
        rows["another adapter's anchor"] = (st_, public, proof, case["other_anchor"], None)
        rows["vk swapped for the other adapter's"] = (st_, public, _replace(
            proof, vk=case["other_vk"], vk_hash=sha256_hex(case["other_vk"])), case["other_anchor"], None)
    if public.x_q is not None:
        rows["x"] = (st_, _public_with(public, x_q=_bumped(public.x_q)), proof, anchor,
                     "EZKL rejected" if st_.x_binding.value == "polycommit" else "instances differ")
        rows["x out of int8"] = (st_, _public_with(public, x_q=_bumped(public.x_q, by=300)), proof, anchor,
                                 "public values do not fit")
    if public.x_digest is not None:
        rows["x digest"] = (st_, _public_with(public, x_digest=(public.x_digest + 1) % P), proof, anchor,
                            "instances differ")
    if public.adapter_digest is not None:
        rows["adapter digest"] = (st_, _public_with(public, adapter_digest=(public.adapter_digest + 1) % P), proof,
                                  anchor, "instances differ")
    if st_.adapter_binding.value == "polycommit":
        # the anchor pins only the other adapter's commitment; the proof claims it: EZKL's check must catch it
        lying = _replace(proof, commitments={"adapter": case["other_anchor"].commitment})
        # the verifier pins this circuit's key and the other adapter's commitment; the proof claims that commitment
        other_commitment = dataclasses.replace(anchor, commitment=case["other_anchor"].commitment)
        rows["proof claims the other adapter's commitment"] = (st_, public, lying, other_commitment,
                                                              "EZKL rejected")
        rows["anchor pins the vk but no adapter commitment"] = (st_, public, proof,
                                                               dataclasses.replace(anchor, commitment=None),
                                                               "pins no adapter commitment")
    if st_.adapter_binding.value == "hashed":
        rows["anchor pins the vk but no adapter digest"] = (st_, public, proof, dataclasses.replace(anchor, digest=None),
                                                           "pins no adapter digest")
    for name, (s, pub, prf, anc, reason) in rows.items():
        verdict = backend.verify(s, pub, prf, anchor=anc)
        assert not verdict, f"{name}: {verdict.reason}"
        if reason:
            assert reason in verdict.reason, f"{name}: {verdict.reason}"
    # reasons for the rows whose check depends on the mode
    other = backend.verify(st_, public, case["other_call"].proof, anchor=anchor).reason
    assert ("instances differ" if st_.x_binding.value != "polycommit" else "EZKL rejected") in other
    foreign = backend.verify(st_, public, proof, anchor=case["other_anchor"]).reason
    expected = {"fixed": "verifying key differs", "polycommit": "differs from the pinned one",
                "hashed": "differs from the pinned one", "unbound": None}[st_.adapter_binding.value]
    if expected:
        assert expected in foreign
    else:     # unbound: the anchor pins a circuit, not an adapter; EZKL's settings (and so the key) may still differ
        same_circuit = case["other_anchor"].vk_hash == anchor.vk_hash
        assert bool(backend.verify(st_, public, proof, anchor=case["other_anchor"])) == same_circuit


def test_a_proof_for_other_activations_fails_against_the_verifiers_commitment(backend, proven):
    """x and y polycommit: the verifier commits to ITS x and y; the prover's own commitments are overwritten."""
    case = proven["polycommit-polycommit-polycommit"]
    st_, other = case["statement"], case["other_call"]
    assert backend.verify(st_, other.public, other.proof, anchor=case["anchor"])
    mixed = _public_with(other.public, x_q=case["result"].public.x_q)           # x of call 1, y of call 2
    verdict = backend.verify(st_, mixed, other.proof, anchor=case["anchor"])
    assert not verdict and "EZKL rejected" in verdict.reason


def test_commitments_agree_with_the_py_ecc_reference(backend, proven):
    """The adapter commitment (anchor) and the verifier's x/y commitments equal backends.kzg's, computed from the SRS."""
    from backends import kzg

    case = proven["polycommit-polycommit-polycommit"]
    st_, w, proof = case["statement"], case["witness"], case["result"].proof
    k = proof.meta["logrows"]
    srs = kzg.read_srs(backend.cache / "srs" / f"dev-k{k}.srs")
    msg = graph.params_message(w.A_q, w.B_q, st_.shift)
    ours = list(kzg.commit(msg, srs, columns=kzg.circuit_columns(len(msg), k)))
    assert case["anchor"].commitment == "".join(kzg.to_transcript_bytes(p).hex() for p in ours)
    x_pts = kzg.commit(w.x_q.reshape(-1).tolist(), srs, columns=kzg.circuit_columns(w.x_q.size, k))
    y = (evaluate(st_, w).y_q * (1 << st_.shift)).reshape(-1).tolist()
    y_pts = kzg.commit(y, srs, columns=kzg.circuit_columns(len(y), k))
    assert kzg.proof_commitments(json.loads(proof.data), len(x_pts) + len(ours) + len(y_pts)) == \
        [*x_pts, *ours, *y_pts]


# ----------------------------------------------------------------------------------------------------------------------
# What EZKL's own constraints reject (the circuit, not our verifier's checks)
# ----------------------------------------------------------------------------------------------------------------------

def _evil_module(w: LoRAWitness, shift: int, *, offset: int = 0, hi: int = 127, a_override=None,
                 boolean_free: bool = True):
    """The statement's graph with one requantisation constant changed (or one weight): a dishonest prover's circuit.
    `boolean_free`: the graph of a fixed adapter (graph.requantise); else the Floor graph of the other bindings."""
    import torch

    A = np.asarray(w.A_q if a_override is None else a_override)

    class Evil(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.A = torch.nn.Parameter(torch.tensor(A, dtype=torch.float32), requires_grad=False)
            self.B = torch.nn.Parameter(torch.tensor(w.B_q, dtype=torch.float32), requires_grad=False)

        def forward(self, x):
            z = x @ self.A.t()
            u = graph.rounding_input(z, shift, lo=-128 if boolean_free else 0, offset=offset)
            if boolean_free:
                return graph.clamp_by_relu(graph.floor_by_rebase(u, shift), -128, hi) @ self.B.t()
            return torch.clamp(torch.floor(u), -128, hi) @ self.B.t()

    return Evil()


def _prove_with_honest_keys(prep, module, x_q, work: Path) -> bool:
    """Compile `module` with the honest settings, witness and prove it with the HONEST proving key, verify with the
    honest verifying key. Returns what verify says (False when EZKL raises)."""
    import io

    import torch

    work.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.zeros(x_q.shape),), buf, input_names=["x"], output_names=["y"],
                          opset_version=17, dynamo=False)
    (work / "m.onnx").write_bytes(buf.getvalue())
    settings_path = str(prep.circuit_dir / "settings.json")
    assert ezkl.compile_circuit(str(work / "m.onnx"), str(work / "m.compiled"), settings_path)
    (work / "in.json").write_text(json.dumps(graph.input_data(x_q, prep.statement.shift)))
    ezkl.gen_witness(str(work / "in.json"), str(work / "m.compiled"), str(work / "w.json"))
    assert ezkl.mock(str(work / "w.json"), str(work / "m.compiled"))      # consistent with ITS OWN circuit
    ezkl.prove(str(work / "w.json"), str(work / "m.compiled"), str(prep.keys_dir / "pk.key"),
               proof_path=str(work / "p.json"), srs_path=str(prep.srs_path))
    try:
        return ezkl.verify(str(work / "p.json"), settings_path, str(prep.keys_dir / "vk.key"),
                           srs_path=str(prep.srs_path))
    except RuntimeError as exc:
        assert "not satisfied" in str(exc)
        return False


@pytest.mark.parametrize("adapter", ["fixed", "unbound"])
def test_dishonest_requantisation_is_rejected_by_ezkls_constraints(backend, tmp_path, adapter):
    """A prover whose z_q rounds ties the other way (offset 2^(s-1) - 1) or clamps at 126 proves with the honest
    proving key: the proof fails the honest verifying key when the adapter is fixed. With an UNBOUND adapter every
    constant is private, the requantisation's too, and the dishonest proof VERIFIES (documented in the spec)."""
    st_, w = statement(adapter=adapter), tie_witness(3)
    trace = evaluate(st_, w)
    assert trace.clamped > 0 and 4 in np.abs(trace.z)               # exact ties and clamping are exercised
    prep = backend.prepare(st_, w)
    free = graph.boolean_free_requant(st_)
    assert free == (adapter == "fixed")
    assert _prove_with_honest_keys(prep, _evil_module(w, 3, boolean_free=free), w.x_q, tmp_path / "honest")  # control
    for name, kw in {"ties toward zero": dict(offset=-1), "clamp at 126": dict(hi=126)}.items():
        assert _prove_with_honest_keys(prep, _evil_module(w, 3, boolean_free=free, **kw), w.x_q, tmp_path / name) == \
            (adapter == "unbound"), name


def test_tampered_output_is_rejected_by_mock_and_by_prove_then_verify(backend, tmp_path):
    """The witness file's y moved by one z_q step (the y of z_q + 1 at a tie): mock names the failing constraint,
    and EZKL's default (unsafe) prover proves it anyway, but the proof does not verify."""
    st_, w = statement(), tie_witness(3)
    prep = backend.prepare(st_, w)
    (tmp_path / "in.json").write_text(json.dumps(graph.input_data(w.x_q, st_.shift)))
    compiled = str(prep.circuit_dir / "model.compiled")
    ezkl.gen_witness(str(tmp_path / "in.json"), compiled, str(tmp_path / "w.json"))
    wit = json.loads((tmp_path / "w.json").read_text())
    z_q = evaluate(st_, w).z_q.copy()
    z_q[0, 0] += 1                                                   # the tie 4/8 rounded to 2 instead of 1
    wrong_y = (z_q @ w.B_q.T) * (1 << st_.shift)
    wit["outputs"][0] = [felt_to_str(int(v) % P) for v in wrong_y.reshape(-1).tolist()]
    (tmp_path / "bad.json").write_text(json.dumps(wit))
    with pytest.raises(RuntimeError, match="verification failed"):
        ezkl.mock(str(tmp_path / "bad.json"), compiled)
    ezkl.prove(str(tmp_path / "bad.json"), compiled, str(prep.keys_dir / "pk.key"),
               proof_path=str(tmp_path / "p.json"), srs_path=str(prep.srs_path))
    with pytest.raises(RuntimeError, match="not satisfied"):
        ezkl.verify(str(tmp_path / "p.json"), str(prep.circuit_dir / "settings.json"), str(prep.keys_dir / "vk.key"),
                    srs_path=str(prep.srs_path))


def test_out_of_range_public_x_is_left_to_the_verifier(backend, proven, tmp_path):
    """With ignore_range_check_inputs_outputs EZKL's circuit accepts x = 200 (no range check on inputs): our verify
    rejects it before EZKL runs (check_public)."""
    case = proven["public-fixed-public"]
    st_, w = case["statement"], case["witness"]
    prep = backend.prepare(st_, w)
    x = w.x_q.copy()
    x[0, 0] = 200
    (tmp_path / "in.json").write_text(json.dumps(graph.input_data(x, st_.shift)))
    compiled = str(prep.circuit_dir / "model.compiled")
    ezkl.gen_witness(str(tmp_path / "in.json"), compiled, str(tmp_path / "w.json"))
    assert ezkl.mock(str(tmp_path / "w.json"), compiled)
    public = _public_with(case["result"].public, x_q=x)
    verdict = backend.verify(st_, public, case["result"].proof, anchor=case["anchor"])
    assert not verdict and "public values do not fit" in verdict.reason


def test_out_of_range_weight_gives_another_verifying_key(backend, proven, tmp_path):
    """A fixed adapter with a weight of 9 (not int4) is another circuit: its proofs fail the pinned anchor."""
    case = proven["public-fixed-public"]
    st_, w = case["statement"], case["witness"]
    prep = backend.prepare(st_, w)
    A = w.A_q.copy()
    A[0, 0] = 9
    with pytest.raises(ValueError, match="A_q must lie in"):
        st_.check_witness(LoRAWitness(A_q=A, B_q=w.B_q, x_q=w.x_q))
    assert not _prove_with_honest_keys(prep, _evil_module(w, st_.shift, a_override=A), w.x_q, tmp_path)


# ----------------------------------------------------------------------------------------------------------------------
# Cache, SRS, unsupported statements
# ----------------------------------------------------------------------------------------------------------------------

def test_cache_layout_and_corruption(srs_dir, tmp_path):
    st_, w = statement(), random_witness(21)
    be = EzklBackend(cache_dir=fresh_cache(srs_dir, tmp_path))
    prep = be.prepare(st_, w)
    assert prep.circuit_dir.parent == tmp_path / "ezkl" / "circuits" / st_.id
    assert {p.name for p in prep.circuit_dir.iterdir()} >= {"model.onnx", "settings.json", "model.compiled",
                                                            "manifest.json"}
    assert (prep.keys_dir / "pk.key").exists() and prep.keys_dir.parent == prep.circuit_dir
    again = be.prepare(st_, w)                                                 # warm: read, not rebuilt
    assert again.vk_bytes == prep.vk_bytes and again.timings.get("settings") is None
    compiled = prep.circuit_dir / "model.compiled"
    data = bytearray(compiled.read_bytes())
    data[len(data) // 2] ^= 0xFF
    compiled.write_bytes(bytes(data))
    with pytest.raises(CacheError, match="model.compiled is corrupted"):
        EzklBackend(cache_dir=tmp_path).prepare(st_, w)
    assert not list(prep.circuit_dir.parent.glob(".*tmp-*"))


def _prepare_in_child(cache: str, seed: int, queue) -> None:
    be = EzklBackend(cache_dir=cache)
    prep = be.prepare(statement(), random_witness(seed))
    queue.put(prep.vk_bytes.hex())


def test_two_processes_prepare_the_same_key(srs_dir, tmp_path):
    """Concurrent preparation of one (statement, adapter): both succeed with the same key, built once."""
    fresh_cache(srs_dir, tmp_path)
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_prepare_in_child, args=(str(tmp_path), 31, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
        assert p.exitcode == 0
    keys = [queue.get(timeout=5), queue.get(timeout=5)]
    assert keys[0] == keys[1]
    (entry,) = [p for p in (tmp_path / "ezkl" / "circuits" / statement().id).iterdir() if p.is_dir()]
    assert len([p for p in entry.glob("keys-*") if p.is_dir()]) == 1 and not list(entry.parent.glob(".*tmp-*"))


def test_verifying_key_is_reproducible_from_the_same_srs(ezkl_cache, tmp_path):
    """Setup is deterministic: the same cached circuit (canonical settings) and SRS file in another cache → the same
    verifying key."""
    st_, w = statement(), random_witness(41)
    first = EzklBackend(cache_dir=ezkl_cache).prepare(st_, w)
    copy = tmp_path / "ezkl" / "circuits" / st_.id / first.circuit_dir.name
    shutil.copytree(first.circuit_dir, copy, ignore=shutil.ignore_patterns("keys-*"))
    again = EzklBackend(cache_dir=tmp_path, srs=first.srs_path).prepare(st_, w)
    assert again.keys_dir != first.keys_dir.parent and again.vk_bytes == first.vk_bytes


def test_check_mode_shapes_no_constraint(backend, tmp_path):
    """settings.CHECK_MODE's claim: the circuit compiled with check_mode "unsafe" has the verifying key of the pinned
    ("safe") one, and its proof verifies under the pinned settings and key; a tampered witness proven with it does not."""
    st_, w = statement(), tie_witness(3)
    prep = backend.prepare(st_, w)
    safe_settings = json.loads((prep.circuit_dir / "settings.json").read_text())
    assert safe_settings["run_args"]["check_mode"] == "SAFE"
    unsafe = json.loads(json.dumps(safe_settings))
    unsafe["run_args"]["check_mode"] = "UNSAFE"
    (tmp_path / "s.json").write_text(json.dumps(unsafe))
    assert ezkl.compile_circuit(str(prep.circuit_dir / "model.onnx"), str(tmp_path / "m.compiled"),
                                str(tmp_path / "s.json"))
    assert ezkl.setup(str(tmp_path / "m.compiled"), str(tmp_path / "vk.key"), str(tmp_path / "pk.key"),
                      srs_path=str(prep.srs_path))
    assert (tmp_path / "vk.key").read_bytes() == (prep.keys_dir / "vk.key").read_bytes()
    (tmp_path / "in.json").write_text(json.dumps(graph.input_data(w.x_q, st_.shift)))
    ezkl.gen_witness(str(tmp_path / "in.json"), str(tmp_path / "m.compiled"), str(tmp_path / "w.json"))
    safe = (str(prep.circuit_dir / "settings.json"), str(prep.keys_dir / "vk.key"))
    ezkl.prove(str(tmp_path / "w.json"), str(tmp_path / "m.compiled"), str(tmp_path / "pk.key"),
               proof_path=str(tmp_path / "p.json"), srs_path=str(prep.srs_path))
    assert ezkl.verify(str(tmp_path / "p.json"), *safe, srs_path=str(prep.srs_path))
    wit = json.loads((tmp_path / "w.json").read_text())
    wit["outputs"][0][0] = felt_to_str((felt_from_str(wit["outputs"][0][0]) + (1 << st_.shift)) % P)
    (tmp_path / "bad.json").write_text(json.dumps(wit))
    ezkl.prove(str(tmp_path / "bad.json"), str(tmp_path / "m.compiled"), str(tmp_path / "pk.key"),
               proof_path=str(tmp_path / "bad-p.json"), srs_path=str(prep.srs_path))
    with pytest.raises(RuntimeError, match="not satisfied"):
        ezkl.verify(str(tmp_path / "bad-p.json"), *safe, srs_path=str(prep.srs_path))


def test_srs_files(ezkl_cache, tmp_path, backend, proven):
    bad = tmp_path / "bad.srs"
    bad.write_bytes(b"\x0d\x00\x00\x00" + b"\x00" * 100)
    with pytest.raises(ValueError, match="bytes; an SRS for k = 13"):
        EzklBackend(cache_dir=tmp_path, srs=bad)
    with pytest.raises(ValueError, match="cannot be read"):
        EzklBackend(cache_dir=tmp_path, srs=tmp_path / "missing.srs")
    small = tmp_path / "k9.srs"
    ezkl.gen_srs(str(small), 9)
    assert srs_header_k(small) == 9
    be = EzklBackend(cache_dir=tmp_path, srs=small)
    big = statement(d_in=8, d_out=60, tokens=8)                       # 544 public instances need k = 10
    assert not be.supports(big) and "k = 9" in be.supports(big).reason
    with pytest.raises(ValueError, match="k = 9; this circuit needs k = 1"):
        be.prepare(statement(d_in=40, d_out=30, rank=6, tokens=2), random_witness(5, 40, 30, 6, 2))
    # a verifier without the prover's SRS says so
    case = proven["public-fixed-public"]
    verdict = EzklBackend(cache_dir=tmp_path / "empty").verify(case["statement"], case["result"].public,
                                                               case["result"].proof, anchor=case["anchor"])
    assert not verdict and "no SRS" in verdict.reason
    # a real SRS larger than the circuit: EZKL downsizes it; polycommit commitments go through backends.kzg
    larger = tmp_path / "k10.srs"
    ezkl.gen_srs(str(larger), 10)
    be = EzklBackend(cache_dir=tmp_path / "larger", srs=larger)
    st_ = statement(d_in=4, d_out=3, rank=1, tokens=1, x="polycommit", adapter="fixed", y="polycommit")
    w = random_witness(51, 4, 3, 1, 1)
    result = be.prove(st_, w)
    assert result.proof.meta["logrows"] == 9
    pinned = be.anchor(st_, w)
    assert be.verify(st_, result.public, result.proof, anchor=pinned)
    assert not be.verify(st_, _public_with(result.public, y_q=_bumped(result.public.y_q)), result.proof, anchor=pinned)


def test_hashed_adapters_are_supported_at_every_shift(backend):
    assert backend.supports(statement(adapter="hashed", shift=2))


def test_unsupported_statements(backend):
    for kw, reason in [(dict(x="hashed-packed"), "only in zkref"), (dict(adapter="hashed-packed"), "only in zkref"),
                       (dict(shift=17), "shift 17"),
                       (dict(d_in=4096, d_out=4096, rank=1, adapter="hashed"), "hashing the adapter means"),
                       (dict(d_in=2048, tokens=2, x="hashed"), "hashing x means")]:
        st_ = statement(**kw)
        support = backend.supports(st_)
        assert not support and reason in support.reason, (kw, support.reason)
        with pytest.raises(ValueError, match="cannot prove"):
            backend.prove(st_, random_witness(1, st_.shape.d_in, st_.shape.d_out, st_.shape.rank, st_.shape.tokens))


def test_decompositions_beyond_fifteen_digits_are_refused_before_ezkl_overflows(backend):
    """A base-2 Floor of a 16-digit range: EZKL refuses decomp_base^legs beyond an i128 (measured); so do we, early."""
    shape = dict(d_in=1, d_out=1, rank=1, tokens=1, adapter="unbound")       # the Floor graph
    fits = dataclasses.replace(statement(shift=1, **shape), z_bits=14)        # 15-bit values: 15 legs
    too_wide = dataclasses.replace(statement(shift=1, **shape), z_bits=15)    # 16-bit values: 16 legs
    assert backend.supports(fits)
    support = backend.supports(too_wide)
    assert not support and "16 digits > 15" in support.reason
    assert backend.supports(dataclasses.replace(too_wide, shift=2))           # a larger shift fits


@pytest.mark.parametrize("adapter,y", [("fixed", "public"), ("hashed", "polycommit")])
def test_int8_weights_prove_and_equal_the_semantics(backend, adapter, y):
    rng = np.random.default_rng(88)
    w = LoRAWitness(A_q=rng.integers(-128, 128, (3, 8)), B_q=rng.integers(-128, 128, (6, 3)),
                    x_q=rng.integers(-128, 128, (2, 8)))
    st_ = dataclasses.replace(statement(shift=9, adapter=adapter, y=y), weight_bits=8)
    result = backend.prove(st_, w)
    assert result.public.y_q.tolist() == evaluate(st_, w).y_q.tolist()
    if adapter == "hashed":
        assert result.public.adapter_digest == adapter_digest(w.A_q, w.B_q, shift=9, packed=False, weight_bits=8)
    pinned = backend.anchor(st_, w)
    assert backend.verify(st_, result.public, result.proof, anchor=pinned)
    int4 = statement(shift=9, adapter=adapter, y=y)
    assert not backend.verify(int4, result.public, result.proof, anchor=pinned)  # another statement: another id
