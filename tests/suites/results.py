"""What the vendored SDK suites' reports say, against tests/suites/known-failures.txt.

scripts/sdk-suites runs the suites unmodified, so some of their tests fail for
features this server does not have yet; known-failures.txt names them with why.
This module reads jest's JSON report and pytest's JUnit XML, and says per suite
how many passed and failed, which failures are not known (a regression: exit 1)
and which known ones now pass (the list is stale: said, not fatal, since other
work lands features). ``--skip-args SUITE`` prints the runner arguments that leave
the known failures out, for a run that only checks what should pass.

    python tests/suites/results.py LOGS_DIR SUITE...
    python tests/suites/results.py --skip-args SUITE
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

HERE = Path(__file__).resolve().parent
KNOWN = HERE / "known-failures.txt"
SUITES = ("js", "python", "pycent")
JS_SEP = " :: "


@dataclass(frozen=True)
class Known:
    """One line of known-failures.txt: a suite, a test id glob, and why."""

    suite: str
    pattern: str
    reason: str


def read_known(path: Path = KNOWN) -> list[Known]:
    """Lines ``SUITE | ID-GLOB | REASON``; blank lines and ``#`` comments skipped."""
    known = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = [part.strip() for part in line.split(" | ")]
        if len(parts) != 3 or parts[0] not in SUITES:
            raise SystemExit(f"{path}:{number}: expected 'SUITE | ID-GLOB | REASON'")
        known.append(Known(*parts))
    return known


def jest_outcomes(report: Path) -> dict[str, str]:
    """``file :: full name`` to passed/failed/skipped, from ``jest --json``."""
    data = json.loads(report.read_text(encoding="utf-8"))
    outcomes: dict[str, str] = {}
    root = HERE / "centrifuge-js"
    for result in data["testResults"]:
        file = Path(result["name"]).resolve().relative_to(root).as_posix()
        if not result["assertionResults"] and result.get("status") == "failed":
            outcomes[f"{file}{JS_SEP}(the file failed to run)"] = "failed"
        for test in result["assertionResults"]:
            status = test["status"]
            outcome = status if status in ("passed", "failed") else "skipped"
            outcomes[f"{file}{JS_SEP}{test['fullName']}"] = outcome
    return outcomes


def junit_outcomes(report: Path) -> dict[str, str]:
    """``tests/file.py::Class::test`` to passed/failed/skipped, from JUnit XML."""
    outcomes: dict[str, str] = {}
    for case in ET.parse(report).iter("testcase"):
        classname = case.get("classname") or ""
        module, _, cls = classname.rpartition(".")
        if not cls[:1].isupper():  # a module-level test function: no class
            module, cls = classname, ""
        path = module.replace(".", "/") + ".py"
        name = "::".join(part for part in (path, cls, case.get("name") or "") if part)
        tags = {child.tag for child in case}
        if tags & {"failure", "error"}:
            outcomes[name] = "failed"
        elif "skipped" in tags:
            outcomes[name] = "skipped"
        else:
            outcomes[name] = "passed"
    return outcomes


def outcomes_of(logs: Path, suite: str) -> dict[str, str] | None:
    """The suite's outcomes from its report in ``logs``, or None if it wrote none."""
    if suite == "js":
        report = logs / "js.json"
        return jest_outcomes(report) if report.is_file() else None
    report = logs / f"{suite}.xml"
    return junit_outcomes(report) if report.is_file() else None


def check(logs: Path, suites: list[str], known: list[Known]) -> int:
    """Print each suite's counts, unknown failures and stale entries; 1 if any unknown."""
    status = 0
    for suite in suites:
        outcomes = outcomes_of(logs, suite)
        if outcomes is None:
            print(f"{suite}: no report (the suite did not run)")
            status = 1
            continue
        patterns = [k.pattern for k in known if k.suite == suite]
        counts = {
            o: sum(1 for v in outcomes.values() if v == o) for o in ("passed", "failed", "skipped")
        }
        failed = [t for t, o in outcomes.items() if o == "failed"]
        passed = [t for t, o in outcomes.items() if o == "passed"]
        unknown = [t for t in failed if not _matches(t, patterns)]
        stale = [p for p in patterns if _matches_any(passed, p) and not _matches_any(failed, p)]
        print(
            f"{suite}: {counts['passed']} passed, {counts['failed']} failed "
            f"({counts['failed'] - len(unknown)} known), {counts['skipped']} skipped"
        )
        for test in unknown:
            print(f"  NOT KNOWN TO FAIL: {test}")
        for pattern in stale:
            print(f"  known to fail but passed (update known-failures.txt): {pattern}")
        if unknown:
            status = 1
    return status


def _matches(test: str, patterns: list[str]) -> bool:
    return any(fnmatchcase(test, pattern) for pattern in patterns)


def _matches_any(tests: list[str], pattern: str) -> bool:
    return any(fnmatchcase(test, pattern) for test in tests)


def skip_args(suite: str, known: list[Known]) -> list[str]:
    """Runner arguments that leave out the suite's known failures."""
    patterns = [k.pattern for k in known if k.suite == suite]
    if suite != "js":
        return [f"--deselect={p}" for p in patterns]
    files = sorted({p.split(JS_SEP, 1)[0] for p in patterns if p.endswith(f"{JS_SEP}*")})
    names = [p.split(JS_SEP, 1)[1] for p in patterns if not p.endswith(f"{JS_SEP}*")]
    args = [f"--testPathIgnorePatterns={_glob_regex(f)}$" for f in files]
    if names:
        alternatives = "|".join(_glob_regex(name) for name in names)
        args.append(f"--testNamePattern=^(?!(?:{alternatives})$)")
    return args


def _glob_regex(glob: str) -> str:
    """A glob (``*``, ``?``) as a regular expression JavaScript reads the same way."""
    special = set("\\^$.|?*+()[]{}/")
    return "".join(
        ".*" if c == "*" else "." if c == "?" else "\\" + c if c in special else c for c in glob
    )


def main(argv: list[str]) -> int:
    known = read_known()
    if len(argv) == 2 and argv[0] == "--skip-args":
        print("\n".join(skip_args(argv[1], known)))
        return 0
    if len(argv) < 2 or any(s not in SUITES for s in argv[1:]):
        print(__doc__, file=sys.stderr)
        return 2
    return check(Path(argv[0]), argv[1:], known)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
