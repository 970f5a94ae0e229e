"""Batch sizes a model is called with when its batches are padded: powers of two up to the
batch limit, and the limit itself. CUDA-graph replay captures a graph per input shape, so a
burst of requests of every size then replays a handful of graphs instead of capturing one per
size."""


def bucket_sizes(max_batch):
    """-> ascending sizes: 1, 2, 4, ... below max_batch, then max_batch."""
    sizes, size = [], 1
    while size < max_batch:
        sizes.append(size)
        size *= 2
    return sizes + [max_batch]


def bucket_for(rows, max_batch):
    """The smallest bucket that holds `rows` (1 <= rows <= max_batch)."""
    return next(size for size in bucket_sizes(max_batch) if size >= rows)
