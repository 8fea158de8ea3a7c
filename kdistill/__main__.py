"""python -m kdistill: the command line (torchrun --nproc_per_node=N -m kdistill run RECIPE)."""

from kdistill.cli import main

main()
