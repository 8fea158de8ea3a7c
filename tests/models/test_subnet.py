"""Sub-networks of a teacher: which layers are picked, which blocks and weights are kept,
the teacher left as it was, and one-line errors for bad choices."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from kdistill.errors import KDistillError
from kdistill.models.subnet import LAYER_PARTS, head_importance, pick_layers, sub_network
from kdistill.models.taps import resolve_module
from kdistill.models.zoo import build_model


@pytest.mark.parametrize("n, count, how, expected", [
    # even: round((i + 1) * n / count) - 1, the last layer always kept
    (6, 3, "even", [1, 3, 5]),
    (12, 4, "even", [2, 5, 8, 11]),
    (7, 3, "even", [1, 4, 6]),       # 7/3 = 2.33: round(2.33)=2, round(4.67)=5, round(7)=7, less one
    (5, 2, "even", [1, 4]),          # round(2.5) is 2 (half to even)
    (4, 4, "even", [0, 1, 2, 3]),
    # first_last: round(i * (n - 1) / (count - 1))
    (6, 3, "first_last", [0, 2, 5]),  # 0, 2.5 -> 2, 5
    (12, 4, "first_last", [0, 4, 7, 11]),  # 0, 3.67, 7.33, 11
    (6, 2, "first_last", [0, 5]),
    (3, 3, "first_last", [0, 1, 2]),
    # first: the first count
    (6, 2, "first", [0, 1]),
    (6, 1, "first", [0]),
    # one layer: the last, except for first
    (6, 1, "even", [5]),
    (6, 1, "first_last", [5]),
])
def test_pick_layers(n, count, how, expected):
    assert pick_layers(n, count, how) == expected


def test_pick_layers_default_is_even():
    assert pick_layers(6, 2) == pick_layers(6, 2, "even") == [2, 5]


@pytest.mark.parametrize("n", range(1, 13))
def test_pick_layers_gives_distinct_sorted_indices_in_range(n):
    for count in range(1, n + 1):
        for how in ("even", "first_last", "first"):
            picked = pick_layers(n, count, how)
            assert len(picked) == count and picked == sorted(set(picked))
            assert 0 <= picked[0] and picked[-1] <= n - 1
            if how != "first":
                assert picked[-1] == n - 1


@pytest.mark.parametrize("count", [0, 7, -1])
def test_pick_layers_refuses_a_count_out_of_range(count):
    with pytest.raises(KDistillError, match=rf"cannot keep {count} of 6 layers; keep between 1 and 6"):
        pick_layers(6, count)


def test_pick_layers_refuses_an_unknown_pick():
    with pytest.raises(KDistillError, match="unknown pick 'middle'; use even, first_last or first"):
        pick_layers(6, 2, "middle")


# --- CNN teachers --------------------------------------------------------------------------


def cnn_teacher():
    """A CNN of 3 stages of 4 channels, pooled after the first only, so any stages can be
    dropped but the first and the head still fits; random BN statistics, frozen, in eval mode."""
    teacher = build_model("cnn", channels=[4, 4, 4], pool_stages=1, image_size=8)
    for module in teacher.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher.eval()


def test_cnn_sub_network_keeps_the_chosen_stages_with_the_teachers_weights():
    teacher = cnn_teacher()
    student = sub_network(teacher, keep={"stages": [0, 2]})
    assert len(student.stages) == 2 and isinstance(student.stages, nn.Sequential)
    for mine, theirs in ((student.stages[0], teacher.stages[0]), (student.stages[1], teacher.stages[2])):
        for (name, a), (_, b) in zip(mine.state_dict().items(), theirs.state_dict().items()):
            assert torch.equal(a, b), name  # weights and BN statistics
    # copies, not the teacher's own tensors
    assert student.stages[1][0].weight.data_ptr() != teacher.stages[2][0].weight.data_ptr()
    # the student computes the teacher with stage 1 left out
    x = torch.randn(3, 1, 8, 8)
    out = student.eval()(x)
    assert out.shape == (3, 10)
    with torch.no_grad():
        expected = teacher.head(teacher.stages[2](teacher.stages[0](x)))
    assert torch.allclose(out, expected, atol=1e-6)


def test_keeping_every_block_reproduces_the_teacher():
    teacher = cnn_teacher()
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(sub_network(teacher, keep={"stages": [0, 1, 2]}).eval()(x), teacher(x))
    assert torch.equal(sub_network(teacher).eval()(x), teacher(x))  # nothing to keep: a plain copy


def test_blocks_keep_their_order_whatever_order_they_are_given_in():
    teacher = cnn_teacher()
    student = sub_network(teacher, keep={"stages": [2, 0]})
    assert torch.equal(student.stages[0][0].weight, teacher.stages[0][0].weight)
    assert torch.equal(student.stages[1][0].weight, teacher.stages[2][0].weight)


def test_blocks_inside_a_stage_and_of_a_module_list():
    teacher = build_model("cnn", channels=[4, 4], convs_per_stage=2, image_size=8).eval()
    student = sub_network(teacher, keep={"stages.1": [0, 1, 2]})  # the second conv-BN-ReLU dropped
    assert [type(m).__name__ for m in student.stages[1]] == ["Conv2d", "BatchNorm2d", "ReLU"]
    assert student(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    assert len(teacher.stages[1]) == 6

    class Stacked(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList(nn.Linear(3, 3) for _ in range(4))

    stacked = Stacked()
    small = sub_network(stacked, keep={"blocks": [1, 3]})
    assert isinstance(small.blocks, nn.ModuleList) and len(small.blocks) == 2
    assert torch.equal(small.blocks[1].weight, stacked.blocks[3].weight)


def test_the_teacher_is_left_unchanged_and_the_student_is_trainable():
    teacher = cnn_teacher()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = sub_network(teacher, keep={"stages": [1]})
    # the student trains on its own
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    assert len(teacher.stages) == 3 and not teacher.training
    assert all(not p.requires_grad for p in teacher.parameters())
    assert teacher.state_dict().keys() == before.keys()
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())
    assert student.training and all(p.requires_grad for p in student.parameters())


@pytest.mark.parametrize("keep, match", [
    ({"stages": [3]}, r"keep \[3\] of 'stages', which has blocks 0..2; give distinct indices in that range"),
    ({"stages": [-1]}, r"which has blocks 0..2"),
    ({"stages": [0, 0]}, r"give distinct indices"),
    ({"stages": []}, r"keep \[\] of 'stages'"),
    ({"head.2": [0]}, r"'head.2' is a Linear, not a stack of blocks"),
    ({"stagez": [0]}, r"no module named 'stagez'.*Closest: stages"),
    ([0], r"keep as a list needs a transformer teacher"),
])
def test_bad_choices_are_one_line_errors_and_leave_the_teacher(keep, match):
    teacher = cnn_teacher()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    with pytest.raises(KDistillError, match=match) as err:
        sub_network(teacher, keep=keep)
    assert str(err.value).startswith("student.from_teacher: ") and "\n" not in str(err.value)
    assert len(teacher.stages) == 3
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())


@pytest.mark.parametrize("extra", [{"heads": 1}, {"ffn": 2}])
def test_heads_and_ffn_need_a_transformer(extra):
    with pytest.raises(KDistillError, match="heads and ffn apply to transformer encoders"):
        sub_network(cnn_teacher(), **extra)


# --- a BERT-shaped encoder in plain torch --------------------------------------------------
# The module layout of a transformers BERT layer (attention.self.query/key/value,
# attention.output.dense, intermediate.dense, output.dense) with real multi-head attention,
# without importing transformers (seconds); tests/models/test_hf.py covers a real BERT.


class SelfAttention(nn.Module):
    def __init__(self, hidden, heads):
        super().__init__()
        self.num_attention_heads, self.attention_head_size, self.all_head_size = heads, hidden // heads, hidden
        self.query, self.key, self.value = (nn.Linear(hidden, hidden) for _ in range(3))

    def forward(self, h):  # (B, L, hidden) -> (B, L, all_head_size)
        B, L, _ = h.shape
        q, k, v = (f(h).view(B, L, self.num_attention_heads, self.attention_head_size).transpose(1, 2)
                   for f in (self.query, self.key, self.value))
        att = (q @ k.transpose(-1, -2) / self.attention_head_size ** 0.5).softmax(-1)
        return (att @ v).transpose(1, 2).reshape(B, L, self.all_head_size)


class Layer(nn.Module):
    def __init__(self, hidden, heads, ffn):
        super().__init__()
        self.attention = nn.Module()
        self.attention.self = SelfAttention(hidden, heads)
        self.attention.output = nn.Module()
        self.attention.output.dense = nn.Linear(hidden, hidden)
        self.intermediate = nn.Module()
        self.intermediate.dense = nn.Linear(hidden, ffn)
        self.output = nn.Module()
        self.output.dense = nn.Linear(ffn, hidden)

    def forward(self, h):
        h = h + self.attention.output.dense(self.attention.self(h))
        return h + self.output.dense(torch.nn.functional.gelu(self.intermediate.dense(h)))


class Encoder(nn.Module):
    layer_stack = "model.encoder.layer"

    def __init__(self, layers=3, hidden=8, heads=4, ffn=12):
        super().__init__()
        self.model = nn.Module()
        self.model.config = SimpleNamespace(model_type="bert", num_hidden_layers=layers, num_attention_heads=heads,
                                            intermediate_size=ffn)
        self.model.encoder = nn.Module()
        self.model.encoder.layer = nn.ModuleList(Layer(hidden, heads, ffn) for _ in range(layers))

    def forward(self, h):
        for layer in self.model.encoder.layer:
            h = layer(h)
        return h


@pytest.fixture
def bert():
    torch.manual_seed(0)
    return Encoder().eval()


def inputs():
    return torch.randn(3, 5, 8, generator=torch.Generator().manual_seed(1))


def test_head_importance_is_the_norm_of_each_heads_output_columns():
    layer = Layer(hidden=4, heads=2, ffn=4)
    with torch.no_grad():
        layer.attention.output.dense.weight.copy_(torch.tensor([[3.0, 0.0, 1.0, 1.0],
                                                                [4.0, 0.0, 1.0, 1.0],
                                                                [0.0, 0.0, 1.0, 1.0],
                                                                [0.0, 0.0, 0.0, 1.0]]))
    # head 0: columns 0-1, sqrt(9 + 16) = 5; head 1: columns 2-3, sqrt(7) = 2.65
    assert torch.allclose(head_importance(layer, 2), torch.tensor([5.0, 7 ** 0.5]))


def test_transformer_layers_are_kept_and_the_config_follows(bert):
    student = sub_network(bert, keep=[0, 2])
    assert len(student.model.encoder.layer) == 2 and student.model.config.num_hidden_layers == 2
    assert bert.model.config.num_hidden_layers == 3 and len(bert.model.encoder.layer) == 3
    assert torch.equal(student.model.encoder.layer[1].attention.self.query.weight,
                       bert.model.encoder.layer[2].attention.self.query.weight)
    x = inputs()
    with torch.no_grad():
        expected = bert.model.encoder.layer[2](bert.model.encoder.layer[0](x))
    assert torch.allclose(student.eval()(x), expected, atol=1e-6)


def test_all_heads_and_the_full_width_keep_the_function(bert):
    x = inputs()
    assert torch.allclose(sub_network(bert, heads=4, ffn=12).eval()(x), bert(x), atol=1e-6)


def test_pruning_heads_that_write_nothing_keeps_the_function(bert):
    """Heads 0 and 2 of every layer get zero output columns: they add nothing, so keeping the
    2 most important heads (1 and 3) must leave the output as it was, which only holds when
    the right query/key/value rows are paired with the right output columns."""
    size = 2  # 8 wide, 4 heads
    with torch.no_grad():
        for layer in bert.model.encoder.layer:
            for head in (0, 2):
                layer.attention.output.dense.weight[:, head * size:(head + 1) * size] = 0
    student = sub_network(bert, heads=2).eval()
    rows = torch.tensor([2, 3, 6, 7])  # heads 1 and 3
    for mine, theirs in zip(student.model.encoder.layer, bert.model.encoder.layer):
        assert mine.attention.self.num_attention_heads == 2 and mine.attention.self.all_head_size == 4
        for name in ("query", "key", "value"):
            assert torch.equal(getattr(mine.attention.self, name).weight, getattr(theirs.attention.self, name).weight[rows])
            assert torch.equal(getattr(mine.attention.self, name).bias, getattr(theirs.attention.self, name).bias[rows])
        assert torch.equal(mine.attention.output.dense.weight, theirs.attention.output.dense.weight[:, rows])
        assert torch.equal(mine.attention.output.dense.bias, theirs.attention.output.dense.bias)
    assert student.pruned_heads == 2 and not hasattr(bert, "pruned_heads")
    x = inputs()
    assert torch.allclose(student(x), bert(x), atol=1e-6)
    # the teacher keeps all its heads
    assert bert.model.encoder.layer[0].attention.self.query.out_features == 8
    assert bert.model.encoder.layer[0].attention.self.num_attention_heads == 4
    assert bert.model.config.num_attention_heads == 4


def test_narrowing_the_ffn_keeps_the_units_that_write_and_the_function(bert):
    dead = [0, 3, 4, 7, 8, 11]
    with torch.no_grad():
        for layer in bert.model.encoder.layer:
            layer.output.dense.weight[:, dead] = 0
    student = sub_network(bert, ffn=6).eval()
    alive = torch.tensor([1, 2, 5, 6, 9, 10])
    for mine, theirs in zip(student.model.encoder.layer, bert.model.encoder.layer):
        assert torch.equal(mine.intermediate.dense.weight, theirs.intermediate.dense.weight[alive])
        assert torch.equal(mine.intermediate.dense.bias, theirs.intermediate.dense.bias[alive])
        assert torch.equal(mine.output.dense.weight, theirs.output.dense.weight[:, alive])
        assert torch.equal(mine.output.dense.bias, theirs.output.dense.bias)
    assert student.model.config.intermediate_size == 6 and bert.model.config.intermediate_size == 12
    assert bert.model.encoder.layer[0].intermediate.dense.out_features == 12
    x = inputs()
    assert torch.allclose(student(x), bert(x), atol=1e-6)


@pytest.mark.parametrize("extra, match", [
    ({"heads": 0}, "heads 0 must be between 1 and 4"),
    ({"heads": 5}, "heads 5 must be between 1 and 4"),
    ({"ffn": 0}, "ffn 0 must be between 1 and 12"),
    ({"ffn": 13}, "ffn 13 must be between 1 and 12"),
    ({"keep": [3]}, r"keep \[3\] of 'model.encoder.layer', which has blocks 0..2"),
])
def test_bad_transformer_choices(bert, extra, match):
    with pytest.raises(KDistillError, match=match):
        sub_network(bert, **extra)
    assert len(bert.model.encoder.layer) == 3 and bert.model.config.intermediate_size == 12


# --- real transformers families ------------------------------------------------------------
# Heads and FFN pruning know where each family in LAYER_PARTS keeps its projections; every
# other family is refused in one line naming it. Layers are cut in any family.

FAMILY_SIZES = {"hidden_size": 16, "num_hidden_layers": 3, "num_attention_heads": 4, "intermediate_size": 24,
                "max_position_embeddings": 40}


def family_encoder(tokenizer_dir, model_type, **sizes):
    """A tiny random transformers encoder of ``model_type`` (model: hf), with the test tokenizer."""
    pytest.importorskip("transformers")
    from fixtures import ENCODER_VOCAB

    torch.manual_seed(0)
    config = {"model_type": model_type, "vocab_size": len(ENCODER_VOCAB), **FAMILY_SIZES, **sizes}
    return build_model("hf", config=config, tokenizer=str(tokenizer_dir)).eval()


def reloads(student) -> bool:
    """A fresh model of the student's config takes its weights, name for name and shape for shape."""
    fresh = type(student.model)(student.model.config)
    fresh.load_state_dict(student.model.state_dict(), strict=True)
    return True


@pytest.mark.parametrize("model_type", sorted(LAYER_PARTS))
def test_heads_and_ffn_are_pruned_in_every_known_family(tokenizer_dir, model_type):
    from fixtures import ENCODER_TEXTS

    teacher = family_encoder(tokenizer_dir, model_type)
    heads = 2 if LAYER_PARTS[model_type].self_attention else None
    x = teacher.tokenize(ENCODER_TEXTS)
    with torch.no_grad():
        # all heads and the full width: the teacher's function
        same = sub_network(teacher, keep=[0, 1, 2], heads=heads and 4, ffn=24).eval()
        torch.testing.assert_close(same(x), teacher(x), atol=1e-5, rtol=0)
        small = sub_network(teacher, keep=[0, 2], heads=heads, ffn=8).eval()
        assert small(x).shape == (len(ENCODER_TEXTS), 16)
    for layer in resolve_module(small, small.layer_stack):
        assert resolve_module(layer, LAYER_PARTS[model_type].ffn_in).out_features == 8
        if heads:
            assert resolve_module(layer, LAYER_PARTS[model_type].self_attention).num_attention_heads == 2
    assert small.model.config.intermediate_size == 8 and small.model.config.num_hidden_layers == 2
    assert teacher.model.config.intermediate_size == 24  # the teacher as it was
    if not heads:
        assert reloads(small)  # no pruned heads: a standard config, which exports


def test_mpnet_heads_are_refused_in_one_line_and_its_layers_cut(tokenizer_dir):
    teacher = family_encoder(tokenizer_dir, "mpnet")
    with pytest.raises(KDistillError, match=r"^student.from_teacher.heads: attention heads of 'mpnet' cannot be "
                                            r"pruned \(its relative position bias .*\); drop heads") as err:
        sub_network(teacher, keep=[0, 2], heads=2)
    assert "\n" not in str(err.value)
    student = sub_network(teacher, keep=[0, 2])
    assert len(student.model.encoder.layer) == 2 and reloads(student)


@pytest.mark.parametrize("what", ["heads", "ffn"])
def test_other_families_are_refused_in_one_line_naming_them(tokenizer_dir, what):
    teacher = family_encoder(tokenizer_dir, "distilbert", dim=16, n_layers=2, n_heads=4, hidden_dim=24)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    known = "bert, electra, roberta, xlm-roberta" if what == "heads" else "bert, electra, mpnet, roberta, xlm-roberta"
    with pytest.raises(KDistillError) as err:
        sub_network(teacher, **{what: 2})
    assert str(err.value) == (f"student.from_teacher.{what}: pruning {what} is known for the {known} families, not "
                              f"'distilbert'; drop {what} and cut layers only (layers or keep).")
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in before.items())
