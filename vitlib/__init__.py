"""vitlib: a Vision Transformer with convolutional attention and relative position bias,
trained from scratch on CIFAR-10."""

from .augment import TrainAugment, cutmix
from .data import CLASSES, DeviceLoader, load_cifar10
from .model import ModelConfig, RelViT, create_model, list_models
from .pretrained import list_pretrained, load_pretrained

__all__ = ["CLASSES", "DeviceLoader", "ModelConfig", "RelViT", "TrainAugment", "create_model",
           "cutmix", "list_models", "list_pretrained", "load_cifar10", "load_pretrained"]  # fmt: skip
__version__ = "0.1.0"
