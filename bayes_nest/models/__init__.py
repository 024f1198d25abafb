"""Reference architectures built from nested layers."""

from .convnet import ConvNet
from .mlp import MLP
from .resnet import ResNet
from .resnext import ResNeXt
from .unet import UNet
from .vgg import VGG, VGG_CONFIGS

__all__ = ["MLP", "VGG", "VGG_CONFIGS", "ConvNet", "ResNeXt", "ResNet", "UNet"]
