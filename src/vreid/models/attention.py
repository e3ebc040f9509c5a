"""Attention modules of GLAMOR: the Global Attention Module and CBAM (the local attention).

Both keep the shape of their input: (B, C, H, W) in, (B, C, H, W) out.
"""

from __future__ import annotations

import torch
from torch import nn


class GlobalAttentionModule(nn.Module):
    """GLAMOR's Global Attention Module (Suprem et al.).

    Two 3×3 convolutions ``C→C`` without bias with a LeakyReLU(0.01) between them, a sigmoid, and an
    elementwise product with the input. On the 64-channel stem convolution of a ResNet it has
    2·64·64·9 = 73,728 parameters.

    Args:
        channels: channels C of the input.
        negative_slope: slope of the LeakyReLU between the two convolutions.
    """

    def __init__(self, channels: int = 64, negative_slope: float = 0.01) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=3, padding=1, bias=False)
        self.act = nn.LeakyReLU(negative_slope)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, padding=1, bias=False)
        for conv in (self.conv1, self.conv2):
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="leaky_relu")

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """The attention map in (0, 1), shape (B, C, H, W) like ``x``."""
        return torch.sigmoid(self.conv2(self.act(self.conv1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (B, C, H, W) → ``x ⊙ attention(x)`` (B, C, H, W)."""
        return x * self.attention(x)


class ChannelGate(nn.Module):
    """CBAM's channel gate: average- and max-pooled descriptors through one shared MLP, summed.

    MLP: Linear(C, C/r) → ReLU → Linear(C/r, C), both with bias (as the official implementation).
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.mlp = nn.Sequential(
            nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (B, C, H, W) → ``x`` scaled per channel by σ(MLP(avg) + MLP(max))."""
        avg = x.mean(dim=(2, 3))
        mx = x.amax(dim=(2, 3))
        scale = torch.sigmoid(self.mlp(avg) + self.mlp(mx))
        return x * scale[:, :, None, None]


class SpatialGate(nn.Module):
    """CBAM's spatial gate: channel max and mean → 7×7 conv (no bias) → BN → sigmoid → multiply.

    The BN weight starts at 0, as in the official code, so the gate starts at σ(0) = 0.5 everywhere.
    """

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(1, eps=1e-5, momentum=0.01)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (B, C, H, W) → ``x`` scaled per position by the (B, 1, H, W) spatial map."""
        pooled = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.bn(self.conv(pooled)))


class CBAM(nn.Module):
    """Convolutional Block Attention Module (Woo et al. 2018), as in the official implementation.

    Channel gate then spatial gate. ``CBAM(256)`` has 8,564 parameters: the MLP 256→16→256 with
    biases (8,464), the 7×7 conv 2→1 (98) and the BN affine pair (2).

    Args:
        channels: channels C of the input.
        reduction: reduction ratio r of the channel MLP (official: 16).
        kernel_size: kernel of the spatial convolution (official: 7).
    """

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7) -> None:
        super().__init__()
        self.channel_gate = ChannelGate(channels, reduction)
        self.spatial_gate = SpatialGate(kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (B, C, H, W) → refined features (B, C, H, W)."""
        return self.spatial_gate(self.channel_gate(x))
