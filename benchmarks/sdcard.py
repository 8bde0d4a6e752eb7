"""An SD card's fsync on any disk: an ``LD_PRELOAD`` library that sleeps before every ``fsync``/``fdatasync``.

The benchmark builds it from the C below with the system compiler (``cc``) into its work directory. A process
started with ``env_for(delay_ms)`` in its environment pays ``delay_ms`` more per fsync (SQLite in WAL mode with
``synchronous=FULL`` does one per commit, plus the checkpoints'), so commit latency is an SD card's (A1/A2 cards:
2-20 ms per fsync) while the rest of the machine stays as it is. The library counts the calls: ``calls()`` in a
process that has it preloaded, or the file named by ``BENCH_FSYNC_COUNT_FILE``, written when the process exits.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from pathlib import Path

DELAY_VAR = "BENCH_FSYNC_DELAY_MS"
COUNT_VAR = "BENCH_FSYNC_COUNT_FILE"

SOURCE = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static long delay_ns = -1;
static long calls;

static void sd_card_pause(void) {
    if (delay_ns < 0) {
        const char *ms = getenv("BENCH_FSYNC_DELAY_MS");
        delay_ns = ms ? (long)(atof(ms) * 1e6) : 0;
    }
    __atomic_add_fetch(&calls, 1, __ATOMIC_RELAXED);
    struct timespec left = {delay_ns / 1000000000L, delay_ns % 1000000000L};
    while (delay_ns > 0 && nanosleep(&left, &left) != 0) {
    }
}

int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    sd_card_pause();
    return real(fd);
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    sd_card_pause();
    return real(fd);
}

long bench_fsync_calls(void) { return __atomic_load_n(&calls, __ATOMIC_RELAXED); }

__attribute__((destructor)) static void write_count(void) {
    const char *path = getenv("BENCH_FSYNC_COUNT_FILE");
    FILE *out = path ? fopen(path, "w") : NULL;
    if (out) {
        fprintf(out, "%ld\n", bench_fsync_calls());
        fclose(out);
    }
}
"""


class NoCompiler(RuntimeError):
    """No C compiler to build the shim with."""


def build(workdir: Path) -> Path:
    """Compile the shim into ``workdir``; return the shared library's path."""
    compiler = shutil.which("cc") or shutil.which("gcc") or install_compiler()
    source, library = workdir / "fsync_shim.c", workdir / "fsync_shim.so"
    source.write_text(SOURCE, encoding="utf-8")
    subprocess.run(
        [compiler, "-O2", "-shared", "-fPIC", "-o", str(library), str(source), "-ldl"],
        check=True,
        capture_output=True,
    )
    return library


def install_compiler() -> str:
    """Install gcc with apt (through sudo unless root), as scripts/setup installs what it needs; return its path."""
    apt = shutil.which("apt-get")
    if apt is None:
        msg = "the fsync shim needs a C compiler (cc or gcc), and this machine has no apt-get to install one"
        raise NoCompiler(msg)
    sudo: list[str] = [] if os.geteuid() == 0 else ["sudo"]
    print("benchmark: installing gcc for the fsync shim (apt-get install gcc)", flush=True)
    quiet = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for step in ([apt, "update", "-qq"], [apt, "install", "-y", "-qq", "gcc"]):
        done = subprocess.run([*sudo, *step], env=quiet, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            msg = f"the fsync shim needs a C compiler; {' '.join(step)} failed: {done.stderr.strip()[-500:]}"
            raise NoCompiler(msg)
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        msg = "gcc was installed but neither cc nor gcc is on PATH"
        raise NoCompiler(msg)
    return compiler


def env_for(library: Path, delay_ms: float, count_file: Path | None = None) -> dict[str, str]:
    """Return the environment variables that load the shim with ``delay_ms`` added to each fsync."""
    env = {"LD_PRELOAD": str(library), DELAY_VAR: f"{delay_ms:g}"}
    if count_file is not None:
        env[COUNT_VAR] = str(count_file)
    return env


def calls() -> int | None:
    """Return how many fsyncs this process has made, when it runs with the shim preloaded (else None)."""
    try:
        counter = ctypes.CDLL(None).bench_fsync_calls
    except AttributeError:
        return None
    counter.restype = ctypes.c_long
    return int(counter())


def count_in(path: Path) -> int | None:
    """Return the fsync count a shimmed process wrote when it exited (None if it wrote none)."""
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def preloaded() -> bool:
    """Return whether this process runs with the shim."""
    return "fsync_shim" in os.environ.get("LD_PRELOAD", "")
