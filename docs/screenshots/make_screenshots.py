"""Take the pictures of the web page that README.md and docs/server.md show.

The browser tests (tests/server/test_web_page.py) save a picture of each screen they have just checked when
``QWEN3_RAG_SCREENSHOTS`` names a folder; this script runs them with this folder. It needs what those tests need:
Chromium and its driver (Debian: ``apt-get install chromium chromium-driver``) and ``pip install -e '.[dev]'``.

    python docs/screenshots/make_screenshots.py
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SCREENS = ["search", "document", "chat", "index", "phone"]


def main() -> int:
    env = {**os.environ, "QWEN3_RAG_SCREENSHOTS": str(HERE), "CI": "1"}  # CI: fail rather than skip without a browser
    status = subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                              "tests/server/test_web_page.py"], cwd=ROOT, env=env)
    missing = [name for name in SCREENS if not (HERE / f"{name}.png").is_file()]
    if status == 0 and missing:
        print(f"no picture of {', '.join(missing)}", file=sys.stderr)
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
