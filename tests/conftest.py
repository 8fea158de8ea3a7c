import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


WORDS = ("the a dog cat bird runs sleeps flies over under big small red blue tree house car road "
         "sun moon eats food water stone hand foot tool knife song music").split()


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    """A folder holding a tiny random BERT (2 layers, width 32) and its WordPiece tokenizer:
    a Hugging Face model built from a config, nothing downloaded."""
    transformers = pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("tiny_bert")
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    transformers.BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(folder)
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=5 + len(WORDS), hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=64, max_position_embeddings=64,
                                     initializer_range=0.3)  # large weights: each layer changes the output
    transformers.BertModel(config).save_pretrained(folder)
    return folder


@pytest.fixture
def sentences(tmp_path):
    """A CSV of 240 short sentences in 3 classes (the class shows in the words used)."""
    g = torch.Generator().manual_seed(0)
    groups = [WORDS[0:10], WORDS[10:20], WORDS[20:]]
    rows = ["text,label"]
    for i in range(240):
        words = groups[i % 3]
        picks = torch.randint(len(words), (6,), generator=g).tolist()
        rows.append(" ".join(words[j] for j in picks) + f",c{i % 3}")
    path = tmp_path / "sentences.csv"
    path.write_text("\n".join(rows) + "\n")
    return path
