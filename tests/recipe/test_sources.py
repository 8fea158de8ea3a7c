"""The data-source registry: each source declares its spec, the tasks it serves and its loader."""

import pytest

from kdistill.recipe.schema import DataSpec
from kdistill.recipe.sources import SOURCES, register_source, serving


def test_the_built_in_sources_declare_themselves_in_order():
    assert list(SOURCES) == ["fashion_mnist", "digits", "custom", "wordnet", "text", "csv", "image_folder",
                             "hf_dataset", "npy", "lm_text", "lm_pairs"]
    assert all(issubclass(info.spec, DataSpec) and info.spec is not DataSpec for info in SOURCES.values())
    assert [SOURCES[name].tasks[0] for name in ("digits", "csv", "lm_pairs")] == ["classify", "embed", "generate"]
    assert serving("generate") == ["lm_text", "lm_pairs"]
    assert SOURCES["custom"].loader is None and callable(SOURCES["npy"].loader)


def test_a_source_must_name_its_tasks():
    class NoData(DataSpec):
        pass

    with pytest.raises(ValueError, match="give the tasks"):
        register_source("none", NoData, tasks=(), loader=None)
    assert "none" not in SOURCES


def test_serve_adds_a_task_to_registered_sources_and_refuses_an_unknown_one(monkeypatch):
    from kdistill.recipe.sources import SOURCES, serve

    monkeypatch.setitem(SOURCES, "npy", SOURCES["npy"])  # restored after the test
    serve("regress", "npy")
    serve("regress", "npy")  # once is enough
    assert SOURCES["npy"].tasks == ("classify", "embed", "regress")
    with pytest.raises(ValueError, match="no data source 'nope'"):
        serve("regress", "nope")
