"""The README's results table (and the same block in docs/BENCHMARKS.md) is exactly what
tools/readme_table.py makes from the committed results, and the tool computes its ratios from
the cells (synthetic cells here, checked by hand)."""
import json

import pytest

import readme_table
from conftest import ROOT
from oneline import UsageError


@pytest.mark.parametrize("doc", ["README.md", "docs/BENCHMARKS.md"])
def test_the_docs_hold_the_tools_table(doc):
    with open(f"{ROOT}/{doc}", encoding="utf-8") as f:
        text = f.read()
    block = readme_table.render()
    assert block in text, f"{doc} is stale: run python tools/readme_table.py --write {doc}"
    assert readme_table.replace_block(text, block) == text
    assert block.count("\n| ") >= 2 + 8                            # header, rule, >= 8 models


def test_rows_from_synthetic_cells(tmp_path):
    cells = [{"model": "vgg16_bn-cifar10", "precision": "fp32", "batch": 64, "compile_s": 1,
              "torch_compile_ms": 3.0, "torch_eager_ms": 4.0, "ours_group_ms": 2.0},
             {"model": "bert-base-qqp", "precision": "fp16", "batch": 64, "compile_s": 1,
              "torch_compile_ms": 1.1, "torch_compile_graphs_ms": 0.8, "torch_eager_ms": 2.0,
              "ours_group_ms": 0.5}]
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"schema": "cupyprune.paper_bench/1",
                                "environment": {"gpu": "G", "torch": "T", "cupy": "C"},
                                "sections": {"compile": cells}}))
    block = readme_table.render([str(path)])
    rows = [line for line in block.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[1:] == [                                              # fp16 first
        "| bert-base-qqp | 128 tokens | fp16 | 64 | 0.500 | 2.000 | 1.100 | 0.800 | 4.00x | "
        "2.20x | 1.60x |",
        "| vgg16_bn-cifar10 | 32x32 | fp32 | 64 | 2.000 | 4.000 | 3.000 | - | 2.00x | 1.50x | - |"]
    assert "G, PyTorch T, CuPy C;" in block


def test_write_needs_the_markers_once(tmp_path):
    with pytest.raises(UsageError, match="must hold the lines"):
        readme_table.replace_block("no markers here", "x")
    text = f"a\n{readme_table.BEGIN}\nold\n{readme_table.END}\nb\n"
    assert readme_table.replace_block(text, "NEW") == "a\nNEW\nb\n"
    readme = tmp_path / "R.md"
    readme.write_text("nothing")
    assert readme_table.main(["--write", str(readme)]) == 2
    assert readme.read_text() == "nothing"
