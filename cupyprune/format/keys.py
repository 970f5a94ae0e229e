"""Every key name of the model file, defined once (docs/FORMAT.md)."""

FORMAT_NAME = "cupyprune"
FORMAT_VERSION = "1"
COMPACT_VERSION = "2"          # version 1 plus group-wise weights stored compacted (compact.py)
PACKED_VERSION = "3"           # version 2 plus masks bit-packed or implied by zeros (masks.py),
                               # and the primitive ops of traced graphs (cupyprune/export)
# the ops of versions 1 and 2: a graph of other ops (or a grouped conv) is version 3
WHOLE_MODEL_OPS = frozenset((
    "conv2d", "batch_norm", "linear", "relu", "tanh", "gelu", "max_pool2d", "avg_pool2d",
    "adaptive_avg_pool2d", "flatten", "add", "dropout", "layer_norm", "embedding",
    "position_embedding", "token_type_embedding", "patches_to_tokens", "prepend_token",
    "add_param", "self_attention", "select_token"))
READABLE_VERSIONS = (FORMAT_VERSION, COMPACT_VERSION, PACKED_VERSION)
COMPACT_VERSIONS = (COMPACT_VERSION, PACKED_VERSION)         # versions that may hold `.groups`

# __metadata__ keys
META_FORMAT = "format"
META_VERSION = "format_version"
META_GRAPH = "graph"
META_INPUT_SPEC = "input_spec"
META_PRUNING = "pruning"
META_LABELS = "labels"
META_EXPORTER = "exporter"
META_DESCRIPTION = "description"
META_MASKS = "masks"           # how each packed mask is stored (version 3, masks.py)
REQUIRED_META = (META_FORMAT, META_VERSION, META_GRAPH, META_INPUT_SPEC)

# tensor keys
MASK_SUFFIX = ".mask"
GROUPS_SUFFIX = ".groups"      # the kept groups of a compacted weight (version 2)
MASKBITS_SUFFIX = ".maskbits"  # a mask bit-packed (version 3)
SAMPLE_INPUT_PREFIX = "cupyprune.sample.inputs."
SAMPLE_LABELS = "cupyprune.sample.labels"

# The pruning patterns (paper section 3.2): the one list, which the runtime, the exporter and
# the tools import. "dense" declares a weight unpruned; the others are what pruning makes.
PATTERNS = ("dense", "element", "vector", "block", "group")
PRUNING_PATTERNS = tuple(p for p in PATTERNS if p != "dense")

# safetensors dtype names -> numpy dtypes this format accepts
DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16",
    "I64": "int64", "I32": "int32", "U8": "uint8", "BOOL": "bool",
}
MAX_HEADER_BYTES = 100 * 1024 * 1024
