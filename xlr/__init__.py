"""xlr: implicit cross-lingual rewarding for multilingual preference alignment (arXiv 2503.04647).

Modules, one per pipeline stage: config (params schema), data, models (+ tiny), runs (run dirs, manifest),
runtime (threads/dtype), study (``xlr run``), cli.
"""

__version__ = "0.1.0"
