"""Run every CPU benchmark script in this folder (bench_*.py, except the GPU one) in turn.

    .venv/bin/python benchmarks/run_all.py     (or: make bench)
"""
import pathlib
import subprocess
import sys

here = pathlib.Path(__file__).resolve().parent
failed = 0
for script in sorted(here.glob("bench_*.py")):
    if script.name == "bench_gpu.py":
        continue
    print(f"\n## {script.name}\n", flush=True)
    failed |= subprocess.call([sys.executable, str(script)])
sys.exit(failed)
