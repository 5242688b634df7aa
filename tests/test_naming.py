import pytest

from napari_histovol.core.errors import InputError
from napari_histovol.core.io.naming import (
    NamePattern,
    find_gaps,
    format_ranges,
    infer_pattern,
    last_number,
    natural_key,
    order_slices,
)


def test_natural_order_and_gaps_on_unpadded_names():
    names = ["sec_10.png", "sec_2.png", "sec_1.png"]
    ordered, zs = order_slices(names)
    assert ordered == ["sec_1.png", "sec_2.png", "sec_10.png"]
    assert zs == [1, 2, 10]
    assert find_gaps(zs) == (3, 4, 5, 6, 7, 8, 9)


def test_last_number_is_the_z_number():
    assert last_number("S003_x.tif") == 3
    assert last_number("lung-lesion3_CD31_s03.jpg") == 3
    assert last_number("/data/run2/img_0042.ome.tif") == 42
    assert last_number("scan.tif") is None


def test_pattern_keeps_prefix_padding_and_suffix():
    pat = infer_pattern(["S003_x.tif", "S004_x.tif", "S010_x.tif"])
    assert pat == NamePattern("S", 3, "_x", ".tif")
    assert pat.format(7) == "S007_x.tif"
    # a varying label before the number is not part of the pattern
    pat = infer_pattern(["les_He_s01.jpg", "les_CD31_s03.jpg"])
    assert pat.prefix == "les_" and pat.width == 2 and pat.format(2) == "les_02.jpg"
    assert infer_pattern(["a1.png", "a2.png", "a10.png"]).width == 1


def test_two_series_in_one_folder_is_an_error():
    with pytest.raises(InputError, match="both have the z number 1"):
        order_slices(["a_1.png", "b_1.png", "a_2.png"])


def test_some_names_without_numbers_is_an_error():
    with pytest.raises(InputError, match="no number"):
        order_slices(["a_1.png", "notes.png"])


def test_no_numbers_at_all_falls_back_to_natural_order():
    ordered, zs = order_slices(["b.png", "a.png", "a10x.png".replace("10", "")])
    assert zs == [0, 1, 2]
    assert ordered == sorted(ordered, key=natural_key)


def test_format_ranges():
    assert format_ranges([1, 2, 3, 5, 7, 8]) == "1-3, 5, 7-8"
    assert format_ranges([]) == "none"
