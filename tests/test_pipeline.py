"""zkref.pipeline: typed steps from float tensors to a checked proof, and their errors."""
import numpy as np
import pytest

from backends import get_backend
from zkref.pipeline import Bindings, compare, cost, prepare, prove, quantise, run


def adapter(seed=0, d_in=16, d_out=12, rank=3):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((rank, d_in)) * 0.1, rng.standard_normal((d_out, rank)) * 0.1, \
        rng.standard_normal((4, d_in))


def test_run_returns_typed_results_and_the_shift_is_fixed_by_calibration():
    A, B, x = adapter()
    q = quantise(A, B, scaling=2.0, x_calibration=x)
    louder = prepare(q, 3 * x)  # a later call's activations do not move the shift
    assert louder.statement.shift == q.shift
    result = run(prepare(q, x), get_backend("zkref"))
    assert result.ok and result.proven.verdict and result.check.within_bound
    assert result.cost.k == cost(result.prepared.statement).k
    assert result.proven.anchor.statement_id == result.prepared.statement.id
    assert compare(result.prepared, result.proven.y_q) == result.check


def test_a_single_vector_is_one_token_and_bindings_flow_into_the_statement():
    A, B, x = adapter()
    q = quantise(A, B, scaling=1.0, x_calibration=x)
    p = prepare(q, x[0], Bindings(x="hashed-packed", adapter="hashed"))
    assert p.statement.shape.tokens == 1 and p.statement.x_binding.value == "hashed-packed"
    assert prove(p, get_backend("zkref")).verdict
    assert cost(prepare(q, x, Bindings(x="polycommit")).statement) is None  # no zkref layout for KZG bindings


@pytest.mark.parametrize("build,match", [
    (lambda q, x: prepare(q, x[:, :5]), "T×16"),
    (lambda q, x: prepare(q, np.full((1, 16), np.nan)), "NaN"),
    (lambda q, x: Bindings(x="sha256"), "x binding"),
    (lambda q, x: prove(prepare(q, x, Bindings(y="polycommit")), get_backend("zkref")), "cannot prove"),
    (lambda q, x: quantise(*adapter()[:2], scaling=float("inf"), x_calibration=x), "scaling"),
])
def test_errors_are_value_errors(build, match):
    A, B, x = adapter()
    q = quantise(A, B, scaling=2.0, x_calibration=x)
    with pytest.raises(ValueError, match=match):
        build(q, x)


def test_choose_precision_takes_the_cheapest_that_is_accurate_enough():
    from zkref.pipeline import PRECISIONS, choose_precision

    A, B, x = adapter(3, d_in=64, d_out=48, rank=8)

    def picked(q, trials):
        return next(t for t in trials if (t.precision.weight_bits, t.precision.per_channel, t.precision.z_bits,
                                          t.precision.x_mode, t.precision.x_bits)
                    == (q.weight_bits, q.A_eff is not A, q.z_bits, q.x_mode, q.activation_bits))

    loose, trials = choose_precision(A, B, scaling=1.0, x_calibration=x, max_rel_error=0.5)
    assert len(trials) == len(PRECISIONS) and all(t.cost_rows > 0 for t in trials)
    assert loose.weight_bits == 4
    assert picked(loose, trials).cost_rows == min(t.cost_rows for t in trials if t.within)
    tight, trials = choose_precision(A, B, scaling=1.0, x_calibration=x, max_rel_error=0.05)
    int4 = [t for t in trials if t.precision.weight_bits == 4]
    assert tight.weight_bits == 8 and all(not t.within for t in int4)  # int4 could not, int8 does
    chosen = picked(tight, trials)
    assert chosen.within and chosen.cost_rows == min(t.cost_rows for t in trials if t.within)
    assert compare(prepare(tight, x), tight.y_q(tight.quantize_x(x))).relative_error == chosen.relative_error
    zkref_q, zkref_trials = choose_precision(A, B, scaling=1.0, x_calibration=x, max_rel_error=0.05, backend="zkref")
    assert [t.relative_error for t in zkref_trials] == [t.relative_error for t in trials]   # same errors, other costs
    assert picked(zkref_q, zkref_trials).cost_rows == min(t.cost_rows for t in zkref_trials if t.within)
    with pytest.raises(ValueError, match="no precision reaches"):
        choose_precision(A, B, scaling=1.0, x_calibration=x, max_rel_error=1e-9)
