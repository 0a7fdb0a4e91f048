"""Recipes: one experiment each, built from the library below (floors 1-5), never from another
recipe. `r1_zero` (GRPO with rule rewards from a base model) and `test_time_scaling` (accuracy
against generated tokens for every search method)."""
