"""``python -m microfw``: the same as the ``microfw`` command."""

import sys

from microfw.cli.main import main

sys.exit(main())
