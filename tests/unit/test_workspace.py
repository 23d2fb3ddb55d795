"""The workspace path rules (``app.framework.workspace``), as code and as the OpenAPI pattern."""

from __future__ import annotations

import itertools
import re

import pytest

from app.framework.workspace import PATH_PATTERN
from app.framework.workspace import path_problem


def test_the_pattern_accepts_exactly_the_paths_path_problem_accepts():
    """Given every path of up to 7 characters made of "a", "." and "/", then the OpenAPI
    pattern matches a path exactly when path_problem finds nothing wrong with it."""
    disagreements = [
        path
        for length in range(1, 8)
        for path in map("".join, itertools.product("a./", repeat=length))
        if (re.fullmatch(PATH_PATTERN, path) is not None) != (path_problem(path) is None)
    ]

    assert disagreements == []


@pytest.mark.parametrize("path", ["a\x00b", "/\x00", "\x00"])
def test_the_pattern_refuses_a_nul_character(path):
    assert re.fullmatch(PATH_PATTERN, path) is None
