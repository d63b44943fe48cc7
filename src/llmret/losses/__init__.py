"""Training losses, one per file; each is an ``nn.Module`` over query and passage vectors (and teacher scores)."""

from llmret.util.lazy import lazy_exports

__all__ = ["OBJECTIVES", "InfoNCELoss", "ListwiseKDLoss", "MarginMSELoss", "Objective"]
__getattr__, __dir__ = lazy_exports(__name__, {"OBJECTIVES": "objective", "InfoNCELoss": "infonce",
                                               "ListwiseKDLoss": "kd", "MarginMSELoss": "margin_mse",
                                               "Objective": "objective"})
