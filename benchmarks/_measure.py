"""Run a Python snippet in a fresh process; return (wall seconds, peak RSS bytes, stdout)."""
from __future__ import annotations

import os
import subprocess
import sys
import time


def measure(code: str, env: dict | None = None, *, whole: bool = False) -> tuple[float, int, str]:
    """Wall time and peak resident memory (the child's own VmHWM) of ``python -c code``.

    The time is the code's own (imports included, interpreter start-up not), or with
    ``whole=True`` the whole process's, measured from outside (start-up and exit included)."""
    wrapper = ("import resource, sys, time\n"
               "t0 = time.perf_counter()\n"
               f"exec(compile({code!r}, '<bench>', 'exec'))\n"
               "print('__WALL__', time.perf_counter() - t0)\n"
               # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent through fork
               # and exec, so a child of a big parent would report the parent's peak
               "print('__RSS__', next(int(l.split()[1]) * 1024 for l in open('/proc/self/status')"
               " if l.startswith('VmHWM')))\n")
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", wrapper], capture_output=True, text=True,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})})
    outer = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"benchmark child failed:\n{out.stderr[-3000:]}")
    lines = out.stdout.splitlines()
    wall = outer if whole else float(next(l for l in lines if l.startswith("__WALL__")).split()[1])
    rss = int(next(l for l in lines if l.startswith("__RSS__")).split()[1])
    return wall, rss, "\n".join(l for l in lines if not l.startswith("__"))


def gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"
