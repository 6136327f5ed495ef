"""An independent, functional re-implementation of the official LASNet eval forward, for conversion tests.

It reads a state_dict in the official layout (``dyn_resnet*`` / ``dyn_regnet_y_*``) and follows the official
semantics literally: ``adaptive_avg_pool2d`` to ``output_size // S`` (skipped when the input already has that
size), 1x1 conv to 2 logits, ``logit0 >= logit1``, ``F.interpolate`` (nearest) to the output size, dense SE.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _bn(x, sd, p):
    return F.batch_norm(x, sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"], sd[p + ".bias"], False, 0.0, 1e-5)


def _conv(x, w, stride=1):
    k = w.shape[-1]
    groups = x.shape[1] // w.shape[1]
    return F.conv2d(x, w, stride=stride, padding=k // 2, groups=groups)


def _mask(x, sd, p, out_size, S):
    mask_size = out_size // S
    m = F.adaptive_avg_pool2d(x, mask_size) if mask_size < x.shape[2] else x
    m = F.conv2d(m, sd[p + ".masker.conv2.weight"], sd[p + ".masker.conv2.bias"])
    coarse = (m[:, :1] >= m[:, 1:]).float()
    full = F.interpolate(coarse, size=(out_size, out_size)) if coarse.shape[2] < out_size else coarse
    return coarse, full


def _blocks(sd, prefix_fmt):
    names = sorted({k.rsplit(".masker", 1)[0] for k in sd if ".masker." in k}, key=prefix_fmt)
    return names


def resnet_forward(sd, granularity, input_size, x):
    """Official ``dyn_resnet`` eval forward. Returns ``(logits, coarse masks)``."""
    x = F.max_pool2d(F.relu(_bn(F.conv2d(x, sd["conv1.weight"], stride=2, padding=3), sd, "bn1")), 3, 2, 1)
    names = _blocks(sd, lambda n: (int(n.split(".")[0][5:]), int(n.split(".")[1])))
    masks = []
    for S, n in zip(granularity, names):
        layer, idx = int(n.split(".")[0][5:]), int(n.split(".")[1])
        stride = 2 if (layer > 1 and idx == 0) else 1
        out_size = input_size // (2 ** (layer + 1))
        coarse, mask = _mask(x, sd, n, out_size, S)
        masks.append(coarse)
        out = F.relu(_bn(_conv(x, sd[n + ".conv1.weight"]), sd, n + ".bn1"))
        out = F.relu(_bn(_conv(out, sd[n + ".conv2.weight"], stride), sd, n + ".bn2"))
        out = _bn(_conv(out, sd[n + ".conv3.weight"]), sd, n + ".bn3") * mask
        identity = x
        if n + ".downsample.0.weight" in sd:
            identity = _bn(_conv(x, sd[n + ".downsample.0.weight"], stride), sd, n + ".downsample.1")
        x = F.relu(out + identity)
    logits = F.linear(x.mean(dim=(2, 3)), sd["fc.weight"], sd["fc.bias"])
    return logits, masks


def regnet_forward(sd, granularity, input_size, x):
    """Official ``dyn_regnet_y`` eval forward (SE pooled densely). Returns ``(logits, coarse masks)``."""
    x = F.relu(_bn(F.conv2d(x, sd["stem.0.weight"], stride=2, padding=1), sd, "stem.1"))
    names = _blocks(sd, lambda n: (int(n.split(".")[1][5:]), int(n.split("-")[-1])))
    masks = []
    for S, n in zip(granularity, names):
        stage, idx = int(n.split(".")[1][5:]), int(n.split("-")[-1])
        stride = 2 if idx == 0 else 1
        out_size = input_size // (2 ** (stage + 1))
        coarse, mask = _mask(x, sd, n, out_size, S)
        masks.append(coarse)
        identity = x
        if n + ".proj.0.weight" in sd:
            identity = _bn(_conv(x, sd[n + ".proj.0.weight"], stride), sd, n + ".proj.1")
        out = F.relu(_bn(_conv(x, sd[n + ".f.a.0.weight"]), sd, n + ".f.a.1"))
        out = F.relu(_bn(_conv(out, sd[n + ".f.b.0.weight"], stride), sd, n + ".f.b.1"))
        if n + ".f.se.fc1.weight" in sd:
            s = F.conv2d(out.mean(dim=(2, 3), keepdim=True), sd[n + ".f.se.fc1.weight"], sd[n + ".f.se.fc1.bias"])
            s = torch.sigmoid(F.conv2d(F.relu(s), sd[n + ".f.se.fc2.weight"], sd[n + ".f.se.fc2.bias"]))
            out = out * s
        out = _bn(_conv(out, sd[n + ".f.c.0.weight"]), sd, n + ".f.c.1") * mask
        x = F.relu(out + identity)
    logits = F.linear(x.mean(dim=(2, 3)), sd["fc.weight"], sd["fc.bias"])
    return logits, masks
