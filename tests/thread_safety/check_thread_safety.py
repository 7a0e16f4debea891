#!/usr/bin/env python3
"""Clang's thread-safety analysis over the lock-annotated code (docs/DEVELOPING.md,
"Lock annotations").

The build compiles with GCC, which ignores ABSL_GUARDED_BY and friends; this runs
`clang++ -fsyntax-only -Wthread-safety -Werror=thread-safety` over every annotated
.cc file under DIRS with the flags of the translation unit that builds it (from
<build>/compile_commands.json). A unity .cxx file is read for the sources it
includes; only its annotated ones are checked, together (a batch of the same order,
minus the others, which may pull in LibTorch), so that they parse the gRPC and
protobuf headers once. Fails on:

  * a thread-safety error in such a file (or in the annotated headers it includes);
  * the negative control (negative_control.cc) accepted as it is, or refused with
    -DSKINLESION_TS_FIXED: the analysis must be seen to run;
  * a source under DIRS that uses the lock annotations or absl::Mutex / CondVar but
    is not checked (not built, compiled with the LibTorch precompiled header, or a
    header no checked file includes): nothing annotated escapes the check;
  * a non-test source under DIRS that uses the unannotated standard locks
    (std::mutex, std::condition_variable, ...), which the analysis cannot see,
    unless UNCHECKED names it with the reason.

Usage: check_thread_safety.py --build-dir build [--clang clang++] [--jobs 2] [-v]
Exit status 0: clean; 1: a finding (printed); 77: no clang (CTest: skipped).
"""

import argparse
import concurrent.futures
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time

SOURCE_DIR = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

# The annotated directories. Not yet: services/gateway, skinlesion/serving and
# skinlesion/train (their own pending changes); add them here once annotated.
DIRS = [
    "skinlesion/common",
    "skinlesion/data",
    "skinlesion/inference",
    "skinlesion/jobs",
    "skinlesion/predict",
    "skinlesion/registry",
    "skinlesion/serving",
    "skinlesion/telemetry",
    "services/gateway",
    "services/inference",
    "services/registry",
    "services/trainer",
    "tools",
]

# Non-test sources under DIRS allowed to keep unannotated standard locks, and why.
# LibTorch code cannot be checked: clang 14 does not even parse LibTorch's headers
# with this libstdc++ (errors in ATen/core/ivalue_inl.h), and they take minutes.
UNCHECKED = {
    "skinlesion/data/loader.h": "the batch loader: LibTorch (includes <torch/torch.h>)",
    "skinlesion/data/loader.cc": "the batch loader: LibTorch (includes <torch/torch.h>)",
}

ANNOTATED = re.compile(
    r"\bABSL_(?:PT_)?GUARDED_BY\b|\bABSL_(?:EXCLUSIVE|SHARED)_LOCKS_REQUIRED\b|"
    r"\bABSL_LOCKS_EXCLUDED\b|\bABSL_ACQUIRED_(?:AFTER|BEFORE)\b|"
    r"\babsl::(?:Mutex|CondVar|MutexLock|ReaderMutexLock|WriterMutexLock)\b")
STD_LOCKS = re.compile(
    r"\bstd::(?:mutex|recursive_mutex|timed_mutex|shared_mutex|shared_timed_mutex|"
    r"condition_variable(?:_any)?|lock_guard|unique_lock|scoped_lock|shared_lock)\b")
UNITY_INCLUDE = re.compile(r'^#include "(/[^"]+)"', re.M)

# Flags of the GCC build that clang must not see: outputs, dependency files, the
# precompiled header, and the warning set (only thread-safety is asked for here).
DROP_WITH_VALUE = {"-o", "-MT", "-MF", "-MQ", "-include"}
DROP = {"-c", "-MD", "-MMD", "-Winvalid-pch"}


def rel(path):
    return os.path.relpath(os.path.realpath(path), SOURCE_DIR)


def under_dirs(path):
    return any(path == d or path.startswith(d + "/") for d in DIRS)


def is_test(path):
    name = os.path.basename(path)
    return name.endswith("_test.cc") or "test_fakes" in name


def read(path):
    with open(os.path.join(SOURCE_DIR, path), encoding="utf-8", errors="replace") as f:
        return f.read()


def translation_units(build_dir):
    """[(tu_file, args, [project sources it compiles], uses_pch)]."""
    with open(os.path.join(build_dir, "compile_commands.json")) as f:
        entries = json.load(f)
    units = []
    for e in entries:
        args = e["arguments"] if "arguments" in e else shlex.split(e["command"])
        tu = os.path.join(e["directory"], e["file"])
        if tu.endswith(".cxx") and "/Unity/" in tu:
            with open(tu) as f:
                sources = [rel(p) for p in UNITY_INCLUDE.findall(f.read())]
        else:
            sources = [rel(tu)]
        uses_pch = any("cmake_pch" in a for a in args)
        units.append((tu, e["directory"], args, sources, uses_pch))
    return units


def clang_args(args, clang, tu, source):
    """The clang command checking `source` with the flags that compile `tu`."""
    out = [clang]
    skip = False
    for a in args[1:]:
        if skip:
            skip = False
            continue
        if a in DROP_WITH_VALUE:
            skip = True
            continue
        if a in DROP or a == tu or (a.startswith("-W") and not a.startswith("-Wl,")):
            continue
        out.append(a)
    return out + ["-fsyntax-only", "-Wthread-safety", "-Werror=thread-safety", source]


def run(cmd, cwd):
    start = time.monotonic()
    p = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return p.returncode, p.stdout, time.monotonic() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build-dir", required=True)
    parser.add_argument("--clang", default="clang++")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("-v", "--verbose", action="store_true")
    opts = parser.parse_args()
    clang = shutil.which(opts.clang)
    if clang is None:
        print(f"{opts.clang} not found (scripts/setup.sh installs clang): check skipped")
        return 77
    start = time.monotonic()
    findings = []

    # Every source under DIRS: annotated ones must be checked, standard locks refused.
    annotated, seen = set(), set()
    for d in DIRS:
        for root, _, files in os.walk(os.path.join(SOURCE_DIR, d)):
            for name in files:
                if not name.endswith((".cc", ".h")):
                    continue
                path = rel(os.path.join(root, name))
                seen.add(path)
                text = read(path)
                if ANNOTATED.search(text):
                    annotated.add(path)
                if STD_LOCKS.search(text) and not is_test(path) and path not in UNCHECKED:
                    findings.append(f"{path}: std:: locks are invisible to the analysis; use "
                                    "absl::Mutex / MutexLock / CondVar with ABSL_GUARDED_BY "
                                    "(or list the file in UNCHECKED with the reason)")
    for path in UNCHECKED:
        if path not in seen:
            findings.append(f"UNCHECKED names {path}, which does not exist")

    # The annotated .cc files of each translation unit, with its flags.
    checked, pch_sources, built = [], set(), set()
    batch_dir = os.path.join(os.path.abspath(opts.build_dir), "thread_safety_check")
    os.makedirs(batch_dir, exist_ok=True)
    for tu, cwd, args, sources, uses_pch in translation_units(opts.build_dir):
        built.update(sources)
        subjects = [s for s in sources if s in annotated]
        if not subjects:
            continue
        if uses_pch:
            pch_sources.update(subjects)
            continue
        path = os.path.join(SOURCE_DIR, subjects[0])
        if len(subjects) > 1:  # A unity batch: its annotated sources as one unit.
            path = os.path.join(batch_dir, f"batch_{len(checked)}.cc")
            with open(path, "w") as f:
                f.write("".join(f'#include "{os.path.join(SOURCE_DIR, s)}"\n' for s in subjects))
        checked.append((path, cwd, args, tu, subjects))
    checked_sources = {s for *_, subjects in checked for s in subjects}
    for path in sorted(annotated):
        if path.endswith(".h"):
            # A header is analysed where its class is implemented (same-named .cc),
            # or wherever a checked source includes it.
            cc = path[:-2] + ".cc"
            if cc in checked_sources or any(
                    f'#include "{path}"' in read(s) for s in checked_sources):
                continue
            findings.append(f"{path}: annotated, but no checked translation unit includes it")
        elif path in pch_sources:
            findings.append(f"{path}: annotated, but compiled with the LibTorch PCH (too slow "
                            "to check); move the locking to a LibTorch-free file")
        elif path not in checked_sources:
            why = "not in compile_commands.json (not built?)" if path not in built else "unchecked"
            findings.append(f"{path}: annotated, but {why}")

    # The negative control, with the flags of a checked unit (the same flag filtering).
    control = os.path.join(SOURCE_DIR, "tests/thread_safety/negative_control.cc")
    template = checked[0] if checked else (control, opts.build_dir, ["c++", "-std=c++20"], control)
    base = clang_args(template[2], clang, template[3], control)[:-1]
    jobs = [("control (must fail)", base + [control], template[1]),
            ("control fixed (must pass)", base + ["-DSKINLESION_TS_FIXED", control], template[1])]
    jobs += [(" + ".join(subjects), clang_args(args, clang, tu, path), cwd)
             for path, cwd, args, tu, subjects in checked]

    with concurrent.futures.ThreadPoolExecutor(max(1, opts.jobs)) as pool:
        results = list(pool.map(lambda j: (j[0], run(j[1], j[2])), jobs))
    for name, (rc, output, seconds) in results:
        if opts.verbose:
            print(f"{seconds:5.1f} s  rc {rc}  {name}")
        if name == "control (must fail)":
            if rc == 0 or "-Wthread-safety" not in output:
                findings.append("negative control: clang accepted a guarded read without the "
                                f"lock (the analysis is not running)\n{output}")
        elif rc != 0:
            findings.append(f"{name}:\n{output}")

    for f in findings:
        print(f"FAIL: {f}")
    print(f"thread-safety check: {len(checked_sources)} sources in {len(checked)} units "
          f"({len(annotated)} annotated files), "
          f"negative control, {time.monotonic() - start:.1f} s: "
          f"{'FAILED' if findings else 'OK'}")
    if opts.verbose or findings:
        for s in sorted(annotated):
            print(f"  annotated: {s}")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
