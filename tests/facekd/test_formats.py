"""Face dataset loaders on exact-format fixtures written here, and on the real samples in ../shared."""

from __future__ import annotations

from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import scipy.io
from PIL import Image

from kdcore.errors import ConfigError, DataError
from facekd.formats import FORMATS, FaceRecord, load_face_image, load_faces
from facekd.formats.cofw import close_mat_files

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures"


# ---------------------------------------------------------------- helpers writing the public formats

def photo(seed: int, width: int = 48, height: int = 40) -> np.ndarray:
    """A smooth random colour picture (BGR uint8), distinct per seed."""
    small = np.random.default_rng(seed).integers(0, 256, (5, 6, 3)).astype(np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)


def points(seed: int, n: int = 68, low: float = 5.0, high: float = 30.0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(low, high, (n, 2)).round(3)


def write_pts_text(path: Path, one_based: np.ndarray | list, n_points: int | None = None) -> None:
    """Write a .pts by hand (not with facekd.pts_files), coordinates exactly as given."""
    rows = [f"{x} {y}" for x, y in one_based]
    path.write_text(f"version: 1\nn_points: {len(rows) if n_points is None else n_points}\n{{\n"
                    + "\n".join(rows) + "\n}\n")


def write_pair(directory: Path, name: str, seed: int, suffix: str = ".jpg") -> np.ndarray:
    """An image and its .pts (1-based on disk); returns the 0-based points."""
    directory.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(directory / f"{name}{suffix}"), photo(seed))
    one_based = points(seed)
    write_pts_text(directory / f"{name}.pts", one_based)
    return one_based - 1.0


W300_LAYOUT = {"lfpw/trainset": 2, "helen/trainset": 1, "afw": 1, "lfpw/testset": 1, "helen/testset": 1, "ibug": 2}


@pytest.fixture
def tree_300w(tmp_path: Path) -> Path:
    seed = 0
    for folder, count in W300_LAYOUT.items():
        for i in range(count):
            seed += 1
            write_pair(tmp_path / folder, f"image_{i:04d}", seed, ".png" if folder.startswith("lfpw") else ".jpg")
    return tmp_path


# ---------------------------------------------------------------- FaceRecord

def test_record_freezes_its_arrays_and_checks_shapes():
    source = np.zeros((3, 2))
    record = FaceRecord("a", "a.jpg", source, "s", attributes={"pose": 1})
    source[0, 0] = 5.0
    assert record.landmarks[0, 0] == 0.0 and record.image_path == Path("a.jpg")
    with pytest.raises(ValueError):
        record.landmarks[0, 0] = 1.0
    with pytest.raises(TypeError):
        record.attributes["pose"] = 0
    with pytest.raises(ValueError, match=r"\(K, 2\), got \(3, 3\)"):
        FaceRecord("b", "b.jpg", np.zeros((3, 3)), "s")
    with pytest.raises(ValueError, match="occluded"):
        FaceRecord("c", "c.jpg", np.zeros((3, 2)), "s", occluded=np.zeros(2, bool))


def test_registry_rejects_unknown_format_and_split(tree_300w):
    assert set(FORMATS) == {"300w", "wflw", "cofw", "folder"}
    with pytest.raises(ConfigError, match="unknown face dataset format"):
        load_faces(tree_300w, "menpo")
    with pytest.raises(ConfigError, match="no split 'valid'"):
        load_faces(tree_300w, "300w", "valid")
    with pytest.raises(ConfigError, match="on_missing"):
        load_faces(tree_300w, "300w", on_missing="ignore")


# ---------------------------------------------------------------- 300-W

def test_300w_splits_subsets_and_zero_based_points(tree_300w):
    expected = {"train": 4, "common": 2, "challenging": 2, "full": 4, "all": 8, None: 8}
    for split, count in expected.items():
        assert len(load_faces(tree_300w, "300w", split)) == count, split
    records = {r.record_id: r for r in load_faces(tree_300w, "300w")}
    assert {r.record_id.split("/")[0] for r in records.values()} == {"lfpw", "helen", "afw", "ibug"}
    assert records["afw/image_0000"].subset == "train"
    assert records["helen/testset/image_0000"].subset == "common"
    assert records["ibug/image_0001"].subset == "challenging"
    assert len({r.subject for r in records.values()}) == 8  # no identities: each image its own subject
    text = (tree_300w / "ibug" / "image_0001.pts").read_text().split("\n")
    first_x, first_y = map(float, text[3].split())
    np.testing.assert_allclose(records["ibug/image_0001"].landmarks[0], [first_x - 1, first_y - 1])
    assert records["ibug/image_0001"].n_points == 68


def test_300w_missing_folder_is_named(tree_300w):
    for path in (tree_300w / "ibug").iterdir():
        path.unlink()
    (tree_300w / "ibug").rmdir()
    assert len(load_faces(tree_300w, "300w", "train")) == 4
    with pytest.raises(DataError, match=r"ibug: 300-W folder missing"):
        load_faces(tree_300w, "300w", "challenging")


@pytest.mark.parametrize("body, message", [
    (["1 2"] * 67, "67 points, expected 68"),
    (["1 2"] * 67 + ["nan 3"], "non-finite"),
    (["1 2"] * 67 + ["one 3"], "not a number"),
    (["1 2"] * 67 + ["500 3"], "far outside the 48x40 image"),
])
def test_300w_bad_pts_is_an_error_naming_the_file(tree_300w, body, message):
    pts = tree_300w / "afw" / "image_0000.pts"
    write_pts_text(pts, [row.split() for row in body])
    with pytest.raises(DataError, match=message) as error:
        load_faces(tree_300w, "300w", "train")
    assert str(pts) in str(error.value)


def test_far_outside_points_pass_without_bounds_check(tree_300w):
    write_pts_text(tree_300w / "afw" / "image_0000.pts", [[str(500 + i), str(3 + i)] for i in range(68)])
    assert len(load_faces(tree_300w, "300w", "train", check_bounds=False)) == 4
    # points a little outside the frame (faces cut by the border) are fine
    write_pts_text(tree_300w / "afw" / "image_0000.pts", [[str(-10 + i / 4), str(5 + i / 4)] for i in range(68)])
    assert len(load_faces(tree_300w, "300w", "train")) == 4


# ---------------------------------------------------------------- folder

def test_folder_with_subjects_file_and_split(tmp_path):
    write_pair(tmp_path / "train" / "anna", "a1", 1)
    write_pair(tmp_path / "train" / "anna", "a2", 2, ".png")
    write_pair(tmp_path / "test", "b1", 3)
    (tmp_path / "subjects.csv").write_text("image,subject\ntrain/anna/a1.jpg,anna\ntrain/anna/a2.png,anna\n"
                                           "test/b1.jpg,bob\n")
    records = {r.record_id: r for r in load_faces(tmp_path, "folder")}
    assert set(records) == {"train/anna/a1", "train/anna/a2", "test/b1"}
    assert [records[k].subject for k in sorted(records)] == ["bob", "anna", "anna"]
    train = load_faces(tmp_path, "folder", "train")
    assert {r.record_id for r in train} == {"train/anna/a1", "train/anna/a2"} and train[0].subset == "train"
    (tmp_path / "subjects.csv").write_text("image,subject\ntrain/anna/a1.jpg,anna\n")
    with pytest.raises(DataError, match=r"test/b1.jpg: image is not listed in subjects.csv"):
        load_faces(tmp_path, "folder")
    with pytest.raises(DataError, match="not a folder"):
        load_faces(tmp_path, "folder", "valid")


def test_folder_missing_pairs_error_or_skip(tmp_path):
    write_pair(tmp_path, "good", 1)
    cv2.imwrite(str(tmp_path / "lonely.jpg"), photo(2))
    with pytest.raises(DataError, match=r"lonely.jpg: image has no .pts"):
        load_faces(tmp_path, "folder")
    (tmp_path / "lonely.jpg").unlink()
    write_pts_text(tmp_path / "orphan.pts", points(3))
    with pytest.raises(DataError, match=r"orphan.pts: no image beside"):
        load_faces(tmp_path, "folder")
    cv2.imwrite(str(tmp_path / "lonely.jpg"), photo(2))
    assert [r.record_id for r in load_faces(tmp_path, "folder", on_missing="skip")] == ["good"]


def test_folder_point_count_is_the_common_one_or_given(tmp_path):
    for i in range(3):
        write_pair(tmp_path, f"f{i}", i)
    write_pts_text(tmp_path / "f1.pts", points(1, n=67))
    with pytest.raises(DataError, match=r"f1.pts: 67 points, expected 68"):
        load_faces(tmp_path, "folder")
    with pytest.raises(DataError, match=r"f0.pts: 68 points, expected 67"):
        load_faces(tmp_path, "folder", n_points=67)


def test_load_face_image_drops_alpha_and_keeps_rgb_order(tmp_path):
    bgra = np.zeros((16, 20, 4), np.uint8)
    bgra[..., 2] = 200  # red in OpenCV's BGR order
    bgra[..., 3] = 255
    cv2.imwrite(str(tmp_path / "alpha.png"), bgra)
    write_pts_text(tmp_path / "alpha.pts", points(0, low=1, high=15))
    image = load_face_image(load_faces(tmp_path, "folder")[0])
    assert image.shape == (16, 20, 3) and image.dtype == np.uint8
    assert (image[..., 0] == 200).all() and (image[..., 1:] == 0).all()


# ---------------------------------------------------------------- WFLW

def wflw_line(coords: np.ndarray, box=(1, 2, 40, 38), attributes=(0, 0, 0, 0, 0, 0), image="0--Parade/a.jpg"):
    return " ".join([*(f"{v:.6f}" for v in coords.ravel()), *map(str, box), *map(str, attributes), image])


@pytest.fixture
def tree_wflw(tmp_path: Path) -> Path:
    for seed, relative in enumerate(["0--Parade/a.jpg", "1--Handshaking/b.jpg", "1--Handshaking/c.jpg"]):
        (tmp_path / "WFLW_images" / relative).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / "WFLW_images" / relative), photo(seed))
    lists = tmp_path / "WFLW_annotations" / "list_98pt_rect_attr_train_test"
    lists.mkdir(parents=True)
    (lists / "list_98pt_rect_attr_train.txt").write_text(
        wflw_line(points(10, 98)) + "\n" + wflw_line(points(11, 98), box=(3, 4, 20, 22)) + "\n")
    (lists / "list_98pt_rect_attr_test.txt").write_text(
        wflw_line(points(12, 98), attributes=(1, 0, 1, 0, 0, 1), image="1--Handshaking/b.jpg") + "\n\n"
        + wflw_line(points(13, 98), attributes=(0, 1, 0, 0, 1, 0), image="1--Handshaking/c.jpg") + "\n")
    return tmp_path


def test_wflw_lines_become_records(tree_wflw):
    train = load_faces(tree_wflw, "wflw", "train")
    assert len(train) == 2
    assert train[0].subject == train[1].subject == "0--Parade/a.jpg"  # faces of one photo: one group
    assert [r.record_id for r in train] == ["train/0--Parade/a#0", "train/0--Parade/a#1"]
    np.testing.assert_allclose(train[1].landmarks, points(11, 98), atol=1e-6)  # WFLW pixels used as they are
    assert train[1].box == (3.0, 4.0, 20.0, 22.0) and train[1].subset == "train"
    assert train[0].image_path == tree_wflw / "WFLW_images" / "0--Parade" / "a.jpg"
    test = load_faces(tree_wflw, "wflw", "test")
    assert dict(test[0].attributes) == {"pose": 1, "expression": 0, "illumination": 1, "makeup": 0,
                                        "occlusion": 0, "blur": 1}
    assert [r.subject for r in load_faces(tree_wflw, "wflw", "pose")] == ["1--Handshaking/b.jpg"]
    assert [r.subject for r in load_faces(tree_wflw, "wflw", "occlusion")] == ["1--Handshaking/c.jpg"]
    assert load_faces(tree_wflw, "wflw", "makeup") == []
    assert len(load_faces(tree_wflw, "wflw")) == 4


@pytest.mark.parametrize("line, message", [
    (wflw_line(points(1, 98)) + " extra", "expected 207 fields .* got 208"),
    (wflw_line(points(1, 98)).replace(" ", " x", 1), "field 2 is not a number: 'x"),
    (wflw_line(points(1, 98), attributes=(0, 2, 0, 0, 0, 0)), "attribute expression must be 0 or 1, got '2'"),
    (wflw_line(points(1, 98), box=(40, 2, 1, 38)), "is not x_min y_min x_max y_max"),
    (wflw_line(points(1, 98) + 500), "far outside the 48x40 image"),
    (wflw_line(points(1, 98), image="0--Parade/missing.jpg"), "image file not found"),
])
def test_wflw_bad_line_names_file_and_line(tree_wflw, line, message):
    annotations = (tree_wflw / "WFLW_annotations" / "list_98pt_rect_attr_train_test"
                   / "list_98pt_rect_attr_train.txt")
    annotations.write_text(wflw_line(points(10, 98)) + "\n" + line + "\n")
    with pytest.raises(DataError, match=message) as error:
        load_faces(tree_wflw, "wflw", "train")
    assert f"{annotations}:2:" in str(error.value)


def test_wflw_195_coordinates_are_refused(tree_wflw):
    annotations = (tree_wflw / "WFLW_annotations" / "list_98pt_rect_attr_train_test"
                   / "list_98pt_rect_attr_test.txt")
    fields = wflw_line(points(1, 98)).split()
    annotations.write_text(" ".join(fields[:194] + fields[195:]) + "\n")
    with pytest.raises(DataError, match=rf"{annotations}:1: expected 207 fields .* got 206"):
        load_faces(tree_wflw, "wflw", "test")


def test_wflw_missing_annotation_file(tree_wflw):
    (tree_wflw / "WFLW_annotations" / "list_98pt_rect_attr_train_test" / "list_98pt_rect_attr_test.txt").unlink()
    assert len(load_faces(tree_wflw, "wflw", "train")) == 2
    with pytest.raises(DataError, match="list_98pt_rect_attr_test.txt: WFLW annotation file not found"):
        load_faces(tree_wflw, "wflw", "blur")


# ---------------------------------------------------------------- COFW

def cofw_data(seed: int = 0):
    """Three images (colour, grey, colour) and their 1-based annotations as MATLAB holds them."""
    rng = np.random.default_rng(seed)
    images = [cv2.cvtColor(photo(seed, 40, 30), cv2.COLOR_BGR2RGB),
              rng.integers(0, 256, (32, 36)).astype(np.uint8),
              cv2.cvtColor(photo(seed + 1, 44, 34), cv2.COLOR_BGR2RGB)]
    phis = np.concatenate([rng.uniform(2, 28, (3, 29)).round(2), rng.uniform(2, 28, (3, 29)).round(2),
                           rng.integers(0, 2, (3, 29))], axis=1).astype(np.float64)
    bboxes = np.array([[3, 4, 20, 22], [1, 1, 30, 30], [5, 6, 25, 24]], dtype=np.float64)
    return images, phis, bboxes


def write_mat_v5(path: Path, names: tuple[str, str, str], images, phis, bboxes) -> None:
    cell = np.empty((len(images), 1), dtype=object)
    for i, image in enumerate(images):
        cell[i, 0] = image
    scipy.io.savemat(path, {names[0]: cell, names[1]: phis, names[2]: bboxes})


def write_mat_v73(path: Path, names: tuple[str, str, str], images, phis, bboxes) -> None:
    """Mimic MATLAB -v7.3: HDF5 after a 512-byte header, column-major arrays stored transposed,
    the cell array as object references into ``#refs#``."""
    with h5py.File(path, "w", userblock_size=512) as f:
        refs = f.create_group("#refs#")
        cell = f.create_dataset(names[0], shape=(1, len(images)), dtype=h5py.ref_dtype)
        for i, image in enumerate(images):
            data = refs.create_dataset(f"r{i}", data=image.T)
            data.attrs["MATLAB_class"] = np.bytes_("uint8")
            cell[0, i] = data.ref
        cell.attrs["MATLAB_class"] = np.bytes_("cell")
        f.create_dataset(names[1], data=phis.T).attrs["MATLAB_class"] = np.bytes_("double")
        f.create_dataset(names[2], data=bboxes.T).attrs["MATLAB_class"] = np.bytes_("double")
    with open(path, "r+b") as handle:
        handle.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 "
                     b"HDF5 schema 1.00 .".ljust(116) + b"\x00" * 8 + b"\x00\x02IM")


TRAIN_NAMES, TEST_NAMES = ("IsTr", "phisTr", "bboxesTr"), ("IsT", "phisT", "bboxesT")


@pytest.fixture
def tree_cofw(tmp_path: Path):
    """Public versions: train v7.3, test v5."""
    train, test = cofw_data(0), cofw_data(5)
    write_mat_v73(tmp_path / "COFW_train_color.mat", TRAIN_NAMES, *train)
    write_mat_v5(tmp_path / "COFW_test_color.mat", TEST_NAMES, *test)
    yield tmp_path, train, test
    close_mat_files()


def check_cofw(records, data, part):
    images, phis, bboxes = data
    assert [r.record_id for r in records] == [f"{part}/000{i}" for i in (1, 2, 3)]
    for i, record in enumerate(records):
        np.testing.assert_allclose(record.landmarks[:, 0], phis[i, :29] - 1)  # Matlab 1-based -> 0-based
        np.testing.assert_allclose(record.landmarks[:, 1], phis[i, 29:58] - 1)
        np.testing.assert_array_equal(record.occluded, phis[i, 58:] == 1)
        x, y, w, h = bboxes[i]
        assert record.box == (x - 1, y - 1, x - 1 + w, y - 1 + h)
        assert record.subset == part and record.subject == record.record_id and record.image_index == i
        image = load_face_image(record)
        assert image.dtype == np.uint8 and image.shape == images[i].shape[:2] + (3,)
        expected = images[i] if images[i].ndim == 3 else np.repeat(images[i][..., None], 3, axis=2)
        np.testing.assert_array_equal(image, expected)


def test_cofw_both_matlab_versions(tree_cofw):
    root, train, test = tree_cofw
    assert h5py.is_hdf5(root / "COFW_train_color.mat") and not h5py.is_hdf5(root / "COFW_test_color.mat")
    check_cofw(load_faces(root, "cofw", "train"), train, "train")
    check_cofw(load_faces(root, "cofw", "test"), test, "test")
    assert len(load_faces(root, "cofw")) == 6


def test_cofw_versions_swapped(tmp_path):
    train, test = cofw_data(1), cofw_data(2)
    write_mat_v5(tmp_path / "COFW_train_color.mat", TRAIN_NAMES, *train)
    write_mat_v73(tmp_path / "COFW_test_color.mat", TEST_NAMES, *test)
    try:
        check_cofw(load_faces(tmp_path, "cofw", "train"), train, "train")
        check_cofw(load_faces(tmp_path, "cofw", "test"), test, "test")
    finally:
        close_mat_files()


@pytest.mark.parametrize("writer", [write_mat_v5, write_mat_v73])
def test_cofw_bad_content(tmp_path, writer):
    images, phis, bboxes = cofw_data(3)
    path = tmp_path / "COFW_test_color.mat"

    def rewrite(*args):
        close_mat_files()  # an open HDF5 file cannot be overwritten
        writer(path, *args)

    try:
        bad = phis.copy()
        bad[1, 60] = 2
        rewrite(TEST_NAMES, images, bad, bboxes)
        with pytest.raises(DataError, match=r"phisT\(row 2\): occlusion flags must be 0 or 1"):
            load_faces(tmp_path, "cofw", "test")
        bad = phis.copy()
        bad[2, 3] = 400
        rewrite(TEST_NAMES, images, bad, bboxes)
        with pytest.raises(DataError, match=r"phisT\(row 3\): point 3 .* far outside the 44x34 image"):
            load_faces(tmp_path, "cofw", "test")
        rewrite(TEST_NAMES, images, phis[:, :50], bboxes)
        with pytest.raises(DataError, match=r"phisT has shape \(3, 50\), expected \(3, 87\)"):
            load_faces(tmp_path, "cofw", "test")
        rewrite(("Images", "phis", "boxes"), images, phis, bboxes)
        with pytest.raises(DataError, match="no COFW variables"):
            load_faces(tmp_path, "cofw", "test")
        with pytest.raises(DataError, match="COFW_train_color.mat: COFW file not found"):
            load_faces(tmp_path, "cofw", "train")
    finally:
        close_mat_files()


# ---------------------------------------------------------------- real samples (../shared/fixtures)

def _independent_pts(path: Path) -> np.ndarray:
    lines = path.read_text().split("\n")
    start = lines.index("{") + 1
    return np.loadtxt(lines[start:start + 68]) - 1.0


@pytest.mark.real_fixtures
@pytest.mark.parametrize("name, count", [("faces-lfpw", 50), ("faces-300w", 2)])
def test_real_faces_through_the_folder_loader(name, count):
    root = FIXTURES / name
    if not root.is_dir():
        pytest.skip(f"{root} absent")
    records = load_faces(root, "folder")
    assert len(records) == count
    assert len({r.subject for r in records}) == count
    for record in records[:5]:
        np.testing.assert_allclose(record.landmarks, _independent_pts(record.image_path.with_suffix(".pts")))
        with Image.open(record.image_path) as image:
            width, height = image.size
        assert load_face_image(record).shape == (height, width, 3)
        assert (record.landmarks >= -1).all() and (record.landmarks[:, 0] <= width).all()
    if name == "faces-300w":
        einstein = next(r for r in records if r.record_id == "einstein")
        assert load_face_image(einstein).shape == (1024, 817, 3)
