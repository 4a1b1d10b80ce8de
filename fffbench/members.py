"""What a worker builds and checks for one member of a group: the backend's kernel on the case's
layer (and the correctness gate of :mod:`fffbench.correctness`), or, for an encoder case, the
crammed-BERT encoder whose feedforward is that backend, one kernel per model layer
(:mod:`fffbench.encoder_kernel`, gated by :mod:`fffbench.encoder_gate`)."""
from __future__ import annotations


def build(case, backend: str, weights, threads: int):
    """The kernel a member times."""
    from fffbench.registry import get_backend

    b = get_backend(backend)

    def one(layer, w):
        return b.build(layer, w, device=case.device, dtype=case.dtype, threads=threads)

    if not case.model:
        return one(case.layer, weights)
    from fffbench.encoder_kernel import build_encoder

    return build_encoder(case, weights, one)


def check(case, kernel, y, reference_path: str):
    """The correctness gate of a member's first output ``y`` (as ``kernel.run`` returned it)."""
    from fffbench.casedata import load_reference

    ref = load_reference(reference_path, case.width)
    if not case.model:
        from fffbench.correctness import check_output

        return check_output(kernel.to_numpy(y), ref, case.dtype, case.family)
    from fffbench.encoder_gate import check_encoder

    return check_encoder(case, kernel, kernel.to_numpy(y), ref)
