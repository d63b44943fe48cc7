"""Training losses, one per file; each is an ``nn.Module`` over query and passage vectors (and teacher scores)."""

from llmret.losses.infonce import InfoNCELoss
from llmret.losses.kd import ListwiseKDLoss
from llmret.losses.margin_mse import MarginMSELoss
from llmret.losses.objective import OBJECTIVES, Objective

__all__ = ["OBJECTIVES", "InfoNCELoss", "ListwiseKDLoss", "MarginMSELoss", "Objective"]
