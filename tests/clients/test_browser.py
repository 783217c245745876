"""The browser page in real headless Chromium: its (fake) microphone streams to the server."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest

from models.bundle import load
from tests.server.conftest import running_server

CHROME_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                "--autoplay-policy=no-user-gesture-required"]


def browser(wav) -> object:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        raise RuntimeError("needs Debian chromium + chromium-driver (make system installs them)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for flag in [*CHROME_FLAGS, f"--use-file-for-fake-audio-capture={wav}%noloop"]:
        opts.add_argument(flag)
    return webdriver.Chrome(options=opts, service=Service(shutil.which("chromedriver")))


SENTENCE = "set an alarm for seven thirty"


@pytest.fixture(scope="module")
def bundle():
    return load(None)  # the shipped default: the page must show what was said


def test_page_streams_the_microphone(bundle, tmp_path) -> None:
    import jiwer

    wav = tmp_path / "mic.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(wav), SENTENCE], check=True)
    # like a person, start speaking a moment after pressing Start (the page keeps what is said
    # while it connects, but the fake microphone starts before the page's audio graph exists)
    subprocess.run(["sox", str(wav), str(tmp_path / "padded.wav"), "pad", "0.5", "0"], check=True)
    wav = tmp_path / "padded.wav"
    with running_server(bundle, api_keys=("k",)) as app:
        driver = browser(wav)
        try:
            driver.get(f"http://127.0.0.1:{app.cfg.ws_port}/?autostart=1&seconds=4.5&token=k")
            deadline = time.monotonic() + 60
            state: dict = {}
            while time.monotonic() < deadline:
                state = driver.execute_script("return window.chorus")
                if state["done"] or state["error"]:
                    break
                time.sleep(0.2)
            status = driver.find_element("id", "status").text
            shown = " ".join(driver.find_element("id", "finals").text.split())  # one <p> per final
        finally:
            driver.quit()
    assert state["error"] is None and state["done"], (state, status)
    assert status.startswith("done: ") and 4.0 <= float(status.split()[1]) <= 6.0, status
    assert state["finals"] and state["partials"] >= 1
    assert all(set(w) == {"word", "start", "end", "confidence"}
               for f in state["finals"] for w in f["words"])
    # the transcript on the page: Chromium's capture path (48 kHz, AudioWorklet resampling)
    # is not bit-exact with the file, so one word of six may differ
    assert shown == " ".join(f["text"] for f in state["finals"])
    assert jiwer.wer(SENTENCE, shown) <= 1 / 6, shown
