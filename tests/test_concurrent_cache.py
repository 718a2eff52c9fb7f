"""Three jobs encoding one fresh cache key at once: one encodes, the others wait and read its bits."""

import json
import os
import subprocess
import sys
import textwrap

JOB = textwrap.dedent(
    """
    import hashlib, json, sys
    from recbole_tfllmer.text.encoders import SentenceTransformerEncoder, bundled_model_dir
    from recbole_tfllmer.text.store import encode_with_cache

    tokens = [f"i{k}" for k in range(400)]
    texts = [f"Title: item number {k}. Brand: brand {k % 7}" for k in range(400)]
    encoder = SentenceTransformerEncoder(bundled_model_dir(), device="cpu")
    matrix, info = encode_with_cache(encoder, tokens, texts, sys.argv[1], "toy", template="T", fields=["f"])
    print(json.dumps({"encoded": info.n_encoded, "hit": info.cache_hit,
                      "sha": hashlib.sha256(matrix.tobytes()).hexdigest()}))
    """
)


def test_three_jobs_encode_one_fresh_cache_once(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    jobs = [
        subprocess.Popen(
            [sys.executable, "-c", JOB, str(tmp_path)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    results = []
    for job in jobs:
        out, err = job.communicate(timeout=300)
        assert job.returncode == 0, err[-1500:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert sorted(r["encoded"] for r in results) == [0, 0, 400]
    assert sum(r["hit"] for r in results) == 2
    assert len({r["sha"] for r in results}) == 1  # every job holds the same bits
    assert len(list(tmp_path.glob("*.emb.npy"))) == 1 and not list(tmp_path.glob("*.emb.partial"))
