"""Math the CPU and GPU computes share, defined once: sampling, bin edges, rounding, pyramid levels."""
