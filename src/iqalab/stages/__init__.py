"""DVC stages as library functions: notebooks and ``python -m iqalab <stage>`` call the same code."""
