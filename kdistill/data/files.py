"""What the sources read from files, sample by sample (image_folder, hf_dataset, npy), share:
``data.path`` is needed, and ``data.files`` says where the test set is. Each such source's spec
adds the ``data.files`` fields it reads to ``FilesSpec``."""

from __future__ import annotations

from pydantic import Field, model_validator

from kdistill.errors import shown
from kdistill.recipe.schema import Amount, DataSpec, Section


class FilesSpec(Section):
    """``data.files``: the test set of a source read from files."""

    KIND = "file"
    test_path: str | None = Field(None, description=(
        "the test set's folder / list / file; default: path's test part, else held out"))
    test: Amount = Field(0.1, description="held out of the training data as the test set when there is no test part")


class FileData(DataSpec):
    """A source read from files: ``data.path`` names them."""

    files: FilesSpec = Field(default_factory=FilesSpec, description="data.files: the test set of a source read from files")

    @model_validator(mode="after")
    def _path_needed(self) -> "FileData":
        if self.path is None:
            raise ValueError(f"source {shown(self.source)} reads files: set data.path")
        return self
