"""llmret: turn large language models into retrievers, and measure how well they retrieve.

The Python API (:mod:`llmret.api`), loaded on first use so that ``import llmret`` stays light::

    import llmret
    encoder = llmret.load_encoder("minilm-l6")
    searcher = llmret.open_index(llmret.build_index("minilm-l6", "builtin:code", "indexes/code"))
    result = llmret.evaluate("dense", "builtin:code", model="minilm-l6")
    folder = llmret.train("smollm2-135m", "builtin:code", max_steps=20)
    report = llmret.run_study("demo")
"""

from llmret.util.lazy import lazy_exports

__version__ = "0.1.0"

_API = {**{name: "api" for name in ("load_encoder", "retriever", "build_index", "open_index", "evaluate", "train",
                                          "run_study")},
        "Corpus": "data.corpus", "Document": "data.corpus"}
__all__ = sorted(_API)
__getattr__, __dir__ = lazy_exports(__name__, _API)
