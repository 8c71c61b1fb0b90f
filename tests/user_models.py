"""Small user models for end-to-end compile tests (``--model user_models:flow_warp``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Models written with the idioms the LiteRT legalizations take (benchmarks/zoo_gpu_coverage.py
# --module user_models measures them against stock litert-torch).
IDIOMS = ("label_cond", "psp_head", "unfold_corr", "peak_scores", "thumbnail", "row_peaks", "row_pick")


class FlowWarp(nn.Module):
    """Predicts a flow from two images and warps the first by it: the shape of a
    flow-warping model (optical flow, appearance flow, spatial transformer)."""

    mirror_name = "flowwarp"

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(6, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 2, 3, padding=1))

    def forward(self, source: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, _, h, w = source.shape
        offsets = torch.tanh(self.features(torch.cat([source, target], dim=1))) * 4  # up to 4 px
        xs = torch.arange(w, dtype=source.dtype).view(1, 1, w).expand(1, h, w)
        ys = torch.arange(h, dtype=source.dtype).view(1, h, 1).expand(1, h, w)
        gx = (xs + offsets[:, 0]) * (2 / (w - 1)) - 1
        gy = (ys + offsets[:, 1]) * (2 / (h - 1)) - 1
        grid = torch.stack([gx, gy], dim=-1)
        warped = F.grid_sample(source, grid, mode="bilinear", padding_mode="border", align_corners=True)
        return warped, offsets


def flow_warp():
    torch.manual_seed(0)
    model = FlowWarp().eval()
    example = (torch.rand(1, 3, 32, 24) * 2 - 1, torch.rand(1, 3, 32, 24) * 2 - 1)
    return model, example, ["source", "target"], ["warped", "offsets"]


class ExpandHead(nn.Module):
    """Concatenates features with their channel mean expanded over the channels, the way
    attention and pooling code often writes it: ``expand`` lowers to BROADCAST_TO, which
    LiteRT's GPU delegate refuses, so part of the model stays on the CPU."""

    mirror_name = "expandhead"

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        f = self.conv(image)
        pooled = f.mean(dim=(2, 3), keepdim=True).expand(-1, -1, f.shape[2], f.shape[3])
        return torch.cat([f, pooled], dim=1)


def expand_head():
    torch.manual_seed(0)
    return ExpandHead().eval(), (torch.rand(1, 3, 16, 12) * 2 - 1,), ["image"], ["features"]


class GatherHead(nn.Module):
    """Picks 8 fixed positions per channel out of a 64x64 map's 4096 with ``torch.gather``,
    as keypoint and sampling heads do. The gathered dimension is longer than float16 counts
    exactly (2048), so ``litert::gather_as_select`` leaves it, litert-torch lowers it to
    GATHER_ND, which LiteRT's GPU delegate refuses, and part of the model stays on the CPU."""

    mirror_name = "gatherhead"

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.register_buffer("where", (torch.arange(32).view(1, 4, 8) * 127) % 4096)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.gather(self.conv(image).flatten(2), 2, self.where)


def gather_head():
    torch.manual_seed(0)
    return GatherHead().eval(), (torch.rand(1, 3, 64, 64) * 2 - 1,), ["image"], ["picked"]


class ResizeDecoder(nn.Module):
    """A decoder that resizes its features to a size that is not a whole multiple of the
    input's (a segmentation head restoring the frame size): litert-torch converts this
    nearest-neighbour resize wrongly, while ONNX gets it right."""

    mirror_name = "resizedecoder"

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))
        self.head = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 1, 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        features = self.encoder(image)
        restored = F.interpolate(features, size=(37, 29), mode="nearest")
        return torch.sigmoid(self.head(restored))


def resize_decoder():
    torch.manual_seed(0)
    return ResizeDecoder().eval(), (torch.randn(1, 3, 24, 20),), ["image"], ["mask"]


class Unexportable(nn.Module):
    """Branches on its input's values: torch.export cannot trace that into one graph."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return x * 2
        return -x


def unexportable():
    return Unexportable().eval(), (torch.randn(1, 3, 8, 8),)


class TwoLevelWarp(nn.Module):
    """Warps, refines the flow from the warped image, and warps again, composing pixel
    offsets into a normalized grid after each step the way coarse-to-fine flow nets do.
    Index arithmetic sits between the two samplers: ONNX export re-traces such a graph
    and renames its nodes (see targets/onnx.py ``exporter_program``)."""

    mirror_name = "twolevelwarp"

    def __init__(self) -> None:
        super().__init__()
        self.coarse = nn.Conv2d(6, 2, 3, padding=1)
        self.refine = nn.Conv2d(5, 2, 3, padding=1)

    @staticmethod
    def _grid(offsets: torch.Tensor) -> torch.Tensor:
        _, _, h, w = offsets.shape
        xs = torch.arange(w, dtype=offsets.dtype).view(1, 1, w).expand(1, h, w)
        ys = torch.arange(h, dtype=offsets.dtype).view(1, h, 1).expand(1, h, w)
        gx = (xs + offsets[:, 0]) / ((w - 1) / 2) - 1
        gy = (ys + offsets[:, 1]) / ((h - 1) / 2) - 1
        return torch.stack([gx, gy], dim=-1)

    def forward(self, source: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flow = torch.tanh(self.coarse(torch.cat([source, target], dim=1))) * 3
        warped = F.grid_sample(source, self._grid(flow), padding_mode="border", align_corners=False)
        flow = flow + torch.tanh(self.refine(torch.cat([warped, flow], dim=1)))
        return F.grid_sample(source, self._grid(flow), padding_mode="border", align_corners=False), flow


def two_level_warp():
    torch.manual_seed(0)
    model = TwoLevelWarp().eval()
    example = (torch.rand(1, 3, 24, 20) * 2 - 1, torch.rand(1, 3, 24, 20) * 2 - 1)
    return model, example, ["source", "target"], ["warped", "flow"]


class RowPick(nn.Module):
    """Picks one feature row and one column by indices computed from the input (either may be
    negative, counting from the end): ``select`` at a runtime scalar and an ``index`` with a
    0-d index tensor, which litert-torch cannot convert as exported."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.conv(x)
        j = (x[0, 0, 0, 0] * 4).round().clamp(-16, 15).to(torch.int64)  # a row in [-16, 15]
        k = (x[0, 1, 0, 0] * 4).round().clamp(-16, 15).to(torch.int64)
        return f + f.select(2, j).unsqueeze(2) + f[:, :, :, k].unsqueeze(3)


def row_pick():
    torch.manual_seed(0)
    return RowPick().eval(), (torch.randn(1, 3, 16, 16),)


class RowPeaks(nn.Module):
    """A keypoint head that reads, for every channel and column of its feature map, the
    features at two rows its score maps point to: ``torch.gather`` along the rows with an
    index computed from the input. litert-torch lowers the gather to GATHER_ND, which
    LiteRT's GPU delegate refuses."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Conv2d(3, 8, 3, padding=1)
        self.scores = nn.Conv2d(3, 16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        n, c, h, w = f.shape
        where = torch.sigmoid(self.scores(x)).mean(dim=2, keepdim=True)  # [N, 2C, 1, W] in (0, 1)
        rows = (where * h).clamp(0, h - 1).long().view(n, c, 2, w)  # two rows per channel and column
        return torch.gather(f, 2, rows)


def row_peaks():
    torch.manual_seed(0)
    return RowPeaks().eval(), (torch.randn(1, 3, 16, 12),)


class CubeStem(nn.Module):
    """A ResNet-style stem whose max-pool output is [1, 16, 16, 16]: channels = height = width,
    so LiteRT's NHWC tensor has the reference's NCHW shape."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.head = nn.Conv2d(16, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(torch.relu(self.conv(x))))


def cube_stem():
    torch.manual_seed(0)
    return CubeStem().eval(), (torch.randn(1, 3, 32, 32),)


class LabelCond(nn.Module):
    """Conditions an image on a label map the way try-on and segmentation code does inside
    the model: class ids in (int64), one-hot channels (``F.one_hot``) and the background
    (label 0) set to white computed in the graph. Unchanged, litert-torch cannot convert
    ``one_hot`` ("Lowering not found: aten._assert_async.msg")."""

    mirror_name = "labelcond"

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3 + 7, 4, 3, padding=1)

    def forward(self, image: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        parsing = F.one_hot(labels, 7).permute(0, 3, 1, 2).float()
        person = torch.where((labels == 0).unsqueeze(1), torch.ones_like(image), image)
        return self.conv(torch.cat([person, parsing], dim=1))


def label_cond():
    torch.manual_seed(0)
    example = (torch.rand(1, 3, 16, 12) * 2 - 1, torch.randint(0, 7, (1, 16, 12)))
    return LabelCond().eval(), example, ["image", "labels"], ["out"]


class PspHead(nn.Module):
    """A segmentation head written the way PSPNet and GAN code write it: replicate-padded
    convolutions (``padding_mode="replicate"``), a pyramid of adaptive average pools to
    1, 2, 3 and 6 bins and an adaptive max pool to 3 over a 32x24 map, upsampled and
    concatenated, and a 2x bicubic upsampling at the end. Unchanged, litert-torch lowers the
    padding to a MIRROR_PAD mode, the uneven pools to GATHER_ND and rank-6 tensors and the
    bicubic to GATHER_NDs, all refused by LiteRT's GPU delegate, and cannot convert the
    max pool at all."""

    mirror_name = "psphead"

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=2, padding_mode="replicate")
        self.head = nn.Conv2d(8 * 6, 4, 3, padding=1, padding_mode="replicate")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = torch.relu(self.stem(x))[:, :, 1:-1, 1:-1]
        pools = [F.adaptive_avg_pool2d(f, k) for k in (1, 2, 3, 6)] + [F.adaptive_max_pool2d(f, 3)]
        pooled = [F.interpolate(p, size=f.shape[-2:], mode="bilinear", align_corners=False) for p in pools]
        return F.interpolate(self.head(torch.cat([f, *pooled], dim=1)), scale_factor=2, mode="bicubic")


def psp_head():
    torch.manual_seed(0)
    return PspHead().eval(), (torch.rand(1, 3, 32, 24) * 2 - 1,), ["image"], ["logits"]


class UnfoldCorrelation(nn.Module):
    """A local correlation written with ``F.unfold``, as flow networks write it: each
    feature vector of the first image against the 3x3 neighbourhood of the second. Unchanged,
    litert-torch lowers the unfold (``aten.im2col``) to GATHER_ND and rank-6 tensors."""

    mirror_name = "unfoldcorr"

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        fa, fb = self.features(a), self.features(b)
        n, c, h, w = fb.shape
        patches = F.unfold(fb, 3, padding=1).view(n, c, 9, h, w)
        return (fa.unsqueeze(2) * patches).mean(dim=1)


def unfold_corr():
    torch.manual_seed(0)
    example = (torch.rand(1, 3, 16, 12) * 2 - 1, torch.rand(1, 3, 16, 12) * 2 - 1)
    return UnfoldCorrelation().eval(), example, ["a", "b"], ["correlation"]


class PeakScores(nn.Module):
    """A keypoint head's top-k: the 4 strongest responses of each heatmap channel, and where
    the 3 strongest peaks over all channels are (flattened index). Unchanged, litert-torch
    lowers the values-only topk to STABLEHLO_SORT, which neither LiteRT's CPU interpreter
    nor its GPU delegate runs, and the other to TOPK_V2, which is not a GPU delegate op."""

    mirror_name = "peakscores"

    def __init__(self) -> None:
        super().__init__()
        self.heat = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        heat = self.heat(x)
        scores = heat.flatten(2).topk(4, dim=2).values
        return scores, heat.amax(dim=1).flatten(1).topk(3).indices.float()


def peak_scores():
    torch.manual_seed(0)
    return PeakScores().eval(), (torch.rand(1, 3, 16, 12) * 2 - 1,), ["image"], ["scores", "positions"]


class Thumbnail(nn.Module):
    """Downscales its features without aliasing (``antialias=True``, as PIL resizes) and
    upscales them back with ``nearest-exact``. Unchanged, litert-torch cannot convert the
    first ("Lowering not found") and coremltools converts it as a plain bilinear resize
    (0.25 off PyTorch); it stops at the second ("Unsupported fx node")."""

    mirror_name = "thumbnail"

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        small = F.interpolate(self.conv(x), scale_factor=0.5, mode="bilinear", antialias=True)
        return F.interpolate(small, scale_factor=2, mode="nearest-exact")


def thumbnail():
    torch.manual_seed(0)
    return Thumbnail().eval(), (torch.rand(1, 3, 32, 24) * 2 - 1,), ["image"], ["restored"]
