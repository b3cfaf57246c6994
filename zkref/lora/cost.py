"""Closed-form accounting of the LoRA and dense circuits (specs/lora-circuit.md, "Cost formulas").

The analytic layout pass (zkref.plonkish.accounting.account) is exact but lays out every call; this computes the same
`CircuitCost` from the shapes alone, for dense baselines of real models (millions of rows). Tests check that both agree.
Statements whose binding needs Poseidon or packing (hashed x or adapter) have no closed form here: account them.
"""
from __future__ import annotations

from dataclasses import dataclass

from zkref.chips.batched_mac import padding_lanes, rows_per_dot
from zkref.chips.mul_table import ROWS as MUL_TABLE_ROWS
from zkref.chips.requant import limb_layout, requant_buckets
from zkref.lora.circuit import DenseCircuit, LoRACircuit, Products
from zkref.lora.statement import ActivationBinding, AdapterBinding, OutputBinding, instance_length
from zkref.plonkish.accounting import ChipCost, CircuitCost, circuit_cost
from zkref.plonkish.layout import configure
from zkref.primitives.ranges import INT4, INT8


@dataclass(frozen=True)
class _MatmulShape:
    n_out: int
    d: int


def _mac_counts(shapes: list[_MatmulShape], T: int, L: int, products: Products, fixed_weights: bool) -> dict[str, int]:
    rows = sum(T * s.n_out * rows_per_dot(s.d, L) for s in shapes)
    # activations copied from their source; advice weights of tokens 1.. copied from token 0; padding lanes to zero
    copies = sum(T * s.n_out * s.d for s in shapes)
    pad_copies_per_lane = 1 if fixed_weights else 2
    copies += sum(pad_copies_per_lane * T * s.n_out * padding_lanes(s.d, L) for s in shapes)
    if not fixed_weights:
        copies += sum((T - 1) * s.n_out * s.d for s in shapes)
    advice_per_lane = (3 if products is Products.TABLE else 2) - (1 if fixed_weights else 0)
    lookups_per_row = L if products is Products.TABLE else 2 * L
    return dict(rows=rows, copies=copies, cells=rows * (advice_per_lane * L + 1), lookups=rows * lookups_per_row,
                regions=len(shapes))


def formula_cost(circuit: LoRACircuit | DenseCircuit, name: str | None = None) -> CircuitCost:
    """The accounting of `circuit` in closed form (no layout at all): equal to `zkref.plonkish.accounting.account`."""
    cs, _ = configure(circuit)
    L, products = circuit.layout.lanes, circuit.layout.products
    chip_name = products.chip.chip_name
    tables: dict[str, int] = {}
    if products is Products.TABLE:
        tables["mul"] = MUL_TABLE_ROWS
    else:
        tables.update({"int4": INT4.size, "int8": INT8.size})
    if isinstance(circuit, LoRACircuit):
        st = circuit.statement
        if st.weight_bits != 4 or st.z_bits != INT8.bits or st.activation_bits != INT8.bits:
            raise ValueError("formula_cost covers int4 weights, int8 activations and an int8 z_q; account() the rest")
        if st.x_binding is not ActivationBinding.PUBLIC or st.adapter_binding not in (AdapterBinding.FIXED,
                                                                                      AdapterBinding.UNBOUND) \
                or st.y_binding is not OutputBinding.PUBLIC:
            raise ValueError("formula_cost covers public x and y with a fixed or unbound adapter; account() the rest")
        s = st.shape
        T = s.tokens
        fixed = st.adapter_binding is AdapterBinding.FIXED
        shapes = [_MatmulShape(s.rank, s.d_in), _MatmulShape(s.d_out, s.rank)]
        z_min, z_max = st.z_bounds
        rq = next(c for c in cs.tables if c.name.startswith("requant.limb"))
        tables["requant.bucket"] = 1 + len(requant_buckets(st.shift, z_min, z_max)[0])
        tables[rq.name] = 1 << int(rq.name.removeprefix("requant.limb"))
        _, n = limb_layout(st.shift, z_min, z_max)
        count = T * s.rank
        rq_rows, rq_cells, rq_lookups, rq_copies = count * n, count * (2 + 2 * n), count * (1 + 2 * n), count
        instance_rows = instance_length(st)
        out_copies = T * s.d_out
    else:
        T = circuit.tokens
        fixed = circuit.fixed_weights
        shapes = [_MatmulShape(circuit.d_out, circuit.d_in)]
        rq_rows = rq_cells = rq_lookups = rq_copies = 0
        instance_rows = T * (circuit.d_in + circuit.d_out)
        out_copies = T * circuit.d_out
    mac = _mac_counts(shapes, T, L, products, fixed)
    padding = circuit.padding
    rows_used = max([mac["rows"], rq_rows, 1 if padding else 0] + list(tables.values()))
    chips = [ChipCost(chip_name, mac["regions"] + (1 if padding else 0), mac["rows"] + (1 if padding else 0),
                      mac["cells"])]
    if rq_rows:
        chips.append(ChipCost("Requant", 1, rq_rows, rq_cells))
    return circuit_cost(
        cs, name or type(circuit).__name__,
        rows_used=rows_used,
        instance_rows=instance_rows,
        lookup_queries=mac["lookups"] + rq_lookups,
        copy_constraints=mac["copies"] + rq_copies + out_copies,
        chips=chips,
        tables=tables,
        advice_cells=mac["cells"] + rq_cells,
    )
