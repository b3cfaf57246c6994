"""The EZKL graph's packed outputs (backends/ezkl/graph.py, `OutputPacking`): the packing is the formula it states, it
is injective on every y_q within the statement's bounds, its constants are exact in EZKL's float32 and i128, it is
chosen only where it is sound and measured, and EZKL's witness and proofs carry it (prove, verify, and a y that
differs in one value is refused).
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backends.ezkl import graph
from backends.ezkl.graph import F32_EXACT, MAX_CELL_BITS, MAX_CONSTANT_BITS, OutputPacking, output_packing
from zkref.lora.statement import LoRAShape, LoRAStatement, LoRAWitness, evaluate
from zkref.primitives.field import P


def statement(d_in=16, d_out=12, rank=3, tokens=5, shift=4, *, y="polycommit", adapter="fixed",
              weight_bits=4) -> LoRAStatement:
    return LoRAStatement(shape=LoRAShape(d_in=d_in, d_out=d_out, rank=rank, tokens=tokens), shift=shift,
                         x_binding="polycommit", adapter_binding=adapter, y_binding=y, weight_bits=weight_bits)


def reference_cells(packing: OutputPacking, y_q: np.ndarray, shift: int) -> list[int]:
    """The docstring's formula, term by term."""
    t, n = y_q.shape
    groups, cols = packing.shape((t, n))
    out = []
    for g in range(groups):
        for c in range(cols):
            v = 0
            for i in range(packing.tokens):
                for j in range(packing.cols):
                    if g * packing.tokens + i < t and c * packing.cols + j < n:
                        v += int(y_q[g * packing.tokens + i, c * packing.cols + j]) << (
                            packing.digit_bits * (j + packing.cols * i))
            out.append(v << shift)
    return out


statements = st.builds(statement, d_in=st.integers(1, 40), d_out=st.integers(1, 40), rank=st.integers(1, 16),
                       tokens=st.integers(1, 40), shift=st.integers(0, 16), weight_bits=st.sampled_from([4, 8]))


@settings(max_examples=60, deadline=None)
@given(statements, st.integers(0, 2**32 - 1))
def test_cells_are_the_formula_and_stay_within_the_field(stmt, seed):
    packing = output_packing(stmt)
    lo, hi = stmt.y_bounds
    rng = np.random.default_rng(seed)
    y = rng.integers(lo, hi + 1, stmt.shape.y_shape)
    y[0, 0] = lo                                      # the extremes are where a digit could overflow
    y[-1, -1] = hi
    cells = packing.cells(y, stmt.shift)
    assert cells == reference_cells(packing, y, stmt.shift)
    assert all(abs(c) < 1 << MAX_CELL_BITS for c in cells) and (1 << MAX_CELL_BITS) < P // 2
    assert (1 << packing.digit_bits) > hi - lo


@settings(max_examples=60, deadline=None)
@given(statements, st.integers(0, 2**32 - 1), st.data())
def test_packing_is_injective_within_the_bounds(stmt, seed, data):
    """Two y_q within the bounds that differ anywhere pack to different cells: a commitment to the cells binds y_q."""
    packing = output_packing(stmt)
    lo, hi = stmt.y_bounds
    rng = np.random.default_rng(seed)
    y = rng.integers(lo, hi + 1, stmt.shape.y_shape)
    other = y.copy()
    t = data.draw(st.integers(0, stmt.shape.tokens - 1))
    j = data.draw(st.integers(0, stmt.shape.d_out - 1))
    other[t, j] = data.draw(st.integers(lo, hi).filter(lambda v: v != y[t, j]))
    assert packing.cells(y, stmt.shift) != packing.cells(other, stmt.shift)


@settings(max_examples=60, deadline=None)
@given(statements, st.integers(0, 2**32 - 1))
def test_constants_are_exact_for_ezkl(stmt, seed):
    """B's packed rows within float32's exact integers, token weights exact powers of two within i128, and the packed
    product equals the packed y_q (B packed, then z_q's tokens weighted and summed)."""
    packing = output_packing(stmt)
    rng = np.random.default_rng(seed)
    w = stmt.weight_range
    B = rng.integers(w.lo, w.hi + 1, stmt.shape.b_shape)
    B[0, 0] = w.lo
    packed_b = packing.pack_b(B)
    assert np.abs(packed_b).max() <= F32_EXACT
    assert all(float(np.float32(v)) == v for v in packed_b.reshape(-1).tolist())
    weights = packing.token_weights()
    assert all(float(np.float32(v)) == v and v <= 2.0 ** MAX_CONSTANT_BITS for v in weights)
    z = stmt.z_range
    z_q = rng.integers(z.lo, z.hi + 1, (stmt.shape.tokens, stmt.shape.rank))
    groups, _ = packing.shape(stmt.shape.y_shape)
    padded = np.zeros((groups * packing.tokens, stmt.shape.rank), dtype=object)
    padded[:stmt.shape.tokens] = z_q.astype(object)
    rows = [sum(int(weights[i]) * padded[g * packing.tokens + i] for i in range(packing.tokens))
            for g in range(groups)]
    product = [int(v) << stmt.shift for r in rows for v in (np.array(packed_b, dtype=object) @ r).tolist()]
    assert product == packing.cells(z_q @ B.T, stmt.shift)


def test_packing_only_where_sound_and_measured():
    c_attn = statement(768, 2304, 8, 15, 9)
    assert output_packing(c_attn) == OutputPacking(digit_bits=14, cols=2, tokens=5)     # 3 rows of 2 × 1152
    assert output_packing(statement(4096, 4096, 16, 1, 10)) == OutputPacking(digit_bits=15, cols=2)
    for unpacked in (statement(y="public"), statement(adapter="polycommit"), statement(adapter="hashed")):
        assert not output_packing(unpacked).packed
    assert output_packing(statement(rank=1)).tokens == 1                  # an outer product: no Freivalds check
    for tokens in range(2, 40):                                           # Freivalds needs two rows at least
        assert output_packing(statement(tokens=tokens)).shape((tokens, 12))[0] >= 2
    assert output_packing(statement(rank=16, weight_bits=8)).cols == 1   # int8 rows would not be exact in float32


ezkl = pytest.importorskip("ezkl")


@pytest.mark.ezkl
def test_ezkl_proves_and_verifies_the_packed_graph(ezkl_cache):
    """A packed statement (odd d_out: a padded B row; T = 5 in two rows: a padded token) through the real backend:
    EZKL's witness equals the packed cells (the backend checks it), the proof verifies, and a y differing in one
    value is refused."""
    from backends.ezkl.backend import EzklBackend
    from zkref.lora.statement import LoRAPublic

    stmt = statement(16, 13, 3, 5, 4)
    packing = output_packing(stmt)
    assert packing.cols == 2 and packing.tokens == 3
    rng = np.random.default_rng(7)
    wit = LoRAWitness(A_q=rng.integers(-8, 8, stmt.shape.a_shape), B_q=rng.integers(-8, 8, stmt.shape.b_shape),
                      x_q=rng.integers(-128, 128, stmt.shape.x_shape))
    backend = EzklBackend(cache_dir=ezkl_cache)
    result = backend.prove(stmt, wit)
    anchor = backend.anchor(stmt, wit)
    assert np.array_equal(result.public.y_q, evaluate(stmt, wit).y_q)
    assert backend.verify(stmt, result.public, result.proof, anchor=anchor)
    y = result.public.y_q.copy()
    y[4, 12] += 1 if y[4, 12] < stmt.y_bounds[1] else -1                # the padded token's row, the padded column
    forged = LoRAPublic(x_q=result.public.x_q, y_q=y, x_digest=result.public.x_digest,
                        adapter_digest=result.public.adapter_digest)
    verdict = backend.verify(stmt, forged, result.proof, anchor=anchor)
    assert not verdict and "EZKL rejected" in verdict.reason
