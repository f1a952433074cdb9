"""vitlib: a Vision Transformer with convolutional attention and relative position bias,
trained from scratch on CIFAR-10."""

from .model import ModelConfig, RelViT, create_model, list_models

__all__ = ["ModelConfig", "RelViT", "create_model", "list_models"]
__version__ = "0.1.0"
