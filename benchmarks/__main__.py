"""``python -m benchmarks``: run the benchmark suite (see :mod:`benchmarks.run`).

Old-OpenBLAS tuning variables (``OPENBLAS_CORETYPE``, ``OPENBLAS_L2_SIZE``) slow a current
NumPy; they are read when NumPy loads, so the process restarts itself without them first.
This affects only the benchmark command, never the tests.
"""

import os
import sys

_STALE = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")

if any(name in os.environ for name in _STALE):
    env = {k: v for k, v in os.environ.items() if k not in _STALE}
    os.execve(sys.executable, [sys.executable, "-m", "benchmarks", *sys.argv[1:]], env)

from benchmarks.run import main  # noqa: E402

sys.exit(main())
