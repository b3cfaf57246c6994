"""zkref's PLONKish layout of a LoRA statement, and the dense baseline it is measured against.

`LoRACircuit(statement=…, witness=…, layout=…)` lays out y_q = B_q · requant(A_q · x_q) (zkref.lora.statement) with
the statement's bindings:

The second product runs on its own MAC chip `macz` when z_q and x_q differ in width (an activation wider than int8 is
multiplied as two byte digits); with equal widths (int8 by default) both products share one chip `mac`.

    x        public: read from the instance column  |  hashed / hashed-packed: private advice, Poseidon in-circuit
    adapter  fixed: fixed columns (in the verifying key)  |  hashed / hashed-packed: advice, Poseidon in-circuit
             unbound: advice, bound to nothing
    y        public: constrained to the instance column

KZG-committed values (polycommit) have no counterpart in a mock layout: `unsupported_reason` says so. The single
instance column "public" holds `zkref.lora.statement.encode_instances` (one layout for every backend). The witness
may be absent: the analytic pass (accounting only). The hashes absorb exactly the cells the MAC chips multiply — the
activation cells the first product copies from and token 0's weight cells — so a prover cannot hash one adapter and
multiply with another. Spec: specs/lora-circuit.md.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from zkref.chips.batched_mac import (BatchedMac, CellSource, InstanceSource, LaneMac, LaneMacConfig, MatmulCells,
                                     padding_lanes)
from zkref.chips.mul_gate import MulGate
from zkref.chips.pack_chip import PackChip, PackConfig
from zkref.chips.poseidon_chip import PoseidonChip, PoseidonConfig
from zkref.chips.requant import Requant, RequantConfig
from zkref.lora.commitments import adapter_message_index, requant_constants
from zkref.lora.statement import (HASHED_ACTIVATIONS, HASHED_ADAPTERS, ActivationBinding, AdapterBinding, LoRAStatement,
                                  LoRAWitness, OutputBinding, encode_instances, instance_layout, public_values)
from zkref.plonkish.constraint_system import ConstraintSystem
from zkref.plonkish.expression import Column
from zkref.plonkish.layout import AssignedCells, Layouter
from zkref.primitives.field import encode_signed
from zkref.primitives.ranges import INT4, INT8, MAX_DIM, MAX_TOKENS, as_int_matrix, check_int, check_lanes


class Products(str, enum.Enum):
    """How the MAC chip proves w·a: a lookup into the 4096-row product table, or a degree-3 gate."""

    TABLE = "table"
    GATE = "gate"

    @property
    def chip(self) -> type[LaneMac]:
        return BatchedMac if self is Products.TABLE else MulGate


@dataclass(frozen=True, kw_only=True)
class LoRALayout:
    """Layout choices that change the circuit but not the statement: lanes per row and how products are proven."""

    lanes: int = 8
    products: Products = Products.TABLE

    def __post_init__(self) -> None:
        object.__setattr__(self, "lanes", check_lanes(self.lanes))
        try:
            object.__setattr__(self, "products", Products(self.products))
        except ValueError:
            raise ValueError(f"products must be one of {', '.join(p.value for p in Products)}, "
                             f"got {self.products!r}") from None


def unsupported_reason(statement: LoRAStatement, layout: LoRALayout = LoRALayout()) -> str | None:
    """Why zkref's layout (with these layout choices) cannot prove `statement`, or None when it can."""
    kzg = [name for name, b in (("x", statement.x_binding), ("adapter", statement.adapter_binding),
                                ("y", statement.y_binding)) if b.value == "polycommit"]
    if kzg:
        return (f"{', '.join(kzg)} bound by a KZG polynomial commitment (polycommit): zkref's mock layout has no "
                "commitment scheme; use a real backend (ezkl)")
    if statement.weight_bits > 4 and layout.products is Products.TABLE \
            and statement.adapter_binding is not AdapterBinding.FIXED:
        return (f"int{statement.weight_bits} weights by table lookups are fixed nibble columns: they need the adapter "
                f"fixed; products by gate (--strategy gate) take a private int{statement.weight_bits} adapter")
    return None


@dataclass(frozen=True)
class LoRAConfig:
    """Columns and chip configurations of one LoRA circuit."""

    public: Column
    x: Column | None
    mac: LaneMacConfig
    mac_z: LaneMacConfig
    """The chip of the second product, y = B_q·z_q: `mac` itself unless z_q is wider than int8."""
    requant: RequantConfig
    poseidon: PoseidonConfig | None
    pack_x: PackConfig | None
    pack_w: PackConfig | None
    constants: Column | None


class LoRACircuit:
    """The PLONKish layout of a `LoRAStatement` (+ witness, or none for the analytic pass, + layout choices)."""

    def __init__(self, *, statement: LoRAStatement, witness: LoRAWitness | None = None,
                 layout: LoRALayout = LoRALayout()):
        reason = unsupported_reason(statement, layout)
        if reason:
            raise ValueError(reason)
        if witness is not None:
            statement.check_witness(witness)
        self.statement = statement
        self.witness = witness
        self.layout = layout

    @property
    def shape(self):
        return self.statement.shape

    @property
    def padding(self) -> bool:
        s, L = self.shape, self.layout.lanes
        return bool(padding_lanes(s.d_in, L) or padding_lanes(s.rank, L))

    def public_inputs(self) -> list[list[int]]:
        """The one instance column: `encode_instances(statement, public_values(statement, witness))`."""
        if self.witness is None:
            raise ValueError("the circuit has no witness: only the analytic pass is possible")
        return [encode_instances(self.statement, public_values(self.statement, self.witness))]

    # -- configure -------------------------------------------------------------------------------------------------
    def configure(self, cs: ConstraintSystem) -> LoRAConfig:
        st = self.statement
        public = cs.instance_column("public")
        x = cs.advice_column("x", equality=True) if st.x_binding is not ActivationBinding.PUBLIC else None
        adapter_hashed = st.adapter_binding in HASHED_ADAPTERS
        options = dict(padding=self.padding,
                       tied_weights=self.shape.tokens > 1 or adapter_hashed,  # weights copied across tokens or hashed
                       fixed_weights=st.adapter_binding is AdapterBinding.FIXED, weight_bits=st.weight_bits)
        chip = self.layout.products.chip
        mac = chip.configure(cs, self.layout.lanes, activation_bits=st.activation_bits, **options)
        mac_z = mac if st.z_bits == st.activation_bits else \
            chip.configure(cs, self.layout.lanes, activation_bits=st.z_bits, name="macz", **options)
        z_min, z_max = st.z_bounds
        requant = Requant.configure(cs, shift=st.shift, z_min=z_min, z_max=z_max, bits=st.z_bits)
        hashing = adapter_hashed or st.x_binding in HASHED_ACTIVATIONS
        poseidon = PoseidonChip.configure(cs) if hashing else None
        pack_x = PackChip.configure(cs, st.activation_bits, prefix="packx") \
            if st.x_binding is ActivationBinding.HASHED_PACKED else None
        pack_w = PackChip.configure(cs, st.weight_bits, prefix="packw") \
            if st.adapter_binding is AdapterBinding.HASHED_PACKED else None
        constants = cs.fixed_column("adapter.constants", equality=True) \
            if st.adapter_binding is AdapterBinding.HASHED else None
        return LoRAConfig(public, x, mac, mac_z, requant, poseidon, pack_x, pack_w, constants)

    # -- synthesize ------------------------------------------------------------------------------------------------
    def synthesize(self, config: LoRAConfig, layouter: Layouter) -> None:
        st, s = self.statement, self.shape
        T, d, r, m = s.tokens, s.d_in, s.rank, s.d_out
        offset = {seg.name: seg.offset for seg in instance_layout(st)}
        known = layouter.layout.with_values
        w = self.witness if known else None

        x_cells = None
        if config.x is None:
            x_source: InstanceSource | CellSource = InstanceSource(
                config.public, offset["x_q"] + np.arange(T * d, dtype=np.int64).reshape(T, d))
        else:
            x_cells = layouter.assign_region(
                "private activations x_q",
                lambda region: region.assign_advice(config.x, 0, None if w is None else w.x_q.reshape(-1),
                                                    length=T * d),
                chip="Activations")
            x_source = CellSource(x_cells, np.arange(T * d, dtype=np.int64).reshape(T, d))

        mac = self.layout.products.chip(config.mac)
        mac_z = mac if config.mac_z is config.mac else self.layout.products.chip(config.mac_z)
        requant = Requant(config.requant)
        mac.load(layouter)
        if mac_z is not mac:
            mac_z.load(layouter)
        requant.load(layouter)
        stage1 = mac.matmul(layouter, weights=None if w is None else w.A_q, source=x_source, n_out=r, d=d, tokens=T,
                            name="z = A_q·x")
        z_q = requant.assign(layouter, stage1.results, name="z_q = requant(z)")
        stage2 = mac_z.matmul(layouter, weights=None if w is None else w.B_q,
                            source=CellSource(z_q, np.arange(T * r, dtype=np.int64).reshape(T, r)),
                            n_out=m, d=r, tokens=T, name="y = B_q·z_q")
        if st.y_binding is OutputBinding.PUBLIC:
            layouter.constrain_instance(stage2.results, config.public,
                                        offset["y_q"] + np.arange(T * m, dtype=np.int64))
        if x_cells is not None:
            self._bind_activations(config, layouter, x_cells, offset["x_digest"])
        if st.adapter_binding in HASHED_ADAPTERS:
            self._bind_adapter(config, layouter, stage1, stage2, offset["adapter_digest"])

    def _bind_activations(self, config: LoRAConfig, layouter: Layouter, x_cells: AssignedCells, row: int) -> None:
        """Poseidon over the x cells the first product reads (packed first if the statement says so)."""
        poseidon = PoseidonChip(config.poseidon)
        if config.pack_x is not None:
            packer = PackChip(config.pack_x)
            packer.load_table(layouter)
            x_cells = packer.pack_cells(layouter, [x_cells], "pack x_q")
        digest = poseidon.hash_cells(layouter, x_cells, "activations commitment")
        layouter.constrain_instance(digest, config.public, [row])

    def _bind_adapter(self, config: LoRAConfig, layouter: Layouter, stage1: MatmulCells, stage2: MatmulCells,
                      row: int) -> None:
        """Poseidon over token 0's weight cells, each absorbed at its place in `adapter_message`."""
        s = self.shape
        packed = config.pack_w is not None
        a_index, b_index, constants_at = adapter_message_index(s.rank, s.d_in, s.d_out, packed=packed,
                                                               shift=self.statement.shift)
        runs = list(stage1.w_lanes) + list(stage2.w_lanes)
        positions = [a_index.reshape(-1)[idx] for idx in stage1.w_index] + \
                    [b_index.reshape(-1)[idx] for idx in stage2.w_index]
        poseidon = PoseidonChip(config.poseidon)
        if packed:
            packer = PackChip(config.pack_w)
            packer.load_table(layouter)
            elements = packer.pack_cells(layouter, runs, "pack adapter", positions)
            digest = poseidon.hash_cells(layouter, elements, "adapter commitment")
        else:
            constants = np.array(requant_constants(self.statement.shift, self.statement.z_bits), dtype=np.int64)
            cells = layouter.assign_region("requant constants",
                                           lambda region: region.assign_fixed(config.constants, 0, constants),
                                           chip="Constants")
            runs.append(cells)
            positions.append(constants_at + np.arange(len(constants), dtype=np.int64))
            digest = poseidon.hash_cells(layouter, runs, "adapter commitment", positions=positions)
        layouter.constrain_instance(digest, config.public, [row])


@dataclass(frozen=True)
class DenseConfig:
    public: Column
    mac: LaneMacConfig


class DenseCircuit:
    """The baseline: y = W_q · x_q with ΔW = s·B·A quantised to one int4 matrix (d_out × d_in), same MAC chip.

    No requantisation: y is the exact integer product. x and y are public (instance column "public": x_q then y_q);
    W is fixed (in the verifying key) like the low-rank statement's default adapter, or private with `fixed_weights`
    False. W_q and x_q are optional: without them only the analytic pass is possible.
    """

    def __init__(self, *, d_in: int, d_out: int, tokens: int = 1, layout: LoRALayout = LoRALayout(),
                 fixed_weights: bool = True, W_q: np.ndarray | None = None, x_q: np.ndarray | None = None):
        self.d_in = check_int("d_in", d_in, 1, MAX_DIM)
        self.d_out = check_int("d_out", d_out, 1, MAX_DIM)
        self.tokens = check_int("tokens", tokens, 1, MAX_TOKENS)
        self.layout = layout
        self.fixed_weights = bool(fixed_weights)
        self.W_q = None if W_q is None else as_int_matrix("W_q", W_q, INT4, (self.d_out, self.d_in))
        self.x_q = None if x_q is None else as_int_matrix("x_q", x_q, INT8, (self.tokens, self.d_in))

    @property
    def macs(self) -> int:
        return self.tokens * self.d_in * self.d_out

    @property
    def padding(self) -> bool:
        return bool(padding_lanes(self.d_in, self.layout.lanes))

    @property
    def y_q(self) -> np.ndarray:
        if self.W_q is None or self.x_q is None:
            raise ValueError("DenseCircuit has no weights/activations: only the analytic pass is possible")
        return self.x_q @ self.W_q.T

    def public_inputs(self) -> list[list[int]]:
        """[x_q row-major ‖ y row-major] in the one instance column (field elements)."""
        y = self.y_q
        return [encode_signed(self.x_q.reshape(-1).tolist() + y.reshape(-1).tolist())]

    def configure(self, cs: ConstraintSystem) -> DenseConfig:
        public = cs.instance_column("public")
        mac = self.layout.products.chip.configure(cs, self.layout.lanes, padding=self.padding,
                                                  tied_weights=self.tokens > 1, fixed_weights=self.fixed_weights)
        return DenseConfig(public, mac)

    def synthesize(self, config: DenseConfig, layouter: Layouter) -> None:
        T, d, m = self.tokens, self.d_in, self.d_out
        mac = self.layout.products.chip(config.mac)
        mac.load(layouter)
        known = layouter.layout.with_values
        out = mac.matmul(layouter, weights=self.W_q if known else None,
                         source=InstanceSource(config.public, np.arange(T * d, dtype=np.int64).reshape(T, d)),
                         n_out=m, d=d, tokens=T, name="y = W_q·x")
        layouter.constrain_instance(out.results, config.public, T * d + np.arange(T * m, dtype=np.int64))
