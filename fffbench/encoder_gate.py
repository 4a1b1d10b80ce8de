"""The correctness gate of an encoder row: every layer on what the timed code computed, then the output.

A single flipped FFF decision changes that token's feedforward output completely, and through
attention every later layer of its sequence a little; over 16 layers of float32 a few tokens in a
batch of 16384 take another path somewhere, so the final outputs cannot all match a float64 model
the way one layer's rows do. The gate therefore checks in two parts:

1. **Layer by layer, strictly** (what decides ``wrong``). The kernel's first call kept, for
   :data:`fffbench.encoder_kernel.GATE_TOKENS` tokens of whole sequences (the first and the last
   sequences of the batch), each layer's input ``h``, its feedforward's input ``f`` and output ``o``.
   For every layer: ``f`` must match ``norm2(h + attention(norm1(h)))`` computed in float64 from the
   kept ``h``, and ``o`` must match the float64 feedforward of the kept ``f`` under the layer gate of
   :mod:`fffbench.correctness` (decisive rows within the dtype's tolerance; near-ties may route
   otherwise); the embedding must match too. An error anywhere is caught in the layer it enters.
   The FFF layers' path agreement (share of the kept rows within tolerance, averaged over layers)
   is the row's ``path_agreement``.
2. **End to end, against the float64 encoder** on every token: ``rel_err`` (relative Frobenius
   error of the output), ``max_row_err`` (worst token, relative to the RMS token norm), and
   ``token_agreement`` (share of tokens within :data:`E2E_ROW_TOL`). A BERT encoder (no routing) must
   have ``rel_err`` within :data:`E2E_TOL` (float32 1e-4: 16 layers of float32 rounding stay near
   1e-6 here, so 1e-4 leaves two orders of margin while any wrong weight or layout is far above it);
   an UltraFastBERT encoder must have at least :data:`E2E_MIN_AGREEMENT` of its tokens agree (a few
   tokens take another path; a broken kernel, or one wrong only on rows the first part did not
   keep, leaves almost none). ``decisive_frac`` is the share of tokens none of whose own float64
   logits, in any layer, is within the dtype's rounding distance of zero.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fffbench import encoder as E
from fffbench.correctness import TOLERANCE, CheckResult, Reference, check_output

#: (global relative error of a BERT encoder's output, per-token error relative to the RMS token norm)
E2E_TOL = {"float32": 1e-4, "bfloat16": 8e-2, "float16": 2e-2}
E2E_ROW_TOL = {"float32": 1e-3, "bfloat16": 0.25, "float16": 6e-2}
#: share of an UltraFastBERT encoder's tokens that must match the float64 encoder end to end
E2E_MIN_AGREEMENT = {"float32": 0.9, "bfloat16": 0.5, "float16": 0.5}


@dataclass(frozen=True)
class EncoderCheck(CheckResult):
    token_agreement: float = math.nan


def _continuous(y, ref64, width: int, dtype: str) -> CheckResult:
    return check_output(y, Reference(ref64, np.full(ref64.shape[0], np.inf), width), dtype, "ff")


def check_layers(spec, ffn, weights: dict, states: dict, dtype: str) -> tuple[str, list[float]]:
    """(the first failure, or ''; the FFF path agreement of each layer) of part 1."""
    base, d = weights["base"], spec.width
    n_seq = len(states["sequences"])
    h0 = E.embed64(spec, base, np.asarray(states["tokens"]))
    chk = _continuous(states["h"][0], h0, d, dtype)
    if not chk.passed:
        return f"embedding: {chk.reason}", []
    agreement = []
    for i in range(spec.layers):
        lw = base["layers"][i]
        h = np.asarray(states["h"][i], dtype=np.float64)
        f_ref = E.layer_norm64(h + E.attention64(spec, lw, h, n_seq), lw["norm2"], spec.eps)
        chk = _continuous(states["f"][i], f_ref, d, dtype)
        if not chk.passed:
            return f"layer {i} attention and norm2: {chk.reason}", agreement
        ref = Reference.compute(ffn, E.to64(weights["ffn"][i]), states["f"][i])
        chk = check_output(states["o"][i], ref, dtype, ffn.family)
        if not chk.passed:
            return f"layer {i} feedforward: {chk.reason}", agreement
        agreement.append(chk.path_agreement)
    return "", agreement


def end_to_end(y, ref: Reference, dtype: str) -> dict:
    """Part 2's numbers: rel_err, max_row_err, token_agreement, decisive_frac."""
    y = np.asarray(y, dtype=np.float64)
    diff = np.linalg.norm(y - ref.y, axis=1)
    norms = np.linalg.norm(ref.y, axis=1)
    rms = max(float(np.sqrt(np.mean(norms ** 2))), 1e-30)
    return {"rel_err": float(np.linalg.norm(diff) / max(np.linalg.norm(norms), 1e-30)),
            "max_row_err": float((diff / rms).max()) if len(diff) else 0.0,
            "token_agreement": float(np.mean(diff / rms <= E2E_ROW_TOL[dtype])) if len(diff) else 1.0,
            "decisive_frac": float(ref.decisive(dtype).mean()) if len(diff) else 1.0}


def check_encoder(case, kernel, y, ref: Reference) -> EncoderCheck:
    """The gate of the module docstring for ``kernel``'s first output ``y`` (numpy, tokens x width)."""
    nan = math.nan
    y = np.asarray(y)
    if y.shape != ref.y.shape:
        return EncoderCheck(False, nan, nan, nan, nan, f"output shape {y.shape}, expected {ref.y.shape}")
    if not np.isfinite(y).all():
        bad = int((~np.isfinite(y)).any(axis=1).sum())
        return EncoderCheck(False, nan, nan, nan, nan, f"{bad} tokens hold NaN or Inf")
    states, kernel.states = kernel.states, None
    if states is None:
        return EncoderCheck(False, nan, nan, nan, nan, "the encoder kept no states of its first call to check")
    e2e = end_to_end(y, ref, case.dtype)
    failure, agreement = check_layers(kernel.spec, kernel.ffn_layer, kernel.weights, states, case.dtype)
    path = float(np.mean(agreement)) if agreement and case.family == "fff" else nan
    result = dict(rel_err=e2e["rel_err"], max_row_err=e2e["max_row_err"], path_agreement=path,
                  decisive_frac=e2e["decisive_frac"], token_agreement=e2e["token_agreement"])
    if failure:
        return EncoderCheck(False, reason=failure, **result)
    if case.family == "ff" and e2e["rel_err"] > E2E_TOL[case.dtype]:
        return EncoderCheck(False, reason=f"output relative error {e2e['rel_err']:.2e} above {E2E_TOL[case.dtype]:.0e} "
                                          f"for {case.dtype} over {kernel.spec.layers} layers", **result)
    if case.family == "fff" and e2e["token_agreement"] < E2E_MIN_AGREEMENT[case.dtype]:
        return EncoderCheck(False, reason=f"only {e2e['token_agreement']:.1%} of tokens match the float64 encoder "
                                          f"(at least {E2E_MIN_AGREEMENT[case.dtype]:.0%} for {case.dtype})", **result)
    return EncoderCheck(True, **result)


__all__ = ["E2E_MIN_AGREEMENT", "E2E_ROW_TOL", "E2E_TOL", "TOLERANCE", "EncoderCheck", "check_encoder", "check_layers",
           "end_to_end"]
