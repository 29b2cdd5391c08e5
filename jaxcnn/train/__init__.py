"""Training: jitted NNX train/eval steps, the ``experiment()`` trainer, checkpoints and the CLI.

Quick start::

    from jaxcnn.train import TrainConfig, experiment
    config, result = experiment(TrainConfig(model="mnist_cnn", dataset="digits", epochs=10))
    print(result["test_acc"])        # percent

Lower level::

    from jaxcnn.train import create_train_state, make_steps
    graphdef, eval_graphdef, state = create_train_state(model, tx)   # split once
    steps = make_steps(graphdef, eval_graphdef, tx)
    state, metrics = steps.train_step(state, images, labels)         # jitted, donates state
    metrics = steps.eval_step(state, images, labels)

Images are float32 NHWC ``(B, H, W, C)``, labels int32 ``(B,)``.
"""

from jaxcnn.train.checkpoint import NonFiniteStateError, RunCheckpointer, find_checkpoint_dir
from jaxcnn.train.config import TrainConfig, load_config_file
from jaxcnn.train.experiment import RunExistsError, Trainer, TrainingDivergedError, evaluate_checkpoint, experiment
from jaxcnn.train.state import TrainState, create_train_state, split_model, state_to_model, update_model
from jaxcnn.train.step import StepFunctions, all_finite, make_eval_step, make_steps, make_train_step, model_loss, split_outputs

__all__ = [
    "NonFiniteStateError",
    "RunCheckpointer",
    "RunExistsError",
    "StepFunctions",
    "TrainConfig",
    "TrainState",
    "Trainer",
    "TrainingDivergedError",
    "all_finite",
    "create_train_state",
    "evaluate_checkpoint",
    "experiment",
    "find_checkpoint_dir",
    "load_config_file",
    "make_eval_step",
    "make_steps",
    "make_train_step",
    "model_loss",
    "split_model",
    "split_outputs",
    "state_to_model",
    "update_model",
]
