"""xlr: implicit cross-lingual rewarding for multilingual preference alignment (arXiv 2503.04647).

The modules, from the bottom up, are listed in README "Layout" (tests/test_layout.py keeps the order): leaves
(errors, files, stats, ...), params and runs, inputs (data, models), the method's stages (sampling, rewards, pairs,
train, judge, winrate), evaluation, what notebooks show (plots, report), the stage bodies (stages), the study's
table and runner (study), cli.
"""

import warnings as _warnings

# Inside a notebook kernel without ipywidgets, tqdm.auto falls back to text bars (fine under papermill) but warns
# on every bar; the text bars are what we want there.
_warnings.filterwarnings("ignore", message="IProgress not found")

__version__ = "0.1.0"
