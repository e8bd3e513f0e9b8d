"""Reading inputs (SPEC §5): NPY in chunks without pickle, NPZ keys, CSV columns, path rules."""

from __future__ import annotations

import numpy as np
import pytest

from lossctl.errors import InputError
from lossctl.readers import open_input, open_source
from lossctl.filearray import FileArray


def test_npy_is_read_in_chunks_not_whole(tmp_path):
    arr = np.arange(30, dtype=np.float32).reshape(10, 3)
    np.save(tmp_path / "a.npy", arr)
    lazy = open_input(str(tmp_path / "a.npy"))
    assert isinstance(lazy, FileArray)
    assert lazy.shape == (10, 3) and lazy.dtype == np.float32
    np.testing.assert_array_equal(lazy.read(2, 5), arr[2:5])
    np.testing.assert_array_equal(lazy.read(8, 100), arr[8:])
    np.testing.assert_array_equal(lazy.read(1, 3, axis=1), arr[:, 1:3])


def test_fortran_order_npy(tmp_path):
    arr = np.asfortranarray(np.arange(12.0).reshape(4, 3))
    np.save(tmp_path / "f.npy", arr)
    np.testing.assert_array_equal(open_input(str(tmp_path / "f.npy")).read(1, 3), arr[1:3])


def test_pickled_object_array_is_refused_without_unpickling(tmp_path):
    path = tmp_path / "obj.npy"
    np.save(path, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="pickle"):
        open_input(str(path))


def test_npz_single_array_keys_and_bundles(tmp_path):
    np.savez(tmp_path / "one.npz", x=np.ones(3))
    assert open_input(str(tmp_path / "one.npz")).shape == (3,)
    np.savez(tmp_path / "two.npz", preds=np.ones(3), targets=np.zeros(3))
    assert open_input(str(tmp_path / "two.npz") + ":targets").read_all().sum() == 0
    bundle = open_source(str(tmp_path / "two.npz"))
    assert set(bundle) == {"preds", "targets"}
    with pytest.raises(InputError, match="pick one"):
        open_input(str(tmp_path / "two.npz"))
    with pytest.raises(InputError, match="did you mean 'preds'"):
        open_input(str(tmp_path / "two.npz") + ":pred")


def test_csv_header_detection_and_selection(tmp_path, csv_parser):
    path = tmp_path / "d.csv"
    path.write_text("id,y_true,y_pred,name\n1,0.5,0.7,a\n2,1.5,1.0,b\n")
    both = open_input(f"{path}:y_true,y_pred").read_all()
    np.testing.assert_array_equal(both, [[0.5, 0.7], [1.5, 1.0]])
    np.testing.assert_array_equal(open_input(f"{path}:2").read_all(), [0.7, 1.0])
    default = open_input(str(path))  # all numeric columns
    assert default.shape == (2, 3)
    headerless = tmp_path / "h.csv"
    headerless.write_text("0.5,1\n0.25,0\n")
    np.testing.assert_array_equal(open_input(f"{headerless}:0").read_all(), [0.5, 0.25])
    tsv = tmp_path / "d.tsv"
    tsv.write_text("a\tb\n1\t2\n3\t4\n")
    np.testing.assert_array_equal(open_input(f"{tsv}:b").read_all(), [2, 4])


def test_csv_errors_name_the_line_and_column(tmp_path, csv_parser):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n3,4,5\n")
    with pytest.raises(InputError, match="line 3"):
        open_input(str(bad))
    text = tmp_path / "text.csv"
    text.write_text("a,b\n1,2\n3,x\n")
    with pytest.raises(InputError, match=r"column 'b' has a non-numeric value 'x' at line 3"):
        open_input(f"{text}:b")
    with pytest.raises(InputError, match="did you mean 'a'"):
        open_input(f"{text}:aa")


def test_a_colon_in_an_existing_path_is_part_of_the_name(tmp_path):
    path = tmp_path / "run:3.npy"
    np.save(path, np.ones(2))
    assert open_input(str(path)).shape == (2,)


@pytest.mark.parametrize("content, fragment", [(b"not numpy", "not a valid .npy"), (b"", "not a valid .npy")])
def test_corrupt_npy(tmp_path, content, fragment):
    path = tmp_path / "x.npy"
    path.write_bytes(content)
    with pytest.raises(InputError, match=fragment):
        open_input(str(path))


def test_truncated_npy(tmp_path):
    path = tmp_path / "t.npy"
    np.save(path, np.ones(100))
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(InputError, match="truncated"):
        open_input(str(path))


def test_missing_file_and_unknown_type(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        open_input(str(tmp_path / "nope.npy"))
    (tmp_path / "x.hdf5").write_bytes(b"x")
    with pytest.raises(InputError, match="unsupported file type"):
        open_input(str(tmp_path / "x.hdf5"))
    with pytest.raises(InputError, match="string|not numeric"):
        np.save(tmp_path / "s.npy", np.array(["a", "b"]))
        open_input(str(tmp_path / "s.npy"))


def test_stored_npz_members_are_read_lazily_in_place(tmp_path):
    a, b = np.arange(24.0).reshape(6, 4), np.arange(6)
    np.savez(tmp_path / "s.npz", a=a, b=b)
    lazy = open_source(str(tmp_path / "s.npz"))
    assert all(isinstance(v, FileArray) for v in lazy.values())  # no member is loaded up front
    np.testing.assert_array_equal(lazy["a"].read(1, 4), a[1:4])
    np.testing.assert_array_equal(lazy["b"].read_all(), b)
    np.savez_compressed(tmp_path / "c.npz", a=a)
    np.testing.assert_array_equal(open_input(f"{tmp_path / 'c.npz'}:a").read(2, 5), a[2:5])


def test_object_member_in_npz_is_refused(tmp_path):
    np.savez(tmp_path / "o.npz", x=np.array([{"a": 1}], dtype=object), y=np.ones(1))
    with pytest.raises(InputError, match="pickle"):
        open_input(f"{tmp_path / 'o.npz'}:x")
    with pytest.raises(InputError, match="not a valid .npz"):
        (tmp_path / "bad.npz").write_bytes(b"PK not really")
        open_input(str(tmp_path / "bad.npz"))
