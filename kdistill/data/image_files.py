"""What the image file sources (image_folder, hf_dataset's images) share: ``data.images`` on top
of ``data.files``, and how they load: decoded at the teacher's own size where ``data.images``
sets none, their unreadable files left out when ``data.images.skip_unreadable`` says so."""

from __future__ import annotations

from pydantic import Field

from kdistill.data.check_files import skip_unreadable
from kdistill.data.files import FileData
from kdistill.data.image_processor import teacher_view
from kdistill.data.images import ImageSpec, random_view


class ImageFilesData(FileData):
    """A source of image files (image_folder, and hf_dataset's image column): ``data.images``."""

    images: ImageSpec = Field(default_factory=ImageSpec, description="data.images: how image files are decoded, in the workers")

    def random_views(self) -> bool:
        return random_view(self.images)


def load_image_files(read, spec: ImageFilesData, recipe) -> tuple:
    """(train, test) of ``read(path, spec)``: decoded at the teacher's own size where
    ``data.images`` sets none, its unreadable files left out if ``data.images.skip_unreadable``."""
    spec = teacher_view(spec, recipe)
    train, test = read(spec.path, spec)
    return skip_unreadable(train, test) if spec.images.skip_unreadable else (train, test)
