#!/usr/bin/env python3
"""Parity fixtures for the candle wav2vec2 encoder (src/model/audio/wav2vec2.rs).

Builds two tiny random-init transformers `Wav2Vec2Model`s (seed 0), one per
architecture variant, runs them on 1 s of a deterministic 16 kHz waveform and
stores, in one safetensors file per variant:

  * the model weights under their transformers names (the positional conv
    keeps its weight-norm parametrization: `weight_g`/`weight_v` for the
    `base` file, `parametrizations.weight.original0/1` for the `large` file,
    so both spellings are exercised),
  * `input_values`      [1, 16000]        the waveform fed to the model,
  * `normalized_input`  [1, 16000]        Wav2Vec2FeatureExtractor(do_normalize=True) output,
  * `hidden_states`     [1, L+1, T, H]    `output_hidden_states=True`, stacked,
  * `last_hidden_state` [1, T, H],
  * the config as JSON in the safetensors metadata (`config`).

Variants:
  base  : feat_extract_norm="group", post-LN encoder  (wav2vec2-base layout)
  large : feat_extract_norm="layer", do_stable_layer_norm (wav2vec2-large-lv60 layout)

Run from the repository root:  python tests/parity/make_wav2vec2_fixtures.py
"""
import json
import math
import os

import numpy as np
import torch
from safetensors.torch import save_file
from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

OUT = os.path.join(os.path.dirname(__file__), "..", "fixtures")

# Must match Wav2Vec2Config::tiny() in src/config.rs (base variant).
TINY = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    conv_dim=[16] * 7,
    conv_stride=[5, 2, 2, 2, 2, 2, 2],
    conv_kernel=[10, 3, 3, 3, 3, 2, 2],
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=2,
    layer_norm_eps=1e-5,
    hidden_act="gelu",
    feat_extract_activation="gelu",
)

VARIANTS = {
    "base": dict(feat_extract_norm="group", do_stable_layer_norm=False, conv_bias=False),
    "large": dict(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True),
}


def waveform(n=16000, sr=16000):
    """Deterministic speech-like signal: two chirps with an amplitude envelope plus LCG noise."""
    t = np.arange(n, dtype=np.float64) / sr
    env = 0.5 + 0.5 * np.sin(2 * math.pi * 3.0 * t)
    x = 0.4 * env * np.sin(2 * math.pi * (180 * t + 120 * t * t))
    x += 0.2 * np.sin(2 * math.pi * (900 * t - 200 * t * t))
    state = 12345
    noise = np.empty(n)
    for i in range(n):
        state = (1103515245 * state + 12345) % (1 << 31)
        noise[i] = state / float(1 << 31) - 0.5
    x += 0.05 * noise
    return x.astype(np.float32)


def fold_old_weight_norm(sd, prefix):
    """Rename the parametrization tensors to the older weight_g / weight_v names."""
    g = sd.pop(prefix + "parametrizations.weight.original0")
    v = sd.pop(prefix + "parametrizations.weight.original1")
    sd[prefix + "weight_g"] = g
    sd[prefix + "weight_v"] = v


def main():
    os.makedirs(OUT, exist_ok=True)
    wav = waveform()
    fe = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True)
    normalized = fe(wav, sampling_rate=16000, return_tensors="np").input_values.astype(np.float32)
    for name, variant in VARIANTS.items():
        cfg = Wav2Vec2Config(**TINY, **variant)
        torch.manual_seed(0)
        model = Wav2Vec2Model(cfg).eval()
        # Random init leaves LayerNorm/GroupNorm at (1, 0): perturb them so
        # the affine parameters are actually tested.
        with torch.no_grad():
            for mod in model.modules():
                if isinstance(mod, (torch.nn.LayerNorm, torch.nn.GroupNorm)):
                    mod.weight.add_(0.1 * torch.randn_like(mod.weight))
                    mod.bias.add_(0.1 * torch.randn_like(mod.bias))
        x = torch.from_numpy(wav)[None]
        with torch.no_grad():
            out = model(x, output_hidden_states=True)
        sd = {k: v.detach().contiguous().float() for k, v in model.state_dict().items()}
        sd.pop("masked_spec_embed", None)
        if name == "base":
            fold_old_weight_norm(sd, "encoder.pos_conv_embed.conv.")
        sd["input_values"] = x.contiguous()
        sd["normalized_input"] = torch.from_numpy(normalized).contiguous()
        sd["hidden_states"] = torch.stack(out.hidden_states, dim=1).contiguous()
        sd["last_hidden_state"] = out.last_hidden_state.contiguous()
        meta = {k: getattr(cfg, k) for k in [
            "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
            "conv_dim", "conv_stride", "conv_kernel", "conv_bias", "num_conv_pos_embeddings",
            "num_conv_pos_embedding_groups", "feat_extract_norm", "do_stable_layer_norm",
            "layer_norm_eps", "hidden_act", "feat_extract_activation"]}
        meta["conv_dim"] = list(meta["conv_dim"])
        meta["conv_stride"] = list(meta["conv_stride"])
        meta["conv_kernel"] = list(meta["conv_kernel"])
        path = os.path.join(OUT, f"wav2vec2_tiny_{name}.safetensors")
        save_file(sd, path, metadata={"config": json.dumps(meta), "transformers": __import__("transformers").__version__})
        print(path, os.path.getsize(path), "bytes; hidden_states", tuple(sd["hidden_states"].shape))


if __name__ == "__main__":
    main()
