"""Training: the settings of retrieval training and MNTP (the trainers themselves are llmret.train
and llmret.mntp)."""
