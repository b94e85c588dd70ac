"""A 1D Vision Transformer for log g (the study's best model), trained with fresh noise every step
and resumed exactly after preemption.

Architecture (top-down): the spectrum (channels x 4096 pixels) is cut into patches by a Conv1d
tokenizer (patch 16 -> 256 tokens), a CLS token is prepended, a positional embedding added
(learned, or sinusoidal in log wavelength), pre-LN encoder blocks (attention via
F.scaled_dot_product_attention, flash kernels on CUDA; GELU MLP) transform the tokens, and a linear
head on the final-LN CLS token predicts z-scored labels. Defaults are the study's best run:
6 layers, width 256, 8 heads, MLP 1024, dropout 0.1, AdamW 3e-4 with warmup and cosine decay to
1e-5 over the run's real number of steps, batch 256, gradient clip 0.5, MSE.

Training: the loader streams NOISELESS flux with its variance coefficients; every step draws new
noise on the device from a generator seeded by (dataset, seed, step) and applies the observation
model there, so no two epochs see the same noise and a resumed run draws exactly what the
uninterrupted one would. Validation and test use the dataset's fixed noise (Source.observed).
Early stopping on validation R^2; the best epoch's weights are kept.

Resume: ``WORKDIR/checkpoint.pt`` is written atomically after every epoch (and on SIGTERM/SIGUSR1,
at the current step) with the model, optimizer, scheduler, step, epoch, position in the epoch,
best-validation state, early-stopping counter and RNG states. A rerun of the same cell finds it
and continues; the batch order depends only on (seed, epoch), so the continuation is the same
run. A checkpoint from a different configuration or dataset is refused, not silently reused.
Checkpoints hold only tensors and plain data (RNG states as tensors, label scalers as float64
tensors) and are read with ``torch.load(weights_only=True)``: a file holding anything else (a
planted pickle) is refused with an error naming it, never unpickled.

Preemption: SLURM (preemption, ``scancel --signal=TERM --full``, ``--signal=TERM@T``) signals every
process of the job at once, the DataLoader workers included. The workers ignore SIGTERM, SIGUSR1
and SIGINT (``specscale.data.loader.ignore_stop_signals``), so the trainer finishes the current
step, checkpoints it, closes the workers and raises TrainingInterrupted, and ``specscale train``
exits 75 (EX_TEMPFAIL). A batch script requeues on that code (``sbatch --requeue``; ``[ $rc -eq 75 ]
&& scontrol requeue $SLURM_JOB_ID``, with a ``trap`` on TERM so that its shell lives to see it) and
the rerun continues bit-identically. With ``--signal=B:...`` only the batch shell is signalled: run
the cell with ``exec``. A signal outside the loop is caught too (``specscale.core.preemption``, installed
by the CLI first thing): during setup the command stops at once with exit 75 and the rerun starts
again from the last checkpoint (none before the first epoch ends); after the last epoch the finished
weights are checkpointed first, so the rerun goes straight to the test predictions.

Options for the study's open hypotheses (default = the study's recipe):
``inputs`` flux | flux+error | flux/error (error = the pipeline error from observed counts, the
only error a model may see); ``pos_encoding`` learned | sinusoidal (in log lambda); ``targets``
(logg plus any of teff, mh, am: multi-task heads, one loss over z-scored labels);
``loss`` mse | mae | gaussian_nll (the head then predicts a mean and a log variance per target).

Modules, in reading order: ``params`` (ViTParams, PretrainParams and the choices of their
options; no torch), ``network`` (SpectrumViT, its input channels and loss), ``channels`` and
``targets`` (what the network reads and predicts), ``state`` (the lr schedule, TrainState),
``loop`` (the resumable epoch loop), ``trainer`` (ViTModel: setup, step, prediction,
checkpoints), ``pretrain`` and ``encoder_file`` (pre-training and its hand-over file).

The torch-backed names load on first use: the sweep reads ``params`` (and the models' classes)
while Snakemake parses the workflow, which must not import torch for it.
"""

import importlib

from specscale.models.vit.params import (
    AMP_MODES,
    COMPILE_MODES,
    INPUTS,
    LOADERS,
    LOSSES,
    POS_ENCODINGS,
    ViTParams,
    ViTTinyParams,
)

# name -> the module that defines it (imported when the name is first asked for)
_TORCH_NAMES = {
    "SpectrumViT": "network",
    "input_channels": "network",
    "loss_function": "network",
    "TrainingInterrupted": "state",
    "TrainState": "state",
    "lr_factor": "state",
    "ViTModel": "trainer",
    "ViTTinyModel": "trainer",
}


def __getattr__(name: str):
    if name in _TORCH_NAMES:
        return getattr(importlib.import_module(f"{__name__}.{_TORCH_NAMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AMP_MODES",
    "COMPILE_MODES",
    "INPUTS",
    "LOADERS",
    "LOSSES",
    "POS_ENCODINGS",
    "SpectrumViT",
    "TrainState",
    "TrainingInterrupted",
    "ViTModel",
    "ViTParams",
    "ViTTinyModel",
    "ViTTinyParams",
    "input_channels",
    "loss_function",
    "lr_factor",
]
