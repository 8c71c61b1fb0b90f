"""DIVTON's generator: PF-AFN's ResUnetGenerator(7, 5, num_downs=5, ngf=64, BatchNorm).

Parameter names follow PF-AFN's checkpoint layout (``model.model.4.model.0.weight`` ...),
so the authors' ``PFAFN_gen_*.pth`` loads as is. The 5 output channels are split [3, 1, 1]
into the rendered person, the composition mask and DIVTON's extra gen_mask ("MO").
"""

from __future__ import annotations

import torch
from torch import nn


class ResidualBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the identity, then ReLU. Bias-free convs."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.relu = nn.ReLU()
        self.block = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.block(x) + x)


class ResUnetSkipConnectionBlock(nn.Module):
    """One U-Net level: 3x3 stride-2 down conv, residual blocks, nearest x2 + 3x3 up conv.

    Every level but the outermost returns ``cat[x, level(x)]`` (the skip connection).
    """

    def __init__(
        self,
        outer_nc: int,
        inner_nc: int,
        input_nc: int | None = None,
        submodule: nn.Module | None = None,
        outermost: bool = False,
        innermost: bool = False,
    ) -> None:
        super().__init__()
        self.outermost = outermost
        input_nc = outer_nc if input_nc is None else input_nc
        down_conv = nn.Conv2d(input_nc, inner_nc, 3, stride=2, padding=1, bias=False)
        res_down = [ResidualBlock(inner_nc), ResidualBlock(inner_nc)]
        res_up = [ResidualBlock(outer_nc), ResidualBlock(outer_nc)]
        upsample = nn.Upsample(scale_factor=2, mode="nearest")
        if outermost:
            up_conv = nn.Conv2d(inner_nc * 2, outer_nc, 3, padding=1, bias=False)
            layers = [down_conv, nn.ReLU(), *res_down, submodule, upsample, up_conv]
        elif innermost:
            up_conv = nn.Conv2d(inner_nc, outer_nc, 3, padding=1, bias=False)
            layers = [down_conv, nn.ReLU(), *res_down, upsample, up_conv, nn.BatchNorm2d(outer_nc), nn.ReLU(), *res_up]
        else:
            up_conv = nn.Conv2d(inner_nc * 2, outer_nc, 3, padding=1, bias=False)
            layers = [
                down_conv, nn.BatchNorm2d(inner_nc), nn.ReLU(), *res_down,
                submodule,
                upsample, up_conv, nn.BatchNorm2d(outer_nc), nn.ReLU(), *res_up,
            ]  # fmt: skip
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], dim=1)


class ResUnetGenerator(nn.Module):
    """ResUnetGenerator(input_nc, output_nc, num_downs, ngf) with BatchNorm."""

    def __init__(self, input_nc: int = 7, output_nc: int = 5, num_downs: int = 5, ngf: int = 64) -> None:
        super().__init__()
        if num_downs < 5:
            raise ValueError("ResUnetGenerator needs num_downs >= 5")
        block = ResUnetSkipConnectionBlock(ngf * 8, ngf * 8, innermost=True)
        for _ in range(num_downs - 5):
            block = ResUnetSkipConnectionBlock(ngf * 8, ngf * 8, submodule=block)
        block = ResUnetSkipConnectionBlock(ngf * 4, ngf * 8, submodule=block)
        block = ResUnetSkipConnectionBlock(ngf * 2, ngf * 4, submodule=block)
        block = ResUnetSkipConnectionBlock(ngf, ngf * 2, submodule=block)
        self.model = ResUnetSkipConnectionBlock(output_nc, ngf, input_nc=input_nc, submodule=block, outermost=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class GenGraph(ResUnetGenerator):
    """The deployable generator graph: ResUnetGenerator(7, 5, 5, 64) plus the composition head.

    Input:
      gen_input [1,7,256,192]  cat[person RGB [-1,1], warped_cloth [-1,1], warped_edge [0,1]]
                               (the warp graph's last output)
    Outputs (all [1, C, 256, 192]):
      rendered  [1,3]  tanh, the person rendered by the generator, [-1, 1]
      mask      [1,1]  sigmoid * warped_edge, the composition mask, [0, 1]
      tryon     [1,3]  warped_cloth * mask + rendered * (1 - mask), [-1, 1]
      gen_mask  [1,1]  sigmoid, [0, 1]; pixels > 0.5 are pasted back into the frame
                       (the threshold is applied by the runtime, so the graph stays smooth
                       and parity is measurable)
    """

    def __init__(self, ngf: int = 64, num_downs: int = 5) -> None:
        super().__init__(input_nc=7, output_nc=5, num_downs=num_downs, ngf=ngf)

    def forward(self, gen_input: torch.Tensor) -> tuple[torch.Tensor, ...]:  # type: ignore[override]
        warped_cloth = gen_input[:, 3:6]
        warped_edge = gen_input[:, 6:7]
        out = super().forward(gen_input)
        rendered = torch.tanh(out[:, 0:3])
        mask = torch.sigmoid(out[:, 3:4]) * warped_edge
        gen_mask = torch.sigmoid(out[:, 4:5])
        tryon = warped_cloth * mask + rendered * (1 - mask)
        return rendered, mask, tryon, gen_mask
