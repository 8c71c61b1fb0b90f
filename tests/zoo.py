"""A zoo of ``grid_sample`` models written the way their projects write them.

Each factory returns ``(module, example_inputs, input_names, output_names)`` as
``mirror compile --model zoo:<factory>`` expects. Weights are random (seeded); the
architectures are small versions of the real ones, at small spatial sizes so conversion
stays quick:

- ``spatial_transformer``: a localization net regresses an affine ``theta``;
  ``F.affine_grid`` + ``grid_sample`` (Jaderberg et al.'s STN, PyTorch tutorial form).
- ``flow_warp``: a two-level PWC-style flow estimator; the backward warp builds its base
  grid with ``linspace`` + ``expand`` in ``forward``.
- ``deform_conv``: a DCNv2-style modulated deformable convolution in pure PyTorch
  (offsets and masks from a conv, ``meshgrid`` base grid, 5-D views of the 9 taps).
- ``ms_deform_attn``: a Deformable-DETR encoder layer with the reference
  ``ms_deform_attn_core_pytorch`` (3 levels, 4 heads, 4 points; 5-D/6-D views).
- ``registration``: a VoxelMorph-style 2-D UNet with a ``SpatialTransformer`` holding a
  registered identity-grid buffer, scaling-and-squaring integration, and a nearest-mode
  warp of the moving labels.
- ``video_sr``: FRVSR-style frame-recurrent x4 super-resolution: flow between LR frames,
  ``interpolate`` to HR, backward warp of the previous HR estimate, ``pixel_unshuffle``,
  residual blocks and ``pixel_shuffle``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# ---------------------------------------------------------------------------------------
# Spatial transformer network.


class SpatialTransformerNet(nn.Module):
    mirror_name = "zoo_stn"

    def __init__(self) -> None:
        super().__init__()
        self.localization = nn.Sequential(
            nn.Conv2d(3, 8, kernel_size=7), nn.MaxPool2d(2, stride=2), nn.ReLU(True),
            nn.Conv2d(8, 10, kernel_size=5), nn.MaxPool2d(2, stride=2), nn.ReLU(True),
        )  # fmt: skip
        self.fc_loc = nn.Sequential(nn.Linear(10 * 4 * 4, 32), nn.ReLU(True), nn.Linear(32, 3 * 2))
        self.fc_loc[2].weight.data.mul_(0.1)
        self.fc_loc[2].bias.data.copy_(torch.tensor([1, 0, 0, 0, 1, 0], dtype=torch.float))
        self.classifier = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Linear(32, 10)

    def stn(self, x: torch.Tensor) -> torch.Tensor:
        xs = self.localization(x)
        xs = xs.view(-1, 10 * 4 * 4)
        theta = self.fc_loc(xs).view(-1, 2, 3)
        grid = F.affine_grid(theta, x.size(), align_corners=False)
        return F.grid_sample(x, grid, align_corners=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.stn(x)
        f = self.classifier(x)
        return x, F.log_softmax(self.head(f.mean(dim=(2, 3))), dim=1)


def spatial_transformer():
    torch.manual_seed(0)
    return SpatialTransformerNet().eval(), (torch.rand(1, 3, 32, 32) * 2 - 1,), ["image"], ["aligned", "logits"]


# ---------------------------------------------------------------------------------------
# Optical flow: PWC-style estimator with a backward warp.


def backward_warp(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Warp ``x`` by ``flow`` (pixels); the base grid is built in ``forward``."""
    n, _, h, w = x.shape
    hor = torch.linspace(-1.0, 1.0, w).view(1, 1, 1, w).expand(n, -1, h, -1)
    ver = torch.linspace(-1.0, 1.0, h).view(1, 1, h, 1).expand(n, -1, -1, w)
    grid = torch.cat([hor, ver], 1)
    flow = torch.cat([flow[:, 0:1] / ((w - 1.0) / 2.0), flow[:, 1:2] / ((h - 1.0) / 2.0)], 1)
    return F.grid_sample(x, (grid + flow).permute(0, 2, 3, 1), mode="bilinear", padding_mode="border",
                         align_corners=True)  # fmt: skip


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.LeakyReLU(0.1))


class PWCLite(nn.Module):
    mirror_name = "zoo_flow"

    def __init__(self) -> None:
        super().__init__()
        self.pyramid = nn.ModuleList([nn.Sequential(_conv(3, 16, 2), _conv(16, 16)),
                                      nn.Sequential(_conv(16, 32, 2), _conv(32, 32))])  # fmt: skip
        self.estimators = nn.ModuleList([
            nn.Sequential(_conv(2 * c + 2, 32), _conv(32, 16), nn.Conv2d(16, 2, 3, 1, 1)) for c in (16, 32)
        ])  # fmt: skip

    def forward(self, first: torch.Tensor, second: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats1, feats2 = [first], [second]
        for level in self.pyramid:
            feats1.append(level(feats1[-1]))
            feats2.append(level(feats2[-1]))
        flow = torch.zeros_like(feats1[-1][:, :2])
        for lvl in (2, 1):
            if lvl != 2:
                flow = F.interpolate(flow, scale_factor=2, mode="bilinear", align_corners=False) * 2.0
            warped = backward_warp(feats2[lvl], flow)
            flow = flow + self.estimators[lvl - 1](torch.cat([feats1[lvl], warped, flow], 1))
        flow = F.interpolate(flow, scale_factor=2, mode="bilinear", align_corners=False) * 2.0
        return flow, backward_warp(second, flow)


def flow_warp():
    torch.manual_seed(0)
    frames = (torch.rand(1, 3, 32, 32) * 2 - 1, torch.rand(1, 3, 32, 32) * 2 - 1)
    return PWCLite().eval(), frames, ["first", "second"], ["flow", "warped"]


# ---------------------------------------------------------------------------------------
# Deformable convolution (DCNv2, pure PyTorch).


class DeformConv2d(nn.Module):
    """Modulated 3x3 deformable convolution: each of the 9 taps is sampled at its own
    learned offset with ``grid_sample`` and weighted by a learned mask."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.k = 3
        self.offset_conv = nn.Conv2d(cin, 3 * self.k * self.k, 3, padding=1)
        nn.init.normal_(self.offset_conv.weight, std=0.05)
        self.weight = nn.Parameter(torch.randn(cout, cin, self.k, self.k) * 0.1)
        self.bias = nn.Parameter(torch.zeros(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        kk = self.k * self.k
        out = self.offset_conv(x)
        offset, mask = out[:, : 2 * kk], torch.sigmoid(out[:, 2 * kk :])
        ys, xs = torch.meshgrid(torch.arange(h, dtype=x.dtype), torch.arange(w, dtype=x.dtype), indexing="ij")
        ky, kx = torch.meshgrid(torch.arange(-1, 2, dtype=x.dtype), torch.arange(-1, 2, dtype=x.dtype), indexing="ij")
        offset = offset.view(n, kk, 2, h, w)
        py = ys.view(1, 1, h, w) + ky.reshape(1, kk, 1, 1) + offset[:, :, 0]
        px = xs.view(1, 1, h, w) + kx.reshape(1, kk, 1, 1) + offset[:, :, 1]
        grid = torch.stack([px / (w - 1) * 2 - 1, py / (h - 1) * 2 - 1], dim=-1)  # n, kk, h, w, 2
        grid = grid.permute(0, 2, 1, 3, 4).reshape(n, h, kk * w, 2)
        taps = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        taps = taps.view(n, c, h, kk, w).permute(0, 1, 3, 2, 4) * mask.unsqueeze(1)
        cols = taps.reshape(n, c * kk, h * w)
        out = torch.matmul(self.weight.view(self.weight.shape[0], -1), cols)
        return out.view(n, -1, h, w) + self.bias.view(1, -1, 1, 1)


class DeformNet(nn.Module):
    mirror_name = "zoo_deform"

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.dcn1 = DeformConv2d(16, 16)
        self.bn1 = nn.BatchNorm2d(16)
        self.dcn2 = DeformConv2d(16, 32)
        self.head = nn.Conv2d(32, 8, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        f = self.stem(image)
        f = f + F.relu(self.bn1(self.dcn1(f)))
        return self.head(F.relu(self.dcn2(F.max_pool2d(f, 2))))


def deform_conv():
    torch.manual_seed(0)
    return DeformNet().eval(), (torch.rand(1, 3, 32, 32) * 2 - 1,), ["image"], ["features"]


# ---------------------------------------------------------------------------------------
# Multi-scale deformable attention (Deformable-DETR's reference form).


def ms_deform_attn_core_pytorch(value, value_spatial_shapes, sampling_locations, attention_weights):
    N_, S_, M_, D_ = value.shape
    _, Lq_, M_, L_, P_, _ = sampling_locations.shape
    value_list = value.split([H_ * W_ for H_, W_ in value_spatial_shapes], dim=1)
    sampling_grids = 2 * sampling_locations - 1
    sampling_value_list = []
    for lid_, (H_, W_) in enumerate(value_spatial_shapes):
        value_l_ = value_list[lid_].flatten(2).transpose(1, 2).reshape(N_ * M_, D_, H_, W_)
        sampling_grid_l_ = sampling_grids[:, :, :, lid_].transpose(1, 2).flatten(0, 1)
        sampling_value_l_ = F.grid_sample(value_l_, sampling_grid_l_, mode="bilinear", padding_mode="zeros",
                                          align_corners=False)  # fmt: skip
        sampling_value_list.append(sampling_value_l_)
    attention_weights = attention_weights.transpose(1, 2).reshape(N_ * M_, 1, Lq_, L_ * P_)
    output = (torch.stack(sampling_value_list, dim=-2).flatten(-2) * attention_weights).sum(-1).view(N_, M_ * D_, Lq_)
    return output.transpose(1, 2).contiguous()


class MSDeformAttn(nn.Module):
    def __init__(self, d_model: int = 32, n_levels: int = 3, n_heads: int = 4, n_points: int = 4) -> None:
        super().__init__()
        self.d_model, self.n_levels, self.n_heads, self.n_points = d_model, n_levels, n_heads, n_points
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)

    def forward(self, query, reference_points, input_flatten, input_spatial_shapes):
        N, Len_q, _ = query.shape
        N, Len_in, _ = input_flatten.shape
        value = self.value_proj(input_flatten).view(N, Len_in, self.n_heads, self.d_model // self.n_heads)
        sampling_offsets = self.sampling_offsets(query).view(N, Len_q, self.n_heads, self.n_levels, self.n_points, 2)
        attention_weights = self.attention_weights(query).view(N, Len_q, self.n_heads, self.n_levels * self.n_points)
        attention_weights = F.softmax(attention_weights, -1).view(N, Len_q, self.n_heads, self.n_levels, self.n_points)
        offset_normalizer = torch.tensor([[w, h] for h, w in input_spatial_shapes], dtype=query.dtype)
        sampling_locations = (
            reference_points[:, :, None, :, None, :]
            + sampling_offsets / offset_normalizer[None, None, None, :, None, :]
        )
        output = ms_deform_attn_core_pytorch(value, input_spatial_shapes, sampling_locations, attention_weights)
        return self.output_proj(output)


def _reference_points(spatial_shapes, dtype):
    """Deformable-DETR's encoder reference points (normalized pixel centres of every level)."""
    points = []
    for H_, W_ in spatial_shapes:
        ref_y, ref_x = torch.meshgrid(torch.linspace(0.5, H_ - 0.5, H_, dtype=dtype),
                                      torch.linspace(0.5, W_ - 0.5, W_, dtype=dtype), indexing="ij")  # fmt: skip
        points.append(torch.stack((ref_x.reshape(-1)[None] / W_, ref_y.reshape(-1)[None] / H_), -1))
    ref = torch.cat(points, 1)
    return ref[:, :, None].expand(-1, -1, len(spatial_shapes), -1)


class DeformableEncoder(nn.Module):
    mirror_name = "zoo_msda"

    def __init__(self, d_model: int = 32) -> None:
        super().__init__()
        self.backbone = nn.ModuleList([
            nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 16, 3, 2, 1), nn.ReLU()),
            nn.Sequential(nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU()),
            nn.Sequential(nn.Conv2d(32, 64, 3, 2, 1), nn.ReLU()),
        ])  # fmt: skip
        self.input_proj = nn.ModuleList([nn.Conv2d(c, d_model, 1) for c in (16, 32, 64)])
        self.level_embed = nn.Parameter(torch.randn(3, d_model) * 0.1)
        self.attn = MSDeformAttn(d_model)
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.ffn = nn.Sequential(nn.Linear(d_model, 64), nn.ReLU(), nn.Linear(64, d_model))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        srcs, f = [], image
        for stage, proj in zip(self.backbone, self.input_proj, strict=True):
            f = stage(f)
            srcs.append(proj(f))
        shapes = [tuple(s.shape[2:]) for s in srcs]
        src = torch.cat([s.flatten(2).transpose(1, 2) + self.level_embed[i].view(1, 1, -1)
                         for i, s in enumerate(srcs)], 1)  # fmt: skip
        ref = _reference_points(shapes, image.dtype)
        src = self.norm1(src + self.attn(src, ref, src, shapes))
        return self.norm2(src + self.ffn(src))


def ms_deform_attn():
    torch.manual_seed(0)
    return DeformableEncoder().eval(), (torch.rand(1, 3, 64, 64) * 2 - 1,), ["image"], ["memory"]


# ---------------------------------------------------------------------------------------
# Image registration (VoxelMorph, 2-D).


class SpatialTransformer(nn.Module):
    """VoxelMorph's N-D spatial transformer, with its identity grid as a registered buffer."""

    def __init__(self, size: tuple[int, int], mode: str = "bilinear") -> None:
        super().__init__()
        self.mode = mode
        vectors = [torch.arange(0, s) for s in size]
        grids = torch.meshgrid(vectors, indexing="ij")
        grid = torch.stack(grids)
        grid = torch.unsqueeze(grid, 0)
        grid = grid.type(torch.FloatTensor)
        self.register_buffer("grid", grid, persistent=False)

    def forward(self, src: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        new_locs = self.grid + flow
        shape = flow.shape[2:]
        for i in range(len(shape)):
            new_locs[:, i, ...] = 2 * (new_locs[:, i, ...] / (shape[i] - 1) - 0.5)
        new_locs = new_locs.permute(0, 2, 3, 1)
        new_locs = new_locs[..., [1, 0]]
        return F.grid_sample(src, new_locs, align_corners=True, mode=self.mode)


class VecInt(nn.Module):
    """Integrates a stationary velocity field by scaling and squaring."""

    def __init__(self, inshape: tuple[int, int], nsteps: int) -> None:
        super().__init__()
        self.nsteps = nsteps
        self.scale = 1.0 / (2**self.nsteps)
        self.transformer = SpatialTransformer(inshape)

    def forward(self, vec: torch.Tensor) -> torch.Tensor:
        vec = vec * self.scale
        for _ in range(self.nsteps):
            vec = vec + self.transformer(vec, vec)
        return vec


class VxmUnet(nn.Module):
    def __init__(self, enc=(16, 32, 32), dec=(32, 32, 16)) -> None:
        super().__init__()
        self.down = nn.ModuleList()
        prev = 2
        for c in enc:
            self.down.append(nn.Sequential(nn.Conv2d(prev, c, 3, 1, 1), nn.LeakyReLU(0.2)))
            prev = c
        self.up = nn.ModuleList()
        skips = list(enc[:-1])[::-1] + [2]
        for c, s in zip(dec, skips, strict=True):
            self.up.append(nn.Sequential(nn.Conv2d(prev + s, c, 3, 1, 1), nn.LeakyReLU(0.2)))
            prev = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        history = [x]
        for i, layer in enumerate(self.down):
            x = layer(x)
            if i < len(self.down) - 1:
                history.append(x)
                x = F.max_pool2d(x, 2)
        for layer in self.up:
            x = F.interpolate(x, scale_factor=2, mode="nearest") if x.shape[-1] < history[-1].shape[-1] else x
            x = layer(torch.cat([x, history.pop()], 1))
        return x


class VxmDense(nn.Module):
    mirror_name = "zoo_vxm"

    def __init__(self, inshape: tuple[int, int] = (32, 32)) -> None:
        super().__init__()
        self.unet = VxmUnet()
        self.flow = nn.Conv2d(16, 2, 3, padding=1)
        self.flow.weight = nn.Parameter(torch.distributions.Normal(0, 1e-2).sample(self.flow.weight.shape))
        self.flow.bias = nn.Parameter(torch.zeros(self.flow.bias.shape))
        self.integrate = VecInt(inshape, 3)
        self.transformer = SpatialTransformer(inshape)
        self.label_transformer = SpatialTransformer(inshape, mode="nearest")

    def forward(self, moving, fixed, moving_labels):
        flow_field = self.flow(self.unet(torch.cat([moving, fixed], dim=1))) * 10.0
        pos_flow = self.integrate(flow_field)
        return self.transformer(moving, pos_flow), self.label_transformer(moving_labels, pos_flow), pos_flow


def registration():
    torch.manual_seed(0)
    moving, fixed = torch.rand(1, 1, 32, 32), torch.rand(1, 1, 32, 32)
    labels = torch.randint(0, 5, (1, 1, 32, 32)).float()
    return VxmDense().eval(), (moving, fixed, labels), ["moving", "fixed", "moving_labels"], \
        ["moved", "moved_labels", "flow"]  # fmt: skip


# ---------------------------------------------------------------------------------------
# Video super-resolution (FRVSR, x4).


def flow_warp_nhwc(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """BasicVSR-style warp: ``flow`` is (n, h, w, 2) in pixels; meshgrid base grid."""
    _, _, h, w = x.size()
    grid_y, grid_x = torch.meshgrid(torch.arange(0, h), torch.arange(0, w), indexing="ij")
    grid = torch.stack((grid_x, grid_y), 2).type_as(x)
    grid.requires_grad = False
    grid_flow = grid + flow
    grid_flow_x = 2.0 * grid_flow[:, :, :, 0] / max(w - 1, 1) - 1.0
    grid_flow_y = 2.0 * grid_flow[:, :, :, 1] / max(h - 1, 1) - 1.0
    grid_flow = torch.stack((grid_flow_x, grid_flow_y), dim=3)
    return F.grid_sample(x, grid_flow, mode="bilinear", padding_mode="zeros", align_corners=True)


class ResBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(c, c, 3, 1, 1), nn.Conv2d(c, c, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


class FRVSR(nn.Module):
    mirror_name = "zoo_vsr"

    def __init__(self, scale: int = 4, c: int = 32) -> None:
        super().__init__()
        self.scale = scale
        self.fnet = nn.Sequential(
            _conv(6, 16), nn.MaxPool2d(2), _conv(16, 32), nn.Upsample(scale_factor=2, mode="bilinear"),
            _conv(32, 16), nn.Conv2d(16, 2, 3, 1, 1), nn.Tanh(),
        )  # fmt: skip
        self.head = nn.Conv2d(3 + 3 * scale * scale, c, 3, 1, 1)
        self.body = nn.Sequential(*[ResBlock(c) for _ in range(3)])
        self.up = nn.Sequential(nn.Conv2d(c, c * 4, 3, 1, 1), nn.PixelShuffle(2), nn.ReLU(),
                                nn.Conv2d(c, 3 * 4, 3, 1, 1), nn.PixelShuffle(2))  # fmt: skip

    def forward(self, lr_cur, lr_prev, hr_prev):
        flow = self.fnet(torch.cat([lr_cur, lr_prev], 1)) * 8.0
        hr_flow = F.interpolate(flow, scale_factor=self.scale, mode="bilinear", align_corners=False) * self.scale
        warped = flow_warp_nhwc(hr_prev, hr_flow.permute(0, 2, 3, 1))
        feat = self.head(torch.cat([lr_cur, F.pixel_unshuffle(warped, self.scale)], 1))
        base = F.interpolate(lr_cur, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return base + self.up(self.body(feat)), flow


def video_sr():
    torch.manual_seed(0)
    lr_cur, lr_prev = torch.rand(1, 3, 16, 16) * 2 - 1, torch.rand(1, 3, 16, 16) * 2 - 1
    hr_prev = torch.rand(1, 3, 64, 64) * 2 - 1
    return FRVSR().eval(), (lr_cur, lr_prev, hr_prev), ["lr_cur", "lr_prev", "hr_prev"], ["hr", "flow"]


ZOO = {
    "spatial_transformer": spatial_transformer,
    "flow_warp": flow_warp,
    "deform_conv": deform_conv,
    "ms_deform_attn": ms_deform_attn,
    "registration": registration,
    "video_sr": video_sr,
}
