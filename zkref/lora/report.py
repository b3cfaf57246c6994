"""Cost report: the dense baseline against low-rank circuits, so each of the design note's ideas is measured apart.

Strategies (same shapes, same tokens):
  dense            y = ΔW_q·x, MulTable lookups, L lanes     the baseline the note compares against
  lowrank-gate     B_q·requant(A_q·x), MulGate, L lanes        low-rank, products in a gate
  lowrank-table-1  B_q·requant(A_q·x), MulTable, 1 lane        low-rank + lookup table, no batching
  lowrank-table    B_q·requant(A_q·x), MulTable, L lanes       low-rank + lookup table + L lookups per row
Figures come from zkref.plonkish.accounting on an analytic layout pass (no witness). Layouts beyond `ANALYTIC_MAX_ROWS` rows
(dense baselines of real models) use `zkref.lora.cost.formula_cost`, the closed form that tests check equals the
analytic pass; each figure says which method produced it. Whole models are lists of modules; identical shapes are
accounted once and multiplied by their count.
"""
from __future__ import annotations

import functools
import json
import time
from dataclasses import asdict, dataclass, field

from zkref.chips.batched_mac import rows_per_dot
from zkref.lora.circuit import DenseCircuit, LoRACircuit, LoRALayout, Products
from zkref.lora.cost import formula_cost
from zkref.lora.presets import PRESETS, ModuleShape
from zkref.lora.statement import ActivationBinding, AdapterBinding, LoRAShape, LoRAStatement
from zkref.plonkish.accounting import CircuitCost, account
from zkref.primitives.ranges import MAX_DIM, MAX_RANK, MAX_TOKENS, check_int, check_lanes, check_memory

ANALYTIC_MAX_ROWS = 1 << 16
ANALYTIC_BYTES_PER_ROW = 1 << 10
"""The analytic layout pass's memory per row, rounded up from the most measured (~600 B: the dense 4096→4096
layout, 2M rows, 1.2 GiB peak)."""
POSEIDON_ROWS_PER_FELT = 64
"""Rows of zkref's Poseidon chip per absorbed element (zkref/chips/poseidon_chip.py: one permutation per element)."""


def check_analytic(name: str, rows: int, hint: str = "--method formula costs it without one") -> None:
    """Refuse, before laying it out, an analytic pass over `rows` rows beyond the memory budget."""
    check_memory(f"the analytic layout of {name} ({rows:,} rows; {hint})", ANALYTIC_BYTES_PER_ROW * rows)
"""Auto method: lay the circuit out (analytic pass) when its MAC rows are at most this, else use the closed form."""
RANKS = (8, 16, 32, 64)
METHODS = ("auto", "analytic", "formula")


@dataclass(frozen=True)
class StrategySpec:
    """One way to prove a module: dense or low-rank, MulTable or MulGate, and whether lanes are batched."""

    key: str
    label: str
    circuit: str        # "dense" | "lowrank"
    mac: str            # "table" | "gate"
    batched: bool       # L lanes (True) or 1 lane (False)
    commit: str | None = None  # Poseidon commitments to x and the adapter: None, "plain" (EZKL's hash), "packed"

    def statement(self, d_in: int, d_out: int, rank: int, tokens: int) -> LoRAStatement:
        """The low-rank statement this strategy proves: the default bindings (x public, adapter fixed), or x and
        the adapter hashed (plain or packed). The shift (0) changes only the requant bucket table's contents."""
        shape = LoRAShape(d_in=d_in, d_out=d_out, rank=rank, tokens=tokens)
        if self.commit is None:
            return LoRAStatement(shape=shape, shift=0)
        packed = self.commit == "packed"
        return LoRAStatement(shape=shape, shift=0,
                             x_binding=ActivationBinding.HASHED_PACKED if packed else ActivationBinding.HASHED,
                             adapter_binding=AdapterBinding.HASHED_PACKED if packed else AdapterBinding.HASHED)


STRATEGY_SPECS = (
    StrategySpec("dense", "dense ΔW·x, MulTable, L lanes", "dense", "table", True),
    StrategySpec("lowrank-gate", "low-rank, MulGate, L lanes", "lowrank", "gate", True),
    StrategySpec("lowrank-table-1", "low-rank, MulTable, 1 lane", "lowrank", "table", False),
    StrategySpec("lowrank-table", "low-rank, MulTable, L lanes", "lowrank", "table", True),
)
EFFECTS = (
    ("low-rank factorisation", "dense", "lowrank-table"),
    ("MulTable lookups instead of MulGate", "lowrank-gate", "lowrank-table"),
    ("L lanes per row instead of 1", "lowrank-table-1", "lowrank-table"),
)
COMMIT_SPECS = (
    StrategySpec("lowrank-table+plain", "low-rank, MulTable, L lanes, x and adapter hashed (EZKL's Poseidon)",
                 "lowrank", "table", True, "plain"),
    StrategySpec("lowrank-table+packed", "low-rank, MulTable, L lanes, x and adapter packed then hashed",
                 "lowrank", "table", True, "packed"),
)
COMMIT_EFFECTS = (
    ("Poseidon commitments to x and adapter (a cost)", "lowrank-table", "lowrank-table+plain"),
    ("packing values before hashing", "lowrank-table+plain", "lowrank-table+packed"),
)


@dataclass
class StrategyCost:
    """One strategy's cost for one module (or, in totals, summed over modules; k and columns are then maxima)."""

    key: str
    label: str
    lanes: int
    macs: int
    lookups: int
    lookup_arguments: int
    rows: int
    advice_columns: int
    fixed_columns: int
    selector_columns: int
    instance_columns: int
    copies: int
    k: int
    proof_bytes: int
    method: str

    @classmethod
    def from_cost(cls, spec: StrategySpec, lanes: int, macs: int, cost: CircuitCost, method: str) -> "StrategyCost":
        return cls(spec.key, spec.label, lanes, macs, cost.lookup_queries, cost.lookup_arguments, cost.rows_used,
                   cost.advice_columns, cost.fixed_columns, cost.selector_columns, cost.instance_columns,
                   cost.copy_constraints, cost.k, cost.proof.bytes, method)


@dataclass
class ModuleReport:
    """Costs of one distinct module shape (accounted once) and how many modules share it."""

    name: str
    d_in: int
    d_out: int
    count: int
    strategies: dict[str, StrategyCost]


@dataclass
class Report:
    """Side-by-side costs, totals over a model's modules and the ratios that isolate each idea."""

    preset: str | None
    description: str
    rank: int
    tokens: int
    lanes: int
    module_count: int
    modules: list[ModuleReport]
    strategies: dict[str, StrategyCost]
    """Per strategy: the module's cost, or for a model the totals over its modules."""
    ratios: dict[str, dict[str, float]]
    effects: list[dict]
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self, **kw) -> str:
        return json.dumps(self.to_dict(), **kw)

    # -- rendering -------------------------------------------------------------------------------------------------
    def _rows(self) -> list[list[str]]:
        out = []
        for key, c in self.strategies.items():
            r = self.ratios[key]
            out.append([key, f"{c.lanes}", f"{c.macs:,}", f"{c.lookups:,}", f"{c.rows:,}",
                        f"{c.advice_columns}/{c.fixed_columns + c.selector_columns}", f"{c.k}",
                        f"{c.proof_bytes:,}", _ratio(r["rows"]), _ratio(r["lookups"]), c.method])
        return out

    HEADERS = ["strategy", "lanes", "MACs", "lookups (active)", "rows", "advice/fixed cols", "k", "proof B (est.)",
               "dense rows ÷ rows", "dense lookups ÷ lookups", "method"]

    def title(self) -> str:
        what = self.preset or self.description
        mods = f"{self.module_count} modules, {len(self.modules)} distinct shape(s)" if self.module_count > 1 else \
            f"{self.modules[0].d_in}→{self.modules[0].d_out}"
        return f"{what} ({mods}), r={self.rank}, T={self.tokens}, L={self.lanes}"

    def rich_table(self):
        from rich.table import Table

        t = Table(title=self.title())
        for i, h in enumerate(self.HEADERS):
            t.add_column(h, justify="left" if i == 0 or h == "method" else "right")
        for row in self._rows():
            t.add_row(*row)
        return t

    def effects_table(self):
        from rich.table import Table

        t = Table(title="each idea's effect (ratio before ÷ after)")
        for h in ("idea", "from → to", "MACs", "lookups", "rows", "proof bytes", "k"):
            t.add_column(h, justify="left" if h in ("idea", "from → to") else "right")
        for e in self.effects:
            t.add_row(e["idea"], f"{e['from']} → {e['to']}", _ratio(e["macs"]), _ratio(e["lookups"]),
                      _ratio(e["rows"]), _ratio(e["proof_bytes"]), f"{e['k_from']} → {e['k_to']}")
        return t

    def markdown(self) -> str:
        lines = [f"**{self.title()}**", "", "| " + " | ".join(self.HEADERS) + " |",
                 "|" + "|".join("---" if i == 0 else "---:" for i in range(len(self.HEADERS))) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in self._rows()]
        lines += ["", "| idea | from → to | MACs | lookups | rows | proof bytes | k |", "|---|---|---:|---:|---:|---:|---:|"]
        for e in self.effects:
            lines.append(f"| {e['idea']} | {e['from']} → {e['to']} | {_ratio(e['macs'])} | {_ratio(e['lookups'])} | "
                         f"{_ratio(e['rows'])} | {_ratio(e['proof_bytes'])} | {e['k_from']} → {e['k_to']} |")
        if self.notes:
            lines += [""] + [f"- {n}" for n in self.notes]
        return "\n".join(lines)


def _ratio(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x:,.0f}×" if x >= 100 else f"{x:,.2f}×"


def _div(a: int, b: int) -> float | None:
    return None if b == 0 else a / b


# ----------------------------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1024)
def strategy_cost(spec: StrategySpec, d_in: int, d_out: int, rank: int, tokens: int, lanes: int,
                  method: str = "auto") -> StrategyCost:
    """Account one strategy for one shape (cached per distinct shape)."""
    L = lanes if spec.batched else 1
    layout = LoRALayout(lanes=L, products=Products(spec.mac))
    if spec.circuit == "dense":
        circuit: LoRACircuit | DenseCircuit = DenseCircuit(d_in=d_in, d_out=d_out, tokens=tokens, layout=layout)
        mac_rows = tokens * d_out * rows_per_dot(d_in, L)
    else:
        circuit = LoRACircuit(statement=spec.statement(d_in, d_out, rank, tokens), layout=layout)
        mac_rows = tokens * (rank * rows_per_dot(d_in, L) + d_out * rows_per_dot(rank, L))
    macs = circuit.macs if isinstance(circuit, DenseCircuit) else circuit.shape.macs
    if spec.commit is not None:  # commitment chips have no closed form: always the analytic pass
        check_analytic(spec.key, mac_rows + POSEIDON_ROWS_PER_FELT * circuit.statement.hashed_felts,
                       "commitments have no closed form")
        return StrategyCost.from_cost(spec, L, macs, account(circuit, spec.key), "analytic")
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    use = method if method != "auto" else ("analytic" if mac_rows <= ANALYTIC_MAX_ROWS else "formula")
    if use == "analytic":
        check_analytic(spec.key, mac_rows)
    cost = account(circuit, spec.key) if use == "analytic" else formula_cost(circuit, spec.key)
    return StrategyCost.from_cost(spec, L, macs, cost, use)


def build_report(*, d_in: int | None = None, d_out: int | None = None, rank: int = 16, tokens: int = 1,
                 lanes: int = 8, preset: str | None = None, method: str = "auto",
                 modules: list[ModuleShape] | None = None, commitments: bool = False) -> Report:
    """Cost every strategy for a shape, a named preset or a module list; totals sum over modules.

    commitments: also cost the low-rank table circuit with x and the adapter bound by Poseidon (plain and packed).
    """
    specs = STRATEGY_SPECS + (COMMIT_SPECS if commitments else ())
    effects_of = EFFECTS + (COMMIT_EFFECTS if commitments else ())
    t0 = time.perf_counter()
    rank = check_int("rank", rank, 1, MAX_RANK)
    tokens = check_int("tokens", tokens, 1, MAX_TOKENS)
    lanes = check_lanes(lanes)
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        mods, description = list(PRESETS[preset].modules), PRESETS[preset].description
    elif modules is not None:
        mods, description = list(modules), "module list"
    else:
        if d_in is None or d_out is None:
            raise ValueError("give --d-in and --d-out, or --preset")
        d_in = check_int("d_in", d_in, 1, MAX_DIM)
        d_out = check_int("d_out", d_out, 1, MAX_DIM)
        mods, description = [ModuleShape("module", d_in, d_out)], f"{d_in}→{d_out}"
    if not mods:
        raise ValueError("no modules to report")

    groups: dict[tuple[int, int], ModuleReport] = {}
    for m in mods:
        g = groups.get((m.d_in, m.d_out))
        if g is None:
            costs = {s.key: strategy_cost(s, m.d_in, m.d_out, rank, tokens, lanes, method) for s in specs}
            groups[(m.d_in, m.d_out)] = ModuleReport(m.name, m.d_in, m.d_out, m.count, costs)
        else:
            g.count += m.count
    module_count = sum(m.count for m in mods)

    totals: dict[str, StrategyCost] = {}
    for s in specs:
        parts = [(g.count, g.strategies[s.key]) for g in groups.values()]
        first = parts[0][1]
        methods = sorted({c.method for _, c in parts})
        totals[s.key] = StrategyCost(
            s.key, s.label, first.lanes,
            macs=sum(n * c.macs for n, c in parts), lookups=sum(n * c.lookups for n, c in parts),
            lookup_arguments=max(c.lookup_arguments for _, c in parts), rows=sum(n * c.rows for n, c in parts),
            advice_columns=max(c.advice_columns for _, c in parts), fixed_columns=max(c.fixed_columns for _, c in parts),
            selector_columns=max(c.selector_columns for _, c in parts),
            instance_columns=max(c.instance_columns for _, c in parts), copies=sum(n * c.copies for n, c in parts),
            k=max(c.k for _, c in parts), proof_bytes=sum(n * c.proof_bytes for n, c in parts),
            method="+".join(methods))
    dense = totals["dense"]
    ratios = {key: {"macs": _div(dense.macs, c.macs), "lookups": _div(dense.lookups, c.lookups),
                    "rows": _div(dense.rows, c.rows), "proof_bytes": _div(dense.proof_bytes, c.proof_bytes),
                    "k_minus_dense_k": c.k - dense.k}
              for key, c in totals.items()}
    effects = []
    for idea, a, b in effects_of:
        ca, cb = totals[a], totals[b]
        effects.append({"idea": idea, "from": a, "to": b, "macs": _div(ca.macs, cb.macs),
                        "lookups": _div(ca.lookups, cb.lookups), "rows": _div(ca.rows, cb.rows),
                        "proof_bytes": _div(ca.proof_bytes, cb.proof_bytes), "k_from": ca.k, "k_to": cb.k})
    notes = [
        "rows = rows used by regions and tables (before blinding rows); k = least k with rows + blinding ≤ 2^k, "
        "also ≥ the public inputs' rows",
        "proof bytes: halo2 KZG/SHPLONK payload estimate from zkref.plonkish.accounting (one proof per module)",
        "lookups = active lookups (rows × lookup arguments switched on)",
        "requant shift 0 for accounting: the shift changes only the bucket table's contents",
    ]
    if module_count > 1:
        notes.append(f"{module_count} modules, {len(groups)} distinct shape(s): each distinct shape accounted once and "
                     "multiplied by its count; totals sum MACs, lookups, rows, copies and proof bytes; k and columns "
                     "are maxima")
    if any(c.method != "analytic" for g in groups.values() for c in g.strategies.values()):
        notes.append(f"method 'formula': layouts above {ANALYTIC_MAX_ROWS:,} MAC rows use the closed-form cost "
                     "(zkref.lora.cost.formula_cost, tested equal to the analytic pass); --method analytic forces "
                     "the layout pass")
    return Report(preset, description, rank, tokens, lanes, module_count, list(groups.values()), totals, ratios,
                  effects, notes, round(time.perf_counter() - t0, 4))
