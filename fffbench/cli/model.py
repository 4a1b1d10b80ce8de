"""``fffbench checkpoint``: open an UltraFastBERT checkpoint the way a run does and say what it holds."""
from __future__ import annotations

from pathlib import Path

import typer

from fffbench.cli.app import app, fail


@app.command(epilog="Examples:\n\n  fffbench checkpoint path/to/UltraFastBERT-1x11-long\n\n"
                    "  fffbench checkpoint model.safetensors --depth 11 --trees 1 --layer 7")
def checkpoint(path: Path = typer.Argument(..., help="A checkpoint folder (config.json or model_config.json and "
                                                     "model.safetensors), or the .safetensors file."),
               depth: int | None = typer.Option(None, min=0, help="The FFF depth (needed for a bare file)."),
               trees: int | None = typer.Option(None, min=1, help="The number of trees (needed for a bare file)."),
               layer: list[int] | None = typer.Option(None, help="Also read this layer's FFF (repeatable): its "
                                                                 "tensors are copied and checked finite.")):
    """Check a checkpoint: config, every FFF tensor's shape and dtype, the encoder's tensors, the sha256."""
    from fffbench.checkpoint import CheckpointError, load_checkpoint

    try:
        ckpt = load_checkpoint(path, depth=depth, trees=trees)
        layers = [(i, *ckpt.fff(i)) for i in layer or []]
        typer.echo(ckpt.describe())
        typer.echo(f"file: {ckpt.file.resolve()}; sha256 {ckpt.sha256}")
        try:
            ckpt.check_encoder(ckpt.num_layers)
            typer.echo(f"encoder: every tensor of the {ckpt.num_layers}-layer crammed-BERT encoder is present")
        except CheckpointError as e:
            typer.echo(f"encoder: not usable ({e})")
        for i, lay, w in layers:
            typer.echo(f"layer {i}: {lay.label}, w1 {w['w1'].shape}, b1 {w['b1'].shape}, w2 {w['w2'].shape}: finite")
    except CheckpointError as e:
        fail(str(e))
