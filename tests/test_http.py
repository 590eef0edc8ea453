import asyncio
import base64
import concurrent.futures
import gzip
import json
import os
import signal
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from conftest import ROOT, free_port, running_server
from serve import Translator
from serve.api import BatchSettings, BodyLimit, Limits, create_app

BUNDLES = [ROOT / "models" / "en-de" / "onnx", ROOT / "models" / "de-en" / "onnx"]
EN_DE = {"src_lang": "en", "tgt_lang": "de"}


@pytest.fixture(scope="module")
def translators():
    return [Translator(bundle) for bundle in BUNDLES]


@pytest.fixture(scope="module")
def client(translators):
    with TestClient(create_app(lambda: translators)) as client:
        yield client


def test_translates_the_hugging_face_task(client, translators):
    response = client.post("/translate", json={"inputs": ["A dog runs.", "", "Two men play chess."], "parameters": EN_DE})
    assert response.status_code == 200
    expected = [t.text for t in translators[0].translate(["A dog runs.", "", "Two men play chess."])]
    assert [item["translation_text"] for item in response.json()] == expected and expected[1] == ""
    response = client.post("/translate", json={"inputs": "Ein Hund rennt.", "parameters": {"src_lang": "de",
                                                                                        "tgt_lang": "en"}})
    (expected,) = translators[1].translate(["Ein Hund rennt."])
    assert response.json() == [{"translation_text": expected.text, "unknown_characters": 0,
                                "confidence": {"score": pytest.approx(expected.confidence.score),
                                               "label": expected.confidence.label}}]


def test_extras_scores_n_best_attention(client, translators):
    parameters = {**EN_DE, "return_scores": True, "n_best": 3, "return_attention": True,
                  "generate_parameters": {"num_beams": 4, "length_penalty": 0.8, "max_new_tokens": 30}}
    (item,) = client.post("/translate", json={"inputs": "Two men play chess.", "parameters": parameters}).json()
    (reference,) = translators[0].translate(["Two men play chess."], beam_size=4, length_penalty=0.8, max_length=30,
                                            n_best=3, return_attention=True)
    assert item["score"] == pytest.approx(reference.score)
    assert [h["translation_text"] for h in item["n_best"]][0] == item["translation_text"] == reference.text
    assert len(item["n_best"]) == 3
    attention = item["attention"]
    assert attention["target_tokens"] == reference.attention.target_tokens
    assert attention["encoding"] == "base64-float16-le"
    for kind in ("encoder", "decoder", "cross"):  # float16: within half a unit of its last place (~5e-4 below 1)
        expected = getattr(reference.attention, kind)
        decoded = np.frombuffer(base64.b64decode(attention[kind]["data"]), "<f2").reshape(attention[kind]["shape"])
        assert decoded.shape == expected.shape
        np.testing.assert_allclose(decoded.astype(np.float32), expected, atol=5e-4, rtol=0)


def test_beam_records_on_request_and_bounded_before_any_work(client, translators):
    parameters = {**EN_DE, "return_beams": True, "n_best": 2, "generate_parameters": {"num_beams": 3}}
    (item, empty) = client.post("/translate", json={"inputs": ["Two men play chess.", ""], "parameters": parameters}).json()
    (reference,) = translators[0].translate(["Two men play chess."], beam_size=3, n_best=2, record_beams=True)
    tokenizer = translators[0].tokenizer
    assert item["beams"]["hypotheses"] == [list(end) for end in reference.beams.hypotheses]
    assert item["beams"]["steps"] == [[{"token": tokenizer.id_to_token(n.token_id), "token_id": n.token_id,
                                        "parent": n.parent, "log_prob": pytest.approx(n.log_prob),
                                        "token_log_prob": pytest.approx(n.token_log_prob), "status": n.status}
                                       for n in step] for step in reference.beams.steps]
    assert empty["beams"] == {"steps": [], "hypotheses": []}
    assert "beams" not in client.post("/translate", json={"inputs": "A dog.", "parameters": EN_DE}).json()[0]
    many = {"inputs": ["A dog runs in the park with a red ball. " * 8] * 30,
            "parameters": {**EN_DE, "return_beams": True, "generate_parameters": {"num_beams": 8}}}
    response = client.post("/translate", json=many)
    assert response.status_code == 422 and response.json()["field"] == "parameters.return_beams", response.text
    assert "at most 50,000 per request" in response.json()["error"]


def test_a_target_prefix_per_input(client, translators):
    inputs, prefixes = ["Two men play chess.", "A dog runs.", ""], ["Zwei Frauen", None, ["▁Ein"]]
    items = client.post("/translate", json={"inputs": inputs, "parameters": {**EN_DE, "target_prefix": prefixes}}).json()
    expected = translators[0].translate(inputs, target_prefix=prefixes)
    assert [item["translation_text"] for item in items] == [t.text for t in expected]
    assert items[0]["translation_text"].startswith("Zwei Frauen")


def test_heads_switched_off_per_request(client, translators):
    inputs = ["Two men play chess in the park.", "A dog runs."]
    heads_off = ["cross.3.0", "cross.3.1", "cross.3.2", "cross.3.3", "encoder.0.2"]
    items = client.post("/translate", json={"inputs": inputs, "parameters": {**EN_DE, "heads_off": heads_off,
                                                                             "return_scores": True}}).json()
    expected = translators[0].translate(inputs, heads_off=heads_off)
    assert [item["translation_text"] for item in items] == [t.text for t in expected]
    assert [item["score"] for item in items] == pytest.approx([t.score for t in expected], abs=1e-6)
    plain = translators[0].translate(inputs)
    assert [t.score for t in plain] != pytest.approx([t.score for t in expected], abs=1e-6)
    for heads_off, field, message in [
        (["cross.4.0"], "parameters.heads_off[0]", "cross layer must be an integer from 0 to 3, got 4"),
        (["decoder.0.0", "self.0.0"], "parameters.heads_off[1]", "head kind must be one of encoder, decoder, cross"),
        (["cross.0"], "parameters.heads_off[0]", "a head is (kind, layer, head) or 'kind.layer.head'"),
        (["cross.0.0"] * 49, "parameters.heads_off", "lists 49 heads; the model has 48"),
    ]:
        response = client.post("/translate", json={"inputs": inputs, "parameters": {**EN_DE, "heads_off": heads_off}})
        assert response.status_code == 422 and response.json()["field"] == field, response.text
        assert message in response.json()["error"]


def test_unknown_characters_and_truncation_are_reported(client):
    (item,) = client.post("/translate", json={"inputs": "🙂🙂🙂", "parameters": EN_DE}).json()
    assert item["unknown_characters"] == 3
    long_text = "A dog runs. " * 100
    response = client.post("/translate", json={"inputs": long_text, "parameters": {
        **EN_DE, "truncation": "longest_first", "generate_parameters": {"max_new_tokens": 8, "num_beams": 1}}})
    assert response.status_code == 200 and response.json()[0]["truncated"] is True


BAD_REQUESTS = [
    (b"{not json", 400, "body"),
    (b"\xff\xfe", 400, "body"),
    (b"", 422, "body"),
    (b"[]", 422, "body"),
    (b"null", 422, "body"),
    (b'{"inputs": 3}', 422, "inputs"),
    (b'{"inputs": null}', 422, "inputs"),
    (b'{"inputs": []}', 422, "inputs"),
    (b'{"inputs": ["fine", 7]}', 422, "inputs[1]"),
    (b'{"inputs": "x", "extra": 1}', 422, "extra"),
    (b'{"inputs": "x", "parameters": {"src_lang": "en"}}', 422, "parameters.tgt_lang"),
    (b'{"inputs": "x", "parameters": {"src_lang": "en", "tgt_lang": "fr"}}', 422, "parameters.src_lang"),
    (b'{"inputs": "x"}', 422, "parameters.src_lang"),
    (b'{"inputs": "x", "parameters": {"src_lang": "en", "tgt_lang": "de", "bogus": true}}', 422, "parameters.bogus"),
    (b'{"inputs": "x", "parameters": {"src_lang": "en", "tgt_lang": "de", "generate_parameters": {"num_beams": 0}}}',
     422, "parameters.generate_parameters.num_beams"),
    (b'{"inputs": "x", "parameters": {"src_lang": "en", "tgt_lang": "de", "generate_parameters": {"num_beams": 99}}}',
     422, "parameters.generate_parameters.num_beams"),
    (b'{"inputs": "x", "parameters": {"src_lang": "en", "tgt_lang": "de", "generate_parameters": {"num_beams": "5"}}}',
     422, "parameters.generate_parameters.num_beams"),
    (b'{"inputs": "x", "parameters": {"src_lang": "en", "tgt_lang": "de", "generate_parameters": {"num_beams": 2.5}}}',
     422, "parameters.generate_parameters.num_beams"),
    (b'{"inputs": "x", "parameters": {"src_lang": "en", "tgt_lang": "de", "generate_parameters": {"max_new_tokens": 0}}}',
     422, "parameters.generate_parameters.max_new_tokens"),
    (b'{"inputs": "x", "parameters": {"src_lang": "en", "tgt_lang": "de", "generate_parameters": {"max_new_tokens": 9999}}}',
     422, "parameters.generate_parameters.max_new_tokens"),
    (b'{"inputs": "x", "parameters": {"src_lang": "en", "tgt_lang": "de", "generate_parameters": {"length_penalty": NaN}}}',
     422, "parameters.generate_parameters.length_penalty"),
    (b'{"inputs": "x", "parameters": {"src_lang": "en", "tgt_lang": "de", "generate_parameters": {"top_k": 5}}}',
     422, "parameters.generate_parameters.top_k"),
    (b'{"inputs": "x", "parameters": {"src_lang": "en", "tgt_lang": "de", "n_best": 6}}', 422, "parameters.n_best"),
    (b'{"inputs": "x", "parameters": {"src_lang": "en", "tgt_lang": "de", "truncation": "only_second"}}', 422,
     "parameters.truncation"),
    (b'{"inputs": "x\\u0007y", "parameters": {"src_lang": "en", "tgt_lang": "de"}}', 422, "inputs"),
    (b'{"inputs": ["ok", "x\\ud800"], "parameters": {"src_lang": "en", "tgt_lang": "de"}}', 422, "inputs[1]"),
    (b'{"inputs": ["a", "b", "c", "d", "e"], "parameters": {"src_lang": "en", "tgt_lang": "de", '
     b'"return_attention": true}}', 422, "parameters.return_attention"),
    (b'{"inputs": ["a", "b"], "parameters": {"src_lang": "en", "tgt_lang": "de", "target_prefix": ["Ein"]}}', 422,
     "parameters.target_prefix"),
    (b'{"inputs": "a", "parameters": {"src_lang": "en", "tgt_lang": "de", "target_prefix": [["nosuchtoken"]]}}', 422,
     "parameters.target_prefix[0]"),
    (b'{"inputs": "a", "parameters": {"src_lang": "en", "tgt_lang": "de", "target_prefix": ["Ein Hund Ein Hund Ein '
     b'Hund Ein Hund Ein Hund Ein Hund Ein Hund"]}}', 422, "parameters.target_prefix[0]"),
    (b'{"inputs": "a", "parameters": {"src_lang": "en", "tgt_lang": "de", "target_prefix": "Ein"}}', 422,
     "parameters.target_prefix"),
]


@pytest.mark.parametrize("body,status,field", BAD_REQUESTS, ids=[b[0][:40].decode("latin-1") for b in BAD_REQUESTS])
def test_bad_input_is_a_clear_json_error(client, body, status, field):
    response = client.post("/translate", content=body, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    error = response.json()
    assert error["field"] == field and error["error"].startswith(field) and error["error_type"]
    after = client.post("/translate", json={"inputs": "A dog runs.", "parameters": EN_DE})  # still alive and right
    assert after.status_code == 200 and after.json()[0]["translation_text"] == "Ein Hund rennt."


def test_limits_on_count_length_tokens_and_body(client):
    def post(inputs):
        return client.post("/translate", json={"inputs": inputs, "parameters": EN_DE})

    limits = Limits()
    assert post(["a"] * (limits.max_inputs + 1)).json()["field"] == "inputs"
    assert post("a" * (limits.max_input_chars + 1)).json()["field"] == "inputs"
    response = post("dog " * 300)
    assert response.status_code == 422 and "tokens" in response.json()["error"]
    response = client.post("/translate", content=b'{"inputs": "' + b"a" * limits.max_body_bytes + b'"}',
                           headers={"content-type": "application/json"})
    assert response.status_code == 413 and response.json()["field"] == "body"


def test_every_refusal_has_the_one_error_shape(client):
    def chunks():
        for _ in range(40):
            yield b"x" * 10_000

    cases = {
        "404": (client.get("/nowhere"), 404, None),
        "405": (client.get("/translate"), 405, None),
        "deep nesting": (client.post("/translate", content=b"[" * 150_000 + b"]" * 150_000,
                                     headers={"content-type": "application/json"}), 413, "body"),
        "deep but small": (client.post("/translate", content=b"[" * 20_000 + b"]" * 20_000,
                                       headers={"content-type": "application/json"}), 400, "body"),
        "gzip": (client.post("/translate", content=gzip.compress(b'{"inputs": "a"}'),
                             headers={"content-type": "application/json", "content-encoding": "gzip"}), 415, "body"),
        "chunked over the limit": (client.post("/translate", content=chunks(),
                                               headers={"content-type": "application/json"}), 413, "body"),
    }
    for name, (response, status, field) in cases.items():
        assert response.status_code == status, (name, response.text)
        assert set(response.json()) == {"error", "error_type", "field"} and response.json()["field"] == field, name
    assert "POST" in cases["405"][0].headers["allow"]
    after = client.post("/translate", json={"inputs": "A dog runs.", "parameters": EN_DE})
    assert after.status_code == 200 and after.json()[0]["translation_text"] == "Ein Hund rennt."


def test_a_body_that_stops_arriving_is_answered_408():
    """A client that declares more than it sends (or trickles) is cut off after the body timeout."""
    async def scenario():
        called, sent = [], []

        async def app(scope, receive, send):
            called.append(scope)

        async def receive():
            if not sent:
                sent.append(1)
                return {"type": "http.request", "body": b'{"inputs": ', "more_body": True}
            await asyncio.sleep(3600)  # the rest never comes

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "headers": [(b"content-length", b"100")]}
        started = time.monotonic()
        await BodyLimit(app, max_bytes=1000, timeout=0.3)(scope, receive, send)
        return called, sent, time.monotonic() - started

    called, sent, seconds = asyncio.run(scenario())
    assert called == [] and 0.3 <= seconds < 2
    start, body = sent[1], sent[2]
    assert start["status"] == 408 and (b"connection", b"close") in start["headers"]
    assert json.loads(body["body"])["error_type"] == "timeout"


def test_health_models_and_docs(client):
    health = client.get("/health").json()
    assert health["status"] == "ready" and health["models"] == ["en-de", "de-en"] and health["rss_bytes"] > 0
    models = client.get("/models").json()
    assert [(m["source_lang"], m["target_lang"]) for m in models] == [("en", "de"), ("de", "en")]
    assert models[0]["limits"]["max_beams"] == Limits().max_beams and "onnxruntime" in models[0]["versions"]
    assert "/translate" in client.get("/openapi.json").json()["paths"]
    assert client.get("/docs").status_code == 200


def test_full_queue_answers_503_with_retry_after(translators):
    app = create_app(lambda: translators[:1], batching=BatchSettings(max_batch_size=2, max_queue=2))
    with TestClient(app) as client:
        response = client.post("/translate", json={"inputs": ["a", "b", "c"]})
        assert response.status_code == 503 and response.headers["retry-after"] == "1"
        assert client.post("/translate", json={"inputs": ["a", "b"]}).status_code == 200


def test_concurrent_requests_share_search_batches(translators):
    texts = ["A dog runs.", "Two men play chess.", "A woman reads a book.", "Children play soccer.",
             "A man rides a bike.", "Two dogs play in the snow."]
    calls = []

    class Counting:  # the translator, recording each search batch the batcher hands it
        def __getattr__(self, name):
            return getattr(translators[0], name)

        def translate(self, batch, **options):
            calls.append(len(batch))
            return translators[0].translate(batch, **options)

    app = create_app(lambda: [Counting()], batching=BatchSettings(max_batch_size=8, max_wait_ms=50))
    with TestClient(app) as client:
        with concurrent.futures.ThreadPoolExecutor(len(texts)) as pool:
            responses = list(pool.map(lambda t: client.post("/translate", json={"inputs": t}), texts))
    assert sum(calls) == len(texts) and len(calls) < len(texts)
    alone = [translators[0].translate([t])[0].text for t in texts]
    assert [r.json()[0]["translation_text"] for r in responses] == alone


@pytest.fixture(scope="module")
def server():
    """The real server in a subprocess on a free loopback port, stopped by its PID."""
    with running_server("--model", str(BUNDLES[0]), "--model", str(BUNDLES[1])) as (url, _):
        yield url


def test_real_server_with_the_hugging_face_client(server, translators):
    from huggingface_hub import InferenceClient

    hf = InferenceClient(model=f"{server}/translate")
    output = hf.translation("Two men are playing chess in a park.", src_lang="en", tgt_lang="de")
    assert output.translation_text == translators[0].translate(["Two men are playing chess in a park."])[0].text
    output = hf.translation("Ein Hund rennt.", src_lang="de", tgt_lang="en", generate_parameters={"num_beams": 1})
    assert output.translation_text == translators[1].translate(["Ein Hund rennt."], beam_size=1)[0].text
    with pytest.raises(Exception, match="422"):
        hf.translation("x", src_lang="en", tgt_lang="fr")
    assert httpx.get(f"{server}/health").json()["status"] == "ready"


def test_real_server_survives_a_fuzzer(server, tmp_path):
    """schemathesis generates requests from the server's own OpenAPI schema; no answer may be a 5xx."""
    done = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "run", f"{server}/openapi.json", "--checks", "not_a_server_error",
         "--max-examples", "40", "--seed", "1", "--request-timeout", "30", "--no-color"],
        capture_output=True, text=True, timeout=400, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert httpx.post(f"{server}/translate", json={"inputs": "A dog runs.", "parameters": EN_DE}).status_code == 200
