"""DIVTON's warper: the PF-AFN appearance-flow warping module (AFWM) with ``input_nc = 10``.

Module and parameter names follow PF-AFN's checkpoint layout
(``image_features.encoders.0.0.block.0.weight``, ``cond_FPN.smooth.4.bias``,
``aflow_net.netMain.3.0.weight`` ...), so the authors' ``PFAFN_warp_*.pth`` loads as is.

Two forms share one set of weights:

* ``"divton"`` (the reference): correlation + netMain at the three coarsest pyramid levels
  only; the two finest levels run netRefine alone. netMain[3] and netMain[4] stay in the
  module (the checkpoint holds them) but are never called.
* ``"full"``: PF-AFN as published, correlation + netMain at all five levels. The
  ``strip_correlation`` pass turns this form's exported program into the DIVTON form.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mirror.graphs.correlation import correlation

FEATURE_CHANNELS = (64, 128, 256, 256, 256)
FPN_CHANNELS = 256
CORRELATION_LEVELS = {"divton": (0, 1, 2), "full": (0, 1, 2, 3, 4)}


class DownSample(nn.Module):
    """BN-ReLU-conv3x3 stride 2, no bias."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.ReLU(),
            nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class ResBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 plus the identity."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x) + x


class FeatureEncoder(nn.Module):
    """Five DownSample + 2 ResBlock levels; returns the features of every level, finest first."""

    def __init__(self, in_channels: int, channels: Sequence[int] = FEATURE_CHANNELS) -> None:
        super().__init__()
        widths = [in_channels, *channels]
        self.encoders = nn.ModuleList(
            nn.Sequential(DownSample(widths[i], widths[i + 1]), ResBlock(widths[i + 1]), ResBlock(widths[i + 1]))
            for i in range(len(channels))
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for encoder in self.encoders:
            x = encoder(x)
            features.append(x)
        return features


class RefinePyramid(nn.Module):
    """FPN: 1x1 ``adaptive`` convs, top-down nearest x2 add, 3x3 ``smooth`` convs.

    ``adaptive[i]`` and ``smooth[i]`` run coarsest first (PF-AFN's order); the returned
    tuple is finest first.
    """

    def __init__(self, channels: Sequence[int] = FEATURE_CHANNELS, fpn_dim: int = FPN_CHANNELS) -> None:
        super().__init__()
        self.adaptive = nn.ModuleList(nn.Conv2d(c, fpn_dim, 1) for c in reversed(channels))
        self.smooth = nn.ModuleList(nn.Conv2d(fpn_dim, fpn_dim, 3, padding=1) for _ in channels)

    def forward(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        out = []
        last = None
        for i, feature in enumerate(reversed(features)):
            x = self.adaptive[i](feature)
            if last is not None:
                x = x + F.interpolate(last, scale_factor=2, mode="nearest")
            x = self.smooth[i](x)
            last = x
            out.append(x)
        return tuple(reversed(out))


def _flow_head(in_channels: int) -> nn.Sequential:
    """in -> 128 -> 64 -> 32 -> 2, 3x3 convs with LeakyReLU 0.1 between them."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 128, 3, padding=1),
        nn.LeakyReLU(0.1),
        nn.Conv2d(128, 64, 3, padding=1),
        nn.LeakyReLU(0.1),
        nn.Conv2d(64, 32, 3, padding=1),
        nn.LeakyReLU(0.1),
        nn.Conv2d(32, 2, 3, padding=1),
    )


def offsets_to_grid(offsets: torch.Tensor) -> torch.Tensor:
    """Pixel offsets [B, 2, H, W] (x, y) -> normalized sampling grid [B, H, W, 2].

    Adds the pixel meshgrid, then normalizes with ``g / ((size - 1) / 2) - 1``.
    """
    _, _, height, width = offsets.shape
    xs = torch.arange(width, dtype=offsets.dtype, device=offsets.device).view(1, 1, width)
    ys = torch.arange(height, dtype=offsets.dtype, device=offsets.device).view(1, height, 1)
    gx = (xs + offsets[:, 0]) / ((width - 1) / 2) - 1
    gy = (ys + offsets[:, 1]) / ((height - 1) / 2) - 1
    return torch.stack([gx, gy], dim=-1)


class AFlowNet(nn.Module):
    """The coarse-to-fine appearance-flow estimator (level 0 is the coarsest, 8x6)."""

    def __init__(
        self,
        num_levels: int = len(FEATURE_CHANNELS),
        fpn_dim: int = FPN_CHANNELS,
        correlation_levels: Sequence[int] = CORRELATION_LEVELS["divton"],
        align_corners: bool = False,
        interp_align_corners: bool = False,
    ) -> None:
        super().__init__()
        self.netMain = nn.ModuleList(_flow_head(49) for _ in range(num_levels))
        self.netRefine = nn.ModuleList(_flow_head(2 * fpn_dim) for _ in range(num_levels))
        if 0 not in correlation_levels:
            raise ValueError("the coarsest level (0) must run correlation: it starts the flow")
        self.correlation_levels = tuple(sorted(correlation_levels))
        self.align_corners = align_corners
        self.interp_align_corners = interp_align_corners

    def _sample(self, x: torch.Tensor, grid: torch.Tensor, padding_mode: str = "border") -> torch.Tensor:
        return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding_mode, align_corners=self.align_corners)

    def _compose(self, last_flow: torch.Tensor | None, offsets: torch.Tensor) -> torch.Tensor:
        """New flow [B, 2, H, W]: the offsets' grid, composed with the previous flow."""
        grid = offsets_to_grid(offsets)
        if last_flow is None:
            return grid.permute(0, 3, 1, 2)
        return self._sample(last_flow, grid)

    def forward(
        self, cloth: torch.Tensor, cloth_pyramid: Sequence[torch.Tensor], cond_pyramid: Sequence[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        num_levels = len(cloth_pyramid)
        last_flow: torch.Tensor | None = None
        for level in range(num_levels):
            cloth_feat = cloth_pyramid[num_levels - 1 - level]
            cond_feat = cond_pyramid[num_levels - 1 - level]
            if level in self.correlation_levels:
                if last_flow is not None:
                    warped = self._sample(cloth_feat, last_flow.detach().permute(0, 2, 3, 1))
                else:
                    warped = cloth_feat
                cost = F.leaky_relu(correlation(warped, cond_feat), 0.1)
                last_flow = self._compose(last_flow, self.netMain[level](cost))
            assert last_flow is not None  # level 0 always runs correlation
            warped = self._sample(cloth_feat, last_flow.permute(0, 2, 3, 1))
            offsets = self.netRefine[level](torch.cat([warped, cond_feat], dim=1))
            flow = self._compose(last_flow, offsets)
            last_flow = F.interpolate(flow, scale_factor=2, mode="bilinear", align_corners=self.interp_align_corners)
        assert last_flow is not None
        return self._sample(cloth, last_flow.permute(0, 2, 3, 1)), last_flow


class AFWM(nn.Module):
    """Appearance-flow warping module: two encoders, two FPNs, the flow net."""

    def __init__(self, input_nc: int = 10, **flow_options) -> None:
        super().__init__()
        self.image_features = FeatureEncoder(3)
        self.cond_features = FeatureEncoder(input_nc)
        self.image_FPN = RefinePyramid()
        self.cond_FPN = RefinePyramid()
        self.aflow_net = AFlowNet(**flow_options)

    def forward(self, cond: torch.Tensor, cloth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cond_pyramid = self.cond_FPN(self.cond_features(cond))
        cloth_pyramid = self.image_FPN(self.image_features(cloth))
        return self.aflow_net(cloth, cloth_pyramid, cond_pyramid)


class WarpGraph(AFWM):
    """The deployable warp graph: AFWM (same state_dict keys) with the try-on wrapper.

    Inputs (all [1, C, 256, 192], float32):
      person  [1,3]  RGB in [-1, 1], background set to white (1.0)
      parsing [1,7]  one-hot coarse parsing (0 background ... 6 lower legs)
      cloth   [1,3]  product RGB in [-1, 1]
      edge    [1,1]  garment mask in [0, 1]
    Outputs:
      flow          [1,2]  sampling grid (x, y) in normalized coordinates [-1, 1]
      warped_cloth  [1,3]  (cloth * edge) sampled by flow, border padding
      warped_edge   [1,1]  edge sampled by flow, zero padding
      gen_input     [1,7]  cat[person, warped_cloth, warped_edge]
    """

    def __init__(self, form: str = "divton", align_corners: bool = False, interp_align_corners: bool = False) -> None:
        if form not in CORRELATION_LEVELS:
            raise ValueError(f"unknown warper form {form!r}; use one of {sorted(CORRELATION_LEVELS)}")
        super().__init__(
            input_nc=10,
            correlation_levels=CORRELATION_LEVELS[form],
            align_corners=align_corners,
            interp_align_corners=interp_align_corners,
        )
        self.form = form
        self.align_corners = align_corners

    def forward(  # type: ignore[override]
        self, person: torch.Tensor, parsing: torch.Tensor, cloth: torch.Tensor, edge: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        cond = torch.cat([person, parsing], dim=1)
        warped_cloth, flow = super().forward(cond, cloth * edge)
        grid = flow.permute(0, 2, 3, 1)
        warped_edge = F.grid_sample(edge, grid, mode="bilinear", padding_mode="zeros", align_corners=self.align_corners)
        gen_input = torch.cat([person, warped_cloth, warped_edge], dim=1)
        return flow, warped_cloth, warped_edge, gen_input
