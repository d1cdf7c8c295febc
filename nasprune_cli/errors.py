"""Errors raised by the nasprune library; only the CLI turns them into messages and exit codes."""

from __future__ import annotations


class NasPruneError(Exception):
    """Base class of every error nasprune raises on purpose."""


class RecipeError(NasPruneError):
    """A recipe file or a rule in it is invalid."""


class LoadError(NasPruneError):
    """A model, score, data or collect entry point could not be loaded."""


class TraceError(NasPruneError):
    """The model could not be run or analysed on the dummy input."""


class SearchError(NasPruneError):
    """A search could not run: unsatisfiable constraints, a bad score, ..."""


class CheckpointError(NasPruneError):
    """A checkpoint or pruned-model file is missing, corrupt or made for something else."""


class TrainingError(NasPruneError):
    """Training a search space or fine-tuning a pruned model could not run: bad settings, unlabelled data, ..."""
