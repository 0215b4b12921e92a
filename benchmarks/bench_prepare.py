"""Dataset preparation: Bandai-Namco dataset-2 straight from its ``.tar.xz``, end to end.

Targets (issue 4): preparing all of dataset-2 (2,902 BVH files, about 385k frames) with
``mocap2to3 prepare --only bandai2`` takes under 60 s wall on the 2-core dev machine with a
peak memory under 2 GB; a second run with nothing changed reads no item again and finishes
its own work in under 5 s (Prefect's fixed start-up, reported separately). Also reported:
frames/s, and the ratio against a straightforward per-frame Python BVH parser reading the
same files.

Run:  .venv/bin/python benchmarks/bench_prepare.py [--with-server] [--naive-every 10]

What it does:

1. Runs the CLI as a subprocess with ``MOCAP2TO3_HOME`` set to a fresh temporary folder
   (nothing cached, Prefect's state there too): wall time, CPU time and peak memory of
   the process tree, and the flow's own seconds for the dataset from the CLI summary line
   (``...; N.N s``). Peak memory is given two ways: the largest single process
   (``ru_maxrss`` from ``wait4``, as ``/usr/bin/time -v`` reports it) and the sum of the
   resident sets of the whole tree (CLI and Prefect's temporary API server), sampled every
   0.2 s, which counts shared pages once per process and so errs high.
2. Runs it again, nothing changed: wall, the flow's own seconds and Prefect's fixed
   start-up (wall minus own work). For reference, the wall of a trivial empty flow run and
   of importing the CLI's modules.
3. ``--with-server``: starts a persistent ``prefect server start`` on a free local port
   (its ``PREFECT_HOME`` in the temporary folder, telemetry off), points the CLI at it
   with ``PREFECT_API_URL`` and measures the re-run and the empty flow again.
4. The baseline: the same member files streamed from the same archive (plain ``tarfile``
   in stream mode, single process). A naive per-frame Python parser (split lines, then per
   frame and per joint: build the joint's rotation from its channels with numpy 3x3
   matrices and chain it to the parent's) runs on every ``--naive-every``-th file and its
   rate is extrapolated to all files; ``data_catalog.readers.bvh.read_bvh`` runs on every
   file, so the reader-only ratio compares the two on exactly the same subset, in the same
   process. Decompression is outside both timings (in the naive parser's favour, since the
   flow's own seconds include it). The two parsers' positions are compared as a check.

Skips with a message (exit 0) when ``../shared/data`` (``MOCAP2TO3_SHARED_DATA``) is
absent. Exit status 1 when a measured target is missed.
"""

from __future__ import annotations

import argparse
import fnmatch
import math
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from data_catalog.catalog import load_catalog
from data_catalog.readers.bvh import UNIT_SCALES, read_bvh
from data_catalog.sources import Source, SourceMissing

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATASET = "bandai2"
TARGET_WALL_S = 60.0
TARGET_PEAK_BYTES = 2 * 1024**3
TARGET_RERUN_OWN_S = 5.0
SAMPLE_INTERVAL_S = 0.2
#: The CLI's summary line for a dataset (flows.prepare.format_row).
SUMMARY_LINE = re.compile(
    r"^\s*(?P<dataset>\S+): (?P<status>\w+); (?P<items>\d+) items, (?P<stored>\d+) stored, "
    r"(?P<unchanged>\d+) unchanged, (?P<quarantined>\d+) quarantined; (?P<sequences>\d+) "
    r"sequences, (?P<frames>\d+) frames; (?P<seconds>[\d.]+) s"
)
#: Environment of a persistent Prefect server besides its PREFECT_HOME: no telemetry, no
#: UI, no scheduler (nothing here is scheduled).
SERVER_ENV = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_UI_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED": "false",
}
EMPTY_FLOW = """
from data_catalog.paths import configure_prefect_environment
configure_prefect_environment()
from prefect import flow

@flow(name="bench-empty-flow")
def empty_flow() -> int:
    return 0

empty_flow()
"""
IMPORT_ONLY = """
from data_catalog.paths import configure_prefect_environment
configure_prefect_environment()
import flows.cli, flows.prepare
"""


# --------------------------------------------------------------------------------------
# Subprocess measurement


@dataclass(frozen=True)
class ProcessRun:
    """One measured subprocess.

    Attributes:
        returncode: exit status.
        wall_s: wall seconds from start to exit.
        cpu_s: user + system CPU seconds of the process and the children it waited for.
        max_rss_bytes: largest resident set of a single process of the tree (``wait4``).
        tree_peak_bytes: largest sampled sum of the tree's resident sets.
        stdout, stderr: the process's output.
    """

    returncode: int
    wall_s: float
    cpu_s: float
    max_rss_bytes: int
    tree_peak_bytes: int
    stdout: str
    stderr: str


def _children_map() -> dict[int, list[int]]:
    """Parent pid -> child pids of every process visible in ``/proc``."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue  # exited meanwhile
        # The command name (field 2) may hold spaces and parentheses: split after it.
        fields = stat[stat.rfind(b")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def tree_rss_bytes(root_pid: int) -> int:
    """Sum of the resident set sizes of ``root_pid`` and all its descendants, bytes."""
    children = _children_map()
    page = os.sysconf("SC_PAGE_SIZE")
    total, stack = 0, [root_pid]
    while stack:
        pid = stack.pop()
        stack.extend(children.get(pid, ()))
        try:
            with open(f"/proc/{pid}/statm", "rb") as handle:
                total += int(handle.read().split()[1]) * page
        except (OSError, IndexError, ValueError):
            continue
    return total


def run_measured(command: list[str], env: dict[str, str], workdir: Path) -> ProcessRun:
    """Run ``command`` to completion, measuring wall, CPU and peak memory of its tree.

    Output goes to files (the progress bar redraws on stderr), read back afterwards.
    """
    out_path, err_path = workdir / "stdout.txt", workdir / "stderr.txt"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        start = time.perf_counter()
        process = subprocess.Popen(
            command, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=REPO_ROOT
        )
        tree_peak = 0
        while True:
            # wait4 gives this child's own rusage (with the children it waited for), which
            # getrusage(RUSAGE_CHILDREN) would merge with every earlier run.
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            tree_peak = max(tree_peak, tree_rss_bytes(process.pid))
            time.sleep(SAMPLE_INTERVAL_S)
        wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    return ProcessRun(
        returncode=process.returncode,
        wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        max_rss_bytes=usage.ru_maxrss * 1024,  # kilobytes on Linux
        tree_peak_bytes=tree_peak,
        stdout=out_path.read_text(errors="replace"),
        stderr=err_path.read_text(errors="replace"),
    )


def summary_row(stdout: str, dataset: str) -> dict[str, str]:
    """The CLI summary line's fields for ``dataset`` (the last one printed).

    Raises:
        ValueError: no summary line for the dataset (the output is in the message).
    """
    rows = [m.groupdict() for m in map(SUMMARY_LINE.match, stdout.splitlines()) if m]
    rows = [r for r in rows if r["dataset"] == dataset]
    if not rows:
        raise ValueError(f"no summary line for {dataset} in the CLI output:\n{stdout[-3000:]}")
    return rows[-1]


def cli_command() -> list[str]:
    """The ``mocap2to3`` console script of this interpreter's environment."""
    script = Path(sys.executable).with_name("mocap2to3")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from flows.cli import main; sys.exit(main())"]


def base_env(home: Path, api_url: str | None = None) -> dict[str, str]:
    """The environment of a measured run: a fresh working folder, Prefect state inside it."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PREFECT_API_URL", "PREFECT_HOME", "PREFECT_PROFILE")
    }
    env["MOCAP2TO3_HOME"] = str(home)
    env["DO_NOT_TRACK"] = "1"
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


# --------------------------------------------------------------------------------------
# A persistent Prefect server


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def prefect_server(home: Path, timeout_s: float = 180.0) -> Iterator[tuple[str, float]]:
    """Run ``prefect server start`` on a free local port; yields (API URL, start-up seconds).

    Raises:
        RuntimeError: the server exited or did not answer in time (with its log's end).
    """
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_PROFILE")}
    env.update(SERVER_ENV, PREFECT_HOME=str(home))
    prefect = Path(sys.executable).with_name("prefect")
    command = (
        [str(prefect)]
        if prefect.exists()
        else [sys.executable, "-c", "from prefect.cli import app; app()"]
    )
    log_path = home / "server.log"
    start = time.perf_counter()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [*command, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group, stopped as a whole
        )
    try:
        while not _healthy(api_url):
            if process.poll() is not None or time.perf_counter() - start > timeout_s:
                tail = log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"prefect server on port {port} did not start; log:\n{tail}")
            time.sleep(0.5)
        yield api_url, time.perf_counter() - start
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=20)


# --------------------------------------------------------------------------------------
# The baseline: a straightforward per-frame Python BVH parser


def _axis_matrix(axis: str, degrees: float) -> np.ndarray:
    """``(3, 3)`` float64 right-handed rotation by ``degrees`` about ``axis`` (X, Y or Z)."""
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    if axis == "X":
        return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    if axis == "Y":
        return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def naive_read_bvh(text: str, scale_to_metres: float) -> np.ndarray:
    """Joint positions of a y-up BVH file, parsed and posed frame by frame in Python.

    The way a first implementation reads BVH: walk the hierarchy lines, then for every
    motion line convert its values with ``float()``, and for every joint build its local
    rotation from its channels (one numpy 3x3 matrix per channel, multiplied in channel
    order), replace OFFSET components by position channels, and chain rotation and
    translation to the parent's. End Sites are skipped (less work than ``read_bvh``).

    Args:
        text: the BVH file's text.
        scale_to_metres: metres per file unit.

    Returns:
        ``(T, S, 3)`` float64 global joint positions, metres, the file's y-up world.

    Raises:
        ValueError: no MOTION section, or a motion line with the wrong number of values.
    """
    lines = text.splitlines()
    parents: list[int] = []
    offsets: list[np.ndarray] = []
    channels: list[list[str]] = []
    open_blocks: list[int] = []  # joint index per open brace, -1 for an End Site's
    declared = -1
    index = 0
    while index < len(lines):
        words = lines[index].replace("{", " { ").replace("}", " } ").split()
        index += 1
        for position, word in enumerate(words):
            if word in ("ROOT", "JOINT"):
                enclosing = [j for j in open_blocks if j >= 0]
                parents.append(enclosing[-1] if enclosing else -1)
                offsets.append(np.zeros(3))
                channels.append([])
                declared = len(parents) - 1
                break
            if word == "End":
                declared = -1
                break
            if word == "{":
                open_blocks.append(declared)
            elif word == "}":
                open_blocks.pop()
            elif word == "OFFSET" and open_blocks and open_blocks[-1] >= 0:
                offsets[open_blocks[-1]] = np.array([float(v) for v in words[position + 1 :]])
                break
            elif word == "CHANNELS":
                channels[open_blocks[-1]] = words[position + 2 :]
                break
            elif word == "MOTION":
                break
        if words and words[0] == "MOTION":
            break
    else:
        raise ValueError("no MOTION section")
    index += 2  # "Frames: N" and "Frame Time: t"
    num_channels = sum(len(c) for c in channels)
    frames: list[np.ndarray] = []
    for line in lines[index:]:
        values = [float(v) for v in line.split()]
        if not values:
            continue
        if len(values) != num_channels:
            raise ValueError(f"motion line has {len(values)} values, expected {num_channels}")
        global_rotations: list[np.ndarray] = []
        global_positions: list[np.ndarray] = []
        cursor = 0
        for joint, parent in enumerate(parents):
            translation = offsets[joint].copy()
            rotation = np.eye(3)
            for channel in channels[joint]:
                value = values[cursor]
                cursor += 1
                if channel.endswith("position"):
                    translation["XYZ".index(channel[0])] = value
                else:
                    rotation = rotation @ _axis_matrix(channel[0], value)
            if parent < 0:
                global_rotations.append(rotation)
                global_positions.append(translation)
            else:
                global_rotations.append(global_rotations[parent] @ rotation)
                global_positions.append(
                    global_positions[parent] + global_rotations[parent] @ translation
                )
        frames.append(np.array(global_positions) * scale_to_metres)
    return np.array(frames)


@dataclass(frozen=True)
class ReaderComparison:
    """Reader-only timings over the archive's BVH files (decompression excluded).

    Attributes:
        files, frames: all files and their frames (source frame rate).
        ours_s: ``read_bvh`` seconds over all files.
        subset_files, subset_frames: the files the naive parser read (every N-th).
        subset_ours_s, subset_naive_s: each parser's seconds on that subset.
        max_position_diff_m: largest |naive - read_bvh| joint position on the subset.
    """

    files: int
    frames: int
    ours_s: float
    subset_files: int
    subset_frames: int
    subset_ours_s: float
    subset_naive_s: float
    max_position_diff_m: float


def compare_readers(
    source: Source, units: str, up_axis: str, naive_every: int, *, max_files: int | None = None
) -> ReaderComparison:
    """Stream the archive once; ``read_bvh`` every member, the naive parser every N-th.

    Args:
        source: the dataset's archive source (its ``member_glob`` selects the BVH files).
        units, up_axis: the catalog's reader options (the naive parser handles y-up only).
        naive_every: the naive parser reads files 0, N, 2N, ... in archive order.
        max_files: stop after this many files (for a quick look), None for all.
    """
    if up_axis != "y":
        raise ValueError(f"the naive parser reads y-up files only, got up_axis={up_axis!r}")
    scale = UNIT_SCALES[units]
    files = frames = subset_files = subset_frames = 0
    ours_s = subset_ours_s = subset_naive_s = max_diff = 0.0
    with tarfile.open(source.path, "r|*") as archive:
        for member in archive:
            if not member.isfile() or not fnmatch.fnmatchcase(
                member.name, source.member_glob or "*"
            ):
                continue
            handle = archive.extractfile(member)
            assert handle is not None  # a regular file
            data = handle.read()
            start = time.perf_counter()
            motion = read_bvh(data, units=units, up_axis=up_axis, name=member.name)  # type: ignore[arg-type]
            elapsed = time.perf_counter() - start
            ours_s += elapsed
            if files % naive_every == 0:
                start = time.perf_counter()
                positions = naive_read_bvh(data.decode("utf-8-sig"), scale)
                subset_naive_s += time.perf_counter() - start
                subset_ours_s += elapsed
                subset_files += 1
                subset_frames += motion.num_frames
                max_diff = max(max_diff, float(np.abs(positions - motion.positions).max()))
            files += 1
            frames += motion.num_frames
            if max_files is not None and files >= max_files:
                break
    return ReaderComparison(
        files, frames, ours_s, subset_files, subset_frames, subset_ours_s, subset_naive_s, max_diff
    )


# --------------------------------------------------------------------------------------
# Report


def machine_info() -> list[str]:
    """Lines describing the machine and the software versions."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            names = [line.split(":", 1)[1].strip() for line in handle if "model name" in line]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    versions = ", ".join(
        f"{name} {metadata.version(name)}" for name in ("numpy", "prefect", "zarr", "mocap2to3")
    )
    return [
        f"machine: {platform.platform()}, {cpu}, os.cpu_count()={os.cpu_count()}, {memory:.0f} GiB",
        f"python {platform.python_version()}, {versions}",
    ]


def load() -> str:
    """The 1, 5 and 15 minute load averages (the machine is shared)."""
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def mb(n: float) -> str:
    return f"{n / 1024**2:,.0f} MB"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def run_cli_measured(
    label: str, dataset: str, env: dict[str, str], workdir: Path
) -> tuple[ProcessRun, dict[str, str]]:
    """Run ``mocap2to3 prepare --only dataset``, print its figures, return them.

    Raises:
        RuntimeError: the CLI failed (its output's end in the message).
    """
    print(f"\n== {label}  ({load()})")
    workdir.mkdir(parents=True, exist_ok=True)
    run = run_measured([*cli_command(), "prepare", "--only", dataset], env, workdir)
    if run.returncode != 0:
        raise RuntimeError(
            f"mocap2to3 prepare exited {run.returncode}:\n{run.stdout[-2000:]}\n"
            f"{run.stderr[-3000:]}"
        )
    row = summary_row(run.stdout, dataset)
    own = float(row["seconds"])
    frames = int(row["frames"])
    print(
        f"summary: {row['status']}; {row['items']} items, {row['stored']} stored, "
        f"{row['unchanged']} unchanged, {row['quarantined']} quarantined; "
        f"{row['sequences']} sequences, {frames:,} frames"
    )
    print(
        f"wall {run.wall_s:.1f} s, flow's own work {own:.1f} s, start-up etc. {run.wall_s - own:.1f} s"
    )
    print(f"CPU {run.cpu_s:.1f} s ({run.cpu_s / run.wall_s:.2f} cores busy on average)")
    print(
        f"peak memory: {mb(run.tree_peak_bytes)} (sum over the process tree, sampled), "
        f"{mb(run.max_rss_bytes)} (largest single process, ru_maxrss)"
    )
    if frames and own > 0:
        print(f"frames/s: {frames / own:,.0f} (own work), {frames / run.wall_s:,.0f} (wall)")
    return run, row


def run_plain_measured(label: str, code: str, env: dict[str, str], workdir: Path) -> float:
    """Wall seconds of ``python -c code`` (printed with ``label``).

    Raises:
        RuntimeError: the code failed.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    run = run_measured([sys.executable, "-c", code], env, workdir)
    if run.returncode != 0:
        raise RuntimeError(f"{label} exited {run.returncode}:\n{run.stderr[-3000:]}")
    print(f"{label}: wall {run.wall_s:.1f} s")
    return run.wall_s


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default=DEFAULT_DATASET, help="catalog dataset (bandai2)")
    parser.add_argument(
        "--naive-every",
        type=int,
        default=10,
        help="the naive parser reads every N-th file, rate extrapolated (default 10)",
    )
    parser.add_argument(
        "--with-server",
        action="store_true",
        help="also measure the re-run against a persistent local prefect server",
    )
    parser.add_argument("--skip-flow", action="store_true", help="only the reader comparison")
    parser.add_argument("--skip-naive", action="store_true", help="only the flow runs")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    if args.naive_every < 1:
        parser.error(f"--naive-every must be >= 1, got {args.naive_every}")

    catalog = load_catalog(None)
    entry = catalog.get(args.dataset)
    try:
        source = catalog.source(args.dataset)
    except SourceMissing as error:
        print(
            f"SKIPPED: the source of {args.dataset} is absent ({error}); it lives in "
            "../shared/data (or set MOCAP2TO3_SHARED_DATA)."
        )
        return 0
    options = catalog.reader_options(args.dataset)

    print("== machine")
    for line in machine_info():
        print(line)
    print(
        f"dataset {args.dataset}: {source.describe()}, "
        f"{os.path.getsize(source.path) / 1024**2:.1f} MiB"
    )

    failures: list[str] = []
    frames = 0
    own_first = wall_first = 0.0
    tmp = Path(tempfile.mkdtemp(prefix="bench-prepare-"))
    try:
        if not args.skip_flow:
            home = tmp / "home"
            env = base_env(home)
            first, row = run_cli_measured(
                "first run (nothing cached)", args.dataset, env, tmp / "run1"
            )
            frames, own_first, wall_first = int(row["frames"]), float(row["seconds"]), first.wall_s
            second, row2 = run_cli_measured(
                "second run (nothing changed)", args.dataset, env, tmp / "run2"
            )
            print(f"\n== reference ({load()})")
            empty = run_plain_measured(
                "empty flow run (temporary server)", EMPTY_FLOW, env, tmp / "empty"
            )
            run_plain_measured(
                "importing the CLI's modules (prefect included)", IMPORT_ONLY, env, tmp / "imports"
            )
            startup = second.wall_s - float(row2["seconds"])
            print(
                f"Prefect's fixed start-up on the re-run: {startup:.1f} s "
                f"(an empty flow run takes {empty:.1f} s wall)"
            )

            print("\n== targets")
            checks = [
                (
                    f"first run wall {first.wall_s:.1f} s < {TARGET_WALL_S:.0f} s",
                    first.wall_s < TARGET_WALL_S,
                ),
                (
                    f"peak memory {mb(first.tree_peak_bytes)} (tree sum) < 2 GB",
                    first.tree_peak_bytes < TARGET_PEAK_BYTES,
                ),
                (
                    f"re-run reads no item again (stored {row2['stored']}, status {row2['status']})",
                    int(row2["stored"]) == 0
                    and int(row2["unchanged"]) + int(row2["quarantined"]) == int(row2["items"]),
                ),
                (
                    f"re-run own work {float(row2['seconds']):.1f} s < {TARGET_RERUN_OWN_S:.0f} s",
                    float(row2["seconds"]) < TARGET_RERUN_OWN_S,
                ),
            ]
            for text, ok in checks:
                print(f"{verdict(ok)}: {text}")
                if not ok:
                    failures.append(text)

            if args.with_server:
                print(f"\n== persistent prefect server ({load()})")
                with prefect_server(tmp / "server") as (api_url, server_start):
                    print(f"prefect server start: answered after {server_start:.1f} s at {api_url}")
                    server_env = base_env(home, api_url)
                    for attempt in (1, 2):
                        run3, row3 = run_cli_measured(
                            f"re-run against the server (#{attempt})",
                            args.dataset,
                            server_env,
                            tmp / f"run-server{attempt}",
                        )
                    run_plain_measured(
                        "empty flow run against the server",
                        EMPTY_FLOW,
                        server_env,
                        tmp / "empty-server",
                    )
                    print(
                        f"start-up with the server: {run3.wall_s - float(row3['seconds']):.1f} s "
                        f"(was {startup:.1f} s)"
                    )

        if not args.skip_naive:
            print(f"\n== readers over the archive's files, one process ({load()})")
            comparison = compare_readers(
                source,
                units=str(options.get("units", "auto")),
                up_axis=str(options.get("up_axis", "y")),
                naive_every=args.naive_every,
            )
            c = comparison
            ours_rate = c.frames / c.ours_s
            naive_rate = c.subset_frames / c.subset_naive_s
            subset_ours_rate = c.subset_frames / c.subset_ours_s
            print(
                f"read_bvh, all {c.files} files, {c.frames:,} frames: {c.ours_s:.1f} s, "
                f"{ours_rate:,.0f} frames/s"
            )
            print(
                f"naive per-frame parser, every {args.naive_every}th file ({c.subset_files} files, "
                f"{c.subset_frames:,} frames): {c.subset_naive_s:.1f} s, {naive_rate:,.0f} frames/s "
                f"(all files extrapolated: {c.frames / naive_rate:.0f} s)"
            )
            print(
                f"read_bvh on the same subset: {c.subset_ours_s:.2f} s, {subset_ours_rate:,.0f} frames/s"
            )
            print(f"max |naive - read_bvh| position: {c.max_position_diff_m:.1e} m")
            print(
                f"reader-only ratio, same files, same process: {subset_ours_rate / naive_rate:.1f}x"
            )
            if frames and own_first > 0:
                print(
                    f"whole preparation / naive reading: {frames / own_first / naive_rate:.1f}x (own work), "
                    f"{frames / wall_first / naive_rate:.1f}x (wall)"
                )
            print(f"({entry.reader} reader options: {options})")
    finally:
        if args.keep:
            print(f"\nkept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    if failures:
        print(f"\nMISSED: {'; '.join(failures)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
