"""Exceptions raised by recbole-tfllmer.

Every message names the file, field or option at fault and says what to do, so a user
running a long RecBole job sees the cause without reading a traceback.
"""


class TFLLMERError(Exception):
    """Base class of every error this plugin raises on bad input."""


class DiskFullError(TFLLMERError, OSError):
    """A file could not be written: no space left on its device (or a file-size limit)."""


class ConfigError(TFLLMERError, ValueError):
    """An option (config key) has a bad value or conflicts with another."""


class UnsupportedBackboneError(ConfigError):
    """The configured `backbone` cannot be wrapped (irregular item tables or no item table)."""


class DatasetFileError(TFLLMERError, ValueError):
    """A dataset directory or atomic file (`.inter`, `.item`) is missing or cannot be parsed."""


class ItemTextError(DatasetFileError):
    """The atomic `.item` file is missing, garbled, or lacks the configured text fields."""


class EmbeddingFileError(TFLLMERError, ValueError):
    """A precomputed embedding file has bad dimensions, values or item tokens."""


class DatasetFileNotFoundError(DatasetFileError, FileNotFoundError):
    """The dataset directory or its `.inter` file does not exist (catchable as either parent)."""


class ItemFileNotFoundError(ItemTextError, FileNotFoundError):
    """The dataset's `.item` file does not exist (catchable as either parent)."""


class EmbeddingFileNotFoundError(EmbeddingFileError, FileNotFoundError):
    """The file named by `precomputed_embeddings` (or its token list) does not exist."""


class ItemVectorsMissingError(EmbeddingFileError, ItemTextError):
    """Items of the dataset have no vector in the `precomputed_embeddings` file."""


class EncoderNotFoundError(TFLLMERError, FileNotFoundError):
    """The text encoder is neither a local path nor a bundled model, and downloads are off."""


class CheckpointError(TFLLMERError, ValueError):
    """A model checkpoint is truncated, corrupted, or not loadable with weights_only=True."""


class GraphError(TFLLMERError, ValueError):
    """The co-occurrence graph cannot be built as configured (e.g. it has no edges)."""
