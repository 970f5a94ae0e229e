"""Tabulate the figures that tests record with pytest's `record_property`, from a junit XML file.

    python -m pytest -q -m gpu tests/test_patterns_end_to_end.py --junitxml=J.xml
    python tools/junit_figures.py J.xml [--out figures.md]

One Markdown row per (test, property): the parity tests record each cell's
max|ours - torch| / max|torch|, so this is the table of errors a closing note or a doc cites.
Test outcomes are given too, so a table is never mistaken for a passing run.
"""
import argparse
import sys
import xml.etree.ElementTree as ET


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
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("junit", help="the XML file written by pytest --junitxml")
    p.add_argument("--out", help="write the Markdown table here (default: stdout)")
    args = p.parse_args(argv)
    try:
        text = markdown(args.junit)
    except (OSError, ET.ParseError) as e:
        print(f"error: cannot read {args.junit}: {e}", file=sys.stderr)
        return 2
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
