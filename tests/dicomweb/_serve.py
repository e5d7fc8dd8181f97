"""Serve the test DICOMweb app from a data directory in its own process.

``python -m tests.dicomweb._serve <data dir> <port>``: used where the server's memory must be
measured apart from the test process (streaming tests, benchmarks).
"""

from __future__ import annotations

import sys
from pathlib import Path

import uvicorn

from tests.dicomweb.conftest import build_app


def main() -> None:
    """Build the app over ``argv[1]`` and serve it on 127.0.0.1:``argv[2]``."""
    root, port = Path(sys.argv[1]), int(sys.argv[2])
    max_results = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
    box = build_app(root, max_results=max_results)
    uvicorn.run(box.app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")


if __name__ == "__main__":
    main()
