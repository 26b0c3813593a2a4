"""The report side: the row model every suite fills, tables, plots, the Pareto view, the baseline gate and the
paper's claims. Stdlib and tabulate at import (matplotlib only when a plot is drawn): a device prints tables too."""
