"""Two networks of your own, each with its plain twin, declared beside their code so that jaxres can name them by
import path (``my_networks:linen``) without being edited: the same network written in Flax Linen and in Flax NNX.

Each is a 3x3 stem convolution, then ``blocks`` blocks of two 3x3 convolutions whose output is added to the block's
input when ``shortcut`` is on, global average pooling and a dense head: ``2 * blocks + 2`` weighted layers. Its twin
is the same class with ``shortcut=False``: the same layers and parameters, only the shortcuts differ, so the
comparison changes one thing. (A network made of jaxres's own blocks gets its twin derived instead:
``jaxres.models.plain_twin_of``.)
"""
import functools

import flax.linen as nn
from flax import nnx

from jaxres.catalog import Network

WIDTH, BLOCKS, CHANNELS = 32, 4, 3  # CHANNELS: the images' (NNX layers are built before they see data)
DEPTH = 2 * BLOCKS + 2


class ResCNN(nn.Module):
    """Flax Linen: ``builder(num_classes=...)`` returns the module; ``__call__(x, train)`` gives logits."""

    num_classes: int = 10
    width: int = WIDTH
    blocks: int = BLOCKS
    shortcut: bool = True

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(nn.Conv(self.width, (3, 3))(x))
        for _ in range(self.blocks):
            y = nn.Conv(self.width, (3, 3))(nn.relu(nn.Conv(self.width, (3, 3))(x)))
            x = nn.relu(x + y if self.shortcut else y)
        return nn.Dense(self.num_classes)(x.mean(axis=(1, 2)))


class ResCNNX(nnx.Module):
    """Flax NNX: the class itself is the builder, made with ``(num_classes, rngs=...)``; jaxres bridges it to Linen
    with ``flax.nnx.bridge.ToLinen``."""

    def __init__(self, num_classes: int, rngs: nnx.Rngs, width: int = WIDTH, blocks: int = BLOCKS,
                 shortcut: bool = True):
        self.shortcut = shortcut
        self.stem = nnx.Conv(CHANNELS, width, (3, 3), rngs=rngs)
        self.convs = nnx.List([nnx.Conv(width, width, (3, 3), rngs=rngs) for _ in range(2 * blocks)])
        self.head = nnx.Linear(width, num_classes, rngs=rngs)

    def __call__(self, x, train: bool = False):
        x = nnx.relu(self.stem(x))
        for first, second in zip(self.convs[::2], self.convs[1::2]):
            y = second(nnx.relu(first(x)))
            x = nnx.relu(x + y if self.shortcut else y)
        return self.head(x.mean(axis=(1, 2)))


# The facts jaxres needs, declared once, never read off a name: shortcuts or not, the twin, family and depth.
linen = Network(builder=ResCNN, residual=True, twin="my_networks:linen_plain", family="rescnn-linen", depth=DEPTH)
linen_plain = Network(builder=functools.partial(ResCNN, shortcut=False), residual=False, twin="my_networks:linen",
                      family="rescnn-linen", depth=DEPTH)
nnx_net = Network(builder=ResCNNX, residual=True, twin="my_networks:nnx_plain", family="rescnn-nnx", depth=DEPTH)
nnx_plain = Network(builder=functools.partial(ResCNNX, shortcut=False), residual=False, twin="my_networks:nnx_net",
                    family="rescnn-nnx", depth=DEPTH)
