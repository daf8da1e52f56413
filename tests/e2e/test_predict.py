"""POST /jobs/{id}/predict end to end: the API (no torch) queues, the predict worker answers, in both products;
never behind a running training job; bad requests get 4xx."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from conftest import Stack, make_stack


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def pstack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """API + a training worker + a predict worker."""
    for s in make_stack(request.param, tmp_path_factory.mktemp(f"predict-{request.param}"), request):
        s.worker = s.start_worker()
        s.predictor = s.start_predictor()
        yield s


@pytest.fixture(scope="module")
def digits_job(pstack: Stack) -> dict:
    job = pstack.submit(pstack.spec(hyperparameters={"epochs": 2}))
    done = pstack.wait(job["id"])
    assert done["status"] == "succeeded", pstack.logs()
    return done


def digit_pixels(value: int) -> list[float]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    index = int((digits.target == value).nonzero()[0][0])
    return [float(x) for x in digits.data[index]]


def test_classification_prediction_from_the_best_checkpoint(pstack: Stack, digits_job: dict) -> None:
    response = pstack.http.post(f"/jobs/{digits_job['id']}/predict",
                                json={"inputs": [digit_pixels(0), digit_pixels(7)], "checkpoint": "best"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "succeeded" and body["checkpoint_id"] == digits_job["result"]["best_checkpoint_id"]
    first, second = body["outputs"]
    assert set(first["probabilities"]) == {str(i) for i in range(10)}
    assert sum(first["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert (first["label"], second["label"]) == ("0", "7")  # digits is easy: a trained MLP gets these right
    # a named checkpoint and `last` work too
    last = pstack.http.post(f"/jobs/{digits_job['id']}/predict", json={"inputs": [digit_pixels(3)], "checkpoint": "last"})
    assert last.status_code == 200 and last.json()["checkpoint_id"] == digits_job["result"]["final_checkpoint_id"]


def test_without_waiting_it_answers_202_and_the_prediction_can_be_polled(pstack: Stack, digits_job: dict) -> None:
    response = pstack.http.post(f"/jobs/{digits_job['id']}/predict", params={"wait": 0},
                                json={"inputs": [digit_pixels(1)]})
    assert response.status_code == 202, response.text
    location = response.headers["Location"]
    assert location == f"/jobs/{digits_job['id']}/predictions/{response.json()['id']}"
    deadline = time.monotonic() + 60
    while (polled := pstack.http.get(location)).status_code == 202 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert polled.status_code == 200 and polled.json()["outputs"][0]["label"] == "1"


def test_a_prediction_does_not_wait_behind_a_running_training_job(pstack: Stack, digits_job: dict) -> None:
    long = pstack.submit(pstack.spec(hyperparameters={"epochs": 10_000}))
    pstack.wait(long["id"], until=("running",))
    try:
        started = time.monotonic()
        response = pstack.http.post(f"/jobs/{digits_job['id']}/predict", json={"inputs": [digit_pixels(4)]},
                                    params={"wait": 60})
        assert response.status_code == 200, response.text
        assert pstack.job(long["id"])["status"] == "running"  # answered while the worker trains
        assert time.monotonic() - started < 60
    finally:
        pstack.http.post(f"/jobs/{long['id']}/cancel")
        pstack.wait(long["id"])


def test_bad_requests_get_4xx(pstack: Stack, digits_job: dict) -> None:
    job_id = digits_job["id"]
    missing = "00000000-0000-4000-8000-000000000000"
    assert pstack.http.post(f"/jobs/{missing}/predict", json={"inputs": [[1.0]]}).status_code == 404
    response = pstack.http.post(f"/jobs/{job_id}/predict", json={"inputs": [[1.0]], "checkpoint": missing})
    assert response.status_code == 404, response.text
    # a text for a model of numbers: refused by the API
    response = pstack.http.post(f"/jobs/{job_id}/predict", json={"inputs": ["seven"]})
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "inputs", 0]
    # the wrong number of features: refused by the worker, still a 422 naming the input
    response = pstack.http.post(f"/jobs/{job_id}/predict", json={"inputs": [[1.0, 2.0]]})
    assert response.status_code == 422, response.text
    assert "inputs[0]: expected 64 numbers" in response.json()["detail"][0]["msg"]
    too_many = pstack.http.post(f"/jobs/{job_id}/predict", json={"inputs": [digit_pixels(1)] * 65})
    assert too_many.status_code == 422
    unknown = pstack.http.post(f"/jobs/{job_id}/predict", json={"inputs": [digit_pixels(1)], "beam": 3})
    assert unknown.status_code == 422
    # a job that has not succeeded (queued on a queue nobody serves): 409
    queued = pstack.submit(pstack.spec(resources={"queue": f"{pstack.queue}-nobody"}))
    assert pstack.http.post(f"/jobs/{queued['id']}/predict", json={"inputs": [[1.0]]}).status_code == 409
    assert pstack.http.get(f"/jobs/{job_id}/predictions/{missing}").status_code == 404


def test_causal_lm_generates_text(pstack: Stack) -> None:
    spec = pstack.spec(task="causal_lm", data={"train": "builtin:tiny_text", "max_length": 32},
                       model={"builtin": "transformer",
                              "config": {"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 32, "dropout": 0.0}},
                       hyperparameters={"epochs": 1, "max_steps": 5, "batch_size": 8})
    job = pstack.wait(pstack.submit(spec)["id"])
    assert job["status"] == "succeeded", pstack.logs()
    response = pstack.http.post(f"/jobs/{job['id']}/predict",
                                json={"inputs": ["The "], "max_new_tokens": 7, "temperature": 0.8})
    assert response.status_code == 200, response.text
    out = response.json()["outputs"][0]
    assert out["text"] == "The " + out["completion"] and 0 < len(out["completion"]) <= 7  # padding decodes to ""
    assert pstack.http.post(f"/jobs/{job['id']}/predict", json={"inputs": ["x"], "max_new_tokens": 10_000}).status_code == 422
