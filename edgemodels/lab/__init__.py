"""A lab of boards behind labgrid (the optional `lab` extra, workstation side only): a place locked for a whole
session and reached through its NetworkService over the SSH target (places.py, coordinator.py), and one bench run
fanned out over many places at once into one merged report (matrix.py, plugin.py's --lab)."""
