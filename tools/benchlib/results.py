"""A resumable, mergeable results file: cells keyed by their identifying fields.

Each cell is written as soon as it is measured (atomically), so a preset stopped at its time
limit keeps what it measured, and running it again skips the cells already there."""
import json
import os

from cupyprune.atomic import atomic_path

SCHEMA = "cupyprune.paper_bench/1"
# the fields that identify a cell in each section
SECTION_KEYS = {
    "layers": ("layer", "impl", "precision", "keep", "graph"),
    "steps": ("layer", "step", "precision", "keep"),
    "models": ("model", "shape", "impl", "pattern", "keep", "precision", "batch"),
    "overhead": ("model", "precision", "batch", "keep"),
    "split": ("model", "precision", "batch", "keep"),
    "memory": ("model", "precision", "batch", "impl"),
    "profile": ("model", "precision", "batch", "impl"),
    "compile": ("model", "precision", "batch"),
    "fused": ("model", "precision", "batch", "keep"),
}


class ResultsError(ValueError):
    """A results file that cannot be read: one line, naming the file."""


# what the report tools refuse, each as one line (report_error)
REPORT_ERRORS = (ResultsError, KeyError, OSError)


def report_error(e):
    """A results or usage problem -> its one-line message: a KeyError is a cell without a field,
    an OSError names its file."""
    if isinstance(e, KeyError):
        return f"a results cell lacks the field {e}"
    if isinstance(e, OSError):
        return f"{e.filename or ''}: {e.strerror or e}"
    return str(e)


def read_results(path):
    """A results file -> its document, checked: a JSON object of this schema whose sections are
    known and hold lists of objects."""
    try:
        with open(path) as f:
            doc = json.load(f)
    except OSError as e:
        raise ResultsError(f"cannot read {path}: {e.strerror or e}") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise ResultsError(f"{path} is not JSON: {e}") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise ResultsError(f"{path} is not a {SCHEMA} results file")
    sections = doc.get("sections")
    if not isinstance(sections, dict):
        raise ResultsError(f"{path} has no 'sections' object")
    for name, cells in sections.items():
        if name not in SECTION_KEYS:
            raise ResultsError(f"{path}: unknown section {name!r} (one of "
                               f"{', '.join(SECTION_KEYS)})")
        if not isinstance(cells, list) or not all(isinstance(c, dict) for c in cells):
            raise ResultsError(f"{path}: section {name!r} must be a list of objects")
        for cell in cells:
            for field, value in cell.items():
                if field.endswith(("_ms", "_us", "_s")) and value is not None and (
                        isinstance(value, bool) or not isinstance(value, (int, float))):
                    raise ResultsError(f"{path}: section {name!r}: {field} is {value!r}, not a "
                                       f"number")
    if not isinstance(doc.get("environment", {}), dict):
        raise ResultsError(f"{path}: 'environment' must be a JSON object")
    return doc


def write_json(doc, path):
    """doc -> path, whole or not at all."""
    with atomic_path(path, prefix=".results-") as tmp:
        with open(tmp, "w") as f:
            json.dump(doc, f, indent=1)


def cell_key(cell, key_fields):
    return tuple(str(cell.get(k)) for k in key_fields)


class ResultStore:
    def __init__(self, path, environment):
        self.path = path
        self.doc = {"schema": SCHEMA, "environment": environment, "sections": {}}
        if os.path.exists(path):
            self.doc["sections"] = read_results(path)["sections"]

    def has(self, section, cell):
        key_fields = SECTION_KEYS[section]
        want = cell_key(cell, key_fields)
        return any(cell_key(c, key_fields) == want for c in self.doc["sections"].get(section, []))

    def add(self, section, cell):
        key_fields = SECTION_KEYS[section]
        cells = self.doc["sections"].setdefault(section, [])
        want = cell_key(cell, key_fields)
        cells[:] = [c for c in cells if cell_key(c, key_fields) != want] + [cell]
        self.save()

    def save(self):
        write_json(self.doc, self.path)


def merge(paths, out):
    """Merge several results files (later files win per cell) into out."""
    merged = None
    for p in paths:
        doc = read_results(p)
        if merged is None:
            merged = doc
            continue
        for section, cells in doc["sections"].items():
            keys = SECTION_KEYS[section]
            new = {cell_key(c, keys) for c in cells}
            old = [c for c in merged["sections"].get(section, []) if cell_key(c, keys) not in new]
            merged["sections"][section] = old + cells
    write_json(merged, out)
