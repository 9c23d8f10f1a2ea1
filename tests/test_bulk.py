"""bulk.py: the numpy IOVA parser and row writer must say exactly what int(x, 0) and the one-row
path say, for every value, and hand anything else back to the per-line parser."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iommuctl.bulk import Rows, hex_digits, parse_numbers, pow2_codes, small_codes

u64 = st.integers(0, (1 << 64) - 1)
EDGES = [0, 1, 0xF, 0x10, 0xFF, 0xFFFFFFFF, 1 << 32, (1 << 53) + 1, (1 << 60) - 1, 1 << 60, (1 << 64) - 1,
         0x0123456789ABCDEF, 0xFEDCBA9876543210]


@pytest.mark.parametrize("form", ["{:#x}", "0x{:X}", "0x{:016x}", "0x{:020x}"])
def test_hex_lines_equal_int(form: str) -> None:
    rng = np.random.default_rng(5)
    values = EDGES + [int(v) >> int(s) for v, s in zip(rng.integers(0, 1 << 63, 3000, dtype=np.uint64) * 2 + 1,
                                                       rng.integers(0, 64, 3000))]
    got = parse_numbers("".join(form.format(v) + "\n" for v in values).encode())
    if form == "0x{:020x}":  # 20 digits: not the fast form, the per-line parser takes it
        assert got is None
    else:
        assert got is not None and got.tolist() == values


@given(st.lists(u64, min_size=1, max_size=300), st.booleans())
def test_hex_and_decimal_round_trip(values: list[int], last_newline: bool) -> None:
    text = "\n".join(f"{v:#x}" for v in values) + ("\n" if last_newline else "")
    assert parse_numbers(text.encode()).tolist() == values  # type: ignore[union-attr]
    small = [v for v in values if v < 10**19]
    if small:
        got = parse_numbers("".join(f"{v}\n" for v in small).encode())
        assert got is not None and got.tolist() == small


@settings(max_examples=400)
@given(st.lists(st.text("0123456789abcdefxX \t#_\n-kK", max_size=22), min_size=1, max_size=8))
def test_whatever_it_accepts_is_what_int_says(lines: list[str]) -> None:
    data = "\n".join(lines).encode()
    got = parse_numbers(data)
    if got is not None:  # never a different answer: a refusal only sends the text to int()
        assert got.tolist() == [int(x, 0) for x in data.decode().splitlines()]


@pytest.mark.parametrize("text", [b"0x\n", b"0x1\n\n0x2\n", b"01\n", b"0x1 \n", b"0x1x\n", b"x1\n", b"-1\n",
                                  b"12345678901234567890\n", b"0x1\r\n", b"4K\n", b"0x1_000\n", b"0x1 # c\n"])
def test_other_forms_go_to_the_line_parser(text: bytes) -> None:
    assert parse_numbers(text) is None


@given(st.lists(u64, min_size=1, max_size=200))
def test_hex_column_is_format_x(values: list[int]) -> None:
    arr = np.array(values, dtype=np.uint64)
    assert hex_digits(arr).tolist() == [len(f"{v:x}") for v in values]
    rows = Rows(len(values))
    rows.text("0x")
    rows.hex(arr)
    rows.text("\n")
    assert rows.tobytes().decode() == "".join(f"{v:#x}\n" for v in values)


def test_edge_values_hex() -> None:
    rows = Rows(len(EDGES))
    rows.hex(np.array(EDGES, dtype=np.uint64))
    rows.text(",")
    assert rows.tobytes().decode() == "".join(f"{v:x}," for v in EDGES)


def test_words_where_and_codes() -> None:
    sizes = np.array([4096, 0, 1 << 30, 1 << 63, 2 << 20], dtype=np.uint64)
    codes, words = pow2_codes(sizes)
    assert [words[c] for c in codes] == ["4096", "0", "1073741824", str(1 << 63), "2097152"]
    odd = np.array([3 << 12, 4096, 3 << 12], dtype=np.uint64)  # a table-less window need not be 2^k
    codes, words = pow2_codes(odd)
    assert [words[c] for c in codes] == ["12288", "4096", "12288"]
    codes, words = small_codes(np.array([-1, 3, 2, -1]))
    assert [words[c] for c in codes] == ["-1", "3", "2", "-1"]
    codes, words = small_codes(np.array([1 << 40, 5, 1 << 40], dtype=np.uint64))
    assert [words[c] for c in codes] == [str(1 << 40), "5", str(1 << 40)]
    hit = np.array([True, False, True])
    rows = Rows(3)
    rows.text("{")
    rows.words(np.array([0, 1, 2]), ["a", "bbbbbbbbbbbb", "cc"])
    rows.text(', "x": "', hit)
    rows.hex(np.array([1, 2, 3], dtype=np.uint64), hit)
    rows.text('"', hit)
    rows.text("}\n")
    assert rows.tobytes().decode() == '{a, "x": "1"}\n{bbbbbbbbbbbb}\n{cc, "x": "3"}\n'


# A row recipe: pieces of kinds text / words / hex / decimal / pad, each maybe limited to some rows.
piece = st.one_of(
    st.tuples(st.just("text"), st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=20)),
    st.tuples(st.just("words"), st.lists(st.text("abc xyz", max_size=12), min_size=1, max_size=40)),
    st.tuples(st.just("hex"), st.none()),
    st.tuples(st.just("decimal"), st.none()),
    st.tuples(st.just("pad"), st.integers(0, 12)),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(piece, st.booleans()), min_size=1, max_size=14), st.integers(1, 40), st.data())
def test_rows_say_what_python_says(recipe: list[tuple[tuple[str, object], bool]], n: int, data: st.DataObject) -> None:
    # Literals and word pieces between two numbers are merged into one piece of the combinations
    # present (more than Rows.GROUP of them start another): every recipe must still give each
    # row exactly its pieces' text, in order, where a piece's rows say so.
    rows = Rows(n)
    want = [""] * n
    for (kind, arg), limited in recipe:
        where = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n))) if limited else None
        keep = where.tolist() if where is not None else [True] * n
        if kind == "text":
            s = str(arg)
            rows.text(s, where)
            cells = [s] * n
        elif kind == "words":
            words = list(arg)  # type: ignore[call-overload]
            codes = data.draw(st.lists(st.integers(0, len(words) - 1), min_size=n, max_size=n))
            rows.words(np.array(codes), words, where)
            cells = [words[c] for c in codes]
        elif kind == "pad":
            width = int(arg)  # type: ignore[call-overload]
            used = data.draw(st.lists(st.integers(0, width + 3), min_size=n, max_size=n))
            rows.pad(np.array(used), width, where)
            cells = [" " * max(0, width - u) for u in used]
        else:
            values = data.draw(st.lists(u64, min_size=n, max_size=n))
            arr = np.array(values, dtype=np.uint64)
            (rows.hex if kind == "hex" else rows.decimal)(arr, where)
            cells = [f"{v:x}" if kind == "hex" else str(v) for v in values]
        want = [w + c if k else w for w, c, k in zip(want, cells, keep)]
    assert rows.tobytes().decode() == "".join(want)


def test_no_rows() -> None:
    rows = Rows(0)
    rows.text("{")
    rows.words(np.zeros(0, dtype=np.intp), ["a", "b"])
    rows.hex(np.zeros(0, dtype=np.uint64))
    rows.text("}\n")
    assert rows.tobytes() == b""


def test_merged_pieces_past_the_group_limit() -> None:
    # three 100-word pieces: 10**6 combinations > GROUP, so the third starts a new merged piece
    n = 1000
    rng = np.random.default_rng(1)
    codes = [rng.integers(0, 100, n) for _ in range(3)]
    rows = Rows(n)
    for c in codes:
        rows.words(c, [f"w{k}," for k in range(100)])
    rows.text("\n")
    assert rows.tobytes().decode() == "".join(f"w{a},w{b},w{c},\n" for a, b, c in zip(*codes))
    assert len(rows.fills) == 2
