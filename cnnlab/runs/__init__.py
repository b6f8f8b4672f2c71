"""Where runs live and who runs them: the run store (runs, metric log, checkpoints), the job
manager with its slots and worker processes, a run trained and recorded, live event reading."""
