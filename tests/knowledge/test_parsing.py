"""Each format's parser, run in this process (the child process runs the same functions; the
end-to-end tests cover that path): what text comes out, page by page, and which error code a
bad file gets."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import pytest

from app.knowledge import parsing, runner
from app.knowledge.parsing import ParseError
from tests.knowledge import files


def _write(tmp_path: Path, content: bytes, name: str = "document") -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def test_a_pdf_is_read_page_by_page(tmp_path: Path) -> None:
    path = _write(tmp_path, files.pdf(["first page text", "second page text"]))
    parsed = parsing.parse(path, parsing.PDF, max_pages=10)
    assert parsed.paged
    assert [page.strip() for page in parsed.pages] == ["first page text", "second page text"]


def test_a_pdf_over_the_page_limit_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, files.pdf(["a", "b", "c"]))
    with pytest.raises(ParseError) as caught:
        parsing.parse(path, parsing.PDF, max_pages=2)
    assert caught.value.code == "too_many_pages"


def test_a_corrupt_pdf_is_an_invalid_file(tmp_path: Path) -> None:
    with pytest.raises(ParseError) as caught:
        parsing.parse(_write(tmp_path, b"%PDF-1.4 garbage"), parsing.PDF, max_pages=10)
    assert caught.value.code == "invalid_file"


def test_html_keeps_headings_lists_and_tables_and_drops_scripts(tmp_path: Path) -> None:
    page = (
        b"<html><head><script>var x = 'hidden';</script></head><body><h1>Guide</h1>"
        b"<p>Intro <b>bold</b> text.</p><ul><li>One <p>nested</p></li><li>Two</li></ul>"
        b"<table><tr><th>Size</th><td>Large</td></tr></table><noscript>no</noscript></body></html>"
    )
    [text] = parsing.parse(_write(tmp_path, page), parsing.HTML, max_pages=10).pages
    assert text.split("\n\n") == [
        "# Guide",
        "Intro bold text.",
        "- One nested",
        "- Two",
        "Size",
        "Large",
    ]
    assert "hidden" not in text


def test_html_without_block_elements_is_its_text(tmp_path: Path) -> None:
    [text] = parsing.parse(
        _write(tmp_path, b"<html><body>just <i>inline</i> words</body></html>"),
        parsing.HTML,
        max_pages=10,
    ).pages
    assert text == "just inline words"


def test_docx_headings_become_markdown_headings(tmp_path: Path) -> None:
    content = files.docx_file([("Refunds", "Five days."), ("Exchanges", "Any store.")])
    [text] = parsing.parse(_write(tmp_path, content), parsing.DOCX, max_pages=10).pages
    assert text == "# Refunds\n\nFive days.\n\n# Exchanges\n\nAny store."


def test_a_broken_docx_is_an_invalid_file(tmp_path: Path) -> None:
    with pytest.raises(ParseError) as caught:
        parsing.parse(_write(tmp_path, b"PK\x03\x04 not a zip"), parsing.DOCX, max_pages=10)
    assert caught.value.code == "invalid_file"


def test_text_must_be_utf8(tmp_path: Path) -> None:
    parsed = parsing.parse(_write(tmp_path, "\ufeffcaf\u00e9".encode()), parsing.TEXT, 10)
    assert parsed.pages == ["caf\u00e9"] and not parsed.paged
    with pytest.raises(ParseError) as caught:
        parsing.parse(_write(tmp_path, b"\xff\xfe bad"), parsing.MARKDOWN, max_pages=10)
    assert caught.value.code == "invalid_file"


def test_the_child_process_entry_prints_pages_or_the_error(tmp_path: Path) -> None:
    good = _write(tmp_path, b"# Hello\n\nworld")
    out = io.StringIO()
    with redirect_stdout(out):
        assert runner.main([str(good), parsing.MARKDOWN, "10"]) == 0
    assert json.loads(out.getvalue()) == {"pages": ["# Hello\n\nworld"], "paged": False}
    bad = _write(tmp_path, b"%PDF-1.4 garbage")
    out = io.StringIO()
    with redirect_stdout(out):
        runner.main([str(bad), parsing.PDF, "10"])
    assert json.loads(out.getvalue())["error"]["code"] == "invalid_file"


async def test_a_parser_that_runs_out_of_time_or_memory_fails_its_file(tmp_path: Path) -> None:
    path = _write(tmp_path, files.pdf(["some text"] * 3))
    with pytest.raises(ParseError) as slow:
        await runner.parse_in_child(
            path, parsing.PDF, max_pages=10, memory_mb=1024, timeout_seconds=0
        )
    assert slow.value.code == "invalid_file" and "longer than" in slow.value.message
    # The parsers are imported in the forkserver, so the child is already mapped: a file
    # needs more memory than that (900 pages, 2.7 MB of text) to run out of 24 MB.
    big = _write(tmp_path, files.pdf(["word " * 600] * 450), "big.pdf")
    with pytest.raises(ParseError) as starved:
        await runner.parse_in_child(
            big, parsing.PDF, max_pages=1000, memory_mb=24, timeout_seconds=60
        )
    assert starved.value.code == "invalid_file"
    parsed = await runner.parse_in_child(
        path, parsing.PDF, max_pages=10, memory_mb=1024, timeout_seconds=60
    )
    assert len(parsed.pages) == 3


async def _parse(path: Path, workspace: str, **options: Any) -> list[str]:
    values: dict[str, Any] = {"max_pages": 1000, "memory_mb": 512, "timeout_seconds": 60}
    values |= {"workspace": workspace, "files_per_process": 3} | options
    return (await runner.parse_in_child(path, parsing.PDF, **values)).pages


def _parsers() -> list[tuple[object, int, int]]:
    """The idle parser processes: their workspace, process id and files read."""
    return [(p.workspace, p.process.pid or 0, p.served) for p in runner._idle]


@pytest.fixture
def no_idle_parsers() -> Iterator[None]:
    for parser in runner._idle:
        parser.close()
    runner._idle.clear()
    yield
    for parser in runner._idle:
        parser.close()
    runner._idle.clear()


async def test_a_parser_process_reads_several_files_of_one_workspace_only(
    tmp_path: Path, no_idle_parsers: None
) -> None:
    path = _write(tmp_path, files.pdf(["some text"]))
    assert await _parse(path, "a") == ["some text"]
    [(workspace, pid, served)] = _parsers()
    assert (workspace, served) == ("a", 1)
    await _parse(path, "a")
    assert _parsers() == [("a", pid, 2)]  # the same process
    await _parse(path, "b")  # another workspace's file: another process
    assert [(w, s) for w, _, s in _parsers()] == [("a", 2), ("b", 1)]
    assert _parsers()[1][1] != pid
    await _parse(path, "a")  # its third file: then it is replaced
    assert [w for w, _, _ in _parsers()] == ["b"]
    await _parse(path, "b", files_per_process=1)  # a new process, not kept
    assert [(w, s) for w, _, s in _parsers()] == [("b", 1)]


async def test_a_file_that_breaks_a_parser_that_read_others_is_read_again_alone(
    tmp_path: Path, no_idle_parsers: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[int] = []
    start = runner._start

    async def counted(workspace: object, memory_mb: int) -> Any:
        started.append(memory_mb)
        return await start(workspace, memory_mb)

    monkeypatch.setattr(runner, "_start", counted)
    small = _write(tmp_path, files.pdf(["some text"]), "small.pdf")
    assert await _parse(small, "a", memory_mb=24) == ["some text"]
    big = _write(tmp_path, files.pdf(["word " * 600] * 450), "big.pdf")  # as above
    with pytest.raises(ParseError) as starved:
        await _parse(big, "a", memory_mb=24)
    assert starved.value.code == "invalid_file"
    # The small file's process read the big one first, and died; then a new one, alone.
    assert len(started) == 2
    assert _parsers() == []  # neither out-of-memory process is kept
    # Out of time: the process (mid-file) is ended, and the next file gets a new one.
    with pytest.raises(ParseError):
        await _parse(small, "a", timeout_seconds=0)
    assert _parsers() == []
    assert await _parse(small, "a") == ["some text"]


MAIN_SCRIPT = """
import asyncio, pathlib, sys
sys.path.insert(0, {root!r})
with open({marks!r}, "a") as marks:  # every import of this script leaves a line
    marks.write("imported\\n")
from app.knowledge.runner import parse_in_child

async def parse_twice():
    for _ in range(2):
        parsed = await parse_in_child(
            pathlib.Path({document!r}), "text/markdown",
            max_pages=10, memory_mb=512, timeout_seconds=60,
        )
        print(parsed.pages[0])

if __name__ == "__main__":
    asyncio.run(parse_twice())
"""


def test_the_parser_child_does_not_run_the_parent_s_main_module_again(tmp_path: Path) -> None:
    """multiprocessing would import the parent's `__main__` in each child: under
    `python -m app.worker`, the whole application for every file."""
    document = _write(tmp_path, b"# Hours\n\nOpen at nine.", "hours.md")
    marks = tmp_path / "marks"
    script = tmp_path / "main.py"
    root = str(Path(__file__).resolve().parents[2])
    script.write_text(MAIN_SCRIPT.format(root=root, marks=str(marks), document=str(document)))
    done = subprocess.run(  # noqa: S603 - our interpreter, our script
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("Open at nine.") == 2
    assert marks.read_text() == "imported\n"  # the parent's import only
