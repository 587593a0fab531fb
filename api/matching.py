"""In-memory gallery of known and unknown people: nearest neighbour by cosine similarity.

Embeddings are L2-normalised, so cosine = inner product. Small galleries are searched
exactly (faiss flat index). From ``ann_threshold`` entries on, a 4-bit product-quantised
fast-scan index finds candidates and an exact re-rank of the best ``k_factor`` of them picks
the answer ("PQ64x4fs,RFlat"): about 2 ms per face at a million identities on one core,
built in seconds. We measured HNSW (minutes to build at 1M) and IVF (recall fell to 0.3-0.7
at realistic match similarities) before choosing it; see loadtests/gallery_benchmark.py
for time and recall@1 against exact search.
Removals leave a tombstone; the index is rebuilt when tombstones pile up.
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

faiss.omp_set_num_threads(1)  # searches are tiny; threads cost more than they save


@dataclass(frozen=True)
class Match:
    person_id: str
    kind: str  # "known" | "unknown"
    similarity: float


class Gallery:
    def __init__(self, dim: int = 128, ann_threshold: int = 50_000, k_factor: int = 64):
        self.dim, self.ann_threshold, self.k_factor = dim, ann_threshold, k_factor
        self._trained_n = 0
        self._ids: list[str | None] = []  # faiss row -> person_id (None = removed)
        self._kinds: list[str] = []
        self._row: dict[str, int] = {}
        self._vectors: list[np.ndarray] = []
        self._index = faiss.IndexFlatIP(dim)
        self._tombstones = 0
        self._trained_n = 0

    def __len__(self) -> int:
        return len(self._row)

    def __contains__(self, person_id: str) -> bool:
        return person_id in self._row

    def kind_of(self, person_id: str) -> str | None:
        row = self._row.get(person_id)
        return None if row is None else self._kinds[row]

    def _new_index(self, vectors: np.ndarray):
        n = len(vectors)
        if n < self.ann_threshold:
            return faiss.IndexFlatIP(self.dim)
        index = faiss.index_factory(self.dim, "PQ64x4fs,RFlat", faiss.METRIC_INNER_PRODUCT)
        sample = vectors[np.random.default_rng(0).choice(n, min(n, 100_000), replace=False)]
        faiss.omp_set_num_threads(0)  # training may use every core; searches stay single-threaded
        try:
            index.train(np.ascontiguousarray(sample, np.float32))
        finally:
            faiss.omp_set_num_threads(1)
        index.k_factor = self.k_factor
        self._trained_n = n
        return index

    def rebuild(self) -> None:
        live = [(pid, kind, vec) for pid, kind, vec in zip(self._ids, self._kinds, self._vectors)
                if pid is not None]
        self._ids, self._kinds, self._vectors, self._row = [], [], [], {}
        self._tombstones = 0
        vectors = np.stack([v for _, _, v in live]) if live else np.zeros((0, self.dim), np.float32)
        self._index = self._new_index(vectors)
        if live:
            self._append([p for p, _, _ in live], [k for _, k, _ in live], vectors)

    def load(self, person_ids: list[str], kinds: list[str], vectors: np.ndarray) -> None:
        self._ids, self._kinds, self._vectors, self._row = [], [], [], {}
        self._tombstones = 0
        self._index = self._new_index(np.asarray(vectors, np.float32).reshape(-1, self.dim))
        if len(person_ids):
            self._append(person_ids, kinds, vectors)

    def _append(self, person_ids, kinds, vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, np.float32).reshape(-1, self.dim)
        start = len(self._ids)
        self._index.add(vectors)
        for i, (pid, kind) in enumerate(zip(person_ids, kinds)):
            self._ids.append(pid)
            self._kinds.append(kind)
            self._vectors.append(vectors[i])
            self._row[pid] = start + i
        # grew past the exact-search size, or 4x past what the quantiser was trained on
        if (isinstance(self._index, faiss.IndexFlatIP) and len(self._ids) >= self.ann_threshold) or \
                (self._trained_n and len(self._ids) > 4 * self._trained_n):
            self.rebuild()

    def upsert(self, person_id: str, kind: str, vector: np.ndarray) -> None:
        if person_id in self._row:
            self.remove(person_id)
        self._append([person_id], [kind], vector[None])

    def remove(self, person_id: str) -> None:
        row = self._row.pop(person_id, None)
        if row is None:
            return
        self._ids[row] = None
        self._tombstones += 1
        if self._tombstones > 1000 and self._tombstones > len(self._row) // 4:
            self.rebuild()

    def search(self, vectors: np.ndarray, threshold: float, k: int = 4) -> list[Match | None]:
        """Best live match at or above `threshold` for each row of `vectors`."""
        if not self._row or len(vectors) == 0:
            return [None] * len(vectors)
        k = min(k + self._tombstones, len(self._ids)) if self._tombstones < 64 else min(64, len(self._ids))
        sims, rows = self._index.search(np.ascontiguousarray(vectors, np.float32), k)
        out: list[Match | None] = []
        for srow, rrow in zip(sims, rows):
            best = None
            for s, r in zip(srow, rrow):
                if r >= 0 and self._ids[r] is not None:
                    best = Match(self._ids[r], self._kinds[r], float(s)) if s >= threshold else None
                    break
            out.append(best)
        return out
