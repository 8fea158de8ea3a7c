"""A new data source is one module and one registry line: this one, defined in this file alone,
has its own options (``data.blobs``), serves one task and loads its own data, and a recipe runs
on it end to end with nothing in kdistill touched."""

from __future__ import annotations

import pytest
import torch
from pydantic import Field

from kdistill import run
from kdistill.data import ArraySource
from kdistill.errors import KDistillError
from kdistill.recipe import load_recipe
from kdistill.recipe.schema import DataSpec, Section
from kdistill.recipe.sources import SOURCES, register_source

SEEN: list = []


class BlobsSpec(Section):
    """``data.blobs``: Gaussian blobs, one a class."""

    KIND = "blob"
    count: int = Field(400, ge=20)  # samples, training and test together
    features: int = Field(12, ge=1)
    spread: float = Field(0.5, gt=0)


class BlobsData(DataSpec):
    blobs: BlobsSpec = Field(default_factory=BlobsSpec)


def load_blobs(spec: BlobsData, recipe) -> tuple[ArraySource, ArraySource]:
    SEEN.append((spec, recipe.seed))
    g = torch.Generator().manual_seed(recipe.seed)
    y = torch.arange(spec.blobs.count) % 3
    centres = torch.randn(3, spec.blobs.features, generator=g) * 3
    x = centres[y] + spec.blobs.spread * torch.randn(spec.blobs.count, spec.blobs.features, generator=g)
    cut = spec.blobs.count * 3 // 4
    return ArraySource(x[:cut], y[:cut], num_classes=3), ArraySource(x[cut:], y[cut:], num_classes=3)


@pytest.fixture
def blobs():
    register_source("blobs", BlobsData, tasks=("classify",), loader=load_blobs)
    SEEN.clear()
    yield
    del SOURCES["blobs"]


def _recipe(**data):
    return {"name": "blobs", "seed": 3, "latency": False, "data": {"source": "blobs", "labelled": 60, **data},
            "student": {"model": "mlp", "args": {"in_features": 10, "hidden": [4]}},
            "stages": [{"name": "s", "epochs": 1, "batch_size": 32}]}


def test_a_source_defined_in_a_test_file_runs_from_a_recipe(blobs, tmp_path):
    result = run(_recipe(blobs={"count": 200, "features": 10}), runs_dir=tmp_path, progress=False)
    [(spec, seed)] = SEEN
    assert type(spec) is BlobsData and (spec.blobs.count, spec.blobs.features, seed) == (200, 10, 3)
    data = result.summary["data"]
    assert (data["train"], data["test"], data["labelled"]) == (150, 50, 60)
    assert 0 <= result.summary["test"]["student"]["accuracy"] <= 1  # judged as a classifier: its first task
    assert (result.run_dir / "recipe.yaml").read_text(encoding="utf8").count("blobs:") == 1


def test_its_options_are_validated_by_its_own_model(blobs):
    recipe = load_recipe(_recipe(blobs={"spread": 2}))
    assert type(recipe.data) is BlobsData and recipe.data.blobs.spread == 2.0
    with pytest.raises(KDistillError, match=r"^recipe: data.blobs.count: Input should be greater than or equal to 20"):
        load_recipe(_recipe(blobs={"count": 3}))
    with pytest.raises(KDistillError, match=r"^recipe: unknown key 'data.blobs.cont'; did you mean 'count'\?"):
        load_recipe(_recipe(blobs={"cont": 3}))
    # another source's options are refused here, and its own elsewhere, naming who reads them
    with pytest.raises(KDistillError, match=r"^recipe: data.images: crop applies only to the image file sources"):
        load_recipe(_recipe(images={"crop": 8}))
    with pytest.raises(KDistillError, match=r"^recipe: data.blobs: count applies only to the blob sources \(blobs\), "
                                            r"not 'digits'; drop data.blobs.count$"):
        load_recipe({**_recipe(blobs={"count": 30}), "data": {"source": "digits", "blobs": {"count": 30}}})


def test_a_task_it_does_not_serve_is_refused(blobs):
    with pytest.raises(KDistillError, match=r"^recipe: task 'embed' does not fit data.source 'blobs': it serves "
                                            r"classify; set task to one of them"):
        load_recipe({**_recipe(), "task": "embed"})
    with pytest.raises(KDistillError, match=r"^recipe: data.source: Input should be 'fashion_mnist', .* or 'blobs'"):
        load_recipe({**_recipe(), "data": {"source": "blob"}})
