import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)



@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    """A folder holding a tiny random BERT (2 layers, width 32) and its WordPiece tokenizer."""
    pytest.importorskip("transformers")
    from kdistill.models.hf import save_tiny_bert

    return save_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture
def sentences(tmp_path):
    """A CSV of 240 short sentences in 3 classes (the class shows in the words used)."""
    from kdistill.models.hf import write_tiny_sentences

    return write_tiny_sentences(tmp_path / "sentences.csv")
