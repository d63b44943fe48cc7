"""Training: the settings of retrieval training and MNTP (the trainers themselves are llmret.training.train
and llmret.training.mntp)."""
