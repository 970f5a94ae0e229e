"""Serving a token model (a small Hugging Face BERT, exported): requests of different sequence
lengths and with optional inputs left out batch only with their like and get the model's own
answers; bad ids, masks and shapes answer 400 before they join a batch."""
import asyncio
import json

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("starlette")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
import cupyprune  # noqa: E402
from serve_helpers import serving  # noqa: E402
from cupyprune.serve import ServeConfig  # noqa: E402
from test_parity_transformers import SMALL_BERT, build  # noqa: E402

INFER = "/v2/models/bert/infer"
TIMEOUT_S = 60


@pytest.fixture(scope="module")
def bert_file(tmp_path_factory):
    torch.manual_seed(0)
    config = transformers.BertConfig(**SMALL_BERT, attn_implementation="eager")
    return build(transformers.BertForSequenceClassification, config, True,
                 tmp_path_factory.mktemp("bert"))[1]


@pytest.fixture(scope="module")
def server(bert_file):
    config = ServeConfig(models={"bert": bert_file}, device="cpu", max_batch=16,
                         max_delay_ms=5.0)
    with serving(config) as (url, app):
        yield url


def _body(inputs, datatypes=None):
    datatypes = datatypes or {}
    return json.dumps({"inputs": [
        {"name": k, "shape": list(v.shape), "datatype": datatypes.get(k, "INT64"),
         "data": v.ravel().tolist()} for k, v in inputs.items()]}).encode()


def _request(rng, rows, seq, full):
    ids = rng.integers(0, SMALL_BERT["vocab_size"], size=(rows, seq))
    if not full:
        return {"input_ids": ids}
    mask = np.ones((rows, seq), np.int64)
    mask[0, seq - int(rng.integers(1, seq // 2 + 1)):] = 0
    types = np.zeros((rows, seq), np.int64)
    types[:, seq // 2:] = 1
    return {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}


@pytest.mark.slow
def test_mixed_lengths_concurrently(server, bert_file, rng):
    reference = cupyprune.load(bert_file, device="cpu")
    requests = [_request(rng, int(rng.integers(1, 4)), int(rng.choice([6, 9])),
                         bool(rng.integers(2))) for _ in range(48)]

    async def main():
        async with httpx.AsyncClient(base_url=server, timeout=TIMEOUT_S) as client:
            return await asyncio.wait_for(asyncio.gather(
                *(client.post(INFER, content=_body(r)) for r in requests)), 300)

    for inputs, answer in zip(requests, asyncio.run(main())):
        assert answer.status_code == 200, answer.text
        out = answer.json()["outputs"][0]
        got = np.asarray(out["data"], np.float32).reshape(out["shape"])
        ref = reference(**inputs)
        assert got.shape == ref.shape
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_int32_ids_are_served_as_int64(server, bert_file, rng):
    inputs = _request(rng, 2, 7, True)
    r = httpx.post(server + INFER, content=_body(inputs, {"input_ids": "INT32"}),
                   timeout=TIMEOUT_S)
    assert r.status_code == 200
    ref = cupyprune.load(bert_file, device="cpu")(**inputs)
    np.testing.assert_allclose(np.asarray(r.json()["outputs"][0]["data"]).reshape(ref.shape),
                               ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def _bad(rng, what):
    inputs = _request(rng, 2, 6, True)
    types = {}
    if what == "id":
        inputs["input_ids"][1, 2] = SMALL_BERT["vocab_size"]
    elif what == "negative id":
        inputs["input_ids"][0, 0] = -1
    elif what == "token type":
        inputs["token_type_ids"][0, 1] = 2
    elif what == "mask value":
        inputs["attention_mask"][1, 1] = 3
    elif what == "mask shape":
        inputs["attention_mask"] = inputs["attention_mask"][:, :5]
    elif what == "rows":
        inputs["token_type_ids"] = inputs["token_type_ids"][:1]
    elif what == "float ids":
        types["input_ids"] = "FP32"
    elif what == "too long":
        inputs = _request(rng, 1, SMALL_BERT["max_position_embeddings"] + 1, False)
    return _body(inputs, types)


@pytest.mark.parametrize("what, message", [
    ("id", f"token id {SMALL_BERT['vocab_size']} is outside"),
    ("negative id", "token id -1 is outside"),
    ("token type", "token type id 2 is outside"),
    ("mask value", "attention mask value 3"),
    ("mask shape", "token inputs differ in shape"),
    ("rows", "has 1 rows"),
    ("float ids", "must hold integers"),
    ("too long", "longer than the"),
])
def test_bad_token_inputs_answer_400(server, rng, what, message):
    r = httpx.post(server + INFER, content=_bad(rng, what), timeout=TIMEOUT_S)
    assert r.status_code == 400 and message in r.json()["error"], r.text
