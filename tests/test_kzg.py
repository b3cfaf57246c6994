"""backends.kzg: EZKL's polycommit KZG commitment, recomputed with py_ecc and checked against ezkl 23.

Without ezkl: MSM, encodings, the column layout and the commitment itself against an SRS built here from a known τ
(so a commitment must equal p(τ)·G). With ezkl (marked ``ezkl``): ``kzg_commit``, the witness file, the proof
transcript, prove/verify against commitments the verifier computed, and two EZKL quirks (an SRS larger than logrows,
a tensor of 2^k - 7 values).
"""
from __future__ import annotations

import json
import shutil

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backends import kzg
from backends.kzg import G1Point
from zkref.primitives.field import P, felt_from_str, felt_to_str

bn = kzg.bn
K = 8                                   # circuit logrows for the EZKL tests: 256 rows, 250 usable per column
N_COL = (1 << K) - kzg.EZKL_UNUSABLE_ROWS


def mul_g(s: int) -> G1Point:
    return G1Point.from_py_ecc(bn.multiply(bn.G1, s % P))


# ----------------------------------------------------------------------------------------------------------------------
# Pure-Python checks
# ----------------------------------------------------------------------------------------------------------------------

scalars = st.one_of(st.integers(-300, 300), st.integers(0, P - 1), st.sampled_from([0, 1, P - 1, P // 2, P // 2 + 1]))


@settings(max_examples=25)
@given(st.lists(st.tuples(scalars, st.integers(1, 10**6)), max_size=12))
def test_msm_equals_scalar_sum(terms):
    """Σ s_i·(a_i·G) = (Σ s_i·a_i mod p)·G: the bucket MSM, signed digits included."""
    points = [mul_g(a) for _, a in terms]
    assert kzg.msm([s for s, _ in terms], points) == mul_g(sum(s * a for s, a in terms))


@settings(max_examples=25)
@given(st.integers(0, P - 1))
def test_point_encodings_round_trip(s):
    pt = mul_g(s)
    assert kzg.from_compressed(kzg.to_compressed(pt)) == pt
    assert kzg.from_witness_hex(kzg.to_witness_hex(pt)) == pt
    assert kzg.from_transcript_bytes(kzg.to_transcript_bytes(pt)) == pt

    class PyG1Affine:                   # the shape ezkl.kzg_commit returns
        x, y = kzg.to_ezkl_coordinates(pt)
    assert kzg.from_ezkl_point(PyG1Affine) == pt


def test_encoding_details_and_rejections():
    g = G1Point.generator()
    assert kzg.to_compressed(g) == (1).to_bytes(32, "little")                  # y = 2 is even: no sign bit
    assert kzg.to_compressed(G1Point(1, kzg.Q - 2))[-1] == 0x80                 # -G: y odd, sign bit set
    assert kzg.to_transcript_bytes(g) == (1).to_bytes(32, "big") + (2).to_bytes(32, "big")
    assert kzg.from_compressed(bytes(31) + b"\x40") == G1Point.identity()
    for bad in (bytes(32),                                  # x = 0 without the identity flag
                b"\x01" + bytes(30) + b"\x40",              # identity flag with x != 0
                bytes(31) + b"\xc0",                        # identity flag with the sign bit
                kzg.Q.to_bytes(32, "little"),               # x >= Q
                (4).to_bytes(32, "little"),                 # 4^3 + 3 = 67 is not a square mod Q
                bytes(31)):
        with pytest.raises(ValueError):
            kzg.from_compressed(bad)
    with pytest.raises(ValueError):
        G1Point(1, 3)                                       # not on the curve


@settings(max_examples=10)
@given(st.integers(0, 4).flatmap(lambda k: st.lists(st.integers(0, P - 1), min_size=1 << k, max_size=1 << k)))
def test_interpolate_matches_evaluation(evals):
    """interpolate gives the polynomial taking evals[j] at ω^j, ω = domain_root(k)."""
    k = len(evals).bit_length() - 1
    w = kzg.domain_root(k)
    coeffs = kzg.interpolate(evals)
    for j, e in enumerate(evals):
        x = pow(w, j, P)
        assert sum(c * pow(x, i, P) for i, c in enumerate(coeffs)) % P == e


def test_domain_root_is_primitive():
    for k in (1, 4, 8, 12, 28):
        w = kzg.domain_root(k)
        assert pow(w, 1 << k, P) == 1 and pow(w, 1 << (k - 1), P) == P - 1


def test_column_layout():
    k, u = 4, 6                                             # 16 rows, 10 usable
    cols = kzg.column_evaluations([-1, 2, 3], k, u)
    assert cols == [[P - 1, 2, 3] + [0] * 7 + [1] * 6]
    cols = kzg.column_evaluations(list(range(1, 11)), k, u)     # exactly one column full: a padding-only column follows
    assert cols == [list(range(1, 11)) + [1] * 6, [0] * 10 + [1] * 6]
    assert [kzg.witness_columns(n, k, u) for n in (0, 9, 10, 11, 19, 20)] == [1, 1, 2, 2, 2, 3]
    assert [kzg.circuit_columns(n, k, u) for n in (0, 8, 9, 10, 11, 17, 18, 19, 20)] == [1, 1, 2, 2, 2, 2, 3, 3, 3]
    with pytest.raises(ValueError):
        kzg.column_evaluations(list(range(11)), k, u, columns=1)


def insecure_srs(k: int, tau: int) -> kzg.Srs:
    """An SRS from a known τ, built independently of halo2's formulas: L_j(τ) = ω^j (τ^n - 1) / (n (τ - ω^j))."""
    n, w = 1 << k, kzg.domain_root(k)
    lag = [pow(w, j, P) * (pow(tau, n, P) - 1) * pow(n * (tau - pow(w, j, P)), -1, P) % P for j in range(n)]
    g2 = lambda s: bn.normalize(bn.multiply(bn.G2, s))   # noqa: E731
    to_g2 = lambda pt: kzg.G2Point(tuple(int(c) for c in pt[0].coeffs), tuple(int(c) for c in pt[1].coeffs))  # noqa: E731
    return kzg.Srs(k=k, g=tuple(mul_g(pow(tau, i, P)) for i in range(n)), g_lagrange=tuple(mul_g(v) for v in lag),
                   g2=to_g2(g2(1)), s_g2=to_g2(g2(tau)))


@pytest.fixture(scope="module")
def known_tau_srs(tmp_path_factory):
    """A k=3 SRS with τ = 123456789, written in the RawBytes layout and read back."""
    tau, srs = 123456789, insecure_srs(3, 123456789)
    path = tmp_path_factory.mktemp("kzg-known-tau") / "k3.srs"
    path.write_bytes(kzg.srs_to_bytes(srs))
    read = kzg.read_srs(path)
    assert (read.k, read.g, read.g_lagrange, read.g2, read.s_g2) == (srs.k, srs.g, srs.g_lagrange, srs.g2, srs.s_g2)
    yield tau, read, path
    shutil.rmtree(path.parent, ignore_errors=True)


@settings(max_examples=15)
@given(st.lists(st.one_of(st.integers(-128, 127), st.integers(0, P - 1)), max_size=6), st.integers(1, 3))
def test_commitment_is_column_polynomial_at_tau(known_tau_srs, values, u):
    """commit = Σ_j e_j·L_j(τ)·G where e is the column; with τ known that is (Σ_j e_j·L_j(τ))·G."""
    tau, srs, _ = known_tau_srs
    n, w = 8, kzg.domain_root(3)
    lag = [pow(w, j, P) * (pow(tau, n, P) - 1) * pow(n * (tau - pow(w, j, P)), -1, P) % P for j in range(n)]
    expected = tuple(mul_g(sum(e * l for e, l in zip(col, lag))) for col in kzg.column_evaluations(values, 3, u))
    assert kzg.commit(values, srs, unusable_rows=u) == expected
    assert kzg.commit_monomial(values, srs, unusable_rows=u) == expected


def test_srs_checks(known_tau_srs):
    _, srs, path = known_tau_srs
    kzg.check_srs(srs, seed=1)
    assert kzg.lagrange_basis(srs, 2) == insecure_srs(2, 123456789).g_lagrange  # derived from g
    swapped = kzg.Srs(k=srs.k, g=srs.g, g_lagrange=(srs.g_lagrange[1], srs.g_lagrange[0]) + srs.g_lagrange[2:],
                      g2=srs.g2, s_g2=srs.s_g2)
    with pytest.raises(ValueError, match="Lagrange"):
        kzg.check_srs(swapped, seed=1)
    other_tau = insecure_srs(3, 99)
    with pytest.raises(ValueError, match="powers"):
        kzg.check_srs(kzg.Srs(k=3, g=srs.g, g_lagrange=srs.g_lagrange, g2=srs.g2, s_g2=other_tau.s_g2), seed=1)


def test_read_srs_rejects_malformed_files(known_tau_srs, tmp_path):
    _, _, path = known_tau_srs
    data = path.read_bytes()
    cases = {
        "truncated": data[:-1],
        "extra byte": data + b"\0",
        "k too large": (40).to_bytes(4, "little") + data[4:],   # rejected before any allocation
        "k mismatch": (4).to_bytes(4, "little") + data[4:],
        "header only": data[:3],
        "point off curve": data[:4] + bytes(63) + b"\x01" + data[68:],
    }
    for name, blob in cases.items():
        bad = tmp_path / name.replace(" ", "_")
        bad.write_bytes(blob)
        with pytest.raises(ValueError):
            kzg.read_srs(bad)
    with pytest.raises(ValueError):
        kzg.read_srs(path, max_k=2)


# ----------------------------------------------------------------------------------------------------------------------
# Against EZKL 23
# ----------------------------------------------------------------------------------------------------------------------

def _export_matmul(path, d_in: int, d_out: int, seed: int):
    """ONNX of y = x @ W with integer weights; returns (W row-major as ints, a sample x)."""
    torch = pytest.importorskip("torch")
    gen = torch.Generator().manual_seed(seed)

    class MatMul(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.W = torch.nn.Parameter(torch.randint(-8, 8, (d_in, d_out), generator=gen).float())

        def forward(self, x):
            return x @ self.W

    model = MatMul()
    x = torch.randint(-8, 8, (1, d_in), generator=gen).float()
    torch.onnx.export(model, (x,), str(path), input_names=["x"], output_names=["y"], opset_version=17, dynamo=False)
    return [int(v) for v in model.W.detach().flatten().tolist()], [int(v) for v in x.flatten().tolist()]


def _polycommit_settings(ezkl, onnx_path, settings_path, logrows: int) -> None:
    ra = ezkl.PyRunArgs()
    ra.input_visibility = ra.output_visibility = ra.param_visibility = "polycommit"
    ra.input_scale = ra.param_scale = 0
    ra.scale_rebase_multiplier = 1
    ra.logrows = logrows
    ra.decomp_base, ra.decomp_legs = 256, 4
    assert ezkl.gen_settings(str(onnx_path), str(settings_path), py_run_args=ra)


class Circuit:
    """A compiled polycommit circuit with its keys, SRS and helpers to witness and prove."""

    def __init__(self, ezkl, root, d_in, d_out, logrows, srs_path, seed=0):
        self.ezkl, self.root, self.srs_path = ezkl, root, str(srs_path)
        root.mkdir(parents=True, exist_ok=True)
        self.onnx, self.settings = root / "m.onnx", str(root / "settings.json")
        self.compiled, self.vk, self.pk = str(root / "m.compiled"), str(root / "vk.key"), str(root / "pk.key")
        self.weights, self.x = _export_matmul(self.onnx, d_in, d_out, seed)
        _polycommit_settings(ezkl, self.onnx, self.settings, logrows)
        assert ezkl.compile_circuit(str(self.onnx), self.compiled, self.settings)
        assert ezkl.setup(self.compiled, self.vk, self.pk, srs_path=self.srs_path)

    def witness(self, x, name="wit"):
        data, out = self.root / f"{name}-in.json", self.root / f"{name}.json"
        data.write_text(json.dumps({"input_data": [list(x)]}))
        self.ezkl.gen_witness(str(data), self.compiled, str(out), vk_path=self.vk, srs_path=self.srs_path)
        return out, json.loads(out.read_text())

    def prove(self, witness_path, name="proof"):
        out = self.root / f"{name}.json"
        self.ezkl.prove(str(witness_path), self.compiled, self.pk, proof_path=str(out), srs_path=self.srs_path)
        return out, json.loads(out.read_text())

    def verify(self, proof) -> bool:
        path = self.root / "to-verify.json"
        path.write_text(json.dumps(proof))
        return self.ezkl.verify(str(path), self.settings, self.vk, srs_path=self.srs_path)


@pytest.fixture(scope="session")
def ezkl_env(tmp_path_factory):
    """One gen_srs(k=8) SRS (test-only: gen_srs knows τ), read with read_srs, and a d=6 polycommit circuit."""
    ezkl = pytest.importorskip("ezkl")
    root = tmp_path_factory.mktemp("kzg-ezkl")
    srs_path = root / f"k{K}.srs"
    ezkl.gen_srs(str(srs_path), K)
    circuit = Circuit(ezkl, root / "d6", d_in=6, d_out=6, logrows=K, srs_path=srs_path)
    yield ezkl, kzg.read_srs(srs_path), circuit
    shutil.rmtree(root, ignore_errors=True)


def _kzg_commit(ezkl, circuit, values):
    out = ezkl.kzg_commit([felt_to_str(v % P) for v in values], circuit.vk, circuit.settings, circuit.srs_path)
    return tuple(kzg.from_ezkl_point(p) for p in out)


@pytest.mark.ezkl
def test_gen_srs_file_is_consistent(ezkl_env):
    _, srs, _ = ezkl_env
    assert srs.k == K and srs.g[0] == G1Point.generator()
    kzg.check_srs(srs)


@pytest.mark.ezkl
@pytest.mark.parametrize("values", [
    [], [0], [1], [-1], [-128, 127, 0, 5], [P - 1, P // 2, 2**200],
    list(range(-N_COL // 2, N_COL - N_COL // 2)),          # exactly one full column: EZKL adds a padding column
    list(range(N_COL - 1)), list(range(N_COL + 1)), [(-1) ** i * i for i in range(2 * N_COL + 3)],
], ids=["empty", "zero", "one", "minus-one", "int8", "full-size", "n", "n-1", "n+1", "2n+3"])
def test_commit_equals_kzg_commit_vectors(ezkl_env, values):
    ezkl, srs, circuit = ezkl_env
    ours = kzg.commit(values, srs)
    assert ours == _kzg_commit(ezkl, circuit, values)
    assert len(ours) == kzg.witness_columns(len(values), K)


@pytest.mark.ezkl
@settings(max_examples=12)
@given(st.integers(0, 2 * N_COL + 10).flatmap(
           lambda n: st.lists(st.integers(-2**15, 2**15), min_size=n, max_size=n)),
       st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, P - 1)), max_size=3))
def test_commit_equals_kzg_commit_random(ezkl_env, values, big):
    """Random signed vectors over one to three columns, with a few full-size field elements mixed in."""
    ezkl, srs, circuit = ezkl_env
    for i, v in big:
        if values:
            values[i % len(values)] = v
    assert kzg.commit(values, srs) == _kzg_commit(ezkl, circuit, values)


@pytest.mark.ezkl
def test_witness_and_proof_carry_our_commitments(ezkl_env):
    """processed_{inputs,params,outputs}.polycommit and the proof's first points are our commitments to x, W, y."""
    _, srs, circuit = ezkl_env
    wit_path, wit = circuit.witness(circuit.x)
    y = [felt_from_str(s) for s in wit["outputs"][0]]
    assert y == [sum(xi * circuit.weights[i * 6 + j] for i, xi in enumerate(circuit.x)) % P for j in range(6)]
    ours = {"processed_inputs": [list(kzg.commit(circuit.x, srs))],
            "processed_params": [list(kzg.commit(circuit.weights, srs))],    # all constants, graph order, row-major
            "processed_outputs": [list(kzg.commit(y, srs))]}
    assert kzg.witness_commitments(wit) == ours
    assert wit["processed_inputs"]["polycommit"] == [[kzg.to_witness_hex(p) for p in ours["processed_inputs"][0]]]
    _, proof = circuit.prove(wit_path)
    assert proof["instances"] == [[]]                       # nothing public: everything is committed
    flat = kzg.ordered_commitments(*ours.values())
    assert kzg.proof_commitments(proof, len(flat)) == flat
    assert proof["split"] == {"start": 2, "end": 3}         # where the output commitments sit among them


@pytest.mark.ezkl
def test_verifier_checks_proof_against_its_own_commitments(ezkl_env, tmp_path):
    """Swapping in the verifier's commitments keeps an honest proof valid and breaks it for any other values."""
    ezkl, srs, circuit = ezkl_env
    wit_path, wit = circuit.witness(circuit.x, name="honest")
    proof_path, proof = circuit.prove(wit_path, name="honest")
    y = [felt_from_str(s) for s in wit["outputs"][0]]
    x2 = list(circuit.x)
    x2[0] += 1
    w2 = list(circuit.weights)
    w2[-1] -= 1
    y2 = list(y)
    y2[3] = (y2[3] + 1) % P
    cx, cw, cy = kzg.commit(circuit.x, srs), kzg.commit(circuit.weights, srs), kzg.commit(y, srs)

    assert circuit.verify(proof)
    assert circuit.verify(kzg.with_commitments(proof, kzg.ordered_commitments([cx], [cw], [cy])))
    for wrong in ([kzg.commit(x2, srs)], [cw], [cy]), ([cx], [kzg.commit(w2, srs)], [cy]), \
                 ([cx], [cw], [kzg.commit(y2, srs)]):
        with pytest.raises(RuntimeError, match="not satisfied"):
            circuit.verify(kzg.with_commitments(proof, kzg.ordered_commitments(*wrong)))

    # The same through EZKL's own tool: a witness file holding only the verifier's commitments.
    for commitments, ok in ((([cx], [cw], [cy])), True), ((([kzg.commit(x2, srs)], [cw], [cy])), False):
        stub, swapped = tmp_path / f"stub-{ok}.json", tmp_path / f"swapped-{ok}.json"
        stub.write_text(json.dumps(kzg.witness_stub(*commitments)))
        shutil.copy(proof_path, swapped)
        ezkl.swap_proof_commitments(str(swapped), str(stub))
        swapped_proof = json.loads(swapped.read_text())
        assert swapped_proof["proof"] == kzg.with_commitments(proof, kzg.ordered_commitments(*commitments))["proof"]
        if ok:
            assert circuit.verify(swapped_proof)
        else:
            with pytest.raises(RuntimeError, match="not satisfied"):
                circuit.verify(swapped_proof)


@pytest.mark.ezkl
def test_larger_srs_kzg_commit_differs_from_witness(ezkl_env):
    """With an SRS of k > logrows, gen_witness and prove downsize it but kzg_commit commits over the SRS's own
    2^k domain, so kzg_commit no longer matches the witness or the proof; ``commit(..., k=logrows)`` does."""
    ezkl, _, circuit = ezkl_env
    big_path = circuit.root.parent / f"k{K + 1}.srs"
    ezkl.gen_srs(str(big_path), K + 1)
    big = Circuit(ezkl, circuit.root.parent / "d6-bigsrs", d_in=6, d_out=6, logrows=K, srs_path=big_path)
    wit_path, wit = big.witness(big.x)
    srs9 = kzg.read_srs(big_path)
    in_witness = kzg.witness_commitments(wit)["processed_inputs"][0]
    from_kzg_commit = _kzg_commit(ezkl, big, big.x)
    assert list(from_kzg_commit) != in_witness
    assert from_kzg_commit == kzg.commit(big.x, srs9)               # k = 9: what kzg_commit computes
    assert list(kzg.commit(big.x, srs9, k=K)) == in_witness         # k = 8 via the monomial points
    _, proof = big.prove(wit_path)
    assert kzg.proof_commitments(proof, 1) == in_witness


@pytest.mark.ezkl
@pytest.mark.slow
def test_length_n_minus_1_proof_carries_an_extra_column(ezkl_env):
    """A tensor of exactly n - 1 = 2^k - 7 values: the circuit allocates two columns (room for a duplicated cell),
    the witness and kzg_commit list one. The proof is valid, but swapping in the honest witness's commitments
    breaks it; commitments in the circuit's layout (``circuit_columns``) match the proof."""
    ezkl, srs, base = ezkl_env
    L = N_COL - 1
    circuit = Circuit(ezkl, base.root.parent / "n-minus-1", d_in=L, d_out=1, logrows=K, srs_path=base.srs_path,
                      seed=1)
    wit_path, wit = circuit.witness(circuit.x)
    proof_path, proof = circuit.prove(wit_path)
    assert circuit.verify(proof)
    y = [felt_from_str(s) for s in wit["outputs"][0]]
    assert [len(t[0]) for t in kzg.witness_commitments(wit).values()] == [1, 1, 1]
    assert [kzg.circuit_columns(n, K) for n in (L, L, 1)] == [2, 2, 1]
    in_proof = kzg.ordered_commitments(*(
        [kzg.commit(v, srs, columns=kzg.circuit_columns(len(v), K))] for v in (circuit.x, circuit.weights, y)))
    assert len(in_proof) == 5 and kzg.proof_commitments(proof, 5) == in_proof
    assert circuit.verify(kzg.with_commitments(proof, in_proof))
    ezkl.swap_proof_commitments(str(proof_path), str(wit_path))   # EZKL's own swap with the honest witness...
    with pytest.raises(RuntimeError, match="not satisfied"):      # ...misaligns and the honest proof fails
        circuit.verify(json.loads(proof_path.read_text()))
