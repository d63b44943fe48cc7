"""``python -m llmret``: the same command line as ``llmret``, for environments whose scripts folder is not on PATH."""

import sys

from llmret.cli import main

sys.exit(main())
