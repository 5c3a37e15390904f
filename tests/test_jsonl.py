"""The shared JSON Lines reader: objects with line numbers, errors naming the source and line."""

import pytest

from m3search.errors import InvalidInputError
from m3search.jsonl import json_objects


def test_objects_keep_their_line_numbers_and_blank_lines_are_skipped():
    lines = ['{"id": 1}\n', "\n", "   \n", '{"id": 2, "text": "b"}\n']
    assert list(json_objects(lines, "docs.jsonl")) == [(1, {"id": 1}), (4, {"id": 2, "text": "b"})]


@pytest.mark.parametrize(
    ("lines", "source", "message"),
    [
        (['{"id": 1}', "{oops"], "docs.jsonl", "docs.jsonl:2: not valid JSON"),
        (['{"id": 1}', "[1, 2]"], None, "line 2: expected a JSON object, got list"),
        (['"just a string"'], "x.jsonl", "x.jsonl:1: expected a JSON object, got str"),
    ],
)
def test_bad_lines_are_named(lines, source, message):
    with pytest.raises(InvalidInputError, match=message):
        list(json_objects(lines, source))
