#!/usr/bin/env python3
"""Convert public checkpoints into the safetensors files `streamavatar` loads.

The Rust loader (src/model/weights/) reads diffusers *and* original Wan
names, with or without a `wav2vec2.` prefix, so conversion is only needed
for pickled `.pth`/`.bin` files and for building our own
`streamavatar_audio.safetensors`.

Sub-commands
  pth         .pth / .bin state dict -> .safetensors (e.g. Wan2.2_VAE.pth,
              wav2vec2 pytorch_model.bin), optional dtype cast.
  audio       write streamavatar_audio.safetensors: `prompt_embeds` computed
              with transformers' UMT5EncoderModel from a LOCAL umT5 path
              (the fixed prompt "a person is speaking and listening."), plus
              the trained StreamAvatar audio modules (`audio_proj.*`,
              `blocks.N.{norm_talk,talk_audio_attn,norm_listen,listen_audio_attn}.*`)
              taken from a trained checkpoint when one is given.

Examples
  python weights/convert.py pth Wan2.2-TI2V-5B/Wan2.2_VAE.pth -o weights/wan22_vae.safetensors --dtype bf16
  python weights/convert.py pth wav2vec2-base-960h/pytorch_model.bin -o weights/wav2vec2.safetensors
  python weights/convert.py audio --t5 Wan2.2-TI2V-5B/google/umt5-xxl \
      --t5-weights Wan2.2-TI2V-5B/models_t5_umt5-xxl-enc-bf16.pth \
      --modules trained_streamavatar.pt -o weights/streamavatar_audio.safetensors

Nothing is downloaded: every path is local.
"""

import argparse
import re
import sys
from pathlib import Path

PROMPT = "a person is speaking and listening."
DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
AUDIO_MODULE = re.compile(
    r"^(audio_proj\..+|blocks\.\d+\.(norm_talk|talk_audio_attn|norm_listen|listen_audio_attn)\..+)$"
)


def load_state_dict(path: Path):
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    sd = torch.load(str(path), map_location="cpu", weights_only=True)
    # Training checkpoints often nest the weights.
    for key in ("state_dict", "model", "module", "generator"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        sys.exit(f"{path}: not a state dict (got {type(sd).__name__})")
    return {k: v for k, v in sd.items() if hasattr(v, "dtype")}


def cast(sd, dtype_name):
    import torch

    if dtype_name is None:
        return sd
    dtype = getattr(torch, DTYPES[dtype_name])
    return {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in sd.items()}


def save(sd, out: Path):
    from safetensors.torch import save_file

    out.parent.mkdir(parents=True, exist_ok=True)
    # safetensors refuses shared / non-contiguous storage.
    save_file({k: v.contiguous().clone() for k, v in sd.items()}, str(out))
    print(f"wrote {out} ({len(sd)} tensors)")


def cmd_pth(args):
    sd = load_state_dict(Path(args.input))
    save(cast(sd, args.dtype), Path(args.output))


def prompt_embeds(t5_dir: Path, t5_weights, max_len: int):
    """umT5 encoder output for PROMPT, [L, 4096] with L = real token count.

    Wan pads the text context with zeros to 512 after trimming to the real
    length (wan/text2video.py); we store the trimmed rows and pad at load.
    """
    import torch
    from transformers import AutoTokenizer, UMT5EncoderModel

    tok = AutoTokenizer.from_pretrained(str(t5_dir))
    model = UMT5EncoderModel.from_pretrained(str(t5_dir), torch_dtype=torch.float32)
    if t5_weights:
        # Wan ships the encoder as its own .pth with T5 names of wan/modules/t5.py;
        # a transformers-format state dict loads directly.
        sd = load_state_dict(Path(t5_weights))
        missing, unexpected = model.load_state_dict(sd, strict=False)
        if len(missing) > len(sd) // 2:
            sys.exit(f"{t5_weights}: does not look like a transformers UMT5 encoder state dict "
                     f"({len(missing)} missing keys); pass a transformers-format umT5 folder instead")
    model.eval()
    ids = tok([PROMPT], padding="max_length", truncation=True, max_length=max_len, return_tensors="pt")
    with torch.no_grad():
        out = model(input_ids=ids.input_ids, attention_mask=ids.attention_mask).last_hidden_state
    n = int(ids.attention_mask.sum())
    return out[0, :n].float()


def cmd_audio(args):
    import torch

    sd = {}
    if args.t5:
        sd["prompt_embeds"] = prompt_embeds(Path(args.t5), args.t5_weights, args.text_len)
        print(f"prompt_embeds: {tuple(sd['prompt_embeds'].shape)} for {PROMPT!r}")
    if args.modules:
        src = load_state_dict(Path(args.modules))
        taken = 0
        for k, v in src.items():
            name = k[len(args.strip_prefix):] if args.strip_prefix and k.startswith(args.strip_prefix) else k
            if AUDIO_MODULE.match(name):
                sd[name] = v
                taken += 1
        if taken == 0:
            sys.exit(f"{args.modules}: no audio_proj.* or blocks.N.*audio* tensors found "
                     f"(try --strip-prefix, e.g. 'model.')")
        print(f"audio modules: {taken} tensors from {args.modules}")
    if not sd:
        sys.exit("nothing to write: give --t5 and/or --modules")
    save(cast(sd, args.dtype), Path(args.output))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("pth", help=".pth/.bin -> .safetensors")
    a.add_argument("input")
    a.add_argument("-o", "--output", required=True)
    a.add_argument("--dtype", choices=DTYPES)
    a.set_defaults(func=cmd_pth)
    b = sub.add_parser("audio", help="write streamavatar_audio.safetensors")
    b.add_argument("--t5", help="local transformers-format umT5(-xxl) folder (tokenizer + config [+ weights])")
    b.add_argument("--t5-weights", help="optional separate umT5 encoder state dict")
    b.add_argument("--text-len", type=int, default=512)
    b.add_argument("--modules", help="trained checkpoint holding the StreamAvatar audio modules")
    b.add_argument("--strip-prefix", default="", help="prefix to strip from --modules names")
    b.add_argument("-o", "--output", required=True)
    b.add_argument("--dtype", choices=DTYPES)
    b.set_defaults(func=cmd_audio)
    args = p.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
