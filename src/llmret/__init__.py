"""llmret: turn large language models into retrievers, and measure how well they retrieve."""

__version__ = "0.1.0"
