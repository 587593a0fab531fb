"""In-memory gallery of known and unknown people: nearest neighbour by cosine similarity.

Embeddings are L2-normalised, so cosine = inner product. Small galleries are searched
exactly (faiss flat index). From ``ann_threshold`` entries on, a 4-bit product-quantised
fast-scan index ("PQ64x4fs") finds ``k_factor`` candidates per wanted neighbour and an exact
re-rank against the stored vectors picks the answer: about 2 ms per face at a million
identities on one core,
built in seconds. We measured HNSW (minutes to build at 1M) and IVF (recall fell to 0.3-0.7
at realistic match similarities) before choosing it; see loadtests/gallery_benchmark.py
for time and recall@1 against exact search.

Removals (and the old row of an updated person) leave a tombstone in the index. A search
asks for ``tombstones`` more neighbours than it needs: at most that many of them can be dead,
so the best live row is always among them and the flat index stays exact however many
changes came before. Tombstones are compacted away past ``max(min_compact, live/64)``,
which bounds that ``k``; compaction re-adds the live rows without retraining the quantiser.
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
    similarity: float | None  # None: a person created for this face, nobody matched


class Gallery:
    def __init__(self, dim: int = 128, ann_threshold: int = 50_000, k_factor: int = 64,
                 min_compact: int = 256):
        self.dim, self.ann_threshold, self.k_factor = dim, ann_threshold, k_factor
        self.min_compact = min_compact
        self._ids: list[str | None] = []  # faiss row -> person_id (None = removed)
        self._kinds: list[str] = []
        self._row: dict[str, int] = {}
        self._vectors: list[np.ndarray] = []
        self._index = faiss.IndexFlatIP(dim)
        self._tombstones = 0
        self._trained_n = 0  # size the quantiser was trained at (0: exact index)
        self.compactions = 0

    def __len__(self) -> int:
        return len(self._row)

    def __contains__(self, person_id: str) -> bool:
        return person_id in self._row

    @property
    def tombstones(self) -> int:
        return self._tombstones

    def kind_of(self, person_id: str) -> str | None:
        row = self._row.get(person_id)
        return None if row is None else self._kinds[row]

    def vector_of(self, person_id: str) -> np.ndarray | None:
        row = self._row.get(person_id)
        return None if row is None else self._vectors[row]

    def live(self) -> tuple[list[str], list[str], np.ndarray]:
        """(person_ids, kinds, vectors) of every live entry, in row order."""
        rows = sorted(self._row.values())
        vecs = np.stack([self._vectors[r] for r in rows]) if rows else np.zeros((0, self.dim), np.float32)
        return [self._ids[r] for r in rows], [self._kinds[r] for r in rows], vecs

    def _new_index(self, vectors: np.ndarray):
        n = len(vectors)
        if n < self.ann_threshold:
            self._trained_n = 0
            return faiss.IndexFlatIP(self.dim)
        # no refine index of its own: the exact re-rank uses self._vectors
        index = faiss.index_factory(self.dim, "PQ64x4fs", faiss.METRIC_INNER_PRODUCT)
        sample = vectors[np.random.default_rng(0).choice(n, min(n, 100_000), replace=False)]
        faiss.omp_set_num_threads(0)  # training may use every core; searches stay single-threaded
        try:
            index.train(np.ascontiguousarray(sample, np.float32))
        finally:
            faiss.omp_set_num_threads(1)
        self._trained_n = n
        return index

    def _reset(self) -> None:
        self._ids, self._kinds, self._vectors, self._row = [], [], [], {}
        self._tombstones = 0

    def rebuild(self) -> None:
        """A fresh index of the live entries (retrains the quantiser when there is one)."""
        ids, kinds, vectors = self.live()
        self.load(ids, kinds, vectors)

    def compact(self) -> None:
        """Drop tombstones. The flat index is simply refilled; the quantised one keeps its
        training unless the gallery moved far from the size it was trained at."""
        ids, kinds, vectors = self.live()
        n = len(ids)
        exact_wanted = n < self.ann_threshold
        is_exact = self._trained_n == 0
        if exact_wanted != is_exact or (self._trained_n and not self._trained_n / 4 <= n <= 4 * self._trained_n):
            self.load(ids, kinds, vectors)
        else:
            self._reset()
            self._index.reset()
            if n:
                self._append(ids, kinds, vectors)
        self.compactions += 1

    def load(self, person_ids: list[str], kinds: list[str], vectors: np.ndarray) -> None:
        vectors = np.asarray(vectors, np.float32).reshape(-1, self.dim)
        self._reset()
        self._index = self._new_index(vectors)
        if len(person_ids):
            self._append(person_ids, kinds, vectors)

    def _append(self, person_ids, kinds, vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, np.float32).reshape(-1, self.dim)
        start = len(self._ids)
        self._index.add(vectors)
        for i, (pid, kind) in enumerate(zip(person_ids, kinds)):
            self._ids.append(pid)
            self._kinds.append(kind)
            self._vectors.append(vectors[i].copy())
            self._row[pid] = start + i
        # grew past the exact-search size, or 4x past what the quantiser was trained on
        if (self._trained_n == 0 and len(self._row) >= self.ann_threshold) or \
                (self._trained_n and len(self._row) > 4 * self._trained_n):
            self.rebuild()

    def upsert(self, person_id: str, kind: str, vector: np.ndarray) -> None:
        vector = np.asarray(vector, np.float32).reshape(self.dim)
        row = self._row.get(person_id)
        if row is not None and self._kinds[row] == kind and np.array_equal(self._vectors[row], vector):
            return  # unchanged (a rename, or a change seen twice): no tombstone
        if row is not None:
            self.remove(person_id)
        self._append([person_id], [kind], vector[None])

    def remove(self, person_id: str) -> None:
        row = self._row.pop(person_id, None)
        if row is None:
            return
        self._ids[row] = None
        self._tombstones += 1
        if self._tombstones > max(self.min_compact, len(self._row) // 64):
            self.compact()

    def top(self, vectors: np.ndarray, k: int) -> list[list[Match]]:
        """The k most similar live entries for each row of `vectors`, best first, whatever
        their similarity (/analyze candidates=k)."""
        if not self._row or len(vectors) == 0 or k <= 0:
            return [[] for _ in range(len(vectors))]
        q = np.ascontiguousarray(vectors, np.float32).reshape(-1, self.dim)
        exact = self._trained_n == 0
        want = (k if exact else max(k, 4) * self.k_factor) + self._tombstones
        sims, rows = self._index.search(q, min(want, len(self._ids)))
        out: list[list[Match]] = []
        for qi, (srow, rrow) in enumerate(zip(sims, rows)):
            live = [int(r) for r in rrow if r >= 0 and self._ids[r] is not None]
            if not live:
                out.append([])
                continue
            # exact similarities for both index kinds (the quantised one only approximates them)
            exact_sims = np.stack([self._vectors[r] for r in live]) @ q[qi]
            order = np.argsort(-exact_sims, kind="stable")[:k]
            out.append([Match(self._ids[live[i]], self._kinds[live[i]], float(exact_sims[i])) for i in order])
        return out

    def search(self, vectors: np.ndarray, threshold: float, k: int = 4) -> list[Match | None]:
        """Best live match at or above `threshold` for each row of `vectors`."""
        if not self._row or len(vectors) == 0:
            return [None] * len(vectors)
        q = np.ascontiguousarray(vectors, np.float32).reshape(-1, self.dim)
        exact = self._trained_n == 0
        # at most `tombstones` dead rows can rank above the best live one
        want = (k if exact else k * self.k_factor) + self._tombstones
        sims, rows = self._index.search(q, min(want, len(self._ids)))
        out: list[Match | None] = []
        for qi, (srow, rrow) in enumerate(zip(sims, rows)):
            live = [(float(sim), int(r)) for sim, r in zip(srow, rrow) if r >= 0 and self._ids[r] is not None]
            if not live:
                out.append(None)
                continue
            if exact:
                sim, r = live[0]  # already in order
            else:  # re-rank the quantised candidates by their exact similarity
                cand = [r for _, r in live]
                exact_sims = np.stack([self._vectors[r] for r in cand]) @ q[qi]
                best = int(np.argmax(exact_sims))
                sim, r = float(exact_sims[best]), cand[best]
            out.append(Match(self._ids[r], self._kinds[r], sim) if sim >= threshold else None)
        return out
