"""Text in and out in bulk with numpy: IOVA lists parsed and JSON rows written without a Python
object per row.

A million IOVAs through `translate -` used to spend 90% of its time in per-row Python (int()
on each line, an f-string and four hex() calls per row). Input: the common form, one `0x…` hex
(or plain decimal) number per line, is checked with one byte lookup and each line's last 16
nibbles are packed as two words (SWAR); anything else (comments, blank lines, suffixes,
underscores) returns None and the caller's per-line parser, which names a bad line, does the
work. Output: see Rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_NL, _X, _BAD = 16, 17, 255
_LUT = np.full(256, _BAD, dtype=np.uint8)  # byte -> nibble value, newline, 'x' or bad
for _i, _c in enumerate(b"0123456789abcdef"):
    _LUT[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
    _LUT[_c] = 10 + _i
_LUT[ord("\n")], _LUT[ord("x")] = _NL, _X


_U64 = np.dtype("<u8")  # rows are built as little-endian words: byte order is text order
_ONES = np.uint64(0x0101010101010101)
# KEEP[z]: a word's bytes after its first z (the leading zeros to drop); z = 8 drops the word
_POW10 = np.array([10**k for k in range(20)], dtype=np.uint64)
_KEEP = np.array([(0xFFFFFFFFFFFFFFFF << (8 * z)) & 0xFFFFFFFFFFFFFFFF for z in range(9)], dtype=np.uint64)


def parse_numbers(data: bytes) -> np.ndarray | None:
    """uint64 values of `data` when every line is `0x` + 1..16 hex digits, or every line a decimal
    number of 1..19 digits without a leading zero (int(x, 0)'s rule); None otherwise."""
    if not data:
        return np.zeros(0, dtype=np.uint64)
    if data[-1:] != b"\n":
        data += b"\n"
    # one lookup pass validates every byte and turns digits into nibbles
    code = _LUT[np.frombuffer(data, dtype=np.uint8)]
    if (code == _BAD).any():
        return None
    ends = np.flatnonzero(code == _NL)
    starts = np.empty_like(ends)
    starts[0], starts[1:] = 0, ends[:-1] + 1
    lens = ends - starts
    if (lens == 0).any():  # blank lines: the per-line parser skips them
        return None
    xs = int(np.count_nonzero(code == _X))
    if xs == len(lens):  # hex: '0', 'x', then 1..16 digits
        if (lens < 3).any() or (lens > 18).any() or (code[starts] != 0).any() or (code[starts + 1] != _X).any():
            return None
        return _hex_lines(np.concatenate([np.zeros(16, dtype=np.uint8), code]), ends + 16, lens - 2)
    if xs:
        return None
    if (lens > 19).any() or np.count_nonzero(code > 9) != len(ends) or ((code[starts] == 0) & (lens > 1)).any():
        return None
    return _decimal_lines(code, starts, ends)


def _hex_lines(padded: np.ndarray, ends: np.ndarray, digits: np.ndarray) -> np.ndarray:
    """Each line's value from its last 16 nibble bytes (ends: offsets in `padded` of the
    newlines; 16 zero bytes lead, so a short first line still has two words before its end),
    read as two little-endian words and packed (SWAR), leading non-digits masked."""
    words = np.ndarray(shape=(len(padded) - 7,), dtype="<u8", buffer=padded, strides=(1,))  # a word at every byte
    value = _pack_nibbles(words[ends - 8] & _KEEP[np.clip(8 - digits, 0, 8)])
    if digits.max() > 8:
        high = _pack_nibbles(words[ends - 16] & _KEEP[np.clip(16 - digits, 0, 8)])
        value |= high << np.uint64(32)
    return value


def _pack_nibbles(x: np.ndarray) -> np.ndarray:
    """Eight bytes holding one nibble each, first byte most significant, as a 32-bit value."""
    x = x.astype(np.uint64, copy=False)
    x = ((x & np.uint64(0x00FF00FF00FF00FF)) << np.uint64(4)) | ((x >> np.uint64(8)) & np.uint64(0x00FF00FF00FF00FF))
    x = ((x & np.uint64(0x0000FFFF0000FFFF)) << np.uint64(8)) | ((x >> np.uint64(16)) & np.uint64(0x0000FFFF0000FFFF))
    return ((x & np.uint64(0xFFFFFFFF)) << np.uint64(16)) | (x >> np.uint64(32))


def _decimal_lines(code: np.ndarray, first: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Right-aligned digits, one column (one digit position) at a time over all lines."""
    width = int((ends - first).max())
    acc = np.zeros(len(ends), dtype=np.uint64)
    for k in range(width, 0, -1):  # the digit k places from the end of the line
        pos = ends - k
        digit = code[np.maximum(pos, 0)].astype(np.uint64)
        digit[pos < first] = 0  # this line is shorter
        acc = acc * np.uint64(10) + digit
    return acc


def _hex_word(x: np.ndarray) -> np.ndarray:
    """The 8 hex digits of each 32-bit value of x (uint64 array) as 8 ASCII bytes, most
    significant digit first in memory (SWAR: spread nibbles to bytes, then add '0' or 'a'-10)."""
    x = (x | (x << np.uint64(16))) & np.uint64(0x0000FFFF0000FFFF)
    x = (x | (x << np.uint64(8))) & np.uint64(0x00FF00FF00FF00FF)
    x = (x | (x << np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    letter = ((x + np.uint64(0x0606060606060606)) >> np.uint64(4)) & _ONES  # 1 where the digit is >= 10
    x = x + np.uint64(0x3030303030303030) + letter * np.uint64(0x27)
    return x.byteswap()  # digit 7 (the top nibble) was in the low byte


def hex_digits(values: np.ndarray) -> np.ndarray:
    """Digits of each value's hex form (1 for 0): the float exponent gives the bit length,
    corrected where rounding to 53 bits went up a power of two."""
    d = (np.frexp(values.astype(np.float64))[1] + 3) // 4
    over = (d > 1) & ((values >> (4 * (d - 1)).astype(np.uint64)) == 0)
    return np.maximum(d - over, 1)


class Rows:
    """n text rows assembled piece by piece, then written as bytes.

    Every row is the same run of 8-byte words, and the NULs that pad them are dropped at the end
    (JSON and table text have none). A hex or decimal number is a column of whole words, its
    leading zeros NUL. Literals and pieces from small vocabularies (prot strings, levels, page
    sizes, pads) between two numbers are merged into one piece: each row's combination of them is
    a code, and the combinations present become one string each. One `"size": 4096, "level": 3,
    "prot": "rw"` string then pads once, not six times, so rows carry a fifth of NULs, not two
    fifths. `where` limits a piece to some rows (a miss has no level, prot, raw or entry)."""

    GROUP = 1 << 16  # most combinations one merged piece may count

    def __init__(self, n: int) -> None:
        self.n = n
        self.consts: list[tuple[int, np.ndarray]] = []  # (first word, the words every row has)
        self.fills: list[tuple[int, np.ndarray]] = []  # (first word, (n,) or (n, w) words)
        self.masks: list[tuple[int, int, np.ndarray]] = []  # (first word, end word, rows kept)
        self.at = 0
        self._vocab: list[list[str]] = []  # the open merged piece: its parts' words ...
        self._codes: np.ndarray | None = None  # ... and each row's combination (mixed radix)
        self._radix = 1

    def _piece(self, words: int, where: np.ndarray | None) -> int:
        self._close()
        at = self.at
        self.at += words
        if where is not None:
            self.masks.append((at, self.at, where))
        return at

    def text(self, s: str, where: np.ndarray | None = None) -> None:
        if where is None:
            self._vocab.append([s])
        else:
            self.words(where.astype(np.intp), ["", s])

    def words(self, codes: np.ndarray, words: Sequence[str], where: np.ndarray | None = None) -> None:
        """words[codes[i]] in row i: small sets such as prot strings, levels, page sizes."""
        words = list(words)
        codes = np.asarray(codes, dtype=np.intp)
        if where is not None:
            codes = np.where(where, codes, len(words))
            words.append("")
        if self._radix * len(words) > self.GROUP:
            self._close()
        self._codes = codes if self._codes is None else self._codes * len(words) + codes
        self._radix *= len(words)
        self._vocab.append(words)

    def _close(self) -> None:
        """Make the open merged piece words: one string per combination present."""
        vocab, codes, radix = self._vocab, self._codes, self._radix
        if not vocab:
            return
        self._vocab, self._codes, self._radix = [], None, 1
        if codes is None:
            enc = "".join(w[0] for w in vocab).encode()
            at = self.at
            self.at += (len(enc) + 7) // 8
            self.consts.append((at, np.frombuffer(enc + b"\0" * (-len(enc) % 8), dtype=_U64)))
            return
        present = np.flatnonzero(np.bincount(codes, minlength=radix))
        strings = []
        for combo in present.tolist():
            parts = []
            for words in reversed(vocab):
                combo, k = divmod(combo, len(words))
                parts.append(words[k])
            strings.append("".join(reversed(parts)).encode())
        width = max(1, (max((len(s) for s in strings), default=0) + 7) // 8)  # no rows: no strings
        table = np.zeros(len(strings), dtype=f"S{8 * width}")
        table[:] = strings
        if len(present) < radix:
            index = np.zeros(radix, dtype=np.intp)
            index[present] = np.arange(len(present))
            codes = index[codes]
        at = self.at
        self.at += width
        self.fills.append((at, table.view(_U64).reshape(len(strings), width)[codes]))

    def hex(self, values: np.ndarray, where: np.ndarray | None = None) -> np.ndarray:
        """Lowercase hex digits without leading zeros ("0" for zero), no 0x; returns the digit counts."""
        values = np.ascontiguousarray(values, dtype=np.uint64)
        top = int(np.bitwise_or.reduce(values)) if len(values) else 0
        digits = hex_digits(values)
        zeros = 16 - digits  # leading zero digits of a 16-digit form
        lo = _hex_word(values & np.uint64(0xFFFFFFFF)) & _KEEP[np.clip(zeros - 8, 0, 8)]
        if top >> 32:
            hi = _hex_word(values >> np.uint64(32)) & _KEEP[np.minimum(zeros, 8)]
            at = self._piece(2, where)
            self.fills += [(at, hi), (at + 1, lo)]
        else:
            self.fills.append((self._piece(1, where), lo))
        return digits

    def decimal(self, values: np.ndarray, where: np.ndarray | None = None) -> None:
        """Unsigned decimal digits without leading zeros ("0" for zero)."""
        values = np.ascontiguousarray(values, dtype=np.uint64)
        top = int(values.max()) if len(values) else 0
        ndig = len(str(top))
        width = (ndig + 7) // 8
        chars = np.zeros((len(values), 8 * width), dtype=np.uint8)
        v = values.copy()
        for k in range(ndig):  # the k-th digit from the right, into the k-th byte from the end
            chars[:, 8 * width - 1 - k] = (v % np.uint64(10)).astype(np.uint8) + 48
            v //= np.uint64(10)
        digits = decimal_digits(values)
        chars[np.arange(8 * width)[None, :] < (8 * width - digits)[:, None]] = 0
        self.fills.append((self._piece(width, where), chars.view(_U64)))

    # Aligned plain-text cells (the human tables piped, see output.plain_table): left-justified
    # cells are followed by spaces, right-justified ones preceded, chosen by each row's length.
    def pad(self, used: np.ndarray, width: int, where: np.ndarray | None = None) -> None:
        """Spaces filling a cell of `used` characters to `width`."""
        self.words(np.clip(width - used, 0, width).astype(np.intp), [" " * k for k in range(width + 1)], where)

    def hex_cell(self, values: np.ndarray, width: int, where: np.ndarray | None = None) -> None:
        """"0x" and the hex digits, left-justified to `width`."""
        self.text("0x", where)
        self.pad(self.hex(values, where) + 2, width, where)

    def decimal_cell(self, values: np.ndarray, width: int, where: np.ndarray | None = None) -> None:
        """Decimal digits right-justified to `width`."""
        values = np.ascontiguousarray(values, dtype=np.uint64)
        self.pad(decimal_digits(values), width, where)
        self.decimal(values, where)

    def array(self) -> np.ndarray:
        """The rows' text as a uint8 array."""
        self._close()
        out = np.empty((self.n, self.at), dtype=_U64)
        for at, const in self.consts:
            out[:, at:at + len(const)] = const
        for at, col in self.fills:
            if col.ndim == 1:
                out[:, at] = col
            else:
                out[:, at:at + col.shape[1]] = col
        for start, end, where in self.masks:
            if not where.all():
                out[np.flatnonzero(~where), start:end] = 0
        text = out.view(np.uint8).reshape(-1)
        return text[text != 0]  # numpy drops the NULs without holding the GIL: writers overlap

    def tobytes(self) -> bytes:
        return self.array().tobytes()


def decimal_digits(values: np.ndarray) -> np.ndarray:
    """Digits of each uint64 value's decimal form (1 for 0)."""
    return np.maximum(np.searchsorted(_POW10, values, side="right"), 1)  # 10**(d-1) <= value < 10**d


def small_codes(values: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """(codes, words) for decimal printing of an int array with few distinct values."""
    values = np.asarray(values)
    if len(values) and values.dtype.kind in "iu":
        lo, hi = int(values.min()), int(values.max())
        if hi - lo < 4096:  # levels, prot bits: no sort needed
            return (values - lo).astype(np.intp), [str(lo + i) for i in range(hi - lo + 1)]
    uniq, codes = np.unique(values, return_inverse=True)
    return codes, [str(int(u)) for u in uniq]


def pow2_codes(sizes: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """(codes, words) for sizes that are 0 or powers of two (leaf sizes), without a sort."""
    if (sizes & (sizes - np.uint64(1))).any():  # a table-less format's odd-sized window
        return small_codes(sizes)
    _, exp = np.frexp(sizes.astype(np.float64))  # 2**k == 0.5 * 2**(k+1): exp is k + 1, 0 for 0
    return exp.astype(np.intp), ["0"] + [str(1 << k) for k in range(64)]
