"""writer.write_chunks: chunks made on threads, written in order; what a failure leaves written."""

from __future__ import annotations

import io
import sys
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from iommuctl.writer import Job, write_chunks


class Out(io.TextIOWrapper):
    """A stdout whose bytes layer is a BytesIO (no fd: the pipe is not widened)."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.raw_out = Sink(fail_after)
        super().__init__(self.raw_out)  # type: ignore[arg-type]


class Sink(io.BytesIO):
    def __init__(self, fail_after: int | None) -> None:
        super().__init__()
        self.fail_after = fail_after
        self.writes = 0

    def write(self, b: object) -> int:  # type: ignore[override]
        self.writes += 1
        if self.fail_after is not None and self.writes > self.fail_after:
            raise BrokenPipeError
        return super().write(bytes(b))  # type: ignore[call-overload]


def made_slowly(k: int) -> bytes:
    time.sleep(0.002 * (k % 3))  # later chunks may finish first
    return f"{k}\n".encode()


def job(k: int) -> Callable[[], bytes]:
    return lambda: made_slowly(k)


def test_order_kept_across_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    out = Out()
    monkeypatch.setattr(sys, "stdout", out)
    jobs: list[Job] = [job(k) for k in range(40)]
    jobs.insert(5, b"plain\n")  # ready-made chunks go in their place too
    jobs.append(np.frombuffer(b"array\n", dtype=np.uint8))
    write_chunks(jobs)
    want = [f"{k}" for k in range(40)]
    want.insert(5, "plain")
    assert out.raw_out.getvalue().decode().split() == want + ["array"]


def test_jobs_run_off_the_main_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdout", Out())
    seen: list[threading.Thread] = []
    write_chunks([lambda: seen.append(threading.current_thread()) or b"x"])  # type: ignore[func-returns-value]
    assert seen and seen[0] is not threading.main_thread()


def test_a_raise_in_the_producer_comes_after_the_chunks_before_it(monkeypatch: pytest.MonkeyPatch) -> None:
    out = Out()
    monkeypatch.setattr(sys, "stdout", out)

    def jobs() -> Iterator[Job]:
        for k in range(10):
            yield job(k)
        raise ValueError("bad line 11")

    with pytest.raises(ValueError, match="bad line 11"):
        write_chunks(jobs())
    assert out.raw_out.getvalue().decode().split() == [str(k) for k in range(10)]


def test_a_failing_job_raises_and_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    out = Out()
    monkeypatch.setattr(sys, "stdout", out)

    def boom() -> bytes:
        raise RuntimeError("formatting bug")

    made: list[int] = []

    def jobs() -> Iterator[Job]:
        for k in range(1000):
            made.append(k)
            yield boom if k == 3 else job(k)

    with pytest.raises(RuntimeError, match="formatting bug"):
        write_chunks(jobs())
    assert out.raw_out.getvalue().decode().split() == ["0", "1", "2"]
    assert len(made) < 20  # bounded look-ahead: it stopped soon after


def test_closed_pipe_raises_broken_pipe(monkeypatch: pytest.MonkeyPatch) -> None:
    out = Out(fail_after=2)
    monkeypatch.setattr(sys, "stdout", out)
    with pytest.raises(BrokenPipeError):
        write_chunks(job(k) for k in range(1000))
    assert out.raw_out.getvalue().decode().split() == ["0", "1"]
