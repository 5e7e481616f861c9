#!/usr/bin/env python3
"""Browser smoke check of the call page (web/) against a running server.

Drives headless Chromium (selenium + chromedriver) with a fake camera and
microphone: opens the page, starts a call, waits until the WebRTC
connection is up and the avatar <video> is playing decoded frames, sends a
line of text through the "say" box, reads the live status panel, and hangs
up. Exits non-zero with a message at the first step that fails.

    streamavatar serve --listen 127.0.0.1:8080 --config tiny --web-dir web &
    python3 examples/web_page_check.py --server http://127.0.0.1:8080

Against a server started with --api-key, pass the key with --api-key: the
check first makes sure that starting a call without it is refused, then
types it into the page's "API key" field.
"""

import argparse
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By


def wait_until(what, predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    sys.exit(f"FAILED: {what} (after {timeout} s)")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", default="http://127.0.0.1:8080")
    p.add_argument("--chromium", default="/usr/bin/chromium")
    p.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--api-key", help="the server's API key (serve --api-key), typed into the page")
    args = p.parse_args()

    opts = Options()
    opts.binary_location = args.chromium
    for flag in [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        "--autoplay-policy=no-user-gesture-required",
    ]:
        opts.add_argument(flag)
    # An explicit driver path keeps selenium from looking drivers up online.
    driver = webdriver.Chrome(service=Service(executable_path=args.chromedriver), options=opts)
    try:
        driver.get(args.server + "/")
        el = lambda i: driver.find_element(By.ID, i)  # noqa: E731
        if args.api_key:
            el("start").click()
            refused = wait_until("a refusal without the API key", lambda: "401" in el("message").text and el("message").text, args.timeout)
            print(f"without the key: {refused}")
            el("api-key").send_keys(args.api_key)
        el("start").click()
        wait_until("connection state 'connected'", lambda: el("st-conn").text == "connected", args.timeout)
        frames = wait_until(
            "avatar video decoding frames",
            lambda: driver.execute_script(
                "const v = document.getElementById('avatar');"
                "const q = v.getVideoPlaybackQuality && v.getVideoPlaybackQuality();"
                "return (q && q.totalVideoFrames > 10 && v.videoWidth > 0) ? [q.totalVideoFrames, v.videoWidth, v.videoHeight] : null;"
            ),
            args.timeout,
        )
        print(f"video playing: {frames[0]} frames decoded, {frames[1]}x{frames[2]}")
        wait_until("avatar fps in the status panel", lambda: el("st-fps").text not in ("", "—"), args.timeout)
        print(f"status: fps {el('st-fps').text}, received fps {el('st-rx-fps').text}, latency {el('st-latency').text}")
        el("say-text").send_keys("Hello from the browser check.")
        el("say").click()
        msg = wait_until("a say result", lambda: el("message").text if "speech" in el("message").text or "Say failed" in el("message").text else None, args.timeout)
        print(f"say: {msg}")
        el("hangup").click()
        wait_until("hang-up", lambda: el("st-conn").text == "idle", args.timeout)
        print("hung up: OK")
        if "Say failed" in msg and "espeak-ng" not in msg:
            sys.exit(f"FAILED: say: {msg}")
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
