"""A user's networks, declared beside their code (issue 48): a Linen CNN, an NNX one, and a network of jaxres's
residual blocks with its derived plain twin. tests/test_user_networks.py names them by import path."""
import flax.linen as nn
from flax import nnx
from jaxres import models
from jaxres.catalog import Network


class SmallCNN(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(nn.Conv(8, (3, 3))(x))
        x = x.reshape((x.shape[0], -1))
        return nn.Dense(self.num_classes)(x)


class SmallNNX(nnx.Module):
    def __init__(self, num_classes: int, rngs: nnx.Rngs):
        self.conv = nnx.Conv(1, 8, (3, 3), rngs=rngs)
        self.head = nnx.Linear(8, num_classes, rngs=rngs)

    def __call__(self, x, train: bool = False):
        x = nnx.relu(self.conv(x))
        return self.head(x.mean(axis=(1, 2)))


def _tiny_resnet(num_classes):
    return models.ResNet(stage_sizes=(2,), widths=(8,), stem_width=8, head="avgpool", num_classes=num_classes)


small = Network(builder=SmallCNN, residual=False, family="mine", depth=2)
small_nnx = Network(builder=SmallNNX, residual=False, family="mine", depth=2)
tiny = Network(builder=_tiny_resnet, residual=True, twin="user_networks:tiny_plain", family="tiny", depth=6)
tiny_plain = Network(builder=models.plain_twin_of(_tiny_resnet), residual=False, twin="user_networks:tiny", family="tiny",
                     depth=6)
clash = Network(builder=SmallCNN, residual=False, name="resnet20")  # refused: a built-in preset's name
