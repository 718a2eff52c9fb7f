from recbole_tfllmer.data.dataset import TFLLMERDataset, create_dataset

__all__ = ["TFLLMERDataset", "create_dataset"]
