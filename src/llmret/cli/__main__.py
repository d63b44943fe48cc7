"""``python -m llmret.cli``: the ``llmret`` command."""

import sys

from llmret.cli import main

sys.exit(main())
