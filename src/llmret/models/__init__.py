"""Backbones and what llmret knows of them: loading, model info, saved descriptions, the zoo."""
