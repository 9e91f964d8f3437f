"""normlab: how BatchNorm, GroupNorm, LayerNorm and L1/L2 penalties change what a small CNN learns."""

__version__ = "0.2.0"
