"""xlr: implicit cross-lingual rewarding for multilingual preference alignment (arXiv 2503.04647).

Modules, one per pipeline stage: config (params schema), data, models (+ tiny), sampling, rewards, pairs, langid,
train, evaluate, judge, winrate; around them: runs (run dirs, manifest), runtime (threads/dtype), study (stages),
report and plots (notebooks, HTML), cli.
"""

import warnings as _warnings

# Inside a notebook kernel without ipywidgets, tqdm.auto falls back to text bars (fine under papermill) but warns
# on every bar; the text bars are what we want there.
_warnings.filterwarnings("ignore", message="IProgress not found")

__version__ = "0.1.0"
