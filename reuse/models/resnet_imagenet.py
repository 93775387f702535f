"""ResNet-18/50 for ImageFolder (ImageNet-layout) data, from torchvision."""

from __future__ import annotations



from reuse.models.registry import register_model


@register_model("resnet18")
def resnet18(input_shape, num_classes, zero_init_residual=False):
    """torchvision's ResNet-18 (He et al. 2016, ImageNet variant), randomly initialised."""
    import torchvision

    return torchvision.models.resnet18(weights=None, num_classes=num_classes, zero_init_residual=zero_init_residual)


@register_model("resnet50")
def resnet50(input_shape, num_classes, zero_init_residual=False):
    """torchvision's ResNet-50 (He et al. 2016, ImageNet variant), randomly initialised."""
    import torchvision

    return torchvision.models.resnet50(weights=None, num_classes=num_classes, zero_init_residual=zero_init_residual)
