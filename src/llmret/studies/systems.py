"""A system of a study: plain data describing one retriever, optionally trained first.

A system is BM25, or a dense or sparse encoder over a backbone, optionally trained first (after an MNTP
stage, if it names one), or a hybrid: the fusion of other systems' runs. Its description (:class:`SystemSpec`) is read strictly from YAML like every
llmret config, so a study can vary any part of it (``train.max_steps``, ``encoder.passage_max_length``
...) and record exactly what each cell ran; :func:`build` makes its retriever through
:func:`llmret.retrievers.factory.make_retriever`.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llmret.encoders.recipes import encoder_recipe
from llmret.encoders.settings import EncoderSettings
from llmret.evaluation.fusion import FusedRuns
from llmret.retrievers.base import Retriever
from llmret.retrievers.factory import RETRIEVERS, make_retriever
from llmret.training.settings import MNTPSettings, TrainSettings
from llmret.util.errors import DataError, InputError
from llmret.util.layers import Layered, merge
from llmret.util.settings import from_dict

FUSION = "fusion"  # the retriever of a hybrid system: it fuses other systems' runs


@dataclass
class SystemSpec:
    """What to build: ``retriever`` over ``encoder`` (EncoderSettings fields, ``model`` among them),
    ``recipe`` (an encoder recipe such as ``promptreps``) under them, ``index`` (a FAISS factory string;
    ``exact`` or ``seismic`` for sparse), ``bm25`` (``k1``, ``b``) for BM25, and ``train`` (TrainSettings
    fields): when given, the backbone is trained first and the trained model is what is evaluated, with
    the ``encoder`` settings (lengths may differ from training's, which ``train.encoder`` sets)."""
    name: str
    retriever: str = "dense"
    encoder: dict[str, Any] = field(default_factory=dict)
    recipe: str | None = None
    index: str | None = None
    bm25: dict[str, float] = field(default_factory=dict)
    train: dict[str, Any] | None = None
    mntp: dict[str, Any] | None = None  # a first stage: MNTP settings (not model, output_dir) the training starts after
    # retriever "fusion": a hybrid of other systems of the study, by name, fused by ``fusion`` (method rrf or
    # linear, k, weights) from their runs on each dataset (llmret.evaluation.fusion)
    fuse: list[str] = field(default_factory=list)
    fusion: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | Path | None = None) -> SystemSpec:
        spec = from_dict(cls, data, source)
        if spec.retriever == FUSION or spec.fuse:
            return spec._checked_fusion(source)
        if spec.retriever not in RETRIEVERS:
            raise DataError(source, None, f"system '{spec.name}': retriever must be one of {', '.join(RETRIEVERS)}, "
                                          f"not '{spec.retriever}'")
        if spec.retriever != "bm25" and "model" not in spec.encoder:
            raise DataError(source, None, f"system '{spec.name}': a {spec.retriever} system needs encoder.model")
        from_dict(EncoderSettings, spec.encoder, source)  # unknown encoder keys fail here, before any work
        if spec.mntp is not None:
            if spec.train is None:
                raise DataError(source, None, f"system '{spec.name}': an mntp stage comes before a training; add train")
            spec.mntp_settings(Path("unused"), source)
        return spec

    def _checked_fusion(self, source: str | Path | None) -> SystemSpec:
        """A fusion system names two or more systems and nothing of its own to build."""
        if self.retriever != FUSION:
            raise DataError(source, None, f"system '{self.name}': fuse is for retriever: {FUSION}")
        if len(self.fuse) < 2:
            raise DataError(source, None, f"system '{self.name}': fusion needs fuse: two or more system names")
        if self.encoder or self.train is not None or self.mntp is not None or self.recipe or self.index or self.bm25:
            raise DataError(source, None, f"system '{self.name}': a fusion system has only fuse and fusion")
        unknown = set(self.fusion) - {"method", "k", "weights"}
        if unknown:
            raise DataError(source, None, f"system '{self.name}': fusion takes method, k and weights, not "
                                          f"{', '.join(sorted(unknown))}")
        try:
            FusedRuns([], **self.fusion_options())  # a bad method fails here, before any work
        except (InputError, TypeError, ValueError) as exc:
            raise DataError(source, None, f"system '{self.name}': {exc}") from None
        if "weights" in self.fusion and len(self.fusion["weights"]) != len(self.fuse):
            raise DataError(source, None, f"system '{self.name}': {len(self.fusion['weights'])} weights for "
                                          f"{len(self.fuse)} fused systems")
        return self

    def fusion_options(self) -> dict[str, Any]:
        """A fusion system's FusedRuns arguments, defaults filled (the plan shows them too)."""
        return {"method": self.fusion.get("method", "rrf"), "weights": self.fusion.get("weights"),
                "k": int(self.fusion.get("k", 60))}

    def mntp_settings(self, output_dir: Path, source: str | Path | None = None) -> Any:
        """The MNTP stage's settings: the system's backbone, adapted into ``output_dir``."""

        given = dict(self.mntp or {})
        for key in ("model", "output_dir"):
            if key in given:
                raise DataError(source, None, f"system '{self.name}': mntp.{key} is set by the study "
                                              "(the system's encoder.model, and a folder keyed by the stage)")
        return from_dict(MNTPSettings, {**given, "model": self.encoder.get("model"), "output_dir": str(output_dir)},
                         source)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def encoder_layers(self, grid: dict[str, Any] | None = None, layer: str = "study") -> Layered:
        """The evaluation encoder's settings as layers: the encoder recipe's, the system's (``layer``),
        ``grid`` (``encoder.*`` axis values, keys without ``encoder.``). Unset ones come from the model
        when it loads (its saved settings, then its defaults)."""

        recipe = [(f"recipe {self.recipe}", {"encoder": encoder_recipe(self.recipe, self.retriever)})] if self.recipe else []
        return merge([*recipe, (layer, {"encoder": self.encoder}), ("grid", {"encoder": grid or {}})])

    def encoder_settings(self, model: str | None = None) -> EncoderSettings:
        """The encoder settings: the recipe's, the spec's over them, and ``model`` (a trained folder) last."""
        data = dict(self.encoder_layers().values.get("encoder", {}))
        if model is not None:
            data["model"] = model
        return from_dict(EncoderSettings, data)

    def train_settings(self, output_dir: Path, grid: dict[str, Any] | None = None, layer: str = "study",
                       stage: str | None = None) -> Any:
        """TrainSettings for this system, written to ``output_dir``: its recipe, then the system's own
        training settings (its encoder's under ``train.encoder``'s) as layer ``layer``, then ``grid``
        (``train.*`` axis values, the keys without ``train.``), then ``stage``: the model folder a first
        stage (MNTP) made, which the training starts from."""

        data = copy.deepcopy(self.train or {})
        data["encoder"] = {**self.encoder, **(data.get("encoder") or {})}
        data.setdefault("retriever", self.retriever)
        grid = grid or {}
        if grid.get("retriever", data["retriever"]) != self.retriever or data["retriever"] != self.retriever:
            raise InputError(f"system '{self.name}' is {self.retriever} but trains {grid.get('retriever', data['retriever'])}")
        return TrainSettings.from_layers([(layer, data), ("grid", grid), ("stage mntp", {"encoder": {"model": stage}}),
                                          ("study", {"output_dir": str(output_dir)})])


def build(spec: SystemSpec, *, rules: Any = None, work_dir: str | Path | None = None, model: str | None = None,
          progress: bool = True, runs: list[Path] | None = None) -> Retriever:
    """The retriever ``spec`` describes; ``model`` replaces the backbone (a trained system's final/);
    ``runs``: a fusion system's parts' run files on the dataset."""
    if spec.retriever == FUSION:
        return FusedRuns(runs or [], **spec.fusion_options())
    settings = None if spec.retriever == "bm25" else spec.encoder_settings(model)
    return make_retriever(spec.retriever, settings, rules=rules, work_dir=work_dir, index=spec.index, bm25=spec.bm25,
                          progress=progress)
