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

With the adapter fixed (`boolean_free_requant`) the same z_q is computed without EZKL's boolean range table, with
the clamp's lower bound folded into the rounding constant (`rounding_constant`: lo = −2^(z_bits−1)):

    v    = z + 2^(s-1) − lo·2^s − lt  (cells of u, at scale s: ⌊v/2^s⌋ = round_half_away(z/2^s) − lo)
    q    = ((u·2^-s + 1) − 1)·2^s   (a rebase whose Div admits ⌊u⌋ or ⌈u⌉: its cells, unconstrained to one)
    a    = q − [u < q]              (the comparison picks the floor: exact whichever q the prover chose)
    z_q  = hi − relu((hi − lo) − relu(a))   (= clamp(a + lo, lo, hi): two relus, two constants)

(`floor_by_rebase`, `clamp_by_relu`): two range tables instead of three, so one lookup argument fewer on every
main-region block (measured: benchmarks/results/ezkl_levers.md, lever "floor"), and with the tokens packed by a
Freivalds product (`pack_tokens`) 648 fewer main-region cells at GPT-2 c_attn T=15 than the graph/5 form (lever
"unfolded"): one block of columns instead of two. Apart from that rebase, corrected,
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

    def token_matrix(self, tokens: int) -> np.ndarray:
        """groups × `tokens`: row g holds the token weights at the columns of group g's tokens (`pack_tokens`)."""
        groups = -(-tokens // self.tokens)
        out = np.zeros((groups, tokens))
        weights = self.token_weights()
        for t in range(tokens):
            out[t // self.tokens, t] = weights[t % self.tokens]
        return out


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


def value_bound(statement: LoRAStatement, *, floor_graph: bool = False) -> int:
    """A bound on |every value the requantisation decomposes|: z, z + 2^(s-1) (− lo·2^s), and z_q·2^s minus a clamp
    bound; in the boolean-free graph (`clamp_by_relu`; unless `floor_graph`: a batch member's Floor graph) also
    (hi − lo)·2^s − relu(a)·2^s."""
    lo, hi = statement.z_bounds
    bound = max(-lo, hi) + (-statement.z_range.lo + 1) * (1 << statement.shift)
    if boolean_free_requant(statement) and not floor_graph:
        bound = max(bound, (statement.z_range.hi - statement.z_range.lo) << statement.shift)
    return bound


def decomp_base(scale: int) -> int:
    """Base of every EZKL decomposition of a Floor graph whose requantisation runs at `scale`: 2^scale, the base Floor's
    digits are in anyway, so the comparisons' digits share Floor's range table and the circuit has one lookup table
    fewer (measured: benchmarks/results/ezkl_levers.md, lever base256); `DECOMP_BASE` when nothing is floored (scale 0).
    The boolean-free graph has no Floor: `decomposition`."""
    return 1 << scale if scale else DECOMP_BASE


def decomp_legs(statement: LoRAStatement, *, scale: int | None = None) -> int:
    """Digits per decomposition in base `decomp_base(scale)`: enough for `value_bound`. `scale` (default the shift) is
    the scale the requantisation runs at: a batch member relabelled to a larger scale S holds every value times
    2^(S − shift) and floors in base 2^S (backends/ezkl/batch.py)."""
    scale = statement.shift if scale is None else scale
    if scale < statement.shift:
        raise ValueError(f"scale {scale} is below the statement's shift {statement.shift}")
    bits = (value_bound(statement, floor_graph=True) << (scale - statement.shift)).bit_length()
    return max(2, math.ceil(bits / math.log2(decomp_base(scale))))


MAX_BASE_BITS = MAX_GRAPH_SHIFT
"""Largest digit table of the boolean-free graph, 2^16 rows: no larger than the Floor graph's (2^shift)."""


def decomposition(statement: LoRAStatement, *, logrows: int) -> tuple[int, int]:
    """(base, legs) of every EZKL decomposition of the statement's own graph laid out at 2^logrows rows.

    The boolean-free graph (`boolean_free_requant`) floors by a rebase, not by Floor, so no table is tied to 2^shift:
    it takes the fewest digits EZKL allows, two, in the smallest power-of-two base that holds `value_bound`, unless
    that digit table would not fit one column (2^(logrows−1) rows at most: a range table EZKL spreads over several
    columns gave proofs that do not verify, measured) or pass 2^16 rows; then more digits. Every comparison and relu
    decomposes its value into sign + legs digits, so two digits instead of three take a sixth of the main region's
    cells (c_attn T=15: 31,100 → 27,736 dummy cells), which with the committed x not counted twice
    (`settings.fit_main_region`) lays the main region out in one block of columns instead of two (measured:
    benchmarks/results/ezkl_levers.md, lever "legs3"). Otherwise the Floor graph's `decomp_base` and `decomp_legs`."""
    if not boolean_free_requant(statement):
        return decomp_base(statement.shift), decomp_legs(statement)
    bits = value_bound(statement).bit_length()
    legs = max(2, math.ceil(bits / min(MAX_BASE_BITS, logrows - 1)))
    return 1 << math.ceil(bits / legs), legs


def unsupported_reason(statement: LoRAStatement, *, scale: int | None = None) -> str | None:
    """Why this graph cannot hold the statement (at a batch's `scale`), or None."""
    if statement.shift > MAX_GRAPH_SHIFT:
        return (f"shift {statement.shift} > {MAX_GRAPH_SHIFT}: the exact rounding step range-checks against a "
                f"2^shift-row table")
    legs = decomp_legs(statement, scale=scale) if scale is not None else \
        decomposition(statement, logrows=MAX_BASE_BITS + 1)[1]
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
    rebase corrected by a comparison (`floor_by_rebase`) and clamps by relus (`clamp_by_relu`), the clamp's lower
    bound folded into the rounding constant: no op of EZKL's that range-checks a boolean, so the circuit has two range
    tables instead of three (a lookup argument fewer on every main-region block). Otherwise Floor and EZKL's clamp:
    a batch member relabelled to a larger scale needs Floor, whose digits follow the member's scale."""
    import torch

    q = IntRange(z_bits)
    if not boolean_free:
        if shift:
            z = torch.floor(rounding_input(z, shift))
        return torch.clamp(z, q.lo, q.hi)
    a = floor_by_rebase(rounding_input(z, shift, lo=q.lo), shift) if shift else z - q.lo
    return clamp_by_relu(a, q.lo, q.hi)


def rounding_constant(shift: int, *, lo: int = 0) -> int:
    """The constant c of `rounding_input`: 2^(shift−1) rounds half away from zero (with −[z < 0]), −lo·2^shift shifts
    the floor by −lo so the clamp needs no subtraction of its own (`clamp_by_relu`)."""
    return (1 << (shift - 1)) - lo * (1 << shift)


def rounding_input(z, shift: int, *, lo: int = 0, offset: int = 0):
    """u = z + (c + offset − [z < 0])·2^-shift at scale `shift` (c = `rounding_constant`): its cells hold
    v = z + c − [z < 0], and ⌊v/2^shift⌋ = round_half_away(z/2^shift) − lo. `offset` ≠ 0 only builds the dishonest
    provers of the tests (a moved rounding constant, the same ops)."""
    import torch

    lt = (z < 0).to(torch.float32)
    return z + (float(rounding_constant(shift, lo=lo) + offset) - lt) * (2.0 ** -shift)


def floor_by_rebase(u, shift: int):
    """⌊u⌋ for u at scale `shift` whose cells hold an integer v, with no boolean range check.

    EZKL lays `(u·2^-shift + 1) − 1` out as a relabel to scale 2·shift, an add (a non-identity op above the graph's
    scale: without it EZKL folds the relabel and its inverse away and rebases nothing) and a rebase back to scale
    `shift`, whose Div admits q = ⌊v/2^shift⌋ or ⌈v/2^shift⌉ (|v + 2^(2·shift) − q'·2^shift| < 2^shift: "Why not the
    rebase"). u < q (r = v − q·2^shift < 0) exactly when q is the ceiling of a non-multiple, so q − [u < q] is
    ⌊v/2^shift⌋ whichever q the prover chose ([u < q] is EZKL's comparison: the sign decomposition of q − u, exact)."""
    import torch

    q = (u * (2.0 ** -shift) + 1.0 - 1.0) * (2.0 ** shift)
    return q - (u < q).to(torch.float32)


def clamp_by_relu(a, lo: int, hi: int):
    """clamp(a + lo, lo, hi) = hi − relu((hi − lo) − relu(a)) for lo < hi, from a = z − lo (the floor already shifted by
    −lo: `rounding_constant`): a ≤ 0 gives lo, a ≥ hi − lo gives hi, else a + lo. Each relu is a sign decomposition
    and a product, exact (a zero's sign does not matter: it is multiplied by zero)."""
    import torch

    return hi - torch.relu((hi - lo) - torch.relu(a))


def boolean_free_requant(statement: LoRAStatement) -> bool:
    """Whether the statement's graph requantises without booleans (`requantise`): with the adapter fixed, whose
    verifying key holds every constant. A hashed or polycommit adapter commits to the graph's constants in graph
    order (`params_message`: the Floor graph's), and an unbound one leaves them private anyway."""
    return statement.adapter_binding is AdapterBinding.FIXED


def pack_tokens(z_q, token_matrix):
    """z_q's rows (tokens × rank) grouped `packing.tokens` at a time: `token_matrix` (`OutputPacking.token_matrix`) times
    z_q, row g = Σ_i 2^(K·cols·i)·z_q[g·tokens + i] (missing last rows count as 0). Multiplied by the packed B, row g
    gives the packed output cells of group g. A matrix product of ≥ 2 groups, so EZKL checks it by Freivalds in its
    einsum chip, not by per-value products and sums in the main region (part of lever "unfolded")."""
    return token_matrix @ z_q


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
                self.W = frozen_parameter(packing.token_matrix(tokens))

        def forward(self, x):
            if not (packing.packed or boolean_free):
                return lora_forward(x, self.A, self.B, shift, z_bits=z_bits)
            z_q = requantise(x @ self.A.t(), shift, z_bits, boolean_free=boolean_free)
            if packing.tokens > 1:
                z_q = pack_tokens(z_q, self.W)
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
