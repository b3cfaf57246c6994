"""The LoRA statement as an ONNX graph whose EZKL witness is `zkref.lora.statement.evaluate` exactly.

    input  x' = x_q / 2^s           (EZKL quantises it at input scale s: the input cells hold x_q itself)
    z'   = x' · A_qᵀ                (scale s: the cells hold z = x_q·A_qᵀ, the statement's exact integers)
    lt   = [z' < 0]                 (comparison with the constant 0: one sign decomposition)
    u    = z' + (2^(s-1) − lt)·2^-s (cells: z + 2^(s-1) − lt; the ·2^-s only relabels the scale)
    z_q  = clamp(floor(u), lo, hi)      (Floor decomposes u in base 2^s: exact; the clamp bounds of int{z_bits},
                                         −128 and 127 by default, sit at scale s)
    y'   = z_q · B_qᵀ               (scale s: the cells hold y_q·2^s, the statement's y shifted left by s)

With y polycommit and the adapter fixed, the output is PACKED (`OutputPacking`): `cols` adjacent outputs of a token
share one cell through B's rows packed in base 2^K, and `tokens` tokens share one cell through a weighted sum of
z_q's rows, so EZKL's Freivalds check of B·z_q touches a fraction of the cells (measured: benchmarks/results/
ezkl_levers.md, lever "unpacked"). The verifier packs its own y_q the same way before committing to it.

floor((z + 2^(s-1) − [z<0]) / 2^s) is round-half-away-from-zero of z/2^s for integers z (ties of a negative z round
down because of the −1), and every step is constrained EXACTLY: a decomposition with range-checked digits.

With the adapter fixed (`boolean_free_requant`) the same z_q is computed without EZKL's boolean range table:

    q    = ((u·2^-s + 1) − 1)·2^s   (a rebase whose Div admits ⌊u⌋ or ⌈u⌉: its cells, unconstrained to one)
    ⌊u⌋  = q − [u − q < 0]          (the remainder's sign picks the floor: exact whichever q the prover chose)
    z_q  = lo + relu(⌊u⌋ − lo) − relu(⌊u⌋ − hi)

(`floor_by_rebase`, `clamp_by_relu`): two range tables instead of three, so one lookup argument fewer on every
main-region block (measured: benchmarks/results/ezkl_levers.md, lever "floor"). Apart from that rebase, corrected,
nothing in the graph is rebased. (The obvious graph, ``clamp(z / 2**s, -128, 127)`` at input scale 0, makes EZKL
insert a rebase whose constraint is |z − q·2^s| < 2^s: it admits both ⌊z/2^s⌋ and ⌈z/2^s⌉, so a dishonest prover could move
any requantised value by one. See specs/ezkl-backend.md, "Why not the rebase".) Shift 0 has no rounding step.

The graph's constants, in graph order, are what EZKL's "hashed" and "polycommit" params cover: `params_message`.
"""
from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zkref.lora.commitments import adapter_message
from zkref.lora.statement import (SUPPORTED_WEIGHT_BITS, AdapterBinding, LoRAStatement, LoRAWitness,
                                  OutputBinding)
from zkref.primitives.ranges import Z_BITS_DEFAULT, IntRange

OPSET = 17
INPUT_NAME = "x"
OUTPUT_NAME = "y"
DECOMP_BASE = 256
"""Base of EZKL's sign/comparison decompositions when nothing is floored (shift 0): a 256-row digit table."""
MAX_GRAPH_SHIFT = 16
"""Largest shift the graph supports: Floor range-checks its last digit against a 2^shift-row table."""
MAX_DECOMP_LEGS = 15
"""Most digits a decomposition may have: EZKL holds decomp_base^legs in an i128 (measured: 256^16 is refused with
"decomp_base^decomp_legs overflows IntegerRep"). Floor decomposes in base 2^shift with the same number of legs, so a
small shift under a wide value range (int8 weights, or a wide z_q, at shift 1) is out of EZKL's reach."""


F32_EXACT = 1 << 24
"""EZKL reads every ONNX constant as float32 (ezkl 23 graph/utilities.rs, extract_tensor_value): integers of magnitude
up to 2^24 are exact, so a packed row of B must stay within it."""
MAX_CONSTANT_BITS = 126
"""EZKL quantises a constant through i128: the largest token weight 2^(K·cols·(tokens−1)) stays at or below 2^126."""
MAX_CELL_BITS = 252
"""A packed output cell stays below 2^252 < (p−1)/2 in magnitude, so it reads back as the signed integer it is."""


@dataclass(frozen=True, kw_only=True)
class OutputPacking:
    """How the graph's output cells carry y_q: `cols` adjacent outputs of one token and `tokens` tokens per cell.

        cell[g, c] = 2^shift · Σ_{i<tokens} Σ_{j<cols} 2^(K·(j + cols·i)) · y_q[g·tokens + i, c·cols + j]

    (outputs past the last token or column count as 0), K = `digit_bits`. Packing is injective on y_q within the
    statement's y bounds because 2^K exceeds hi − lo: the lowest differing digit of two packings would have to be a
    non-zero multiple of 2^K. The verifier range-checks y_q (`check_public`) before it packs and commits to it, so a
    commitment to the packed cells binds y_q itself. cols = tokens = 1 is the unpacked graph (cells y_q·2^shift).
    """

    digit_bits: int
    cols: int = 1
    tokens: int = 1

    @property
    def packed(self) -> bool:
        return self.cols > 1 or self.tokens > 1

    def shape(self, y_shape: tuple[int, int]) -> tuple[int, int]:
        """The output tensor's shape for y_q of `y_shape` (tokens × d_out)."""
        t, n = y_shape
        return -(-t // self.tokens), -(-n // self.cols)

    def cells(self, y_q: np.ndarray, shift: int) -> list[int]:
        """The output cells, row-major, for y_q (exact Python integers)."""
        y = np.asarray(y_q, dtype=np.int64)
        groups, packed_cols = self.shape(y.shape)
        padded = np.zeros((groups * self.tokens, packed_cols * self.cols), dtype=object)
        padded[:y.shape[0], :y.shape[1]] = y.astype(object)
        weights = np.array([[1 << (self.digit_bits * (j + self.cols * i)) for j in range(self.cols)]
                            for i in range(self.tokens)], dtype=object)
        blocks = padded.reshape(groups, self.tokens, packed_cols, self.cols)
        packed = (blocks * weights[None, :, None, :]).sum(axis=(1, 3))
        return [int(v) << shift for v in packed.reshape(-1).tolist()]

    def pack_b(self, B_q: np.ndarray) -> np.ndarray:
        """B's rows packed `cols` at a time: row c is Σ_j 2^(K·j)·B_q[c·cols + j] (within F32_EXACT)."""
        B = np.asarray(B_q, dtype=np.int64)
        out = np.zeros((-(-B.shape[0] // self.cols), B.shape[1]), dtype=np.int64)
        for j in range(self.cols):
            rows = B[j::self.cols]
            out[:rows.shape[0]] += rows << (self.digit_bits * j)
        if np.abs(out).max(initial=0) > F32_EXACT:
            raise ValueError("a packed row of B is not exact in float32 (a bug in output_packing)")
        return out

    def token_weights(self) -> list[float]:
        """The weights 2^(K·cols·i) of the tokens sharing a cell (exact float32 powers of two)."""
        return [float(1 << (self.digit_bits * self.cols * i)) for i in range(self.tokens)]


def output_packing(statement: LoRAStatement) -> OutputPacking:
    """The packing this statement's graph uses: the most outputs per cell within EZKL's float32 constants
    (`F32_EXACT`: B's packed rows), its i128 quantisation (`MAX_CONSTANT_BITS`: the token weights) and the field
    (`MAX_CELL_BITS`), with the tokens spread evenly over the fewest cells, but at least two rows when T > 1, so
    that B·z_q stays a matrix product EZKL checks by Freivalds (one row would make it T·d_out dots in the main region,
    a layout not measured here). Only with y polycommit and the adapter fixed: public y would change the instances,
    and a hashed or polycommit adapter commits to the graph's constants in graph order (`params_message`), which
    packing would change."""
    lo, hi = statement.y_bounds
    K = (hi - lo).bit_length()
    if statement.y_binding is not OutputBinding.POLYCOMMIT or statement.adapter_binding is not AdapterBinding.FIXED:
        return OutputPacking(digit_bits=K)
    w = statement.weight_range
    w_max = max(-w.lo, w.hi)
    cols = 1
    while cols < statement.shape.d_out and w_max * sum(1 << (K * j) for j in range(cols + 1)) <= F32_EXACT:
        cols += 1
    tokens = statement.shape.tokens
    if statement.shape.rank == 1:          # z_q·B_qᵀ is an outer product: no Freivalds check to shrink
        return OutputPacking(digit_bits=K, cols=cols)
    most = max(1, min(-(-tokens // 2), (MAX_CELL_BITS - statement.shift) // (K * cols),
                      MAX_CONSTANT_BITS // (K * cols) + 1))
    groups = -(-tokens // most)
    return OutputPacking(digit_bits=K, cols=cols, tokens=-(-tokens // groups))


def output_cells(statement: LoRAStatement, y_q: np.ndarray) -> list[int]:
    """EZKL's output cells for y_q, row-major: what the witness holds and what a polycommit y commits to."""
    return output_packing(statement).cells(y_q, output_scale(statement))


def params_message(A_q: np.ndarray, B_q: np.ndarray, shift: int, z_bits: int = Z_BITS_DEFAULT) -> list[int]:
    """Every constant of the graph in graph order as field elements — A_qᵀ row-major ‖ requant constants ‖ B_qᵀ
    row-major — which is `zkref.lora.commitments.adapter_message`: EZKL's hashed params are Poseidon over it and its
    polycommit params commit to it (one tensor)."""
    return adapter_message(A_q, B_q, shift=shift, packed=False, weight_bits=max(SUPPORTED_WEIGHT_BITS), z_bits=z_bits)


def value_bound(statement: LoRAStatement) -> int:
    """A bound on |every value the requantisation decomposes|: z, z + 2^(s-1), and z_q·2^s minus a clamp bound."""
    lo, hi = statement.z_bounds
    return max(-lo, hi) + (-statement.z_range.lo + 1) * (1 << statement.shift)


def decomp_base(scale: int) -> int:
    """Base of every EZKL decomposition of a graph whose requantisation runs at `scale`: 2^scale, the base Floor's digits
    are in anyway, so the comparisons' digits share Floor's range table and the circuit has one lookup table fewer
    (measured: benchmarks/results/ezkl_levers.md, lever base256); `DECOMP_BASE` when nothing is floored (scale 0)."""
    return 1 << scale if scale else DECOMP_BASE


def decomp_legs(statement: LoRAStatement, *, scale: int | None = None) -> int:
    """Digits per decomposition in base `decomp_base(scale)`: enough for `value_bound`. `scale` (default the shift) is
    the scale the requantisation runs at: a batch member relabelled to a larger scale S holds every value times
    2^(S − shift) and floors in base 2^S (backends/ezkl/batch.py)."""
    scale = statement.shift if scale is None else scale
    if scale < statement.shift:
        raise ValueError(f"scale {scale} is below the statement's shift {statement.shift}")
    bits = (value_bound(statement) << (scale - statement.shift)).bit_length()
    return max(2, math.ceil(bits / math.log2(decomp_base(scale))))


def unsupported_reason(statement: LoRAStatement, *, scale: int | None = None) -> str | None:
    """Why this graph cannot hold the statement (at a batch's `scale`), or None."""
    if statement.shift > MAX_GRAPH_SHIFT:
        return (f"shift {statement.shift} > {MAX_GRAPH_SHIFT}: the exact rounding step range-checks against a "
                f"2^shift-row table")
    legs = decomp_legs(statement, scale=scale)
    if legs > MAX_DECOMP_LEGS:
        return (f"the requantisation's decompositions need {legs} digits > {MAX_DECOMP_LEGS} (EZKL's limit): values "
                f"up to {value_bound(statement):,} in base 2^{statement.shift if scale is None else scale}; a larger "
                "shift or a narrower z_q fits")
    return None


def input_data(x_q: np.ndarray, shift: int) -> dict:
    """EZKL's data JSON for x_q: x_q / 2^s as floats (exact dyadic values; EZKL's quantisation at scale s returns x_q)."""
    scale = float(1 << shift)
    return {"input_data": [[float(v) / scale for v in np.asarray(x_q, dtype=np.int64).reshape(-1).tolist()]]}


def output_scale(statement: LoRAStatement) -> int:
    """EZKL's output cells hold y_q · 2^output_scale (packed: `output_cells`)."""
    return statement.shift


def lora_forward(x, A, B, shift: int, *, relabel: int = 0, z_bits: int = Z_BITS_DEFAULT):
    """The statement's ops on torch tensors: z = x·Aᵀ, the exact requantisation (clamped to int{z_bits}), z_q·Bᵀ.

    `relabel` = m > 0 (batches only) multiplies z by 2^m first: fed at a batch's input scale S = shift + m, z's cells
    hold z at scale S (the value z/2^S); EZKL lays the product out as a multiplication by the scale-0 constant 2^m, so
    the cells hold z·2^m, still at scale S, i.e. the value z/2^shift the statement requantises. Every later step is
    then the same exact requantisation with all cells times 2^m (Floor decomposes in base 2^S); y's cells are y_q·2^S.
    """
    import torch

    z = x @ A.t()
    if relabel:
        z = z * (2.0 ** relabel)
    return requantise(z, shift, z_bits) @ B.t()


def requantise(z, shift: int, z_bits: int, *, boolean_free: bool = False):
    """z_q = clamp(round_half_away(z / 2^shift), int{z_bits}) on z at scale `shift`, every step exact (module doc).

    `boolean_free` (the single statement's graph with a fixed adapter: `boolean_free_requant`) floors by EZKL's
    rebase corrected by a comparison (`floor_by_rebase`) and clamps by relus (`clamp_by_relu`): no op of EZKL's that
    range-checks a boolean, so the circuit has two range tables instead of three (a lookup argument fewer on every
    main-region block). Otherwise Floor and EZKL's clamp: a batch member relabelled to a larger scale needs Floor,
    whose digits follow the member's scale."""
    import torch

    q = IntRange(z_bits)
    if shift:
        lt = (z < 0).to(torch.float32)
        u = z + (2.0 ** (shift - 1) - lt) * (2.0 ** -shift)
        z = floor_by_rebase(u, shift) if boolean_free else torch.floor(u)
    return clamp_by_relu(z, q.lo, q.hi) if boolean_free else torch.clamp(z, q.lo, q.hi)


def floor_by_rebase(u, shift: int):
    """⌊u⌋ for u at scale `shift` whose cells hold an integer v, with no boolean range check.

    EZKL lays `(u·2^-shift + 1) − 1` out as a relabel to scale 2·shift, an add (a non-identity op above the graph's
    scale) and a rebase back to scale `shift`, whose Div admits q = ⌊v/2^shift⌋ or ⌈v/2^shift⌉ (|v + 2^(2·shift) −
    q'·2^shift| < 2^shift: "Why not the rebase"). r = v − q·2^shift is ≥ 0 exactly when q is the floor, so q − [r < 0]
    is ⌊v/2^shift⌋ whichever q the prover chose ([r < 0] is a sign decomposition: exact)."""
    import torch

    q = (u * (2.0 ** -shift) + 1.0 - 1.0) * (2.0 ** shift)
    return q - (u - q < 0).to(torch.float32)


def clamp_by_relu(z, lo: int, hi: int):
    """clamp(z, lo, hi) = lo + relu(z − lo) − relu(z − hi) for lo < hi: each relu a sign decomposition and a product,
    exact (a zero's sign does not matter: it is multiplied by zero)."""
    import torch

    return lo + torch.relu(z - lo) - torch.relu(z - hi)


def boolean_free_requant(statement: LoRAStatement) -> bool:
    """Whether the statement's graph requantises without booleans (`requantise`): with the adapter fixed, whose
    verifying key holds every constant. A hashed or polycommit adapter commits to the graph's constants in graph
    order (`params_message`: the Floor graph's), and an unbound one leaves them private anyway."""
    return statement.adapter_binding is AdapterBinding.FIXED


def pack_tokens(z_q, packing: OutputPacking, weights, *, tokens: int, rank: int):
    """z_q's rows (tokens × rank) grouped `packing.tokens` at a time, each group one row Σ_i weights[i]·z_q[g·tokens
    + i] (missing last rows are 0): multiplied by the packed B, row g gives the packed output cells of group g."""
    import torch

    groups = -(-tokens // packing.tokens)
    if groups * packing.tokens > tokens:
        z_q = torch.cat([z_q, torch.zeros(groups * packing.tokens - tokens, rank)], 0)
    return (z_q.reshape(groups, packing.tokens, rank) * weights).sum(1)


def frozen_parameter(values: np.ndarray):
    """A constant of the graph (an ONNX initializer) holding integer values."""
    import torch

    return torch.nn.Parameter(torch.tensor(np.asarray(values), dtype=torch.float32), requires_grad=False)


def statement_module(A_q: np.ndarray, B_q: np.ndarray, *, shift: int, z_bits: int, packing: OutputPacking,
                     tokens: int, boolean_free: bool = False):
    """The statement's graph as a torch module holding this adapter (what `export_onnx` exports)."""
    import torch

    class LoRARequant(torch.nn.Module):
        """y = clamp(round_half_away(x·Aᵀ / 2^s), int{z_bits}) · Bᵀ, written so EZKL constrains every step exactly;
        packed as `packing` says (B's rows, then z_q's tokens)."""

        def __init__(self) -> None:
            super().__init__()
            self.A = frozen_parameter(A_q)
            self.B = frozen_parameter(packing.pack_b(B_q) if packing.cols > 1 else B_q)
            if packing.tokens > 1:
                self.W = frozen_parameter(np.array(packing.token_weights()).reshape(1, packing.tokens, 1))

        def forward(self, x):
            if not (packing.packed or boolean_free):
                return lora_forward(x, self.A, self.B, shift, z_bits=z_bits)
            z_q = requantise(x @ self.A.t(), shift, z_bits, boolean_free=boolean_free)
            if packing.tokens > 1:
                z_q = pack_tokens(z_q, packing, self.W, tokens=tokens, rank=A_q.shape[0])
            return z_q @ self.B.t()

    return LoRARequant()


def export_onnx(statement: LoRAStatement, witness: LoRAWitness, path: Path) -> None:
    """Write the statement's graph with this witness's adapter as ONNX (torch export, opset 17, TorchScript path)."""
    import torch

    statement.check_witness(witness)
    module = statement_module(witness.A_q, witness.B_q, shift=statement.shift, z_bits=statement.z_bits,
                              packing=output_packing(statement), tokens=statement.shape.tokens,
                              boolean_free=boolean_free_requant(statement))
    dummy = torch.zeros(statement.shape.x_shape, dtype=torch.float32)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (dummy,), buffer, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          opset_version=OPSET, dynamo=False)
    Path(path).write_bytes(buffer.getvalue())
