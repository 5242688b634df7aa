"""Planes named as a pathologist reads them: section number, stain, file, or the two sections a
generated plane was made from (ground truth: the bundled sample's names and a plan we make)."""

import warnings
from dataclasses import replace

import numpy as np

from napari_histovol.core.interpolate import interpolate
from napari_histovol.core.io import Volume, VolumeMeta
from napari_histovol.core.sections import missing_label, plane_label, stain_names


def test_stain_names_from_varying_words():
    sample = [
        "lung-lesion3_He_s01.jpg",
        "lung-lesion3_CD31_s03.jpg",
        "lung-lesion3_proSPC_s04.jpg",
        "lung-lesion3_Cc10_s05.jpg",
    ]
    assert stain_names(sample) == ["He", "CD31", "proSPC", "Cc10"]
    anhir = ["29-041-Izd2-w35-CD31-3-les3.jpg", "29-041-Izd2-w35-Ki67-7-les3.jpg"]
    assert stain_names(anhir) == ["CD31", "Ki67"]
    assert stain_names(["sec_001.png", "sec_002.png"]) == ["", ""]
    assert stain_names(["only_one_3.png"]) == [""]


def _volume(zs, files):
    data = np.zeros((len(zs), 8, 8), np.uint8)
    import dask.array as da

    return Volume(da.from_array(data), VolumeMeta(z_numbers=tuple(zs), files=tuple(files)))


def test_labels_of_measured_filled_renumbered_and_regenerated_planes():
    files = ["s_He_01.png", "s_CD31_03.png", "s_Ki67_04.png", "s_Cc10_05.png"]
    vol = _volume([1, 3, 4, 5], files)
    assert plane_label(vol.meta, 1) == "section 3 · CD31 · s_CD31_03.png"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        filled = interpolate(vol, method="linear").volume.meta
    assert plane_label(filled, 1) == (
        "section 2 (missing) · synthetic between section 1 (He) and section 3 (CD31), t = 0.50"
    )
    frames = interpolate(vol, frames_between=1, replace_z=[4], method="linear").volume.meta
    # z 1 -> 1, 3 -> 5, 4 -> 7 (replaced), 5 -> 9
    assert plane_label(frames, 4) == "plane z 5 · section 3 · CD31 · s_CD31_03.png"
    assert plane_label(frames, 6) == (
        "plane z 7 · section 4 regenerated from section 3 (CD31) and section 5 (Cc10), t = 0.50"
    )
    assert plane_label(frames, 1).startswith("plane z 2 · synthetic between section 1 (He)")
    assert missing_label(2) == "section 2 · missing (a gap in the numbering)"
    assert plane_label(frames, 99) == ""


def test_isotropic_planes_are_named_by_plane_not_as_missing_sections():
    """Isotropic reconstruction renumbers the planes without 'frames between': its plane 7
    read 'section 7 (missing) · synthetic between section 1 and section 2' (helper's
    journey)."""
    from napari_histovol.core.isotropic import iter_isotropic
    from napari_histovol.core.progress import drain

    files = ["s_01.png", "s_02.png", "s_03.png"]
    vol = _volume([1, 2, 3], files)
    vol = Volume(vol.data, replace(vol.meta, scale=(4.0, 1.0, 1.0)))
    meta = drain(iter_isotropic(vol, factor=4, steps=1)).volume.meta
    assert plane_label(meta, 4) == "plane z 5 · section 2 · s_02.png"
    assert plane_label(meta, 6) == (
        "plane z 7 · synthetic between section 2 and section 3, t = 0.50"
    )


def test_a_built_volume_interpolated_again_keeps_its_generated_planes_and_section_names():
    """A helper interpolated the plugin's own built volume (sections 1, 3, 4, 5, 7; 1 frame
    between): its generated planes came through as measured, plane 3 (a blend of He and
    CD31) was named "section 2" and a plane beside CD31 "section 5 (CD31)"."""
    from napari_histovol.core.isotropic import iter_isotropic
    from napari_histovol.core.progress import drain

    files = ["s_He_01.png", "s_CD31_03.png", "s_Ki67_04.png", "s_Cc10_05.png", "s_Sox_07.png"]
    vol = _volume([1, 3, 4, 5, 7], files)
    built = interpolate(vol, frames_between=1, method="linear").volume
    # as the built volume is read back: planes numbered 1..13, 8 of them generated
    assert built.meta.synthetic.count(True) == 8
    assert plane_label(built.meta, 1) == (
        "plane z 2 · synthetic between section 1 (He) and section 3 (CD31), t = 0.25"
    )
    again = interpolate(built, frames_between=1, method="linear").volume.meta
    assert len(again.z_numbers) == 25
    # every plane is generated but the five sections' (built planes 1, 5, 7, 9, 13)
    measured = [i for i, s in enumerate(again.synthetic) if not s]
    assert measured == [0, 8, 12, 16, 24]
    assert plane_label(again, 8) == "plane z 9 · section 3 · CD31 · s_CD31_03.png"
    # built plane 3 (He -> CD31 at 0.5) is plane 5 now; between built 2 and 3: t = 0.375
    assert plane_label(again, 4) == (
        "plane z 5 · synthetic between section 1 (He) and section 3 (CD31), t = 0.50"
    )
    assert plane_label(again, 3) == (
        "plane z 4 · synthetic between section 1 (He) and section 3 (CD31), t = 0.38"
    )
    # between built 7 (section 4) and 8 (halfway to section 5): a quarter of the way
    assert plane_label(again, 13) == (
        "plane z 14 · synthetic between section 4 (Ki67) and section 5 (Cc10), t = 0.25"
    )
    # isotropic reconstruction of the built volume: the same rule
    iso_in = Volume(built.data, replace(built.meta, scale=(2.0, 1.0, 1.0)))
    iso = drain(iter_isotropic(iso_in, factor=2, steps=1)).volume.meta
    assert [i for i, s in enumerate(iso.synthetic) if not s] == [0, 8, 12, 16, 24]
    assert plane_label(iso, 4) == plane_label(again, 4)
