"""segkit: semantic and instance segmentation for the CS 498 MP4 assignment, as a package.

This namespace holds exactly the assignment's names and what the notebook uses; everything else
lives in its module (the README's Layout section maps them).
"""

__version__ = "0.2.0"

from .baseline import simple_predict, simple_train
from .config import (
    QUICK_INSTANCE,
    QUICK_MASKRCNN,
    QUICK_SEMANTIC,
    InstanceConfig,
    MaskRCNNConfig,
    TrainConfig,
    recipe,
)
from .constants import CLASSES, IGNORE_INDEX, NUM_CLASSES
from .data import NO_AUGMENT, Augment, SegmentationDataset, label_counts, make_loader
from .engine import evaluate, train, train_one_epoch, validate_model
from .experiment import evaluate_run, load_run_model, results_table, run_baseline, run_experiment
from .instance import evaluate_instance_run, train_instance
from .losses import class_weights, cross_entropy_criterion, weighting
from .maskrcnn import evaluate_maskrcnn_run, load_maskrcnn_run, train_maskrcnn
from .metrics import compute_ap, compute_confusion_matrix, segmentation_eval
from .models import (
    BaseConv,
    EffNetUNet,
    ResnetBasedModel,
    ResnetUNetModel,
    UNet,
    create_model,
    list_models,
    weights_label,
)
from .notebook import compare_runs, load_full_results, per_class_table, show_test_predictions
from .plan import protocol_recipe
from .predict import predict_image
from .sources import ensure_datasets
from .study import (
    AUGMENT_EPOCHS,
    AUGMENT_SETTINGS,
    augmentation_study,
    format_maskrcnn_levers,
    format_rows,
    format_sweep,
)
from .utils import get_device, seed_everything
from .viz import (
    plot_augment_sweep,
    plot_confusion_matrix,
    plot_history,
    plot_loss_terms,
    plot_maskrcnn_ablation,
    show_augmentations,
    show_instances,
    show_predictions,
    show_segmentations,
)

__all__ = [
    # the assignment's names
    "BaseConv", "ResnetBasedModel", "ResnetUNetModel", "SegmentationDataset", "UNet",
    "compute_ap", "compute_confusion_matrix", "cross_entropy_criterion", "simple_predict",
    "simple_train", "train", "validate_model",
    # data, configs, models
    "CLASSES", "IGNORE_INDEX", "NUM_CLASSES", "NO_AUGMENT", "QUICK_INSTANCE", "QUICK_SEMANTIC",
    "QUICK_MASKRCNN", "MaskRCNNConfig",
    "Augment", "EffNetUNet", "InstanceConfig", "TrainConfig", "class_weights", "create_model",
    "get_device", "label_counts", "list_models", "make_loader", "recipe", "seed_everything",
    "weighting",
    # running and evaluating
    "AUGMENT_EPOCHS", "AUGMENT_SETTINGS", "augmentation_study", "evaluate", "evaluate_instance_run",
    "evaluate_maskrcnn_run", "load_maskrcnn_run", "train_maskrcnn", "format_sweep",
    "format_maskrcnn_levers",
    "evaluate_run", "format_rows", "load_run_model", "predict_image", "results_table",
    "run_baseline", "run_experiment", "segmentation_eval", "train_instance", "train_one_epoch",
    # notebooks: setup, the committed full run beside a notebook's runs
    "compare_runs", "ensure_datasets", "load_full_results", "per_class_table", "protocol_recipe",
    "show_test_predictions", "weights_label",
    # figures
    "plot_augment_sweep", "plot_confusion_matrix", "plot_history", "plot_loss_terms",
    "plot_maskrcnn_ablation",
    "show_augmentations", "show_instances",
    "show_predictions", "show_segmentations",
    "__version__",
]  # fmt: skip
