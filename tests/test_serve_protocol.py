"""The Open Inference Protocol v2 codec: JSON and binary-data tensors in, out, and every
malformed request refused with a ProtocolError (the server's 400)."""
import json

import numpy as np
import pytest

pytest.importorskip("starlette")
from cupyprune.serve.protocol import (ProtocolError, decode_request,  # noqa: E402
                                      encode_response)


def test_json_tensors_nested_or_flat(rng):
    x = rng.standard_normal((2, 3)).astype(np.float32)
    ids = rng.integers(0, 100, size=(2, 4))
    body = json.dumps({"id": "r1", "inputs": [
        {"name": "x", "shape": [2, 3], "datatype": "FP32", "data": x.tolist()},        # nested
        {"name": "ids", "shape": [2, 4], "datatype": "INT64",
         "data": ids.ravel().tolist()}]}).encode()                                      # flat
    request = decode_request(body)
    assert request.id == "r1" and request.outputs is None
    assert request.inputs["x"].dtype == np.float32 and request.inputs["x"].shape == (2, 3)
    np.testing.assert_array_equal(request.inputs["x"], x)
    assert request.inputs["ids"].dtype == np.int64
    np.testing.assert_array_equal(request.inputs["ids"], ids)


def test_binary_tensors_after_the_json_header(rng):
    x = rng.standard_normal((2, 1, 8, 8)).astype(np.float32)
    mask = rng.integers(0, 2, size=(2, 5)).astype(np.int32)
    head = json.dumps({"inputs": [
        {"name": "x", "shape": [2, 1, 8, 8], "datatype": "FP32",
         "parameters": {"binary_data_size": x.nbytes}},
        {"name": "m", "shape": [2, 5], "datatype": "INT32",
         "parameters": {"binary_data_size": mask.nbytes}}],
        "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}).encode()
    body = head + x.astype("<f4").tobytes() + mask.astype("<i4").tobytes()
    request = decode_request(body, str(len(head)))
    np.testing.assert_array_equal(request.inputs["x"], x)
    np.testing.assert_array_equal(request.inputs["m"], mask)
    assert request.outputs == ["y"] and request.binary_outputs == {"y"}


def test_response_json_and_binary(rng):
    y = rng.standard_normal((3, 4)).astype(np.float32)
    z = rng.standard_normal((3,)).astype(np.float16)
    request = decode_request(json.dumps({"id": 7, "inputs": [], "outputs": [
        {"name": "z", "parameters": {"binary_data": True}}, {"name": "y"}]}).encode())
    body, headers = encode_response("m", request, {"y": y, "z": z})
    length = int(headers["inference-header-content-length"])
    head = json.loads(body[:length])
    assert head["model_name"] == "m" and head["id"] == 7
    by_name = {t["name"]: t for t in head["outputs"]}
    assert by_name["y"]["datatype"] == "FP32" and by_name["y"]["shape"] == [3, 4]
    np.testing.assert_array_equal(np.asarray(by_name["y"]["data"], np.float32).reshape(3, 4), y)
    assert by_name["z"]["datatype"] == "FP16"
    assert by_name["z"]["parameters"]["binary_data_size"] == z.nbytes == len(body) - length
    np.testing.assert_array_equal(np.frombuffer(body[length:], "<f2"), z)


def test_request_level_binary_output(rng):
    y = rng.standard_normal((2, 2)).astype(np.float32)
    request = decode_request(b'{"inputs": [], "parameters": {"binary_data_output": true}}')
    body, headers = encode_response("m", request, {"y": y})
    assert headers["content-type"] == "application/octet-stream"
    np.testing.assert_array_equal(
        np.frombuffer(body[int(headers["inference-header-content-length"]):], "<f4"), y.ravel())


def _tensor(**fields):
    base = {"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1.0, 2.0]}
    base.update(fields)
    return json.dumps({"inputs": [base]}).encode()


@pytest.mark.parametrize("body, header, message", [
    (b"{not json", None, "not valid JSON"),
    (b"[1, 2]", None, "JSON object"),
    (b'{"outputs": []}', None, "'inputs' must be a list"),
    (_tensor(datatype="FLOAT"), None, "datatype 'FLOAT' is not served"),
    (_tensor(datatype="BYTES"), None, "is not served"),
    (_tensor(shape=[1, 3]), None, "holds 2 values, the shape needs 3"),
    (_tensor(shape=[1, -2]), None, "non-negative ints"),
    (_tensor(shape="12"), None, "'shape' must be a list"),
    (_tensor(data=[[1.0], [2.0, 3.0]]), None, "not a regular array"),
    (_tensor(data=["a", "b"]), None, "string values"),
    (_tensor(datatype="INT64", data=[1.5, 2.0]), None, "floating-point values, not INT64"),
    (_tensor(data=None, parameters={}), None, "holds"),
    (_tensor(name=3), None, "'name' must be a str"),
    (_tensor(parameters={"binary_data_size": 8}), None, "both 'data' and"),
    (_tensor(parameters=[1]), None, "'parameters' must be a JSON object"),
    (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32"}]}', None, "no 'data'"),
    (json.dumps({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]},
                            {"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}
                ).encode(), None, "given twice"),
    (b'{"inputs": []}', "12x", "is not an integer"),
    (b'{"inputs": []}', "999", "outside the body"),
    (b'{"inputs": []}', "-1", "outside the body"),
    (b'{"inputs": []}xyz', "14", "3 bytes of binary data belong to no input"),
    (b'{"inputs": [], "outputs": {"name": "y"}}', None, "'outputs' must be a list"),
])
def test_malformed_requests(body, header, message):
    with pytest.raises(ProtocolError, match=message):
        decode_request(body, header)


def test_binary_size_must_match_shape_and_body():
    head = json.dumps({"inputs": [{"name": "x", "shape": [2], "datatype": "FP32",
                                   "parameters": {"binary_data_size": 4}}]}).encode()
    with pytest.raises(ProtocolError, match="4 bytes of binary data, the shape and datatype "
                                            "need 8"):
        decode_request(head + b"\0" * 4, str(len(head)))
    head = json.dumps({"inputs": [{"name": "x", "shape": [2], "datatype": "FP32",
                                   "parameters": {"binary_data_size": 8}}]}).encode()
    with pytest.raises(ProtocolError, match="ends before"):
        decode_request(head + b"\0" * 4, str(len(head)))
