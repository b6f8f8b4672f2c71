"""Where runs live and who runs them: the run store, the job manager, the worker process, live event reading."""
