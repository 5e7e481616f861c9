#!/usr/bin/env python3
"""Pack a training stage folder (runs/<stage>/) into a small committed
checkpoint: params.safetensors in f16 + state.json, no optimizer moments.
`streamavatar train <stage> --out <copy of the packed folder> --resume`
continues from it with fresh AdamW moments (train/checkpoint.rs).

usage: pack.py <runs/stage> <train/checkpoints/mini/stage>
"""
import json
import os
import shutil
import sys

import numpy as np
from safetensors.numpy import load_file, save_file


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src, dst = sys.argv[1], sys.argv[2]
    os.makedirs(dst, exist_ok=True)
    params = load_file(os.path.join(src, "params.safetensors"))
    # The VAE's measured latent statistics stay f32: later stages normalise with them.
    keep = ("latents_mean", "latents_std")
    half = {k: v.astype(np.float16) if v.dtype == np.float32 and k not in keep else v for k, v in params.items()}
    save_file(half, os.path.join(dst, "params.safetensors"))
    shutil.copyfile(os.path.join(src, "state.json"), os.path.join(dst, "state.json"))
    for extra in ("critic.safetensors",):
        if os.path.exists(os.path.join(src, extra)):
            t = load_file(os.path.join(src, extra))
            save_file({k: v.astype(np.float16) for k, v in t.items()}, os.path.join(dst, extra))
    state = json.load(open(os.path.join(dst, "state.json")))
    print(f"{dst}: stage {state['stage']} step {state['step']}, {len(half)} tensors")


if __name__ == "__main__":
    main()
