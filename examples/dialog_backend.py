#!/usr/bin/env python3
"""A small dialog backend for streamavatar (standard library only).

It creates a session, attaches to the session's talk WebSocket, synthesizes
speech with espeak-ng, streams it as PCM16LE mono 24 kHz in 20 ms frames at
real-time pace, prints the server's talk events, and demonstrates barge-in
by sending {"type":"clear"} in the middle of a second utterance.

    python3 examples/dialog_backend.py --server http://127.0.0.1:8080

Join the same session from a browser (or any WHIP client) with the printed
session id and token to see and hear the avatar while this runs.
"""

import argparse
import asyncio
import base64
import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import wave

RATE = 24_000
FRAME_SAMPLES = RATE // 50  # 20 ms


# --------------------------------------------------------------- HTTP API


def api(server, method, path, body=None, token=None, content_type="application/json"):
    """Call the REST API; returns (status, parsed JSON or text)."""
    data = None
    headers = {}
    if body is not None:
        data = json.dumps(body).encode() if content_type == "application/json" else body
        headers["Content-Type"] = content_type
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(server + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


# --------------------------------------------------------------- speech


def synthesize(text, voice=None):
    """espeak-ng -> mono PCM16 at 24 kHz (bytes)."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        sys.exit("espeak-ng is not installed (apt-get install espeak-ng)")
    cmd = [exe, "--stdout", "--stdin"] + (["-v", voice] if voice else [])
    wav_bytes = subprocess.run(cmd, input=text.encode(), capture_output=True, check=True).stdout
    with wave.open(io.BytesIO(wav_bytes)) as w:
        rate, channels, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
        # espeak-ng writes placeholder sizes when streaming; read what is there.
        frames = w.readframes(w.getnframes())
    if width != 2:
        sys.exit(f"unexpected espeak-ng sample width {width}")
    samples = struct.unpack(f"<{len(frames) // 2}h", frames[: len(frames) // 2 * 2])
    if channels > 1:
        samples = [sum(samples[i : i + channels]) // channels for i in range(0, len(samples), channels)]
    return pcm16_bytes(resample_linear(samples, rate, RATE))


def resample_linear(samples, src_rate, dst_rate):
    if src_rate == dst_rate or not samples:
        return list(samples)
    n_out = int(len(samples) * dst_rate / src_rate)
    step = src_rate / dst_rate
    out = []
    last = len(samples) - 1
    for i in range(n_out):
        pos = i * step
        j = int(pos)
        frac = pos - j
        a = samples[min(j, last)]
        b = samples[min(j + 1, last)]
        out.append(int(round(a + (b - a) * frac)))
    return out


def pcm16_bytes(samples):
    return struct.pack(f"<{len(samples)}h", *(max(-32768, min(32767, s)) for s in samples))


# --------------------------------------------------------------- WebSocket (RFC 6455 client)


class WebSocket:
    """Minimal client: text/binary frames, ping/pong, close with reason."""

    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, url, headers):
        u = urllib.parse.urlsplit(url)
        if u.scheme != "ws":
            raise ValueError("only ws:// URLs are supported by this example")
        reader, writer = await asyncio.open_connection(u.hostname, u.port or 80)
        key = base64.b64encode(os.urandom(16)).decode()
        path = u.path + (f"?{u.query}" if u.query else "")
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: {u.netloc}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
        ] + [f"{k}: {v}" for k, v in headers.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode(errors="replace").split("\r\n")
        if " 101 " not in status_line + " ":
            body = await reader.read(4096)
            raise ConnectionError(f"talk socket refused: {status_line} {body.decode(errors='replace')}")
        accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
        got = {l.split(":", 1)[0].lower(): l.split(":", 1)[1].strip() for l in header_lines if ":" in l}
        if got.get("sec-websocket-accept") != accept:
            raise ConnectionError("bad Sec-WebSocket-Accept")
        return cls(reader, writer)

    async def _send(self, opcode, payload):
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 65536:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        key = int.from_bytes((mask * (n // 4 + 1))[:n], "big") if n else 0
        masked = (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big") if n else b""
        self.writer.write(header + mask + masked)
        await self.writer.drain()

    async def send_binary(self, data):
        await self._send(0x2, data)

    async def send_json(self, obj):
        await self._send(0x1, json.dumps(obj).encode())

    async def close(self, code=1000, reason=""):
        try:
            await self._send(0x8, struct.pack("!H", code) + reason.encode())
        except (ConnectionError, RuntimeError):
            pass
        self.writer.close()

    async def recv(self):
        """Returns ("text", str) / ("binary", bytes) / ("close", (code, reason))."""
        while True:
            b1, b2 = await self.reader.readexactly(2)
            opcode, n = b1 & 0x0F, b2 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", await self.reader.readexactly(8))
            payload = await self.reader.readexactly(n)  # server frames are unmasked
            if opcode == 0x9:
                await self._send(0xA, payload)
            elif opcode == 0x8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                return "close", (code, payload[2:].decode(errors="replace"))
            elif opcode == 0x1:
                return "text", payload.decode()
            elif opcode == 0x2:
                return "binary", payload


# --------------------------------------------------------------- the dialog


async def print_events(ws, events):
    while True:
        kind, value = await ws.recv()
        if kind == "close":
            print(f"[server] socket closed: {value[0]} {value[1]}")
            await events.put(None)
            return
        if kind == "text":
            event = json.loads(value)
            print(f"[event] {event}")
            await events.put(event)


async def stream(ws, pcm, speed, stop_after_s=None):
    """Send `pcm` in 20 ms frames at `speed` x real time; stop early if asked."""
    frame_bytes = FRAME_SAMPLES * 2
    start = time.monotonic()
    sent = 0
    for offset in range(0, len(pcm), frame_bytes):
        if stop_after_s is not None and sent * 0.02 >= stop_after_s:
            return sent * 0.02
        await ws.send_binary(pcm[offset : offset + frame_bytes])
        sent += 1
        # pace against the wall clock so the server's queue stays shallow
        delay = start + sent * 0.02 / speed - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
    return sent * 0.02


async def wait_for(events, kind, timeout):
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no {kind} event within {timeout} s")
        event = await asyncio.wait_for(events.get(), left)
        if event is None:
            raise ConnectionError("talk socket closed")
        if event["type"] == kind:
            return event


async def wait_for_peer(server, session, timeout):
    """The avatar only speaks into a call: wait until a peer is connected."""
    print(f"waiting up to {timeout:.0f} s for a peer to join the call...")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, info = api(server, "GET", f"/v1/sessions/{session['id']}", token=session["token"])
        if status != 200:
            sys.exit(f"session is gone: HTTP {status}: {info}")
        if info["stats"]["connected"]:
            print("peer connected")
            return
        await asyncio.sleep(0.5)
    sys.exit("no peer joined; open the page above or pass --wait-for-peer 0")


async def run(args):
    server = args.server.rstrip("/")
    if args.session and args.token:
        session = {"id": args.session, "token": args.token, "talk_url": f"/v1/sessions/{args.session}/talk"}
        own_session = False
    else:
        # The server's API key (serve --api-key), when it requires one.
        status, session = api(server, "POST", "/v1/sessions", {}, token=args.api_key)
        if status != 201:
            sys.exit(f"cannot create a session: HTTP {status}: {session}")
        own_session = True
    print(f"session {session['id']}  token {session['token']}")
    print(f"  WHIP endpoint: {server}/v1/sessions/{session['id']}/whip")
    print(f"  watch it:      {server}/?session={session['id']}&token={session['token']}")
    if args.wait_for_peer > 0:
        await wait_for_peer(server, session, args.wait_for_peer)

    ws_url = "ws" + server[len("http"):] + session["talk_url"] + f"?rate={RATE}"
    ws = await WebSocket.connect(ws_url, {"Authorization": f"Bearer {session['token']}"})
    events = asyncio.Queue()
    reader = asyncio.create_task(print_events(ws, events))
    try:
        first = synthesize(args.text, args.voice)
        print(f"utterance 1: {len(first) / 2 / RATE:.2f} s, streaming in 20 ms frames")
        await stream(ws, first, args.speed)
        await ws.send_json({"type": "end"})
        done = await wait_for(events, "speech_done", timeout=len(first) / 2 / RATE + 30)
        print(f"utterance 1 played {done['played_ms']} ms")

        second = synthesize(args.barge_in_text, args.voice)
        print(f"utterance 2: {len(second) / 2 / RATE:.2f} s; barge-in after {args.barge_in_after} s")
        sent = await stream(ws, second, args.speed, stop_after_s=args.barge_in_after)
        await ws.send_json({"type": "clear"})
        cleared = await wait_for(events, "speech_cleared", timeout=30)
        print(f"barge-in: sent {sent:.2f} s, avatar played {cleared['played_ms']} ms before the cut")
    finally:
        await ws.close()
        reader.cancel()
        if own_session and not args.keep:
            status, _ = api(server, "DELETE", f"/v1/sessions/{session['id']}", token=session["token"])
            print(f"session deleted (HTTP {status})")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", default="http://127.0.0.1:8080")
    p.add_argument("--session", help="use an existing session id (with --token)")
    p.add_argument("--token")
    p.add_argument("--api-key", default=os.environ.get("STREAMAVATAR_API_KEY"),
                   help="API key for creating the session, if the server requires one "
                        "(default: $STREAMAVATAR_API_KEY)")
    p.add_argument("--text", default="Hello! I am your streaming avatar. I can speak and listen at the same time.")
    p.add_argument("--barge-in-text", default="This sentence is long, so you can interrupt me right in the middle of it.")
    p.add_argument("--barge-in-after", type=float, default=1.5, help="seconds of utterance 2 before `clear`")
    p.add_argument("--voice", help="espeak-ng voice (e.g. en-us)")
    p.add_argument("--speed", type=float, default=1.0, help="streaming speed vs real time (tests use >1)")
    p.add_argument("--wait-for-peer", type=float, default=120.0,
                   help="seconds to wait for a call peer before speaking (0 = do not wait)")
    p.add_argument("--keep", action="store_true", help="do not delete the session at the end")
    args = p.parse_args()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
