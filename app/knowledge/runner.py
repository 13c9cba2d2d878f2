"""Parsing in a child process, `python -m app.knowledge.runner FILE TYPE MAX_PAGES`, under an
address-space limit and a timeout: native parsers (PDFium) meet hostile files, and a file that
blows up takes only this process with it. The child prints `{"pages": [...], "paged": ...}` or
`{"error": {"code", "message"}}` as JSON."""

from __future__ import annotations

import asyncio
import json
import resource
import sys
from collections.abc import Callable
from pathlib import Path

from app.knowledge.parsing import Parsed, ParseError, parse


async def parse_in_child(
    path: Path, mime_type: str, *, max_pages: int, memory_mb: int, timeout_seconds: float
) -> Parsed:
    """The parsed file; ParseError if it cannot be parsed, ran out of memory or time."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.knowledge.runner",
        str(path),
        mime_type,
        str(max_pages),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=_limit_memory(memory_mb),
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), timeout_seconds)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise ParseError(
            "invalid_file", f"Reading the file took longer than {timeout_seconds:g} s."
        ) from None
    try:
        result = json.loads(out)
    except ValueError:
        result = None
    if not isinstance(result, dict) or process.returncode != 0:
        raise ParseError(
            "invalid_file",
            f"The file could not be read: the parser stopped (exit {process.returncode}), "
            f"for example out of its {memory_mb} MB of memory.",
        )
    if "error" in result:
        raise ParseError(result["error"]["code"], result["error"]["message"])
    return Parsed([page.replace("\x00", "") for page in result["pages"]], result["paged"])


def _limit_memory(memory_mb: int) -> Callable[[], None]:
    def limit() -> None:
        size = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (size, size))

    return limit


def main(argv: list[str]) -> int:
    path, mime_type, max_pages = Path(argv[0]), argv[1], int(argv[2])
    try:
        parsed = parse(path, mime_type, max_pages)
        output: dict[str, object] = {"pages": parsed.pages, "paged": parsed.paged}
    except ParseError as exc:
        output = {"error": {"code": exc.code, "message": exc.message}}
    except MemoryError:
        output = {"error": {"code": "invalid_file", "message": "The file needs too much memory."}}
    sys.stdout.write(json.dumps(output))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
