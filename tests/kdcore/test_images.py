import cv2
import numpy as np
import pytest

from kdcore.images import ImageReadError, read_image


@pytest.fixture
def grey(tmp_path):
    image = (np.arange(40 * 30) % 251).astype(np.uint8).reshape(30, 40)
    return image, tmp_path


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".tif", ".bmp"])
def test_reads_gray_and_rgb(grey, suffix):
    image, tmp = grey
    path = tmp / f"a{suffix}"
    cv2.imwrite(str(path), image)
    gray = read_image(path, "gray")
    assert gray.shape == (30, 40) and gray.dtype == np.uint8
    assert read_image(path, "rgb").shape == (30, 40, 3)


def test_rgb_stored_greyscale_reads_as_gray(grey):
    image, tmp = grey
    cv2.imwrite(str(tmp / "a.png"), np.dstack([image] * 3))
    assert np.array_equal(read_image(tmp / "a.png", "gray"), image)


@pytest.mark.parametrize("suffix,cut", [(".jpg", 0.6), (".png", 0.6), (".tif", 0.5)])
def test_truncated_images_are_refused(grey, suffix, cut):
    image, tmp = grey
    noisy = np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)
    path = tmp / f"t{suffix}"
    cv2.imwrite(str(path), noisy)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(ImageReadError, match=rf"t\{suffix}: (truncated|cannot decode)"):
        read_image(path, "gray")


def test_empty_missing_and_non_image(tmp_path):
    (tmp_path / "zero.jpg").write_bytes(b"")
    with pytest.raises(ImageReadError, match=r"zero\.jpg: empty file"):
        read_image(tmp_path / "zero.jpg")
    with pytest.raises(ImageReadError, match="file not found"):
        read_image(tmp_path / "nope.png")
    (tmp_path / "text.png").write_text("hello, not an image")
    with pytest.raises(ImageReadError, match="not an image format the decoders read"):
        read_image(tmp_path / "text.png")


def test_wrong_bit_depth_and_channels(tmp_path):
    cv2.imwrite(str(tmp_path / "deep.png"), np.zeros((16, 16), np.uint16) + 1000)
    with pytest.raises(ImageReadError, match="bit depth uint16"):
        read_image(tmp_path / "deep.png")
    cv2.imwrite(str(tmp_path / "rgba.png"), np.zeros((16, 16, 4), np.uint8))
    with pytest.raises(ImageReadError, match="4 channels"):
        read_image(tmp_path / "rgba.png", "gray")
    assert read_image(tmp_path / "rgba.png", "rgb", allow_alpha=True).shape == (16, 16, 3)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_honoured_as_pil_does(tmp_path, orientation):
    from PIL import Image, ImageOps

    pixels = np.zeros((20, 30, 3), np.uint8)
    pixels[:5, :8] = (255, 0, 0)  # a red corner shows where the top-left ends up
    pixels[-4:, :, 1] = 200
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "phone.png"
    Image.fromarray(pixels).save(path, exif=exif)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    assert np.array_equal(read_image(path, "rgb"), expected)


def test_netpbm_photograph_is_read_by_content(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 255, (24, 32, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "takeo.ppm"), pixels)
    assert read_image(tmp_path / "takeo.ppm", "rgb").shape == (24, 32, 3)
