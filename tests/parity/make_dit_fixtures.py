#!/usr/bin/env python3
"""Parity fixtures for the Wan2.2 DiT (src/model/dit/).

Builds diffusers' `WanTransformer3DModel` with the `tiny` DitConfig of
src/config.rs, random init with seed 0 (the zero-initialised parts, i.e. both
`scale_shift_table`s, the RMSNorm / LayerNorm weights and all biases, are
randomised too so every formula is exercised), runs it on random latents with
per-token timesteps (Wan2.2 TI2V style: the first latent frame is the clean
reference at t = 0) and writes:

  tests/fixtures/dit_tiny.safetensors            weights (diffusers names)
                                                 + inputs + reference output
  tests/fixtures/dit_tiny_wan_names.safetensors  the same weights under the
                                                 ORIGINAL Wan2.2 names
                                                 (wan/modules/model.py)

Inputs/outputs are stored under the `fixture.` prefix:
  fixture.latents        [1, 8, 4, 8, 8]  f32
  fixture.timesteps      [1, 4]           f32 (per latent frame)
  fixture.timesteps_tok  [1, 64]          f32 (per token, what diffusers got)
  fixture.text           [1, 16, 24]      f32 (10 tokens + zero padding)
  fixture.output         [1, 8, 4, 8, 8]  f32 (diffusers' velocity)

Run:  python3 tests/parity/make_dit_fixtures.py
"""
import os

import torch
from safetensors.torch import save_file
from diffusers import WanTransformer3DModel

HERE = os.path.dirname(os.path.abspath(__file__))
OUT_DIR = os.path.join(HERE, "..", "fixtures")

# Must equal `ModelConfig::tiny().dit` in src/config.rs.
TINY = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=2,
    attention_head_dim=16,
    in_channels=8,
    out_channels=8,
    text_dim=24,
    freq_dim=32,
    ffn_dim=64,
    num_layers=2,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
    rope_max_seq_len=1024,
)
TEXT_LEN = 16
REAL_TEXT_TOKENS = 10

# diffusers name -> original Wan2.2 name (inverse of diffusers'
# convert_wan_transformer_to_diffusers). Applied as ordered substring rules.
DIFFUSERS_TO_WAN = [
    ("condition_embedder.time_embedder.linear_1", "time_embedding.0"),
    ("condition_embedder.time_embedder.linear_2", "time_embedding.2"),
    ("condition_embedder.text_embedder.linear_1", "text_embedding.0"),
    ("condition_embedder.text_embedder.linear_2", "text_embedding.2"),
    ("condition_embedder.time_proj", "time_projection.1"),
    (".attn1.", ".self_attn."),
    (".attn2.", ".cross_attn."),
    (".to_out.0.", ".o."),
    (".to_q.", ".q."),
    (".to_k.", ".k."),
    (".to_v.", ".v."),
    ("ffn.net.0.proj", "ffn.0"),
    ("ffn.net.2", "ffn.2"),
    # diffusers norm2 (cross-attention LayerNorm, affine) is Wan's norm3.
    (".norm2.", ".norm3."),
    ("proj_out", "head.head"),
]


def to_wan_name(name: str) -> str:
    if name == "scale_shift_table":
        return "head.modulation"
    if name.startswith("blocks.") and name.endswith(".scale_shift_table"):
        return name[: -len("scale_shift_table")] + "modulation"
    for a, b in DIFFUSERS_TO_WAN:
        name = name.replace(a, b)
    return name


def main():
    torch.manual_seed(0)
    model = WanTransformer3DModel(**TINY).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
            elif "norm" in name:  # RMSNorm / LayerNorm gains
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif "scale_shift_table" in name:
                p.copy_(0.5 * torch.randn_like(p))

    b, c, f, h, w = 1, TINY["in_channels"], 4, 8, 8
    latents = torch.randn(b, c, f, h, w)
    t_frame = torch.tensor([[0.0, 900.0, 512.5, 250.0]])
    tokens_per_frame = (h // 2) * (w // 2)
    t_tok = t_frame.repeat_interleave(tokens_per_frame, dim=1)
    text = torch.zeros(b, TEXT_LEN, TINY["text_dim"])
    text[:, :REAL_TEXT_TOKENS] = torch.randn(b, REAL_TEXT_TOKENS, TINY["text_dim"])

    with torch.no_grad():
        out = model(latents, t_tok, text, return_dict=False)[0]

    weights = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    tensors = dict(weights)
    tensors.update(
        {
            "fixture.latents": latents.contiguous(),
            "fixture.timesteps": t_frame.contiguous(),
            "fixture.timesteps_tok": t_tok.contiguous(),
            "fixture.text": text.contiguous(),
            "fixture.output": out.contiguous(),
        }
    )
    os.makedirs(OUT_DIR, exist_ok=True)
    save_file(tensors, os.path.join(OUT_DIR, "dit_tiny.safetensors"))

    wan = {to_wan_name(k): v for k, v in weights.items()}
    assert len(wan) == len(weights), "name mapping is not injective"
    save_file(wan, os.path.join(OUT_DIR, "dit_tiny_wan_names.safetensors"))

    print("params:", sum(v.numel() for v in weights.values()))
    print("output abs max:", out.abs().max().item(), "mean abs:", out.abs().mean().item())
    for k in sorted(weights):
        print(f"  {k:60s} -> {to_wan_name(k):45s} {tuple(weights[k].shape)}")


if __name__ == "__main__":
    main()
