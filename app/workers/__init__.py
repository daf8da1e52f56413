"""Which workers are up and which queues they consume (each worker reports itself; see worker.presence)."""
