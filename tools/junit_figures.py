"""Tabulate the figures that tests record with pytest's `record_property`, from a junit XML file.

    python -m pytest -q -m gpu tests/test_patterns_end_to_end.py --junitxml=J.xml
    python tools/junit_figures.py J.xml [--out figures.md]

One Markdown row per (test, property): the parity tests record each cell's
max|ours - torch| / max|torch|, so this is the table of errors a closing note or a doc cites.
Test outcomes are given too, so a table is never mistaken for a passing run.
"""
import os
import sys
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from cupyprune.atomic import atomic_path  # noqa: E402
from oneline import OneLineParser, UsageError, check_out, run_tool  # noqa: E402


def rows(junit_path):
    """(test id, outcome, property name, value) for every recorded property."""
    for case in ET.parse(junit_path).getroot().iter("testcase"):
        outcome = "passed"
        for tag in ("failure", "error", "skipped"):
            if case.find(tag) is not None:
                outcome = {"skipped": "skipped", "error": "error"}.get(tag, "failed")
        test = case.get("name", "?")
        for prop in case.iter("property"):
            yield test, outcome, prop.get("name"), prop.get("value")


def markdown(junit_path):
    lines = ["| test | outcome | figure | value |", "|---|---|---|---|"]
    lines += [f"| {t} | {o} | {n} | {v} |" for t, o, n, v in rows(junit_path)]
    return "\n".join(lines) + "\n"


def main(argv=None):
    """The CLI; returns the exit code (0, or 2 after printing `error: ...` on stderr)."""
    p = OneLineParser(prog="tools/junit_figures.py", description=__doc__.splitlines()[0])
    p.add_argument("junit", help="the XML file written by pytest --junitxml")
    p.add_argument("--out", help="write the Markdown table here (default: stdout)")
    try:
        args = p.parse_args(argv)
        if args.out is not None:
            check_out(args.out)
        text = markdown(args.junit)
        if args.out is not None:
            with atomic_path(args.out, prefix=".junit-figures-") as tmp:
                with open(tmp, "w") as f:
                    f.write(text)
        else:
            sys.stdout.write(text)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ET.ParseError as e:
        print(f"error: {args.junit} is not junit XML: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {e.filename or args.junit}: {e.strerror or e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
