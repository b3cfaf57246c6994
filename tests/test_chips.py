"""The LoRA chips on their own: MulTable contents, BatchedMac/MulGate products, Requant buckets; audit and tampering."""
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from zkref.plonkish.accounting import account, cost_of_layout
from zkref.plonkish.audit import audit
from zkref.chips import BatchedMac, InstanceSource, MulGate, MulTable, Requant, requant_reference
from zkref.chips.batched_mac import LaneMacConfig, check_lanes
from zkref.chips.mul_table import mul_table_columns
from zkref.chips.requant import RequantConfig, bucket_bounds, limb_layout, requant_buckets, round_half_away_shift
from zkref.plonkish.constraint_system import ConstraintSystem
from zkref.plonkish.expression import Column
from zkref.plonkish.failures import ConstraintNotSatisfied, CopyConstraintFailure, InstanceMismatch, LookupFailure
from zkref.plonkish.layout import Layouter
from zkref.plonkish.mock_prover import MockProver


# ------------------------------------------------------------------------------------------------ test circuits
@dataclass(frozen=True)
class MacConfig:
    x: Column
    y: Column
    mac: LaneMacConfig


@dataclass
class MacCircuit:
    """y[t, o] = Σ_j W[o, j]·x[t, j] with x and y public: one lane-MAC chip alone."""

    W: np.ndarray
    x: np.ndarray
    lanes: int
    strategy: str = "table"

    def configure(self, cs: ConstraintSystem) -> MacConfig:
        x, y = cs.instance_column("x"), cs.instance_column("y")
        n_out, d = self.W.shape
        pad = d % self.lanes != 0
        chip = BatchedMac if self.strategy == "table" else MulGate
        return MacConfig(x, y, chip.configure(cs, self.lanes, padding=pad, tied_weights=len(self.x) > 1))

    def public_inputs(self):
        return [self.x.reshape(-1).tolist(), (self.x @ self.W.T).reshape(-1).tolist()]

    def synthesize(self, config: MacConfig, layouter: Layouter) -> None:
        chip = (BatchedMac if self.strategy == "table" else MulGate)(config.mac)
        chip.load(layouter)
        (T, d), n_out = self.x.shape, self.W.shape[0]
        known = layouter.layout.with_values
        out = chip.matmul(layouter, weights=self.W if known else None,
                          source=InstanceSource(config.x, np.arange(T * d).reshape(T, d)), n_out=n_out, d=d,
                          tokens=T, name="W·x")
        layouter.constrain_instance(out.results, config.y, np.arange(T * n_out))


@dataclass(frozen=True)
class RqConfig:
    z_in: Column
    zi: Column
    zq_out: Column
    rq: RequantConfig


@dataclass
class RequantCircuit:
    """z_q = requant(z) with z and z_q public: the Requant chip alone (z copied in from an instance column)."""

    z: np.ndarray
    shift: int
    z_min: int = -(1 << 20)
    z_max: int = 1 << 20

    def configure(self, cs: ConstraintSystem) -> RqConfig:
        z_in, zq_out = cs.instance_column("z"), cs.instance_column("zq")
        zi = cs.advice_column("z_input", equality=True)
        return RqConfig(z_in, zi, zq_out, Requant.configure(cs, shift=self.shift, z_min=self.z_min, z_max=self.z_max))

    def public_inputs(self):
        return [self.z.tolist(), requant_reference(self.z, self.shift).tolist()]

    def synthesize(self, config: RqConfig, layouter: Layouter) -> None:
        chip = Requant(config.rq)
        chip.load(layouter)
        n = len(self.z)
        z_cells = layouter.assign_region(
            "inputs", lambda region: region.assign_advice_from_instance(config.z_in, range(n), config.zi, 0))
        zq = chip.assign(layouter, z_cells)
        layouter.constrain_instance(zq, config.zq_out, np.arange(n))


def prove(circuit) -> MockProver:
    return MockProver(circuit, circuit.public_inputs())


def names(failures) -> set[str]:
    out = set()
    for f in failures:
        if isinstance(f, ConstraintNotSatisfied):
            out.add(f.gate)
        elif isinstance(f, LookupFailure):
            out.add(f.lookup)
        else:
            out.add(type(f).__name__)
    return out


# ------------------------------------------------------------------------------------------------ MulTable
def test_mul_table_holds_every_int4_int8_product_once():
    w, a, p = mul_table_columns()
    assert len(w) == MulTable.ROWS == 4096
    assert len(set(zip(w.tolist(), a.tolist()))) == 4096
    assert (p == w * a).all() and (w.min(), w.max(), a.min(), a.max()) == (-8, 7, -128, 127)
    assert ((w == 0) & (a == 0) & (p == 0)).any()  # the row that switched-off lookups land on


def test_lanes_are_validated():
    for bad in (0, 17, -1, 2.0, True, "8"):
        with pytest.raises(ValueError, match="lanes"):
            check_lanes(bad)
    assert check_lanes(16) == 16


# ------------------------------------------------------------------------------------------------ lane MACs
@settings(max_examples=50)
@given(st.data())
def test_mac_chips_compute_exact_dot_products(data):
    d = data.draw(st.integers(1, 40))
    n_out = data.draw(st.integers(1, 5))
    T = data.draw(st.integers(1, 3))
    lanes = data.draw(st.integers(1, 16))
    strategy = data.draw(st.sampled_from(["table", "gate"]))
    seed = data.draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    W = rng.integers(-8, 8, (n_out, d))
    x = rng.integers(-128, 128, (T, d))
    circuit = MacCircuit(W, x, lanes, strategy)
    prover = prove(circuit)
    assert prover.verify() == []
    assert account(circuit).to_dict() == cost_of_layout(prover.layout, "MacCircuit").to_dict()


@pytest.mark.parametrize("strategy", ["table", "gate"])
@pytest.mark.parametrize("lanes,d", [(4, 10), (3, 3), (1, 5), (16, 7)])
def test_mac_chips_pass_the_audit(strategy, lanes, d):
    rng = np.random.default_rng(lanes * 100 + d)
    circuit = MacCircuit(rng.integers(-8, 8, (3, d)), rng.integers(-128, 128, (2, d)), lanes, strategy)
    report = audit(circuit, circuit.public_inputs())
    assert report.ok, report.render()


def _mac_prover(strategy="table", lanes=4):
    rng = np.random.default_rng(7)
    return prove(MacCircuit(rng.integers(-8, 8, (3, 10)), rng.integers(-128, 128, (2, 10)), lanes, strategy))


def test_tampered_lane_product_fails_its_lookup_and_the_accumulator():
    prover = _mac_prover()
    prover.set_cell("mac.p2", 1, prover.cell("mac.p2", 1) + 1)  # row 1 is a "next" row of the first dot product
    failures = prover.verify()
    assert {"mac lane 2: w·a = p", "mac accumulate"} <= names(failures)
    lk = next(f for f in failures if isinstance(f, LookupFailure))
    assert (lk.table, lk.row, lk.region) == ("mul", 1, "W·x")


def test_tampered_accumulator_fails_the_gates():
    prover = _mac_prover()
    prover.set_cell("mac.acc", 0, prover.cell("mac.acc", 0) + 5)
    assert {"mac start", "mac accumulate"} <= names(prover.verify())


def test_tampered_result_fails_the_public_output():
    prover = _mac_prover()
    last = 2  # ceil(10/4) = 3 rows per dot product: row 2 holds the first result
    prover.set_cell("mac.acc", last, prover.cell("mac.acc", last) - 1)
    failures = prover.verify()
    assert any(isinstance(f, InstanceMismatch) and f.instance_column == "y" for f in failures)
    assert "mac accumulate" in names(failures)


def test_tampered_padding_lane_fails_the_copy_to_zero():
    prover = _mac_prover()  # d = 10, 4 lanes: lanes 2 and 3 of row 2 are padding
    prover.set_cell("mac.a3", 2, 5)
    failures = prover.verify()
    assert any(isinstance(f, CopyConstraintFailure) and f.right.column == "mac.zero" for f in failures)


def test_tampered_weight_of_a_later_token_fails_the_tie_to_token_0():
    prover = _mac_prover()
    rows_per_token = 3 * 3
    prover.set_cell("mac.w0", rows_per_token, prover.cell("mac.w0", rows_per_token) + 1)
    failures = prover.verify()
    assert any(isinstance(f, CopyConstraintFailure) and f.left.column == "mac.w0" for f in failures)


def test_gate_strategy_names_its_range_lookups():
    prover = _mac_prover("gate")
    prover.set_cell("mac.w1", 0, 8)  # not int4
    assert "mac lane 1: w is int4" in names(prover.verify())
    prover = _mac_prover("gate")
    prover.set_cell("mac.a1", 0, 128)  # not int8 (and no longer the public input)
    assert "mac lane 1: a is int8" in names(prover.verify())


def test_public_activation_outside_int8_is_rejected_by_the_table():
    rng = np.random.default_rng(1)
    circuit = MacCircuit(rng.integers(-8, 8, (2, 6)), rng.integers(-128, 128, (1, 6)), 4)
    x = circuit.x.copy()
    x[0, 3] = 200
    bad = MacCircuit(circuit.W, x, 4)
    assert "mac lane 3: w·a = p" in names(prove(bad).verify())


# ------------------------------------------------------------------------------------------------ Requant
@pytest.mark.parametrize("shift", list(range(0, 13)))
def test_buckets_partition_the_z_range_and_agree_with_rounding(shift):
    z_min, z_max = -300 * (1 << shift) - 3, 300 * (1 << shift) + 5
    v, lo, hi = requant_buckets(shift, z_min, z_max)
    assert lo[0] == z_min and hi[-1] == z_max and (lo[1:] == hi[:-1] + 1).all() and list(v) == list(range(-128, 128))
    z = np.arange(z_min, z_max + 1)
    ref = requant_reference(z, shift)
    which = np.searchsorted(hi, z)  # bucket index holding z
    assert (v[which] == ref).all()


def test_rounding_is_half_away_from_zero():
    # ties at ±0.5, ±1.5, ±2.5 go away from zero (the EZKL rule), non-ties to the nearest integer
    z = np.array([1, -1, 3, -3, 5, -5, 2, -2, 0])
    assert round_half_away_shift(z, 1).tolist() == [1, -1, 2, -2, 3, -3, 1, -1, 0]
    assert round_half_away_shift(np.array([5, -5, 6, -6, 7, -7]), 2).tolist() == [1, -1, 2, -2, 2, -2]
    assert requant_reference(np.array([10**6, -10**6, 127 * 4 + 1, -128 * 4 - 2]), 2).tolist() == [127, -128, 127, -128]


def test_bucket_bounds_are_symmetric():
    for shift in (0, 1, 5):
        lo, hi = bucket_bounds(shift)
        for v in range(-126, 127):  # lo(v) = -hi(-v) away from the saturating ends
            assert lo[v + 128] == -hi[-v + 128]


def test_limb_layout_covers_the_widest_bucket_in_at_most_three_limbs():
    assert limb_layout(8, -1016 * 4096, 1024 * 4096) == (8, 3)
    assert limb_layout(0, -1016 * 2**20, 1024 * 2**20) == (10, 3)
    assert limb_layout(12, -100, 100) == (8, 1)


@settings(max_examples=50)
@given(st.lists(st.integers(-(1 << 20), 1 << 20), min_size=1, max_size=12), st.integers(0, 14))
def test_requant_chip_proves_the_reference(zs, shift):
    circuit = RequantCircuit(np.array(zs), shift)
    assert prove(circuit).verify() == []


def test_requant_chip_passes_the_audit_including_ties_and_saturation():
    z = np.array([0, 8, -8, 7, -7, 24, -24, 127 * 16 + 8, -128 * 16 - 8, 10**5, -(10**5), 1, -1])
    report = audit(RequantCircuit(z, 4), RequantCircuit(z, 4).public_inputs())
    assert report.ok, report.render()


def _rq_prover():
    return prove(RequantCircuit(np.array([1000, -37, 5]), 4))


def test_tampered_remainder_fails_the_bucket_lookup():
    prover = _rq_prover()
    prover.set_cell("requant.rem", 0, prover.cell("requant.rem", 0) + 1)
    failures = prover.verify()
    assert "requant bucket: lo(z_q) <= z <= hi(z_q)" in names(failures)


def test_remainder_limb_out_of_range_fails_the_limb_lookup():
    prover = _rq_prover()
    prover.set_cell("requant.slack", 1, 256)
    assert "requant slack limb" in names(prover.verify())


def test_wrong_rounding_is_rejected():
    # z = 8 with shift 4 is exactly 0.5: half away from zero gives 1; claiming 0 must fail
    circuit = RequantCircuit(np.array([8]), 4)
    failures = MockProver(circuit, [[8], [0]]).verify()
    assert any(isinstance(f, InstanceMismatch) for f in failures)
    prover = prove(circuit)
    prover.set_cell("requant.zq", 0, 0)
    assert "requant bucket: lo(z_q) <= z <= hi(z_q)" in names(prover.verify())


def test_z_outside_the_declared_range_has_no_bucket():
    circuit = RequantCircuit(np.array([5000]), 4, z_min=-1000, z_max=1000)
    assert "requant bucket: lo(z_q) <= z <= hi(z_q)" in names(prove(circuit).verify())


def test_requant_configuration_is_validated():
    for kwargs in (dict(shift=-1, z_min=-10, z_max=10), dict(shift=41, z_min=-10, z_max=10),
                   dict(shift=2, z_min=5, z_max=10), dict(shift=2.5, z_min=-1, z_max=1)):
        with pytest.raises(ValueError):
            Requant.configure(ConstraintSystem(), **kwargs)


def test_requant_reference_agrees_with_zkref_quant():
    from zkref.primitives import quant  # the quantisation module's requantize is the same statement
    rng = np.random.default_rng(0)
    for shift in range(0, 16):
        z = np.concatenate([rng.integers(-(1 << 22), 1 << 22, 2000), np.arange(-3 << shift, 3 << shift),
                            (np.arange(-300, 300) << shift) + (1 << shift >> 1)])  # every tie ±0.5 in range
        expected = quant.requantize(z, shift).z_q
        assert (requant_reference(z, shift) == expected).all(), shift
