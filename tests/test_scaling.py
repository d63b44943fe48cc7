"""Power-law fits against scipy's linear regression on the logarithms, and in a study's report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy.stats import linregress, t

from llmret import studies
from llmret.studies.scaling import fit_power_law
from llmret.util.errors import DataError


def test_fit_matches_scipy_linregress_on_logs() -> None:
    rng = np.random.default_rng(0)
    x = np.geomspace(1e6, 1e9, 7)
    y = 3.0 * x ** -0.076 * np.exp(rng.normal(0, 0.02, size=x.size))
    fit = fit_power_law(x, y)
    ref = linregress(np.log(x), np.log(y))
    assert fit.exponent == pytest.approx(ref.slope, rel=1e-12)
    assert math.log(fit.coefficient) == pytest.approx(ref.intercept, rel=1e-12)
    assert fit.exponent_se == pytest.approx(ref.stderr, rel=1e-10)
    assert fit.r2 == pytest.approx(ref.rvalue ** 2, rel=1e-10)
    half = t.ppf(0.975, x.size - 2) * ref.stderr
    assert fit.ci95 == pytest.approx((ref.slope - half, ref.slope + half))
    exact = fit_power_law([1, 10, 100], [2.0, 2.0 * 10 ** 0.5, 2.0 * 100 ** 0.5])
    assert exact.exponent == pytest.approx(0.5) and exact.coefficient == pytest.approx(2.0) and exact.r2 == pytest.approx(1.0)
    two = fit_power_law([1, 10], [1.0, 2.0])
    assert math.isnan(two.exponent_se) and two.exponent == pytest.approx(math.log10(2))
    # two models of nearly one size (mini-scaling's decoders: 104M and 111M non-embedding parameters) and
    # very different scores: b is about -43, a = e^807 is beyond a float, the fit and its values are not
    steep = fit_power_law([104_123_008, 111_087_936], [62.25, 3.73])
    ref = linregress(np.log([104_123_008, 111_087_936]), np.log([62.25, 3.73]))
    assert steep.exponent == pytest.approx(ref.slope) and steep.log_coefficient == pytest.approx(ref.intercept)
    assert steep.coefficient == math.inf and steep.log_coefficient > 709
    assert steep(np.array([104_123_008, 111_087_936])) == pytest.approx([62.25, 3.73])
    with pytest.raises(ValueError, match="positive"):
        fit_power_law([1, 10, 100], [0.5, 0.0, 0.2])
    with pytest.raises(ValueError, match="two distinct x"):
        fit_power_law([5, 5, 5], [0.1, 0.2, 0.3])


def test_study_report_fits_quality_and_heldout_loss_against_compute_from_the_cells_files(study_file: Path) -> None:
    spec_data = yaml.safe_load(study_file.read_text())
    spec_data["systems"] = [s for s in spec_data["systems"] if s["name"] == "llama"]
    spec_data["grid"] = {"train.max_steps": [1, 2, 4]}
    spec_data["heldout"] = {"data": spec_data["datasets"][0]["data"], "split": "test", "queries": 8}
    spec_data["fits"] = True
    spec_data.pop("baseline")
    study_file.write_text(yaml.safe_dump(spec_data))
    spec = studies.StudySpec.read(study_file)
    studies.run(spec)
    report = studies.report(spec).read_text()
    fits = json.loads((spec.folder / "scaling.json").read_text())
    # one backbone: no fit against parameters, each group named with its reason; against compute, one system
    assert [(f["group"], f["against"]) for f in fits] == [("nDCG@10: dense, cl, llama", "compute"),
                                                           ("held-out loss: dense, cl, llama", "compute")]
    assert "Not fitted, one point: nDCG@10: dense, cl, max_steps=1 against parameters;" in report
    # by hand from the files: FLOPs from each training's compute.json, quality from each cell's metrics.json,
    # the loss from each training's held-out file
    xs, ys, losses = [], [], []
    for cell in studies.cells(spec):
        train = studies.train_folder(spec, cell)
        compute = json.loads((train / "compute.json").read_text())
        xs.append(compute["flops_per_step"] * compute["steps"])
        folder = studies.eval_folder(spec.folder, cell, spec.datasets[0], spec.measures)
        ys.append(json.loads((folder / "metrics.json").read_text())["aggregate"]["nDCG@10"])
        (heldout,) = train.glob("heldout-*.json")
        losses.append(json.loads(heldout.read_text())["loss"])
    for fit, values in zip(fits, (ys, losses)):
        ref = linregress(np.log(xs), np.log(values))
        assert fit["exponent"] == pytest.approx(ref.slope) and fit["exponent_se"] == pytest.approx(ref.stderr)
        assert f"| {fit['group']} | training FLOPs (compute.json: per step x steps) | 3 | {ref.slope:.4f} |" in report
    for figure in ("scaling-nDCG-10-vs-compute.png", "scaling-held-out-loss-vs-compute.png"):
        assert (spec.folder / figure).is_file() and figure in report
    # budgets within 1.5x of each other are one point on a log scale: named as not fitted, not fitted
    for cell, flops in zip(studies.cells(spec), (1.0e12, 1.1e12, 1.2e12)):
        compute_file = studies.train_folder(spec, cell) / "compute.json"
        compute = json.loads(compute_file.read_text())
        compute_file.write_text(json.dumps({**compute, "flops_per_step": flops / compute["steps"]}))
    report = studies.report(spec).read_text()
    assert json.loads((spec.folder / "scaling.json").read_text()) == [] and "| y: group |" not in report
    assert not list(spec.folder.glob("scaling-*.png"))  # the earlier report's fit figures are gone with the fits
    assert "Not fitted, x spanning less than 1.5x: nDCG@10: dense, cl, llama against compute (1.20x); " \
           "held-out loss: dense, cl, llama against compute (1.20x)." in report
    spec.fits = False  # fits are a scaling study's: other studies' reports have none
    assert "## Scaling" not in studies.report(spec).read_text()
    spec.fits = True
    # a malformed compute.json is an error naming it, not a bare KeyError
    compute_file = studies.train_folder(spec, studies.cells(spec)[0]) / "compute.json"
    compute_file.write_text(json.dumps({"parameters": 5}))
    with pytest.raises(DataError, match="compute.json: needs numeric parameters"):
        studies.report(spec)


def test_offset_power_law_recovers_a_known_law_and_its_floor() -> None:
    """y = E + a (x / s)^-alpha from exact and from noisy points of a known law; too few points refused."""
    from llmret.studies.scaling import fit_offset_power_law

    x = np.geomspace(1e17, 1e19, 6)
    scale = float(np.exp(np.log(x).mean()))
    truth = 0.8 + 0.5 * (x / scale) ** -0.3
    exact = fit_offset_power_law(x, truth)
    assert (exact.irreducible, exact.a, exact.alpha) == pytest.approx((0.8, 0.5, 0.3), rel=1e-6)
    assert exact.r2 == pytest.approx(1.0) and exact(x) == pytest.approx(truth)
    rng = np.random.default_rng(3)
    noisy = fit_offset_power_law(x, truth + rng.normal(0, 0.002, x.size))
    assert abs(noisy.alpha - 0.3) < 4 * noisy.alpha_se and abs(noisy.irreducible - 0.8) < 4 * noisy.irreducible_se
    assert 0 < noisy.alpha_se < 0.3
    with pytest.raises(ValueError, match="needs 4 distinct"):
        fit_offset_power_law(x[:3], truth[:3])


def test_fits_hold_the_other_factor_fixed_and_name_every_group_left_out(tmp_path: Path) -> None:
    """Two models at two budgets: against parameters one fit per budget, against compute one per model,
    never one fit pooling both factors; a group with a zero score is named, not dropped."""

    spec = studies.StudySpec(name="grid", out=str(tmp_path), datasets=[studies.DatasetSpec("builtin:code")],
                           systems=[studies.SystemSpec(name=f"m{i}", encoder={"model": f"m{i}"}, train={"max_steps": 1})
                                    for i in (1, 2)], grid={"train.budget_flops": [1e12, 4e12]}, fits=True)
    flops = {"m1": 1e8, "m2": 4e8}
    rows, cells = [], studies.cells(spec)
    for cell in cells:
        budget = cell.axes["train.budget_flops"]
        folder = studies.train_folder(spec, cell)
        folder.mkdir(parents=True)
        params = flops[cell.base]
        (folder / "compute.json").write_text(json.dumps({"parameters": params, "flops_per_step": budget / 10,
                                                          "steps": 10}))
        score = 0.0 if (cell.base, budget) == ("m1", 1e12) else 0.1 * math.log10(params) * math.log10(budget) / 12
        rows.append({"cell": cell.label, "aggregate": {"nDCG@10": score}})
    lines = studies.scaling_section(spec, rows, "nDCG@10", ["code/test"])
    fits = json.loads((tmp_path / "scaling.json").read_text())
    groups = sorted((f["group"], f["against"], len(f["data"])) for f in fits)
    assert groups == [("nDCG@10: dense, cl, budget_flops=4000000000000.0", "parameters", 2),
                      ("nDCG@10: dense, cl, m2", "compute", 2)]
    text = "\n".join(lines)
    assert "Not fitted, a value at or below 0, which has no logarithm: nDCG@10: dense, cl, " \
           "budget_flops=1000000000000.0 against parameters; nDCG@10: dense, cl, m1 against compute." in text
    for fit in fits:  # each group's exponent is its own factor's: the by-hand slope on its two points
        (x1, y1, _), (x2, y2, _) = sorted(fit["data"])
        assert fit["exponent"] == pytest.approx(math.log(y2 / y1) / math.log(x2 / x1))
