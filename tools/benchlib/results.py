"""A resumable, mergeable results file: cells keyed by their identifying fields.

Each cell is written as soon as it is measured (atomically), so a preset stopped at its time
limit keeps what it measured, and running it again skips the cells already there."""
import json
import os
import tempfile

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


def cell_key(cell, key_fields):
    return tuple(str(cell.get(k)) for k in key_fields)


class ResultStore:
    def __init__(self, path, environment):
        self.path = path
        self.doc = {"schema": SCHEMA, "environment": environment, "sections": {}}
        if os.path.exists(path):
            with open(path) as f:
                old = json.load(f)
            if old.get("schema") != SCHEMA:
                raise ValueError(f"{path}: not a {SCHEMA} results file")
            self.doc["sections"] = old.get("sections", {})

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
        directory = os.path.dirname(os.path.abspath(self.path))
        fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(self.doc, f, indent=1)
        os.replace(tmp, self.path)


def merge(paths, out):
    """Merge several results files (later files win per cell) into out."""
    merged = None
    for p in paths:
        with open(p) as f:
            doc = json.load(f)
        if merged is None:
            merged = doc
            continue
        for section, cells in doc["sections"].items():
            keys = SECTION_KEYS[section]
            new = {cell_key(c, keys) for c in cells}
            old = [c for c in merged["sections"].get(section, []) if cell_key(c, keys) not in new]
            merged["sections"][section] = old + cells
    with open(out, "w") as f:
        json.dump(merged, f, indent=1)
