"""``python -m vaekit`` (and ``torchrun -m vaekit``): the ``vaekit`` command line."""

import sys

from .cli import main

sys.exit(main())
