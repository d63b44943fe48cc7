"""Studies: specs, runs, plans, reports, scaling fits, held-out loss, presets and the demo.

The study API, re-exported lazily (``from llmret import studies; studies.run(studies.StudySpec.read(path))``):
the spec and the plan load no torch; running does.
"""

from llmret.util.lazy import lazy_exports

_API = {"StudySpec": "spec", "DatasetSpec": "spec", "HeldoutSpec": "spec", "Cell": "spec", "cells": "spec",
        "status": "spec", "train_folder": "spec", "eval_folder": "spec", "heldout_file": "spec", "plan": "planning",
        "run": "runner", "run_cells": "runner", "work_units": "runner", "report": "reporting", "scaling_points": "fits",
        "scaling_section": "fits", "axis_series": "plots", "SystemSpec": "systems"}
__all__ = sorted(_API)
__getattr__, __dir__ = lazy_exports(__name__, _API)
