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


def _write_idx(path, array):
    import gzip

    import numpy as np

    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def write_fake_mnist(folder, n_train=12, n_test=4, seed=0):
    """A folder of the four (Fashion-)MNIST IDX .gz files holding random 28x28 images."""
    import numpy as np

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        _write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return folder


@pytest.fixture
def fake_mnist():
    """``fake_mnist(folder, n_train, n_test, seed)`` writes IDX files of random images into ``folder``."""
    return write_fake_mnist
