"""Image decoding (kdistill/data/images.py): the plain view, seeded training views, modes, errors."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from kdistill.data.images import ImageSpec, decode_image, pil_to_tensor, random_view
from kdistill.errors import KDistillError


def _picture(w=20, h=30, seed=0):
    """An RGB image whose left and right halves differ (so a flip shows)."""
    a = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    return Image.fromarray(a)


def _jpeg(path, w=20, h=30, seed=0, **save):
    _picture(w, h, seed).save(path, "JPEG", **save)
    return path


def test_plain_view_as_stored_resized_and_cropped(tmp_path):
    path = _jpeg(tmp_path / "a.jpg", 20, 30)
    assert decode_image(path, ImageSpec()).shape == (3, 30, 20)  # (C, H, W) as stored
    assert decode_image(str(path), ImageSpec(size=16)).shape == (3, 24, 16)  # shorter side 16, aspect kept
    wide = _jpeg(tmp_path / "b.jpg", 33, 17)
    assert decode_image(wide, ImageSpec(size=10)).shape == (3, 10, 19)
    x = decode_image(wide, ImageSpec(size=16, crop=12))
    assert x.shape == (3, 12, 12) and x.dtype == torch.uint8


def test_centre_crop_is_the_middle_of_the_image():
    img = _picture(20, 30)
    x = decode_image(img, ImageSpec(crop=10))
    assert torch.equal(x, pil_to_tensor(img)[:, 10:20, 5:15])


def test_grayscale_gives_one_channel_and_rgb_three(tmp_path):
    path = _jpeg(tmp_path / "a.jpg")
    assert decode_image(path, ImageSpec(mode="grayscale", size=8)).shape == (1, 12, 8)
    Image.new("L", (5, 7), 100).save(tmp_path / "g.png")
    assert decode_image(tmp_path / "g.png", ImageSpec()).shape == (3, 7, 5)  # rgb from a gray file
    assert pil_to_tensor(Image.new("L", (5, 7))).shape == (1, 7, 5)


def test_same_seed_same_view_other_seed_other_view(tmp_path):
    path = _jpeg(tmp_path / "a.jpg", 33, 17)
    spec = ImageSpec(crop=8, random_crop=True, flip=True)
    a = decode_image(path, spec, np.random.default_rng([1, 0, 5]))
    b = decode_image(path, spec, np.random.default_rng([1, 0, 5]))
    assert a.shape == (3, 8, 8) and torch.equal(a, b)
    others = [decode_image(path, spec, np.random.default_rng([1, e, 5])) for e in range(1, 6)]
    assert any(not torch.equal(a, o) for o in others)


def test_flip_only_in_a_training_view():
    img = _picture(20, 30)
    spec = ImageSpec(flip=True)
    plain = decode_image(img, spec)
    assert torch.equal(plain, pil_to_tensor(img))  # no rng: never flipped
    views = [decode_image(img, spec, np.random.default_rng(s)) for s in range(20)]
    flipped = [torch.equal(v, plain.flip(-1)) for v in views]
    assert all(f or torch.equal(v, plain) for f, v in zip(flipped, views))
    assert 0 < sum(flipped) < 20  # about half of the time


def test_random_crop_ignores_size_and_gives_crop_x_crop(tmp_path):
    path = _jpeg(tmp_path / "a.jpg", 33, 17)
    spec = ImageSpec(size=20, crop=9, random_crop=True, crop_scale=(0.5, 1.0))
    assert decode_image(path, spec).shape == (3, 9, 9)  # plain: resize then centre crop
    assert decode_image(path, spec, np.random.default_rng(0)).shape == (3, 9, 9)
    assert random_view(spec) and random_view(ImageSpec(flip=True)) and not random_view(ImageSpec(size=3, crop=3))


def test_random_crop_falls_back_to_the_centre_when_no_draw_fits():
    """A 1-pixel-high strip: no region of area >= half the image fits any ratio in 3/4..4/3."""
    strip = Image.fromarray(np.arange(64, dtype=np.uint8).reshape(1, 64).repeat(3, 0).T.reshape(1, 64, 3))
    x = decode_image(strip, ImageSpec(crop=4, random_crop=True, crop_scale=(0.5, 1.0)), np.random.default_rng(0))
    assert x.shape == (3, 4, 4)
    assert 28 <= int(x.float().mean()) <= 36  # the middle of the 0..63 ramp


def test_inputs_bytes_pil_and_exif_orientation(tmp_path):
    img = _picture(20, 30)
    buffer = io.BytesIO()
    img.save(buffer, "PNG")
    assert torch.equal(decode_image(buffer.getvalue(), ImageSpec()), pil_to_tensor(img))  # PNG is lossless
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: shown rotated by 90 degrees
    path = _jpeg(tmp_path / "turned.jpg", 20, 30, exif=exif)
    assert decode_image(path, ImageSpec()).shape == (3, 20, 30)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "TIFF"])
def test_orientation_is_read_from_every_format_that_stores_it(tmp_path, fmt):
    """Images without orientation metadata skip the EXIF pass; those with it, in any format
    (PNG's eXIf chunk, WebP, TIFF tags, an XMP packet), are still turned."""
    img = _picture(20, 30)
    plain = tmp_path / f"plain.{fmt.lower()}"
    img.save(plain, fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    assert decode_image(plain, ImageSpec()).shape == (3, 30, 20)
    exif = Image.Exif()
    exif[0x0112] = 8  # rotated by 270 degrees
    turned = tmp_path / f"turned.{fmt.lower()}"
    img.save(turned, fmt, exif=exif, **({"lossless": True} if fmt == "WEBP" else {}))
    x = decode_image(turned, ImageSpec())
    assert x.shape == (3, 20, 30)
    assert torch.equal(x, pil_to_tensor(img.transpose(Image.Transpose.ROTATE_90)))


def test_xmp_orientation_alone_turns_the_image(tmp_path):
    img = _picture(20, 30)
    xmp = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
           b'<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>')
    path = tmp_path / "xmp.jpg"
    img.save(path, "JPEG", xmp=xmp)
    assert decode_image(path, ImageSpec()).shape == (3, 20, 30)


def test_alpha_palette_cmyk_and_16_bit_are_converted(tmp_path):
    img = _picture(6, 4)
    for mode in ("RGBA", "P", "CMYK", "LA"):
        x = decode_image(img.convert(mode), ImageSpec())
        assert x.shape == (3, 4, 6) and x.dtype == torch.uint8, mode
    deep = np.full((4, 6), 65535, dtype=np.uint16)
    deep[0, 0] = 0
    Image.fromarray(deep).save(tmp_path / "deep.png")  # a 16-bit grayscale PNG
    x = decode_image(tmp_path / "deep.png", ImageSpec(mode="grayscale"))
    assert x.shape == (1, 4, 6) and int(x[0, 0, 0]) == 0 and int(x[0, 1, 1]) == 255
    half = Image.fromarray(np.full((4, 6), 32896, dtype=np.uint16))  # 128 * 257: scaled, not clipped to 255
    assert int(decode_image(half, ImageSpec(mode="grayscale"))[0, 0, 0]) == 128


def test_a_file_that_is_not_an_image_names_itself(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(KDistillError, match=r"broken\.jpg") as err:
        decode_image(bad, ImageSpec())
    assert "\n" not in str(err.value)
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(_jpeg(tmp_path / "whole.jpg").read_bytes()[:200])
    with pytest.raises(KDistillError, match=r"cut\.jpg"):
        decode_image(truncated, ImageSpec())
    with pytest.raises(KDistillError, match=r"gone\.png"):
        decode_image(tmp_path / "gone.png", ImageSpec())
