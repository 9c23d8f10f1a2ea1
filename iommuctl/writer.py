"""Large outputs to stdout: chunks made on worker threads, written in order while the next are made.

Formatting a chunk is numpy work that releases the GIL (bulk.Rows), and so is writing it (a
syscall): on two cores the chunks after the current one are formatted while it is written."""

from __future__ import annotations

import os
import sys
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from concurrent.futures import Future

Chunk = Any  # bytes, or a uint8 numpy array (bulk.Rows.array): anything stdout's write() takes
Job = Chunk | Callable[[], Chunk]

AHEAD = 4  # chunks formatted ahead of the one being written: memory stays a few chunks


def write_chunks(jobs: Iterable[Job], workers: int | None = None) -> None:
    """Write each chunk to stdout in order. A job that is callable is run on a worker thread
    and its result written; the iteration of `jobs` (which may raise, say on a bad input line
    further on) stays on this thread, and the chunks before a raise still go out."""
    out = getattr(sys.stdout, "buffer", None)
    if out is None:  # a test's text stream
        for job in jobs:
            chunk = job() if callable(job) else job
            sys.stdout.write(bytes(chunk).decode())
        return
    sys.stdout.flush()
    widen_pipe(sys.stdout)
    keep_freed_memory()
    import threading
    from concurrent.futures import ThreadPoolExecutor

    write = _raw_write(out)
    if workers is None:
        workers = min(2, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers, thread_name_prefix="iommuctl-format") as pool:
        made: deque[Future[Any]] = deque()
        # The write runs on a daemon thread of its own: a reader that stops reading without
        # closing the pipe leaves it blocked, and Ctrl-C must still end the command.
        writing: threading.Thread | None = None
        failed: list[BaseException] = []

        def put(chunk: Chunk) -> None:
            try:
                write(chunk)
            except BaseException as e:  # re-raised on the main thread (a closed pipe, say)
                failed.append(e)

        def write_next() -> None:
            nonlocal writing
            chunk = made.popleft().result()
            if writing is not None:
                writing.join()
            if failed:
                raise failed[0]
            writing = threading.Thread(target=put, args=(chunk,), name="iommuctl-write", daemon=True)
            writing.start()

        it = iter(jobs)
        stopped: BaseException | None = None
        try:
            while True:
                try:
                    job = next(it)
                except StopIteration:
                    break
                except Exception as e:  # a bad line further on: what came before still goes out
                    stopped = e
                    break
                made.append(pool.submit(job) if callable(job) else _done(job))
                while len(made) > AHEAD or (made and made[0].done()):
                    write_next()
            while made:
                write_next()
            if writing is not None:
                writing.join()
            if failed:
                raise failed[0]
        except BaseException:
            for fut in made:
                fut.cancel()
            raise
    if stopped is not None:
        raise stopped


def _raw_write(out: Any) -> Callable[[Chunk], None]:
    """Write to stdout's file descriptor itself (stdout's buffer is empty, flushed before): a
    write blocked on a stalled reader then holds no lock that the interpreter's exit needs. A
    stream without a descriptor (a test's) is written through."""
    try:
        fd = out.fileno()
    except (OSError, ValueError, AttributeError):
        return out.write  # type: ignore[no-any-return]

    def write(chunk: Chunk) -> None:
        view = memoryview(chunk).cast("B")
        while len(view):
            view = view[os.write(fd, view):]

    return write


def _done(chunk: Chunk) -> Future[Any]:
    from concurrent.futures import Future

    fut: Future[Any] = Future()
    fut.set_result(chunk)
    return fut


def keep_freed_memory() -> None:
    """Let glibc keep the memory of freed chunks for the next ones. By default it gives blocks
    over 128 KiB back to the kernel as they are freed (and trims the heap above 128 KiB), so each
    chunk's arrays were faulted in afresh: a third of a million-row command's time was page
    faults. Blocks up to 32 MiB (its largest allowed threshold) now come from the heap and stay;
    a process that exits soon does not need them back. Elsewhere than glibc, nothing changes."""
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
        m_trim_threshold, m_mmap_threshold, m_arena_max = -1, -3, -8
        mallopt(m_mmap_threshold, 32 << 20)
        mallopt(m_trim_threshold, 1 << 30)
        mallopt(m_arena_max, 1)  # the worker threads share one heap: freed blocks serve any of them
    except (OSError, AttributeError, TypeError):
        pass


def widen_pipe(stream: Any) -> None:
    """A pipe on stdout takes 1 MiB at a time instead of 64 KiB: a million rows are 150 MB, and
    at 64 KiB the reader and writer spend most of the time waking each other (Linux only)."""
    try:
        import fcntl
        import stat

        fd = stream.fileno()
        if stat.S_ISFIFO(os.fstat(fd).st_mode):
            fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)
    except (OSError, ValueError, AttributeError, ImportError):  # not a real fd, or the limit is lower
        pass
