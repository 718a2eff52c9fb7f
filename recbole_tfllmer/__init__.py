"""recbole-tfllmer: TF-LLMER (training-friendly LLM-enhanced recommender) as a RecBole plugin.

The public API is loaded lazily so that the pure-math modules (Rec-PCA, graph) import
without pulling in RecBole and torch.
"""

__version__ = "0.1.0"

__all__ = ["run", "run_tfllmer", "objective_function", "load_data_and_model", "TFLLMER", "__version__"]


def __getattr__(name):
    if name in ("run", "run_tfllmer", "objective_function", "load_data_and_model"):
        from recbole_tfllmer import quick_start

        return getattr(quick_start, name)
    if name == "TFLLMER":
        from recbole_tfllmer.tfllmer.tfllmer import TFLLMER

        return TFLLMER
    raise AttributeError(f"module 'recbole_tfllmer' has no attribute {name!r}")
