#!/usr/bin/env python3
"""Real-browser end-to-end check: Debian's headless Chromium with fake camera
and microphone opens the call page served by `streamavatar serve`, presses
Join, and checks that the avatar <video> plays with a non-zero size and that
its pixels change over time. Prints one JSON line; exit code 0 on success.

Usage: browser_check.py PAGE_URL [--seconds 4] [--screenshot out.png]
"""

import argparse
import json
import sys
import tempfile
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

# Draws the current video frame into a small canvas and returns a checksum
# of its pixels, so two calls tell whether the picture moved.
FRAME_SIGNATURE_JS = """
const v = document.getElementById(arguments[0]);
if (!v || !v.videoWidth) return null;
const c = document.createElement('canvas');
c.width = 32; c.height = 32;
const g = c.getContext('2d');
g.drawImage(v, 0, 0, 32, 32);
const d = g.getImageData(0, 0, 32, 32).data;
let s = 0;
for (let i = 0; i < d.length; i++) s = (s * 31 + d[i]) % 1000000007;
return [v.videoWidth, v.videoHeight, s, v.currentTime];
"""


def main():
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--join-button", default="start")
    p.add_argument("--video", default="avatar")
    p.add_argument("--screenshot", default="")
    args = p.parse_args()

    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for flag in [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        "--autoplay-policy=no-user-gesture-required",
        f"--user-data-dir={tempfile.mkdtemp(prefix='sa-chrome-')}",
        "--window-size=1024,768",
    ]:
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    result = {"ok": False}
    try:
        driver.set_page_load_timeout(args.timeout)
        driver.get(args.url)
        driver.find_element(By.ID, args.join_button).click()
        deadline = time.time() + args.timeout
        first = None
        while time.time() < deadline:
            sig = driver.execute_script(FRAME_SIGNATURE_JS, args.video)
            if sig and sig[0] > 0 and sig[3] > 0:
                first = sig
                break
            time.sleep(0.2)
        if first is None:
            result["error"] = "avatar video never started playing"
            result["status_text"] = driver.execute_script(
                "const s=document.getElementById('message');return s?s.textContent:null;"
            )
        else:
            signatures = {first[2]}
            end = time.time() + args.seconds
            last = first
            while time.time() < end:
                time.sleep(0.25)
                sig = driver.execute_script(FRAME_SIGNATURE_JS, args.video)
                if sig:
                    signatures.add(sig[2])
                    last = sig
            result.update(
                width=first[0],
                height=first[1],
                distinct_frames=len(signatures),
                played_s=round(last[3] - first[3], 2),
            )
            result["ok"] = first[0] > 0 and first[1] > 0 and len(signatures) >= 3
            if not result["ok"]:
                result["error"] = "video did not change over time"
        if args.screenshot:
            driver.save_screenshot(args.screenshot)
    finally:
        driver.quit()
    print(json.dumps(result))
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
