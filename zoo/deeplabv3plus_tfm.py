"""tf-models-official's DeepLabV3+, wrapped to full-resolution logits.

The reference our own `zoo.deeplabv3plus` is compared with: tfm's
`DilatedResNet` backbone, `ASPP` decoder and `SegmentationHead` with
"deeplabv3plus" feature fusion, composed by `SegmentationModel`. Its logits
come out at stride 4 and are upsampled bilinearly to the input size.
"""

import math

import tensorflow as tf
from official.vision.modeling import segmentation_model
from official.vision.modeling.backbones import resnet_deeplab
from official.vision.modeling.decoders import aspp as tfm_aspp
from official.vision.modeling.heads import segmentation_heads

from zoo import _common
from zoo.deeplabv3plus import OUTPUT_STRIDES, aspp_rates
from zoo.periodic import BilinearUpsampling2D, wrap_longitude

MODEL_IDS = (50, 101)


class _PeriodicASPP(tfm_aspp.ASPP):
    """tf-models-official's ASPP with its convolutions wrapped in longitude.

    tfm's ASPP creates its pyramid in its own build; it is built here with the
    input's shape so that its convolutions exist to be converted
    (`wrap_longitude`) before the first call.
    """

    def __init__(self, level, **kwargs):
        super().__init__(level=level, **kwargs)
        self.level = level

    def build(self, input_shape):
        super().build(input_shape)
        shape = input_shape[str(self.level)] if isinstance(input_shape, dict) else input_shape
        self.aspp.build(tf.TensorShape(shape))
        self.aspp.built = True
        wrap_longitude(self.aspp)


class _UpsampledDecoder(tf.keras.layers.Layer):
    """ASPP, then a periodic upsampling to stride 4 (periodic models only).

    tfm's head resizes the ASPP output to the low-level features' size with a
    clamped bilinear resize; upsampling here first makes that resize an
    identity, so the whole network stays periodic in longitude.
    """

    def __init__(self, aspp, factor, **kwargs):
        super().__init__(**kwargs)
        self.aspp = aspp
        self.upsample = BilinearUpsampling2D(factor, periodic=True, name="upsample")

    def call(self, inputs):
        return {key: self.upsample(value) for key, value in self.aspp(inputs).items()}


@tf.keras.utils.register_keras_serializable(package="climseg")
class TfmDeepLabV3Plus(tf.keras.layers.Layer):
    """tfm's DeepLabV3+ as one layer: (B, H, W, C) -> (B, H, W, classes) logits.

    Built from its arguments (not from tfm's nested configs), so that the
    longitude wrapping, which changes layer instances, is redone when a saved
    model is loaded.

    Args:
        num_classes: number of classes. Defaults to `3`.
        output_stride: 8 or 16. Defaults to `8`.
        model_id: ResNet depth, 50 or 101. Defaults to `50`.
        periodic_padding: wrap convolutions around in longitude. Defaults to `False`.
        **kwargs: passed on to `keras.layers.Layer`.
    """

    def __init__(self, num_classes=3, output_stride=8, model_id=50, periodic_padding=False,
                 **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.output_stride = output_stride
        self.model_id = model_id
        self.periodic_padding = periodic_padding

    def build(self, input_shape):
        level = int(math.log2(self.output_stride))
        backbone = resnet_deeplab.DilatedResNet(
            model_id=self.model_id,
            output_stride=self.output_stride,
            input_specs=tf.keras.layers.InputSpec(shape=[None, None, None, input_shape[-1]]),
        )
        aspp = dict(level=level, dilation_rates=aspp_rates(self.output_stride), num_filters=256)
        if self.periodic_padding:
            decoder = _PeriodicASPP(**aspp)
        else:
            # tfm's own layer, unchanged: the reference keeps tfm's speed too
            # (its atrous convolutions run through SpaceToBatchND).
            decoder = tfm_aspp.ASPP(**aspp)
        head = segmentation_heads.SegmentationHead(
            num_classes=self.num_classes, level=level, num_convs=2, num_filters=256,
            feature_fusion="deeplabv3plus", low_level=2, low_level_num_filters=48,
        )
        if self.periodic_padding:
            wrap_longitude(backbone)  # Functional: its layers exist already.
            head.build(None)  # Creates its convolutions, to be converted.
            wrap_longitude(head)
            decoder = _UpsampledDecoder(decoder, self.output_stride // 4)
        self.segmentation = segmentation_model.SegmentationModel(backbone, decoder, head)
        self.upsample = BilinearUpsampling2D(4, periodic=self.periodic_padding, name="upsample")
        super().build(input_shape)

    def call(self, inputs, training=None):
        logits = self.segmentation(inputs, training=training)["logits"]
        return self.upsample(logits)

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "output_stride": self.output_stride,
            "model_id": self.model_id,
            "periodic_padding": self.periodic_padding,
        }


def deeplabv3plus_tfm(
    input_shape=(768, 1152, 16),
    num_classes=3,
    weights=None,
    output_stride=8,
    model_id=50,
    periodic_padding=False,
):
    """Builds tf-models-official's DeepLabV3+ with full-resolution logits.

    tfm's `DilatedResNet` (ResNet-v1 with DeepLab's dilation, post-activation),
    `ASPP` (rates 12/24/36 at stride 8, 6/12/18 at 16, image pooling),
    `SegmentationHead(feature_fusion="deeplabv3plus")` (48 low-level channels
    at stride 4, two 3x3/256 convs, 1x1 classifier) and `SegmentationModel`;
    the stride-4 logits are upsampled bilinearly by 4. With periodic padding
    every convolution and pooling wraps in longitude and the head's fusion
    resize is preceded by a periodic one (see `_UpsampledDecoder`).

    Args:
        input_shape: (height, width, channels); height and width multiples of
            `output_stride` and of 4, or None. Defaults to `(768, 1152, 16)`.
        num_classes: number of classes. Defaults to `3`.
        weights: None, or a checkpoint path loaded after the model is built
            (tfm's gs:// checkpoints are for 3-channel inputs). Defaults to `None`.
        output_stride: 8 or 16. Defaults to `8`.
        model_id: ResNet depth, 50 or 101. Defaults to `50`.
        periodic_padding: wrap convolutions around in longitude (width).
            Defaults to `False`.

    Returns:
        An uncompiled `keras.Model` from (batch, H, W, C) inputs to
        (batch, H, W, num_classes) float32 logits.
    """
    _common.check_choice(output_stride, OUTPUT_STRIDES, "output_stride")
    _common.check_choice(model_id, MODEL_IDS, "model_id")
    input_shape = _common.check_input_shape(input_shape, output_stride)
    _common.check_positive_int(num_classes, "num_classes")
    _common.check_weights(weights)

    inputs = tf.keras.Input(input_shape, name="inputs")
    x = TfmDeepLabV3Plus(num_classes, output_stride, model_id, periodic_padding,
                         name="tfm_deeplabv3plus")(inputs)
    model = tf.keras.Model(inputs, _common.float32_logits(x), name="deeplabv3plus_tfm")
    return _common.load_weights(model, weights)
