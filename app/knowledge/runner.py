"""Parsing in a child process, under an address-space limit and a timeout: native parsers
(PDFium) meet hostile files, and a file that blows up takes only its own process with it.

Each file gets a new process, forked from a multiprocessing forkserver that has the parsers
imported already (started on first use): a fork costs a few milliseconds where starting Python
and importing PDFium costs about 120, which was most of a small PDF's indexing time. The child
sends back the pages, or the error its file earned; a child that dies (out of memory, a crash)
or overruns the timeout fails the file as `invalid_file`.

`python -m app.knowledge.runner FILE TYPE MAX_PAGES` parses one file the same way and prints
`{"pages": [...], "paged": ...}` or `{"error": {"code", "message"}}` as JSON (for checking a
file by hand)."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import resource
import sys
from multiprocessing import spawn
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from app.knowledge.parsing import Parsed, ParseError, parse

_CONTEXT = multiprocessing.get_context("forkserver")
# The parsers' imports too (parsing.py imports them lazily, so the API process never loads
# them): in each child they cost more than the fork, 25 ms for PDFium and 180 for python-docx.
_CONTEXT.set_forkserver_preload(["app.knowledge.runner", "pypdfium2", "selectolax.lexbor", "docx"])
PROCESS_NAME = "knowledge-parser"
_preparation = spawn.get_preparation_data


def _without_main(name: str) -> dict[str, Any]:
    """What a new child is told to set up before it runs. multiprocessing has it import the
    parent's `__main__` module again (to find the target, were it there): under `python -m
    app.worker` that is the whole application, over a second per file. The parsers' target is
    in this module, which the forkserver has imported already, so theirs is left out."""
    data: dict[str, Any] = _preparation(name)
    if name == PROCESS_NAME:
        data.pop("init_main_from_name", None)
        data.pop("init_main_from_path", None)
    return data


spawn.get_preparation_data = _without_main  # the forkserver's Popen looks it up at each start


async def parse_in_child(
    path: Path, mime_type: str, *, max_pages: int, memory_mb: int, timeout_seconds: float
) -> Parsed:
    """The parsed file; ParseError if it cannot be parsed, ran out of memory or time."""
    reader, writer = _CONTEXT.Pipe(duplex=False)
    process = _CONTEXT.Process(
        target=_child,
        args=(str(path), mime_type, max_pages, memory_mb, writer),
        name=PROCESS_NAME,
        daemon=True,
    )
    try:
        await asyncio.to_thread(process.start)
        writer.close()  # the child holds its own end: EOF here once it exits
        try:
            result = await asyncio.wait_for(asyncio.to_thread(_receive, reader), timeout_seconds)
        except TimeoutError:
            process.kill()
            raise ParseError(
                "invalid_file", f"Reading the file took longer than {timeout_seconds:g} s."
            ) from None
        finally:
            await asyncio.to_thread(process.join, 5)
    finally:
        reader.close()
        writer.close()
    if not isinstance(result, dict):
        raise ParseError(
            "invalid_file",
            f"The file could not be read: the parser stopped (exit {process.exitcode}), "
            f"for example out of its {memory_mb} MB of memory.",
        )
    if "error" in result:
        raise ParseError(result["error"]["code"], result["error"]["message"])
    return Parsed([page.replace("\x00", "") for page in result["pages"]], result["paged"])


def _receive(reader: Connection) -> Any:
    try:
        return reader.recv()
    except (EOFError, OSError):  # the child died before it answered
        return None


def _child(path: str, mime_type: str, max_pages: int, memory_mb: int, writer: Connection) -> None:
    size = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (size, size))
    writer.send(_outcome(Path(path), mime_type, max_pages))
    writer.close()


def _outcome(path: Path, mime_type: str, max_pages: int) -> dict[str, object]:
    try:
        parsed = parse(path, mime_type, max_pages)
        return {"pages": parsed.pages, "paged": parsed.paged}
    except ParseError as exc:
        return {"error": {"code": exc.code, "message": exc.message}}
    except MemoryError:
        return {"error": {"code": "invalid_file", "message": "The file needs too much memory."}}


def main(argv: list[str]) -> int:
    path, mime_type, max_pages = Path(argv[0]), argv[1], int(argv[2])
    sys.stdout.write(json.dumps(_outcome(path, mime_type, max_pages)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
