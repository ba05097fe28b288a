"""How paths, folders and globs become the input file list (pipeline/core/paths.py): each real file once, under
a name reached without links; links out of the root skipped and named."""

import os

from pipeline.core.paths import LINK_OUTSIDE, SAME_FILE, inside, list_files


def test_a_file_reached_also_through_a_link_is_listed_under_its_own_name(tmp_path):
    (tmp_path / "b.txt").write_text("b")
    os.symlink("b.txt", tmp_path / "a.txt")  # sorts first, but is a link
    listing = list_files([str(tmp_path)], ("*.txt",))
    assert listing.files == [str(tmp_path / "b.txt")]
    assert listing.skipped == {str(tmp_path / "a.txt"): SAME_FILE}


def test_a_glob_matching_a_linked_folder_lists_its_files_under_the_real_folder(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.txt").write_text("x")
    os.symlink("data", tmp_path / "alias")  # "alias" sorts before "data": the link's files are met first
    listing = list_files([str(tmp_path / "*")], ("*.txt",))
    assert listing.files == [str(tmp_path / "data" / "x.txt")]
    assert listing.skipped == {str(tmp_path / "alias" / "x.txt"): SAME_FILE}


def test_a_link_out_of_the_root_is_skipped_and_named(tmp_path):
    (tmp_path / "secret.txt").write_text("s")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_text("a")
    os.symlink(tmp_path / "secret.txt", tmp_path / "src" / "leak.txt")
    listing = list_files([str(tmp_path / "src")], ("*.txt",))
    assert listing.files == [str(tmp_path / "src" / "a.txt")]
    assert listing.skipped == {str(tmp_path / "src" / "leak.txt"): LINK_OUTSIDE}


def test_inside_is_by_path_component_not_by_string_prefix():
    assert inside("/run/train", "/run/train") and inside("/run/train/checkpoint", "/run/train/")
    assert not inside("/run/training", "/run/train")
