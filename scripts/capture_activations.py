#!/usr/bin/env python3
"""Capture the published UltraFastBERT's FFF inputs on real text, for ``input: activations``.

Run on a machine with the checkpoint, ``transformers`` and the ``cramming`` package of the
UltraFastBERT repository (``training/``; importing it registers the crammedBERT model with
transformers)::

    python scripts/capture_activations.py path/to/UltraFastBERT-1x11-long --text corpus.txt

It tokenizes the text, cuts it into ``--sequences`` sequences of ``--seq-len`` tokens (128 x 128 by
default: the 16384 rows of the paper's batch), runs the model once in float32 with a forward hook
on each layer's ``ffn`` and writes ``activations.safetensors`` (default: in the checkpoint's folder,
where ``input: activations`` looks for it) with

- ``layers.{i}.ffn_input`` float32 [tokens, hidden]: layer i's FFF input (its ``norm2`` output),
  sequence by sequence (the model runs sequence-first; the hook's [S, B, H] is reordered to B, S);
- ``layers.{i}.ffn_output`` float32 [tokens, hidden] with ``--outputs``: what the training code's
  FFF returned, so fffbench's reference can be checked against it on real inputs
  (``python scripts/capture_activations.py --check FILE CHECKPOINT``);
- ``input_ids`` int64 [sequences, seq_len], and metadata: the checkpoint's sha256, the text's,
  the shapes and the library versions.

fffbench itself never imports transformers or cramming; only this script does.
"""
from __future__ import annotations

import argparse
import hashlib
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def ffn_modules(model) -> list:
    """Each transformer layer's ``ffn`` module, in layer order (names ``...layers.{i}.ffn``)."""
    found = []
    for name, module in model.named_modules():
        m = re.search(r"(?:^|\.)layers\.(\d+)\.ffn$", name)
        if m:
            found.append((int(m.group(1)), module))
    if not found:
        raise SystemExit("no '...layers.{i}.ffn' modules in the model: is this the crammedBERT model?")
    return [m for _, m in sorted(found, key=lambda t: t[0])]


def capture(model, input_ids, seq_first: bool = True, outputs: bool = False) -> dict:
    """{name: tensor} of every layer's FFN input (and output) for one forward pass of ``input_ids``
    [sequences, seq_len]; ``seq_first``: the model's hidden states are [S, B, H] (crammedBERT)."""
    import torch

    store: dict = {}

    def reorder(t):
        t = t.detach().float()
        if t.dim() == 3 and seq_first:
            t = t.transpose(0, 1)
        return t.reshape(-1, t.shape[-1]).contiguous().cpu()

    handles = []
    for i, module in enumerate(ffn_modules(model)):
        def hook(mod, args, out, i=i):
            store[f"layers.{i}.ffn_input"] = reorder(args[0])
            if outputs:
                store[f"layers.{i}.ffn_output"] = reorder(out)
        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(input_ids)
    finally:
        for h in handles:
            h.remove()
    store["input_ids"] = input_ids.detach().cpu().to(torch.int64).contiguous()
    return store


def tokens_of(tokenizer, text: str, sequences: int, seq_len: int):
    """[sequences, seq_len] token ids cut from ``text`` (repeated if it is too short, with a warning)."""
    import torch

    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    need = sequences * seq_len
    if not ids:
        raise SystemExit("the text gives no tokens")
    if len(ids) < need:
        print(f"warning: the text has {len(ids)} tokens, {need} are needed: it is repeated", file=sys.stderr)
        ids = (ids * (need // len(ids) + 1))
    return torch.tensor(ids[:need], dtype=torch.long).view(sequences, seq_len)


def save(tensors: dict, out: Path, metadata: dict) -> None:
    from safetensors.torch import save_file

    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out), metadata={k: str(v) for k, v in metadata.items()})


def check(capture_file: Path, checkpoint: Path) -> int:
    """fffbench's float64 reference of each layer on the captured inputs against the captured outputs."""
    import numpy as np

    import fffbench as fb
    from fffbench.stfile import TensorFile

    ckpt, tf = fb.load_checkpoint(checkpoint), TensorFile(capture_file)
    worst = 0.0
    for i in range(ckpt.num_layers):
        if f"layers.{i}.ffn_output" not in tf.names:
            raise SystemExit(f"{capture_file}: no layers.{i}.ffn_output (capture with --outputs)")
        x, y = tf.array(f"layers.{i}.ffn_input"), tf.array(f"layers.{i}.ffn_output")
        layer, w = ckpt.fff(i)
        ref = layer.reference(x, w)
        err = float(np.abs(ref - y).max() / max(np.abs(ref).max(), 1e-30))
        worst = max(worst, err)
        print(f"layer {i}: max |reference - training code| / max |reference| = {err:.2e}")
    print(f"worst {worst:.2e} (float32 training code against the float64 reference; near-ties may route apart)")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", type=Path, help="the checkpoint folder (config.json, model.safetensors, tokenizer)")
    ap.add_argument("--text", type=Path, help="a UTF-8 text file to tokenize (real text: routing depends on it)")
    ap.add_argument("--out", type=Path, help="output file (default: CHECKPOINT/activations.safetensors)")
    ap.add_argument("--sequences", type=int, default=128)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--outputs", action="store_true", help="also store each FFF's output (for --check)")
    ap.add_argument("--check", type=Path, metavar="CAPTURE", help="check fffbench's reference against a capture "
                                                                   "made with --outputs, and exit")
    args = ap.parse_args(argv)
    if args.check:
        return check(args.check, args.checkpoint)
    if args.text is None:
        ap.error("--text FILE is needed (the routing of real text is what is measured)")
    import cramming  # noqa: F401  (registers crammedBERT with transformers)
    import torch
    import transformers
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from fffbench.stfile import file_sha256

    tokenizer = AutoTokenizer.from_pretrained(args.checkpoint)
    model = AutoModelForMaskedLM.from_pretrained(args.checkpoint).float().eval()
    text = args.text.read_text(encoding="utf-8")
    ids = tokens_of(tokenizer, text, args.sequences, args.seq_len)
    tensors = capture(model, ids, outputs=args.outputs)
    out = args.out or args.checkpoint / "activations.safetensors"
    weights = args.checkpoint / "model.safetensors"
    save(tensors, out, {"format": "fffbench-activations", "layers": len(ffn_modules(model)),
                        "sequences": args.sequences, "seq_len": args.seq_len,
                        "checkpoint_sha256": file_sha256(weights) if weights.exists() else "",
                        "text_sha256": hashlib.sha256(text.encode()).hexdigest(), "text": args.text.name,
                        "torch": torch.__version__, "transformers": transformers.__version__})
    print(f"wrote {out}: {len(ffn_modules(model))} layers x {args.sequences * args.seq_len} tokens")
    return 0


if __name__ == "__main__":
    sys.exit(main())
