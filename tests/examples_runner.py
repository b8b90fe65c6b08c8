"""Running the example scripts from tests, and reading the numbers they print."""
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"


def run_example(name, *args, cwd, timeout=120):
    """Run examples/<name> with this interpreter; assert exit 0; return its stdout."""
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / name), *args],
                          cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def number(pattern, text):
    """The number captured by ``pattern``'s first group in ``text``."""
    m = re.search(pattern, text)
    assert m, f"{pattern!r} not in output:\n{text}"
    return float(m.group(1))
