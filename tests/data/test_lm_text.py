import csv
import json
from pathlib import Path

import pytest
import torch
from lm_fixtures import lm_texts, save_tiny_tokenizer

from kdistill.data.lm_text import (
    LMBlocks,
    LMPairs,
    held_out_rows,
    load_lm_pairs_source,
    load_lm_text_source,
)
from kdistill.errors import KDistillError
from kdistill.data.tokenizer import load_tokenizer
from kdistill.recipe import DataSpec


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    return save_tiny_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def chat_dir(tmp_path_factory):
    return save_tiny_tokenizer(tmp_path_factory.mktemp("chat"), chat=True)


@pytest.fixture(scope="module")
def tok(tok_dir):
    return load_tokenizer(str(tok_dir))


def _spec(tok_dir, source="lm_text", path=None, **lm):
    return DataSpec(source=source, path=path, lm={"tokenizer": str(tok_dir), **lm})


def _write_txt(path, texts):
    path.write_text("\n\n".join(texts) + "\n")
    return path


def _pairs(n=40):
    texts = lm_texts(2 * n, seed=3)
    return [{"prompt": texts[2 * i], "response": " " + texts[2 * i + 1]} for i in range(n)]


# -- lm_text ---------------------------------------------------------------------------------

def test_blocks_hold_the_joined_stream(tok):
    texts = lm_texts(50)
    blocks = LMBlocks(texts, tok, block_size=16)
    eos = tok.eos_token
    joined = "".join(t + eos for t in texts)
    assert blocks.n_tokens == len(tok(joined, add_special_tokens=False)["input_ids"])
    assert len(blocks) == blocks.n_tokens // 16 and blocks.texts_count == 50
    batch = blocks.fetch(torch.arange(len(blocks)))
    assert batch.shape == (len(blocks), 3, 16) and batch.dtype == torch.int64
    decoded = tok.decode(batch[:, 0].reshape(-1).tolist())
    assert joined.startswith(decoded) and len(joined) - len(decoded) < 16 * 8  # only the tail is dropped
    assert (batch[:, 1] == 1).all()
    assert (batch[:, 2, 0] == 0).all() and (batch[:, 2, 1:] == 1).all()
    assert (blocks.y == -1).all() and blocks.num_classes == 0 and blocks.tokens


def test_fetch_of_an_index_tensor_matches_single_fetches(tok):
    blocks = LMBlocks(lm_texts(60), tok, block_size=8)
    index = torch.randint(len(blocks), (7,), generator=torch.Generator().manual_seed(0))
    together = blocks.fetch(index)
    assert torch.equal(together, torch.cat([blocks.fetch(index[i : i + 1]) for i in range(7)]))
    x, y = blocks[int(index[0])]
    assert torch.equal(x, together[0]) and y == -1


def test_too_little_text_for_one_block(tok):
    with pytest.raises(KDistillError, match="smaller data.lm.block_size"):
        LMBlocks(["the dog."], tok, block_size=64)


def test_fingerprint_follows_texts_and_block_size(tok):
    texts = lm_texts(40)
    fp = LMBlocks(texts, tok, 8).fingerprint()
    assert LMBlocks(list(texts), tok, 8).fingerprint() == fp
    assert LMBlocks(texts, tok, 9).fingerprint() != fp
    assert LMBlocks(texts[:-1] + ["the red car."], tok, 8).fingerprint() != fp


def test_held_out_texts_never_reach_training_blocks(tmp_path, tok_dir, tok):
    texts = [f"text number {i} is here." for i in range(60)]  # each text unique
    path = _write_txt(tmp_path / "c.txt", texts)
    train, test = load_lm_text_source(str(path), _spec(tok_dir, test=0.25, block_size=4), seed=5)
    eos = tok.eos_token
    train_text = tok.decode(train.stream.tolist())
    test_text = tok.decode(test.stream.tolist())
    test_texts = [t for t in test_text.split(eos) if t]
    assert len(test_texts) == 15 and train.texts_count == 45
    for t in test_texts:
        assert t in texts and eos + t + eos not in eos + train_text
    assert sorted(test_texts + [t for t in train_text.split(eos) if t]) == sorted(texts)


def test_split_is_seeded():
    a = held_out_rows(100, 0.1, seed=1)
    assert all((x == y).all() for x, y in zip(a, held_out_rows(100, 0.1, seed=1)))
    assert not (a[1] == held_out_rows(100, 0.1, seed=2)[1]).all()
    assert len(a[1]) == 10 and sorted([*a[0], *a[1]]) == list(range(100))
    with pytest.raises(KDistillError, match="data.lm.test"):
        held_out_rows(3, 3, seed=0)


def test_split_seed_beats_the_seed_keyword(tmp_path, tok_dir):
    path = _write_txt(tmp_path / "c.txt", lm_texts(60))
    spec = _spec(tok_dir, test=10, block_size=4)
    one, _ = load_lm_text_source(str(path), spec, seed=1)
    two, _ = load_lm_text_source(str(path), spec, seed=2)
    assert one.fingerprint() != two.fingerprint()
    spec.split_seed = 1
    assert load_lm_text_source(str(path), spec, seed=2)[0].fingerprint() == one.fingerprint()


@pytest.mark.parametrize("kind", ["txt", "csv", "jsonl", "saved", "parquet"])
def test_readers_give_the_same_corpus(tmp_path, tok_dir, tok, kind):
    texts = lm_texts(40, seed=1)
    if kind == "txt":
        path = _write_txt(tmp_path / "c.txt", texts)
    elif kind == "csv":
        path = tmp_path / "c.csv"
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id", "body"])
            w.writerows([i, t] for i, t in enumerate(texts))
    elif kind == "jsonl":
        path = tmp_path / "c.jsonl"
        path.write_text("".join(json.dumps({"body": t, "n": i}) + "\n" for i, t in enumerate(texts)))
    else:
        import datasets

        ds = datasets.Dataset.from_dict({"body": texts, "n": list(range(40))})
        path = tmp_path / "saved"
        if kind == "saved":
            ds.save_to_disk(str(path))
        else:
            path = tmp_path / "c.parquet"
            ds.to_parquet(str(path))
    options = {} if kind == "txt" else {"text_column": "body"}
    train, test = load_lm_text_source(str(path), _spec(tok_dir, test=8, block_size=4, **options), seed=0)
    rows_train, rows_test = held_out_rows(40, 8, 0)
    eos = tok.eos_token
    assert tok.decode(train.stream.tolist()) == "".join(texts[i] + eos for i in rows_train)
    assert tok.decode(test.stream.tolist()) == "".join(texts[i] + eos for i in rows_test)


def test_missing_column_and_empty_corpus(tmp_path, tok_dir):
    path = tmp_path / "c.csv"
    path.write_text("id,body\n1,the dog.\n")
    with pytest.raises(KDistillError, match=r"data.lm.text_column: .*'id', 'body'"):
        load_lm_text_source(str(path), _spec(tok_dir))
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text('{"q": "a", "a": "b"}\n')
    with pytest.raises(KDistillError, match=r"data.lm.prompt_column: .*'q', 'a'"):
        load_lm_pairs_source(str(jsonl), _spec(tok_dir, "lm_pairs"))
    path.write_text("id,text\n1,\n2,  \n")
    with pytest.raises(KDistillError, match="holds no text"):
        load_lm_text_source(str(path), _spec(tok_dir))
    with pytest.raises(KDistillError, match="data.lm.tokenizer"):
        load_lm_text_source(str(path), DataSpec(source="lm_text"))
    with pytest.raises(KDistillError, match="data.path"):
        load_lm_pairs_source(None, _spec(tok_dir, "lm_pairs"))


@pytest.mark.skipif(not Path("/usr/share/wordnet/data.adv").is_file(), reason="WordNet is not installed")
def test_wordnet_when_no_path(tok_dir):
    train, test = load_lm_text_source(None, _spec(tok_dir, pos="adv", examples=False, block_size=32, test=0.1))
    assert train.texts_count > 3000 and len(test) > 0 and len(train) > 10 * len(test) / 2


# -- lm_pairs --------------------------------------------------------------------------------

def _masked_text(batch, tok):
    return [tok.decode(row[0][row[2] == 1].tolist()) for row in batch]


def test_pairs_mask_exactly_the_response_and_eos(tok):
    pairs = _pairs(20)
    source = LMPairs([p["prompt"] for p in pairs], [p["response"] for p in pairs], tok, max_length=256)
    batch = source.fetch(torch.arange(len(source)))
    assert batch.shape == (20, 3, source.length) and source.dropped == 0 and source.truncated == 0
    assert _masked_text(batch, tok) == [p["response"] + tok.eos_token for p in pairs]
    lengths = batch[:, 1].sum(1)
    assert int(lengths.max()) == source.length
    for row, n, pair in zip(batch, lengths, pairs):
        assert (row[1, :n] == 1).all() and (row[1, n:] == 0).all() and (row[2, n:] == 0).all()
        assert (row[0, n:] == tok.pad_token_id).all()
        assert tok.decode(row[0, :n].tolist()) == pair["prompt"] + pair["response"] + tok.eos_token
    index = torch.tensor([3, 0, 3, 19])
    assert torch.equal(source.fetch(index), torch.cat([source.fetch(index[i : i + 1]) for i in range(4)]))


def test_pairs_with_a_chat_template(chat_dir):
    chat_tok = load_tokenizer(str(chat_dir))
    pairs = _pairs(10)
    source = LMPairs([p["prompt"] for p in pairs], [p["response"] for p in pairs], chat_tok, max_length=256)
    batch = source.fetch(torch.arange(10))
    eos = chat_tok.eos_token
    assert _masked_text(batch, chat_tok) == [p["response"] + eos for p in pairs]
    first = batch[0, 0, : int(batch[0, 1].sum())].tolist()
    assert chat_tok.decode(first) == f"<user>{pairs[0]['prompt']}{eos}<assistant>{pairs[0]['response']}{eos}"
    prompt, response = pairs[0]["prompt"], pairs[0]["response"]
    plain = LMPairs([prompt], [response], chat_tok, 256, chat_template=False)
    assert not plain.templated
    assert chat_tok.decode(plain.fetch(torch.tensor([0]))[0, 0].tolist()) == prompt + response + eos
    assert plain.fingerprint() != LMPairs([prompt], [response], chat_tok, 256).fingerprint()


def test_pairs_truncation(tok):
    prompt, response = " ".join(lm_texts(20, seed=4)), " ".join(lm_texts(20, seed=5))
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    r_ids = tok(response, add_special_tokens=False)["input_ids"]
    assert len(p_ids) > 40 and len(r_ids) > 40
    both = LMPairs([prompt], [response], tok, max_length=40)
    row = both.fetch(torch.tensor([0]))[0]
    assert both.length == 40 and both.truncated == 1
    assert row[0, :20].tolist() == p_ids[-20:]  # the prompt's end, half of max_length
    assert row[0, 20:].tolist() == r_ids[:20] and (row[2, 20:] == 1).all() and (row[2, :20] == 0).all()
    short = LMPairs([prompt], [" the dog."], tok, max_length=40)
    r_short = tok(" the dog.", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    row = short.fetch(torch.tensor([0]))[0]
    assert row[0].tolist() == p_ids[-(40 - len(r_short)):] + r_short  # the prompt gives up only what it must
    long_answer = LMPairs(["the cat."], [response], tok, max_length=40)
    row = long_answer.fetch(torch.tensor([0]))[0]
    p_short = tok("the cat.", add_special_tokens=False)["input_ids"]
    assert row[0].tolist() == p_short + r_ids[: 40 - len(p_short)] and tok.eos_token_id not in row[0].tolist()


def test_empty_responses_are_dropped_and_counted(tok):
    source = LMPairs(["the dog.", "a cat.", "old tree."], [" runs.", "", " sings."], tok, max_length=64)
    assert len(source) == 2 and source.dropped == 1
    assert _masked_text(source.fetch(torch.arange(2)), tok) == [" runs." + tok.eos_token, " sings." + tok.eos_token]
    with pytest.raises(KDistillError, match="no pair with a response"):
        LMPairs(["a"], [""], tok, 64)


def test_load_pairs_from_jsonl_and_a_saved_dataset(tmp_path, chat_dir):
    import datasets

    pairs = _pairs(40)
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    saved = tmp_path / "saved"
    datasets.Dataset.from_dict({"q": [p["prompt"] for p in pairs], "a": [p["response"] for p in pairs]}) \
        .save_to_disk(str(saved))
    train, test = load_lm_pairs_source(str(jsonl), _spec(chat_dir, "lm_pairs", test=0.2), seed=3)
    train2, test2 = load_lm_pairs_source(str(saved), _spec(chat_dir, "lm_pairs", test=0.2, prompt_column="q",
                                                             response_column="a"), seed=3)
    assert (len(train), len(test)) == (32, 8) and train.fingerprint() == train2.fingerprint()
    assert test.fingerprint() == test2.fingerprint() and train.templated
    tok = load_tokenizer(str(chat_dir))
    rows_train, _ = held_out_rows(40, 0.2, 3)
    assert _masked_text(train.fetch(torch.arange(32)), tok) == [pairs[i]["response"] + tok.eos_token
                                                                for i in rows_train]


def test_val_blocks_are_drawn_from_the_training_blocks_apart_from_the_transfer_set(tok):
    from kdistill.data import split

    blocks = LMBlocks(lm_texts(200), tok, block_size=8)
    plain = split(blocks, blocks, labelled=0, transfer=20, seed=1)
    s = split(blocks, blocks, labelled=0, val=10, transfer=20, seed=1)
    val, transfer = set(s.val_set.x.index.tolist()), set(s.transfer_set.x.index.tolist())
    assert len(val) == 10 and len(transfer) == 20 and not val & transfer
    assert val != set(range(10))  # drawn at random, not the first blocks
    assert plain.val_set is None and len(plain.transfer_set) == 20
    with pytest.raises(KDistillError, match=r"val \(" + str(len(blocks) + 1)):
        split(blocks, blocks, labelled=0, val=len(blocks) + 1, seed=1)
