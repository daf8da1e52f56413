import pytest
import torch

from worker.training.data import DataInfo
from worker.training.models import build_model, layer_prefixes
from worker.training.tokenizer import CharTokenizer


def _info(task, kind, **kw):
    return DataInfo(task=task, input_kind=kind, **kw)


def _desc(name, **config):
    return {"kind": "builtin", "builtin": name, "config": config}


CASES = [
    ("mlp-cls", _desc("mlp", hidden_sizes=[8, 8]), _info("classification", "vector", num_features=5, labels=["a", "b", "c"]),
     {"inputs": torch.randn(4, 5)}, (4, 3)),
    ("mlp-reg", _desc("mlp", hidden_sizes=[8]), _info("regression", "vector", num_features=5),
     {"inputs": torch.randn(4, 5)}, (4,)),
    ("cnn-8x8", _desc("cnn", channels=[4, 8], hidden_size=16), _info("classification", "image", image_shape=(1, 8, 8), labels=list("0123456789")),
     {"inputs": torch.randn(4, 1, 8, 8)}, (4, 10)),
    ("cnn-28x28", _desc("cnn", channels=[4, 8, 8], hidden_size=16), _info("regression", "image", image_shape=(1, 28, 28)),
     {"inputs": torch.randn(4, 1, 28, 28)}, (4,)),
    ("gpt-lm", _desc("transformer", n_layer=2, n_head=2, n_embd=16, block_size=12, vocab_size=20),
     _info("causal_lm", "tokens"), {"input_ids": torch.randint(0, 20, (4, 12))}, (4, 12, 20)),
    ("gpt-cls", _desc("transformer", n_layer=1, n_head=2, n_embd=16, block_size=12, vocab_size=20, pooling="last"),
     _info("classification", "tokens", labels=[0, 1]),
     {"input_ids": torch.randint(0, 20, (4, 12)), "attention_mask": torch.ones(4, 12, dtype=torch.long)}, (4, 2)),
]


@pytest.mark.parametrize("name,desc,info,inputs,shape", CASES, ids=[c[0] for c in CASES])
def test_builtin_models_shapes_and_no_graph_breaks(name, desc, info, inputs, shape):
    torch.manual_seed(0)
    model = build_model(desc, info)
    assert model(**inputs).shape == shape
    # dynamo traces each model as one graph: no graph breaks means compile sees the whole forward
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(model)(**inputs)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


def test_transformer_pooling_ignores_padding():
    torch.manual_seed(0)
    model = build_model(_desc("transformer", n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=10, dropout=0.0),
                        _info("classification", "tokens", labels=["a", "b"])).eval()
    ids = torch.tensor([[3, 4, 5, 0, 0, 0, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 0, 0, 0, 0, 0]])
    other_padding = ids.clone()
    other_padding[0, 3:] = 7
    assert torch.allclose(model(ids, mask), model(other_padding, mask), atol=1e-6)


def test_layer_prefixes_cover_layers_in_order():
    mlp = build_model(_desc("mlp", hidden_sizes=[8, 8, 8]), _info("classification", "vector", num_features=3, labels=[0, 1]))
    assert layer_prefixes(mlp) == ["layers.0.", "layers.1.", "layers.2."]
    gpt = build_model(_desc("transformer", n_layer=3, n_head=2, n_embd=16, block_size=8, vocab_size=10),
                      _info("causal_lm", "tokens"))
    assert layer_prefixes(gpt) == ["blocks.0.", "blocks.1.", "blocks.2."]
    names = {n for n, _ in gpt.named_parameters()}
    assert "wte.weight" in names and not any(n.startswith("lm_head") for n in names)  # tied output


def test_transformer_generate_appends_tokens():
    tok = CharTokenizer.fit(["abc"])
    model = build_model(_desc("transformer", n_layer=1, n_head=2, n_embd=16, block_size=4, vocab_size=tok.vocab_size),
                        _info("causal_lm", "tokens")).eval()
    out = model.generate(torch.tensor([tok.encode("abcab")]), max_new_tokens=6)  # longer than block_size
    assert out.shape == (1, 11)
