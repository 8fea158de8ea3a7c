"""The static-embedding student (kdistill/models/static.py): built from a tiny teacher, its PCA and
rank weights checked by hand, its mean over a text's counted tokens, and the arguments it refuses."""

import pytest
import torch
import torch.nn.functional as F
from fixtures import STATIC_VOCAB, save_static_teacher

pytest.importorskip("transformers")

from kdistill.errors import KDistillError  # noqa: E402
from kdistill.models.hf import hf_encoder  # noqa: E402
from kdistill.models.static import (  # noqa: E402
    StaticEncoder,
    kept_tokens,
    special_frame,
    static_encoder,
    static_vectors,
    zipf_sif_weights,
)
from kdistill.models.zoo import build_model, builds_from_teacher  # noqa: E402


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return hf_encoder(path=str(save_static_teacher(tmp_path_factory.mktemp("static_teacher"))))


def test_weights_are_sif_of_a_zipf_frequency_by_hand():
    # ranks 1..3: 1/(r+1) = 1/2, 1/3, 1/4, summing to 13/12: p = 6/13, 4/13, 3/13; w = a / (a + p), a = 0.5
    expected = torch.tensor([6.5 / 12.5, 6.5 / 10.5, 6.5 / 9.5], dtype=torch.float64)
    assert torch.allclose(zipf_sif_weights(3, 0.5), expected)
    assert torch.equal(zipf_sif_weights(3, None), torch.ones(3, dtype=torch.float64))


def test_pca_then_weights_by_hand():
    tokens = torch.tensor([[0.0, 0.0], [2.0, 1.0], [4.0, 0.0]])  # mean (2, 1/3); all the spread lies along x
    rows, projection = static_vectors(tokens, 1, 0.5, normalize=False)
    assert torch.allclose(projection.mean, torch.tensor([2.0, 1 / 3]))
    assert torch.allclose(projection.components, torch.tensor([[1.0], [0.0]]), atol=1e-6)
    # scores -2, 0, 2 times the weights of ranks 1..3
    assert torch.allclose(rows.squeeze(1), torch.tensor([-2 * 6.5 / 12.5, 0.0, 2 * 6.5 / 9.5]), atol=1e-6)
    assert torch.allclose(projection(torch.tensor([[5.0, 5.0]])), torch.tensor([[3.0]]), atol=1e-6)
    full, identity = static_vectors(tokens, 2, None)  # the teacher's width: no PCA, its own space
    assert torch.equal(full, tokens) and torch.equal(identity.components, torch.eye(2))


def test_rows_are_the_teachers_one_token_texts_in_pca_weighted_by_rank(teacher):
    student = static_encoder(teacher, width=4)
    ids, size = kept_tokens(teacher.tokenizer, r"\[unused\d+\]")
    assert size == len(STATIC_VOCAB) == student.embedding.num_embeddings
    assert [STATIC_VOCAB[i] for i in ids[:2]] == ["the", "a"]  # specials and [unused0] left out
    assert special_frame(teacher.tokenizer) == ([2], [3])  # [CLS] t [SEP]
    dog = STATIC_VOCAB.index("dog")
    rank = ids.tolist().index(dog) + 1
    projection = student.teacher_projection
    by_hand = (teacher.encode(["dog"]) - projection.mean) @ projection.components  # the text "dog": [CLS] dog [SEP]
    weight = zipf_sif_weights(len(ids), 1e-4)[rank - 1].float()
    assert torch.allclose(student.embedding.weight[dog], by_hand[0] * weight, atol=1e-5)
    gram = projection.components.T @ projection.components
    assert torch.allclose(gram, torch.eye(4), atol=1e-5)  # orthonormal components
    left_out = [STATIC_VOCAB.index(t) for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[unused0]")]
    assert student.counted[left_out].sum() == 0 and student.embedding.weight[left_out].abs().sum() == 0


def test_forward_is_the_normalised_mean_of_counted_tokens(teacher):
    student = static_encoder(teacher, width=6)
    table = student.embedding.weight.detach()
    the, dog, s = (STATIC_VOCAB.index(t) for t in ("the", "dog", "##s"))
    expected = F.normalize((table[the] + table[dog] + table[s]) / 3, dim=0)
    out = student.encode(["The dogs zebra", ""])  # [CLS] the dog ##s [UNK] [SEP]; an empty text
    assert torch.allclose(out[0], expected, atol=1e-6) and out.shape == (2, 6)
    assert torch.equal(out[1], torch.zeros(6))
    packed = student.tokenize(["the dog"])  # padding to other lengths changes nothing
    longer = torch.cat([packed, torch.zeros(1, 2, 5, dtype=packed.dtype)], dim=2)
    assert torch.allclose(student(packed), student(longer))


def test_encode_matches_the_padded_forward(teacher):
    student = static_encoder(teacher, width=6)
    texts = ["The dogs zebra", "", "cat", "the dog the cat the dogs " * 30, "zebra zebra"]
    student.tokenizer.backend_tokenizer.enable_truncation(4)  # the tokenizer's own settings do not apply
    try:
        out = student.encode(texts, batch_size=3)
    finally:
        student.tokenizer.backend_tokenizer.no_truncation()
    assert student._backend() is not None  # the unpadded path ran
    assert torch.allclose(out, student(student.tokenize(texts)), atol=1e-6)
    every = StaticEncoder(student.embedding.weight.detach(), student.tokenizer)  # counts [CLS] and [SEP] too
    assert torch.allclose(every.encode(texts), every(every.tokenize(texts)), atol=1e-6)
    half = StaticEncoder(student.embedding.weight.detach().bfloat16(), student.tokenizer, student.counted)
    assert torch.allclose(half.encode(texts), half(half.tokenize(texts)).float(), atol=1e-2)


def test_texts_are_never_cut(teacher):
    student = static_encoder(teacher)
    long_text = " ".join(["dog"] * 200 + ["cat"] * 200)  # 400 tokens: past the teacher's 128
    assert student.tokenize([long_text]).shape[-1] == 402
    half = student.encode(["dog cat"])
    assert torch.allclose(student.encode([long_text]), half, atol=1e-6)  # as many cats as dogs


def test_width_defaults_to_the_teachers_space(teacher):
    student = static_encoder(teacher, sif_coefficient=None)
    dog = STATIC_VOCAB.index("dog")
    assert student.embedding.embedding_dim == 32
    assert torch.allclose(student.embedding.weight[dog], teacher.encode(["dog"])[0], atol=1e-6)
    assert isinstance(student, StaticEncoder) and builds_from_teacher("static") and not builds_from_teacher("hf")


@pytest.mark.parametrize("args, message", [
    ({"width": 64}, "is wider than the teacher's embeddings (32)"),
    ({"width": 31, "skip_tokens": "[a-s].*"}, "at most"),
    ({"width": 0}, "not a positive whole number"),
    ({"sif_coefficient": 2.0}, "is not in (0, 1)"),
    ({"skip_tokens": "("}, "is not a regular expression"),
    ({"skip_tokens": ".*"}, "leaves none of the teacher's tokens"),
    ({"batch_size": 0}, "student.args.batch_size"),
])
def test_bad_arguments_fail_in_one_line(teacher, args, message):
    with pytest.raises(KDistillError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        static_encoder(teacher, **args)
    assert "\n" not in str(err.value)


def test_needs_a_text_teacher():
    with pytest.raises(KDistillError, match="recipe has no teacher"):
        build_model("static", width=8)
    with pytest.raises(KDistillError, match="has no tokenizer"):
        build_model("static", teacher=build_model("mlp"))
    with pytest.raises(KDistillError, match=r"bad arguments \{'teacher': '<MLP>', 'depth': 2\}"):
        build_model("static", teacher=build_model("mlp"), depth=2)
