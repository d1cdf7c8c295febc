"""Built-in --data sources (`imagefolder:DIR`, `tensors:FILE`) and --score metrics (`top1`, `top5`, `loss`).

They are values of the `data` / `score` search settings, resolved by `searching/options.py` where it resolves
"pkg.module:fn" specs. A data source makes its batches once the dummy input is known (`DataSource.batches`); a
label metric is bound to the data batches before the search (`LabelScore.bind`).
"""

from nasprune_cli.builtin.data import DATA_KINDS, DataSource, data_source
from nasprune_cli.builtin.scores import LABEL_SCORES, LabelScore, label_score

__all__ = ["DATA_KINDS", "LABEL_SCORES", "DataSource", "LabelScore", "data_source", "label_score"]
