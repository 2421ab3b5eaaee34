"""Float64 reference implementations, written from docs/ROI_OPS.md alone.

Plain PyTorch in float64, one box at a time, differentiable through autograd
(so they give reference gradients too).  Slow on purpose: they exist to be
obviously right.  They import nothing else of roigen.
"""

from __future__ import annotations

import math

import torch


def _rois(boxes) -> torch.Tensor:
    if isinstance(boxes, torch.Tensor):
        return boxes.detach().to(torch.float64)
    rows = [torch.cat([torch.full((len(b), 1), float(i), dtype=torch.float64), b.detach().double()], 1)
            for i, b in enumerate(boxes)]
    return torch.cat(rows, 0)


def _box_rows(boxes) -> torch.Tensor:
    """(K, 5) float64 rows, keeping the boxes' autograd graph (for the box gradient)."""
    if isinstance(boxes, torch.Tensor):
        return boxes.to(torch.float64)
    rows = [torch.cat([torch.full((len(b), 1), float(i), dtype=torch.float64), b.double()], 1)
            for i, b in enumerate(boxes)]
    return torch.cat(rows, 0)


def _pair(output_size) -> tuple[int, int]:
    return (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)


def c_round(v: float) -> int:
    """C's round(): half away from zero (Python's round() is half-to-even)."""
    frac, whole = math.modf(abs(v))
    return int(math.copysign(whole + (1.0 if frac >= 0.5 else 0.0), v))


def _bilinear_axis(coords, size: int):
    """Per-coordinate corner indices, fraction and validity along one axis.  For `coords` a
    tensor, the fraction carries its graph: d/dc is 1 inside the map, 0 where the coordinate
    is clamped to 0 or to the last pixel (ROI_OPS.md's box gradient)."""
    c = torch.as_tensor(coords, dtype=torch.float64)
    valid = (c >= -1.0) & (c <= size)
    c = c.clamp(min=0.0)
    low = c.floor().long()
    at_edge = low >= size - 1
    low = torch.where(at_edge, torch.full_like(low, size - 1), low)
    high = torch.where(at_edge, low, low + 1)
    frac = torch.where(at_edge, torch.zeros_like(c), c - low.double())
    return low, high, frac, valid


def bilinear(image: torch.Tensor, ys, xs) -> torch.Tensor:
    """image (C, H, W) read at every (y, x) of ys × xs → (C, len(ys), len(xs)); 0 outside."""
    _, h, w = image.shape
    yl, yh, ly, vy = _bilinear_axis(ys, h)
    xl, xh, lx, vx = _bilinear_axis(xs, w)
    hy, hx = 1.0 - ly, 1.0 - lx

    def at(rows, cols):
        return image[:, rows[:, None], cols[None, :]]

    value = (hy[:, None] * hx[None, :] * at(yl, xl) + hy[:, None] * lx[None, :] * at(yl, xh)
             + ly[:, None] * hx[None, :] * at(yh, xl) + ly[:, None] * lx[None, :] * at(yh, xh))
    return value * (vy[:, None] & vx[None, :])


def _align_box(image, x1, y1, x2, y2, ph_, pw_, sampling_ratio, clamp_extent, mode):
    """RoIAlign of one box already in feature-map coordinates (0-d float64 tensors, which may
    carry a graph: the sample counts are held constant) → (C, PH, PW)."""
    rw, rh = x2 - x1, y2 - y1
    if clamp_extent:
        rw, rh = rw.clamp(min=1.0), rh.clamp(min=1.0)
    bin_h, bin_w = rh / ph_, rw / pw_
    gh = sampling_ratio if sampling_ratio > 0 else max(math.ceil(float(rh.detach()) / ph_), 0)
    gw = sampling_ratio if sampling_ratio > 0 else max(math.ceil(float(rw.detach()) / pw_), 0)
    c = image.shape[0]
    if gh * gw == 0:
        return image.new_zeros(c, ph_, pw_)

    def positions(start, bin_size, pooled, grid):
        p = torch.arange(pooled, dtype=torch.float64).repeat_interleave(grid)
        i = torch.arange(grid, dtype=torch.float64).repeat(pooled)
        return start + p * bin_size + (i + 0.5) * bin_size / grid

    ys, xs = positions(y1, bin_h, ph_, gh), positions(x1, bin_w, pw_, gw)
    samples = bilinear(image, ys, xs).reshape(c, ph_, gh, pw_, gw).permute(0, 1, 3, 2, 4)
    samples = samples.reshape(c, ph_, pw_, gh * gw)
    if mode == "avg":
        return samples.sum(-1) / max(gh * gw, 1)
    return samples.max(-1).values  # first maximum wins ties, as the kernels do


def roi_align(input, boxes, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=False, mode="avg"):
    x = input.to(torch.float64)
    ph_, pw_ = _pair(output_size)
    offset = 0.5 if aligned else 0.0
    outs = []
    for row in _box_rows(boxes):  # differentiable in the boxes, as ROI_OPS.md's box gradient
        x1, y1, x2, y2 = row[1:] * spatial_scale - offset
        outs.append(_align_box(x[int(row[0])], x1, y1, x2, y2, ph_, pw_, sampling_ratio, not aligned, mode))
    return torch.stack(outs) if outs else x.new_zeros(0, x.shape[1], ph_, pw_)


def _snapped(boxes, spatial_scale):
    """Each box's batch index and corners scaled and C-rounded (RoIPool's grid)."""
    for b, *coords in _rois(boxes).tolist():
        yield (int(b), *(c_round(v * spatial_scale) for v in coords))


def roi_pool(input, boxes, output_size, spatial_scale=1.0):
    x = input.to(torch.float64)
    _, c, h, w = x.shape
    ph_, pw_ = _pair(output_size)
    outs = []
    for b, x1, y1, x2, y2 in _snapped(boxes, spatial_scale):
        rw, rh = max(x2 - x1 + 1, 1), max(y2 - y1 + 1, 1)  # +1: the last pixel is inside
        bins = []
        for p in range(ph_):
            # floor(p * rh / PH) and ceil((p+1) * rh / PH) in exact integer arithmetic.
            hs = min(max(p * rh // ph_ + y1, 0), h)
            he = min(max(-(-(p + 1) * rh // ph_) + y1, 0), h)
            for q in range(pw_):
                ws = min(max(q * rw // pw_ + x1, 0), w)
                we = min(max(-(-(q + 1) * rw // pw_) + x1, 0), w)
                region = x[b, :, hs:he, ws:we]
                bins.append(region.flatten(1).max(1).values if region.numel() else x.new_zeros(c))
        outs.append(torch.stack(bins, 1).reshape(c, ph_, pw_))
    return torch.stack(outs) if outs else x.new_zeros(0, c, ph_, pw_)


def roi_warp(input, boxes, output_size, spatial_scale=1.0, sampling_ratio=-1, mode="avg"):
    """RoIAlign's bins and samples in the box snapped with C round (extent >= 1)."""
    x = input.to(torch.float64)
    ph_, pw_ = _pair(output_size)
    outs = []
    for b, *coords in _rois(boxes).tolist():
        x1, y1, x2, y2 = (torch.tensor(float(c_round(v * spatial_scale)), dtype=torch.float64) for v in coords)
        outs.append(_align_box(x[int(b)], x1, y1, x2, y2, ph_, pw_, sampling_ratio, True, mode))
    return torch.stack(outs) if outs else x.new_zeros(0, x.shape[1], ph_, pw_)


def spp(input, levels=(4, 2, 1), mode="max"):
    """Adaptive n x n bins, bin i spanning [floor(i*H/n), ceil((i+1)*H/n))."""
    x = input.to(torch.float64)
    n_, c, h, w = x.shape
    parts = []
    for n in levels:
        cells = []
        for i in range(n):
            for j in range(n):
                region = x[:, :, i * h // n: -(-(i + 1) * h // n), j * w // n: -(-(j + 1) * w // n)].flatten(2)
                cells.append(region.max(2).values if mode == "max" else region.mean(2))
        parts.append(torch.stack(cells, 2).reshape(n_, c * n * n))
    return torch.cat(parts, 1)


def roi_spp(input, boxes, levels=(4, 2, 1), spatial_scale=1.0):
    """The RoIPool grid of every level, flattened channel-major, concatenated."""
    return torch.cat([roi_pool(input, boxes, n, spatial_scale).flatten(1) for n in levels], 1)


def _position_sensitive(full, c_out, ph_, pw_):
    """out[k, c, ph, pw] = full[k, (c*PH + ph)*PW + pw, ph, pw]."""
    k = full.shape[0]
    channel = (torch.arange(c_out)[:, None, None] * ph_ + torch.arange(ph_)[None, :, None]) * pw_ \
        + torch.arange(pw_)[None, None, :]
    rows = torch.arange(ph_)[None, :, None].expand(c_out, ph_, pw_)
    cols = torch.arange(pw_)[None, None, :].expand(c_out, ph_, pw_)
    return full[:, channel, rows, cols] if k else full.new_zeros(0, c_out, ph_, pw_)


def ps_roi_align(input, boxes, output_size, spatial_scale=1.0, sampling_ratio=-1):
    """RoIAlign with half-pixel boxes and no minimum size, each bin reading its own channel."""
    ph_, pw_ = _pair(output_size)
    full = roi_align(input, boxes, output_size, spatial_scale, sampling_ratio, aligned=True)
    return _position_sensitive(full, input.shape[1] // (ph_ * pw_), ph_, pw_)


def ps_roi_pool(input, boxes, output_size, spatial_scale=1.0):
    """The average of each bin of the snapped box (size max(x2 - x1, 1)), each bin reading
    its own channel.  As torchvision's forward, bins are clipped to [0, H-1) x [0, W-1)."""
    x = input.to(torch.float64)
    _, c, h, w = x.shape
    ph_, pw_ = _pair(output_size)
    outs = []
    for b, x1, y1, x2, y2 in _snapped(boxes, spatial_scale):
        rw, rh = max(x2 - x1, 1), max(y2 - y1, 1)
        bins = []
        for p in range(ph_):
            hs = min(max(math.floor(p * (rh / ph_)) + y1, 0), h - 1)
            he = min(max(math.ceil((p + 1) * (rh / ph_)) + y1, 0), h - 1)
            for q in range(pw_):
                ws = min(max(math.floor(q * (rw / pw_)) + x1, 0), w - 1)
                we = min(max(math.ceil((q + 1) * (rw / pw_)) + x1, 0), w - 1)
                region = x[b, :, hs:he, ws:we]
                bins.append(region.mean((1, 2)) if region[0].numel() else x.new_zeros(c))
        outs.append(torch.stack(bins, 1).reshape(c, ph_, pw_))
    full = torch.stack(outs) if outs else x.new_zeros(0, c, ph_, pw_)
    return _position_sensitive(full, c // (ph_ * pw_), ph_, pw_)


def multi_scale_roi_align(features, boxes, output_size, scales, sampling_ratio=-1, aligned=False,
                          canonical_scale=224, canonical_level=4):
    """Each box RoIAligned on level floor(k0 + log2(sqrt(area)/s0) + 1e-6), clamped to the levels."""
    rois = _rois(boxes)
    k_min, k_max = -math.log2(scales[0]), -math.log2(scales[-1])
    rows = []
    for row in rois:
        area = float((row[3] - row[1]) * (row[4] - row[2]))
        level = math.floor(canonical_level + math.log2(math.sqrt(area) / canonical_scale) + 1e-6) \
            if area > 0 else -math.inf
        level = int(min(max(level, k_min), k_max) - k_min)
        rows.append(roi_align(features[level], row[None], output_size, scales[level], sampling_ratio, aligned))
    return torch.cat(rows) if rows else features[0].new_zeros(0, features[0].shape[1], *_pair(output_size)).double()


def _bilinear_points(image: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
    """image (C, H, W) read at each point (ys[i], xs[i]) → (C, len(ys)); roi_align's rule
    (differentiable in the points, as `_bilinear_axis`)."""
    _, h, w = image.shape
    yl, yh, ly, vy = _bilinear_axis(ys, h)
    xl, xh, lx, vx = _bilinear_axis(xs, w)
    hy, hx = 1.0 - ly, 1.0 - lx
    value = (hy * hx * image[:, yl, xl] + hy * lx * image[:, yl, xh]
             + ly * hx * image[:, yh, xl] + ly * lx * image[:, yh, xh])
    return value * (vy & vx)


def roi_align_rotated(input, boxes, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=True,
                      angle_unit="deg", clockwise=False):
    """RoIAlign's samples in a box (cx, cy, w, h, angle), rotated about its centre (ROI_OPS.md);
    differentiable in the boxes, with the sample counts held constant."""
    x = input.to(torch.float64)
    ph_, pw_ = _pair(output_size)
    offset = 0.5 if aligned else 0.0
    radians = math.pi / 180.0 if angle_unit == "deg" else 1.0
    outs = []
    for row in _box_rows(boxes):
        cx, cy = row[1] * spatial_scale - offset, row[2] * spatial_scale - offset
        rw, rh = row[3] * spatial_scale, row[4] * spatial_scale
        if not aligned:
            rw, rh = rw.clamp(min=1.0), rh.clamp(min=1.0)
        t = row[5] * radians * (-1.0 if clockwise else 1.0)
        gh = sampling_ratio if sampling_ratio > 0 else max(math.ceil(float(rh.detach()) / ph_), 0)
        gw = sampling_ratio if sampling_ratio > 0 else max(math.ceil(float(rw.detach()) / pw_), 0)
        if gh * gw == 0:
            outs.append(x.new_zeros(x.shape[1], ph_, pw_))
            continue

        def offsets(size, pooled, grid):
            p = torch.arange(pooled, dtype=torch.float64).repeat_interleave(grid)
            i = torch.arange(grid, dtype=torch.float64).repeat(pooled)
            return -size / 2 + p * size / pooled + (i + 0.5) * size / pooled / grid

        yy, xx = offsets(rh, ph_, gh), offsets(rw, pw_, gw)
        ys = yy[:, None] * torch.cos(t) - xx[None, :] * torch.sin(t) + cy
        xs = yy[:, None] * torch.sin(t) + xx[None, :] * torch.cos(t) + cx
        samples = _bilinear_points(x[int(row[0])], ys.flatten(), xs.flatten())
        samples = samples.reshape(-1, ph_, gh, pw_, gw).sum((2, 4))
        outs.append(samples / (gh * gw))
    return torch.stack(outs) if outs else x.new_zeros(0, x.shape[1], ph_, pw_)


def _hat_integral(a: torch.Tensor, b: torch.Tensor, size: int) -> torch.Tensor:
    """∫_a^b max(0, 1 - |t - p|) dt for every pixel p in [0, size) → (size,); pixels outside the
    map are absent (the surface is 0 there).  Differentiable in a and b."""
    p = torch.arange(size, dtype=torch.float64)

    def antiderivative(t):
        u = (t - p).clamp(-1.0, 1.0)
        return torch.where(u < 0, (u + 1) ** 2 / 2, 1 - (1 - u) ** 2 / 2)

    return antiderivative(b) - antiderivative(a)


def prroi_pool(input, boxes, output_size, spatial_scale=1.0):
    """Each bin's exact mean of the bilinear surface through the pixels, 0 outside the map.

    Written with the boxes as tensors, so that autograd gives the box gradient too
    (d/d boxes of the integral: ROI_OPS.md's line integrals)."""
    x = input.to(torch.float64)
    _, c, h, w = x.shape
    ph_, pw_ = _pair(output_size)
    rois = boxes if isinstance(boxes, torch.Tensor) else torch.cat(
        [torch.cat([torch.full((len(b), 1), float(i), dtype=b.dtype), b], 1) for i, b in enumerate(boxes)], 0)
    rois = rois.to(torch.float64)
    outs = []
    for row in rois:
        x1, y1, x2, y2 = (row[1:] * spatial_scale).unbind()
        bw, bh = (x2 - x1).clamp(min=0) / pw_, (y2 - y1).clamp(min=0) / ph_
        area = bw * bh
        bins = []
        for p in range(ph_):
            wy = _hat_integral(y1 + p * bh, y1 + (p + 1) * bh, h)
            for q in range(pw_):
                wx = _hat_integral(x1 + q * bw, x1 + (q + 1) * bw, w)
                total = torch.einsum("chw,h,w->c", x[int(row[0])], wy, wx)
                bins.append(torch.where(area > 0, total / torch.where(area > 0, area, 1.0), 0.0))
        outs.append(torch.stack(bins, 1).reshape(c, ph_, pw_))
    return torch.stack(outs) if outs else x.new_zeros(0, c, ph_, pw_)


def deform_roi_pool(input, boxes, offset, output_size, spatial_scale=1.0, sampling_ratio=0, gamma=0.1):
    """Aligned RoIAlign (no minimum size) with bin (ph, pw) shifted by gamma*roi_w*offset[k, 0, ph, pw]
    along x and gamma*roi_h*offset[k, 1, ph, pw] along y (ROI_OPS.md); offset None: no shift.
    Differentiable in the input, the boxes and the offsets, the sample counts held constant."""
    x = input.to(torch.float64)
    _, c, _, _ = x.shape
    ph_, pw_ = _pair(output_size)
    rows = _box_rows(boxes)
    shifts = rows.new_zeros(len(rows), 2, ph_, pw_) if offset is None else offset.to(torch.float64)
    outs = []
    for k, row in enumerate(rows):
        x1, y1, x2, y2 = row[1:5] * spatial_scale - 0.5
        rw, rh = x2 - x1, y2 - y1
        bin_w, bin_h = rw / pw_, rh / ph_
        gh = sampling_ratio if sampling_ratio > 0 else max(math.ceil(float(rh.detach()) / ph_), 0)
        gw = sampling_ratio if sampling_ratio > 0 else max(math.ceil(float(rw.detach()) / pw_), 0)
        if gh * gw == 0:
            outs.append(x.new_zeros(c, ph_, pw_))
            continue
        bins = []
        for ph in range(ph_):
            for pw in range(pw_):
                start_y = y1 + gamma * rh * shifts[k, 1, ph, pw]
                start_x = x1 + gamma * rw * shifts[k, 0, ph, pw]
                ys = start_y + ph * bin_h + (torch.arange(gh, dtype=torch.float64) + 0.5) * bin_h / gh
                xs = start_x + pw * bin_w + (torch.arange(gw, dtype=torch.float64) + 0.5) * bin_w / gw
                bins.append(bilinear(x[int(row[0])], ys, xs).sum((1, 2)) / (gh * gw))
        outs.append(torch.stack(bins, 1).reshape(c, ph_, pw_))
    return torch.stack(outs) if outs else x.new_zeros(0, c, ph_, pw_)


REFERENCES = {"roi_align": roi_align, "roi_pool": roi_pool, "roi_warp": roi_warp, "spp": spp,
              "roi_spp": roi_spp, "ps_roi_align": ps_roi_align, "ps_roi_pool": ps_roi_pool,
              "multi_scale_roi_align": multi_scale_roi_align, "roi_align_rotated": roi_align_rotated,
              "prroi_pool": prroi_pool, "deform_roi_pool": deform_roi_pool}
