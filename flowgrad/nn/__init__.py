"""fg.nn: layers (Dense, Sequential, MLP, Dropout; Conv2D, MaxPool2D, AvgPool2D, Flatten;
LayerNorm, BatchNorm; Embedding; RNN, LSTM, GRU), initialisers (fg.nn.init), dropout.

Layers are plain Python objects that add nodes to the graph when called: the first call
builds the variables in a fresh name scope, later calls reuse them.
"""
from . import init  # noqa: F401
from .dropout import dropout  # noqa: F401
from .layers import MLP, Dense, Dropout, Layer, Sequential  # noqa: F401
from .conv import AvgPool2D, Conv2D, Flatten, MaxPool2D  # noqa: F401
from .norm import BatchNorm, LayerNorm  # noqa: F401
from .embedding import Embedding  # noqa: F401
from .recurrent import GRU, LSTM, RNN  # noqa: F401

__all__ = ["Dense", "Dropout", "Layer", "MLP", "Sequential", "dropout", "init",
           "Conv2D", "MaxPool2D", "AvgPool2D", "Flatten", "LayerNorm", "Embedding",
           "RNN", "LSTM", "GRU", "BatchNorm"]
