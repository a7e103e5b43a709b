"""Apply each mutant of ``mutants.py`` in a temporary copy of the repository, run the fast
tests it names, and print a killed / survived table.

    python tests/mutation/run.py                 # every mutant
    python tests/mutation/run.py -k NTU          # those whose name contains NTU
    python tests/mutation/run.py --list

First the unmutated copy runs every named test (they must pass, or no kill means anything);
then each mutant is applied alone, its tests run with ``-x``, and the copy is restored. Exit
status 1 when any mutant survives. Not part of CI: it takes minutes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mutants import MUTANTS, Mutant

REPO = Path(__file__).resolve().parents[2]


def repo_files() -> list[str]:
    """Tracked and untracked, not ignored, files: what a commit of the working tree holds."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout
    return [p for p in out.decode().split("\0") if p and (REPO / p).is_file()]


def copy_repo(dest: Path) -> None:
    for rel in repo_files():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, target)


def apply(copy: Path, mutant: Mutant) -> str:
    """Write the mutant into ``copy``; returns the original text to restore."""
    path = copy / mutant.file
    text = path.read_text()
    if text.count(mutant.old) != 1:
        raise SystemExit(
            f"{mutant.name}: {mutant.file} holds the original {text.count(mutant.old)} times"
        )
    path.write_text(text.replace(mutant.old, mutant.new))
    return text


def run_tests(copy: Path, tests: tuple[str, ...]) -> tuple[int, str]:
    env = dict(os.environ, PYTHONPATH=str(copy), PYTHONDONTWRITEBYTECODE="1")
    env.setdefault("STARS_SHARED_DATA", str(REPO.parent / "shared" / "data"))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
        cwd=copy,
        env=env,
        capture_output=True,
        text=True,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(("FAILED", "ERROR"))]
    return proc.returncode, (lines[0] if lines else proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-k", default="", help="only mutants whose name contains this")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTANTS if args.k.lower() in m.name.lower()]
    if args.list:
        for m in chosen:
            print(f"{m.file:32s} {m.name}")
        return 0
    with tempfile.TemporaryDirectory(prefix="stars-mutation-") as tmp:
        copy = Path(tmp) / "repo"
        copy_repo(copy)
        probe = subprocess.run(
            [sys.executable, "-c", "import stars; print(stars.__file__)"],
            cwd=copy,
            env=dict(os.environ, PYTHONPATH=str(copy)),
            capture_output=True,
            text=True,
        ).stdout.strip()
        if not probe.startswith(str(copy)):
            raise SystemExit(f"the copy's tests would import stars from {probe}, not the copy")
        every = tuple(dict.fromkeys(t for m in chosen for t in m.tests))
        code, detail = run_tests(copy, every)
        if code != 0:
            raise SystemExit(f"the unmutated tests fail, nothing to compare: {detail}")
        rows, survived = [], 0
        for m in chosen:
            start = time.perf_counter()
            original = apply(copy, m)
            try:
                code, detail = run_tests(copy, m.tests)
            finally:
                (copy / m.file).write_text(original)
            killed = code != 0
            survived += not killed
            verdict = "killed" if killed else "SURVIVED"
            rows.append((verdict, m, detail, time.perf_counter() - start))
            print(f"{verdict:8s} {m.name}  [{detail}]", flush=True)
    print("\n| mutant | file | result | killed by |\n|---|---|---|---|")
    for verdict, m, detail, _ in rows:
        by = detail.split(" - ")[0].removeprefix("FAILED ") if verdict == "killed" else "-"
        print(f"| {m.name} | {m.file} | {verdict} | {by} |")
    print(f"\n{len(rows) - survived} of {len(rows)} killed, {survived} survived")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
