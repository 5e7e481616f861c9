#!/usr/bin/env python3
"""Parity fixtures for the Wan2.2 VAE (src/model/vae/).

Builds diffusers `AutoencoderKLWan` with the `tiny` Wan2.2-style config of
src/config.rs (is_residual, patch_size 2, 12 in/out channels), seed 0, random
init with the RMS-norm gammas perturbed away from 1 so they matter, and writes:

  tests/fixtures/vae_tiny.safetensors
      weights under diffusers names, plus
      in.video       [1, 3, 9, 32, 64]  in [-1, 1]
      in.image       [1, 3, 1, 32, 64]  (first frame of the video)
      in.latents     [1, z, 7, 2, 4]    (1 reference + 2 chunks of 3)
      out.video_mu / out.video_logvar   encode(in.video)
      out.image_mu                      encode(in.image)
      out.decoded    [1, 3, 25, 32, 64] decode(in.latents), clamped to [-1, 1]
  tests/fixtures/vae_tiny_wan_names.safetensors
      the same weights under the original Wan2.2 names (wan/modules/vae2_2.py)

Run from the repository root:  python3 tests/parity/make_vae_fixtures.py
"""

import pathlib
import re

import torch
from safetensors.torch import save_file
from diffusers import AutoencoderKLWan

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures"

# Must match VaeConfig::tiny() in src/config.rs (ModelConfig::tiny().vae).
TINY = dict(
    base_dim=8,
    decoder_base_dim=6,
    z_dim=8,
    dim_mult=[1, 2, 2, 2],
    num_res_blocks=1,
    attn_scales=[],
    temperal_downsample=[False, True, True],
    is_residual=True,
    in_channels=12,
    out_channels=12,
    patch_size=2,
    scale_factor_temporal=4,
    scale_factor_spatial=16,
    latents_mean=[0.0] * 8,
    latents_std=[1.0] * 8,
)

RESNET_PARTS = {
    "norm1.gamma": "residual.0.gamma",
    "conv1.weight": "residual.2.weight",
    "conv1.bias": "residual.2.bias",
    "norm2.gamma": "residual.3.gamma",
    "conv2.weight": "residual.6.weight",
    "conv2.bias": "residual.6.bias",
    "conv_shortcut.weight": "shortcut.weight",
    "conv_shortcut.bias": "shortcut.bias",
}


def diffusers_to_wan(name: str, num_res_blocks: int) -> str:
    """Diffusers AutoencoderKLWan name -> original Wan2.2 (vae2_2.py) name.

    The inverse of diffusers' scripts/convert_wan_to_diffusers.py::convert_vae_22.
    """
    fixed = {
        "quant_conv.weight": "conv1.weight",
        "quant_conv.bias": "conv1.bias",
        "post_quant_conv.weight": "conv2.weight",
        "post_quant_conv.bias": "conv2.bias",
    }
    if name in fixed:
        return fixed[name]
    for side in ("encoder", "decoder"):
        p = side + "."
        if not name.startswith(p):
            continue
        rest = name[len(p):]
        if rest.startswith("conv_in."):
            return p + "conv1." + rest[len("conv_in."):]
        if rest.startswith("norm_out."):
            return p + "head.0." + rest[len("norm_out."):]
        if rest.startswith("conv_out."):
            return p + "head.2." + rest[len("conv_out."):]
        m = re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.+)", rest)
        if m:
            return p + f"middle.{2 * int(m.group(1))}." + RESNET_PARTS[m.group(2)]
        m = re.fullmatch(r"mid_block\.attentions\.0\.(.+)", rest)
        if m:
            return p + "middle.1." + m.group(1)
        m = re.fullmatch(r"(down|up)_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", rest)
        if m:
            outer = "downsamples" if m.group(1) == "down" else "upsamples"
            return p + f"{outer}.{m.group(2)}.{outer}.{m.group(3)}." + RESNET_PARTS[m.group(4)]
        m = re.fullmatch(r"down_blocks\.(\d+)\.downsampler\.(.+)", rest)
        if m:
            return p + f"downsamples.{m.group(1)}.downsamples.{num_res_blocks}.{m.group(2)}"
        m = re.fullmatch(r"up_blocks\.(\d+)\.upsampler\.(.+)", rest)
        if m:
            return p + f"upsamples.{m.group(1)}.upsamples.{num_res_blocks + 1}.{m.group(2)}"
    raise KeyError(f"no Wan2.2 name for diffusers tensor {name}")


def main() -> None:
    torch.manual_seed(0)
    vae = AutoencoderKLWan(**TINY).eval()
    with torch.no_grad():
        for name, p in vae.named_parameters():
            if name.endswith("gamma"):
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.05 * torch.randn_like(p))

    g = torch.Generator().manual_seed(1)
    video = (torch.rand(1, 3, 9, 32, 64, generator=g) * 2 - 1).float()
    image = video[:, :, :1].clone()
    latents = torch.randn(1, TINY["z_dim"], 7, 2, 4, generator=g)

    with torch.no_grad():
        post = vae.encode(video).latent_dist
        video_mu, video_logvar = post.mean, post.logvar
        image_mu = vae.encode(image).latent_dist.mean
        decoded = vae.decode(latents).sample

    sat = (decoded.abs() >= 1.0).float().mean().item()
    print(f"decoded {tuple(decoded.shape)} std {decoded.std():.4f} clamped fraction {sat:.3f}")
    print(f"video_mu {tuple(video_mu.shape)} std {video_mu.std():.4f}; image_mu {tuple(image_mu.shape)}")

    weights = {k: v.detach().contiguous() for k, v in vae.state_dict().items()}
    tensors = dict(weights)
    tensors.update({
        "in.video": video,
        "in.image": image,
        "in.latents": latents,
        "out.video_mu": video_mu.contiguous(),
        "out.video_logvar": video_logvar.contiguous(),
        "out.image_mu": image_mu.contiguous(),
        "out.decoded": decoded.contiguous(),
    })
    OUT.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(OUT / "vae_tiny.safetensors"))

    wan = {diffusers_to_wan(k, TINY["num_res_blocks"]): v for k, v in weights.items()}
    assert len(wan) == len(weights), "Wan2.2 name mapping is not one-to-one"
    save_file(wan, str(OUT / "vae_tiny_wan_names.safetensors"))
    n = sum(v.numel() for v in weights.values())
    print(f"{len(weights)} weight tensors, {n} parameters")


if __name__ == "__main__":
    main()
