"""`postwatch demo` in a fresh folder, with no config, as a newcomer would run it."""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from email import message_from_bytes, policy
from pathlib import Path


def test_demo_runs_the_whole_loop_offline_and_leaves_nothing_running(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTWATCH_")}
    (tmp_path / "home").mkdir()
    workdir = tmp_path / "work"
    workdir.mkdir()
    env["HOME"] = str(tmp_path / "home")
    result = subprocess.run([sys.executable, "-m", "postwatch", "demo", "--keep"], cwd=workdir, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert list(workdir.iterdir()) == [], "the demo wrote into the current folder"

    emails = [Path(p) for p in re.findall(r"^\s+(/\S+\.eml)$", out, re.M)]
    assert emails, out
    messages = [message_from_bytes(p.read_bytes(), policy=policy.default) for p in emails]
    text = " ".join(" ".join(m.get_body(preferencelist=("plain",)).get_content().split()) for m in messages)
    assert "Demo: 12 North Korean Refugees Reach Freedom" in text
    assert "Demo: Radio Broadcasts Reach the Border Regions" in text
    edited = re.search(r'edited "(.+?)"', out).group(1)
    assert re.search(r"updated", text, re.I) and edited in text

    # The digest's links are honest: they opened real pages on the web endpoint the demo served
    # while it ran, never port 0.
    html = " ".join(m.get_body(preferencelist=("html",)).get_content() for m in messages)
    assert "127.0.0.1:0/" not in text + html + out
    served = re.search(r"The digest's links were served at http://127\.0\.0\.1:(\d+)/", out).group(1)
    for name in ("View in browser", "Unsubscribe"):
        link = re.search(rf"^{name}: (\S+)$", messages[-1].get_body(preferencelist=("plain",)).get_content(), re.M).group(1)
        assert link.startswith(f"http://127.0.0.1:{served}/") and f"{name}: {link} → 200" in out, out

    preview = Path(re.search(r"HTML preview of the digest: (\S+)", out).group(1))
    assert preview.exists() and "<html" in preview.read_text(encoding="utf-8").lower()

    folder = Path(re.search(r"everything happens in (\S+) and", out).group(1))
    shutil.rmtree(folder, ignore_errors=True)

    for port in re.findall(r"127\.0\.0\.1:(\d+)", out):
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", int(port))) != 0, f"port {port} still open"
