"""README's "Try the commands on the simulator", run as written (issue 20, item 8).

The first block starts ``python -m etl.testing`` (this virtualenv's python, as
an activated virtualenv gives it); the ``export …`` line it prints on stdout is
pasted before the second block, which runs in bash with this virtualenv's
``etl`` first on PATH, in an empty directory.  What the block's comments say
each command prints is checked.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow


def recipe_block(name: str) -> str:
    text = README.read_text("utf-8")
    match = re.search(rf"<!-- simulator-recipe: {name} -->\n```sh\n(.*?)```", text, re.S)
    assert match, f"README has no simulator-recipe {name} block"
    return match.group(1)


def read_lines(stream: IO[str], count: int, timeout: float) -> list[str]:
    """``count`` lines of a pipe, within ``timeout`` seconds (a reader thread: the pipe is buffered)."""
    lines: list[str] = []

    def read() -> None:
        for _ in range(count):
            lines.append(stream.readline())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    assert len(lines) == count, f"only {lines} within {timeout} s"
    return lines


def test_the_readme_simulator_recipe_runs_as_written(tmp_path: Path):
    [server_line] = [line for line in recipe_block("server").splitlines() if line.strip()]
    argv = shlex.split(server_line)
    assert argv[0] == "python"
    env = {"PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8"}
    server = subprocess.Popen([sys.executable, *argv[1:]], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, cwd=tmp_path, env=env)
    try:
        assert server.stdout is not None and server.stderr is not None
        # Everything on stdout (issue 26: `> sim.log` keeps the key and the export line).
        listening, *hints = read_lines(server.stdout, 4, 20)
        url = listening.removeprefix("listening on ").strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url), listening
        assert hints[0].startswith("API key: test-key"), hints
        export = hints[-1].strip()
        assert export == f"export OPENPHONE_BASE_URL={url} OPENPHONE_API_KEY=test-key"

        commands = recipe_block("commands")
        # What a person does: paste the printed line, then the block; each command's output is kept apart.
        script = [export, "set -e"]
        for n, line in enumerate(commands.splitlines()):
            command = line.split("#", 1)[0].strip()
            if command.startswith("etl "):
                script.append(f"{command} > out{n}.txt 2> err{n}.txt")
            elif command:
                script.append(command)
        done = subprocess.run(["bash", "-c", "\n".join(script)], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=180)
        assert done.returncode == 0, done.stderr + "".join(p.read_text() for p in tmp_path.glob("err*.txt"))
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=20) == 0

    for n, line in enumerate(commands.splitlines()):
        if not line.startswith("etl "):
            continue
        out = (tmp_path / f"out{n}.txt").read_text()
        comment = line.split("#", 1)[1].strip()
        if line.startswith(("etl discover", "etl sync")):
            assert out == comment + "\n"  # the exact line the README shows
        elif line.startswith("etl status"):
            assert comment == "ends with: Health: OK" and out.endswith("\nHealth: OK\n"), out
        else:
            raise AssertionError(f"no expectation for {line!r}")
    assert (tmp_path / "try.db").is_file()
    status = (tmp_path / "out3.txt").read_text()
    assert "Queue (21 items):\n  pending             0\n  done               21\n" in status


def test_simulator_help_shows_every_default():
    done = subprocess.run([sys.executable, "-m", "etl.testing", "--help"], capture_output=True, text=True,
                          timeout=30, env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 0
    # One block per option: its line and the indented lines of its help that follow.
    blocks = re.findall(r"^  (--?\S.*(?:\n {3,}\S.*)*)", done.stdout, re.M)
    options = [b for b in blocks if not b.startswith("-h, --help")]
    assert len(options) > 30
    for block in options:
        assert block.count("(default:") == 1, block  # one default per option (issue 26)
    assert "None" not in done.stdout  # 'none' is what one types
    assert re.search(r"--phone-numbers PHONE_NUMBERS\s.*\(default: 2\)", done.stdout)
