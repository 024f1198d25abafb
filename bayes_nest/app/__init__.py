"""The main job's Python API, above the library: model specs, the fit façade, the trained-model
file format, data in a model's terms, evaluation, fronts, reports, exports and the demo.

Modules, one concept each:

* `bayes_nest.app.spec` -- `ModelSpec` and `build_model` (reference architectures by name);
* `bayes_nest.app.fitting` -- `fit` (build and train with FN3 or as a BNNN);
* `bayes_nest.app.train` -- the training behind `fit` (one process or data-parallel);
* `bayes_nest.app.model_file` -- `TrainedModel` and `load_model` (the model file format);
* `bayes_nest.app.data` -- `load_data` and `data_for` (data in a trained model's terms);
* `bayes_nest.app.evaluation` -- `evaluate_config` and `make_score`;
* `bayes_nest.app.front` -- `search_front`, `read_front`, `best_config`;
* `bayes_nest.app.budgets` -- `analyse` (a model at a list of budgets) and `Analysis`;
* `bayes_nest.app.tables`, `bayes_nest.app.report` -- text tables and report folders;
* `bayes_nest.app.outputs` -- safe outputs and `export_subnet`;
* `bayes_nest.app.segmentation` -- the same steps for segmentation models;
* `bayes_nest.app.demo` -- `run_demo`, the main job on built-in data.

Layering: this package uses the library (`bayes_nest.search`, `bayes_nest.subnet`,
`bayes_nest.infer`, ...) and nothing in the library imports it; the command line
(`bayes_nest.cli`) sits above it. The names below are also available from the package root
(``import bayes_nest as bn``; ``bn.fit``).
"""

from .budgets import Analysis, analyse
from .data import data_for, load_data
from .demo import run_demo
from .evaluation import evaluate_config, make_score
from .fitting import fit
from .front import best_config, read_front, search_front
from .model_file import TrainedModel, load_model
from .outputs import export_subnet
from .report import write_report
from .spec import ModelSpec, build_model
from .tables import format_table

__all__ = [
    "Analysis",
    "ModelSpec",
    "TrainedModel",
    "analyse",
    "best_config",
    "build_model",
    "data_for",
    "evaluate_config",
    "export_subnet",
    "fit",
    "format_table",
    "load_data",
    "load_model",
    "make_score",
    "read_front",
    "run_demo",
    "search_front",
    "write_report",
]
