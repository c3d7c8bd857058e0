"""segkit: semantic and instance segmentation for the CS 498 MP4 assignment, as a package.

The notebook-facing API is re-exported here; everything else lives in its module
(``segkit.data``, ``segkit.metrics``, ``segkit.train``, ``segkit.viz``, ...).
"""

__version__ = "0.1.0"

from . import experiment, instance, metrics, study, viz  # noqa: E402
from .baseline import simple_predict, simple_train  # noqa: E402
from .config import RECIPES, TrainConfig, recipe  # noqa: E402
from .data import CLASSES, NO_AUGMENT, Augment, SegmentationDataset, make_loader  # noqa: E402
from .losses import class_weights, cross_entropy_criterion  # noqa: E402
from .metrics import (  # noqa: E402
    APAccumulator,
    ConfusionMatrix,
    average_precision,
    compute_confusion_matrix,
    segmentation_eval,
)
from .models import (  # noqa: E402
    BaseConv,
    EffNetUNet,
    ResnetBasedModel,
    ResnetUNetModel,
    UNet,
    create_model,
    list_models,
    predict,
)
from .sources import prepare_pennfudan, prepare_sbd, verify_dataset  # noqa: E402
from .train import (  # noqa: E402
    load_checkpoint,
    train,
    train_one_epoch,  # noqa: E402
    validate_model,
)
from .utils import get_device, seed_everything  # noqa: E402

__all__ = [
    "APAccumulator", "ConfusionMatrix", "average_precision", "compute_confusion_matrix",
    "experiment", "instance", "metrics", "prepare_pennfudan", "prepare_sbd", "segmentation_eval",
    "study", "train_one_epoch", "verify_dataset",
    "CLASSES", "NO_AUGMENT", "RECIPES", "Augment", "BaseConv", "EffNetUNet", "ResnetBasedModel",
    "ResnetUNetModel", "SegmentationDataset", "TrainConfig", "UNet", "__version__",
    "class_weights", "create_model", "cross_entropy_criterion", "get_device", "list_models",
    "load_checkpoint", "make_loader", "predict", "recipe", "seed_everything", "simple_predict",
    "simple_train", "train", "validate_model", "viz",
]  # fmt: skip
