"""Shared data of the security tests (a uniquely named module: every conftest is named `conftest`)."""

SPEC = {
    "name": "digits-mlp",
    "task": "classification",
    "model": {"builtin": "mlp", "config": {"hidden_sizes": [16]}},
    "data": {"train": "builtin:digits"},
    "hyperparameters": {"epochs": 1, "max_steps": 3, "batch_size": 32, "compile": False},
}
DATASET = b'{"text": "good", "label": "pos"}\n{"text": "bad", "label": "neg"}\n'
