"""Training losses, one per file; each is an ``nn.Module`` over query and passage vectors."""

from llmret.losses.infonce import InfoNCELoss

__all__ = ["InfoNCELoss"]
