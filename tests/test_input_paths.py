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


def test_a_paths_file_names_the_inputs_and_a_missing_one_fails_validation(tmp_path):
    """sources[].paths_file: one input per line (comments and blank lines ignored) after `paths`, read once; an
    entry that matches nothing is named before any work."""
    import pytest

    from pipeline.recipe import RecipeError, parse_recipe

    for name in ("a", "b", "c"):
        (tmp_path / f"{name}.jsonl").write_text('{"text": "hello"}\n')
    (tmp_path / "inputs.txt").write_text(f"# the shards to read\n{tmp_path / 'a.jsonl'}\n\n{tmp_path / 'c.jsonl'}\n")

    def recipe(paths_file):
        return {"run_dir": str(tmp_path / "run"), "mixture": {"stages": [{"name": "g", "tokens": 10, "weights": {"web": 1.0}}]},
                "sources": [{"name": "web", "paths_file": str(paths_file), "format": "jsonl", "domain": "web"}]}

    source = parse_recipe(recipe(tmp_path / "inputs.txt")).sources[0]
    assert source.files() == [str(tmp_path / "a.jsonl"), str(tmp_path / "c.jsonl")]
    (tmp_path / "inputs.txt").write_text(f"{tmp_path / 'a.jsonl'}\n{tmp_path / 'gone.jsonl'}\n")
    with pytest.raises(RecipeError, match=r"sources\[0\] \('web'\).paths: no input file matches '.*gone.jsonl'"):
        parse_recipe(recipe(tmp_path / "inputs.txt"))
    with pytest.raises(RecipeError, match=r"sources\[0\] \('web'\).paths_file: .*no-such-list.txt"):
        parse_recipe(recipe(tmp_path / "no-such-list.txt"))
    with pytest.raises(RecipeError, match="give paths or paths_file"):
        parse_recipe({**recipe(tmp_path / "inputs.txt"), "sources": [{"name": "web", "format": "jsonl", "domain": "web"}]})
