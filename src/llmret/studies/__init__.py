"""Studies: specs, runs, plans, reports, scaling fits, held-out loss, presets and the demo."""
