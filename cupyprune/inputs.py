"""Model inputs: checking arrays against the file's input spec, and building sample inputs.

Image inputs arrive NCHW (as in PyTorch) and are handed to the graph channels-last."""
import numpy as np

from .errors import InputError, ModelFileError

IMAGE, FEATURES, TOKEN_IDS, TOKEN_TYPE_IDS, ATTENTION_MASK = (
    "image", "features", "token_ids", "token_type_ids", "attention_mask")
KINDS = (IMAGE, FEATURES, TOKEN_IDS, TOKEN_TYPE_IDS, ATTENTION_MASK)
SAMPLE_SEQUENCE = 16    # tokens in a sample sequence when the file ships no sample
# dimensions an input of each kind has: images (N, C, H, W), ids and masks (N, T)
RANKS = {IMAGE: 4, TOKEN_IDS: 2, TOKEN_TYPE_IDS: 2, ATTENTION_MASK: 2}


def _spec_entry_error(spec, i):
    """The first defect of one input_spec entry, or None."""
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        return f"entry #{i} must be a JSON object with a string 'name'"
    name, shape, kind = spec["name"], spec.get("shape"), spec.get("kind", IMAGE)
    if not isinstance(shape, list) or not shape or not all(
            d is None or (isinstance(d, int) and not isinstance(d, bool) and d > 0) for d in shape):
        return f"input {name!r} has shape {shape!r}: expected a list of positive ints or null"
    if kind not in KINDS:
        return f"input {name!r} has unknown kind {kind!r} (one of {', '.join(KINDS)})"
    if kind in RANKS and len(shape) != RANKS[kind]:
        return (f"input {name!r} of kind {kind} has shape {shape!r}: expected "
                f"{RANKS[kind]} dimensions")
    longest = spec.get("max_length")
    if longest is not None and not (isinstance(longest, int) and not isinstance(longest, bool)
                                    and longest > 0):
        return f"input {name!r} has max_length {longest!r}: expected a positive integer"
    dtype = spec.get("dtype", "float32")
    try:
        numeric = isinstance(dtype, str) and np.dtype(dtype).kind in "fiub"
    except (TypeError, ValueError):     # not a dtype name; a nested structure NumPy refuses
        numeric = False
    if not numeric:
        return f"input {name!r} has dtype {dtype!r}: expected the name of a numeric dtype"
    vocab = spec.get("vocab_size")
    if (kind == TOKEN_IDS or vocab is not None) and not (
            isinstance(vocab, int) and not isinstance(vocab, bool) and vocab > 0):
        return f"input {name!r} has vocab_size {vocab!r}: expected a positive integer"
    return None


def check_input_spec(input_spec, graph_inputs):
    """The file's input_spec against the graph: one well-formed entry per graph input."""
    for i, spec in enumerate(input_spec):
        problem = _spec_entry_error(spec, i)
        if problem:
            raise ModelFileError(f"input_spec: {problem}")
    names = [s["name"] for s in input_spec]
    if sorted(names) != sorted(graph_inputs):
        raise ModelFileError(f"input_spec names {', '.join(names) or 'nothing'}, but the graph's "
                             f"inputs are {', '.join(graph_inputs)}")


def _check_shape(spec, arr):
    want = spec["shape"]
    name = spec["name"]
    if arr.ndim != len(want) or any(w is not None and w != a for w, a in zip(want, arr.shape)):
        shown = "(" + ", ".join("N" if w is None else str(w) for w in want) + ")"
        layout = f" {spec['layout']}" if spec.get("layout") else ""
        raise InputError(f"input {name!r} has shape {tuple(arr.shape)}, expected {shown}{layout}")


def _check_length(spec, ids):
    longest = spec.get("max_length")
    if longest is not None and ids.ndim == 2 and ids.shape[1] > longest:
        raise InputError(f"input {spec['name']!r}: sequence of {ids.shape[1]} tokens is longer "
                         f"than the {longest} positions the model was trained for")


def check_ids(ids, rows, what, table, where=""):
    """Integer ids (NumPy or CuPy) must index a table of `rows` rows: the first bad id is an
    InputError, `where` its prefix."""
    bad = (ids < 0) | (ids >= rows)
    if bool(bad.any()):
        first = int(ids[bad].ravel()[0])
        raise InputError(f"{where}{what} {first} is outside [0, {rows}): the model has {rows} "
                         f"{table}")


def _check_spec_ids(spec, ids):
    what, table = (("token id", "tokens in its vocabulary") if spec.get("kind") == TOKEN_IDS
                   else ("token type id", "token types"))
    check_ids(ids, spec["vocab_size"], what, table, where=f"input {spec['name']!r}: ")


class IdRangeCheck:
    """The range check of one call's id inputs against their specs' vocab_size. Ids from NumPy
    are checked on the host at once; ids already on the device are counted by one small kernel
    each (`start`), and `finish()` waits for those counts only. The engine starts them after it
    has queued the forward pass (lookups of unchecked ids stay inside the table: CuPy's take
    wraps them), then raises before any output is returned."""

    def __init__(self, inputs):
        todo = [(spec, ids) for spec, ids in inputs if spec.get("vocab_size") is not None]
        self._on_device = [(spec, ids) for spec, ids in todo if not isinstance(ids, np.ndarray)]
        for spec, ids in todo:
            if isinstance(ids, np.ndarray):
                _check_spec_ids(spec, ids)
        self._pending = None

    def start(self, ready=None):
        """Queue the device ids' counts: on the current stream, or, given `ready` (an event
        recorded where the ids are ready), on a side stream that waits for that event only."""
        if self._on_device and self._pending is None:
            from .gpu.checks import start_count_outside
            self._pending = start_count_outside([ids for _, ids in self._on_device],
                                                [spec["vocab_size"] for spec, _ in self._on_device],
                                                ready=ready)

    def finish(self):
        """An InputError for the first id outside its table, if any (counted now if `start`
        was not called)."""
        if not self._on_device:
            return
        self.start()
        outside_counts, self._pending = self._pending.result(), None
        for (spec, ids), outside in zip(self._on_device, outside_counts):
            if outside:
                _check_spec_ids(spec, ids)


def check_input(spec, arr):
    """One input array (NumPy or CuPy), checked against its spec (all but the id ranges:
    IdRangeCheck); returned as given."""
    name, kind = spec["name"], spec.get("kind", IMAGE)
    if not hasattr(arr, "shape") or not hasattr(arr, "dtype"):
        raise InputError(f"input {name!r} must be an array, got {type(arr).__name__}")
    _check_shape(spec, arr)
    if arr.size == 0:
        raise InputError(f"input {name!r} is empty: shape {tuple(arr.shape)}")
    if kind in (TOKEN_IDS, TOKEN_TYPE_IDS):
        if arr.dtype.kind not in "iu":
            raise InputError(f"input {name!r} must hold integers, got dtype {arr.dtype}")
        _check_length(spec, arr)
        return arr
    if kind in (IMAGE, FEATURES) and arr.dtype.kind != "f":
        raise InputError(f"input {name!r} must be floating point, got dtype {arr.dtype}")
    if arr.dtype.kind not in "fiub":
        raise InputError(f"input {name!r} must be numeric, got dtype {arr.dtype}")
    if kind == ATTENTION_MASK and isinstance(arr, np.ndarray):    # device masks: not read back
        stray = arr[(arr != 0) & (arr != 1)]
        if stray.size:
            raise InputError(f"input {name!r}: attention mask value {stray.ravel()[0]} is "
                             f"neither 0 (padding) nor 1 (a token)")
    return arr


def check_sample_labels(model_file, output_shape):
    """The file's sample labels: one integer class per shipped sample input, each in
    [0, classes) where the output (`output_shape`, when known) is (N, classes)."""
    labels, samples = model_file.sample_labels(), model_file.sample_inputs()
    if labels is None:
        return
    have = len(next(iter(samples.values()))) if samples else 0
    if labels.ndim != 1 or labels.shape[0] != have or labels.dtype.kind not in "iu":
        raise ModelFileError(f"the file's sample labels have shape {tuple(labels.shape)} and "
                             f"dtype {labels.dtype}: expected ({have},) integers, one per "
                             f"sample input")
    if output_shape is not None and len(output_shape) == 2 and labels.size:
        classes = output_shape[1]
        outside = labels[(labels < 0) | (labels >= classes)]
        if outside.size:
            raise ModelFileError(f"the file's sample label {int(outside[0])} is outside [0, "
                                 f"{classes}): the model has {classes} classes")


def sample_shapes(input_spec, batch):
    """name -> the shape of the sample input `sample_inputs` builds for a batch of `batch`;
    sequences all of one length (ids, token types and mask go together), within every
    max_length."""
    out = {}
    seq = min([SAMPLE_SEQUENCE] + [s["max_length"] for s in input_spec
                                   if s.get("max_length") is not None])
    for spec in input_spec:
        out[spec["name"]] = tuple(batch if i == 0 else (seq if d is None else d)
                                  for i, d in enumerate(spec["shape"]))
    return out


def sample_inputs(input_spec, batch, seed=0):
    """Deterministic inputs built from the spec alone: name -> NumPy array."""
    rng = np.random.default_rng(seed)
    out = {}
    shapes = sample_shapes(input_spec, batch)
    for spec in input_spec:
        kind, shape = spec.get("kind", IMAGE), shapes[spec["name"]]
        try:
            out[spec["name"]] = _sample(rng, spec, kind, shape)
        except (MemoryError, ValueError):          # ValueError: more elements than NumPy allows
            raise InputError(f"batch {batch}: input {spec['name']!r} of shape {tuple(shape)} "
                             f"does not fit in memory") from None
    return out


def _sample(rng, spec, kind, shape):
    if kind in (IMAGE, FEATURES):
        return rng.standard_normal(shape).astype(spec.get("dtype", "float32"))
    if kind == TOKEN_IDS:
        return rng.integers(0, spec["vocab_size"], size=shape, dtype=np.int64)
    if kind == TOKEN_TYPE_IDS:
        return np.zeros(shape, dtype=np.int64)
    if kind == ATTENTION_MASK:
        return np.ones(shape, dtype=np.int64)
    raise InputError(f"input {spec['name']!r} has unknown kind {kind!r}")


def default_input(spec, like, xp):
    """An optional input left out by the caller (token types, attention mask)."""
    kind = spec.get("kind", IMAGE)
    if kind == TOKEN_TYPE_IDS:
        return xp.zeros(like.shape, dtype=xp.int64)
    if kind == ATTENTION_MASK:
        return xp.ones(like.shape, dtype=xp.int64)
    raise InputError(f"input {spec['name']!r} is required")
