#!/usr/bin/env python3
"""Independent WebRTC peer for the end-to-end test: aiortc (not written by us)
joins a `streamavatar serve` session over WHIP, sends a tone on its audio
track, receives the avatar's H.264 video and Opus audio, decodes them, and
prints one JSON line with what it measured. Exit code 0 only when the checks
pass.

Usage: aiortc_client.py BASE_URL [--seconds 3] [--width W --height H --fps F]
"""

import argparse
import asyncio
import fractions
import json
import math
import os
import sys
import time
import urllib.request

import numpy as np
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame


class ToneTrack(MediaStreamTrack):
    """20 ms frames of a 440 Hz tone at 48 kHz, paced in real time."""

    kind = "audio"

    def __init__(self):
        super().__init__()
        self.rate = 48000
        self.samples = 960
        self.pts = 0
        self.start = None

    async def recv(self):
        if self.start is None:
            self.start = time.time()
        target = self.start + self.pts / self.rate
        delay = target - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        t = (np.arange(self.samples) + self.pts) / self.rate
        pcm = (0.3 * 32767 * np.sin(2 * math.pi * 440 * t)).astype(np.int16)
        frame = AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.rate
        frame.pts = self.pts
        frame.time_base = fractions.Fraction(1, self.rate)
        self.pts += self.samples
        return frame


def http(method, url, body=None, headers=None):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


async def run(args):
    base = args.base.rstrip("/")
    headers = {"Content-Type": "application/json"}
    api_key = os.environ.get("STREAMAVATAR_API_KEY")
    if api_key:  # only when the server requires one (serve --api-key)
        headers["Authorization"] = f"Bearer {api_key}"
    status, _, body = http("POST", base + "/v1/sessions", b"{}", headers)
    if status != 201:
        raise SystemExit(f"create session: HTTP {status}: {body!r}")
    session = json.loads(body)
    whip_url = session["whip_url"]
    if whip_url.startswith("/"):
        whip_url = base + whip_url
    token = session["token"]

    pc = RTCPeerConnection()
    pc.addTrack(ToneTrack())
    pc.addTransceiver("video", direction="recvonly")

    video_frames = []
    audio_energy = []
    done = asyncio.Event()
    first_frame_at = {}

    async def consume_video(track):
        try:
            while True:
                frame = await track.recv()
                now = time.time()
                first_frame_at.setdefault("t", now)
                arr = frame.to_ndarray(format="rgb24")
                video_frames.append((now, arr.shape[1], arr.shape[0], float(arr.mean())))
        except MediaStreamError:
            pass

    async def consume_audio(track):
        try:
            while True:
                frame = await track.recv()
                pcm = frame.to_ndarray().astype(np.float32)
                audio_energy.append(float(np.sqrt((pcm ** 2).mean())))
        except MediaStreamError:
            pass

    @pc.on("track")
    def on_track(track):
        if track.kind == "video":
            asyncio.ensure_future(consume_video(track))
        else:
            asyncio.ensure_future(consume_audio(track))

    await pc.setLocalDescription(await pc.createOffer())
    while pc.iceGatheringState != "complete":
        await asyncio.sleep(0.05)
    offer_at = time.time()
    status, headers, body = http(
        "POST",
        whip_url,
        pc.localDescription.sdp.encode(),
        {"Content-Type": "application/sdp", "Authorization": f"Bearer {token}"},
    )
    if status != 201:
        raise SystemExit(f"WHIP offer: HTTP {status}: {body!r}")
    location = headers.get("Location") or headers.get("location")
    if not location:
        raise SystemExit("WHIP answer has no Location header")
    await pc.setRemoteDescription(RTCSessionDescription(sdp=body.decode(), type="answer"))

    deadline = time.time() + args.timeout
    while time.time() < deadline:
        if "t" in first_frame_at and time.time() - first_frame_at["t"] >= args.seconds:
            break
        await asyncio.sleep(0.1)

    if location.startswith("/"):
        location = base + location
    del_status, _, _ = http("DELETE", location, None, {"Authorization": f"Bearer {token}"})
    await pc.close()

    result = {
        "video_frames": len(video_frames),
        "first_frame_ms": round((first_frame_at["t"] - offer_at) * 1000) if "t" in first_frame_at else None,
        "audio_frames": len(audio_energy),
        "delete_status": del_status,
    }
    ok = True
    if video_frames:
        t0 = video_frames[0][0]
        t1 = video_frames[-1][0]
        span = max(t1 - t0, 1e-6)
        result["fps"] = round((len(video_frames) - 1) / span, 2)
        sizes = {(w, h) for _, w, h, _ in video_frames}
        result["sizes"] = sorted(sizes)
        means = [m for *_, m in video_frames]
        result["distinct_means"] = len({round(m, 1) for m in means})
        if args.width and sizes != {(args.width, args.height)}:
            ok = False
            result["error"] = f"frame size {sizes} != {(args.width, args.height)}"
        if args.fps and abs(result["fps"] - args.fps) > 0.1 * args.fps:
            ok = False
            result["error"] = f"fps {result['fps']} not within 10% of {args.fps}"
    else:
        ok = False
        result["error"] = "no video frame decoded"
    if del_status not in (200, 204):
        ok = False
        result["error"] = f"DELETE on Location answered {del_status}"
    result["ok"] = ok
    print(json.dumps(result))
    return 0 if ok else 1


def main():
    p = argparse.ArgumentParser()
    p.add_argument("base")
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--width", type=int, default=0)
    p.add_argument("--height", type=int, default=0)
    p.add_argument("--fps", type=float, default=0.0)
    args = p.parse_args()
    sys.exit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
