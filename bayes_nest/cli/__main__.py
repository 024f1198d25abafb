"""``python -m bayes_nest.cli``: the ``bayes-nest`` command (e.g. under ``torchrun``)."""

import sys

from .entry import main

sys.exit(main())
