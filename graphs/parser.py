"""The coarse human parser: SCHP's "AugmentCE2P" on ResNet-101, 7 Pascal-Person-Part classes.

Classes: 0 background, 1 head, 2 torso, 3 upper arms, 4 lower arms, 5 upper legs, 6 lower legs.

Module and parameter names follow SCHP's checkpoint layout
(``exp-schp-201908270938-pascal-person-part.pth``,
``{"state_dict": {"module.conv1.weight": ...}}``): once the ``module.`` prefix is stripped,
:class:`CoarseParser`'s own ``state_dict()`` has exactly the checkpoint's keys, so the checkpoint
loads into it as is. The top-level prefixes are

* ``conv1/bn1``, ``conv2/bn2``, ``conv3/bn3``: the deep stem (3x3 convs 3-64 stride 2, 64-64,
  64-128), then a 3x3 stride-2 max pool;
* ``layer1`` .. ``layer4``: Bottleneck blocks (3, 4, 23, 3); layer4 has stride 1, dilation 2 and
  multi-grid (1, 1, 1), so the backbone's output stride is 16;
* ``context_encoding``: the PSP module (``stages.N`` = pool, 1x1 conv, BN; ``bottleneck``);
* ``edge``: the edge branch; ``decoder``: the parsing branch; ``fushion`` (SCHP's spelling): the
  fusion head whose output is the final parsing.

SCHP's batch norms are InPlaceABNSync modules: a batch norm and an activation in one module,
with ``weight``, ``bias``, ``running_mean`` and ``running_var`` and no ``num_batches_tracked``.
:class:`ActivatedBatchNorm` reproduces them with a plain ``F.batch_norm`` (no custom kernel)
followed by LeakyReLU(0.01) (``activation="leaky_relu"``, the heads) or nothing
(``activation="none"``, the backbone, which applies a separate ReLU). InPlace-ABN scales by
``|weight| + eps`` rather than ``weight``; the checkpoint was trained that way, so that is the
default here (``bn_abs_weight=True``); ``bn_abs_weight=False`` gives the plain batch-norm form of
SCHP's later pure-PyTorch port.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mirror import MirrorError

NUM_CLASSES = 7
CLASS_NAMES = (
    "background",
    "head",
    "torso",
    "upper_arms",
    "lower_arms",
    "upper_legs",
    "lower_legs",
)
INPUT_NAMES = ("image",)
OUTPUT_NAMES = ("logits", "labels")

#: The resolution the network runs at: SCHP's Pascal-Person-Part setting.
NET_SIZE = (512, 512)
#: SCHP's input normalization, in its channel order (B, G, R): ImageNet statistics on [0, 1] pixels.
BGR_MEAN = (0.406, 0.456, 0.485)
BGR_STD = (0.225, 0.224, 0.229)

RESNET101_BLOCKS = (3, 4, 23, 3)
PSP_SIZES = (1, 2, 3, 6)
PSP_POOL_MODES = ("adaptive", "matmul")
LABEL_MODES = ("select", "argmax")


def parser_input_names() -> tuple[str, ...]:
    return INPUT_NAMES


def parser_output_names() -> tuple[str, ...]:
    return OUTPUT_NAMES


class ActivatedBatchNorm(nn.Module):
    """Batch norm + activation in one module, with InPlaceABNSync's parameter names.

    ``activation`` is ``"leaky_relu"`` (slope ``slope``) or ``"none"``. With ``abs_weight`` the
    scale is ``|weight| + eps`` (InPlace-ABN's definition); otherwise plain ``weight``.
    """

    def __init__(
        self,
        num_features: int,
        activation: str = "leaky_relu",
        slope: float = 0.01,
        eps: float = 1e-5,
        momentum: float = 0.1,
        abs_weight: bool = True,
    ) -> None:
        super().__init__()
        if activation not in ("leaky_relu", "none"):
            raise MirrorError(f"activation must be 'leaky_relu' or 'none', not {activation!r}")
        self.num_features = num_features
        self.activation = activation
        self.slope = slope
        self.eps = eps
        self.momentum = momentum
        self.abs_weight = abs_weight
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def effective_weight(self) -> torch.Tensor:
        """The per-channel scale actually applied (what a conv-BN fold must use)."""
        return self.weight.abs() + self.eps if self.abs_weight else self.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.batch_norm(
            x,
            self.running_mean,
            self.running_var,
            self.effective_weight(),
            self.bias,
            self.training,
            self.momentum,
            self.eps,
        )
        if self.activation == "leaky_relu":
            x = F.leaky_relu(x, self.slope)
        return x

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"activation={self.activation}"
            + (f", slope={self.slope}" if self.activation == "leaky_relu" else "")
            + f", abs_weight={self.abs_weight}"
        )


def _upsample(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    return F.interpolate(x, size=(int(size[0]), int(size[1])), mode="bilinear", align_corners=True)


def adaptive_bins(n_in: int, n_out: int) -> list[tuple[int, int]]:
    """Adaptive pooling's bins: output i reads inputs floor(i * n_in / n_out) up to (not
    including) ceil((i + 1) * n_in / n_out)."""
    return [((i * n_in) // n_out, -((-(i + 1) * n_in) // n_out)) for i in range(n_out)]


def adaptive_pool_matrix(n_in: int, n_out: int, like: torch.Tensor) -> torch.Tensor:
    """[n_out, n_in] averaging matrix over adaptive_avg_pool's bins."""
    rows = [[1.0 / (end - start) if start <= j < end else 0.0 for j in range(n_in)]
            for start, end in adaptive_bins(n_in, n_out)]  # fmt: skip
    return torch.tensor(rows, dtype=like.dtype, device=like.device)


class Bottleneck(nn.Module):
    """ResNet bottleneck (1x1, 3x3, 1x1, expansion 4), stride on the 3x3 conv."""

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        dilation: int = 1,
        downsample: nn.Module | None = None,
        multi_grid: int = 1,
        abs_weight: bool = True,
    ) -> None:
        super().__init__()
        rate = dilation * multi_grid
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = ActivatedBatchNorm(planes, activation="none", abs_weight=abs_weight)
        self.conv2 = nn.Conv2d(
            planes, planes, 3, stride=stride, padding=rate, dilation=rate, bias=False
        )
        self.bn2 = ActivatedBatchNorm(planes, activation="none", abs_weight=abs_weight)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = ActivatedBatchNorm(
            planes * self.expansion, activation="none", abs_weight=abs_weight
        )
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        residual = x if self.downsample is None else self.downsample(x)
        return F.relu(out + residual)


class PSPModule(nn.Module):
    """Pyramid pooling: per size, adaptive avg-pool -> 1x1 conv -> ABN, upsampled and concatenated
    with the input, then a 3x3 ``bottleneck`` conv -> ABN.

    ``pool="matmul"`` computes each adaptive average pool as two constant averaging matrices
    (``P_h @ x @ P_w^T``): the same numbers, but only BATCH_MATMUL instead of the index arithmetic
    that non-divisible adaptive pools (32 -> 3, 32 -> 6) decompose into.
    """

    def __init__(
        self,
        features: int = 2048,
        out_features: int = 512,
        sizes: Sequence[int] = PSP_SIZES,
        pool: str = "adaptive",
        abs_weight: bool = True,
    ) -> None:
        super().__init__()
        if pool not in PSP_POOL_MODES:
            raise MirrorError(f"psp_pool must be one of {', '.join(PSP_POOL_MODES)}, not {pool!r}")
        self.sizes = tuple(int(s) for s in sizes)
        self.pool = pool
        self.stages = nn.ModuleList(
            nn.Sequential(
                nn.AdaptiveAvgPool2d((s, s)),
                nn.Conv2d(features, out_features, 1, bias=False),
                ActivatedBatchNorm(out_features, abs_weight=abs_weight),
            )
            for s in self.sizes
        )
        self.bottleneck = nn.Sequential(
            nn.Conv2d(
                features + len(self.sizes) * out_features, out_features, 3, padding=1, bias=False
            ),
            ActivatedBatchNorm(out_features, abs_weight=abs_weight),
        )
        self._feature_size: tuple[int, int] | None = None

    def set_feature_size(self, size: Sequence[int]) -> None:
        """Precompute the ``"matmul"`` pooling matrices for an [H, W] input (non-persistent buffers,
        outside the state_dict); other sizes still work, their matrices are built per call."""
        self._feature_size = (int(size[0]), int(size[1]))
        h, w = self._feature_size
        ref = torch.zeros(())
        for i, s in enumerate(self.sizes):
            self.register_buffer(f"pool_h{i}", adaptive_pool_matrix(h, s, ref), persistent=False)
            self.register_buffer(
                f"pool_wt{i}", adaptive_pool_matrix(w, s, ref).t().contiguous(), persistent=False
            )

    def _pool(self, stage: nn.Sequential, i: int, x: torch.Tensor) -> torch.Tensor:
        if self.pool == "adaptive":
            return stage[0](x)
        h, w = x.shape[-2], x.shape[-1]
        if (h, w) == self._feature_size:
            p_h, p_wt = getattr(self, f"pool_h{i}"), getattr(self, f"pool_wt{i}")
        else:
            p_h = adaptive_pool_matrix(h, self.sizes[i], x)
            p_wt = adaptive_pool_matrix(w, self.sizes[i], x).t()
        return torch.matmul(torch.matmul(p_h, x), p_wt)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        h, w = feats.shape[-2], feats.shape[-1]
        priors = []
        for i, stage in enumerate(self.stages):
            pooled = self._pool(stage, i, feats)
            priors.append(_upsample(stage[2](stage[1](pooled)), (h, w)))
        priors.append(feats)
        return self.bottleneck(torch.cat(priors, dim=1))


class EdgeModule(nn.Module):
    """Edge branch: 1x1 conv -> ABN on layer1/2/3 features, a shared 3x3 ``conv4`` to 2 edge logits
    per level, upsampled to layer1's size; ``conv5`` fuses the three edge maps."""

    def __init__(
        self,
        in_features: Sequence[int] = (256, 512, 1024),
        mid_features: int = 256,
        out_features: int = 2,
        abs_weight: bool = True,
    ) -> None:
        super().__init__()
        for i, c in enumerate(in_features, start=1):
            setattr(
                self,
                f"conv{i}",
                nn.Sequential(
                    nn.Conv2d(c, mid_features, 1, bias=False),
                    ActivatedBatchNorm(mid_features, abs_weight=abs_weight),
                ),
            )
        self.conv4 = nn.Conv2d(mid_features, out_features, 3, padding=1, bias=True)
        self.conv5 = nn.Conv2d(out_features * 3, out_features, 1, bias=True)

    def forward(
        self, x1: torch.Tensor, x2: torch.Tensor, x3: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        size = x1.shape[-2:]
        fea1, fea2, fea3 = self.conv1(x1), self.conv2(x2), self.conv3(x3)
        edge1, edge2, edge3 = self.conv4(fea1), self.conv4(fea2), self.conv4(fea3)
        fea2, fea3 = _upsample(fea2, size), _upsample(fea3, size)
        edge2, edge3 = _upsample(edge2, size), _upsample(edge3, size)
        edge = self.conv5(torch.cat([edge1, edge2, edge3], dim=1))
        return edge, torch.cat([fea1, fea2, fea3], dim=1)


class DecoderModule(nn.Module):
    """Parsing branch: context features (512) reduced to 256 and upsampled to layer1's size,
    concatenated with layer1 reduced to 48, two 1x1 conv -> ABN, ``conv4`` to class logits."""

    def __init__(self, num_classes: int = NUM_CLASSES, abs_weight: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(
            nn.Conv2d(512, 256, 1, bias=False), ActivatedBatchNorm(256, abs_weight=abs_weight)
        )
        self.conv2 = nn.Sequential(
            nn.Conv2d(256, 48, 1, bias=False), ActivatedBatchNorm(48, abs_weight=abs_weight)
        )
        self.conv3 = nn.Sequential(
            nn.Conv2d(304, 256, 1, bias=False),
            ActivatedBatchNorm(256, abs_weight=abs_weight),
            nn.Conv2d(256, 256, 1, bias=False),
            ActivatedBatchNorm(256, abs_weight=abs_weight),
        )
        self.conv4 = nn.Conv2d(256, num_classes, 1, bias=True)

    def forward(self, xt: torch.Tensor, xl: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xt = _upsample(self.conv1(xt), xl.shape[-2:])
        x = self.conv3(torch.cat([xt, self.conv2(xl)], dim=1))
        return self.conv4(x), x


class AugmentCE2P(nn.Module):
    """The CE2P network on a deep-stem ResNet-101 (SCHP's ``networks.AugmentCE2P.ResNet``).

    ``forward(x)`` takes a normalized BGR batch (see :class:`CoarseParser`) and returns
    ``(parsing_logits, fusion_logits, edge_logits)``, all at 1/4 of the input size; the fusion
    logits are the parser's result.
    """

    def __init__(
        self,
        num_classes: int = NUM_CLASSES,
        blocks: Sequence[int] = RESNET101_BLOCKS,
        psp_pool: str = "adaptive",
        bn_abs_weight: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(num_classes, int) or num_classes < 2:
            raise MirrorError(f"num_classes must be an integer >= 2, not {num_classes!r}")
        abs_w = bool(bn_abs_weight)
        self.num_classes = num_classes
        self.conv1 = nn.Conv2d(3, 64, 3, stride=2, padding=1, bias=False)
        self.bn1 = ActivatedBatchNorm(64, activation="none", abs_weight=abs_w)
        self.conv2 = nn.Conv2d(64, 64, 3, padding=1, bias=False)
        self.bn2 = ActivatedBatchNorm(64, activation="none", abs_weight=abs_w)
        self.conv3 = nn.Conv2d(64, 128, 3, padding=1, bias=False)
        self.bn3 = ActivatedBatchNorm(128, activation="none", abs_weight=abs_w)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

        self._inplanes = 128
        self.layer1 = self._make_layer(64, blocks[0], abs_weight=abs_w)
        self.layer2 = self._make_layer(128, blocks[1], stride=2, abs_weight=abs_w)
        self.layer3 = self._make_layer(256, blocks[2], stride=2, abs_weight=abs_w)
        self.layer4 = self._make_layer(
            512, blocks[3], stride=1, dilation=2, multi_grid=(1, 1, 1), abs_weight=abs_w
        )

        self.context_encoding = PSPModule(2048, 512, pool=psp_pool, abs_weight=abs_w)
        self.edge = EdgeModule(abs_weight=abs_w)
        self.decoder = DecoderModule(num_classes, abs_weight=abs_w)
        self.fushion = nn.Sequential(
            nn.Conv2d(1024, 256, 1, bias=False),
            ActivatedBatchNorm(256, abs_weight=abs_w),
            nn.Dropout2d(0.1),
            nn.Conv2d(256, num_classes, 1, bias=True),
        )

    def _make_layer(
        self,
        planes: int,
        blocks: int,
        stride: int = 1,
        dilation: int = 1,
        multi_grid: Sequence[int] | None = None,
        abs_weight: bool = True,
    ) -> nn.Sequential:
        out_planes = planes * Bottleneck.expansion
        downsample = None
        if stride != 1 or self._inplanes != out_planes:
            downsample = nn.Sequential(
                nn.Conv2d(self._inplanes, out_planes, 1, stride=stride, bias=False),
                ActivatedBatchNorm(out_planes, activation="none", abs_weight=abs_weight),
            )
        layers = []
        for i in range(blocks):
            grid = multi_grid[i % len(multi_grid)] if multi_grid else 1
            layers.append(
                Bottleneck(
                    self._inplanes,
                    planes,
                    stride=stride if i == 0 else 1,
                    dilation=dilation,
                    downsample=downsample if i == 0 else None,
                    multi_grid=grid,
                    abs_weight=abs_weight,
                )
            )
            self._inplanes = out_planes
        return nn.Sequential(*layers)

    def forward_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = F.relu(self.bn3(self.conv3(x)))
        x = self.maxpool(x)
        x2 = self.layer1(x)
        x3 = self.layer2(x2)
        x4 = self.layer3(x3)
        x5 = self.layer4(x4)
        context = self.context_encoding(x5)
        parsing, parsing_fea = self.decoder(context, x2)
        edge, edge_fea = self.edge(x2, x3, x4)
        fusion = self.fushion(torch.cat([parsing_fea, edge_fea], dim=1))
        return parsing, fusion, edge

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.forward_heads(x)


def first_argmax_float(logits: torch.Tensor) -> torch.Tensor:
    """``argmax`` over dim 1 (first maximum on ties), keepdim, as float.

    Written as max -> greater_equal -> select -> min so that it lowers to REDUCE_MAX,
    GREATER_EQUAL, SELECT_V2 and REDUCE_MIN, all GPU-delegate ops, instead of ARG_MAX and an int
    tensor. Class indices are small integers, exact in fp16. Equals ``torch.argmax(logits, 1,
    keepdim=True).float()`` for finite logits.
    """
    c = logits.shape[1]
    top = torch.amax(logits, dim=1, keepdim=True)
    index = torch.arange(c, dtype=logits.dtype, device=logits.device).reshape(1, c, 1, 1)
    candidates = torch.where(logits >= top, index, torch.full_like(index, float(c)))
    return torch.amin(candidates, dim=1, keepdim=True)


class CoarseParser(AugmentCE2P):
    """Image -> 7-class coarse parsing: SCHP's Pascal-Person-Part parser and its pre/post steps.

    The network's parameters live at the top level (this class *is* the network plus a wrapper
    ``forward``), so the state_dict keys are SCHP's checkpoint keys without ``module.``.

    Input: ``image`` [N, 3, H, W] RGB in [-1, 1] (MIRROR's convention; N is 1 in the pipeline).

    Pre-processing. SCHP was trained on OpenCV BGR images scaled to [0, 1] and normalized with
    ImageNet statistics in BGR order, mean (0.406, 0.456, 0.485), std (0.225, 0.224, 0.229). This
    wrapper (1) reorders the channels RGB -> BGR with three channel slices and a concat, (2) maps
    [-1, 1] to [0, 1] and normalizes in one affine step, ``bgr_c * (0.5 / std_c) + (0.5 - mean_c)
    / std_c`` (which is ``((x + 1) / 2 - mean_c) / std_c``), then (3) resizes bilinearly to
    ``net_size`` (512x512) with ``align_corners=True``. The normalization is affine per channel and
    bilinear weights sum to one, so normalizing before the resize gives the same numbers as after.

    Post-processing. The fusion-branch logits (1/4 of ``net_size``, 128x128) are resized bilinearly
    with ``align_corners=True`` to ``out_size`` (default: the input's H x W).

    Output: ``(logits [N, 7, Ho, Wo], labels [N, 1, Ho, Wo])``. ``labels`` is the per-pixel argmax
    over classes as a float tensor holding the integers 0..6, not an integer tensor: int32
    tensors outside CAST/GATHER/ONE_HOT fall back to the CPU in the LiteRT GPU delegate, and
    ``labels_mode="select"`` (the default) computes it without ARG_MAX, see
    :func:`first_argmax_float`. ``labels_mode="argmax"`` uses ``torch.argmax(...).float()``; both
    give the same values (first maximum on ties).
    """

    def __init__(
        self,
        out_size: Sequence[int] | None = None,
        num_classes: int = NUM_CLASSES,
        net_size: Sequence[int] = NET_SIZE,
        psp_pool: str = "adaptive",
        labels_mode: str = "select",
        bn_abs_weight: bool = True,
    ) -> None:
        super().__init__(num_classes=num_classes, psp_pool=psp_pool, bn_abs_weight=bn_abs_weight)
        self.out_size = _check_size("out_size", out_size) if out_size is not None else None
        self.net_size = _check_size("net_size", net_size)
        if labels_mode not in LABEL_MODES:
            raise MirrorError(
                f"labels_mode must be one of {', '.join(LABEL_MODES)}, not {labels_mode!r}"
            )
        self.labels_mode = labels_mode
        self.context_encoding.set_feature_size(backbone_size(self.net_size))
        std = torch.tensor(BGR_STD).reshape(1, 3, 1, 1)
        mean = torch.tensor(BGR_MEAN).reshape(1, 3, 1, 1)
        self.register_buffer("input_scale", 0.5 / std, persistent=False)
        self.register_buffer("input_shift", (0.5 - mean) / std, persistent=False)

    def preprocess(self, image: torch.Tensor) -> torch.Tensor:
        """[-1, 1] RGB -> SCHP's normalized BGR at ``net_size``."""
        bgr = torch.cat([image[:, 2:3], image[:, 1:2], image[:, 0:1]], dim=1)
        x = bgr * self.input_scale + self.input_shift
        return _upsample(x, self.net_size)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if image.dim() != 4 or image.shape[1] != 3:
            raise MirrorError(
                "the parser takes an RGB image tensor [N, 3, H, W] in [-1, 1], "
                f"got shape {tuple(image.shape)}"
            )
        out_size = self.out_size if self.out_size is not None else tuple(image.shape[-2:])
        _, fusion, _ = self.forward_heads(self.preprocess(image))
        logits = _upsample(fusion, out_size)
        if self.labels_mode == "select":
            labels = first_argmax_float(logits)
        else:
            labels = torch.argmax(logits, dim=1, keepdim=True).to(logits.dtype)
        return logits, labels


def backbone_size(net_size: Sequence[int]) -> tuple[int, int]:
    """[H, W] of the backbone's output (output stride 16) for a ``net_size`` input: 32x32 at 512."""

    def down(n: int) -> int:  # a 3x3, stride-2, padding-1 conv or max pool
        return (n - 1) // 2 + 1

    h, w = (int(v) for v in net_size)
    for _ in range(4):  # conv1, maxpool, layer2, layer3
        h, w = down(h), down(w)
    return h, w


def _check_size(name: str, size: Sequence[int]) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise MirrorError(
            f"{name} must be a (height, width) pair of positive integers, not {size!r}"
        ) from None
    if h <= 0 or w <= 0 or (h, w) != tuple(size):
        raise MirrorError(
            f"{name} must be a (height, width) pair of positive integers, not {size!r}"
        )
    return h, w


def build_parser(
    out_size: Sequence[int] | None = (256, 192),
    num_classes: int = NUM_CLASSES,
    *,
    net_size: Sequence[int] = NET_SIZE,
    psp_pool: str = "adaptive",
    labels_mode: str = "select",
    bn_abs_weight: bool = True,
) -> CoarseParser:
    """The coarse parser reference graph, weights as initialized under the caller's RNG seed.

    Options: ``out_size`` (H, W) of the returned maps (``None``: the input's size); ``num_classes``;
    ``net_size`` the resolution the network runs at (SCHP: 512x512); ``psp_pool`` ``"adaptive"``
    (SCHP's ``AdaptiveAvgPool2d``) or ``"matmul"`` (same numbers, delegate-friendly);
    ``labels_mode`` ``"select"`` or ``"argmax"``; ``bn_abs_weight`` InPlace-ABN's ``|w| + eps``
    scale (True, the checkpoint's semantics) or a plain batch norm (False).
    """
    return CoarseParser(
        out_size=out_size,
        num_classes=num_classes,
        net_size=net_size,
        psp_pool=psp_pool,
        labels_mode=labels_mode,
        bn_abs_weight=bn_abs_weight,
    )


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = [
    "CLASS_NAMES",
    "INPUT_NAMES",
    "NET_SIZE",
    "NUM_CLASSES",
    "OUTPUT_NAMES",
    "ActivatedBatchNorm",
    "AugmentCE2P",
    "CoarseParser",
    "backbone_size",
    "build_parser",
    "first_argmax_float",
    "parameter_count",
    "parser_input_names",
    "parser_output_names",
]
