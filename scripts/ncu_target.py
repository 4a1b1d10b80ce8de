"""One warm call of the v4 (default) and v3 optimized FFF, for a hardware-counter profile:

    ncu --clock-control none --cache-control none -k regex:'stage|walk|bag|scatter' \\
        python scripts/ncu_target.py

Each variant is called twice; profile the second call (the first warms L2 as a timed call
would find it).
"""
import torch

import fffbench as fb
from fffbench.backends.cuda_kernels import FffOptimized

layer = fb.FFF(width=768, depth=11)
w = layer.init_weights(0)
x = torch.as_tensor(fb.make_input("gaussian", 16384, 768, seed=1)).cuda()
for dtype, tdt in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
    for opts in (dict(variant="v4"), dict(variant="v3")):
        k = FffOptimized(layer, w, "cuda", dtype, **opts)
        xt = x.to(tdt)
        for _ in range(2):
            k(xt)
        torch.cuda.synchronize()
