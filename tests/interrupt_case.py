"""Run by test_harness.py in a child pytest (not collected by the main run): starts two
services, records their process groups, then waits to be interrupted."""

import json
import os
import time
from pathlib import Path

import pytest

from tests.harness.postgres import PostgresInfo
from tests.harness.s3 import S3Info


@pytest.mark.postgres
@pytest.mark.s3
def test_wait_for_interrupt(postgres: PostgresInfo, s3: S3Info, session_dir: Path) -> None:
    del postgres, s3
    pids = [int(p.read_text()) for p in sorted((session_dir / "pids").glob("*.pid"))]
    marker = Path(os.environ["SLIPWAY_INTERRUPT_MARKER"])
    marker.write_text(json.dumps({"session_dir": str(session_dir), "pids": pids}))
    time.sleep(120)
