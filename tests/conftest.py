import pytest
import torch
from fixtures import save_tiny_bert, write_fake_mnist, write_tiny_sentences

# every test starts on one torch thread, whatever the machine's core count: the count most tests
# ran on before (a recipe's threads: 1 stayed set for every later test), and the fastest on one
# core or a busy machine. Not a condition of any result: the suite passes at 1, 2 and 4 threads,
# and the golden runs' tolerances cover 1 to 4 (tests/golden/spread.md)
THREADS = 1
torch.set_num_threads(THREADS)


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` are skipped where CUDA is not available (``pytest -m gpu`` selects them)."""
    if torch.cuda.is_available():
        return
    needs_cuda = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(needs_cuda)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _threads():
    """A recipe's ``threads``, run in this process, sets torch's thread count for the whole
    process: put it back, so that no test runs on the count an earlier test left behind."""
    yield
    torch.set_num_threads(THREADS)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    """A folder holding a tiny random BERT (2 layers, width 32) and its WordPiece tokenizer."""
    pytest.importorskip("transformers")
    return save_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture
def sentences(tmp_path):
    """A CSV of 240 short sentences in 3 classes (the class shows in the words used)."""
    return write_tiny_sentences(tmp_path / "sentences.csv")


@pytest.fixture
def fake_mnist():
    """``fake_mnist(folder, n_train, n_test, seed)`` writes IDX files of random images into ``folder``."""
    return write_fake_mnist


@pytest.fixture
def offline_hub(monkeypatch):
    """No Hugging Face hub lookups (the tests build their models from local files)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    """A folder holding the tiny WordPiece tokenizer of ``fixtures.tiny_encoder``."""
    pytest.importorskip("transformers")
    from fixtures import write_bert_tokenizer

    return write_bert_tokenizer(tmp_path_factory.mktemp("tok"))
