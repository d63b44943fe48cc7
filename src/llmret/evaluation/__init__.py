"""Measures, evaluation conventions, significance, fusion and the evaluation pipeline."""
