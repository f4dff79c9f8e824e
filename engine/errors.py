"""The errors a user can cause (bad recipe, bad dataset, missing checkpoint, offline weights,
diverged training, unreadable video, bad flags...): the CLI prints their one-line message
instead of a traceback."""
from engine.checkpoints import CheckpointError
from engine.config import RecipeError
from engine.data.cityscapes import DatasetError
from engine.images import ImageError
from engine.inference import DeviceUnavailable
from engine.models.pretrained import PretrainedWeightsUnavailable
from engine.onnx_backend import OnnxUnavailable
from engine.store import StoreUrlError, StoreVersionError
from engine.train import TrainingDiverged
from engine.video import VideoError


class UsageError(ValueError):
    """A flag value the command cannot use (e.g. an unknown class name)."""


USER_ERRORS = (CheckpointError, RecipeError, DatasetError, DeviceUnavailable, PretrainedWeightsUnavailable,
               StoreVersionError, StoreUrlError, TrainingDiverged, VideoError, OnnxUnavailable, UsageError, ImageError)
