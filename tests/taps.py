"""The real Singer tap the tests run, installed once per machine by the hub's installer.

``tap-jsonl`` (built on singer-sdk, whose dependencies are not the hub's) goes into a
virtualenv of its own under ``.pytest_cache/flux-taps/``, keyed by the requirement
(:func:`hub.connectors.singer_process.venv_dir`); later sessions find it installed.
``.ci/run`` runs this module before the suite (``python -m tests.taps``), so that the
download is not counted in a test's time limit; the tests' fixture calls the same
function, which does nothing when the tap is there.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import anyio

from hub.connectors.singer_process import install_tap

__all__ = ["CACHE", "TAP_JSONL", "install"]

ROOT = Path(__file__).resolve().parent.parent
#: The version the tests were written against (its bookmark behaviour is documented).
TAP_JSONL = "tap-jsonl==0.3.1"
CACHE = ROOT / ".pytest_cache" / "flux-taps"


async def install() -> Path:
    """Install the tests' tap unless it is there; the cache folder."""
    await install_tap(CACHE, TAP_JSONL)
    return CACHE


def main() -> None:
    start = time.monotonic()
    anyio.run(install)
    sys.stderr.write(f"{TAP_JSONL} in {CACHE} ({time.monotonic() - start:.1f} s)\n")


if __name__ == "__main__":
    main()
