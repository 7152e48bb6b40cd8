"""Glob patterns for a source's include/exclude: whole relative path, '*' within one folder name."""

import pytest

from segops.data.globs import glob_regex, path_selected


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("*.jpg", "x.jpg", True),
        ("*.jpg", "a/x.jpg", False),  # '*' does not cross '/': top level only
        ("**/*.jpg", "x.jpg", True),  # '**' is any number of folders, none included
        ("**/*.jpg", "a/b/x.jpg", True),
        ("**/README*", "README.png", True),
        ("**/README*", "docs/README.md", True),
        ("**/README*", "docs/READ.md", False),
        ("good/**", "good/a/x.png", True),
        ("good/**", "good", False),
        ("good/**", "goodness/x.png", False),
        ("a/**/b.png", "a/b.png", True),
        ("a/**/b.png", "a/x/y/b.png", True),
        ("a/**/b.png", "ab.png", False),
        ("img?.png", "img1.png", True),
        ("img?.png", "img12.png", False),
        ("img?.png", "img/.png", False),
        ("img[0-4].png", "img3.png", True),
        ("img[0-4].png", "img7.png", False),
        ("img[!0-4].png", "img7.png", True),
        ("img[!0-4].png", "img3.png", False),
        ("[ab", "[ab", True),  # an unclosed '[' is a literal
        ("x+(1).png", "x+(1).png", True),  # regex metacharacters are literals
        ("x+(1).png", "xx(1).png", False),
    ],
)
def test_glob_matches_the_whole_relative_path(pattern: str, path: str, expected: bool) -> None:
    assert bool(glob_regex(pattern).fullmatch(path)) is expected


def test_include_then_exclude() -> None:
    include, exclude = ("good/**", "bad/**"), ("**/README*", "**/*_mask.png")
    assert path_selected("good/a.jpg", include, exclude)
    assert not path_selected("good/README.png", include, exclude)
    assert not path_selected("bad/x/a_mask.png", include, exclude)
    assert not path_selected("other/a.jpg", include, exclude)
    assert path_selected("other/a.jpg", (), exclude)  # no include: everything not excluded
