"""What one call may ask of the machine, checked before any kernel runs.

A kernel that meets an impossible request fails in native code, inside the
user's process (a scratch allocation that throws across TVM's thread pool has
aborted the process afterwards); so requests that cannot fit are refused here,
in Python, with the argument that made them too large.
"""

from __future__ import annotations

# Adaptive sampling (sampling_ratio <= 0) takes ceil(box side / output side)
# samples per bin along each axis, so an absurd box means an absurd loop: past
# this many entries in a box's sample tables (a box of ~2000 feature-map pixels
# at 7 bins) it is refused, not run.  A fixed sampling_ratio has no such limit:
# its table size, 2 * sampling_ratio * (PH + PW), is known from the parameters.
MAX_TABLE_ENTRIES = 1 << 12
# Ops whose samples are not a row sample times a column sample (rotated and
# deformable boxes; the spec's `per_sample_tables`) keep every sample's corners in
# a box's tables, SAMPLE_ENTRIES a sample, where they fit in this many: then a
# sample's corners are found once per box, not once per channel block as it is
# read.  Boxes with more samples keep row and column terms (2 * (PH*gh + PW*gw)).
SAMPLE_TABLE_ENTRIES = 1 << 12
# A kept sample's entries: its first corner's offset (itab) and three weights (ftab);
# compute/cpu/_align.sample_table_macro.
SAMPLE_ENTRIES = 3
# The box gradient's own per-box table (`box_slopes`) has this many times the forward
# tables' entries (three a sample): a kept sample's factors there are four.
SLOPE_TABLE_SCALE = 2
# Sample tables hold row * W + column offsets as int32.
MAX_PIXELS = 2**31 - 1
# Below this, a request is not worth a look at the free memory (reading it costs
# tens of microseconds).
_SMALL = 1 << 28


def keeps_samples(spec, gh, gw):
    """Whether a box of gh x gw samples per bin keeps every sample's corners in its tables
    (ints, or TIR expressions of the box)."""
    return spec.per_sample_tables and kept_entries(spec, gh, gw) <= SAMPLE_TABLE_ENTRIES


def kept_entries(spec, gh, gw):
    """Entries of the tables of a box that keeps its samples' corners."""
    return SAMPLE_ENTRIES * spec.pooled_height * spec.pooled_width * gh * gw


def table_entries(spec, gh: int, gw: int) -> int:
    """Entries of the sample tables of a box of gh x gw samples per bin."""
    if keeps_samples(spec, gh, gw):
        return kept_entries(spec, gh, gw)
    return 2 * (spec.pooled_height * gh + spec.pooled_width * gw)


def check_table(spec, entries: int, height: int, width: int) -> None:
    """Refuse sample tables the kernels cannot address or an adaptive grid too large to run."""
    if height * width > MAX_PIXELS:
        raise ValueError(f"input: a {height}x{width} map has more pixels than the sample tables' int32 "
                         f"offsets address ({MAX_PIXELS}); split the map")
    if not hasattr(spec, "sampling_ratio"):  # PrRoIPool: entries per bin grow with its cells
        if entries > MAX_TABLE_ENTRIES:
            raise ValueError(
                f"boxes: each bin integrates over the ceil(box side / output side) + 1 unit cells it overlaps "
                f"per axis, and a box here needs {entries // 2} table entries over its bins' rows and columns "
                f"(PH*gh + PW*gw), more than the limit of {MAX_TABLE_ENTRIES // 2}; clip the boxes to the map "
                "or use a coarser map")
    elif spec.sampling_ratio <= 0 and entries > MAX_TABLE_ENTRIES:
        raise ValueError(
            f"boxes: with sampling_ratio <= 0 each bin takes ceil(box side / output side) samples per axis, "
            f"and a box here needs {entries // 2} samples over its bins' rows and columns (PH*gh + PW*gw), "
            f"more than the limit of {MAX_TABLE_ENTRIES // 2} for adaptive sampling; pass sampling_ratio > 0 "
            "(no limit) or clip the boxes to the map")


def available_bytes() -> int:
    import psutil

    return psutil.virtual_memory().available


def reserve(nbytes: int, what: str) -> None:
    """Raise MemoryError, before any work, if `what` needs more memory than is free."""
    if nbytes < _SMALL:
        return
    free = available_bytes()
    if nbytes > free and _release_pool():
        free = available_bytes()
    if nbytes > free:
        raise MemoryError(f"roigen: {what} need {nbytes / 2**30:.2f} GiB, but {free / 2**30:.2f} GiB "
                          "is available; pass fewer boxes, a smaller output_size or a smaller map")


def _release_pool() -> bool:
    """Give the output pool's idle memory back to the system (roigen.native); whether any was held."""
    try:
        from .native import trim_pool
    except ImportError:  # a kernel package's runtime: no pool
        return False
    return trim_pool() > 0
