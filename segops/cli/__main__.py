"""``python -m segops.cli``: the ``segops`` command."""

import sys

from segops.cli import app

sys.exit(app())
