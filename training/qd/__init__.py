"""The QD side of training: the loop, the emitter contract, emitters, algorithms, runs."""
