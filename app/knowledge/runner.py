"""Parsing in a child process, under an address-space limit and a timeout: native parsers
(PDFium) meet hostile files, and a file that blows up takes only its own process with it.

Parser processes are forked from a multiprocessing forkserver that has the parsers imported
already (started on first use): a fork costs a few milliseconds where starting Python and
importing PDFium costs about 120. A parser process reads up to KNOWLEDGE_PARSE_FILES_PER_PROCESS
files, of one workspace only, one at a time: a new process per file cost about 20 ms (the fork,
PDFium's first document, the exit), three times what a small PDF takes to read. The child
sends back the pages, or the error its file earned; a child that dies (out of memory, a crash)
or overruns the timeout fails the file as `invalid_file`, after a second reading in a new
process when the one that died had read other files first.

`python -m app.knowledge.runner FILE TYPE MAX_PAGES` parses one file in this process and prints
`{"pages": [...], "paged": ...}` or `{"error": {"code", "message"}}` as JSON (for checking a
file by hand)."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import resource
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing import spawn
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from app.knowledge.parsing import Parsed, ParseError, parse

_CONTEXT = multiprocessing.get_context("forkserver")
# The parsers' imports too (parsing.py imports them lazily, so the API process never loads
# them): in each child they cost more than the fork, 25 ms for PDFium and 180 for python-docx.
_CONTEXT.set_forkserver_preload(["app.knowledge.runner", "pypdfium2", "selectolax.lexbor", "docx"])
PROCESS_NAME = "knowledge-parser"
MAX_IDLE = 4  # parsers kept between files, in all (as many as a worker runs jobs by default)
IDLE_SECONDS = 30.0  # a parser unused for this long is ended
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


@dataclass
class _Parser:
    """A parser process, the workspace whose files it reads, and how many it has read."""

    process: BaseProcess
    connection: Connection
    workspace: object
    memory_mb: int
    served: int = 0
    idle_since: float = 0.0
    closed: bool = False

    def close(self) -> None:
        """Ends it at once (it may be mid-file), and reaps it in the background."""
        if not self.closed:
            self.closed = True
            self.process.kill()  # nothing if it has exited
            threading.Thread(target=self._reap, daemon=True).start()

    def _reap(self) -> None:
        self.process.join(5)
        self.connection.close()  # after: a thread may still be reading the EOF it left


# Idle parsers, most recently used last. Only ever touched from the event loop's thread, and
# never across an await, so no lock.
_idle: list[_Parser] = []


async def parse_in_child(
    path: Path,
    mime_type: str,
    *,
    max_pages: int,
    memory_mb: int,
    timeout_seconds: float,
    workspace: object = None,
    files_per_process: int = 1,
) -> Parsed:
    """The parsed file; ParseError if it cannot be parsed, ran out of memory or time.

    With `files_per_process` over 1, the process may have read earlier files of the same
    `workspace` (never another's), and stays for later ones, up to that many files. A file that
    kills a process that had read others first, or runs it out of memory, is read again in a
    new process before it fails: a verdict on a file is never another file's doing."""
    for fresh in (False, True):
        reuse = not fresh and files_per_process > 1
        parser = (_take(workspace, memory_mb) if reuse else None) or await _start(
            workspace, memory_mb
        )
        result = await _ask(parser, (str(path), mime_type, max_pages), timeout_seconds)
        if parser.served and (result is None or "memory" in result):
            parser.close()
            continue  # read it again, in a new process
        if result is not None:
            parser.served += 1
            if "memory" in result or parser.served >= files_per_process:
                parser.close()
            else:
                _give_back(parser)
        break
    if result is None:
        raise ParseError(
            "invalid_file",
            "The file could not be read: the parser stopped, for example out of its "
            f"{memory_mb} MB of memory.",
        )
    if "error" in result:
        raise ParseError(result["error"]["code"], result["error"]["message"])
    return Parsed([page.replace("\x00", "") for page in result["pages"]], result["paged"])


def _take(workspace: object, memory_mb: int) -> _Parser | None:
    """An idle parser of the workspace (the most recently used), if any."""
    for parser in reversed(_idle):
        if parser.workspace == workspace and parser.memory_mb == memory_mb:
            _idle.remove(parser)
            return parser
    return None


def _give_back(parser: _Parser) -> None:
    parser.idle_since = time.monotonic()
    _idle.append(parser)
    while len(_idle) > MAX_IDLE:
        _idle.pop(0).close()  # the least recently used
    asyncio.get_running_loop().call_later(IDLE_SECONDS + 1, _end_idle)


def _end_idle() -> None:
    """Ends the parsers idle for longer than IDLE_SECONDS."""
    now = time.monotonic()
    for parser in [p for p in _idle if now - p.idle_since > IDLE_SECONDS]:
        _idle.remove(parser)
        parser.close()


async def _start(workspace: object, memory_mb: int) -> _Parser:
    ours, theirs = _CONTEXT.Pipe(duplex=True)
    process = _CONTEXT.Process(
        target=_serve, args=(theirs, memory_mb), name=PROCESS_NAME, daemon=True
    )
    try:
        await asyncio.to_thread(process.start)
    finally:
        theirs.close()  # the child holds its own end: EOF here once it exits
    return _Parser(process, ours, workspace, memory_mb=memory_mb)


async def _ask(parser: _Parser, request: tuple[str, str, int], seconds: float) -> Any:
    """The parser's answer to one file; None if it died meanwhile. Out of time, or cancelled,
    the parser is ended (it may be mid-file)."""
    answered = False
    try:
        parser.connection.send(request)
        result = await asyncio.wait_for(asyncio.to_thread(_receive, parser.connection), seconds)
        answered = result is not None
    except TimeoutError:
        raise ParseError(
            "invalid_file", f"Reading the file took longer than {seconds:g} s."
        ) from None
    except OSError:  # it had died already: the request could not be sent
        result = None
    finally:
        if not answered:
            parser.close()
    return result


def _receive(connection: Connection) -> Any:
    try:
        return connection.recv()
    except (EOFError, OSError):  # the child died before it answered
        return None


def _serve(connection: Connection, memory_mb: int) -> None:
    """The parser process: files one at a time until its parent closes the pipe; it exits
    after running out of memory (its heap may be left in pieces)."""
    size = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (size, size))
    while True:
        try:
            path, mime_type, max_pages = connection.recv()
        except (EOFError, OSError):
            return
        outcome = _outcome(Path(path), mime_type, max_pages)
        connection.send(outcome)
        if "memory" in outcome:
            return


def _outcome(path: Path, mime_type: str, max_pages: int) -> dict[str, object]:
    try:
        parsed = parse(path, mime_type, max_pages)
        return {"pages": parsed.pages, "paged": parsed.paged}
    except ParseError as exc:
        return {"error": {"code": exc.code, "message": exc.message}}
    except MemoryError:
        message = "The file needs too much memory."
        return {"error": {"code": "invalid_file", "message": message}, "memory": True}


def main(argv: list[str]) -> int:
    path, mime_type, max_pages = Path(argv[0]), argv[1], int(argv[2])
    sys.stdout.write(json.dumps(_outcome(path, mime_type, max_pages)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
