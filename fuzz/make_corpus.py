#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target (fuzz/corpus/<target>/).

Small valid inputs of each format plus a few near-misses; libFuzzer mutates
from these. Re-run after changing a format; inputs that once crashed a target
are added by hand under the same folders (name them crash-<what>) and kept.
Needs numpy and Pillow (tests/requirements.txt pulls both in).
"""

import base64
import io
import json
import struct
import wave
from pathlib import Path

import numpy as np
from PIL import Image

OUT = Path(__file__).resolve().parent / "corpus"


def put(target: str, name: str, data: bytes) -> None:
    d = OUT / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


def png(w: int, h: int, mode: str = "RGB") -> bytes:
    img = Image.new(mode, (w, h), color=(10, 200, 30) if mode == "RGB" else 128)
    b = io.BytesIO()
    img.save(b, format="PNG")
    return b.getvalue()


def jpeg(w: int, h: int) -> bytes:
    arr = (np.arange(w * h * 3, dtype=np.uint32) % 251).astype(np.uint8).reshape(h, w, 3)
    b = io.BytesIO()
    Image.fromarray(arr).save(b, format="JPEG", quality=50)
    return b.getvalue()


def wav(rate: int, channels: int, width: int, frames: int) -> bytes:
    b = io.BytesIO()
    with wave.open(b, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(bytes((i * 37) % 256 for i in range(frames * channels * width)))
    return b.getvalue()


def wav_float32(rate: int, frames: int) -> bytes:
    data = np.sin(np.arange(frames) / 10.0).astype("<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, rate, rate * 4, 4, 32)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def safetensors(tensors: dict) -> bytes:
    header, blobs, off = {}, b"", 0
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(raw)]}
        blobs += raw
        off += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + blobs


def frame(kind: int, payload: bytes) -> bytes:
    return bytes([kind]) + struct.pack("<H", len(payload)) + payload


OFFER = (
    "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
    "a=group:BUNDLE 0 1\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n"
    "a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=setup:actpass\r\n"
    "a=fingerprint:sha-256 AA:BB:CC:DD\r\na=sendrecv\r\na=rtpmap:111 opus/48000/2\r\n"
    "a=fmtp:111 minptime=10;useinbandfec=1\r\n"
    "m=video 9 UDP/TLS/RTP/SAVPF 102\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=recvonly\r\n"
    "a=rtpmap:102 H264/90000\r\na=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n"
    "a=candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host\r\n"
)


def main() -> None:
    put("sdp_offer", "offer_audio_video", OFFER.encode())
    put("sdp_offer", "offer_audio_only", OFFER.split("m=video")[0].encode())
    put("sdp_offer", "answer_like", OFFER.replace("actpass", "active").replace("recvonly", "sendonly").encode())
    put("sdp_offer", "lf_only", OFFER.replace("\r\n", "\n").encode())
    put("sdp_offer", "not_sdp", b"GET / HTTP/1.1\r\n\r\n")

    tiny = base64.b64encode(png(2, 2)).decode()
    put("signaling_json", "empty_object", b"{}")
    put("signaling_json", "seed", b'{"seed": 42}')
    put("signaling_json", "avatar_base64", json.dumps({"avatar": tiny, "seed": 1}).encode())
    put("signaling_json", "avatar_data_url", json.dumps({"avatar": "data:image/png;base64," + tiny}).encode())
    put("signaling_json", "unknown_field", b'{"seed": 1, "x": true}')
    put("signaling_json", "room_offer", json.dumps({"type": "offer", "to": "peer-1", "sdp": OFFER}).encode())
    put("signaling_json", "room_candidate", b'{"type":"candidate","to":"peer-2","candidate":{"candidate":"a","sdpMid":"0"}}')
    put("signaling_json", "room_request_avatar", json.dumps({"type": "request_avatar", "avatar": tiny, "seed": 3}).encode())
    put("signaling_json", "room_name", b"my-room_1.a")

    pcm = struct.pack("<480h", *[(i * 97) % 20000 - 10000 for i in range(480)])
    put("talk_protocol", "pcm_end", bytes([4]) + frame(0, pcm) + frame(0b1010, pcm) + frame(1, b'{"type":"end"}'))
    put("talk_protocol", "barge_in", bytes([0]) + frame(0, pcm) + frame(1, b'{"type":"clear"}') + frame(0, pcm))
    put("talk_protocol", "odd_frame", bytes([2]) + frame(0, pcm[:7]))
    put("talk_protocol", "bad_control", bytes([1]) + frame(1, b'{"type":"dance"}'))
    put("talk_protocol", "rate_switch", bytes([6]) + frame(0, pcm) + frame(3, b'{"type":"end"}') + frame(0xfe, pcm * 4))

    put("wav_upload", "pcm16_mono_16k", wav(16000, 1, 2, 160))
    put("wav_upload", "pcm8_stereo_8k", wav(8000, 2, 1, 80))
    put("wav_upload", "pcm24_mono_48k", wav(48000, 1, 3, 64))
    put("wav_upload", "float32_mono_24k", wav_float32(24000, 100))
    put("wav_upload", "truncated", wav(16000, 1, 2, 160)[:50])

    put("avatar_image", "png_rgb", png(4, 3))
    put("avatar_image", "png_gray", png(3, 3, "L"))
    put("avatar_image", "jpeg", jpeg(8, 8))
    put("avatar_image", "png_truncated", png(16, 16)[:40])

    f32 = np.arange(6, dtype="<f4").tobytes()
    put("safetensors_header", "f32_and_f16", safetensors({"a.weight": ("F32", [2, 3], f32), "b": ("F16", [2], b"\x00\x3c\x00\x40")}))
    put("safetensors_header", "metadata", safetensors({"__metadata__x": ("F32", [1], f32[:4])}).replace(b"__metadata__x", b"zz"))
    put("safetensors_header", "bf16_scalar", safetensors({"s": ("BF16", [], b"\x80\x3f")}))
    put("safetensors_header", "empty", struct.pack("<Q", 2) + b"{}")
    put("safetensors_header", "overflow_offsets", struct.pack("<Q", 64) + b'{"t":{"dtype":"F32","shape":[4],"data_offsets":[0,9999]}}'.ljust(64))


if __name__ == "__main__":
    main()
