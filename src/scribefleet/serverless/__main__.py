"""`python -m scribefleet.serverless`: a RunPod serverless worker running seed 003's handler.

RunPod's SDK (extra `serverless`) takes the jobs; locally, its test mode runs
one: `python -m scribefleet.serverless --test_input '{"input": {...}}'`. The
SDK's own logger writes job inputs at DEBUG, so it starts at INFO here (the
input holds S3 keys); `--rp_log_level DEBUG` turns that back on for debugging
without secrets.
"""

from __future__ import annotations

import logging

from scribefleet.config import Settings
from scribefleet.errors import FeatureUnavailable
from scribefleet.serverless.handler import Worker


def main() -> None:
    try:
        import runpod
        from runpod.serverless.modules.rp_logger import RunPodLogger
    except ImportError as exc:
        raise FeatureUnavailable("the RunPod worker needs the runpod package: pip install 'scribefleet[serverless]'") from exc
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s [%(name)s] %(message)s")
    RunPodLogger().set_level("INFO")
    worker = Worker(Settings())
    runpod.serverless.start({"handler": worker.handle})


if __name__ == "__main__":
    main()
