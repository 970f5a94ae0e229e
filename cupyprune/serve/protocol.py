"""The Open Inference Protocol v2 (KServe, Triton) on the wire: JSON tensors and the
binary-data extension, decoded to NumPy arrays and encoded back.

A request is JSON, `{"id"?, "parameters"?, "inputs": [tensor...], "outputs"?: [...]}`, each input
tensor `{"name", "shape", "datatype", "data"}` with `data` row-major (flat or nested). With the
binary-data extension the body is that JSON (its length in the `Inference-Header-Content-Length`
header) followed by raw little-endian tensor bytes, in input order, for every input whose
`parameters.binary_data_size` is set; outputs come back the same way where the request asks
(`parameters.binary_data_output`, or `parameters.binary_data` on a requested output).
Every defect of a request is a ProtocolError (an InputError: the server answers 400).
"""
import json
import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError

HEADER_LENGTH = "inference-header-content-length"     # the binary extension's header
BINARY_SIZE = "binary_data_size"

# OIP datatype <-> NumPy dtype (little-endian on the wire); BYTES and BF16 are not served
DATATYPES = {"BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
             "UINT64": np.uint64, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32,
             "INT64": np.int64, "FP16": np.float16, "FP32": np.float32, "FP64": np.float64}
_BY_DTYPE = {np.dtype(t): name for name, t in DATATYPES.items()}
# JSON numbers a datatype accepts, by NumPy kind of the parsed list: no float into an integer
_JSON_KINDS = {"b": "b", "u": "iu", "i": "iu", "f": "iuf"}


class ProtocolError(InputError):
    """A request that does not follow the protocol: answered 400 with its message."""


@dataclass
class InferRequest:
    inputs: dict                      # name -> NumPy array
    id: object = None                 # echoed in the response
    outputs: list = None              # requested output names, or None for all
    binary_outputs: set = field(default_factory=set)    # names to send as binary data
    binary_default: bool = False      # request-level binary_data_output


def datatype_of(dtype):
    """A NumPy dtype -> its OIP datatype name."""
    name = _BY_DTYPE.get(np.dtype(dtype))
    if name is None:
        raise ProtocolError(f"dtype {np.dtype(dtype)} has no Open Inference Protocol datatype")
    return name


def _field(obj, key, kind, where):
    value = obj.get(key)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise ProtocolError(f"{where}: '{key}' must be a {kind.__name__}, got {value!r:.60}")
    return value


def _parameters(obj, where):
    params = obj.get("parameters", {})
    if not isinstance(params, dict):
        raise ProtocolError(f"{where}: 'parameters' must be a JSON object")
    return params


def _shape(tensor, where):
    shape = _field(tensor, "shape", list, where)
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise ProtocolError(f"{where}: shape {shape!r:.80} must be a list of non-negative ints")
    return shape


def _from_json(data, dtype, count, where):
    """A JSON `data` list (flat or nested, row-major) -> flat array of `count` values."""
    try:
        values = np.asarray(data)
    except ValueError as e:                     # a ragged nesting
        raise ProtocolError(f"{where}: 'data' is not a regular array ({e})") from None
    if values.size == 0 and count == 0:
        return np.zeros(0, dtype)
    allowed = _JSON_KINDS[np.dtype(dtype).kind]
    if values.dtype.kind not in allowed:
        got = {"U": "string", "S": "string", "O": "mixed", "f": "floating-point",
               "b": "boolean"}.get(values.dtype.kind, str(values.dtype))
        raise ProtocolError(f"{where}: 'data' holds {got} values, not {datatype_of(dtype)} ones")
    if values.size != count:
        raise ProtocolError(f"{where}: 'data' holds {values.size} values, the shape needs {count}")
    return values.ravel().astype(dtype)


def _from_binary(blob, offset, size, dtype, count, where):
    """`size` bytes of `blob` at `offset` -> flat array of `count` values (read-only view)."""
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ProtocolError(f"{where}: '{BINARY_SIZE}' must be a non-negative int")
    need = count * np.dtype(dtype).itemsize
    if size != need:
        raise ProtocolError(f"{where}: {size} bytes of binary data, the shape and datatype need "
                            f"{need}")
    if offset + size > len(blob):
        raise ProtocolError(f"{where}: the body ends before its {size} bytes of binary data")
    return np.frombuffer(blob, dtype=np.dtype(dtype).newbyteorder("<"), count=count,
                         offset=offset)


def _input_tensor(tensor, i, blob, offset):
    """One input tensor object -> (name, array, binary bytes consumed)."""
    if not isinstance(tensor, dict):
        raise ProtocolError(f"inputs[{i}] must be a JSON object")
    name = _field(tensor, "name", str, f"inputs[{i}]")
    where = f"input {name!r}"
    shape = _shape(tensor, where)
    datatype = _field(tensor, "datatype", str, where)
    if datatype not in DATATYPES:
        raise ProtocolError(f"{where}: datatype {datatype!r:.40} is not served (one of "
                            f"{', '.join(DATATYPES)})")
    dtype, count = DATATYPES[datatype], math.prod(shape)
    size = _parameters(tensor, where).get(BINARY_SIZE)
    if size is not None:
        if "data" in tensor:
            raise ProtocolError(f"{where}: both 'data' and '{BINARY_SIZE}' given")
        flat = _from_binary(blob, offset, size, dtype, count, where)
        return name, flat.reshape(shape), size
    if "data" not in tensor:
        raise ProtocolError(f"{where}: no 'data' and no '{BINARY_SIZE}'")
    return name, _from_json(tensor["data"], dtype, count, where).reshape(shape), 0


def _requested_outputs(request):
    """-> (names or None, names asked as binary)."""
    outputs = request.get("outputs")
    if outputs is None:
        return None, set()
    if not isinstance(outputs, list):
        raise ProtocolError("'outputs' must be a list")
    names, binary = [], set()
    for i, out in enumerate(outputs):
        if not isinstance(out, dict):
            raise ProtocolError(f"outputs[{i}] must be a JSON object")
        name = _field(out, "name", str, f"outputs[{i}]")
        names.append(name)
        if _parameters(out, f"output {name!r}").get("binary_data"):
            binary.add(name)
    return names, binary


def decode_request(body, header_length=None):
    """Request body bytes (and the binary extension's header value, or None) -> InferRequest."""
    if header_length is not None:
        try:
            header_length = int(header_length)
        except ValueError:
            raise ProtocolError(f"header Inference-Header-Content-Length {header_length!r:.40} "
                                f"is not an integer") from None
        if not 0 <= header_length <= len(body):
            raise ProtocolError(f"Inference-Header-Content-Length {header_length} is outside "
                                f"the body's {len(body)} bytes")
    else:
        header_length = len(body)
    try:
        request = json.loads(body[:header_length])
    except (ValueError, UnicodeDecodeError) as e:
        raise ProtocolError(f"the body is not valid JSON ({e})") from None
    if not isinstance(request, dict):
        raise ProtocolError("the body must be a JSON object with 'inputs'")
    tensors = _field(request, "inputs", list, "request")
    blob, offset, inputs = memoryview(body)[header_length:], 0, {}
    for i, tensor in enumerate(tensors):
        name, array, used = _input_tensor(tensor, i, blob, offset)
        if name in inputs:
            raise ProtocolError(f"input {name!r} is given twice")
        inputs[name], offset = array, offset + used
    if offset != len(blob):
        raise ProtocolError(f"{len(blob) - offset} bytes of binary data belong to no input")
    names, binary = _requested_outputs(request)
    params = _parameters(request, "request")
    return InferRequest(inputs=inputs, id=request.get("id"), outputs=names, binary_outputs=binary,
                        binary_default=bool(params.get("binary_data_output")))


def encode_response(model_name, request, outputs):
    """outputs (name -> NumPy array, in the order to send) -> (body bytes, headers)."""
    tensors, chunks = [], []
    for name, array in outputs.items():
        array = np.ascontiguousarray(array)
        tensor = {"name": name, "datatype": datatype_of(array.dtype), "shape": list(array.shape)}
        if request.binary_default or name in request.binary_outputs:
            raw = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
            tensor["parameters"] = {BINARY_SIZE: len(raw)}
            chunks.append(raw)
        else:
            tensor["data"] = array.ravel().tolist()
        tensors.append(tensor)
    response = {"model_name": model_name, "outputs": tensors}
    if request.id is not None:
        response["id"] = request.id
    head = json.dumps(response, separators=(",", ":")).encode()
    if not chunks:
        return head, {"content-type": "application/json"}
    return b"".join([head] + chunks), {"content-type": "application/octet-stream",
                                       HEADER_LENGTH: str(len(head))}
