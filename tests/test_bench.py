"""`cupyprune bench` on the CPU (NumPy): the JSON/CSV schema and that every requested cell is
there. Timings are not asserted: they live in the benchmark's committed results."""
import csv
import json

from click.testing import CliRunner

from cupyprune.bench import CELL_KEYS, SCHEMA
from cupyprune.cli.main import cli
from tiny_models import write_tiny


def test_bench_json_and_csv(rng, tmp_path):
    models = []
    for name in ("a", "b"):
        p = tmp_path / f"{name}.safetensors"
        write_tiny(p, rng)
        models.append(str(p))
    out_json, out_csv = tmp_path / "r.json", tmp_path / "r.csv"
    args = ["bench", *models, "--path", "dense", "--path", "group", "--path", "csr",
            "--batch", "3", "--repeat", "2", "--warmup", "1", "--device", "cpu",
            "--json", str(out_json), "--csv", str(out_csv)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(out_json.read_text())
    assert doc["schema"] == SCHEMA
    assert doc["environment"]["device"] == "cpu"
    assert doc["settings"] == {"batch": 3, "repeat": 2, "warmup": 1}
    cells = doc["cells"]
    wanted = {(m, p) for m in ("a.safetensors", "b.safetensors") for p in ("dense", "group", "csr")}
    assert {(c["model"], c["path"]) for c in cells} == wanted
    for c in cells:
        assert set(c) == set(CELL_KEYS)
        assert c["runs"] == 2 and c["batch"] == 3 and c["precision"] == "fp32"
        assert 0 < c["min_ms"] <= c["median_ms"] <= c["p90_ms"]
        forced = c["path"]
        assert forced in c["paths_used"] or forced == "auto"
    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) == len(cells) and set(rows[0]) == set(CELL_KEYS)
    assert "median ms" in result.output


def test_bench_bad_model(tmp_path):
    result = CliRunner().invoke(cli, ["bench", str(tmp_path / "none.safetensors")])
    assert result.exit_code == 2 and "no such file" in result.output
