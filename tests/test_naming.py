import pytest

from napari_histovol.core.errors import InputError
from napari_histovol.core.io.naming import (
    NamePattern,
    find_gaps,
    format_ranges,
    infer_pattern,
    natural_key,
    order_slices,
    section_numbers,
)


def test_natural_order_and_gaps_on_unpadded_names():
    names = ["sec_10.png", "sec_2.png", "sec_1.png"]
    ordered, zs = order_slices(names)
    assert ordered == ["sec_1.png", "sec_2.png", "sec_10.png"]
    assert zs == [1, 2, 10]
    assert find_gaps(zs) == (3, 4, 5, 6, 7, 8, 9)


def test_a_single_name_is_numbered_by_its_last_number():
    assert section_numbers(["S003_x.tif"]) == [3]
    assert section_numbers(["lung-lesion3_CD31_s03.jpg"]) == [3]
    assert section_numbers(["/data/run2/img_0042.ome.tif"]) == [42]
    assert section_numbers(["scan.tif"]) == [None]


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
    with pytest.raises(InputError, match="'notes.png' has no section number"):
        order_slices(["a_1.png", "notes.png"])


def test_no_numbers_at_all_falls_back_to_natural_order():
    ordered, zs = order_slices(["b.png", "a.png", "a10x.png".replace("10", "")])
    assert zs == [0, 1, 2]
    assert ordered == sorted(ordered, key=natural_key)


def test_format_ranges():
    assert format_ranges([1, 2, 3, 5, 7, 8]) == "1-3, 5, 7-8"
    assert format_ranges([]) == "none"


# ------------------------------------------------------------------------------------------
# the number that varies across a folder is the section number (issue 11)

ANHIR = [
    "29-041-Izd2-w35-CD31-3-les3.jpg",
    "29-041-Izd2-w35-Cc10-5-les3.jpg",
    "29-041-Izd2-w35-Ki67-7-les3.jpg",
    "29-041-Izd2-w35-proSPC-4-les3.jpg",
]
ANHIR_HE = "29-041-Izd2-w35-He-les3.jpg"


def test_anhir_names_are_numbered_by_what_varies_not_by_the_shared_les3():
    names = [*ANHIR, "29-041-Izd2-w35-He-1-les3.jpg"]
    assert section_numbers(names) == [3, 5, 7, 4, 1]
    ordered, zs = order_slices(names)
    assert zs == [1, 3, 4, 5, 7]
    assert [n.split("-")[4] for n in ordered] == ["He", "CD31", "proSPC", "Cc10", "Ki67"]
    assert find_gaps(zs) == (2, 6)


def test_anhir_pattern_keeps_the_shared_suffix():
    pat = infer_pattern([*ANHIR, "29-041-Izd2-w35-He-1-les3.jpg"])
    assert pat == NamePattern("29-041-Izd2-w35-", 1, "-les3", ".jpg")
    assert pat.format(2) == "29-041-Izd2-w35-2-les3.jpg"
    # a name made with the pattern reads back as its number among the others
    assert section_numbers([*ANHIR, pat.format(2)])[-1] == 2


def test_the_he_section_without_a_number_among_numbered_ones_is_named():
    with pytest.raises(InputError) as e:
        order_slices([*ANHIR, ANHIR_HE])
    msg = str(e.value)
    assert f"'{ANHIR_HE}' has no section number" in msg
    assert "add its section number" in msg and "two series" not in msg
    assert msg.count(". ") == 0 and msg.endswith(".")


def test_stain_digits_never_become_z_numbers():
    # without their section numbers the stain names would read as 31, 10, 67
    assert section_numbers(["s-CD31-2-x.png", "s-Cc10-9-x.png", "s-Ki67-4-x.png"]) == [2, 9, 4]


def test_shared_prefix_backs_off_out_of_a_run_of_digits():
    assert section_numbers(["sec_10.png", "sec_11.png"]) == [10, 11]
    assert section_numbers(["img_100.tif", "img_200.tif"]) == [100, 200]  # shared "00" end
    assert section_numbers(["S003_x.tif", "S004_x.tif", "S010_x.tif"]) == [3, 4, 10]
    assert section_numbers(["a12b7c.png", "a12b8c.png"]) == [7, 8]


def test_existing_rules_still_hold_with_the_varying_part():
    # two files that share one number: two series, not natural order
    with pytest.raises(InputError, match="both have the z number 1"):
        order_slices(["a_1.png", "b_1.png"])
    # a single file keeps its last number
    assert order_slices(["x_5.png"]) == (["x_5.png"], [5])
    # no number at all: natural order
    assert order_slices(["b.png", "a.png"])[1] == [0, 1]


def test_numbers_that_cannot_be_section_numbers_are_refused_before_work():
    huge = "s_" + "9" * 23 + ".png"
    with pytest.raises(InputError, match="too large to be one; rename the files"):
        order_slices(["s_1.png", huge])
    with pytest.raises(InputError, match="too large"):
        order_slices([huge])
    with pytest.raises(InputError, match=r"1 to 1000000 .* 999997 numbers missing") as e:
        find_gaps([1, 2, 1_000_000], source="/data/secs")
    assert "/data/secs" in str(e.value) and "rename the files" in str(e.value)
    assert find_gaps([1, 2, 1_000]) == tuple(range(3, 1000))
    with pytest.raises(InputError, match="too large"):
        find_gaps([1, 10**22])
