"""Benchmark: what refusing a crafted model file costs, in time and memory.

    python benchmarks/hostile_files.py [--model models/published/vgg6-fashion_mnist/<file>.stm] [--limit-gb 8]

Each crafted file (tests/hostile_files.py: a valid checksum, a first layer that declares 2^24 or 2^31 CSR rows with
0-bit pointers, or an empty 65536 x 65536 structured layer) is opened by ``study.load`` in a fresh process under a
memory limit; printed: what it raised, the seconds the call took and how far it raised the process's peak
resident memory above the interpreter's (torch and the study imported). A reader of shared files should refuse
each in well under a second and 100 MB.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.hostile_files crafts the files

from tests import hostile_files  # noqa: E402

PROBE = """
import json, resource, sys, time
import study, study.costs.model_file  # torch and the decoder imported before the clock starts
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
try:
    study.load(sys.argv[1])
    raised = "nothing (loaded)"
except BaseException as error:
    raised = f"{type(error).__name__}: {str(error)[:90]}"
seconds = time.perf_counter() - start
print(json.dumps({"raised": raised, "seconds": seconds,
                  "peak_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    published = sorted((REPO / "models" / "published").glob("*/*.stm"))
    parser.add_argument("--model", type=Path, default=published[0] if published else None,
                        help="a real model file to craft from (default: the first published one)")
    parser.add_argument("--limit-gb", type=float, default=8.0, help="address-space limit of each probe process")
    args = parser.parse_args()
    files = hostile_files.crafted(args.model.read_bytes())
    limit = int(args.limit_gb * 2**30)
    print(f"crafted from {args.model.relative_to(REPO) if args.model.is_relative_to(REPO) else args.model}; "
          f"each probe under a {args.limit_gb:g} GiB address-space limit")
    with tempfile.TemporaryDirectory() as folder:
        for name, data in files.items():
            path = Path(folder) / "crafted.stm"
            path.write_bytes(data)
            code = f"import resource; resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))\n{PROBE}"
            run = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, cwd=REPO)
            result = json.loads(run.stdout.strip().splitlines()[-1]) if run.returncode == 0 else {
                "raised": f"process ended with status {run.returncode}", "seconds": float("nan"), "peak_mb": float("nan")}
            print(f"{name:45s} {result['seconds']:7.3f} s {result['peak_mb']:9.1f} MB  {result['raised']}")


if __name__ == "__main__":
    main()
