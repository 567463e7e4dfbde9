"""Headless Chromium for the HTML page tests: load a page, let its scripts run, read the DOM back."""
import os
import re
import shutil
import subprocess

import pytest


def browser():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed (scripts/bootstrap.sh installs it as root)")
    pytest.skip("no headless Chromium on this machine (apt-get install chromium)")


def render_in_browser(page, screenshot=None):
    base = [browser(), "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=3000",
            f"--user-data-dir={page.parent / '.chromium'}", "--window-size=1000,900"]
    dom = subprocess.run(base + ["--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    if screenshot:
        subprocess.run(base + [f"--screenshot={screenshot}", page.as_uri()], capture_output=True, timeout=120)
    body = re.search(r"<body([^>]*)>", dom)
    return dict(re.findall(r'data-([a-z]+)="([^"]*)"', body.group(1))) if body else {}, dom
