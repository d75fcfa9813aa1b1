"""Training: data loading, losses and trainers."""
