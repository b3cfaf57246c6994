"""A quantised LoRA adapter: the float → integer map into the statement, dequantisation, and the proven error bound.

peft computes delta = s · B(A x) with s = `scaling` as peft sets it (alpha/r, alpha/√r for rsLoRA, or a per-module
alpha/rank pattern). Quantising lora_A, lora_B (int4) and x (int8) and requantising the rank-r intermediate by a
power of two turns it into the integer statement of zkref.lora.statement; this module holds the scales that map
y_q back to floats and a rigorous bound on the error of doing so. Spec: specs/quantisation.md.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from zkref.lora.statement import (ActivationBinding, AdapterBinding, LoRAShape, LoRAStatement, LoRAWitness,
                                  OutputBinding, evaluate)
from zkref.primitives.quant import (QuantizedTensor, choose_shift, finite_array, quantize_weights,
                                   round_half_away, symmetric_scale)
from zkref.primitives.ranges import (ACTIVATION_BITS_DEFAULT, Z_BITS_DEFAULT, IntRange, check_activation_bits,
                                     check_int, check_shift, check_z_bits)


def lora_delta_float(x: np.ndarray, A: np.ndarray, B: np.ndarray, scaling: float) -> np.ndarray:
    """The float LoRA delta in PEFT's convention, torch float64: scaling · x Aᵀ Bᵀ for x of shape T × d_in."""
    import torch

    x, A, B = (finite_array(v, n) for v, n in ((x, "x"), (A, "lora_A"), (B, "lora_B")))
    _check_lora_shapes(A, B, x)
    xt, At, Bt = (torch.from_numpy(np.array(v, dtype=np.float64)) for v in (x, A, B))  # writable copies
    return (float(scaling) * (xt @ At.T @ Bt.T)).numpy()


def _check_lora_shapes(A: np.ndarray, B: np.ndarray, x: np.ndarray | None = None) -> None:
    if A.ndim != 2 or B.ndim != 2:
        raise ValueError(f"lora_A and lora_B must be matrices, got shapes {A.shape} and {B.shape}")
    if B.shape[1] != A.shape[0]:
        raise ValueError(f"lora_A is r×d_in and lora_B is d_out×r: got A {A.shape}, B {B.shape} (ranks differ)")
    if x is not None and (x.ndim != 2 or x.shape[1] != A.shape[1]):
        raise ValueError(f"x must be T×d_in = T×{A.shape[1]}, got shape {x.shape}")


def _check_scaling(scaling: float) -> float:
    try:
        s = float(scaling)
    except (TypeError, ValueError):
        raise ValueError(f"scaling must be a number, got {scaling!r}") from None
    if not np.isfinite(s) or s == 0:
        raise ValueError(f"scaling must be finite and non-zero, got {scaling!r}")
    return s


@dataclass(frozen=True)
class DeltaCheck:
    """The dequantised proven output against the float delta: max error, the proven bound, and whether it holds."""

    max_abs_error: float
    error_bound: float
    max_abs_delta: float
    within_bound: bool

    @property
    def relative_error(self) -> float:
        """max |error| / max |delta| (0 when the delta is 0)."""
        return self.max_abs_error / self.max_abs_delta if self.max_abs_delta else 0.0


ZERO_TOKEN_SCALE = float(np.finfo(np.float64).tiny)
"""Per token, the scale of an all-zero token: its x_q and y_q are 0 at any scale, and the error bound's requantisation
term is proportional to the scale (measured: with scale 1, a Llama padding token's bound was 22× the observed error)."""


class ScaleMode(str, enum.Enum):
    """How activations are scaled into x_q: part of what a contributor commits to (its `Dequantisation`), never
    chosen per call."""

    PER_TENSOR = "per-tensor"   # one scale_x, fixed from the calibration activations, for every call
    PER_TOKEN = "per-token"     # each token's own max|x_t|/qmax, picked by whoever quantises x (the client)


@dataclass(frozen=True)
class QuantizedActivations:
    """x_q (T × d_in, of the activation width) and each token's scale (T,): x[t] ≈ scales[t] · x_q[t] (all equal per
    tensor)."""

    x_q: np.ndarray
    scales: np.ndarray


@dataclass(frozen=True)
class Dequantisation:
    """The public numbers that turn y_q into a float delta: delta[t, o] = factor · scale_x[t] · scale_B[o] · y_q[t, o]
    with factor = scaling · scale_A · 2^shift and scale_x[t] the calibrated `scale_x` (per tensor) or token t's own
    scale (per token: `quantize` returns it beside x_q, and `apply` takes it back)."""

    scaling: float
    scale_A: float
    scale_B: tuple[float, ...]
    scale_x: float
    """The calibrated activation scale; per token it is only the calibration's, each call brings its own."""
    shift: int
    x_mode: ScaleMode = ScaleMode.PER_TENSOR
    activation_bits: int = ACTIVATION_BITS_DEFAULT
    """x_q's width (the statement's `activation_bits`): scales are max|x| / (2^(bits−1) − 1)."""

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "x_mode", ScaleMode(self.x_mode))
        except ValueError:
            raise ValueError(f"x_mode must be one of {', '.join(m.value for m in ScaleMode)}, "
                             f"got {self.x_mode!r}") from None
        object.__setattr__(self, "activation_bits", check_activation_bits(self.activation_bits))

    @property
    def factor(self) -> float:
        """scaling · scale_A · 2^shift (per tensor also times scale_x: `factor` is what multiplies scale_B·y_q)."""
        base = self.scaling * self.scale_A * float(2 ** self.shift)
        return base * self.scale_x if self.x_mode is ScaleMode.PER_TENSOR else base

    def quantize(self, x: np.ndarray) -> QuantizedActivations:
        """x (T × d_in floats) → x_q (clipped to `activation_bits`) and each token's scale, in this dequantisation's
        scale mode."""
        x = finite_array(x, "activations")
        if x.ndim != 2:
            raise ValueError(f"activations must be T×d_in, got shape {x.shape}")
        rng = IntRange(self.activation_bits)
        if self.x_mode is ScaleMode.PER_TENSOR:
            scales = np.full(x.shape[0], float(self.scale_x))
        else:   # an all-zero token (a padding embedding) is 0 at any scale: the smallest keeps its bound at 0
            absmax = np.abs(x).max(axis=1, initial=0.0)
            scales = np.where(absmax > 0, absmax / rng.hi, ZERO_TOKEN_SCALE)
        return QuantizedActivations(np.clip(round_half_away(x / scales[:, None]), rng.lo, rng.hi), scales)

    def token_scales(self, tokens: int, x_scales: np.ndarray | None) -> np.ndarray:
        """The (T,) activation scales to dequantise T tokens with: the calibrated one per tensor, the given ones
        (from `quantize`) per token."""
        if self.x_mode is ScaleMode.PER_TENSOR:
            if x_scales is not None and np.any(np.asarray(x_scales, dtype=np.float64) != self.scale_x):
                raise ValueError("per-tensor activations all have the calibrated scale_x; other scales were given")
            return np.full(tokens, self.scale_x)
        if x_scales is None:
            raise ValueError("per-token activations: dequantising needs each token's scale (from quantize)")
        scales = finite_array(x_scales, "x_scales").reshape(-1)
        if scales.shape != (tokens,) or (scales <= 0).any():
            raise ValueError(f"x_scales must be {tokens} positive numbers, got shape {scales.shape}")
        return scales

    def apply(self, y_q: np.ndarray, x_scales: np.ndarray | None = None) -> np.ndarray:
        """The float delta (T × d_out) of y_q; per token, `x_scales` are the scales `quantize` returned."""
        y = np.asarray(y_q)
        if y.ndim != 2 or y.shape[1] != len(self.scale_B):
            raise ValueError(f"y_q must be T×{len(self.scale_B)}, got shape {y.shape}")
        scales = self.token_scales(y.shape[0], x_scales)
        base = self.scaling * self.scale_A * float(2 ** self.shift)
        return base * scales[:, None] * np.asarray(self.scale_B)[None, :] * y.astype(np.float64)

    def to_json(self) -> dict:
        return {"scaling": self.scaling, "scale_A": self.scale_A, "scale_B": list(self.scale_B),
                "scale_x": self.scale_x, "shift": self.shift, "x_mode": self.x_mode.value,
                "activation_bits": self.activation_bits}


SHIFT_HEADROOM_BITS = 1
"""The calibrated shift leaves z_q this many bits above the calibration's largest |z|: a call whose activations reach
further than calibration's would otherwise clamp (benchmarks/results/accuracy.md measures one bit against none)."""
GROUP_SCALE_BITS = 8
"""Group-wise scales: each (row, group) of lora_A gets an integer multiplier S in [1, 2^8 − 1] of its row's scale."""
GROUP_WEIGHT_BITS = 12
"""The statement width of a group-wise adapter's lora_A, S⊙A_q: |S·A_q| ≤ 255·7 = 1785 < 2^11."""
FLOAT64_UNIT = 2.0 ** -53
"""Unit roundoff of float64: the error bound adds a rigorous term for its own float evaluation."""


def _group_multipliers(A_eff: np.ndarray, group_size: int, qmax: int) -> np.ndarray:
    """S (r × d_in, constant over each group of `group_size` columns): 255·(the group's max|A_eff| / qmax), rounded
    up (so no A_eff/S·255 leaves ±qmax: no digit is clipped), in [1, 255]."""
    m = (1 << GROUP_SCALE_BITS) - 1
    r, d = A_eff.shape
    S = np.empty((r, d))
    for start in range(0, d, group_size):
        block = np.abs(A_eff[:, start:start + group_size]).max(axis=1, keepdims=True)
        S[:, start:start + group_size] = np.clip(np.ceil(block / qmax * m), 1, m)
    return S


@dataclass(frozen=True, eq=False)
class QuantizedLoRA:
    """A quantised adapter: delta[t, o] ≈ scaling · scale_B[o] · scale_A · scale_x[t] · 2^shift · y_q[t, o].

    Per-channel mode folds lora_A's per-row scales into lora_B's columns before B is quantised per output channel:
    B·A = (B·diag(a))·(diag(1/a)·A), so the contraction over the rank stays scale-free (scale_A = 1).
    The shift is chosen here, once, from calibration activations (or given), and then fixed in every statement;
    so are z_q's width (`z_bits`) and how activations are scaled (`x_mode`: one calibrated scale, or per token).
    """

    A_q: np.ndarray       # r × d_in, int4 (or int8)
    B_q: np.ndarray       # d_out × r
    scale_A: float
    scale_B: np.ndarray   # (d_out,): per output channel (constant when per-tensor)
    scale_x: float        # the calibrated per-tensor activation scale (per token: the calibration's only)
    scaling: float        # peft's s
    shift: int
    A_eff: np.ndarray     # the float matrix A_q approximates: A (per-tensor) or diag(1/a)·A (per-channel)
    B_eff: np.ndarray     # the float matrix scale_B·B_q approximates: B or B·diag(a)
    weight_bits: int = 4
    z_bits: int = Z_BITS_DEFAULT
    x_mode: ScaleMode = ScaleMode.PER_TENSOR
    activation_bits: int = ACTIVATION_BITS_DEFAULT
    group_size: int = 0
    """Group-wise lora_A scales over groups of this many input columns (0: none); A_q is then S⊙A_q (see from_float)."""
    A_step: np.ndarray | None = None
    """The rounding step of each A_q entry in real units (r × d_in): scale_A, or S[r, g]·scale_A per group."""

    @property
    def rank(self) -> int:
        return self.A_q.shape[0]

    @property
    def d_in(self) -> int:
        return self.A_q.shape[1]

    @property
    def d_out(self) -> int:
        return self.B_q.shape[0]

    @classmethod
    def from_float(cls, A: np.ndarray, B: np.ndarray, *, scaling: float, x_calibration: np.ndarray,
                   per_channel: bool = False, shift: int | None = None, weight_bits: int = 4,
                   z_bits: int = Z_BITS_DEFAULT, x_mode: ScaleMode | str = ScaleMode.PER_TENSOR,
                   headroom_bits: int = SHIFT_HEADROOM_BITS,
                   activation_bits: int = ACTIVATION_BITS_DEFAULT, group_size: int = 0) -> "QuantizedLoRA":
        """Quantise lora_A, lora_B (int4, or int8/12/16 with weight_bits); x to `activation_bits`; take the activation
        scale and (unless given) the shift — the smallest that clamps no z_q of `z_bits` bits with `headroom_bits` to
        spare — from calibration data, with the calibration activations quantised as calls will be (`x_mode`).

        group_size g > 0 (int4, per channel): lora_A's rows are scaled per group of g input columns, AWQ-style, as an
        exact integer statement: each row is first folded into B as per channel (A_eff spans ±7), then each (row,
        group) gets an integer multiplier S = clamp(⌈255·max|A_eff[r, group]|/7⌉, 1, 255) and int4
        digits A4 = clamp(round_half_away(255·A_eff/S), ±7), so A_eff ≈ (S⊙A4)/255. The statement proves
        z = x_q·(S⊙A4)ᵀ with S⊙A4 as int12 weights (`GROUP_WEIGHT_BITS`), B int4 values in the same statement; the
        adapter binding binds S⊙A4, which is all z depends on."""
        A, B, x = finite_array(A, "lora_A"), finite_array(B, "lora_B"), finite_array(x_calibration, "x_calibration")
        _check_lora_shapes(A, B, x)
        scaling = _check_scaling(scaling)
        z_bits = check_z_bits(z_bits)
        qmax = IntRange(weight_bits).hi
        group_size = check_int("group_size", group_size, 0, A.shape[1])
        A_step = None
        if group_size:
            if weight_bits != 4 or not per_channel:
                raise ValueError("group-wise scales quantise int4 weights per channel (weight_bits=4, per_channel)")
            a = symmetric_scale(np.abs(A).max(axis=1), qmax)
            A_eff, B_eff = A / a[:, None], B * a[None, :]
            S = _group_multipliers(A_eff, group_size, qmax)
            m = float((1 << GROUP_SCALE_BITS) - 1)
            A4 = np.clip(round_half_away(A_eff * m / S), -qmax, qmax)
            qa = QuantizedTensor(A4 * S.astype(np.int64), np.asarray(1.0 / m))
            A_step = S / m
            qb = quantize_weights(B_eff, bits=weight_bits, per_channel=True)
            scale_B = qb.scale
            weight_bits = GROUP_WEIGHT_BITS
        elif per_channel:
            a = symmetric_scale(np.abs(A).max(axis=1), qmax)
            A_eff, B_eff = A / a[:, None], B * a[None, :]
            # rows already span [-qmax, qmax]: per-tensor scale 1 (or less for zero rows)
            qa = quantize_weights(A_eff, bits=weight_bits)
            qb = quantize_weights(B_eff, bits=weight_bits, per_channel=True)
            scale_B = qb.scale
        else:
            A_eff, B_eff = A, B
            qa, qb = quantize_weights(A, bits=weight_bits), quantize_weights(B, bits=weight_bits)
            scale_B = np.full(B.shape[0], float(qb.scale))
        activation_bits = check_activation_bits(activation_bits)
        scale_x = float(symmetric_scale(np.array(np.abs(x).max(initial=0.0)), IntRange(activation_bits).hi))
        calls = Dequantisation(scaling, float(qa.scale), (1.0,), scale_x, 0, ScaleMode(x_mode), activation_bits)
        x_q = calls.quantize(x).x_q
        headroom = check_int("headroom_bits", headroom_bits, 0, z_bits - 1)
        chosen = choose_shift((x_q @ qa.values.T) << headroom, z_bits) if shift is None else check_shift(shift)
        if A_step is None:
            A_step = np.full(qa.values.shape, float(qa.scale))
        return cls(qa.values, qb.values, float(qa.scale), np.asarray(scale_B, dtype=np.float64), scale_x,
                   scaling, chosen, A_eff, B_eff, weight_bits, z_bits, ScaleMode(x_mode), activation_bits,
                   group_size, A_step)

    # -- into the statement ------------------------------------------------------------------------------------------
    def statement(self, tokens: int, *, x_binding: ActivationBinding | str = ActivationBinding.PUBLIC,
                  adapter_binding: AdapterBinding | str = AdapterBinding.FIXED,
                  y_binding: OutputBinding | str = OutputBinding.PUBLIC) -> LoRAStatement:
        """The statement proving this adapter on `tokens` tokens (its shift fixed here, not at proving time)."""
        shape = LoRAShape(d_in=self.d_in, d_out=self.d_out, rank=self.rank, tokens=tokens)
        return LoRAStatement(shape=shape, shift=self.shift, x_binding=x_binding, adapter_binding=adapter_binding,
                             y_binding=y_binding, weight_bits=self.weight_bits, z_bits=self.z_bits,
                             activation_bits=self.activation_bits)

    def quantize_activations(self, x: np.ndarray) -> QuantizedActivations:
        """x_q (clipped to its width) and each token's scale, in this adapter's scale mode
        (`Dequantisation.quantize`)."""
        return self.dequantisation.quantize(x)

    def quantize_x(self, x: np.ndarray) -> np.ndarray:
        """x_q for new activations (the calibrated scale, or each token's own in per-token mode)."""
        return self.quantize_activations(x).x_q

    def witness(self, x_q: np.ndarray) -> LoRAWitness:
        return LoRAWitness(A_q=self.A_q, B_q=self.B_q, x_q=x_q)

    def y_q(self, x_q: np.ndarray) -> np.ndarray:
        """The statement's output for quantised activations (zkref.lora.statement.evaluate)."""
        w = self.witness(x_q)
        return evaluate(self.statement(w.shape.tokens), w).y_q

    # -- back to floats --------------------------------------------------------------------------------------------
    @property
    def dequantisation(self) -> Dequantisation:
        return Dequantisation(self.scaling, self.scale_A, tuple(float(v) for v in self.scale_B), self.scale_x,
                              self.shift, self.x_mode, self.activation_bits)

    def dequantize(self, y_q: np.ndarray, x_scales: np.ndarray | None = None) -> np.ndarray:
        """Float delta from the statement's integer output (T × d_out); per token, with the scales x was quantised
        with (`quantize_activations`)."""
        return self.dequantisation.apply(y_q, x_scales)

    def _terms(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """The call's quantities the error bounds are made of (per token t; spec: quantisation.md, "Error bound")."""
        x = finite_array(x, "x")
        qx = self.quantize_activations(x)
        w = self.witness(qx.x_q)
        trace = evaluate(self.statement(w.shape.tokens), w)
        sigma = qx.scales[:, None]                                        # T × 1: each token's scale
        x_hat = sigma * qx.x_q
        unit = self.scale_A * sigma                                       # T × 1
        return dict(x=x, x_hat=x_hat, ex=x - x_hat, unit=unit, z=trace.z, z_q=trace.z_q, scales=qx.scales,
                    y_q=trace.y_q, u_tilde=unit * float(2 ** self.shift) * trace.z_q,
                    rho=unit * (trace.z - (trace.z_q << self.shift)))

    def _requant_worst(self, t: dict[str, np.ndarray]) -> np.ndarray:
        """|ρ| at its worst over every rounding the statement admits: scale_A·σ_t·max(|z − 2^shift·z_q|, 2^(shift−1))
        (the second is any unclamped rounding's largest; the first covers clamping)."""
        half = float(2 ** (self.shift - 1)) if self.shift else 0.0
        return np.maximum(np.abs(t["rho"]), t["unit"] * half)

    def worst_case_error_bound(self, x: np.ndarray) -> np.ndarray:
        """A rigorous a-priori bound on |dequantize(y_q) − lora_delta_float(x)| per output (T × d_out): every rounding
        (activations, both weights, the requantisation) taken at its worst, as if only its magnitude were known.

        |err| <= s·( |B_eff|·D + (scale_B/2)·Σᵢ|ũᵢ| ), D = |A_eff|·|x − x̂| + (step_A/2)·|x̂| + R (step_A = scale_A,
        or per group S·scale_A),
        with x̂ = scale_x·x_q, ũ = scale_A·scale_x·2^shift·z_q and R = scale_A·scale_x·max(|z − 2^shift·z_q|,
        2^(shift−1)) (the rounding's worst, or the clamped value).
        """
        t = self._terms(x)
        A_step = np.full(self.A_q.shape, self.scale_A) if self.A_step is None else self.A_step
        D = np.abs(t["ex"]) @ np.abs(self.A_eff).T + np.abs(t["x_hat"]) @ (A_step / 2).T + self._requant_worst(t)
        s = abs(self.scaling)
        bound = s * (D @ np.abs(self.B_eff).T
                     + (self.scale_B[None, :] / 2) * np.abs(t["u_tilde"]).sum(axis=1, keepdims=True))
        return bound * (1 + 1e-9) + 1e-12                                  # float64 evaluation slack

    def error_bound(self, x: np.ndarray) -> np.ndarray:
        """A rigorous bound on |dequantize(y_q) − lora_delta_float(x)| per output (T × d_out), tight: see the spec.

        The error is s·(B_eff·e + E_B·ũ + B_eff·ρ) with e = A_eff·(x − x̂) + E_A·x̂ (the activations' and lora_A's
        rounding), E_B = B_eff − diag(scale_B)·B_q and ρ = scale_A·σ_t·(z − 2^shift·z_q) (the requantisation). The
        first two are fixed by the call's x and the adapter and are evaluated exactly; ρ is taken at its worst over
        every rounding the statement admits (|z − 2^shift·z_q| ≤ 2^(shift−1), or its clamped value); a last term
        bounds float64's own evaluation error (γ_n of the term-wise magnitudes).
        """
        t = self._terms(x)
        E_A = self.A_eff - self.scale_A * self.A_q
        E_B = self.B_eff - self.scale_B[:, None] * self.B_q
        e = t["ex"] @ self.A_eff.T + t["x_hat"] @ E_A.T                     # T × r
        exact = e @ self.B_eff.T + t["u_tilde"] @ E_B.T                     # T × d_out
        rho = self._requant_worst(t)
        s = abs(self.scaling)
        magnitude = (np.abs(t["x"]) + np.abs(t["x_hat"])) @ np.abs(self.A_eff).T + np.abs(t["x_hat"]) @ np.abs(E_A).T
        magnitude = (magnitude + np.abs(t["unit"] * t["z"]) + np.abs(t["u_tilde"])) @ np.abs(self.B_eff).T \
            + np.abs(t["u_tilde"]) @ (np.abs(E_B) + np.abs(self.scale_B[:, None] * self.B_q)).T
        n = self.d_in + self.rank + 8
        gamma = 4 * n * FLOAT64_UNIT / (1 - 4 * n * FLOAT64_UNIT)
        return s * (np.abs(exact) + rho @ np.abs(self.B_eff).T + gamma * magnitude) + 1e-300

    def check(self, x: np.ndarray, y_q: np.ndarray) -> DeltaCheck:
        """Dequantised output against the float delta of x: max error, the bound, and whether it holds."""
        x = finite_array(x, "x")
        ref = lora_delta_float(x, self.A_eff, self.B_eff, self.scaling)
        err = np.abs(self.dequantize(y_q, self.quantize_activations(x).scales) - ref)
        bound = self.error_bound(x)
        return DeltaCheck(float(err.max(initial=0.0)), float(bound.max(initial=0.0)),
                          float(np.abs(ref).max(initial=0.0)), bool((err <= bound).all()))
