"""``PROMETHEUS_MULTIPROC_DIR`` for ``--workers`` above 1, set before the fork.

prometheus-client's multiprocess mode keeps each worker's values in memory-mapped
files of one directory, which every scrape reads. The supervisor makes a fresh
private one (mode 0700) and removes it when it exits; workers end with ``os._exit``,
so the removal runs in the supervisor only. A directory the operator set is kept,
emptied of the files a previous run left (their counts would be added to this one's).
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
from collections.abc import MutableMapping
from pathlib import Path

log = logging.getLogger("realtime.metrics")

ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare(environ: MutableMapping[str, str] = os.environ) -> Path:
    """Make or clean the directory and set ``ENV`` to it; the directory."""
    given = environ.get(ENV)
    if given:
        path = Path(given)
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        stale = sorted(path.glob("*.db"))
        for file in stale:
            file.unlink(missing_ok=True)
        if stale:
            log.info("metrics: removed %d stale file(s) from %s", len(stale), path)
        return path
    path = Path(tempfile.mkdtemp(prefix="realtime-metrics-"))  # mode 0700
    environ[ENV] = str(path)
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path
