"""The in-memory gallery: exact answers when small, exact-enough when large, removals."""

import numpy as np

from api.matching import Gallery


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_small_gallery_is_exact_and_honours_threshold_and_removals():
    rng = np.random.default_rng(1)
    vecs = unit(rng.standard_normal((200, 128)))
    g = Gallery()
    g.load([f"p{i}" for i in range(200)], ["unknown"] * 200, vecs)
    q = unit(vecs[:50] + 0.8 * unit(rng.standard_normal((50, 128))))
    sims = q @ vecs.T
    for i, m in enumerate(g.search(q, threshold=0.0)):
        assert m.person_id == f"p{int(sims[i].argmax())}"
        assert abs(m.similarity - sims[i].max()) < 1e-5
    assert g.search(q[:1], threshold=0.999) == [None]
    g.remove("p0")
    assert "p0" not in g and len(g) == 199
    assert g.search(vecs[:1], threshold=0.0)[0].person_id != "p0"
    g.upsert("p0", "known", vecs[0])
    assert g.search(vecs[:1], threshold=0.9)[0].person_id == "p0"
    assert g.kind_of("p0") == "known"


def test_large_gallery_switches_to_ann_with_full_recall():
    rng = np.random.default_rng(2)
    n = 20_000
    vecs = unit(rng.standard_normal((n, 128)))
    g = Gallery(ann_threshold=10_000)
    g.load([f"p{i}" for i in range(n)], ["unknown"] * n, vecs)
    assert g._trained_n == n  # the quantised index is in use
    picks = rng.integers(0, n, 300)
    q = unit(vecs[picks] + 1.5 * unit(rng.standard_normal((300, 128))))
    exact = (q @ vecs.T).argmax(1)
    found = [m.person_id for m in g.search(q, threshold=-1.0)]
    recall = np.mean([f == f"p{e}" for f, e in zip(found, exact)])
    assert recall >= 0.99
    g.remove(found[0])
    assert g.search(q[:1], threshold=-1.0)[0].person_id != found[0]
