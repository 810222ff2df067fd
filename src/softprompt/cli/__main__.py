"""`python -m softprompt.cli` (and `torchrun -m softprompt.cli`) runs the same entry point as `softprompt`."""

from softprompt.cli import main

main()
