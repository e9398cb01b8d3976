"""Every format phones and cameras write is indexed upright: HEIC and AVIF (written here
by the plugins' own encoders), camera RAW (DNGs written here by tifffile: one with a
full-size preview, one to demosaic), multi-page TIFF, 16-bit and CMYK images, EXIF
orientation in each container; a format whose library is missing gets a ledger row
naming the extra to install, and is read once the extra is there."""

from __future__ import annotations

import sqlite3
import sys

import numpy as np
import pytest

import facevec
from facevec.engine import decode, embed
from facevec.errors import MissingFormatSupportError, PhotoTooLargeError

SOURCE = "img12.jpg"  # one face, 560 x 415: cheap to embed many times
# Lossy re-encodings move a vector a little; the same face in another photo is ~0.4 away.
SAME_FACE = 0.1
SAME_FACE_IN_GREY = 0.25  # the colour is gone too (0.14 measured)


def _upright(photos):
    from PIL import Image

    with Image.open(photos(SOURCE)) as opened:
        return np.asarray(opened.convert("RGB"))


def _exif(orientation: int) -> bytes:
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def write_dng(path, rgb: np.ndarray, preview: bool) -> None:
    """A DNG of `rgb`: its Bayer mosaic (linear, RGGB, 12-bit), with or without the
    full-size preview cameras embed (then the mosaic is in a SubIFD, as cameras do)."""
    import tifffile

    height, width = (rgb.shape[0] // 2) * 2, (rgb.shape[1] // 2) * 2
    linear = (rgb[:height, :width] / 255.0) ** 2.2 * 4095
    mosaic = np.empty((height, width), np.uint16)
    mosaic[0::2, 0::2] = linear[0::2, 0::2, 0]
    mosaic[0::2, 1::2] = linear[0::2, 1::2, 1]
    mosaic[1::2, 0::2] = linear[1::2, 0::2, 1]
    mosaic[1::2, 1::2] = linear[1::2, 1::2, 2]

    def rationals(values):
        return [part for value in values for part in (round(value * 10000), 10000)]

    # The camera's colour space is linear sRGB: ColorMatrix1 is XYZ (D65) to sRGB.
    xyz_to_srgb = [3.2406, -1.5372, -0.4986, -0.9689, 1.8758, 0.0415, 0.0557, -0.2040, 1.0570]
    dng = [
        (50706, "B", 4, (1, 4, 0, 0), True),  # DNGVersion
        (50707, "B", 4, (1, 1, 0, 0), True),  # DNGBackwardVersion
        (50708, "s", 0, "facevec test camera", True),  # UniqueCameraModel
        (50721, "2i", 9, rationals(xyz_to_srgb), True),  # ColorMatrix1
        (50778, "H", 1, 21, True),  # CalibrationIlluminant1: D65
        (50728, "2I", 3, rationals([1, 1, 1]), True),  # AsShotNeutral
    ]
    cfa = [
        (33421, "H", 2, (2, 2), True),  # CFARepeatPatternDim
        (33422, "B", 4, (0, 1, 1, 2), True),  # CFAPattern: RGGB
        (50714, "H", 1, 0, True),  # BlackLevel
        (50717, "H", 1, 4095, True),  # WhiteLevel
    ]
    with tifffile.TiffWriter(path) as tif:
        if preview:
            tif.write(
                rgb[:height, :width], photometric="rgb", subfiletype=1, subifds=1, extratags=dng
            )
            tif.write(mosaic, photometric=32803, subfiletype=0, extratags=cfa)
        else:
            tif.write(mosaic, photometric=32803, subfiletype=0, extratags=dng + cfa)


@pytest.fixture(scope="module")
def format_folder(tmp_path_factory, photos):
    """The same face in every format, each file named for what it tests."""
    import pillow_heif
    import tifffile
    from PIL import Image

    pillow_heif.register_heif_opener()
    folder = tmp_path_factory.mktemp("formats") / "photos"
    folder.mkdir()
    rgb = _upright(photos)
    image = Image.fromarray(rgb)
    turned = image.rotate(90, expand=True)  # stored a quarter turn off; EXIF 6 turns it back
    (folder / "original.jpg").write_bytes(open(photos(SOURCE), "rb").read())
    image.save(folder / "phone.heic", quality=90)
    image.save(folder / "phone.avif", quality=90)
    turned.save(folder / "turned.heic", quality=90, exif=_exif(6))
    turned.save(folder / "turned.jpg", quality=95, exif=_exif(6))
    turned.save(folder / "turned.png", exif=_exif(6))
    turned.save(folder / "turned.webp", quality=95, exif=_exif(6))
    turned.save(folder / "turned.tiff", exif=_exif(6))
    image.convert("CMYK").save(folder / "cmyk.jpg", quality=95)
    image.convert("CMYK").save(folder / "cmyk.tiff")
    blank = Image.new("RGB", (300, 200), (90, 90, 90))
    image.save(folder / "pages.tiff", save_all=True, append_images=[blank])
    tifffile.imwrite(folder / "deep.tiff", rgb.astype(np.uint16) * 257, photometric="rgb")
    grey = (np.asarray(image.convert("L")).astype(np.uint16) * 257).astype(np.uint16)
    Image.fromarray(grey).save(folder / "grey16.png")
    write_dng(folder / "camera.dng", rgb, preview=True)
    write_dng(folder / "develop.dng", rgb, preview=False)
    return folder


@pytest.fixture(scope="module")
def formats_db(format_folder, tmp_path_factory):
    db = tmp_path_factory.mktemp("formats_db") / "formats.db"
    report = facevec.index(format_folder, db, progress=False, workers=1)
    return db, report


def stored(db):
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT img_name, embedding, facial_area_x, facial_area_y, facial_area_w "
            "FROM face_meta ORDER BY img_name"
        ).fetchall()
    return {
        name.rsplit("/", 1)[1]: (np.frombuffer(blob, np.float32), (x, y, w))
        for name, blob, x, y, w in rows
    }


def test_every_format_is_indexed_upright_with_its_one_face(formats_db, format_folder):
    db, report = formats_db
    files = sorted(p.name for p in format_folder.iterdir())
    assert report.files_seen == len(files) and report.errors == 0, report.error_messages
    assert report.indexed == len(files) and report.faces_added == len(files)
    faces = stored(db)
    assert sorted(faces) == files
    reference, (x, y, w) = faces["original.jpg"]
    for name, (vector, box) in faces.items():
        distance = float(np.linalg.norm(vector - reference))
        assert distance < (SAME_FACE_IN_GREY if "grey" in name else SAME_FACE), (name, distance)
        # Upright: the box is where the original's is (a HOG cell of slack).
        assert abs(box[0] - x) <= 16 and abs(box[1] - y) <= 16 and abs(box[2] - w) <= 16, name


def test_lossless_formats_give_the_original_vector(formats_db):
    faces = stored(formats_db[0])
    reference = faces["original.jpg"][0]
    for name in ("turned.png", "turned.tiff", "pages.tiff", "deep.tiff", "camera.dng"):
        np.testing.assert_allclose(faces[name][0], reference, atol=1e-6, err_msg=name)


def test_raw_uses_its_full_size_preview_else_a_demosaic(format_folder, photos):
    rgb = _upright(photos)
    height, width = (rgb.shape[0] // 2) * 2, (rgb.shape[1] // 2) * 2
    expected = rgb[:height, :width, ::-1]
    preview = decode.decode_photo((format_folder / "camera.dng").read_bytes(), "camera.dng")
    assert np.array_equal(preview.image, expected)  # the embedded pixels themselves
    developed = decode.decode_photo((format_folder / "develop.dng").read_bytes(), "develop.dng")
    assert developed.image.shape == expected.shape
    difference = np.abs(developed.image.astype(int) - expected).mean()
    assert 0 < difference < 20  # libraw's demosaic of the mosaic: close, not equal


def test_sixteen_bit_keeps_the_high_byte(format_folder, photos):
    rgb = _upright(photos)
    deep = decode.decode_photo((format_folder / "deep.tiff").read_bytes(), "deep.tiff")
    assert np.array_equal(deep.image, rgb[:, :, ::-1])
    grey = decode.decode_photo((format_folder / "grey16.png").read_bytes(), "grey16.png")
    assert grey.image.dtype == np.uint8 and grey.image.shape == rgb.shape
    assert grey.image[:, :, 0].max() > 200  # scaled down, not clipped to white


def test_pixel_limit_is_read_before_decoding_in_every_format(format_folder):
    for name in ("phone.heic", "phone.avif", "camera.dng", "develop.dng", "pages.tiff"):
        data = (format_folder / name).read_bytes()
        # (The DNGs' mosaic has an even height.)
        assert decode.header_size(data, name) == (560, 414 if name.endswith(".dng") else 415)
        with pytest.raises(PhotoTooLargeError, match="over the limit of 0.1 megapixels"):
            decode.decode_photo(data, name, max_pixels=100_000)


@pytest.fixture
def no_format_libraries(monkeypatch):
    """This process as if pillow-heif and rawpy were not installed and Pillow had no AVIF."""
    embed.clear_cache()  # photos embedded earlier in this process would not be decoded
    monkeypatch.setattr(decode, "_register_heif", lambda: False)
    monkeypatch.setattr(decode, "_has_avif", lambda: False)
    monkeypatch.setitem(sys.modules, "rawpy", None)


def test_missing_format_library_gets_a_ledger_row_naming_the_extra(
    format_folder, tmp_path, monkeypatch, no_format_libraries
):
    db = tmp_path / "light.db"
    first = facevec.index(format_folder, db, progress=False, workers=1)
    needs = {"phone.heic", "turned.heic", "phone.avif", "camera.dng", "develop.dng"}
    assert first.errors == len(needs) and first.indexed == first.files_seen - len(needs)
    with sqlite3.connect(db) as conn:
        rows = dict(
            (path.rsplit("/", 1)[1], (outcome, message))
            for path, outcome, message in conn.execute(
                "SELECT path, outcome, message FROM ingest_ledger WHERE outcome <> 'indexed'"
            )
        )
    assert set(rows) == needs
    for name, (outcome, message) in rows.items():
        assert outcome == "error" and message.endswith("pip install 'facevec[formats]'"), name
    assert "HEIF/HEIC image and pillow-heif is not installed" in rows["phone.heic"][1]
    assert "AVIF image" in rows["phone.avif"][1]
    assert "camera RAW file and rawpy is not installed" in rows["camera.dng"][1]
    # Still missing: nothing is read again. Installed: they are indexed.
    again = facevec.index(format_folder, db, progress=False, workers=1)
    assert again.unchanged == again.files_seen and again.errors == 0
    monkeypatch.undo()
    after = facevec.index(format_folder, db, progress=False, workers=1)
    assert after.indexed == len(needs) and after.faces_added == len(needs)
    assert after.unchanged == after.files_seen - len(needs)


def test_missing_library_is_a_clear_error_for_one_photo(format_folder, no_format_libraries):
    data = (format_folder / "phone.heic").read_bytes()
    with pytest.raises(MissingFormatSupportError, match=r"pip install 'facevec\[formats\]'"):
        decode.decode_photo(data, "phone.heic")
    with pytest.raises(MissingFormatSupportError, match="rawpy is not installed"):
        decode.header_size((format_folder / "camera.dng").read_bytes(), "camera.dng")
