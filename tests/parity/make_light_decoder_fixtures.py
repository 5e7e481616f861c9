#!/usr/bin/env python3
"""Parity fixture for the light decoder (src/model/vae/light_decoder.rs).

The light decoder has the architecture of the published taew2_2 decoder
(madebyollin/taehv, `TAEHV.decoder`, base variant). That project is not on
PyPI, so this script states the architecture directly in PyTorch modules
(nn.Conv2d, nn.Upsample, F.pixel_shuffle, the zero-padded time shift of its
parallel decode) with the reference's layer indices, so the state-dict names
are the published ones. The candle code is checked against these PyTorch
ops, on the `tiny` config of src/config.rs (LightDecoderConfig::tiny with the
tiny VAE's z_dim 8 and patch 2).

Like a published checkpoint, the stride-1 temporal grow at index 7 is stored
with stride-2 weights (2x the rows); loaders keep the last rows
(the reference's `patch_tgrow_layers`).

Writes tests/fixtures/light_decoder_tiny.safetensors:
    decoder.*              weights (taehv names)
    in.latents   [1, 8, 7, 2, 3]    1 reference + 2 chunks of 3 (normalized latents)
    out.decoded  [1, 3, 25, 32, 48] whole-sequence decode, mapped to [-1, 1]

Run from the repository root:  python3 tests/parity/make_light_decoder_fixtures.py
"""

import pathlib

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "light_decoder_tiny.safetensors"

# LightDecoderConfig::tiny() and VaeConfig::tiny() in src/config.rs.
CHANNELS = [16, 12, 8, 8]
TIME_UP = [False, True, True]
SPACE_UP = [True, True, True]
Z_DIM = 8
PATCH = 2


class Clamp(nn.Module):
    def forward(self, x):
        return torch.tanh(x / 3) * 3


class Mem(nn.Module):
    """relu(conv(relu(conv(relu(conv([x, x_prev]))))) + x)."""

    def __init__(self, c):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(2 * c, c, 3, padding=1), nn.ReLU(),
            nn.Conv2d(c, c, 3, padding=1), nn.ReLU(),
            nn.Conv2d(c, c, 3, padding=1),
        )

    def forward(self, x, past):
        return F.relu(self.conv(torch.cat([x, past], 1)) + x)


class Grow(nn.Module):
    def __init__(self, c, stride):
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(c, c * stride, 1, bias=False)

    def forward(self, x):
        n, c, h, w = x.shape
        return self.conv(x).reshape(n * self.stride, c, h, w)


def build():
    c0, c1, c2, c3 = CHANNELS
    layers = [Clamp(), nn.Conv2d(Z_DIM, c0, 3, padding=1), nn.ReLU()]
    for s, (c, nxt) in enumerate([(c0, c1), (c1, c2), (c2, c3)]):
        layers += [Mem(c), Mem(c), Mem(c)]
        layers.append(nn.Upsample(scale_factor=2 if SPACE_UP[s] else 1))
        layers.append(Grow(c, 2 if TIME_UP[s] else 1))
        layers.append(nn.Conv2d(c, nxt, 3, padding=1, bias=False))
    layers += [nn.ReLU(), nn.Conv2d(c3, 3 * PATCH * PATCH, 3, padding=1)]
    return nn.Sequential(*layers)


def decode(model, z):
    """z [N, C, T, h, w] -> video [N, 3, T', H, W] in [0, 1], startup frames trimmed."""
    n, _, t, _, _ = z.shape
    x = z.permute(0, 2, 1, 3, 4).reshape(n * t, *z.shape[1:2], *z.shape[3:])
    for block in model:
        if isinstance(block, Mem):
            nt, c, h, w = x.shape
            seq = x.reshape(n, nt // n, c, h, w)
            past = F.pad(seq, (0, 0, 0, 0, 0, 0, 1, 0))[:, : nt // n].reshape(x.shape)
            x = block(x, past)
        else:
            x = block(x)
    x = F.pixel_shuffle(x, PATCH).clamp(0, 1)
    nt, c, h, w = x.shape
    video = x.reshape(n, nt // n, c, h, w)
    t_up = 2 ** sum(TIME_UP)
    return video[:, t_up - 1 :].permute(0, 2, 1, 3, 4)


def main():
    torch.manual_seed(0)
    model = build().eval()
    with torch.no_grad():
        # Biases away from PyTorch's small default so ReLUs cut real values.
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
        z = torch.randn(1, Z_DIM, 7, 2, 3)
        out = decode(model, z) * 2 - 1
    tensors = {f"decoder.{k}": v.contiguous() for k, v in model.state_dict().items()}
    # Store the stride-1 grow at index 7 as a stride-2 one (published layout):
    # the real rows are the *last* C.
    w7 = tensors["decoder.7.conv.weight"]
    tensors["decoder.7.conv.weight"] = torch.cat([torch.randn_like(w7), w7], 0).contiguous()
    tensors["in.latents"] = z.contiguous()
    tensors["out.decoded"] = out.contiguous()
    save_file(tensors, str(OUT))
    print(f"wrote {OUT} ({len(tensors)} tensors), out.decoded {tuple(out.shape)}")


if __name__ == "__main__":
    main()
