"""What the suite runs and what it holds results to: the bench matrix per scale, the criteria (the paper's
figures, reference models, floors and tolerances) and the expected outcomes (known refusals, losses, misses)."""
