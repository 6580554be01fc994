"""Optional suite (``make test-extras``): tests that need heavy installs (torch).

Collected only with ``ALLUXIOFS_EXTRAS=1``, so ``make test`` (``pytest tests``)
skips this directory even where torch happens to be installed. The fixtures
(S3 server, workers) come from ``tests/conftest.py``.
"""

import os

collect_ignore_glob = [] if os.environ.get("ALLUXIOFS_EXTRAS") == "1" else ["test_*.py"]
