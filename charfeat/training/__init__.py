"""The training loop and what it needs: run state and checkpoints, signals, several processes, the schedule."""
