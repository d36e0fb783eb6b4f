"""Call id validation and id-file reading (etl/ids.py), against docs/contract.md's rule:
a valid id is ``AC`` followed by 1 to 64 ASCII letters or digits; anything else
is reported with its line number and skipped."""

from __future__ import annotations

import io

import pytest

from etl.ids import InvalidId, check_ids, describe_invalid, is_valid_call_id, read_id_lines, shown

VALID = [
    "AC1",
    "ACa",
    "ACZ",
    "AC3700e624eca547eb9f749a06f",
    "ACea724hac8c30465bcbcff0b76e4c1c7b",
    "AC" + "x" * 64,
    "AC" + "0123456789" * 6 + "abcd",
]

# (value, reason given by describe_invalid)
INVALID = [
    ("", "does not start with AC"),
    ("ac123", "does not start with AC"),
    ("BC123", "does not start with AC"),
    ("CA123", "does not start with AC"),
    (" AC123", "does not start with AC"),
    ("AC", "nothing after AC"),
    ("AC" + "x" * 65, "too long (67 characters, at most 66)"),
    ("AC" + "x" * 200, "too long (202 characters, at most 66)"),
    ("AC12/34", "contains a path separator"),
    ("AC12\\34", "contains a path separator"),
    ("AC../etc/passwd", "contains a path separator"),
    ("AC12 34", "contains white space"),
    ("AC1234 ", "contains white space"),
    ("AC12\t34", "contains white space"),
    ("AC1\n", "contains white space"),
    ("AC12\x0034", "contains a control character"),
    ("AC12\x01", "contains a control character"),
    ("AC12\x7f", "contains a control character"),
    ("ACé1", "contains characters other than ASCII letters and digits"),
    ("ACЖ", "contains characters other than ASCII letters and digits"),
    ("AC\u0661\u0662\u0663", "contains characters other than ASCII letters and digits"),  # Arabic-Indic digits
    ("AC\uff11\uff12", "contains characters other than ASCII letters and digits"),  # full-width digits
    ("AC12-34", "contains characters other than ASCII letters and digits"),
    ("AC12%2F34", "contains characters other than ASCII letters and digits"),
    ("AC12?x=1", "contains characters other than ASCII letters and digits"),
    ("AC😀", "contains characters other than ASCII letters and digits"),
]


@pytest.mark.parametrize("value", VALID)
def test_valid_ids(value):
    assert is_valid_call_id(value) is True
    assert list(check_ids([value])) == [value]


@pytest.mark.parametrize(("value", "reason"), INVALID)
def test_invalid_ids_with_reason(value, reason):
    assert is_valid_call_id(value) is False
    assert describe_invalid(value) == reason
    assert list(check_ids([value], first_line=7)) == [InvalidId(7, shown(value), reason)]


def test_boundary_is_64_characters_after_ac():
    assert is_valid_call_id("AC" + "a" * 64) is True
    assert is_valid_call_id("AC" + "a" * 65) is False


def test_shown_is_ascii_and_bounded():
    assert shown("AC12/34") == "'AC12/34'"
    assert shown("ACé") == "'AC\\xe9'"
    assert shown("AC\x00") == "'AC\\x00'"
    assert shown("AC" + "x" * 100) == "'AC" + "x" * 38 + "'…"


def test_invalid_message_format():
    bad = InvalidId(3, "'bad/1'", "does not start with AC")
    assert bad.message("ids.txt") == "ids.txt:3: does not start with AC: 'bad/1'"


def test_check_ids_numbers_every_value():
    assert list(check_ids(["AC1", "x", "AC2", "AC/"])) == [
        "AC1",
        InvalidId(2, "'x'", "does not start with AC"),
        "AC2",
        InvalidId(4, "'AC/'", "contains a path separator"),
    ]


def lines(data: bytes) -> list[str | InvalidId | None]:
    return list(read_id_lines(io.BytesIO(data)))


def test_read_id_lines_counts_blank_and_comment_lines():
    data = b"# header\nAC1\n\n   \nbad id\n# another\nAC2\n"
    assert lines(data) == [
        None,
        "AC1",
        None,
        None,
        InvalidId(5, "'bad id'", "does not start with AC"),
        None,
        "AC2",
    ]


def test_read_id_lines_strips_crlf_and_surrounding_spaces():
    assert lines(b"AC1\r\nAC2\r\n  AC3\t\r\nAC4") == ["AC1", "AC2", "AC3", "AC4"]


def test_read_id_lines_inner_space_is_reported():
    assert lines(b"AC1 AC2\r\n") == [InvalidId(1, "'AC1 AC2'", "contains white space")]


def test_read_id_lines_non_utf8_bytes():
    assert lines(b"AC1\nAC\xff\xfe2\nAC3\n") == [
        "AC1",
        InvalidId(2, "'AC\\ufffd\\ufffd2'", "not UTF-8 text"),
        "AC3",
    ]


def test_read_id_lines_utf8_non_ascii_is_reported():
    assert lines("ACé1\n".encode()) == [
        InvalidId(1, "'AC\\xe91'", "contains characters other than ASCII letters and digits")
    ]


def test_read_id_lines_control_and_path_characters():
    assert lines(b"AC1\x002\nAC1/2\n") == [
        InvalidId(1, "'AC1\\x002'", "contains a control character"),
        InvalidId(2, "'AC1/2'", "contains a path separator"),
    ]


def test_read_id_lines_too_long_id():
    value = "AC" + "z" * 65
    assert lines(value.encode() + b"\n") == [
        InvalidId(1, shown(value), "too long (67 characters, at most 66)")
    ]


def test_read_id_lines_huge_line_is_reported_without_keeping_it():
    huge = b"AC" + b"9" * 9998
    assert len(huge) == 10_000
    result = lines(b"AC1\n" + huge + b"\nAC2\n")
    assert result == ["AC1", InvalidId(2, "", "line longer than 256 bytes"), "AC2"]
    # The report must not carry the line's text (a 10,000-character log message).
    assert result[1].message("f") == "f:2: line longer than 256 bytes"


def test_read_id_lines_huge_line_at_end_without_newline():
    assert lines(b"AC1\n" + b"x" * 10_000) == ["AC1", InvalidId(2, "", "line longer than 256 bytes")]


def test_read_id_lines_empty_input():
    assert lines(b"") == []


def test_read_id_lines_trailing_control_character_is_reported():
    assert lines(b"AC1\x1f\n") == [InvalidId(1, "'AC1\\x1f'", "contains a control character")]


def test_describe_invalid_unit_separator_is_a_control_character():
    assert describe_invalid("AC1\x1f2") == "contains a control character"
